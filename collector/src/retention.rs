//! The background task that compacts the health time series and prunes it to the configured
//! retention. Each pass runs as bounded writer jobs (see `store::health`), so ingest keeps
//! flowing between chunks. The time comes from the injected clock.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::Clock;
use crate::store::{CompactionReport, Store, StoreError};

/// One pass: compact completed hours, drop what is past `retention`.
pub async fn run_once(
    store: &Store,
    clock: &dyn Clock,
    retention: time::Duration,
) -> Result<CompactionReport, StoreError> {
    let report = store.compact_health(clock.now(), retention).await?;
    if report != CompactionReport::default() {
        tracing::info!(
            moved = report.moved,
            dropped = report.dropped,
            hourly_rows = report.hourly_rows,
            pruned = report.pruned,
            "compacted health samples"
        );
    }
    Ok(report)
}

/// Runs a pass every `every` until `stop` turns true. A failed pass is logged and retried at
/// the next tick.
pub async fn run(
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    every: Duration,
    retention: time::Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if let Err(e) = run_once(&store, clock.as_ref(), retention).await {
                    tracing::warn!(error = %e, "health compaction failed; retrying at the next tick");
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
            stop_rx,
        ));
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        store.close().await;
    }
}
