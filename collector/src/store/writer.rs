//! The one thread that writes to the database.
//!
//! **Promises:**
//! - Every write goes through this thread, so SQLite never sees two writers and never answers
//!   `SQLITE_BUSY` to the collector itself.
//! - Group commit: the thread takes every job queued (up to a cap), opens one `BEGIN IMMEDIATE`
//!   transaction, runs each job inside its own `SAVEPOINT` and commits once. Many requests share
//!   one fsync.
//! - Isolation: a job that fails (or panics) is rolled back to its savepoint alone and gets its
//!   own error; the other jobs of the transaction commit. Catching the panic needs panics that
//!   unwind, in release builds too: the workspace's profiles do not set `panic = "abort"`, and
//!   this crate refuses to compile if a build does (the `compile_error!` below), since with
//!   abort one panicking job would end the whole collector. The read pool (`read.rs`) relies
//!   on the same.
//! - A job's answer is sent only after `COMMIT` returned. With `synchronous=FULL` on this
//!   connection, an `Ok` answer means the job's writes survive a crash or power loss. If the
//!   commit fails, every job of the transaction gets the commit error and none of their writes
//!   exists.
//! - Shutdown drains: jobs queued before [`Writer::shutdown`] still run and are answered; jobs
//!   sent after it get [`StoreError::WriterGone`].

use std::os::raw::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::Connection;
use rusqlite::wal::CheckpointMode;
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::checkpoint::{GATE_PATIENCE, Keeper, WalGate};

#[cfg(not(panic = "unwind"))]
compile_error!(
    "census-collector needs panic = \"unwind\": the writer and the read pool catch a panicking \
     job so it fails alone; do not set panic = \"abort\" in a profile"
);

/// How many jobs wait in the queue before senders have to wait (backpressure).
const QUEUE_DEPTH: usize = 1024;

/// Work sent to the writer thread, type-erased so one queue carries jobs of any result type.
trait Task: Send {
    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Finish>;
    fn fail(self: Box<Self>, error: StoreError);
}

/// A job that ran and now waits for the transaction's outcome.
trait Finish: Send {
    fn succeeded(&self) -> bool;
    /// `commit` is the error of the transaction, if it did not commit.
    fn finish(self: Box<Self>, commit: Option<StoreError>);
}

struct Job<F, T> {
    work: F,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

struct Ran<T> {
    result: Result<T, StoreError>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<F, T> Task for Job<F, T>
where
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Finish> {
        let Job { work, reply } = *self;
        // A panicking job must not take the writer (and every later request) down with it.
        let result = catch_unwind(AssertUnwindSafe(|| work(conn))).unwrap_or_else(|_| {
            tracing::error!("a store job panicked; its writes were rolled back");
            Err(StoreError::JobPanicked)
        });
        Box::new(Ran { result, reply })
    }

    fn fail(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send(Err(error));
    }
}

impl<T: Send + 'static> Finish for Ran<T> {
    fn succeeded(&self) -> bool {
        self.result.is_ok()
    }

    fn finish(self: Box<Self>, commit: Option<StoreError>) {
        let result = match (self.result, commit) {
            (Err(e), _) => Err(e),
            (Ok(_), Some(e)) => Err(e),
            (Ok(v), None) => Ok(v),
        };
        // The requester may have gone away (client disconnected); the data is committed anyway.
        let _ = self.reply.send(result);
    }
}

enum Message {
    Task(Box<dyn Task>),
    /// A checkpoint between two transactions, for the WAL keeper (`store::checkpoint`); the
    /// answer is `(frames in the WAL, frames copied)`, none if it failed.
    Checkpoint(std::sync::mpsc::SyncSender<(c_int, c_int)>),
    Shutdown,
}

/// Handle to the writer thread.
pub(crate) struct Writer {
    queue: mpsc::Sender<Message>,
    thread: Mutex<Option<JoinHandle<()>>>,
    keeper: Mutex<Option<JoinHandle<()>>>,
    gate: Arc<WalGate>,
    stats: Arc<WriterStats>,
}

