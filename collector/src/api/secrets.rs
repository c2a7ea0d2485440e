//! `GET /api/v1/enroll-secrets` (admin role): the enrollment secrets, never their text.
//!
//! Secrets are created by hand (`census-collector enroll-secret create`), so there are few; the
//! list answers them all in one page (`next_cursor` is always `null`) and takes no parameters.

use axum::Json;
use axum::extract::State;
use axum::http::Uri;
use census_common::ErrorBody;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{ApiError, AppState, query_params, rfc3339_utc};
use crate::store::auth::EnrollSecretRecord;

/// An enrollment secret, without its text.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollSecretView {
    pub id: String,
    pub name: String,
    #[serde(with = "rfc3339_utc")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "rfc3339_utc::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "rfc3339_utc::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<OffsetDateTime>,
    /// How many agents enrolled with it.
    pub uses: i64,
}

impl From<EnrollSecretRecord> for EnrollSecretView {
    fn from(r: EnrollSecretRecord) -> EnrollSecretView {
        EnrollSecretView {
            id: r.id,
            name: r.name,
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
            uses: r.uses,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollSecretList {
    pub items: Vec<EnrollSecretView>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/enroll-secrets",
    operation_id = "list_enroll_secrets",
    tag = "operations",
    summary = "The enrollment secrets (admin role), never their text.",
    responses(
        (status = 200, description = "Every enrollment secret, oldest first, in one page.",
            body = EnrollSecretList),
        (status = 400, body = ErrorBody, description = "`invalid_filter`: this route takes no \
            query parameters."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`."),
    ),
    security(("admin_token" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    uri: Uri,
) -> Result<Json<EnrollSecretList>, ApiError> {
    query_params(&uri, &[])?;
    let items = state.store.list_enroll_secrets().await?;
    Ok(Json(EnrollSecretList {
        items: items.into_iter().map(Into::into).collect(),
        next_cursor: None,
    }))
}
