//! Relationships between CIs, and the dependency walks over them: impact (who is hurt if a CI
//! fails) and dependencies (what a CI needs).
//!
//! **Promises:**
//! - [`TYPES`] is the one table of relationship types and of which end depends on the other.
//!   The walks and the incident engine's business-service query read it; nothing else decides
//!   a direction.
//! - An inventory owns the `contains` relationships from a computer to its own parts (CIs whose
//!   parent is that computer): admins can neither make, change nor end them.
//! - Every relationship an admin makes or ends writes a `relationship_added` or
//!   `relationship_removed` history row on both of its ends in the same transaction; changing a
//!   type is an end and a make.
//! - A walk runs in one read transaction, so it sees one state of the graph. It is a
//!   breadth-first search that never revisits a CI, so cycles end it rather than loop it; each
//!   CI is reported once, at its smallest depth, by one of its shortest paths (the one through
//!   the lowest ids, then the lowest type name), and the walk stops at `max_depth` and at
//!   [`MAX_REACHED`] CIs, saying so with `truncated`.

use std::collections::{BTreeMap, HashSet};

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::history::{Recorder, Source};
use super::model::{
    CiBrief, DependentService, NewRelationship, Page, Reached, Refusable, Refusal,
    RelationshipDetail, RelationshipFilter, RelationshipPatch, Traversal, TraversalQuery, Walk,
};
use super::{Store, StoreError, from_ms, to_ms};
use crate::cmdb::REL_CONTAINS;

/// Which end of a relationship depends on the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependent {
    /// The source needs the target: if the target fails, the source is hurt.
    Source,
    /// The target needs the source.
    Target,
}

/// Every relationship type, read "source `type` target", and which end depends on the other.
/// `contains` reads "the container needs its part": a full disk hurts the computer that
/// contains it and whatever runs on that computer.
pub const TYPES: &[(&str, Dependent)] = &[
    ("contains", Dependent::Source),
    ("runs_on", Dependent::Source),
    ("depends_on", Dependent::Source),
    ("hosted_on", Dependent::Source),
    ("connects_to", Dependent::Source),
    ("member_of", Dependent::Source),
];

/// The class whose CIs [`Store::most_critical_dependent_service`] looks for.
pub const CLASS_BUSINESS_SERVICE: &str = "business_service";

/// `max_depth` of a walk when the caller gives none, and the most it may ask for.
pub const DEFAULT_MAX_DEPTH: u32 = 10;
pub const MAX_DEPTH: u32 = 50;
/// Most CIs one walk reports; past it the answer is `truncated`. It bounds the answer and the
/// time a walk holds a read connection.
pub const MAX_REACHED: usize = 10_000;

/// Longest relationship description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;

/// Which end of a relationship of type `kind` depends on the other; `None` for a type not in
/// [`TYPES`].
pub fn dependent_end(kind: &str) -> Option<Dependent> {
    TYPES.iter().find(|(k, _)| *k == kind).map(|(_, d)| *d)
}

/// The type names, comma-separated, for messages.
pub fn type_names() -> String {
    TYPES.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
}

impl Store {
    /// Makes a relationship as an admin (`source` is the caller, `Source::Api`).
    pub async fn create_relationship(
        &self,
        new: NewRelationship,
        source: Source,
        now: time::OffsetDateTime,
    ) -> Result<Refusable<RelationshipDetail>, StoreError> {
        self.writer
            .run(move |conn| create(conn, &new, &source, to_ms(now)))
            .await
    }

    /// Relationships matching `filter`, by ascending id.
    pub async fn list_relationships(
        &self,
        filter: RelationshipFilter,
    ) -> Result<Page<RelationshipDetail, i64>, StoreError> {
        self.reads.run(move |conn| list(conn, &filter)).await
    }

    pub async fn get_relationship(
        &self,
        id: i64,
    ) -> Result<Option<RelationshipDetail>, StoreError> {
        self.reads.run(move |conn| load(conn, id)).await
    }

    /// Changes a relationship's type or description; answers it as it now is.
    pub async fn update_relationship(
        &self,
        id: i64,
        patch: RelationshipPatch,
        source: Source,
        now: time::OffsetDateTime,
    ) -> Result<Refusable<RelationshipDetail>, StoreError> {
        self.writer
            .run(move |conn| update(conn, id, &patch, &source, to_ms(now)))
            .await
    }

