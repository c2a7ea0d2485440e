//! Virtual agents' inventories: each agent installs 700 to 822 packages of the real Debian 12
//! list in `fixtures/packages-debian12.tsv`, with `openssl`/`libssl3` at one of a few real
//! Debian 12 versions (so "openssl older than X" selects a fraction of the fleet), and 2 to 4
//! filesystems, 1 to 3 network interfaces, CPU, memory, OS and hardware facts.
//!
//! **Promise:** `(seed, index, version, churn)` gives the same inventory on every run. Version
//! `k` is version `k - 1` with a `churn` fraction of its packages upgraded (a `+bN` rebuild
//! suffix on their version), so the collector sees exactly that churn from one to the next.
//! A second run continues an agent's history from the version its state file recorded (with
//! the same `--churn`; another churn gives another history, which is only a bigger change).

use census_common::{
    Cpu, Filesystem, Hardware, Host, INVENTORY_SCHEMA, Inventory, Memory, NetworkInterface, Os,
    Software,
};
use time::OffsetDateTime;

use super::identity::{self, Profile, Rng, Stream};

const FIXTURE: &str = include_str!("../../fixtures/packages-debian12.tsv");

/// Packages every machine has, whose version varies across the fleet.
const OPENSSL_FAMILY: [&str; 3] = ["openssl", "libssl3", "libssl-dev"];

/// Real Debian 12 versions of openssl, newest first, with the share of the fleet at each.
pub const OPENSSL_VERSIONS: [(&str, f64); 4] = [
    ("3.0.19-1~deb12u2", 0.40),
    ("3.0.17-1~deb12u2", 0.25),
    ("3.0.15-1~deb12u1", 0.20),
    ("3.0.11-1~deb12u2", 0.15),
];

/// The fewest packages an agent installs; the most is the whole fixture.
pub const MIN_PACKAGES: usize = 700;

/// One line of the fixture.
#[derive(Debug, Clone)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub vendor: String,
}

/// The package list every inventory draws from.
#[derive(Debug)]
pub struct Fixture {
    pub packages: Vec<Package>,
}

impl Fixture {
    /// The fixture compiled into the binary.
    pub fn load() -> Fixture {
        let packages = FIXTURE
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|line| {
                let mut f = line.split('\t');
                let mut next = || f.next().unwrap_or("").to_owned();
                Package {
                    name: next(),
                    version: next(),
                    arch: next(),
                    vendor: next(),
                }
            })
            .collect();
        Fixture { packages }
    }

    /// Which fixture packages agent `index` installs (indices into `packages`, in order), and
    /// the openssl version it runs.
    fn selection(&self, seed: u64, index: u32) -> (Vec<usize>, &'static str) {
        let mut rng = Rng::new(seed, index, Stream::Packages as u64, 0);
        let total = self.packages.len();
        let keep = MIN_PACKAGES.min(total)
            + rng.below((total - MIN_PACKAGES.min(total)) as u64 + 1) as usize;
        // Drop `total - keep` packages picked by a partial Fisher-Yates shuffle, sparing the
        // openssl family so that every machine answers the openssl query.
        let mut order: Vec<usize> = (0..total).collect();
        let mut dropped = vec![false; total];
        let mut to_drop = total - keep;
        let mut i = 0;
        while to_drop > 0 && i < total {
            let j = i + rng.below((total - i) as u64) as usize;
            order.swap(i, j);
            let p = order[i];
            if !OPENSSL_FAMILY[..2].contains(&self.packages[p].name.as_str()) {
                dropped[p] = true;
                to_drop -= 1;
            }
            i += 1;
        }
        let mut x = rng.unit();
        let openssl = OPENSSL_VERSIONS
            .iter()
            .find(|(_, share)| {
                x -= share;
                x < 0.0
            })
            .unwrap_or(&OPENSSL_VERSIONS[0])
            .0;
        ((0..total).filter(|&p| !dropped[p]).collect(), openssl)
    }

    /// How many packages agent `index` installs (the same in every version).
    pub fn package_count(&self, seed: u64, index: u32) -> usize {
        self.selection(seed, index).0.len()
    }

    /// The openssl version agent `index` runs.
    pub fn openssl_version(&self, seed: u64, index: u32) -> &'static str {
        self.selection(seed, index).1
    }

    /// Agent `index`'s software at inventory `version` (see the module doc).
    pub fn software(&self, seed: u64, index: u32, version: u32, churn: f64) -> Vec<Software> {
        let (chosen, openssl) = self.selection(seed, index);
        let n = chosen.len();
        let mut rebuilds = vec![0u32; n];
        let per_step = ((churn * n as f64).round() as usize).min(n);
        let mut slots: Vec<usize> = (0..n).collect();
        for step in 1..=version {
            let mut rng = Rng::new(seed, index, Stream::Churn as u64 + u64::from(step), 0);
            for k in 0..per_step {
                let j = k + rng.below((n - k) as u64) as usize;
                slots.swap(k, j);
                rebuilds[slots[k]] += 1;
            }
        }
        chosen
            .iter()
            .zip(rebuilds)
            .map(|(&p, rebuilt)| {
                let pkg = &self.packages[p];
                let base = if OPENSSL_FAMILY.contains(&pkg.name.as_str()) {
                    openssl
                } else {
                    pkg.version.as_str()
                };
                let version = if rebuilt == 0 {
                    base.to_owned()
                } else {
                    format!("{base}+b{rebuilt}")
                };
                Software {
                    name: pkg.name.clone(),
                    version: Some(version),
                    arch: Some(pkg.arch.clone()),
                    vendor: Some(pkg.vendor.clone()),
                    source: "dpkg".to_owned(),
                }
            })
            .collect()
    }
}

