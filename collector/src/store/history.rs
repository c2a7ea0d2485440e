//! History: every change to a CI is one row of `history`, written in the transaction that
//! makes the change, with the time and the source of the change.
//!
//! **Promises:** a write path that changes a CI records it here through a [`Recorder`]; rows
//! are never updated or deleted, so `history.id` orders every change in commit order (the
//! change feed's cursor) and the state of a CI at any time is its current state with the later
//! rows undone (`ci_at`, `software_at`).

use std::collections::BTreeSet;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use serde_json::Value;
use time::OffsetDateTime;

use super::model::{
    CiDetail, HistoryQuery, HistoryRecord, InstalledSoftware, Page, RelationshipRecord,
};
use super::{Store, StoreError, from_ms, to_ms};

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An inventory from this agent.
    Agent(String),
    /// An inventory posted to `POST /api/v1/import` with the token of this name.
    Import(String),
    /// An admin API call with the token of this name.
    Api(String),
    /// The collector itself (a computer going stale).
    Collector,
}

impl Source {
    /// The text stored in `history.source`: `agent:<id>`, `import:<token name>`,
    /// `api:<token name>`, `collector`.
    pub fn as_text(&self) -> String {
        match self {
            Source::Agent(id) => format!("agent:{id}"),
            Source::Import(name) => format!("import:{name}"),
            Source::Api(name) => format!("api:{name}"),
            Source::Collector => "collector".to_owned(),
        }
    }
}

/// What a history row records. `field`, `old` and `new` mean, per kind:
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// The CI was created: new = `{class, name}`.
    Created,
    /// An attribute: field = its key, old/new = its values (null when absent).
    AttributeChanged,
    /// The name: old/new = the names.
    Renamed,
    /// The status (`active`, `stale`, `retired`): old/new.
    StatusChanged,
    /// The criticality: old/new (1 to 4).
    CriticalityChanged,
    /// The rule that identified the CI's latest inventory: old/new = the rule names.
    Reidentified,
    /// A package installed: field = name, new = `{name, version, arch, source, vendor}` (stored
    /// as the catalog id since schema 7; see [`HISTORY_COLUMNS`]).
    SoftwareAdded,
    /// A package removed: field = name, old = the package.
    SoftwareRemoved,
    /// A package at a newer version: field = name, old/new = the packages.
    SoftwareUpgraded,
    /// A package at an older version: field = name, old/new = the packages.
    SoftwareDowngraded,
    /// A part (filesystem, network interface) appeared: field = `class:key`, new =
    /// `{ci_id, class, key}`.
    PartAdded,
    /// A part went: field = `class:key`, old = `{ci_id, class, key}`.
    PartRemoved,
    /// A relationship made, recorded on both ends: field = its type, new = `{type, source,
    /// target}`.
    RelationshipAdded,
    /// A relationship ended, recorded on both ends: field = its type, old = the relationship.
    RelationshipRemoved,
    /// Another agent now reports this computer: old/new = the agent ids.
    AgentChanged,
    /// The CI was deleted by an admin: old = `{class, name}`.
    Deleted,
}

impl ChangeKind {
    pub const ALL: &'static [ChangeKind] = &[
        ChangeKind::Created,
        ChangeKind::AttributeChanged,
        ChangeKind::Renamed,
        ChangeKind::StatusChanged,
        ChangeKind::CriticalityChanged,
        ChangeKind::Reidentified,
        ChangeKind::SoftwareAdded,
        ChangeKind::SoftwareRemoved,
        ChangeKind::SoftwareUpgraded,
        ChangeKind::SoftwareDowngraded,
        ChangeKind::PartAdded,
        ChangeKind::PartRemoved,
        ChangeKind::RelationshipAdded,
        ChangeKind::RelationshipRemoved,
        ChangeKind::AgentChanged,
        ChangeKind::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::AttributeChanged => "attribute_changed",
            ChangeKind::Renamed => "renamed",
            ChangeKind::StatusChanged => "status_changed",
            ChangeKind::CriticalityChanged => "criticality_changed",
            ChangeKind::Reidentified => "reidentified",
            ChangeKind::SoftwareAdded => "software_added",
            ChangeKind::SoftwareRemoved => "software_removed",
            ChangeKind::SoftwareUpgraded => "software_upgraded",
            ChangeKind::SoftwareDowngraded => "software_downgraded",
            ChangeKind::PartAdded => "part_added",
            ChangeKind::PartRemoved => "part_removed",
            ChangeKind::RelationshipAdded => "relationship_added",
            ChangeKind::RelationshipRemoved => "relationship_removed",
            ChangeKind::AgentChanged => "agent_changed",
            ChangeKind::Deleted => "deleted",
        }
    }

    pub fn parse(text: &str) -> Option<ChangeKind> {
        ChangeKind::ALL.iter().copied().find(|k| k.as_str() == text)
    }
}

