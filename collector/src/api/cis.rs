//! `/api/v1/cis` and a CI's sub-resources.
//!
//! - `GET /api/v1/cis`: filters `class`, `status`, `hostname`, `os` (exact; `os` matches the OS
//!   name or family, e.g. `Debian GNU/Linux` or `linux`), `name` (prefix), paged by `limit`
//!   (default 100, at most 1000) and `cursor`, ordered by id. List items are summaries: every
//!   CI field except `health` and `relationships`, which only `GET /api/v1/cis/{id}` returns
//!   (they cost a query per CI); fetch a CI by id for the full CI.
//! - `GET /api/v1/cis/{id}`: the full CI, with its latest health sample (`null` if none) and
//!   its relationships.
//! - `GET /api/v1/cis/{id}/software`: the CI's packages by name, paged by `limit` and `cursor`.
//!   A malformed cursor is `400 invalid_cursor`; a well-formed one that names no catalog row
//!   (this list never returns such a cursor) answers an empty page with `next_cursor: null`.
//! - `GET /api/v1/cis/{id}/health?from=&to=&limit=&cursor=`: the samples whose series time is in
//!   the window (RFC 3339; default the 24 hours up to `to`, `to` defaulting to now), oldest
//!   first, paged by `limit` (default 1440, a day at one sample a minute; at most 10080, a week)
//!   and `cursor`. A sample's series time is its `collected_at` unless that was more than 5
//!   minutes ahead of the collector's clock when it arrived; then it is the arrival time, and
//!   the sample keeps its own `collected_at`. The window never reaches past now plus 5 minutes.

use std::borrow::Cow;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use census_common::{ErrorBody, ErrorCode, FilesystemUsage, HealthSample};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::openapi::schema::{ArrayBuilder, Schema};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use super::{
    ApiError, AppState, cursor, parse_limit, parse_limit_within, query_params, rfc3339_utc,
};
use crate::store::{
    CiDetail, CiFilter, CiRecord, HealthCursor, HealthQuery, InstalledSoftware, RelationshipRecord,
};

/// `limit` of the health route: a day of samples at one a minute by default, a week at most.
pub const HEALTH_DEFAULT_LIMIT: u32 = 1440;
pub const HEALTH_MAX_LIMIT: u32 = 10_080;

const STATUSES: &[&str] = &["active", "stale", "retired"];

/// A CI's status.
// For the OpenAPI document only: the store keeps the status as text (its schema allows these
// three) and the list filter checks it against `STATUSES`; a test keeps the two in step.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum CiStatus {
    Active,
    Stale,
    Retired,
}

/// A CI as the list shows it: a summary without `health` and `relationships`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Ci)]
pub struct CiView {
    pub id: i64,
    /// `computer`, `filesystem`, `network_interface`, ...
    pub class: String,
    pub name: String,
    #[schema(value_type = CiStatus)]
    pub status: String,
    /// 1 (highest) to 4.
    #[schema(minimum = 1, maximum = 4)]
    pub criticality: i64,
    /// Free-form and flat: for a computer its hostname, OS, hardware and memory figures.
    #[schema(value_type = Object)]
    pub attributes: Value,
    /// How the CI was identified: the rule that matched (`agent_id` for a computer, `part_key`
    /// for a part of one); null for a CI no rule identified.
    #[schema(required = true)]
    pub identified_by: Option<String>,
    #[serde(with = "rfc3339_utc")]
    #[schema(value_type = String, format = DateTime)]
    pub first_seen: OffsetDateTime,
    #[serde(with = "rfc3339_utc")]
    #[schema(value_type = String, format = DateTime)]
    pub last_seen: OffsetDateTime,
}

impl From<CiRecord> for CiView {
    fn from(ci: CiRecord) -> CiView {
        CiView {
            id: ci.id,
            class: ci.class,
            name: ci.name,
            status: ci.status,
            criticality: ci.criticality,
            attributes: ci.attributes,
            identified_by: ci.identified_by,
            first_seen: ci.first_seen,
            last_seen: ci.last_seen,
        }
    }
}

