//! A small pool of read-only connections, used from async code through `spawn_blocking`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::Semaphore;

use super::StoreError;

pub(crate) struct ReadPool {
    conns: Arc<Mutex<Vec<Connection>>>,
    permits: Arc<Semaphore>,
}

impl ReadPool {
    pub(crate) fn open(path: &Path, size: usize, busy: Duration) -> Result<ReadPool, StoreError> {
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
            conn.execute_batch("PRAGMA query_only = ON;")
                .map_err(open_err)?;
            conn.set_prepared_statement_cache_capacity(32);
            conns.push(conn);
        }
        Ok(ReadPool {
            conns: Arc::new(Mutex::new(conns)),
            permits: Arc::new(Semaphore::new(size)),
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
        tokio::task::spawn_blocking(move || {
            // A permit guarantees a free connection unless the pool was closed meanwhile.
            let Some(conn) = conns.lock().expect("read pool lock").pop() else {
                return Err(StoreError::WriterGone);
            };
            let result = catch_unwind(AssertUnwindSafe(|| read(&conn)))
                .unwrap_or(Err(StoreError::JobPanicked));
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
