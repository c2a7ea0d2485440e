//! `census-query-bench`: admin-API read latency against a collector's CMDB.
//!
//! Against a running collector (plain HTTP on this machine, an admin token), it first walks
//! `GET /api/v1/cis?class=computer` to count the computers and learn their ids, names and OS
//! names; then runs each query kind for `--duration` with `--concurrency` requests in flight,
//! one kind after another, each worker on its own keep-alive connection:
//!
//! - `list`: `GET /api/v1/cis?class=computer&os_name=OS&name_prefix=P`, default page size, with
//!   (OS, P) taken from a random sample of real computers (P is a name up to its last `-`), so
//!   every request matches something and the values vary from request to request.
//! - `detail`: `GET /api/v1/cis/{id}` for ids drawn from a random sample of the computers.
//! - `openssl`: `GET /api/v1/software?name=openssl&version_lt=X&limit=1000` (`--openssl-page-size`), following
//!   `next_cursor` to the end. One walk is one query; its latency is the sum of its pages' round
//!   trips (the client's own JSON reading between pages is left out). The first page is also
//!   tallied alone, as `openssl_first_page`.
//!
//! Every request's latency is kept ([`Tally`]), so percentiles are exact. A failed request
//! counts under its status and error code. With `--collector-pid`, the collector's `VmRSS` and
//! `VmHWM` are read from `/proc/PID/status` at the start, after seeding and at the end; with
//! `--db`, the database's size (file plus `-wal`) is divided by the computers counted.
//! `--seed N` first imports N generated computers ([`seed`]).

pub mod http;
pub mod rng;
pub mod seed;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::stats::{Percentiles, Tally};
use http::{Conn, Target, path_with_query};
use rng::Rng;
use seed::SeedReport;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "census-query-bench",
    about = "Measure admin-API read latency (CI list, CI detail, who runs an old openssl) against a running collector"
)]
pub struct Options {
    /// The collector, as http://HOST:PORT on this machine.
    #[arg(long)]
    pub url: String,
    /// An admin API token (any role; an admin role to --seed).
    #[arg(long, env = "CENSUS_TOKEN", hide_env_values = true)]
    pub token: String,
    /// How long each query kind runs: 30, 30s, 500ms, 2m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Requests in flight, each on its own connection.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// Query kinds to run, comma-separated, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "list,detail,openssl"
    )]
    pub kinds: Vec<Kind>,
    /// The openssl query selects computers whose openssl is older than this (dpkg order).
    #[arg(long, default_value = "3.0.14")]
    pub openssl_older_than: String,
    /// Installations per page of the openssl walk (1 to 1000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub openssl_page_size: u16,
    /// Computers sampled for the detail ids and the list filters.
    #[arg(long, default_value_t = 4000)]
    pub sample: usize,
    /// Seed of the request choices (which id, which filter).
    #[arg(long, default_value_t = 1)]
    pub rng: u64,
    /// The collector's process id: its VmRSS and VmHWM are reported.
    #[arg(long)]
    pub collector_pid: Option<u32>,
    /// The collector's database file: its size with its -wal per computer is reported.
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// First import this many generated computers through POST /api/v1/import.
    #[arg(long)]
    pub seed: Option<u32>,
    /// Index of the first generated computer: `--seed 50000 --seed-from 50000` adds the second
    /// half of a 100,000-computer fleet.
    #[arg(long, default_value_t = 0, requires = "seed")]
    pub seed_from: u32,
    /// Seed of the generated fleet: the same value gives the same computers.
    #[arg(long, default_value_t = 1)]
    pub seed_rng: u64,
    /// Imports in flight while seeding. The collector commits the imports waiting for its
    /// writer together, so more in flight share page writes: 16 gave twice the rate of 4.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub seed_concurrency: u16,
    /// Seed, report the seeding, database and memory figures, and run no query.
    #[arg(long, requires = "seed")]
    pub seed_only: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    List,
    Detail,
    Openssl,
}