#[derive(Default)]
pub(crate) struct WriterStats {
    /// Transactions committed (one per group of jobs).
    pub commits: AtomicU64,
    /// Jobs answered.
    pub jobs: AtomicU64,
    /// Frames in the WAL after the last commit (`store::checkpoint`).
    pub wal_frames: AtomicU64,
    /// Checkpoints tried after a commit, and those that copied the whole WAL back.
    pub checkpoint_tries: AtomicU64,
    pub checkpoints: AtomicU64,
    /// Times the WAL keeper closed the read gate, those that did not get the WAL copied back,
    /// and how long the gate stayed closed in all.
    pub gate_closings: AtomicU64,
    pub gate_gave_up: AtomicU64,
    pub gate_held_ms: AtomicU64,
}

impl Writer {
    /// Starts the thread; it owns `conn` from now on. `max_batch` caps the jobs per transaction,
    /// which bounds how long one transaction holds the write lock. The WAL is checkpointed once
    /// it holds `wal_pages` pages, and the WAL keeper thread closes `gate` when the WAL does
    /// not start over (`store::checkpoint`).
    pub(crate) fn start(
        mut conn: Connection,
        max_batch: usize,
        wal_pages: u32,
        gate: Arc<WalGate>,
    ) -> Result<Writer, StoreError> {
        let (queue, rx) = mpsc::channel(QUEUE_DEPTH);
        let stats = Arc::new(WriterStats::default());
        let keeper_conn = Connection::open(conn.path().unwrap_or_default())?;
        super::checkpoint::install(&mut conn, wal_pages, stats.clone(), gate.clone())?;
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("census-writer".into())
            .spawn(move || writer_main(conn, rx, max_batch.max(1), &thread_stats))
            .map_err(StoreError::Thread)?;
        let keeper_queue = queue.clone();
        let keeper = Keeper {
            gate: gate.clone(),
            stats: stats.clone(),
            conn: keeper_conn,
            // An eighth of a checkpoint's worth: 5 MB with the collector's 40 MB.
            small_tail: c_int::try_from(wal_pages / 8).unwrap_or(c_int::MAX),
            checkpoint: move || {
                let (reply, answer) = std::sync::mpsc::sync_channel(1);
                keeper_queue
                    .blocking_send(Message::Checkpoint(reply))
                    .ok()?;
                answer.recv_timeout(GATE_PATIENCE).ok()
            },
        };
        let keeper = std::thread::Builder::new()
            .name("census-wal".into())
            .spawn(move || keeper.run())
            .map_err(StoreError::Thread)?;
        Ok(Writer {
            queue,
            thread: Mutex::new(Some(thread)),
            keeper: Mutex::new(Some(keeper)),
            gate,
            stats,
        })
    }

    /// Runs `work` on the writer thread inside the next group transaction and answers once that
    /// transaction committed.
    pub(crate) async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Message::Task(Box::new(Job { work, reply })))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    pub(crate) fn is_alive(&self) -> bool {
        !self.queue.is_closed()
    }

    pub(crate) fn stats(&self) -> &WriterStats {
        &self.stats
    }

    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Asks the thread to finish what is queued, commit and close the connection, and waits for
    /// it. Calling it twice is harmless.
    pub(crate) async fn shutdown(&self) {
        let _ = self.queue.send(Message::Shutdown).await;
        let thread = self.thread.lock().expect("writer handle lock").take();
        if let Some(thread) = thread {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("the writer thread ended abnormally");
            }
        }
        self.gate.end();
        let keeper = self.keeper.lock().expect("keeper handle lock").take();
        if let Some(keeper) = keeper {
            let joined = tokio::task::spawn_blocking(move || keeper.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("the WAL keeper thread ended abnormally");
            }
        }
    }
}

