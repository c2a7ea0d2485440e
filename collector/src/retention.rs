//! The background task that compacts the health time series and prunes it to the configured
//! retention, marks computers that stopped reporting `stale`, and keeps the query planner's
//! statistics current (`Store::optimize`). Each pass runs as bounded
//! writer jobs (see `store::health` and `store::admin`), so ingest keeps flowing between
//! chunks. The time comes from the injected clock.
//!
//! The stale sweep marks an active computer that an inventory made `stale` (with a
//! `status_changed` history row, source `collector`) once its last report (the later of its CI
//! row and its agent's last batch) is older than `stale_after`. Retired computers, and
//! computers created through the API (nothing reports them), are never marked.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::Clock;
use crate::store::admin::STALE_BATCH;
use crate::store::{CompactionReport, StaleSweep, Store, StoreError};

/// One pass: compact completed hours, drop what is past `retention`.
pub async fn run_once(
    store: &Store,
    clock: &dyn Clock,
    retention: time::Duration,
) -> Result<CompactionReport, StoreError> {
    // Wall time of the pass, for the log only: the pass's own notion of now is the clock's.
    let started = std::time::Instant::now();
    let report = store.compact_health(clock.now(), retention).await?;
    if report != CompactionReport::default() {
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            moved = report.moved,
            dropped = report.dropped,
            hourly_rows = report.hourly_rows,
            pruned = report.pruned,
            "compacted health samples"
        );
    }
    Ok(report)
}

/// One stale sweep: marks `stale` the computers silent for longer than `stale_after`.
pub async fn sweep_stale(
    store: &Store,
    clock: &dyn Clock,
    stale_after: time::Duration,
) -> Result<StaleSweep, StoreError> {
    let sweep = store
        .mark_stale(clock.now(), stale_after, STALE_BATCH)
        .await?;
    if sweep.marked > 0 {
        tracing::info!(
            computers = sweep.marked,
            stale_after = %stale_after,
            "marked computers that stopped reporting stale"
        );
    }
    Ok(sweep)
}

/// Runs a pass (compaction, then the stale sweep) every `every` until `stop` turns true. A
/// failed pass is logged and retried at the next tick; one failing part does not skip the
/// other.
pub async fn run(
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    every: Duration,
    retention: time::Duration,
    stale_after: time::Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                // At fleet scale a pass takes a while; a stop request abandons it between two
                // of its jobs, and the next start resumes it (see `store::compaction`).
                tokio::select! {
                    done = run_once(&store, clock.as_ref(), retention) => {
                        if let Err(e) = done {
                            tracing::warn!(error = %e, "health compaction failed; retrying at the next tick");
                        }
                    }
                    _ = stop.changed() => break,
                }
                if let Err(e) = sweep_stale(&store, clock.as_ref(), stale_after).await {
                    tracing::warn!(error = %e, "the stale sweep failed; retrying at the next tick");
                }
                if let Err(e) = store.optimize().await {
                    tracing::warn!(error = %e, "refreshing the planner's statistics failed");
                }
            }
            changed = stop.changed() => {
                // A dropped sender means the server is gone too.
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::StoreOptions;
    use census_common::{HealthSample, Inventory, Report, ReportBody};
    use time::macros::datetime;

    #[tokio::test]
    async fn a_pass_uses_the_injected_clock_and_the_task_stops_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(Store::open(&dir.path().join("census.db"), &StoreOptions::default()).unwrap());
        let agent = "0b0c6a34-8d54-4a4a-9d51-8f0e1c3b7a11";
        let t0 = datetime!(2025-03-01 10:10 UTC);
        let reports = vec![
            Report {
                seq: 1,
                body: ReportBody::Inventory(Inventory::new(agent, t0)),
            },
            Report {
                seq: 2,
                body: ReportBody::Health(HealthSample::empty(agent, t0)),
            },
        ];
        store
            .ingest(crate::store::IngestBatch {
                agent_id: agent.into(),
                reports,
                received_at: t0,
            })
            .await
            .unwrap();
        let clock = Arc::new(ManualClock::new(t0));
        let retention = time::Duration::days(7);

        // Same hour: nothing to compact yet.
        assert_eq!(
            run_once(&store, clock.as_ref(), retention)
                .await
                .unwrap()
                .moved,
            0
        );
        clock.advance(time::Duration::hours(1));
        assert_eq!(
            run_once(&store, clock.as_ref(), retention)
                .await
                .unwrap()
                .moved,
            1
        );
        clock.advance(time::Duration::days(8));
        assert_eq!(
            run_once(&store, clock.as_ref(), retention)
                .await
                .unwrap()
                .pruned,
            1
        );

        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(
            store.clone(),
            clock,
            Duration::from_secs(3600),
            retention,
            time::Duration::days(30),
            stop_rx,
        ));
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        store.close().await;
    }

    #[tokio::test]
    async fn the_stale_sweep_uses_the_injected_clock() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("census.db"), &StoreOptions::default()).unwrap();
        let agent = "0b0c6a34-8d54-4a4a-9d51-8f0e1c3b7a11";
        let t0 = datetime!(2025-03-01 10:10 UTC);
        store
            .ingest(crate::store::IngestBatch {
                agent_id: agent.into(),
                reports: vec![Report {
                    seq: 1,
                    body: ReportBody::Inventory(Inventory::new(agent, t0)),
                }],
                received_at: t0,
            })
            .await
            .unwrap();
        let clock = ManualClock::new(t0);
        let stale_after = time::Duration::days(30);
        let status = |store: &Store| {
            let store_path = store.path().to_owned();
            rusqlite::Connection::open(store_path)
                .unwrap()
                .query_row("SELECT status FROM ci WHERE class = 'computer'", [], |r| {
                    r.get::<_, String>(0)
                })
                .unwrap()
        };

        clock.advance(time::Duration::days(29));
        let sweep = sweep_stale(&store, &clock, stale_after).await.unwrap();
        assert_eq!(sweep.marked, 0);
        assert_eq!(status(&store), "active");
        clock.advance(time::Duration::days(2));
        let sweep = sweep_stale(&store, &clock, stale_after).await.unwrap();
        assert_eq!(sweep.marked, 1);
        assert_eq!(status(&store), "stale");
        store.close().await;
    }
}
