//! `GET /api/v1/software?name=...`: which computers have a package (exact name), at which
//! version, paged by `limit` and `cursor`, ordered by CI id.

use axum::Json;
use axum::extract::State;
use axum::http::Uri;
use census_common::ErrorBody;
use serde::Serialize;
use utoipa::ToSchema;

use super::cis::ListView;
use super::{ApiError, AppState, cursor, parse_limit, query_params};
use crate::store::{SoftwareInstall, SoftwareQuery};

/// One computer that has the package, at one version.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SoftwareInstall)]
pub struct InstallView {
    pub ci_id: i64,
    pub ci_name: String,
    /// The computer's `hostname` attribute; null if its agent did not report one.
    #[schema(required = true)]
    pub hostname: Option<String>,
    pub name: String,
    #[schema(required = true)]
    pub version: Option<String>,
    #[schema(required = true)]
    pub arch: Option<String>,
    #[schema(required = true)]
    pub vendor: Option<String>,
    /// Where the agent found it: `dpkg`, `rpm`, `apk`, ...
    pub source: String,
}

impl From<SoftwareInstall> for InstallView {
    fn from(i: SoftwareInstall) -> InstallView {
        InstallView {
            ci_id: i.ci_id,
            ci_name: i.ci_name,
            hostname: i.hostname,
            name: i.software.name,
            version: i.software.version,
            arch: i.software.arch,
            vendor: i.software.vendor,
            source: i.software.source,
        }
    }
}

/// Which computers have a package, at which version.
#[utoipa::path(
    get,
    path = "/api/v1/software",
    operation_id = "list_software_installs",
    tag = "software",
    params(
        ("name" = String, Query, min_length = 1, description = "Exact package name."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
            description = "Page size; default 100."),
        ("cursor" = Option<String>, Query,
            description = "The previous page's `next_cursor`, unchanged."),
    ),
    responses(
        (status = 200, description = "The computers that have the package, by CI id, one item \
            per installed version.", body = ListView<InstallView>),
        (status = 400, body = ErrorBody, description = "`invalid_filter`: `name` missing or \
            empty, or an unknown, repeated or malformed parameter; `invalid_cursor`: a cursor \
            this list did not return."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    uri: Uri,
) -> Result<Json<ListView<InstallView>>, ApiError> {
    let mut params = query_params(&uri, &["name", "limit", "cursor"])?;
    let name = params
        .remove("name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::invalid_filter("query parameter `name` is required, e.g. ?name=openssl")
        })?;
    let limit = parse_limit(params.get("limit"))?;
    let after = match params.get("cursor") {
        Some(c) => {
            let keys = cursor::decode(c, 2)?;
            Some((keys[0], keys[1]))
        }
        None => None,
    };
    let page = state
        .store
        .software_installs(SoftwareQuery { name, after, limit })
        .await?;
    Ok(Json(ListView {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next.map(|(ci, sw)| cursor::encode(&[ci, sw])),
    }))
}
