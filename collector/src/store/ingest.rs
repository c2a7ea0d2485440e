//! Storing a batch of reports: one writer job, so one transaction, per batch.
//!
//! **Promises:** a batch is stored whole or not at all. Reports are applied in seq order and a
//! report whose seq is at most the agent's `last_seq` is acknowledged without being stored again
//! (see "Deduplication" in the module doc of `store`). The answer, and so the HTTP ack, is sent
//! only after the transaction committed.
//!
//! Within a batch, inventories are applied before health samples, so samples that travel with
//! the first inventory are already filed under the new computer CI. A health sample from an
//! agent that has no computer CI yet (first contact, or a database restored from an older
//! backup) is acknowledged like any other: it becomes the agent's latest sample, waits in
//! `health_pending`, and the outcome asks the agent for its inventory. The transaction that
//! gives the agent its computer CI moves the agent's pending samples into `health_raw` under
//! that CI, so they join the time series (compaction files them into their hours, merging with
//! hours already compacted). At most [`PENDING_PER_AGENT`] samples wait per agent, the newest
//! by series time; older ones are dropped, and retention prunes pending samples too.
//!
//! A sample's series time (the `ts` it is filed and queried under) is its `collected_at`,
//! unless that is more than [`MAX_CLOCK_AHEAD_MS`] (5 minutes)
//! ahead of the collector's clock when the batch arrived: then the machine's clock is wrong, the
//! series time is the arrival time, and one warning per batch names the agent and the skew. The
//! stored sample keeps its own `collected_at`. Without this, one sample dated in year 9999 would
//! make a permanent hourly row far in the future.
//!
//! An inventory lists in `incomplete` the facets the agent could not learn this time (they
//! overran their time budget): their fields are empty because they are unknown, so the stored
//! attributes of those facets (and the name, for `host`), their parts and the installed
//! software are left as they were, and only the facets it did learn are applied.

use std::sync::Arc;

use census_common::{HealthSample, Inventory, ReportBody};
use rusqlite::{Connection, OptionalExtension, params};
use time::UtcOffset;

use super::health::MAX_CLOCK_AHEAD_MS;
use super::history::{ChangeKind, Recorder, Source};
use super::incidents;
use super::model::{IngestBatch, IngestOutcome};
use super::reconcile::{self, Applied};
use super::{Store, StoreError, to_ms};
use crate::cmdb::Placeholders;
use crate::cmdb::diff::SoftwareKey;
use crate::incidents::EngineOptions;

/// Most health samples kept per agent while it has no computer CI: a day at one a minute.
pub const PENDING_PER_AGENT: u32 = 1440;

impl Store {
    /// Stores a batch and answers once it is durable.
    pub async fn ingest(&self, mut batch: IngestBatch) -> Result<IngestOutcome, StoreError> {
        // The writer is the one serial part of ingest, so the catalog ids of an inventory's
        // packages are found first (in the catalog cache, else on a read connection); the
        // writer looks up only what was not committed yet.
        batch.reports.sort_by_key(|r| r.seq);
        let (packages, prepared) = prepare_inventories(&mut batch);
        let mut ids = if packages.is_empty() {
            Vec::new()
        } else {
            self.known_catalog(&packages).await?
        }
        .into_iter();
        drop(packages);
        let prepared: Vec<Prepared> = prepared
            .into_iter()
            .map(|(digest, count)| Prepared {
                digest,
                known: ids.by_ref().take(count).collect(),
            })
            .collect();
        let placeholders = self.placeholders.clone();
        let engine = self.engine.clone();
        // The writer job borrows the batch and the catalog ids; this task keeps a reference
        // to each, so their thousands of strings are freed here, not on the writer thread.
        let batch = Arc::new(batch);
        let prepared = Arc::new(prepared);
        let (job_batch, job_prepared) = (Arc::clone(&batch), Arc::clone(&prepared));
        self.writer
            .run(move |conn| apply_batch(conn, &placeholders, &engine, &job_prepared, &job_batch))
            .await
    }
}

/// What the writer job needs of an inventory beyond the report, worked out before it.
pub(crate) struct Prepared {
    /// The content digest of the normalized inventory.
    digest: String,
    /// The committed catalog ids of its packages, by position (`reconcile::KnownIds`).
    known: Vec<Option<i64>>,
}

/// Catalog keys, each with whether the report names a vendor.
type PackageKeys = Vec<(SoftwareKey, bool)>;

/// The work on a batch's inventories that needs no database, done before the writer job:
/// normalizes each inventory, lists its packages' catalog keys (each with whether the report
/// names a vendor) and computes its content digest. Answers the keys of every inventory in
/// report order, and for each inventory its digest and how many keys it has.
fn prepare_inventories(batch: &mut IngestBatch) -> (PackageKeys, Vec<(String, usize)>) {
    let mut packages = Vec::new();
    let mut prepared = Vec::new();
    for report in &mut batch.reports {
        if let ReportBody::Inventory(inv) = &mut report.body {
            inv.normalize();
            let keys = reconcile::package_keys(inv);
            prepared.push((inv.content_digest(), keys.len()));
            packages.extend(keys);
        }
    }
    (packages, prepared)
}

