//! History: every change to a CI is one row of `history`, written in the transaction that
//! makes the change, with the time and the source of the change.
//!
//! **Promises:** a write path that changes a CI records it here through a [`Recorder`]; rows
//! are never updated or deleted, so `history.id` orders every change in commit order (the
//! change feed's cursor) and the state of a CI at any time is its current state with the later
//! rows undone (`ci_at`, `software_at`).

use rusqlite::{Connection, params};
use serde_json::Value;

use super::StoreError;

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An inventory from this agent.
    Agent(String),
    /// An inventory posted to `POST /api/v1/import`.
    Import,
    /// An admin API call with the token of this name.
    Api(String),
    /// The collector itself (a computer going stale).
    Collector,
}

impl Source {
    /// The text stored in `history.source`: `agent:<id>`, `import`, `api:<token name>`,
    /// `collector`.
    pub fn as_text(&self) -> String {
        match self {
            Source::Agent(id) => format!("agent:{id}"),
            Source::Import => "import".to_owned(),
            Source::Api(name) => format!("api:{name}"),
            Source::Collector => "collector".to_owned(),
        }
    }
}

/// What a history row records. `field`, `old` and `new` mean, per kind:
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// The CI was created: new = `{class, name}`.
    Created,
    /// An attribute: field = its key, old/new = its values (null when absent).
    AttributeChanged,
    /// The name: old/new = the names.
    Renamed,
    /// The status (`active`, `stale`, `retired`): old/new.
    StatusChanged,
    /// The criticality: old/new (1 to 4).
    CriticalityChanged,
    /// The rule that identified the CI's latest inventory: old/new = the rule names.
    Reidentified,
    /// A package installed: field = name, new = `{name, version, arch, source, vendor}`.
    SoftwareAdded,
    /// A package removed: field = name, old = the package.
    SoftwareRemoved,
    /// A package at a newer version: field = name, old/new = the packages.
    SoftwareUpgraded,
    /// A package at an older version: field = name, old/new = the packages.
    SoftwareDowngraded,
    /// A part (filesystem, network interface) appeared: field = `class:key`, new =
    /// `{ci_id, class, key}`.
    PartAdded,
    /// A part went: field = `class:key`, old = `{ci_id, class, key}`.
    PartRemoved,
    /// A relationship made, recorded on both ends: field = its type, new = `{type, source,
    /// target}`.
    RelationshipAdded,
    /// A relationship ended, recorded on both ends: field = its type, old = the relationship.
    RelationshipRemoved,
    /// Another agent now reports this computer: old/new = the agent ids.
    AgentChanged,
    /// The CI was deleted by an admin: old = `{class, name}`.
    Deleted,
}

impl ChangeKind {
    pub const ALL: &'static [ChangeKind] = &[
        ChangeKind::Created,
        ChangeKind::AttributeChanged,
        ChangeKind::Renamed,
        ChangeKind::StatusChanged,
        ChangeKind::CriticalityChanged,
        ChangeKind::Reidentified,
        ChangeKind::SoftwareAdded,
        ChangeKind::SoftwareRemoved,
        ChangeKind::SoftwareUpgraded,
        ChangeKind::SoftwareDowngraded,
        ChangeKind::PartAdded,
        ChangeKind::PartRemoved,
        ChangeKind::RelationshipAdded,
        ChangeKind::RelationshipRemoved,
        ChangeKind::AgentChanged,
        ChangeKind::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::AttributeChanged => "attribute_changed",
            ChangeKind::Renamed => "renamed",
            ChangeKind::StatusChanged => "status_changed",
            ChangeKind::CriticalityChanged => "criticality_changed",
            ChangeKind::Reidentified => "reidentified",
            ChangeKind::SoftwareAdded => "software_added",
            ChangeKind::SoftwareRemoved => "software_removed",
            ChangeKind::SoftwareUpgraded => "software_upgraded",
            ChangeKind::SoftwareDowngraded => "software_downgraded",
            ChangeKind::PartAdded => "part_added",
            ChangeKind::PartRemoved => "part_removed",
            ChangeKind::RelationshipAdded => "relationship_added",
            ChangeKind::RelationshipRemoved => "relationship_removed",
            ChangeKind::AgentChanged => "agent_changed",
            ChangeKind::Deleted => "deleted",
        }
    }

    pub fn parse(text: &str) -> Option<ChangeKind> {
        ChangeKind::ALL.iter().copied().find(|k| k.as_str() == text)
    }
}

/// Writes history rows for the changes of one transaction, all with one time and source.
pub(crate) struct Recorder<'c> {
    conn: &'c Connection,
    ts: i64,
    source: String,
}

impl<'c> Recorder<'c> {
    /// `ts` in unix milliseconds.
    pub(crate) fn new(conn: &'c Connection, ts: i64, source: &Source) -> Recorder<'c> {
        Recorder {
            conn,
            ts,
            source: source.as_text(),
        }
    }

    pub(crate) fn record(
        &self,
        ci_id: i64,
        kind: ChangeKind,
        field: Option<&str>,
        old: Option<&Value>,
        new: Option<&Value>,
    ) -> Result<(), StoreError> {
        let json = |v: Option<&Value>| v.map(Value::to_string);
        self.conn
            .prepare_cached(
                "INSERT INTO history (ci_id, ts, kind, field, old, new, source)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                ci_id,
                self.ts,
                kind.as_str(),
                field,
                json(old),
                json(new),
                self.source
            ])?;
        Ok(())
    }

    /// Records the change of a plain value (`Renamed`, `StatusChanged`, ...) when it changed.
    pub(crate) fn changed(
        &self,
        ci_id: i64,
        kind: ChangeKind,
        old: &Value,
        new: &Value,
    ) -> Result<(), StoreError> {
        if old != new {
            self.record(ci_id, kind, None, Some(old), Some(new))?;
        }
        Ok(())
    }

    /// Records one `AttributeChanged` row per key whose value differs between two attribute
    /// objects (a key absent on one side is null there).
    pub(crate) fn attributes(&self, ci_id: i64, old: &Value, new: &Value) -> Result<(), StoreError> {
        let empty = serde_json::Map::new();
        let old = old.as_object().unwrap_or(&empty);
        let new = new.as_object().unwrap_or(&empty);
        let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            let (before, after) = (old.get(key), new.get(key));
            if before != after {
                self.record(
                    ci_id,
                    ChangeKind::AttributeChanged,
                    Some(key),
                    Some(before.unwrap_or(&Value::Null)),
                    Some(after.unwrap_or(&Value::Null)),
                )?;
            }
        }
        Ok(())
    }

    /// Records a relationship made or ended on both of its ends.
    pub(crate) fn relationship(
        &self,
        added: bool,
        kind: &str,
        source: i64,
        target: i64,
    ) -> Result<(), StoreError> {
        let rel = serde_json::json!({ "type": kind, "source": source, "target": target });
        let (change, old, new) = if added {
            (ChangeKind::RelationshipAdded, None, Some(&rel))
        } else {
            (ChangeKind::RelationshipRemoved, Some(&rel), None)
        };
        self.record(source, change, Some(kind), old, new)?;
        if target != source {
            self.record(target, change, Some(kind), old, new)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        for kind in ChangeKind::ALL {
            assert_eq!(ChangeKind::parse(kind.as_str()), Some(*kind));
        }
        assert_eq!(ChangeKind::parse("nope"), None);
    }
}
