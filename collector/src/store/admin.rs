//! Writes to CIs that no inventory makes: an admin creating, changing and deleting CIs, and the
//! collector marking silent computers `stale`.
//!
//! **Promises:**
//! - A CI is *discovered* when an inventory made it: an identification rule matched it
//!   (`identified_by`), it is a part of a computer (`parent_id`), or an agent reports it. Its
//!   name and attributes come from the inventory, so an admin may change only its criticality
//!   and status, and may not delete it (retiring it is the way out). Any other CI was created
//!   through the API and is the admin's to change or delete. The predicate is evaluated at the
//!   time of the write (`DISCOVERED`).
//! - A refused write writes nothing: every check runs before the first write of its job.
//! - Every change writes its history rows in the same transaction (`created`, `renamed`,
//!   `criticality_changed`, `status_changed`, `attribute_changed` per key, `deleted`, and the
//!   relationships a delete ends, on both ends). A patch that changes nothing writes nothing.
//! - The stale sweep marks at most a batch of computers per writer job, so it never holds the
//!   writer for long, and marks only computers an inventory made that are `active`: a retired
//!   computer is never marked stale, nor is one an admin created (nothing reports it).

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value, json};

use super::history::{ChangeKind, Recorder, Source};
use super::model::{CiPatch, NewCi, Refusable, Refusal, StaleSweep};
use super::relations;
use super::{Store, StoreError, to_ms};
use crate::cmdb::{CLASS_COMPUTER, CLASS_FILESYSTEM, CLASS_NETWORK_INTERFACE};

/// Longest CI name, in characters.
pub const MAX_NAME_CHARS: usize = 255;
/// Longest class name, in bytes (`^[a-z][a-z0-9_]{0,63}$`).
pub const MAX_CLASS_BYTES: usize = 64;
/// Largest attributes object, as compact JSON.
pub const MAX_ATTRIBUTES_BYTES: usize = 64 * 1024;
/// Longest attribute key, in characters.
pub const MAX_ATTRIBUTE_KEY_CHARS: usize = 128;
/// Computers one stale-sweep job marks at most.
pub const STALE_BATCH: usize = 256;

/// Statuses an admin may set; `stale` is the collector's to set.
pub const ADMIN_STATUSES: &[&str] = &["active", "retired"];

/// SQL for "CI `c` was discovered" (see the module doc), over `ci c`.
const DISCOVERED: &str = "(c.identified_by IS NOT NULL OR c.parent_id IS NOT NULL \
     OR EXISTS (SELECT 1 FROM agent a WHERE a.ci_id = c.id))";

/// Whether `class` is a class name an admin may create CIs of. Parts (filesystems, network
/// interfaces) exist only inside a computer's inventory. A computer may be created: a machine
/// no agent runs on (an appliance, a printer) is still a computer.
pub fn check_class(class: &str) -> Result<(), Refusal> {
    let well_formed = !class.is_empty()
        && class.len() <= MAX_CLASS_BYTES
        && class.starts_with(|c: char| c.is_ascii_lowercase())
        && class
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !well_formed {
        return Err(Refusal::InvalidField(format!(
            "class must be 1 to {MAX_CLASS_BYTES} lowercase letters, digits and underscores, \
             starting with a letter (like business_service), not {class:?}"
        )));
    }
    if [CLASS_FILESYSTEM, CLASS_NETWORK_INTERFACE].contains(&class) {
        return Err(Refusal::InvalidField(format!(
            "class {class} is a part of a computer and comes only from the computer's \
             inventory; create a {CLASS_COMPUTER} or another class"
        )));
    }
    Ok(())
}

pub fn check_name(name: &str) -> Result<(), Refusal> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(Refusal::InvalidField(format!(
            "name must be 1 to {MAX_NAME_CHARS} characters, not {chars}"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Refusal::InvalidField(
            "name must not contain control characters".to_owned(),
        ));
    }
    Ok(())
}

pub fn check_criticality(criticality: i64) -> Result<(), Refusal> {
    if !(1..=4).contains(&criticality) {
        return Err(Refusal::InvalidField(format!(
            "criticality must be an integer from 1 (highest) to 4, not {criticality}"
        )));
    }
    Ok(())
}

