//! The collector's hot paths through the public [`Store`] API, on real SQLite files in a temp
//! dir (WAL, `synchronous=FULL`: every commit is fsynced), as `examples/ingest_throughput.rs`:
//!
//! - `inventory_ingest`: one 800-package inventory (packages from
//!   `tests/fixtures/packages-debian12.tsv`) stored, per inventory: for a computer already known
//!   with 10 % of its packages at a new version, and for a first-time computer. Each inventory
//!   is for another computer of a pool, so no figure comes from SQLite's cache of one computer,
//!   and the database grows as a collector's does (history rows, catalog versions, computers).
//! - `rules_pure`: the incident engine's pure work for one sample against the default rules
//!   (`Metric::observe` and the alert state machine `step`), healthy and breaching.
//! - `health_ingest`: one health sample stored, with the default rules disabled, enabled, and
//!   enabled while a tenth of the machines breach in cycles (incidents open and resolve), on
//!   copies of one database, same samples, so the ratio is the cost of rule evaluation and
//!   incident opening inside ingest.
//!
//! `cargo bench -p census-collector --bench ingest`
//!
//! Ingest figures come in two loads: `1_sender` (one batch at a time, so each batch is its own
//! transaction and fsync: the latency of one batch) and `N_senders` (that many batches in
//! flight, as HTTP handlers under load: the group commit shares each fsync, and the time per
//! batch is the inverse of the rate the collector sustains). `health_ingest_cpu` gives the CPU
//! time of the whole process per sample (writer thread, runtime and all) under the same load,
//! which disk noise does not move.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use census_collector::incidents::alert::{self, Alert, Reading};
use census_collector::incidents::rules::{Metric, Rule};
use census_collector::store::{IngestBatch, RuleFilter, RulePatch, Source, Store, StoreOptions};
use census_common::{HealthSample, Report, ReportBody, Software};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use time::OffsetDateTime;
use time::macros::datetime;
use tokio::runtime::Runtime;

#[path = "../../common/benches/support/fleet.rs"]
mod fleet;

const PACKAGES: usize = 800;
/// Known computers whose inventories change.
const INVENTORY_POOL: usize = 400;
/// Inventories in flight in the concurrent variant (a divisor of [`INVENTORY_POOL`]).
const INVENTORY_SENDERS: usize = 8;
/// Computers sending health samples.
const HEALTH_POOL: usize = 1000;
/// Health samples in flight (a divisor of [`HEALTH_POOL`]).
const HEALTH_SENDERS: usize = 50;
/// A tenth of the computers breach in the breaching variant...
const BREACHING_EVERY: usize = 10;
/// ...for 20 minutes out of every 30: long enough for every default rule to open its
/// incident (`for` at most 15 minutes), then clear for long enough to resolve it.
const BREACH_CYCLE: (usize, usize) = (30, 20);
/// Rounds (one sample from every computer, a minute of series time) sent before measuring, so
/// the breaching variant starts with incidents open and alert states stored.
const WARM_ROUNDS: usize = BREACH_CYCLE.0;
const T0: OffsetDateTime = datetime!(2026-11-25 00:00 UTC);
const MINUTE: time::Duration = time::Duration::minutes(1);

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn open(path: &Path) -> Store {
    Store::open(path, &StoreOptions::default()).expect("the store opens")
}

fn batch(machine: usize, seq: u64, body: ReportBody, at: OffsetDateTime) -> IngestBatch {
    IngestBatch {
        agent_id: fleet::agent_id(machine),
        reports: vec![Report { seq, body }],
        received_at: at,
    }
}

async fn ingest(store: &Store, batch: IngestBatch) {
    let outcome = store.ingest(batch).await.expect("the batch is stored");
    assert_eq!(outcome.stored, 1, "the report is new");
}

