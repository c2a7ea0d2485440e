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
//!
//! The queue also remembers which reports *may* be stored already although no ack said so: a
//! send whose outcome is unknown (no answer, an unreadable answer, a 5xx that a proxy may have
//! sent after the collector committed) leaves its reports [`Pending::is_uncertain`]. A report
//! that was never sent, or whose sends all got a definite "not stored" (a 4xx refusal, an ack
//! that left it out), is certainly not stored under its number. [`Pending::renumber_through`]
//! relies on this after the state directory went back in time. The durable spool must keep
//! this mark with each report.

use std::collections::{BTreeMap, BTreeSet};

use census_common::{Report, ReportBody};
use tracing::warn;

/// A day of samples at the default 60 s interval.
pub const MAX_PENDING_HEALTH: usize = 1440;

#[derive(Debug, Default)]
pub struct Pending {
    reports: BTreeMap<u64, Report>,
    /// Pending reports that a send with an unknown outcome carried.
    uncertain: BTreeSet<u64>,
    max_health: usize,
}

/// What [`Pending::renumber_through`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Renumbered {
    /// (old seq, new seq), in order.
    pub moved: Vec<(u64, u64)>,
    /// Health samples dropped because they may be stored under their old number.
    pub dropped: Vec<u64>,
}

impl Pending {
    pub fn new() -> Self {
        Pending::with_health_limit(MAX_PENDING_HEALTH)
    }

    pub fn with_health_limit(max_health: usize) -> Self {
        Pending {
            reports: BTreeMap::new(),
            uncertain: BTreeSet::new(),
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
                    self.remove(seq);
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
                    self.remove(seq);
                }
            }
        }
        self.reports.insert(report.seq, report);
    }

    /// Removes the acknowledged reports; returns how many of `acked` were pending. Sequence
    /// numbers that are not pending (acknowledged twice, or unknown) are ignored.
    pub fn ack(&mut self, acked: &[u64]) -> usize {
        acked.iter().filter(|seq| self.remove(**seq)).count()
    }

    fn remove(&mut self, seq: u64) -> bool {
        self.uncertain.remove(&seq);
        self.reports.remove(&seq).is_some()
    }

    /// Marks pending reports as possibly stored: a send that carried them ended without a
    /// definite answer. The mark stays until the report leaves the queue.
    pub fn mark_uncertain(&mut self, seqs: &[u64]) {
        for seq in seqs {
            if self.reports.contains_key(seq) {
                self.uncertain.insert(*seq);
            }
        }
    }

    pub fn is_uncertain(&self, seq: u64) -> bool {
        self.uncertain.contains(&seq)
    }

    /// Whether [`Pending::renumber_through`] would keep this report: all but health samples
    /// that may be stored under their number already.
    fn keeps_on_renumber(&self, report: &Report) -> bool {
        !(matches!(report.body, ReportBody::Health(_)) && self.is_uncertain(report.seq))
    }

    /// How many reports with seq at most `last_seq` [`Pending::renumber_through`] would keep,
    /// that is how many new numbers it needs.
    pub fn renumberable_through(&self, last_seq: u64) -> usize {
        self.reports
            .range(..=last_seq)
            .filter(|(_, r)| self.keeps_on_renumber(r))
            .count()
    }

    /// Gives every report numbered at most `last_seq` a new number from `first` on, in order:
    /// the collector already holds those numbers from someone else's reports and would take
    /// these for repeats. An inventory is renumbered even when it may be stored already, since
    /// sending it twice only repeats a state. A health sample that may be stored already is
    /// dropped instead (logged by the caller): under a new number it could be stored twice.
    pub fn renumber_through(&mut self, last_seq: u64, first: u64) -> Renumbered {
        let old: Vec<u64> = self.reports.range(..=last_seq).map(|(s, _)| *s).collect();
        let mut done = Renumbered::default();
        let mut next = first;
        for seq in old {
            let Some(mut report) = self.reports.remove(&seq) else {
                continue;
            };
            let keep = self.keeps_on_renumber(&report);
            self.uncertain.remove(&seq);
            if !keep {
                done.dropped.push(seq);
                continue;
            }
            report.seq = next;
            done.moved.push((seq, next));
            self.reports.insert(next, report);
            next += 1;
        }
        done
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
    fn renumbering_moves_what_is_certainly_not_stored_and_drops_doubtful_health() {
        let mut pending = Pending::new();
        pending.push(inventory(3));
        for seq in [4, 5, 6] {
            pending.push(health(seq));
        }
        // A send of 3 and 4 ended without an answer: they may be stored.
        pending.mark_uncertain(&[3, 4, 99]);
        assert!(pending.is_uncertain(3) && pending.is_uncertain(4));
        assert!(!pending.is_uncertain(5) && !pending.is_uncertain(99));
        assert_eq!(pending.renumberable_through(50), 3);
        let done = pending.renumber_through(50, 51);
        // The inventory goes again whatever; health sample 4 might be stored twice: dropped.
        assert_eq!(done.moved, vec![(3, 51), (5, 52), (6, 53)]);
        assert_eq!(done.dropped, vec![4]);
        assert_eq!(pending.seqs(), vec![51, 52, 53]);
        assert!(pending.iter().all(|r| !pending.is_uncertain(r.seq)));
        assert!(matches!(
            pending.get(51).unwrap().body,
            ReportBody::Inventory(_)
        ));
        assert_eq!(pending.get(52).unwrap().seq, 52);
        // Reports above `last_seq` are left alone.
        pending.push(health(60));
        assert_eq!(
            pending.renumber_through(52, 70).moved,
            vec![(51, 70), (52, 71)]
        );
        assert_eq!(pending.seqs(), vec![53, 60, 70, 71]);
    }

    #[test]
    fn an_acknowledged_report_loses_its_uncertain_mark() {
        let mut pending = Pending::new();
        pending.push(health(1));
        pending.mark_uncertain(&[1]);
        assert_eq!(pending.ack(&[1]), 1);
        assert!(!pending.is_uncertain(1));
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
