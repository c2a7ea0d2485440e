//! Reading software: what one computer has installed, which computers have a package, the
//! catalog with install counts, and a CI's whole inventory (for its SBOM).
//!
//! The lists build their SQL from fixed fragments, one per filter present, so SQLite plans
//! each combination with the indexes it can use (an exact name finds its catalog rows through
//! the `UNIQUE (name, version, arch, source)` index); every value is a bound parameter. Version
//! comparisons run in SQL through `census_version_cmp` (registered on read connections by
//! `read.rs`), each package compared by its own source's ordering.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use super::model::{
    CatalogEntry, CatalogQuery, CiInventory, InstalledSoftware, Page, SoftwareFilter,
    SoftwareInstall, SoftwareQuery,
};
use super::{Store, StoreError};

fn installed(row: &Row<'_>, first: usize) -> rusqlite::Result<InstalledSoftware> {
    let known = |s: String| (!s.is_empty()).then_some(s);
    Ok(InstalledSoftware {
        name: row.get(first)?,
        version: known(row.get(first + 1)?),
        arch: known(row.get(first + 2)?),
        vendor: row.get(first + 3)?,
        source: row.get(first + 4)?,
    })
}

impl Store {
    /// Packages installed on CI `ci_id`, by name, at most `limit` after the catalog row
    /// `after` (the cursor); `None` when the CI does not exist. The cursor is a position (the
    /// name and id of that catalog row), so it stays valid if the row is uninstalled meanwhile;
    /// an id with no catalog row (a forged cursor: catalog rows are never deleted) answers an
    /// empty page with no next cursor, never an error.
    pub async fn ci_software(
        &self,
        ci_id: i64,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Option<Page<InstalledSoftware, i64>>, StoreError> {
        self.reads
            .run(move |conn| ci_software(conn, ci_id, after, limit))
            .await
    }

    /// Installations of the packages that match the filter, by (CI id, catalog id); those on
    /// retired CIs only when `include_retired`.
    pub async fn software_installs(
        &self,
        query: SoftwareQuery,
    ) -> Result<Page<SoftwareInstall, (i64, i64)>, StoreError> {
        self.reads.run(move |conn| installs(conn, &query)).await
    }

    /// Catalog rows that match the filter, with their installs on CIs that are not retired,
    /// ordered by name, source, version text, then id (version text, not package-manager
    /// order: that order differs per source and cannot be an index). Rows with no such
    /// install only when `include_unused`. The cursor is the last row's catalog id, looked up
    /// for its position; an id with no row answers an empty page.
    pub async fn software_catalog(
        &self,
        query: CatalogQuery,
    ) -> Result<Page<CatalogEntry, i64>, StoreError> {
        self.reads.run(move |conn| catalog(conn, &query)).await
    }

    /// CI `ci_id` with every package installed on it, read in one transaction; `None` when
    /// the CI does not exist.
    pub async fn ci_inventory(&self, ci_id: i64) -> Result<Option<CiInventory>, StoreError> {
        self.reads.run(move |conn| inventory(conn, ci_id)).await
    }
}

fn ci_software(
    conn: &Connection,
    ci_id: i64,
    after: Option<i64>,
    limit: u32,
) -> Result<Option<Page<InstalledSoftware, i64>>, StoreError> {
    let tx = conn.unchecked_transaction()?;
    if !super::ci_exists(&tx, ci_id)? {
        return Ok(None);
    }
    // Pages are in name order; the cursor holds only the catalog id of the last row, and its
    // name is looked up, since catalog rows never change once written.
    let mut rows = tx
        .prepare_cached(
            "SELECT s.id, s.name, s.version, s.arch, s.vendor, s.source
             FROM installation i JOIN software s ON s.id = i.software_id
             WHERE i.ci_id = ?1
               AND (?2 IS NULL OR (s.name, s.id) > ((SELECT name FROM software WHERE id = ?2), ?2))
             ORDER BY s.name, s.id
             LIMIT ?3",
        )?
        .query_map(params![ci_id, after, i64::from(limit) + 1], |r| {
            Ok((r.get::<_, i64>(0)?, installed(r, 1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let next = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|(id, _)| *id)
    } else {
        None
    };
    Ok(Some(Page {
        items: rows.into_iter().map(|(_, sw)| sw).collect(),
        next,
    }))
}

/// `WHERE` fragments (ANDed) and their bound values, in placeholder order.
#[derive(Default)]
struct Conditions {
    sql: Vec<&'static str>,
    values: Vec<Value>,
}

impl Conditions {
    fn add(&mut self, sql: &'static str, values: impl IntoIterator<Item = Value>) {
        self.sql.push(sql);
        self.values.extend(values);
    }

    fn add_text(&mut self, sql: &'static str, value: &Option<String>) {
        if let Some(value) = value {
            self.add(sql, [Value::Text(value.clone())]);
        }
    }

    fn filter(&mut self, filter: &SoftwareFilter) {
        self.add_text("s.name = ?", &filter.name);
        if let Some(part) = &filter.name_contains {
            self.add(
                "s.name LIKE ? ESCAPE '\\'",
                [Value::Text(format!("%{}%", escape_like(part)))],
            );
        }
        self.add_text("s.source = ?", &filter.source);
        self.add_text("s.arch = ?", &filter.arch);
        self.add_text("s.version = ?", &filter.version);
        // An unknown version ('') is before, after and equal to nothing.
        self.add_text(
            "s.version <> '' AND census_version_cmp(s.source, s.version, ?) < 0",
            &filter.version_lt,
        );
        self.add_text(
            "s.version <> '' AND census_version_cmp(s.source, s.version, ?) <= 0",
            &filter.version_le,
        );
        self.add_text(
            "s.version <> '' AND census_version_cmp(s.source, s.version, ?) > 0",
            &filter.version_gt,
        );
        self.add_text(
            "s.version <> '' AND census_version_cmp(s.source, s.version, ?) >= 0",
            &filter.version_ge,
        );
    }

    fn where_clause(&self) -> String {
        if self.sql.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.sql.join(" AND "))
        }
    }
}

/// `text` as a literal inside a `LIKE ... ESCAPE '\'` pattern.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Catalog rows matching a filter past which `installs` sorts in SQL instead of merging.
const MERGE_MAX_CATALOG_ROWS: usize = 64;

/// One page of installations in (CI id, catalog id) order.
///
/// Usually the filter matches a few catalog rows (one package at a few versions). Each one's
/// installations come in CI order from the `installation_software` index, from the cursor on,
/// so the page is a merge of at most `limit + 1` keys from each: a page costs the same at the
/// end of a walk as at its start. Sorting every match in SQL instead cost the whole match set
/// on every page (15,000 computers and 15 pages for "openssl older than X" at 100,000
/// computers; BENCHMARKS.md). A filter matching more catalog rows than
/// [`MERGE_MAX_CATALOG_ROWS`] (a name pattern) is sorted in SQL.
///
/// The keys are merged before any CI is read, and only the CIs of the page's keys are read
/// (skipping retired ones, which may take another round of keys); the catalog rows are read
/// once per page. The page is read in one transaction, so it is one snapshot and takes the
/// database's read lock once rather than once per row.
fn installs(
    conn: &Connection,
    query: &SoftwareQuery,
) -> Result<Page<SoftwareInstall, (i64, i64)>, StoreError> {
    let tx = conn.unchecked_transaction()?;
    let mut conditions = Conditions::default();
    conditions.filter(&query.filter);
    let mut values = conditions.values.clone();
    values.push(Value::Integer(MERGE_MAX_CATALOG_ROWS as i64 + 1));
    let catalog_rows: Vec<(i64, Arc<InstalledSoftware>)> = tx
        .prepare_cached(&format!(
            "SELECT s.id, s.name, s.version, s.arch, s.vendor, s.source FROM software s {}
             ORDER BY s.id LIMIT ?",
            conditions.where_clause()
        ))?
        .query_map(params_from_iter(values), |r| {
            Ok((r.get(0)?, Arc::new(installed(r, 1)?)))
        })?
        .collect::<Result<_, _>>()?;
    if catalog_rows.len() > MERGE_MAX_CATALOG_ROWS {
        return installs_sorted(&tx, query, conditions);
    }

    let take = query.limit as usize + 1;
    let mut items = Vec::with_capacity(take);
    let mut position = query.after;
    loop {
        let keys = merged_keys(&tx, &catalog_rows, position, take)?;
        let last_round = keys.len() < take;
        let mut cis = ci_columns(&tx, &keys)?;
        let mut keys = keys.into_iter().peekable();
        while let Some((ci_id, software_id, software)) = keys.next() {
            position = Some((ci_id, software_id));
            // A CI with two matching catalog rows comes twice in a row.
            let columns = if keys.peek().is_some_and(|next| next.0 == ci_id) {
                cis.get(&ci_id).cloned()
            } else {
                cis.remove(&ci_id)
            };
            let Some(CiColumns {
                name,
                hostname,
                status,
            }) = columns
            else {
                return Err(StoreError::Corrupt(format!(
                    "installation of catalog row {software_id} on ci {ci_id}, which has no row"
                )));
            };
            if status == "retired" && !query.include_retired {
                continue;
            }
            items.push(SoftwareInstall {
                ci_id,
                ci_name: name,
                hostname,
                ci_status: status,
                software_id,
                software: Arc::clone(software),
            });
            if items.len() == take {
                return Ok(into_page(items, query.limit));
            }
        }
        if last_round {
            return Ok(into_page(items, query.limit));
        }
    }
}

/// An installation: CI id, catalog id, and the catalog row.
type InstallKey<'a> = (i64, i64, &'a Arc<InstalledSoftware>);

/// What a list of installations shows of a CI.
#[derive(Clone)]
struct CiColumns {
    name: String,
    hostname: Option<String>,
    status: String,
}

/// The columns of the CIs of `keys`, by id, read in one statement: a statement run once per
/// row with the id bound would be planned again for every row, since SQLite (with STAT4)
/// plans again whenever a parameter that an index is searched by changes value. Top-level CIs
/// come from the `ci_top_level_listing` index alone, which SQLite would not choose by itself
/// over the row id; any other CI from its row. (Scanning the keys' id range instead of looking
/// each one up was slower: every top-level CI in the range is decoded, wanted or not.)
fn ci_columns(
    conn: &Connection,
    keys: &[InstallKey<'_>],
) -> Result<HashMap<i64, CiColumns>, StoreError> {
    let columns = |r: &Row<'_>| {
        Ok(CiColumns {
            name: r.get(1)?,
            hostname: r.get(2)?,
            status: r.get(3)?,
        })
    };
    let mut found = HashMap::with_capacity(keys.len());
    let ids: Vec<Value> = keys.iter().map(|k| Value::Integer(k.0)).collect();
    let mut top_level = conn.prepare_cached(TOP_LEVEL_CI_COLUMNS)?;
    let mut rows = top_level.query([Rc::new(ids)])?;
    while let Some(row) = rows.next()? {
        found.insert(row.get(0)?, columns(row)?);
    }
    let mut other =
        conn.prepare_cached("SELECT id, name, hostname, status FROM ci WHERE id = ?1")?;
    for (ci_id, _, _) in keys {
        if !found.contains_key(ci_id)
            && let Some(part) = other.query_row([ci_id], columns).optional()?
        {
            found.insert(*ci_id, part);
        }
    }
    Ok(found)
}

/// The name, hostname and status of the top-level CIs among a bound list of ids (`rarray`),
/// from the index alone.
const TOP_LEVEL_CI_COLUMNS: &str =
    "SELECT c.id, c.name, json_extract(c.attributes, '$.hostname'), c.status
     FROM rarray(?1) j JOIN ci c INDEXED BY ci_top_level_listing
       ON c.id = j.value AND c.parent_id IS NULL";

/// The first `take` installations of `catalog_rows` after `after` ((CI id, catalog id)), in
/// that order, whatever the CI's status: at most `take` from each catalog row's stretch of the
/// `installation_software` index, merged.
fn merged_keys<'a>(
    conn: &Connection,
    catalog_rows: &'a [(i64, Arc<InstalledSoftware>)],
    after: Option<(i64, i64)>,
    take: usize,
) -> Result<Vec<InstallKey<'a>>, StoreError> {
    let mut from_catalog_row = conn.prepare_cached(
        "SELECT ci_id FROM installation WHERE software_id = ?1 AND ci_id >= ?2
         ORDER BY ci_id LIMIT ?3",
    )?;
    let mut keys = Vec::new();
    for (software_id, software) in catalog_rows {
        // Past the cursor (ci, sw): a later CI, or the same CI with a later catalog row.
        let first_ci = match after {
            None => i64::MIN,
            Some((ci, sw)) if *software_id > sw => ci,
            Some((ci, _)) => ci.saturating_add(1),
        };
        let rows = from_catalog_row
            .query_map(params![software_id, first_ci, take as i64], |r| r.get(0))?;
        for ci_id in rows {
            keys.push((ci_id?, *software_id, software));
        }
    }
    keys.sort_unstable_by_key(|&(ci_id, software_id, _)| (ci_id, software_id));
    keys.truncate(take);
    Ok(keys)
}