    /// Ends a relationship.
    pub async fn delete_relationship(
        &self,
        id: i64,
        source: Source,
        now: time::OffsetDateTime,
    ) -> Result<Refusable<()>, StoreError> {
        self.writer
            .run(move |conn| delete(conn, id, &source, to_ms(now)))
            .await
    }

    /// The CIs reached from `start` walking `walk`; `None` if there is no CI `start`.
    pub async fn traverse(
        &self,
        start: i64,
        walk: Walk,
        query: TraversalQuery,
    ) -> Result<Option<Traversal>, StoreError> {
        self.reads
            .run(move |conn| {
                let tx = conn.unchecked_transaction()?;
                if !super::ci_exists(&tx, start)? {
                    return Ok(None);
                }
                Ok(Some(traverse(&tx, start, walk, query)?))
            })
            .await
    }

    /// The most critical business service (lowest criticality number, then nearest, then
    /// lowest id) that depends on CI `ci_id`, directly or not; retired CIs are neither
    /// reported nor walked through. `None` when no business service depends on it, or there
    /// is no such CI.
    pub async fn most_critical_dependent_service(
        &self,
        ci_id: i64,
    ) -> Result<Option<DependentService>, StoreError> {
        self.reads
            .run(move |conn| {
                let tx = conn.unchecked_transaction()?;
                most_critical_dependent_service(&tx, ci_id)
            })
            .await
    }
}

/// [`Store::most_critical_dependent_service`] on a connection, so that a write transaction
/// (the incident engine inside ingest) can ask it too.
pub(crate) fn most_critical_dependent_service(
    conn: &Connection,
    ci_id: i64,
) -> Result<Option<DependentService>, StoreError> {
    let query = TraversalQuery {
        max_depth: MAX_DEPTH,
        include_retired: false,
    };
    let walked = traverse(conn, ci_id, Walk::Impact, query)?;
    Ok(walked
        .items
        .into_iter()
        .filter(|r| r.ci.class == CLASS_BUSINESS_SERVICE)
        .min_by_key(|r| (r.ci.criticality, r.depth, r.ci.id))
        .map(|r| DependentService {
            ci: r.ci,
            depth: r.depth,
        }))
}

const DETAIL_COLUMNS: &str = "r.id, r.type, r.source_id, s.name, r.target_id, t.name, \
     r.description, r.created_at, r.created_by \
     FROM relationship r JOIN ci s ON s.id = r.source_id JOIN ci t ON t.id = r.target_id";

fn detail(row: &rusqlite::Row<'_>) -> rusqlite::Result<RelationshipDetail> {
    Ok(RelationshipDetail {
        id: row.get(0)?,
        kind: row.get(1)?,
        source: row.get(2)?,
        source_name: row.get(3)?,
        target: row.get(4)?,
        target_name: row.get(5)?,
        description: row.get(6)?,
        created_at: from_ms(row.get(7)?),
        created_by: row.get(8)?,
    })
}

pub(crate) fn load(conn: &Connection, id: i64) -> Result<Option<RelationshipDetail>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {DETAIL_COLUMNS} WHERE r.id = ?1"))?
        .query_row([id], detail)
        .optional()?)
}

fn list(
    conn: &Connection,
    filter: &RelationshipFilter,
) -> Result<Page<RelationshipDetail, i64>, StoreError> {
    // Assembled from fixed fragments only; every value is a bound parameter.
    let mut sql = format!("SELECT {DETAIL_COLUMNS} WHERE r.id > ?1");
    let mut values = vec![SqlValue::Integer(filter.after.unwrap_or(0))];
    let mut bind = |sql: &mut String, fragment: &str, value: SqlValue| {
        values.push(value);
        sql.push_str(&fragment.replace("?N", &format!("?{}", values.len())));
    };
    if let Some(ci) = filter.ci {
        bind(
            &mut sql,
            " AND (r.source_id = ?N OR r.target_id = ?N)",
            SqlValue::Integer(ci),
        );
    }
    if let Some(source) = filter.source {
        bind(&mut sql, " AND r.source_id = ?N", SqlValue::Integer(source));
    }
    if let Some(target) = filter.target {
        bind(&mut sql, " AND r.target_id = ?N", SqlValue::Integer(target));
    }
    if let Some(kind) = &filter.kind {
        bind(&mut sql, " AND r.type = ?N", SqlValue::Text(kind.clone()));
    }
    values.push(SqlValue::Integer(i64::from(filter.limit) + 1));
    sql.push_str(&format!(" ORDER BY r.id LIMIT ?{}", values.len()));
    let mut items = conn
        .prepare_cached(&sql)?
        .query_map(params_from_iter(values), detail)?
        .collect::<Result<Vec<_>, _>>()?;
    let next = if items.len() > filter.limit as usize {
        items.truncate(filter.limit as usize);
        items.last().map(|r| r.id)
    } else {
        None
    };
    Ok(Page { items, next })
}

