//! Who may call what: the middleware that checks bearer tokens.
//!
//! - `/api/v1/*`: an admin token (`Authorization: Bearer cat_...`) whose role is at least the
//!   route group's ([`require_role`]). No token, an unknown or revoked one, or an agent token:
//!   `401 token_invalid` with `WWW-Authenticate: Bearer`. A valid token of a lower role:
//!   `403 forbidden`. The holder is put in the request's extensions as [`AdminPrincipal`].
//! - `/agent/v1/reports`: an agent token ([`require_agent`]); failing that, `401
//!   agent_token_invalid`, which tells the agent to enroll again. The agent id the token is bound
//!   to goes in the extensions as [`AgentPrincipal`]; the handler refuses a batch for any other
//!   agent with `403 agent_forbidden`.
//!
//! The rate limits (reports per token's agent, enrollments per client address) are checked here
//! too. A refusal is decided before the body is read and writes nothing. Tokens never reach a log:
//! only the token id of a refused credential is logged, at debug level.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use census_common::ErrorCode;

use super::{ApiError, AppState};
use crate::auth::{Credential, Kind, Role};
use crate::ratelimit::{self, RateLimited};
pub use crate::store::auth::AdminPrincipal;

/// The agent a valid agent token is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPrincipal {
    pub agent_id: String,
}

/// The credential text of an `Authorization: Bearer` header, if there is one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn unauthorized(code: ErrorCode, message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, code, message).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Middleware for a group of `/api/v1` routes that needs at least `min`.
pub async fn require_role(
    State((state, min)): State<(AppState, Role)>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(text) = bearer(request.headers()) else {
        return unauthorized(
            ErrorCode::TokenInvalid,
            "this route needs an admin token: send `Authorization: Bearer <token>`; \
             create one with `census-collector token create --role viewer --name NAME`",
        );
    };
    let invalid = || {
        unauthorized(
            ErrorCode::TokenInvalid,
            "the admin token is unknown or revoked; `census-collector token list` shows the \
             valid ones",
        )
    };
    let Some(credential) = Credential::parse(Kind::AdminToken, text) else {
        return invalid();
    };
    let token_id = credential.id.clone();
    let principal = match state.store.verify_admin_token(credential).await {
        Ok(Some(principal)) => principal,
        Ok(None) => {
            tracing::debug!(token_id = %token_id, "refused an unknown or revoked admin token");
            return invalid();
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    if principal.role < min {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            format!(
                "this needs the {min} role; token {} has the {} role",
                principal.token_id, principal.role
            ),
        )
        .into_response();
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// Middleware for the agent's report route.
pub async fn require_agent(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let invalid = || {
        unauthorized(
            ErrorCode::AgentTokenInvalid,
            "the agent token is missing, unknown or revoked; enroll again with \
             `census-agent enroll --server URL --secret SECRET`",
        )
    };
    let Some(credential) =
        bearer(request.headers()).and_then(|text| Credential::parse(Kind::AgentToken, text))
    else {
        return invalid();
    };
    let token_id = credential.id.clone();
    let agent_id = match state.store.verify_agent_token(credential).await {
        Ok(Some(agent_id)) => agent_id,
        Ok(None) => {
            tracing::debug!(token_id = %token_id, "refused an unknown or revoked agent token");
            return invalid();
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    // The token's agent's rate limit, here, before the handler reads the body: a limited
    // agent costs no buffering or decoding, and no one can spend another agent's budget.
    if let Err(wait) = state.reports_limiter.check(agent_id.as_str()) {
        return RateLimited::new(
            wait,
            &format!("agent {agent_id}"),
            "reports_rate_per_minute or reports_burst",
        )
        .into_response();
    }
    request.extensions_mut().insert(AgentPrincipal { agent_id });
    next.run(request).await
}

/// Middleware for the enrollment route: the client address's rate limit
/// (`enroll_rate_per_minute`, IPv6 per /64), before the body is read.
pub async fn limit_enrollment(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if let Err(wait) = state.enroll_limiter.check(&ratelimit::ip_key(peer.ip())) {
        return RateLimited::new(
            wait,
            &format!("address {}", peer.ip()),
            "enroll_rate_per_minute",
        )
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_read_case_insensitively_and_nothing_else_is() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        for (value, expected) in [
            ("Bearer abc", Some("abc")),
            ("bearer   abc ", Some("abc")),
            ("BEARER abc", Some("abc")),
            ("Basic abc", None),
            ("Bearer", None),
            ("abc", None),
        ] {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(bearer(&headers), expected, "{value:?}");
        }
    }
}
