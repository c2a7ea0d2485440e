//! The shape check and the batch limits against what the encoder really produces, and against
//! bytes nobody meant.

use census_common::codec::{self, decode_batch_within};
use census_common::limits::{Limits, check_batch};
use census_common::shape::{check_json_depth, check_msgpack};
use census_common::*;
use proptest::prelude::*;
use time::OffsetDateTime;
use time::macros::datetime;

const AGENT: &str = "6f1c2a4e-8d3b-4c1a-9e2f-0a1b2c3d4e5f";
const NOW: OffsetDateTime = datetime!(2026-11-25 10:00 UTC);

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,24}"
}

fn maybe_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text())
}

fn percent() -> impl Strategy<Value = Option<f64>> {
    proptest::option::of(0.0f64..=100.0)
}

fn arb_software() -> impl Strategy<Value = Software> {
    (text(), maybe_text(), maybe_text(), maybe_text(), text()).prop_map(
        |(name, version, arch, vendor, source)| Software {
            name,
            version,
            arch,
            vendor,
            source,
        },
    )
}

fn arb_inventory() -> impl Strategy<Value = Inventory> {
    (
        (maybe_text(), maybe_text(), maybe_text(), maybe_text()),
        proptest::collection::vec(arb_software(), 0..40),
        proptest::collection::vec((text(), maybe_text(), any::<Option<u64>>()), 0..6),
        proptest::collection::vec(
            (
                text(),
                maybe_text(),
                proptest::collection::vec(text(), 0..4),
            ),
            0..4,
        ),
        proptest::collection::vec(text(), 0..3),
        -86_400i64 * 365 * 20..86_400,
    )
        .prop_map(|(host, software, fs, nics, warnings, offset)| {
            let mut inv = Inventory::new(AGENT, NOW + time::Duration::seconds(offset));
            (
                inv.host.hostname,
                inv.host.fqdn,
                inv.hardware.serial,
                inv.os.name,
            ) = host;
            inv.software = software;
            inv.filesystems = fs
                .into_iter()
                .map(|(mount, device, total_bytes)| Filesystem {
                    mount,
                    device,
                    fs_type: None,
                    total_bytes,
                    removable: false,
                })
                .collect();
            inv.network_interfaces = nics
                .into_iter()
                .map(|(name, mac, addresses)| NetworkInterface {
                    name,
                    mac,
                    addresses,
                    r#virtual: true,
                })
                .collect();
            inv.warnings = warnings;
            inv
        })
}

fn arb_health() -> impl Strategy<Value = HealthSample> {
    (
        (percent(), percent(), percent()),
        proptest::option::of(0.0f64..409_600.0),
        proptest::option::of(proptest::array::uniform3(0.0f64..1e6)),
        proptest::collection::vec((text(), percent(), percent()), 0..5),
        (any::<Option<u64>>(), proptest::option::of(0.0f64..1e12)),
    )
        .prop_map(|((cpu, mem, swap), agent_cpu, load, fs, (procs, rx))| {
            let mut h = HealthSample::empty(AGENT, NOW);
            h.cpu_percent = cpu;
            h.memory_used_percent = mem;
            h.swap_used_percent = swap;
            h.agent_cpu_percent = agent_cpu;
            h.load = load;
            h.process_count = procs;
            h.net_rx_bytes_per_sec = rx;
            h.filesystems = fs
                .into_iter()
                .map(
                    |(mount, used_percent, inodes_used_percent)| FilesystemUsage {
                        mount,
                        used_percent,
                        inodes_used_percent,
                    },
                )
                .collect();
            h
        })
}

