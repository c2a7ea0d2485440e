//! Health time-series storage layouts under the collector's real write pattern.
//!
//! N computers each send one health sample per minute; the samples of one minute arrive in a
//! shuffled order (interleaved across computers) and the collector group-commits them,
//! `--batch` samples per transaction, into SQLite (WAL, page size 4096). For each table layout
//! we measure what the disk is asked to write — `wchar` from `/proc/self/io` around every
//! commit and every checkpoint, i.e. bytes SQLite hands to `write(2)`/`pwrite(2)` for the WAL,
//! the checkpoint copy into the database file, and, for layout D, the hourly compaction — plus
//! ingest rate, final database size and a few read patterns.
//!
//! The WAL auto-checkpoint is reproduced by hand (`wal_autocheckpoint=0`, then a PASSIVE
//! checkpoint after the first commit that leaves the WAL at `--autocheckpoint` pages or more,
//! exactly SQLite's policy) so WAL appends and checkpoint writes can be counted apart. A final
//! TRUNCATE checkpoint is counted too: every page in the WAL is eventually copied home.
//!
//! Layouts:
//!  A  `metric_point(ci_id, metric INTEGER, ts, value REAL)` + index (ci_id, metric, ts)
//!  B  `health_sample(id INTEGER PRIMARY KEY, ci_id, ts, sample BLOB)` + index (ci_id, ts)
//!  C  `health_sample(ci_id, ts, sample BLOB, PRIMARY KEY (ci_id, ts)) WITHOUT ROWID`
//!  D  append-only `health_raw(id INTEGER PRIMARY KEY, ci_id, ts, sample)`, no index; hourly
//!     compaction into `health_hourly(hour, ci_id, n, samples, PRIMARY KEY (hour, ci_id))
//!     WITHOUT ROWID`, then the raw rows of that hour are deleted
//!  E  D plus an index (ci_id, ts) on `health_raw`
//!  F  D with `health_hourly(key INTEGER PRIMARY KEY, n, samples)`, key = hour << 32 | ci_id
//!     (a WITHOUT ROWID table with ~28 KB rows reads whole overflow chains on every key
//!     comparison of a lookup)
//!  G  F plus an index (ci_id, ts) on `health_raw`
//!  H  F plus an in-memory (ci_id -> [(ts, rowid)]) map of the uncompacted raw rows: F's writes,
//!     indexed reads
//!
//! Run: `cargo run --release -p census-tests --bin census-health-layout -- --computers 1000
//! --minutes 120 --prefill-minutes 360 --layout all` (see tests/HEALTH_LAYOUT.md).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// Size of one WAL frame: 24-byte frame header plus one page.
const WAL_FRAME: u64 = 24 + PAGE_SIZE;
const PAGE_SIZE: u64 = 4096;
/// First simulated minute: 2026-11-25T00:00:00Z, hour aligned.
const EPOCH: i64 = 1_795_564_800;
/// Values per sample for layout A: 12 scalar metrics + 3 filesystems x (used%, inodes%).
const METRICS: usize = 18;

#[derive(Parser, Debug)]
#[command(about = "Compare SQLite layouts for health samples under the collector write pattern")]
struct Args {
    /// Number of computers reporting once a minute.
    #[arg(long, default_value_t = 1000)]
    computers: u32,
    /// Simulated minutes.
    #[arg(long, default_value_t = 120)]
    minutes: u32,
    /// A, B, C, D, E, a comma-separated list, or "all".
    #[arg(long, default_value = "all")]
    layout: String,
    /// Samples per transaction (group commit).
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// PRAGMA synchronous: full or normal.
    #[arg(long, default_value = "full")]
    sync: String,
    /// WAL pages that trigger a PASSIVE checkpoint after a commit (SQLite's default is 1000).
    #[arg(long, default_value_t = 1000)]
    autocheckpoint: u64,
    /// Page cache per connection in KiB (PRAGMA cache_size = -this).
    #[arg(long, default_value_t = 65536)]
    cache_kib: i64,
    /// Sample blob encoding: "named" (field names, as on the wire) or "compact" (positional).
    #[arg(long, default_value = "named")]
    encoding: String,
    /// Unmeasured minutes of history ingested first (large transactions), so the measured
    /// window sees steady-state index sizes.
    #[arg(long, default_value_t = 0)]
    prefill_minutes: u32,
    /// Layouts D..G: compact hour H this many minutes after H ends.
    #[arg(long, default_value_t = 5)]
    grace_minutes: u32,
    /// Layouts D..G: memory budget for grouping one hour in the compaction, in MiB.
    #[arg(long, default_value_t = 64)]
    compaction_mib: u64,
    /// Computers sampled for the per-computer read timings.
    #[arg(long, default_value_t = 20)]
    read_probes: u32,
    /// Parent directory of the temporary database directories.
    #[arg(long, default_value = "/tmp")]
    dir: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Layout {
    A,
    B,
    C,
    D,
    E,
    F,
    G,
    H,
}

impl Layout {
    fn parse_list(s: &str) -> Result<Vec<Layout>> {
        if s.eq_ignore_ascii_case("all") {
            return Ok(vec![
                Layout::A,
                Layout::B,
                Layout::C,
                Layout::D,
                Layout::E,
                Layout::F,
                Layout::G,
                Layout::H,
            ]);
        }
        s.split(',')
            .map(|p| match p.trim().to_ascii_uppercase().as_str() {
                "A" => Ok(Layout::A),
                "B" => Ok(Layout::B),
                "C" => Ok(Layout::C),
                "D" => Ok(Layout::D),
                "E" => Ok(Layout::E),
                "F" => Ok(Layout::F),
                "G" => Ok(Layout::G),
                "H" => Ok(Layout::H),
                other => bail!("unknown layout {other:?}"),
            })
            .collect()
    }

