//! Fills a collector with computers through `POST /api/v1/import`, the admin route for a
//! machine that cannot run an agent: each document goes through the same identification,
//! reconciliation and history as an agent's inventory.
//!
//! **Promises:** machine `i` of seed `s` is always the same document apart from
//! `collected_at` ([`Machine::generate`] depends on nothing else), so seeding is deterministic
//! and can be split across threads, or across runs, freely; importing it again updates the
//! same CI (same `agent_id`, `machine_id`, serial and hardware UUID). Every machine carries
//! the 822 packages of `tests/fixtures/packages-debian12.tsv`, with `openssl`, `libssl3` and
//! `libssl-dev` moved together to one of [`OPENSSL_VERSIONS`], drawn by its weight.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use census_common::{
    Cpu, Filesystem, Hardware, Host, INVENTORY_SCHEMA, Inventory, Memory, NetworkInterface, Os,
    Software,
};
use serde::Serialize;
use time::OffsetDateTime;

use super::http::Target;
use super::rng::Rng;
use crate::stats::{Percentiles, Tally};

/// Real Debian 12 builds of OpenSSL and how many machines in 100 run each: the default
/// `--openssl-older-than 3.0.14` selects the first two, a tenth of the fleet.
pub const OPENSSL_VERSIONS: &[(&str, u32)] = &[
    ("3.0.9-1", 5),
    ("3.0.11-1~deb12u2", 5),
    ("3.0.14-1~deb12u2", 10),
    ("3.0.16-1~deb12u1", 30),
    ("3.0.19-1~deb12u2", 50),
];

/// Machines booted up to 2000 hours before this time (a fixed past, so that importing a
/// machine again changes nothing but `collected_at`).
const BOOT_EPOCH: OffsetDateTime = time::macros::datetime!(2026-01-01 00:00 UTC);

/// The packages that come from the openssl source package and move with it.
const OPENSSL_BINARIES: &[&str] = &["openssl", "libssl3", "libssl-dev"];

const SITES: &[&str] = &["ams", "fra", "lon", "nyc", "sfo", "sin", "syd", "tyo"];
const ROLES: &[&str] = &["web", "db", "app", "cache", "build", "mail", "log", "vpn"];
const HARDWARE: &[(&str, &str)] = &[
    ("Dell Inc.", "PowerEdge R650"),
    ("Dell Inc.", "PowerEdge R750"),
    ("HPE", "ProLiant DL360 Gen10"),
    ("Lenovo", "ThinkSystem SR630"),
    ("QEMU", "Standard PC (Q35 + ICH9, 2009)"),
];

/// The fixture's packages, name/version/arch/vendor, as dpkg reports them (read by the fleet
/// simulator's [`Fixture`](crate::fleet::inventory::Fixture)).
pub fn debian12_packages() -> Vec<Software> {
    crate::fleet::inventory::Fixture::load()
        .packages
        .into_iter()
        .map(|p| Software {
            name: p.name,
            version: Some(p.version),
            arch: Some(p.arch),
            vendor: Some(p.vendor),
            source: "dpkg".to_owned(),
        })
        .collect()
}

/// One seeded computer.
pub struct Machine {
    pub hostname: String,
    pub openssl_version: &'static str,
    pub inventory: Inventory,
}

