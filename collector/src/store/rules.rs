//! Threshold rules in the `rule` table: what the incident engine reads ([`enabled_rules`],
//! [`rule`]) and what the rules API writes.
//!
//! # Promises
//!
//! - **Checked whole:** a rule is written only if [`validate`] accepts it as a whole (a new
//!   rule, or a stored rule with a patch applied), every CI its scope names exists, its name is
//!   unique and there are fewer than [`MAX_RULES`]; a refusal writes nothing.
//! - **No orphaned alert:** disabling a rule, changing what it watches (its metric, dimension
//!   or scope) or deleting it resolves every open incident of the rule (actor
//!   `api:<token name>`, resolution `rule disabled`, `rule changed` or `rule deleted`, with a
//!   `resolved` timeline event and webhook) and forgets its alert state, in the same
//!   transaction. Changing a threshold, an operator, a duration or the severity keeps the alert
//!   state: the next health sample is judged by the new values, so raising a threshold resolves
//!   an incident through the normal recovery (`clear_for`).
//! - Incidents outlive their rule: they keep `rule_name` and `metric`, and `rule_id` becomes
//!   null when the rule is deleted (foreign key).

use std::time::Duration;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use serde_json::json;

use super::history::Source;
use super::model::{Page, Refusable, Refusal, RuleFilter, RulePatch, RuleSpec};
use super::{Store, StoreError, from_ms, to_ms};
use crate::config::Span;
use crate::incidents::rules::{Metric, Operator, Rule, Severity};
use crate::incidents::scope::{MAX_PATTERN_CHARS, Scope};

/// The columns [`read_rule`] reads, in its order.
pub(crate) const RULE_COLUMNS: &str = "id, name, metric, dimension, scope, operator, threshold, \
     for_ms, clear_threshold, clear_for_ms, severity, enabled, created_at, updated_at";

/// A rule from a row of [`RULE_COLUMNS`].
pub(crate) fn read_rule(row: &Row<'_>) -> rusqlite::Result<Rule> {
    let corrupt = |i: usize, what: String| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            Box::new(StoreError::Corrupt(what)),
        )
    };
    let metric: String = row.get(2)?;
    let scope: String = row.get(4)?;
    let operator: String = row.get(5)?;
    let severity: String = row.get(10)?;
    Ok(Rule {
        id: row.get(0)?,
        name: row.get(1)?,
        metric: Metric::parse(&metric).ok_or_else(|| corrupt(2, format!("metric {metric:?}")))?,
        dimension: row.get(3)?,
        scope: serde_json::from_str(&scope).map_err(|e| corrupt(4, format!("scope: {e}")))?,
        operator: Operator::parse(&operator)
            .ok_or_else(|| corrupt(5, format!("operator {operator:?}")))?,
        threshold: row.get(6)?,
        for_ms: row.get(7)?,
        clear_threshold: row.get(8)?,
        clear_for_ms: row.get(9)?,
        severity: Severity::parse(&severity)
            .ok_or_else(|| corrupt(10, format!("severity {severity:?}")))?,
        enabled: row.get(11)?,
        created_at: from_ms(row.get(12)?),
        updated_at: from_ms(row.get(13)?),
    })
}

/// The enabled rules, by id.
pub(crate) fn enabled_rules(conn: &Connection) -> Result<Vec<Rule>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {RULE_COLUMNS} FROM rule WHERE enabled ORDER BY id"
    ))?;
    let rules = stmt.query_map([], read_rule)?.collect::<Result<_, _>>()?;
    Ok(rules)
}

/// Rule `id`, enabled or not.
pub(crate) fn rule(conn: &Connection, id: i64) -> Result<Option<Rule>, StoreError> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .prepare_cached(&format!("SELECT {RULE_COLUMNS} FROM rule WHERE id = ?1"))?
        .query_row([id], read_rule)
        .optional()?)
}

/// Most rules the collector keeps: every rule is judged on every health sample.
pub const MAX_RULES: i64 = 1000;
/// Longest rule name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest `for` and `clear_for`.
pub const MAX_SPAN_MS: i64 = 7 * 86_400_000;
/// The range of an `unreachable` rule's threshold, in health intervals.
pub const UNREACHABLE_INTERVALS: (f64, f64) = (1.0, 1000.0);
/// Most missing CI ids a refusal lists.
const MAX_LISTED_IDS: usize = 20;