    fn schema(self) -> &'static str {
        match self {
            Layout::A => {
                "CREATE TABLE metric_point(ci_id INTEGER NOT NULL, metric INTEGER NOT NULL,
                     ts INTEGER NOT NULL, value REAL NOT NULL);
                 CREATE INDEX metric_point_key ON metric_point(ci_id, metric, ts);"
            }
            Layout::B => {
                "CREATE TABLE health_sample(id INTEGER PRIMARY KEY, ci_id INTEGER NOT NULL,
                     ts INTEGER NOT NULL, sample BLOB NOT NULL);
                 CREATE INDEX health_sample_ci_ts ON health_sample(ci_id, ts);"
            }
            Layout::C => {
                "CREATE TABLE health_sample(ci_id INTEGER NOT NULL, ts INTEGER NOT NULL,
                     sample BLOB NOT NULL, PRIMARY KEY (ci_id, ts)) WITHOUT ROWID;"
            }
            Layout::D => {
                "CREATE TABLE health_raw(id INTEGER PRIMARY KEY, ci_id INTEGER NOT NULL,
                     ts INTEGER NOT NULL, sample BLOB NOT NULL);
                 CREATE TABLE health_hourly(hour INTEGER NOT NULL, ci_id INTEGER NOT NULL,
                     n INTEGER NOT NULL, samples BLOB NOT NULL,
                     PRIMARY KEY (hour, ci_id)) WITHOUT ROWID;"
            }
            Layout::E => {
                "CREATE TABLE health_raw(id INTEGER PRIMARY KEY, ci_id INTEGER NOT NULL,
                     ts INTEGER NOT NULL, sample BLOB NOT NULL);
                 CREATE INDEX health_raw_ci_ts ON health_raw(ci_id, ts);
                 CREATE TABLE health_hourly(hour INTEGER NOT NULL, ci_id INTEGER NOT NULL,
                     n INTEGER NOT NULL, samples BLOB NOT NULL,
                     PRIMARY KEY (hour, ci_id)) WITHOUT ROWID;"
            }
            Layout::F | Layout::H => {
                "CREATE TABLE health_raw(id INTEGER PRIMARY KEY, ci_id INTEGER NOT NULL,
                     ts INTEGER NOT NULL, sample BLOB NOT NULL);
                 CREATE TABLE health_hourly(key INTEGER PRIMARY KEY, n INTEGER NOT NULL,
                     samples BLOB NOT NULL);"
            }
            Layout::G => {
                "CREATE TABLE health_raw(id INTEGER PRIMARY KEY, ci_id INTEGER NOT NULL,
                     ts INTEGER NOT NULL, sample BLOB NOT NULL);
                 CREATE INDEX health_raw_ci_ts ON health_raw(ci_id, ts);
                 CREATE TABLE health_hourly(key INTEGER PRIMARY KEY, n INTEGER NOT NULL,
                     samples BLOB NOT NULL);"
            }
        }
    }

    fn compacts(self) -> bool {
        matches!(
            self,
            Layout::D | Layout::E | Layout::F | Layout::G | Layout::H
        )
    }

    /// F/G: `health_hourly` is a rowid table keyed by `hour << 32 | ci_id`.
    fn rowid_hourly(self) -> bool {
        matches!(self, Layout::F | Layout::G | Layout::H)
    }

    fn raw_index(self) -> bool {
        matches!(self, Layout::E | Layout::G)
    }
}

/// Mirror of `census_common::HealthSample` without `agent_id` and `collected_at`, which the
/// collector stores as the `ci_id` and `ts` columns.
#[derive(Serialize)]
struct StoredSample {
    uptime_secs: Option<u64>,
    cpu_percent: Option<f64>,
    load: Option<[f64; 3]>,
    memory_used_percent: Option<f64>,
    swap_used_percent: Option<f64>,
    filesystems: Vec<Fs>,
    process_count: Option<u64>,
    net_rx_bytes_per_sec: Option<f64>,
    net_tx_bytes_per_sec: Option<f64>,
    agent_rss_bytes: Option<u64>,
    agent_cpu_percent: Option<f64>,
}

#[derive(Serialize)]
struct Fs {
    mount: &'static str,
    used_percent: Option<f64>,
    inodes_used_percent: Option<f64>,
}

