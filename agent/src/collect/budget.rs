//! Time budgets: blocking work (a facet, one look at a mount point) runs on a helper thread,
//! and the caller stops waiting for it once its budget has passed.
//!
//! A thread cannot be killed, so work that overruns is abandoned, not stopped: its thread goes
//! on until the call it is stuck in returns (a dead NFS server may keep it there for ever), and
//! its result is thrown away. [`HungThreads`] remembers each abandoned thread under its key
//! until it finishes; meanwhile the same work is not started again, so a machine with a dead
//! mount holds one stuck thread per dead thing, not one more per collection.

use std::collections::HashMap;
use std::fmt;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use time::OffsetDateTime;

/// How long each kind of work may take before it is abandoned.
///
/// A collection reads small files from `/proc`, `/sys` and `/etc`, which takes milliseconds, so
/// each budget is hundreds of times what a healthy machine needs; being generous costs nothing
/// there, and on a sick machine each budget is paid once (what is still stuck afterwards is
/// skipped at once). A skipped facet costs more than a slow one, so the budgets lean long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// The software facet: package databases can be large (`rpm -qa` takes seconds on a big
    /// server) and include commands with their own timeout (`rpm`: 10 s); this budget is the
    /// backstop above them, for a read that hangs outside any command.
    pub software: Duration,
    /// Every other facet (host, hardware, os, cpu, memory, network interfaces).
    pub facet: Duration,
    /// One mount point's `stat` and `statvfs`, for inventory and health alike. A dead network
    /// filesystem blocks here; a live one answers in milliseconds even over a slow link.
    pub mount: Duration,
}

impl Budgets {
    pub const DEFAULT: Budgets = Budgets {
        software: Duration::from_secs(30),
        facet: Duration::from_secs(5),
        mount: Duration::from_secs(5),
    };
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets::DEFAULT
    }
}

/// What became of work run under a budget.
#[derive(Debug)]
pub enum Outcome<T> {
    Finished(T),
    /// It did not finish within the budget and was abandoned now.
    Overran,
    /// The same work, abandoned earlier, is still running: it was not started again.
    StillHung {
        since: OffsetDateTime,
    },
    /// The work panicked, or no thread could be started for it.
    Failed(String),
}

/// Helper threads that overran their budget and have not finished yet, by key.
#[derive(Debug, Default)]
pub struct HungThreads {
    threads: HashMap<String, Hung>,
}

#[derive(Debug)]
struct Hung {
    since: OffsetDateTime,
    thread: JoinHandle<()>,
}

impl HungThreads {
    /// Runs `work` on a helper thread and waits at most `budget` for it. Work with the same
    /// `key` that was abandoned earlier and is still running is not started again.
    pub fn run<T: Send + 'static>(
        &mut self,
        key: &str,
        budget: Duration,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Outcome<T> {
        if let Some(hung) = self.threads.get(key) {
            if !hung.thread.is_finished() {
                return Outcome::StillHung { since: hung.since };
            }
            // It came back after all; its result went nowhere.
            self.threads.remove(key);
        }
        let since = OffsetDateTime::now_utc();
        // Room for the one result, so the helper never blocks on a caller that stopped
        // waiting.
        let (sender, receiver) = mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new()
            .name(format!("census {key}"))
            .spawn(move || {
                let _ = sender.send(work());
            });
        let thread = match spawned {
            Ok(thread) => thread,
            Err(e) => return Outcome::Failed(format!("could not start a thread: {e}")),
        };
        match receiver.recv_timeout(budget) {
            Ok(value) => Outcome::Finished(value),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.threads.insert(key.to_owned(), Hung { since, thread });
                Outcome::Overran
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Outcome::Failed("it panicked".to_owned()),
        }
    }

    /// Whether work under `key` was abandoned and is still running.
    pub fn is_hung(&self, key: &str) -> bool {
        self.threads
            .get(key)
            .is_some_and(|hung| !hung.thread.is_finished())
    }

    /// How many abandoned threads are still running.
    pub fn count(&self) -> usize {
        self.threads
            .values()
            .filter(|hung| !hung.thread.is_finished())
            .count()
    }
}