/// Writes history rows for the changes of one transaction, all with one time and source.
pub(crate) struct Recorder<'c> {
    conn: &'c Connection,
    ts: i64,
    source: String,
}

impl<'c> Recorder<'c> {
    /// `ts` in unix milliseconds.
    pub(crate) fn new(conn: &'c Connection, ts: i64, source: &Source) -> Recorder<'c> {
        Recorder {
            conn,
            ts,
            source: source.as_text(),
        }
    }

    pub(crate) fn record(
        &self,
        ci_id: i64,
        kind: ChangeKind,
        field: Option<&str>,
        old: Option<&Value>,
        new: Option<&Value>,
    ) -> Result<(), StoreError> {
        let json = |v: Option<&Value>| v.map(Value::to_string);
        self.conn
            .prepare_cached(
                "INSERT INTO history (ci_id, ts, kind, field, old, new, source)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                ci_id,
                self.ts,
                kind.as_str(),
                field,
                json(old),
                json(new),
                self.source
            ])?;
        Ok(())
    }

    /// Records the change of a plain value (`Renamed`, `StatusChanged`, ...) when it changed.
    pub(crate) fn changed(
        &self,
        ci_id: i64,
        kind: ChangeKind,
        old: &Value,
        new: &Value,
    ) -> Result<(), StoreError> {
        if old != new {
            self.record(ci_id, kind, None, Some(old), Some(new))?;
        }
        Ok(())
    }

    /// Records one `AttributeChanged` row per key whose value differs between two attribute
    /// objects (a key absent on one side is null there).
    pub(crate) fn attributes(
        &self,
        ci_id: i64,
        old: &Value,
        new: &Value,
    ) -> Result<(), StoreError> {
        let empty = serde_json::Map::new();
        let old = old.as_object().unwrap_or(&empty);
        let new = new.as_object().unwrap_or(&empty);
        let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            let (before, after) = (old.get(key), new.get(key));
            if before != after {
                self.record(
                    ci_id,
                    ChangeKind::AttributeChanged,
                    Some(key),
                    Some(before.unwrap_or(&Value::Null)),
                    Some(after.unwrap_or(&Value::Null)),
                )?;
            }
        }
        Ok(())
    }

    /// Records a relationship made or ended on both of its ends.
    pub(crate) fn relationship(
        &self,
        added: bool,
        kind: &str,
        source: i64,
        target: i64,
    ) -> Result<(), StoreError> {
        let rel = serde_json::json!({ "type": kind, "source": source, "target": target });
        let (change, old, new) = if added {
            (ChangeKind::RelationshipAdded, None, Some(&rel))
        } else {
            (ChangeKind::RelationshipRemoved, Some(&rel), None)
        };
        self.record(source, change, Some(kind), old, new)?;
        if target != source {
            self.record(target, change, Some(kind), old, new)?;
        }
        Ok(())
    }
}

/// A history row's columns as the API shows them. A software row (`software_added`, ...)
/// written since schema 7 holds the package's catalog id in `old` and `new` (a JSON number; the
/// row is about 100 bytes instead of 300): it reads back as the catalog row, `{name, version,
/// arch, source, vendor}`, as rows written before hold it inline. Catalog rows are never
/// deleted, so the id always resolves. The vendor shown is the catalog's: null until the
/// collector learns one, then that one for good (it is never replaced), so a row read before
/// and after the catalog learns its vendor differs in that field only.
const HISTORY_COLUMNS: &str = "id, ci_id, ts, kind, field,
    CASE WHEN kind GLOB 'software_*' AND json_type(old) = 'integer' THEN
        (SELECT json_object('name', s.name, 'version', s.version, 'arch', s.arch,
                            'source', s.source, 'vendor', s.vendor)
         FROM software s WHERE s.id = old)
    ELSE old END,
    CASE WHEN kind GLOB 'software_*' AND json_type(new) = 'integer' THEN
        (SELECT json_object('name', s.name, 'version', s.version, 'arch', s.arch,
                            'source', s.source, 'vendor', s.vendor)
         FROM software s WHERE s.id = new)
    ELSE new END,
    source";

