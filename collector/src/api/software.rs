//! `GET /api/v1/software?name=...`: which computers have a package (exact name), at which
//! version, paged by `limit` and `cursor`, ordered by CI id.

use axum::Json;
use axum::extract::State;
use axum::http::Uri;
use serde::Serialize;

use super::cis::ListView;
use super::{ApiError, AppState, cursor, parse_limit, query_params};
use crate::store::{SoftwareInstall, SoftwareQuery};

#[derive(Debug, Serialize)]
pub struct InstallView {
    pub ci_id: i64,
    pub ci_name: String,
    pub hostname: Option<String>,
    pub name: String,
    pub version: Option<String>,
    pub arch: Option<String>,
    pub vendor: Option<String>,
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
