//! Reading configuration items: the filtered list and one CI with its relationships.

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params_from_iter};

use super::model::{CiDetail, CiFilter, CiRecord, Page, RelationshipRecord};
use super::{Store, StoreError, from_ms};

/// Columns of a [`CiRecord`], for `ci c LEFT JOIN agent a ON a.ci_id = c.id`. A computer's
/// `last_seen` is the later of its row and its agent's last report: health samples move only
/// the agent row, which keeps each sample to one page write.
const CI_COLUMNS: &str = "c.id, c.class, c.name, c.status, c.criticality, c.attributes, \
     c.identified_by, c.first_seen, max(c.last_seen, coalesce(a.last_seen, c.last_seen))";

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
    /// CIs matching `filter`, by ascending id, at most `filter.limit` of them.
    pub async fn list_cis(&self, filter: CiFilter) -> Result<Page<CiRecord, i64>, StoreError> {
        self.reads.run(move |conn| list(conn, &filter)).await
    }

    /// One CI with its latest health sample and relationships; `None` if there is no such CI.
    pub async fn get_ci(&self, id: i64) -> Result<Option<CiDetail>, StoreError> {
        self.reads.run(move |conn| get(conn, id)).await
    }
}

fn list(conn: &Connection, filter: &CiFilter) -> Result<Page<CiRecord, i64>, StoreError> {
    // The statement is assembled from fixed fragments only; every value is a bound parameter.
    let mut sql = format!(
        "SELECT {CI_COLUMNS} FROM ci c LEFT JOIN agent a ON a.ci_id = c.id WHERE c.id > ?1"
    );
    let mut values = vec![SqlValue::Integer(filter.after.unwrap_or(0))];
    let mut bind = |sql: &mut String, fragment: &str, value: &str| {
        values.push(SqlValue::Text(value.to_owned()));
        sql.push_str(&fragment.replace("?N", &format!("?{}", values.len())));
    };
    if let Some(class) = &filter.class {
        bind(&mut sql, " AND c.class = ?N", class);
    }
    if let Some(status) = &filter.status {
        bind(&mut sql, " AND c.status = ?N", status);
    }
    if let Some(prefix) = &filter.name_prefix {
        // A range on the name index: every string starting with the prefix sorts between the
        // prefix and the prefix followed by the highest code point.
        bind(
            &mut sql,
            " AND c.name >= ?N AND c.name < ?N || char(1114111)",
            prefix,
        );
    }
    if let Some(hostname) = &filter.hostname {
        bind(&mut sql, " AND c.hostname = ?N", hostname);
    }
    if let Some(os) = &filter.os {
        bind(&mut sql, " AND (c.os_name = ?N OR c.os_family = ?N)", os);
    }
    values.push(SqlValue::Integer(i64::from(filter.limit) + 1));
    sql.push_str(&format!(" ORDER BY c.id LIMIT ?{}", values.len()));

    let mut stmt = conn.prepare_cached(&sql)?;
    let mut items = stmt
        .query_map(params_from_iter(values), ci_record)?
        .map(|r| with_attributes(r?))
        .collect::<Result<Vec<_>, _>>()?;
    let next = if items.len() > filter.limit as usize {
        items.truncate(filter.limit as usize);
        items.last().map(|c| c.id)
    } else {
        None
    };
    Ok(Page { items, next })
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
    use crate::store::testing::temp_store;
    use census_common::{Report, ReportBody};
    use time::macros::datetime;

    fn filter() -> CiFilter {
        CiFilter {
            limit: 100,
            ..CiFilter::default()
        }
    }

    fn names(page: &Page<CiRecord, i64>) -> Vec<&str> {
        page.items.iter().map(|c| c.name.as_str()).collect()
    }

    #[tokio::test]
    async fn list_filters_and_pages() {
        let (store, _dir) = temp_store();
        let other = "5a4c1e0e-2f43-4d8e-9b7e-1d2c3b4a5f60";
        store.ingest(inventory_batch(AGENT, 1, &[])).await.unwrap(); // web-1, web-1:/
        let mut inv = inventory(other, &[], &["/", "/var"]);
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

        let computers = store
            .list_cis(CiFilter {
                class: Some("computer".into()),
                ..filter()
            })
            .await
            .unwrap();
        assert_eq!(names(&computers), vec!["web-1", "db-1"]);
        let by_host = store
            .list_cis(CiFilter {
                hostname: Some("db-1".into()),
                ..filter()
            })
            .await
            .unwrap();
        assert_eq!(names(&by_host), vec!["db-1"]);
        let by_os_name = store
            .list_cis(CiFilter {
                os: Some("Rocky Linux".into()),
                ..filter()
            })
            .await
            .unwrap();
        assert_eq!(names(&by_os_name), vec!["db-1"]);
        let by_family = store
            .list_cis(CiFilter {
                os: Some("linux".into()),
                ..filter()
            })
            .await
            .unwrap();
        assert_eq!(names(&by_family), vec!["web-1", "db-1"]);
        let by_prefix = store
            .list_cis(CiFilter {
                name_prefix: Some("db-1:".into()),
                ..filter()
            })
            .await
            .unwrap();
        assert_eq!(names(&by_prefix), vec!["db-1:/", "db-1:/var"]);
        // A filter value is data, never SQL.
        let hostile = store
            .list_cis(CiFilter {
                class: Some("x' OR '1'='1".into()),
                ..filter()
            })
            .await
            .unwrap();
        assert!(hostile.items.is_empty());

        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .list_cis(CiFilter {
                    limit: 2,
                    after,
                    ..filter()
                })
                .await
                .unwrap();
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
