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
//!
//! **Starting the WAL over.** Copying everything is not enough: the WAL starts over only at a
//! write transaction that began with every frame copied and finds no reader using the WAL.
//! Under load the collector's short reads overlap (each report's token is checked by a read,
//! and a compaction pass reads piece after piece), so that moment never came: measured at
//! 5,000 reports/s, two read slots were held 95 % of the time, every frame was eventually
//! copied, and still the WAL grew by 32 MB/s without end. So every read of the collector's (the
//! read pool's and the pass's) goes through a [`WalGate`]. Once the WAL holds [`RESTART_SPAN`]
//! times `every` pages, the writer's hook asks the gate's [`Keeper`] thread to close it: reads
//! under way finish and new ones wait; the keeper has the writer copy what is left between two
//! of its transactions (the bulk it copied just before, on a connection of its own, beside the
//! writer and the readers); it opens the gate, and the writer's next transaction starts the WAL over
//! (reads that start after the copy need nothing from the WAL and do not hold it back). Reads
//! wait for as long as the longest read under way plus the copy. A reader the gate does not
//! cover (a `backup` from another process) can still hold the WAL: the keeper gives up after
//! [`GATE_PATIENCE`], logs it, and is asked again only once the WAL has grown by as much again.

use std::os::raw::c_int;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use rusqlite::wal::CheckpointMode;

use super::writer::WriterStats;

/// The longest wait between two tries that copy nothing, in multiples of `every`.
pub(super) const MAX_BACKOFF: u32 = 16;

/// The WAL size, in multiples of `every`, at which the keeper closes the read gate so the WAL
/// can start over: 640 MB with the collector's 40 MB `every`. Each closing holds reads back for
/// tens of milliseconds (BENCHMARKS.md, "The WAL under load"); at 4 it came every 4.5 s under
/// 5,000 reports/s and showed in the p99 of every 10-second window.
pub(super) const RESTART_SPAN: u32 = 16;

/// Most copies the keeper makes before closing the gate.
const BULK_ROUNDS: usize = 3;

/// How long the keeper holds the gate closed waiting for the writer's checkpoint.
pub(super) const GATE_PATIENCE: Duration = Duration::from_secs(1);

/// Every read of the collector passes through it; the keeper closes it for a moment so that
/// the WAL can start over (see the module doc).
pub(crate) struct WalGate {
    gate: RwLock<()>,
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    /// The writer asks the keeper to close the gate.
    wanted: bool,
    /// The writer is gone; the keeper ends.
    ended: bool,
    /// Closings so far.
    closings: u64,
}

impl WalGate {
    pub(crate) fn new() -> WalGate {
        WalGate {
            gate: RwLock::new(()),
            state: Mutex::new(GateState::default()),
            changed: Condvar::new(),
        }
    }

    /// Held for the length of one read transaction. Never take it twice on one thread: a
    /// closing waiting between the two would wait for the first forever.
    pub(crate) fn enter(&self) -> RwLockReadGuard<'_, ()> {
        // A reader that panicked poisons nothing worth refusing reads for.
        self.gate.read().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, change: impl FnOnce(&mut GateState)) {
        change(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.notify_all();
    }

    /// Waits until the keeper has closed and opened the gate `n` times in all.
    #[cfg(test)]
    fn wait_closings(&self, n: u64) {
        let state = self.state.lock().unwrap();
        drop(self.changed.wait_while(state, |s| s.closings < n).unwrap());
    }

    /// Ends the keeper's loop.
    pub(super) fn end(&self) {
        self.set(|s| s.ended = true);
    }

    /// Waits until the writer asks for a closing; `false` once the gate is ended.
    fn wait_for_request(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut state = self
            .changed
            .wait_while(state, |s| !s.wanted && !s.ended)
            .unwrap_or_else(|e| e.into_inner());
        state.wanted = false;
        !state.ended
    }
}

/// The keeper's side: closes the gate when the writer asks, has the WAL copied back and opens
/// it again. `checkpoint` asks the writer to try one between two of its transactions and
/// answers `(frames in the WAL, frames copied)`, or `None` when no answer came in time.
pub(super) struct Keeper<C> {
    pub gate: Arc<WalGate>,
    pub stats: Arc<WriterStats>,
    /// A connection of its own, for the bulk of the copy.
    pub conn: Connection,
    /// Frames left after a bulk round that are worth no further round.
    pub small_tail: c_int,
    pub checkpoint: C,
}