/// The agent row as the batch changes it; written back once at the end.
struct AgentState {
    ci_id: Option<i64>,
    last_seq: Option<i64>,
    digest: Option<String>,
    latest_health: Option<Vec<u8>>,
    latest_health_at: Option<i64>,
    health_interval_ms: Option<i64>,
}

pub(crate) fn apply_batch(
    conn: &Connection,
    placeholders: &Placeholders,
    engine: &EngineOptions,
    prepared: &[Prepared],
    batch: &IngestBatch,
) -> Result<IngestOutcome, StoreError> {
    let now = to_ms(batch.received_at);
    let agent_id = &batch.agent_id;
    // In seq order (Store::ingest sorted them); `prepared` follows the inventories in it.
    let reports = &batch.reports;
    let mut prepared = prepared.iter();

    // The row exists from the start of the transaction so identification rules can see it.
    conn.prepare_cached("INSERT OR IGNORE INTO agent (agent_id, last_seen) VALUES (?1, ?2)")?
        .execute(params![agent_id, now])?;
    let mut state = conn
        .prepare_cached(
            "SELECT ci_id, last_seq, inventory_digest, latest_health, latest_health_at,
                    health_interval_ms
             FROM agent WHERE agent_id = ?1",
        )?
        .query_row([&agent_id], |r| {
            Ok(AgentState {
                ci_id: r.get(0)?,
                last_seq: r.get(1)?,
                digest: r.get(2)?,
                latest_health: r.get(3)?,
                latest_health_at: r.get(4)?,
                health_interval_ms: r.get(5)?,
            })
        })?;

    let mut acked = Vec::with_capacity(reports.len());
    let mut inventories = Vec::new();
    let mut samples = Vec::new();
    for report in reports {
        // Taken for every inventory, stored or repeated, so `prepared` stays in step.
        let ready = matches!(report.body, ReportBody::Inventory(_))
            .then(|| prepared.next().expect("one Prepared per inventory"));
        acked.push(report.seq);
        let seq = i64::try_from(report.seq)
            .map_err(|_| StoreError::Invalid(format!("seq {} is too large", report.seq)))?;
        if state.last_seq.is_some_and(|last| seq <= last) {
            continue;
        }
        state.last_seq = Some(seq);
        match &report.body {
            ReportBody::Inventory(inv) => {
                inventories.push((inv, ready.expect("taken for every inventory")));
            }
            ReportBody::Health(sample) => samples.push(sample.clone()),
        }
    }
    acked.dedup();
    let stored = inventories.len() + samples.len();

    let had_ci = state.ci_id.is_some();
    for inventory in inventories {
        apply_inventory(conn, placeholders, &mut state, agent_id, inventory, now)?;
    }
    // A stale or retired computer that reports again is active again.
    if !samples.is_empty()
        && let Some(ci_id) = state.ci_id
    {
        let rec = Recorder::new(conn, now, &Source::Agent(agent_id.clone()));
        reconcile::reactivate(conn, &rec, ci_id)?;
    }
    // The smallest ts this batch adds to health_raw.
    let mut raw_min: Option<i64> = None;
    if !had_ci && let Some(ci_id) = state.ci_id {
        raw_min = adopt_pending_health(conn, agent_id, ci_id)?;
    }
    let mut pending = false;
    let mut most_ahead_ms = 0;
    // The rules are judged on each sample filed under the computer, in the same transaction.
    let judge = match state.ci_id {
        Some(ci_id) if !samples.is_empty() => incidents::Judge::load(conn, engine, ci_id)?,
        _ => None,
    };
    for mut sample in samples {
        if let Some(secs) = sample.interval_secs {
            state.health_interval_ms = Some(i64::from(secs) * 1000);
        }
        let filed = apply_health(conn, &mut state, agent_id, &mut sample, now)?;
        if !filed.pending
            && let Some(judge) = &judge
        {
            judge.sample(conn, &sample, filed.ts, now)?;
        }
        pending |= filed.pending;
        most_ahead_ms = most_ahead_ms.max(filed.ahead_ms);
        if !filed.pending {
            raw_min = Some(raw_min.map_or(filed.ts, |m| m.min(filed.ts)));
        }
    }
    if pending {
        trim_pending_health(conn, agent_id)?;
    }
    if let Some(ts) = raw_min {
        lower_raw_floor(conn, ts)?;
    }
    if most_ahead_ms > 0 {
        tracing::warn!(
            agent = %agent_id,
            ahead = %time::Duration::milliseconds(most_ahead_ms),
            "health samples dated ahead of the collector's clock (the machine's clock is wrong); \
             filed under their arrival time"
        );
    }

    // Any report means the agent is alive: its silence incidents resolve.
    if let Some(ci_id) = state.ci_id {
        incidents::reported(conn, ci_id, now)?;
    }
    conn.prepare_cached(
        "UPDATE agent SET ci_id = ?2, last_seq = ?3, last_seen = ?4, inventory_digest = ?5,
                          latest_health = ?6, latest_health_at = ?7, health_interval_ms = ?8
         WHERE agent_id = ?1",
    )?
    .execute(params![
        agent_id,
        state.ci_id,
        state.last_seq,
        now,
        state.digest,
        state.latest_health,
        state.latest_health_at,
        state.health_interval_ms
    ])?;
    Ok(IngestOutcome {
        acked,
        stored,
        // No computer yet, or its stored inventory was overwritten by an import: the agent's
        // own inventory is wanted.
        send_inventory: state.ci_id.is_none() || state.digest.is_none(),
        // Stored seqs come from u64s that fitted an i64, so they are never negative.
        last_seq: state.last_seq.and_then(|seq| u64::try_from(seq).ok()),
    })
}

