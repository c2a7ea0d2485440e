//! The store: every byte the collector keeps, behind one interface.
//!
//! SQL lives only under this module. The rest of the collector calls the methods of [`Store`]
//! with and gets back the plain types of [`model`], so a PostgreSQL backend can later be added
//! behind the same methods (turning `Store` into an enum or trait over backends) without touching
//! the API or the CMDB logic.
//!
//! # Promises
//!
//! - **One file**: `<data_dir>/census.db`, SQLite in WAL mode, foreign keys on.
//! - **One writer**: all writes go through the writer thread (`writer.rs`), in `BEGIN IMMEDIATE`
//!   transactions committed with `synchronous=FULL`. A method that writes returns only after its
//!   transaction committed, so an `Ok` means the data survives a crash or power cut; an `Err`
//!   means none of that call's writes exists.
//! - **Reads never block writes**: a small pool of `query_only` connections serves the admin
//!   API through `spawn_blocking`; WAL lets them read while the writer commits.
//! - **Schema**: migrations are append-only (`migrations.rs`) and a database newer than this
//!   build is refused, never written.
//!
//! # Schema
//!
//! - `agent`: one row per agent id, the only row touched by every report: the agent's computer
//!   CI (`ci_id`), the highest stored sequence number (`last_seq`), `last_seen`, the digest of
//!   the last stored inventory and the latest health sample (MessagePack). Keeping the hot data
//!   in this one row keeps each health sample to one random page write.
//! - `ci`: configuration items. Parts carry `parent_id` (their computer) and `part_key` (mount
//!   point, interface name); `hostname`, `os_name` and `os_family` are generated columns over the
//!   JSON `attributes`, indexed for the list filters. Times are unix milliseconds.
//! - `relationship(type, source_id, target_id)`, unique per triple; ending a relationship deletes
//!   its row (history rows arrive with the history issue).
//! - `software` is the catalog (name, version, arch, source unique; unknown version or arch is
//!   `''`), `installation(ci_id, software_id)` says which computer has which package.
//! - Health time series, shaped for "every computer, every minute": `health_raw` is append-only
//!   with no secondary index, so an insert touches only the last page of its b-tree. A background
//!   compaction ([`Store::compact_health`], `compaction.rs`) moves rows of completed hours into
//!   `health_hourly`, one zstd-compressed MessagePack blob per (hour, CI) in a rowid table keyed
//!   `hour << 32 | ci_id`, each written once per pass, and deletes the moved raw rows as an id
//!   prefix. Retention deletes
//!   hourly rows of old hours, a key prefix. A range query reads one hourly row per hour plus,
//!   unless its window ends before the oldest raw sample (`health_meta.raw_min_ts`), a scan of
//!   the whole uncompacted tail of the fleet; see `store::health` for the cost and the planned fix.
//!   The layouts were measured in `tests/HEALTH_LAYOUT.md`.
//! - `health_meta`: one row; `raw_min_ts` is at most the smallest `ts` in `health_raw`;
//!   `compact_upto` and `compact_ci`, while a compaction pass is under way, say which raw rows it
//!   has already put into `health_hourly` (ids up to `compact_upto` of CIs up to `compact_ci`).
//! - `health_pending(agent_id, ts, sample)`: samples of an agent that has no computer CI yet,
//!   at most the newest 1440 per agent; the transaction that creates the agent's computer CI
//!   moves them into `health_raw`. Retention prunes them like the series.
//!
//! # Deduplication
//!
//! An agent's sequence numbers rise by one per report and the agent persists the next number
//! before using it, so they never repeat or go back. A report whose seq is at most the stored
//! `last_seq` was therefore stored before: it is acknowledged again and nothing is written.
//! Reports in a batch are applied in seq order.