/// Whether "source `kind` target" is one an inventory owns: `contains` from a computer to one
/// of its own parts.
fn inventory_owned(
    conn: &Connection,
    kind: &str,
    source: i64,
    target: i64,
) -> Result<bool, StoreError> {
    if kind != REL_CONTAINS {
        return Ok(false);
    }
    let parent: Option<i64> = conn
        .prepare_cached("SELECT parent_id FROM ci WHERE id = ?1")?
        .query_row([target], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(parent == Some(source))
}

fn owned_refusal(source: i64, target: i64) -> Refusal {
    Refusal::Conflict(format!(
        "CI {target} is a part of computer {source}: the computer's inventory makes and ends \
         this contains relationship, not the API"
    ))
}

fn check_type(kind: &str) -> Refusable<()> {
    if dependent_end(kind).is_none() {
        return Err(Refusal::InvalidField(format!(
            "type must be one of {}, not {kind:?}",
            type_names()
        )));
    }
    Ok(())
}

fn check_description(description: Option<&str>) -> Refusable<()> {
    if let Some(text) = description
        && text.chars().count() > MAX_DESCRIPTION_CHARS
    {
        return Err(Refusal::InvalidField(format!(
            "description must be at most {MAX_DESCRIPTION_CHARS} characters"
        )));
    }
    Ok(())
}

/// The id of the relationship "source `kind` target", if there is one.
fn existing(
    conn: &Connection,
    source: i64,
    kind: &str,
    target: i64,
) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT id FROM relationship WHERE source_id = ?1 AND type = ?2 AND target_id = ?3",
        )?
        .query_row(params![source, kind, target], |r| r.get(0))
        .optional()?)
}

fn duplicate_refusal(id: i64, source: i64, kind: &str, target: i64) -> Refusal {
    Refusal::Conflict(format!(
        "relationship {id} already says CI {source} {kind} CI {target}"
    ))
}

/// The token name an admin's relationship records as its creator.
fn created_by(source: &Source) -> Option<String> {
    match source {
        Source::Api(name) => Some(name.clone()),
        _ => None,
    }
}

fn create(
    conn: &Connection,
    new: &NewRelationship,
    source: &Source,
    now: i64,
) -> Result<Refusable<RelationshipDetail>, StoreError> {
    if let Err(refusal) = check_type(&new.kind).and(check_description(new.description.as_deref())) {
        return Ok(Err(refusal));
    }
    if new.source == new.target {
        return Ok(Err(Refusal::InvalidField(format!(
            "target: a CI cannot have a relationship with itself (source and target are both {})",
            new.source
        ))));
    }
    for (field, id) in [("source", new.source), ("target", new.target)] {
        if !super::ci_exists(conn, id)? {
            return Ok(Err(Refusal::InvalidField(format!(
                "{field}: there is no CI with id {id}"
            ))));
        }
    }
    if inventory_owned(conn, &new.kind, new.source, new.target)? {
        return Ok(Err(owned_refusal(new.source, new.target)));
    }
    if let Some(id) = existing(conn, new.source, &new.kind, new.target)? {
        return Ok(Err(duplicate_refusal(
            id, new.source, &new.kind, new.target,
        )));
    }
    let id: i64 = conn
        .prepare_cached(
            "INSERT INTO relationship (type, source_id, target_id, created_at, created_by,
                                       description)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
        )?
        .query_row(
            params![
                new.kind,
                new.source,
                new.target,
                now,
                created_by(source),
                new.description
            ],
            |r| r.get(0),
        )?;
    Recorder::new(conn, now, source).relationship(true, &new.kind, new.source, new.target)?;
    let made = load(conn, id)?
        .ok_or_else(|| StoreError::Corrupt(format!("relationship {id} vanished")))?;
    Ok(Ok(made))
}