pub fn check_attributes(attributes: &Map<String, Value>) -> Result<(), Refusal> {
    if let Some(key) = attributes
        .keys()
        .find(|k| k.is_empty() || k.chars().count() > MAX_ATTRIBUTE_KEY_CHARS)
    {
        return Err(Refusal::InvalidField(format!(
            "attributes: a key must be 1 to {MAX_ATTRIBUTE_KEY_CHARS} characters, not {:?}",
            key.chars().take(40).collect::<String>()
        )));
    }
    let size = Value::Object(attributes.clone()).to_string().len();
    if size > MAX_ATTRIBUTES_BYTES {
        return Err(Refusal::InvalidField(format!(
            "attributes must be at most {MAX_ATTRIBUTES_BYTES} bytes of JSON, not {size}"
        )));
    }
    Ok(())
}

/// Applies a JSON merge patch (RFC 7396) to `target`: a null removes its key, an object merges
/// into an object, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(changes) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(fields) = target else {
        unreachable!("made an object above")
    };
    for (key, value) in changes {
        if value.is_null() {
            fields.remove(key);
        } else {
            merge_patch(fields.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

impl Store {
    /// Creates a CI as an admin; answers its id.
    pub async fn create_ci(
        &self,
        new: NewCi,
        source: Source,
        now: time::OffsetDateTime,
    ) -> Result<Refusable<i64>, StoreError> {
        self.writer
            .run(move |conn| create(conn, &new, &source, to_ms(now)))
            .await
    }

    /// Changes a CI as an admin.
    pub async fn update_ci(
        &self,
        id: i64,
        patch: CiPatch,
        source: Source,
        now: time::OffsetDateTime,
    ) -> Result<Refusable<()>, StoreError> {
        self.writer
            .run(move |conn| update(conn, id, &patch, &source, to_ms(now)))
            .await
    }

    /// Deletes a CI created through the API, ending its relationships.
    pub async fn delete_ci(
        &self,
        id: i64,
        source: Source,
        now: time::OffsetDateTime,
    ) -> Result<Refusable<()>, StoreError> {
        self.writer
            .run(move |conn| delete(conn, id, &source, to_ms(now)))
            .await
    }

    /// Marks `stale` every active computer an inventory made whose last report (of its CI row
    /// or its agent) is older than `now - stale_after`, in writer jobs of at most `batch`.
    pub async fn mark_stale(
        &self,
        now: time::OffsetDateTime,
        stale_after: time::Duration,
        batch: usize,
    ) -> Result<StaleSweep, StoreError> {
        let cutoff = to_ms(now - stale_after);
        let now = to_ms(now);
        let batch = batch.max(1);
        let mut sweep = StaleSweep::default();
        loop {
            let marked = self
                .writer
                .run(move |conn| mark_stale_batch(conn, cutoff, now, batch))
                .await?;
            sweep.jobs += 1;
            sweep.marked += marked;
            if marked < batch {
                return Ok(sweep);
            }
        }
    }
}

/// A CI as a write sees it before changing it.
struct Current {
    class: String,
    name: String,
    status: String,
    criticality: i64,
    attributes: Value,
    discovered: bool,
}

fn current(conn: &Connection, id: i64) -> Result<Option<Current>, StoreError> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT c.class, c.name, c.status, c.criticality, c.attributes, {DISCOVERED}
             FROM ci c WHERE c.id = ?1"
        ))?
        .query_row([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, bool>(5)?,
            ))
        })
        .optional()?;
    let Some((class, name, status, criticality, attributes, discovered)) = row else {
        return Ok(None);
    };
    let attributes = serde_json::from_str(&attributes)
        .map_err(|e| StoreError::Corrupt(format!("attributes of ci {id}: {e}")))?;
    Ok(Some(Current {
        class,
        name,
        status,
        criticality,
        attributes,
        discovered,
    }))
}

fn no_such_ci(id: i64) -> Refusal {
    Refusal::NotFound(format!("there is no CI with id {id}"))
}

