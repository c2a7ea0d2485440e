//! Plain types going in and out of the store. They belong to no backend and are not wire
//! types: the API turns them into its JSON views.

use std::sync::Arc;

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

/// Filters, order and position of the CI list. Every present filter must match (AND). Text
/// filters are exact and case-sensitive unless their name says otherwise.
#[derive(Debug, Clone, Default)]
pub struct CiFilter {
    pub class: Option<String>,
    /// Exact status. Without one, retired CIs are left out unless `include_retired`.
    pub status: Option<String>,
    pub include_retired: bool,
    /// The exact CI name.
    pub name: Option<String>,
    /// A substring of the CI name, ASCII letters compared case-insensitively.
    pub name_contains: Option<String>,
    /// Prefix of the CI name (case-sensitive).
    pub name_prefix: Option<String>,
    pub hostname: Option<String>,
    /// A substring of the `hostname` attribute, ASCII letters compared case-insensitively.
    pub hostname_contains: Option<String>,
    /// Exact `os_name` or `os_family` attribute.
    pub os: Option<String>,
    pub os_name: Option<String>,
    pub os_version: Option<String>,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    /// Exact criticality, 1 (highest) to 4.
    pub criticality: Option<i64>,
    /// Criticality at most this number: at least this critical.
    pub criticality_max: Option<i64>,
    /// `last_seen` (for a computer, the later of its row and its agent's last report) before
    /// this time, exclusive.
    pub last_seen_before: Option<OffsetDateTime>,
    /// `last_seen` at or after this time.
    pub last_seen_after: Option<OffsetDateTime>,
    /// Computers with an installed package of this exact name (and version, if given).
    pub has_software: Option<SoftwareMatch>,
    pub sort: CiSort,
    /// Where the previous page ended (the cursor), in `sort` order.
    pub after: Option<CiPosition>,
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

/// Filters on packages, shared by the software lists. Every present filter must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SoftwareFilter {
    /// Exact package name.
    pub name: Option<String>,
    /// Part of the package name, ASCII case-insensitive.
    pub name_contains: Option<String>,
    /// Exact source (`dpkg`, `rpm`, `apk`, ...).
    pub source: Option<String>,
    /// Exact architecture.
    pub arch: Option<String>,
    /// Exact version text.
    pub version: Option<String>,
    /// Versions before / up to / after / from this one, each package compared by its own
    /// source's ordering ([`crate::cmdb::version::compare`]). A package of unknown version
    /// matches none of them.
    pub version_lt: Option<String>,
    pub version_le: Option<String>,
    pub version_gt: Option<String>,
    pub version_ge: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoftwareQuery {
    pub filter: SoftwareFilter,
    /// Also list installations on retired CIs.
    pub include_retired: bool,
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
    /// The CI's status (`active`, `stale`, `retired`).
    pub ci_status: String,
    pub software_id: i64,
    /// Shared by every installation of the catalog row on a page.
    pub software: Arc<InstalledSoftware>,
}

/// The software catalog: one row per (name, version, arch, source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogQuery {
    pub filter: SoftwareFilter,
    /// Also list rows no CI that is not retired has installed.
    pub include_unused: bool,
    /// Only rows after this catalog row in the list's order (the cursor).
    pub after: Option<i64>,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    /// The catalog row's id.
    pub id: i64,
    pub software: InstalledSoftware,
    /// Installations on CIs that are not retired.
    pub installs: i64,
}

/// A CI and every package installed on it, by name: what an SBOM describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiInventory {
    pub ci_id: i64,
    pub class: String,
    pub name: String,
    pub hostname: Option<String>,
    /// The `os_name` attribute (os-release `NAME`, e.g. `Debian GNU/Linux`).
    pub os_name: Option<String>,
    pub os_version: Option<String>,
    /// (catalog id, package), by name then catalog id.
    pub packages: Vec<(i64, InstalledSoftware)>,
}

/// One history row: a change to a CI.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRecord {
    /// The change's position in the change feed (commit order).
    pub id: i64,
    pub ci_id: i64,
    pub at: OffsetDateTime,
    /// A [`crate::store::ChangeKind`] name.
    pub kind: String,
    pub field: Option<String>,
    pub old: Value,
    pub new: Value,
    /// `agent:<id>`, `import:<token name>`, `api:<token name>` or `collector`.
    pub source: String,
}

