//! Identification: which existing CI an inventory describes.
//!
//! The rules run in the order of [`RULES`]; the first that finds a CI wins and the CI records
//! the rule's name in `identified_by`. When none matches, the caller creates a new computer CI.
//!
//! Only the agent-id rule exists today: a machine is the CI its agent reported before. The
//! hardware rules of DESIGN.md ("a reinstalled machine is the same CI": serial, hardware UUID,
//! board serial, MAC, each skipping placeholder values) are a later issue; they slot in as new
//! variants placed *after* `AgentId`, each with a [`Candidates`] method the store implements.

/// One identification rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentifyRule {
    /// The CI this agent id was attached to by an earlier inventory.
    AgentId,
}

impl IdentifyRule {
    /// The name stored in `ci.identified_by`.
    pub fn name(self) -> &'static str {
        match self {
            IdentifyRule::AgentId => "agent_id",
        }
    }
}

/// The rules, in the order they run.
pub const RULES: &[IdentifyRule] = &[IdentifyRule::AgentId];

/// Lookups a rule needs from the store.
pub trait Candidates {
    type Error;
    /// The computer CI attached to this agent, if any.
    fn by_agent_id(&mut self, agent_id: &str) -> Result<Option<i64>, Self::Error>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identified {
    pub ci_id: i64,
    pub rule: IdentifyRule,
}

/// Runs the rules in order against the store's candidates.
pub fn identify<C: Candidates>(
    candidates: &mut C,
    inventory: &census_common::Inventory,
) -> Result<Option<Identified>, C::Error> {
    for &rule in RULES {
        let found = match rule {
            IdentifyRule::AgentId => candidates.by_agent_id(&inventory.agent_id)?,
        };
        if let Some(ci_id) = found {
            return Ok(Some(Identified { ci_id, rule }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use census_common::Inventory;
    use std::collections::HashMap;
    use time::OffsetDateTime;

    struct Known(HashMap<String, i64>);

    impl Candidates for Known {
        type Error = std::convert::Infallible;
        fn by_agent_id(&mut self, agent_id: &str) -> Result<Option<i64>, Self::Error> {
            Ok(self.0.get(agent_id).copied())
        }
    }

    #[test]
    fn known_agent_is_identified_by_agent_id() {
        let mut known = Known(HashMap::from([("a".to_owned(), 7)]));
        let inv = Inventory::new("a", OffsetDateTime::UNIX_EPOCH);
        let found = identify(&mut known, &inv).unwrap().unwrap();
        assert_eq!(found.ci_id, 7);
        assert_eq!(found.rule.name(), "agent_id");
    }

    #[test]
    fn unknown_agent_is_not_identified() {
        let mut known = Known(HashMap::from([("a".to_owned(), 7)]));
        let inv = Inventory::new("b", OffsetDateTime::UNIX_EPOCH);
        assert_eq!(identify(&mut known, &inv).unwrap(), None);
    }
}
