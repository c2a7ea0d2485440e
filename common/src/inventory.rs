//! The inventory document (schema 1): what a machine is and what is installed on it.
//!
//! Unknown values are `None` (serialised as `null`), never invented.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::INVENTORY_SCHEMA;

/// Granularity at which [`Inventory::content_digest`] sees the boot time.
const BOOT_TIME_DIGEST_SECS: i64 = 600;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Inventory {
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1))]
    pub schema: u32,
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    pub agent_id: String,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub collected_at: OffsetDateTime,
    #[serde(default)]
    pub host: Host,
    #[serde(default)]
    pub hardware: Hardware,
    #[serde(default)]
    pub os: Os,
    #[serde(default)]
    pub cpu: Cpu,
    #[serde(default)]
    pub memory: Memory,
    #[serde(default)]
    pub filesystems: Vec<Filesystem>,
    #[serde(default)]
    pub network_interfaces: Vec<NetworkInterface>,
    #[serde(default)]
    pub software: Vec<Software>,
    /// Facets that failed or were partial on this run, one readable line each. A failed facet
    /// leaves its fields empty; it never fails the whole report.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Facets this run could not learn at all (they overran their time budget, or were still
    /// stuck from an earlier run): `host`, `hardware`, `os`, `cpu`, `memory`, `filesystems`,
    /// `network_interfaces` or `software`. Their fields are empty here because they are
    /// unknown, not because the machine has nothing: a reader keeps what it knew of them.
    /// Left out of the encoding when empty, so an inventory without it encodes (and digests)
    /// exactly as before the field existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incomplete: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Host {
    pub hostname: Option<String>,
    pub fqdn: Option<String>,
    pub machine_id: Option<String>,
    pub domain: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Hardware {
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub uuid: Option<String>,
    pub board_serial: Option<String>,
    pub asset_tag: Option<String>,
    pub bios_vendor: Option<String>,
    pub bios_version: Option<String>,
    pub bios_date: Option<String>,
    pub chassis: Option<String>,
    /// Hypervisor the machine runs under (`kvm`, `vmware`, `microsoft`, ...), or `None` when it is
    /// bare metal or unknown.
    pub virtualization: Option<String>,
    /// Container runtime the agent runs inside (`docker`, `podman`, `lxc`, ...), if any.
    #[serde(default)]
    pub container: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Os {
    /// `linux`, `macos`, `windows`, ...
    pub family: Option<String>,
    pub name: Option<String>,
    pub version: Option<String>,
    pub kernel: Option<String>,
    pub arch: Option<String>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub boot_time: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Cpu {
    pub model: Option<String>,
    pub vendor: Option<String>,
    pub physical_cores: Option<u32>,
    pub logical_cores: Option<u32>,
    pub frequency_mhz: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Memory {
    pub total_bytes: Option<u64>,
    pub swap_total_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Filesystem {
    pub mount: String,
    pub device: Option<String>,
    pub fs_type: Option<String>,
    pub total_bytes: Option<u64>,
    #[serde(default)]
    pub removable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NetworkInterface {
    pub name: String,
    pub mac: Option<String>,
    /// Addresses in CIDR form, e.g. `192.0.2.5/24`, `2001:db8::5/64`.
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub r#virtual: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Software {
    pub name: String,
    pub version: Option<String>,
    pub arch: Option<String>,
    pub vendor: Option<String>,
    /// Where the entry came from: `dpkg`, `rpm`, `apk`, ...
    pub source: String,
}

impl Inventory {
    /// An empty inventory for `agent_id`, collected now; facets fill it in.
    pub fn new(agent_id: impl Into<String>, collected_at: OffsetDateTime) -> Self {
        Inventory {
            schema: INVENTORY_SCHEMA,
            agent_id: agent_id.into(),
            collected_at,
            host: Host::default(),
            hardware: Hardware::default(),
            os: Os::default(),
            cpu: Cpu::default(),
            memory: Memory::default(),
            filesystems: Vec::new(),
            network_interfaces: Vec::new(),
            software: Vec::new(),
            warnings: Vec::new(),
            incomplete: Vec::new(),
        }
    }

    /// Puts every list in a canonical order so that the same machine state always encodes to
    /// the same bytes, whatever order the OS listed things in.
    pub fn normalize(&mut self) {
        self.filesystems.sort_by(|a, b| a.mount.cmp(&b.mount));
        self.network_interfaces.sort_by(|a, b| a.name.cmp(&b.name));
        for nic in &mut self.network_interfaces {
            nic.addresses.sort();
        }
        self.software.sort();
        self.software.dedup();
    }

    /// SHA-256 (hex) of the inventory's content, ignoring when it was collected and the
    /// warnings, and seeing the boot time only to the 10 minutes. Two collections of an unchanged machine give the same digest, which is how the
    /// agent decides whether the inventory needs sending again. Call [`Inventory::normalize`]
    /// first.
    pub fn content_digest(&self) -> String {
        let mut copy = self.clone();
        copy.collected_at = OffsetDateTime::UNIX_EPOCH;
        copy.warnings.clear();
        // The kernel's boot time can move by a second between reads (clock adjustments), which
        // must not count as a change; a reboot moves it by far more. So the digest sees it to
        // the 10 minutes. The agent also keeps its first reading while later ones stay within
        // a few seconds of it, so a boot time next to a boundary does not flip the digest.
        copy.os.boot_time = copy.os.boot_time.and_then(|t| {
            let bucket = t.unix_timestamp().div_euclid(BOOT_TIME_DIGEST_SECS);
            OffsetDateTime::from_unix_timestamp(bucket * BOOT_TIME_DIGEST_SECS).ok()
        });
        let bytes = rmp_serde::to_vec_named(&copy).expect("inventory always encodes");
        let digest = Sha256::digest(&bytes);
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}