fn create(
    conn: &Connection,
    new: &NewCi,
    source: &Source,
    now: i64,
) -> Result<Refusable<i64>, StoreError> {
    let checked = check_class(&new.class)
        .and(check_name(&new.name))
        .and(check_criticality(new.criticality))
        .and(check_attributes(&new.attributes));
    if let Err(refusal) = checked {
        return Ok(Err(refusal));
    }
    let id: i64 = conn
        .prepare_cached(
            "INSERT INTO ci (class, name, criticality, attributes, first_seen, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5) RETURNING id",
        )?
        .query_row(
            params![
                new.class,
                new.name,
                new.criticality,
                Value::Object(new.attributes.clone()).to_string(),
                now
            ],
            |r| r.get(0),
        )?;
    Recorder::new(conn, now, source).record(
        id,
        ChangeKind::Created,
        None,
        None,
        Some(&json!({ "class": new.class, "name": new.name })),
    )?;
    Ok(Ok(id))
}

fn update(
    conn: &Connection,
    id: i64,
    patch: &CiPatch,
    source: &Source,
    now: i64,
) -> Result<Refusable<()>, StoreError> {
    let Some(ci) = current(conn, id)? else {
        return Ok(Err(no_such_ci(id)));
    };
    let name = patch.name.clone().unwrap_or_else(|| ci.name.clone());
    let criticality = patch.criticality.unwrap_or(ci.criticality);
    let status = patch.status.clone().unwrap_or_else(|| ci.status.clone());
    let mut attributes = ci.attributes.clone();
    if let Some(changes) = &patch.attributes {
        merge_patch(&mut attributes, &Value::Object(changes.clone()));
    }
    let mut checked = check_name(&name).and(check_criticality(criticality));
    // Sending back the status a CI has is no change, even `stale`.
    if let Some(status) = &patch.status
        && *status != ci.status
        && !ADMIN_STATUSES.contains(&status.as_str())
    {
        checked = checked.and(Err(Refusal::InvalidField(if status == "stale" {
            "status stale is set only by the collector, for a computer that stopped \
             reporting; set active or retired"
                .to_owned()
        } else {
            format!(
                "status must be one of {}, not {status:?}",
                ADMIN_STATUSES.join(", ")
            )
        })));
    }
    let attributes_changed = attributes != ci.attributes;
    if attributes_changed && let Some(fields) = attributes.as_object() {
        checked = checked.and(check_attributes(fields));
    }
    if let Err(refusal) = checked {
        return Ok(Err(refusal));
    }
    let renamed = name != ci.name;
    if ci.discovered && (renamed || attributes_changed) {
        let what = match (renamed, attributes_changed) {
            (true, true) => "name and attributes",
            (true, false) => "name",
            _ => "attributes",
        };
        return Ok(Err(Refusal::Conflict(format!(
            "CI {id} ({} {:?}) was discovered from an inventory, which sets its {what}; \
             only its criticality and status can be changed",
            ci.class, ci.name
        ))));
    }
    if !renamed && criticality == ci.criticality && status == ci.status && !attributes_changed {
        return Ok(Ok(()));
    }
    conn.prepare_cached(
        "UPDATE ci SET name = ?2, criticality = ?3, status = ?4, attributes = ?5 WHERE id = ?1",
    )?
    .execute(params![
        id,
        name,
        criticality,
        status,
        attributes.to_string()
    ])?;
    let recorder = Recorder::new(conn, now, source);
    recorder.changed(id, ChangeKind::Renamed, &json!(ci.name), &json!(name))?;
    recorder.changed(
        id,
        ChangeKind::CriticalityChanged,
        &json!(ci.criticality),
        &json!(criticality),
    )?;
    recorder.changed(
        id,
        ChangeKind::StatusChanged,
        &json!(ci.status),
        &json!(status),
    )?;
    recorder.attributes(id, &ci.attributes, &attributes)?;
    Ok(Ok(()))
}