/// xorshift64: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// One computer's slowly changing state, so samples look like a machine, not white noise.
struct Machine {
    phase: i64,
    boot: i64,
    mem: f64,
    disk: [f64; 3],
    procs: u64,
}

fn make_sample(m: &mut Machine, ts: i64, rng: &mut Rng) -> (StoredSample, [f64; METRICS]) {
    let cpu = (rng.unit() * 40.0 + rng.unit() * rng.unit() * 60.0).min(100.0);
    let load1 = cpu / 25.0 + rng.unit();
    let load5 = load1 * 0.8 + rng.unit() * 0.3;
    let load15 = load5 * 0.9 + rng.unit() * 0.2;
    m.mem = (m.mem + (rng.unit() - 0.5) * 2.0).clamp(5.0, 99.0);
    let swap = if m.mem > 85.0 { rng.unit() * 20.0 } else { 0.0 };
    m.procs = (m.procs as i64 + rng.below(7) as i64 - 3).max(50) as u64;
    let uptime = (ts - m.boot) as u64;
    let rx = rng.unit() * 2.0e6;
    let tx = rng.unit() * 5.0e5;
    let rss = 18_000_000 + rng.below(4_000_000);
    let acpu = rng.unit() * 0.8;
    let mounts = ["/", "/var", "/home"];
    let mut fs = Vec::with_capacity(3);
    let mut flat = [0f64; METRICS];
    flat[..12].copy_from_slice(&[
        uptime as f64,
        cpu,
        load1,
        load5,
        load15,
        m.mem,
        swap,
        m.procs as f64,
        rx,
        tx,
        rss as f64,
        acpu,
    ]);
    for (i, mount) in mounts.iter().enumerate() {
        m.disk[i] = (m.disk[i] + rng.unit() * 0.001).min(99.9);
        let inodes = m.disk[i] * 0.3;
        flat[12 + 2 * i] = m.disk[i];
        flat[13 + 2 * i] = inodes;
        fs.push(Fs {
            mount,
            used_percent: Some(m.disk[i]),
            inodes_used_percent: Some(inodes),
        });
    }
    let s = StoredSample {
        uptime_secs: Some(uptime),
        cpu_percent: Some(cpu),
        load: Some([load1, load5, load15]),
        memory_used_percent: Some(m.mem),
        swap_used_percent: Some(swap),
        filesystems: fs,
        process_count: Some(m.procs),
        net_rx_bytes_per_sec: Some(rx),
        net_tx_bytes_per_sec: Some(tx),
        agent_rss_bytes: Some(rss),
        agent_cpu_percent: Some(acpu),
    };
    (s, flat)
}

#[derive(Clone, Copy, Default, Debug)]
struct Io {
    rchar: u64,
    wchar: u64,
    syscw: u64,
    write_bytes: u64,
}

impl Io {
    fn now() -> Result<Io> {
        let text = fs::read_to_string("/proc/self/io").context("read /proc/self/io")?;
        let mut io = Io::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v: u64 = v.trim().parse().unwrap_or(0);
            match k {
                "rchar" => io.rchar = v,
                "wchar" => io.wchar = v,
                "syscw" => io.syscw = v,
                "write_bytes" => io.write_bytes = v,
                _ => {}
            }
        }
        Ok(io)
    }
    fn since(self, before: Io) -> Io {
        Io {
            rchar: self.rchar - before.rchar,
            wchar: self.wchar - before.wchar,
            syscw: self.syscw - before.syscw,
            write_bytes: self.write_bytes - before.write_bytes,
        }
    }
}

#[derive(Default, Debug)]
struct Written {
    /// Bytes appended to the WAL by ingest commits.
    wal: u64,
    /// Bytes the checkpoints copied into the database file (plus WAL header rewrites).
    checkpoint: u64,
    /// Bytes appended to the WAL by the compaction (D..G), all of it ...
    compaction: u64,
    /// ... of which the DELETE of the compacted raw rows.
    compaction_delete: u64,
    /// `write_bytes` over the whole run (page-cache pages dirtied; 4 KiB granular).
    block: u64,
    /// write(2) calls.
    syscalls: u64,
    commits: u64,
    checkpoints: u64,
}

impl Written {
    fn total(&self) -> u64 {
        self.wal + self.checkpoint + self.compaction
    }
}

/// Connection plus the hand-made auto-checkpoint.
struct Db {
    conn: Connection,
    wal_frames: u64,
    autocheckpoint: u64,
    written: Written,
}

impl Db {
    fn open(path: &Path, args: &Args, layout: Layout) -> Result<Db> {
        let conn = Connection::open(path)?;
        conn.execute_batch(&format!(
            "PRAGMA page_size = {PAGE_SIZE};
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = {};
             PRAGMA wal_autocheckpoint = 0;
             PRAGMA cache_size = -{};",
            args.sync, args.cache_kib
        ))?;
        conn.execute_batch(layout.schema())?;
        Ok(Db {
            conn,
            wal_frames: 0,
            autocheckpoint: args.autocheckpoint,
            written: Written::default(),
        })
    }

