//! Enrollment: `POST /agent/v1/enroll` trades an enrollment secret for the agent's own token.

use serde::{Deserialize, Serialize};

/// Path of the enrollment route.
pub const ENROLL_PATH: &str = "/agent/v1/enroll";

/// `{ "secret", "agent_id", "hostname" }`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollRequest {
    /// An enrollment secret from `census-collector enroll-secret create`.
    pub secret: String,
    /// The agent id the token will be bound to: the token writes this agent's reports only.
    pub agent_id: String,
    /// Shown in `token list`, to tell agents apart; not an identity.
    pub hostname: String,
}

/// `{ "token" }`: the agent's own bearer token, shown once. The collector keeps only a hash.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollResponse {
    pub token: String,
}

// Secrets never reach a log through `{:?}`.
impl std::fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("secret", &"<redacted>")
            .field("agent_id", &self.agent_id)
            .field("hostname", &self.hostname)
            .finish()
    }
}

impl std::fmt::Debug for EnrollResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollResponse")
            .field("token", &"<redacted>")
            .finish()
    }
}