impl Machine {
    /// Machine `index` of the fleet seeded with `seed`, collected at `collected_at` (which
    /// nothing else depends on);
    /// `packages` is [`debian12_packages`].
    pub fn generate(
        seed: u64,
        index: u32,
        packages: &[Software],
        collected_at: OffsetDateTime,
    ) -> Machine {
        let mut rng = Rng::for_item(seed, u64::from(index));
        let openssl_version = rng.weighted(OPENSSL_VERSIONS);
        let site = rng.pick(SITES);
        let role = rng.pick(ROLES);
        let hostname = format!("{site}-{role}-{index:06}");
        let (vendor, model) = rng.pick(HARDWARE);
        let agent_id = rng.uuid();
        let mut inventory = Inventory::new(agent_id, collected_at);
        inventory.host = Host {
            hostname: Some(hostname.clone()),
            fqdn: Some(format!("{hostname}.{site}.census.test")),
            machine_id: Some(rng.hex(16)),
            domain: Some(format!("{site}.census.test")),
        };
        inventory.hardware = Hardware {
            vendor: Some(vendor.to_owned()),
            model: Some(model.to_owned()),
            serial: Some(format!("SN{}", rng.hex(5).to_uppercase())),
            uuid: Some(rng.uuid()),
            virtualization: (vendor == "QEMU").then(|| "kvm".to_owned()),
            ..Hardware::default()
        };
        inventory.os = Os {
            family: Some("linux".into()),
            name: Some("Debian GNU/Linux".into()),
            version: Some("12".into()),
            kernel: Some(format!("6.1.0-{}-amd64", 25 + rng.below(10))),
            arch: Some("x86_64".into()),
            boot_time: Some(BOOT_EPOCH - Duration::from_secs(3600 * u64::from(rng.below(2000)))),
        };
        let cores = [4, 8, 16, 32][rng.below(4) as usize];
        inventory.cpu = Cpu {
            model: Some("Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz".into()),
            vendor: Some("GenuineIntel".into()),
            physical_cores: Some(cores),
            logical_cores: Some(cores * 2),
            frequency_mhz: Some(2000),
        };
        let gib = 1u64 << 30;
        inventory.memory = Memory {
            total_bytes: Some(u64::from(cores) * 4 * gib),
            swap_total_bytes: Some(2 * gib),
        };
        let mut filesystems = vec![
            filesystem("/", "/dev/sda2", "ext4", 100 * gib),
            filesystem("/boot/efi", "/dev/sda1", "vfat", gib / 2),
        ];
        if role == "db" || role == "log" {
            filesystems.push(filesystem("/srv", "/dev/sdb1", "xfs", 2000 * gib));
        }
        inventory.filesystems = filesystems;
        let mac = format!(
            "52:54:00:{:02x}:{:02x}:{:02x}",
            rng.below(256),
            rng.below(256),
            rng.below(256)
        );
        inventory.network_interfaces = vec![NetworkInterface {
            name: "eth0".into(),
            mac: Some(mac),
            addresses: vec![format!(
                "10.{}.{}.{}/16",
                index >> 16,
                (index >> 8) & 255,
                index & 255
            )],
            r#virtual: false,
        }];
        inventory.software = packages
            .iter()
            .map(|package| {
                let mut package = package.clone();
                if OPENSSL_BINARIES.contains(&package.name.as_str()) {
                    package.version = Some(openssl_version.to_owned());
                }
                package
            })
            .collect();
        debug_assert_eq!(inventory.schema, INVENTORY_SCHEMA);
        Machine {
            hostname,
            openssl_version,
            inventory,
        }
    }
}

fn filesystem(mount: &str, device: &str, fs_type: &str, total_bytes: u64) -> Filesystem {
    Filesystem {
        mount: mount.into(),
        device: Some(device.into()),
        fs_type: Some(fs_type.into()),
        total_bytes: Some(total_bytes),
        removable: false,
    }
}

/// What seeding did.
#[derive(Debug, Serialize)]
pub struct SeedReport {
    /// Machines `first..first + computers` were imported.
    pub first: u32,
    pub computers: u32,
    pub rng: u64,
    pub concurrency: usize,
    pub seconds: f64,
    pub per_second: f64,
    /// CIs the imports created (the rest updated a CI an earlier seeding made).
    pub created: u64,
    pub failed: u64,
    pub errors: BTreeMap<String, u64>,
    /// Bytes of JSON posted.
    pub bytes_sent: u64,
    #[serde(skip)]
    pub latency: Option<Percentiles>,
    pub latency_p50_us: Option<u64>,
    pub latency_p99_us: Option<u64>,
    /// Machines seeded per openssl version.
    pub openssl_versions: BTreeMap<String, u64>,
    /// CPU seconds the collector process, and its writer thread alone, spent while seeding
    /// (with `--collector-pid`).
    pub collector_cpu_s: Option<f64>,
    pub writer_cpu_s: Option<f64>,
}