fn history_record(row: &Row<'_>) -> rusqlite::Result<HistoryRecord> {
    let json = |text: Option<String>| {
        text.and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    };
    Ok(HistoryRecord {
        id: row.get(0)?,
        ci_id: row.get(1)?,
        at: from_ms(row.get(2)?),
        kind: row.get(3)?,
        field: row.get(4)?,
        old: json(row.get(5)?),
        new: json(row.get(6)?),
        source: row.get(7)?,
    })
}

/// Whether CI `id` exists or ever had history (a deleted CI keeps its history).
fn known_ci(conn: &Connection, id: i64) -> Result<bool, StoreError> {
    Ok(super::ci_exists(conn, id)?
        || conn
            .prepare_cached("SELECT 1 FROM history WHERE ci_id = ?1 LIMIT 1")?
            .query_row([id], |_| Ok(()))
            .optional()?
            .is_some())
}

impl Store {
    /// A CI's history, newest first; `None` when there is no such CI and never was.
    pub async fn ci_history(
        &self,
        ci_id: i64,
        query: HistoryQuery,
    ) -> Result<Option<Page<HistoryRecord, i64>>, StoreError> {
        self.reads
            .run(move |conn| {
                let tx = conn.unchecked_transaction()?;
                if !known_ci(&tx, ci_id)? {
                    return Ok(None);
                }
                history(&tx, ci_id, &query).map(Some)
            })
            .await
    }

