//! Applying one inventory to the CMDB: identify the computer, create or update its CI, its
//! identity keys, its parts and its software, and write a history row for every change. The
//! one path for an agent's inventory (`ingest.rs`) and an imported one (`import`).
//!
//! **Promises:**
//! - Runs inside the caller's write transaction: all of it is stored, or none.
//! - Every change is a history row with the caller's time and source; an inventory that changes
//!   nothing writes none. The first inventory of a new CI writes `created`, its parts and
//!   relationships, but not one `software_added` row per package: the packages a CI was created
//!   with are its initial state, which time travel reaches by undoing the later rows.
//! - A stale or retired CI that an inventory identifies comes back `active`, with a
//!   `status_changed` row saying so.
//! - Facets listed in `inventory.incomplete` keep what was stored for them (attributes, name,
//!   parts, software, identity keys). An identity key the inventory does not know (a serial the
//!   agent could not read this time) keeps its stored value: unknown is not a change.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use census_common::{Inventory, Software};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};

use super::StoreError;
use super::history::{ChangeKind, Recorder};
use crate::cmdb::{
    self, CLASS_COMPUTER, Candidates, ExistingPart, IDENTIFIED_NEW, IdentifyRule, IdentityKeys,
    Placeholders, REL_CONTAINS, SoftwareKey, diff_parts,
};

/// `identified_by` of a part CI: found by its computer and its part key.
const PART_IDENTITY: &str = "part_key";

/// What applying an inventory did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Applied {
    pub ci_id: i64,
    pub created: bool,
    /// The rule that matched, `None` when the CI was created.
    pub rule: Option<IdentifyRule>,
}

impl Applied {
    /// The `identified_by` text: the rule's name, or `new`.
    pub fn identified_by(&self) -> &'static str {
        self.rule.map_or(IDENTIFIED_NEW, IdentifyRule::name)
    }
}

/// The store's side of the identification rules: `ci_key` rows of computer CIs.
struct StoreCandidates<'c> {
    conn: &'c Connection,
}

impl Candidates for StoreCandidates<'_> {
    type Error = StoreError;

    fn with_key(&mut self, kind: &str, value: &str) -> Result<Vec<i64>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT ci_id FROM ci_key WHERE kind = ?1 AND value = ?2")?
            .query_map([kind, value], |r| r.get(0))?
            .collect::<Result<_, _>>()?)
    }

    fn keys_of(&mut self, ci_id: i64) -> Result<(IdentityKeys, bool), StoreError> {
        let active = self
            .conn
            .prepare_cached("SELECT status = 'active' FROM ci WHERE id = ?1")?
            .query_row([ci_id], |r| r.get(0))
            .optional()?
            .unwrap_or(false);
        Ok((stored_keys(self.conn, ci_id)?, active))
    }
}

