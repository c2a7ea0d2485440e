//! The batch envelope an agent posts to `POST /agent/v1/reports`, and the collector's answer.

use serde::{Deserialize, Serialize};

use crate::{HealthSample, Inventory};

mod decode;

/// `{ "protocol": 1, "agent_id": "...", "reports": [ { "seq": 7, "kind": "health", ... } ] }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Batch {
    #[serde(default = "default_protocol")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1))]
    pub protocol: u32,
    /// The agent that sent the batch; every report in it must carry the same id.
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    pub agent_id: String,
    pub reports: Vec<Report>,
}

fn default_protocol() -> u32 {
    crate::PROTOCOL_VERSION
}

/// One report. `seq` is the agent's own sequence number: it rises by one per report and is
/// never reused, so the collector can acknowledge it and drop a repeat.
///
/// On the wire a report is one map: `seq`, `kind` and the body's own fields side by side.
/// Deserialization is written by hand (see [`decode`]) so the body is decoded straight from
/// the wire instead of through serde's buffer for flattened fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Report {
    #[cfg_attr(feature = "openapi", schema(maximum = 9223372036854775807_u64))]
    pub seq: u64,
    #[serde(flatten)]
    pub body: ReportBody,
}

// A batch holds a handful of reports, so the size of the larger variant does not matter and a
// box would only add an allocation per report.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Ack {
    pub acked: Vec<u64>,
    #[serde(default)]
    // The collector always sends every field; only an older collector might leave one out.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub send_inventory: bool,
    /// The highest sequence number the collector has stored for this agent. An agent whose
    /// next number is not above it (its state dir went back in time: a VM snapshot reverted, a
    /// backup restored) must continue above it, or its new reports would be taken as repeats.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub last_seq: Option<u64>,
}