/// Stores `batches` with `senders` batches in flight, each sender storing its share in order:
/// batch `i` goes to sender `i % senders`, so when the batches cycle through a pool whose size
/// is a multiple of `senders`, each agent's batches stay in seq order.
async fn store_all(store: &Arc<Store>, batches: Vec<IngestBatch>, senders: usize) {
    let mut shares: Vec<Vec<IngestBatch>> = (0..senders).map(|_| Vec::new()).collect();
    for (i, batch) in batches.into_iter().enumerate() {
        shares[i % senders].push(batch);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for share in shares {
        let store = store.clone();
        tasks.spawn(async move {
            for batch in share {
                ingest(&store, batch).await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a sender task");
    }
}

/// Runs `store_all` on `rt` and answers the wall time and the process CPU time it took.
fn measure(rt: &Runtime, store: &Arc<Store>, batches: Vec<IngestBatch>, senders: usize) -> Cost {
    let (wall, cpu) = (Instant::now(), process_cpu());
    rt.block_on(store_all(store, batches, senders));
    Cost {
        wall: wall.elapsed(),
        cpu: process_cpu().saturating_sub(cpu),
    }
}

struct Cost {
    wall: Duration,
    cpu: Duration,
}

/// CPU time used by every thread of this process so far.
#[cfg(unix)]
fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

#[cfg(not(unix))]
fn process_cpu() -> Duration {
    Duration::ZERO
}

/// Stores the first inventory of machines `machines`, many at a time (group commit makes the
/// set-up quicker; it is not measured).
fn enroll(
    rt: &Runtime,
    store: &Arc<Store>,
    machines: std::ops::Range<usize>,
    packages: &[Software],
) {
    let batches = machines
        .map(|m| {
            let inv = fleet::inventory(m, packages.to_vec(), T0);
            batch(m, 1, ReportBody::Inventory(inv), T0)
        })
        .collect();
    rt.block_on(store_all(store, batches, 16));
}

/// The packages at a computer's `generation`-th inventory: each generation moves one tenth of
/// the packages (80 of 800, in turn) to a new version, Debian binNMU style (`+b1`, `+b2`...),
/// so two consecutive generations differ in exactly 10 % of their packages.
fn packages_at(base: &[Software], generation: usize) -> Vec<Software> {
    let windows = 10;
    let per_window = base.len().div_ceil(windows);
    base.iter()
        .enumerate()
        .map(|(i, p)| {
            let window = i / per_window;
            let bumps = generation / windows + usize::from(window < generation % windows);
            let mut p = p.clone();
            if bumps > 0 {
                p.version = p.version.map(|v| format!("{v}+b{bumps}"));
            }
            p
        })
        .collect()
}

fn count(db: &Path, sql: &str) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("the database opens read-only");
    conn.query_row(sql, [], |r| r.get(0))
        .expect("the count runs")
}

fn inventory_ingest(c: &mut Criterion) {
    let rt = runtime();
    let base = fleet::debian12_packages(env!("CARGO_MANIFEST_DIR"), PACKAGES);
    assert_eq!(
        packages_at(&base, 1)
            .iter()
            .zip(&packages_at(&base, 2))
            .filter(|(a, b)| a != b)
            .count(),
        PACKAGES / 10,
        "consecutive generations differ in 10 % of the packages"
    );
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = dir.path().join("census.db");
    let store = Arc::new(open(&db));
    let started = Instant::now();
    enroll(&rt, &store, 0..INVENTORY_POOL, &base);
    println!(
        "inventory_ingest: {INVENTORY_POOL} computers enrolled in {:.1?}",
        started.elapsed()
    );

    let mut group = c.benchmark_group("inventory_ingest_800");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    let mut generation = vec![0usize; INVENTORY_POOL];
    let mut next = 0usize;
    let mut at = T0;
    let mut known = |iters: u64| -> Vec<IngestBatch> {
        (0..iters)
            .map(|_| {
                let m = next % INVENTORY_POOL;
                next += 1;
                generation[m] += 1;
                at += MINUTE;
                let inv = fleet::inventory(m, packages_at(&base, generation[m]), at);
                batch(m, 1 + generation[m] as u64, ReportBody::Inventory(inv), at)
            })
            .collect()
    };
    for senders in [1, INVENTORY_SENDERS] {
        group.bench_function(format!("known_10pct_changed/{senders}_senders"), |b| {
            b.iter_custom(|iters| measure(&rt, &store, known(iters), senders).wall)
        });
    }
    let mut newcomer = INVENTORY_POOL;
    let mut first_time = |iters: u64| -> Vec<IngestBatch> {
        (0..iters)
            .map(|_| {
                let m = newcomer;
                newcomer += 1;
                at += MINUTE;
                let inv = fleet::inventory(m, base.clone(), at);
                batch(m, 1, ReportBody::Inventory(inv), at)
            })
            .collect()
    };
    for senders in [1, INVENTORY_SENDERS] {
        group.bench_function(format!("first_time/{senders}_senders"), |b| {
            b.iter_custom(|iters| measure(&rt, &store, first_time(iters), senders).wall)
        });
    }
    group.finish();

    // Each known computer stayed one CI, and the latest inventory's packages are stored.
    let computers = count(&db, "SELECT count(*) FROM ci WHERE class = 'computer'");
    assert_eq!(computers as usize, newcomer, "one computer CI per machine");
    let m = (next + INVENTORY_POOL - 1) % INVENTORY_POOL;
    let bumped = count(
        &db,
        &format!(
            "SELECT count(*) FROM installation i JOIN agent a ON a.ci_id = i.ci_id
             JOIN software s ON s.id = i.software_id
             WHERE a.agent_id = '{}' AND s.version LIKE '%+b%'",
            fleet::agent_id(m)
        ),
    );
    let expected = packages_at(&base, generation[m])
        .iter()
        .filter(|p| p.version.as_deref().is_some_and(|v| v.contains("+b")))
        .count();
    assert_eq!(bumped as usize, expected, "the new versions are stored");
    println!(
        "inventory_ingest: {computers} computers, {} software versions in the catalog, \
         database {} MiB",
        count(&db, "SELECT count(*) FROM software"),
        std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0) >> 20
    );
    rt.block_on(store.close());
}

/// The engine's pure part of judging one sample, as `Judge::sample` does it: every rule's
/// values, each through the state machine against the alert state carried from the previous
/// sample.
fn judge(
    rules: &[Rule],
    alerts: &mut HashMap<(i64, String), Alert>,
    sample: &HealthSample,
    cores: Option<f64>,
    ts: i64,
) -> usize {
    let mut actions = 0;
    for rule in rules {
        for (dimension, value) in rule.metric.observe(sample, cores) {
            if !rule.watches(&dimension) {
                continue;
            }
            let key = (rule.id, dimension);
            let prev = alerts.remove(&key);
            let reading = value.map_or(Reading::Unknown, Reading::Value);
            let (next, action) = alert::step(rule, prev.as_ref(), ts, reading);
            actions += usize::from(action != alert::Action::None);
            if let Some(next) = next {
                alerts.insert(key, next);
            }
        }
    }
    actions
}

fn default_rules(rt: &Runtime) -> Vec<Rule> {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = open(&dir.path().join("census.db"));
    let filter = RuleFilter {
        limit: 100,
        ..RuleFilter::default()
    };
    let rules = rt
        .block_on(store.list_rules(filter))
        .expect("the rules are listed")
        .items;
    rt.block_on(store.close());
    assert_eq!(rules.len(), 5, "the five default rules");
    rules
}

fn rules_pure(c: &mut Criterion) {
    let rt = runtime();
    // As the engine: `unreachable` is judged by the silence check, not on samples.
    let rules: Vec<Rule> = default_rules(&rt)
        .into_iter()
        .filter(|r| r.metric != Metric::Unreachable)
        .collect();
    let cores = Some(2.0);
    let mut group = c.benchmark_group("rules_pure");
    for (name, breach) in [("healthy_sample", false), ("breaching_sample", true)] {
        let mut alerts = HashMap::new();
        let mut ts = 0i64;
        let sample = fleet::health(1, T0, breach);
        group.bench_function(name, |b| {
            b.iter(|| {
                ts += 60_000;
                judge(&rules, &mut alerts, black_box(&sample), cores, ts)
            })
        });
        // A breaching machine has every rule firing by now; a healthy one has no state. (No
        // sample was judged when a filter left this benchmark out.)
        let firing = alerts
            .values()
            .filter(|a| a.phase == alert::Phase::Firing)
            .count();
        if ts > 0 {
            assert_eq!(firing, if breach { rules.len() } else { 0 });
        }
    }
    group.finish();
}

/// A health pool's variant: the database copy it writes and where it is in its series.
struct Pool {
    store: Arc<Store>,
    db: std::path::PathBuf,
    rules: bool,
    breaching: bool,
    /// Samples sent so far: machine `sent % HEALTH_POOL`, round `sent / HEALTH_POOL`.
    sent: usize,
    /// Incidents in the database when the measurements began.
    incidents_before: i64,
}

impl Pool {
    fn next_batches(&mut self, n: u64) -> Vec<IngestBatch> {
        (0..n).map(|_| self.next_batch()).collect()
    }

    fn next_batch(&mut self) -> IngestBatch {
        let (machine, round) = (self.sent % HEALTH_POOL, self.sent / HEALTH_POOL);
        self.sent += 1;
        // Machines report spread over the minute, as a fleet does.
        let offset = time::Duration::milliseconds((machine * 60_000 / HEALTH_POOL) as i64);
        let at = T0 + MINUTE * (round as i32 + 1) + offset;
        let breach = self.breaching
            && machine % BREACHING_EVERY == 0
            && (round + machine) % BREACH_CYCLE.0 < BREACH_CYCLE.1;
        let sample = fleet::health(machine, at, breach);
        // Seq 1 was the inventory.
        batch(machine, 2 + round as u64, ReportBody::Health(sample), at)
    }
}

/// The health variants: names, whether the default rules are enabled, whether a tenth of
/// the machines breach.
const HEALTH_VARIANTS: [(&str, bool, bool); 3] = [
    ("rules_disabled", false, true),
    ("rules_enabled_healthy", true, false),
    ("rules_enabled_10pct_breaching", true, true),
];

/// One database with [`HEALTH_POOL`] computers, copied for each variant, and [`WARM_ROUNDS`]
/// rounds of samples sent to each copy.
fn health_pools(rt: &Runtime, dir: &Path) -> Vec<Pool> {
    let base_db = dir.join("base.db");
    let started = Instant::now();
    {
        let store = Arc::new(open(&base_db));
        let packages = fleet::debian12_packages(env!("CARGO_MANIFEST_DIR"), PACKAGES);
        enroll(rt, &store, 0..HEALTH_POOL, &packages);
        rt.block_on(store.close());
    }
    let mut pools = Vec::new();
    for (name, enabled, breaching) in HEALTH_VARIANTS {
        let db = dir.join(format!("{name}.db"));
        census_collector::store::backup(&base_db, &db).expect("the database is copied");
        let store = Arc::new(open(&db));
        if !enabled {
            disable_every_rule(rt, &store);
        }
        let mut pool = Pool {
            store,
            db,
            rules: enabled,
            breaching,
            sent: 0,
            incidents_before: 0,
        };
        let warm = pool.next_batches((WARM_ROUNDS * HEALTH_POOL) as u64);
        measure(rt, &pool.store, warm, HEALTH_SENDERS);
        pool.incidents_before = count(&pool.db, "SELECT count(*) FROM incident");
        pools.push(pool);
    }
    println!(
        "health_ingest: {HEALTH_POOL} computers enrolled and {WARM_ROUNDS} rounds sent to each \
         variant in {:.1?}",
        started.elapsed()
    );
    pools
}

fn health_ingest(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("a temp dir");
    // Built on first use, so a run filtered to other benchmarks skips the set-up.
    let mut pools: Option<Vec<Pool>> = None;
    for (i, (name, _, _)) in HEALTH_VARIANTS.into_iter().enumerate() {
        for (group, cpu) in [("health_ingest", false), ("health_ingest_cpu", true)] {
            let mut group = c.benchmark_group(group);
            group.throughput(Throughput::Elements(1));
            group.bench_function(format!("{name}/{HEALTH_SENDERS}_senders"), |b| {
                let pool = &mut pools.get_or_insert_with(|| health_pools(&rt, dir.path()))[i];
                b.iter_custom(|iters| {
                    let batches = pool.next_batches(iters);
                    let cost = measure(&rt, &pool.store, batches, HEALTH_SENDERS);
                    if cpu { cost.cpu } else { cost.wall }
                })
            });
            group.finish();
        }
    }
    for (pool, (name, _, _)) in pools.into_iter().flatten().zip(HEALTH_VARIANTS) {
        let incidents = count(&pool.db, "SELECT count(*) FROM incident");
        let open = count(
            &pool.db,
            "SELECT count(*) FROM incident WHERE state NOT IN ('resolved', 'closed')",
        );
        println!(
            "health_ingest/{name}: {} samples sent, {} rounds; incidents: {incidents} in all \
             ({} during the measurement), {open} not resolved",
            pool.sent,
            pool.sent / HEALTH_POOL,
            incidents - pool.incidents_before
        );
        if pool.rules && pool.breaching {
            assert!(incidents > 0, "breaching machines opened incidents");
        } else {
            assert_eq!(incidents, 0, "no incident without rules or breaches");
        }
        rt.block_on(pool.store.close());
    }
}

/// Disables every rule through the rules API, as `PATCH /api/v1/rules/{id}` would.
fn disable_every_rule(rt: &Runtime, store: &Store) {
    let filter = RuleFilter {
        limit: 100,
        ..RuleFilter::default()
    };
    for rule in rt.block_on(store.list_rules(filter)).expect("rules").items {
        let patch = RulePatch {
            enabled: Some(false),
            ..RulePatch::default()
        };
        rt.block_on(store.update_rule(rule.id, patch, Source::Api("bench".into()), T0))
            .expect("the update runs")
            .expect("the rule may be disabled");
    }
}

criterion_group!(benches, inventory_ingest, rules_pure, health_ingest);
criterion_main!(benches);
