//! A small pool of read-only connections, used from async code through `spawn_blocking`.
//!
//! Every connection of the pool has the collector's SQL functions (see [`register_functions`]),
//! so read queries can filter by them.

use std::cmp::Ordering;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::functions::FunctionFlags;
use tokio::sync::Semaphore;

use super::StoreError;
use super::checkpoint::WalGate;

pub(crate) struct ReadPool {
    conns: Arc<Mutex<Vec<Connection>>>,
    permits: Arc<Semaphore>,
    gate: Arc<WalGate>,
}

impl ReadPool {
    /// Every read passes through `gate` (`store::checkpoint`).
    pub(crate) fn open(
        path: &Path,
        size: usize,
        busy: Duration,
        gate: Arc<WalGate>,
    ) -> Result<ReadPool, StoreError> {
        let mut conns = Vec::with_capacity(size);
        for _ in 0..size {
            let open_err = |source| StoreError::Open {
                path: path.to_owned(),
                source,
            };
            let conn = Connection::open(path).map_err(open_err)?;
            conn.busy_timeout(busy).map_err(open_err)?;
            // query_only makes any write through this connection an error, so a bug in a query
            // function cannot bypass the writer thread.
            conn.execute_batch(&format!(
                "PRAGMA query_only = ON; PRAGMA cache_size = -{};",
                super::READER_CACHE_KIB
            ))
            .map_err(open_err)?;
            register_functions(&conn).map_err(open_err)?;
            // `rarray(?)`: a bound list of values as a table (software.rs).
            rusqlite::vtab::array::load_module(&conn).map_err(open_err)?;
            conn.set_prepared_statement_cache_capacity(64);
            conns.push(conn);
        }
        Ok(ReadPool {
            conns: Arc::new(Mutex::new(conns)),
            permits: Arc::new(Semaphore::new(size)),
            gate,
        })
    }

    /// Runs `read` on a pooled connection off the async executor.
    pub(crate) async fn run<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::WriterGone)?;
        let conns = self.conns.clone();
        let gate = self.gate.clone();
        tokio::task::spawn_blocking(move || {
            // A permit guarantees a free connection unless the pool was closed meanwhile.
            let Some(conn) = conns.lock().expect("read pool lock").pop() else {
                return Err(StoreError::WriterGone);
            };
            let result = {
                let _entered = gate.enter();
                catch_unwind(AssertUnwindSafe(|| read(&conn)))
                    .unwrap_or(Err(StoreError::JobPanicked))
            };
            conns.lock().expect("read pool lock").push(conn);
            drop(permit);
            result
        })
        .await
        .map_err(|_| StoreError::JobPanicked)?
    }

    /// Refuses new reads and closes the idle connections.
    pub(crate) fn close(&self) {
        self.permits.close();
        self.conns.lock().expect("read pool lock").clear();
    }
}

/// Registers the collector's SQL functions on `conn`:
///
/// `census_version_cmp(source, a, b)`: `-1`, `0` or `1` as versions `a` and `b` of a package
/// from `source` (`dpkg`, `rpm`, `apk`, ...) order by that package manager's rules
/// ([`crate::cmdb::version::compare`]); `NULL` when an argument is `NULL`. Deterministic, so
/// SQLite may evaluate it once per distinct arguments (and an index could use it).
pub(crate) fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        "census_version_cmp",
        3,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let source = ctx.get::<Option<String>>(0)?;
            let a = ctx.get::<Option<String>>(1)?;
            let b = ctx.get::<Option<String>>(2)?;
            Ok(match (source, a, b) {
                (Some(source), Some(a), Some(b)) => {
                    Some(match crate::cmdb::version::compare(&source, &a, &b) {
                        Ordering::Less => -1,
                        Ordering::Equal => 0,
                        Ordering::Greater => 1,
                    })
                }
                _ => None::<i64>,
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(conn: &Connection, source: Option<&str>, a: &str, b: &str) -> Option<i64> {
        conn.query_row(
            "SELECT census_version_cmp(?1, ?2, ?3)",
            rusqlite::params![source, a, b],
            |r| r.get(0),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn read_connections_compare_versions_as_each_package_manager() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("census.db");
        Connection::open(&path).unwrap();
        let pool =
            ReadPool::open(&path, 2, Duration::from_secs(1), Arc::new(WalGate::new())).unwrap();
        let answers = pool
            .run(|conn| {
                Ok(vec![
                    cmp(conn, Some("dpkg"), "1:1.1.1w-0+deb11u1", "3.0.13"),
                    cmp(conn, Some("dpkg"), "3.0.13-1~deb12u1", "3.0.13-1"),
                    cmp(conn, Some("dpkg"), "3.0.13-1~deb12u1", "3.0.13"),
                    cmp(conn, Some("rpm"), "1.0", "1.0"),
                    cmp(conn, Some("apk"), "1.0_rc1", "1.0"),
                    cmp(conn, None, "1", "2"),
                ])
            })
            .await
            .unwrap();
        assert_eq!(
            answers,
            vec![Some(1), Some(-1), Some(1), Some(0), Some(-1), None]
        );
        // Text only: a number where a version belongs is an error, not a guess.
        let err = pool
            .run(|conn| {
                conn.query_row("SELECT census_version_cmp('dpkg', 1, '2')", [], |r| {
                    r.get::<_, i64>(0)
                })?;
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Sqlite(_)), "{err}");
        pool.close();
    }

    #[test]
    fn the_function_is_deterministic() {
        // SQLite takes only deterministic functions in an index expression.
        let conn = Connection::open_in_memory().unwrap();
        register_functions(&conn).unwrap();
        conn.execute_batch(
            "CREATE TABLE t (source TEXT, version TEXT);
             CREATE INDEX t_newer ON t (census_version_cmp(source, version, '1.0'));",
        )
        .unwrap();
    }
}