fn no_such_relationship(id: i64) -> Refusal {
    Refusal::NotFound(format!("there is no relationship with id {id}"))
}

fn update(
    conn: &Connection,
    id: i64,
    patch: &RelationshipPatch,
    source: &Source,
    now: i64,
) -> Result<Refusable<RelationshipDetail>, StoreError> {
    let Some(current) = load(conn, id)? else {
        return Ok(Err(no_such_relationship(id)));
    };
    let kind = patch.kind.clone().unwrap_or_else(|| current.kind.clone());
    let description = match &patch.description {
        Some(d) => d.clone(),
        None => current.description.clone(),
    };
    if let Err(refusal) = check_type(&kind).and(check_description(description.as_deref())) {
        return Ok(Err(refusal));
    }
    let retyped = kind != current.kind;
    if !retyped && description == current.description {
        return Ok(Ok(current));
    }
    if inventory_owned(conn, &current.kind, current.source, current.target)? {
        return Ok(Err(owned_refusal(current.source, current.target)));
    }
    if retyped {
        if inventory_owned(conn, &kind, current.source, current.target)? {
            return Ok(Err(owned_refusal(current.source, current.target)));
        }
        if let Some(other) = existing(conn, current.source, &kind, current.target)? {
            return Ok(Err(duplicate_refusal(
                other,
                current.source,
                &kind,
                current.target,
            )));
        }
    }
    conn.prepare_cached("UPDATE relationship SET type = ?2, description = ?3 WHERE id = ?1")?
        .execute(params![id, kind, description])?;
    if retyped {
        let recorder = Recorder::new(conn, now, source);
        recorder.relationship(false, &current.kind, current.source, current.target)?;
        recorder.relationship(true, &kind, current.source, current.target)?;
    }
    let changed = load(conn, id)?
        .ok_or_else(|| StoreError::Corrupt(format!("relationship {id} vanished")))?;
    Ok(Ok(changed))
}

fn delete(
    conn: &Connection,
    id: i64,
    source: &Source,
    now: i64,
) -> Result<Refusable<()>, StoreError> {
    let Some(current) = load(conn, id)? else {
        return Ok(Err(no_such_relationship(id)));
    };
    if inventory_owned(conn, &current.kind, current.source, current.target)? {
        return Ok(Err(owned_refusal(current.source, current.target)));
    }
    conn.prepare_cached("DELETE FROM relationship WHERE id = ?1")?
        .execute([id])?;
    Recorder::new(conn, now, source).relationship(
        false,
        &current.kind,
        current.source,
        current.target,
    )?;
    Ok(Ok(()))
}

/// Ends every relationship of CI `ci_id`, recording each on both ends.
pub(crate) fn end_all(
    conn: &Connection,
    ci_id: i64,
    recorder: &Recorder,
) -> Result<(), StoreError> {
    let ends = conn
        .prepare_cached(
            "SELECT type, source_id, target_id FROM relationship
             WHERE source_id = ?1 OR target_id = ?1 ORDER BY id",
        )?
        .query_map([ci_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    for (kind, source, target) in &ends {
        recorder.relationship(false, kind, *source, *target)?;
    }
    conn.prepare_cached("DELETE FROM relationship WHERE source_id = ?1 OR target_id = ?1")?
        .execute([ci_id])?;
    Ok(())
}

/// The relationships of `id` whose other end is one step along `walk`: that end, and the type.
fn steps(conn: &Connection, id: i64, walk: Walk) -> Result<Vec<(CiBrief, String)>, StoreError> {
    // `id` is the target of these; the other end is the source.
    let incoming = conn.prepare_cached(
        "SELECT r.type, c.id, c.class, c.name, c.status, c.criticality
         FROM relationship r JOIN ci c ON c.id = r.source_id WHERE r.target_id = ?1",
    )?;
    // `id` is the source of these; the other end is the target.
    let outgoing = conn.prepare_cached(
        "SELECT r.type, c.id, c.class, c.name, c.status, c.criticality
         FROM relationship r JOIN ci c ON c.id = r.target_id WHERE r.source_id = ?1",
    )?;
    let mut found = Vec::new();
    for (mut stmt, other_end) in [(incoming, Dependent::Source), (outgoing, Dependent::Target)] {
        // Impact goes to the ends that depend on `id`; dependencies to the ends `id` depends on.
        let wanted = match walk {
            Walk::Impact => other_end,
            Walk::Dependencies => match other_end {
                Dependent::Source => Dependent::Target,
                Dependent::Target => Dependent::Source,
            },
        };
        let rows = stmt.query_map([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                CiBrief {
                    id: r.get(1)?,
                    class: r.get(2)?,
                    name: r.get(3)?,
                    status: r.get(4)?,
                    criticality: r.get(5)?,
                },
            ))
        })?;
        for row in rows {
            let (kind, ci) = row?;
            if dependent_end(&kind) == Some(wanted) {
                found.push((ci, kind));
            }
        }
    }
    found.sort_by(|(a, ak), (b, bk)| (a.id, ak).cmp(&(b.id, bk)));
    Ok(found)
}