/// A duration as the API writes it (`5m`, `1h30m`, `0s`).
pub fn span_text(ms: i64) -> String {
    Span(Duration::from_millis(ms.max(0) as u64)).to_string()
}

/// Checks a rule as a whole; the refusal's message starts with the field it is about (as the
/// API names it: `for`, `clear_for`, `scope.ci_ids`, ...). Whether the CIs of the scope exist
/// is [`check_scope_cis`]'s question.
pub fn validate(spec: &RuleSpec) -> Result<(), Refusal> {
    let invalid = |message: String| Err(Refusal::InvalidField(message));
    let chars = spec.name.chars().count();
    if chars == 0
        || chars > MAX_NAME_CHARS
        || spec.name.trim().is_empty()
        || spec.name.chars().any(char::is_control)
    {
        return invalid(format!(
            "name: 1 to {MAX_NAME_CHARS} characters, not blank and without control characters"
        ));
    }
    if !spec.threshold.is_finite() {
        return invalid("threshold: a finite number".into());
    }
    if spec.clear_threshold.is_some_and(|c| !c.is_finite()) {
        return invalid("clear_threshold: a finite number or null".into());
    }
    for (field, ms) in [("for", spec.for_ms), ("clear_for", spec.clear_for_ms)] {
        if !(0..=MAX_SPAN_MS).contains(&ms) {
            return invalid(format!(
                "{field}: from 0s to {}, not {}",
                span_text(MAX_SPAN_MS),
                span_text(ms)
            ));
        }
    }
    if let Some(pattern) = &spec.dimension {
        if !spec.metric.per_mount() {
            let per_mount: Vec<&str> = Metric::ALL
                .iter()
                .filter(|m| m.per_mount())
                .map(|m| m.as_str())
                .collect();
            return invalid(format!(
                "dimension: only the per-filesystem metrics ({}) have one (a pattern over the \
                 mount); {} has none, so leave it out or null",
                per_mount.join(", "),
                spec.metric.as_str()
            ));
        }
        let chars = pattern.chars().count();
        if chars == 0 || chars > MAX_PATTERN_CHARS {
            return invalid(format!(
                "dimension: a pattern over the mount of 1 to {MAX_PATTERN_CHARS} characters \
                 (`*` any run of characters, `?` one), like /var*"
            ));
        }
    }
    spec.scope.validate()?;
    if spec.metric == Metric::Unreachable {
        return validate_unreachable(spec);
    }
    if let Some(clear) = spec.clear_threshold {
        let rising = spec.operator.rising();
        if rising && clear > spec.threshold {
            return invalid(format!(
                "clear_threshold: a rule that fires on high values ({} {}) recovers below its \
                 threshold, so its clear threshold must be at most {} (hysteresis sits on the \
                 recovered side), not {clear}",
                spec.operator.as_str(),
                spec.threshold,
                spec.threshold
            ));
        }
        if !rising && clear < spec.threshold {
            return invalid(format!(
                "clear_threshold: a rule that fires on low values ({} {}) recovers above its \
                 threshold, so its clear threshold must be at least {} (hysteresis sits on the \
                 recovered side), not {clear}",
                spec.operator.as_str(),
                spec.threshold,
                spec.threshold
            ));
        }
    }
    Ok(())
}

/// An `unreachable` rule: silence longer than `threshold` health intervals (and at least
/// `for`) fires it, and the agent's next report resolves it.
fn validate_unreachable(spec: &RuleSpec) -> Result<(), Refusal> {
    let invalid = |message: String| Err(Refusal::InvalidField(message));
    let (least, most) = UNREACHABLE_INTERVALS;
    if spec.operator != Operator::Gt {
        return invalid(format!(
            "operator: an unreachable rule fires when the silence is longer (>) than threshold \
             health intervals, so its operator is >, not {}",
            spec.operator.as_str()
        ));
    }
    if !(least..=most).contains(&spec.threshold) {
        return invalid(format!(
            "threshold: an unreachable rule's threshold is a number of health intervals from \
             {least} to {most}, not {}",
            spec.threshold
        ));
    }
    if spec.clear_threshold.is_some() {
        return invalid(
            "clear_threshold: an unreachable rule resolves on the agent's next report, so it \
             has no clear threshold; leave it out or null"
                .into(),
        );
    }
    if spec.clear_for_ms != 0 {
        return invalid(format!(
            "clear_for: an unreachable rule resolves on the agent's next report, so clear_for \
             is 0s, not {}",
            span_text(spec.clear_for_ms)
        ));
    }
    Ok(())
}