/// The first `limit` of `items` (fetched one over), and the cursor when there are more.
fn into_page(mut items: Vec<SoftwareInstall>, limit: u32) -> Page<SoftwareInstall, (i64, i64)> {
    let next = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|i| (i.ci_id, i.software_id))
    } else {
        None
    };
    Page { items, next }
}

/// [`installs`] for a filter matching many catalog rows: every match sorted in SQL.
fn installs_sorted(
    conn: &Connection,
    query: &SoftwareQuery,
    mut conditions: Conditions,
) -> Result<Page<SoftwareInstall, (i64, i64)>, StoreError> {
    if !query.include_retired {
        conditions.add("c.status <> 'retired'", []);
    }
    if let Some((ci, sw)) = query.after {
        conditions.add(
            "(i.ci_id, s.id) > (?, ?)",
            [Value::Integer(ci), Value::Integer(sw)],
        );
    }
    let sql = format!(
        "SELECT i.ci_id, c.name, c.hostname, c.status, s.id,
                s.name, s.version, s.arch, s.vendor, s.source
         FROM software s
         JOIN installation i ON i.software_id = s.id
         JOIN ci c ON c.id = i.ci_id
         {}
         ORDER BY i.ci_id, s.id
         LIMIT ?",
        conditions.where_clause()
    );
    let mut values = conditions.values;
    values.push(Value::Integer(i64::from(query.limit) + 1));
    let items = conn
        .prepare_cached(&sql)?
        .query_map(params_from_iter(values), |r| {
            Ok(SoftwareInstall {
                ci_id: r.get(0)?,
                ci_name: r.get(1)?,
                hostname: r.get(2)?,
                ci_status: r.get(3)?,
                software_id: r.get(4)?,
                software: Arc::new(installed(r, 5)?),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(into_page(items, query.limit))
}

/// Whether catalog row `s.id` is installed on a CI that is not retired.
const LIVE_INSTALL_EXISTS: &str = "EXISTS (SELECT 1 FROM installation i JOIN ci c \
     ON c.id = i.ci_id WHERE i.software_id = s.id AND c.status <> 'retired')";

fn catalog(conn: &Connection, query: &CatalogQuery) -> Result<Page<CatalogEntry, i64>, StoreError> {
    let mut conditions = Conditions::default();
    conditions.filter(&query.filter);
    if !query.include_unused {
        conditions.add(LIVE_INSTALL_EXISTS, []);
    }
    if let Some(after) = query.after {
        conditions.add(
            "(s.name, s.source, s.version, s.id) > \
             (SELECT name, source, version, id FROM software WHERE id = ?)",
            [Value::Integer(after)],
        );
    }
    // The page is chosen first; only its rows are counted.
    let sql = format!(
        "SELECT s.id, s.name, s.version, s.arch, s.vendor, s.source,
                (SELECT count(*) FROM installation i JOIN ci c ON c.id = i.ci_id
                 WHERE i.software_id = s.id AND c.status <> 'retired')
         FROM (SELECT * FROM software s {}
               ORDER BY s.name, s.source, s.version, s.id LIMIT ?) s
         ORDER BY s.name, s.source, s.version, s.id",
        conditions.where_clause()
    );
    let mut values = conditions.values;
    values.push(Value::Integer(i64::from(query.limit) + 1));
    let mut items = conn
        .prepare_cached(&sql)?
        .query_map(params_from_iter(values), |r| {
            Ok(CatalogEntry {
                id: r.get(0)?,
                software: installed(r, 1)?,
                installs: r.get(6)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let next = if items.len() > query.limit as usize {
        items.truncate(query.limit as usize);
        items.last().map(|e| e.id)
    } else {
        None
    };
    Ok(Page { items, next })
}

fn inventory(conn: &Connection, ci_id: i64) -> Result<Option<CiInventory>, StoreError> {
    let tx = conn.unchecked_transaction()?;
    let Some(mut inventory) = tx
        .prepare_cached(
            "SELECT id, class, name, hostname, os_name, os_version FROM ci WHERE id = ?1",
        )?
        .query_row([ci_id], |r| {
            Ok(CiInventory {
                ci_id: r.get(0)?,
                class: r.get(1)?,
                name: r.get(2)?,
                hostname: r.get(3)?,
                os_name: r.get(4)?,
                os_version: r.get(5)?,
                packages: Vec::new(),
            })
        })
        .optional()?
    else {
        return Ok(None);
    };
    inventory.packages = tx
        .prepare_cached(
            "SELECT s.id, s.name, s.version, s.arch, s.vendor, s.source
             FROM installation i JOIN software s ON s.id = i.software_id
             WHERE i.ci_id = ?1
             ORDER BY s.name, s.id",
        )?
        .query_map(params![ci_id], |r| Ok((r.get(0)?, installed(r, 1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(inventory))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ingest::tests::{AGENT, inventory_batch};
    use crate::store::testing::temp_store;

    #[tokio::test]
    async fn software_of_a_ci_and_computers_running_a_package() {
        let (store, _dir) = temp_store();
        assert_eq!(store.ci_software(1, None, 10).await.unwrap(), None);
        store
            .ingest(inventory_batch(AGENT, 1, &["zsh", "bash"]))
            .await
            .unwrap();
        let other = "5a4c1e0e-2f43-4d8e-9b7e-1d2c3b4a5f60";
        store
            .ingest(inventory_batch(other, 1, &["bash"]))
            .await
            .unwrap();

        let list = store.ci_software(1, None, 10).await.unwrap().unwrap();
        let names: Vec<_> = list.items.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["bash", "zsh"]);
        assert_eq!(list.items[0].version.as_deref(), Some("1.0"));
        assert_eq!(list.next, None);
        // One package a page, in name order, the cursor leading from one to the next.
        let first = store.ci_software(1, None, 1).await.unwrap().unwrap();
        assert_eq!(first.items[0].name, "bash");
        let second = store.ci_software(1, first.next, 1).await.unwrap().unwrap();
        assert_eq!(second.items.len(), 1);
        assert_eq!(second.items[0].name, "zsh");
        assert_eq!(second.next, None);

        let query = |after| SoftwareQuery {
            filter: SoftwareFilter {
                name: Some("bash".into()),
                ..SoftwareFilter::default()
            },
            include_retired: false,
            after,
            limit: 1,
        };
        let first = store.software_installs(query(None)).await.unwrap();
        assert_eq!(first.items.len(), 1);
        assert_eq!(first.items[0].hostname.as_deref(), Some("web-1"));
        let second = store.software_installs(query(first.next)).await.unwrap();
        assert_eq!(second.items.len(), 1);
        assert_ne!(second.items[0].ci_id, first.items[0].ci_id);
        assert_eq!(second.next, None);
        // A cursor naming no catalog row: an empty last page. A catalog row this CI does not
        // have (curl is not on CI 1) still positions by its name.
        let unknown = store.ci_software(1, Some(999), 10).await.unwrap().unwrap();
        assert_eq!((unknown.items.len(), unknown.next), (0, None));
        store
            .ingest(inventory_batch(other, 2, &["bash", "curl"]))
            .await
            .unwrap();
        let curl = store.ci_software(3, None, 10).await.unwrap().unwrap();
        assert_eq!(curl.items[1].name, "curl");
        let after_bash = store.ci_software(3, None, 1).await.unwrap().unwrap().next;
        let after_curl = store
            .ci_software(3, after_bash, 1)
            .await
            .unwrap()
            .unwrap()
            .next;
        assert_eq!(after_curl, None);
        let curl_id: i64 = rusqlite::Connection::open(store.path())
            .unwrap()
            .query_row("SELECT id FROM software WHERE name = 'curl'", [], |r| {
                r.get(0)
            })
            .unwrap();
        let from_curl = store
            .ci_software(1, Some(curl_id), 10)
            .await
            .unwrap()
            .unwrap();
        let names: Vec<_> = from_curl.items.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["zsh"]);

        let none = store.software_installs(named("bas")).await.unwrap();
        assert!(none.items.is_empty());
        store.close().await;
    }

    /// The first ten installations of the package called `name`.
    fn named(name: &str) -> SoftwareQuery {
        SoftwareQuery {
            filter: SoftwareFilter {
                name: Some(name.into()),
                ..SoftwareFilter::default()
            },
            include_retired: false,
            after: None,
            limit: 10,
        }
    }

    /// The listing index holds top-level CIs only; an installation on any other CI (the
    /// collector writes none, but the schema allows one) is still listed, from its row.
    #[tokio::test]
    async fn an_installation_on_a_part_is_listed_from_its_row() {
        let (store, _dir) = temp_store();
        store
            .ingest(inventory_batch(AGENT, 1, &["zsh"]))
            .await
            .unwrap();
        let conn = rusqlite::Connection::open(store.path()).unwrap();
        let (part, part_name): (i64, String) = conn
            .query_row(
                "SELECT id, name FROM ci WHERE parent_id IS NOT NULL ORDER BY id LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        conn.execute(
            "INSERT INTO installation (ci_id, software_id, first_seen)
             SELECT ?1, id, 0 FROM software WHERE name = 'zsh'",
            [part],
        )
        .unwrap();
        let page = store.software_installs(named("zsh")).await.unwrap();
        let listed: Vec<_> = page
            .items
            .iter()
            .map(|i| (i.ci_id, i.ci_name.as_str(), i.hostname.as_deref()))
            .collect();
        assert_eq!(
            listed,
            vec![
                (1, "web-1", Some("web-1")),
                (part, part_name.as_str(), None)
            ]
        );
        store.close().await;
    }

    #[tokio::test]
    async fn a_top_level_ci_is_read_from_the_listing_index_alone() {
        let (store, _dir) = temp_store();
        let plans: Vec<Vec<String>> = store
            .reads
            .run(|conn| {
                let list = Rc::new(vec![Value::Integer(1)]);
                let plan = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> rusqlite::Result<_> {
                    conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?
                        .query_map(params, |r| r.get(3))?
                        .collect::<Result<Vec<String>, _>>()
                };
                Ok(vec![plan(TOP_LEVEL_CI_COLUMNS, &[&list])?])
            })
            .await
            .unwrap();
        for plan in plans {
            assert!(
                plan.iter()
                    .any(|step| step.contains("USING COVERING INDEX ci_top_level_listing")),
                "{plan:?}"
            );
        }
        store.close().await;
    }

    /// Installs `packages` ((name, version, source)) on the computer of `agent`.
    #[tokio::test]
    async fn merged_pages_walk_exactly_as_one_sorted_query() {
        let (store, _dir) = temp_store();
        let versions = [
            "3.0.9-1",
            "3.0.11-1~deb12u2",
            "3.0.14-1~deb12u2",
            "3.0.19-1~deb12u2",
        ];
        let agents: Vec<String> = (0..12)
            .map(|i| format!("{i:04x}0000-2f43-4d8e-9b7e-1d2c3b4a5f60"))
            .collect();
        for (i, agent) in agents.iter().enumerate() {
            let v = versions[i % versions.len()];
            let w = versions[(i / 2) % versions.len()];
            install(
                &store,
                agent,
                1,
                &[
                    ("openssl", v, "dpkg"),
                    ("libssl3", w, "dpkg"),
                    ("zlib", "1", "dpkg"),
                ],
            )
            .await;
        }
        // Retired computers are left out unless asked for: four in a row, more than a page
        // of keys, so a page needs a further round of keys to fill.
        rusqlite::Connection::open(store.path())
            .unwrap()
            .execute(
                "UPDATE ci SET status = 'retired'
                 WHERE name IN ('host-0003', 'host-0004', 'host-0005', 'host-0006')",
                [],
            )
            .unwrap();
        let walk = |filter: SoftwareFilter, include_retired: bool, sorted: bool| {
            let store = &store;
            async move {
                let mut seen = Vec::new();
                let mut after = None;
                loop {
                    let query = SoftwareQuery {
                        filter: filter.clone(),
                        include_retired,
                        after,
                        limit: 3,
                    };
                    let page = store
                        .reads
                        .run(move |conn| {
                            if sorted {
                                let mut conditions = Conditions::default();
                                conditions.filter(&query.filter);
                                installs_sorted(conn, &query, conditions)
                            } else {
                                installs(conn, &query)
                            }
                        })
                        .await
                        .unwrap();
                    assert!(page.items.len() <= 3);
                    seen.extend(
                        page.items
                            .iter()
                            .map(|i| (i.ci_id, i.software_id, i.ci_name.clone())),
                    );
                    match page.next {
                        Some(next) => after = Some(next),
                        None => break seen,
                    }
                }
            }
        };
        let older_ssl = SoftwareFilter {
            name_contains: Some("ssl".into()),
            version_lt: Some("3.0.14".into()),
            ..SoftwareFilter::default()
        };
        for include_retired in [false, true] {
            let merged = walk(older_ssl.clone(), include_retired, false).await;
            let sorted = walk(older_ssl.clone(), include_retired, true).await;
            assert_eq!(merged, sorted);
            assert!(
                merged
                    .windows(2)
                    .all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1))
            );
            assert_eq!(
                merged.iter().any(|(_, _, name)| name == "host-0003"),
                include_retired
            );
            // Computers 0, 1 have both packages old; some have one, some none.
            assert!(merged.len() >= 10, "{merged:?}");
        }
        store.close().await;
    }

    async fn install(store: &Store, agent: &str, seq: u64, packages: &[(&str, &str, &str)]) {
        use crate::store::ingest::tests::{batch, inventory};
        let mut inv = inventory(agent, &[], &["/"]);
        inv.host.hostname = Some(format!("host-{}", &agent[..4]));
        inv.software = packages
            .iter()
            .map(|(name, version, source)| census_common::Software {
                name: (*name).into(),
                version: (!version.is_empty()).then(|| (*version).into()),
                arch: Some("x86_64".into()),
                vendor: None,
                source: (*source).into(),
            })
            .collect();
        let report = census_common::Report {
            seq,
            body: census_common::ReportBody::Inventory(inv),
        };
        store.ingest(batch(agent, vec![report])).await.unwrap();
    }

    const A: &str = "aaaa0000-2f43-4d8e-9b7e-1d2c3b4a5f60";
    const B: &str = "bbbb0000-2f43-4d8e-9b7e-1d2c3b4a5f60";
    const C: &str = "cccc0000-2f43-4d8e-9b7e-1d2c3b4a5f60";

    fn hosts(page: &Page<SoftwareInstall, (i64, i64)>) -> Vec<String> {
        page.items
            .iter()
            .map(|i| {
                format!(
                    "{}={}",
                    i.hostname.as_deref().unwrap(),
                    i.software.version.as_deref().unwrap_or("?")
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn filters_compare_versions_by_each_source() {
        let (store, _dir) = temp_store();
        install(
            &store,
            A,
            1,
            &[
                ("openssl", "3.0.11-1~deb12u2", "dpkg"),
                ("libssl3", "3.0.13-1~deb12u1", "dpkg"),
                ("zlib", "", "dpkg"),
            ],
        )
        .await;
        install(
            &store,
            B,
            1,
            &[
                ("openssl", "1:1.1.1w-0+deb11u1", "dpkg"),
                ("100%_pure", "1", "dpkg"),
            ],
        )
        .await;
        install(
            &store,
            C,
            1,
            &[
                ("openssl", "3.0.9-r0", "apk"),
                ("OpenSSL-libs", "1:3.0.7-28.el9_4", "rpm"),
            ],
        )
        .await;
        let query = |filter: SoftwareFilter| SoftwareQuery {
            filter,
            include_retired: false,
            after: None,
            limit: 100,
        };
        let older = |name: &str, than: &str| SoftwareFilter {
            name: Some(name.into()),
            version_lt: Some(than.into()),
            ..SoftwareFilter::default()
        };
        // The epoch makes 1:1.1.1w newer than 3.0.13; apk's 3.0.9 is older.
        let page = store
            .software_installs(query(older("openssl", "3.0.13")))
            .await
            .unwrap();
        assert_eq!(
            hosts(&page),
            ["host-aaaa=3.0.11-1~deb12u2", "host-cccc=3.0.9-r0"]
        );
        // A Debian revision before the upstream release (~) is older than the release's
        // revision but not than the bare upstream version.
        let page = store
            .software_installs(query(older("libssl3", "3.0.13-1")))
            .await
            .unwrap();
        assert_eq!(hosts(&page), ["host-aaaa=3.0.13-1~deb12u1"]);
        let page = store
            .software_installs(query(older("libssl3", "3.0.13")))
            .await
            .unwrap();
        assert_eq!(hosts(&page), Vec::<String>::new());
        let at_least = SoftwareFilter {
            name_contains: Some("SSL".into()),
            version_ge: Some("3.0.11".into()),
            version_le: Some("3.0.13-1~deb12u1".into()),
            ..SoftwareFilter::default()
        };
        let page = store.software_installs(query(at_least)).await.unwrap();
        // One CI: in catalog id order, which is the order the catalog rows were made.
        let mut found = hosts(&page);
        found.sort();
        assert_eq!(
            found,
            ["host-aaaa=3.0.11-1~deb12u2", "host-aaaa=3.0.13-1~deb12u1"]
        );
        // An unknown version matches no comparison, whichever way.
        for filter in [
            older("zlib", "99"),
            SoftwareFilter {
                name: Some("zlib".into()),
                version_gt: Some("0".into()),
                ..SoftwareFilter::default()
            },
        ] {
            assert!(
                store
                    .software_installs(query(filter))
                    .await
                    .unwrap()
                    .items
                    .is_empty()
            );
        }
        // `%` and `_` in name_contains are literal.
        let literal = |part: &str| SoftwareFilter {
            name_contains: Some(part.into()),
            ..SoftwareFilter::default()
        };
        let page = store
            .software_installs(query(literal("0%_")))
            .await
            .unwrap();
        assert_eq!(hosts(&page), ["host-bbbb=1"]);
        assert!(
            store
                .software_installs(query(literal("o%l")))
                .await
                .unwrap()
                .items
                .is_empty()
        );
        let by_source = SoftwareFilter {
            name_contains: Some("openssl".into()),
            source: Some("rpm".into()),
            arch: Some("x86_64".into()),
            ..SoftwareFilter::default()
        };
        let page = store.software_installs(query(by_source)).await.unwrap();
        assert_eq!(hosts(&page), ["host-cccc=1:3.0.7-28.el9_4"]);

        // The catalog: counts of installs on CIs that are not retired.
        let catalog = |filter: SoftwareFilter, include_unused: bool, after: Option<i64>| {
            store.software_catalog(CatalogQuery {
                filter,
                include_unused,
                after,
                limit: 2,
            })
        };
        let openssl = SoftwareFilter {
            name: Some("openssl".into()),
            ..SoftwareFilter::default()
        };
        let first = catalog(openssl.clone(), false, None).await.unwrap();
        let rows: Vec<_> = first
            .items
            .iter()
            .map(|e| {
                (
                    e.software.source.as_str(),
                    e.software.version.clone().unwrap(),
                    e.installs,
                )
            })
            .collect();
        // By name, then source, then version text.
        assert_eq!(
            rows,
            [
                ("apk", "3.0.9-r0".to_owned(), 1),
                ("dpkg", "1:1.1.1w-0+deb11u1".to_owned(), 1)
            ]
        );
        let second = catalog(openssl.clone(), false, first.next).await.unwrap();
        assert_eq!(second.items.len(), 1);
        assert_eq!(
            second.items[0].software.version.as_deref(),
            Some("3.0.11-1~deb12u2")
        );
        assert_eq!(second.next, None);
        // A forged cursor: an empty page.
        let forged = catalog(openssl.clone(), false, Some(9999)).await.unwrap();
        assert_eq!((forged.items.len(), forged.next), (0, None));

        // Retiring host A: its installs leave the counts and the list, and a catalog row
        // only it had is unused.
        let conn = Connection::open(store.path()).unwrap();
        conn.execute("UPDATE ci SET status = 'retired' WHERE json_extract(attributes, '$.hostname') = 'host-aaaa'", []).unwrap();
        let page = store
            .software_installs(query(older("openssl", "3.0.13")))
            .await
            .unwrap();
        assert_eq!(hosts(&page), ["host-cccc=3.0.9-r0"]);
        let page = store
            .software_installs(SoftwareQuery {
                include_retired: true,
                ..query(older("openssl", "3.0.13"))
            })
            .await
            .unwrap();
        assert_eq!(
            hosts(&page),
            ["host-aaaa=3.0.11-1~deb12u2", "host-cccc=3.0.9-r0"]
        );
        assert_eq!(page.items[0].ci_status, "retired");
        let libssl = SoftwareFilter {
            name: Some("libssl3".into()),
            ..SoftwareFilter::default()
        };
        assert!(
            catalog(libssl.clone(), false, None)
                .await
                .unwrap()
                .items
                .is_empty()
        );
        let unused = catalog(libssl, true, None).await.unwrap();
        assert_eq!(unused.items.len(), 1);
        assert_eq!(unused.items[0].installs, 0);

        // The inventory of one CI, and none of an unknown one.
        let c_id: i64 = conn
            .query_row(
                "SELECT id FROM ci WHERE json_extract(attributes, '$.hostname') = 'host-cccc'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let inventory = store.ci_inventory(c_id).await.unwrap().unwrap();
        assert_eq!(inventory.class, "computer");
        assert_eq!(inventory.os_name.as_deref(), Some("Debian GNU/Linux"));
        let names: Vec<_> = inventory
            .packages
            .iter()
            .map(|(_, p)| p.name.as_str())
            .collect();
        assert_eq!(names, ["OpenSSL-libs", "openssl"]);
        assert_eq!(store.ci_inventory(9999).await.unwrap(), None);
        store.close().await;
    }
}
