//! What an inventory says a computer and its parts are, as CI names and attribute objects.
//!
//! A computer's attributes are one flat JSON object (flat so that every field can be filtered on
//! the same way later): `hostname`, `fqdn`, `machine_id`, `domain`, `vendor`, `model`, `serial`,
//! `hardware_uuid`, `board_serial`, `asset_tag`, `bios_vendor`, `bios_version`, `bios_date`,
//! `chassis`, `virtualization`, `container`, `os_family`, `os_name`, `os_version`, `kernel`,
//! `arch`, `boot_time`, `cpu_model`, `cpu_vendor`, `cpu_physical_cores`, `cpu_logical_cores`,
//! `cpu_frequency_mhz`, `memory_total_bytes`, `swap_total_bytes`. Unknown values are left out
//! rather than stored as null. The store indexes `hostname`, `os_name` and `os_family`.

use census_common::Inventory;
use serde_json::{Map, Value, json};
use time::format_description::well_known::Rfc3339;

use super::{CLASS_FILESYSTEM, CLASS_NETWORK_INTERFACE};

/// The computer CI's name: its hostname, or the agent id when the host facet failed.
pub fn computer_name(inv: &Inventory) -> String {
    inv.host
        .hostname
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| inv.agent_id.clone())
}

pub fn computer_attributes(inv: &Inventory) -> Value {
    let mut map = Map::new();
    let mut put = |key: &str, value: Value| {
        if !value.is_null() {
            map.insert(key.to_owned(), value);
        }
    };
    put("hostname", json!(inv.host.hostname));
    put("fqdn", json!(inv.host.fqdn));
    put("machine_id", json!(inv.host.machine_id));
    put("domain", json!(inv.host.domain));
    let hw = &inv.hardware;
    put("vendor", json!(hw.vendor));
    put("model", json!(hw.model));
    put("serial", json!(hw.serial));
    put("hardware_uuid", json!(hw.uuid));
    put("board_serial", json!(hw.board_serial));
    put("asset_tag", json!(hw.asset_tag));
    put("bios_vendor", json!(hw.bios_vendor));
    put("bios_version", json!(hw.bios_version));
    put("bios_date", json!(hw.bios_date));
    put("chassis", json!(hw.chassis));
    put("virtualization", json!(hw.virtualization));
    put("container", json!(hw.container));
    let os = &inv.os;
    put("os_family", json!(os.family));
    put("os_name", json!(os.name));
    put("os_version", json!(os.version));
    put("kernel", json!(os.kernel));
    put("arch", json!(os.arch));
    put(
        "boot_time",
        json!(os.boot_time.and_then(|t| t.format(&Rfc3339).ok())),
    );
    let cpu = &inv.cpu;
    put("cpu_model", json!(cpu.model));
    put("cpu_vendor", json!(cpu.vendor));
    put("cpu_physical_cores", json!(cpu.physical_cores));
    put("cpu_logical_cores", json!(cpu.logical_cores));
    put("cpu_frequency_mhz", json!(cpu.frequency_mhz));
    put("memory_total_bytes", json!(inv.memory.total_bytes));
    put("swap_total_bytes", json!(inv.memory.swap_total_bytes));
    Value::Object(map)
}

/// The computer attributes each scalar facet of the inventory fills in.
const FACET_ATTRIBUTES: &[(&str, &[&str])] = &[
    ("host", &["hostname", "fqdn", "machine_id", "domain"]),
    (
        "hardware",
        &[
            "vendor",
            "model",
            "serial",
            "hardware_uuid",
            "board_serial",
            "asset_tag",
            "bios_vendor",
            "bios_version",
            "bios_date",
            "chassis",
            "virtualization",
            "container",
        ],
    ),
    (
        "os",
        &[
            "os_family",
            "os_name",
            "os_version",
            "kernel",
            "arch",
            "boot_time",
        ],
    ),
    (
        "cpu",
        &[
            "cpu_model",
            "cpu_vendor",
            "cpu_physical_cores",
            "cpu_logical_cores",
            "cpu_frequency_mhz",
        ],
    ),
    ("memory", &["memory_total_bytes", "swap_total_bytes"]),
];