/// Refuses a scope naming CIs that do not exist, listing them.
pub(crate) fn check_scope_cis(
    conn: &Connection,
    scope: &Scope,
) -> Result<Result<(), Refusal>, StoreError> {
    let mut missing = Vec::new();
    for id in &scope.ci_ids {
        if !super::ci_exists(conn, *id)? && !missing.contains(id) {
            missing.push(*id);
        }
    }
    if missing.is_empty() {
        return Ok(Ok(()));
    }
    let mut listed: Vec<String> = missing
        .iter()
        .take(MAX_LISTED_IDS)
        .map(i64::to_string)
        .collect();
    if missing.len() > MAX_LISTED_IDS {
        listed.push(format!("and {} more", missing.len() - MAX_LISTED_IDS));
    }
    Ok(Err(Refusal::InvalidField(format!(
        "scope.ci_ids: there is no CI with id {}",
        listed.join(", ")
    ))))
}

impl Store {
    /// Rules matching `filter`, by ascending id.
    pub async fn list_rules(&self, filter: RuleFilter) -> Result<Page<Rule, i64>, StoreError> {
        self.reads.run(move |conn| list(conn, &filter)).await
    }

    /// Rule `id`, enabled or not.
    pub async fn get_rule(&self, id: i64) -> Result<Option<Rule>, StoreError> {
        self.reads.run(move |conn| rule(conn, id)).await
    }

    /// Makes a rule; answers it as stored.
    pub async fn create_rule(
        &self,
        spec: RuleSpec,
        now: time::OffsetDateTime,
    ) -> Result<Refusable<Rule>, StoreError> {
        self.writer
            .run(move |conn| create(conn, &spec, to_ms(now)))
            .await
    }

    /// Changes a rule (see the module's promises for what a change does to its alerts and
    /// open incidents); answers it as it now is.
    pub async fn update_rule(
        &self,
        id: i64,
        patch: RulePatch,
        source: Source,
        now: time::OffsetDateTime,
    ) -> Result<Refusable<Rule>, StoreError> {
        self.writer
            .run(move |conn| update(conn, id, &patch, &source, to_ms(now)))
            .await
    }

    /// Deletes a rule, resolving its open incidents first.
    pub async fn delete_rule(
        &self,
        id: i64,
        source: Source,
        now: time::OffsetDateTime,
    ) -> Result<Refusable<()>, StoreError> {
        self.writer
            .run(move |conn| delete(conn, id, &source, to_ms(now)))
            .await
    }
}

fn list(conn: &Connection, filter: &RuleFilter) -> Result<Page<Rule, i64>, StoreError> {
    // Assembled from fixed fragments only; every value is a bound parameter.
    let mut sql = format!("SELECT {RULE_COLUMNS} FROM rule WHERE id > ?1");
    let mut values = vec![SqlValue::Integer(filter.after.unwrap_or(0))];
    if let Some(enabled) = filter.enabled {
        values.push(SqlValue::Integer(i64::from(enabled)));
        sql.push_str(&format!(" AND enabled = ?{}", values.len()));
    }
    if let Some(metric) = filter.metric {
        values.push(SqlValue::Text(metric.as_str().to_owned()));
        sql.push_str(&format!(" AND metric = ?{}", values.len()));
    }
    values.push(SqlValue::Integer(i64::from(filter.limit) + 1));
    sql.push_str(&format!(" ORDER BY id LIMIT ?{}", values.len()));
    let mut items = conn
        .prepare_cached(&sql)?
        .query_map(params_from_iter(values), read_rule)?
        .collect::<Result<Vec<_>, _>>()?;
    let next = if items.len() > filter.limit as usize {
        items.truncate(filter.limit as usize);
        items.last().map(|r| r.id)
    } else {
        None
    };
    Ok(Page { items, next })
}

