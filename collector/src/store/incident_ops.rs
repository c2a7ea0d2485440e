//! What people do with incidents once the engine opened them: the filtered list, one incident
//! with its timeline, the operator's lifecycle actions, the KPIs, and a CI's open incidents.
//!
//! # Promises
//!
//! - **A refused action writes nothing:** each action reads the incident, checks the transition
//!   and only then writes, so an unknown incident or an invalid transition answers a
//!   [`Refusal`] from an untouched savepoint.
//! - **Every action is on the timeline** (with its actor, `api:<token name>`) in the
//!   transaction that makes it, and acknowledging, resolving and reopening put their webhook
//!   event in the outbox in that transaction too (`store::incidents::notify`).
//! - **A closed incident is final:** nothing but a note changes it.
//! - **Breach flags and the `breached` filter use one definition**, that of
//!   `store::incidents::INCIDENT_COLUMNS`: the response target is breached when the
//!   acknowledgement (or, failing one, the resolution, or now) is after `response_due_at`; the
//!   resolution target when the resolution (or now) is after `resolve_due_at`.
//! - **The KPIs are one snapshot:** every figure is read in one read transaction.
//!
//! The lifecycle: `new` → `acknowledged` (acknowledge) → `in_progress` (assign, from any open
//! state; assigning a `new` incident acknowledges it too) → `resolved` (resolve, from any open
//! state, or the engine on recovery) → `closed` (close). A resolved incident may be reopened
//! (to `new`). The first acknowledgement time is kept across a reopen, so a reopened incident
//! does not lose the response target it met.

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde_json::{Value, json};

use super::incidents::{
    INCIDENT_COLUMNS, NotReopened, OPEN_STATES, add_event, notify, number, read_detail,
    read_incident_row, reopen_incident, resolve_incident,
};
use super::model::{
    CiDetail, Incident, IncidentAction, IncidentDetail, IncidentFilter, KpiCi, KpiRule, Kpis,
    OpenByPriority, Page, Refusable, Refusal, SlaCompliance,
};
use super::{Source, Store, StoreError, to_ms};
use crate::incidents::EngineOptions;
use crate::incidents::priority;

/// Most open incidents the CI view lists.
pub const CI_OPEN_INCIDENTS: u32 = 100;

/// How many CIs and rules the KPIs rank.
const KPI_TOP: i64 = 10;

/// The response target breached at `?1` (now), as `INCIDENT_COLUMNS` computes
/// `response_breached`.
const RESPONSE_BREACHED: &str =
    "coalesce(i.acknowledged_at, i.resolved_at, ?1) > i.response_due_at";
/// The resolution target breached at `?1`, as `INCIDENT_COLUMNS` computes `resolve_breached`.
const RESOLVE_BREACHED: &str = "coalesce(i.resolved_at, ?1) > i.resolve_due_at";

/// `'new', 'acknowledged', 'in_progress'`, for SQL.
fn open_states_sql() -> String {
    OPEN_STATES
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// Incidents matching `filter`, newest (highest id) first, with breach flags as of `now`.
    pub async fn list_incidents(
        &self,
        filter: IncidentFilter,
        now: time::OffsetDateTime,
    ) -> Result<Page<Incident, i64>, StoreError> {
        self.reads
            .run(move |conn| list(conn, &filter, to_ms(now)))
            .await
    }

    /// Incident `id` with its timeline; `None` if there is none.
    pub async fn get_incident(
        &self,
        id: i64,
        now: time::OffsetDateTime,
    ) -> Result<Option<IncidentDetail>, StoreError> {
        self.reads
            .run(move |conn| {
                let tx = conn.unchecked_transaction()?;
                read_detail(&tx, id, to_ms(now))
            })
            .await
    }

    /// Does `action` to incident `id` on behalf of `source`; answers the incident as it then
    /// is. Refused (and nothing written) when there is no such incident (`NotFound`) or the
    /// action is not allowed in its state (`Conflict`).
    pub async fn act_on_incident(
        &self,
        id: i64,
        action: IncidentAction,
        source: Source,
        now: time::OffsetDateTime,
    ) -> Result<Refusable<IncidentDetail>, StoreError> {
        let engine = self.engine.clone();
        self.writer
            .run(move |conn| act(conn, &engine, id, &action, &source.as_text(), to_ms(now)))
            .await
    }

    /// Incident figures over `[from, to)`, decided as of `now`.
    pub async fn kpis(
        &self,
        from: time::OffsetDateTime,
        to: time::OffsetDateTime,
        now: time::OffsetDateTime,
    ) -> Result<Kpis, StoreError> {
        self.reads
            .run(move |conn| kpis(conn, from, to, to_ms(now)))
            .await
    }

    /// CI `id` as [`Store::get_ci`] answers it, with its open incidents (newest first, at most
    /// [`CI_OPEN_INCIDENTS`]) read in the same read transaction.
    pub async fn get_ci_with_incidents(
        &self,
        id: i64,
        now: time::OffsetDateTime,
    ) -> Result<Option<(CiDetail, Vec<Incident>)>, StoreError> {
        self.reads
            .run(move |conn| {
                let tx = conn.unchecked_transaction()?;
                let Some(detail) = super::cis::get_within(&tx, id)? else {
                    return Ok(None);
                };
                let incidents = open_incidents_of(&tx, id, to_ms(now))?;
                Ok(Some((detail, incidents)))
            })
            .await
    }
}