    /// Every change after change `after` (0: from the start), oldest first, at most `limit`.
    /// The next cursor is the last change returned, or `after` when there is none yet: the
    /// feed's position never goes back.
    pub async fn changes(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<(Vec<HistoryRecord>, i64), StoreError> {
        self.reads
            .run(move |conn| {
                let items = conn
                    .prepare_cached(&format!(
                        "SELECT {HISTORY_COLUMNS} FROM history WHERE id > ?1 ORDER BY id LIMIT ?2"
                    ))?
                    .query_map(params![after, limit], history_record)?
                    .collect::<Result<Vec<_>, _>>()?;
                let next = items.last().map_or(after, |c| c.id);
                Ok((items, next))
            })
            .await
    }

    /// The CI as it was at `at`, rebuilt from its current state by undoing every later change:
    /// name, status, criticality, `identified_by`, attributes and relationships. `None` when
    /// the CI does not exist or did not exist yet at `at`. The health sample is left out (it is
    /// a time series, read through `/health`), and `last_seen` is at most `at`.
    pub async fn ci_at(
        &self,
        ci_id: i64,
        at: OffsetDateTime,
    ) -> Result<Option<CiDetail>, StoreError> {
        self.reads
            .run(move |conn| {
                let tx = conn.unchecked_transaction()?;
                let Some(mut detail) = super::cis::get_within(&tx, ci_id)? else {
                    return Ok(None);
                };
                if detail.ci.first_seen > at {
                    return Ok(None);
                }
                let ci = &mut detail.ci;
                let mut relationships: BTreeSet<(String, i64, i64)> = detail
                    .relationships
                    .iter()
                    .map(|r| (r.kind.clone(), r.source, r.target))
                    .collect();
                for change in later_changes(&tx, ci_id, at)? {
                    let old = change.old;
                    match ChangeKind::parse(&change.kind) {
                        Some(ChangeKind::AttributeChanged) => {
                            if let (Some(field), Value::Object(map)) =
                                (change.field, &mut ci.attributes)
                            {
                                if old.is_null() {
                                    map.remove(&field);
                                } else {
                                    map.insert(field, old);
                                }
                            }
                        }
                        Some(ChangeKind::Renamed) => {
                            if let Value::String(name) = old {
                                ci.name = name;
                            }
                        }
                        Some(ChangeKind::StatusChanged) => {
                            if let Value::String(status) = old {
                                ci.status = status;
                            }
                        }
                        Some(ChangeKind::CriticalityChanged) => {
                            if let Some(criticality) = old.as_i64() {
                                ci.criticality = criticality;
                            }
                        }
                        Some(ChangeKind::Reidentified) => {
                            ci.identified_by = old.as_str().map(str::to_owned);
                        }
                        Some(ChangeKind::RelationshipAdded) => {
                            if let Some(rel) = relationship_of(&change.new) {
                                relationships.remove(&rel);
                            }
                        }
                        Some(ChangeKind::RelationshipRemoved) => {
                            if let Some(rel) = relationship_of(&old) {
                                relationships.insert(rel);
                            }
                        }
                        _ => {}
                    }
                }
                ci.last_seen = ci.last_seen.min(at);
                detail.health = None;
                detail.relationships = relationships
                    .into_iter()
                    .map(|(kind, source, target)| {
                        let name = |id: i64| -> Result<String, StoreError> {
                            Ok(tx
                                .prepare_cached("SELECT name FROM ci WHERE id = ?1")?
                                .query_row([id], |r| r.get(0))
                                .optional()?
                                .unwrap_or_default())
                        };
                        Ok(RelationshipRecord {
                            source_name: name(source)?,
                            target_name: name(target)?,
                            kind,
                            source,
                            target,
                            created_at: from_ms(0),
                        })
                    })
                    .collect::<Result<_, StoreError>>()?;
                // When each relationship was made is not part of the rebuilt state.
                for rel in &mut detail.relationships {
                    rel.created_at = relationship_made(&tx, rel, at)?;
                }
                Ok(Some(detail))
            })
            .await
    }

    /// The packages installed on the CI at `at`, rebuilt from the current ones by undoing
    /// every later software change; paged like [`Store::ci_software`] (by name, then catalog
    /// id). `None` when the CI does not exist or did not exist yet at `at`.
    pub async fn ci_software_at(
        &self,
        ci_id: i64,
        at: OffsetDateTime,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Option<Page<InstalledSoftware, i64>>, StoreError> {
        self.reads
            .run(move |conn| {
                let tx = conn.unchecked_transaction()?;
                let first_seen: Option<i64> = tx
                    .prepare_cached("SELECT first_seen FROM ci WHERE id = ?1")?
                    .query_row([ci_id], |r| r.get(0))
                    .optional()?;
                match first_seen {
                    Some(first) if first <= to_ms(at) => {}
                    _ => return Ok(None),
                }
                software_at(&tx, ci_id, at, after, limit).map(Some)
            })
            .await
    }
}

fn history(
    conn: &Connection,
    ci_id: i64,
    query: &HistoryQuery,
) -> Result<Page<HistoryRecord, i64>, StoreError> {
    // Fixed fragments only; every value is a bound parameter.
    let mut sql = format!("SELECT {HISTORY_COLUMNS} FROM history WHERE ci_id = ?1");
    let mut values = vec![SqlValue::Integer(ci_id)];
    let mut bind = |sql: &mut String, fragment: &str, value: SqlValue| {
        values.push(value);
        sql.push_str(&fragment.replace("?N", &format!("?{}", values.len())));
    };
    if let Some(before) = query.before {
        bind(&mut sql, " AND id < ?N", SqlValue::Integer(before));
    }
    if let Some(from) = query.from {
        bind(&mut sql, " AND ts >= ?N", SqlValue::Integer(to_ms(from)));
    }
    if let Some(to) = query.to {
        bind(&mut sql, " AND ts <= ?N", SqlValue::Integer(to_ms(to)));
    }
    if !query.kinds.is_empty() {
        sql.push_str(" AND kind IN (");
        for (i, kind) in query.kinds.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            bind(&mut sql, "?N", SqlValue::Text(kind.as_str().to_owned()));
        }
        sql.push(')');
    }
    bind(
        &mut sql,
        " ORDER BY id DESC LIMIT ?N",
        SqlValue::Integer(i64::from(query.limit) + 1),
    );
    let mut items = conn
        .prepare_cached(&sql)?
        .query_map(params_from_iter(values), history_record)?
        .collect::<Result<Vec<_>, _>>()?;
    let next = if items.len() > query.limit as usize {
        items.truncate(query.limit as usize);
        items.last().map(|c| c.id)
    } else {
        None
    };
    Ok(Page { items, next })
}

/// The CI's changes made after `at`, newest first: the order to undo them in.
fn later_changes(
    conn: &Connection,
    ci_id: i64,
    at: OffsetDateTime,
) -> Result<Vec<HistoryRecord>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {HISTORY_COLUMNS} FROM history WHERE ci_id = ?1 AND ts > ?2 ORDER BY id DESC"
        ))?
        .query_map(params![ci_id, to_ms(at)], history_record)?
        .collect::<Result<Vec<_>, _>>()?)
}

