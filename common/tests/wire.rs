//! The wire contract: round trips, the golden schema-1 batch and the JSON key names of DESIGN.md.

use census_common::codec::{self, decode_batch};
use census_common::*;
use proptest::prelude::*;
use time::macros::datetime;

const AGENT: &str = "6f1c2a4e-8d3b-4c1a-9e2f-0a1b2c3d4e5f";

fn sample_inventory() -> Inventory {
    let mut inv = Inventory::new(AGENT, datetime!(2026-11-25 10:00:00 UTC));
    inv.host = Host {
        hostname: Some("ws-042".into()),
        fqdn: Some("ws-042.corp.example".into()),
        machine_id: Some("0123456789abcdef0123456789abcdef".into()),
        domain: Some("corp.example".into()),
    };
    inv.hardware = Hardware {
        vendor: Some("LENOVO".into()),
        model: Some("20XW".into()),
        serial: Some("PF2ABCDE".into()),
        uuid: Some("4c4c4544-0051-3510-8052-b4c04f4e5a31".into()),
        board_serial: None,
        asset_tag: None,
        bios_vendor: Some("LENOVO".into()),
        bios_version: Some("N32ET75W (1.51 )".into()),
        bios_date: Some("03/09/2022".into()),
        chassis: Some("notebook".into()),
        virtualization: None,
        container: None,
    };
    inv.os = Os {
        family: Some("linux".into()),
        name: Some("Debian GNU/Linux".into()),
        version: Some("12".into()),
        kernel: Some("6.1.0-18-amd64".into()),
        arch: Some("x86_64".into()),
        boot_time: Some(datetime!(2026-11-20 08:00:00 UTC)),
    };
    inv.cpu = Cpu {
        model: Some("Intel(R) Core(TM) i7-1185G7".into()),
        vendor: Some("GenuineIntel".into()),
        physical_cores: Some(4),
        logical_cores: Some(8),
        frequency_mhz: Some(3000),
    };
    inv.memory = Memory {
        total_bytes: Some(16_000_000_000),
        swap_total_bytes: Some(1_000_000_000),
    };
    inv.filesystems = vec![Filesystem {
        mount: "/".into(),
        device: Some("/dev/nvme0n1p2".into()),
        fs_type: Some("ext4".into()),
        total_bytes: Some(500_000_000_000),
        removable: false,
    }];
    inv.network_interfaces = vec![NetworkInterface {
        name: "enp0s31f6".into(),
        mac: Some("8c:16:45:00:11:22".into()),
        addresses: vec!["192.0.2.5/24".into()],
        r#virtual: false,
    }];
    inv.software = vec![Software {
        name: "openssl".into(),
        version: Some("3.0.11-1~deb12u2".into()),
        arch: Some("amd64".into()),
        vendor: Some("Debian OpenSSL Team".into()),
        source: "dpkg".into(),
    }];
    inv
}

fn sample_health() -> HealthSample {
    let mut h = HealthSample::empty(AGENT, datetime!(2026-11-25 10:01:00 UTC));
    h.uptime_secs = Some(432_000);
    h.cpu_percent = Some(12.5);
    h.load = Some([0.5, 0.25, 0.125]);
    h.memory_used_percent = Some(41.0);
    h.swap_used_percent = Some(0.0);
    h.filesystems = vec![FilesystemUsage {
        mount: "/".into(),
        used_percent: Some(63.5),
        inodes_used_percent: Some(7.25),
    }];
    h.process_count = Some(312);
    h.net_rx_bytes_per_sec = Some(1024.0);
    h.net_tx_bytes_per_sec = Some(512.0);
    h.agent_rss_bytes = Some(6_291_456);
    h.agent_cpu_percent = Some(0.5);
    h
}

fn sample_batch() -> Batch {
    Batch {
        protocol: PROTOCOL_VERSION,
        agent_id: AGENT.into(),
        reports: vec![
            Report {
                seq: 1,
                body: ReportBody::Inventory(sample_inventory()),
            },
            Report {
                seq: 2,
                body: ReportBody::Health(sample_health()),
            },
        ],
    }
}

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/batch-v1.msgpack");

