//! The `--state` file: what a run learned about its fleet that the next run against the same
//! collector needs: each agent's token (so it does not enroll again), its next sequence number
//! (so its reports are not taken as repeats) and the inventory version the collector acked (so
//! the next one is a change, not a first inventory). JSON, replaced atomically at the end of a
//! run.

use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StateFile {
    pub seed: u64,
    /// The collector the tokens are for (informational: a token another collector refuses
    /// is dropped and the agent enrolls again).
    pub url: String,
    pub agents: Vec<SavedAgent>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedAgent {
    pub index: u32,
    pub agent_id: String,
    pub token: Option<String>,
    /// The last sequence number used.
    pub seq: u64,
    pub inventory_version: u32,
    /// Whether the collector acked an inventory of this agent.
    pub inventory_known: bool,
}

impl StateFile {
    /// The state at `path`, or an empty one when there is no file yet. A file made with
    /// another seed is an error: its agents are another fleet.
    pub fn load(path: &Path, seed: u64) -> anyhow::Result<StateFile> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(StateFile {
                    seed,
                    ..StateFile::default()
                });
            }
            Err(e) => return Err(e).context(format!("could not read {}", path.display())),
        };
        let state: StateFile = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a fleet state file", path.display()))?;
        if state.seed != seed {
            bail!(
                "{} holds the fleet of seed {}, not {seed}; use --seed {} or another --state file",
                path.display(),
                state.seed,
                state.seed
            );
        }
        Ok(state)
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(self)?)
            .with_context(|| format!("could not write {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("could not replace {}", path.display()))?;
        Ok(())
    }
}
