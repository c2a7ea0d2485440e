//! The batch envelope an agent posts to `POST /agent/v1/reports`, and the collector's answer.

use serde::{Deserialize, Serialize};

use crate::{HealthSample, Inventory};

/// `{ "protocol": 1, "agent_id": "...", "reports": [ { "seq": 7, "kind": "health", ... } ] }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    #[serde(default = "default_protocol")]
    pub protocol: u32,
    /// The agent that sent the batch; every report in it must carry the same id.
    pub agent_id: String,
    pub reports: Vec<Report>,
}

fn default_protocol() -> u32 {
    crate::PROTOCOL_VERSION
}

/// One report. `seq` is the agent's own sequence number: it rises by one per report and is
/// never reused, so the collector can acknowledge it and drop a repeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub seq: u64,
    #[serde(flatten)]
    pub body: ReportBody,
}

// A batch holds a handful of reports, so the size of the larger variant does not matter and a
// box would only add an allocation per report.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReportBody {
    Inventory(Inventory),
    Health(HealthSample),
}

impl ReportBody {
    pub fn kind(&self) -> &'static str {
        match self {
            ReportBody::Inventory(_) => "inventory",
            ReportBody::Health(_) => "health",
        }
    }

    pub fn agent_id(&self) -> &str {
        match self {
            ReportBody::Inventory(inv) => &inv.agent_id,
            ReportBody::Health(h) => &h.agent_id,
        }
    }
}

/// The collector's answer: which sequence numbers are durable now (including repeats of ones
/// stored before), and whether it wants a full inventory at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub acked: Vec<u64>,
    #[serde(default)]
    pub send_inventory: bool,
    /// The highest sequence number the collector has stored for this agent. An agent whose
    /// next number is not above it (its state dir went back in time: a VM snapshot reverted, a
    /// backup restored) must continue above it, or its new reports would be taken as repeats.
    #[serde(default)]
    pub last_seq: Option<u64>,
}
