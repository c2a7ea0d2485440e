//! The incident engine's SQL: rules judged on every health sample inside the ingest
//! transaction, the silence check, and opening, reopening and resolving incidents.
//!
//! # Promises
//!
//! - **Judged where stored:** the rules run on each health sample in the transaction that
//!   stores it, and the alert state (`alert`) is written in that transaction too. A crash
//!   loses neither a pending breach nor the memory of an open incident: after a restart the
//!   next sample continues from the stored state.
//! - **One open incident per (CI, rule, dimension):** a unique index on the open states makes
//!   a second one impossible; a breach while one is open adds a timeline event.
//! - **Reopen, not repeat:** a breach that fires again within `reopen_window` of its incident's
//!   resolution reopens that incident and counts the reopen.
//! - **Quiet in maintenance:** while a maintenance window covers the CI, a firing alert opens
//!   nothing (the alert keeps firing with no incident); the first sample or silence check after
//!   the window ends opens it.
//! - **Every event is told:** opened, acknowledged, resolved and reopened events go into the
//!   webhook outbox in the same transaction (`store::webhooks`).
//!
//! Incident times (opened, resolved, due times) are the collector's clock when the event is
//! stored; alert phases are judged in series time (see `incidents::alert`).

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::{Value, json};

use super::model::{Incident, IncidentDetail, IncidentEvent};
use super::{StoreError, from_ms};
use crate::incidents::priority::{self, Level};

/// The actor of what the engine does by itself.
pub const COLLECTOR: &str = "collector";

/// The open states.
pub const OPEN_STATES: &[&str] = &["new", "acknowledged", "in_progress"];

/// The columns [`read_incident_row`] reads, over `incident i LEFT JOIN ci c ON c.id = i.ci_id`,
/// with `?1` bound to now (unix ms) for the breach flags.
pub(crate) const INCIDENT_COLUMNS: &str = "i.id, i.ci_id, c.name, i.rule_id, i.rule_name, \
     i.metric, i.dimension, i.title, i.description, i.state, i.severity, i.impact, i.urgency, \
     i.priority, i.priority_reason, i.assignee, i.opened_at, i.acknowledged_at, i.resolved_at, \
     i.closed_at, i.response_due_at, i.resolve_due_at, \
     coalesce(i.acknowledged_at, i.resolved_at, ?1) > i.response_due_at, \
     coalesce(i.resolved_at, ?1) > i.resolve_due_at, \
     i.reopen_count, i.resolution, i.resolved_by, i.updated_at";

/// `INC-000001`.
pub fn number(id: i64) -> String {
    format!("INC-{id:06}")
}

/// The id an incident path names: `42` or `INC-000042`.
pub fn parse_number(text: &str) -> Option<i64> {
    let digits = text
        .strip_prefix("INC-")
        .or_else(|| text.strip_prefix("inc-"))
        .unwrap_or(text);
    digits.parse().ok().filter(|id| *id > 0)
}

/// An incident from a row of [`INCIDENT_COLUMNS`].
pub(crate) fn read_incident_row(r: &Row<'_>) -> rusqlite::Result<Incident> {
    let level = |i: usize| -> rusqlite::Result<String> {
        let n: i64 = r.get(i)?;
        Ok(Level::from_i64(n)
            .map_or("unknown", Level::as_str)
            .to_owned())
    };
    let time = |i: usize| -> rusqlite::Result<_> { Ok(from_ms(r.get(i)?)) };
    let opt_time =
        |i: usize| -> rusqlite::Result<_> { Ok(r.get::<_, Option<i64>>(i)?.map(from_ms)) };
    let id: i64 = r.get(0)?;
    Ok(Incident {
        id,
        number: number(id),
        ci_id: r.get(1)?,
        ci_name: r.get(2)?,
        rule_id: r.get(3)?,
        rule_name: r.get(4)?,
        metric: r.get(5)?,
        dimension: r.get(6)?,
        title: r.get(7)?,
        description: r.get(8)?,
        state: r.get(9)?,
        severity: r.get(10)?,
        impact: level(11)?,
        urgency: level(12)?,
        priority: priority::label(r.get(13)?),
        priority_reason: r.get(14)?,
        assignee: r.get(15)?,
        opened_at: time(16)?,
        acknowledged_at: opt_time(17)?,
        resolved_at: opt_time(18)?,
        closed_at: opt_time(19)?,
        response_due_at: time(20)?,
        resolve_due_at: time(21)?,
        response_breached: r.get(22)?,
        resolve_breached: r.get(23)?,
        reopen_count: r.get(24)?,
        resolution: r.get(25)?,
        resolved_by: r.get(26)?,
        updated_at: time(27)?,
    })
}

/// Incident `id` as of `now_ms` (for its breach flags), without its timeline.
pub(crate) fn read_incident(
    conn: &Connection,
    id: i64,
    now_ms: i64,
) -> Result<Option<Incident>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {INCIDENT_COLUMNS} FROM incident i LEFT JOIN ci c ON c.id = i.ci_id
             WHERE i.id = ?2"
        ))?
        .query_row(params![now_ms, id], read_incident_row)
        .optional()?)
}

