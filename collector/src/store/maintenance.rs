//! Maintenance windows (`maintenance`): while one covers a CI, the incident engine opens no
//! incident for it ([`covering`]). Operators make, change and end them through the API.
//!
//! A window covers the CIs its scope matches (an empty scope: every CI) from `starts_at`
//! (inclusive) to `ends_at` (exclusive). **Promises:** a window is written only if it ends after
//! it starts, is at most [`MAX_WINDOW_MS`] long, is not over when it is made, and every CI its
//! scope names exists; a refusal writes nothing. The past of a window is not rewritten: an end
//! moved to the past ends it now.

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use super::history::Source;
use super::model::{
    MaintenanceFilter, MaintenancePatch, MaintenanceWindow, NewMaintenance, Page, Refusable,
    Refusal,
};
use super::rules::check_scope_cis;
use super::{Store, StoreError, from_ms, to_ms};
use crate::incidents::scope::{CiFacts, Scope};

/// Longest window: 366 days.
pub const MAX_WINDOW_MS: i64 = 366 * 86_400_000;
/// Longest reason, in characters.
pub const MAX_REASON_CHARS: usize = 1000;

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

const COLUMNS: &str = "id, scope, starts_at, ends_at, reason, created_by, created_at";

fn read_window(row: &Row<'_>) -> rusqlite::Result<MaintenanceWindow> {
    let scope: String = row.get(1)?;
    Ok(MaintenanceWindow {
        id: row.get(0)?,
        scope: serde_json::from_str(&scope).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                1,
                rusqlite::types::Type::Text,
                Box::new(StoreError::Corrupt(format!("maintenance scope: {e}"))),
            )
        })?,
        starts_at: from_ms(row.get(2)?),
        ends_at: from_ms(row.get(3)?),
        reason: row.get(4)?,
        created_by: row.get(5)?,
        created_at: from_ms(row.get(6)?),
    })
}

/// What the scope of a window looks at in CI `id`; `None` if there is no such CI.
pub(crate) fn ci_facts(conn: &Connection, id: i64) -> Result<Option<CiFacts>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT id, class, name, criticality FROM ci WHERE id = ?1")?
        .query_row([id], |r| {
            Ok(CiFacts {
                id: r.get(0)?,
                class: r.get(1)?,
                name: r.get(2)?,
                criticality: r.get(3)?,
            })
        })
        .optional()?)
}

/// Checks a window's reason, scope and times (unix ms) at `now`; the refusal's message starts
/// with the field it is about.
pub fn validate(
    scope: &Scope,
    starts_at: i64,
    ends_at: i64,
    reason: &str,
    now: i64,
) -> Result<(), Refusal> {
    let invalid = |message: String| Err(Refusal::InvalidField(message));
    let chars = reason.chars().count();
    if chars == 0 || chars > MAX_REASON_CHARS || reason.trim().is_empty() {
        return invalid(format!(
            "reason: 1 to {MAX_REASON_CHARS} characters, not blank: say why, for whoever \
             wonders where the incidents went"
        ));
    }
    scope.validate()?;
    if ends_at <= starts_at {
        return invalid("ends_at: must be after starts_at".into());
    }
    if ends_at <= now {
        return invalid(
            "ends_at: must be in the future: a window wholly in the past holds nothing back".into(),
        );
    }
    if ends_at - starts_at > MAX_WINDOW_MS {
        return invalid("ends_at: a window is at most 366 days long".into());
    }
    Ok(())
}

impl Store {
    /// Windows matching `filter` (`active` judged at `now`), by ascending id.
    pub async fn list_maintenance(
        &self,
        filter: MaintenanceFilter,
        now: time::OffsetDateTime,
    ) -> Result<Page<MaintenanceWindow, i64>, StoreError> {
        self.reads
            .run(move |conn| list(conn, &filter, to_ms(now)))
            .await
    }

    pub async fn get_maintenance(&self, id: i64) -> Result<Option<MaintenanceWindow>, StoreError> {
        self.reads.run(move |conn| load(conn, id)).await
    }

    /// Makes a window (`source` is the caller); answers it as stored.
    pub async fn create_maintenance(
        &self,
        new: NewMaintenance,
        source: Source,
        now: time::OffsetDateTime,
    ) -> Result<Refusable<MaintenanceWindow>, StoreError> {
        self.writer
            .run(move |conn| create(conn, &new, &source, to_ms(now)))
            .await
    }

    /// Changes a window's end, reason or scope; answers it as it now is.
    pub async fn update_maintenance(
        &self,
        id: i64,
        patch: MaintenancePatch,
        now: time::OffsetDateTime,
    ) -> Result<Refusable<MaintenanceWindow>, StoreError> {
        self.writer
            .run(move |conn| update(conn, id, &patch, to_ms(now)))
            .await
    }

