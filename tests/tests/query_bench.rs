//! `census-query-bench` against the real collector: it seeds a small fleet through
//! `POST /api/v1/import`, runs every query kind, and its counts match what was seeded and what
//! is on disk. No speed is asserted: the figures are for BENCHMARKS.md.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use census_tests::TestCollector;
use census_tests::query::seed::{Machine, debian12_packages};
use serde_json::Value;
use time::OffsetDateTime;

const SEEDED: u32 = 36;
const SEED_RNG: u64 = 11;

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_census-query-bench"))
        .args(args)
        .env_remove("CENSUS_TOKEN")
        .output()
        .expect("census-query-bench runs")
}

/// The process id of the collector serving `data_dir` (the only process whose command line
/// names that temporary directory).
fn collector_pid(data_dir: &Path) -> u32 {
    let dir = data_dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .expect("/proc is readable")
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                let args: Vec<_> = cmdline.split(|b| *b == 0).collect();
                args.contains(&dir.as_bytes()) && args.contains(&b"serve".as_slice())
            })
        })
        .expect("the collector's process is running")
}

/// Whether a Debian 12 openssl build of those seeded is older than 3.0.14: they are all
/// `3.0.N-...`, so the patch number decides.
fn older_than_3_0_14(version: &str) -> bool {
    let patch = version
        .strip_prefix("3.0.")
        .and_then(|rest| rest.split('-').next())
        .and_then(|n| n.parse::<u32>().ok())
        .expect("a seeded openssl version is 3.0.N-...");
    patch < 14
}

#[test]
fn every_kind_runs_and_counts_what_was_seeded() {
    let collector = TestCollector::start();
    let pid = collector_pid(collector.data_dir.path()).to_string();
    let db = collector.data_dir.path().join("census.db");
    let out = bench(&[
        "--url",
        &collector.url(),
        "--token",
        &collector.admin_token,
        "--seed",
        &SEEDED.to_string(),
        "--seed-rng",
        &SEED_RNG.to_string(),
        "--duration",
        "600ms",
        "--concurrency",
        "2",
        "--openssl-page-size",
        "2",
        "--collector-pid",
        &pid,
        "--db",
        db.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "census-query-bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");

    let seed = &report["seed"];
    assert_eq!(seed["computers"], SEEDED);
    assert_eq!(seed["created"], SEEDED, "{seed}");
    assert_eq!(seed["failed"], 0, "{seed}");
    assert_eq!(report["computers"], SEEDED);

    for kind in ["list", "detail", "openssl", "openssl_first_page"] {
        let k = &report["kinds"][kind];
        assert!(k["succeeded"].as_u64().unwrap() > 0, "{kind}: {k}");
        assert_eq!(k["failed"], 0, "{kind}: {k}");
        assert_eq!(k["errors"], serde_json::json!({}), "{kind}: {k}");
        assert!(k["p99_us"].as_u64().unwrap() >= k["p50_us"].as_u64().unwrap());
    }

    // The seeded fleet is known without asking the collector: machine i of rng 11.
    let packages = debian12_packages();
    let old: BTreeSet<String> = (0..SEEDED)
        .map(|i| Machine::generate(SEED_RNG, i, &packages, OffsetDateTime::now_utc()))
        .filter(|m| older_than_3_0_14(m.openssl_version))
        .map(|m| m.hostname)
        .collect();
    assert!(
        !old.is_empty() && old.len() < SEEDED as usize,
        "rng {SEED_RNG} should give a fraction of old openssl: {old:?}"
    );
    // The collector agrees on who they are...
    let listed: BTreeSet<String> = collector
        .get("/api/v1/software?name=openssl&version_lt=3.0.14&limit=1000")["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["hostname"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, old);
    // ...and every walk, two installations a page, found exactly them.
    let openssl = &report["openssl"];
    assert_eq!(openssl["computers"], old.len(), "{openssl}");
    assert_eq!(openssl["rows"], old.len(), "{openssl}");
    assert_eq!(openssl["pages"], old.len().div_ceil(2).max(1), "{openssl}");
    assert!(openssl["walks"].as_u64().unwrap() > 0);
    assert_eq!(openssl["walks_disagreeing"], 0, "{openssl}");
    assert_eq!(
        report["kinds"]["openssl_first_page"]["requests"],
        report["kinds"]["openssl"]["requests"]
    );

    // The database figure is the real file and its WAL, divided by the computers.
    let size = |path: &Path| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let on_disk = size(&db) + size(&db.with_file_name("census.db-wal"));
    let database = &report["database"];
    assert_eq!(database["bytes"], on_disk, "{database}");
    assert_eq!(
        database["bytes_per_computer"],
        on_disk / u64::from(SEEDED),
        "{database}"
    );

    let memory = &report["memory"];
    assert_eq!(memory["pid"].to_string(), pid);
    for when in ["start", "after_seed", "end"] {
        assert!(memory[when]["vm_rss_kib"].as_u64().unwrap() > 0, "{memory}");
    }
    assert!(seed["collector_cpu_s"].as_f64().unwrap() > 0.0, "{seed}");
}

#[test]
fn bad_options_are_refused_with_a_reason() {
    let https = bench(&["--url", "https://127.0.0.1:1", "--token", "t"]);
    assert!(!https.status.success());
    assert!(
        String::from_utf8_lossy(&https.stderr).contains("plain HTTP"),
        "{}",
        String::from_utf8_lossy(&https.stderr)
    );
    let duration = bench(&[
        "--url",
        "http://127.0.0.1:1",
        "--token",
        "t",
        "--duration",
        "5h",
    ]);
    assert!(!duration.status.success());
    assert!(String::from_utf8_lossy(&duration.stderr).contains("ms, s or m"));
    let kind = bench(&[
        "--url",
        "http://127.0.0.1:1",
        "--token",
        "t",
        "--kinds",
        "list,everything",
    ]);
    assert!(!kind.status.success());
    assert!(String::from_utf8_lossy(&kind.stderr).contains("everything"));
    let nobody = bench(&["--url", "http://127.0.0.1:1", "--token", "t"]);
    assert!(!nobody.status.success());
    assert!(
        String::from_utf8_lossy(&nobody.stderr).contains("could not list the computers"),
        "{}",
        String::from_utf8_lossy(&nobody.stderr)
    );
}