/// `30`, `30s`, `500ms` or `2m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 30s, 500ms or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{text:?}: the unit must be ms, s or m")),
    };
    if seconds <= 0.0 {
        return Err(format!("{text:?}: a duration must be more than zero"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Everything a run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub url: String,
    pub concurrency: u16,
    pub duration_s: f64,
    pub seed: Option<SeedReport>,
    /// Computers listed by `GET /api/v1/cis?class=computer` (retired ones left out).
    pub computers: u64,
    pub discovery_s: f64,
    /// Per query kind: `list`, `detail`, `openssl` (whole walks), `openssl_first_page`.
    pub kinds: BTreeMap<String, KindReport>,
    pub openssl: Option<OpensslReport>,
    pub memory: Option<MemoryReport>,
    pub database: Option<DatabaseReport>,
}

/// One kind's figures. Latencies in microseconds.
#[derive(Debug, Serialize)]
pub struct KindReport {
    pub requests: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub per_second: f64,
    pub p50_us: Option<u64>,
    pub p95_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub max_us: Option<u64>,
    /// Failures by status and error code (`404 not_found`) or transport failure.
    pub errors: BTreeMap<String, u64>,
    /// CPU seconds the collector spent while this kind ran (with `--collector-pid`).
    pub collector_cpu_s: Option<f64>,
    #[serde(skip)]
    percentiles: Option<Percentiles>,
}

impl KindReport {
    fn new(mut tally: Tally, elapsed: Duration) -> KindReport {
        let percentiles = tally.percentiles();
        let succeeded = tally.succeeded() as u64;
        let failed = tally.failed();
        KindReport {
            requests: succeeded + failed,
            succeeded,
            failed,
            per_second: (succeeded + failed) as f64 / elapsed.as_secs_f64(),
            p50_us: percentiles.map(|p| p.p50),
            p95_us: percentiles.map(|p| p.p95),
            p99_us: percentiles.map(|p| p.p99),
            max_us: percentiles.map(|p| p.max),
            errors: tally.errors().clone(),
            collector_cpu_s: None,
            percentiles,
        }
    }
}

/// What the openssl walks found.
#[derive(Debug, Serialize)]
pub struct OpensslReport {
    pub older_than: String,
    /// Distinct computers in a complete walk.
    pub computers: u64,
    /// Installations (a computer with two matching versions is two rows).
    pub rows: u64,
    pub pages: u64,
    pub walks: u64,
    /// Complete walks that found another number of computers than the first one did.
    pub walks_disagreeing: u64,
}

/// The collector's memory, in KiB, from `/proc/PID/status`.
#[derive(Debug, Serialize)]
pub struct MemoryReport {
    pub pid: u32,
    pub start: Memory,
    pub after_seed: Option<Memory>,
    pub end: Memory,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Memory {
    pub vm_rss_kib: u64,
    pub vm_hwm_kib: u64,
}

/// The database's size on disk at the end of the run.
#[derive(Debug, Serialize)]
pub struct DatabaseReport {
    pub path: PathBuf,
    pub file_bytes: u64,
    pub wal_bytes: u64,
    pub bytes: u64,
    pub bytes_per_computer: Option<u64>,
}

/// `VmRSS` and `VmHWM` of process `pid`.
pub fn memory_of(pid: u32) -> Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&path).with_context(|| format!("could not read {path}"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|rest| rest.trim().strip_suffix("kB")?.trim().parse().ok())
            .with_context(|| format!("{path} has no {name} in kB"))
    };
    Ok(Memory {
        vm_rss_kib: field("VmRSS")?,
        vm_hwm_kib: field("VmHWM")?,
    })
}

/// CPU time a process has used, in seconds, and its writer thread's (the thread named
/// `census-writer`), from `/proc/PID/stat` and `/proc/PID/task/*/stat`.
#[derive(Debug, Clone, Copy)]
pub struct CpuTime {
    pub process_s: f64,
    pub writer_s: Option<f64>,
}

impl CpuTime {
    pub fn of(pid: u32) -> Result<CpuTime> {
        let process_s = stat_cpu_s(&format!("/proc/{pid}/stat"))?;
        let writer_s = std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .find(|task| {
                std::fs::read_to_string(task.path().join("comm"))
                    .is_ok_and(|comm| comm.trim() == "census-writer")
            })
            .and_then(|task| stat_cpu_s(&task.path().join("stat").to_string_lossy()).ok());
        Ok(CpuTime {
            process_s,
            writer_s,
        })
    }

    /// The time used since `earlier`.
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            process_s: self.process_s - earlier.process_s,
            writer_s: self.writer_s.zip(earlier.writer_s).map(|(a, b)| a - b),
        }
    }
}

