//! Reports waiting for the collector's acknowledgement.
//!
//! **Promises:** reports leave the queue only when the collector acknowledged their sequence
//! number, or when a limit below drops them (logged); they are offered for sending in
//! sequence order. The queue lives in memory, so an agent restart loses what was not
//! acknowledged; the durable spool that replaces it keeps this same interface (`push`, `ack`,
//! `iter`).
//!
//! Limits, so an agent cut off from its collector does not grow without bound:
//! - a newer inventory replaces an older unacknowledged one: the collector needs the machine's
//!   current state, and the older one was never seen, so no history is lost that was known;
//! - at most [`MAX_PENDING_HEALTH`] health samples are kept, the oldest dropped first.

use std::collections::BTreeMap;

use census_common::{Report, ReportBody};
use tracing::warn;

/// A day of samples at the default 60 s interval.
pub const MAX_PENDING_HEALTH: usize = 1440;

#[derive(Debug, Default)]
pub struct Pending {
    reports: BTreeMap<u64, Report>,
    max_health: usize,
}

impl Pending {
    pub fn new() -> Self {
        Pending::with_health_limit(MAX_PENDING_HEALTH)
    }

    pub fn with_health_limit(max_health: usize) -> Self {
        Pending {
            reports: BTreeMap::new(),
            max_health,
        }
    }

    /// Queues a report, applying the limits above.
    pub fn push(&mut self, report: Report) {
        match report.body {
            ReportBody::Inventory(_) => {
                let older: Vec<u64> = self
                    .reports
                    .iter()
                    .filter(|(_, r)| matches!(r.body, ReportBody::Inventory(_)))
                    .map(|(seq, _)| *seq)
                    .collect();
                for seq in older {
                    warn!(
                        seq,
                        "dropping unacknowledged inventory; a newer one replaces it"
                    );
                    self.reports.remove(&seq);
                }
            }
            ReportBody::Health(_) => {
                let health: Vec<u64> = self
                    .reports
                    .iter()
                    .filter(|(_, r)| matches!(r.body, ReportBody::Health(_)))
                    .map(|(seq, _)| *seq)
                    .collect();
                let excess = (health.len() + 1).saturating_sub(self.max_health);
                for seq in health.into_iter().take(excess) {
                    warn!(
                        seq,
                        limit = self.max_health,
                        "dropping oldest unacknowledged health sample"
                    );
                    self.reports.remove(&seq);
                }
            }
        }
        self.reports.insert(report.seq, report);
    }

    /// Removes the acknowledged reports; returns how many of `acked` were pending. Sequence
    /// numbers that are not pending (acknowledged twice, or unknown) are ignored.
    pub fn ack(&mut self, acked: &[u64]) -> usize {
        acked
            .iter()
            .filter(|seq| self.reports.remove(seq).is_some())
            .count()
    }

    /// Pending reports in sequence order.
    pub fn iter(&self) -> impl Iterator<Item = &Report> {
        self.reports.values()
    }

    pub fn get(&self, seq: u64) -> Option<&Report> {
        self.reports.get(&seq)
    }

    pub fn seqs(&self) -> Vec<u64> {
        self.reports.keys().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.reports.len()
    }

    pub fn is_empty(&self) -> bool {
        self.reports.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use census_common::{HealthSample, Inventory};
    use time::OffsetDateTime;

    fn health(seq: u64) -> Report {
        Report {
            seq,
            body: ReportBody::Health(HealthSample::empty("a", OffsetDateTime::UNIX_EPOCH)),
        }
    }

    fn inventory(seq: u64) -> Report {
        Report {
            seq,
            body: ReportBody::Inventory(Inventory::new("a", OffsetDateTime::UNIX_EPOCH)),
        }
    }

    #[test]
    fn reports_leave_only_when_acknowledged_and_stay_in_order() {
        let mut pending = Pending::new();
        for seq in [3, 1, 2, 4] {
            pending.push(health(seq));
        }
        assert_eq!(pending.seqs(), vec![1, 2, 3, 4]);
        // A partial ack keeps the rest, in order.
        assert_eq!(pending.ack(&[2, 4]), 2);
        assert_eq!(
            pending.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![1, 3]
        );
        // A repeated or unknown ack changes nothing.
        assert_eq!(pending.ack(&[2, 99]), 0);
        assert_eq!(pending.len(), 2);
        assert_eq!(pending.ack(&[1, 3]), 2);
        assert!(pending.is_empty());
    }

    #[test]
    fn newer_inventory_replaces_unacknowledged_older_one() {
        let mut pending = Pending::new();
        pending.push(inventory(1));
        pending.push(health(2));
        pending.push(inventory(3));
        assert_eq!(pending.seqs(), vec![2, 3]);
    }

    #[test]
    fn oldest_health_samples_are_dropped_past_the_limit() {
        let mut pending = Pending::with_health_limit(3);
        pending.push(inventory(1));
        for seq in 2..=6 {
            pending.push(health(seq));
        }
        // The inventory is not a health sample and stays.
        assert_eq!(pending.seqs(), vec![1, 4, 5, 6]);
    }
}