fn writer_main(
    conn: Connection,
    mut rx: mpsc::Receiver<Message>,
    max_batch: usize,
    stats: &WriterStats,
) {
    let mut stopping = false;
    while !stopping {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        let mut tasks = Vec::new();
        let mut checkpoint = None;
        match first {
            Message::Task(task) => tasks.push(task),
            Message::Checkpoint(reply) => checkpoint = Some(reply),
            Message::Shutdown => stopping = true,
        }
        while !stopping && checkpoint.is_none() && tasks.len() < max_batch {
            match rx.try_recv() {
                Ok(Message::Task(task)) => tasks.push(task),
                Ok(Message::Checkpoint(reply)) => checkpoint = Some(reply),
                Ok(Message::Shutdown) => stopping = true,
                Err(_) => break,
            }
        }
        if !tasks.is_empty() {
            run_group(&conn, tasks, stats);
        }
        if let Some(reply) = checkpoint {
            match conn.wal_checkpoint_v2(Some("main"), CheckpointMode::PASSIVE) {
                Ok((log, copied)) => {
                    if copied >= log {
                        stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                    }
                    // The keeper may have stopped waiting.
                    let _ = reply.send((log, copied));
                }
                Err(e) => tracing::warn!(error = %e, "WAL checkpoint for the keeper failed"),
            }
        }
    }
    // Refuse new work, then run what was queued before the shutdown request or raced with it.
    rx.close();
    loop {
        let mut tasks = Vec::new();
        while tasks.len() < max_batch {
            match rx.try_recv() {
                Ok(Message::Task(task)) => tasks.push(task),
                // The checkpoint on close below does it; the keeper stops waiting.
                Ok(Message::Checkpoint(_) | Message::Shutdown) => {}
                Err(_) => break,
            }
        }
        if tasks.is_empty() {
            break;
        }
        run_group(&conn, tasks, stats);
    }
    // Fold the WAL back into the main file so a stopped collector leaves one self-contained file.
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::warn!(error = %e, "could not checkpoint the WAL on close");
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "could not close the database cleanly");
    }
}