/// A budget as people write it: `30s`, or `100ms` below a second.
pub struct Shown(pub Duration);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= Duration::from_secs(1) && self.0.subsec_nanos() == 0 {
            write!(f, "{}s", self.0.as_secs())
        } else {
            write!(f, "{}ms", self.0.as_millis())
        }
    }
}

/// A start time in warnings: UTC, to the second.
pub fn since(time: OffsetDateTime) -> String {
    time.replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| time.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Waits for an abandoned thread to come back; the test has already released it, so this
    /// waits for an event, not for time to pass.
    fn wait_until_finished(hung: &HungThreads, key: &str) {
        while hung.is_hung(key) {
            std::thread::yield_now();
        }
    }

    #[test]
    fn work_that_finishes_returns_its_value() {
        let mut hung = HungThreads::default();
        match hung.run("quick", Duration::from_secs(60), || 42) {
            Outcome::Finished(value) => assert_eq!(value, 42),
            other => panic!("{other:?}"),
        }
        assert_eq!(hung.count(), 0);
    }

    #[test]
    fn blocked_work_is_abandoned_and_not_started_again_while_it_hangs() {
        let mut hung = HungThreads::default();
        let starts = Arc::new(AtomicUsize::new(0));
        let (release, blocked) = mpsc::channel::<()>();
        let blocked = std::sync::Mutex::new(Some(blocked));

        // Only the first run can block, so only it gets a short budget; the others get all the
        // time a loaded machine could need.
        let start = |hung: &mut HungThreads, budget: Duration| {
            let starts = Arc::clone(&starts);
            // Only the first run gets the receiver; a second start would have nothing to block
            // on and would finish, which the assertions below would see.
            let blocked = blocked.lock().unwrap().take();
            hung.run("stuck", budget, move || {
                starts.fetch_add(1, Ordering::SeqCst);
                if let Some(blocked) = blocked {
                    let _ = blocked.recv();
                }
                "late"
            })
        };

        let long = Duration::from_secs(60);
        assert!(matches!(
            start(&mut hung, Duration::from_millis(50)),
            Outcome::Overran
        ));
        assert_eq!(hung.count(), 1);
        for _ in 0..3 {
            assert!(matches!(start(&mut hung, long), Outcome::StillHung { .. }));
        }
        assert_eq!(starts.load(Ordering::SeqCst), 1, "no thread piled up");
        assert_eq!(hung.count(), 1);

        // Once the stuck work returns, the next run starts it afresh.
        release.send(()).unwrap();
        wait_until_finished(&hung, "stuck");
        assert!(matches!(start(&mut hung, long), Outcome::Finished("late")));
        assert_eq!(starts.load(Ordering::SeqCst), 2);
        assert_eq!(hung.count(), 0);
    }

    #[test]
    fn other_keys_run_while_one_hangs() {
        let mut hung = HungThreads::default();
        let (_release, blocked) = mpsc::channel::<()>();
        let outcome = hung.run("stuck", Duration::from_millis(10), move || {
            let _ = blocked.recv();
        });
        assert!(matches!(outcome, Outcome::Overran));
        assert!(matches!(
            hung.run("other", Duration::from_secs(60), || 1),
            Outcome::Finished(1)
        ));
    }

    #[test]
    fn panicking_work_is_a_failure() {
        let mut hung = HungThreads::default();
        let outcome: Outcome<()> = hung.run("boom", Duration::from_secs(60), || panic!("boom"));
        assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
        assert!(!hung.is_hung("boom"));
    }

    #[test]
    fn budgets_are_shown_in_seconds_or_milliseconds() {
        assert_eq!(Shown(Duration::from_secs(30)).to_string(), "30s");
        assert_eq!(Shown(Duration::from_millis(100)).to_string(), "100ms");
        assert_eq!(Shown(Duration::from_millis(1500)).to_string(), "1500ms");
        let t = time::macros::datetime!(2025-03-01 12:30:05.25 UTC);
        assert_eq!(since(t), "2025-03-01T12:30:05Z");
    }
}
