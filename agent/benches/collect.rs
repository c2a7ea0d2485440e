//! The agent's hot paths on this machine: dpkg status parsing, one whole inventory collection
//! (what `census-agent inventory` does before printing) and one health sample (the work of each
//! health cycle of `census-agent run`).
//!
//! `cargo bench -p census-agent --bench collect`
//!
//! Inventory and health run twice: wall time, and the CPU time the whole process used (helper
//! threads of the facets and mount points included), which is the issue's "CPU per health
//! cycle" (Unix only: it reads the process CPU clock). The status file of this machine is parsed only when it is readable, so the bench runs
//! anywhere.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use census_agent::collect::software::{dpkg, rpm};
use census_agent::collect::{Collector, Root};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};

const AGENT_ID: &str = "6f1d2c3b-0a4e-4b7d-9c1e-2f3a4b5c6d7e";

fn dpkg_status(c: &mut Criterion) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/dpkg/status-debian12");
    let mut files = vec![(
        "fixture-debian12",
        std::fs::read_to_string(&fixture).expect("the dpkg fixture is readable"),
    )];
    match std::fs::read_to_string(dpkg::STATUS) {
        Ok(text) => files.push(("this-machine", text)),
        Err(e) => println!("{}: {e}; skipping this machine's status file", dpkg::STATUS),
    }
    let mut group = c.benchmark_group("dpkg_parse_status");
    for (name, text) in &files {
        let packages = dpkg::parse_status(text).len();
        assert!(packages > 0, "{name}: no installed package parsed");
        println!(
            "dpkg status {name}: {} bytes, {packages} packages",
            text.len()
        );
        group.throughput(Throughput::Elements(packages as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), text, |b, text| {
            b.iter(|| dpkg::parse_status(black_box(text)))
        });
    }
    group.finish();
}

fn inventory(c: &mut Criterion) {
    let mut collector = Collector::new(Root::host());
    let first = collector.inventory(AGENT_ID);
    assert!(
        first.incomplete.is_empty(),
        "facets overran their budget: {:?}",
        first.incomplete
    );
    println!(
        "inventory of this machine: {} packages, {} filesystems, {} interfaces, {} warnings",
        first.software.len(),
        first.filesystems.len(),
        first.network_interfaces.len(),
        first.warnings.len()
    );
    let mut group = c.benchmark_group("inventory");
    // About 5 ms an inventory: 30 samples keep a run within a few seconds.
    group.sample_size(30);
    group.bench_function("wall", |b| b.iter(|| collector.inventory(AGENT_ID)));
    #[cfg(unix)]
    group.bench_function("process_cpu", |b| {
        b.iter_custom(|iters| {
            let start = process_cpu();
            for _ in 0..iters {
                black_box(collector.inventory(AGENT_ID));
            }
            process_cpu().saturating_sub(start)
        })
    });
    // The inventory runs `rpm -qa` when rpm is on PATH (some Debian machines have it, with an
    // empty database): its share of the wall time, on its own.
    #[cfg(unix)]
    match rpm::find_on_path() {
        Some(program) => {
            group.bench_function("rpm_query_only", |b| {
                b.iter(|| rpm::query(&program, rpm::TIMEOUT).expect("rpm -qa runs"))
            });
        }
        None => println!("rpm is not on PATH: the inventory runs no command"),
    }
    group.finish();
}

fn health(c: &mut Criterion) {
    let mut collector = Collector::new(Root::host());
    // The first sample waits for sysinfo's minimum CPU interval; later ones, spaced as below,
    // never wait, as in the service loop where the previous cycle is the baseline.
    let first = collector.health(AGENT_ID);
    assert!(first.cpu_percent.is_some(), "no CPU figure in the sample");
    // Each sample must come at least this long after the previous one, or `health` sleeps:
    // the pause is taken outside the measured time.
    let spacing = sysinfo::MINIMUM_CPU_UPDATE_INTERVAL + Duration::from_millis(5);
    let mut group = c.benchmark_group("health_sample");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    group.bench_function("wall", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                std::thread::sleep(spacing);
                let start = Instant::now();
                black_box(collector.health(AGENT_ID));
                total += start.elapsed();
            }
            total
        })
    });
    #[cfg(unix)]
    group.bench_function("process_cpu", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                std::thread::sleep(spacing);
                let start = process_cpu();
                black_box(collector.health(AGENT_ID));
                total += process_cpu().saturating_sub(start);
            }
            total
        })
    });
    group.finish();
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

criterion_group!(benches, dpkg_status, inventory, health);
criterion_main!(benches);
