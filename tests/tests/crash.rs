//! The collector killed with SIGKILL in the middle of a stream of report batches: after a
//! restart, every batch it answered 2xx is in the database, and none is stored twice, not even
//! when the sender then re-sends everything it had no answer for (as an agent does).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use census_tests::{TestCollector, http_request, try_http_request, wait_for};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Four agents, each sending its own batches in order, as agents do, so that several batches
/// are in flight in the collector when it dies.
const AGENTS: [&str; 4] = [
    "6f1d2c3b-4a59-4e8f-9a7b-0c1d2e3f4a50",
    "6f1d2c3b-4a59-4e8f-9a7b-0c1d2e3f4a51",
    "6f1d2c3b-4a59-4e8f-9a7b-0c1d2e3f4a52",
    "6f1d2c3b-4a59-4e8f-9a7b-0c1d2e3f4a53",
];

fn enroll(collector: &TestCollector, agent: &str) -> String {
    let body = json!({ "secret": collector.enroll_secret, "agent_id": agent, "hostname": agent });
    let (status, text) = http_request(
        collector.addr,
        "POST",
        "/agent/v1/enroll",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{text}");
    serde_json::from_str::<Value>(&text).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn time_of(seq: u64, base: OffsetDateTime) -> String {
    (base + time::Duration::seconds(seq as i64))
        .format(&Rfc3339)
        .unwrap()
}

/// Batch `seq` of `agent`: its inventory first (hostname = agent id), then one health sample
/// a second.
fn batch(agent: &str, seq: u64, base: OffsetDateTime) -> Vec<u8> {
    let at = time_of(seq, base);
    let report = if seq == 1 {
        json!({ "seq": 1, "kind": "inventory", "schema": 1, "agent_id": agent,
                "collected_at": at, "host": { "hostname": agent } })
    } else {
        json!({ "seq": seq, "kind": "health", "agent_id": agent, "collected_at": at,
                "cpu_percent": 1.0 })
    };
    json!({ "agent_id": agent, "reports": [report] })
        .to_string()
        .into_bytes()
}

fn post(collector_addr: std::net::SocketAddr, token: &str, body: &[u8]) -> Option<u16> {
    try_http_request(
        collector_addr,
        "POST",
        "/agent/v1/reports",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &format!("Bearer {token}")),
        ],
        body,
    )
    .ok()
    .map(|(status, _)| status)
}

/// Every health sample time of `agent`'s computer, with how often each appears.
fn stored_samples(collector: &TestCollector, agent: &str) -> BTreeMap<String, usize> {
    let cis = collector.get(&format!("/api/v1/cis?class=computer&hostname={agent}"));
    let id = cis["items"][0]["id"].as_i64().expect("the computer exists");
    let mut counts = BTreeMap::new();
    let health = collector.get(&format!("/api/v1/cis/{id}/health?limit=10080"));
    assert!(health["next_cursor"].is_null(), "one page holds the test");
    for sample in health["items"].as_array().unwrap() {
        let at = sample["collected_at"].as_str().unwrap().to_owned();
        *counts.entry(at).or_default() += 1;
    }
    counts
}

struct Sent {
    agent: &'static str,
    /// Every seq sent, answered or not.
    sent: Vec<u64>,
    /// The seqs answered 200.
    acked: Vec<u64>,
}

#[test]
fn every_batch_acked_before_a_sigkill_is_stored_exactly_once() {
    // The test sends as fast as it can; the per-agent rate limit is not what it is about.
    const CONFIG: &str = "reports_rate_per_minute = 0\n";
    let collector = TestCollector::start_with_config(tempfile::tempdir().unwrap(), CONFIG);
    // An hour ago, so every sample is inside the health route's default window.
    let base = OffsetDateTime::now_utc() - time::Duration::hours(1);
    let acked_total = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = AGENTS
        .iter()
        .map(|&agent| {
            let token = enroll(&collector, agent);
            let addr = collector.addr;
            let acked_total = acked_total.clone();
            std::thread::spawn(move || {
                let mut out = Sent {
                    agent,
                    sent: Vec::new(),
                    acked: Vec::new(),
                };
                // Until the collector stops answering.
                for seq in 1.. {
                    out.sent.push(seq);
                    match post(addr, &token, &batch(agent, seq, base)) {
                        Some(200) => {
                            out.acked.push(seq);
                            acked_total.fetch_add(1, Ordering::SeqCst);
                        }
                        Some(status) => panic!("{agent} batch {seq} answered {status}"),
                        None => break,
                    }
                }
                out
            })
        })
        .collect();

    wait_for("400 acked batches", Duration::from_secs(120), || {
        (acked_total.load(Ordering::SeqCst) >= 400).then_some(())
    });
    let data_dir = collector.kill();
    let runs: Vec<Sent> = senders.into_iter().map(|s| s.join().unwrap()).collect();

    let collector = TestCollector::start_with_config(data_dir, CONFIG);
    for run in &runs {
        assert!(run.acked.len() > 1, "{} sent no health", run.agent);
        let samples = stored_samples(&collector, run.agent);
        for &seq in run.acked.iter().filter(|&&s| s > 1) {
            assert_eq!(
                samples.get(&time_of(seq, base)),
                Some(&1),
                "{}: acked batch {seq} is not stored exactly once",
                run.agent
            );
        }
        assert!(samples.values().all(|&n| n == 1), "{samples:?}");

        // The agent re-sends everything it sent (acked or not), in order: repeats are acked
        // again, nothing doubles, and what was unanswered is stored now.
        let token = enroll(&collector, run.agent);
        for &seq in &run.sent {
            assert_eq!(
                post(collector.addr, &token, &batch(run.agent, seq, base)),
                Some(200)
            );
        }
        let samples = stored_samples(&collector, run.agent);
        assert_eq!(
            samples.len(),
            run.sent.len() - 1,
            "every sent batch is stored"
        );
        assert!(samples.values().all(|&n| n == 1), "{samples:?}");
    }
}
