//! Threshold rules in the `rule` table.

use rusqlite::{Connection, Row};

use super::{StoreError, from_ms};
use crate::incidents::rules::{Metric, Operator, Rule, Severity};

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