/// A page of one CI's history, newest first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistoryQuery {
    /// Only these kinds (empty: every kind).
    pub kinds: Vec<crate::store::ChangeKind>,
    /// Only changes made at or after this time.
    pub from: Option<OffsetDateTime>,
    /// Only changes made at or before this time.
    pub to: Option<OffsetDateTime>,
    /// Only changes older than this one (the cursor).
    pub before: Option<i64>,
    pub limit: u32,
}

/// What `POST /api/v1/import` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOutcome {
    pub ci_id: i64,
    pub created: bool,
    /// The rule that matched, or `new`.
    pub identified_by: String,
}

/// An installed package the CI list filters on: exact name, and exact version if given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoftwareMatch {
    pub name: String,
    pub version: Option<String>,
}

/// The order of the CI list: a key, ascending or descending, with the id breaking ties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CiSort {
    pub key: CiSortKey,
    pub descending: bool,
}

/// What the CI list can be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CiSortKey {
    #[default]
    Id,
    Name,
    Hostname,
    OsName,
    OsVersion,
    Vendor,
    Model,
    Serial,
    Criticality,
    LastSeen,
    FirstSeen,
    Class,
    Status,
}

impl CiSortKey {
    pub const ALL: [CiSortKey; 13] = [
        CiSortKey::Id,
        CiSortKey::Name,
        CiSortKey::Hostname,
        CiSortKey::OsName,
        CiSortKey::OsVersion,
        CiSortKey::Vendor,
        CiSortKey::Model,
        CiSortKey::Serial,
        CiSortKey::Criticality,
        CiSortKey::LastSeen,
        CiSortKey::FirstSeen,
        CiSortKey::Class,
        CiSortKey::Status,
    ];

    /// The key's name in the API (`sort=`).
    pub fn as_str(self) -> &'static str {
        match self {
            CiSortKey::Id => "id",
            CiSortKey::Name => "name",
            CiSortKey::Hostname => "hostname",
            CiSortKey::OsName => "os_name",
            CiSortKey::OsVersion => "os_version",
            CiSortKey::Vendor => "vendor",
            CiSortKey::Model => "model",
            CiSortKey::Serial => "serial",
            CiSortKey::Criticality => "criticality",
            CiSortKey::LastSeen => "last_seen",
            CiSortKey::FirstSeen => "first_seen",
            CiSortKey::Class => "class",
            CiSortKey::Status => "status",
        }
    }

    pub fn from_name(name: &str) -> Option<CiSortKey> {
        CiSortKey::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The kind of value the key has: the attribute keys are text and absent on some CIs
    /// (a filesystem has no hostname), the others are always present.
    pub fn kind(self) -> SortKind {
        match self {
            CiSortKey::Id | CiSortKey::Criticality | CiSortKey::LastSeen | CiSortKey::FirstSeen => {
                SortKind::Integer
            }
            CiSortKey::Name | CiSortKey::Class | CiSortKey::Status => SortKind::Text,
            CiSortKey::Hostname
            | CiSortKey::OsName
            | CiSortKey::OsVersion
            | CiSortKey::Vendor
            | CiSortKey::Model
            | CiSortKey::Serial => SortKind::NullableText,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKind {
    Integer,
    Text,
    NullableText,
}

impl SortKind {
    /// Whether a sort key of this kind can have `value`.
    pub fn admits(self, value: &SortValue) -> bool {
        matches!(
            (self, value),
            (SortKind::Integer, SortValue::Integer(_))
                | (SortKind::Text | SortKind::NullableText, SortValue::Text(_))
                | (SortKind::NullableText, SortValue::Null)
        )
    }
}

/// The value of a sort key on one CI. Times are unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortValue {
    Null,
    Integer(i64),
    Text(String),
}

/// A place in the sorted CI list: the sort key value and id of the last CI of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiPosition {
    pub key: SortValue,
    pub id: i64,
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

/// An incident as the API shows it and webhooks send it (without the timeline in lists and
/// webhook payloads). Times are RFC 3339 UTC.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Incident {
    pub id: i64,
    /// `INC-000001`.
    pub number: String,
    pub ci_id: i64,
    /// The CI's current name; null when the CI was deleted.
    pub ci_name: Option<String>,
    /// Null when the rule was deleted; `rule_name` and `metric` stay.
    pub rule_id: Option<i64>,
    pub rule_name: String,
    pub metric: String,
    /// The mount of a per-filesystem rule, else `""`.
    pub dimension: String,
    pub title: String,
    pub description: String,
    /// `new`, `acknowledged`, `in_progress`, `resolved` or `closed`.
    pub state: String,
    /// The rule's severity when the incident opened.
    pub severity: String,
    /// `P1` (most urgent) to `P5`.
    pub priority: String,
    /// `high`, `medium` or `low`.
    pub impact: String,
    pub urgency: String,
    /// Why an operator set the priority by hand; null when it comes from the matrix.
    pub priority_reason: Option<String>,
    pub assignee: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub opened_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub acknowledged_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub resolved_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub closed_at: Option<OffsetDateTime>,
    /// When acknowledging meets the response target.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub response_due_at: OffsetDateTime,
    /// When resolving meets the resolution target.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub resolve_due_at: OffsetDateTime,
    /// Acknowledged after `response_due_at`, or not yet acknowledged and past it.
    pub response_breached: bool,
    /// Resolved after `resolve_due_at`, or not yet resolved and past it.
    pub resolve_breached: bool,
    /// Times the incident was reopened.
    pub reopen_count: i64,
    pub resolution: Option<String>,
    /// `collector` for an automatic resolve, `api:<token name>` for an operator's.
    pub resolved_by: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

/// One entry of an incident's timeline.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct IncidentEvent {
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    /// `opened`, `breached`, `recovering`, `resolved`, `reopened`, `acknowledged`,
    /// `assigned`, `note`, `closed`, `priority_changed`, `held_by_maintenance`.
    pub kind: String,
    /// `collector` or `api:<token name>`.
    pub actor: String,
    /// Values seen, notes, the old and new assignee or priority.
    #[schema(value_type = Object)]
    pub detail: Value,
}

/// An incident with its timeline, oldest event first.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct IncidentDetail {
    #[serde(flatten)]
    pub incident: Incident,
    pub timeline: Vec<IncidentEvent>,
}