fn relationship_of(value: &Value) -> Option<(String, i64, i64)> {
    Some((
        value.get("type")?.as_str()?.to_owned(),
        value.get("source")?.as_i64()?,
        value.get("target")?.as_i64()?,
    ))
}

/// When the relationship, as it stood at `at`, was made: its last `relationship_added` row at
/// or before `at`, else (made before history was kept, or by the CI's first inventory) the
/// stored row's time, else the source CI's first sighting.
fn relationship_made(
    conn: &Connection,
    rel: &RelationshipRecord,
    at: OffsetDateTime,
) -> Result<OffsetDateTime, StoreError> {
    let from_history: Option<i64> = conn
        .prepare_cached(
            "SELECT max(ts) FROM history
             WHERE ci_id = ?1 AND kind = 'relationship_added' AND field = ?2 AND ts <= ?3
               AND json_extract(new, '$.source') = ?1 AND json_extract(new, '$.target') = ?4",
        )?
        .query_row(params![rel.source, rel.kind, to_ms(at), rel.target], |r| {
            r.get(0)
        })?;
    if let Some(ts) = from_history {
        return Ok(from_ms(ts));
    }
    let stored: Option<i64> = conn
        .prepare_cached(
            "SELECT created_at FROM relationship WHERE source_id = ?1 AND type = ?2 AND target_id = ?3",
        )?
        .query_row(params![rel.source, rel.kind, rel.target], |r| r.get(0))
        .optional()?;
    let first_seen: Option<i64> = conn
        .prepare_cached("SELECT first_seen FROM ci WHERE id = ?1")?
        .query_row([rel.source], |r| r.get(0))
        .optional()?;
    Ok(from_ms(stored.or(first_seen).unwrap_or(0).min(to_ms(at))))
}

/// A package as a history row reads (`HISTORY_COLUMNS`): `{name, version, arch, source,
/// vendor}`, `""` for an unknown version or arch.
fn package_key(value: &Value) -> Option<(String, String, String, String)> {
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    Some((
        text("name")?,
        text("version").unwrap_or_default(),
        text("arch").unwrap_or_default(),
        text("source")?,
    ))
}