/// The committed bytes of a schema-1 batch must keep decoding to the same value. Regenerate
/// only on purpose: `CENSUS_WRITE_GOLDEN=1 cargo test -p census-common golden`.
#[test]
fn golden_schema_1_batch_still_decodes() {
    if std::env::var_os("CENSUS_WRITE_GOLDEN").is_some() {
        std::fs::write(GOLDEN, codec::encode(&sample_batch(), Format::MessagePack)).unwrap();
    }
    let bytes = std::fs::read(GOLDEN).expect("golden file is committed");
    let batch = decode_batch(&bytes, Format::MessagePack).expect("golden batch decodes");
    assert_eq!(batch, sample_batch());
}

#[test]
fn msgpack_and_json_round_trip() {
    for format in [Format::MessagePack, Format::Json] {
        let bytes = codec::encode(&sample_batch(), format);
        assert_eq!(decode_batch(&bytes, format).unwrap(), sample_batch());
    }
}

#[test]
fn a_batch_with_its_keys_sorted_decodes_the_same() {
    // serde_json's map sorts keys: every report's body fields come before its `kind`, as
    // from a writer that sorts keys (jq -S, Python's sort_keys).
    let sorted = serde_json::to_value(sample_batch()).unwrap();
    assert!(sorted["reports"][0].as_object().unwrap().keys().next() < Some(&"kind".to_owned()));
    for format in [Format::MessagePack, Format::Json] {
        let bytes = codec::encode(&sorted, format);
        assert_eq!(
            decode_batch(&bytes, format).unwrap(),
            sample_batch(),
            "{format:?}"
        );
    }
}

#[test]
fn json_keys_are_the_design_contract() {
    let v = serde_json::to_value(sample_inventory()).unwrap();
    for key in [
        "schema",
        "agent_id",
        "collected_at",
        "host",
        "hardware",
        "os",
        "cpu",
        "memory",
        "filesystems",
        "network_interfaces",
        "software",
    ] {
        assert!(v.get(key).is_some(), "inventory lacks {key}");
    }
    assert_eq!(v["collected_at"], "2026-11-25T10:00:00Z");
    assert_eq!(v["network_interfaces"][0]["virtual"], false);
    assert_eq!(v["hardware"]["board_serial"], serde_json::Value::Null);
    let h = serde_json::to_value(sample_health()).unwrap();
    for key in [
        "uptime_secs",
        "cpu_percent",
        "load",
        "memory_used_percent",
        "swap_used_percent",
        "filesystems",
        "process_count",
        "net_rx_bytes_per_sec",
        "net_tx_bytes_per_sec",
        "agent_rss_bytes",
        "agent_cpu_percent",
    ] {
        assert!(h.get(key).is_some(), "health lacks {key}");
    }
    let r = serde_json::to_value(&sample_batch().reports[1]).unwrap();
    assert_eq!(r["kind"], "health");
    assert_eq!(r["seq"], 2);
}

#[test]
fn a_report_from_another_agent_is_refused() {
    let mut batch = sample_batch();
    if let ReportBody::Health(h) = &mut batch.reports[1].body {
        h.agent_id = "someone-else".into();
    }
    let bytes = codec::encode(&batch, Format::Json);
    let err = decode_batch(&bytes, Format::Json).unwrap_err();
    assert!(
        matches!(err, DecodeError::AgentMismatch { seq: 2, .. }),
        "{err}"
    );
}

#[test]
fn a_future_protocol_is_refused() {
    let mut batch = sample_batch();
    batch.protocol = PROTOCOL_VERSION + 1;
    let bytes = codec::encode(&batch, Format::MessagePack);
    assert!(matches!(
        decode_batch(&bytes, Format::MessagePack),
        Err(DecodeError::UnsupportedProtocol { .. })
    ));
}

#[test]
fn unknown_fields_from_a_newer_agent_are_ignored() {
    let mut v = serde_json::to_value(sample_batch()).unwrap();
    v["reports"][1]["gpu_percent"] = 3.into();
    v["reports"][0]["hardware"]["tpm"] = "2.0".into();
    let batch = decode_batch(&serde_json::to_vec(&v).unwrap(), Format::Json).unwrap();
    assert_eq!(batch, sample_batch());
}

