//! `GET /api/v1/enroll-secrets` (admin role): the enrollment secrets, never their text.
//!
//! Secrets are created by hand (`census-collector enroll-secret create`), so there are few; the
//! list answers them all in one page (`next_cursor` is always `null`) and takes no parameters.

use axum::Json;
use axum::extract::State;
use axum::http::Uri;
use serde::Serialize;
use time::OffsetDateTime;

use super::{ApiError, AppState, query_params, rfc3339_utc};
use crate::store::auth::EnrollSecretRecord;

#[derive(Debug, Serialize)]
pub struct EnrollSecretView {
    pub id: String,
    pub name: String,
    #[serde(with = "rfc3339_utc")]
    pub created_at: OffsetDateTime,
    #[serde(with = "rfc3339_utc::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "rfc3339_utc::option")]
    pub revoked_at: Option<OffsetDateTime>,
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

#[derive(Debug, Serialize)]
pub struct EnrollSecretList {
    pub items: Vec<EnrollSecretView>,
    pub next_cursor: Option<String>,
}

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