impl<C> Keeper<C>
where
    C: FnMut() -> Option<(c_int, c_int)>,
{
    pub(super) fn run(mut self) {
        while self.gate.wait_for_request() {
            // The bulk, with the gate open, beside the writer and the readers: everything no
            // reader holds back, in up to BULK_ROUNDS rounds while a round leaves much behind
            // (what was committed during it), so the writer's part under the closed gate is
            // short. A try of the writer's at the same time makes a round busy: as good.
            for _ in 0..BULK_ROUNDS {
                match self
                    .conn
                    .wal_checkpoint_v2(Some("main"), CheckpointMode::PASSIVE)
                {
                    Ok((log, copied)) if log.saturating_sub(copied) > self.small_tail => {}
                    _ => break,
                }
            }
            let started = Instant::now();
            // Reads under way finish; new ones wait here.
            let closed = self.gate.gate.write().unwrap_or_else(|e| e.into_inner());
            let wait_ms = millis(started.elapsed());
            // The rest, between two of the writer's transactions, so that its next one finds
            // everything copied and starts the WAL over.
            let answer = (self.checkpoint)();
            drop(closed);
            self.gate.set(|s| s.closings += 1);
            let held_ms = millis(started.elapsed());
            self.stats.gate_closings.fetch_add(1, Ordering::Relaxed);
            self.stats
                .gate_held_ms
                .fetch_add(held_ms, Ordering::Relaxed);
            match answer {
                Some((log, copied)) if copied >= log => {
                    tracing::debug!(
                        held_ms,
                        wait_ms,
                        frames = log,
                        "reads held back so the WAL could start over"
                    );
                }
                _ => {
                    self.stats.gate_gave_up.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        held_ms,
                        wait_ms,
                        "reads were held back but the WAL still could not be copied back: a \
                         reader outside the collector (a backup, a sqlite3 shell) holds it; the \
                         WAL grows until it ends"
                    );
                }
            }
        }
    }
}