/// The timeline of incident `id`, oldest first.
pub(crate) fn read_timeline(conn: &Connection, id: i64) -> Result<Vec<IncidentEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, at, kind, actor, detail FROM incident_event WHERE incident_id = ?1 ORDER BY id",
    )?;
    let rows = stmt
        .query_map([id], |r| {
            let detail: String = r.get(4)?;
            Ok(IncidentEvent {
                id: r.get(0)?,
                at: from_ms(r.get(1)?),
                kind: r.get(2)?,
                actor: r.get(3)?,
                detail: serde_json::from_str(&detail).unwrap_or(Value::Null),
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Incident `id` with its timeline.
pub(crate) fn read_detail(
    conn: &Connection,
    id: i64,
    now_ms: i64,
) -> Result<Option<IncidentDetail>, StoreError> {
    let Some(incident) = read_incident(conn, id, now_ms)? else {
        return Ok(None);
    };
    Ok(Some(IncidentDetail {
        incident,
        timeline: read_timeline(conn, id)?,
    }))
}

/// Adds an event to the timeline of incident `id` (and moves its `updated_at`).
pub(crate) fn add_event(
    conn: &Connection,
    id: i64,
    at_ms: i64,
    kind: &str,
    actor: &str,
    detail: &Value,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO incident_event (incident_id, at, kind, actor, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![id, at_ms, kind, actor, detail.to_string()])?;
    conn.prepare_cached("UPDATE incident SET updated_at = ?2 WHERE id = ?1")?
        .execute(params![id, at_ms])?;
    Ok(())
}

/// Puts `event` (`incident.opened`, `.acknowledged`, `.resolved`, `.reopened`) about incident
/// `id` in the webhook outbox, with the incident as it is now in this transaction.
pub(crate) fn notify(
    conn: &Connection,
    id: i64,
    now_ms: i64,
    event: &str,
) -> Result<(), StoreError> {
    let Some(incident) = read_incident(conn, id, now_ms)? else {
        return Ok(());
    };
    let payload = json!({
        "event": event,
        "at": from_ms(now_ms).format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| StoreError::Invalid(e.to_string()))?,
        "incident": incident,
    });
    super::webhooks::enqueue(conn, now_ms, event, id, &payload)?;
    Ok(())
}

/// Resolves incident `id` if it is open: state `resolved`, the resolution and who resolved it,
/// a `resolved` timeline event and an `incident.resolved` webhook. Answers whether it was
/// open (a resolved or closed incident is left as it is).
pub(crate) fn resolve_incident(
    conn: &Connection,
    id: i64,
    now_ms: i64,
    actor: &str,
    resolution: &str,
    detail: &Value,
) -> Result<bool, StoreError> {
    let changed = conn
        .prepare_cached(
            "UPDATE incident SET state = 'resolved', resolved_at = ?2, resolution = ?3,
                                 resolved_by = ?4, updated_at = ?2
             WHERE id = ?1 AND state IN ('new', 'acknowledged', 'in_progress')",
        )?
        .execute(params![id, now_ms, resolution, actor])?;
    if changed == 0 {
        return Ok(false);
    }
    let mut detail = detail.clone();
    if let Value::Object(map) = &mut detail {
        map.insert("resolution".into(), json!(resolution));
    }
    add_event(conn, id, now_ms, "resolved", actor, &detail)?;
    notify(conn, id, now_ms, "incident.resolved")?;
    Ok(true)
}

/// Why [`reopen_incident`] did not reopen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NotReopened {
    /// It is not `resolved` (open, closed, or no such incident); the state it is in.
    State(Option<String>),
    /// Another incident for the same CI, rule and dimension is open; its id.
    OtherOpen(i64),
}

/// Reopens resolved incident `id`: state `new`, the reopen counted, the resolution cleared (the
/// first acknowledgement stays, so the response target stays met), a `reopened` timeline event
/// and an `incident.reopened` webhook.
pub(crate) fn reopen_incident(
    conn: &Connection,
    id: i64,
    now_ms: i64,
    actor: &str,
    detail: &Value,
) -> Result<Result<(), NotReopened>, StoreError> {
    let found: Option<(String, i64, Option<i64>, String)> = conn
        .prepare_cached("SELECT state, ci_id, rule_id, dimension FROM incident WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    let Some((state, ci_id, rule_id, dimension)) = found else {
        return Ok(Err(NotReopened::State(None)));
    };
    if state != "resolved" {
        return Ok(Err(NotReopened::State(Some(state))));
    }
    let other: Option<i64> = conn
        .prepare_cached(
            "SELECT id FROM incident WHERE ci_id = ?1 AND rule_id IS ?2 AND dimension = ?3
               AND state IN ('new', 'acknowledged', 'in_progress')",
        )?
        .query_row(params![ci_id, rule_id, dimension], |r| r.get(0))
        .optional()?;
    if let Some(other) = other {
        return Ok(Err(NotReopened::OtherOpen(other)));
    }
    conn.prepare_cached(
        "UPDATE incident SET state = 'new', resolved_at = NULL, resolution = NULL,
                             resolved_by = NULL, reopen_count = reopen_count + 1, updated_at = ?2
         WHERE id = ?1",
    )?
    .execute(params![id, now_ms])?;
    add_event(conn, id, now_ms, "reopened", actor, detail)?;
    notify(conn, id, now_ms, "incident.reopened")?;
    Ok(Ok(()))
}