/// A threshold rule as an admin gives it: a new rule (`POST /api/v1/rules`), or a stored rule
/// with a patch applied. `store::rules::validate` checks it whole.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSpec {
    pub name: String,
    pub metric: crate::incidents::rules::Metric,
    pub dimension: Option<String>,
    pub scope: crate::incidents::scope::Scope,
    pub operator: crate::incidents::rules::Operator,
    pub threshold: f64,
    pub for_ms: i64,
    pub clear_threshold: Option<f64>,
    pub clear_for_ms: i64,
    pub severity: crate::incidents::rules::Severity,
    pub enabled: bool,
}

/// Changes to a rule (`PATCH /api/v1/rules/{id}`); `None` leaves a field as it is,
/// `Some(None)` clears `dimension` or `clear_threshold`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RulePatch {
    pub name: Option<String>,
    pub metric: Option<crate::incidents::rules::Metric>,
    pub dimension: Option<Option<String>>,
    pub scope: Option<crate::incidents::scope::Scope>,
    pub operator: Option<crate::incidents::rules::Operator>,
    pub threshold: Option<f64>,
    pub for_ms: Option<i64>,
    pub clear_threshold: Option<Option<f64>>,
    pub clear_for_ms: Option<i64>,
    pub severity: Option<crate::incidents::rules::Severity>,
    pub enabled: Option<bool>,
}

/// Filters of the rule list. Every present filter must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleFilter {
    pub enabled: Option<bool>,
    pub metric: Option<crate::incidents::rules::Metric>,
    /// Only rules with an id above this (the cursor).
    pub after: Option<i64>,
    pub limit: u32,
}

/// A maintenance window: while `starts_at <= now < ends_at`, no incident opens for a CI its
/// scope matches.
#[derive(Debug, Clone, PartialEq)]
pub struct MaintenanceWindow {
    pub id: i64,
    pub scope: crate::incidents::scope::Scope,
    pub starts_at: OffsetDateTime,
    pub ends_at: OffsetDateTime,
    pub reason: String,
    /// `api:<token name>`.
    pub created_by: String,
    pub created_at: OffsetDateTime,
}

impl MaintenanceWindow {
    /// Whether the window holds incidents back at `now`.
    pub fn active_at(&self, now: OffsetDateTime) -> bool {
        self.starts_at <= now && now < self.ends_at
    }
}