/// A CI as `GET /api/v1/cis/{id}` shows it: the summary plus `health` and `relationships`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CiDetail)]
pub struct CiDetailView {
    #[serde(flatten)]
    pub ci: CiView,
    /// The latest health sample of the computer's agent; null if there is none.
    #[schema(value_type = Option<HealthSampleView>, required = true)]
    pub health: Option<HealthSample>,
    pub relationships: Vec<RelationshipView>,
}

/// "source `type` target", e.g. computer 1 contains filesystem 2.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Relationship)]
pub struct RelationshipView {
    /// `contains`, `runs_on`, `depends_on`, `hosted_on`, `connects_to`, `member_of`.
    #[serde(rename = "type")]
    pub kind: String,
    pub source: i64,
    pub target: i64,
    pub source_name: String,
    pub target_name: String,
    #[serde(with = "rfc3339_utc")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

impl From<RelationshipRecord> for RelationshipView {
    fn from(r: RelationshipRecord) -> RelationshipView {
        RelationshipView {
            kind: r.kind,
            source: r.source,
            target: r.target,
            source_name: r.source_name,
            target_name: r.target_name,
            created_at: r.created_at,
        }
    }
}

impl From<CiDetail> for CiDetailView {
    fn from(d: CiDetail) -> CiDetailView {
        CiDetailView {
            ci: d.ci.into(),
            health: d.health,
            relationships: d.relationships.into_iter().map(Into::into).collect(),
        }
    }
}

/// [`HealthSample`] as the API answers it: the same fields, every one present (null when the
/// agent did not know it). The derived schema of [`HealthSample`] describes what an agent may
/// send, where unknown fields may also be left out.
pub struct HealthSampleView;

/// [`FilesystemUsage`] as the API answers it, inside [`HealthSampleView`].
pub struct FilesystemUsageView;

impl PartialSchema for HealthSampleView {
    fn schema() -> RefOr<Schema> {
        let mut schema = every_field_present(HealthSample::schema());
        if let RefOr::T(Schema::Object(object)) = &mut schema {
            object.description = Some(
                "A health sample as the collector answers it: every field present, null when \
                 the agent did not know it."
                    .to_owned(),
            );
            object.properties.insert(
                "filesystems".to_owned(),
                ArrayBuilder::new()
                    .items(Ref::from_schema_name(FilesystemUsageView::name()))
                    .into(),
            );
        }
        schema
    }
}

impl ToSchema for HealthSampleView {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("HealthSampleView")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((
            FilesystemUsageView::name().into_owned(),
            FilesystemUsageView::schema(),
        ));
    }
}

impl PartialSchema for FilesystemUsageView {
    fn schema() -> RefOr<Schema> {
        every_field_present(FilesystemUsage::schema())
    }
}

impl ToSchema for FilesystemUsageView {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("FilesystemUsageView")
    }
}

/// The object schema with every property required. Nullable properties stay nullable.
fn every_field_present(mut schema: RefOr<Schema>) -> RefOr<Schema> {
    match &mut schema {
        RefOr::T(Schema::Object(object)) => {
            object.required = object.properties.keys().cloned().collect();
        }
        _ => unreachable!("a derived struct schema is an inline object"),
    }
    schema
}