    fn begin(&self) -> Result<Io> {
        let io = Io::now()?;
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(io)
    }

    /// Commit, attribute the WAL bytes, then checkpoint as SQLite's auto-checkpoint would.
    fn commit(&mut self, before: Io, compaction: bool) -> Result<()> {
        self.conn.execute_batch("COMMIT")?;
        let d = Io::now()?.since(before);
        if compaction {
            self.written.compaction += d.wchar;
        } else {
            self.written.wal += d.wchar;
        }
        self.written.commits += 1;
        self.wal_frames += d.wchar / WAL_FRAME;
        if self.wal_frames >= self.autocheckpoint {
            self.checkpoint("PASSIVE")?;
        }
        Ok(())
    }

    fn checkpoint(&mut self, mode: &str) -> Result<()> {
        let before = Io::now()?;
        let (busy, _log, _done): (i64, i64, i64) =
            self.conn
                .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
        if busy != 0 {
            bail!("checkpoint busy");
        }
        self.written.checkpoint += Io::now()?.since(before).wchar;
        self.written.checkpoints += 1;
        self.wal_frames = 0;
        Ok(())
    }
}

/// Per-hour bookkeeping of raw rowids for D/E (the collector would keep this in a meta table).
#[derive(Default)]
struct Hours {
    /// hour index -> (first rowid, last rowid) of raw rows stamped in that hour.
    raw: BTreeMap<i64, (i64, i64)>,
    /// Hours strictly below this are compacted into `health_hourly`.
    compacted_below: Option<i64>,
    /// Layout H: in-memory index of the uncompacted raw rows, per computer (ts, rowid).
    /// Costs no writes; rebuilt at start-up by one scan of the raw tail.
    tail: Vec<Vec<(i64, i64)>>,
}

struct Outcome {
    layout: Layout,
    samples: u64,
    payload: u64,
    ingest: Duration,
    compaction: Duration,
    written: Written,
    db_bytes: u64,
    used_bytes: u64,
    samples_in_db: u64,
    read_1h: Duration,
    read_1h_kib: f64,
    read_24h: Duration,
    read_24h_kib: f64,
    read_24h_rows: f64,
    latest_all: Duration,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !matches!(args.sync.as_str(), "full" | "normal") {
        bail!("--sync must be full or normal");
    }
    if !matches!(args.encoding.as_str(), "named" | "compact") {
        bail!("--encoding must be named or compact");
    }
    let layouts = Layout::parse_list(&args.layout)?;
    println!(
        "computers={} minutes={} batch={} synchronous={} page_size={PAGE_SIZE} \
         autocheckpoint={} cache={} KiB encoding={}",
        args.computers,
        args.minutes,
        args.batch,
        args.sync.to_uppercase(),
        args.autocheckpoint,
        args.cache_kib,
        args.encoding
    );
    let mut results = Vec::new();
    for layout in layouts {
        let r = run(&args, layout)?;
        eprintln!(
            "{:?}: {} samples in {:.1} s, {:.0} B written/sample",
            r.layout,
            r.samples,
            r.ingest.as_secs_f64(),
            r.written.total() as f64 / r.samples as f64
        );
        results.push(r);
    }
    print_table(&results);
    Ok(())
}

/// The simulated fleet and the collector-side bookkeeping that outlives one phase.
struct Sim {
    rng: Rng,
    machines: Vec<Machine>,
    order: Vec<usize>,
    hours: Hours,
    samples: u64,
    payload: u64,
    compaction: Duration,
}

impl Sim {
    fn new(n: usize) -> Sim {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let machines = (0..n)
            .map(|_| Machine {
                phase: rng.below(60) as i64,
                boot: EPOCH - 86_400 - rng.below(30 * 86_400) as i64,
                mem: 20.0 + rng.unit() * 60.0,
                disk: [
                    10.0 + rng.unit() * 80.0,
                    10.0 + rng.unit() * 80.0,
                    10.0 + rng.unit() * 80.0,
                ],
                procs: 120 + rng.below(300),
            })
            .collect();
        Sim {
            rng,
            machines,
            order: (0..n).collect(),
            hours: Hours {
                tail: vec![Vec::new(); n],
                ..Hours::default()
            },
            samples: 0,
            payload: 0,
            compaction: Duration::ZERO,
        }
    }