const VENDORS: [(&str, &str, &str); 4] = [
    ("Dell Inc.", "PowerEdge R650", "Dell Inc."),
    ("HPE", "ProLiant DL360 Gen10", "HPE"),
    ("Lenovo", "ThinkSystem SR630 V2", "Lenovo"),
    ("Supermicro", "SYS-1029P-WTR", "American Megatrends Inc."),
];
const CPUS: [(&str, &str); 3] = [
    ("Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", "GenuineIntel"),
    ("Intel(R) Xeon(R) Silver 4314 CPU @ 2.40GHz", "GenuineIntel"),
    ("AMD EPYC 7443P 24-Core Processor", "AuthenticAMD"),
];
const KERNELS: [&str; 3] = ["6.1.0-28-amd64", "6.1.0-31-amd64", "6.1.0-37-amd64"];
const FS_SIZES_GIB: [u64; 5] = [20, 50, 100, 250, 1000];

/// Agent `index`'s whole inventory at `version`, collected at `now`, in the agent's canonical
/// order ([`Inventory::normalize`]).
pub fn build(
    fixture: &Fixture,
    seed: u64,
    index: u32,
    version: u32,
    churn: f64,
    breaching: f64,
    now: OffsetDateTime,
) -> Inventory {
    let profile = Profile::new(seed, index, breaching);
    let agent_id = identity::agent_id(seed, index);
    let mut rng = Rng::new(seed, index, Stream::Profile as u64, 1);
    let hostname = identity::hostname(index);
    let (vendor, model, bios_vendor) = *rng.pick(&VENDORS);
    let (cpu_model, cpu_vendor) = *rng.pick(&CPUS);
    let machine_id: String = {
        let id = identity::uuid_from(Rng::new(seed, index, Stream::MachineId as u64, 0));
        id.replace('-', "")
    };
    let mut inv = Inventory::new(agent_id, now);
    inv.schema = INVENTORY_SCHEMA;
    inv.host = Host {
        fqdn: Some(format!("{hostname}.fleet.test")),
        hostname: Some(hostname),
        machine_id: Some(machine_id),
        domain: Some("fleet.test".to_owned()),
    };
    inv.hardware = Hardware {
        vendor: Some(vendor.to_owned()),
        model: Some(model.to_owned()),
        serial: Some(identity::serial(seed, index)),
        uuid: Some(identity::uuid_from(Rng::new(
            seed,
            index,
            Stream::HardwareUuid as u64,
            0,
        ))),
        board_serial: Some(format!("B{}", identity::serial(seed, index))),
        asset_tag: None,
        bios_vendor: Some(bios_vendor.to_owned()),
        bios_version: Some(format!("2.{}.{}", rng.below(20), rng.below(10))),
        bios_date: Some("03/14/2024".to_owned()),
        chassis: Some("rack mount".to_owned()),
        virtualization: None,
        container: None,
    };
    inv.os = Os {
        family: Some("linux".to_owned()),
        name: Some("Debian GNU/Linux".to_owned()),
        version: Some("12".to_owned()),
        kernel: Some(rng.pick(&KERNELS).to_string()),
        arch: Some("x86_64".to_owned()),
        boot_time: OffsetDateTime::from_unix_timestamp(profile.boot_time).ok(),
    };
    inv.cpu = Cpu {
        model: Some(cpu_model.to_owned()),
        vendor: Some(cpu_vendor.to_owned()),
        physical_cores: Some(profile.logical_cores / 2),
        logical_cores: Some(profile.logical_cores),
        frequency_mhz: Some(2000 + 100 * rng.below(15)),
    };
    inv.memory = Memory {
        total_bytes: Some(profile.memory_bytes),
        swap_total_bytes: Some(profile.memory_bytes / 4),
    };
    inv.filesystems = profile
        .mounts
        .iter()
        .enumerate()
        .map(|(k, mount)| Filesystem {
            mount: (*mount).to_owned(),
            device: Some(format!("/dev/sda{}", k + 1)),
            fs_type: Some(
                if *mount == "/boot/efi" {
                    "vfat"
                } else {
                    "ext4"
                }
                .to_owned(),
            ),
            total_bytes: Some(rng.pick(&FS_SIZES_GIB) << 30),
            removable: false,
        })
        .collect();
    // Addresses in 127.0.0.0/8: inventory data only, never connected to, but tests and
    // benchmarks keep to addresses of this machine. Distinct per machine and interface.
    inv.network_interfaces = (0..profile.interfaces)
        .map(|nic| {
            let host = (index.wrapping_mul(3).wrapping_add(nic)) % 16_777_214 + 1;
            NetworkInterface {
                name: format!("eno{}", nic + 1),
                mac: Some(identity::mac(seed, index, nic)),
                addresses: vec![format!(
                    "127.{}.{}.{}/8",
                    (host >> 16) & 0xFF,
                    (host >> 8) & 0xFF,
                    host & 0xFF
                )],
                r#virtual: false,
            }
        })
        .collect();
    inv.software = fixture.software(seed, index, version, churn);
    inv.normalize();
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_version_changes_the_asked_fraction_of_packages() {
        let fixture = Fixture::load();
        assert_eq!(fixture.packages.len(), 822);
        let v0 = fixture.software(3, 9, 0, 0.1);
        let v1 = fixture.software(3, 9, 1, 0.1);
        let v2 = fixture.software(3, 9, 2, 0.1);
        assert!((MIN_PACKAGES..=822).contains(&v0.len()));
        assert_eq!(v0.len(), v1.len());
        let changed =
            |a: &[Software], b: &[Software]| a.iter().zip(b).filter(|(x, y)| x != y).count();
        let expected = (0.1 * v0.len() as f64).round() as usize;
        assert_eq!(changed(&v0, &v1), expected);
        assert_eq!(changed(&v1, &v2), expected);
        assert_eq!(v1, fixture.software(3, 9, 1, 0.1), "replayable");
    }

    #[test]
    fn openssl_versions_spread_over_the_fleet() {
        let fixture = Fixture::load();
        let oldest = (0..1000)
            .filter(|&i| fixture.openssl_version(1, i) == OPENSSL_VERSIONS[3].0)
            .count();
        assert!((100..200).contains(&oldest), "{oldest}");
        let inv = build(&fixture, 1, 4, 0, 0.1, 0.0, OffsetDateTime::UNIX_EPOCH);
        let openssl = inv.software.iter().find(|s| s.name == "openssl").unwrap();
        assert_eq!(
            openssl.version.as_deref(),
            Some(fixture.openssl_version(1, 4))
        );
        assert_eq!(inv.host.hostname.as_deref(), Some("sim-000004"));
        assert_eq!(inv.software.len(), fixture.package_count(1, 4));
    }
}
