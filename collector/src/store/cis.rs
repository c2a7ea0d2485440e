//! Reading configuration items: the filtered, sorted list and one CI with its relationships.
//!
//! # The list
//!
//! Every filter of [`CiFilter`] is a fixed SQL fragment with bound parameters; they combine
//! with AND. "Contains" filters are `LIKE '%…%' ESCAPE '\'` with `%`, `_` and `\` escaped, so
//! they match the text literally; SQLite's LIKE folds ASCII letters only. Without a `status`
//! filter retired CIs are left out unless `include_retired`.
//!
//! **Order and paging (keyset).** The list is ordered by the sort key and then by id, both in
//! the asked direction, so the order is total. A page ends at a position (the key value and
//! the id of its last CI, [`CiPosition`]); the next page is the CIs strictly after it,
//! `WHERE (key, id) > (?, ?)` (`<` descending), never an offset. So a CI inserted or changed
//! while a client walks the pages neither shifts nor repeats the others: every CI that exists
//! from the first page to the last and keeps its sort key is returned exactly once. A CI
//! whose sort key changes during the walk (`last_seen` moves with every report) is returned
//! where its key was when its page was read: possibly twice or not at all.
//!
//! **NULLs.** Only the attribute keys (`hostname`, `os_name`, `os_version`, `vendor`, `model`,
//! `serial`) can be NULL, on CIs that lack the attribute. NULLs sort after every value in
//! ascending order and so first in descending order (descending is exactly ascending
//! reversed, as PostgreSQL orders by default), by id among themselves. The list reads in two
//! segments, the CIs with the key and those without, each an index range in (key, id) order;
//! a position with a NULL key is in the second segment (first when descending).
//!
//! **Indexes.** The `ci` indexes on each filter column and sort key serve the ranges (an index
//! on `key` is ordered by (key, rowid), which is exactly the list order). `has_software` is an
//! `IN` subquery from `software(name)` through `installation(software_id)`, so it reads only
//! the installations of that package. `last_seen` (sort and `last_seen_after`) is computed
//! from the CI and its agent row and reads every candidate CI: health samples update only the
//! agent row, which keeps each sample to one page write.

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params_from_iter};

use time::OffsetDateTime;

use super::model::{
    CiDetail, CiFilter, CiPosition, CiRecord, CiSort, CiSortKey, Page, RelationshipRecord,
    SortKind, SortValue,
};
use super::{Store, StoreError, from_ms};

/// Columns of a [`CiRecord`], for `ci c LEFT JOIN agent a ON a.ci_id = c.id`. A computer's
/// `last_seen` is the later of its row and its agent's last report: health samples move only
/// the agent row, which keeps each sample to one page write.
const CI_COLUMNS: &str = "c.id, c.class, c.name, c.status, c.criticality, c.attributes, \
     c.identified_by, c.first_seen, max(c.last_seen, coalesce(a.last_seen, c.last_seen))";

/// The `last_seen` of [`CI_COLUMNS`], as a sort key.
const LAST_SEEN: &str = "max(c.last_seen, coalesce(a.last_seen, c.last_seen))";

fn ci_record(row: &Row<'_>) -> rusqlite::Result<(CiRecord, String)> {
    Ok((
        CiRecord {
            id: row.get(0)?,
            class: row.get(1)?,
            name: row.get(2)?,
            status: row.get(3)?,
            criticality: row.get(4)?,
            attributes: serde_json::Value::Null,
            identified_by: row.get(6)?,
            first_seen: from_ms(row.get(7)?),
            last_seen: from_ms(row.get(8)?),
        },
        row.get(5)?,
    ))
}

fn with_attributes((mut ci, attributes): (CiRecord, String)) -> Result<CiRecord, StoreError> {
    ci.attributes = serde_json::from_str(&attributes)
        .map_err(|e| StoreError::Corrupt(format!("attributes of ci {}: {e}", ci.id)))?;
    Ok(ci)
}

impl Store {
    /// CIs matching `filter` in its sort order, after its position, at most `filter.limit`
    /// of them; `next` is the position of the last one when more follow.
    pub async fn list_cis(
        &self,
        filter: CiFilter,
    ) -> Result<Page<CiRecord, CiPosition>, StoreError> {
        self.reads.run(move |conn| list(conn, &filter)).await
    }

    /// One CI with its latest health sample and relationships; `None` if there is no such CI.
    pub async fn get_ci(&self, id: i64) -> Result<Option<CiDetail>, StoreError> {
        self.reads.run(move |conn| get(conn, id)).await
    }
}

/// A statement assembled from fixed fragments, with every value a numbered bound parameter.
struct Query {
    sql: String,
    values: Vec<SqlValue>,
}

impl Query {
    /// Binds `value` and answers its placeholder (`?N`), to be used in a fragment.
    fn bind(&mut self, value: SqlValue) -> String {
        self.values.push(value);
        format!("?{}", self.values.len())
    }

    fn text(&mut self, value: &str) -> String {
        self.bind(SqlValue::Text(value.to_owned()))
    }
}

