//! The `census-agent` binary as an admin or a service manager runs it.

mod install;
mod trust;
mod util;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use std::sync::{Arc, Mutex};

use census_common::{Ack, ErrorBody, ErrorCode, Report, ReportBody};
use serde_json::Value;
use util::{Answer, FakeCollector, TestAgent, ack_all, closed_port, stderr, stdout};

const LIMIT: Duration = Duration::from_secs(60);

fn is_debian_like() -> bool {
    Path::new("/var/lib/dpkg/status").exists()
}

#[test]
fn inventory_prints_schema_1_json_without_touching_the_state_dir() {
    let agent = TestAgent::new();
    let output = agent.run(&["inventory"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let json: Value = serde_json::from_str(&stdout(&output)).expect("stdout is JSON");
    assert_eq!(json["schema"], 1);
    assert!(json["agent_id"].as_str().is_some_and(|id| id.len() == 36));
    assert_eq!(json["os"]["family"], "linux");
    for key in [
        "host",
        "hardware",
        "cpu",
        "memory",
        "filesystems",
        "network_interfaces",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    if is_debian_like() {
        let software = json["software"].as_array().unwrap();
        assert!(!software.is_empty());
        assert!(
            software
                .iter()
                .all(|s| s["source"] == "dpkg" || s["source"] == "rpm")
        );
    }
    // `inventory` only reads: it creates no agent id and no directory.
    assert!(!agent.state_dir().exists());
}

#[test]
fn inventory_uses_the_stored_agent_id() {
    let agent = TestAgent::new();
    std::fs::create_dir_all(agent.state_dir()).unwrap();
    let id = "0b6f4c6e-2d55-4c1e-9b8a-3f1e2d4c5b6a";
    std::fs::write(agent.state_dir().join("agent_id"), format!("{id}\n")).unwrap();
    let output = agent.run(&["inventory"]);
    let json: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(json["agent_id"], id);
}

#[test]
fn inventory_output_flag_writes_the_file() {
    let agent = TestAgent::new();
    let file = agent.dir.path().join("inventory.json");
    let output = agent
        .command()
        .args(["inventory", "--output"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(output.stdout.is_empty());
    let json = util::read_json(&file);
    assert_eq!(json["schema"], 1);
}

#[test]
fn health_prints_one_sample() {
    let agent = TestAgent::new();
    let output = agent.run(&["health"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let json: Value = serde_json::from_str(&stdout(&output)).unwrap();
    let cpu = json["cpu_percent"]
        .as_f64()
        .expect("cpu_percent is a number");
    assert!((0.0..=100.0).contains(&cpu));
    assert_eq!(json["load"].as_array().map(Vec::len), Some(3));
    assert!(json["memory_used_percent"].as_f64().unwrap() > 0.0);
    let filesystems = json["filesystems"].as_array().unwrap();
    let root = filesystems
        .iter()
        .find(|f| f["mount"] == "/")
        .expect("a / filesystem");
    assert!(root["used_percent"].as_f64().is_some());
    assert!(json["agent_rss_bytes"].as_u64().unwrap() > 0);
    assert!(json["process_count"].as_u64().unwrap() > 0);
}

#[test]
fn print_config_shows_defaults() {
    let agent = TestAgent::new();
    let output = agent.run(&["print-config"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("health_interval = \"1m\""), "{text}");
    assert!(text.contains("inventory_interval = \"1h\""), "{text}");
    assert!(text.contains("request_timeout = \"30s\""), "{text}");
    assert!(text.contains("log_level = \"info\""), "{text}");
    assert!(text.contains("# server is not set"), "{text}");
}

#[test]
fn print_config_layers_file_then_env_then_flags() {
    let agent = TestAgent::new();
    agent.write_config(
        "server = \"http://file.example:1\"\nhealth_interval = \"10s\"\ninventory_interval = \"2h\"\n",
    );
    let output = agent
        .command()
        .env("CENSUS_HEALTH_INTERVAL", "20s")
        .env("CENSUS_SERVER", "http://env.example:2")
        .args(["print-config", "--server", "https://flag.example:3"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("server = \"https://flag.example:3\""),
        "{text}"
    );
    assert!(text.contains("health_interval = \"20s\""), "{text}");
    assert!(text.contains("inventory_interval = \"2h\""), "{text}");
    let state_dir = format!("state_dir = \"{}\"", agent.state_dir().display());
    assert!(text.contains(&state_dir), "{text}");
}

/// The agent refused its configuration (exit 2) with a message naming every one of `words`.
/// The state dir's acknowledged inventory digest is the one of `report`, an inventory.
fn assert_digest_is_of(agent: &TestAgent, report: &Report) {
    let ReportBody::Inventory(inventory) = &report.body else {
        panic!("report {} is not an inventory", report.seq)
    };
    assert_eq!(
        agent.state_file("inventory.digest").unwrap().trim(),
        inventory.content_digest()
    );
}

fn assert_config_error(output: &std::process::Output, words: &[&str]) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    for word in words {
        assert!(err.contains(word), "expected {word:?} in: {err}");
    }
}

#[test]
fn unknown_config_key_fails_naming_the_key() {
    let agent = TestAgent::new();
    agent.write_config("sever = \"http://typo\"\n");
    assert_config_error(&agent.run(&["print-config"]), &["sever"]);
}

#[test]
fn absurd_interval_is_refused_naming_key_and_range() {
    let agent = TestAgent::new();
    agent.write_config("health_interval = \"18446744073709551615s\"\n");
    let output = agent.run(&["once", "--server", "http://127.0.0.1:9"]);
    assert_config_error(&output, &["health_interval", "1s to 1d"]);
}

#[test]
fn missing_explicit_config_file_fails() {
    let agent = TestAgent::new();
    std::fs::remove_file(agent.config_path()).unwrap();
    assert_config_error(&agent.run(&["print-config"]), &["agent.toml"]);
}

#[test]
fn once_without_server_is_a_config_error() {
    let agent = TestAgent::new();
    assert_config_error(&agent.run(&["once"]), &["no collector URL"]);
}

#[test]
fn once_against_an_unreachable_collector_fails_clearly() {
    let agent = TestAgent::new();
    let server = format!("http://127.0.0.1:{}", closed_port());
    let output = agent.run(&["once", "--server", &server]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("could not reach the collector"), "{err}");
    assert!(err.contains(&server), "{err}");
    assert!(err.contains("acknowledged 0 of 2"), "{err}");
    // The identity and the used sequence numbers are durable even though nothing was sent.
    assert!(agent.state_file("agent_id").is_some());
    assert_eq!(agent.state_file("seq").as_deref(), Some("3\n"));
    assert_eq!(agent.state_file("inventory.digest"), None);
}

#[test]
fn once_delivers_inventory_and_health_then_does_not_resend_an_unchanged_inventory() {
    let collector = FakeCollector::acking_everything();
    let agent = TestAgent::new();

    let output = agent.run(&["once", "--server", &collector.url]);
    assert!(output.status.success(), "{}", stderr(&output));
    let first = collector.next(LIMIT);
    assert_eq!(first.content_type.as_deref(), Some("application/msgpack"));
    assert_eq!(first.content_encoding.as_deref(), Some("gzip"));
    let agent_id = agent.state_file("agent_id").unwrap();
    assert_eq!(first.batch.agent_id, agent_id.trim());
    let kinds: Vec<(u64, &str)> = first
        .batch
        .reports
        .iter()
        .map(|r| (r.seq, r.body.kind()))
        .collect();
    assert_eq!(kinds, vec![(1, "inventory"), (2, "health")]);
    assert_digest_is_of(&agent, &first.batch.reports[0]);

    // A second run (a restart) finds the inventory unchanged and sends only health.
    let output = agent.run(&["once", "--server", &collector.url]);
    assert!(output.status.success(), "{}", stderr(&output));
    let second = collector.next(LIMIT);
    let kinds: Vec<(u64, &str)> = second
        .batch
        .reports
        .iter()
        .map(|r| (r.seq, r.body.kind()))
        .collect();
    assert_eq!(kinds, vec![(3, "health")]);
    assert!(collector.try_next().is_none());
}

#[test]
fn once_sends_the_inventory_again_when_the_collector_asks() {
    // The first answer asks for a full inventory, as a collector that lost its data would.
    let collector = FakeCollector::start(|batch, index| Answer::Ack(ack_all(batch, index == 0)));
    let agent = TestAgent::new();
    let output = agent.run(&["once", "--server", &collector.url]);
    assert!(output.status.success(), "{}", stderr(&output));
    let first = collector.next(LIMIT);
    assert_eq!(first.batch.reports.len(), 2);
    let second = collector.next(LIMIT);
    let kinds: Vec<(u64, &str)> = second
        .batch
        .reports
        .iter()
        .map(|r| (r.seq, r.body.kind()))
        .collect();
    assert_eq!(kinds, vec![(3, "inventory")]);
}

/// A collector that works like the real one: it stores a report only when its seq is above
/// the agent's last stored seq, acknowledges every report of a batch (repeats too), and says
/// its `last_seq`. It starts with a history: numbers up to `last_seq` already stored.
fn collector_with_history(last_seq: u64) -> (FakeCollector, Arc<Mutex<Vec<Report>>>) {
    let stored = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&stored);
    let last = Mutex::new(last_seq);
    let collector = FakeCollector::start(move |batch, _| {
        let mut last = last.lock().unwrap();
        for report in &batch.reports {
            if report.seq > *last {
                *last = report.seq;
                kept.lock().unwrap().push(report.clone());
            }
        }
        Answer::Ack(Ack {
            acked: batch.reports.iter().map(|r| r.seq).collect(),
            send_inventory: false,
            last_seq: Some(*last),
        })
    });
    (collector, stored)
}

#[test]
fn a_state_dir_that_went_back_in_time_continues_above_the_collector_and_resends() {
    // The collector stored up to 50 from this agent before its state directory was put back
    // (here: a fresh one, whose sequence starts at 1, with the same agent id).
    let (collector, stored) = collector_with_history(50);
    let agent = TestAgent::new();
    std::fs::create_dir_all(agent.state_dir()).unwrap();
    let id = "0b6f4c6e-2d55-4c1e-9b8a-3f1e2d4c5b6a";
    std::fs::write(agent.state_dir().join("agent_id"), format!("{id}\n")).unwrap();

    let output = agent.run(&["once", "--server", &collector.url]);
    assert!(output.status.success(), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("went back in time"), "{err}");
    assert!(
        err.contains("sending them again under new numbers"),
        "{err}"
    );

    // First send: 1 and 2, acknowledged as repeats but not stored.
    let first = collector.next(LIMIT);
    let kinds = |r: &util::Received| {
        r.batch
            .reports
            .iter()
            .map(|r| (r.seq, r.body.kind()))
            .collect::<Vec<_>>()
    };
    assert_eq!(kinds(&first), vec![(1, "inventory"), (2, "health")]);
    // At once, the same reports under numbers above the collector's.
    let second = collector.next(LIMIT);
    assert_eq!(kinds(&second), vec![(51, "inventory"), (52, "health")]);
    assert_eq!(first.batch.reports[0].body, second.batch.reports[0].body);
    assert_eq!(first.batch.reports[1].body, second.batch.reports[1].body);
    assert!(collector.try_next().is_none());
    let stored: Vec<u64> = stored.lock().unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(stored, vec![51, 52]);
    // The jump is durable, and the inventory counts as delivered only now.
    assert_eq!(agent.state_file("seq").as_deref(), Some("53\n"));
    assert_digest_is_of(&agent, &second.batch.reports[0]);

    // The next run goes on from there, with no warning.
    let output = agent.run(&["once", "--server", &collector.url]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!stderr(&output).contains("went back in time"));
    assert_eq!(kinds(&collector.next(LIMIT)), vec![(53, "health")]);
}

#[test]
fn a_collector_that_is_not_ahead_changes_nothing() {
    let (collector, stored) = collector_with_history(0);
    let agent = TestAgent::new();
    let output = agent.run(&["once", "--server", &collector.url]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!stderr(&output).contains("went back in time"));
    assert_eq!(collector.next(LIMIT).batch.reports.len(), 2);
    assert!(collector.try_next().is_none());
    assert_eq!(stored.lock().unwrap().len(), 2);
    assert_eq!(agent.state_file("seq").as_deref(), Some("3\n"));
}

#[test]
fn once_fails_when_only_part_is_acknowledged() {
    // This collector stores health samples but never the inventory.
    let collector = FakeCollector::start(|batch, _| {
        let acked = batch
            .reports
            .iter()
            .filter(|r| r.body.kind() == "health")
            .map(|r| r.seq)
            .collect();
        Answer::Ack(census_common::Ack {
            acked,
            send_inventory: false,
            last_seq: None,
        })
    });
    let agent = TestAgent::new();
    let output = agent.run(&["once", "--server", &collector.url]);
    assert_eq!(output.status.code(), Some(3));
    let err = stderr(&output);
    assert!(
        err.contains("acknowledged 1 of 2") && err.contains("seq 1"),
        "{err}"
    );
    // An inventory that was never acknowledged must not count as delivered.
    assert_eq!(agent.state_file("inventory.digest"), None);
    // The unacknowledged report waits for the next cycle instead of being resent at once.
    assert_eq!(collector.next(LIMIT).batch.reports.len(), 2);
    assert!(collector.try_next().is_none());
}

#[test]
fn once_reports_the_collectors_error_code_and_message() {
    let collector = FakeCollector::start(|_, _| {
        Answer::Error(
            413,
            ErrorBody::new(ErrorCode::PayloadTooLarge, "batch over 8 MiB"),
        )
    });
    let agent = TestAgent::new();
    let output = agent.run(&["once", "--server", &collector.url]);
    assert_eq!(output.status.code(), Some(3));
    let err = stderr(&output);
    assert!(
        err.contains("payload_too_large") && err.contains("batch over 8 MiB"),
        "{err}"
    );
    assert!(err.contains("413"), "{err}");
    // Retrying cannot fix a 413: each report was tried alone, then set aside for an admin.
    let sent: Vec<usize> = std::iter::from_fn(|| collector.try_next())
        .map(|r| r.batch.reports.len())
        .collect();
    assert_eq!(sent, vec![2, 1, 1]);
    let rejected: Vec<String> = std::fs::read_dir(agent.state_dir().join("rejected"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    let output = agent.run(&["once", "--server", &collector.url]);
    assert_eq!(output.status.code(), Some(3));
    // Nothing set aside comes back; the next run sends new reports only. The refused
    // inventory is collected again, and a new process tries it once more (the collector's
    // limits may have been raised); within one process it is not queued again until it
    // changes (see the service tests).
    assert_eq!(
        kinds(&collector.next(LIMIT)),
        vec![(3, "inventory"), (4, "health")]
    );
}

#[test]
fn an_answer_over_a_mebibyte_is_not_read_whole() {
    // Valid acks, padded with whitespace: one just under the cap is read, one over is not.
    let collector = FakeCollector::start(|batch, index| {
        let padding = if index == 0 { 1000 * 1024 } else { 2 << 20 };
        Answer::Padded(ack_all(batch, false), padding)
    });
    let agent = TestAgent::new();
    let output = agent.run(&["once", "--server", &collector.url]);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = agent.run(&["once", "--server", &collector.url]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains("sent an answer that could not be read")
            && err.contains("larger than 1048576 bytes"),
        "{err}"
    );
}

#[test]
fn corrupt_agent_id_stops_the_agent_naming_the_file() {
    let agent = TestAgent::new();
    std::fs::create_dir_all(agent.state_dir()).unwrap();
    std::fs::write(agent.state_dir().join("agent_id"), "garbage\n").unwrap();
    let output = agent.run(&["once", "--server", "http://127.0.0.1:9"]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains(&agent.state_dir().join("agent_id").display().to_string()),
        "{err}"
    );
}

#[test]
fn run_reports_at_start_holds_the_state_dir_and_stops_on_sigterm() {
    let collector = FakeCollector::acking_everything();
    let agent = TestAgent::new();
    let mut child = agent
        .command()
        .args(["run", "--server", &collector.url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // At start: the inventory and a health sample, in sequence order.
    let first = collector.next(LIMIT);
    let kinds: Vec<(u64, &str)> = first
        .batch
        .reports
        .iter()
        .map(|r| (r.seq, r.body.kind()))
        .collect();
    assert_eq!(kinds, vec![(1, "inventory"), (2, "health")]);

    // A second agent on the same state directory would reuse sequence numbers: refused.
    let second = agent.run(&["once", "--server", &collector.url]);
    assert_eq!(second.status.code(), Some(1));
    assert!(
        stderr(&second).contains("already using state directory"),
        "{}",
        stderr(&second)
    );

    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = util::wait_with_limit(&mut child, LIMIT);
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(status.success(), "{status:?}: {log}");
    assert!(log.contains("SIGTERM"), "{log}");
}

/// Runs `once` against a collector whose first ack acknowledges everything and says
/// `last_seq`; later acks are plain.
fn once_with_last_seq(last_seq: u64) -> (TestAgent, FakeCollector, std::process::Output) {
    let collector = FakeCollector::start(move |batch, index| {
        let mut ack = ack_all(batch, false);
        if index == 0 {
            ack.last_seq = Some(last_seq);
        }
        Answer::Ack(ack)
    });
    let agent = TestAgent::new();
    let output = agent.run(&["once", "--server", &collector.url]);
    (agent, collector, output)
}

/// A `last_seq` no revert explains is logged and ignored: the ack counts as if it had none.
fn assert_bogus_last_seq_is_ignored(bogus: u64) {
    let (agent, collector, output) = once_with_last_seq(bogus);
    // Both reports are delivered.
    assert!(output.status.success(), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("ERROR"), "{err}");
    assert!(err.contains(&bogus.to_string()), "{err}");
    assert!(!err.contains("went back in time"), "{err}");
    assert_eq!(collector.next(LIMIT).batch.reports.len(), 2);
    assert!(collector.try_next().is_none(), "resent");
    // The sequence was not moved, and goes on from where it was.
    assert_eq!(agent.state_file("seq").as_deref(), Some("3\n"));
    let output = agent.run(&["once", "--server", &collector.url]);
    assert!(output.status.success(), "{}", stderr(&output));
    let seqs: Vec<u64> = collector
        .next(LIMIT)
        .batch
        .reports
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, vec![3]);
}

#[test]
fn a_last_seq_of_u64_max_minus_1_is_ignored() {
    // Followed, it would leave u64::MAX in the seq file: exhausted for good.
    assert_bogus_last_seq_is_ignored(u64::MAX - 1);
}

#[test]
fn a_last_seq_of_i64_max_is_ignored() {
    // Followed, the next number would be 2^63, which the collector cannot store.
    assert_bogus_last_seq_is_ignored(i64::MAX as u64);
}

#[test]
fn a_last_seq_of_u64_max_is_ignored() {
    assert_bogus_last_seq_is_ignored(u64::MAX);
}

#[test]
fn a_last_seq_more_than_2_pow_32_ahead_is_ignored() {
    // The agent's next number is 3 when the answer comes.
    assert_bogus_last_seq_is_ignored(3 + (1 << 32) + 1);
}

#[test]
fn a_plausible_jump_of_up_to_2_pow_32_is_still_followed() {
    // A fresh directory numbers 1 and 2, so its next number is 3 when the answer comes; 2^32
    // above it is the largest lead still taken for a revert (one more is ignored, above).
    let last_seq = 3 + (1u64 << 32);
    let (collector, stored) = collector_with_history(last_seq);
    let agent = TestAgent::new();
    let output = agent.run(&["once", "--server", &collector.url]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("went back in time"));
    assert_eq!(collector.next(LIMIT).batch.reports.len(), 2);
    let stored: Vec<u64> = stored.lock().unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(stored, vec![last_seq + 1, last_seq + 2]);
    assert_eq!(agent.state_file("seq"), Some(format!("{}\n", last_seq + 3)));
}

/// A state directory with this agent id that has delivered one `once` (inventory 1, health 2)
/// to an acking collector, so `inventory.digest` matches the machine.
fn agent_that_delivered_once() -> TestAgent {
    let agent = TestAgent::new();
    std::fs::create_dir_all(agent.state_dir()).unwrap();
    let id = "0b6f4c6e-2d55-4c1e-9b8a-3f1e2d4c5b6a";
    std::fs::write(agent.state_dir().join("agent_id"), format!("{id}\n")).unwrap();
    let collector = FakeCollector::acking_everything();
    let output = agent.run(&["once", "--server", &collector.url]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(agent.state_file("inventory.digest").is_some());
    assert_eq!(agent.state_file("seq").as_deref(), Some("3\n"));
    agent
}

fn kinds(received: &util::Received) -> Vec<(u64, &'static str)> {
    received
        .batch
        .reports
        .iter()
        .map(|r| (r.seq, r.body.kind()))
        .collect()
}

#[test]
fn a_jump_sends_the_current_inventory_even_if_its_digest_is_unchanged() {
    // Reverted: the collector holds up to 50, among them maybe an inventory this machine no
    // longer matches; the directory's digest matches the machine, so the unchanged inventory
    // is not queued at first.
    let agent = agent_that_delivered_once();
    let (collector, stored) = collector_with_history(50);
    let output = agent.run(&["once", "--server", &collector.url]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(kinds(&collector.next(LIMIT)), vec![(3, "health")]);
    assert_eq!(kinds(&collector.next(LIMIT)), vec![(51, "health")]);
    // In the same run, the inventory, under a number above the collector's.
    let third = collector.next(LIMIT);
    assert_eq!(kinds(&third), vec![(52, "inventory")]);
    assert!(collector.try_next().is_none());
    let stored: Vec<u64> = stored.lock().unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(stored, vec![51, 52]);
    assert_digest_is_of(&agent, &third.batch.reports[0]);
}

#[test]
fn after_a_jump_the_digest_is_forgotten_until_an_inventory_is_acknowledged() {
    let agent = agent_that_delivered_once();
    // Ahead at first, then acknowledging nothing (the inventory included).
    let collector = FakeCollector::start(|batch, index| {
        Answer::Ack(Ack {
            acked: if index == 0 {
                batch.reports.iter().map(|r| r.seq).collect()
            } else {
                Vec::new()
            },
            send_inventory: false,
            last_seq: Some(50),
        })
    });
    let output = agent.run(&["once", "--server", &collector.url]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert_eq!(kinds(&collector.next(LIMIT)), vec![(3, "health")]);
    assert_eq!(kinds(&collector.next(LIMIT)), vec![(51, "health")]);
    assert_eq!(
        kinds(&collector.next(LIMIT)),
        vec![(51, "health"), (52, "inventory")]
    );
    assert_eq!(agent.state_file("inventory.digest"), None);
    // After a restart the spooled reports go first, the unacknowledged inventory among
    // them (not queued a second time, its digest being the machine's), then the new sample.
    let collector = FakeCollector::acking_everything();
    let output = agent.run(&["once", "--server", &collector.url]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        kinds(&collector.next(LIMIT)),
        vec![(51, "health"), (52, "inventory"), (53, "health")]
    );
    assert!(agent.state_file("inventory.digest").is_some());
}

#[test]
fn a_second_jump_in_one_process_is_refused_and_the_reports_stay_queued() {
    // Ahead at 50, and after the agent continued at 51, ahead again at 100: numbers this
    // process had not handed out, so someone else is using them (or the collector is wrong).
    let collector = FakeCollector::start(|batch, index| {
        let mut ack = ack_all(batch, false);
        ack.last_seq = Some(if index == 0 { 50 } else { 100 });
        Answer::Ack(ack)
    });
    let agent = TestAgent::new();
    let output = agent.run(&["once", "--server", &collector.url]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("went back in time"), "{err}");
    assert!(
        err.contains(
            "another agent is using this agent id / state directory, or the collector is wrong"
        ),
        "{err}"
    );
    assert!(err.contains("100"), "{err}");
    assert_eq!(
        kinds(&collector.next(LIMIT)),
        vec![(1, "inventory"), (2, "health")]
    );
    assert_eq!(
        kinds(&collector.next(LIMIT)),
        vec![(51, "inventory"), (52, "health")]
    );
    assert!(collector.try_next().is_none());
    // The second answer's acknowledgements did not count: both reports are still pending,
    // under the numbers of the first jump, which alone wrote the sequence file.
    assert!(
        err.contains("acknowledged 0 of 2") && err.contains("seq 51, 52"),
        "{err}"
    );
    assert_eq!(agent.state_file("seq").as_deref(), Some("53\n"));
    assert_eq!(agent.state_file("inventory.digest"), None);
}

#[test]
fn an_ack_whose_last_seq_cannot_be_checked_leaves_its_reports_uncertain() {
    // The seq file turns unreadable while the first batch is at the collector, which was not
    // ahead and stored it. The agent cannot check last_seq, so nothing counts as delivered;
    // but the reports may be stored. Later the collector is ahead (a revert): the inventory
    // goes again under a new number (harmless), the health sample must not (it would be
    // stored twice).
    let agent = TestAgent::new();
    agent.write_config("health_interval = \"1s\"\n");
    let seq_file = agent.state_dir().join("seq");
    let collector = FakeCollector::start(move |batch, index| {
        let mut ack = ack_all(batch, false);
        match index {
            0 => {
                std::fs::write(&seq_file, "garbage\n").unwrap();
                ack.last_seq = Some(2);
            }
            1 => {
                std::fs::write(&seq_file, "3\n").unwrap();
                ack.last_seq = Some(50);
            }
            _ => {}
        }
        Answer::Ack(ack)
    });
    let mut child = agent
        .command()
        .args(["run", "--server", &collector.url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(
        kinds(&collector.next(LIMIT)),
        vec![(1, "inventory"), (2, "health")]
    );
    // The next cycle (one health interval later) could not number a sample and sends the same
    // two again; the collector says it is ahead.
    assert_eq!(
        kinds(&collector.next(LIMIT)),
        vec![(1, "inventory"), (2, "health")]
    );
    assert_eq!(kinds(&collector.next(LIMIT)), vec![(51, "inventory")]);

    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = util::wait_with_limit(&mut child, LIMIT);
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(status.success(), "{status:?}: {log}");
    assert!(log.contains("could not read the sequence file"), "{log}");
    assert!(!log.contains("could not be saved"), "{log}");
    assert!(log.contains("dropping a health sample"), "{log}");
}

#[test]
fn a_jump_that_cannot_be_saved_says_so_and_counts_nothing() {
    let agent = TestAgent::new();
    // A directory where the seq file's temporary copy goes: the seq file stays readable, but
    // cannot be replaced.
    let blocker = agent.state_dir().join(".seq.tmp");
    let collector = FakeCollector::start(move |batch, _| {
        std::fs::create_dir_all(&blocker).unwrap();
        let mut ack = ack_all(batch, false);
        ack.last_seq = Some(50);
        Answer::Ack(ack)
    });
    let output = agent.run(&["once", "--server", &collector.url]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains("the collector is ahead of this agent's sequence and the new sequence could not be saved"),
        "{err}"
    );
    assert!(!err.contains("could not read the sequence file"), "{err}");
    assert!(err.contains("acknowledged 0 of 2"), "{err}");
    assert_eq!(agent.state_file("seq").as_deref(), Some("3\n"));
}
