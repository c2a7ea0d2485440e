//! `POST /agent/v1/enroll`: trades an enrollment secret for the agent's own token.
//!
//! Body `{ "secret", "agent_id", "hostname" }` (JSON) → `{ "token" }`. The token is bound to
//! `agent_id`: it writes that agent's reports and nothing else. A wrong, revoked or expired
//! secret is `401 enroll_secret_invalid` (the agent is not told which; the collector log says,
//! naming the secret's id, never the secret). The secret is checked on a read connection first,
//! so a flood of wrong secrets never reaches the writer; the write transaction checks it again.
//! Enrollments are rate-limited per client address (`enroll_rate_per_minute`; IPv6 per /64) by
//! middleware before the body is read: `429 rate_limited` with `Retry-After`.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use census_common::{EnrollRequest, EnrollResponse, ErrorBody, ErrorCode};

use super::{ApiError, AppState};
use crate::auth::{Credential, Kind};
use crate::store::auth::{Enrollment, SecretRefusal};

/// Longest hostname accepted (DNS names are at most 253 characters).
const MAX_HOSTNAME: usize = 255;

#[utoipa::path(
    post,
    path = "/agent/v1/enroll",
    operation_id = "enroll",
    tag = "agent",
    summary = "Trade an enrollment secret for the agent's own token.",
    request_body = EnrollRequest,
    responses(
        (status = 200, body = EnrollResponse, description = "The agent's own token, shown \
            once."),
        (status = 400, body = ErrorBody, description = "`invalid_body`."),
        (status = 401, body = ErrorBody, description = "`enroll_secret_invalid`: the \
            enrollment secret is unknown, revoked or expired."),
        (status = 413, body = ErrorBody, description = "`payload_too_large`, \
            `field_too_long`."),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`."),
        (status = 429, body = ErrorBody, description = "`rate_limited`; `Retry-After` says \
            when to try again.",
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`."),
    ),
)]
pub async fn post_enroll(
    State(state): State<AppState>,
    body: Result<Json<EnrollRequest>, JsonRejection>,
) -> Result<Json<EnrollResponse>, ApiError> {
    enroll(&state, body).await
}

async fn enroll(
    state: &AppState,
    body: Result<Json<EnrollRequest>, JsonRejection>,
) -> Result<Json<EnrollResponse>, ApiError> {
    let Json(request) = body.map_err(super::json_rejection)?;
    if !super::is_canonical_uuid(&request.agent_id) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidBody,
            format!(
                "agent_id {:?} is not a UUID in lowercase hyphenated form",
                request.agent_id
            ),
        ));
    }
    if request.hostname.is_empty()
        || request.hostname.len() > MAX_HOSTNAME
        || request.hostname.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidBody,
            format!("hostname must be 1 to {MAX_HOSTNAME} bytes of printable text"),
        ));
    }
    let refused = |refusal: SecretRefusal, secret_id: &str| {
        tracing::warn!(
            secret_id,
            reason = refusal.as_str(),
            agent_id = %request.agent_id,
            "refused an enrollment"
        );
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::EnrollSecretInvalid,
            "the enrollment secret is unknown, revoked or expired; ask an admin for a new one \
             (`census-collector enroll-secret create --name NAME`)",
        )
    };
    let Some(secret) = Credential::parse(Kind::EnrollSecret, &request.secret) else {
        return Err(refused(SecretRefusal::Unknown, "(malformed)"));
    };
    let now = state.clock.now();
    if let Err(refusal) = state.store.check_enroll_secret(secret.clone(), now).await? {
        return Err(refused(refusal, &secret.id));
    }
    let secret_id = secret.id.clone();
    match state
        .store
        .enroll(
            secret,
            request.agent_id.clone(),
            request.hostname.clone(),
            now,
        )
        .await?
    {
        Enrollment::Enrolled {
            token,
            secret_id,
            earlier_tokens,
        } => {
            if !earlier_tokens.is_empty() {
                // Expected after a reinstall that lost the state dir; otherwise someone who
                // holds a secret and knows this agent id can now write as it.
                tracing::warn!(
                    agent_id = %request.agent_id,
                    secret_id,
                    earlier_tokens = %earlier_tokens.join(","),
                    "an agent id enrolled again while its earlier tokens are valid; if this \
                     agent was not reinstalled, revoke the tokens it does not use \
                     (census-collector token list / token revoke)"
                );
            }
            state.metrics.enrollments.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                agent_id = %request.agent_id,
                hostname = %request.hostname,
                secret_id,
                token_id = %token.id,
                "agent enrolled"
            );
            Ok(Json(EnrollResponse {
                token: token.reveal(),
            }))
        }
        Enrollment::Refused(refusal) => Err(refused(refusal, &secret_id)),
    }
}