fn apply_inventory(
    conn: &Connection,
    placeholders: &Placeholders,
    state: &mut AgentState,
    agent_id: &str,
    // Normalized, with its digest and catalog ids (`prepare_inventories`).
    (inv, prepared): (&Inventory, &Prepared),
    now: i64,
) -> Result<(), StoreError> {
    let rec = Recorder::new(conn, now, &Source::Agent(agent_id.to_owned()));
    let found = reconcile::identify(conn, placeholders, inv)?;

    if let Some(found) = found
        && state.ci_id == Some(found.ci_id)
        && state.digest.as_deref() == Some(prepared.digest.as_str())
    {
        // Same content as the stored inventory: the machine was seen, nothing changed.
        conn.prepare_cached(
            "UPDATE ci SET last_seen = ?2 WHERE id = ?1 OR (parent_id = ?1 AND status = 'active')",
        )?
        .execute(params![found.ci_id, now])?;
        reconcile::reactivate(conn, &rec, found.ci_id)?;
        return Ok(());
    }

    let applied = reconcile::apply(conn, &rec, placeholders, inv, found, &prepared.known, now)?;
    if state.ci_id != Some(applied.ci_id) {
        attach(conn, &rec, agent_id, &applied)?;
        state.ci_id = Some(applied.ci_id);
    }
    state.digest = Some(prepared.digest.clone());
    Ok(())
}

/// Makes `agent_id` the agent of the CI its inventory identified. An agent that reported the
/// CI before (the same machine before a reinstall) is detached: one agent per computer.
fn attach(
    conn: &Connection,
    rec: &Recorder<'_>,
    agent_id: &str,
    applied: &Applied,
) -> Result<(), StoreError> {
    let previous: Option<String> = conn
        .prepare_cached(
            "UPDATE agent SET ci_id = NULL WHERE ci_id = ?1 AND agent_id <> ?2 RETURNING agent_id",
        )?
        .query_row(params![applied.ci_id, agent_id], |r| r.get(0))
        .optional()?;
    conn.prepare_cached("UPDATE agent SET ci_id = ?2 WHERE agent_id = ?1")?
        .execute(params![agent_id, applied.ci_id])?;
    if !applied.created {
        rec.record(
            applied.ci_id,
            ChangeKind::AgentChanged,
            None,
            Some(&serde_json::json!(previous)),
            Some(&serde_json::json!(agent_id)),
        )?;
    }
    if let Some(previous) = previous {
        tracing::info!(
            agent = %agent_id,
            previous = %previous,
            ci_id = applied.ci_id,
            rule = applied.identified_by(),
            "this agent now reports a computer another agent reported before (a reinstall?)"
        );
    }
    Ok(())
}

/// Where [`apply_health`] put a sample.
struct Filed {
    /// In `health_pending`, the agent having no computer CI.
    pending: bool,
    /// How far `collected_at` was ahead of the arrival time when it was too far to be trusted
    /// (the series time is then the arrival time); 0 otherwise.
    ahead_ms: i64,
    /// The series time.
    ts: i64,
}

/// Files a sample under the agent's computer CI, or in `health_pending` while it has none.
fn apply_health(
    conn: &Connection,
    state: &mut AgentState,
    agent_id: &str,
    sample: &mut HealthSample,
    received_at: i64,
) -> Result<Filed, StoreError> {
    sample.collected_at = sample.collected_at.to_offset(UtcOffset::UTC);
    let collected = to_ms(sample.collected_at);
    let (ts, ahead_ms) = if collected > received_at.saturating_add(MAX_CLOCK_AHEAD_MS) {
        (received_at, collected - received_at)
    } else {
        (collected, 0)
    };
    let blob = rmp_serde::to_vec_named(&*sample)
        .map_err(|e| StoreError::Invalid(format!("health sample does not encode: {e}")))?;
    let pending = match state.ci_id {
        Some(ci_id) => {
            conn.prepare_cached("INSERT INTO health_raw (ci_id, ts, sample) VALUES (?1, ?2, ?3)")?
                .execute(params![ci_id, ts, blob])?;
            false
        }
        None => {
            conn.prepare_cached(
                "INSERT INTO health_pending (agent_id, ts, sample) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![agent_id, ts, blob])?;
            true
        }
    };
    state.latest_health = Some(blob);
    state.latest_health_at = Some(ts);
    Ok(Filed {
        pending,
        ahead_ms,
        ts,
    })
}

/// Keeps the newest [`PENDING_PER_AGENT`] pending samples of the agent.
fn trim_pending_health(conn: &Connection, agent_id: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "DELETE FROM health_pending WHERE id IN
           (SELECT id FROM health_pending WHERE agent_id = ?1
            ORDER BY ts DESC, id DESC LIMIT -1 OFFSET ?2)",
    )?
    .execute(params![agent_id, PENDING_PER_AGENT])?;
    Ok(())
}

