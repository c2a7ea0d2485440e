//! The software lists across the fleet.
//!
//! - `GET /api/v1/software`: which computers have a package, at which version, one item per
//!   installation, by CI id then catalog id (keyset paged by `limit` and `cursor`). Filters:
//!   `name` (exact) or `name_contains` (ASCII case-insensitive; `%` and `_` are literal), one of
//!   them required; `version` (exact text); `version_lt`, `version_le`, `version_gt`,
//!   `version_ge`, each comparing every installation's version with its own package manager's
//!   ordering (dpkg, rpm, apk; see `cmdb::version`), so `version_lt=3.0.13` takes
//!   `3.0.11-1~deb12u2` but not `1:1.1.1w-0+deb11u1` (epoch 1); `source`, `arch` (exact).
//!   Installations on retired CIs are left out unless `include_retired=true`.
//! - `GET /api/v1/software/catalog`: the catalog, one item per (name, version, arch, source)
//!   with its install count on CIs that are not retired; the same filters, all optional.
//!   Ordered by name, then source, then version *text*, then id: the package managers'
//!   orderings differ per source and cannot back an index, so the pages would not be stable
//!   in them. Rows with no install left out unless `include_unused=true`.
//!
//! Both lists and a CI's software (`GET /api/v1/cis/{id}/software`) answer `text/csv` when
//! asked (`api::csv`). A filter given empty, twice, unknown or malformed is `400
//! invalid_filter` naming the parameter; package versions of no known value (`null`) match no
//! version comparison.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use census_common::ErrorBody;
use serde::Serialize;
use utoipa::ToSchema;

use super::cis::ListView;
use super::csv::{self, Cell};
use super::{ApiError, AppState, cursor, parse_limit, query_params};
use crate::store::{
    CatalogEntry, CatalogQuery, InstalledSoftware, SoftwareFilter, SoftwareInstall, SoftwareQuery,
};

/// Longest filter value taken, in bytes; package names and versions are far shorter.
const MAX_FILTER_LEN: usize = 256;

/// One computer that has the package, at one version. It borrows from the store's rows, so a
/// page of a thousand is written without copying a string.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SoftwareInstall)]
pub struct InstallView<'a> {
    pub ci_id: i64,
    pub ci_name: &'a str,
    /// The computer's `hostname` attribute; null if its agent did not report one.
    #[schema(required = true)]
    pub hostname: Option<&'a str>,
    /// The computer's status; `retired` only with `include_retired=true`.
    #[schema(value_type = super::cis::CiStatus)]
    pub ci_status: &'a str,
    pub name: &'a str,
    #[schema(required = true)]
    pub version: Option<&'a str>,
    #[schema(required = true)]
    pub arch: Option<&'a str>,
    #[schema(required = true)]
    pub vendor: Option<&'a str>,
    /// Where the agent found it: `dpkg`, `rpm`, `apk`, ...
    pub source: &'a str,
}

impl<'a> From<&'a SoftwareInstall> for InstallView<'a> {
    fn from(i: &'a SoftwareInstall) -> InstallView<'a> {
        InstallView {
            ci_id: i.ci_id,
            ci_name: &i.ci_name,
            hostname: i.hostname.as_deref(),
            ci_status: &i.ci_status,
            name: &i.software.name,
            version: i.software.version.as_deref(),
            arch: i.software.arch.as_deref(),
            vendor: i.software.vendor.as_deref(),
            source: &i.software.source,
        }
    }
}

/// A row of the software catalog and how many CIs that are not retired have it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CatalogEntry)]
pub struct CatalogView {
    /// The catalog row's id.
    pub id: i64,
    pub name: String,
    #[schema(required = true)]
    pub version: Option<String>,
    #[schema(required = true)]
    pub arch: Option<String>,
    #[schema(required = true)]
    pub vendor: Option<String>,
    /// Where agents found it: `dpkg`, `rpm`, `apk`, ...
    pub source: String,
    /// Installations on CIs that are not retired.
    #[schema(minimum = 0)]
    pub installs: i64,
}

impl From<CatalogEntry> for CatalogView {
    fn from(e: CatalogEntry) -> CatalogView {
        CatalogView {
            id: e.id,
            name: e.software.name,
            version: e.software.version,
            arch: e.software.arch,
            vendor: e.software.vendor,
            source: e.software.source,
            installs: e.installs,
        }
    }
}

/// The package filters every software list takes.
const FILTERS: &[&str] = &[
    "name",
    "name_contains",
    "version",
    "version_lt",
    "version_le",
    "version_gt",
    "version_ge",
    "source",
    "arch",
];