/// The breadth-first walk; see the module doc. `conn` should be inside a transaction, so that
/// every level reads the same state.
pub(crate) fn traverse(
    conn: &Connection,
    start: i64,
    walk: Walk,
    query: TraversalQuery,
) -> Result<Traversal, StoreError> {
    let mut seen: HashSet<i64> = HashSet::from([start]);
    // The CIs of the level being expanded, by id, with their path and types.
    let mut level: Vec<(i64, Vec<i64>, Vec<String>)> = vec![(start, vec![start], Vec::new())];
    let mut items: Vec<Reached> = Vec::new();
    let usable = |ci: &CiBrief| query.include_retired || ci.status != "retired";
    for depth in 1..=query.max_depth {
        let mut next: BTreeMap<i64, Reached> = BTreeMap::new();
        for (id, path, via) in &level {
            for (ci, kind) in steps(conn, *id, walk)? {
                if seen.contains(&ci.id) || next.contains_key(&ci.id) || !usable(&ci) {
                    continue;
                }
                let mut path = path.clone();
                path.push(ci.id);
                let mut via = via.clone();
                via.push(kind);
                next.insert(
                    ci.id,
                    Reached {
                        ci,
                        depth,
                        path,
                        via,
                    },
                );
            }
        }
        if next.is_empty() {
            return Ok(Traversal {
                items,
                truncated: false,
            });
        }
        level = Vec::with_capacity(next.len());
        for (id, reached) in next {
            if items.len() == MAX_REACHED {
                return Ok(Traversal {
                    items,
                    truncated: true,
                });
            }
            seen.insert(id);
            level.push((id, reached.path.clone(), reached.via.clone()));
            items.push(reached);
        }
    }
    // Stopped by max_depth: is there anything one level further?
    for (id, _, _) in &level {
        for (ci, _) in steps(conn, *id, walk)? {
            if !seen.contains(&ci.id) && usable(&ci) {
                return Ok(Traversal {
                    items,
                    truncated: true,
                });
            }
        }
    }
    Ok(Traversal {
        items,
        truncated: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_store;
    use crate::store::{IngestBatch, NewCi};
    use census_common::{Filesystem, Inventory, Report, ReportBody};
    use time::OffsetDateTime;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2025-03-01 12:00 UTC);

    fn admin() -> Source {
        Source::Api("test".into())
    }

    async fn ci(store: &Store, class: &str, name: &str, criticality: i64) -> i64 {
        let new = NewCi {
            class: class.into(),
            name: name.into(),
            criticality,
            attributes: serde_json::Map::new(),
        };
        store.create_ci(new, admin(), T0).await.unwrap().unwrap()
    }

    async fn relate(store: &Store, source: i64, kind: &str, target: i64) -> i64 {
        let new = NewRelationship {
            source,
            kind: kind.into(),
            target,
            description: None,
        };
        store
            .create_relationship(new, admin(), T0)
            .await
            .unwrap()
            .unwrap()
            .id
    }

    async fn walk(store: &Store, start: i64, walk: Walk, max_depth: u32) -> Traversal {
        let query = TraversalQuery {
            max_depth,
            include_retired: false,
        };
        store.traverse(start, walk, query).await.unwrap().unwrap()
    }

    /// (id, depth, path, via) of every item.
    fn items(t: &Traversal) -> Vec<(i64, u32, Vec<i64>, Vec<&str>)> {
        t.items
            .iter()
            .map(|r| {
                (
                    r.ci.id,
                    r.depth,
                    r.path.clone(),
                    r.via.iter().map(String::as_str).collect(),
                )
            })
            .collect()
    }

    /// A computer reported by an agent, with one filesystem: (computer, filesystem).
    async fn computer_with_disk(store: &Store) -> (i64, i64) {
        let agent = "0b0c6a34-8d54-4a4a-9d51-8f0e1c3b7a11";
        let mut inv = Inventory::new(agent, T0);
        inv.host.hostname = Some("web-1".into());
        inv.filesystems = vec![Filesystem {
            mount: "/".into(),
            device: None,
            fs_type: Some("ext4".into()),
            total_bytes: Some(100),
            removable: false,
        }];
        store
            .ingest(IngestBatch {
                agent_id: agent.into(),
                reports: vec![Report {
                    seq: 1,
                    body: ReportBody::Inventory(inv),
                }],
                received_at: T0,
            })
            .await
            .unwrap();
        let page = store
            .list_relationships(RelationshipFilter {
                kind: Some("contains".into()),
                limit: 10,
                ..RelationshipFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(page.items.len(), 1);
        (page.items[0].source, page.items[0].target)
    }

    #[test]
    fn every_type_has_a_direction() {
        let names: Vec<&str> = TYPES.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "contains",
                "runs_on",
                "depends_on",
                "hosted_on",
                "connects_to",
                "member_of"
            ]
        );
        assert_eq!(dependent_end("contains"), Some(Dependent::Source));
        assert_eq!(dependent_end("owns"), None);
    }

    #[tokio::test]
    async fn a_full_disk_hurts_the_computer_what_runs_on_it_and_the_service() {
        let (store, _dir) = temp_store();
        let (computer, disk) = computer_with_disk(&store).await;
        let app = ci(&store, "application", "payroll-app", 3).await;
        let service = ci(&store, CLASS_BUSINESS_SERVICE, "Payroll", 1).await;
        relate(&store, app, "runs_on", computer).await;
        relate(&store, service, "depends_on", app).await;

        let impact = walk(&store, disk, Walk::Impact, DEFAULT_MAX_DEPTH).await;
        assert_eq!(
            items(&impact),
            vec![
                (computer, 1, vec![disk, computer], vec!["contains"]),
                (
                    app,
                    2,
                    vec![disk, computer, app],
                    vec!["contains", "runs_on"]
                ),
                (
                    service,
                    3,
                    vec![disk, computer, app, service],
                    vec!["contains", "runs_on", "depends_on"]
                ),
            ]
        );
        assert!(!impact.truncated);
        assert_eq!(impact.items[2].ci.class, CLASS_BUSINESS_SERVICE);
        assert_eq!(impact.items[2].ci.name, "Payroll");
        assert_eq!(impact.items[2].ci.criticality, 1);

        let needs = walk(&store, service, Walk::Dependencies, DEFAULT_MAX_DEPTH).await;
        assert_eq!(
            items(&needs),
            vec![
                (app, 1, vec![service, app], vec!["depends_on"]),
                (
                    computer,
                    2,
                    vec![service, app, computer],
                    vec!["depends_on", "runs_on"]
                ),
                (
                    disk,
                    3,
                    vec![service, app, computer, disk],
                    vec!["depends_on", "runs_on", "contains"]
                ),
            ]
        );
        // Nothing depends on the service; the disk depends on nothing.
        assert!(
            walk(&store, service, Walk::Impact, 10)
                .await
                .items
                .is_empty()
        );
        assert!(
            walk(&store, disk, Walk::Dependencies, 10)
                .await
                .items
                .is_empty()
        );
        assert_eq!(
            store
                .traverse(
                    999,
                    Walk::Impact,
                    TraversalQuery {
                        max_depth: 10,
                        include_retired: false
                    }
                )
                .await
                .unwrap(),
            None
        );
        store.close().await;
    }

    #[tokio::test]
    async fn a_cycle_reports_each_ci_once_and_ends() {
        let (store, _dir) = temp_store();
        let a = ci(&store, "application", "a", 3).await;
        let b = ci(&store, "application", "b", 3).await;
        let c = ci(&store, "application", "c", 3).await;
        relate(&store, a, "depends_on", b).await;
        relate(&store, b, "depends_on", c).await;
        relate(&store, c, "depends_on", a).await;
        // And a second edge back to the start, from a CI already reached.
        relate(&store, b, "connects_to", a).await;

        let needs = walk(&store, a, Walk::Dependencies, MAX_DEPTH).await;
        assert_eq!(
            items(&needs),
            vec![
                (b, 1, vec![a, b], vec!["depends_on"]),
                (c, 2, vec![a, b, c], vec!["depends_on", "depends_on"]),
            ]
        );
        assert!(!needs.truncated);
        // b depends on a directly (connects_to) and through c.
        let impact = walk(&store, a, Walk::Impact, MAX_DEPTH).await;
        assert_eq!(
            items(&impact),
            vec![
                (b, 1, vec![a, b], vec!["connects_to"]),
                (c, 1, vec![a, c], vec!["depends_on"]),
            ]
        );
        store.close().await;
    }

    #[tokio::test]
    async fn a_diamond_reports_the_far_corner_once_by_the_lowest_path() {
        let (store, _dir) = temp_store();
        let top = ci(&store, "business_service", "top", 2).await;
        let left = ci(&store, "application", "left", 3).await;
        let right = ci(&store, "application", "right", 3).await;
        let bottom = ci(&store, "database", "bottom", 3).await;
        relate(&store, top, "depends_on", right).await;
        relate(&store, top, "depends_on", left).await;
        relate(&store, right, "hosted_on", bottom).await;
        relate(&store, left, "depends_on", bottom).await;

        let impact = walk(&store, bottom, Walk::Impact, 10).await;
        assert_eq!(
            items(&impact),
            vec![
                (left, 1, vec![bottom, left], vec!["depends_on"]),
                (right, 1, vec![bottom, right], vec!["hosted_on"]),
                (
                    top,
                    2,
                    vec![bottom, left, top],
                    vec!["depends_on", "depends_on"]
                ),
            ]
        );
        let needs = walk(&store, top, Walk::Dependencies, 10).await;
        assert_eq!(
            items(&needs),
            vec![
                (left, 1, vec![top, left], vec!["depends_on"]),
                (right, 1, vec![top, right], vec!["depends_on"]),
                (
                    bottom,
                    2,
                    vec![top, left, bottom],
                    vec!["depends_on", "depends_on"]
                ),
            ]
        );
        store.close().await;
    }

    #[tokio::test]
    async fn a_chain_longer_than_max_depth_is_cut_and_says_so() {
        let (store, _dir) = temp_store();
        // chain[i] depends on chain[i + 1]: 13 CIs, 12 steps from the first to the last.
        let mut chain = Vec::new();
        for i in 0..13 {
            chain.push(ci(&store, "application", &format!("app-{i}"), 3).await);
        }
        for pair in chain.windows(2) {
            relate(&store, pair[0], "depends_on", pair[1]).await;
        }
        let last = *chain.last().unwrap();
        let cut = walk(&store, last, Walk::Impact, DEFAULT_MAX_DEPTH).await;
        assert_eq!(cut.items.len(), 10);
        assert!(cut.truncated);
        let deepest = cut.items.last().unwrap();
        assert_eq!((deepest.ci.id, deepest.depth), (chain[2], 10));
        assert_eq!(
            deepest.path,
            chain[2..].iter().rev().copied().collect::<Vec<_>>()
        );
        assert_eq!(deepest.via, vec!["depends_on"; 10]);

        let eleven = walk(&store, last, Walk::Impact, 11).await;
        assert_eq!((eleven.items.len(), eleven.truncated), (11, true));
        let whole = walk(&store, last, Walk::Impact, 12).await;
        assert_eq!((whole.items.len(), whole.truncated), (12, false));
        let whole = walk(&store, chain[0], Walk::Dependencies, MAX_DEPTH).await;
        assert_eq!((whole.items.len(), whole.truncated), (12, false));
        store.close().await;
    }

    #[tokio::test]
    async fn retired_cis_are_neither_reported_nor_walked_through_unless_asked() {
        let (store, _dir) = temp_store();
        let db = ci(&store, "database", "db", 3).await;
        let app = ci(&store, "application", "app", 3).await;
        let service = ci(&store, CLASS_BUSINESS_SERVICE, "svc", 2).await;
        relate(&store, app, "depends_on", db).await;
        relate(&store, service, "depends_on", app).await;
        let retire = crate::store::CiPatch {
            status: Some("retired".into()),
            ..Default::default()
        };
        store
            .update_ci(app, retire, admin(), T0)
            .await
            .unwrap()
            .unwrap();

        assert!(walk(&store, db, Walk::Impact, 10).await.items.is_empty());
        let all = store
            .traverse(
                db,
                Walk::Impact,
                TraversalQuery {
                    max_depth: 10,
                    include_retired: true,
                },
            )
            .await
            .unwrap()
            .unwrap();
        let found: Vec<(i64, &str)> = all
            .items
            .iter()
            .map(|r| (r.ci.id, r.ci.status.as_str()))
            .collect();
        assert_eq!(found, vec![(app, "retired"), (service, "active")]);
        // Only what is left out past max_depth makes a walk truncated, not a retired CI.
        let one = walk(&store, db, Walk::Impact, 1).await;
        assert!(!one.truncated);
        store.close().await;
    }

    #[tokio::test]
    async fn the_most_critical_dependent_business_service_wins() {
        let (store, _dir) = temp_store();
        let (computer, disk) = computer_with_disk(&store).await;
        assert_eq!(
            store.most_critical_dependent_service(disk).await.unwrap(),
            None
        );
        let app = ci(&store, "application", "app", 4).await;
        let near = ci(&store, CLASS_BUSINESS_SERVICE, "near", 3).await;
        let far = ci(&store, CLASS_BUSINESS_SERVICE, "far", 1).await;
        let gone = ci(&store, CLASS_BUSINESS_SERVICE, "gone", 1).await;
        // An application more critical than any service is not a service.
        let critical_app = ci(&store, "application", "critical", 1).await;
        relate(&store, app, "runs_on", computer).await;
        relate(&store, near, "depends_on", app).await;
        relate(&store, critical_app, "depends_on", app).await;
        relate(&store, far, "depends_on", critical_app).await;
        relate(&store, gone, "depends_on", computer).await;
        let retire = crate::store::CiPatch {
            status: Some("retired".into()),
            ..Default::default()
        };
        store
            .update_ci(gone, retire, admin(), T0)
            .await
            .unwrap()
            .unwrap();

        let found = store
            .most_critical_dependent_service(disk)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (found.ci.id, found.ci.criticality, found.depth),
            (far, 1, 4)
        );
        assert_eq!(found.ci.name, "far");
        let from_app = store
            .most_critical_dependent_service(app)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((from_app.ci.id, from_app.depth), (far, 2));
        store.close().await;
    }

    #[tokio::test]
    async fn a_walk_stops_at_the_item_cap() {
        let (store, _dir) = temp_store();
        let hub = ci(&store, "network", "core-switch", 1).await;
        // MAX_REACHED + 1 CIs connecting to the hub, written directly for speed.
        store
            .writer
            .run(move |conn| {
                let mut add = conn.prepare(
                    "INSERT INTO ci (class, name, first_seen, last_seen) VALUES ('computer', ?1, 0, 0)
                     RETURNING id",
                )?;
                let mut link = conn.prepare(
                    "INSERT INTO relationship (type, source_id, target_id, created_at)
                     VALUES ('connects_to', ?1, ?2, 0)",
                )?;
                for i in 0..=MAX_REACHED {
                    let id: i64 = add.query_row([format!("host-{i}")], |r| r.get(0))?;
                    link.execute(params![id, hub])?;
                }
                Ok(())
            })
            .await
            .unwrap();
        let impact = walk(&store, hub, Walk::Impact, 10).await;
        assert_eq!(impact.items.len(), MAX_REACHED);
        assert!(impact.truncated);
        assert!(impact.items.iter().all(|r| r.depth == 1));
        assert!(impact.items.windows(2).all(|w| w[0].ci.id < w[1].ci.id));
        store.close().await;
    }
}