/// The id of the rule named `name` other than `except`.
fn named(conn: &Connection, name: &str, except: i64) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT id FROM rule WHERE name = ?1 AND id <> ?2")?
        .query_row(params![name, except], |r| r.get(0))
        .optional()?)
}

fn duplicate(name: &str, id: i64) -> Refusal {
    Refusal::Conflict(format!(
        "name: rule {id} is already named {name:?}; rule names are unique"
    ))
}

fn no_such_rule(id: i64) -> Refusal {
    Refusal::NotFound(format!("there is no rule with id {id}"))
}

fn create(conn: &Connection, spec: &RuleSpec, now: i64) -> Result<Refusable<Rule>, StoreError> {
    if let Err(refusal) = validate(spec) {
        return Ok(Err(refusal));
    }
    if let Err(refusal) = check_scope_cis(conn, &spec.scope)? {
        return Ok(Err(refusal));
    }
    if let Some(id) = named(conn, &spec.name, 0)? {
        return Ok(Err(duplicate(&spec.name, id)));
    }
    let count: i64 = conn
        .prepare_cached("SELECT count(*) FROM rule")?
        .query_row([], |r| r.get(0))?;
    if count >= MAX_RULES {
        return Ok(Err(Refusal::Conflict(format!(
            "the collector keeps at most {MAX_RULES} rules (every rule is judged on every \
             health sample); delete or change one instead"
        ))));
    }
    let id: i64 = conn
        .prepare_cached(
            "INSERT INTO rule (name, metric, dimension, scope, operator, threshold, for_ms,
                               clear_threshold, clear_for_ms, severity, enabled, created_at,
                               updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12) RETURNING id",
        )?
        .query_row(
            params![
                spec.name,
                spec.metric.as_str(),
                spec.dimension,
                scope_json(&spec.scope)?,
                spec.operator.as_str(),
                spec.threshold,
                spec.for_ms,
                spec.clear_threshold,
                spec.clear_for_ms,
                spec.severity.as_str(),
                spec.enabled,
                now,
            ],
            |r| r.get(0),
        )?;
    let made = rule(conn, id)?.ok_or_else(|| StoreError::Corrupt(format!("rule {id} vanished")))?;
    Ok(Ok(made))
}

fn scope_json(scope: &Scope) -> Result<String, StoreError> {
    serde_json::to_string(scope).map_err(|e| StoreError::Invalid(format!("scope: {e}")))
}

/// The spec of a stored rule.
fn spec_of(rule: &Rule) -> RuleSpec {
    RuleSpec {
        name: rule.name.clone(),
        metric: rule.metric,
        dimension: rule.dimension.clone(),
        scope: rule.scope.clone(),
        operator: rule.operator,
        threshold: rule.threshold,
        for_ms: rule.for_ms,
        clear_threshold: rule.clear_threshold,
        clear_for_ms: rule.clear_for_ms,
        severity: rule.severity,
        enabled: rule.enabled,
    }
}

/// `old` with `patch` applied.
pub fn merge(old: &RuleSpec, patch: &RulePatch) -> RuleSpec {
    RuleSpec {
        name: patch.name.clone().unwrap_or_else(|| old.name.clone()),
        metric: patch.metric.unwrap_or(old.metric),
        dimension: patch
            .dimension
            .clone()
            .unwrap_or_else(|| old.dimension.clone()),
        scope: patch.scope.clone().unwrap_or_else(|| old.scope.clone()),
        operator: patch.operator.unwrap_or(old.operator),
        threshold: patch.threshold.unwrap_or(old.threshold),
        for_ms: patch.for_ms.unwrap_or(old.for_ms),
        clear_threshold: patch.clear_threshold.unwrap_or(old.clear_threshold),
        clear_for_ms: patch.clear_for_ms.unwrap_or(old.clear_for_ms),
        severity: patch.severity.unwrap_or(old.severity),
        enabled: patch.enabled.unwrap_or(old.enabled),
    }
}