/// The open incidents of CI `ci_id`, newest first.
fn open_incidents_of(
    conn: &Connection,
    ci_id: i64,
    now_ms: i64,
) -> Result<Vec<Incident>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {INCIDENT_COLUMNS} FROM incident i LEFT JOIN ci c ON c.id = i.ci_id
         WHERE i.ci_id = ?2 AND i.state IN ({}) ORDER BY i.id DESC LIMIT ?3",
        open_states_sql()
    ))?;
    let rows = stmt
        .query_map(params![now_ms, ci_id, CI_OPEN_INCIDENTS], read_incident_row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Values bound to a statement assembled from fixed fragments, numbered in order.
struct Bound {
    values: Vec<SqlValue>,
}

impl Bound {
    /// Binds `value` and answers its placeholder (`?N`), to be used in a fragment.
    fn bind(&mut self, value: SqlValue) -> String {
        self.values.push(value);
        format!("?{}", self.values.len())
    }
}

fn list(
    conn: &Connection,
    filter: &IncidentFilter,
    now_ms: i64,
) -> Result<Page<Incident, i64>, StoreError> {
    // `?1` is now, for the breach flags in INCIDENT_COLUMNS; every other value is bound after it.
    let mut sql = Bound {
        values: vec![SqlValue::Integer(now_ms)],
    };
    let mut conditions: Vec<String> = Vec::new();
    let texts =
        |items: &[String]| -> Vec<SqlValue> { items.iter().cloned().map(SqlValue::Text).collect() };
    for (column, items) in [
        ("i.state", texts(&filter.states)),
        (
            "i.priority",
            filter
                .priorities
                .iter()
                .copied()
                .map(SqlValue::Integer)
                .collect(),
        ),
        ("i.severity", texts(&filter.severities)),
    ] {
        if !items.is_empty() {
            let marks: Vec<String> = items.into_iter().map(|v| sql.bind(v)).collect();
            conditions.push(format!("{column} IN ({})", marks.join(", ")));
        }
    }
    let mut compare = |condition: &str, value: Option<i64>| {
        if let Some(value) = value {
            let mark = sql.bind(SqlValue::Integer(value));
            conditions.push(format!("{condition} {mark}"));
        }
    };
    compare("i.ci_id =", filter.ci_id);
    compare("i.rule_id =", filter.rule_id);
    compare("i.opened_at >=", filter.opened_since.map(to_ms));
    compare("i.opened_at <", filter.opened_before.map(to_ms));
    compare("i.id <", filter.before);
    match filter.breached {
        Some(true) => conditions.push(format!("({RESPONSE_BREACHED} OR {RESOLVE_BREACHED})")),
        Some(false) => {
            conditions.push(format!("NOT ({RESPONSE_BREACHED} OR {RESOLVE_BREACHED})"));
        }
        None => {}
    }
    let limit = sql.bind(SqlValue::Integer(i64::from(filter.limit) + 1));
    let condition = if conditions.is_empty() {
        "1".to_owned()
    } else {
        conditions.join(" AND ")
    };
    // Not cached: the statement's shape depends on which filters are given.
    let mut stmt = conn.prepare(&format!(
        "SELECT {INCIDENT_COLUMNS} FROM incident i LEFT JOIN ci c ON c.id = i.ci_id
         WHERE {condition} ORDER BY i.id DESC LIMIT {limit}"
    ))?;
    let mut items: Vec<Incident> = stmt
        .query_map(params_from_iter(sql.values), read_incident_row)?
        .collect::<Result<_, _>>()?;
    let next = if items.len() > filter.limit as usize {
        items.truncate(filter.limit as usize);
        items.last().map(|i| i.id)
    } else {
        None
    };
    Ok(Page { items, next })
}

/// What an action needs to know of the incident before it decides.
struct Current {
    state: String,
    assignee: Option<String>,
    priority: i64,
    opened_at: i64,
}

fn conflict<T>(message: String) -> Result<Refusable<T>, StoreError> {
    Ok(Err(Refusal::Conflict(message)))
}

/// Why an incident that is not open refuses `verb`.
fn not_open(number: &str, state: &str, verb: &str) -> String {
    let hint = match state {
        "resolved" => "; reopen it first",
        "closed" => "; a closed incident is final",
        _ => "",
    };
    format!(
        "{number} is {state}; only an open incident (new, acknowledged or in_progress) can be \
         {verb}{hint}"
    )
}

/// `{"note": text}`, or `{}` without a note.
fn with_note(note: &Option<String>) -> Value {
    match note {
        Some(text) => json!({ "note": text }),
        None => json!({}),
    }
}

fn act(
    conn: &Connection,
    engine: &EngineOptions,
    id: i64,
    action: &IncidentAction,
    actor: &str,
    now: i64,
) -> Result<Refusable<IncidentDetail>, StoreError> {
    let number = number(id);
    let current = conn
        .prepare_cached("SELECT state, assignee, priority, opened_at FROM incident WHERE id = ?1")?
        .query_row([id], |r| {
            Ok(Current {
                state: r.get(0)?,
                assignee: r.get(1)?,
                priority: r.get(2)?,
                opened_at: r.get(3)?,
            })
        })
        .optional()?;
    let Some(current) = current else {
        return Ok(Err(Refusal::NotFound(format!(
            "there is no incident {number}"
        ))));
    };
    let state = current.state.as_str();
    let open = OPEN_STATES.contains(&state);
    match action {
        IncidentAction::Acknowledge { note } => {
            if state != "new" {
                return conflict(format!(
                    "{number} is {state}; only a new incident can be acknowledged"
                ));
            }
            acknowledge(conn, id, now, actor, &with_note(note))?;
        }
        IncidentAction::Assign { assignee } => {
            if !open {
                return conflict(not_open(&number, state, "assigned"));
            }
            if state == "new" {
                acknowledge(conn, id, now, actor, &json!({ "by": "assign" }))?;
            }
            conn.prepare_cached(
                "UPDATE incident SET state = 'in_progress', assignee = ?2 WHERE id = ?1",
            )?
            .execute(params![id, assignee])?;
            let detail = json!({ "from": current.assignee, "to": assignee });
            add_event(conn, id, now, "assigned", actor, &detail)?;
        }
        IncidentAction::Note { text } => {
            add_event(conn, id, now, "note", actor, &json!({ "text": text }))?;
        }
        IncidentAction::Resolve { resolution } => {
            if !open {
                return conflict(not_open(&number, state, "resolved"));
            }
            resolve_incident(conn, id, now, actor, resolution, &json!({}))?;
        }
        IncidentAction::Close { note } => {
            if state != "resolved" {
                let why = if state == "closed" {
                    format!("{number} is closed already")
                } else {
                    format!("{number} is {state}")
                };
                return conflict(format!(
                    "{why}; only a resolved incident can be closed (resolve it first)"
                ));
            }
            conn.prepare_cached(
                "UPDATE incident SET state = 'closed', closed_at = ?2 WHERE id = ?1",
            )?
            .execute(params![id, now])?;
            add_event(conn, id, now, "closed", actor, &with_note(note))?;
        }
        IncidentAction::Reopen { reason } => {
            match reopen_incident(conn, id, now, actor, &json!({ "reason": reason }))? {
                Ok(()) => {}
                Err(NotReopened::State(Some(state))) if state == "closed" => {
                    return conflict(format!(
                        "{number} is closed, and a closed incident is final: it cannot be \
                         reopened; only a resolved incident can"
                    ));
                }
                Err(NotReopened::State(Some(state))) => {
                    return conflict(format!(
                        "{number} is {state}; only a resolved incident can be reopened"
                    ));
                }
                Err(NotReopened::State(None)) => {
                    return Ok(Err(Refusal::NotFound(format!(
                        "there is no incident {number}"
                    ))));
                }
                Err(NotReopened::OtherOpen(other)) => {
                    return conflict(format!(
                        "{} is open for the same CI, rule and dimension; work that incident \
                         instead of reopening {number}",
                        super::incidents::number(other)
                    ));
                }
            }
        }
        IncidentAction::Priority {
            priority: to,
            reason,
        } => {
            if !open {
                return conflict(not_open(&number, state, "given a priority"));
            }
            let target = engine.sla.of(*to);
            conn.prepare_cached(
                "UPDATE incident SET priority = ?2, priority_reason = ?3,
                                     response_due_at = ?4, resolve_due_at = ?5
                 WHERE id = ?1",
            )?
            .execute(params![
                id,
                to,
                reason,
                current.opened_at + target.response_ms,
                current.opened_at + target.resolution_ms,
            ])?;
            let detail = json!({
                "from": priority::label(current.priority),
                "to": priority::label(*to),
                "reason": reason,
            });
            add_event(conn, id, now, "priority_changed", actor, &detail)?;
        }
    }
    let detail = read_detail(conn, id, now)?
        .ok_or_else(|| StoreError::Corrupt(format!("{number} vanished while being changed")))?;
    Ok(Ok(detail))
}

/// `new` to `acknowledged`: the first acknowledgement time is kept (a reopened incident was
/// acknowledged before), the timeline event and the webhook.
fn acknowledge(
    conn: &Connection,
    id: i64,
    now: i64,
    actor: &str,
    detail: &Value,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE incident SET state = 'acknowledged', acknowledged_at = coalesce(acknowledged_at, ?2)
         WHERE id = ?1",
    )?
    .execute(params![id, now])?;
    add_event(conn, id, now, "acknowledged", actor, detail)?;
    notify(conn, id, now, "incident.acknowledged")?;
    Ok(())
}

