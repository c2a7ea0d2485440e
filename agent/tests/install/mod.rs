//! `install` and `uninstall` through the real binary, on this real machine: the refusals only.
//! The full installation runs in the library's tests on a temporary root (`src/install.rs`),
//! since systemd cannot run here.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use super::util::{stderr, stdout};

const SETPRIV_NOBODY: [&str; 3] = ["--reuid=65534", "--regid=65534", "--clear-groups"];

/// The agent binary with none of the caller's CENSUS_* variables. No `--config` or
/// `--state-dir`: `install` refuses them, and the refusals tested here must come first.
fn agent(program: &Path) -> Command {
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CENSUS_") {
            command.env_remove(name);
        }
    }
    command
}

/// The effective user id, read from /proc so that the tests need no extra dependency.
fn euid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

fn assert_refused(output: &Output, expected: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains(expected), "{err}");
    assert!(stdout(output).is_empty(), "{}", stdout(output));
}

#[test]
fn install_and_uninstall_refuse_on_this_machine_where_systemd_is_not_running() {
    if Path::new("/run/systemd/system").is_dir() {
        // Running them would install the service on the developer's machine (as root) or
        // test the root check, which the next test does.
        eprintln!("skipped: systemd runs on this machine");
        return;
    }
    let unit = Path::new("/etc/systemd/system/census-agent.service");
    let had_unit = unit.exists();
    for command in ["install", "uninstall"] {
        let output = agent(Path::new(env!("CARGO_BIN_EXE_census-agent")))
            .arg(command)
            .output()
            .unwrap();
        if euid() == 0 {
            assert_refused(&output, "systemd is not running on this machine");
            assert_refused(&output, "/run/systemd/system");
        } else {
            assert_refused(&output, "must run as root");
        }
    }
    assert_eq!(unit.exists(), had_unit);
}

#[test]
fn install_and_uninstall_refuse_to_run_as_another_user_than_root() {
    if euid() != 0 {
        // Not root: the real binary run as this user is the test.
        for command in ["install", "uninstall"] {
            let output = agent(Path::new(env!("CARGO_BIN_EXE_census-agent")))
                .arg(command)
                .output()
                .unwrap();
            assert_refused(&output, &format!("run `sudo census-agent {command}`"));
        }
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped: setpriv (util-linux) is not installed");
        return;
    }
    // A copy nobody can execute: the build directory may be private to root.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = dir.path().join("census-agent");
    std::fs::copy(env!("CARGO_BIN_EXE_census-agent"), &binary).unwrap();
    for command in ["install", "uninstall --purge"] {
        let output = agent(Path::new("setpriv"))
            .args(SETPRIV_NOBODY)
            .arg(&binary)
            .args(command.split(' '))
            .output()
            .unwrap();
        let first = command.split(' ').next().unwrap();
        assert_refused(&output, &format!("run `sudo census-agent {first}`"));
    }
}

#[test]
fn install_refuses_flags_the_service_would_not_see() {
    // Refused before anything is looked at or changed, on any machine and as any user.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "").unwrap();
    let agent = || agent(Path::new(env!("CARGO_BIN_EXE_census-agent")));
    let output = agent()
        .arg("--config")
        .arg(&config)
        .arg("install")
        .output()
        .unwrap();
    assert_refused(&output, "--config (or CENSUS_AGENT_CONFIG) does not apply");
    assert_refused(&output, "/etc/census/agent.toml");
    let output = agent()
        .args(["install", "--state-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_refused(&output, "--state-dir does not apply");
    assert_refused(&output, "/var/lib/census");
}