/// Why a change from `old` to `new` ends the rule's alerts and open incidents, if it does.
fn ends_alerts(old: &RuleSpec, new: &RuleSpec) -> Option<&'static str> {
    if old.enabled && !new.enabled {
        Some("rule disabled")
    } else if old.metric != new.metric || old.dimension != new.dimension || old.scope != new.scope {
        Some("rule changed")
    } else {
        None
    }
}

fn update(
    conn: &Connection,
    id: i64,
    patch: &RulePatch,
    source: &Source,
    now: i64,
) -> Result<Refusable<Rule>, StoreError> {
    let Some(stored) = rule(conn, id)? else {
        return Ok(Err(no_such_rule(id)));
    };
    let old = spec_of(&stored);
    let new = merge(&old, patch);
    if let Err(refusal) = validate(&new) {
        return Ok(Err(refusal));
    }
    // A CI deleted since the scope was set does not block changes to other fields.
    if new.scope != old.scope
        && let Err(refusal) = check_scope_cis(conn, &new.scope)?
    {
        return Ok(Err(refusal));
    }
    if let Some(other) = named(conn, &new.name, id)? {
        return Ok(Err(duplicate(&new.name, other)));
    }
    if new == old {
        return Ok(Ok(stored));
    }
    conn.prepare_cached(
        "UPDATE rule SET name = ?2, metric = ?3, dimension = ?4, scope = ?5, operator = ?6,
                         threshold = ?7, for_ms = ?8, clear_threshold = ?9, clear_for_ms = ?10,
                         severity = ?11, enabled = ?12, updated_at = ?13
         WHERE id = ?1",
    )?
    .execute(params![
        id,
        new.name,
        new.metric.as_str(),
        new.dimension,
        scope_json(&new.scope)?,
        new.operator.as_str(),
        new.threshold,
        new.for_ms,
        new.clear_threshold,
        new.clear_for_ms,
        new.severity.as_str(),
        new.enabled,
        now,
    ])?;
    if let Some(reason) = ends_alerts(&old, &new) {
        resolve_open(conn, id, now, source, reason)?;
        conn.prepare_cached("DELETE FROM alert WHERE rule_id = ?1")?
            .execute([id])?;
    }
    let changed =
        rule(conn, id)?.ok_or_else(|| StoreError::Corrupt(format!("rule {id} vanished")))?;
    Ok(Ok(changed))
}

