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

use std::collections::HashMap;

use census_common::HealthSample;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::{Value, json};

use super::model::{Incident, IncidentDetail, IncidentEvent};
use super::rules::enabled_rules;
use super::{StoreError, from_ms, maintenance, relations};
use crate::incidents::EngineOptions;
use crate::incidents::alert::{self, Action, Alert, Phase, Reading};
use crate::incidents::priority::{self, Level};
use crate::incidents::rules::{Metric, Rule};
use crate::incidents::scope::CiFacts;

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

/// What the engine knows of the computer a sample is about.
pub(crate) struct Subject {
    pub facts: CiFacts,
    /// Logical CPUs, from the inventory (for `load_per_core`).
    pub cores: Option<f64>,
}

pub(crate) fn subject(conn: &Connection, ci_id: i64) -> Result<Option<Subject>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT id, class, name, criticality, json_extract(attributes, '$.cpu_logical_cores')
             FROM ci WHERE id = ?1",
        )?
        .query_row([ci_id], |r| {
            Ok(Subject {
                facts: CiFacts {
                    id: r.get(0)?,
                    class: r.get(1)?,
                    name: r.get(2)?,
                    criticality: r.get(3)?,
                },
                cores: r.get(4)?,
            })
        })
        .optional()?)
}

/// Judges the samples of one computer within one batch: the rules and the computer are read
/// once, then each sample in series order.
pub(crate) struct Judge<'a> {
    options: &'a EngineOptions,
    subject: Subject,
    /// The enabled threshold rules whose scope covers the computer.
    rules: Vec<Rule>,
}

impl<'a> Judge<'a> {
    pub(crate) fn load(
        conn: &Connection,
        options: &'a EngineOptions,
        ci_id: i64,
    ) -> Result<Option<Judge<'a>>, StoreError> {
        let Some(subject) = subject(conn, ci_id)? else {
            return Ok(None);
        };
        let rules = enabled_rules(conn)?
            .into_iter()
            .filter(|r| r.metric != Metric::Unreachable && r.scope.matches(&subject.facts))
            .collect();
        Ok(Some(Judge {
            options,
            subject,
            rules,
        }))
    }

    /// Runs every rule on `sample`, measured at series time `ts`; `now_ms` is the collector's
    /// clock (incident times).
    pub(crate) fn sample(
        &self,
        conn: &Connection,
        sample: &HealthSample,
        ts: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let ci_id = self.subject.facts.id;
        let mut stored = alerts_of(conn, ci_id)?;
        for rule in &self.rules {
            let mut seen = Vec::new();
            for (dimension, value) in rule.metric.observe(sample, self.subject.cores) {
                if !rule.watches(&dimension) {
                    continue;
                }
                let prev = stored.remove(&(rule.id, dimension.clone()));
                let reading = value.map_or(Reading::Unknown, Reading::Value);
                self.advance(conn, rule, &dimension, prev, ts, reading, now_ms)?;
                seen.push(dimension);
            }
            // Mounts this rule had a state for that the sample no longer has.
            let gone: Vec<String> = stored
                .keys()
                .filter(|(rule_id, d)| *rule_id == rule.id && !seen.contains(d))
                .map(|(_, d)| d.clone())
                .collect();
            for dimension in gone {
                let prev = stored.remove(&(rule.id, dimension.clone()));
                self.advance(conn, rule, &dimension, prev, ts, Reading::Gone, now_ms)?;
            }
        }
        // States of rules that no longer cover this computer (its criticality or name changed,
        // or the rule is disabled): the breach is over as far as the rules go.
        for ((rule_id, dimension), alert) in stored {
            if self.rules.iter().any(|r| r.id == rule_id) || is_unreachable_rule(conn, rule_id)? {
                continue;
            }
            delete_alert(conn, ci_id, rule_id, &dimension)?;
            if let Some(id) = alert.incident_id {
                resolve_incident(
                    conn,
                    id,
                    now_ms,
                    COLLECTOR,
                    "the rule no longer covers this CI",
                    &json!({}),
                )?;
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn advance(
        &self,
        conn: &Connection,
        rule: &Rule,
        dimension: &str,
        prev: Option<Alert>,
        ts: i64,
        reading: Reading,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let ci_id = self.subject.facts.id;
        let (next, action) = alert::step(rule, prev.as_ref(), ts, reading);
        if next == prev {
            return Ok(());
        }
        let Some(mut next) = next else {
            delete_alert(conn, ci_id, rule.id, dimension)?;
            if action == Action::Resolve
                && let Some(id) = prev.and_then(|p| p.incident_id)
            {
                let value = match reading {
                    Reading::Value(v) => json!(v),
                    _ => Value::Null,
                };
                let resolution = match reading {
                    Reading::Gone => "recovered: no longer reported".to_owned(),
                    _ => format!(
                        "recovered: {} back past {} for {}",
                        describe_metric(rule, dimension),
                        fmt_value(rule.clear_threshold.unwrap_or(rule.threshold)),
                        fmt_ms(rule.clear_for_ms)
                    ),
                };
                resolve_incident(
                    conn,
                    id,
                    now_ms,
                    COLLECTOR,
                    &resolution,
                    &json!({ "value": value }),
                )?;
            }
            return Ok(());
        };
        match action {
            Action::Open => {
                next.incident_id = open(
                    conn,
                    self.options,
                    rule,
                    &self.subject,
                    dimension,
                    &next,
                    now_ms,
                )?;
            }
            Action::Rebreach => {
                if let Some(id) = next.incident_id {
                    add_event(
                        conn,
                        id,
                        now_ms,
                        "breached",
                        COLLECTOR,
                        &json!({ "value": next.value, "dimension": dimension }),
                    )?;
                }
            }
            Action::None | Action::Resolve => {}
        }
        // Firing inside a maintenance window that has ended since: open now.
        if action == Action::None
            && next.phase == Phase::Firing
            && next.incident_id.is_none()
            && prev.as_ref().is_some_and(|p| p.phase == Phase::Firing)
        {
            next.incident_id = open(
                conn,
                self.options,
                rule,
                &self.subject,
                dimension,
                &next,
                now_ms,
            )?;
        }
        write_alert(conn, ci_id, rule.id, dimension, &next)?;
        Ok(())
    }
}

fn is_unreachable_rule(conn: &Connection, rule_id: i64) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT metric = 'unreachable' FROM rule WHERE id = ?1")?
        .query_row([rule_id], |r| r.get::<_, bool>(0))
        .optional()?
        .unwrap_or(false))
}