/// The package filters from the query string: each present one non-empty, at most
/// [`MAX_FILTER_LEN`] bytes and free of control characters.
fn parse_filter(params: &mut HashMap<String, String>) -> Result<SoftwareFilter, ApiError> {
    let mut take = |name: &str| -> Result<Option<String>, ApiError> {
        let Some(value) = params.remove(name) else {
            return Ok(None);
        };
        if value.is_empty() {
            return Err(ApiError::invalid_filter(format!(
                "query parameter `{name}` is empty; give a value or leave it out"
            )));
        }
        if value.len() > MAX_FILTER_LEN {
            return Err(ApiError::invalid_filter(format!(
                "query parameter `{name}` is longer than {MAX_FILTER_LEN} bytes"
            )));
        }
        if value.chars().any(char::is_control) {
            return Err(ApiError::invalid_filter(format!(
                "query parameter `{name}` contains a control character"
            )));
        }
        Ok(Some(value))
    };
    Ok(SoftwareFilter {
        name: take("name")?,
        name_contains: take("name_contains")?,
        version: take("version")?,
        version_lt: take("version_lt")?,
        version_le: take("version_le")?,
        version_gt: take("version_gt")?,
        version_ge: take("version_ge")?,
        source: take("source")?,
        arch: take("arch")?,
    })
}

/// A `true` / `false` parameter; absent is `false`.
fn parse_flag(params: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match params.get(name).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::invalid_filter(format!(
            "query parameter `{name}` must be true or false, not {other:?}"
        ))),
    }
}