/// `utime + stime` of a `stat` file, in seconds. They count clock ticks of `USER_HZ`, which
/// Linux fixes at 100 for user space on every architecture it runs on.
fn stat_cpu_s(path: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("could not read {path}"))?;
    // The command name, in parentheses, may hold spaces; the fields after it do not.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15; `fields` starts at field 3 (the state).
    let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok());
    match (ticks(14), ticks(15)) {
        (Some(user), Some(system)) => Ok((user + system) as f64 / 100.0),
        _ => bail!("{path} has no utime and stime"),
    }
}

/// The size of `db` and of its write-ahead log (absent counts as empty).
pub fn database_size(db: &Path, computers: u64) -> Result<DatabaseReport> {
    let file_bytes = std::fs::metadata(db)
        .with_context(|| format!("could not read the size of {}", db.display()))?
        .len();
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let wal_bytes = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    let bytes = file_bytes + wal_bytes;
    Ok(DatabaseReport {
        path: db.to_owned(),
        file_bytes,
        wal_bytes,
        bytes,
        bytes_per_computer: (computers > 0).then(|| bytes / computers),
    })
}

/// A computer as the discovery walk saw it.
#[derive(Debug, Clone)]
struct Computer {
    id: i64,
    name: String,
    os_name: Option<String>,
}

#[derive(Deserialize)]
struct Page<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct CiItem {
    id: i64,
    name: String,
    #[serde(default)]
    attributes: serde_json::Value,
}

#[derive(Deserialize)]
struct InstallItem {
    ci_id: i64,
}

/// GET `path` and decode it, or say why not.
fn get_json<T: for<'de> Deserialize<'de>>(conn: &mut Conn, path: &str) -> Result<T> {
    let response = conn.get(path).with_context(|| format!("GET {path}"))?;
    if !response.is_success() {
        bail!(
            "GET {path} answered {}: {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        );
    }
    serde_json::from_slice(&response.body)
        .with_context(|| format!("GET {path}: not the JSON expected"))
}

/// Every computer, 1000 a page.
fn discover(target: &Target) -> Result<Vec<Computer>> {
    let mut conn = target.connect();
    let mut computers = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut params = vec![("class", "computer"), ("limit", "1000")];
        if let Some(cursor) = &cursor {
            params.push(("cursor", cursor));
        }
        let page: Page<CiItem> = get_json(&mut conn, &path_with_query("/api/v1/cis", &params))?;
        computers.extend(page.items.into_iter().map(|ci| Computer {
            id: ci.id,
            name: ci.name,
            os_name: ci.attributes["os_name"].as_str().map(str::to_owned),
        }));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(computers),
        }
    }
}

/// The `name_prefix` a user would type for a computer: its name up to and with its last `-`
/// (`fra-web-` for `fra-web-000123`), or its first half when it has no `-`.
fn name_prefix(name: &str) -> &str {
    match name.rfind('-') {
        Some(at) if at > 0 => &name[..=at],
        _ => &name[..name.len().div_ceil(2)],
    }
}

