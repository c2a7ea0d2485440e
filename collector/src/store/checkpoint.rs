//! When the writer checkpoints the WAL: SQLite's automatic checkpoint, except that it backs off
//! while a long read transaction keeps it from copying anything.
//!
//! A checkpoint copies the WAL's frames back into the database file, up to the oldest frame a
//! reader may still need; the WAL starts over from its beginning once every frame is copied and
//! no reader uses it. SQLite's automatic checkpoint (`wal_autocheckpoint`) tries after every
//! commit once the WAL holds its threshold of pages, and every try first sorts the index of all
//! the frames not copied yet. While one read transaction that began before them stays open (a
//! backup, a scan of a whole table), no try can copy anything, so each commit pays for sorting a
//! WAL that only grows. Measured under 5,000 reports/s with such a reader open: the writer spent
//! 55 to 61 % of its time in those tries, and its CPU rose from about 30 to 72 % of a core (see
//! BENCHMARKS.md, "The WAL under load").
//!
//! The writer's hook ([`install`]) keeps SQLite's behaviour while tries make progress: a try
//! after each commit once the WAL holds `every` pages. After a try that copied nothing new, the
//! next one waits until the WAL has grown by `every` more pages, then by twice that, up to
//! [`MAX_BACKOFF`] times `every`: the tries cost a bounded share of the writer whatever the
//! reader does, and the first after it ends copies everything. A stall that long is logged.
//!
//! Tries are `PASSIVE`: they never wait for a reader or hold up the writer beyond the copy.

use std::os::raw::c_int;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rusqlite::Connection;
use rusqlite::wal::CheckpointMode;

use super::writer::WriterStats;

/// The longest wait between two tries that copy nothing, in multiples of `every`.
pub(super) const MAX_BACKOFF: u32 = 16;

/// Decides, after each commit, whether the writer tries a checkpoint.
#[derive(Debug)]
pub(super) struct CheckpointPolicy {
    every: u32,
    /// Try once the WAL holds this many frames.
    next: u32,
    /// The current wait after a try that copied nothing, in frames; 0 while tries progress.
    backoff: u32,
    /// What the last try left: frames in the WAL and frames copied.
    last: Option<(u32, u32)>,
}

/// What to do after a try.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Every frame is copied: the WAL starts over at the next write no reader holds back.
    Complete,
    /// Some frames were copied; a reader still needs the rest.
    Progress,
    /// Nothing new was copied; the next try waits this many more frames.
    Stalled { wait: u32 },
}

impl CheckpointPolicy {
    pub(super) fn new(every: u32) -> CheckpointPolicy {
        let every = every.max(1);
        CheckpointPolicy {
            every,
            next: every,
            backoff: 0,
            last: None,
        }
    }

    /// Whether to try after a commit that left `frames` frames in the WAL.
    pub(super) fn due(&self, frames: u32) -> bool {
        frames >= self.next
    }

    /// Records a try that left `log` frames in the WAL, `copied` of them in the database file.
    pub(super) fn record(&mut self, log: u32, copied: u32) -> Outcome {
        let previous = self.last.replace((log, copied));
        if copied >= log {
            self.backoff = 0;
            self.next = self.every;
            self.last = None;
            return Outcome::Complete;
        }
        // The WAL only restarts after a complete copy, so with the same WAL the count of frames
        // copied never falls; a smaller WAL means it restarted since.
        let progressed = match previous {
            Some((last_log, last_copied)) => log < last_log || copied > last_copied,
            None => copied > 0,
        };
        if progressed {
            self.backoff = 0;
            self.next = log.saturating_add(1);
            return Outcome::Progress;
        }
        self.backoff = if self.backoff == 0 {
            self.every
        } else {
            self.backoff
                .saturating_mul(2)
                .min(self.every.saturating_mul(MAX_BACKOFF))
        };
        self.next = log.saturating_add(self.backoff);
        Outcome::Stalled { wait: self.backoff }
    }

    /// Whether the waits have reached their longest: a reader has held the WAL a long time.
    pub(super) fn at_max_backoff(&self) -> bool {
        self.backoff >= self.every.saturating_mul(MAX_BACKOFF)
    }
}