/// Resolves every open incident of rule `id`, oldest first.
fn resolve_open(
    conn: &Connection,
    id: i64,
    now: i64,
    source: &Source,
    reason: &str,
) -> Result<(), StoreError> {
    let open: Vec<i64> = conn
        .prepare_cached(
            "SELECT id FROM incident
             WHERE rule_id = ?1 AND state IN ('new', 'acknowledged', 'in_progress') ORDER BY id",
        )?
        .query_map([id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let actor = source.as_text();
    for incident in open {
        super::incidents::resolve_incident(conn, incident, now, &actor, reason, &json!({}))?;
    }
    Ok(())
}

fn delete(
    conn: &Connection,
    id: i64,
    source: &Source,
    now: i64,
) -> Result<Refusable<()>, StoreError> {
    if rule(conn, id)?.is_none() {
        return Ok(Err(no_such_rule(id)));
    }
    resolve_open(conn, id, now, source, "rule deleted")?;
    // The foreign keys delete its alert rows and set its incidents' rule_id to null.
    conn.prepare_cached("DELETE FROM rule WHERE id = ?1")?
        .execute([id])?;
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RuleSpec {
        RuleSpec {
            name: "Disk".into(),
            metric: Metric::FsUsedPercent,
            dimension: None,
            scope: Scope::default(),
            operator: Operator::Gt,
            threshold: 90.0,
            for_ms: 300_000,
            clear_threshold: Some(85.0),
            clear_for_ms: 300_000,
            severity: Severity::High,
            enabled: true,
        }
    }

    /// The field a refusal names, and its whole message.
    fn refused(spec: &RuleSpec) -> (String, String) {
        match validate(spec) {
            Err(Refusal::InvalidField(m)) => (m.split(':').next().unwrap().to_owned(), m),
            other => panic!("{spec:?} answered {other:?}"),
        }
    }

    #[test]
    fn a_sound_rule_passes() {
        validate(&spec()).unwrap();
        validate(&RuleSpec {
            dimension: Some("/var*".into()),
            clear_threshold: None,
            for_ms: 0,
            clear_for_ms: MAX_SPAN_MS,
            ..spec()
        })
        .unwrap();
        // Falling rules recover above their threshold; equal thresholds are no hysteresis.
        validate(&RuleSpec {
            metric: Metric::UptimeSecs,
            operator: Operator::Lt,
            threshold: 600.0,
            clear_threshold: Some(600.0),
            ..spec()
        })
        .unwrap();
        validate(&RuleSpec {
            metric: Metric::Unreachable,
            threshold: 3.0,
            clear_threshold: None,
            clear_for_ms: 0,
            ..spec()
        })
        .unwrap();
    }

    #[test]
    fn each_bound_names_its_field() {
        let cases: Vec<(RuleSpec, &str, &str)> = vec![
            (
                RuleSpec {
                    name: String::new(),
                    ..spec()
                },
                "name",
                "1 to 200",
            ),
            (
                RuleSpec {
                    name: "x".repeat(201),
                    ..spec()
                },
                "name",
                "1 to 200",
            ),
            (
                RuleSpec {
                    name: "   ".into(),
                    ..spec()
                },
                "name",
                "not blank",
            ),
            (
                RuleSpec {
                    threshold: f64::NAN,
                    ..spec()
                },
                "threshold",
                "finite",
            ),
            (
                RuleSpec {
                    clear_threshold: Some(f64::INFINITY),
                    ..spec()
                },
                "clear_threshold",
                "finite",
            ),
            (
                RuleSpec {
                    for_ms: MAX_SPAN_MS + 1,
                    ..spec()
                },
                "for",
                "from 0s to 7d, not 7d1ms",
            ),
            (
                RuleSpec {
                    clear_for_ms: -1,
                    ..spec()
                },
                "clear_for",
                "from 0s to 7d",
            ),
            (
                RuleSpec {
                    metric: Metric::CpuPercent,
                    dimension: Some("/".into()),
                    ..spec()
                },
                "dimension",
                "fs_used_percent, fs_inodes_used_percent",
            ),
            (
                RuleSpec {
                    dimension: Some(String::new()),
                    ..spec()
                },
                "dimension",
                "1 to 255",
            ),
            (
                RuleSpec {
                    scope: Scope {
                        criticality: vec![9],
                        ..Scope::default()
                    },
                    ..spec()
                },
                "scope.criticality",
                "1 (highest) to 4",
            ),
            (
                RuleSpec {
                    clear_threshold: Some(95.0),
                    ..spec()
                },
                "clear_threshold",
                "at most 90",
            ),
            (
                RuleSpec {
                    operator: Operator::Le,
                    threshold: 10.0,
                    clear_threshold: Some(5.0),
                    ..spec()
                },
                "clear_threshold",
                "at least 10",
            ),
            (
                RuleSpec {
                    metric: Metric::Unreachable,
                    operator: Operator::Ge,
                    threshold: 3.0,
                    clear_threshold: None,
                    clear_for_ms: 0,
                    ..spec()
                },
                "operator",
                "is >, not >=",
            ),
            (
                RuleSpec {
                    metric: Metric::Unreachable,
                    threshold: 0.5,
                    clear_threshold: None,
                    clear_for_ms: 0,
                    ..spec()
                },
                "threshold",
                "from 1 to 1000",
            ),
            (
                RuleSpec {
                    metric: Metric::Unreachable,
                    threshold: 3.0,
                    clear_threshold: Some(2.0),
                    clear_for_ms: 0,
                    ..spec()
                },
                "clear_threshold",
                "next report",
            ),
            (
                RuleSpec {
                    metric: Metric::Unreachable,
                    threshold: 3.0,
                    clear_threshold: None,
                    ..spec()
                },
                "clear_for",
                "0s, not 5m",
            ),
        ];
        for (bad, field, says) in cases {
            let (named, message) = refused(&bad);
            assert_eq!(named, field, "{message}");
            assert!(message.contains(says), "{message:?} should say {says:?}");
        }
    }

    #[test]
    fn only_a_change_of_what_is_watched_or_disabling_ends_alerts() {
        let old = spec();
        let change = |patch: RulePatch| ends_alerts(&old, &merge(&old, &patch));
        assert_eq!(
            change(RulePatch {
                enabled: Some(false),
                metric: Some(Metric::FsInodesUsedPercent),
                ..RulePatch::default()
            }),
            Some("rule disabled")
        );
        assert_eq!(
            change(RulePatch {
                dimension: Some(Some("/srv".into())),
                ..RulePatch::default()
            }),
            Some("rule changed")
        );
        assert_eq!(
            change(RulePatch {
                scope: Some(Scope {
                    ci_ids: vec![1],
                    ..Scope::default()
                }),
                ..RulePatch::default()
            }),
            Some("rule changed")
        );
        assert_eq!(
            change(RulePatch {
                threshold: Some(99.0),
                clear_threshold: Some(None),
                severity: Some(Severity::Low),
                name: Some("Renamed".into()),
                ..RulePatch::default()
            }),
            None
        );
        let disabled = RuleSpec {
            enabled: false,
            ..spec()
        };
        assert_eq!(
            ends_alerts(
                &disabled,
                &merge(
                    &disabled,
                    &RulePatch {
                        enabled: Some(true),
                        ..RulePatch::default()
                    }
                )
            ),
            None
        );
    }

    #[test]
    fn merge_clears_only_what_is_set_to_null() {
        let old = RuleSpec {
            dimension: Some("/var".into()),
            ..spec()
        };
        let kept = merge(&old, &RulePatch::default());
        assert_eq!(kept, old);
        let cleared = merge(
            &old,
            &RulePatch {
                dimension: Some(None),
                clear_threshold: Some(None),
                ..RulePatch::default()
            },
        );
        assert_eq!(cleared.dimension, None);
        assert_eq!(cleared.clear_threshold, None);
        assert_eq!(cleared.threshold, 90.0);
    }

    #[tokio::test]
    async fn the_store_refuses_duplicates_missing_cis_and_the_1001st_rule() {
        let (store, _dir) = crate::store::testing::temp_store();
        let now = time::OffsetDateTime::now_utc();
        let defaults = store
            .list_rules(RuleFilter {
                limit: 1000,
                ..RuleFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(defaults.items.len(), 5);
        let made = store.create_rule(spec(), now).await.unwrap().unwrap();
        assert_eq!(made.name, "Disk");
        assert_eq!(made.clear_threshold, Some(85.0));
        let again = store.create_rule(spec(), now).await.unwrap();
        assert_eq!(
            again,
            Err(duplicate("Disk", made.id)),
            "a duplicate name names the rule that has it"
        );
        let missing = RuleSpec {
            name: "Scoped".into(),
            scope: Scope {
                ci_ids: vec![7, 7, 8],
                ..Scope::default()
            },
            ..spec()
        };
        assert_eq!(
            store.create_rule(missing, now).await.unwrap(),
            Err(Refusal::InvalidField(
                "scope.ci_ids: there is no CI with id 7, 8".into()
            ))
        );
        // Up to the cap in one transaction of another connection: a job each would take a
        // thousand commits.
        Connection::open(store.path())
            .unwrap()
            .execute(
                "WITH RECURSIVE n(i) AS (SELECT 7 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
                 INSERT INTO rule (name, metric, scope, operator, threshold, for_ms,
                                   clear_for_ms, severity, created_at, updated_at)
                 SELECT 'rule ' || i, 'cpu_percent', '{}', '>', 90, 0, 0, 'low', 0, 0 FROM n",
                [MAX_RULES],
            )
            .unwrap();
        assert!(matches!(
            store.create_rule(spec(), now).await.unwrap(),
            Err(Refusal::Conflict(m)) if m.contains("already named")
        ));
        let over = RuleSpec {
            name: "one too many".into(),
            ..spec()
        };
        assert!(matches!(
            store.create_rule(over, now).await.unwrap(),
            Err(Refusal::Conflict(m)) if m.contains("at most 1000 rules")
        ));
        let all = store
            .list_rules(RuleFilter {
                limit: 1000,
                ..RuleFilter::default()
            })
            .await
            .unwrap();
        assert_eq!((all.items.len(), all.next), (1000, None));
        store.close().await;
    }
}
