//! Realistic reports for benchmarks, shared by the benches of `census-common` and
//! `census-collector` (included with `#[path]`; a bench cannot depend on `census-tests`, which
//! depends on `census-common`).
//!
//! Packages come from `tests/fixtures/packages-debian12.tsv` (822 real dpkg packages of a
//! Debian 12 machine); the other facets are those of a small Debian 12 virtual machine, with
//! every identity (serial, hardware UUID, machine-id, hostname, MAC) derived from the
//! machine's number so that each number is a different computer to the collector.

#![allow(dead_code)]

use std::path::Path;

use census_common::{
    Cpu, Filesystem, FilesystemUsage, Hardware, HealthSample, Host, Inventory, Memory,
    NetworkInterface, Os, Software,
};
use time::OffsetDateTime;

/// The first `n` packages of the fixture, read from the workspace (`manifest_dir` is the
/// bench's `CARGO_MANIFEST_DIR`). Panics if the fixture has fewer.
pub fn debian12_packages(manifest_dir: &str, n: usize) -> Vec<Software> {
    let path = Path::new(manifest_dir).join("../tests/fixtures/packages-debian12.tsv");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let some = |v: Option<&str>| v.filter(|v| !v.is_empty()).map(str::to_owned);
    let packages: Vec<Software> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let mut fields = line.split('\t');
            Software {
                name: fields.next().expect("a name").to_owned(),
                version: some(fields.next()),
                arch: some(fields.next()),
                vendor: some(fields.next()),
                source: "dpkg".to_owned(),
            }
        })
        .take(n)
        .collect();
    assert_eq!(
        packages.len(),
        n,
        "{} has fewer than {n} packages",
        path.display()
    );
    packages
}

/// The agent id of machine `machine`.
pub fn agent_id(machine: usize) -> String {
    format!("6f1d2c3b-0a4e-4b7d-9c1e-{machine:012x}")
}

/// Machine `machine`'s inventory with `software` installed, normalised as the agent sends it.
pub fn inventory(machine: usize, software: Vec<Software>, at: OffsetDateTime) -> Inventory {
    let mut inv = Inventory::new(agent_id(machine), at);
    let hostname = format!("web-{machine:05}");
    inv.host = Host {
        hostname: Some(hostname.clone()),
        fqdn: Some(format!("{hostname}.dc1.example.internal")),
        machine_id: Some(format!("{machine:032x}")),
        domain: Some("dc1.example.internal".into()),
    };
    inv.hardware = Hardware {
        vendor: Some("QEMU".into()),
        model: Some("Standard PC (Q35 + ICH9, 2009)".into()),
        serial: Some(format!("VM{machine:010}")),
        uuid: Some(format!("4c4c4544-0042-3510-8052-{machine:012x}")),
        board_serial: None,
        asset_tag: None,
        bios_vendor: Some("SeaBIOS".into()),
        bios_version: Some("1.16.2-debian-1.16.2-1".into()),
        bios_date: Some("04/01/2014".into()),
        chassis: Some("other".into()),
        virtualization: Some("kvm".into()),
        container: None,
    };
    inv.os = Os {
        family: Some("linux".into()),
        name: Some("Debian GNU/Linux 12 (bookworm)".into()),
        version: Some("12".into()),
        kernel: Some("6.1.0-41-amd64".into()),
        arch: Some("x86_64".into()),
        boot_time: Some(at - time::Duration::days(12)),
    };
    inv.cpu = Cpu {
        model: Some("AMD EPYC 7B13".into()),
        vendor: Some("AuthenticAMD".into()),
        physical_cores: Some(1),
        logical_cores: Some(2),
        frequency_mhz: Some(3049),
    };
    inv.memory = Memory {
        total_bytes: Some(4_102_836_224),
        swap_total_bytes: Some(1_022_357_504),
    };
    inv.filesystems = [
        ("/", "/dev/vda1", "ext4", 41_110_568_960u64),
        ("/boot/efi", "/dev/vda15", "vfat", 129_718_272),
        ("/var/lib/docker", "/dev/vdb1", "xfs", 107_321_753_600),
    ]
    .into_iter()
    .map(|(mount, device, fs_type, total)| Filesystem {
        mount: mount.into(),
        device: Some(device.into()),
        fs_type: Some(fs_type.into()),
        total_bytes: Some(total),
        removable: false,
    })
    .collect();
    let (hi, lo) = ((machine >> 8) & 0xff, machine & 0xff);
    inv.network_interfaces = vec![
        NetworkInterface {
            name: "docker0".into(),
            mac: Some("02:42:8e:1f:55:0a".into()),
            addresses: vec!["172.17.0.1/16".into()],
            r#virtual: true,
        },
        NetworkInterface {
            name: "ens3".into(),
            mac: Some(format!(
                "00:16:3e:{:02x}:{hi:02x}:{lo:02x}",
                (machine >> 16) & 0xff
            )),
            addresses: vec![
                format!("10.{}.{hi}.{lo}/16", 20 + (machine >> 16) % 200),
                format!(
                    "fe80::216:3eff:fe{:02x}:{hi:02x}{lo:02x}/64",
                    (machine >> 16) & 0xff
                ),
            ],
            r#virtual: false,
        },
    ];
    inv.software = software;
    inv.normalize();
    inv
}

/// Machine `machine`'s health sample at `at`: a busy but healthy web server unless `breach`,
/// then every default rule's metric is past its threshold (CPU, memory, load, `/` full).
pub fn health(machine: usize, at: OffsetDateTime, breach: bool) -> HealthSample {
    let mut sample = HealthSample::empty(agent_id(machine), at);
    let (cpu, memory, load, root_used) = if breach {
        (99.2, 97.5, [9.1, 8.7, 8.2], 96.4)
    } else {
        (23.4, 61.8, [0.42, 0.51, 0.47], 58.3)
    };
    sample.uptime_secs = Some(1_036_800);
    sample.cpu_percent = Some(cpu);
    sample.load = Some(load);
    sample.memory_used_percent = Some(memory);
    sample.swap_used_percent = Some(1.2);
    sample.filesystems = vec![
        FilesystemUsage {
            mount: "/".into(),
            used_percent: Some(root_used),
            inodes_used_percent: Some(11.9),
        },
        FilesystemUsage {
            mount: "/boot/efi".into(),
            used_percent: Some(4.7),
            inodes_used_percent: None,
        },
        FilesystemUsage {
            mount: "/var/lib/docker".into(),
            used_percent: Some(37.0),
            inodes_used_percent: Some(2.3),
        },
    ];
    sample.process_count = Some(187);
    sample.net_rx_bytes_per_sec = Some(48_213.5);
    sample.net_tx_bytes_per_sec = Some(121_904.25);
    sample.agent_rss_bytes = Some(7_774_208);
    sample.agent_cpu_percent = Some(0.02);
    sample.interval_secs = Some(60);
    sample
}