    pub async fn delete_maintenance(&self, id: i64) -> Result<Refusable<()>, StoreError> {
        self.writer
            .run(move |conn| {
                let deleted = conn
                    .prepare_cached("DELETE FROM maintenance WHERE id = ?1")?
                    .execute([id])?;
                Ok(if deleted == 0 {
                    Err(no_such_window(id))
                } else {
                    Ok(())
                })
            })
            .await
    }
}

fn no_such_window(id: i64) -> Refusal {
    Refusal::NotFound(format!("there is no maintenance window with id {id}"))
}

fn load(conn: &Connection, id: i64) -> Result<Option<MaintenanceWindow>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM maintenance WHERE id = ?1"))?
        .query_row([id], read_window)
        .optional()?)
}

fn list(
    conn: &Connection,
    filter: &MaintenanceFilter,
    now: i64,
) -> Result<Page<MaintenanceWindow, i64>, StoreError> {
    let ci = match filter.ci_id {
        Some(id) => match ci_facts(conn, id)? {
            Some(facts) => Some(facts),
            None => {
                return Ok(Page {
                    items: Vec::new(),
                    next: None,
                });
            }
        },
        None => None,
    };
    // Assembled from fixed fragments only; every value is a bound parameter.
    let mut sql = format!("SELECT {COLUMNS} FROM maintenance WHERE id > ?1");
    let mut values = vec![SqlValue::Integer(filter.after.unwrap_or(0))];
    if let Some(active) = filter.active {
        values.push(SqlValue::Integer(now));
        let n = values.len();
        let holds = format!("starts_at <= ?{n} AND ends_at > ?{n}");
        if active {
            sql.push_str(&format!(" AND {holds}"));
        } else {
            sql.push_str(&format!(" AND NOT ({holds})"));
        }
    }
    // A scope is JSON matched here, not in SQL: with a CI filter, rows are read until the page
    // is full.
    if ci.is_none() {
        values.push(SqlValue::Integer(i64::from(filter.limit) + 1));
        sql.push_str(&format!(" ORDER BY id LIMIT ?{}", values.len()));
    } else {
        sql.push_str(" ORDER BY id");
    }
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params_from_iter(values))?;
    let mut items = Vec::new();
    while let Some(row) = rows.next()? {
        let window = read_window(row)?;
        if ci.as_ref().is_none_or(|ci| window.scope.matches(ci)) {
            items.push(window);
            if items.len() > filter.limit as usize {
                break;
            }
        }
    }
    let next = if items.len() > filter.limit as usize {
        items.truncate(filter.limit as usize);
        items.last().map(|w| w.id)
    } else {
        None
    };
    Ok(Page { items, next })
}

fn create(
    conn: &Connection,
    new: &NewMaintenance,
    source: &Source,
    now: i64,
) -> Result<Refusable<MaintenanceWindow>, StoreError> {
    let (starts_at, ends_at) = (to_ms(new.starts_at), to_ms(new.ends_at));
    if let Err(refusal) = validate(&new.scope, starts_at, ends_at, &new.reason, now) {
        return Ok(Err(refusal));
    }
    if let Err(refusal) = check_scope_cis(conn, &new.scope)? {
        return Ok(Err(refusal));
    }
    let id: i64 = conn
        .prepare_cached(
            "INSERT INTO maintenance (scope, starts_at, ends_at, reason, created_by, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
        )?
        .query_row(
            params![
                scope_json(&new.scope)?,
                starts_at,
                ends_at,
                new.reason,
                source.as_text(),
                now
            ],
            |r| r.get(0),
        )?;
    let made = load(conn, id)?
        .ok_or_else(|| StoreError::Corrupt(format!("maintenance window {id} vanished")))?;
    Ok(Ok(made))
}

fn scope_json(scope: &Scope) -> Result<String, StoreError> {
    serde_json::to_string(scope).map_err(|e| StoreError::Invalid(format!("scope: {e}")))
}