/// One transaction for a group of jobs; see the module doc.
fn run_group(conn: &Connection, tasks: Vec<Box<dyn Task>>, stats: &WriterStats) {
    let count = tasks.len() as u64;
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        tracing::error!(error = %e, "could not begin a write transaction");
        let message = e.to_string();
        // Counted before the answers go out, so whoever gets one sees its job counted.
        stats.jobs.fetch_add(count, Ordering::Relaxed);
        for task in tasks {
            task.fail(StoreError::Commit(message.clone()));
        }
        return;
    }
    let mut ran = Vec::with_capacity(tasks.len());
    // Set when the transaction itself can no longer be trusted (a savepoint command failed).
    let mut broken: Option<String> = None;
    for task in tasks {
        if let Some(message) = &broken {
            task.fail(StoreError::Commit(message.clone()));
            continue;
        }
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            broken = Some(e.to_string());
            task.fail(StoreError::Commit(e.to_string()));
            continue;
        }
        let done = task.run(conn);
        let closed = if done.succeeded() {
            conn.execute_batch("RELEASE job")
        } else {
            conn.execute_batch("ROLLBACK TO job; RELEASE job")
        };
        if let Err(e) = closed {
            broken = Some(e.to_string());
        }
        ran.push(done);
    }
    let failure = match broken {
        Some(message) => Some(message),
        None => conn.execute_batch("COMMIT").err().map(|e| e.to_string()),
    };
    if let Some(message) = &failure {
        tracing::error!(error = %message, jobs = count, "write transaction failed; rolled back");
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
    } else {
        stats.commits.fetch_add(1, Ordering::Relaxed);
    }
    stats.jobs.fetch_add(count, Ordering::Relaxed);
    for done in ran {
        done.finish(failure.clone().map(StoreError::Commit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn open(dir: &tempfile::TempDir) -> (Connection, std::path::PathBuf) {
        let path = dir.path().join("w.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE t (v INTEGER NOT NULL UNIQUE);",
        )
        .unwrap();
        (conn, path)
    }

    fn values(path: &std::path::Path) -> Vec<i64> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn.prepare("SELECT v FROM t ORDER BY v").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn insert(v: i64) -> impl FnOnce(&Connection) -> Result<i64, StoreError> + Send + 'static {
        move |c| {
            c.execute("INSERT INTO t (v) VALUES (?1)", [v])?;
            Ok(v)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_jobs_share_one_commit_and_fail_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, path) = open(&dir);
        let writer = Arc::new(Writer::start(conn, 64, 1000, Arc::new(WalGate::new())).unwrap());

        // Hold the writer inside a first job until the others are queued behind it.
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let (started, has_started) = oneshot::channel::<()>();
        let first = {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer
                    .run(move |c| {
                        started.send(()).unwrap();
                        gate.recv().unwrap();
                        c.execute("INSERT INTO t (v) VALUES (0)", [])?;
                        Ok(())
                    })
                    .await
            })
        };
        has_started.await.unwrap();
        let mut handles = Vec::new();
        for v in 1..=10i64 {
            let writer = writer.clone();
            handles.push(tokio::spawn(async move {
                if v == 5 {
                    // Inserts then fails: its insert must be rolled back alone.
                    writer
                        .run(move |c| {
                            c.execute("INSERT INTO t (v) VALUES (500)", [])?;
                            // Fails whatever order the jobs were queued in (a duplicate of
                            // another job's value would fail only if that job ran first).
                            c.execute("INSERT INTO no_such_table (v) VALUES (1)", [])?;
                            Ok(5)
                        })
                        .await
                } else {
                    writer.run(insert(v)).await
                }
            }));
        }
        while writer.queued() < 10 {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        let mut results = Vec::new();
        for h in handles {
            results.push(h.await.unwrap());
        }
        assert!(
            matches!(results[4], Err(StoreError::Sqlite(_))),
            "{:?}",
            results[4]
        );
        for (i, r) in results.iter().enumerate() {
            if i != 4 {
                assert_eq!(r.as_ref().unwrap(), &(i as i64 + 1));
            }
        }
        // One transaction for the gate job, one for the ten queued behind it.
        assert_eq!(writer.stats().commits.load(Ordering::Relaxed), 2);
        assert_eq!(values(&path), vec![0, 1, 2, 3, 4, 6, 7, 8, 9, 10]);
        writer.shutdown().await;
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone_and_the_writer_survives() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, path) = open(&dir);
        let writer = Writer::start(conn, 64, 1000, Arc::new(WalGate::new())).unwrap();
        let err = writer
            .run(|c| -> Result<(), StoreError> {
                c.execute("INSERT INTO t (v) VALUES (99)", [])?;
                panic!("boom")
            })
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::JobPanicked));
        assert_eq!(writer.run(insert(1)).await.unwrap(), 1);
        assert_eq!(values(&path), vec![1]);
        writer.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_answers_queued_jobs_then_refuses_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, path) = open(&dir);
        let writer = Arc::new(Writer::start(conn, 2, 1000, Arc::new(WalGate::new())).unwrap());
        let mut handles = Vec::new();
        for v in 1..=5 {
            let writer = writer.clone();
            handles.push(tokio::spawn(async move { writer.run(insert(v)).await }));
        }
        while writer.stats().jobs.load(Ordering::Relaxed) + (writer.queued() as u64) < 5 {
            tokio::task::yield_now().await;
        }
        writer.shutdown().await;
        for h in handles {
            h.await.unwrap().unwrap();
        }
        assert!(!writer.is_alive());
        assert!(matches!(
            writer.run(insert(6)).await,
            Err(StoreError::WriterGone)
        ));
        assert_eq!(values(&path), vec![1, 2, 3, 4, 5]);
    }
}