    /// Ingest minutes [from, to): shuffled arrival each minute, `batch` samples per commit,
    /// hourly compaction (D..G) `grace_minutes` after each hour ends.
    fn ingest(
        &mut self,
        db: &mut Db,
        args: &Args,
        layout: Layout,
        minutes: std::ops::Range<i64>,
        batch: usize,
    ) -> Result<()> {
        let mut pending = 0usize;
        let mut tx_io = None;
        for minute in minutes {
            self.rng.shuffle(&mut self.order);
            for i in 0..self.order.len() {
                let c = self.order[i];
                let m = &mut self.machines[c];
                let ts = EPOCH + minute * 60 + m.phase;
                let (sample, flat) = make_sample(m, ts, &mut self.rng);
                let blob = if args.encoding == "named" {
                    rmp_serde::to_vec_named(&sample)?
                } else {
                    rmp_serde::to_vec(&sample)?
                };
                self.payload += blob.len() as u64;
                self.samples += 1;
                if tx_io.is_none() {
                    tx_io = Some(db.begin()?);
                }
                insert(
                    &db.conn,
                    layout,
                    c as i64,
                    ts,
                    &blob,
                    &flat,
                    &mut self.hours,
                )?;
                pending += 1;
                if pending == batch {
                    db.commit(tx_io.take().expect("open transaction"), false)?;
                    pending = 0;
                    if layout.compacts() {
                        let cutoff = ts - args.grace_minutes as i64 * 60;
                        self.compact(db, args, layout, cutoff)?;
                    }
                }
            }
        }
        if let Some(io) = tx_io.take() {
            db.commit(io, false)?;
        }
        Ok(())
    }

    /// Compact every hour that ended at or before `cutoff`.
    fn compact(&mut self, db: &mut Db, args: &Args, layout: Layout, cutoff: i64) -> Result<()> {
        let t = Instant::now();
        let ready: Vec<(i64, (i64, i64))> = self
            .hours
            .raw
            .iter()
            .filter(|(h, _)| (*h + 1) * 3600 <= cutoff)
            .map(|(h, r)| (*h, *r))
            .collect();
        for (hour, (lo, hi)) in ready {
            compact_hour(db, args, layout.rowid_hourly(), hour, lo, hi)?;
            self.hours.raw.remove(&hour);
            let end = (hour + 1) * 3600;
            for t in &mut self.hours.tail {
                t.retain(|(ts, _)| *ts >= end);
            }
            self.hours.compacted_below = Some(
                self.hours
                    .compacted_below
                    .map_or(hour + 1, |b| b.max(hour + 1)),
            );
        }
        self.compaction += t.elapsed();
        Ok(())
    }
}

fn run(args: &Args, layout: Layout) -> Result<Outcome> {
    let dir = tempfile::Builder::new()
        .prefix("census-health-layout-")
        .tempdir_in(&args.dir)?;
    let path = dir.path().join("collector.db");
    let mut db = Db::open(&path, args, layout)?;
    let mut sim = Sim::new(args.computers as usize);

    // Unmeasured history, so indexes are at their steady-state size (a short run on an empty
    // table flatters B: its (ci_id, ts) index then has fewer leaves than there are computers).
    let pre = args.prefill_minutes as i64;
    if pre > 0 {
        let t = Instant::now();
        sim.ingest(&mut db, args, layout, 0..pre, args.batch.max(20_000))?;
        if layout.compacts() {
            sim.compact(&mut db, args, layout, EPOCH + pre * 60)?;
        }
        eprintln!(
            "{layout:?}: prefilled {} samples in {:.1} s",
            sim.samples,
            t.elapsed().as_secs_f64()
        );
    }
    db.checkpoint("TRUNCATE")?;
    db.written = Written::default();
    sim.samples = 0;
    sim.payload = 0;
    sim.compaction = Duration::ZERO;

    let end_minute = pre + args.minutes as i64;
    let end_ts = EPOCH + end_minute * 60;
    let io_start = Io::now()?;
    let start = Instant::now();
    sim.ingest(&mut db, args, layout, pre..end_minute, args.batch)?;
    let ingest_only = start.elapsed();

    // Reads while the raw tail is as the collector would see it mid-hour. A fresh connection
    // per probe so SQLite's page cache is cold (the OS cache is warm); rchar then counts what
    // SQLite had to fetch.
    let mut probe_rng = Rng(0xDEAD_BEEF_CAFE_F00D);
    let probes: Vec<i64> = (0..args.read_probes)
        .map(|_| probe_rng.below(args.computers as u64) as i64)
        .collect();
    let (read_1h, read_1h_kib, _) = read_probe(&path, layout, &sim.hours, &probes, end_ts - 3600)?;
    let (read_24h, read_24h_kib, read_24h_rows) =
        read_probe(&path, layout, &sim.hours, &probes, end_ts - 86_400)?;
    let latest_all = latest_all(&path, layout, &sim.hours, args.computers, end_ts)?;

    // Steady-state accounting: every measured sample also pays its compaction, and everything
    // in the WAL is eventually copied home.
    let resumed = Instant::now();
    if layout.compacts() {
        sim.compact(&mut db, args, layout, end_ts)?;
    }
    db.checkpoint("TRUNCATE")?;
    let ingest = ingest_only + resumed.elapsed();
    let io_total = Io::now()?.since(io_start);
    db.written.block = io_total.write_bytes;
    db.written.syscalls = io_total.syscw;
    let written = std::mem::take(&mut db.written);

    let page_count: i64 = db.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let freelist: i64 = db
        .conn
        .query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let db_bytes = fs::metadata(&path)?.len();
    let samples_in_db = count_samples(&db.conn, layout)?;

    Ok(Outcome {
        layout,
        samples: sim.samples,
        payload: sim.payload,
        ingest,
        compaction: sim.compaction,
        written,
        db_bytes,
        used_bytes: (page_count - freelist) as u64 * PAGE_SIZE,
        samples_in_db,
        read_1h,
        read_1h_kib,
        read_24h,
        read_24h_kib,
        read_24h_rows,
        latest_all,
    })
}

