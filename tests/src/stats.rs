//! Latency and outcome tallies for the load tools (`census-fleet-sim`, `census-query-bench`):
//! every request's latency is kept (a 5-minute run at 5,000/s is 1.5 M values, 12 MB), so the
//! percentiles are exact rather than bucketed.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// What one kind of request did over a run.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    latencies_us: Vec<u64>,
    /// Failures by what went wrong: an HTTP status with its error code (`429 rate_limited`),
    /// or a transport failure (`connect`, `timeout`, `io`).
    errors: BTreeMap<String, u64>,
    bytes_sent: u64,
}

/// Percentiles of a run's latencies, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentiles {
    pub count: usize,
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub max: u64,
}

impl Tally {
    /// Counts a request that succeeded after `latency`, having sent `bytes` of body.
    pub fn ok(&mut self, latency: Duration, bytes: usize) {
        self.latencies_us.push(latency.as_micros() as u64);
        self.bytes_sent += bytes as u64;
    }

    /// Counts a failed request under `what`. Its bytes still count as sent.
    pub fn error(&mut self, what: impl Into<String>, bytes: usize) {
        *self.errors.entry(what.into()).or_default() += 1;
        self.bytes_sent += bytes as u64;
    }

    /// Adds another tally's counts to this one (one tally per task, merged at the end).
    pub fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        for (what, n) in other.errors {
            *self.errors.entry(what).or_default() += n;
        }
        self.bytes_sent += other.bytes_sent;
    }

    pub fn succeeded(&self) -> usize {
        self.latencies_us.len()
    }

    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn errors(&self) -> &BTreeMap<String, u64> {
        &self.errors
    }

    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent
    }

    /// Exact nearest-rank percentiles of the successful requests; `None` when there were none.
    pub fn percentiles(&mut self) -> Option<Percentiles> {
        if self.latencies_us.is_empty() {
            return None;
        }
        self.latencies_us.sort_unstable();
        let sorted = &self.latencies_us;
        let rank = |p: f64| {
            let index = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
            sorted[index.clamp(1, sorted.len()) - 1]
        };
        Some(Percentiles {
            count: sorted.len(),
            p50: rank(50.0),
            p95: rank(95.0),
            p99: rank(99.0),
            max: *sorted.last().expect("not empty"),
        })
    }
}

impl fmt::Display for Percentiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |us: u64| us as f64 / 1000.0;
        write!(
            f,
            "p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {}",
            ms(self.p50),
            ms(self.p95),
            ms(self.p99),
            ms(self.max),
            self.count
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_over_every_request() {
        let mut tally = Tally::default();
        assert_eq!(tally.percentiles(), None);
        // 1..=200 ms, pushed out of order.
        for ms in (1..=200).rev() {
            tally.ok(Duration::from_millis(ms), 10);
        }
        let p = tally.percentiles().unwrap();
        assert_eq!(
            (p.count, p.p50, p.p95, p.p99, p.max),
            (200, 100_000, 190_000, 198_000, 200_000)
        );
        assert_eq!(tally.bytes_sent(), 2000);
    }

    #[test]
    fn merged_tallies_keep_every_latency_and_error() {
        let mut a = Tally::default();
        a.ok(Duration::from_millis(5), 1);
        a.error("429 rate_limited", 3);
        let mut b = Tally::default();
        b.ok(Duration::from_millis(1), 1);
        b.error("429 rate_limited", 3);
        b.error("connect", 0);
        a.merge(b);
        assert_eq!(a.succeeded(), 2);
        assert_eq!(a.failed(), 3);
        assert_eq!(a.errors()["429 rate_limited"], 2);
        assert_eq!(a.bytes_sent(), 8);
        assert_eq!(a.percentiles().unwrap().p50, 1000);
    }
}