pub mod admin;
pub mod auth;
mod checkpoint;
pub(crate) mod cis;
mod compaction;
mod health;
pub(crate) mod history;
pub(crate) mod incident_ops;
pub(crate) mod incidents;
mod ingest;
pub(crate) mod maintenance;
pub(crate) mod migrations;
pub mod model;
mod read;
mod reconcile;
pub mod relations;
pub(crate) mod rules;
mod software;
pub(crate) mod webhooks;
pub(crate) mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use health::CompactionReport;
pub use history::{ChangeKind, Source};
pub use incidents::SilenceReport;
pub use model::*;

use read::ReadPool;
use writer::Writer;

/// How long a connection waits for a lock held by another process (a backup, an admin's
/// `sqlite3` shell) before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The writer's page cache, in KiB (SQLite's default is 2 MiB). A first inventory touches one
/// leaf of the software index per package, about 800 scattered pages; with the default cache
/// each of them is read back through the OS on every inventory. See BENCHMARKS.md.
const WRITER_CACHE_KIB: i64 = 64 * 1024;
// `temp_store = MEMORY` on the writer: every job runs in a savepoint, and SQLite keeps the
// original of each page a savepoint changes in a sub-journal so that the job can be rolled
// back alone. On disk (the default) that is one write per page changed: for a first inventory,
// about 800 pages of the software index copied to a temp file before the WAL gets them. In
// memory it is a copy. Measured in BENCHMARKS.md ("First-time inventories").

/// WAL pages between automatic checkpoints (SQLite's default is 1,000, 4 MB). A checkpoint
/// copies every page the WAL holds back to the database file, once per page however often it
/// changed since the last one: first inventories rewrite the same few hundred leaves of the
/// software index over and over, so checkpointing a tenth as often writes far fewer pages and
/// syncs the main file a tenth as often. The WAL stays under about 40 MB between checkpoints
/// while no read transaction lasts long (see `checkpoint`, which runs them in place of SQLite's
/// automatic checkpoint).
const WAL_CHECKPOINT_PAGES: u32 = 10_000;

/// Each read connection's page cache, in KiB.
pub(crate) const READER_CACHE_KIB: i64 = 16 * 1024;

/// Refreshes the query planner's statistics (`sqlite_stat1`, `sqlite_stat4`) for the tables
/// whose size changed tenfold since they were last gathered. Without statistics the planner
/// guesses: at 100,000 computers it read every computer of a class to answer a name-prefix
/// filter. Cheap when nothing changed; otherwise a full `ANALYZE` of each such table, on the
/// writer: about a second for `history` at 19 million rows (BENCHMARKS.md). The pragma's limit
/// bit (0x10) is left out on purpose: a limited `ANALYZE` drops the table's STAT4 samples, which
/// the CI list's plans need, and measured no faster on `history`.
///
/// The debug bit (0x1) makes the pragma answer the `ANALYZE` statements it would run instead
/// of running them: [`Store::optimize`] runs them but those of [`NOT_ANALYZED`].
const OPTIMIZE_PLAN: &str = "PRAGMA optimize = 0x10003;";

/// Tables [`Store::optimize`] never analyzes. Neither has an index, so statistics would tell
/// the planner only their row count, and their lookups are by key whatever it is; but
/// `ANALYZE` counts the rows by reading the whole table, on the writer. `health_raw` swings by
/// an hour's samples every hour and crosses a tenfold change as a fleet grows: at 16.4 million
/// rows, analysing it read 10 GB and held every ingest commit for about 70 s (measured under
/// 5,000 reports/s; BENCHMARKS.md). `health_hourly` only grows, by 100,000 rows an hour at
/// 100,000 computers.
const NOT_ANALYZED: [&str; 2] = ["health_raw", "health_hourly"];

