//! External commands run by facets (`rpm`). Each one is killed, with everything it started,
//! once its timeout has passed: a command stuck on a database lock must not keep the facet,
//! and with it the agent's thread, waiting.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::FacetError;

/// Runs a command and returns its standard output, killing it (and anything it started) once
/// `timeout` has passed.
pub fn run_with_timeout(command: &mut Command, timeout: Duration) -> Result<String, FacetError> {
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
    // Polling keeps this free of extra threads or signals. It starts at 1 ms and doubles up to
    // 20 ms: `rpm -qa` on an empty database ends in about 7 ms, and a flat 20 ms poll made it
    // most of the inventory's wall time. A long command costs a wake-up every 20 ms.
    let mut poll = Duration::from_millis(1);
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
            Ok(None) => {
                std::thread::sleep(poll);
                poll = (poll * 2).min(Duration::from_millis(20));
            }
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

    /// Whether process `pid` has exited, or has a SIGKILL pending and so is on its way out:
    /// `kill(2)` makes the signal pending before it returns, while the death itself happens
    /// whenever the process is next scheduled.
    fn gone_or_killed(pid: &str) -> bool {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            return true;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .unwrap_or_default()
                .to_owned()
        };
        let sigkill = 1u64 << (9 - 1);
        let pending =
            |name: &str| u64::from_str_radix(&field(name), 16).unwrap_or(0) & sigkill != 0;
        let state = field("State:");
        state.starts_with('Z') || state.starts_with('X') || pending("SigPnd:") || pending("ShdPnd:")
    }

    #[test]
    fn hung_command_and_what_it_started_are_killed_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        // `sh` starts `sleep` as its own child, which holds the output pipe: the kill must reach
        // it too, or it would live on for 30 s.
        let script = format!(
            "echo $$ > '{p}'; sleep 30 & echo $! >> '{p}'; wait",
            p = pids.display()
        );
        let err = run_with_timeout(
            Command::new("sh").args(["-c", &script]),
            Duration::from_millis(100),
        )
        .unwrap_err();
        assert!(matches!(err, FacetError::Timeout { .. }), "{err}");
        let pids = std::fs::read_to_string(&pids).unwrap_or_default();
        let pids: Vec<&str> = pids.lines().collect();
        if pids.len() < 2 {
            // Only on a machine so loaded that `sh` did not get to start `sleep` in 100 ms;
            // then nothing was left to kill.
            eprintln!("sh was killed before it started sleep: {pids:?}");
        }
        for pid in pids {
            assert!(gone_or_killed(pid), "process {pid} survived the timeout");
        }
    }
}
