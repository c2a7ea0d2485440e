//! Keyed rate limits: a token bucket per key (an agent id, a client IP address), on the
//! injected [`Clock`].
//!
//! **Promise:** memory stays bounded whatever the keys. At most `max_keys` buckets are kept; a
//! bucket that has refilled is the same as no bucket and is dropped first, and when every kept
//! bucket is still refilling (a flood of distinct keys) the fullest eighth is dropped, so those
//! keys start again with a full bucket. A clock that steps back holds a key for at most one
//! token's interval, never for the size of the step.
//!
//! Each bucket is kept as one number, the "theoretical arrival time" of the generic cell rate
//! algorithm: the time at which the bucket would be full again. A request is let through when
//! that time is no more than `burst - 1` intervals ahead of now, and moves it one interval on.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use census_common::{ErrorBody, ErrorCode};

use crate::clock::Clock;

/// Buckets a limiter keeps by default: about 100 bytes each, so a few MiB at most.
pub const DEFAULT_MAX_KEYS: usize = 65_536;

const NANOS_PER_MINUTE: i128 = 60_000_000_000;

/// `per_minute` tokens a minute, at most `burst` at once. `per_minute = 0` means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

pub struct RateLimiter<K> {
    clock: Arc<dyn Clock>,
    /// Nanoseconds per token and how far ahead the bucket may run (`(burst - 1)` tokens);
    /// `None` when unlimited.
    pace: Option<(i128, i128)>,
    max_keys: usize,
    /// Per key, the time (ns since the epoch) at which its bucket is full again.
    buckets: Mutex<HashMap<K, i128>>,
}

