//! Exponential backoff with jitter between failed delivery attempts.
//!
//! After the n-th failure in a row the next attempt waits a random time between half and all
//! of `min(1 s × 2^(n-1), max)`: the wait doubles until it reaches the cap (`retry_max_backoff`,
//! 5 minutes by default), and the randomness spreads a fleet's retries out, so that agents cut
//! off by the same outage do not all return in the same second. A success resets it.

use std::time::Duration;

/// The first wait after a failure (before jitter).
pub const BASE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct Backoff {
    failures: u32,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Backoff {
        Backoff { failures: 0, max }
    }

    /// Counts a failure; answers how long to wait before the next attempt. `random` is any
    /// 64-bit random number ([`jitter`] in the agent, fixed values in tests).
    pub fn failed(&mut self, random: u64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let ceiling = BASE
            .checked_mul(1 << (self.failures - 1).min(30))
            .unwrap_or(self.max)
            .min(self.max);
        let half = ceiling / 2;
        let spread = (ceiling - half).as_millis() as u64;
        half + Duration::from_millis(random % (spread + 1))
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// A random number for the jitter, from the standard library's per-process random hash keys
/// (no randomness crate is needed for spreading retries).
pub fn jitter() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_within_their_jitter_up_to_the_cap_and_reset_on_success() {
        let max = Duration::from_secs(300);
        let mut low = Backoff::new(max);
        let mut high = Backoff::new(max);
        let mut previous_ceiling = Duration::ZERO;
        for n in 1..=20u32 {
            let shortest = low.failed(0);
            let longest = high.failed(u64::MAX);
            let ceiling = Duration::from_secs(1 << (n - 1).min(20)).min(max);
            assert_eq!(shortest, ceiling / 2, "failure {n}");
            assert!(
                longest <= ceiling && longest >= shortest,
                "failure {n}: {longest:?}"
            );
            assert!(ceiling >= previous_ceiling);
            previous_ceiling = ceiling;
        }
        assert_eq!(previous_ceiling, max);
        assert_eq!(low.failures(), 20);
        low.succeeded();
        assert_eq!(low.failed(0), BASE / 2);
    }

    #[test]
    fn jitter_spreads_waits_across_the_window() {
        let waits: std::collections::BTreeSet<Duration> = (0..64)
            .map(|_| Backoff::new(Duration::from_secs(300)).failed(jitter()))
            .collect();
        // 64 draws over 501 possible milliseconds: all equal would mean no jitter at all.
        assert!(waits.len() > 1, "{waits:?}");
        assert!(waits.iter().all(|w| *w >= BASE / 2 && *w <= BASE));
    }
}