/// A maintenance window an operator makes (`POST /api/v1/maintenance`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewMaintenance {
    pub scope: crate::incidents::scope::Scope,
    pub starts_at: OffsetDateTime,
    pub ends_at: OffsetDateTime,
    pub reason: String,
}

/// Changes to a maintenance window; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MaintenancePatch {
    /// At or before now: the window ends now.
    pub ends_at: Option<OffsetDateTime>,
    pub reason: Option<String>,
    pub scope: Option<crate::incidents::scope::Scope>,
}

/// Filters of the maintenance window list. Every present filter must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceFilter {
    /// Whether the window holds incidents back at the collector's now.
    pub active: Option<bool>,
    /// Only windows whose scope matches this CI.
    pub ci_id: Option<i64>,
    /// Only windows with an id above this (the cursor).
    pub after: Option<i64>,
    pub limit: u32,
}
/// Filters and position of the incident list, newest first. Every present filter must match
/// (AND); a list filter matches any of its values.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    /// States (`new` .. `closed`); empty: any.
    pub states: Vec<String>,
    /// Priorities 1..5; empty: any.
    pub priorities: Vec<i64>,
    /// Severities (`critical` .. `low`); empty: any.
    pub severities: Vec<String>,
    pub ci_id: Option<i64>,
    pub rule_id: Option<i64>,
    /// Opened at or after this time.
    pub opened_since: Option<OffsetDateTime>,
    /// Opened before this time.
    pub opened_before: Option<OffsetDateTime>,
    /// `Some(true)`: the response or resolution target is breached now; `Some(false)`: neither.
    pub breached: Option<bool>,
    /// Only incidents with an id below this one (the last id of the previous page).
    pub before: Option<i64>,
    pub limit: u32,
}

/// What an operator does to an incident (`POST /api/v1/incidents/{id}/<action>`). The texts
/// are checked by the caller (length, not blank).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncidentAction {
    /// `new` to `acknowledged`.
    Acknowledge { note: Option<String> },
    /// Any open state to `in_progress` with this assignee; acknowledges a `new` one too.
    Assign { assignee: String },
    /// A note on the timeline, in any state.
    Note { text: String },
    /// Any open state to `resolved`.
    Resolve { resolution: String },
    /// `resolved` to `closed`, which is final.
    Close { note: Option<String> },
    /// `resolved` to `new`.
    Reopen { reason: String },
    /// A priority (1..5) set by hand on an open incident; the due times follow it.
    Priority { priority: i64, reason: String },
}

/// Incident figures over a time range (`GET /api/v1/kpis`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Kpis {
    /// Start of the range (inclusive).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub from: OffsetDateTime,
    /// End of the range (exclusive).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub to: OffsetDateTime,
    /// Incidents open now (`new`, `acknowledged`, `in_progress`), by priority; whatever the range.
    pub open_by_priority: OpenByPriority,
    /// Incidents opened in the range.
    pub opened: i64,
    /// Incidents whose (current) resolution time is in the range.
    pub resolved: i64,
    /// Mean time from opening to acknowledgement of the incidents opened in the range and
    /// acknowledged; null when there is none.
    #[schema(required = true)]
    pub mtta_seconds: Option<f64>,
    /// Mean time from opening to (current) resolution of the incidents opened in the range and
    /// resolved; null when there is none.
    #[schema(required = true)]
    pub mttr_seconds: Option<f64>,
    pub sla: SlaCompliance,
    /// The CIs with the most incidents opened in the range, at most 10.
    pub top_cis: Vec<KpiCi>,
    /// The rules with the most incidents opened in the range, at most 10.
    pub top_rules: Vec<KpiRule>,
}

/// Counts of open incidents per priority.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct OpenByPriority {
    #[serde(rename = "P1")]
    pub p1: i64,
    #[serde(rename = "P2")]
    pub p2: i64,
    #[serde(rename = "P3")]
    pub p3: i64,
    #[serde(rename = "P4")]
    pub p4: i64,
    #[serde(rename = "P5")]
    pub p5: i64,
}

