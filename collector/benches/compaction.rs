//! Health compaction of one completed hour through the public [`Store`] API, on a real SQLite
//! file (WAL, `synchronous=FULL`).
//!
//! The hour holds `COMPUTERS` × `per_hour` raw samples: the fleet simulator's samples (about
//! 580 bytes of MessagePack each, as ingest stores them), in a fleet's arrival order (every
//! computer once per interval, so one computer's rows lie among all the others'). Each
//! iteration compacts a fresh copy of that database with [`Store::compact_health`]. The
//! figure is the time per sample; the point of the two sizes is that it does not grow with
//! the samples per computer-hour (BENCHMARKS.md, "Health compaction at fleet scale").
//!
//! `cargo bench -p census-collector --bench compaction`

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use census_collector::store::{Store, StoreOptions};
use census_tests::fleet::health::sample;
use census_tests::fleet::identity::{Profile, agent_id};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rusqlite::{Connection, params};
use time::OffsetDateTime;
use time::macros::datetime;
use tokio::runtime::Runtime;

/// Computers in the hour.
const COMPUTERS: u32 = 2_000;
/// The hour compacted; the pass runs at 10:30 the next hour.
const HOUR: OffsetDateTime = datetime!(2026-11-25 09:00 UTC);
const NOW: OffsetDateTime = datetime!(2026-11-25 10:30 UTC);

/// A database whose `health_raw` holds the hour: `per_hour` samples of every computer.
fn template(dir: &Path, per_hour: u32) -> PathBuf {
    let path = dir.join(format!("template-{per_hour}.db"));
    // Store::open creates the schema.
    let rt = Runtime::new().expect("a runtime");
    let store = Store::open(&path, &StoreOptions::default()).expect("the store opens");
    rt.block_on(store.close());
    let mut conn = Connection::open(&path).expect("the template opens");
    let tx = conn.transaction().expect("a transaction");
    {
        let mut insert = tx
            .prepare("INSERT INTO health_raw (ci_id, ts, sample) VALUES (?1, ?2, ?3)")
            .expect("the insert prepares");
        let interval = 3_600 / per_hour;
        let profiles: Vec<Profile> = (0..COMPUTERS).map(|i| Profile::new(1, i, 0.02)).collect();
        for round in 0..per_hour {
            for (i, profile) in profiles.iter().enumerate() {
                let index = i as u32;
                // Each computer keeps its place in the round, as agents on a fixed interval do.
                let at = HOUR
                    + time::Duration::seconds(i64::from(round * interval))
                    + time::Duration::milliseconds(i64::from(index % 1000));
                let s = sample(
                    agent_id(1, index),
                    1,
                    index,
                    profile,
                    u64::from(round),
                    interval,
                    at,
                );
                let blob = rmp_serde::to_vec_named(&s).expect("a sample encodes");
                let ts = (at.unix_timestamp_nanos() / 1_000_000) as i64;
                insert
                    .execute(params![i64::from(index) + 1, ts, blob])
                    .expect("a raw row inserts");
            }
        }
    }
    tx.execute(
        "UPDATE health_meta SET raw_min_ts = (SELECT min(ts) FROM health_raw)",
        [],
    )
    .expect("the floor updates");
    tx.commit().expect("the template commits");
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .expect("the template checkpoints");
    path
}

fn compaction(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let rt = Runtime::new().expect("a runtime");
    let mut group = c.benchmark_group("health_compaction");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    for per_hour in [60, 180] {
        let template = template(dir.path(), per_hour);
        let samples = u64::from(COMPUTERS * per_hour);
        group.throughput(Throughput::Elements(samples));
        group.bench_function(format!("{COMPUTERS}_computers/{per_hour}_per_hour"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let run = tempfile::tempdir_in(dir.path()).expect("a run dir");
                    let path = run.path().join("census.db");
                    std::fs::copy(&template, &path).expect("the template copies");
                    // Flat out: the figure is the pass's cost, not its pacing.
                    let options = StoreOptions {
                        compaction_rest: 0,
                        ..StoreOptions::default()
                    };
                    let store = Store::open(&path, &options).expect("opens");
                    let started = Instant::now();
                    let report = rt
                        .block_on(store.compact_health(NOW, time::Duration::days(7)))
                        .expect("the pass succeeds");
                    total += started.elapsed();
                    assert_eq!(report.moved as u64, samples);
                    assert_eq!(report.hourly_rows as u32, COMPUTERS);
                    rt.block_on(store.close());
                }
                total
            });
        });
    }
    group.finish();
}

criterion_group!(benches, compaction);
criterion_main!(benches);
