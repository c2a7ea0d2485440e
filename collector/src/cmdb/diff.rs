//! What changed between the stored state of a computer and its new inventory.
//!
//! Parts and software that disappeared from the inventory leave the current state: a part CI is
//! retired and its `contains` relationship ended (the CI itself stays, so its history and
//! incidents keep pointing somewhere), an installation row is deleted. A retired part that
//! reappears is reactivated rather than created again.

use std::collections::HashMap;

use census_common::Software;
use serde_json::Value;

use super::PartSpec;

/// A part CI as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ExistingPart {
    pub id: i64,
    pub class: String,
    pub key: String,
    pub name: String,
    pub status: String,
    pub attributes: Value,
}

#[derive(Debug, Default, PartialEq)]
pub struct PartsPlan {
    /// New parts: create the CI and its `contains` relationship.
    pub create: Vec<PartSpec>,
    /// Parts whose name or attributes changed, or that come back from retirement.
    pub update: Vec<PartUpdate>,
    /// Parts that are still there unchanged: only their `last_seen` moves.
    pub unchanged: Vec<i64>,
    /// Active parts that disappeared: retire the CI and end its relationship.
    pub retire: Vec<i64>,
}

#[derive(Debug, PartialEq)]
pub struct PartUpdate {
    pub id: i64,
    pub spec: PartSpec,
    /// The part was not active: set it active and make its relationship again.
    pub reactivate: bool,
}

pub fn diff_parts(existing: &[ExistingPart], desired: Vec<PartSpec>) -> PartsPlan {
    let mut by_key: HashMap<(String, String), &ExistingPart> = existing
        .iter()
        .map(|p| ((p.class.clone(), p.key.clone()), p))
        .collect();
    let mut plan = PartsPlan::default();
    for spec in desired {
        match by_key.remove(&(spec.class.to_owned(), spec.key.clone())) {
            None => plan.create.push(spec),
            Some(old) => {
                let reactivate = old.status != "active";
                if reactivate || old.attributes != spec.attributes || old.name != spec.name {
                    plan.update.push(PartUpdate {
                        id: old.id,
                        spec,
                        reactivate,
                    });
                } else {
                    plan.unchanged.push(old.id);
                }
            }
        }
    }
    let mut gone: Vec<i64> = by_key
        .into_values()
        .filter(|p| p.status == "active")
        .map(|p| p.id)
        .collect();
    gone.sort_unstable();
    plan.retire = gone;
    plan
}

/// The catalog identity of a package. Unknown version or arch is the empty string, as stored.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SoftwareKey {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub source: String,
}

impl SoftwareKey {
    pub fn of(sw: &Software) -> SoftwareKey {
        SoftwareKey {
            name: sw.name.clone(),
            version: sw.version.clone().unwrap_or_default(),
            arch: sw.arch.clone().unwrap_or_default(),
            source: sw.source.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdb::CLASS_FILESYSTEM;
    use serde_json::json;

    fn spec(key: &str, size: u64) -> PartSpec {
        PartSpec {
            class: CLASS_FILESYSTEM,
            key: key.into(),
            name: format!("h:{key}"),
            attributes: json!({ "mount": key, "total_bytes": size }),
        }
    }

    fn existing(id: i64, key: &str, size: u64, status: &str) -> ExistingPart {
        let s = spec(key, size);
        ExistingPart {
            id,
            class: s.class.into(),
            key: s.key,
            name: s.name,
            status: status.into(),
            attributes: s.attributes,
        }
    }

    #[test]
    fn parts_are_created_kept_changed_retired_and_reactivated() {
        let stored = vec![
            existing(1, "/", 10, "active"),
            existing(2, "/home", 20, "active"),
            existing(3, "/mnt/usb", 30, "retired"),
            existing(4, "/gone", 40, "active"),
            existing(5, "/long-gone", 50, "retired"),
        ];
        let plan = diff_parts(
            &stored,
            vec![
                spec("/", 10),
                spec("/home", 21),
                spec("/mnt/usb", 30),
                spec("/new", 1),
            ],
        );
        assert_eq!(plan.create, vec![spec("/new", 1)]);
        assert_eq!(plan.unchanged, vec![1]);
        assert_eq!(
            plan.update,
            vec![
                PartUpdate {
                    id: 2,
                    spec: spec("/home", 21),
                    reactivate: false
                },
                PartUpdate {
                    id: 3,
                    spec: spec("/mnt/usb", 30),
                    reactivate: true
                },
            ]
        );
        // The already retired part is not retired again.
        assert_eq!(plan.retire, vec![4]);
    }
}