fn software_at(
    conn: &Connection,
    ci_id: i64,
    at: OffsetDateTime,
    after: Option<i64>,
    limit: u32,
) -> Result<Page<InstalledSoftware, i64>, StoreError> {
    let mut installed: BTreeSet<(String, String, String, String)> = conn
        .prepare_cached(
            "SELECT s.name, s.version, s.arch, s.source
             FROM installation i JOIN software s ON s.id = i.software_id WHERE i.ci_id = ?1",
        )?
        .query_map([ci_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<Result<_, _>>()?;
    for change in later_changes(conn, ci_id, at)? {
        let (remove, add) = match ChangeKind::parse(&change.kind) {
            Some(ChangeKind::SoftwareAdded) => (package_key(&change.new), None),
            Some(ChangeKind::SoftwareRemoved) => (None, package_key(&change.old)),
            Some(ChangeKind::SoftwareUpgraded | ChangeKind::SoftwareDowngraded) => {
                (package_key(&change.new), package_key(&change.old))
            }
            _ => continue,
        };
        if let Some(package) = remove {
            installed.remove(&package);
        }
        if let Some(package) = add {
            installed.insert(package);
        }
    }
    // Catalog rows are never deleted, so every package that was ever installed has one; its id
    // orders packages of one name and is the cursor, as in the current list.
    let mut rows = Vec::with_capacity(installed.len());
    let mut lookup = conn.prepare_cached(
        "SELECT id, name, version, arch, vendor, source FROM software
         WHERE name = ?1 AND version = ?2 AND arch = ?3 AND source = ?4",
    )?;
    for (name, version, arch, source) in installed {
        let found = lookup
            .query_row(params![name, version, arch, source], |r| {
                let known = |s: String| (!s.is_empty()).then_some(s);
                Ok((
                    r.get::<_, i64>(0)?,
                    InstalledSoftware {
                        name: r.get(1)?,
                        version: known(r.get(2)?),
                        arch: known(r.get(3)?),
                        vendor: r.get(4)?,
                        source: r.get(5)?,
                    },
                ))
            })
            .optional()?;
        if let Some(row) = found {
            rows.push(row);
        }
    }
    rows.sort_by(|(a_id, a), (b_id, b)| (&a.name, a_id).cmp(&(&b.name, b_id)));
    if let Some(after) = after {
        let after_name: Option<String> = conn
            .prepare_cached("SELECT name FROM software WHERE id = ?1")?
            .query_row([after], |r| r.get(0))
            .optional()?;
        let Some(after_name) = after_name else {
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        };
        rows.retain(|(id, sw)| (&sw.name, *id) > (&after_name, after));
    }
    let next = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|(id, _)| *id)
    } else {
        None
    };
    Ok(Page {
        items: rows.into_iter().map(|(_, sw)| sw).collect(),
        next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ingest::tests::{AGENT, batch, inventory};
    use crate::store::testing::temp_store;
    use census_common::{Report, ReportBody};

    #[tokio::test]
    async fn a_software_row_stores_the_catalog_id_and_reads_back_the_package() {
        let (store, _dir) = temp_store();
        for (seq, bash) in [(1, "5.1"), (2, "5.2")] {
            let mut inv = inventory(AGENT, &["bash", "curl"], &["/"]);
            inv.software[0].version = Some(bash.into());
            let body = ReportBody::Inventory(inv);
            store
                .ingest(batch(AGENT, vec![Report { seq, body }]))
                .await
                .unwrap();
        }
        let conn = Connection::open(store.path()).unwrap();
        let (ci_id, old, new): (i64, String, String) = conn
            .query_row(
                "SELECT ci_id, old, new FROM history WHERE kind = 'software_upgraded'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        let id_of = |version: &str| -> String {
            conn.query_row(
                "SELECT id FROM software WHERE name = 'bash' AND version = ?1",
                [version],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
            .to_string()
        };
        assert_eq!((old, new), (id_of("5.1"), id_of("5.2")));
        // A row written inline, as collectors before catalog ids did, reads the same way.
        conn.execute(
            "INSERT INTO history (ci_id, ts, kind, field, old, new, source)
             VALUES (?1, 1, 'software_removed', 'vim',
                     '{\"name\":\"vim\",\"version\":\"9.0\",\"arch\":\"amd64\",\"source\":\"dpkg\",\"vendor\":null}',
                     NULL, 'collector')",
            [ci_id],
        )
        .unwrap();

        let query = HistoryQuery {
            kinds: vec![ChangeKind::SoftwareUpgraded, ChangeKind::SoftwareRemoved],
            from: None,
            to: None,
            before: None,
            limit: 10,
        };
        let rows = store.ci_history(ci_id, query).await.unwrap().unwrap().items;
        let package = |name: &str, version: &str| {
            serde_json::json!({
                "name": name, "version": version, "arch": "amd64", "source": "dpkg",
                "vendor": null,
            })
        };
        let shown: Vec<(&str, &Value, &Value)> = rows
            .iter()
            .map(|r| (r.kind.as_str(), &r.old, &r.new))
            .collect();
        // Newest first.
        assert_eq!(
            shown,
            [
                ("software_removed", &package("vim", "9.0"), &Value::Null),
                (
                    "software_upgraded",
                    &package("bash", "5.1"),
                    &package("bash", "5.2")
                ),
            ]
        );
        store.close().await;
    }

    #[test]
    fn every_kind_round_trips() {
        for kind in ChangeKind::ALL {
            assert_eq!(ChangeKind::parse(kind.as_str()), Some(*kind));
        }
        assert_eq!(ChangeKind::parse("nope"), None);
    }
}
