//! Threshold rules: what a rule watches ([`Metric`]), how it compares ([`Operator`]), how bad a
//! breach is ([`Severity`]), and the values a health sample gives each metric.
//!
//! A metric is a health-sample field. The filesystem metrics are per mount: each mount is a
//! dimension of its own, with its own alert state and its own incident. `load_per_core` is the
//! 1-minute load average divided by the computer's logical CPUs (from its inventory); unknown
//! when either is. `unreachable` is no field: the silence check ([`crate::store`]'s incident
//! engine) raises it when an agent stops reporting.

use census_common::HealthSample;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::scope::Scope;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    CpuPercent,
    MemoryUsedPercent,
    SwapUsedPercent,
    Load1,
    Load5,
    Load15,
    LoadPerCore,
    ProcessCount,
    NetRxBytesPerSec,
    NetTxBytesPerSec,
    AgentRssBytes,
    AgentCpuPercent,
    ReportsDropped,
    UptimeSecs,
    FsUsedPercent,
    FsInodesUsedPercent,
    Unreachable,
}

impl Metric {
    pub const ALL: &'static [Metric] = &[
        Metric::CpuPercent,
        Metric::MemoryUsedPercent,
        Metric::SwapUsedPercent,
        Metric::Load1,
        Metric::Load5,
        Metric::Load15,
        Metric::LoadPerCore,
        Metric::ProcessCount,
        Metric::NetRxBytesPerSec,
        Metric::NetTxBytesPerSec,
        Metric::AgentRssBytes,
        Metric::AgentCpuPercent,
        Metric::ReportsDropped,
        Metric::UptimeSecs,
        Metric::FsUsedPercent,
        Metric::FsInodesUsedPercent,
        Metric::Unreachable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::CpuPercent => "cpu_percent",
            Metric::MemoryUsedPercent => "memory_used_percent",
            Metric::SwapUsedPercent => "swap_used_percent",
            Metric::Load1 => "load1",
            Metric::Load5 => "load5",
            Metric::Load15 => "load15",
            Metric::LoadPerCore => "load_per_core",
            Metric::ProcessCount => "process_count",
            Metric::NetRxBytesPerSec => "net_rx_bytes_per_sec",
            Metric::NetTxBytesPerSec => "net_tx_bytes_per_sec",
            Metric::AgentRssBytes => "agent_rss_bytes",
            Metric::AgentCpuPercent => "agent_cpu_percent",
            Metric::ReportsDropped => "reports_dropped",
            Metric::UptimeSecs => "uptime_secs",
            Metric::FsUsedPercent => "fs_used_percent",
            Metric::FsInodesUsedPercent => "fs_inodes_used_percent",
            Metric::Unreachable => "unreachable",
        }
    }

    pub fn parse(text: &str) -> Option<Metric> {
        Metric::ALL.iter().copied().find(|m| m.as_str() == text)
    }

    /// The metric names, comma-separated, for messages.
    pub fn names() -> String {
        Metric::ALL
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether each mount is a dimension of its own.
    pub fn per_mount(self) -> bool {
        matches!(self, Metric::FsUsedPercent | Metric::FsInodesUsedPercent)
    }

    /// What a sample says of this metric: one value per dimension (`""` for a metric that has
    /// none), `None` where the machine did not report it. `cores` is the computer's logical
    /// CPU count. Always empty for [`Metric::Unreachable`].
    pub fn observe(self, sample: &HealthSample, cores: Option<f64>) -> Vec<(String, Option<f64>)> {
        let one = |v: Option<f64>| vec![(String::new(), v.filter(|v| v.is_finite()))];
        let int = |v: Option<u64>| one(v.map(|v| v as f64));
        let load = |i: usize| sample.load.map(|l| l[i]);
        match self {
            Metric::CpuPercent => one(sample.cpu_percent),
            Metric::MemoryUsedPercent => one(sample.memory_used_percent),
            Metric::SwapUsedPercent => one(sample.swap_used_percent),
            Metric::Load1 => one(load(0)),
            Metric::Load5 => one(load(1)),
            Metric::Load15 => one(load(2)),
            Metric::LoadPerCore => {
                one(load(0).zip(cores.filter(|c| *c >= 1.0)).map(|(l, c)| l / c))
            }
            Metric::ProcessCount => int(sample.process_count),
            Metric::NetRxBytesPerSec => one(sample.net_rx_bytes_per_sec),
            Metric::NetTxBytesPerSec => one(sample.net_tx_bytes_per_sec),
            Metric::AgentRssBytes => int(sample.agent_rss_bytes),
            Metric::AgentCpuPercent => one(sample.agent_cpu_percent),
            // No drop since the previous sample is a count of zero, not an unknown.
            Metric::ReportsDropped => int(Some(sample.reports_dropped.unwrap_or(0))),
            Metric::UptimeSecs => int(sample.uptime_secs),
            Metric::FsUsedPercent | Metric::FsInodesUsedPercent => sample
                .filesystems
                .iter()
                .map(|fs| {
                    let v = if self == Metric::FsUsedPercent {
                        fs.used_percent
                    } else {
                        fs.inodes_used_percent
                    };
                    (fs.mount.clone(), v.filter(|v| v.is_finite()))
                })
                .collect(),
            Metric::Unreachable => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Operator {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
}

impl Operator {
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Gt => ">",
            Operator::Ge => ">=",
            Operator::Lt => "<",
            Operator::Le => "<=",
        }
    }

    pub fn parse(text: &str) -> Option<Operator> {
        [Operator::Gt, Operator::Ge, Operator::Lt, Operator::Le]
            .into_iter()
            .find(|o| o.as_str() == text)
    }

    /// Whether `value` breaches `threshold`.
    pub fn breaches(self, value: f64, threshold: f64) -> bool {
        match self {
            Operator::Gt => value > threshold,
            Operator::Ge => value >= threshold,
            Operator::Lt => value < threshold,
            Operator::Le => value <= threshold,
        }
    }

    /// Whether a rising rule (`>`, `>=`) watches for high values.
    pub fn rising(self) -> bool {
        matches!(self, Operator::Gt | Operator::Ge)
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    High,
    Medium,
    Low,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
        }
    }

    pub fn parse(text: &str) -> Option<Severity> {
        [
            Severity::Critical,
            Severity::High,
            Severity::Medium,
            Severity::Low,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// A stored rule. Durations are milliseconds here; the API writes them like `5m`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: i64,
    pub name: String,
    pub metric: Metric,
    /// For a per-mount metric, a pattern the mount must match (`*` and `?`); `None`: every
    /// mount.
    pub dimension: Option<String>,
    pub scope: Scope,
    pub operator: Operator,
    pub threshold: f64,
    pub for_ms: i64,
    /// The value the metric must get past, going back, for the breach to count as over;
    /// `None`: no longer breaching `threshold`.
    pub clear_threshold: Option<f64>,
    pub clear_for_ms: i64,
    pub severity: Severity,
    pub enabled: bool,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl Rule {
    pub fn breaches(&self, value: f64) -> bool {
        self.operator.breaches(value, self.threshold)
    }

    /// Whether `value` is back past the clear threshold (hysteresis): below it for a rising
    /// rule, above it for a falling one. Without a clear threshold, whether it no longer
    /// breaches.
    pub fn clears(&self, value: f64) -> bool {
        match self.clear_threshold {
            None => !self.breaches(value),
            Some(clear) if self.operator.rising() => value < clear,
            Some(clear) => value > clear,
        }
    }

    /// Whether the rule looks at `dimension` (a mount, or `""`).
    pub fn watches(&self, dimension: &str) -> bool {
        self.dimension
            .as_deref()
            .is_none_or(|p| super::scope::glob_matches(p, dimension))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use census_common::FilesystemUsage;

    #[test]
    fn names_round_trip() {
        for m in Metric::ALL {
            assert_eq!(Metric::parse(m.as_str()), Some(*m));
            let json = serde_json::to_value(m).unwrap();
            assert_eq!(json, m.as_str());
        }
        assert_eq!(Metric::parse("cpu"), None);
        assert_eq!(serde_json::to_value(Operator::Ge).unwrap(), ">=");
        assert_eq!(Severity::parse("high"), Some(Severity::High));
    }

    #[test]
    fn a_sample_gives_each_metric_its_values() {
        let mut s = HealthSample::empty("a", OffsetDateTime::UNIX_EPOCH);
        s.cpu_percent = Some(97.5);
        s.load = Some([8.0, 4.0, 2.0]);
        s.filesystems = vec![
            FilesystemUsage {
                mount: "/".into(),
                used_percent: Some(91.0),
                inodes_used_percent: None,
            },
            FilesystemUsage {
                mount: "/srv".into(),
                used_percent: None,
                inodes_used_percent: Some(3.0),
            },
        ];
        assert_eq!(
            Metric::CpuPercent.observe(&s, None),
            vec![(String::new(), Some(97.5))]
        );
        assert_eq!(
            Metric::LoadPerCore.observe(&s, Some(2.0)),
            vec![(String::new(), Some(4.0))]
        );
        assert_eq!(
            Metric::LoadPerCore.observe(&s, None),
            vec![(String::new(), None)]
        );
        assert_eq!(
            Metric::FsUsedPercent.observe(&s, None),
            vec![("/".into(), Some(91.0)), ("/srv".into(), None)]
        );
        assert_eq!(
            Metric::MemoryUsedPercent.observe(&s, None),
            vec![(String::new(), None)]
        );
        assert_eq!(
            Metric::ReportsDropped.observe(&s, None),
            vec![(String::new(), Some(0.0))]
        );
        assert!(Metric::Unreachable.observe(&s, None).is_empty());
    }

    #[test]
    fn hysteresis_both_ways() {
        let mut rule = Rule {
            id: 1,
            name: "fs".into(),
            metric: Metric::FsUsedPercent,
            dimension: None,
            scope: Scope::default(),
            operator: Operator::Gt,
            threshold: 90.0,
            for_ms: 0,
            clear_threshold: Some(85.0),
            clear_for_ms: 0,
            severity: Severity::High,
            enabled: true,
            created_at: OffsetDateTime::UNIX_EPOCH,
            updated_at: OffsetDateTime::UNIX_EPOCH,
        };
        assert!(rule.breaches(90.5) && !rule.breaches(90.0));
        assert!(!rule.clears(87.0) && rule.clears(84.9));
        rule.clear_threshold = None;
        assert!(rule.clears(90.0));
        rule.operator = Operator::Lt;
        rule.threshold = 10.0;
        rule.clear_threshold = Some(15.0);
        assert!(rule.breaches(9.0) && !rule.clears(12.0) && rule.clears(16.0));
        rule.dimension = Some("/srv*".into());
        assert!(rule.watches("/srv/data") && !rule.watches("/"));
    }
}