fn insert(
    conn: &Connection,
    layout: Layout,
    ci: i64,
    ts: i64,
    blob: &[u8],
    flat: &[f64; METRICS],
    hours: &mut Hours,
) -> Result<()> {
    match layout {
        Layout::A => {
            let mut st = conn.prepare_cached(
                "INSERT INTO metric_point(ci_id, metric, ts, value) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (metric, v) in flat.iter().enumerate() {
                st.execute(params![ci, metric as i64, ts, v])?;
            }
        }
        Layout::B | Layout::C => {
            let mut st = conn.prepare_cached(
                "INSERT INTO health_sample(ci_id, ts, sample) VALUES (?1, ?2, ?3)",
            )?;
            st.execute(params![ci, ts, blob])?;
        }
        Layout::D | Layout::E | Layout::F | Layout::G | Layout::H => {
            let mut st = conn
                .prepare_cached("INSERT INTO health_raw(ci_id, ts, sample) VALUES (?1, ?2, ?3)")?;
            st.execute(params![ci, ts, blob])?;
            let id = conn.last_insert_rowid();
            let e = hours.raw.entry(ts.div_euclid(3600)).or_insert((id, id));
            e.0 = e.0.min(id);
            e.1 = e.1.max(id);
            hours.tail[ci as usize].push((ts, id));
        }
    }
    Ok(())
}

/// Group one hour of raw rows per computer (in passes of at most `compaction_mib`), write one
/// blob per computer-hour in key order, commit per pass, then delete the hour's raw rows.
/// Blob framing per sample: u16 LE seconds into the hour, u16 LE length, msgpack bytes.
fn compact_hour(
    db: &mut Db,
    args: &Args,
    rowid_hourly: bool,
    hour: i64,
    lo: i64,
    hi: i64,
) -> Result<()> {
    let (h0, h1) = (hour * 3600, (hour + 1) * 3600);
    let n = args.computers as i64;
    // ~60 samples of ~500 bytes per computer-hour; size the pass from the budget.
    let per_pass = ((args.compaction_mib << 20) / (60 * 520)).max(1) as i64;
    let mut c0 = 0i64;
    while c0 < n {
        let c1 = (c0 + per_pass).min(n);
        let mut groups: Vec<Vec<(i64, Vec<u8>)>> = (c0..c1).map(|_| Vec::new()).collect();
        let io = db.begin()?;
        {
            let mut st = db.conn.prepare_cached(
                "SELECT ci_id, ts, sample FROM health_raw
                 WHERE id BETWEEN ?1 AND ?2 AND +ci_id >= ?3 AND +ci_id < ?4",
            )?;
            let mut rows = st.query(params![lo, hi, c0, c1])?;
            while let Some(r) = rows.next()? {
                let ci: i64 = r.get(0)?;
                let ts: i64 = r.get(1)?;
                if ts < h0 || ts >= h1 {
                    continue;
                }
                let blob: Vec<u8> = r.get(2)?;
                groups[(ci - c0) as usize].push((ts, blob));
            }
            let mut ins = db.conn.prepare_cached(if rowid_hourly {
                "INSERT OR REPLACE INTO health_hourly(key, n, samples)
                 VALUES ((?1 << 32) | ?2, ?3, ?4)"
            } else {
                "INSERT OR REPLACE INTO health_hourly(hour, ci_id, n, samples)
                 VALUES (?1, ?2, ?3, ?4)"
            })?;
            let mut buf = Vec::new();
            for (i, g) in groups.iter_mut().enumerate() {
                if g.is_empty() {
                    continue;
                }
                g.sort_by_key(|(ts, _)| *ts);
                buf.clear();
                for (ts, b) in g.iter() {
                    buf.extend_from_slice(&((ts - h0) as u16).to_le_bytes());
                    buf.extend_from_slice(&(b.len() as u16).to_le_bytes());
                    buf.extend_from_slice(b);
                }
                ins.execute(params![hour, c0 + i as i64, g.len() as i64, &buf])?;
            }
        }
        db.commit(io, true)?;
        c0 = c1;
    }
    let io = db.begin()?;
    db.conn.execute(
        "DELETE FROM health_raw WHERE id BETWEEN ?1 AND ?2 AND ts < ?3",
        params![lo, hi, h1],
    )?;
    let before = db.written.compaction;
    db.commit(io, true)?;
    db.written.compaction_delete += db.written.compaction - before;
    Ok(())
}