/// A page of a list. Pass `next_cursor` back as `cursor` for the next page; null on the last.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListView<T> {
    pub items: Vec<T>,
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// A package installed on a CI.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = InstalledSoftware)]
pub struct SoftwareView {
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

impl From<InstalledSoftware> for SoftwareView {
    fn from(s: InstalledSoftware) -> SoftwareView {
        SoftwareView {
            name: s.name,
            version: s.version,
            arch: s.arch,
            vendor: s.vendor,
            source: s.source,
        }
    }
}

/// CI summaries, filtered, by id.
#[utoipa::path(
    get,
    path = "/api/v1/cis",
    operation_id = "list_cis",
    tag = "cis",
    params(
        ("class" = Option<String>, Query, description = "Exact class, e.g. `computer`."),
        ("status" = Option<CiStatus>, Query, description = "Exact status."),
        ("name" = Option<String>, Query, description = "Prefix of the CI name."),
        ("hostname" = Option<String>, Query, description = "Exact `hostname` attribute."),
        ("os" = Option<String>, Query,
            description = "Exact OS name or family, e.g. `Debian GNU/Linux` or `linux`."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
            description = "Page size; default 100."),
        ("cursor" = Option<String>, Query,
            description = "The previous page's `next_cursor`, unchanged."),
    ),
    responses(
        (status = 200, description = "CI summaries (no `health`, no `relationships`), by id.",
            body = ListView<CiView>),
        (status = 400, body = ErrorBody, description = "`invalid_filter`: an unknown, repeated \
            or malformed parameter; `invalid_cursor`: a cursor this list did not return."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    uri: Uri,
) -> Result<Json<ListView<CiView>>, ApiError> {
    let filter = parse_ci_filter(&uri)?;
    let page = state.store.list_cis(filter).await?;
    Ok(Json(ListView {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next.map(|id| cursor::encode(&[id])),
    }))
}

/// The filter of `GET /api/v1/cis` from its query string: only the allowlisted names, each at
/// most once, `status` from its fixed set, `limit` in range, `cursor` one this list returned.
/// Every value becomes a bound parameter of the store's query. The fuzz targets call it.
pub fn parse_ci_filter(uri: &Uri) -> Result<CiFilter, ApiError> {
    let mut params = query_params(
        uri,
        &[
            "class", "status", "name", "hostname", "os", "limit", "cursor",
        ],
    )?;
    if let Some(status) = params.get("status")
        && !STATUSES.contains(&status.as_str())
    {
        return Err(ApiError::invalid_filter(format!(
            "status must be one of {}, not {status:?}",
            STATUSES.join(", ")
        )));
    }
    let limit = parse_limit(params.get("limit"))?;
    let after = match params.get("cursor") {
        Some(c) => Some(cursor::decode(c, 1)?[0]),
        None => None,
    };
    Ok(CiFilter {
        class: params.remove("class"),
        status: params.remove("status"),
        name_prefix: params.remove("name"),
        hostname: params.remove("hostname"),
        os: params.remove("os"),
        after,
        limit,
    })
}

/// A CI id from the path: a positive integer.
fn ci_id(path: Result<Path<String>, PathRejection>) -> Result<i64, ApiError> {
    let text = path
        .map(|Path(text)| text)
        .map_err(|e| ApiError::bad_request(ErrorCode::BadRequest, e.body_text()))?;
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::BadRequest,
                format!("CI id must be a positive integer, not {text:?}"),
            )
        })
}

fn no_such_ci(id: i64) -> ApiError {
    ApiError::not_found(format!("there is no CI with id {id}"))
}

