//! Trust: enrollment, the agent token, the collector's certificate and plain HTTP. Every agent
//! run here is checked not to print the enrollment secret ([`TestAgent::run`],
//! [`RunningAgent::stop`]).

use std::os::unix::fs::PermissionsExt;

use census_common::{ErrorBody, ErrorCode};

use super::util::{
    Answer, EnrollAnswer, FakeCollector, RunningAgent, TEST_SECRET, TestAgent, ack_all,
    closed_port, issue_token, stderr, stdout, tls_fixture, token_invalid,
};
use super::{LIMIT, assert_config_error, kinds};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// An agent whose `run` cycles every second and logs each cycle's decisions.
fn fast_agent(agent: &TestAgent) {
    agent.write_config("health_interval = \"1s\"\nlog_level = \"info,census_agent=debug\"\n");
}

fn seqs(received: &super::util::Received) -> Vec<u64> {
    received.batch.reports.iter().map(|r| r.seq).collect()
}

#[test]
fn enroll_writes_a_0600_token_that_is_then_sent_as_bearer() {
    let collector = FakeCollector::acking_everything();
    let agent = TestAgent::without_secret();
    let output = agent.run(&[
        "enroll",
        "--server",
        &collector.url,
        "--secret",
        TEST_SECRET,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let line = stdout(&output);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.starts_with("enrolled agent "), "{line}");
    assert!(!line.contains("token-0"), "the token was printed: {line}");

    let enrollment = collector.next_enrollment(LIMIT);
    let agent_id = agent
        .state_file("agent_id")
        .expect("enroll creates the agent id");
    assert_eq!(enrollment.request.agent_id, agent_id.trim());
    assert_eq!(enrollment.request.secret, TEST_SECRET);
    assert!(!enrollment.request.hostname.is_empty());
    assert_eq!(enrollment.content_type.as_deref(), Some("application/json"));
    let token_file = agent.state_dir().join("token");
    assert_eq!(agent.state_file("token").as_deref(), Some("token-0\n"));
    assert_eq!(mode(&token_file), 0o600);
    assert_eq!(mode(&agent.state_dir()), 0o700);

    // `once`, with no secret anywhere, sends the token.
    let output = agent.run(&["once", "--server", &collector.url]);
    assert!(output.status.success(), "{}", stderr(&output));
    let received = collector.next(LIMIT);
    assert_eq!(received.authorization.as_deref(), Some("Bearer token-0"));
    assert_eq!(received.batch.agent_id, agent_id.trim());
    assert!(collector.enrollments.try_recv().is_err());

    // Enrolling again (secret from the environment this time) replaces the token.
    let agent = TestAgent {
        secret: Some(TEST_SECRET.to_owned()),
        ..agent
    };
    let output = agent.run(&["enroll", "--server", &collector.url]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("replacing the previous one"));
    assert_eq!(agent.state_file("token").as_deref(), Some("token-1\n"));
    assert_eq!(mode(&token_file), 0o600);
}

#[test]
fn enroll_with_a_wrong_secret_fails_clearly_and_writes_no_token() {
    let collector = FakeCollector::acking_everything();
    // The environment holds the right secret; the flag wins.
    let agent = TestAgent::new();
    let wrong = "not-the-s3cret-4711";
    let output = agent.run(&["enroll", "--server", &collector.url, "--secret", wrong]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("could not enroll"), "{err}");
    assert!(err.contains("wrong, revoked or expired"), "{err}");
    assert!(
        err.contains("census-collector enroll-secret create"),
        "{err}"
    );
    assert!(!err.contains(wrong), "{err}");
    assert_eq!(collector.next_enrollment(LIMIT).request.secret, wrong);
    assert_eq!(agent.state_file("token"), None);

    // `once` with the wrong secret in its environment: one clear error, nothing sent.
    let agent = TestAgent {
        secret: Some(wrong.to_owned()),
        ..TestAgent::without_secret()
    };
    let output = agent.run(&["once", "--server", &collector.url]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("refused the enrollment secret"), "{err}");
    assert!(err.contains("acknowledged 0 of 2"), "{err}");
    assert!(!err.contains(wrong), "{err}");
    assert!(collector.try_next().is_none());
}

#[test]
fn enroll_needs_a_secret_and_a_server() {
    let agent = TestAgent::without_secret();
    let output = agent.run(&["enroll", "--server", "http://127.0.0.1:9"]);
    assert_config_error(&output, &["no enrollment secret", "CENSUS_ENROLL_SECRET"]);
    let output = agent.run(&["enroll", "--secret", "x"]);
    assert_config_error(&output, &["no collector URL"]);
}

#[test]
fn enroll_against_an_unreachable_collector_fails_clearly() {
    let agent = TestAgent::new();
    let server = format!("http://127.0.0.1:{}", closed_port());
    let output = agent.run(&["enroll", "--server", &server]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("could not reach the collector"), "{err}");
    assert!(err.contains(&server), "{err}");
    assert_eq!(agent.state_file("token"), None);
}

#[test]
fn once_enrolls_by_itself_with_a_configured_secret() {
    let collector = FakeCollector::acking_everything();
    let agent = TestAgent::without_secret();
    agent.write_config(&format!("enroll_secret = \"{TEST_SECRET}\"\n"));
    let output = agent.run(&["once", "--server", &collector.url]);
    assert!(output.status.success(), "{}", stderr(&output));
    let enrollment = collector.next_enrollment(LIMIT);
    let agent_id = agent.state_file("agent_id").unwrap();
    assert_eq!(enrollment.request.agent_id, agent_id.trim());
    assert_eq!(agent.state_file("token").as_deref(), Some("token-0\n"));
    assert_eq!(mode(&agent.state_dir().join("token")), 0o600);
    let received = collector.next(LIMIT);
    assert_eq!(received.authorization.as_deref(), Some("Bearer token-0"));
    assert_eq!(kinds(&received), vec![(1, "inventory"), (2, "health")]);

    // The next run uses the saved token: no second enrollment.
    let output = agent.run(&["once", "--server", &collector.url]);
    assert!(output.status.success(), "{}", stderr(&output));
    let received = collector.next(LIMIT);
    assert_eq!(received.authorization.as_deref(), Some("Bearer token-0"));
    assert!(collector.enrollments.try_recv().is_err());
}

#[test]
fn once_without_token_or_secret_sends_nothing_and_says_how_to_enroll() {
    let collector = FakeCollector::acking_everything();
    let agent = TestAgent::without_secret();
    let output = agent.run(&["once", "--server", &collector.url]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("no agent token"), "{err}");
    let command = format!("census-agent enroll --server {} --secret", collector.url);
    assert!(err.contains(&command), "{err}");
    assert!(err.contains("enroll_secret"), "{err}");
    assert!(err.contains("acknowledged 0 of 2"), "{err}");
    assert!(collector.try_next().is_none());
    assert!(collector.enrollments.try_recv().is_err());
    // The identity exists, so an enrollment binds the token to the id the reports carry.
    assert!(agent.state_file("agent_id").is_some());
}

#[test]
fn a_refused_token_is_replaced_by_enrolling_again_and_the_reports_are_delivered() {
    let collector = FakeCollector::acking_everything();
    let agent = TestAgent::new();
    agent.write_token("revoked-token");
    let output = agent.run(&["once", "--server", &collector.url]);
    assert!(output.status.success(), "{}", stderr(&output));
    let refused = collector.next(LIMIT);
    assert_eq!(
        refused.authorization.as_deref(),
        Some("Bearer revoked-token")
    );
    collector.next_enrollment(LIMIT);
    let delivered = collector.next(LIMIT);
    assert_eq!(delivered.authorization.as_deref(), Some("Bearer token-0"));
    assert_eq!(seqs(&delivered), vec![1, 2]);
    assert!(collector.try_next().is_none());
    assert_eq!(agent.state_file("token").as_deref(), Some("token-0\n"));
    let err = stderr(&output);
    assert!(err.contains("enrolling again"), "{err}");
}

#[test]
fn a_collector_that_refuses_every_token_gets_one_enrollment_per_attempt() {
    let collector = FakeCollector::start_full(issue_token, |_, _| token_invalid());
    let agent = TestAgent::new();
    agent.write_token("revoked-token");
    let output = agent.run(&["once", "--server", &collector.url]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let tokens: Vec<Option<String>> = (0..2)
        .map(|_| collector.next(LIMIT).authorization)
        .collect();
    assert_eq!(
        tokens,
        vec![
            Some("Bearer revoked-token".to_owned()),
            Some("Bearer token-0".to_owned())
        ]
    );
    collector.next_enrollment(LIMIT);
    assert!(collector.try_next().is_none());
    assert!(collector.enrollments.try_recv().is_err());
    let err = stderr(&output);
    assert!(
        err.contains("refused the token it had just issued"),
        "{err}"
    );
}

#[test]
fn without_a_secret_a_refused_token_stops_sending_and_keeps_the_reports() {
    let collector = FakeCollector::acking_everything();
    let agent = TestAgent::without_secret();
    agent.write_token("revoked-token");
    let output = agent.run(&["once", "--server", &collector.url]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("refused this agent's token"), "{err}");
    assert!(err.contains("census-agent enroll --server"), "{err}");
    assert!(err.contains("seq 1, 2"), "{err}");
    assert_eq!(seqs(&collector.next(LIMIT)), vec![1, 2]);
    assert!(collector.try_next().is_none());
    assert!(collector.enrollments.try_recv().is_err());
    assert_eq!(
        agent.state_file("token").as_deref(),
        Some("revoked-token\n")
    );
}

#[test]
fn run_pauses_on_a_refused_token_and_resumes_when_an_admin_enrolls() {
    let collector = FakeCollector::acking_everything();
    let agent = TestAgent::without_secret();
    fast_agent(&agent);
    agent.write_token("revoked-token");
    let running: RunningAgent = agent.spawn_run(&["--server", &collector.url]);
    let refused = collector.next(LIMIT);
    assert_eq!(
        refused.authorization.as_deref(),
        Some("Bearer revoked-token")
    );
    assert_eq!(kinds(&refused), vec![(1, "inventory"), (2, "health")]);
    // Cycles go by (the first one's and two more), collecting but not sending.
    for _ in 0..3 {
        running.wait_for_log("the situation logged as an error has not changed", LIMIT);
    }
    assert!(collector.try_next().is_none());

    // An admin enrolls while the service runs.
    let output = agent.run(&[
        "enroll",
        "--server",
        &collector.url,
        "--secret",
        TEST_SECRET,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let resumed = collector.next(LIMIT);
    assert_eq!(resumed.authorization.as_deref(), Some("Bearer token-0"));
    // Nothing collected meanwhile was lost.
    let resumed = seqs(&resumed);
    assert!(resumed.len() >= 4, "{resumed:?}");
    assert_eq!(resumed[..2], [1, 2]);

    let log = running.stop();
    let errors = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("refused this agent's token"))
        .count();
    assert_eq!(errors, 1, "logged once, not once per cycle: {log}");
    assert!(
        log.contains("the agent token changed; sending again"),
        "{log}"
    );
}

#[test]
fn a_token_for_another_agent_is_reported_and_the_reports_are_kept() {
    let collector = FakeCollector::start(|_, _| {
        Answer::Error(
            403,
            ErrorBody::new(ErrorCode::AgentForbidden, "the token belongs to agent X"),
        )
    });
    let agent = TestAgent::new();
    let output = agent.run(&["once", "--server", &collector.url]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("ERROR"), "{err}");
    assert!(err.contains("belongs to another agent id"), "{err}");
    assert!(err.contains("seq 1, 2"), "{err}");
    assert_eq!(seqs(&collector.next(LIMIT)), vec![1, 2]);
    assert!(collector.try_next().is_none());
}

#[test]
fn once_takes_a_rate_limit_for_not_acknowledged() {
    let collector = FakeCollector::start(|_, _| Answer::RateLimited(120));
    let agent = TestAgent::new();
    let output = agent.run(&["once", "--server", &collector.url]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("429") && err.contains("120s"), "{err}");
    assert_eq!(seqs(&collector.next(LIMIT)), vec![1, 2]);
    assert!(collector.try_next().is_none());
}

/// The binary's side of a 429; when the next send may happen is the service's unit test
/// (`service::tests`), on a paused clock.
#[test]
fn run_sends_again_after_a_rate_limit() {
    let collector = FakeCollector::start(|batch, index| {
        if index == 0 {
            Answer::RateLimited(1)
        } else {
            Answer::Ack(ack_all(batch, false))
        }
    });
    let agent = TestAgent::new();
    fast_agent(&agent);
    let running = agent.spawn_run(&["--server", &collector.url]);
    assert_eq!(seqs(&collector.next(LIMIT)), vec![1, 2]);
    assert_eq!(seqs(&collector.next(LIMIT))[..2], [1, 2]);
    let log = running.stop();
    assert!(log.contains("slow down"), "{log}");
}

#[test]
fn plain_http_to_another_host_is_refused_unless_allowed() {
    let agent = TestAgent::new();
    // Never contacted: the agent refuses (or fails) before any request.
    let server = "http://census.example.org:8080";
    for command in ["once", "run", "enroll", "print-config"] {
        let output = agent.run(&[command, "--server", server]);
        assert_config_error(&output, &[server, "allow_insecure_http", "https://"]);
    }
    let output = agent
        .command()
        .env("CENSUS_SERVER", server)
        .arg("print-config")
        .output()
        .unwrap();
    assert_config_error(&output, &[server]);

    agent.write_config("allow_insecure_http = true\n");
    let output = agent.run(&["print-config", "--server", server]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("allow_insecure_http = true"));
    // A command that talks to the collector warns first. (A damaged agent id stops this one
    // before it sends anything.)
    std::fs::create_dir_all(agent.state_dir()).unwrap();
    std::fs::write(agent.state_dir().join("agent_id"), "garbage\n").unwrap();
    let output = agent.run(&["once", "--server", server]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("WARN"), "{err}");
    assert!(err.contains("allow_insecure_http is set"), "{err}");
}

#[test]
fn print_config_shows_the_trust_keys_and_never_the_secret() {
    let agent = TestAgent::new();
    let ca = tls_fixture("ca.pem");
    let output = agent.run(&["print-config", "--ca-file", ca.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("enroll_secret = \"<redacted>\""), "{text}");
    assert!(
        text.contains(&format!("ca_file = \"{}\"", ca.display())),
        "{text}"
    );
    assert!(text.contains("allow_insecure_http = false"), "{text}");
}

#[test]
fn the_collector_is_verified_against_ca_file_only() {
    let collector = FakeCollector::acking_everything_over_tls();
    let agent = TestAgent::new();
    let ca = tls_fixture("ca.pem");
    let output = agent.run(&[
        "once",
        "--server",
        &collector.url,
        "--ca-file",
        ca.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    collector.next_enrollment(LIMIT);
    assert_eq!(seqs(&collector.next(LIMIT)), vec![1, 2]);

    // Pinned to another CA, the same collector is refused, naming the file.
    let other = tls_fixture("other-ca.pem");
    let agent = TestAgent::new();
    agent.write_config(&format!("ca_file = \"{}\"\n", other.display()));
    for (command, code) in [("enroll", 1), ("once", 3)] {
        let output = agent.run(&[command, "--server", &collector.url]);
        assert_eq!(output.status.code(), Some(code), "{}", stderr(&output));
        let err = stderr(&output);
        assert!(
            err.contains("the collector's certificate is not trusted"),
            "{err}"
        );
        assert!(err.contains("ca_file"), "{err}");
        assert!(err.contains("other-ca.pem"), "{err}");
    }
    assert_eq!(agent.state_file("token"), None);
    assert!(collector.try_next().is_none());
}

#[test]
fn without_ca_file_a_collector_signed_by_a_private_ca_is_not_trusted() {
    let collector = FakeCollector::acking_everything_over_tls();
    let agent = TestAgent::new();
    let output = agent.run(&["enroll", "--server", &collector.url]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains("the collector's certificate is not trusted"),
        "{err}"
    );
    assert!(err.contains("set ca_file"), "{err}");
    assert!(collector.enrollments.try_recv().is_err());
}

#[test]
fn an_unusable_ca_file_is_a_config_error() {
    let agent = TestAgent::new();
    let missing = agent.dir.path().join("absent.pem");
    let output = agent.run(&[
        "once",
        "--server",
        "https://127.0.0.1:9",
        "--ca-file",
        missing.to_str().unwrap(),
    ]);
    assert_config_error(&output, &["ca_file", "absent.pem", "cannot be read"]);

    let empty = agent.dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let output = agent
        .command()
        .env("CENSUS_CA_FILE", &empty)
        .args(["enroll", "--server", "https://127.0.0.1:9"])
        .output()
        .unwrap();
    let output = super::util::checked(output);
    assert_config_error(&output, &["ca_file", "empty.pem", "holds no certificate"]);
}

#[test]
fn a_redirect_is_not_followed_and_names_where_it_points() {
    // Following the redirect would hand the secret, or the batch and its token, to another
    // host; this one acks and issues tokens to anybody, so a follow would succeed.
    let elsewhere = FakeCollector::start_full(issue_token, |received, _| {
        Answer::Ack(ack_all(&received.batch, false))
    });
    let target = format!("{}/agent/v1/enroll", elsewhere.url);
    let reports = format!("{}/agent/v1/reports", elsewhere.url);
    let moved = {
        let (target, reports) = (target.clone(), reports.clone());
        FakeCollector::start_full(
            move |_, _| EnrollAnswer::Redirect(target.clone()),
            move |_, _| Answer::Redirect(reports.clone()),
        )
    };

    let agent = TestAgent::new();
    let output = agent.run(&["enroll", "--server", &moved.url]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains(&format!("answered a redirect (HTTP 307) to {target}")),
        "{err}"
    );
    assert!(err.contains("set server to the final URL"), "{err}");
    assert_eq!(moved.next_enrollment(LIMIT).request.secret, TEST_SECRET);
    assert!(elsewhere.enrollments.try_recv().is_err());
    assert_eq!(agent.state_file("token"), None);

    let agent = TestAgent::without_secret();
    agent.write_token("token-7");
    let output = agent.run(&["once", "--server", &moved.url]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains(&format!("redirect (HTTP 307) to {reports}")),
        "{err}"
    );
    assert_eq!(seqs(&moved.next(LIMIT)), vec![1, 2]);
    assert!(elsewhere.try_next().is_none());
}
