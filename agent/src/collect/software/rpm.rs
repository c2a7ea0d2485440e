//! RPM packages, through the `rpm` command (its database format changed between releases, so
//! the command is the stable interface). It runs only when `rpm` is on `PATH`, and is killed
//! after [`TIMEOUT`]: a stuck rpm database lock must not stall the agent.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use census_common::Software;

use crate::collect::FacetError;

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Name, epoch-version-release, arch and vendor, tab-separated. The epoch and its colon
/// appear only when the package has one, as rpm itself writes versions.
pub const QUERY_FORMAT: &str =
    "%{NAME}\\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\t%{ARCH}\\t%{VENDOR}\\n";

pub fn find_on_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("rpm"))
        .find(|candidate| candidate.is_file())
}

pub fn query(program: &Path, timeout: Duration) -> Result<Vec<Software>, FacetError> {
    let mut command = Command::new(program);
    command.args(["-qa", "--queryformat", QUERY_FORMAT]);
    let stdout = run_with_timeout(&mut command, timeout)?;
    Ok(parse_query_output(&stdout))
}

/// rpm writes `(none)` for a tag that is not set.
pub fn parse_query_output(text: &str) -> Vec<Software> {
    let field = |v: Option<&str>| {
        v.map(str::trim)
            .filter(|v| !v.is_empty() && *v != "(none)")
            .map(str::to_owned)
    };
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split('\t');
            let name = field(parts.next())?;
            Some(Software {
                name,
                version: field(parts.next()),
                arch: field(parts.next()),
                vendor: field(parts.next()),
                source: "rpm".to_owned(),
            })
        })
        .collect()
}

/// Runs a command and returns its standard output, killing it (and anything it started) once
/// `timeout` has passed.
pub fn run_with_timeout(command: &mut Command, timeout: Duration) -> Result<String, FacetError> {
    use std::os::unix::process::CommandExt;

    let program = command.get_program().to_string_lossy().into_owned();
    let failed = |message: String| FacetError::Command {
        program: program.clone(),
        message,
    };
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a kill reaches helpers it spawned, which would otherwise
        // hold the output pipe open.
        .process_group(0)
        .spawn()
        .map_err(|e| failed(format!("could not start: {e}")))?;

    // Read both pipes on threads so a full pipe buffer cannot block the child.
    let mut out = child.stdout.take().expect("stdout is piped");
    let mut err = child.stderr.take().expect("stderr is piped");
    let stdout = std::thread::spawn(move || {
        let mut buf = Vec::new();
        out.read_to_end(&mut buf).map(|_| buf)
    });
    let stderr = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });

    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= timeout => {
                if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
                let _ = child.kill();
                let _ = child.wait();
                return Err(FacetError::Timeout { program, timeout });
            }
            // Polling keeps this free of extra threads or signals; 20 ms is far below what
            // anyone would notice and far above what the CPU would.
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(failed(format!("could not wait for it: {e}"))),
        }
    };
    let stdout = stdout
        .join()
        .expect("reader thread does not panic")
        .map_err(|e| failed(format!("could not read its output: {e}")))?;
    let stderr = stderr.join().expect("reader thread does not panic");
    if !status.success() {
        let stderr = String::from_utf8_lossy(&stderr);
        let first = stderr.lines().next().unwrap_or("").trim();
        return Err(failed(format!("{status}: {first}")));
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::fixture;

    #[test]
    fn parses_rpm_query_output_fixture() {
        let text = std::fs::read_to_string(fixture("rpm/qa-rocky9.txt")).unwrap();
        let packages = parse_query_output(&text);
        assert_eq!(packages.len(), text.lines().count());
        let bash = packages.iter().find(|p| p.name == "bash").unwrap();
        assert_eq!(bash.version.as_deref(), Some("5.1.8-9.el9"));
        assert_eq!(bash.arch.as_deref(), Some("x86_64"));
        assert_eq!(
            bash.vendor.as_deref(),
            Some("Rocky Enterprise Software Foundation")
        );
        let openssl = packages.iter().find(|p| p.name == "openssl").unwrap();
        assert_eq!(openssl.version.as_deref(), Some("1:3.0.7-28.el9_4"));
        // gpg-pubkey entries have no arch and no vendor.
        let key = packages.iter().find(|p| p.name == "gpg-pubkey").unwrap();
        assert_eq!(key.arch, None);
        assert_eq!(key.vendor, None);
    }

    #[test]
    fn command_output_is_returned() {
        let out =
            run_with_timeout(Command::new("echo").arg("hello"), Duration::from_secs(5)).unwrap();
        assert_eq!(out, "hello\n");
    }

    #[test]
    fn failing_command_reports_its_stderr() {
        let err = run_with_timeout(
            Command::new("sh").args(["-c", "echo 'error: rpmdb open failed' >&2; exit 1"]),
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(err.to_string().contains("rpmdb open failed"), "{err}");
    }

    #[test]
    fn hung_command_is_killed_after_the_timeout() {
        let started = Instant::now();
        // `sh` starts `sleep` as a child: the kill must reach it too, or its open pipe would
        // keep this test waiting for the full 60 s.
        let err = run_with_timeout(
            Command::new("sh").args(["-c", "sleep 60; echo never"]),
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(matches!(err, FacetError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