fn delete(
    conn: &Connection,
    id: i64,
    source: &Source,
    now: i64,
) -> Result<Refusable<()>, StoreError> {
    let Some(ci) = current(conn, id)? else {
        return Ok(Err(no_such_ci(id)));
    };
    if ci.discovered {
        return Ok(Err(Refusal::Conflict(format!(
            "CI {id} ({} {:?}) was discovered from an inventory, which would bring it back; \
             retire it instead: PATCH /api/v1/cis/{id} {{\"status\": \"retired\"}}",
            ci.class, ci.name
        ))));
    }
    let recorder = Recorder::new(conn, now, source);
    relations::end_all(conn, id, &recorder)?;
    recorder.record(
        id,
        ChangeKind::Deleted,
        None,
        Some(&json!({ "class": ci.class, "name": ci.name })),
        None,
    )?;
    conn.prepare_cached("DELETE FROM ci WHERE id = ?1")?
        .execute([id])?;
    Ok(Ok(()))
}

/// Marks at most `batch` computers stale; answers how many.
fn mark_stale_batch(
    conn: &Connection,
    cutoff: i64,
    now: i64,
    batch: usize,
) -> Result<usize, StoreError> {
    let ids = conn
        .prepare_cached(&format!(
            "SELECT c.id FROM ci c LEFT JOIN agent a ON a.ci_id = c.id
             WHERE c.class = ?1 AND c.status = 'active' AND {DISCOVERED}
               AND max(c.last_seen, coalesce(a.last_seen, c.last_seen)) < ?2
             ORDER BY c.id LIMIT ?3"
        ))?
        .query_map(
            params![
                CLASS_COMPUTER,
                cutoff,
                i64::try_from(batch).unwrap_or(i64::MAX)
            ],
            |r| r.get::<_, i64>(0),
        )?
        .collect::<Result<Vec<_>, _>>()?;
    let recorder = Recorder::new(conn, now, &Source::Collector);
    let mut mark = conn.prepare_cached("UPDATE ci SET status = 'stale' WHERE id = ?1")?;
    for id in &ids {
        mark.execute([id])?;
        recorder.changed(
            *id,
            ChangeKind::StatusChanged,
            &json!("active"),
            &json!("stale"),
        )?;
    }
    Ok(ids.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::IngestBatch;
    use crate::store::testing::temp_store;
    use census_common::{HealthSample, Inventory, Report, ReportBody};
    use time::OffsetDateTime;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2025-03-01 12:00 UTC);

    #[test]
    fn merge_patch_follows_rfc_7396() {
        // The examples of RFC 7396, appendix A.
        for (target, patch, result) in [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                json!({"a": "b"}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ] {
            let mut merged = target.clone();
            merge_patch(&mut merged, &patch);
            assert_eq!(merged, result, "{target} + {patch}");
        }
    }

    #[test]
    fn classes_names_and_attributes_are_checked() {
        for ok in ["business_service", "application", "db2", "computer", "x"] {
            check_class(ok).unwrap();
        }
        check_class(&format!("a{}", "b".repeat(63))).unwrap();
        for bad in [
            "",
            "Business",
            "2fa",
            "_x",
            "web-app",
            "caf\u{e9}",
            &format!("a{}", "b".repeat(64)),
        ] {
            let Err(Refusal::InvalidField(message)) = check_class(bad) else {
                panic!("{bad:?} passed");
            };
            assert!(message.starts_with("class must be"), "{message}");
        }
        for part in ["filesystem", "network_interface"] {
            let Err(Refusal::InvalidField(message)) = check_class(part) else {
                panic!("{part} passed");
            };
            assert!(message.contains("part of a computer"), "{message}");
        }
        check_name(&"\u{e9}".repeat(255)).unwrap();
        assert!(check_name(&"x".repeat(256)).is_err());
        assert!(check_name("").is_err());
        assert!(check_name("a\nb").is_err());
        let mut big = Map::new();
        big.insert("k".into(), json!("v".repeat(MAX_ATTRIBUTES_BYTES)));
        assert!(check_attributes(&big).is_err());
        let mut long_key = Map::new();
        long_key.insert("k".repeat(129), json!(1));
        assert!(check_attributes(&long_key).is_err());
        assert!(check_criticality(0).is_err() && check_criticality(5).is_err());
        check_criticality(1).unwrap();
        check_criticality(4).unwrap();
    }

    fn agent(n: u8) -> String {
        format!("0b0c6a34-8d54-4a4a-9d51-8f0e1c3b7a{n:02}")
    }

    async fn report(store: &Store, agent: &str, seq: u64, body: ReportBody, at: OffsetDateTime) {
        store
            .ingest(IngestBatch {
                agent_id: agent.into(),
                reports: vec![Report { seq, body }],
                received_at: at,
            })
            .await
            .unwrap();
    }

    fn computer_of(store: &Store, agent: &str) -> i64 {
        rusqlite::Connection::open(store.path())
            .unwrap()
            .query_row(
                "SELECT ci_id FROM agent WHERE agent_id = ?1",
                [agent],
                |r| r.get(0),
            )
            .unwrap()
    }

    fn status_rows(store: &Store) -> Vec<(i64, String, String, String)> {
        let conn = rusqlite::Connection::open(store.path()).unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT ci_id, old, new, source FROM history WHERE kind = 'status_changed'
                 ORDER BY id",
            )
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn status(store: &Store, id: i64) -> String {
        rusqlite::Connection::open(store.path())
            .unwrap()
            .query_row("SELECT status FROM ci WHERE id = ?1", [id], |r| r.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn silent_computers_go_stale_in_bounded_batches() {
        let (store, _dir) = temp_store();
        // Five computers reporting at T0.
        for n in 1..=5 {
            let inv = Inventory::new(agent(n), T0);
            report(&store, &agent(n), 1, ReportBody::Inventory(inv), T0).await;
        }
        let ids: Vec<i64> = (1..=5).map(|n| computer_of(&store, &agent(n))).collect();
        // The second keeps sending health samples (they move only its agent row).
        let later = T0 + time::Duration::days(29);
        let sample = HealthSample::empty(agent(2), later);
        report(&store, &agent(2), 2, ReportBody::Health(sample), later).await;
        // The third is retired; an admin-made computer no agent reports is never stale.
        let retire = CiPatch {
            status: Some("retired".into()),
            ..CiPatch::default()
        };
        let admin = Source::Api("test".into());
        store
            .update_ci(ids[2], retire, admin.clone(), T0)
            .await
            .unwrap()
            .unwrap();
        let printer = NewCi {
            class: CLASS_COMPUTER.into(),
            name: "printer".into(),
            criticality: 4,
            attributes: Map::new(),
        };
        let printer = store.create_ci(printer, admin, T0).await.unwrap().unwrap();
        let before = status_rows(&store).len();

        let stale_after = time::Duration::days(30);
        // Exactly 30 days: not older than the cut-off yet.
        let sweep = store
            .mark_stale(T0 + stale_after, stale_after, 2)
            .await
            .unwrap();
        assert_eq!(sweep, StaleSweep { marked: 0, jobs: 1 });

        let now = T0 + time::Duration::days(31);
        let sweep = store.mark_stale(now, stale_after, 2).await.unwrap();
        // Three to mark, two a job: a full job, a job with one, and the sweep ends.
        assert_eq!(sweep, StaleSweep { marked: 3, jobs: 2 });
        let expected: Vec<_> = [ids[0], ids[3], ids[4]]
            .into_iter()
            .map(|id| {
                (
                    id,
                    "\"active\"".to_owned(),
                    "\"stale\"".to_owned(),
                    "collector".to_owned(),
                )
            })
            .collect();
        assert_eq!(status_rows(&store)[before..], expected[..]);
        for (id, want) in [
            (ids[0], "stale"),
            (ids[1], "active"),
            (ids[2], "retired"),
            (ids[3], "stale"),
            (ids[4], "stale"),
            (printer, "active"),
        ] {
            assert_eq!(status(&store, id), want, "ci {id}");
        }
        // An exact multiple of the batch takes one more job, which finds nothing.
        let sweep = store
            .mark_stale(T0 + time::Duration::days(60), stale_after, 1)
            .await
            .unwrap();
        assert_eq!(sweep, StaleSweep { marked: 1, jobs: 2 });
        assert_eq!(status(&store, ids[1]), "stale");
        // A stale computer is not marked again.
        let sweep = store
            .mark_stale(T0 + time::Duration::days(90), stale_after, 2)
            .await
            .unwrap();
        assert_eq!(sweep.marked, 0);
        store.close().await;
    }
}