fn millis(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

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
/// (`every` pages), and asks `gate`'s keeper to close it when the WAL does not start over. The hook never fails a commit: the commit has happened when it runs, so an
/// error there would tell the writer's jobs that committed writes were lost; it logs instead.
pub(super) fn install(
    conn: &mut Connection,
    every: u32,
    stats: Arc<WriterStats>,
    gate: Arc<WalGate>,
) -> rusqlite::Result<()> {
    // The WAL file keeps the size it grew to unless limited: each time it starts over, it is
    // cut back to one threshold's worth, so a WAL that a long reader made grow gives the disk
    // space back.
    let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    conn.pragma_update(
        None,
        "journal_size_limit",
        i64::from(every.max(1)).saturating_mul(page),
    )?;
    let mut policy = CheckpointPolicy::new(every);
    let span = every.max(1).saturating_mul(RESTART_SPAN);
    // Ask the keeper once the WAL holds this many frames.
    let mut ask_at = span;
    let mut warned = false;
    conn.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, frames: c_int| {
        let frames = u32::try_from(frames).unwrap_or(0);
        let before = stats.wal_frames.swap(u64::from(frames), Ordering::Relaxed);
        if u64::from(frames) < before {
            // The WAL started over: whatever held it back is gone.
            policy = CheckpointPolicy::new(every);
            ask_at = span;
        }
        if frames >= ask_at {
            ask_at = frames.saturating_add(span);
            gate.set(|s| s.wanted = true);
        }
        if !policy.due(frames) {
            return Ok(());
        }
        stats.checkpoint_tries.fetch_add(1, Ordering::Relaxed);
        let (log, copied) = match wal.checkpoint_v2(CheckpointMode::PASSIVE) {
            Ok((log, copied)) => (
                u32::try_from(log).unwrap_or(0),
                u32::try_from(copied).unwrap_or(0),
            ),
            // The keeper is copying at the same time.
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
                return Ok(());
            }
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

    fn new_table(path: &std::path::Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
             CREATE TABLE t (id INTEGER PRIMARY KEY, pad BLOB);",
        )
        .unwrap();
        conn
    }

    /// A writer on a new file at `name` in `dir`, checkpointing every 20 pages, and its gate.
    fn small_wal_writer(
        dir: &tempfile::TempDir,
        name: &str,
    ) -> (std::path::PathBuf, Arc<WalGate>, Writer) {
        let path = dir.path().join(name);
        let gate = Arc::new(WalGate::new());
        let writer = Writer::start(new_table(&path), 8, 20, gate.clone()).unwrap();
        (path, gate, writer)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_present_at_every_commit_still_lets_the_wal_start_over() {
        let dir = tempfile::tempdir().unwrap();
        let (path, gate, writer) = small_wal_writer(&dir, "g.db");
        let stats = writer.stats();
        // A reader, through the gate, inside a read transaction during every commit: one
        // transaction before the keeper's closing, the next after it.
        let (said, heard) = std::sync::mpsc::channel();
        let (tell, told) = std::sync::mpsc::channel::<()>();
        let reader_gate = gate.clone();
        let reader_path = path.clone();
        let reader = std::thread::spawn(move || {
            let conn = Connection::open(reader_path).unwrap();
            for _ in 0..2 {
                let entered = reader_gate.enter();
                conn.execute_batch("BEGIN; SELECT count(*) FROM t;")
                    .unwrap();
                said.send("in").unwrap();
                if told.recv().is_err() {
                    return;
                }
                conn.execute_batch("COMMIT").unwrap();
                drop(entered);
                said.send("out").unwrap();
                if told.recv().is_err() {
                    return;
                }
            }
        });
        assert_eq!(heard.recv().unwrap(), "in");
        // Past RESTART_SPAN times 20 frames the writer asks the keeper, which waits for the
        // reader to leave the gate; commits go on meanwhile.
        for _ in 0..20 * RESTART_SPAN + 20 {
            commit_a_page(&writer).await;
        }
        assert!(stats.wal_frames.load(Ordering::Relaxed) >= u64::from(20 * RESTART_SPAN));
        assert_eq!(stats.checkpoints.load(Ordering::Relaxed), 0);
        assert_eq!(stats.gate_closings.load(Ordering::Relaxed), 0);
        tell.send(()).unwrap();
        assert_eq!(heard.recv().unwrap(), "out");
        // The keeper closes the gate and has everything copied back.
        gate.wait_closings(1);
        assert_eq!(stats.gate_gave_up.load(Ordering::Relaxed), 0);
        assert!(stats.checkpoints.load(Ordering::Relaxed) >= 1);
        // The reader's next transaction needs nothing from the WAL: the next commit, during
        // it, starts the WAL over. Without the closing, that transaction would have held
        // back the frames of every commit so far.
        tell.send(()).unwrap();
        assert_eq!(heard.recv().unwrap(), "in");
        commit_a_page(&writer).await;
        let frames = stats.wal_frames.load(Ordering::Relaxed);
        assert!(frames < 20, "{frames} frames");
        // And the file is cut back to 20 pages.
        let wal = std::fs::metadata(dir.path().join("g.db-wal"))
            .unwrap()
            .len();
        assert!(wal <= 20 * 4096, "{wal} bytes");
        drop(tell);
        reader.join().unwrap();
        writer.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_outside_the_gate_makes_the_keeper_give_up_and_reads_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let (path, gate, writer) = small_wal_writer(&dir, "o.db");
        let stats = writer.stats();
        let outside = Connection::open(&path).unwrap();
        outside
            .execute_batch("BEGIN; SELECT count(*) FROM t;")
            .unwrap();
        for _ in 0..20 * RESTART_SPAN + 20 {
            commit_a_page(&writer).await;
        }
        gate.wait_closings(1);
        assert!(stats.gate_gave_up.load(Ordering::Relaxed) >= 1);
        assert_eq!(stats.checkpoints.load(Ordering::Relaxed), 0);
        // The gate is open again: a read through it goes ahead.
        drop(gate.enter());
        outside.execute_batch("COMMIT").unwrap();
        writer.shutdown().await;
    }

    #[tokio::test]
    async fn a_reader_that_holds_the_wal_costs_few_tries_and_the_wal_restarts_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let writer = Writer::start(new_table(&path), 8, 20, Arc::new(WalGate::new())).unwrap();
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