/// A `LIKE` pattern matching `text` anywhere, with `%`, `_` and the escape `\` taken literally.
fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// The SQL expression of a sort key over `ci c LEFT JOIN agent a`.
fn key_expr(key: CiSortKey) -> &'static str {
    match key {
        CiSortKey::Id => "c.id",
        CiSortKey::Name => "c.name",
        CiSortKey::Hostname => "c.hostname",
        CiSortKey::OsName => "c.os_name",
        CiSortKey::OsVersion => "c.os_version",
        CiSortKey::Vendor => "c.vendor",
        CiSortKey::Model => "c.model",
        CiSortKey::Serial => "c.serial",
        CiSortKey::Criticality => "c.criticality",
        CiSortKey::LastSeen => LAST_SEEN,
        CiSortKey::FirstSeen => "c.first_seen",
        CiSortKey::Class => "c.class",
        CiSortKey::Status => "c.status",
    }
}

/// The filters' conditions, each starting with ` AND `.
fn push_filters(q: &mut Query, filter: &CiFilter) {
    let exact = |q: &mut Query, column: &str, value: &Option<String>| {
        if let Some(value) = value {
            let p = q.text(value);
            q.sql.push_str(&format!(" AND {column} = {p}"));
        }
    };
    exact(q, "c.class", &filter.class);
    match &filter.status {
        Some(_) => exact(q, "c.status", &filter.status),
        None if !filter.include_retired => q.sql.push_str(" AND c.status <> 'retired'"),
        None => {}
    }
    exact(q, "c.name", &filter.name);
    exact(q, "c.hostname", &filter.hostname);
    exact(q, "c.os_name", &filter.os_name);
    exact(q, "c.os_version", &filter.os_version);
    exact(q, "c.vendor", &filter.vendor);
    exact(q, "c.model", &filter.model);
    exact(q, "c.serial", &filter.serial);
    for (column, text) in [
        ("c.name", &filter.name_contains),
        ("c.hostname", &filter.hostname_contains),
    ] {
        if let Some(text) = text {
            let p = q.text(&contains_pattern(text));
            q.sql
                .push_str(&format!(" AND {column} LIKE {p} ESCAPE '\\'"));
        }
    }
    if let Some(prefix) = &filter.name_prefix {
        // A range on the name index: every string starting with the prefix sorts between the
        // prefix and the prefix followed by the highest code point.
        let p = q.text(prefix);
        q.sql.push_str(&format!(
            " AND c.name >= {p} AND c.name < {p} || char(1114111)"
        ));
    }
    if let Some(os) = &filter.os {
        let p = q.text(os);
        q.sql
            .push_str(&format!(" AND (c.os_name = {p} OR c.os_family = {p})"));
    }
    if let Some(criticality) = filter.criticality {
        let p = q.bind(SqlValue::Integer(criticality));
        q.sql.push_str(&format!(" AND c.criticality = {p}"));
    }
    if let Some(max) = filter.criticality_max {
        let p = q.bind(SqlValue::Integer(max));
        q.sql.push_str(&format!(" AND c.criticality <= {p}"));
    }
    if let Some(before) = filter.last_seen_before {
        // Split over the two rows so that the CI's part is a range on `ci_last_seen`.
        let p = q.bind(SqlValue::Integer(ceil_ms(before)));
        q.sql.push_str(&format!(
            " AND c.last_seen < {p} AND (a.last_seen IS NULL OR a.last_seen < {p})"
        ));
    }
    if let Some(after) = filter.last_seen_after {
        let p = q.bind(SqlValue::Integer(ceil_ms(after)));
        q.sql
            .push_str(&format!(" AND (c.last_seen >= {p} OR a.last_seen >= {p})"));
    }
    if let Some(software) = &filter.has_software {
        let name = q.text(&software.name);
        q.sql.push_str(&format!(
            " AND c.id IN (SELECT i.ci_id FROM software s \
             JOIN installation i ON i.software_id = s.id WHERE s.name = {name}"
        ));
        if let Some(version) = &software.version {
            let p = q.text(version);
            q.sql.push_str(&format!(" AND s.version = {p}"));
        }
        q.sql.push(')');
    }
}

/// The smallest whole millisecond at or after `t`: for a stored time `x` in milliseconds,
/// `x < t` exactly when `x < ceil_ms(t)`, and `x >= t` exactly when `x >= ceil_ms(t)`.
fn ceil_ms(t: OffsetDateTime) -> i64 {
    let nanos = t.unix_timestamp_nanos();
    let ms = nanos.div_euclid(1_000_000) + i128::from(nanos.rem_euclid(1_000_000) != 0);
    // RFC 3339 years stop at 9999, well inside i64 milliseconds.
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// A part of the list read with one statement: for a key that can be NULL, the CIs that have
/// it and those that do not are two index ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    /// The key is never NULL: the whole list.
    All,
    WithKey,
    WithoutKey,
}

fn segments(sort: CiSort) -> &'static [Segment] {
    match (sort.key.kind(), sort.descending) {
        (SortKind::NullableText, false) => &[Segment::WithKey, Segment::WithoutKey],
        (SortKind::NullableText, true) => &[Segment::WithoutKey, Segment::WithKey],
        _ => &[Segment::All],
    }
}

/// The segment a position is in.
fn segment_of(sort: CiSort, position: &CiPosition) -> Segment {
    match (sort.key.kind(), &position.key) {
        (SortKind::NullableText, SortValue::Null) => Segment::WithoutKey,
        (SortKind::NullableText, _) => Segment::WithKey,
        _ => Segment::All,
    }
}

