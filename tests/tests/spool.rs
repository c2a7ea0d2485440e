//! The agent's spool end to end: with the collector down, the agent runs several cycles, is
//! killed with SIGKILL and started again; when the collector comes back, every health sample
//! the agent took reaches the database exactly once, in order.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use census_tests::{TestAgent, TestCollector, binary, wait_for};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `census-agent run` against `server`, health every second, logging at debug level to `log`.
fn start_agent(agent: &TestAgent, server: &str, log: &Path) -> Child {
    Command::new(binary("census-agent"))
        .arg("--config")
        .arg(agent.state_dir.path().join("agent.toml"))
        .arg("--state-dir")
        .arg(agent.state_dir.path())
        .args(["--server", server, "run"])
        .env("RUST_LOG", "census_agent=debug")
        .env("CENSUS_HEALTH_INTERVAL", "1s")
        // The agent retries at least this often once the collector is back.
        .env("CENSUS_RETRY_MAX_BACKOFF", "10s")
        .stdout(Stdio::null())
        .stderr(File::create(log).unwrap())
        .spawn()
        .expect("census-agent starts")
}

/// The health samples an agent log says were spooled: seq -> collected_at.
fn queued(log: &Path) -> BTreeMap<u64, OffsetDateTime> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let field = |line: &str, name: &str| -> Option<String> {
        let rest = &line[line.find(&format!("{name}="))? + name.len() + 1..];
        Some(rest.split_whitespace().next()?.trim_matches('"').to_owned())
    };
    text.lines()
        .filter(|l| l.contains("queueing health sample"))
        .map(|l| {
            let seq = field(l, "seq").unwrap().parse().unwrap();
            let at = OffsetDateTime::parse(&field(l, "collected_at").unwrap(), &Rfc3339).unwrap();
            (seq, at)
        })
        .collect()
}

/// Every health sample the collector holds for `ci`, oldest first.
fn stored(collector: &TestCollector, ci: i64) -> Vec<OffsetDateTime> {
    let mut out = Vec::new();
    let mut path = format!("/api/v1/cis/{ci}/health?limit=1000");
    loop {
        let page = collector.get(&path);
        for item in page["items"].as_array().unwrap() {
            let at = item["collected_at"].as_str().unwrap();
            out.push(OffsetDateTime::parse(at, &Rfc3339).unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/cis/{ci}/health?limit=1000&cursor={cursor}"),
            None => return out,
        }
    }
}

fn computer_id(collector: &TestCollector) -> i64 {
    let cis: Value = collector.get("/api/v1/cis?class=computer");
    cis["items"][0]["id"]
        .as_i64()
        .expect("the agent's computer")
}

fn sigkill(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn samples_taken_while_the_collector_is_down_survive_sigkill_and_arrive_once_in_order() {
    let collector = TestCollector::start();
    let agent = TestAgent::new();
    agent.once(&collector);
    let ci = computer_id(&collector);
    let before = stored(&collector, ci);
    assert_eq!(before.len(), 1);
    let url = collector.url();
    let listen = collector.addr.to_string();
    let data_dir = collector.stop();

    // Collector down: the agent takes samples it cannot deliver, and is killed mid-run.
    let logs = tempfile::tempdir().unwrap();
    let first_log = logs.path().join("first.log");
    let mut first = start_agent(&agent, &url, &first_log);
    wait_for("three samples spooled", Duration::from_secs(60), || {
        (queued(&first_log).len() >= 3).then_some(())
    });
    sigkill(&mut first);
    let second_log = logs.path().join("second.log");
    let mut second = start_agent(&agent, &url, &second_log);
    wait_for(
        "three more samples spooled",
        Duration::from_secs(60),
        || (queued(&second_log).len() >= 3).then_some(()),
    );

    // Collector back on the same address: the running agent delivers the backlog by itself.
    let collector = TestCollector::start_listening(data_dir, "", &listen);
    let offline: BTreeMap<u64, OffsetDateTime> = queued(&first_log)
        .into_iter()
        .chain(queued(&second_log))
        .collect();
    let last_offline = *offline.keys().last().unwrap();
    wait_for(
        "the offline samples stored",
        Duration::from_secs(120),
        || (stored(&collector, ci).len() > offline.len()).then_some(()),
    );
    second.kill().unwrap();
    second.wait().unwrap();

    let mut taken: BTreeMap<u64, OffsetDateTime> = queued(&first_log);
    taken.extend(queued(&second_log));
    let in_db = stored(&collector, ci);
    // Exactly once: no sample twice, none the agent did not take (besides the first cycle's).
    let mut unique = in_db.clone();
    unique.dedup();
    assert_eq!(
        unique.len(),
        in_db.len(),
        "a sample stored twice: {in_db:?}"
    );
    assert_eq!(in_db[0], before[0]);
    let delivered = &in_db[1..];
    // In order, and a prefix of what was taken with no gap: every sample up to the last one
    // delivered, among them every sample taken while the collector was down.
    let expected: Vec<OffsetDateTime> = taken.values().copied().take(delivered.len()).collect();
    assert_eq!(delivered, expected.as_slice());
    let offline_count = taken.range(..=last_offline).count();
    assert!(
        delivered.len() >= offline_count,
        "{} of {offline_count}",
        delivered.len()
    );
    assert!(taken.keys().zip(taken.keys().skip(1)).all(|(a, b)| a < b));
}

/// Socket inodes of a process's open file descriptors.
fn socket_inodes(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy().into_owned();
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect()
}

/// Inodes of listening TCP sockets and bound UDP sockets on this machine (IPv4 and IPv6).
fn listening_inodes() -> Vec<String> {
    let mut out = Vec::new();
    for (table, listening_state) in [
        ("tcp", Some("0A")),
        ("tcp6", Some("0A")),
        ("udp", None),
        ("udp6", None),
    ] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 9 && listening_state.is_none_or(|st| cols[3] == st) {
                out.push(cols[9].to_owned());
            }
        }
    }
    out
}

#[test]
fn the_running_agent_listens_on_no_port() {
    let collector = TestCollector::start();
    let agent = TestAgent::new();
    agent.once(&collector);
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("agent.log");
    let mut child = start_agent(&agent, &collector.url(), &log);
    let ci = computer_id(&collector);
    // Past its first delivery, with a connection to the collector open.
    wait_for("a delivery", Duration::from_secs(60), || {
        (stored(&collector, ci).len() >= 3).then_some(())
    });
    let sockets = socket_inodes(child.id());
    let listening = listening_inodes();
    assert!(!listening.is_empty(), "the collector's own port is listed");
    let agent_listening: Vec<&String> = sockets.iter().filter(|s| listening.contains(s)).collect();
    sigkill(&mut child);
    assert!(
        agent_listening.is_empty(),
        "the agent listens on {agent_listening:?}"
    );
}