fn count_samples(conn: &Connection, layout: Layout) -> Result<u64> {
    let n: i64 = match layout {
        Layout::A => {
            conn.query_row("SELECT count(*) FROM metric_point", [], |r| {
                r.get::<_, i64>(0)
            })? / METRICS as i64
        }
        Layout::B | Layout::C => {
            conn.query_row("SELECT count(*) FROM health_sample", [], |r| r.get(0))?
        }
        Layout::D | Layout::E | Layout::F | Layout::G | Layout::H => conn.query_row(
            "SELECT (SELECT count(*) FROM health_raw)
                  + (SELECT coalesce(sum(n), 0) FROM health_hourly)",
            [],
            |r| r.get(0),
        )?,
    };
    Ok(n as u64)
}

fn reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.execute_batch("PRAGMA cache_size = -65536; PRAGMA query_only = 1;")?;
    // Parse the schema outside the timed part.
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })?;
    Ok(conn)
}

/// Samples of one computer with ts >= from. Returns rows (samples, or points for A).
fn fetch(conn: &Connection, layout: Layout, hours: &Hours, ci: i64, from: i64) -> Result<u64> {
    let mut rows = 0u64;
    match layout {
        Layout::A => {
            let mut st = conn.prepare_cached(
                "SELECT metric, ts, value FROM metric_point
                 WHERE ci_id = ?1 AND metric IN (0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17)
                   AND ts >= ?2",
            )?;
            let mut q = st.query(params![ci, from])?;
            while let Some(r) = q.next()? {
                let _: f64 = r.get(2)?;
                rows += 1;
            }
            rows /= METRICS as u64;
        }
        Layout::B | Layout::C => {
            let mut st = conn.prepare_cached(
                "SELECT ts, sample FROM health_sample WHERE ci_id = ?1 AND ts >= ?2 ORDER BY ts",
            )?;
            let mut q = st.query(params![ci, from])?;
            while let Some(r) = q.next()? {
                let b = r.get_ref(1)?.as_blob()?;
                rows += (!b.is_empty()) as u64;
            }
        }
        Layout::D | Layout::E | Layout::F | Layout::G | Layout::H => {
            let raw_from = match hours.compacted_below {
                Some(below) => {
                    let mut st = conn.prepare_cached(if layout.rowid_hourly() {
                        "SELECT samples FROM health_hourly WHERE key = (?1 << 32) | ?2"
                    } else {
                        "SELECT samples FROM health_hourly WHERE hour = ?1 AND ci_id = ?2"
                    })?;
                    for hour in from.div_euclid(3600)..below {
                        let blob: Option<Vec<u8>> =
                            st.query_row(params![hour, ci], |r| r.get(0)).optional()?;
                        if let Some(b) = blob {
                            rows += unframe(&b, hour * 3600, from);
                        }
                    }
                    from.max(below * 3600)
                }
                None => from,
            };
            if layout == Layout::H {
                let mut st = conn.prepare_cached("SELECT sample FROM health_raw WHERE id = ?1")?;
                for &(_, id) in hours.tail[ci as usize]
                    .iter()
                    .filter(|(ts, _)| *ts >= raw_from)
                {
                    let b: Vec<u8> = st.query_row(params![id], |r| r.get(0))?;
                    rows += (!b.is_empty()) as u64;
                }
                return Ok(rows);
            }
            let mut st = conn.prepare_cached(
                "SELECT ts, sample FROM health_raw WHERE ci_id = ?1 AND ts >= ?2 ORDER BY ts",
            )?;
            let mut q = st.query(params![ci, raw_from])?;
            while let Some(r) = q.next()? {
                let b = r.get_ref(1)?.as_blob()?;
                rows += (!b.is_empty()) as u64;
            }
        }
    }
    Ok(rows)
}

/// Count the samples in an hourly blob stamped at or after `from`.
fn unframe(b: &[u8], h0: i64, from: i64) -> u64 {
    let mut i = 0;
    let mut n = 0;
    while i + 4 <= b.len() {
        let off = u16::from_le_bytes([b[i], b[i + 1]]) as i64;
        let len = u16::from_le_bytes([b[i + 2], b[i + 3]]) as usize;
        if h0 + off >= from {
            n += 1;
        }
        i += 4 + len;
    }
    n
}

fn read_probe(
    path: &Path,
    layout: Layout,
    hours: &Hours,
    probes: &[i64],
    from: i64,
) -> Result<(Duration, f64, f64)> {
    let mut total = Duration::ZERO;
    let mut read = 0u64;
    let mut rows = 0u64;
    for &ci in probes {
        let conn = reader(path)?;
        let io = Io::now()?;
        let t = Instant::now();
        rows += fetch(&conn, layout, hours, ci, from)?;
        total += t.elapsed();
        read += Io::now()?.since(io).rchar;
    }
    let k = probes.len().max(1) as u32;
    Ok((
        total / k,
        read as f64 / 1024.0 / k as f64,
        rows as f64 / k as f64,
    ))
}