/// Moves the agent's pending samples into the time series of its new computer CI; answers the
/// smallest series time moved.
fn adopt_pending_health(
    conn: &Connection,
    agent_id: &str,
    ci_id: i64,
) -> Result<Option<i64>, StoreError> {
    let oldest: Option<i64> = conn
        .prepare_cached("SELECT min(ts) FROM health_pending WHERE agent_id = ?1")?
        .query_row([agent_id], |r| r.get(0))?;
    if oldest.is_none() {
        return Ok(None);
    }
    let moved = conn
        .prepare_cached(
            "INSERT INTO health_raw (ci_id, ts, sample)
             SELECT ?2, ts, sample FROM health_pending WHERE agent_id = ?1 ORDER BY id",
        )?
        .execute(params![agent_id, ci_id])?;
    conn.prepare_cached("DELETE FROM health_pending WHERE agent_id = ?1")?
        .execute([agent_id])?;
    tracing::debug!(agent = %agent_id, ci_id, moved, "pending health samples joined the series");
    Ok(oldest)
}

/// Keeps `health_meta.raw_min_ts` at most the smallest ts in `health_raw` after inserting rows
/// as old as `ts`. Writes only when it lowers the floor (a late sample), so the usual sample
/// costs a read of one cached page.
fn lower_raw_floor(conn: &Connection, ts: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE health_meta SET raw_min_ts = ?1
         WHERE id = 1 AND (raw_min_ts IS NULL OR raw_min_ts > ?1)",
    )?
    .execute([ts])?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::testing::temp_store;
    use census_common::{Filesystem, Report, Software};
    use time::OffsetDateTime;
    use time::macros::datetime;

    pub(crate) const AGENT: &str = "0b0c6a34-8d54-4a4a-9d51-8f0e1c3b7a11";
    const T0: OffsetDateTime = datetime!(2025-03-01 12:00 UTC);

    pub(crate) fn inventory(agent: &str, packages: &[&str], mounts: &[&str]) -> Inventory {
        let mut inv = Inventory::new(agent, T0);
        inv.host.hostname = Some("web-1".into());
        inv.os.name = Some("Debian GNU/Linux".into());
        inv.os.family = Some("linux".into());
        inv.software = packages
            .iter()
            .map(|p| Software {
                name: (*p).into(),
                version: Some("1.0".into()),
                arch: Some("amd64".into()),
                vendor: None,
                source: "dpkg".into(),
            })
            .collect();
        inv.filesystems = mounts
            .iter()
            .map(|m| Filesystem {
                mount: (*m).into(),
                device: None,
                fs_type: Some("ext4".into()),
                total_bytes: Some(100),
                removable: false,
            })
            .collect();
        inv
    }

    pub(crate) fn batch(agent: &str, reports: Vec<Report>) -> IngestBatch {
        IngestBatch {
            agent_id: agent.into(),
            reports,
            received_at: T0,
        }
    }

    pub(crate) fn inventory_batch(agent: &str, seq: u64, packages: &[&str]) -> IngestBatch {
        batch(
            agent,
            vec![Report {
                seq,
                body: ReportBody::Inventory(inventory(agent, packages, &["/"])),
            }],
        )
    }

    pub(crate) fn health(agent: &str, seq: u64, at: OffsetDateTime) -> Report {
        let mut sample = HealthSample::empty(agent, at);
        sample.cpu_percent = Some(seq as f64);
        Report {
            seq,
            body: ReportBody::Health(sample),
        }
    }

    /// The catalog's vendor of package `name` (one catalog row expected).
    fn vendor_of(store: &Store, name: &str) -> Option<String> {
        Connection::open(store.path())
            .unwrap()
            .query_row("SELECT vendor FROM software WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .unwrap()
    }

    fn count(store: &Store, sql: &str) -> i64 {
        Connection::open(store.path())
            .unwrap()
            .query_row(sql, [], |r| r.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn repeated_seqs_are_acked_but_stored_once() {
        let (store, _dir) = temp_store();
        let first = store
            .ingest(batch(
                AGENT,
                vec![
                    health(AGENT, 3, T0),
                    Report {
                        seq: 2,
                        body: ReportBody::Inventory(inventory(AGENT, &["bash"], &["/"])),
                    },
                ],
            ))
            .await
            .unwrap();
        assert_eq!(first.acked, vec![2, 3]);
        assert_eq!(first.stored, 2);
        assert_eq!(first.last_seq, Some(3));
        assert!(!first.send_inventory);
        // The health sample in the same batch as the first inventory is in the series.
        assert_eq!(count(&store, "SELECT count(*) FROM health_raw"), 1);

        let again = store
            .ingest(batch(
                AGENT,
                vec![health(AGENT, 3, T0), health(AGENT, 4, T0)],
            ))
            .await
            .unwrap();
        assert_eq!(again.acked, vec![3, 4]);
        assert_eq!(again.stored, 1);
        assert_eq!(count(&store, "SELECT count(*) FROM health_raw"), 2);
        assert_eq!(count(&store, "SELECT last_seq FROM agent"), 4);

        // A whole batch of old seqs stores nothing.
        let old = store.ingest(inventory_batch(AGENT, 1, &[])).await.unwrap();
        assert_eq!((old.acked, old.stored), (vec![1], 0));
        // The outcome names the agent's high-water mark, not the batch's.
        assert_eq!(old.last_seq, Some(4));
        assert_eq!(count(&store, "SELECT count(*) FROM installation"), 1);
        store.close().await;
    }

    #[tokio::test]
    async fn health_before_any_inventory_asks_for_the_inventory() {
        let (store, _dir) = temp_store();
        let outcome = store
            .ingest(batch(AGENT, vec![health(AGENT, 1, T0)]))
            .await
            .unwrap();
        assert!(outcome.send_inventory);
        assert_eq!(count(&store, "SELECT count(*) FROM ci"), 0);
        assert_eq!(count(&store, "SELECT count(*) FROM health_raw"), 0);
        assert_eq!(count(&store, "SELECT count(*) FROM health_pending"), 1);
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM agent WHERE latest_health IS NOT NULL"
            ),
            1
        );
        let outcome = store.ingest(inventory_batch(AGENT, 2, &[])).await.unwrap();
        assert!(!outcome.send_inventory);
        // The acked sample joined the new computer's series.
        assert_eq!(count(&store, "SELECT count(*) FROM health_pending"), 0);
        assert_eq!(
            count(&store, "SELECT count(*) FROM health_raw WHERE ci_id = 1"),
            1
        );
        store.close().await;
    }

    #[tokio::test]
    async fn pending_health_is_bounded_per_agent_keeping_the_newest() {
        let (store, _dir) = temp_store();
        let other = "5a4c1e0e-2f43-4d8e-9b7e-1d2c3b4a5f60";
        let n = u64::from(PENDING_PER_AGENT) + 2;
        // Sent newest first, so the two oldest by time are not the two that arrived first.
        let reports = (1..=n)
            .map(|seq| health(AGENT, seq, T0 - time::Duration::minutes(seq as i64)))
            .collect();
        store.ingest(batch(AGENT, reports)).await.unwrap();
        store
            .ingest(batch(other, vec![health(other, 1, T0)]))
            .await
            .unwrap();
        assert_eq!(
            count(
                &store,
                &format!("SELECT count(*) FROM health_pending WHERE agent_id = '{AGENT}'")
            ),
            i64::from(PENDING_PER_AGENT)
        );
        let oldest_kept = to_ms(T0 - time::Duration::minutes(i64::from(PENDING_PER_AGENT)));
        assert_eq!(
            count(
                &store,
                &format!("SELECT min(ts) FROM health_pending WHERE agent_id = '{AGENT}'")
            ),
            oldest_kept
        );
        assert_eq!(
            count(
                &store,
                &format!("SELECT count(*) FROM health_pending WHERE agent_id = '{other}'")
            ),
            1
        );
        store.close().await;
    }

    #[tokio::test]
    async fn a_sample_dated_far_ahead_is_filed_under_its_arrival_time() {
        let (store, _dir) = temp_store();
        let mut reports = vec![
            Report {
                seq: 1,
                body: ReportBody::Inventory(inventory(AGENT, &[], &[])),
            },
            health(AGENT, 2, datetime!(9999-12-31 23:59 UTC)),
            // Within the allowance: a little skew is trusted.
            health(AGENT, 3, T0 + time::Duration::minutes(5)),
        ];
        reports.push(health(AGENT, 4, T0 - time::Duration::minutes(1)));
        store.ingest(batch(AGENT, reports)).await.unwrap();
        let series = |sql: &str| count(&store, sql);
        assert_eq!(
            series("SELECT ts FROM health_raw WHERE id = 1"),
            to_ms(T0),
            "the arrival time, not year 9999"
        );
        assert_eq!(
            series("SELECT ts FROM health_raw WHERE id = 2"),
            to_ms(T0 + time::Duration::minutes(5))
        );
        assert_eq!(
            series("SELECT max(ts) FROM health_raw"),
            to_ms(T0) + 300_000
        );
        // The stored sample keeps its own collected_at.
        let blob: Vec<u8> = Connection::open(store.path())
            .unwrap()
            .query_row("SELECT sample FROM health_raw WHERE id = 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        let sample: HealthSample = rmp_serde::from_slice(&blob).unwrap();
        assert_eq!(sample.collected_at, datetime!(9999-12-31 23:59 UTC));
        store.close().await;
    }

    #[tokio::test]
    async fn inventory_changes_are_reconciled() {
        let (store, _dir) = temp_store();
        let inv_report = |seq, packages: &[&str], mounts: &[&str]| Report {
            seq,
            body: ReportBody::Inventory(inventory(AGENT, packages, mounts)),
        };
        store
            .ingest(batch(
                AGENT,
                vec![inv_report(1, &["bash", "curl"], &["/", "/mnt/usb"])],
            ))
            .await
            .unwrap();
        assert_eq!(count(&store, "SELECT count(*) FROM ci"), 3);
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM relationship WHERE type = 'contains'"
            ),
            2
        );
        assert_eq!(count(&store, "SELECT count(*) FROM installation"), 2);

        // curl removed, jq added, the USB disk unplugged.
        store
            .ingest(batch(AGENT, vec![inv_report(2, &["bash", "jq"], &["/"])]))
            .await
            .unwrap();
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM installation i JOIN software s ON s.id = i.software_id
                 WHERE s.name IN ('bash', 'jq')"
            ),
            2
        );
        assert_eq!(count(&store, "SELECT count(*) FROM installation"), 2);
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM ci WHERE part_key = '/mnt/usb' AND status = 'retired'"
            ),
            1
        );
        assert_eq!(count(&store, "SELECT count(*) FROM relationship"), 1);

        // The disk is back: the same CI is reactivated, not a new one created.
        store
            .ingest(batch(
                AGENT,
                vec![inv_report(3, &["bash", "jq"], &["/", "/mnt/usb"])],
            ))
            .await
            .unwrap();
        assert_eq!(count(&store, "SELECT count(*) FROM ci"), 3);
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM ci WHERE part_key = '/mnt/usb' AND status = 'active'"
            ),
            1
        );
        assert_eq!(count(&store, "SELECT count(*) FROM relationship"), 2);
        // The catalog keeps curl although nobody runs it.
        assert_eq!(count(&store, "SELECT count(*) FROM software"), 3);
        store.close().await;
    }

    /// The diff is by catalog id: an upgrade, a package listed twice, an unversioned package
    /// removed, and one not committed when the batch was prepared (a new catalog row).
    #[tokio::test]
    async fn software_is_diffed_by_catalog_id() {
        let (store, _dir) = temp_store();
        let packages = |list: &[(&str, Option<&str>)]| -> Vec<Software> {
            list.iter()
                .map(|(name, version)| Software {
                    name: (*name).into(),
                    version: version.map(Into::into),
                    arch: Some("amd64".into()),
                    vendor: None,
                    source: "dpkg".into(),
                })
                .collect()
        };
        let send = |seq: u64, software: Vec<Software>| {
            let mut inv = inventory(AGENT, &[], &[]);
            inv.software = software;
            batch(
                AGENT,
                vec![Report {
                    seq,
                    body: ReportBody::Inventory(inv),
                }],
            )
        };
        let first = packages(&[("bash", Some("5.1")), ("curl", Some("7.88")), ("vim", None)]);
        store.ingest(send(1, first)).await.unwrap();
        let second = packages(&[
            ("bash", Some("5.1")),
            ("curl", Some("8.5")),
            ("jq", Some("1.7")),
            ("jq", Some("1.7")),
        ]);
        store.ingest(send(2, second)).await.unwrap();

        let conn = Connection::open(store.path()).unwrap();
        let installed: Vec<(String, String)> = conn
            .prepare(
                "SELECT s.name, s.version FROM installation i JOIN software s
                 ON s.id = i.software_id ORDER BY 1",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect()
        };
        assert_eq!(
            installed,
            pairs(&[("bash", "5.1"), ("curl", "8.5"), ("jq", "1.7")])
        );
        let changes: Vec<(String, String)> = conn
            .prepare("SELECT kind, field FROM history WHERE kind LIKE 'software%' ORDER BY 2")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            changes,
            pairs(&[
                ("software_upgraded", "curl"),
                ("software_added", "jq"),
                ("software_removed", "vim")
            ])
        );
        store.close().await;
    }

    #[tokio::test]
    async fn the_catalog_is_shared_and_learns_a_vendor_once() {
        let (store, _dir) = temp_store();
        let with_vendor = |agent: &str, vendor: Option<&str>| {
            let mut inv = inventory(agent, &["bash", "curl"], &[]);
            inv.software[1].vendor = vendor.map(str::to_owned);
            batch(
                agent,
                vec![Report {
                    seq: 1,
                    body: ReportBody::Inventory(inv),
                }],
            )
        };
        let vendor = |store: &Store| vendor_of(store, "curl");
        let agents = [
            AGENT,
            "5a4c1e0e-2f43-4d8e-9b7e-1d2c3b4a5f60",
            "9f1d3c2b-6a5e-4f70-8e9d-0c1b2a3f4e5d",
        ];
        store.ingest(with_vendor(agents[0], None)).await.unwrap();
        assert_eq!(vendor(&store), None);
        store
            .ingest(with_vendor(agents[1], Some("Debian curl team")))
            .await
            .unwrap();
        assert_eq!(vendor(&store).as_deref(), Some("Debian curl team"));
        // A later, different vendor does not overwrite the first one learned.
        store
            .ingest(with_vendor(agents[2], Some("someone else")))
            .await
            .unwrap();
        assert_eq!(vendor(&store).as_deref(), Some("Debian curl team"));
        assert_eq!(count(&store, "SELECT count(*) FROM software"), 2);
        assert_eq!(count(&store, "SELECT count(*) FROM installation"), 6);
        store.close().await;
    }

    /// A package listed twice is one installation, and the listing that names a vendor
    /// teaches it to the catalog even when an earlier listing named none.
    #[tokio::test]
    async fn a_package_listed_twice_is_installed_once_and_teaches_its_vendor() {
        let (store, _dir) = temp_store();
        // The same catalog key twice: once without a vendor (it sorts first), once with one.
        let mut inv = inventory(AGENT, &["bash", "curl", "curl"], &[]);
        inv.software[2].vendor = Some("Debian curl team".into());
        let report = Report {
            seq: 1,
            body: ReportBody::Inventory(inv),
        };
        store.ingest(batch(AGENT, vec![report])).await.unwrap();
        assert_eq!(
            vendor_of(&store, "curl").as_deref(),
            Some("Debian curl team")
        );
        assert_eq!(count(&store, "SELECT count(*) FROM software"), 2);
        assert_eq!(count(&store, "SELECT count(*) FROM installation"), 2);
        store.close().await;
    }

    /// A vendor is recorded when a report first names it, also for a package the computer
    /// already has (the diff keeps the installation; the catalog row learns the vendor).
    #[tokio::test]
    async fn an_installed_package_teaches_the_catalog_its_vendor() {
        let (store, _dir) = temp_store();
        let send = |seq: u64, vendor: Option<&str>| {
            let mut inv = inventory(AGENT, &["bash", "curl"], &[]);
            inv.software[1].vendor = vendor.map(str::to_owned);
            batch(
                AGENT,
                vec![Report {
                    seq,
                    body: ReportBody::Inventory(inv),
                }],
            )
        };
        store.ingest(send(1, None)).await.unwrap();
        store
            .ingest(send(2, Some("Debian curl team")))
            .await
            .unwrap();
        assert_eq!(
            vendor_of(&store, "curl").as_deref(),
            Some("Debian curl team")
        );
        assert_eq!(count(&store, "SELECT count(*) FROM installation"), 2);
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM history WHERE kind LIKE 'software%'"
            ),
            0
        );
        store.close().await;
    }

    #[tokio::test]
    async fn the_planner_has_statistics_once_the_data_has_grown() {
        let (store, _dir) = temp_store();
        for (i, agent) in (0..12).map(|i| (i, uuid::Uuid::new_v4().to_string())) {
            let mut inv = inventory(&agent, &["bash", "curl"], &["/"]);
            inv.host.hostname = Some(format!("web-{i}"));
            store
                .ingest(batch(
                    &agent,
                    vec![Report {
                        seq: 1,
                        body: ReportBody::Inventory(inv),
                    }],
                ))
                .await
                .unwrap();
        }
        store
            .ingest(batch(
                AGENT,
                (1..=3)
                    .map(|seq| health(AGENT, seq, OffsetDateTime::now_utc()))
                    .collect(),
            ))
            .await
            .unwrap();
        // SQLite's own choice would analyse the raw health table too (never analysed, and far
        // from its default size estimate).
        let planned: Vec<String> = {
            let conn = Connection::open(store.path()).unwrap();
            let mut plan = conn.prepare(crate::store::OPTIMIZE_PLAN).unwrap();
            plan.query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        assert!(
            planned.contains(&r#"ANALYZE "main"."health_raw""#.to_string()),
            "{planned:?}"
        );
        store.optimize().await.unwrap();
        assert!(
            count(
                &store,
                "SELECT count(*) FROM sqlite_stat1 WHERE tbl IN ('ci', 'installation')"
            ) > 0
        );
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM sqlite_stat1 WHERE tbl IN ('health_raw', 'health_hourly')"
            ),
            0
        );
        store.close().await;
    }

    #[tokio::test]
    async fn facets_the_agent_could_not_learn_keep_what_was_stored() {
        let (store, _dir) = temp_store();
        store
            .ingest(batch(
                AGENT,
                vec![Report {
                    seq: 1,
                    body: ReportBody::Inventory(inventory(
                        AGENT,
                        &["bash", "curl"],
                        &["/", "/srv"],
                    )),
                }],
            ))
            .await
            .unwrap();
        // Software, filesystems and host timed out on the agent: empty, and said to be.
        let mut skipped = inventory(AGENT, &[], &[]);
        skipped.host.hostname = None;
        skipped.os.name = Some("Debian GNU/Linux 13".into());
        skipped.incomplete = vec!["host".into(), "filesystems".into(), "software".into()];
        store
            .ingest(batch(
                AGENT,
                vec![Report {
                    seq: 2,
                    body: ReportBody::Inventory(skipped),
                }],
            ))
            .await
            .unwrap();
        assert_eq!(count(&store, "SELECT count(*) FROM installation"), 2);
        assert_eq!(
            count(&store, "SELECT count(*) FROM ci WHERE status = 'active'"),
            3
        );
        let computer = store.get_ci(1).await.unwrap().unwrap();
        assert_eq!(computer.ci.name, "web-1");
        assert_eq!(computer.ci.attributes["hostname"], "web-1");
        // What the agent did learn is applied.
        assert_eq!(computer.ci.attributes["os_name"], "Debian GNU/Linux 13");

        // The next complete inventory is applied in full.
        store
            .ingest(batch(
                AGENT,
                vec![Report {
                    seq: 3,
                    body: ReportBody::Inventory(inventory(AGENT, &["bash"], &["/"])),
                }],
            ))
            .await
            .unwrap();
        assert_eq!(count(&store, "SELECT count(*) FROM installation"), 1);
        assert_eq!(
            count(&store, "SELECT count(*) FROM ci WHERE status = 'retired'"),
            1
        );
        store.close().await;
    }

    #[tokio::test]
    async fn unchanged_inventory_only_moves_last_seen() {
        let (store, _dir) = temp_store();
        let booted = T0 - time::Duration::days(1);
        let mut first = inventory_batch(AGENT, 1, &["bash"]);
        if let ReportBody::Inventory(inv) = &mut first.reports[0].body {
            inv.os.boot_time = Some(booted);
        }
        store.ingest(first).await.unwrap();

        let mut later = inventory_batch(AGENT, 2, &["bash"]);
        later.received_at = T0 + time::Duration::hours(1);
        if let ReportBody::Inventory(inv) = &mut later.reports[0].body {
            // Neither the collection time nor a boot time drifting by a second is content:
            // the digest is the same, so the stored attributes are not rewritten.
            inv.collected_at = later.received_at;
            inv.os.boot_time = Some(booted + time::Duration::SECOND);
        }
        store.ingest(later).await.unwrap();
        let detail = store.get_ci(1).await.unwrap().unwrap();
        assert_eq!(detail.ci.attributes["boot_time"], "2025-02-28T12:00:00Z");
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM ci WHERE last_seen = first_seen"
            ),
            0,
            "the computer and its filesystem were both seen again"
        );
        assert_eq!(count(&store, "SELECT count(*) FROM ci"), 2);
        store.close().await;
    }

    #[tokio::test]
    async fn a_retired_or_stale_computer_that_reports_again_is_active_again() {
        let (store, _dir) = temp_store();
        store
            .ingest(inventory_batch(AGENT, 1, &["bash"]))
            .await
            .unwrap();
        let set_status = |status: &str| {
            Connection::open(store.path())
                .unwrap()
                .execute("UPDATE ci SET status = ?1 WHERE id = 1", [status])
                .unwrap();
        };
        let status_rows = || {
            let conn = Connection::open(store.path()).unwrap();
            let mut stmt = conn
                .prepare(
                    "SELECT old, new, source FROM history
                     WHERE ci_id = 1 AND kind = 'status_changed' ORDER BY id",
                )
                .unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .collect::<Result<Vec<(String, String, String)>, _>>()
                .unwrap()
        };
        // A health sample brings a retired computer back.
        set_status("retired");
        store
            .ingest(batch(AGENT, vec![health(AGENT, 2, T0)]))
            .await
            .unwrap();
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM ci WHERE id = 1 AND status = 'active'"
            ),
            1
        );
        // So does an unchanged inventory, for a stale one.
        set_status("stale");
        store
            .ingest(inventory_batch(AGENT, 3, &["bash"]))
            .await
            .unwrap();
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM ci WHERE id = 1 AND status = 'active'"
            ),
            1
        );
        let source = format!("agent:{AGENT}");
        assert_eq!(
            status_rows(),
            vec![
                (
                    "\"retired\"".to_owned(),
                    "\"active\"".to_owned(),
                    source.clone()
                ),
                ("\"stale\"".to_owned(), "\"active\"".to_owned(), source),
            ]
        );
        // An active computer's samples write no history.
        store
            .ingest(batch(AGENT, vec![health(AGENT, 4, T0)]))
            .await
            .unwrap();
        assert_eq!(status_rows().len(), 2);
        store.close().await;
    }

    #[tokio::test]
    async fn a_failing_batch_leaves_nothing_behind() {
        let (store, _dir) = temp_store();
        let bad = batch(AGENT, vec![health(AGENT, u64::MAX, T0)]);
        assert!(matches!(
            store.ingest(bad).await,
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(count(&store, "SELECT count(*) FROM agent"), 0);
        store.close().await;
    }
}
