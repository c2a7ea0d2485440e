//! The fleet simulator against the real collector and against the bare sink: every report it
//! counts as acked is stored (computers, packages, health, incidents), and a second run with
//! its state file is the same fleet, already known. No speed is asserted here: the figures are
//! for benchmarks (DOCS-sim.md).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use census_tests::fleet::identity::Profile;
use census_tests::fleet::inventory::Fixture;
use census_tests::{TestCollector, binary, http_request};
use serde_json::Value;

const SEED: u64 = 7;
const AGENTS: u32 = 20;
const BREACHING: f64 = 0.2;

/// Every page of a list route of `collector`, following `next_cursor`.
fn all_items(collector: &TestCollector, path: &str) -> Vec<Value> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut out = Vec::new();
    let mut page = collector.get(&format!("{path}{sep}limit=500"));
    loop {
        out.extend(page["items"].as_array().expect("a list").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                page = collector.get(&format!("{path}{sep}limit=500&cursor={cursor}"));
            }
            None => return out,
        }
    }
}

/// Runs `census-fleet-sim` in health mode against `url`; its JSON report.
fn fleet_sim(url: &str, secret: &str, state: &Path, duration: &str) -> Value {
    let out = Command::new(binary("census-fleet-sim"))
        .args([
            "--url",
            url,
            "--agents",
            &AGENTS.to_string(),
            "--interval",
            "1s",
        ])
        .args(["--duration", duration, "--seed", &SEED.to_string()])
        .args(["--breaching", &BREACHING.to_string(), "--json", "--state"])
        .arg(state)
        .env("CENSUS_ENROLL_SECRET", secret)
        .output()
        .expect("census-fleet-sim runs");
    assert!(
        out.status.success(),
        "census-fleet-sim failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the report is one JSON object")
}

fn count(report: &Value, field: &str) -> u64 {
    report["totals"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("totals.{field} in {report}"))
}

#[test]
fn the_collector_stores_exactly_what_the_simulated_fleet_counted_as_acked() {
    let collector = TestCollector::start_with_config(
        tempfile::tempdir().unwrap(),
        "enroll_rate_per_minute = 0\nreports_rate_per_minute = 0\n",
    );
    // The default rules wait minutes before firing; this one fires on the first sample.
    let rule = serde_json::json!({
        "name": "root almost full, at once",
        "metric": "fs_used_percent",
        "operator": ">",
        "threshold": 95,
        "for": "0s",
        "clear_for": "0s",
        "severity": "high",
    });
    let (status, answer) = http_request(
        collector.addr,
        "POST",
        "/api/v1/rules",
        &[
            (
                "Authorization",
                &format!("Bearer {}", collector.admin_token),
            ),
            ("Content-Type", "application/json"),
        ],
        rule.to_string().as_bytes(),
    );
    assert_eq!(status, 201, "{answer}");
    let rule_id = serde_json::from_str::<Value>(&answer).unwrap()["id"]
        .as_i64()
        .unwrap();

    let state = collector.data_dir.path().join("fleet-state.json");
    let first = fleet_sim(&collector.url(), &collector.enroll_secret, &state, "3s");
    assert_eq!(count(&first, "failed"), 0, "{first}");
    assert_eq!(first["errors"], serde_json::json!({}), "{first}");
    assert_eq!(count(&first, "enrolled"), u64::from(AGENTS));
    assert_eq!(count(&first, "inventories_acked"), u64::from(AGENTS));
    assert!(count(&first, "health_acked") > 0, "{first}");

    let fixture = Fixture::load();
    let check = |report: &Value, health_before: u64| -> u64 {
        let computers = all_items(&collector, "/api/v1/cis?class=computer");
        let names: BTreeSet<String> = computers
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect();
        let expected: BTreeSet<String> = (0..AGENTS)
            .map(census_tests::fleet::identity::hostname)
            .collect();
        assert_eq!(names, expected);
        let mut health = 0;
        for computer in &computers {
            let id = computer["id"].as_i64().unwrap();
            let index: u32 = computer["name"].as_str().unwrap()[4..].parse().unwrap();
            let software = all_items(&collector, &format!("/api/v1/cis/{id}/software"));
            assert_eq!(
                software.len(),
                fixture.package_count(SEED, index),
                "{computer}"
            );
            let samples = collector.get(&format!("/api/v1/cis/{id}/health?limit=10080"));
            health += samples["items"].as_array().unwrap().len() as u64;
        }
        assert_eq!(
            health - health_before,
            count(report, "health_acked"),
            "{report}"
        );
        health
    };
    let health = check(&first, 0);

    let open = all_items(
        &collector,
        &format!("/api/v1/incidents?state=open&rule_id={rule_id}"),
    );
    let with_incident: BTreeSet<i64> = open.iter().map(|i| i["ci_id"].as_i64().unwrap()).collect();
    let breaching: BTreeSet<i64> = all_items(&collector, "/api/v1/cis?class=computer")
        .iter()
        .filter(|c| {
            let index: u32 = c["name"].as_str().unwrap()[4..].parse().unwrap();
            Profile::new(SEED, index, BREACHING).breaching
        })
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    assert!(!breaching.is_empty(), "seed {SEED} has breaching machines");
    assert_eq!(with_incident, breaching);

    // The same fleet again: known, so no enrollment and no first inventory.
    let second = fleet_sim(&collector.url(), &collector.enroll_secret, &state, "2s");
    assert_eq!(count(&second, "failed"), 0, "{second}");
    assert_eq!(count(&second, "enrolled"), 0, "{second}");
    assert_eq!(count(&second, "inventories_acked"), 0, "{second}");
    check(&second, health);
}

#[test]
fn the_bare_sink_acks_every_report_the_schedule_holds() {
    let mut sink = Command::new(binary("census-bare-sink"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("census-bare-sink starts");
    let mut line = String::new();
    BufReader::new(sink.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("the sink prints its address");
    let url = format!("http://{}", line.trim());
    let state = tempfile::tempdir().unwrap();
    let report = fleet_sim(&url, "any secret", &state.path().join("state.json"), "3s");
    let _ = sink.kill();
    let _ = sink.wait();

    assert_eq!(count(&report, "failed"), 0, "{report}");
    assert_eq!(count(&report, "enrolled"), u64::from(AGENTS));
    assert_eq!(count(&report, "inventories_acked"), u64::from(AGENTS));
    // Agent i makes first contact at i/20 s and sends health 1 s and 2 s later: 40 samples
    // due, each acked or, if its agent was still busy at the end, counted unsent.
    let unsent = report["unsent"].as_u64().unwrap();
    assert_eq!(
        count(&report, "health_acked") + unsent,
        2 * u64::from(AGENTS),
        "{report}"
    );
    assert_eq!(
        count(&report, "reports_acked"),
        count(&report, "health_acked") + count(&report, "inventories_acked")
    );
}
