//! Reading software: what one computer has installed, and which computers have a package.

use rusqlite::{Connection, Row, params};

use super::model::{InstalledSoftware, Page, SoftwareInstall, SoftwareQuery};
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

    /// The computers that have a package of this exact name, by CI id.
    pub async fn software_installs(
        &self,
        query: SoftwareQuery,
    ) -> Result<Page<SoftwareInstall, (i64, i64)>, StoreError> {
        self.reads.run(move |conn| installs(conn, &query)).await
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

fn installs(
    conn: &Connection,
    query: &SoftwareQuery,
) -> Result<Page<SoftwareInstall, (i64, i64)>, StoreError> {
    let (after_ci, after_sw) = query.after.unwrap_or((0, 0));
    let mut items = conn
        .prepare_cached(
            "SELECT i.ci_id, c.name, c.hostname, s.id, s.name, s.version, s.arch, s.vendor, s.source
             FROM software s
             JOIN installation i ON i.software_id = s.id
             JOIN ci c ON c.id = i.ci_id
             WHERE s.name = ?1 AND (i.ci_id, s.id) > (?2, ?3)
             ORDER BY i.ci_id, s.id
             LIMIT ?4",
        )?
        .query_map(
            params![query.name, after_ci, after_sw, i64::from(query.limit) + 1],
            |r| {
                Ok(SoftwareInstall {
                    ci_id: r.get(0)?,
                    ci_name: r.get(1)?,
                    hostname: r.get(2)?,
                    software_id: r.get(3)?,
                    software: installed(r, 4)?,
                })
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    let next = if items.len() > query.limit as usize {
        items.truncate(query.limit as usize);
        items.last().map(|i| (i.ci_id, i.software_id))
    } else {
        None
    };
    Ok(Page { items, next })
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
            name: "bash".into(),
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

        let none = store
            .software_installs(SoftwareQuery {
                name: "bas".into(),
                after: None,
                limit: 10,
            })
            .await
            .unwrap();
        assert!(none.items.is_empty());
        store.close().await;
    }
}