/// One segment's statement: the CIs of `segment` matching the filter, after `position` (when
/// the position is in this segment), in list order, at most `limit`.
fn segment_query(
    filter: &CiFilter,
    segment: Segment,
    position: Option<&CiPosition>,
    limit: usize,
) -> Query {
    let key = key_expr(filter.sort.key);
    let mut q = Query {
        sql: format!(
            "SELECT {CI_COLUMNS}, {key} FROM ci c LEFT JOIN agent a ON a.ci_id = c.id WHERE 1"
        ),
        values: Vec::new(),
    };
    push_filters(&mut q, filter);
    let (cmp, dir) = if filter.sort.descending {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    match segment {
        Segment::All => {}
        Segment::WithKey => q.sql.push_str(&format!(" AND {key} IS NOT NULL")),
        Segment::WithoutKey => q.sql.push_str(&format!(" AND {key} IS NULL")),
    }
    if let Some(position) = position {
        let id = q.bind(SqlValue::Integer(position.id));
        if filter.sort.key == CiSortKey::Id || segment == Segment::WithoutKey {
            q.sql.push_str(&format!(" AND c.id {cmp} {id}"));
        } else {
            let value = q.bind(match &position.key {
                SortValue::Null => SqlValue::Null,
                SortValue::Integer(n) => SqlValue::Integer(*n),
                SortValue::Text(t) => SqlValue::Text(t.clone()),
            });
            q.sql
                .push_str(&format!(" AND ({key}, c.id) {cmp} ({value}, {id})"));
        }
    }
    if filter.sort.key == CiSortKey::Id || segment == Segment::WithoutKey {
        q.sql.push_str(&format!(" ORDER BY c.id {dir}"));
    } else {
        q.sql
            .push_str(&format!(" ORDER BY {key} {dir}, c.id {dir}"));
    }
    let limit = q.bind(SqlValue::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
    q.sql.push_str(&format!(" LIMIT {limit}"));
    q
}

fn sort_value(value: rusqlite::types::Value, id: i64) -> Result<SortValue, StoreError> {
    use rusqlite::types::Value as V;
    match value {
        V::Null => Ok(SortValue::Null),
        V::Integer(n) => Ok(SortValue::Integer(n)),
        V::Text(t) => Ok(SortValue::Text(t)),
        other => Err(StoreError::Corrupt(format!(
            "sort key of ci {id} is {:?}, not text or an integer",
            other.data_type()
        ))),
    }
}

fn list(conn: &Connection, filter: &CiFilter) -> Result<Page<CiRecord, CiPosition>, StoreError> {
    // One read transaction, so the segments are read from one snapshot.
    let tx = conn.unchecked_transaction()?;
    let wanted = filter.limit as usize + 1;
    let mut rows: Vec<(CiRecord, CiPosition)> = Vec::with_capacity(wanted.min(1024));
    let order = segments(filter.sort);
    let (first, mut position) = match &filter.after {
        Some(after) => {
            let at = segment_of(filter.sort, after);
            (
                order.iter().position(|s| *s == at).unwrap_or(0),
                Some(after),
            )
        }
        None => (0, None),
    };
    for &segment in &order[first..] {
        if rows.len() == wanted {
            break;
        }
        let q = segment_query(filter, segment, position, wanted - rows.len());
        let mut stmt = tx.prepare_cached(&q.sql)?;
        let found = stmt
            .query_map(params_from_iter(q.values), |row| {
                Ok((ci_record(row)?, row.get::<_, rusqlite::types::Value>(9)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        for (record, key) in found {
            let ci = with_attributes(record)?;
            let key = sort_value(key, ci.id)?;
            let id = ci.id;
            rows.push((ci, CiPosition { key, id }));
        }
        // Later segments start at their beginning.
        position = None;
    }
    let next = if rows.len() > filter.limit as usize {
        rows.truncate(filter.limit as usize);
        rows.last().map(|(_, position)| position.clone())
    } else {
        None
    };
    Ok(Page {
        items: rows.into_iter().map(|(ci, _)| ci).collect(),
        next,
    })
}

fn get(conn: &Connection, id: i64) -> Result<Option<CiDetail>, StoreError> {
    let tx = conn.unchecked_transaction()?;
    get_within(&tx, id)
}

/// [`get`] inside the caller's read transaction.
pub(super) fn get_within(tx: &Connection, id: i64) -> Result<Option<CiDetail>, StoreError> {
    let found = tx
        .prepare_cached(&format!(
            "SELECT {CI_COLUMNS} FROM ci c LEFT JOIN agent a ON a.ci_id = c.id WHERE c.id = ?1"
        ))?
        .query_row([id], ci_record)
        .optional()?;
    let Some(found) = found else {
        return Ok(None);
    };
    let ci = with_attributes(found)?;
    let health: Option<Vec<u8>> = tx
        .prepare_cached("SELECT latest_health FROM agent WHERE ci_id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?
        .flatten();
    let health = health
        .map(|blob| {
            rmp_serde::from_slice(&blob)
                .map_err(|e| StoreError::Corrupt(format!("latest health of ci {id}: {e}")))
        })
        .transpose()?;
    let relationships = tx
        .prepare_cached(
            "SELECT r.type, r.source_id, s.name, r.target_id, t.name, r.created_at
             FROM relationship r JOIN ci s ON s.id = r.source_id JOIN ci t ON t.id = r.target_id
             WHERE r.source_id = ?1
             UNION ALL
             SELECT r.type, r.source_id, s.name, r.target_id, t.name, r.created_at
             FROM relationship r JOIN ci s ON s.id = r.source_id JOIN ci t ON t.id = r.target_id
             WHERE r.target_id = ?1 AND r.source_id <> ?1
             ORDER BY 1, 2, 4",
        )?
        .query_map([id], |r| {
            Ok(RelationshipRecord {
                kind: r.get(0)?,
                source: r.get(1)?,
                source_name: r.get(2)?,
                target: r.get(3)?,
                target_name: r.get(4)?,
                created_at: from_ms(r.get(5)?),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(CiDetail {
        ci,
        health,
        relationships,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ingest::tests::{AGENT, batch, health, inventory, inventory_batch};
    use crate::store::model::{IngestBatch, SoftwareMatch};
    use crate::store::testing::temp_store;
    use census_common::{Report, ReportBody};
    use std::path::Path;
    use time::macros::datetime;

    fn filter() -> CiFilter {
        CiFilter {
            limit: 100,
            ..CiFilter::default()
        }
    }

    fn names(page: &Page<CiRecord, CiPosition>) -> Vec<&str> {
        page.items.iter().map(|c| c.name.as_str()).collect()
    }

    /// One CI of the fixture, with what the list should compute for it.
    struct Row {
        id: i64,
        class: &'static str,
        name: &'static str,
        status: &'static str,
        criticality: i64,
        attributes: serde_json::Value,
        first_seen: i64,
        last_seen: i64,
        /// The agent row's `last_seen`, for a computer with an agent.
        agent_seen: Option<i64>,
    }

    impl Row {
        fn key(&self, key: CiSortKey) -> SortValue {
            let text = |name: &str| match self.attributes.get(name) {
                Some(serde_json::Value::String(s)) => SortValue::Text(s.clone()),
                _ => SortValue::Null,
            };
            match key {
                CiSortKey::Id => SortValue::Integer(self.id),
                CiSortKey::Name => SortValue::Text(self.name.into()),
                CiSortKey::Hostname => text("hostname"),
                CiSortKey::OsName => text("os_name"),
                CiSortKey::OsVersion => text("os_version"),
                CiSortKey::Vendor => text("vendor"),
                CiSortKey::Model => text("model"),
                CiSortKey::Serial => text("serial"),
                CiSortKey::Criticality => SortValue::Integer(self.criticality),
                CiSortKey::LastSeen => {
                    SortValue::Integer(self.last_seen.max(self.agent_seen.unwrap_or(0)))
                }
                CiSortKey::FirstSeen => SortValue::Integer(self.first_seen),
                CiSortKey::Class => SortValue::Text(self.class.into()),
                CiSortKey::Status => SortValue::Text(self.status.into()),
            }
        }
    }

    fn rows() -> Vec<Row> {
        use serde_json::json;
        let row = |id, class, name, status, criticality, attributes, last_seen| Row {
            id,
            class,
            name,
            status,
            criticality,
            attributes,
            first_seen: 1_000 - id * 10,
            last_seen,
            agent_seen: None,
        };
        vec![
            Row {
                agent_seen: Some(9_000),
                ..row(
                    1,
                    "computer",
                    "web-1",
                    "active",
                    2,
                    json!({ "hostname": "web-1", "os_name": "Debian GNU/Linux",
                        "os_family": "linux", "os_version": "12", "vendor": "Dell Inc.",
                        "model": "R640", "serial": "SN-1" }),
                    5_000,
                )
            },
            Row {
                agent_seen: Some(1_500),
                ..row(
                    2,
                    "computer",
                    "Web-2",
                    "stale",
                    1,
                    json!({ "hostname": "Web-2", "os_name": "Rocky Linux", "os_family": "linux",
                        "os_version": "9", "vendor": "HPE", "model": "DL380",
                        "serial": "SN-2" }),
                    2_000,
                )
            },
            row(
                3,
                "computer",
                "db_1%",
                "active",
                3,
                json!({ "hostname": "db_1%", "os_name": "Debian GNU/Linux", "os_family": "linux",
                    "os_version": "11", "vendor": "Dell Inc." }),
                3_000,
            ),
            row(
                4,
                "filesystem",
                "web-1:/",
                "active",
                3,
                json!({ "mount": "/" }),
                5_000,
            ),
            row(
                5,
                "computer",
                "old-1",
                "retired",
                4,
                json!({ "hostname": "old-1", "os_name": "Windows", "os_family": "windows",
                    "vendor": "Lenovo", "serial": "SN-1" }),
                100,
            ),
            row(
                6,
                "computer",
                "dbx1",
                "active",
                3,
                json!({ "hostname": "dbx1", "os_name": "Rocky Linux", "os_family": "linux",
                    "os_version": "9", "model": "R640" }),
                3_000,
            ),
            row(
                7,
                "computer",
                "back\\slash",
                "active",
                3,
                json!({ "hostname": "BACK\\SLASH", "vendor": "HPE", "serial": "SN-7" }),
                4_000,
            ),
            row(
                8,
                "network_interface",
                "web-1:eth0",
                "retired",
                3,
                json!({ "mac": "02:00:00:00:00:01" }),
                5_000,
            ),
        ]
    }

    /// A migrated in-memory database with [`rows`], their agents, and packages: openssl
    /// 3.0.11 on 1 and 3, openssl 1.1.1w on 2, bash on 1 and 6.
    fn fixture() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::migrations::migrate(&mut conn, Path::new(":memory:")).unwrap();
        for r in rows() {
            conn.execute(
                "INSERT INTO ci (id, class, name, status, criticality, attributes, \
                 identified_by, first_seen, last_seen) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, ?7, ?8)",
                rusqlite::params![
                    r.id,
                    r.class,
                    r.name,
                    r.status,
                    r.criticality,
                    r.attributes.to_string(),
                    r.first_seen,
                    r.last_seen
                ],
            )
            .unwrap();
            if let Some(seen) = r.agent_seen {
                conn.execute(
                    "INSERT INTO agent (agent_id, ci_id, last_seen) VALUES (?1, ?2, ?3)",
                    rusqlite::params![format!("agent-{}", r.id), r.id, seen],
                )
                .unwrap();
            }
        }
        conn.execute_batch(
            "INSERT INTO software (id, name, version, arch, source) VALUES
                 (1, 'openssl', '3.0.11', 'amd64', 'dpkg'),
                 (2, 'openssl', '1.1.1w', 'amd64', 'dpkg'),
                 (3, 'bash', '5.2', 'amd64', 'dpkg'),
                 (4, 'open_ssl', '1', 'amd64', 'dpkg');
             INSERT INTO installation (ci_id, software_id, first_seen) VALUES
                 (1, 1, 0), (3, 1, 0), (2, 2, 0), (1, 3, 0), (6, 3, 0), (7, 4, 0);",
        )
        .unwrap();
        conn
    }

    fn ids(conn: &Connection, filter: &CiFilter) -> Vec<i64> {
        list(conn, filter)
            .unwrap()
            .items
            .iter()
            .map(|c| c.id)
            .collect()
    }

    fn at(ms: i64) -> OffsetDateTime {
        from_ms(ms)
    }

    #[test]
    fn each_filter_selects_exactly_its_cis() {
        let conn = fixture();
        let text = |s: &str| Some(s.to_owned());
        let cases: Vec<(&str, CiFilter, Vec<i64>)> = vec![
            (
                "no filter: retired left out",
                filter(),
                vec![1, 2, 3, 4, 6, 7],
            ),
            (
                "class",
                CiFilter {
                    class: text("filesystem"),
                    ..filter()
                },
                vec![4],
            ),
            (
                "status",
                CiFilter {
                    status: text("stale"),
                    ..filter()
                },
                vec![2],
            ),
            (
                "status=retired shows retired",
                CiFilter {
                    status: text("retired"),
                    ..filter()
                },
                vec![5, 8],
            ),
            (
                "include_retired",
                CiFilter {
                    include_retired: true,
                    ..filter()
                },
                vec![1, 2, 3, 4, 5, 6, 7, 8],
            ),
            (
                "status wins over include_retired",
                CiFilter {
                    status: text("active"),
                    include_retired: true,
                    ..filter()
                },
                vec![1, 3, 4, 6, 7],
            ),
            (
                "name is exact",
                CiFilter {
                    name: text("web-1"),
                    ..filter()
                },
                vec![1],
            ),
            (
                "name is case-sensitive",
                CiFilter {
                    name: text("WEB-1"),
                    ..filter()
                },
                vec![],
            ),
            (
                "name_prefix",
                CiFilter {
                    name_prefix: text("web-1"),
                    ..filter()
                },
                vec![1, 4],
            ),
            (
                "name_prefix is case-sensitive",
                CiFilter {
                    name_prefix: text("Web"),
                    ..filter()
                },
                vec![2],
            ),
            (
                "name_contains folds ASCII case",
                CiFilter {
                    name_contains: text("WEB-"),
                    ..filter()
                },
                vec![1, 2, 4],
            ),
            (
                "name_contains: _ is literal",
                CiFilter {
                    name_contains: text("b_1"),
                    ..filter()
                },
                vec![3],
            ),
            (
                "name_contains: % is literal",
                CiFilter {
                    name_contains: text("1%"),
                    ..filter()
                },
                vec![3],
            ),
            (
                "name_contains: a lone % matches only a %",
                CiFilter {
                    name_contains: text("%"),
                    ..filter()
                },
                vec![3],
            ),
            (
                "name_contains: \\ is literal",
                CiFilter {
                    name_contains: text("k\\s"),
                    ..filter()
                },
                vec![7],
            ),
            (
                "hostname is exact",
                CiFilter {
                    hostname: text("web-1"),
                    ..filter()
                },
                vec![1],
            ),
            (
                "hostname_contains folds ASCII case",
                CiFilter {
                    hostname_contains: text("slash"),
                    ..filter()
                },
                vec![7],
            ),
            (
                "hostname_contains: _ is literal",
                CiFilter {
                    hostname_contains: text("_"),
                    ..filter()
                },
                vec![3],
            ),
            (
                "os: name",
                CiFilter {
                    os: text("Rocky Linux"),
                    ..filter()
                },
                vec![2, 6],
            ),
            (
                "os: family",
                CiFilter {
                    os: text("linux"),
                    ..filter()
                },
                vec![1, 2, 3, 6],
            ),
            (
                "os_name",
                CiFilter {
                    os_name: text("Debian GNU/Linux"),
                    ..filter()
                },
                vec![1, 3],
            ),
            (
                "os_name is not the family",
                CiFilter {
                    os_name: text("linux"),
                    ..filter()
                },
                vec![],
            ),
            (
                "os_version",
                CiFilter {
                    os_version: text("9"),
                    ..filter()
                },
                vec![2, 6],
            ),
            (
                "vendor",
                CiFilter {
                    vendor: text("Dell Inc."),
                    ..filter()
                },
                vec![1, 3],
            ),
            (
                "model",
                CiFilter {
                    model: text("R640"),
                    ..filter()
                },
                vec![1, 6],
            ),
            (
                "serial (the retired CI with the same serial is left out)",
                CiFilter {
                    serial: text("SN-1"),
                    ..filter()
                },
                vec![1],
            ),
            (
                "criticality",
                CiFilter {
                    criticality: Some(3),
                    ..filter()
                },
                vec![3, 4, 6, 7],
            ),
            (
                "criticality_max",
                CiFilter {
                    criticality_max: Some(2),
                    ..filter()
                },
                vec![1, 2],
            ),
            (
                "last_seen_before: the agent's report counts",
                CiFilter {
                    last_seen_before: Some(at(5_000)),
                    ..filter()
                },
                vec![2, 3, 6, 7],
            ),
            (
                "last_seen_before is exclusive",
                CiFilter {
                    last_seen_before: Some(at(3_000)),
                    ..filter()
                },
                vec![2],
            ),
            (
                "last_seen_after is inclusive and sees the agent's report",
                CiFilter {
                    last_seen_after: Some(at(5_000)),
                    ..filter()
                },
                vec![1, 4],
            ),
            (
                "last_seen_after: only the agent is that recent",
                CiFilter {
                    last_seen_after: Some(at(8_000)),
                    ..filter()
                },
                vec![1],
            ),
            (
                "last_seen_after: a sub-millisecond time rounds up",
                CiFilter {
                    last_seen_after: Some(at(4_999) + time::Duration::microseconds(1)),
                    ..filter()
                },
                vec![1, 4],
            ),
            (
                "last_seen_before: a sub-millisecond time rounds up",
                CiFilter {
                    last_seen_before: Some(at(2_999) + time::Duration::microseconds(1)),
                    ..filter()
                },
                vec![2],
            ),
            (
                "a last_seen window",
                CiFilter {
                    last_seen_after: Some(at(3_000)),
                    last_seen_before: Some(at(5_000)),
                    ..filter()
                },
                vec![3, 6, 7],
            ),
            (
                "has_software",
                CiFilter {
                    has_software: Some(SoftwareMatch {
                        name: "openssl".into(),
                        version: None,
                    }),
                    ..filter()
                },
                vec![1, 2, 3],
            ),
            (
                "has_software with a version",
                CiFilter {
                    has_software: Some(SoftwareMatch {
                        name: "openssl".into(),
                        version: Some("1.1.1w".into()),
                    }),
                    ..filter()
                },
                vec![2],
            ),
            (
                "has_software is exact, not a pattern",
                CiFilter {
                    has_software: Some(SoftwareMatch {
                        name: "open_ssl".into(),
                        version: None,
                    }),
                    ..filter()
                },
                vec![7],
            ),
            (
                "filters combine with AND",
                CiFilter {
                    os: text("linux"),
                    vendor: text("Dell Inc."),
                    has_software: Some(SoftwareMatch {
                        name: "bash".into(),
                        version: None,
                    }),
                    ..filter()
                },
                vec![1],
            ),
            (
                "a filter value is data, never SQL",
                CiFilter {
                    class: text("x' OR '1'='1"),
                    ..filter()
                },
                vec![],
            ),
        ];
        for (what, filter, expected) in cases {
            assert_eq!(ids(&conn, &filter), expected, "{what}");
        }
    }

    /// The order the module doc promises, computed here from the fixture: by key then id,
    /// NULLs after every value; descending is the exact reverse.
    fn expected_order(sort: CiSort) -> Vec<i64> {
        let mut rows: Vec<(SortValue, i64)> = rows()
            .iter()
            .filter(|r| r.status != "retired")
            .map(|r| (r.key(sort.key), r.id))
            .collect();
        let rank = |v: &SortValue| match v {
            SortValue::Null => (1, None, None),
            SortValue::Integer(n) => (0, Some(*n), None),
            SortValue::Text(t) => (0, None, Some(t.clone())),
        };
        rows.sort_by_key(|(key, id)| (rank(key), *id));
        if sort.descending {
            rows.reverse();
        }
        rows.into_iter().map(|(_, id)| id).collect()
    }

    #[test]
    fn every_sort_orders_both_ways_and_pages_without_gaps_or_repeats() {
        let conn = fixture();
        for key in CiSortKey::ALL {
            for descending in [false, true] {
                let sort = CiSort { key, descending };
                let expected = expected_order(sort);
                let what = format!("sort {key:?} descending={descending}");
                assert_eq!(
                    ids(&conn, &CiFilter { sort, ..filter() }),
                    expected,
                    "{what}"
                );
                // Pages of every size give the same sequence, whichever segment a page
                // boundary falls in.
                for limit in 1..=3 {
                    let mut seen = Vec::new();
                    let mut after = None;
                    loop {
                        let page = list(
                            &conn,
                            &CiFilter {
                                sort,
                                limit,
                                after: after.clone(),
                                ..filter()
                            },
                        )
                        .unwrap();
                        assert!(page.items.len() <= limit as usize);
                        seen.extend(page.items.iter().map(|c| c.id));
                        match page.next {
                            Some(next) => {
                                assert_eq!(Some(&next.id), seen.last(), "{what}");
                                after = Some(next);
                            }
                            None => break,
                        }
                    }
                    assert_eq!(seen, expected, "{what} limit {limit}");
                }
            }
        }
    }

    #[test]
    fn the_next_position_carries_the_sort_key_of_the_last_row() {
        let conn = fixture();
        let page = list(
            &conn,
            &CiFilter {
                sort: CiSort {
                    key: CiSortKey::LastSeen,
                    descending: true,
                },
                limit: 1,
                ..filter()
            },
        )
        .unwrap();
        // CI 1's own row says 5000, its agent 9000.
        assert_eq!(
            page.next,
            Some(CiPosition {
                key: SortValue::Integer(9_000),
                id: 1
            })
        );
        assert_eq!(page.items[0].last_seen, at(9_000));
        let page = list(
            &conn,
            &CiFilter {
                sort: CiSort {
                    key: CiSortKey::Serial,
                    descending: true,
                },
                limit: 1,
                ..filter()
            },
        )
        .unwrap();
        // Descending: the CIs without a serial come first, the highest id first.
        assert_eq!(
            page.next,
            Some(CiPosition {
                key: SortValue::Null,
                id: 6
            })
        );
    }

    #[test]
    fn a_sorted_page_is_filtered_too() {
        let conn = fixture();
        let sorted = CiFilter {
            os: Some("linux".into()),
            sort: CiSort {
                key: CiSortKey::Hostname,
                descending: false,
            },
            ..filter()
        };
        // Bytewise: uppercase before lowercase.
        assert_eq!(ids(&conn, &sorted), vec![2, 3, 6, 1]);
        let page = list(
            &conn,
            &CiFilter {
                limit: 2,
                ..sorted.clone()
            },
        )
        .unwrap();
        assert_eq!(
            page.next,
            Some(CiPosition {
                key: SortValue::Text("db_1%".into()),
                id: 3
            })
        );
        let rest = CiFilter {
            after: page.next,
            ..sorted
        };
        assert_eq!(ids(&conn, &rest), vec![6, 1]);
    }

    /// The plan of the list's statement for `filter`, one line per step.
    fn plan(conn: &Connection, filter: &CiFilter) -> Vec<String> {
        let mut lines = Vec::new();
        for &segment in segments(filter.sort) {
            let q = segment_query(filter, segment, filter.after.as_ref(), 10);
            let mut stmt = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {}", q.sql))
                .unwrap();
            let steps = stmt
                .query_map(params_from_iter(q.values), |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            lines.extend(steps);
        }
        lines
    }

    fn assert_no_full_scan_of_installation(plan: &[String]) {
        assert!(
            plan.iter()
                .all(|step| !step.starts_with("SCAN i") && !step.contains("SCAN installation")),
            "{plan:#?}"
        );
        assert!(
            plan.iter()
                .any(|step| step.contains("installation_software")),
            "installation is read through its software_id index: {plan:#?}"
        );
        assert!(
            plan.iter()
                .any(|step| step.starts_with("SEARCH s USING") && step.contains("(name=?")),
            "software is found by name through an index on its name: {plan:#?}"
        );
    }

    #[test]
    fn has_software_reads_only_that_packages_installations() {
        let conn = fixture();
        let software = |version: Option<&str>| {
            Some(SoftwareMatch {
                name: "openssl".into(),
                version: version.map(str::to_owned),
            })
        };
        let plain = CiFilter {
            has_software: software(None),
            ..filter()
        };
        assert_no_full_scan_of_installation(&plan(&conn, &plain));
        let sorted = CiFilter {
            has_software: software(Some("3.0.11")),
            class: Some("computer".into()),
            sort: CiSort {
                key: CiSortKey::Hostname,
                descending: true,
            },
            after: Some(CiPosition {
                key: SortValue::Text("web-1".into()),
                id: 1,
            }),
            ..filter()
        };
        assert_no_full_scan_of_installation(&plan(&conn, &sorted));
        assert_eq!(ids(&conn, &sorted), vec![3]);
    }

    #[test]
    fn a_sorted_filtered_page_uses_indexes() {
        let conn = fixture();
        // Sorted by an indexed key: the index gives the order, no sort step.
        let by_name = CiFilter {
            sort: CiSort {
                key: CiSortKey::Name,
                descending: false,
            },
            after: Some(CiPosition {
                key: SortValue::Text("db".into()),
                id: 3,
            }),
            ..filter()
        };
        let steps = plan(&conn, &by_name);
        assert!(
            steps.iter().any(|s| s.contains("USING INDEX ci_name")),
            "{steps:#?}"
        );
        assert!(
            steps.iter().all(|s| !s.contains("TEMP B-TREE")),
            "{steps:#?}"
        );
        // Sorted by a key that can be NULL, filtered on another indexed column: both segments
        // search an index, neither scans the table.
        let filtered = CiFilter {
            vendor: Some("HPE".into()),
            sort: CiSort {
                key: CiSortKey::Hostname,
                descending: false,
            },
            ..filter()
        };
        let steps = plan(&conn, &filtered);
        assert!(
            steps
                .iter()
                .filter(|s| s.contains(" c ") || s.ends_with(" c"))
                .all(|s| s.starts_with("SEARCH")),
            "{steps:#?}"
        );
        assert_eq!(ids(&conn, &filtered), vec![7, 2]);
    }

    #[test]
    fn contains_patterns_escape_like_wildcards() {
        assert_eq!(contains_pattern("a%b_c\\d"), "%a\\%b\\_c\\\\d%");
        assert_eq!(contains_pattern(""), "%%");
    }

    #[tokio::test]
    async fn list_filters_and_pages_what_ingest_stored() {
        let (store, _dir) = temp_store();
        let other = "5a4c1e0e-2f43-4d8e-9b7e-1d2c3b4a5f60";
        store
            .ingest(inventory_batch(AGENT, 1, &["bash"]))
            .await
            .unwrap(); // web-1, web-1:/
        let mut inv = inventory(other, &["openssl"], &["/", "/var"]);
        inv.host.hostname = Some("db-1".into());
        inv.os.name = Some("Rocky Linux".into());
        store
            .ingest(batch(
                other,
                vec![Report {
                    seq: 1,
                    body: ReportBody::Inventory(inv),
                }],
            ))
            .await
            .unwrap();

        let all = store.list_cis(filter()).await.unwrap();
        assert_eq!(
            names(&all),
            vec!["web-1", "web-1:/", "db-1", "db-1:/", "db-1:/var"]
        );
        assert_eq!(all.next, None);
        let with = |f: CiFilter| {
            let store = &store;
            async move { store.list_cis(f).await.unwrap() }
        };
        let page = with(CiFilter {
            has_software: Some(SoftwareMatch {
                name: "openssl".into(),
                version: Some("1.0".into()),
            }),
            ..filter()
        })
        .await;
        assert_eq!(names(&page), vec!["db-1"]);
        let page = with(CiFilter {
            name_prefix: Some("db-1:".into()),
            ..filter()
        })
        .await;
        assert_eq!(names(&page), vec!["db-1:/", "db-1:/var"]);
        let page = with(CiFilter {
            sort: CiSort {
                key: CiSortKey::Name,
                descending: true,
            },
            ..filter()
        })
        .await;
        assert_eq!(
            names(&page),
            vec!["web-1:/", "web-1", "db-1:/var", "db-1:/", "db-1"]
        );

        // A health sample moves the computer's last_seen through its agent row only; the
        // filters see it.
        let later = datetime!(2025-03-01 13:00 UTC);
        store
            .ingest(IngestBatch {
                received_at: later,
                ..batch(AGENT, vec![health(AGENT, 2, later)])
            })
            .await
            .unwrap();
        let recent = with(CiFilter {
            last_seen_after: Some(later),
            ..filter()
        })
        .await;
        assert_eq!(names(&recent), vec!["web-1"]);
        assert_eq!(recent.items[0].last_seen, later);

        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = with(CiFilter {
                limit: 2,
                after,
                ..filter()
            })
            .await;
            seen.extend(page.items.iter().map(|c| c.name.clone()));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(
            seen,
            vec!["web-1", "web-1:/", "db-1", "db-1:/", "db-1:/var"]
        );
        store.close().await;
    }

    #[tokio::test]
    async fn get_returns_health_and_relationships() {
        let (store, _dir) = temp_store();
        assert_eq!(store.get_ci(1).await.unwrap(), None);
        store.ingest(inventory_batch(AGENT, 1, &[])).await.unwrap();
        let at = datetime!(2025-03-01 12:05 UTC);
        store
            .ingest(batch(AGENT, vec![health(AGENT, 2, at)]))
            .await
            .unwrap();

        let computer = store.get_ci(1).await.unwrap().unwrap();
        assert_eq!(computer.ci.class, "computer");
        assert_eq!(computer.ci.identified_by.as_deref(), Some("new"));
        assert_eq!(computer.ci.attributes["hostname"], "web-1");
        assert_eq!(computer.health.unwrap().collected_at, at);
        assert_eq!(computer.relationships.len(), 1);
        let rel = &computer.relationships[0];
        assert_eq!(
            (rel.kind.as_str(), rel.source, rel.target),
            ("contains", 1, 2)
        );
        assert_eq!(rel.target_name, "web-1:/");

        let part = store.get_ci(2).await.unwrap().unwrap();
        assert_eq!(part.health, None);
        assert_eq!(part.relationships, computer.relationships);
        store.close().await;
    }
}