/// One CI with its latest health sample and its relationships.
#[utoipa::path(
    get,
    path = "/api/v1/cis/{id}",
    operation_id = "get_ci",
    tag = "cis",
    params(("id" = i64, Path, minimum = 1, description = "The CI's id.")),
    responses(
        (status = 200, description = "The full CI: the summary plus its latest health sample \
            and its relationships.", body = CiDetailView),
        (status = 400, body = ErrorBody, description = "`bad_request`: the id is not a positive \
            integer; `invalid_filter`: a query parameter (this route takes none)."),
        (status = 404, body = ErrorBody, description = "`not_found`: no CI has this id."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn get(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Json<CiDetailView>, ApiError> {
    let id = ci_id(path)?;
    query_params(&uri, &[])?;
    let detail = state
        .store
        .get_ci(id)
        .await?
        .ok_or_else(|| no_such_ci(id))?;
    Ok(Json(detail.into()))
}

/// The software installed on a CI.
#[utoipa::path(
    get,
    path = "/api/v1/cis/{id}/software",
    operation_id = "list_ci_software",
    tag = "cis",
    params(
        ("id" = i64, Path, minimum = 1, description = "The CI's id."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
            description = "Page size; default 100."),
        ("cursor" = Option<String>, Query, description = "The previous page's `next_cursor`, \
            unchanged. A well-formed cursor naming no package answers an empty page."),
    ),
    responses(
        (status = 200, description = "The CI's packages, by name. With `Accept: text/csv`, \
            the page as CSV with the columns `name,version,arch,vendor,source`; its next cursor \
            in the `X-Next-Cursor` and `Link` headers.",
            content((ListView<SoftwareView> = "application/json"), (String = "text/csv"))),
        (status = 400, body = ErrorBody, description = "`bad_request`: the id is not a positive \
            integer; `invalid_filter`: an unknown, repeated or malformed parameter; \
            `invalid_cursor`: a malformed cursor."),
        (status = 404, body = ErrorBody, description = "`not_found`: no CI has this id."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn software(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let id = ci_id(path)?;
    let params = query_params(&uri, &["limit", "cursor"])?;
    let limit = parse_limit(params.get("limit"))?;
    let after = match params.get("cursor") {
        Some(c) => Some(cursor::decode(c, 1)?[0]),
        None => None,
    };
    let page = state
        .store
        .ci_software(id, after, limit)
        .await?
        .ok_or_else(|| no_such_ci(id))?;
    let next_cursor = page.next.map(|sw| cursor::encode(&[sw]));
    if super::csv::wants_csv(&headers) {
        let csv = super::software::ci_software_csv(&uri, &page.items, next_cursor.as_deref());
        return Ok(csv);
    }
    Ok(Json(ListView {
        items: page
            .items
            .into_iter()
            .map(Into::into)
            .collect::<Vec<SoftwareView>>(),
        next_cursor,
    })
    .into_response())
}

fn parse_time(name: &str, value: Option<&String>) -> Result<Option<OffsetDateTime>, ApiError> {
    value
        .map(|text| {
            OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
                ApiError::invalid_filter(format!(
                    "{name} must be an RFC 3339 time such as 2025-03-01T12:00:00Z, not {text:?}"
                ))
            })
        })
        .transpose()
}

/// A CI's health samples in a time window, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/cis/{id}/health",
    operation_id = "list_ci_health",
    tag = "cis",
    params(
        ("id" = i64, Path, minimum = 1, description = "The CI's id."),
        ("from" = Option<String>, Query, format = DateTime,
            description = "Start of the window (inclusive); default 24 hours before `to`."),
        ("to" = Option<String>, Query, format = DateTime,
            description = "End of the window (inclusive); default now. The window never \
            reaches past now plus 5 minutes."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 10080,
            description = "Page size; default 1440 (a day at one sample a minute)."),
        ("cursor" = Option<String>, Query,
            description = "The previous page's `next_cursor`, unchanged."),
    ),
    responses(
        (status = 200, description = "Health samples whose series time is in the window, \
            oldest first.", body = ListView<HealthSampleView>),
        (status = 400, body = ErrorBody, description = "`bad_request`: the id is not a positive \
            integer; `invalid_filter`: an unknown, repeated or malformed parameter, or `from` \
            after `to`; `invalid_cursor`: a cursor this list did not return."),
        (status = 404, body = ErrorBody, description = "`not_found`: no CI has this id."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn health(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Json<ListView<HealthSample>>, ApiError> {
    let id = ci_id(path)?;
    let params = query_params(&uri, &["from", "to", "limit", "cursor"])?;
    let from = parse_time("from", params.get("from"))?;
    let to = parse_time("to", params.get("to"))?;
    let limit = parse_limit_within(params.get("limit"), HEALTH_DEFAULT_LIMIT, HEALTH_MAX_LIMIT)?;
    let after = match params.get("cursor") {
        Some(c) => {
            let keys = cursor::decode(c, 2)?;
            // `decode` answers only non-negative keys.
            Some(HealthCursor {
                ts: keys[0],
                seen_at_ts: keys[1].unsigned_abs(),
            })
        }
        None => None,
    };
    let now = state.clock.now();
    let (from, to) = match (from, to) {
        (Some(from), Some(to)) => (from, to),
        (Some(from), None) => (from, now),
        (None, Some(to)) => (to - time::Duration::DAY, to),
        (None, None) => (now - time::Duration::DAY, now),
    };
    if from > to {
        return Err(ApiError::invalid_filter("from must not be after to"));
    }
    let query = HealthQuery {
        from,
        to,
        after,
        limit,
    };
    let page = state
        .store
        .ci_health(id, query, now)
        .await?
        .ok_or_else(|| no_such_ci(id))?;
    Ok(Json(ListView {
        items: page.items,
        next_cursor: page
            .next
            .map(|c| cursor::encode(&[c.ts, i64::try_from(c.seen_at_ts).unwrap_or(i64::MAX)])),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_statuses_are_the_ones_the_filter_accepts() {
        let schema = serde_json::to_value(CiStatus::schema()).unwrap();
        assert_eq!(schema["enum"], serde_json::json!(STATUSES));
    }
}
