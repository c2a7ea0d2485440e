//! Trust end to end, with the real binaries: the agent enrolls with a secret, reports over
//! HTTPS to a collector whose certificate a test CA signed, and refuses a collector its CA did
//! not sign; no secret or token ever reaches either program's log.

use census_tests::{TestAgent, TestCa, TestCollector};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The secret part of a credential (`prefix_id_secret`), what must never be logged.
fn secret_part(credential: &str) -> &str {
    credential.rsplit('_').next().unwrap()
}

#[test]
fn an_agent_trusting_the_collectors_ca_reports_over_https_and_another_ca_is_refused() {
    let certs = tempfile::tempdir().unwrap();
    let right = TestCa::generate(certs.path(), "right");
    let wrong = TestCa::generate(certs.path(), "wrong");
    let config = format!(
        "tls_cert = {:?}\ntls_key = {:?}\n",
        right.cert_file, right.key_file
    );
    let collector = TestCollector::start_with_config(tempfile::tempdir().unwrap(), &config);
    assert!(collector.url().starts_with("https://127.0.0.1:"));

    let agent = TestAgent::new();
    let ca_flag = right.ca_file.to_str().unwrap();
    let out = agent.run_against(&collector, &["--ca-file", ca_flag, "once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // It enrolled: its token is in the state dir, readable by its owner only.
    let token_file = agent.state_dir.path().join("token");
    let token = std::fs::read_to_string(&token_file).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "token mode {mode:o}");
    }

    // Another CA, and the system roots (which never signed a test CA): refused, clearly, and
    // nothing is sent.
    for args in [
        vec!["--ca-file", wrong.ca_file.to_str().unwrap(), "once"],
        vec!["once"],
    ] {
        let other = TestAgent::new();
        let out = other.run_against(&collector, &args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let text = stderr(&out);
        assert!(
            text.contains("certificate") && text.contains("not trusted"),
            "{args:?}: {text}"
        );
        assert!(!other.state_dir.path().join("token").exists());
        assert!(
            !text.contains(secret_part(&collector.enroll_secret)),
            "{text}"
        );
    }

    // Neither program logged a secret or a token, at debug level.
    let log = collector.log();
    assert!(log.contains("agent enrolled"), "{log}");
    for credential in [
        &collector.enroll_secret,
        &collector.admin_token,
        token.trim(),
    ] {
        let secret = secret_part(credential);
        assert!(!log.contains(secret), "the collector logged a credential");
        assert!(
            !stderr(&out).contains(secret),
            "the agent logged a credential"
        );
    }
}

#[test]
fn plain_http_off_loopback_is_refused_by_both_programs_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("collector.toml");
    std::fs::write(&config, "").unwrap();
    let out = std::process::Command::new(census_tests::binary("census-collector"))
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("allow_insecure_http"),
        "{}",
        stderr(&out)
    );

    let agent = TestAgent::new();
    let out = agent.run(&["--server", "http://census.invalid:8080", "once"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("allow_insecure_http"),
        "{}",
        stderr(&out)
    );
}
