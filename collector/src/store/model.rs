//! Plain types going in and out of the store. They belong to no backend and are not wire
//! types: the API turns them into its JSON views.

use census_common::{HealthSample, Report};
use serde_json::Value;
use time::OffsetDateTime;

/// One decoded batch from one agent.
#[derive(Debug, Clone)]
pub struct IngestBatch {
    pub agent_id: String,
    pub reports: Vec<Report>,
    /// When the collector received the batch; the `last_seen` it sets.
    pub received_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Every seq of the batch, ascending, whether stored now or before.
    pub acked: Vec<u64>,
    /// How many reports were new and stored.
    pub stored: usize,
    /// The agent has no computer CI: it should send its inventory.
    pub send_inventory: bool,
    /// The highest seq stored for this agent after the batch (`None` before its first report).
    pub last_seq: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CiRecord {
    pub id: i64,
    pub class: String,
    pub name: String,
    pub status: String,
    pub criticality: i64,
    pub attributes: Value,
    pub identified_by: Option<String>,
    pub first_seen: OffsetDateTime,
    /// For a computer, the latest of its CI row and of its agent's last report.
    pub last_seen: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CiDetail {
    pub ci: CiRecord,
    /// The latest health sample of the computer's agent, if any.
    pub health: Option<HealthSample>,
    pub relationships: Vec<RelationshipRecord>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RelationshipRecord {
    pub kind: String,
    pub source: i64,
    pub source_name: String,
    pub target: i64,
    pub target_name: String,
    pub created_at: OffsetDateTime,
}

/// Filters of the CI list. Every present filter must match.
#[derive(Debug, Clone, Default)]
pub struct CiFilter {
    pub class: Option<String>,
    pub status: Option<String>,
    /// Prefix of the CI name.
    pub name_prefix: Option<String>,
    pub hostname: Option<String>,
    /// Exact `os_name` or `os_family` attribute.
    pub os: Option<String>,
    /// Only CIs with an id above this (the cursor).
    pub after: Option<i64>,
    pub limit: u32,
}

/// A window of a CI's health series, read a page at a time, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthQuery {
    /// Samples whose series time is in `from..=to`.
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    /// Where the previous page ended (the cursor).
    pub after: Option<HealthCursor>,
    pub limit: u32,
}

/// The position after a page of health samples: the series time (unix ms) of its last sample,
/// and how many samples of exactly that time were returned so far. Samples of one time are
/// always read in the same order (arrival order), so skipping that many resumes exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthCursor {
    pub ts: i64,
    pub seen_at_ts: u64,
}

/// A page of a list, and where the next one starts if there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T, K> {
    pub items: Vec<T>,
    pub next: Option<K>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledSoftware {
    pub name: String,
    pub version: Option<String>,
    pub arch: Option<String>,
    pub vendor: Option<String>,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoftwareQuery {
    /// Exact package name.
    pub name: String,
    /// Only installations after this (ci_id, software_id) position (the cursor).
    pub after: Option<(i64, i64)>,
    pub limit: u32,
}

/// One computer that has a package, at one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoftwareInstall {
    pub ci_id: i64,
    pub ci_name: String,
    pub hostname: Option<String>,
    pub software_id: i64,
    pub software: InstalledSoftware,
}

/// Why an admin write was refused. Nothing of the request was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The CI or relationship the request is about does not exist (404).
    NotFound(String),
    /// The request conflicts with what is stored: a duplicate, or a change to what an inventory
    /// owns (409).
    Conflict(String),
    /// A field has a value this write does not allow; the message names the field (422).
    InvalidField(String),
}

/// What a store write that can be refused answers: `Ok(Err(refusal))` wrote nothing.
pub type Refusable<T> = Result<T, Refusal>;

/// A CI an admin creates (`POST /api/v1/cis`). The values are checked by the caller: class,
/// name and criticality syntax; attributes an object of bounded size.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCi {
    pub class: String,
    pub name: String,
    pub criticality: i64,
    pub attributes: serde_json::Map<String, Value>,
}

/// Changes an admin makes to a CI (`PATCH /api/v1/cis/{id}`); `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CiPatch {
    pub name: Option<String>,
    pub criticality: Option<i64>,
    /// `active` or `retired`.
    pub status: Option<String>,
    /// A JSON merge patch (RFC 7396) of the attributes: a null value removes its key.
    pub attributes: Option<serde_json::Map<String, Value>>,
}

/// A relationship with everything the API shows of it.
#[derive(Debug, Clone, PartialEq)]
pub struct RelationshipDetail {
    pub id: i64,
    pub kind: String,
    pub source: i64,
    pub source_name: String,
    pub target: i64,
    pub target_name: String,
    pub description: Option<String>,
    pub created_at: OffsetDateTime,
    /// The admin token's name; `None` for one an inventory made.
    pub created_by: Option<String>,
}

/// A relationship an admin makes: "source `kind` target".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRelationship {
    pub source: i64,
    pub kind: String,
    pub target: i64,
    pub description: Option<String>,
}

/// Changes to a relationship; `None` leaves a field as it is, `Some(None)` clears the
/// description.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelationshipPatch {
    pub kind: Option<String>,
    pub description: Option<Option<String>>,
}

/// Filters of the relationship list. Every present filter must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelationshipFilter {
    /// Either end.
    pub ci: Option<i64>,
    pub source: Option<i64>,
    pub target: Option<i64>,
    pub kind: Option<String>,
    /// Only relationships with an id above this (the cursor).
    pub after: Option<i64>,
    pub limit: u32,
}

/// Which way a dependency traversal walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// To the CIs that depend on the start (who is hurt if it fails).
    Impact,
    /// To the CIs the start depends on.
    Dependencies,
}

/// How far a traversal goes and what it reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraversalQuery {
    /// Deepest level reported, at least 1.
    pub max_depth: u32,
    /// Report and walk through retired CIs too.
    pub include_retired: bool,
}

/// The identifying fields of a CI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiBrief {
    pub id: i64,
    pub class: String,
    pub name: String,
    pub status: String,
    pub criticality: i64,
}

/// A CI a traversal reached, by one of its shortest paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reached {
    pub ci: CiBrief,
    /// Relationships between the start and this CI, at least 1.
    pub depth: u32,
    /// CI ids from the start to this CI, both included (`depth + 1` of them).
    pub path: Vec<i64>,
    /// The relationship types along `path` (`depth` of them).
    pub via: Vec<String>,
}

/// Every CI a traversal reached, by (depth, id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traversal {
    pub items: Vec<Reached>,
    /// CIs past `max_depth` or past the item cap were left out.
    pub truncated: bool,
}

/// The most critical business service that depends on a CI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependentService {
    pub ci: CiBrief,
    /// Relationships between the CI and the service.
    pub depth: u32,
}

/// What one stale sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StaleSweep {
    /// Computers marked `stale`.
    pub marked: usize,
    /// Writer jobs it took (each marks at most a batch).
    pub jobs: usize,
}
