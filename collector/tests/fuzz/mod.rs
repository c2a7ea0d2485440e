//! A short, bounded property-based fuzz of the entry points the cargo-fuzz targets drive
//! (`collector/fuzz`), so that CI fails on a crash: the report decoder and the CI filter parser
//! answer a value or a 4xx for every input, never panic. Every committed seed of the fuzz corpus
//! is run too.

use std::io::Write;

use axum::http::{StatusCode, Uri};
use census_collector::api::cis::parse_ci_filter;
use census_collector::api::ingest::{Encoding, decode_body};
use census_common::Format;
use census_common::limits::{Limits, check_batch};
use proptest::prelude::*;
use time::OffsetDateTime;

use crate::support::*;

const LIMIT: usize = 1 << 20;

/// What the fuzz target does with one input: the first byte selects encoding and format.
fn decode_selected(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let encoding = match selector % 3 {
        0 => Encoding::Identity,
        1 => Encoding::Gzip,
        _ => Encoding::Zstd,
    };
    let format = if selector & 0x80 == 0 {
        Format::MessagePack
    } else {
        Format::Json
    };
    decode_checked(body, encoding, format);
}

fn decode_checked(body: &[u8], encoding: Encoding, format: Format) {
    let limits = Limits::default();
    match decode_body(body, encoding, format, LIMIT, &limits) {
        Ok(batch) => {
            let _ = check_batch(&batch, &limits, OffsetDateTime::now_utc());
        }
        Err(e) => assert!(e.status().is_client_error(), "{e:?}"),
    }
}

fn filter_checked(query: &str) {
    if let Ok(uri) = format!("/api/v1/cis?{query}").parse::<Uri>()
        && let Err(e) = parse_ci_filter(&uri)
    {
        assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{query:?}: {e:?}");
    }
}

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
        decode_selected(&seed);
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
        LIMIT,
        &Limits::default(),
    );
    assert!(decoded.is_ok(), "{decoded:?}");
    for seed in corpus("ci_filter") {
        filter_checked(std::str::from_utf8(&seed).unwrap());
    }
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
        decode_selected(&data);
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
            decode_checked(&gzip_fast(&bytes), Encoding::Gzip, Format::MessagePack);
        } else {
            decode_checked(&bytes, Encoding::Identity, Format::MessagePack);
        }
    }

    #[test]
    fn arbitrary_json_text_never_crashes_the_decoder(text in "\\PC{0,512}") {
        decode_checked(text.as_bytes(), Encoding::Identity, Format::Json);
    }

    #[test]
    fn arbitrary_query_strings_never_crash_the_filter(query in "\\PC{0,256}") {
        filter_checked(&query);
    }

    #[test]
    fn allowed_names_with_arbitrary_values_parse_or_are_refused(
        params in proptest::collection::vec(
            (
                prop::sample::select(
                    vec!["class", "status", "name", "hostname", "os", "limit", "cursor"],
                ),
                "[ -~]{0,40}",
            ),
            0..6,
        )
    ) {
        let query: Vec<String> = params
            .iter()
            .map(|(name, value)| format!("{name}={}", query_value(value)))
            .collect();
        filter_checked(&query.join("&"));
    }
}
