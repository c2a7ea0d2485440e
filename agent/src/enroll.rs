//! `census-agent enroll`: trade an enrollment secret for this agent's own token, kept in
//! `token` in the state directory (mode 0600). `run` and `once` enroll the same way by
//! themselves when `enroll_secret` is set and they have no token the collector accepts (see
//! [`crate::auth`]).
//!
//! Enrolling does not need the state directory's lock when a running agent holds it: the token
//! file is replaced atomically and the running agent reads it before each send, so an admin
//! can enroll a running service. Creating the agent id does need the lock, so that two
//! processes never create two ids.

use anyhow::{Context, bail};
use census_common::EnrollRequest;

use crate::auth::{Secret, Token};
use crate::collect::Kernel;
use crate::config::{Config, ConfigError};
use crate::state::{StateDir, StateError};
use crate::transport::{Transport, TransportError};

/// Runs `census-agent enroll`; returns the confirmation line to print (without the token).
pub fn command(config: &Config) -> anyhow::Result<String> {
    let secret = config
        .enroll_secret
        .clone()
        .ok_or(ConfigError::MissingSecret)?;
    let transport = Transport::from_config(config)?;
    let state = StateDir::new(&config.state_dir);
    let (agent_id, _lock) = match state.lock() {
        Ok(lock) => (state.load_or_create_agent_id()?, Some(lock)),
        Err(StateError::Locked { path }) => match state.read_agent_id()? {
            Some(id) => (id, None),
            None => bail!(
                "another census-agent is starting on state directory {}; try again in a moment",
                path.display()
            ),
        },
        Err(e) => return Err(e.into()),
    };
    let had_token = !matches!(state.read_token(), Ok(None));
    let rt = crate::service::runtime()?;
    let token = rt
        .block_on(enroll(&transport, &agent_id, &secret))
        .context("could not enroll")?;
    state.write_token(&token)?;
    tracing::info!(agent_id = %agent_id, server = %transport.server(), "enrolled");
    Ok(format!(
        "enrolled agent {agent_id} with {}; token saved to {}{}",
        transport.server(),
        state.token_path().display(),
        if had_token {
            " (replacing the previous one)"
        } else {
            ""
        }
    ))
}

/// Asks the collector for a token for `agent_id`. The secret goes into the request body only.
pub async fn enroll(
    transport: &Transport,
    agent_id: &str,
    secret: &Secret,
) -> Result<Token, TransportError> {
    transport.enroll(&request(agent_id, secret)).await
}

/// The enrollment request for `agent_id`, named by this machine's hostname.
pub fn request(agent_id: &str, secret: &Secret) -> EnrollRequest {
    EnrollRequest {
        secret: secret.expose().to_owned(),
        agent_id: agent_id.to_owned(),
        hostname: hostname(),
    }
}

/// The name shown next to the token in `census-collector token list`; not an identity.
fn hostname() -> String {
    let name = Kernel::current().nodename;
    if name.trim().is_empty() {
        "unknown".to_owned()
    } else {
        name
    }
}
