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
    pub software: InstalledSoftware,
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
