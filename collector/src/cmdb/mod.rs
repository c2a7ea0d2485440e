//! Turning an inventory into configuration items: which CI a report is about (identification),
//! what the computer's attributes are, which parts it has, and what changed since the last
//! inventory (the diff). Everything here is pure: the store fetches the current state, calls
//! these functions and writes the plan they return, all inside one transaction.

pub mod diff;
pub mod identify;
pub mod model;
pub mod version;

pub use diff::{ExistingPart, PartsPlan, SoftwareKey, diff_parts};
pub use identify::{
    Candidates, IDENTIFIED_NEW, Identified, IdentifyRule, IdentityKeys, Placeholders, RULES,
    identify,
};
pub use model::{
    PartSpec, computer_attributes, computer_name, incomplete_part_classes,
    keep_incomplete_attributes, part_specs,
};

/// CI classes the agent's inventory creates.
pub const CLASS_COMPUTER: &str = "computer";
pub const CLASS_FILESYSTEM: &str = "filesystem";
pub const CLASS_NETWORK_INTERFACE: &str = "network_interface";

/// The relationship from a computer to each of its parts.
pub const REL_CONTAINS: &str = "contains";