/// Runs `step` on `concurrency` threads, each with its own connection, generator and state,
/// until `duration` has passed; the states and the time it took.
fn run_for<S: Send>(
    target: &Target,
    options: &Options,
    stream: u64,
    new_state: impl Fn() -> S + Sync,
    step: impl Fn(&mut Conn, &mut Rng, &mut S) + Sync,
) -> (Vec<S>, Duration) {
    let started = Instant::now();
    let deadline = started + options.duration;
    let states = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..options.concurrency)
            .map(|worker| {
                let (new_state, step) = (&new_state, &step);
                scope.spawn(move || {
                    let mut conn = target.connect();
                    let mut rng = Rng::for_item(options.rng ^ stream, u64::from(worker));
                    let mut state = new_state();
                    while Instant::now() < deadline {
                        step(&mut conn, &mut rng, &mut state);
                    }
                    state
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a query thread panicked"))
            .collect()
    });
    (states, started.elapsed())
}

/// Sends one GET and tallies it; the body when it succeeded.
fn timed_get(conn: &mut Conn, path: &str, tally: &mut Tally) -> Option<(Vec<u8>, Duration)> {
    let sent = Instant::now();
    match conn.get(path) {
        Ok(response) if response.is_success() => {
            let took = sent.elapsed();
            tally.ok(took, 0);
            Some((response.body, took))
        }
        Ok(response) => {
            tally.error(response.error_label(), 0);
            None
        }
        Err(failure) => {
            tally.error(failure.kind, 0);
            None
        }
    }
}

fn merged(tallies: impl IntoIterator<Item = Tally>) -> Tally {
    let mut all = Tally::default();
    for tally in tallies {
        all.merge(tally);
    }
    all
}

fn bench_list(target: &Target, options: &Options, sample: &[Computer]) -> KindReport {
    let mut filters: Vec<String> = sample
        .iter()
        .map(|c| {
            let mut params = vec![("class", "computer")];
            if let Some(os) = &c.os_name {
                params.push(("os_name", os));
            }
            params.push(("name_prefix", name_prefix(&c.name)));
            path_with_query("/api/v1/cis", &params)
        })
        .collect();
    filters.sort_unstable();
    filters.dedup();
    let (tallies, elapsed) = run_for(target, options, 1, Tally::default, |conn, rng, tally| {
        let path = &filters[rng.below(filters.len() as u32) as usize];
        timed_get(conn, path, tally);
    });
    KindReport::new(merged(tallies), elapsed)
}

fn bench_detail(target: &Target, options: &Options, sample: &[Computer]) -> KindReport {
    let paths: Vec<String> = sample
        .iter()
        .map(|c| format!("/api/v1/cis/{}", c.id))
        .collect();
    let (tallies, elapsed) = run_for(target, options, 2, Tally::default, |conn, rng, tally| {
        let path = &paths[rng.below(paths.len() as u32) as usize];
        timed_get(conn, path, tally);
    });
    KindReport::new(merged(tallies), elapsed)
}

#[derive(Default)]
struct Walks {
    walk: Tally,
    first_page: Tally,
    /// (distinct computers, rows, pages) of each complete walk.
    found: Vec<(u64, u64, u64)>,
}

fn bench_openssl(target: &Target, options: &Options) -> (KindReport, KindReport, OpensslReport) {
    let older_than = options.openssl_older_than.as_str();
    let limit = options.openssl_page_size.to_string();
    let (states, elapsed) = run_for(target, options, 3, Walks::default, |conn, _, walks| {
        let mut cursor: Option<String> = None;
        let mut took = Duration::ZERO;
        let mut computers = HashSet::new();
        let (mut rows, mut pages) = (0, 0);
        loop {
            let mut params = vec![
                ("name", "openssl"),
                ("version_lt", older_than),
                ("limit", &limit),
            ];
            if let Some(cursor) = &cursor {
                params.push(("cursor", cursor));
            }
            let path = path_with_query("/api/v1/software", &params);
            // A page that fails ends the walk, which counts as failed under the page's error.
            let mut page_tally = Tally::default();
            let answer = timed_get(conn, &path, &mut page_tally);
            if pages == 0 {
                walks.first_page.merge(page_tally.clone());
            }
            let Some((body, page_took)) = answer else {
                walks.walk.merge(page_tally);
                return;
            };
            let Ok(page) = serde_json::from_slice::<Page<InstallItem>>(&body) else {
                walks.walk.error("undecodable page", 0);
                return;
            };
            took += page_took;
            pages += 1;
            rows += page.items.len() as u64;
            computers.extend(page.items.iter().map(|i| i.ci_id));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        walks.walk.ok(took, 0);
        walks.found.push((computers.len() as u64, rows, pages));
    });
    let mut walk = Tally::default();
    let mut first_page = Tally::default();
    let mut found = Vec::new();
    for state in states {
        walk.merge(state.walk);
        first_page.merge(state.first_page);
        found.extend(state.found);
    }
    let (computers, rows, pages) = found.first().copied().unwrap_or_default();
    let report = OpensslReport {
        older_than: older_than.to_owned(),
        computers,
        rows,
        pages,
        walks: found.len() as u64,
        walks_disagreeing: found.iter().filter(|f| f.0 != computers).count() as u64,
    };
    (
        KindReport::new(walk, elapsed),
        KindReport::new(first_page, elapsed),
        report,
    )
}

/// Seeds if asked, discovers the computers, runs the kinds and gathers the figures.
pub fn run(options: &Options) -> Result<Report> {
    let target = Target::new(&options.url, &options.token)?;
    let memory_now = || options.collector_pid.map(memory_of).transpose();
    let cpu_now = || options.collector_pid.map(CpuTime::of).transpose();
    let memory_start = memory_now()?;
    let seed = match options.seed {
        Some(computers) => {
            let cpu_before = cpu_now()?;
            let mut report = seed::seed(
                &target,
                options.seed_from,
                computers,
                options.seed_rng,
                usize::from(options.seed_concurrency),
            );
            if let (Some(before), Some(after)) = (cpu_before, cpu_now()?) {
                let used = after.since(before);
                report.collector_cpu_s = Some(used.process_s);
                report.writer_cpu_s = used.writer_s;
            }
            Some(report)
        }
        None => None,
    };
    let memory_after_seed = if seed.is_some() { memory_now()? } else { None };

    let discovery = Instant::now();
    let computers = discover(&target).context("could not list the computers")?;
    let discovery_s = discovery.elapsed().as_secs_f64();
    let mut kinds = BTreeMap::new();
    let mut openssl = None;
    if !options.seed_only {
        if computers.is_empty() && options.kinds.iter().any(|k| *k != Kind::Openssl) {
            bail!("the collector lists no computer; seed some with --seed N");
        }
        let sample = Rng::new(options.rng).sample(&computers, options.sample.max(1));
        for kind in &options.kinds {
            let cpu_before = cpu_now()?;
            let mut reports = match kind {
                Kind::List => vec![("list", bench_list(&target, options, &sample))],
                Kind::Detail => vec![("detail", bench_detail(&target, options, &sample))],
                Kind::Openssl => {
                    let (walk, first_page, found) = bench_openssl(&target, options);
                    openssl = Some(found);
                    vec![("openssl", walk), ("openssl_first_page", first_page)]
                }
            };
            if let (Some(before), Some(after)) = (cpu_before, cpu_now()?) {
                // The first page's requests are part of the walks: the CPU goes to the walk.
                reports[0].1.collector_cpu_s = Some(after.since(before).process_s);
            }
            for (name, report) in reports {
                kinds.insert(name.to_owned(), report);
            }
        }
    }
    let memory = match (options.collector_pid, memory_start) {
        (Some(pid), Some(start)) => Some(MemoryReport {
            pid,
            start,
            after_seed: memory_after_seed,
            end: memory_of(pid)?,
        }),
        _ => None,
    };
    let database = options
        .db
        .as_deref()
        .map(|db| database_size(db, computers.len() as u64))
        .transpose()?;
    Ok(Report {
        url: options.url.clone(),
        concurrency: options.concurrency,
        duration_s: options.duration.as_secs_f64(),
        seed,
        computers: computers.len() as u64,
        discovery_s,
        kinds,
        openssl,
        memory,
        database,
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(seed) = &self.seed {
            write!(
                f,
                "seeded computers {}..{} (rng {}) in {:.1} s: {:.1}/s with {} imports in flight, {} created, {} failed",
                seed.first,
                seed.first + seed.computers,
                seed.rng,
                seed.seconds,
                seed.per_second,
                seed.concurrency,
                seed.created,
                seed.failed
            )?;
            if let Some(p) = seed.latency {
                write!(f, "; import {p}")?;
            }
            writeln!(f)?;
            if let Some(cpu) = seed.collector_cpu_s {
                write!(
                    f,
                    "  collector CPU {cpu:.1} s ({:.2} ms per computer)",
                    cpu * 1000.0 / f64::from(seed.computers.max(1))
                )?;
                if let Some(writer) = seed.writer_cpu_s {
                    write!(
                        f,
                        ", of which the writer thread {writer:.1} s ({:.2} ms per computer)",
                        writer * 1000.0 / f64::from(seed.computers.max(1))
                    )?;
                }
                writeln!(f)?;
            }
            for (what, n) in &seed.errors {
                writeln!(f, "  seeding error {what}: {n}")?;
            }
        }
        writeln!(
            f,
            "{} computers (listed in {:.2} s); each kind ran {:.1} s with {} in flight",
            self.computers, self.discovery_s, self.duration_s, self.concurrency
        )?;
        for (kind, report) in &self.kinds {
            write!(
                f,
                "{kind:<19} {:>8} requests {:>9.1}/s  ",
                report.requests, report.per_second
            )?;
            match report.percentiles {
                Some(p) => write!(f, "{p}")?,
                None => write!(f, "no request succeeded")?,
            }
            if let Some(cpu) = report.collector_cpu_s {
                write!(
                    f,
                    "; collector CPU {:.2} ms per request",
                    cpu * 1000.0 / report.requests.max(1) as f64
                )?;
            }
            writeln!(f)?;
            for (what, n) in &report.errors {
                writeln!(f, "{:<19} error {what}: {n}", "")?;
            }
        }
        if let Some(o) = &self.openssl {
            writeln!(
                f,
                "openssl older than {}: {} computers, {} rows in {} pages ({} complete walks, {} disagreeing)",
                o.older_than, o.computers, o.rows, o.pages, o.walks, o.walks_disagreeing
            )?;
        }
        if let Some(m) = &self.memory {
            let show = |f: &mut fmt::Formatter<'_>, when: &str, m: &Memory| {
                write!(
                    f,
                    " {when} RSS {:.1} MiB (peak {:.1} MiB);",
                    mib(m.vm_rss_kib),
                    mib(m.vm_hwm_kib)
                )
            };
            write!(f, "collector {}:", m.pid)?;
            show(f, "start", &m.start)?;
            if let Some(after_seed) = &m.after_seed {
                show(f, "after seeding", after_seed)?;
            }
            show(f, "end", &m.end)?;
            writeln!(f)?;
        }
        if let Some(d) = &self.database {
            write!(
                f,
                "database {}: {:.1} MiB + {:.1} MiB WAL",
                d.path.display(),
                d.file_bytes as f64 / 1048576.0,
                d.wal_bytes as f64 / 1048576.0
            )?;
            match d.bytes_per_computer {
                Some(per) => writeln!(f, " = {:.1} KiB per computer", per as f64 / 1024.0)?,
                None => writeln!(f, "; no computer to divide by")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit_or_seconds() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn a_name_prefix_is_the_name_up_to_its_last_dash() {
        assert_eq!(name_prefix("fra-web-000123"), "fra-web-");
        assert_eq!(name_prefix("web42"), "web");
        assert_eq!(name_prefix("-x"), "-");
    }

    #[test]
    fn memory_and_cpu_are_read_from_proc() {
        let m = memory_of(std::process::id()).unwrap();
        assert!(m.vm_rss_kib > 0 && m.vm_hwm_kib >= m.vm_rss_kib, "{m:?}");
        let before = CpuTime::of(std::process::id()).unwrap();
        // Burns CPU until /proc says 50 ms were used. Not a wall-time spin: on a loaded machine
        // 100 ms of wall time can be far less CPU. A reading that never moves fails at the
        // deadline.
        let spin = Instant::now();
        let mut x = 0u64;
        let used = loop {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            let used = CpuTime::of(std::process::id()).unwrap().since(before);
            if used.process_s >= 0.05 || spin.elapsed() > Duration::from_secs(60) {
                break used;
            }
        };
        assert!(used.process_s >= 0.05, "{used:?}");
        // This thread alone, plus the other tests' threads: never more than all the CPUs.
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!(
            used.process_s <= spin.elapsed().as_secs_f64() * cpus as f64 + 0.05,
            "{used:?}"
        );
        assert_eq!(used.writer_s, None);
    }
}