/// `PRAGMA optimize`, but never of the [`NOT_ANALYZED`] tables.
fn optimize(conn: &Connection) -> Result<(), rusqlite::Error> {
    let planned = conn
        .prepare(OPTIMIZE_PLAN)?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    // Each is `ANALYZE "schema"."table"`.
    for analyze in planned.iter().filter(|sql| {
        !NOT_ANALYZED
            .iter()
            .any(|table| sql.ends_with(&format!(".\"{table}\"")))
    }) {
        conn.execute_batch(analyze)?;
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "database at {path} has schema version {found} but this census-collector knows only up to {known}; upgrade census-collector"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: u32,
        known: u32,
    },
    #[error("schema migration {version} failed: {source}")]
    Migration {
        version: u32,
        #[source]
        source: rusqlite::Error,
    },
    #[error("could not open database at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("no database at {0}")]
    Missing(PathBuf),
    #[error("backup target {0} already exists; choose a new file name")]
    BackupExists(PathBuf),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("the write transaction failed: {0}")]
    Commit(String),
    #[error("the store is shut down")]
    WriterGone,
    #[error("a store job panicked")]
    JobPanicked,
    #[error("stored data could not be decoded: {0}")]
    Corrupt(String),
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("the system random source failed: {0}")]
    Random(String),
    #[error("could not start the writer thread: {0}")]
    Thread(#[from] std::io::Error),
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Read-only connections serving queries.
    pub read_connections: usize,
    /// Most jobs one write transaction takes.
    pub max_batch: usize,
    /// Identity values that never identify a computer (built-in lists plus config).
    pub placeholders: crate::cmdb::Placeholders,
    /// The incident engine's settings (reopen window, SLA targets).
    pub engine: crate::incidents::EngineOptions,
    /// After each step of a health compaction pass, it waits this many times as long as the
    /// step took, so the pass takes at most 1 / (1 + rest) of the writer and of a core, and
    /// ingest keeps the rest (`store::compaction`). 0 runs the pass flat out (benchmarks).
    pub compaction_rest: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            read_connections: 4,
            max_batch: 256,
            placeholders: crate::cmdb::Placeholders::default(),
            engine: crate::incidents::EngineOptions::default(),
            compaction_rest: 3,
        }
    }
}

pub struct Store {
    path: PathBuf,
    writer: Writer,
    reads: ReadPool,
    placeholders: std::sync::Arc<crate::cmdb::Placeholders>,
    engine: std::sync::Arc<crate::incidents::EngineOptions>,
    catalog: reconcile::CatalogCache,
    compaction_rest: u32,
    /// Every read passes through it (`checkpoint`).
    gate: std::sync::Arc<checkpoint::WalGate>,
}