impl<K: Eq + Hash> RateLimiter<K> {
    pub fn new(rate: Rate, max_keys: usize, clock: Arc<dyn Clock>) -> RateLimiter<K> {
        let pace = (rate.per_minute > 0).then(|| {
            let interval = NANOS_PER_MINUTE / i128::from(rate.per_minute);
            (interval, interval * i128::from(rate.burst.max(1) - 1))
        });
        RateLimiter {
            clock,
            pace,
            max_keys: max_keys.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key`: `Ok` if it had one, else how long until it has.
    pub fn check<Q>(&self, key: &Q) -> Result<(), Duration>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let Some((interval, tolerance)) = self.pace else {
            return Ok(());
        };
        let now = self.clock.now().unix_timestamp_nanos();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(full_at) = buckets.get_mut(key) {
            // Never before now (a full bucket holds no more than `burst`), and never further
            // ahead than a request could have put it (the clock stepped back). The clamp is
            // kept, so a step back is forgotten.
            *full_at = (*full_at).clamp(now, now + tolerance + interval);
            if *full_at - now > tolerance {
                let wait = *full_at - now - tolerance;
                return Err(Duration::from_nanos(
                    u64::try_from(wait).unwrap_or(u64::MAX),
                ));
            }
            *full_at += interval;
            return Ok(());
        }
        if buckets.len() >= self.max_keys {
            evict(&mut buckets, now, self.max_keys);
        }
        buckets.insert(key.to_owned(), now + interval);
        Ok(())
    }

    /// How many keys have a bucket now.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Makes room for at least one key: drops the buckets that are full again, and if that is not
/// enough, the fullest eighth of the rest (ties may take a few more).
fn evict<K>(buckets: &mut HashMap<K, i128>, now: i128, max_keys: usize) {
    buckets.retain(|_, at| *at > now);
    if buckets.len() < max_keys {
        return;
    }
    let mut times: Vec<i128> = buckets.values().copied().collect();
    let drop = (max_keys / 8).max(1).min(times.len());
    let (_, cutoff, _) = times.select_nth_unstable(drop - 1);
    let cutoff = *cutoff;
    buckets.retain(|_, at| *at > cutoff);
}

/// The key a client address is limited under. An IPv6 client usually holds a whole /64, so
/// its addresses share one bucket; an IPv4 address mapped into IPv6 counts as itself.
pub fn ip_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

/// 429 `rate_limited` with a `Retry-After` header in whole seconds (at least 1).
#[derive(Debug)]
pub struct RateLimited {
    pub retry_after: Duration,
    pub message: String,
}

impl RateLimited {
    /// `what` says who was limited; `keys` are the configuration keys that set the rate.
    pub fn new(retry_after: Duration, what: &str, keys: &str) -> RateLimited {
        let secs = retry_after_secs(retry_after);
        RateLimited {
            retry_after,
            message: format!("too many requests from {what}; retry in {secs} s (raise {keys})"),
        }
    }

    pub fn retry_after_secs(&self) -> u64 {
        retry_after_secs(self.retry_after)
    }
}

fn retry_after_secs(wait: Duration) -> u64 {
    let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    whole.max(1)
}

impl IntoResponse for RateLimited {
    fn into_response(self) -> Response {
        let mut response = (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, self.retry_after_secs().to_string())],
            Json(ErrorBody::new(ErrorCode::RateLimited, self.message)),
        )
            .into_response();
        // Counted under its code by the metrics, like every `ApiError`.
        response
            .extensions_mut()
            .insert(crate::api::error::ErrorCodeTag(
                ErrorCode::RateLimited.as_str(),
            ));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use time::macros::datetime;

    fn limiter<K: Eq + Hash>(
        per_minute: u32,
        burst: u32,
        max_keys: usize,
    ) -> (Arc<ManualClock>, RateLimiter<K>) {
        let clock = Arc::new(ManualClock::new(datetime!(2026-03-01 12:00 UTC)));
        let limiter = RateLimiter::new(
            Rate { per_minute, burst },
            max_keys,
            clock.clone() as Arc<dyn Clock>,
        );
        (clock, limiter)
    }

    #[test]
    fn a_burst_then_one_token_per_interval() {
        // 60 a minute: one a second, five at once.
        let (clock, limiter) = limiter::<String>(60, 5, 16);
        for _ in 0..5 {
            limiter.check("a").unwrap();
        }
        assert_eq!(limiter.check("a"), Err(Duration::from_secs(1)));
        clock.advance(time::Duration::milliseconds(400));
        assert_eq!(limiter.check("a"), Err(Duration::from_millis(600)));
        clock.advance(time::Duration::milliseconds(600));
        limiter.check("a").unwrap();
        assert!(limiter.check("a").is_err());
        // Other keys have their own bucket.
        limiter.check("b").unwrap();
        // After a quiet while the bucket is full again, never fuller.
        clock.advance(time::Duration::hours(1));
        for _ in 0..5 {
            limiter.check("a").unwrap();
        }
        assert!(limiter.check("a").is_err());
    }

    #[test]
    fn a_steady_client_at_the_rate_is_never_refused() {
        let (clock, limiter) = limiter::<IpAddr>(10, 1, 16);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..100 {
            limiter.check(&ip).unwrap();
            clock.advance(time::Duration::seconds(6));
        }
        limiter.check(&ip).unwrap();
        assert_eq!(limiter.check(&ip), Err(Duration::from_secs(6)));
    }

    #[test]
    fn zero_per_minute_means_no_limit() {
        let (_, limiter) = limiter::<String>(0, 0, 16);
        for _ in 0..10_000 {
            limiter.check("a").unwrap();
        }
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn a_clock_stepping_back_holds_a_key_for_one_interval_at_most() {
        let (clock, limiter) = limiter::<String>(60, 2, 16);
        limiter.check("a").unwrap();
        limiter.check("a").unwrap();
        clock.advance(-time::Duration::hours(1));
        assert_eq!(limiter.check("a"), Err(Duration::from_secs(1)));
        clock.advance(time::Duration::seconds(1));
        limiter.check("a").unwrap();
    }

    #[test]
    fn a_flood_of_keys_stays_bounded_and_keeps_the_limited_ones() {
        let (clock, limiter) = limiter::<String>(60, 3, 64);
        for _ in 0..3 {
            limiter.check("noisy").unwrap();
        }
        assert!(limiter.check("noisy").is_err());
        for i in 0..10_000 {
            limiter.check(&format!("key-{i}")).unwrap();
            assert!(limiter.tracked() <= 64);
        }
        // The noisy key's bucket was the emptiest, so it was kept, and it is still limited.
        assert!(limiter.check("noisy").is_err());
        clock.advance(time::Duration::seconds(3));
        limiter.check("noisy").unwrap();
    }

    #[test]
    fn refilled_buckets_are_dropped_first() {
        let (clock, limiter) = limiter::<String>(60, 1, 4);
        for key in ["a", "b", "c"] {
            limiter.check(key).unwrap();
        }
        clock.advance(time::Duration::seconds(10));
        limiter.check("d").unwrap();
        assert_eq!(limiter.tracked(), 4);
        // Full: a, b and c have refilled, so they make room, and d stays.
        limiter.check("e").unwrap();
        assert_eq!(limiter.tracked(), 2);
        assert!(limiter.check("d").is_err());
        // One key only: the limiter still works.
        let (_, single) = super::tests::limiter::<String>(60, 1, 1);
        single.check("x").unwrap();
        single.check("y").unwrap();
        assert_eq!(single.tracked(), 1);
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let key = |s: &str| ip_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_eq!(key("192.0.2.7"), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn retry_after_is_whole_seconds_at_least_one() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[tokio::test]
    async fn the_refusal_is_a_429_with_retry_after_and_the_error_body() {
        let response = RateLimited::new(
            Duration::from_millis(2500),
            "agent x",
            "reports_rate_per_minute",
        )
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error"]["code"], "rate_limited");
        assert_eq!(
            body["error"]["message"],
            "too many requests from agent x; retry in 3 s (raise reports_rate_per_minute)"
        );
    }
}
