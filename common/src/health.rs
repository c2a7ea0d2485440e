//! One health sample: how a machine is doing right now. Every metric is optional: a value the
//! OS does not offer is absent, never reported as zero.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthSample {
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    pub agent_id: String,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub collected_at: OffsetDateTime,
    #[serde(default)]
    pub uptime_secs: Option<u64>,
    /// Busy share of all CPUs over the interval since the previous sample, 0 to 100.
    #[serde(default)]
    pub cpu_percent: Option<f64>,
    /// Load averages over 1, 5 and 15 minutes.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(min_items = 3, max_items = 3))]
    pub load: Option<[f64; 3]>,
    #[serde(default)]
    pub memory_used_percent: Option<f64>,
    #[serde(default)]
    pub swap_used_percent: Option<f64>,
    #[serde(default)]
    pub filesystems: Vec<FilesystemUsage>,
    #[serde(default)]
    pub process_count: Option<u64>,
    #[serde(default)]
    pub net_rx_bytes_per_sec: Option<f64>,
    #[serde(default)]
    pub net_tx_bytes_per_sec: Option<f64>,
    #[serde(default)]
    pub agent_rss_bytes: Option<u64>,
    #[serde(default)]
    pub agent_cpu_percent: Option<f64>,
    /// Reports the agent's spool dropped, because it was full, since the previous sample that
    /// reached the collector (oldest health samples go first; inventories are kept). Null
    /// when none were dropped.
    #[serde(default)]
    pub reports_dropped: Option<u64>,
    /// The agent's health interval in seconds: the collector counts an agent silent after
    /// missing a few of them. Absent from older agents.
    #[serde(default)]
    pub interval_secs: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FilesystemUsage {
    pub mount: String,
    #[serde(default)]
    pub used_percent: Option<f64>,
    #[serde(default)]
    pub inodes_used_percent: Option<f64>,
}

impl HealthSample {
    /// A sample with every metric unknown; collectors fill in what the OS offers.
    pub fn empty(agent_id: impl Into<String>, collected_at: OffsetDateTime) -> Self {
        HealthSample {
            agent_id: agent_id.into(),
            collected_at,
            uptime_secs: None,
            cpu_percent: None,
            load: None,
            memory_used_percent: None,
            swap_used_percent: None,
            filesystems: Vec::new(),
            process_count: None,
            net_rx_bytes_per_sec: None,
            net_tx_bytes_per_sec: None,
            agent_rss_bytes: None,
            agent_cpu_percent: None,
            reports_dropped: None,
            interval_secs: None,
        }
    }
}