fn update(
    conn: &Connection,
    id: i64,
    patch: &MaintenancePatch,
    now: i64,
) -> Result<Refusable<MaintenanceWindow>, StoreError> {
    let Some(old) = load(conn, id)? else {
        return Ok(Err(no_such_window(id)));
    };
    let (starts_at, old_end) = (to_ms(old.starts_at), to_ms(old.ends_at));
    let ends_at = match patch.ends_at.map(to_ms) {
        None => old_end,
        // Ending it now (or asking for an end that has passed) ends it now; a window that is
        // over stays as it was.
        Some(end) if end <= now && old_end <= now => old_end,
        Some(end) if end <= now => {
            if starts_at >= now {
                return Ok(Err(Refusal::InvalidField(
                    "ends_at: the window has not started, so it cannot end now; delete it to \
                     cancel it"
                        .into(),
                )));
            }
            now
        }
        Some(end) => end,
    };
    let reason = patch.reason.as_deref().unwrap_or(&old.reason);
    let scope = patch.scope.as_ref().unwrap_or(&old.scope);
    // The past of a window is not judged again: only a new end must be in the future.
    let judged_now = if ends_at == old_end {
        i64::MIN
    } else {
        now - 1
    };
    if let Err(refusal) = validate(scope, starts_at, ends_at, reason, judged_now) {
        return Ok(Err(refusal));
    }
    if *scope != old.scope
        && let Err(refusal) = check_scope_cis(conn, scope)?
    {
        return Ok(Err(refusal));
    }
    conn.prepare_cached(
        "UPDATE maintenance SET scope = ?2, ends_at = ?3, reason = ?4 WHERE id = ?1",
    )?
    .execute(params![id, scope_json(scope)?, ends_at, reason])?;
    let changed = load(conn, id)?
        .ok_or_else(|| StoreError::Corrupt(format!("maintenance window {id} vanished")))?;
    Ok(Ok(changed))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn field(result: Result<(), Refusal>) -> String {
        match result {
            Err(Refusal::InvalidField(m)) => m.split(':').next().unwrap().to_owned(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_window_must_end_after_it_starts_in_the_future_within_a_year() {
        let any = Scope::default();
        let now = 100 * HOUR;
        validate(&any, now - HOUR, now + HOUR, "patching", now).unwrap();
        validate(&any, now, now + MAX_WINDOW_MS, "patching", now).unwrap();
        assert_eq!(field(validate(&any, now, now, "x", now)), "ends_at");
        assert_eq!(
            field(validate(&any, now - 2 * HOUR, now, "x", now)),
            "ends_at"
        );
        assert_eq!(
            field(validate(&any, now, now + MAX_WINDOW_MS + 1, "x", now)),
            "ends_at"
        );
        assert_eq!(field(validate(&any, now, now + HOUR, "", now)), "reason");
        assert_eq!(field(validate(&any, now, now + HOUR, " \n", now)), "reason");
        let long = "x".repeat(MAX_REASON_CHARS + 1);
        assert_eq!(field(validate(&any, now, now + HOUR, &long, now)), "reason");
        let bad = Scope {
            criticality: vec![0],
            ..Scope::default()
        };
        assert_eq!(
            field(validate(&bad, now, now + HOUR, "x", now)),
            "scope.criticality"
        );
    }

    #[tokio::test]
    async fn ending_a_window_moves_its_end_to_now_and_never_into_the_past() {
        let (store, _dir) = crate::store::testing::temp_store();
        let t0 = from_ms(1_000 * HOUR);
        let hours = |n: i64| time::Duration::milliseconds(n * HOUR);
        let source = Source::Api("ops".into());
        let new = |starts: i64, ends: i64| NewMaintenance {
            scope: Scope::default(),
            starts_at: t0 + hours(starts),
            ends_at: t0 + hours(ends),
            reason: "kernel upgrade".into(),
        };
        let running = store
            .create_maintenance(new(-1, 2), source.clone(), t0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(running.created_by, "api:ops");
        assert!(running.active_at(t0) && !running.active_at(t0 + hours(2)));
        let end = |at: time::OffsetDateTime| MaintenancePatch {
            ends_at: Some(at),
            ..MaintenancePatch::default()
        };
        // An end in the past ends it now; asking again leaves it as it is.
        let ended = store
            .update_maintenance(running.id, end(t0 - hours(5)), t0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ended.ends_at, t0);
        let later = t0 + hours(1);
        let again = store
            .update_maintenance(running.id, end(later), later)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.ends_at, t0);
        // A later end opens it again.
        let reopened = store
            .update_maintenance(running.id, end(t0 + hours(3)), later)
            .await
            .unwrap()
            .unwrap();
        assert!(reopened.active_at(later));

        let future = store
            .create_maintenance(new(5, 6), source.clone(), t0)
            .await
            .unwrap()
            .unwrap();
        let refused = store
            .update_maintenance(future.id, end(t0), t0)
            .await
            .unwrap();
        assert!(matches!(refused, Err(Refusal::InvalidField(m)) if m.contains("delete it")));
        let past = store
            .create_maintenance(new(-3, -1), source, t0)
            .await
            .unwrap();
        assert!(matches!(past, Err(Refusal::InvalidField(m)) if m.starts_with("ends_at")));
        assert_eq!(store.delete_maintenance(future.id).await.unwrap(), Ok(()));
        assert!(matches!(
            store.delete_maintenance(future.id).await.unwrap(),
            Err(Refusal::NotFound(_))
        ));
        store.close().await;
    }
}