/// The stored alert states of CI `ci_id`, by (rule, dimension).
fn alerts_of(conn: &Connection, ci_id: i64) -> Result<HashMap<(i64, String), Alert>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT rule_id, dimension, state, since, last_ts, value, peak, incident_id
         FROM alert WHERE ci_id = ?1",
    )?;
    let rows = stmt
        .query_map([ci_id], |r| {
            let phase: String = r.get(2)?;
            Ok((
                (r.get(0)?, r.get(1)?),
                Alert {
                    phase: Phase::parse(&phase).unwrap_or(Phase::Firing),
                    since: r.get(3)?,
                    last_ts: r.get(4)?,
                    value: r.get(5)?,
                    peak: r.get(6)?,
                    incident_id: r.get(7)?,
                },
            ))
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

fn write_alert(
    conn: &Connection,
    ci_id: i64,
    rule_id: i64,
    dimension: &str,
    alert: &Alert,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO alert (ci_id, rule_id, dimension, state, since, last_ts, value, peak, incident_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (ci_id, rule_id, dimension) DO UPDATE SET
           state = excluded.state, since = excluded.since, last_ts = excluded.last_ts,
           value = excluded.value, peak = excluded.peak, incident_id = excluded.incident_id",
    )?
    .execute(params![
        ci_id,
        rule_id,
        dimension,
        alert.phase.as_str(),
        alert.since,
        alert.last_ts,
        alert.value,
        alert.peak,
        alert.incident_id
    ])?;
    Ok(())
}

fn delete_alert(
    conn: &Connection,
    ci_id: i64,
    rule_id: i64,
    dimension: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM alert WHERE ci_id = ?1 AND rule_id = ?2 AND dimension = ?3")?
        .execute(params![ci_id, rule_id, dimension])?;
    Ok(())
}

/// The incident for a breach that fired: the open one for the same (CI, rule, dimension) gets a
/// `breached` event; one resolved within the reopen window is reopened; otherwise a new one
/// opens. `None` while a maintenance window covers the CI (nothing opens).
fn open(
    conn: &Connection,
    options: &EngineOptions,
    rule: &Rule,
    subject: &Subject,
    dimension: &str,
    alert: &Alert,
    now_ms: i64,
) -> Result<Option<i64>, StoreError> {
    let ci_id = subject.facts.id;
    let seen = json!({
        "value": alert.value,
        "peak": alert.peak,
        "threshold": rule.threshold,
        "since": from_ms(alert.since)
            .format(&time::format_description::well_known::Rfc3339)
            .ok(),
        "dimension": dimension,
    });
    let latest: Option<(i64, String, Option<i64>)> = conn
        .prepare_cached(
            "SELECT id, state, resolved_at FROM incident
             WHERE ci_id = ?1 AND rule_id = ?2 AND dimension = ?3 ORDER BY id DESC LIMIT 1",
        )?
        .query_row(params![ci_id, rule.id, dimension], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    if let Some((id, state, _)) = &latest
        && OPEN_STATES.contains(&state.as_str())
    {
        add_event(conn, *id, now_ms, "breached", COLLECTOR, &seen)?;
        return Ok(Some(*id));
    }
    if let Some(window) = maintenance::covering(conn, &subject.facts, now_ms)? {
        tracing::debug!(ci_id, rule = %rule.name, window, "breach held back by a maintenance window");
        return Ok(None);
    }
    if let Some((id, state, Some(resolved_at))) = latest
        && state == "resolved"
        && now_ms - resolved_at <= options.reopen_window_ms
        && reopen_incident(conn, id, now_ms, COLLECTOR, &seen)?.is_ok()
    {
        return Ok(Some(id));
    }
    let service = relations::most_critical_dependent_service(conn, ci_id)?;
    let impact = priority::impact(
        subject.facts.criticality,
        service.as_ref().map(|s| s.ci.criticality),
    );
    let urgency = priority::urgency(rule.severity);
    let priority = priority::priority(impact, urgency);
    let target = options.sla.of(priority);
    let on = if dimension.is_empty() {
        subject.facts.name.clone()
    } else {
        format!("{} ({dimension})", subject.facts.name)
    };
    let title = format!("{} on {on}", rule.name);
    let description = describe_breach(rule, dimension, alert);
    let id: i64 = conn
        .prepare_cached(
            "INSERT INTO incident (ci_id, rule_id, rule_name, metric, dimension, title, description,
                                   state, severity, impact, urgency, priority, opened_at,
                                   response_due_at, resolve_due_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'new', ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?12)
             RETURNING id",
        )?
        .query_row(
            params![
                ci_id,
                rule.id,
                rule.name,
                rule.metric.as_str(),
                dimension,
                title,
                description,
                rule.severity.as_str(),
                impact.as_i64(),
                urgency.as_i64(),
                priority,
                now_ms,
                now_ms.saturating_add(target.response_ms),
                now_ms.saturating_add(target.resolution_ms),
            ],
            |r| r.get(0),
        )?;
    let mut detail = seen;
    detail["priority"] = json!(priority::label(priority));
    detail["impact"] = json!(impact.as_str());
    detail["urgency"] = json!(urgency.as_str());
    if let Some(service) = service {
        detail["impact_from"] = json!({
            "ci_id": service.ci.id,
            "name": service.ci.name,
            "criticality": service.ci.criticality,
        });
    }
    add_event(conn, id, now_ms, "opened", COLLECTOR, &detail)?;
    notify(conn, id, now_ms, "incident.opened")?;
    tracing::info!(incident = %number(id), ci_id, rule = %rule.name, priority, "opened an incident");
    Ok(Some(id))
}

fn describe_metric(rule: &Rule, dimension: &str) -> String {
    if dimension.is_empty() {
        rule.metric.as_str().to_owned()
    } else {
        format!("{} of {dimension}", rule.metric.as_str())
    }
}

fn describe_breach(rule: &Rule, dimension: &str, alert: &Alert) -> String {
    if rule.metric == Metric::Unreachable {
        return format!(
            "No report since {} ({} silent; the limit is {} health intervals, at least {}).",
            fmt_time(alert.since),
            fmt_ms(alert.last_ts - alert.since),
            fmt_value(rule.threshold),
            fmt_ms(rule.for_ms),
        );
    }
    let clear = rule.clear_threshold.map_or_else(
        || {
            format!(
                "no longer {} {}",
                rule.operator.as_str(),
                fmt_value(rule.threshold)
            )
        },
        |c| format!("past {}", fmt_value(c)),
    );
    format!(
        "{} was {} ({} {}) from {} for at least {}; worst {}. It resolves once {} for {}.",
        describe_metric(rule, dimension),
        alert.value.map_or_else(|| "unknown".to_owned(), fmt_value),
        rule.operator.as_str(),
        fmt_value(rule.threshold),
        fmt_time(alert.since),
        fmt_ms(rule.for_ms),
        alert.peak.map_or_else(|| "unknown".to_owned(), fmt_value),
        clear,
        fmt_ms(rule.clear_for_ms),
    )
}

fn fmt_value(v: f64) -> String {
    let rounded = (v * 100.0).round() / 100.0;
    format!("{rounded}")
}

fn fmt_ms(ms: i64) -> String {
    crate::config::Span(std::time::Duration::from_millis(ms.max(0) as u64)).to_string()
}

fn fmt_time(ms: i64) -> String {
    from_ms(ms)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The health interval assumed for an agent whose samples do not state theirs (the agent's
/// default).
pub const DEFAULT_HEALTH_INTERVAL_MS: i64 = 60_000;

/// What one silence check did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SilenceReport {
    /// Computers found silent past an `unreachable` rule's window this time.
    pub silent: usize,
    /// Incidents opened or reopened (silence, or a breach a maintenance window held back).
    pub opened: usize,
}

/// Most computers one silence-check write job handles, so ingest keeps flowing between jobs.
pub const SILENCE_BATCH: usize = 256;

/// Active computers with an agent that have not reported since before `cutoff` (unix ms) and
/// have fewer `unreachable` states than there are enabled `unreachable` rules (`rules`):
/// the computers the silence check looks at again in the write. Read-only.
pub(crate) fn silent_candidates(
    conn: &Connection,
    cutoff: i64,
    rules: i64,
) -> Result<Vec<i64>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT a.ci_id FROM agent a JOIN ci c ON c.id = a.ci_id
         WHERE c.status = 'active' AND a.ci_id IS NOT NULL
           AND (SELECT count(*) FROM alert x JOIN rule r ON r.id = x.rule_id
                WHERE x.ci_id = a.ci_id AND r.metric = 'unreachable' AND r.enabled) < ?2
         GROUP BY a.ci_id HAVING max(a.last_seen) < ?1",
    )?;
    let rows = stmt
        .query_map(params![cutoff, rules], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Opens `unreachable` incidents for the computers of `candidates` that are still silent:
/// no report for `max(threshold x health interval, for)`, counted from the later of the last
/// report and `started_ms` (when this collector started, so a restart gives every agent a
/// full window). Also opens what a maintenance window held back once the window is over.
pub(crate) fn check_silence(
    conn: &Connection,
    options: &EngineOptions,
    candidates: &[i64],
    started_ms: i64,
    now_ms: i64,
) -> Result<SilenceReport, StoreError> {
    let mut report = SilenceReport::default();
    let rules: Vec<Rule> = enabled_rules(conn)?
        .into_iter()
        .filter(|r| r.metric == Metric::Unreachable)
        .collect();
    for &ci_id in candidates {
        // Read again inside the write: the agent may have reported since the read.
        let last: Option<(i64, i64)> = conn
            .prepare_cached(
                "SELECT max(last_seen), coalesce(max(health_interval_ms), ?2)
                 FROM agent WHERE ci_id = ?1",
            )?
            .query_row(params![ci_id, DEFAULT_HEALTH_INTERVAL_MS], |r| {
                Ok(r.get::<_, Option<i64>>(0)?.zip(r.get::<_, Option<i64>>(1)?))
            })?;
        let Some((last_seen, interval_ms)) = last else {
            continue;
        };
        let Some(subject) = subject(conn, ci_id)? else {
            continue;
        };
        let since = last_seen.max(started_ms);
        let mut counted = false;
        for rule in rules.iter().filter(|r| r.scope.matches(&subject.facts)) {
            let window = ((rule.threshold * interval_ms as f64) as i64).max(rule.for_ms);
            if now_ms - since < window {
                continue;
            }
            let stored = alerts_of_rule(conn, subject.facts.id, rule.id)?;
            if stored.is_some() {
                continue;
            }
            if !counted {
                report.silent += 1;
                counted = true;
            }
            let mut alert = Alert {
                phase: Phase::Firing,
                since: last_seen,
                last_ts: now_ms,
                value: Some((now_ms - last_seen) as f64 / 1000.0),
                peak: None,
                incident_id: None,
            };
            alert.incident_id = open(conn, options, rule, &subject, "", &alert, now_ms)?;
            report.opened += usize::from(alert.incident_id.is_some());
            write_alert(conn, subject.facts.id, rule.id, "", &alert)?;
        }
    }
    report.opened += open_held_back(conn, options, now_ms)?;
    Ok(report)
}

fn alerts_of_rule(conn: &Connection, ci_id: i64, rule_id: i64) -> Result<Option<()>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM alert WHERE ci_id = ?1 AND rule_id = ?2 LIMIT 1")?
        .query_row(params![ci_id, rule_id], |_| Ok(()))
        .optional()?)
}

/// Opens the incidents of firing alerts that a maintenance window held back and that no
/// window covers any more. Answers how many opened.
fn open_held_back(
    conn: &Connection,
    options: &EngineOptions,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let held: Vec<(i64, i64, String)> = conn
        .prepare_cached(
            "SELECT a.ci_id, a.rule_id, a.dimension FROM alert a JOIN rule r ON r.id = a.rule_id
             WHERE a.state = 'firing' AND a.incident_id IS NULL AND r.enabled
             ORDER BY a.ci_id LIMIT ?1",
        )?
        .query_map([SILENCE_BATCH as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut opened = 0;
    for (ci_id, rule_id, dimension) in held {
        let (Some(subject), Some(rule)) =
            (subject(conn, ci_id)?, super::rules::rule(conn, rule_id)?)
        else {
            continue;
        };
        let Some(mut alert) = alerts_of(conn, ci_id)?.remove(&(rule_id, dimension.clone())) else {
            continue;
        };
        alert.incident_id = open(conn, options, &rule, &subject, &dimension, &alert, now_ms)?;
        if alert.incident_id.is_some() {
            opened += 1;
            write_alert(conn, ci_id, rule_id, &dimension, &alert)?;
        }
    }
    Ok(opened)
}

/// A report from the agent of CI `ci_id` arrived: its `unreachable` states end and their
/// incidents resolve.
pub(crate) fn reported(conn: &Connection, ci_id: i64, now_ms: i64) -> Result<(), StoreError> {
    let ended: Vec<(Option<i64>, i64)> = conn
        .prepare_cached(
            "DELETE FROM alert WHERE ci_id = ?1
               AND rule_id IN (SELECT id FROM rule WHERE metric = 'unreachable')
             RETURNING incident_id, since",
        )?
        .query_map([ci_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (incident, since) in ended {
        if let Some(id) = incident {
            resolve_incident(
                conn,
                id,
                now_ms,
                COLLECTOR,
                &format!(
                    "the agent reported again after {} of silence",
                    fmt_ms(now_ms - since)
                ),
                &json!({}),
            )?;
        }
    }
    Ok(())
}

impl super::Store {
    /// One silence check at `now`: opens `unreachable` incidents for the computers whose agents
    /// went silent (see [`check_silence`]) and what maintenance windows held back, in writer
    /// jobs of at most [`SILENCE_BATCH`] computers. `started` is when this collector started.
    pub async fn check_silence(
        &self,
        now: time::OffsetDateTime,
        started: time::OffsetDateTime,
    ) -> Result<SilenceReport, StoreError> {
        let (now_ms, started_ms) = (super::to_ms(now), super::to_ms(started));
        let candidates = self
            .reads
            .run(move |conn| {
                let rules: Vec<Rule> = enabled_rules(conn)?
                    .into_iter()
                    .filter(|r| r.metric == Metric::Unreachable)
                    .collect();
                // Every window is at least its rule's `for`.
                let Some(least) = rules.iter().map(|r| r.for_ms).min() else {
                    return Ok(Vec::new());
                };
                if now_ms - started_ms < least {
                    return Ok(Vec::new());
                }
                silent_candidates(conn, now_ms - least, rules.len() as i64)
            })
            .await?;
        let mut report = SilenceReport::default();
        let mut chunks = candidates.chunks(SILENCE_BATCH).peekable();
        // One job even with no candidate: held-back breaches are opened there too.
        let empty: &[i64] = &[];
        let first = chunks.next().unwrap_or(empty).to_vec();
        let mut pending = Some(first);
        while let Some(chunk) = pending.take() {
            let options = self.engine.clone();
            let done = self
                .writer
                .run(move |conn| check_silence(conn, &options, &chunk, started_ms, now_ms))
                .await?;
            report.silent += done.silent;
            report.opened += done.opened;
            pending = chunks.next().map(<[i64]>::to_vec);
        }
        Ok(report)
    }
}

#[cfg(test)]
#[path = "incidents_tests.rs"]
mod tests;
