//! MessagePack encode and decode of the batch an agent sends with its inventory: one report
//! holding an 800-package inventory (the first 800 packages of
//! `tests/fixtures/packages-debian12.tsv`), with and without the gzip the agent applies
//! (`census_agent::transport::encode_batch`: flate2 at its default level, 6).
//!
//! `cargo bench -p census-common --bench codec`
//!
//! Decoding is what the collector does with a body: inflate it (gzip), check its shape within
//! the default limits and decode it (`codec::decode_batch_within`).

use std::hint::black_box;
use std::io::{Read, Write};

use census_common::codec::{self, Format};
use census_common::{Batch, Inventory, Limits, PROTOCOL_VERSION, Report, ReportBody, shape};
use criterion::{Criterion, criterion_group, criterion_main};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use time::macros::datetime;

#[path = "support/fleet.rs"]
mod fleet;

const PACKAGES: usize = 800;

fn batch() -> Batch {
    let software = fleet::debian12_packages(env!("CARGO_MANIFEST_DIR"), PACKAGES);
    let inventory = fleet::inventory(1, software, datetime!(2026-11-25 08:00 UTC));
    Batch {
        protocol: PROTOCOL_VERSION,
        agent_id: inventory.agent_id.clone(),
        reports: vec![Report {
            seq: 1,
            body: ReportBody::Inventory(inventory),
        }],
    }
}

/// What the agent sends: named-field MessagePack, gzip-compressed at flate2's default level.
fn encode_gzip(batch: &Batch) -> Vec<u8> {
    let raw = codec::encode(batch, Format::MessagePack);
    let mut gz = GzEncoder::new(Vec::with_capacity(raw.len() / 4), Compression::default());
    gz.write_all(&raw).expect("writing to memory cannot fail");
    gz.finish().expect("writing to memory cannot fail")
}

fn decode_gzip(body: &[u8], limits: &Limits) -> Batch {
    let mut raw = Vec::with_capacity(body.len() * 8);
    GzDecoder::new(body)
        .read_to_end(&mut raw)
        .expect("the body inflates");
    codec::decode_batch_within(&raw, Format::MessagePack, limits).expect("the batch decodes")
}

fn codec(c: &mut Criterion) {
    let batch = batch();
    let limits = Limits::default();
    let raw = codec::encode(&batch, Format::MessagePack);
    let gzipped = encode_gzip(&batch);
    let json = codec::encode(&batch, Format::Json);
    println!(
        "one-report batch, {PACKAGES}-package inventory: MessagePack {} B, gzip {} B (JSON {} B)",
        raw.len(),
        gzipped.len(),
        json.len()
    );
    // Both paths give back the batch that was encoded.
    assert_eq!(
        codec::decode_batch_within(&raw, Format::MessagePack, &limits).unwrap(),
        batch
    );
    let decoded = decode_gzip(&gzipped, &limits);
    let ReportBody::Inventory(inventory) = &decoded.reports[0].body else {
        panic!("the report is an inventory");
    };
    assert_eq!(inventory.software.len(), PACKAGES);
    assert_eq!(decoded, batch);

    let mut group = c.benchmark_group("inventory_batch_800");
    group.bench_function("encode_msgpack", |b| {
        b.iter(|| codec::encode(black_box(&batch), Format::MessagePack))
    });
    group.bench_function("encode_msgpack_gzip", |b| {
        b.iter(|| encode_gzip(black_box(&batch)))
    });
    group.bench_function("decode_msgpack", |b| {
        b.iter(|| {
            codec::decode_batch_within(black_box(&raw), Format::MessagePack, &limits)
                .expect("the batch decodes")
        })
    });
    // The shape check alone, which the collector runs before decoding untrusted bytes.
    group.bench_function("shape_check_only", |b| {
        b.iter(|| shape::check_msgpack(black_box(&raw), &limits).expect("the shape is fine"))
    });
    // The inventory alone, without the batch envelope, whose flattened and internally tagged
    // report body makes serde buffer the whole inventory before decoding it: the difference
    // to decode_msgpack is what that buffering costs.
    let ReportBody::Inventory(inventory) = &batch.reports[0].body else {
        unreachable!("checked above");
    };
    let inventory_alone = codec::encode(inventory, Format::MessagePack);
    group.bench_function("decode_inventory_without_envelope", |b| {
        b.iter(|| {
            codec::decode::<Inventory>(black_box(&inventory_alone), Format::MessagePack)
                .expect("the inventory decodes")
        })
    });
    group.bench_function("decode_gzip_msgpack", |b| {
        b.iter(|| decode_gzip(black_box(&gzipped), &limits))
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