impl Store {
    /// Opens (creating if needed) the database at `path`, migrates it and starts the writer.
    pub fn open(path: &Path, options: &StoreOptions) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;",
        )
        .map_err(open_err)?;
        migrations::migrate(&mut conn, path)?;
        conn.execute_batch(&format!(
            "PRAGMA cache_size = -{WRITER_CACHE_KIB}; PRAGMA temp_store = MEMORY;"
        ))
        .and_then(|()| optimize(&conn))
        .map_err(open_err)?;
        // Room for every statement the ingest, enrollment and engine jobs use: an evicted statement
        // is parsed and planned again on its next use, which showed in the writer's profile.
        conn.set_prepared_statement_cache_capacity(256);
        let gate = std::sync::Arc::new(checkpoint::WalGate::new());
        let reads = ReadPool::open(
            path,
            options.read_connections.max(1),
            BUSY_TIMEOUT,
            gate.clone(),
        )?;
        let writer = Writer::start(conn, options.max_batch, WAL_CHECKPOINT_PAGES, gate.clone())?;
        Ok(Store {
            path: path.to_owned(),
            writer,
            reads,
            placeholders: std::sync::Arc::new(options.placeholders.clone()),
            engine: std::sync::Arc::new(options.engine.clone()),
            catalog: reconcile::CatalogCache::default(),
            compaction_rest: options.compaction_rest,
            gate,
        })
    }

    /// Refreshes the planner's statistics where the data has grown or shrunk (see
    /// [`OPTIMIZE_PLAN`]), but never of the [`NOT_ANALYZED`] tables; the compaction task calls
    /// it every pass.
    pub async fn optimize(&self) -> Result<(), StoreError> {
        self.writer.run(|conn| Ok(optimize(conn)?)).await
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the database answers: the writer is running and a read connection runs a query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        if !self.writer.is_alive() {
            return Err(StoreError::WriterGone);
        }
        self.reads
            .run(|conn| {
                conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
                    r.get::<_, i64>(0)
                })?;
                Ok(())
            })
            .await
    }

    /// Runs the jobs already queued, commits, closes the writer and the read pool. Later calls
    /// fail with [`StoreError::WriterGone`].
    pub async fn close(&self) {
        self.writer.shutdown().await;
        self.reads.close();
    }

    /// Transactions the writer has committed since open (a group of jobs counts once).
    pub fn commits(&self) -> u64 {
        self.writer
            .stats()
            .commits
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Copies the database at `db` into a new file `dest` with `VACUUM INTO`: a consistent snapshot
/// taken while a collector may be running and writing. Refuses to overwrite `dest`.
pub fn backup(db: &Path, dest: &Path) -> Result<(), StoreError> {
    if dest.exists() {
        return Err(StoreError::BackupExists(dest.to_owned()));
    }
    if !db.exists() {
        return Err(StoreError::Missing(db.to_owned()));
    }
    let open_err = |source| StoreError::Open {
        path: db.to_owned(),
        source,
    };
    // No CREATE flag: a mistyped data dir must not leave an empty database behind.
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    let target = dest
        .to_str()
        .ok_or_else(|| StoreError::Invalid(format!("{} is not valid UTF-8", dest.display())))?;
    conn.execute("VACUUM INTO ?1", [target])?;
    Ok(())
}

/// Unix milliseconds, the unit of every time column.
/// Whether CI `id` exists; read routes answer 404 rather than an empty list when it does not.
pub(crate) fn ci_exists(conn: &Connection, id: i64) -> Result<bool, StoreError> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .prepare_cached("SELECT 1 FROM ci WHERE id = ?1")?
        .query_row([id], |_| Ok(()))
        .optional()?
        .is_some())
}

pub(crate) fn to_ms(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub(crate) fn from_ms(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A store in a fresh temp dir; the dir lives as long as the returned guard.
    pub(crate) fn temp_store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("census.db"), &StoreOptions::default()).unwrap();
        (store, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::temp_store;
    use super::*;

    #[tokio::test]
    async fn open_sets_wal_and_ping_answers_until_close() {
        let (store, _dir) = temp_store();
        let mode: String = Connection::open(store.path())
            .unwrap()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        store.ping().await.unwrap();
        store.close().await;
        assert!(store.ping().await.is_err());
    }

    #[tokio::test]
    async fn open_refuses_a_newer_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("census.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 999)
            .unwrap();
        let err = Store::open(&path, &StoreOptions::default()).err().unwrap();
        assert!(err.to_string().contains("schema version 999"), "{err}");
    }

    #[tokio::test]
    async fn backup_copies_and_refuses_to_overwrite() {
        let (store, dir) = temp_store();
        store
            .ingest(ingest::tests::inventory_batch(
                "0b0c6a34-8d54-4a4a-9d51-8f0e1c3b7a11",
                1,
                &["bash"],
            ))
            .await
            .unwrap();
        let dest = dir.path().join("copy.db");
        backup(store.path(), &dest).unwrap();
        let n: i64 = Connection::open(&dest)
            .unwrap()
            .query_row("SELECT count(*) FROM software", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        let err = backup(store.path(), &dest).unwrap_err();
        assert!(matches!(err, StoreError::BackupExists(_)));
        let err = backup(&dir.path().join("nope.db"), &dir.path().join("x.db")).unwrap_err();
        assert!(matches!(err, StoreError::Missing(_)));
        store.close().await;
    }
}
