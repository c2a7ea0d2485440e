//! What a run measured, as one JSON object (`--json`) or as text.
//!
//! Rates, latencies, bytes and schedule lag are over the measured window (the run after
//! `--ramp`); a request belongs to it when it finished inside it (lag: when it went out inside
//! it). Errors and totals are over the whole run, so they can be compared with what the
//! collector stored.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::stats::{Percentiles, Tally};

#[derive(Debug, Serialize)]
pub struct RunReport {
    pub mode: String,
    pub url: String,
    pub agents: u32,
    pub seed: u64,
    pub interval_s: f64,
    pub duration_s: f64,
    pub ramp_s: f64,
    pub concurrency: usize,
    pub threads: usize,
    /// Length of the measured window, seconds.
    pub window_s: f64,
    /// Reports acked per second in the window (every batch holds one report).
    pub reports_per_s: f64,
    pub batches_per_s: f64,
    /// Per kind (`enroll`, `health`, `inventory_new`, `inventory_changed`), in the window.
    pub kinds: BTreeMap<&'static str, KindReport>,
    /// Per kind, failures by what went wrong, over the whole run.
    pub errors: BTreeMap<&'static str, BTreeMap<String, u64>>,
    pub bytes_per_agent_hour: Bytes,
    /// How late requests went out after their scheduled time, in the window (milliseconds).
    pub lag_ms: Option<Latency>,
    /// Requests that were due before the end but never sent: their agent's previous request
    /// was still in flight (the collector or the sender could not keep up).
    pub unsent: u64,
    pub totals: Totals,
}

#[derive(Debug, Serialize)]
pub struct KindReport {
    pub ok: usize,
    pub failed: u64,
    pub per_s: f64,
    pub latency_ms: Option<Latency>,
    /// Mean body size as sent, compressed.
    pub mean_body_bytes: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub count: usize,
}

impl From<Percentiles> for Latency {
    fn from(p: Percentiles) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            p50: ms(p.p50),
            p95: ms(p.p95),
            p99: ms(p.p99),
            max: ms(p.max),
            count: p.count,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Bytes {
    /// Request bodies as sent (gzip-compressed MessagePack, or enrollment JSON).
    pub bodies: f64,
    /// Bodies plus the request line and HTTP headers (not TCP/IP framing).
    pub with_headers: f64,
}

/// Whole-run counts, for comparing with the collector.
#[derive(Debug, Default, Serialize)]
pub struct Totals {
    pub enrolled: usize,
    pub health_acked: usize,
    pub inventories_acked: usize,
    pub reports_acked: usize,
    pub failed: u64,
}

impl KindReport {
    pub fn new(tally: &mut Tally, window_s: f64) -> KindReport {
        let ok = tally.succeeded();
        let failed = tally.failed();
        let sent = ok as u64 + failed;
        KindReport {
            ok,
            failed,
            per_s: ok as f64 / window_s,
            latency_ms: tally.percentiles().map(Latency::from),
            mean_body_bytes: if sent == 0 {
                0.0
            } else {
                tally.bytes_sent() as f64 / sent as f64
            },
        }
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.p50, self.p95, self.p99, self.max
        )
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} agents, mode {}, against {} (seed {}, interval {}s, ramp {}s, {} in flight at most, {} threads)",
            self.agents,
            self.mode,
            self.url,
            self.seed,
            self.interval_s,
            self.ramp_s,
            self.concurrency,
            self.threads
        )?;
        writeln!(
            f,
            "measured window {:.1} s: {:.1} reports/s, {:.1} batches/s",
            self.window_s, self.reports_per_s, self.batches_per_s
        )?;
        for (kind, k) in &self.kinds {
            write!(
                f,
                "  {kind:<18} {:>9} ok {:>6} failed {:>9.1}/s  mean body {:>7.0} B",
                k.ok, k.failed, k.per_s, k.mean_body_bytes
            )?;
            match &k.latency_ms {
                Some(l) => writeln!(f, "  {l}")?,
                None => writeln!(f)?,
            }
        }
        match &self.lag_ms {
            Some(l) => writeln!(
                f,
                "schedule lag: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                l.p50, l.p99, l.max
            )?,
            None => writeln!(f, "schedule lag: nothing sent in the window")?,
        }
        if self.unsent > 0 {
            writeln!(f, "unsent (agent still busy when due): {}", self.unsent)?;
        }
        writeln!(
            f,
            "bytes per agent per hour: {:.0} bodies, {:.0} with HTTP headers",
            self.bytes_per_agent_hour.bodies, self.bytes_per_agent_hour.with_headers
        )?;
        if self.errors.is_empty() {
            writeln!(f, "errors: none")?;
        } else {
            for (kind, errors) in &self.errors {
                for (what, n) in errors {
                    writeln!(f, "errors: {kind} {what}: {n}")?;
                }
            }
        }
        let t = &self.totals;
        write!(
            f,
            "whole run: {} enrolled, {} health and {} inventories acked, {} failed",
            t.enrolled, t.health_acked, t.inventories_acked, t.failed
        )
    }
}
