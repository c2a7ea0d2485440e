//! Maintenance windows (`maintenance`): while one covers a CI, the incident engine opens no
//! incident for it.

use rusqlite::Connection;

use super::StoreError;
use crate::incidents::scope::{CiFacts, Scope};

/// The id of a window covering `ci` at `at_ms` (`starts_at <= at_ms < ends_at`), if any.
pub(crate) fn covering(
    conn: &Connection,
    ci: &CiFacts,
    at_ms: i64,
) -> Result<Option<i64>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, scope FROM maintenance WHERE ends_at > ?1 AND starts_at <= ?1 ORDER BY id",
    )?;
    let mut rows = stmt.query([at_ms])?;
    while let Some(row) = rows.next()? {
        let scope: String = row.get(1)?;
        let scope: Scope = serde_json::from_str(&scope)
            .map_err(|e| StoreError::Corrupt(format!("maintenance scope: {e}")))?;
        if scope.matches(ci) {
            return Ok(Some(row.get(0)?));
        }
    }
    Ok(None)
}