/// Imports machines `first..first + computers` of seed `rng` with `concurrency` requests in
/// flight.
pub fn seed(
    target: &Target,
    first: u32,
    computers: u32,
    rng: u64,
    concurrency: usize,
) -> SeedReport {
    let packages = debian12_packages();
    let end = first.saturating_add(computers);
    let next = AtomicU32::new(first);
    let created = std::sync::atomic::AtomicU64::new(0);
    let versions = Mutex::new(BTreeMap::<String, u64>::new());
    let started = Instant::now();
    let mut tally = Tally::default();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                scope.spawn(|| {
                    let mut conn = target.connect();
                    let mut tally = Tally::default();
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= end {
                            return tally;
                        }
                        let machine =
                            Machine::generate(rng, index, &packages, OffsetDateTime::now_utc());
                        let body = serde_json::to_vec(&machine.inventory)
                            .expect("an inventory encodes as JSON");
                        let sent = Instant::now();
                        match conn.post_json("/api/v1/import", &body) {
                            Ok(response) if response.is_success() => {
                                tally.ok(sent.elapsed(), body.len());
                                if response.status == 201 {
                                    created.fetch_add(1, Ordering::Relaxed);
                                }
                                *versions
                                    .lock()
                                    .expect("versions lock")
                                    .entry(machine.openssl_version.to_owned())
                                    .or_default() += 1;
                            }
                            Ok(response) => tally.error(response.error_label(), body.len()),
                            Err(failure) => tally.error(failure.kind, body.len()),
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            tally.merge(worker.join().expect("a seeding thread panicked"));
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    let latency = tally.percentiles();
    SeedReport {
        first,
        computers: end - first,
        rng,
        concurrency,
        seconds,
        per_second: f64::from(end - first) / seconds,
        created: created.into_inner(),
        failed: tally.failed(),
        errors: tally.errors().clone(),
        bytes_sent: tally.bytes_sent(),
        latency,
        latency_p50_us: latency.map(|p| p.p50),
        latency_p99_us: latency.map(|p| p.p99),
        openssl_versions: versions.into_inner().expect("versions lock"),
        collector_cpu_s: None,
        writer_cpu_s: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixture_has_every_package_and_openssl() {
        let packages = debian12_packages();
        assert_eq!(packages.len(), 822);
        for name in OPENSSL_BINARIES {
            assert!(packages.iter().any(|p| p.name == *name), "{name}");
        }
    }

    #[test]
    fn a_machine_is_the_same_for_the_same_seed_and_index() {
        let packages = debian12_packages();
        let at = OffsetDateTime::UNIX_EPOCH;
        let a = Machine::generate(7, 12, &packages, at);
        let b = Machine::generate(7, 12, &packages, at);
        let other = Machine::generate(8, 12, &packages, at);
        assert_eq!(a.inventory, b.inventory);
        assert_ne!(a.inventory.agent_id, other.inventory.agent_id);
        let openssl: Vec<_> = a
            .inventory
            .software
            .iter()
            .filter(|p| OPENSSL_BINARIES.contains(&p.name.as_str()))
            .map(|p| p.version.as_deref().unwrap())
            .collect();
        assert_eq!(openssl, [a.openssl_version; 3]);
    }

    #[test]
    fn openssl_versions_follow_their_weights() {
        let packages = debian12_packages();
        let mut counts = BTreeMap::new();
        for index in 0..2000 {
            let machine = Machine::generate(1, index, &packages, OffsetDateTime::UNIX_EPOCH);
            *counts.entry(machine.openssl_version).or_insert(0u32) += 1;
        }
        // 2000 draws: each weight w% gives 20w machines, give or take a few standard deviations.
        for (version, weight) in OPENSSL_VERSIONS {
            let n = counts[version];
            let expected = 20 * weight;
            assert!(
                n.abs_diff(expected) < 80,
                "{version}: {n}, expected about {expected}"
            );
        }
    }
}