/// `part` of `whole` in percent, rounded to two decimals; `None` when `whole` is 0.
fn percent(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| (10_000.0 * part as f64 / whole as f64).round() / 100.0)
}

/// Milliseconds as seconds, rounded to the millisecond.
fn seconds(ms: Option<f64>) -> Option<f64> {
    ms.map(|ms| ms.round() / 1000.0)
}

fn kpis(
    conn: &Connection,
    from: time::OffsetDateTime,
    to: time::OffsetDateTime,
    now: i64,
) -> Result<Kpis, StoreError> {
    let tx = conn.unchecked_transaction()?;
    let (from_ms, to_ms) = (to_ms(from), to_ms(to));

    let mut open_by_priority = OpenByPriority::default();
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT priority, count(*) FROM incident WHERE state IN ({}) GROUP BY priority",
        open_states_sql()
    ))?;
    let counts = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
    for count in counts {
        let (priority, n) = count?;
        match priority {
            1 => open_by_priority.p1 = n,
            2 => open_by_priority.p2 = n,
            3 => open_by_priority.p3 = n,
            4 => open_by_priority.p4 = n,
            _ => open_by_priority.p5 += n,
        }
    }

    // Over the incidents opened in the range: a target's outcome is decided once it is met
    // (acknowledged or resolved in time) or breached (late, or due and still not done).
    let figures = tx
        .prepare_cached(&format!(
            "SELECT count(*),
                    avg(i.acknowledged_at - i.opened_at),
                    avg(i.resolved_at - i.opened_at),
                    coalesce(sum(response_decided), 0),
                    coalesce(sum(response_decided AND NOT response_breached), 0),
                    coalesce(sum(resolve_decided), 0),
                    coalesce(sum(resolve_decided AND NOT resolve_breached), 0),
                    coalesce(sum(response_breached OR resolve_breached
                                 OR (response_decided AND resolve_decided)), 0),
                    coalesce(sum(response_decided AND resolve_decided
                                 AND NOT response_breached AND NOT resolve_breached), 0)
             FROM (SELECT i.opened_at, i.acknowledged_at, i.resolved_at,
                          i.acknowledged_at IS NOT NULL OR i.resolved_at IS NOT NULL
                              OR ?1 > i.response_due_at AS response_decided,
                          {RESPONSE_BREACHED} AS response_breached,
                          i.resolved_at IS NOT NULL OR ?1 > i.resolve_due_at AS resolve_decided,
                          {RESOLVE_BREACHED} AS resolve_breached
                   FROM incident i WHERE i.opened_at >= ?2 AND i.opened_at < ?3) i"
        ))?
        .query_row(params![now, from_ms, to_ms], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<f64>>(1)?,
                r.get::<_, Option<f64>>(2)?,
                [
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, i64>(8)?,
                ],
            ))
        })?;
    let (opened, mtta_ms, mttr_ms, [resp_decided, resp_met, res_decided, res_met, decided, met]) =
        figures;

    let resolved: i64 = tx
        .prepare_cached(
            "SELECT count(*) FROM incident WHERE resolved_at >= ?1 AND resolved_at < ?2",
        )?
        .query_row(params![from_ms, to_ms], |r| r.get(0))?;

    let top_cis = tx
        .prepare_cached(
            "SELECT i.ci_id, c.name, count(*) AS n FROM incident i LEFT JOIN ci c ON c.id = i.ci_id
             WHERE i.opened_at >= ?1 AND i.opened_at < ?2
             GROUP BY i.ci_id ORDER BY n DESC, i.ci_id LIMIT ?3",
        )?
        .query_map(params![from_ms, to_ms, KPI_TOP], |r| {
            Ok(KpiCi {
                ci_id: r.get(0)?,
                ci_name: r.get(1)?,
                incidents: r.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;

    // Incidents of a deleted rule (rule_id NULL) are counted by the name they kept.
    let top_rules = tx
        .prepare_cached(
            "SELECT i.rule_id, coalesce(r.name, max(i.rule_name)), count(*) AS n
             FROM incident i LEFT JOIN rule r ON r.id = i.rule_id
             WHERE i.opened_at >= ?1 AND i.opened_at < ?2
             GROUP BY i.rule_id, CASE WHEN i.rule_id IS NULL THEN i.rule_name END
             ORDER BY n DESC, i.rule_id IS NULL, i.rule_id, 2 LIMIT ?3",
        )?
        .query_map(params![from_ms, to_ms, KPI_TOP], |r| {
            Ok(KpiRule {
                rule_id: r.get(0)?,
                rule_name: r.get(1)?,
                incidents: r.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;

    Ok(Kpis {
        from,
        to,
        open_by_priority,
        opened,
        resolved,
        mtta_seconds: seconds(mtta_ms),
        mttr_seconds: seconds(mttr_ms),
        sla: SlaCompliance {
            response_met_percent: percent(resp_met, resp_decided),
            resolution_met_percent: percent(res_met, res_decided),
            compliance_percent: percent(met, decided),
        },
        top_cis,
        top_rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breached_filter_is_the_breach_flags_definition() {
        assert!(INCIDENT_COLUMNS.contains(&format!("{RESPONSE_BREACHED},")));
        assert!(INCIDENT_COLUMNS.contains(&format!("{RESOLVE_BREACHED},")));
    }

    #[tokio::test]
    async fn kpis_of_an_empty_store_are_zeros_and_nulls() {
        let (store, _dir) = crate::store::testing::temp_store();
        let now = time::OffsetDateTime::now_utc();
        let kpis = store
            .kpis(now - time::Duration::days(1), now, now)
            .await
            .unwrap();
        assert_eq!(kpis.opened, 0);
        assert_eq!(kpis.mtta_seconds, None);
        assert_eq!(kpis.sla.compliance_percent, None);
        assert!(kpis.top_rules.is_empty());
        store.close().await;
    }

    #[test]
    fn percents_and_seconds_round() {
        assert_eq!(percent(2, 3), Some(66.67));
        assert_eq!(percent(0, 0), None);
        assert_eq!(percent(3, 3), Some(100.0));
        assert_eq!(seconds(Some(1500.4)), Some(1.5));
        assert_eq!(seconds(None), None);
    }
}
