//! A short, bounded property-based fuzz of the entry points the cargo-fuzz targets drive
//! (`collector/fuzz`), so that CI fails on a crash: the report decoder and the CI filter parser
//! answer a value or a 4xx for every input, never panic. Every committed seed of the fuzz corpus
//! is run too.

use std::io::Write;

use census_collector::api::cis::{LIST_PARAMS, parse_ci_filter};
use census_collector::api::fuzz::{BODY_LIMIT, ci_filter, report_body, report_decoder};
use census_collector::api::ingest::{Encoding, decode_body};
use census_common::Format;
use census_common::limits::Limits;
use proptest::prelude::*;
use time::OffsetDateTime;

use crate::support::*;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

#[test]
fn every_committed_seed_decodes_or_is_refused() {
    for seed in corpus("report_decoder") {
        report_decoder(&seed);
    }
    // The golden batch decodes: the seeds are not all refusals.
    let golden = corpus("report_decoder")
        .into_iter()
        .find(|s| s[0] == 0 && s.len() > 1000)
        .unwrap();
    let decoded = decode_body(
        &golden[1..],
        Encoding::Identity,
        Format::MessagePack,
        BODY_LIMIT,
        &Limits::default(),
    );
    assert!(decoded.is_ok(), "{decoded:?}");
    // And so do the JSON seeds (identity and gzip), so the fuzzer starts on the JSON path too.
    for seed in corpus("report_decoder").iter().filter(|s| s[0] & 0x80 != 0) {
        let encoding = match seed[0] % 3 {
            0 => Encoding::Identity,
            1 => Encoding::Gzip,
            _ => Encoding::Zstd,
        };
        let decoded = decode_body(
            &seed[1..],
            encoding,
            Format::Json,
            BODY_LIMIT,
            &Limits::default(),
        );
        assert!(decoded.is_ok(), "{decoded:?}");
    }
    for seed in corpus("ci_filter") {
        ci_filter(&seed);
    }
    // Most CI filter seeds are filters the list takes, so the fuzzer starts past the refusals
    // and reaches the cursor round trip.
    let accepted = corpus("ci_filter")
        .iter()
        .filter(|seed| {
            let query = std::str::from_utf8(seed).unwrap();
            let uri = format!("/api/v1/cis?{query}").parse().unwrap();
            parse_ci_filter(&uri).is_ok()
        })
        .count();
    assert!(accepted >= 6, "{accepted} seeds parse");
}

fn valid_batch() -> Vec<u8> {
    let batch = batch(
        AGENT,
        vec![
            inventory_report(
                1,
                inventory(AGENT, "web-1", &[package("bash", "5.2")], &["/"], &["eth0"]),
            ),
            health_report(AGENT, 2, OffsetDateTime::now_utc(), 3.5),
        ],
    );
    census_common::codec::encode(&batch, Format::MessagePack)
}

fn gzip_fast(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn query_value(text: &str) -> String {
    text.replace('%', "%25")
        .replace('&', "%26")
        .replace('#', "%23")
        .replace(' ', "%20")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_crash_the_decoder(
        data in proptest::collection::vec(any::<u8>(), 0..2048)
    ) {
        report_decoder(&data);
    }

    #[test]
    fn mutated_batches_never_crash_the_decoder(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        compress in any::<bool>(),
    ) {
        let mut bytes = valid_batch();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        bytes.truncate(cut.index(bytes.len() + 1).max(1));
        if compress {
            report_body(&gzip_fast(&bytes), Encoding::Gzip, Format::MessagePack);
        } else {
            report_body(&bytes, Encoding::Identity, Format::MessagePack);
        }
    }

    #[test]
    fn arbitrary_json_text_never_crashes_the_decoder(text in "\\PC{0,512}") {
        report_body(text.as_bytes(), Encoding::Identity, Format::Json);
    }

    #[test]
    fn arbitrary_query_strings_never_crash_the_filter(query in "\\PC{0,256}") {
        ci_filter(query.as_bytes());
    }

    #[test]
    fn allowed_names_with_arbitrary_values_parse_or_are_refused(
        params in proptest::collection::vec(
            (
                prop::sample::select(LIST_PARAMS.to_vec()),
                prop_oneof![
                    "[ -~]{0,40}",
                    // Values some parameter accepts, so that whole filters parse and their
                    // cursors are checked too.
                    prop::sample::select(vec![
                        "computer", "active", "retired", "true", "false", "1", "4", "7",
                        "id", "-name", "hostname", "-last_seen", "criticality", "-serial",
                        "2025-03-01T12:00:00Z", "2025-03-01T12:00:00.5+02:00", "50",
                        "web%_\\", "c1.name.0.n.1",
                    ])
                    .prop_map(str::to_owned),
                ],
            ),
            0..6,
        )
    ) {
        let query: Vec<String> = params
            .iter()
            .map(|(name, value)| format!("{name}={}", query_value(value)))
            .collect();
        ci_filter(query.join("&").as_bytes());
    }
}