/// Puts back, into a new inventory's `attributes`, the `stored` attributes of the facets that
/// inventory could not learn (`Inventory::incomplete`): their emptiness means "unknown this
/// time", not "gone".
pub fn keep_incomplete_attributes(attributes: &mut Value, stored: &Value, incomplete: &[String]) {
    let (Value::Object(new), Value::Object(old)) = (attributes, stored) else {
        return;
    };
    for (facet, keys) in FACET_ATTRIBUTES {
        if !incomplete.iter().any(|f| f == facet) {
            continue;
        }
        for key in *keys {
            match old.get(*key) {
                Some(value) => new.insert((*key).to_owned(), value.clone()),
                None => new.remove(*key),
            };
        }
    }
}

/// The part classes whose list facet the inventory could not learn: the stored parts of those
/// classes are left as they are, not retired.
pub fn incomplete_part_classes(incomplete: &[String]) -> Vec<&'static str> {
    incomplete
        .iter()
        .filter_map(|facet| match facet.as_str() {
            "filesystems" => Some(CLASS_FILESYSTEM),
            "network_interfaces" => Some(CLASS_NETWORK_INTERFACE),
            _ => None,
        })
        .collect()
}

/// A part the inventory reports: a CI contained in the computer, identified within it by
/// `(class, key)`.
#[derive(Debug, Clone, PartialEq)]
pub struct PartSpec {
    pub class: &'static str,
    /// The mount point of a filesystem, the name of a network interface.
    pub key: String,
    /// `<computer name>:<key>`, so a part reads well in a list of CIs from many machines.
    pub name: String,
    pub attributes: Value,
}