fn stored_keys(conn: &Connection, ci_id: i64) -> Result<IdentityKeys, StoreError> {
    let rows: Vec<(String, String)> = conn
        .prepare_cached("SELECT kind, value FROM ci_key WHERE ci_id = ?1")?
        .query_map([ci_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(IdentityKeys::from_rows(
        rows.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    ))
}

/// Identifies the computer an inventory describes (without changing anything).
pub(crate) fn identify(
    conn: &Connection,
    placeholders: &Placeholders,
    inv: &Inventory,
) -> Result<Option<cmdb::Identified>, StoreError> {
    let keys = IdentityKeys::of(inv, placeholders);
    cmdb::identify(&mut StoreCandidates { conn }, &keys)
}

/// The stored row of a computer CI this code updates.
struct StoredCi {
    name: String,
    status: String,
    identified_by: Option<String>,
    attributes: Value,
}

fn stored_ci(conn: &Connection, ci_id: i64) -> Result<StoredCi, StoreError> {
    let (name, status, identified_by, attributes): (String, String, Option<String>, String) = conn
        .prepare_cached("SELECT name, status, identified_by, attributes FROM ci WHERE id = ?1")?
        .query_row([ci_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
    let attributes = serde_json::from_str(&attributes)
        .map_err(|e| StoreError::Corrupt(format!("attributes of ci {ci_id}: {e}")))?;
    Ok(StoredCi {
        name,
        status,
        identified_by,
        attributes,
    })
}

/// Sets a CI that is not active back to active, with a history row. Answers whether it did.
pub(crate) fn reactivate(
    conn: &Connection,
    rec: &Recorder<'_>,
    ci_id: i64,
) -> Result<bool, StoreError> {
    let status: Option<String> = conn
        .prepare_cached("SELECT status FROM ci WHERE id = ?1")?
        .query_row([ci_id], |r| r.get(0))
        .optional()?;
    match status {
        Some(status) if status != "active" => {
            conn.prepare_cached("UPDATE ci SET status = 'active' WHERE id = ?1")?
                .execute([ci_id])?;
            rec.changed(
                ci_id,
                ChangeKind::StatusChanged,
                &json!(status),
                &json!("active"),
            )?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Applies a normalised inventory in full: identification, the CI, its keys, parts and
/// software. `found` is the identification result (the caller may have run it already).
pub(crate) fn apply(
    conn: &Connection,
    rec: &Recorder<'_>,
    placeholders: &Placeholders,
    inv: &Inventory,
    found: Option<cmdb::Identified>,
    known: &KnownIds,
    now: i64,
) -> Result<Applied, StoreError> {
    let mut keys = IdentityKeys::of(inv, placeholders);
    let mut name = cmdb::computer_name(inv);
    let mut attributes = cmdb::computer_attributes(inv);
    let applied =
        match found {
            Some(found) => {
                let stored = stored_ci(conn, found.ci_id)?;
                // Facets the agent could not learn this time keep what was stored for them.
                if !inv.incomplete.is_empty() {
                    cmdb::keep_incomplete_attributes(
                        &mut attributes,
                        &stored.attributes,
                        &inv.incomplete,
                    );
                    if inv.incomplete.iter().any(|f| f == "host") {
                        name = stored.name.clone();
                    }
                }
                let rule = found.rule.name();
                conn.prepare_cached(
                    "UPDATE ci SET name = ?2, attributes = ?3, status = 'active', last_seen = ?4,
                               identified_by = ?5
                 WHERE id = ?1",
                )?
                .execute(params![
                    found.ci_id,
                    name,
                    attributes.to_string(),
                    now,
                    rule
                ])?;
                rec.changed(
                    found.ci_id,
                    ChangeKind::Renamed,
                    &json!(stored.name),
                    &json!(name),
                )?;
                rec.attributes(found.ci_id, &stored.attributes, &attributes)?;
                rec.changed(
                    found.ci_id,
                    ChangeKind::StatusChanged,
                    &json!(stored.status),
                    &json!("active"),
                )?;
                rec.changed(
                    found.ci_id,
                    ChangeKind::Reidentified,
                    &json!(stored.identified_by),
                    &json!(rule),
                )?;
                keys.keep_unknown_from(&stored_keys(conn, found.ci_id)?);
                Applied {
                    ci_id: found.ci_id,
                    created: false,
                    rule: Some(found.rule),
                }
            }
            None => {
                let ci_id: i64 = conn
                .prepare_cached(
                    "INSERT INTO ci (class, name, attributes, identified_by, first_seen, last_seen)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5) RETURNING id",
                )?
                .query_row(
                    params![CLASS_COMPUTER, name, attributes.to_string(), IDENTIFIED_NEW, now],
                    |r| r.get(0),
                )?;
                rec.record(
                    ci_id,
                    ChangeKind::Created,
                    None,
                    None,
                    Some(&json!({ "class": CLASS_COMPUTER, "name": name })),
                )?;
                Applied {
                    ci_id,
                    created: true,
                    rule: None,
                }
            }
        };
    store_keys(conn, applied.ci_id, &keys)?;
    apply_parts(conn, rec, applied.ci_id, inv, now)?;
    apply_software(conn, rec, applied.ci_id, inv, known, now, applied.created)?;
    Ok(applied)
}

/// Replaces the CI's identity keys.
fn store_keys(conn: &Connection, ci_id: i64, keys: &IdentityKeys) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM ci_key WHERE ci_id = ?1")?
        .execute([ci_id])?;
    let mut insert = conn
        .prepare_cached("INSERT OR IGNORE INTO ci_key (kind, value, ci_id) VALUES (?1, ?2, ?3)")?;
    for (kind, value) in keys.rows() {
        insert.execute(params![kind, value, ci_id])?;
    }
    Ok(())
}

fn part_ref(part_id: i64, class: &str, key: &str) -> Value {
    json!({ "ci_id": part_id, "class": class, "key": key })
}

fn apply_parts(
    conn: &Connection,
    rec: &Recorder<'_>,
    ci_id: i64,
    inv: &Inventory,
    now: i64,
) -> Result<(), StoreError> {
    let existing = conn
        .prepare_cached(
            "SELECT id, class, part_key, name, status, attributes FROM ci WHERE parent_id = ?1",
        )?
        .query_map([ci_id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
            ))
        })?
        .map(|row| {
            let (id, class, key, name, status, attributes) = row?;
            let attributes = serde_json::from_str(&attributes)
                .map_err(|e| StoreError::Corrupt(format!("attributes of ci {id}: {e}")))?;
            Ok(ExistingPart {
                id,
                class,
                key,
                name,
                status,
                attributes,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    // Parts of a list facet the agent could not learn this time are left as they are.
    let unknown = cmdb::incomplete_part_classes(&inv.incomplete);
    let existing: Vec<ExistingPart> = existing
        .into_iter()
        .filter(|part| !unknown.contains(&part.class.as_str()))
        .collect();
    let by_id: HashMap<i64, &ExistingPart> = existing.iter().map(|p| (p.id, p)).collect();

    let plan = diff_parts(&existing, cmdb::part_specs(inv));
    let mut relate = conn.prepare_cached(
        "INSERT INTO relationship (type, source_id, target_id, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (source_id, type, target_id) DO NOTHING",
    )?;
    for spec in plan.create {
        let part_id: i64 = conn
            .prepare_cached(
                "INSERT INTO ci (class, name, attributes, identified_by, parent_id, part_key,
                                 first_seen, last_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) RETURNING id",
            )?
            .query_row(
                params![
                    spec.class,
                    spec.name,
                    spec.attributes.to_string(),
                    PART_IDENTITY,
                    ci_id,
                    spec.key,
                    now
                ],
                |r| r.get(0),
            )?;
        relate.execute(params![REL_CONTAINS, ci_id, part_id, now])?;
        rec.record(
            part_id,
            ChangeKind::Created,
            None,
            None,
            Some(&json!({ "class": spec.class, "name": spec.name })),
        )?;
        let field = format!("{}:{}", spec.class, spec.key);
        let part = part_ref(part_id, spec.class, &spec.key);
        rec.record(
            ci_id,
            ChangeKind::PartAdded,
            Some(&field),
            None,
            Some(&part),
        )?;
        rec.relationship(true, REL_CONTAINS, ci_id, part_id)?;
    }
    for update in plan.update {
        conn.prepare_cached(
            "UPDATE ci SET name = ?2, attributes = ?3, status = 'active', last_seen = ?4
             WHERE id = ?1",
        )?
        .execute(params![
            update.id,
            update.spec.name,
            update.spec.attributes.to_string(),
            now
        ])?;
        if let Some(old) = by_id.get(&update.id) {
            rec.changed(
                update.id,
                ChangeKind::Renamed,
                &json!(old.name),
                &json!(update.spec.name),
            )?;
            rec.attributes(update.id, &old.attributes, &update.spec.attributes)?;
            rec.changed(
                update.id,
                ChangeKind::StatusChanged,
                &json!(old.status),
                &json!("active"),
            )?;
        }
        if update.reactivate {
            relate.execute(params![REL_CONTAINS, ci_id, update.id, now])?;
            let field = format!("{}:{}", update.spec.class, update.spec.key);
            let part = part_ref(update.id, update.spec.class, &update.spec.key);
            rec.record(
                ci_id,
                ChangeKind::PartAdded,
                Some(&field),
                None,
                Some(&part),
            )?;
            rec.relationship(true, REL_CONTAINS, ci_id, update.id)?;
        }
    }
    let mut touch = conn.prepare_cached("UPDATE ci SET last_seen = ?2 WHERE id = ?1")?;
    for id in plan.unchanged {
        touch.execute(params![id, now])?;
    }
    for id in plan.retire {
        conn.prepare_cached("UPDATE ci SET status = 'retired' WHERE id = ?1")?
            .execute([id])?;
        conn.prepare_cached(
            "DELETE FROM relationship WHERE source_id = ?1 AND type = ?2 AND target_id = ?3",
        )?
        .execute(params![ci_id, REL_CONTAINS, id])?;
        if let Some(old) = by_id.get(&id) {
            rec.changed(
                id,
                ChangeKind::StatusChanged,
                &json!(old.status),
                &json!("retired"),
            )?;
            let field = format!("{}:{}", old.class, old.key);
            let part = part_ref(id, &old.class, &old.key);
            rec.record(
                ci_id,
                ChangeKind::PartRemoved,
                Some(&field),
                Some(&part),
                None,
            )?;
            rec.relationship(false, REL_CONTAINS, ci_id, id)?;
        }
    }
    Ok(())
}

/// The catalog ids of one inventory's packages that were already committed, found before the
/// writer job (`Store::known_catalog`), so the single writer thread is spared one index lookup
/// per package. Positional: entry `i` is the id of the inventory's `i`-th package, `None` when
/// the writer has to look it up (a new catalog row, or a vendor to record). The catalog is
/// never pruned, so a committed id stays valid.
pub(crate) type KnownIds = [Option<i64>];

/// The catalog keys of `inv`'s packages, each with whether the report names a vendor; none
/// when the agent could not learn its software.
pub(crate) fn package_keys(inv: &Inventory) -> Vec<(SoftwareKey, bool)> {
    if inv.incomplete.iter().any(|f| f == "software") {
        return Vec::new();
    }
    inv.software
        .iter()
        .map(|sw| (SoftwareKey::of(sw), sw.vendor.is_some()))
        .collect()
}

/// Looks up catalog rows by key on a read connection: each found key with its id and whether
/// its vendor is known.
fn lookup_catalog(
    conn: &Connection,
    keys: &[SoftwareKey],
) -> Result<Vec<(SoftwareKey, i64, bool)>, StoreError> {
    let mut lookup = conn.prepare_cached(
        "SELECT id, vendor IS NOT NULL FROM software
         WHERE name = ?1 AND version = ?2 AND arch = ?3 AND source = ?4",
    )?;
    let mut found = Vec::with_capacity(keys.len());
    for key in keys {
        if let Some((id, vendor_known)) = lookup
            .query_row(params![key.name, key.version, key.arch, key.source], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?
        {
            found.push((key.clone(), id, vendor_known));
        }
    }
    Ok(found)
}

/// The most catalog entries [`CatalogCache`] keeps (about 100 bytes each).
const CATALOG_CACHE_MAX: usize = 1_000_000;

/// Catalog ids seen committed, shared by every ingest so that a known package costs a hash
/// lookup instead of an index lookup. An entry stays true: the catalog is never pruned and a
/// committed row's id never changes. Only whether its vendor is known can change (from no to
/// yes, by the writer), and an entry that says no is looked up again when a report names one.
#[derive(Default)]
pub(crate) struct CatalogCache {
    entries: std::sync::Mutex<HashMap<SoftwareKey, (i64, bool)>>,
}

impl super::Store {
    /// The committed catalog ids of `packages` (keys with whether the report names a vendor),
    /// from the cache or a read connection, in the order of `packages`. A package whose stored
    /// vendor is unknown while the report names one is left `None`: the writer records the
    /// vendor.
    pub(crate) async fn known_catalog(
        &self,
        packages: &[(SoftwareKey, bool)],
    ) -> Result<Vec<Option<i64>>, StoreError> {
        let mut ids = vec![None; packages.len()];
        // Each key not in the cache, with the positions that name it.
        let mut missing: HashMap<&SoftwareKey, Vec<usize>> = HashMap::new();
        {
            let entries = self.catalog.entries.lock().expect("catalog cache lock");
            for (at, (key, has_vendor)) in packages.iter().enumerate() {
                match entries.get(key) {
                    Some(&(id, vendor_known)) if vendor_known || !has_vendor => ids[at] = Some(id),
                    _ => missing.entry(key).or_default().push(at),
                }
            }
        }
        if missing.is_empty() {
            return Ok(ids);
        }
        let keys: Vec<SoftwareKey> = missing.keys().map(|&k| k.clone()).collect();
        let found = self
            .reads
            .run(move |conn| lookup_catalog(conn, &keys))
            .await?;
        let mut entries = self.catalog.entries.lock().expect("catalog cache lock");
        for (key, id, vendor_known) in found {
            for &at in &missing[&key] {
                if vendor_known || !packages[at].1 {
                    ids[at] = Some(id);
                }
            }
            if entries.len() < CATALOG_CACHE_MAX || entries.contains_key(&key) {
                entries.insert(key, (id, vendor_known));
            }
        }
        Ok(ids)
    }
}

fn apply_software(
    conn: &Connection,
    rec: &Recorder<'_>,
    ci_id: i64,
    inv: &Inventory,
    known: &KnownIds,
    now: i64,
    created: bool,
) -> Result<(), StoreError> {
    if inv.incomplete.iter().any(|f| f == "software") {
        // An empty list the agent could not learn, not everything uninstalled.
        return Ok(());
    }
    // The diff is by catalog id, as two sorted lists: what is installed is read as ids from
    // the installation primary key (in id order), and a reported package's id comes from
    // `known` (found before the writer job), so a known computer's 800 packages are neither
    // read back as text, nor compared as text, nor hashed. Only a package that was not
    // committed when the batch was prepared (a new catalog row, or a vendor to record) is
    // looked up here.
    let installed: Vec<i64> = conn
        .prepare_cached(
            "SELECT software_id FROM installation WHERE ci_id = ?1 ORDER BY software_id",
        )?
        .query_map([ci_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut lookup = conn.prepare_cached(
        "SELECT id, vendor IS NULL FROM software
         WHERE name = ?1 AND version = ?2 AND arch = ?3 AND source = ?4",
    )?;
    let mut add_entry = conn.prepare_cached(
        "INSERT INTO software (name, version, arch, vendor, source) VALUES (?1, ?2, ?3, ?4, ?5)
         RETURNING id",
    )?;
    let mut learn_vendor = conn.prepare_cached("UPDATE software SET vendor = ?2 WHERE id = ?1")?;
    // (catalog id, position in the report) of every reported package.
    let mut reported: Vec<(i64, usize)> = Vec::with_capacity(inv.software.len());
    for (at, sw) in inv.software.iter().enumerate() {
        let software_id = match known.get(at).copied().flatten() {
            Some(id) => id,
            None => {
                let key = SoftwareKey::of(sw);
                let found: Option<(i64, bool)> = lookup
                    .query_row(params![key.name, key.version, key.arch, key.source], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()?;
                match found {
                    // The first listing that names a vendor records it; a later listing of
                    // the same key (another vendor) finds it recorded.
                    Some((id, no_vendor)) => {
                        if no_vendor && sw.vendor.is_some() {
                            learn_vendor.execute(params![id, sw.vendor])?;
                        }
                        id
                    }
                    None => add_entry.query_row(
                        params![key.name, key.version, key.arch, sw.vendor, key.source],
                        |r| r.get(0),
                    )?,
                }
            }
        };
        reported.push((software_id, at));
    }
    // A package listed twice counts once, as its first listing.
    reported.sort_unstable();
    reported.dedup_by_key(|&mut (id, _)| id);

    let mut install = conn.prepare_cached(
        "INSERT INTO installation (ci_id, software_id, first_seen) VALUES (?1, ?2, ?3)
         ON CONFLICT DO NOTHING",
    )?;
    let mut uninstall =
        conn.prepare_cached("DELETE FROM installation WHERE ci_id = ?1 AND software_id = ?2")?;
    let mut added: Vec<(i64, &Software)> = Vec::new();
    let mut gone: Vec<i64> = Vec::new();
    // Both lists in id order: one pass finds what was added and what is gone.
    let (mut reported, mut installed) = (reported.iter().peekable(), installed.iter().peekable());
    loop {
        let order = match (reported.peek(), installed.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(&&(new, _)), Some(&&old)) => new.cmp(&old),
        };
        match order {
            Ordering::Equal => {
                reported.next();
                installed.next();
            }
            Ordering::Less => {
                let &(new, at) = reported.next().expect("peeked");
                install.execute(params![ci_id, new, now])?;
                added.push((new, &inv.software[at]));
            }
            Ordering::Greater => {
                let &old = installed.next().expect("peeked");
                uninstall.execute(params![ci_id, old])?;
                gone.push(old);
            }
        }
    }
    if created {
        return Ok(());
    }
    let mut catalog_row =
        conn.prepare_cached("SELECT name, version, arch, source FROM software WHERE id = ?1")?;
    let removed = gone
        .iter()
        .map(|&id| {
            catalog_row.query_row([id], |r| {
                let key = SoftwareKey {
                    name: r.get(0)?,
                    version: r.get(1)?,
                    arch: r.get(2)?,
                    source: r.get(3)?,
                };
                Ok((id, key))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    record_software(rec, ci_id, &removed, &added)
}

/// History rows for a software diff: a package whose (name, arch, source) lost exactly one
/// version and gained exactly one is upgraded or downgraded (by its package manager's version
/// order); anything else is added or removed. `old` and `new` hold the package's catalog id
/// (see `history.rs`: it reads back as the catalog row), so a row is about 100 bytes, not 300.
fn record_software(
    rec: &Recorder<'_>,
    ci_id: i64,
    removed: &[(i64, SoftwareKey)],
    added: &[(i64, &Software)],
) -> Result<(), StoreError> {
    /// Versions of one package that went and came, each with its catalog id.
    type Slot<'a> = (Vec<(i64, &'a str)>, Vec<(i64, &'a str)>);
    let mut by_package: BTreeMap<(&str, &str, &str), Slot<'_>> = BTreeMap::new();
    for (id, old) in removed {
        let key = (old.name.as_str(), old.arch.as_str(), old.source.as_str());
        by_package
            .entry(key)
            .or_default()
            .0
            .push((*id, &old.version));
    }
    for (id, sw) in added {
        let arch = sw.arch.as_deref().unwrap_or_default();
        let key = (sw.name.as_str(), arch, sw.source.as_str());
        let version = sw.version.as_deref().unwrap_or_default();
        by_package.entry(key).or_default().1.push((*id, version));
    }
    let catalog_id = |id: i64| Value::from(id);
    for ((name, _, source), (gone, came)) in by_package {
        if let ([(old, old_version)], [(new, new_version)]) = (gone.as_slice(), came.as_slice()) {
            let kind = match cmdb::version::compare(source, new_version, old_version) {
                std::cmp::Ordering::Less => ChangeKind::SoftwareDowngraded,
                _ => ChangeKind::SoftwareUpgraded,
            };
            let (old, new) = (catalog_id(*old), catalog_id(*new));
            rec.record(ci_id, kind, Some(name), Some(&old), Some(&new))?;
            continue;
        }
        for (old, _) in gone {
            let old = catalog_id(old);
            rec.record(
                ci_id,
                ChangeKind::SoftwareRemoved,
                Some(name),
                Some(&old),
                None,
            )?;
        }
        for (new, _) in came {
            let new = catalog_id(new);
            rec.record(
                ci_id,
                ChangeKind::SoftwareAdded,
                Some(name),
                None,
                Some(&new),
            )?;
        }
    }
    Ok(())
}

impl super::Store {
    /// Applies an imported inventory through the same path as an agent's, as `source`, and
    /// answers once it is durable. An agent that reports the CI it updated is asked for its
    /// own inventory on its next batch, so the agent's view wins again.
    pub async fn import(
        &self,
        inv: Inventory,
        source: super::Source,
        received_at: time::OffsetDateTime,
    ) -> Result<super::ImportOutcome, StoreError> {
        let mut inv = inv;
        inv.normalize();
        let known = self.known_catalog(&package_keys(&inv)).await?;
        let placeholders = self.placeholders.clone();
        self.writer
            .run(move |conn| {
                let now = super::to_ms(received_at);
                let rec = Recorder::new(conn, now, &source);
                let found = identify(conn, &placeholders, &inv)?;
                let applied = apply(conn, &rec, &placeholders, &inv, found, &known, now)?;
                conn.prepare_cached("UPDATE agent SET inventory_digest = NULL WHERE ci_id = ?1")?
                    .execute([applied.ci_id])?;
                Ok(super::ImportOutcome {
                    ci_id: applied.ci_id,
                    created: applied.created,
                    identified_by: applied.identified_by().to_owned(),
                })
            })
            .await
    }
}
