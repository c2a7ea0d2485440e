//! The silence check: a timer, independent of ingest, that opens an `unreachable` incident for
//! a computer whose agent stopped reporting, and opens the breaches a maintenance window held
//! back once the window is over (see `store::incidents`).
//!
//! **Promise:** silence is counted from the later of the agent's last report and this
//! collector's start, so after a restart (or a collector outage, when no agent could report)
//! every agent gets one full window before it counts as silent: no storm of incidents.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::Clock;
use crate::store::{SilenceReport, Store, StoreError};

/// One check at the clock's now; `started` is when this collector started.
pub async fn check_once(
    store: &Store,
    clock: &dyn Clock,
    started: time::OffsetDateTime,
) -> Result<SilenceReport, StoreError> {
    let report = store.check_silence(clock.now(), started).await?;
    if report.opened > 0 {
        tracing::info!(
            silent = report.silent,
            opened = report.opened,
            "the silence check opened incidents"
        );
    }
    Ok(report)
}

/// Runs a check every `every` until `stop` turns true. The collector's start is the clock's
/// time when this is called.
pub async fn run(
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let started = clock.now();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if let Err(e) = check_once(&store, clock.as_ref(), started).await {
                    tracing::warn!(error = %e, "the silence check failed; retrying at the next tick");
                }
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
        }
    }
}