fn arb_batch() -> impl Strategy<Value = Batch> {
    (
        proptest::collection::vec(
            prop_oneof![
                arb_inventory().prop_map(ReportBody::Inventory),
                arb_health().prop_map(ReportBody::Health),
            ],
            0..6,
        ),
        0u64..i64::MAX as u64 / 2,
    )
        .prop_map(|(bodies, first)| Batch {
            protocol: PROTOCOL_VERSION,
            agent_id: AGENT.into(),
            reports: bodies
                .into_iter()
                .zip(first..)
                .map(|(body, seq)| Report { seq, body })
                .collect(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_encoded_batch_passes_the_shape_check_and_the_limits(batch in arb_batch()) {
        let limits = Limits::default();
        for format in [Format::MessagePack, Format::Json] {
            let bytes = codec::encode(&batch, format);
            prop_assert_eq!(decode_batch_within(&bytes, format, &limits).unwrap(), batch.clone());
        }
        check_batch(&batch, &limits, NOW).unwrap();
    }

    #[test]
    fn a_cut_short_encoding_is_always_refused(batch in arb_batch(), cut in any::<prop::sample::Index>()) {
        let bytes = codec::encode(&batch, Format::MessagePack);
        let end = cut.index(bytes.len());
        let err = check_msgpack(&bytes[..end], &Limits::default()).unwrap_err();
        prop_assert_eq!(err.code(), ErrorCode::InvalidBody);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), depth in 0usize..40) {
        let limits = Limits { max_nesting_depth: depth, max_string_bytes: 64, max_parts: 8, ..Limits::default() };
        let _ = check_msgpack(&bytes, &limits);
        let _ = check_json_depth(&bytes, depth);
        let _ = decode_batch_within(&bytes, Format::MessagePack, &limits);
        let _ = decode_batch_within(&bytes, Format::Json, &limits);
    }

    #[test]
    fn a_damaged_encoding_never_panics(batch in arb_batch(), edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = codec::encode(&batch, Format::MessagePack);
        for (at, byte) in edits {
            let i = at.index(bytes.len().max(1));
            if let Some(b) = bytes.get_mut(i) {
                *b = byte;
            }
        }
        let _ = decode_batch_within(&bytes, Format::MessagePack, &Limits::default());
    }
}

#[test]
fn limits_are_checked_before_decoding() {
    let mut batch = Batch {
        protocol: PROTOCOL_VERSION,
        agent_id: AGENT.into(),
        reports: vec![],
    };
    let mut inv = Inventory::new(AGENT, NOW);
    inv.host.hostname = Some("h".repeat(5000));
    batch.reports.push(Report {
        seq: 1,
        body: ReportBody::Inventory(inv),
    });
    let bytes = codec::encode(&batch, Format::MessagePack);
    let err = decode_batch_within(&bytes, Format::MessagePack, &Limits::default()).unwrap_err();
    let DecodeError::Limit(limit) = &err else {
        panic!("{err}")
    };
    assert_eq!(limit.code(), ErrorCode::FieldTooLong);
    assert!(err.to_string().starts_with("`hostname` at byte "), "{err}");

    // JSON: the same batch decodes (the field is checked after decoding) ...
    let json = codec::encode(&batch, Format::Json);
    let decoded = decode_batch_within(&json, Format::Json, &Limits::default()).unwrap();
    let err = check_batch(&decoded, &Limits::default(), NOW).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("report 1: host.hostname is 5000 bytes long"),
        "{err}"
    );
    // ... but depth is refused before decoding.
    let deep = format!(
        r#"{{"agent_id": "{AGENT}", "reports": [], "x": {}{}}}"#,
        "[".repeat(40),
        "]".repeat(40)
    );
    let err = decode_batch_within(deep.as_bytes(), Format::Json, &Limits::default()).unwrap_err();
    assert!(
        matches!(&err, DecodeError::Limit(l) if l.code() == ErrorCode::NestingTooDeep),
        "{err}"
    );
}

/// The golden batch of schema 1 passes with room to spare: its depth is what the
/// `max_nesting_depth` lower bound allows.
#[test]
fn the_golden_batch_needs_depth_six() {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/batch-v1.msgpack"
    ))
    .unwrap();
    let at = |depth| Limits {
        max_nesting_depth: depth,
        ..Limits::default()
    };
    check_msgpack(&bytes, &at(6)).unwrap();
    assert_eq!(
        check_msgpack(&bytes, &at(5)).unwrap_err().code(),
        ErrorCode::NestingTooDeep
    );
}