/// Latest sample of every computer (the fleet overview), warm cache.
fn latest_all(
    path: &Path,
    layout: Layout,
    hours: &Hours,
    computers: u32,
    end_ts: i64,
) -> Result<Duration> {
    let conn = reader(path)?;
    let t = Instant::now();
    let mut found = 0u64;
    match layout {
        Layout::A => {
            let mut st = conn.prepare_cached(
                "SELECT value FROM metric_point WHERE ci_id = ?1 AND metric = ?2
                 ORDER BY ts DESC LIMIT 1",
            )?;
            for ci in 0..computers as i64 {
                for metric in 0..METRICS as i64 {
                    let v: Option<f64> =
                        st.query_row(params![ci, metric], |r| r.get(0)).optional()?;
                    found += (metric == 0 && v.is_some()) as u64;
                }
            }
        }
        Layout::B | Layout::C | Layout::E | Layout::G => {
            let table = if layout.raw_index() {
                "health_raw"
            } else {
                "health_sample"
            };
            let mut st = conn.prepare_cached(&format!(
                "SELECT sample FROM {table} WHERE ci_id = ?1 ORDER BY ts DESC LIMIT 1"
            ))?;
            for ci in 0..computers as i64 {
                let v: Option<Vec<u8>> = st.query_row(params![ci], |r| r.get(0)).optional()?;
                found += v.is_some() as u64;
            }
        }
        Layout::H => {
            let mut st = conn.prepare_cached("SELECT sample FROM health_raw WHERE id = ?1")?;
            for t in &hours.tail {
                if let Some(&(_, id)) = t.last() {
                    let b: Vec<u8> = st.query_row(params![id], |r| r.get(0))?;
                    found += (!b.is_empty()) as u64;
                }
            }
        }
        Layout::D | Layout::F => {
            // No index: one scan of the raw tail, keep the newest per computer.
            let mut latest: Vec<Option<(i64, Vec<u8>)>> = vec![None; computers as usize];
            let mut st =
                conn.prepare_cached("SELECT ci_id, ts, sample FROM health_raw WHERE ts >= ?1")?;
            let mut q = st.query(params![end_ts - 600])?;
            while let Some(r) = q.next()? {
                let ci: i64 = r.get(0)?;
                let ts: i64 = r.get(1)?;
                let slot = &mut latest[ci as usize];
                if slot.as_ref().is_none_or(|(t, _)| *t < ts) {
                    *slot = Some((ts, r.get(2)?));
                }
            }
            found = latest.iter().filter(|s| s.is_some()).count() as u64;
        }
    }
    let el = t.elapsed();
    if found != computers as u64 {
        bail!("latest: found {found} of {computers}");
    }
    Ok(el)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn print_table(rs: &[Outcome]) {
    println!();
    println!(
        "| layout | samples | payload B/sample | ingest s (compaction s) | samples/s | WAL MiB | \
         checkpoint MiB | compaction MiB (of which DELETE) | total written MiB | written B/sample | write ampl. × | \
         block write_bytes MiB | write(2) calls | DB MiB | DB B/sample | DB MiB per computer-day | \
         read 1 h ms (KiB read) | read 24 h ms (KiB read, samples) | latest × N ms |"
    );
    println!("|{}", "---|".repeat(19));
    for r in rs {
        let per = |b: u64| b as f64 / r.samples as f64;
        let payload = per(r.payload);
        let db_per_sample = r.used_bytes as f64 / r.samples_in_db.max(1) as f64;
        println!(
            "| {:?} | {} | {:.0} | {:.1} ({:.1}) | {:.0} | {:.1} | {:.1} | {:.1} ({:.1}) | {:.1} | {:.0} | {:.1} | \
             {:.1} | {} | {:.1} | {:.0} | {:.2} | {:.2} ({:.0}) | {:.2} ({:.0}, {:.0}) | {:.0} |",
            r.layout,
            r.samples,
            payload,
            r.ingest.as_secs_f64(),
            r.compaction.as_secs_f64(),
            r.samples as f64 / r.ingest.as_secs_f64(),
            mib(r.written.wal),
            mib(r.written.checkpoint),
            mib(r.written.compaction),
            mib(r.written.compaction_delete),
            mib(r.written.total()),
            per(r.written.total()),
            per(r.written.total()) / payload,
            mib(r.written.block),
            r.written.syscalls,
            mib(r.db_bytes),
            db_per_sample,
            db_per_sample * 1440.0 / (1024.0 * 1024.0),
            r.read_1h.as_secs_f64() * 1e3,
            r.read_1h_kib,
            r.read_24h.as_secs_f64() * 1e3,
            r.read_24h_kib,
            r.read_24h_rows,
            r.latest_all.as_secs_f64() * 1e3,
        );
    }
    println!();
    println!(
        "commits per layout: {}; checkpoints: {}",
        rs.iter()
            .map(|r| format!("{:?}={}", r.layout, r.written.commits))
            .collect::<Vec<_>>()
            .join(" "),
        rs.iter()
            .map(|r| format!("{:?}={}", r.layout, r.written.checkpoints))
            .collect::<Vec<_>>()
            .join(" ")
    );
}