/// One filesystem CI per mount, one network_interface CI per interface.
pub fn part_specs(inv: &Inventory) -> Vec<PartSpec> {
    let host = computer_name(inv);
    let mut parts = Vec::with_capacity(inv.filesystems.len() + inv.network_interfaces.len());
    for fs in &inv.filesystems {
        parts.push(PartSpec {
            class: CLASS_FILESYSTEM,
            key: fs.mount.clone(),
            name: format!("{host}:{}", fs.mount),
            attributes: json!({
                "mount": fs.mount,
                "device": fs.device,
                "fs_type": fs.fs_type,
                "total_bytes": fs.total_bytes,
                "removable": fs.removable,
            }),
        });
    }
    for nic in &inv.network_interfaces {
        parts.push(PartSpec {
            class: CLASS_NETWORK_INTERFACE,
            key: nic.name.clone(),
            name: format!("{host}:{}", nic.name),
            attributes: json!({
                "name": nic.name,
                "mac": nic.mac,
                "addresses": nic.addresses,
                "virtual": nic.r#virtual,
            }),
        });
    }
    // Two entries for the same mount or interface would be one CI; the last one wins.
    parts.reverse();
    let mut seen = std::collections::HashSet::new();
    parts.retain(|p| seen.insert((p.class, p.key.clone())));
    parts.reverse();
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use census_common::{Filesystem, NetworkInterface};
    use time::OffsetDateTime;

    #[test]
    fn every_computer_attribute_belongs_to_one_facet() {
        let mut inv = Inventory::new("agent", OffsetDateTime::UNIX_EPOCH);
        let text = || Some("x".to_owned());
        inv.host = census_common::Host {
            hostname: text(),
            fqdn: text(),
            machine_id: text(),
            domain: text(),
        };
        inv.hardware = census_common::Hardware {
            vendor: text(),
            model: text(),
            serial: text(),
            uuid: text(),
            board_serial: text(),
            asset_tag: text(),
            bios_vendor: text(),
            bios_version: text(),
            bios_date: text(),
            chassis: text(),
            virtualization: text(),
            container: text(),
        };
        inv.os = census_common::Os {
            family: text(),
            name: text(),
            version: text(),
            kernel: text(),
            arch: text(),
            boot_time: Some(OffsetDateTime::UNIX_EPOCH),
        };
        inv.cpu = census_common::Cpu {
            model: text(),
            vendor: text(),
            physical_cores: Some(1),
            logical_cores: Some(1),
            frequency_mhz: Some(1),
        };
        inv.memory.total_bytes = Some(1);
        inv.memory.swap_total_bytes = Some(1);
        let Value::Object(attrs) = computer_attributes(&inv) else {
            panic!("attributes are an object");
        };
        let mut emitted: Vec<&str> = attrs.keys().map(String::as_str).collect();
        let mut listed: Vec<&str> = FACET_ATTRIBUTES
            .iter()
            .flat_map(|(_, keys)| keys.iter().copied())
            .collect();
        emitted.sort_unstable();
        listed.sort_unstable();
        assert_eq!(emitted, listed);
    }

    #[test]
    fn attributes_of_incomplete_facets_are_kept_as_stored() {
        let stored = json!({"hostname": "web-1", "fqdn": "web-1.example.org",
                            "os_name": "Debian GNU/Linux", "cpu_model": "Old"});
        let mut new = json!({"os_name": "Debian GNU/Linux 13", "cpu_model": "New",
                             "machine_id": "should-go"});
        keep_incomplete_attributes(&mut new, &stored, &["host".to_owned()]);
        assert_eq!(
            new,
            json!({"hostname": "web-1", "fqdn": "web-1.example.org",
                   "os_name": "Debian GNU/Linux 13", "cpu_model": "New"})
        );
        assert_eq!(
            incomplete_part_classes(&["software".into(), "filesystems".into()]),
            vec![CLASS_FILESYSTEM]
        );
    }

    #[test]
    fn attributes_are_flat_and_leave_out_unknowns() {
        let mut inv = Inventory::new("agent", OffsetDateTime::UNIX_EPOCH);
        inv.host.hostname = Some("web-1".into());
        inv.os.name = Some("Debian GNU/Linux".into());
        inv.os.family = Some("linux".into());
        inv.memory.total_bytes = Some(1024);
        let attrs = computer_attributes(&inv);
        assert_eq!(
            attrs,
            json!({"hostname": "web-1", "os_name": "Debian GNU/Linux", "os_family": "linux",
                   "memory_total_bytes": 1024})
        );
        assert_eq!(computer_name(&inv), "web-1");
        inv.host.hostname = None;
        assert_eq!(computer_name(&inv), "agent");
    }

    #[test]
    fn one_part_per_mount_and_interface() {
        let mut inv = Inventory::new("agent", OffsetDateTime::UNIX_EPOCH);
        inv.host.hostname = Some("web-1".into());
        let fs = |mount: &str, total| Filesystem {
            mount: mount.into(),
            device: None,
            fs_type: Some("ext4".into()),
            total_bytes: Some(total),
            removable: false,
        };
        inv.filesystems = vec![fs("/", 1), fs("/home", 2), fs("/", 3)];
        inv.network_interfaces = vec![NetworkInterface {
            name: "eth0".into(),
            mac: Some("52:54:00:12:34:56".into()),
            addresses: vec!["192.0.2.5/24".into()],
            r#virtual: false,
        }];
        let parts = part_specs(&inv);
        let keys: Vec<_> = parts.iter().map(|p| (p.class, p.key.as_str())).collect();
        assert_eq!(
            keys,
            vec![
                ("filesystem", "/home"),
                ("filesystem", "/"),
                ("network_interface", "eth0")
            ]
        );
        assert_eq!(parts[1].attributes["total_bytes"], 3);
        assert_eq!(parts[2].name, "web-1:eth0");
    }
}