fn allowed(extra: &[&'static str]) -> Vec<&'static str> {
    FILTERS.iter().chain(extra).copied().collect()
}

const INSTALL_COLUMNS: &[&str] = &[
    "ci_id",
    "ci_name",
    "hostname",
    "ci_status",
    "name",
    "version",
    "arch",
    "vendor",
    "source",
];

/// Which computers have a package, at which version.
#[utoipa::path(
    get,
    path = "/api/v1/software",
    operation_id = "list_software_installs",
    tag = "software",
    params(
        ("name" = Option<String>, Query, min_length = 1,
            description = "Exact package name. This or `name_contains` is required."),
        ("name_contains" = Option<String>, Query, min_length = 1,
            description = "Part of the package name, ASCII case-insensitive; `%` and `_` are \
            literal."),
        ("version" = Option<String>, Query, min_length = 1, description = "Exact version text."),
        ("version_lt" = Option<String>, Query, min_length = 1,
            description = "Versions older than this one, by each installation's own package \
            manager's ordering (dpkg, rpm, apk): `version_lt=3.0.13` takes `3.0.11-1~deb12u2` \
            but not `1:1.1.1w-0+deb11u1`. Unknown versions never match."),
        ("version_le" = Option<String>, Query, min_length = 1,
            description = "Versions older than or equal to this one (as `version_lt`)."),
        ("version_gt" = Option<String>, Query, min_length = 1,
            description = "Versions newer than this one (as `version_lt`)."),
        ("version_ge" = Option<String>, Query, min_length = 1,
            description = "Versions newer than or equal to this one (as `version_lt`)."),
        ("source" = Option<String>, Query, min_length = 1,
            description = "Exact source: `dpkg`, `rpm`, `apk`, ..."),
        ("arch" = Option<String>, Query, min_length = 1, description = "Exact architecture."),
        ("include_retired" = Option<bool>, Query,
            description = "Also list installations on retired CIs; default false."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
            description = "Page size; default 100."),
        ("cursor" = Option<String>, Query,
            description = "The previous page's `next_cursor`, unchanged."),
    ),
    responses(
        (status = 200, description = "The installations of the matching packages, by CI id \
            then catalog id, one item per installed version. With `Accept: text/csv`, the page \
            as CSV with the columns `ci_id,ci_name,hostname,ci_status,name,version,arch,vendor,\
            source`; its next cursor in the `X-Next-Cursor` and `Link` headers.",
            content(
                (ListView<InstallView<'static>> = "application/json"),
                (String = "text/csv"),
            )),
        (status = 400, body = ErrorBody, description = "`invalid_filter`: neither `name` nor \
            `name_contains`, or an empty, too long, unknown, repeated or malformed parameter \
            (the message names it); `invalid_cursor`: a cursor this list did not return."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let mut params = query_params(&uri, &allowed(&["include_retired", "limit", "cursor"]))?;
    let filter = parse_filter(&mut params)?;
    if filter.name.is_none() && filter.name_contains.is_none() {
        return Err(ApiError::invalid_filter(
            "query parameter `name` or `name_contains` is required, e.g. ?name=openssl",
        ));
    }
    let include_retired = parse_flag(&params, "include_retired")?;
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
        .software_installs(SoftwareQuery {
            filter,
            include_retired,
            after,
            limit,
        })
        .await?;
    let next_cursor = page.next.map(|(ci, sw)| cursor::encode(&[ci, sw]));
    let items: Vec<InstallView> = page.items.iter().map(Into::into).collect();
    if csv::wants_csv(&headers) {
        let rows: Vec<Vec<Cell>> = items
            .into_iter()
            .map(|i| {
                vec![
                    i.ci_id.into(),
                    i.ci_name.into(),
                    i.hostname.into(),
                    i.ci_status.into(),
                    i.name.into(),
                    i.version.into(),
                    i.arch.into(),
                    i.vendor.into(),
                    i.source.into(),
                ]
            })
            .collect();
        return Ok(csv::response(
            &uri,
            INSTALL_COLUMNS,
            &rows,
            next_cursor.as_deref(),
        ));
    }
    Ok(Json(ListView { items, next_cursor }).into_response())
}

const CATALOG_COLUMNS: &[&str] = &[
    "id", "name", "version", "arch", "vendor", "source", "installs",
];

/// The software catalog with install counts.
#[utoipa::path(
    get,
    path = "/api/v1/software/catalog",
    operation_id = "list_software_catalog",
    tag = "software",
    params(
        ("name" = Option<String>, Query, min_length = 1, description = "Exact package name."),
        ("name_contains" = Option<String>, Query, min_length = 1,
            description = "Part of the package name, ASCII case-insensitive; `%` and `_` are \
            literal."),
        ("version" = Option<String>, Query, min_length = 1, description = "Exact version text."),
        ("version_lt" = Option<String>, Query, min_length = 1,
            description = "Versions older than this one, by each row's own package manager's \
            ordering (dpkg, rpm, apk). Unknown versions never match."),
        ("version_le" = Option<String>, Query, min_length = 1,
            description = "Versions older than or equal to this one (as `version_lt`)."),
        ("version_gt" = Option<String>, Query, min_length = 1,
            description = "Versions newer than this one (as `version_lt`)."),
        ("version_ge" = Option<String>, Query, min_length = 1,
            description = "Versions newer than or equal to this one (as `version_lt`)."),
        ("source" = Option<String>, Query, min_length = 1,
            description = "Exact source: `dpkg`, `rpm`, `apk`, ..."),
        ("arch" = Option<String>, Query, min_length = 1, description = "Exact architecture."),
        ("include_unused" = Option<bool>, Query,
            description = "Also list rows no CI that is not retired has installed (`installs` \
            0); default false."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
            description = "Page size; default 100."),
        ("cursor" = Option<String>, Query, description = "The previous page's `next_cursor`, \
            unchanged. A well-formed cursor naming no catalog row answers an empty page."),
    ),
    responses(
        (status = 200, description = "Catalog rows ordered by name, then source, then version \
            text (not the package manager's order), then id. With `Accept: text/csv`, the page \
            as CSV with the columns `id,name,version,arch,vendor,source,installs`; its next \
            cursor in the `X-Next-Cursor` and `Link` headers.",
            content(
                (ListView<CatalogView> = "application/json"),
                (String = "text/csv"),
            )),
        (status = 400, body = ErrorBody, description = "`invalid_filter`: an empty, too long, \
            unknown, repeated or malformed parameter (the message names it); \
            `invalid_cursor`: a malformed cursor."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn catalog(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let mut params = query_params(&uri, &allowed(&["include_unused", "limit", "cursor"]))?;
    let filter = parse_filter(&mut params)?;
    let include_unused = parse_flag(&params, "include_unused")?;
    let limit = parse_limit(params.get("limit"))?;
    let after = match params.get("cursor") {
        Some(c) => Some(cursor::decode(c, 1)?[0]),
        None => None,
    };
    let page = state
        .store
        .software_catalog(CatalogQuery {
            filter,
            include_unused,
            after,
            limit,
        })
        .await?;
    let next_cursor = page.next.map(|id| cursor::encode(&[id]));
    let items: Vec<CatalogView> = page.items.into_iter().map(Into::into).collect();
    if csv::wants_csv(&headers) {
        let rows: Vec<Vec<Cell>> = items
            .into_iter()
            .map(|e| {
                vec![
                    e.id.into(),
                    e.name.into(),
                    e.version.into(),
                    e.arch.into(),
                    e.vendor.into(),
                    e.source.into(),
                    e.installs.into(),
                ]
            })
            .collect();
        return Ok(csv::response(
            &uri,
            CATALOG_COLUMNS,
            &rows,
            next_cursor.as_deref(),
        ));
    }
    Ok(Json(ListView { items, next_cursor }).into_response())
}

/// The columns of a CI's software as CSV (`GET /api/v1/cis/{id}/software`).
pub const CI_SOFTWARE_COLUMNS: &[&str] = &["name", "version", "arch", "vendor", "source"];

/// A page of a CI's software as a `text/csv` answer.
pub fn ci_software_csv(
    uri: &Uri,
    items: &[InstalledSoftware],
    next_cursor: Option<&str>,
) -> Response {
    let rows: Vec<Vec<Cell>> = items
        .iter()
        .map(|s| {
            vec![
                s.name.as_str().into(),
                s.version.as_deref().into(),
                s.arch.as_deref().into(),
                s.vendor.as_deref().into(),
                s.source.as_str().into(),
            ]
        })
        .collect();
    csv::response(uri, CI_SOFTWARE_COLUMNS, &rows, next_cursor)
}