/// Service-level compliance of the incidents opened in the range whose outcome is decided,
/// in percent rounded to two decimals; null when none is decided.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct SlaCompliance {
    /// Acknowledged (or resolved) by `response_due_at`, of those acknowledged, resolved or past
    /// that time.
    #[schema(required = true)]
    pub response_met_percent: Option<f64>,
    /// Resolved by `resolve_due_at`, of those resolved or past that time.
    #[schema(required = true)]
    pub resolution_met_percent: Option<f64>,
    /// Both targets met, of those with both outcomes decided or with either target breached.
    #[schema(required = true)]
    pub compliance_percent: Option<f64>,
}

/// A CI and how many incidents it had.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct KpiCi {
    pub ci_id: i64,
    /// Null when the CI was deleted.
    #[schema(required = true)]
    pub ci_name: Option<String>,
    pub incidents: i64,
}

/// A rule and how many incidents it opened.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct KpiRule {
    /// Null when the rule was deleted (its incidents are then counted by their `rule_name`).
    #[schema(required = true)]
    pub rule_id: Option<i64>,
    /// The rule's current name, or the name its incidents kept.
    pub rule_name: String,
    pub incidents: i64,
}

/// A webhook subscription as the admin API shows it: never its secret. The counts and the
/// last error and delivery are read from its outbox rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub id: i64,
    pub url: String,
    /// Subscribed events, in the order of `store::webhooks::EVENTS`.
    pub events: Vec<String>,
    pub enabled: bool,
    pub description: Option<String>,
    /// `api:<token name>`.
    pub created_by: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// Deliveries waiting for their first or next attempt.
    pub pending: i64,
    /// Deliveries that gave up after the last attempt.
    pub failed: i64,
    /// The error of the newest attempt that failed, among deliveries whose last attempt failed.
    pub last_error: Option<String>,
    pub last_failure_at: Option<OffsetDateTime>,
    pub last_delivered_at: Option<OffsetDateTime>,
}

/// A webhook to create; the caller has checked every field (`api::webhooks`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewWebhook {
    pub url: String,
    pub events: Vec<String>,
    pub secret: String,
    pub enabled: bool,
    pub description: Option<String>,
}

/// Changes to a webhook; `None` leaves a field as it is. Checked by the caller.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WebhookPatch {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub enabled: Option<bool>,
    /// `Some(None)` clears it.
    pub description: Option<Option<String>>,
    /// A new signing secret.
    pub secret: Option<String>,
}

/// One outbox row: an event for one webhook, and how its delivery went.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookDelivery {
    pub id: i64,
    pub webhook_id: i64,
    pub event: String,
    pub incident_id: Option<i64>,
    pub created_at: OffsetDateTime,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i64,
    /// When the next attempt is due; only while `pending`.
    pub next_attempt_at: Option<OffsetDateTime>,
    pub last_attempt_at: Option<OffsetDateTime>,
    /// The HTTP status of the last attempt; none when it got no answer.
    pub last_status: Option<i64>,
    /// Why the last attempt failed; none after a success.
    pub last_error: Option<String>,
    pub delivered_at: Option<OffsetDateTime>,
}

/// A page of one webhook's deliveries, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryFilter {
    pub webhook_id: i64,
    /// `pending`, `delivered` or `failed`; checked by the caller.
    pub state: Option<String>,
    /// Only deliveries with an id below this (the cursor).
    pub before: Option<i64>,
    pub limit: u32,
}

/// A delivery due now, with what sending it needs.
#[derive(Clone, PartialEq)]
pub struct DueDelivery {
    pub id: i64,
    pub webhook_id: i64,
    pub event: String,
    /// The exact body to sign and send.
    pub payload: String,
    /// Attempts made so far.
    pub attempts: i64,
    pub url: String,
    pub secret: String,
}

impl std::fmt::Debug for DueDelivery {
    // The secret stays out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DueDelivery")
            .field("id", &self.id)
            .field("webhook_id", &self.webhook_id)
            .field("event", &self.event)
            .field("attempts", &self.attempts)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The outcome of one attempt, as the delivery task decided it: the row's new state.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryAttempt {
    pub id: i64,
    /// The row's `attempts` when it was read; the write is skipped if it changed since.
    pub attempts_before: i64,
    pub at: OffsetDateTime,
    /// `delivered`, `pending` (to retry at `next_attempt_at`) or `failed`.
    pub state: &'static str,
    pub next_attempt_at: OffsetDateTime,
    pub status: Option<u16>,
    pub error: Option<String>,
}