#[test]
fn digest_ignores_collection_time_and_order_but_not_content() {
    let mut a = sample_inventory();
    a.software.push(Software {
        name: "bash".into(),
        version: Some("5.2.15-2+b2".into()),
        arch: Some("amd64".into()),
        vendor: None,
        source: "dpkg".into(),
    });
    let mut b = a.clone();
    b.collected_at = datetime!(2026-11-26 00:00:00 UTC);
    b.software.reverse();
    b.warnings.push("rpm: timed out".into());
    a.normalize();
    b.normalize();
    assert_eq!(a.content_digest(), b.content_digest());
    b.software[0].version = Some("5.2.15-2+b3".into());
    assert_ne!(a.content_digest(), b.content_digest());
}

#[test]
fn digest_ignores_boot_time_jitter_but_sees_a_reboot() {
    let a = sample_inventory();
    let mut jitter = a.clone();
    jitter.os.boot_time = Some(datetime!(2026-11-20 08:00:01 UTC));
    assert_eq!(a.content_digest(), jitter.content_digest());
    let mut rebooted = a.clone();
    rebooted.os.boot_time = Some(datetime!(2026-11-25 09:30:00 UTC));
    assert_ne!(a.content_digest(), rebooted.content_digest());
}

#[test]
fn an_ack_from_an_older_collector_decodes() {
    let ack: Ack = serde_json::from_str(r#"{"acked":[1,2]}"#).unwrap();
    assert_eq!(ack.acked, vec![1, 2]);
    assert!(!ack.send_inventory);
    assert_eq!(ack.last_seq, None);
}

fn arb_health() -> impl Strategy<Value = HealthSample> {
    (
        any::<Option<u64>>(),
        proptest::option::of(0.0f64..100.0),
        proptest::option::of(proptest::array::uniform3(0.0f64..64.0)),
        proptest::collection::vec(("[a-z/]{1,12}", proptest::option::of(0.0f64..100.0)), 0..4),
        any::<Option<u64>>(),
    )
        .prop_map(|(uptime, cpu, load, fs, procs)| {
            let mut h = HealthSample::empty(AGENT, datetime!(2026-11-25 10:01:00 UTC));
            h.uptime_secs = uptime;
            h.cpu_percent = cpu;
            h.load = load;
            h.filesystems = fs
                .into_iter()
                .map(|(mount, used)| FilesystemUsage {
                    mount,
                    used_percent: used,
                    inodes_used_percent: None,
                })
                .collect();
            h.process_count = procs;
            h
        })
}

proptest! {
    #[test]
    fn any_health_batch_round_trips(samples in proptest::collection::vec(arb_health(), 0..8), first in 0u64..u64::MAX / 2) {
        let batch = Batch {
            protocol: PROTOCOL_VERSION,
            agent_id: AGENT.into(),
            reports: samples.into_iter().enumerate().map(|(i, h)| Report { seq: first + i as u64, body: ReportBody::Health(h) }).collect(),
        };
        for format in [Format::MessagePack, Format::Json] {
            let bytes = codec::encode(&batch, format);
            prop_assert_eq!(decode_batch(&bytes, format).unwrap(), batch.clone());
        }
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_batch(&bytes, Format::MessagePack);
        let _ = decode_batch(&bytes, Format::Json);
    }
}

#[test]
fn incomplete_facets_are_left_out_when_none_and_round_trip_otherwise() {
    // An inventory without incomplete facets encodes exactly as before the field existed, so
    // digests acknowledged by older collectors still match: the digest of the sample
    // inventory, computed by the code before `incomplete` (and `reports_dropped`) existed.
    assert_eq!(
        sample_inventory().content_digest(),
        "fca95894e148af2271f4b3b3d00a59624afca1c5ab31f9b3893bea69d2326898"
    );
    let v = serde_json::to_value(sample_inventory()).unwrap();
    assert!(v.get("incomplete").is_none(), "{v}");

    let mut batch = sample_batch();
    let ReportBody::Inventory(inventory) = &mut batch.reports[0].body else {
        panic!("the sample batch starts with an inventory");
    };
    inventory.incomplete = vec!["software".to_owned()];
    for format in [Format::MessagePack, Format::Json] {
        let bytes = codec::encode(&batch, format);
        assert_eq!(decode_batch(&bytes, format).unwrap(), batch);
    }
}