/// Replaces SQLite's automatic checkpoint on the writer's connection with [`CheckpointPolicy`]
/// (`every` pages). The hook never fails a commit: the commit has happened when it runs, so an
/// error there would tell the writer's jobs that committed writes were lost; it logs instead.
pub(super) fn install(
    conn: &mut Connection,
    every: u32,
    stats: Arc<WriterStats>,
) -> rusqlite::Result<()> {
    let mut policy = CheckpointPolicy::new(every);
    let mut warned = false;
    conn.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, frames: c_int| {
        let frames = u32::try_from(frames).unwrap_or(0);
        stats.wal_frames.store(u64::from(frames), Ordering::Relaxed);
        if !policy.due(frames) {
            return Ok(());
        }
        stats.checkpoint_tries.fetch_add(1, Ordering::Relaxed);
        let (log, copied) = match wal.checkpoint_v2(CheckpointMode::PASSIVE) {
            Ok((log, copied)) => (
                u32::try_from(log).unwrap_or(0),
                u32::try_from(copied).unwrap_or(0),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "WAL checkpoint failed; the next commit tries again");
                return Ok(());
            }
        };
        match policy.record(log, copied) {
            Outcome::Complete => {
                stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                if warned {
                    tracing::info!(frames = log, "the WAL is checkpointed again");
                    warned = false;
                }
            }
            Outcome::Progress => {}
            Outcome::Stalled { .. } => {
                if policy.at_max_backoff() && !warned {
                    warned = true;
                    tracing::warn!(
                        wal_frames = log,
                        copied,
                        "a long read transaction keeps the WAL from being checkpointed, so it \
                         grows; it shrinks back after that reader ends (a backup, or a \
                         query over a whole table)"
                    );
                }
            }
        }
        Ok(())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::writer::Writer;

    /// One commit through `writer` that adds about a page to the WAL.
    async fn commit_a_page(writer: &Writer) {
        writer
            .run(|conn| {
                conn.execute("INSERT INTO t (pad) VALUES (randomblob(3000))", [])?;
                Ok(())
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_reader_that_holds_the_wal_costs_few_tries_and_the_wal_restarts_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
             CREATE TABLE t (id INTEGER PRIMARY KEY, pad BLOB);",
        )
        .unwrap();
        let writer = Writer::start(conn, 8, 20).unwrap();
        let stats = writer.stats();
        // A read transaction left open, as a backup or a long scan would.
        let reader = Connection::open(&path).unwrap();
        reader
            .execute_batch("BEGIN; SELECT count(*) FROM t;")
            .unwrap();
        for _ in 0..300 {
            commit_a_page(&writer).await;
        }
        let tries = stats.checkpoint_tries.load(Ordering::Relaxed);
        assert!(stats.wal_frames.load(Ordering::Relaxed) >= 300);
        assert_eq!(stats.checkpoints.load(Ordering::Relaxed), 0);
        // SQLite's automatic checkpoint would have tried after each of the last 280 commits.
        assert!((1..=8).contains(&tries), "{tries} tries");

        reader.execute_batch("COMMIT").unwrap();
        let mut commits = 0;
        while stats.checkpoints.load(Ordering::Relaxed) == 0
            || stats.wal_frames.load(Ordering::Relaxed) >= 20
        {
            assert!(
                commits < 20 * MAX_BACKOFF,
                "no restart after {commits} commits"
            );
            commit_a_page(&writer).await;
            commits += 1;
        }
        writer.shutdown().await;
    }

    #[test]
    fn tries_follow_every_commit_while_they_progress() {
        let mut policy = CheckpointPolicy::new(100);
        assert!(!policy.due(99));
        assert!(policy.due(100));
        // A short reader held back the last frames: try again at the next commit.
        assert_eq!(policy.record(100, 90), Outcome::Progress);
        assert!(policy.due(101));
        assert_eq!(policy.record(101, 101), Outcome::Complete);
        // The WAL restarted: the next try waits for `every` frames again.
        assert!(!policy.due(60));
        assert!(policy.due(100));
    }

    #[test]
    fn tries_that_copy_nothing_back_off_doubling_up_to_the_cap() {
        let mut policy = CheckpointPolicy::new(100);
        let mut frames = 100;
        let mut waits = Vec::new();
        for _ in 0..8 {
            assert!(policy.due(frames));
            let Outcome::Stalled { wait } = policy.record(frames, 0) else {
                panic!("a try that copied nothing must stall");
            };
            assert!(!policy.due(frames + wait - 1));
            waits.push(wait);
            frames += wait;
        }
        assert_eq!(waits, [100, 200, 400, 800, 1600, 1600, 1600, 1600]);
        assert!(policy.at_max_backoff());
        // The reader ended: the next try copies everything and the policy starts over.
        assert_eq!(policy.record(frames, frames), Outcome::Complete);
        assert!(!policy.at_max_backoff());
        assert!(!policy.due(99));
    }

    #[test]
    fn a_stalled_try_that_then_copies_more_is_progress() {
        let mut policy = CheckpointPolicy::new(100);
        assert_eq!(policy.record(100, 40), Outcome::Progress);
        assert_eq!(policy.record(101, 40), Outcome::Stalled { wait: 100 });
        assert_eq!(policy.record(201, 150), Outcome::Progress);
        assert!(policy.due(202));
    }
}
