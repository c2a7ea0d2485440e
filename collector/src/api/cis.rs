//! `/api/v1/cis` and a CI's sub-resources.
//!
//! - `GET /api/v1/cis`: CI summaries: every CI field except `health` and `relationships`,
//!   which only `GET /api/v1/cis/{id}` returns (they cost a query per CI).
//!   - Filters, each a named parameter, combined with AND, every value a bound SQL parameter:
//!     `class`, `status` (`active`, `stale`, `retired`), `name`, `hostname`, `os_name`,
//!     `os_version`, `vendor`, `model`, `serial`, `has_software` (+ `has_software_version`)
//!     exact; `os` the OS name or family (`Debian GNU/Linux` or `linux`); `name_prefix`
//!     (case-sensitive); `name_contains`, `hostname_contains` (substring, ASCII letters in
//!     either case, `%` `_` `\` literal); `criticality` (1 to 4) and `criticality_max` (at
//!     least this critical); `last_seen_after` (inclusive) and `last_seen_before` (exclusive),
//!     RFC 3339, a computer's `last_seen` being its agent's last report. Retired CIs are left
//!     out unless `status=retired` or `include_retired=true`.
//!   - `sort`: `id` (default), `name`, `hostname`, `os_name`, `os_version`, `vendor`, `model`,
//!     `serial`, `criticality`, `last_seen`, `first_seen`, `class`, `status`; `-` in front for
//!     descending. Ties go by id. CIs without the key (a filesystem has no hostname) come last
//!     ascending and first descending: descending is ascending reversed.
//!   - Paged by `limit` (default 100, at most 1000) and `cursor`, by keyset (see
//!     `store::cis`): the cursor holds the last CI's sort key and id, the sort and a digest of
//!     the filters. A cursor used with another sort or other filters is refused with
//!     `400 invalid_cursor` rather than resuming some other list.
//!   - Anything else (an unknown or repeated parameter, a value outside its set, an empty text
//!     filter, a `*_contains` over 4096 characters, a bad time) is `400 invalid_filter`,
//!     naming the parameter and what it takes.
//!   - `Accept: text/csv` answers the page as CSV ([`CSV_COLUMNS`]; attributes a CI lacks are
//!     empty cells), the next page's URL in `Link` and its cursor in `X-Next-Cursor`.
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
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use super::csv::{self, Cell};
use super::{
    ApiError, AppState, cursor, parse_limit, parse_limit_within, query_params, rfc3339_utc,
};
use crate::store::{
    CiDetail, CiFilter, CiPosition, CiRecord, CiSort, CiSortKey, HealthCursor, HealthQuery,
    Incident, InstalledSoftware, RelationshipRecord, SoftwareMatch, SortValue,
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

/// A CI as `GET /api/v1/cis/{id}` shows it: the summary plus `health`, `relationships` and
/// `open_incidents`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CiDetail)]
pub struct CiDetailView {
    #[serde(flatten)]
    pub ci: CiView,
    /// The latest health sample of the computer's agent; null if there is none.
    #[schema(value_type = Option<HealthSampleView>, required = true)]
    pub health: Option<HealthSample>,
    pub relationships: Vec<RelationshipView>,
    /// The CI's open incidents (`new`, `acknowledged`, `in_progress`), newest first, at most
    /// 100. Always empty in an answer rebuilt for `at`.
    pub open_incidents: Vec<Incident>,
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
            open_incidents: Vec::new(),
        }
    }
}

/// CI `id` as it is now, with its open incidents; 404 when there is no such CI.
pub(crate) async fn current_view(state: &AppState, id: i64) -> Result<CiDetailView, ApiError> {
    let (detail, open_incidents) = state
        .store
        .get_ci_with_incidents(id, state.clock.now())
        .await?
        .ok_or_else(|| no_such_ci(id))?;
    Ok(CiDetailView {
        open_incidents,
        ..detail.into()
    })
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

/// The query parameters of `GET /api/v1/cis`; any other is refused.
pub const LIST_PARAMS: &[&str] = &[
    "class",
    "status",
    "include_retired",
    "name",
    "name_contains",
    "name_prefix",
    "hostname",
    "hostname_contains",
    "os",
    "os_name",
    "os_version",
    "vendor",
    "model",
    "serial",
    "criticality",
    "criticality_max",
    "last_seen_before",
    "last_seen_after",
    "has_software",
    "has_software_version",
    "sort",
    "limit",
    "cursor",
];

/// The text filters: any non-empty text, matched as [`CiFilter`] says.
const TEXT_FILTERS: &[&str] = &[
    "class",
    "name",
    "name_contains",
    "name_prefix",
    "hostname",
    "hostname_contains",
    "os",
    "os_name",
    "os_version",
    "vendor",
    "model",
    "serial",
    "has_software",
    "has_software_version",
];

/// The longest `*_contains` value, in characters: escaped into a `LIKE` pattern it is at most
/// 32770 bytes, inside SQLite's 50000-byte limit on one. Exact values are bounded only by the
/// length of the request line.
pub const MAX_CONTAINS_CHARS: usize = 4096;

/// The columns of the CSV answer, in order.
pub const CSV_COLUMNS: &[&str] = &[
    "id",
    "class",
    "name",
    "status",
    "criticality",
    "hostname",
    "os_name",
    "os_version",
    "vendor",
    "model",
    "serial",
    "identified_by",
    "first_seen",
    "last_seen",
];

/// The `sort` parameter: a key, with a leading `-` for descending order.
// A schema of its own (inlined in the parameter), so the document lists every accepted value
// and it cannot drift from `CiSortKey::ALL`.
pub struct CiSortParam;

impl PartialSchema for CiSortParam {
    fn schema() -> RefOr<Schema> {
        let values: Vec<String> = CiSortKey::ALL
            .into_iter()
            .flat_map(|k| [k.as_str().to_owned(), format!("-{}", k.as_str())])
            .collect();
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(values))
            .description(Some(
                "A sort key, ascending; with a leading `-`, descending. Ties are broken by id.",
            ))
            .into()
    }
}

impl ToSchema for CiSortParam {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("CiSort")
    }
}

/// CI summaries, filtered and sorted; as JSON, or as CSV for `Accept: text/csv`.
#[utoipa::path(
    get,
    path = "/api/v1/cis",
    operation_id = "list_cis",
    tag = "cis",
    params(
        ("class" = Option<String>, Query, min_length = 1,
            description = "Exact class, e.g. `computer`."),
        ("status" = Option<CiStatus>, Query, description = "Exact status. Without it, retired \
            CIs are left out unless `include_retired=true`."),
        ("include_retired" = Option<bool>, Query, description = "`true` lists retired CIs too \
            when no `status` is given; default `false`."),
        ("name" = Option<String>, Query, min_length = 1, description = "Exact CI name."),
        ("name_contains" = Option<String>, Query, min_length = 1, max_length = 4096,
            description = "Substring of the CI name; ASCII letters match either case, `%` and \
            `_` are plain characters."),
        ("name_prefix" = Option<String>, Query, min_length = 1,
            description = "Prefix of the CI name (case-sensitive)."),
        ("hostname" = Option<String>, Query, min_length = 1,
            description = "Exact `hostname` attribute."),
        ("hostname_contains" = Option<String>, Query, min_length = 1, max_length = 4096,
            description = "Substring of the `hostname` attribute, like `name_contains`."),
        ("os" = Option<String>, Query, min_length = 1,
            description = "Exact OS name or family, e.g. `Debian GNU/Linux` or `linux`."),
        ("os_name" = Option<String>, Query, min_length = 1,
            description = "Exact `os_name` attribute."),
        ("os_version" = Option<String>, Query, min_length = 1,
            description = "Exact `os_version` attribute."),
        ("vendor" = Option<String>, Query, min_length = 1,
            description = "Exact hardware `vendor` attribute."),
        ("model" = Option<String>, Query, min_length = 1,
            description = "Exact hardware `model` attribute."),
        ("serial" = Option<String>, Query, min_length = 1,
            description = "Exact hardware `serial` attribute."),
        ("criticality" = Option<i64>, Query, minimum = 1, maximum = 4,
            description = "Exact criticality, 1 (highest) to 4."),
        ("criticality_max" = Option<i64>, Query, minimum = 1, maximum = 4,
            description = "Criticality at most this number: at least this critical."),
        ("last_seen_before" = Option<String>, Query, format = DateTime,
            description = "`last_seen` before this time (exclusive). A computer's `last_seen` \
            is its agent's last report."),
        ("last_seen_after" = Option<String>, Query, format = DateTime,
            description = "`last_seen` at or after this time (inclusive)."),
        ("has_software" = Option<String>, Query, min_length = 1,
            description = "Computers with an installed package of this exact name."),
        ("has_software_version" = Option<String>, Query, min_length = 1,
            description = "With `has_software`: only at this exact version."),
        ("sort" = inline(Option<CiSortParam>), Query, description = "Sort key, `-` for descending; \
            default `id`. CIs without the key (a filesystem has no `hostname`) come last in \
            ascending order and first in descending order."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
            description = "Page size; default 100."),
        ("cursor" = Option<String>, Query, description = "The previous page's `next_cursor`, \
            unchanged, with the same filters and sort."),
    ),
    responses(
        (status = 200, description = "CI summaries (no `health`, no `relationships`) in the \
            asked order. With `Accept: text/csv`, the page as a CSV table (columns id, class, \
            name, status, criticality, hostname, os_name, os_version, vendor, model, serial, \
            identified_by, first_seen, last_seen) and the next page's URL in `Link`.",
            content(
                (ListView<CiView> = "application/json"),
                (String = "text/csv"),
            ),
            headers(
                ("Link" = String, description = "CSV only: `<URL>; rel=\"next\"`, the next \
                    page, when there is one."),
                ("X-Next-Cursor" = String, description = "CSV only: the next page's cursor, \
                    when there is one."),
            ),
        ),
        (status = 400, body = ErrorBody, description = "`invalid_filter`: an unknown, repeated \
            or malformed parameter (the message names it and what is allowed); \
            `invalid_cursor`: a cursor this list did not return, or one returned for another \
            sort or other filters."),
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
    let filter = parse_ci_filter(&uri)?;
    let page = state.store.list_cis(filter.clone()).await?;
    let next_cursor = page.next.map(|position| next_cursor(&filter, &position));
    if csv::wants_csv(&headers) {
        let rows: Vec<Vec<Cell>> = page.items.iter().map(csv_row).collect();
        return Ok(csv::response(
            &uri,
            CSV_COLUMNS,
            &rows,
            next_cursor.as_deref(),
        ));
    }
    Ok(Json(ListView {
        items: page.items.into_iter().map(CiView::from).collect(),
        next_cursor,
    })
    .into_response())
}

fn csv_row(ci: &CiRecord) -> Vec<Cell> {
    let attribute = |key: &str| match ci.attributes.get(key) {
        None | Some(Value::Null) => Cell::Empty,
        Some(Value::String(text)) => Cell::Text(text.clone()),
        Some(other) => Cell::Text(other.to_string()),
    };
    let time = |t: OffsetDateTime| {
        Cell::Text(
            t.to_offset(time::UtcOffset::UTC)
                .format(&Rfc3339)
                .unwrap_or_default(),
        )
    };
    vec![
        ci.id.into(),
        ci.class.as_str().into(),
        ci.name.as_str().into(),
        ci.status.as_str().into(),
        ci.criticality.into(),
        attribute("hostname"),
        attribute("os_name"),
        attribute("os_version"),
        attribute("vendor"),
        attribute("model"),
        attribute("serial"),
        ci.identified_by.as_deref().into(),
        time(ci.first_seen),
        time(ci.last_seen),
    ]
}

/// The filter of `GET /api/v1/cis` from its query string: only [`LIST_PARAMS`], each at most
/// once; text filters non-empty, `*_contains` at most [`MAX_CONTAINS_CHARS`]; `status`, `sort`,
/// `include_retired` from their fixed sets; `criticality` 1 to 4; times RFC 3339; `limit` in
/// range; `cursor` one this list returned for the same sort and filters. Every value becomes a
/// bound parameter of the store's query. The fuzz targets call it.
pub fn parse_ci_filter(uri: &Uri) -> Result<CiFilter, ApiError> {
    let mut params = query_params(uri, LIST_PARAMS)?;
    for name in TEXT_FILTERS {
        if let Some(value) = params.get(*name) {
            if value.is_empty() {
                return Err(ApiError::invalid_filter(format!(
                    "{name} must not be empty; leave it out to not filter on it"
                )));
            }
            let chars = value.chars().count();
            if name.ends_with("_contains") && chars > MAX_CONTAINS_CHARS {
                return Err(ApiError::invalid_filter(format!(
                    "{name} must be at most {MAX_CONTAINS_CHARS} characters long, not {chars}"
                )));
            }
        }
    }
    if let Some(status) = params.get("status")
        && !STATUSES.contains(&status.as_str())
    {
        return Err(ApiError::invalid_filter(format!(
            "status must be one of {}, not {status:?}",
            STATUSES.join(", ")
        )));
    }
    let include_retired = match params.get("include_retired").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::invalid_filter(format!(
                "include_retired must be true or false, not {other:?}"
            )));
        }
    };
    let criticality = parse_criticality("criticality", params.get("criticality"))?;
    let criticality_max = parse_criticality("criticality_max", params.get("criticality_max"))?;
    let last_seen_before = parse_time("last_seen_before", params.get("last_seen_before"))?;
    let last_seen_after = parse_time("last_seen_after", params.get("last_seen_after"))?;
    if let (Some(after), Some(before)) = (last_seen_after, last_seen_before)
        && after >= before
    {
        return Err(ApiError::invalid_filter(
            "last_seen_after must be earlier than last_seen_before",
        ));
    }
    let has_software = match (
        params.remove("has_software"),
        params.remove("has_software_version"),
    ) {
        (Some(name), version) => Some(SoftwareMatch { name, version }),
        (None, Some(_)) => {
            return Err(ApiError::invalid_filter(
                "has_software_version needs has_software, the package name",
            ));
        }
        (None, None) => None,
    };
    let sort = parse_sort(params.get("sort"))?;
    let limit = parse_limit(params.get("limit"))?;
    let mut filter = CiFilter {
        class: params.remove("class"),
        status: params.remove("status"),
        include_retired,
        name: params.remove("name"),
        name_contains: params.remove("name_contains"),
        name_prefix: params.remove("name_prefix"),
        hostname: params.remove("hostname"),
        hostname_contains: params.remove("hostname_contains"),
        os: params.remove("os"),
        os_name: params.remove("os_name"),
        os_version: params.remove("os_version"),
        vendor: params.remove("vendor"),
        model: params.remove("model"),
        serial: params.remove("serial"),
        criticality,
        criticality_max,
        last_seen_before,
        last_seen_after,
        has_software,
        sort,
        after: None,
        limit,
    };
    if let Some(cursor) = params.get("cursor") {
        filter.after = Some(decode_cursor(cursor, sort, &filter_digest(&filter))?);
    }
    Ok(filter)
}

fn parse_criticality(name: &str, value: Option<&String>) -> Result<Option<i64>, ApiError> {
    value
        .map(|text| {
            text.parse::<i64>()
                .ok()
                .filter(|n| (1..=4).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid_filter(format!(
                        "{name} must be an integer from 1 (highest) to 4, not {text:?}"
                    ))
                })
        })
        .transpose()
}

fn parse_sort(value: Option<&String>) -> Result<CiSort, ApiError> {
    let Some(text) = value else {
        return Ok(CiSort::default());
    };
    let (descending, name) = match text.strip_prefix('-') {
        Some(name) => (true, name),
        None => (false, text.as_str()),
    };
    let key = CiSortKey::from_name(name).ok_or_else(|| {
        let keys: Vec<&str> = CiSortKey::ALL.iter().map(|k| k.as_str()).collect();
        ApiError::invalid_filter(format!(
            "sort must be one of {}, with a leading - for descending order; not {text:?}",
            keys.join(", ")
        ))
    })?;
    Ok(CiSort { key, descending })
}

fn sort_text(sort: CiSort) -> String {
    let sign = if sort.descending { "-" } else { "" };
    format!("{sign}{}", sort.key.as_str())
}

/// Prefix of the list's cursors. A cursor is `c1.<sort>.<filter digest>.<key>.<id>`, `<key>`
/// being `n` (no value), `i<integer>` or `t<hex of the UTF-8 text>`. Not a contract: clients
/// pass it back unchanged, and another format gets another prefix.
const CURSOR_PREFIX: &str = "c1.";

/// A digest of every filter (not the sort, position or page size), bound into the cursor so
/// that a cursor is refused with other filters rather than resuming a different list.
fn filter_digest(filter: &CiFilter) -> String {
    let mut hash = Sha256::new();
    let mut put = |name: &str, value: Option<String>| {
        hash.update(name.as_bytes());
        match value {
            None => hash.update([0]),
            Some(value) => {
                hash.update([1]);
                hash.update((value.len() as u64).to_be_bytes());
                hash.update(value.as_bytes());
            }
        }
    };
    let time = |t: Option<OffsetDateTime>| t.map(|t| t.unix_timestamp_nanos().to_string());
    put("class", filter.class.clone());
    put("status", filter.status.clone());
    put("include_retired", Some(filter.include_retired.to_string()));
    put("name", filter.name.clone());
    put("name_contains", filter.name_contains.clone());
    put("name_prefix", filter.name_prefix.clone());
    put("hostname", filter.hostname.clone());
    put("hostname_contains", filter.hostname_contains.clone());
    put("os", filter.os.clone());
    put("os_name", filter.os_name.clone());
    put("os_version", filter.os_version.clone());
    put("vendor", filter.vendor.clone());
    put("model", filter.model.clone());
    put("serial", filter.serial.clone());
    put("criticality", filter.criticality.map(|n| n.to_string()));
    put(
        "criticality_max",
        filter.criticality_max.map(|n| n.to_string()),
    );
    put("last_seen_before", time(filter.last_seen_before));
    put("last_seen_after", time(filter.last_seen_after));
    let software = filter.has_software.as_ref();
    put("has_software", software.map(|s| s.name.clone()));
    put(
        "has_software_version",
        software.and_then(|s| s.version.clone()),
    );
    let digest = hash.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The cursor of the page after `position` in the list `filter` selects and sorts.
pub fn next_cursor(filter: &CiFilter, position: &CiPosition) -> String {
    let key = match &position.key {
        SortValue::Null => "n".to_owned(),
        SortValue::Integer(n) => format!("i{n}"),
        SortValue::Text(text) => {
            let hex: String = text.bytes().map(|b| format!("{b:02x}")).collect();
            format!("t{hex}")
        }
    };
    format!(
        "{CURSOR_PREFIX}{}.{}.{key}.{}",
        sort_text(filter.sort),
        filter_digest(filter),
        position.id
    )
}

/// The position a cursor names, if it was returned for this sort and these filters.
fn decode_cursor(cursor: &str, sort: CiSort, digest: &str) -> Result<CiPosition, ApiError> {
    let invalid = |why: String| ApiError::bad_request(ErrorCode::InvalidCursor, why);
    let malformed = || {
        invalid(
            "cursor is not one this list returned; pass next_cursor unchanged or start \
             without it"
                .to_owned(),
        )
    };
    let parts: Vec<&str> = cursor
        .strip_prefix(CURSOR_PREFIX)
        .ok_or_else(malformed)?
        .split('.')
        .collect();
    let [cursor_sort, cursor_digest, key, id] = parts[..] else {
        return Err(malformed());
    };
    let id = id
        .parse::<i64>()
        .ok()
        .filter(|id| *id >= 0)
        .ok_or_else(malformed)?;
    let key = if key == "n" {
        SortValue::Null
    } else if let Some(n) = key.strip_prefix('i') {
        SortValue::Integer(n.parse().map_err(|_| malformed())?)
    } else if let Some(hex) = key.strip_prefix('t') {
        SortValue::Text(unhex(hex).ok_or_else(malformed)?)
    } else {
        return Err(malformed());
    };
    let expected = sort_text(sort);
    if cursor_sort != expected {
        return Err(invalid(format!(
            "the cursor is for sort={cursor_sort}, not sort={expected}; pass next_cursor \
             with the sort and filters it came with, or start without it"
        )));
    }
    if cursor_digest != digest {
        return Err(invalid(
            "the cursor is for other filters; pass next_cursor with the sort and filters it \
             came with, or start without it"
                .to_owned(),
        ));
    }
    if !sort.key.kind().admits(&key) {
        return Err(malformed());
    }
    Ok(CiPosition { key, id })
}

/// Lowercase hex to UTF-8 text.
fn unhex(hex: &str) -> Option<String> {
    if !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// A CI id from the path: a positive integer.
pub(crate) fn ci_id(path: Result<Path<String>, PathRejection>) -> Result<i64, ApiError> {
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

pub(crate) fn no_such_ci(id: i64) -> ApiError {
    ApiError::not_found(format!("there is no CI with id {id}"))
}

fn not_at(id: i64, at: OffsetDateTime) -> ApiError {
    let at = at.format(&Rfc3339).unwrap_or_default();
    ApiError::not_found(format!(
        "there is no CI with id {id}, or it did not exist yet at {at}"
    ))
}

/// One CI with its latest health sample and its relationships.
#[utoipa::path(
    get,
    path = "/api/v1/cis/{id}",
    operation_id = "get_ci",
    tag = "cis",
    params(
        ("id" = i64, Path, minimum = 1, description = "The CI's id."),
        ("at" = Option<String>, Query, format = DateTime, description = "Answer the CI as it \
            was at this time, rebuilt from its history: name, status, criticality, \
            `identified_by`, attributes and relationships as they were (the other ends' names \
            as they are now); `health` is null, `last_seen` at most `at` and \
            `open_incidents` empty."),
    ),
    responses(
        (status = 200, description = "The full CI: the summary plus its latest health sample, \
            its relationships and its open incidents.", body = CiDetailView),
        (status = 400, body = ErrorBody, description = "`bad_request`: the id is not a positive \
            integer; `invalid_filter`: an unknown parameter, or `at` is not an RFC 3339 time."),
        (status = 404, body = ErrorBody, description = "`not_found`: no CI has this id, or it \
            did not exist yet at `at`."),
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
    let params = query_params(&uri, &["at"])?;
    let view = match parse_time("at", params.get("at"))? {
        Some(at) => state
            .store
            .ci_at(id, at)
            .await?
            .ok_or_else(|| not_at(id, at))?
            .into(),
        None => current_view(&state, id).await?,
    };
    Ok(Json(view))
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
        ("at" = Option<String>, Query, format = DateTime, description = "Answer the packages \
            installed at this time, rebuilt from the CI's history."),
    ),
    responses(
        (status = 200, description = "The CI's packages, by name. With `Accept: text/csv`, \
            the page as CSV with the columns `name,version,arch,vendor,source`; its next cursor \
            in the `X-Next-Cursor` and `Link` headers.",
            content((ListView<SoftwareView> = "application/json"), (String = "text/csv"))),
        (status = 400, body = ErrorBody, description = "`bad_request`: the id is not a positive \
            integer; `invalid_filter`: an unknown, repeated or malformed parameter; \
            `invalid_cursor`: a malformed cursor."),
        (status = 404, body = ErrorBody, description = "`not_found`: no CI has this id, or it \
            did not exist yet at `at`."),
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
    let params = query_params(&uri, &["limit", "cursor", "at"])?;
    let limit = parse_limit(params.get("limit"))?;
    let after = match params.get("cursor") {
        Some(c) => Some(cursor::decode(c, 1)?[0]),
        None => None,
    };
    let page = match parse_time("at", params.get("at"))? {
        Some(at) => state
            .store
            .ci_software_at(id, at, after, limit)
            .await?
            .ok_or_else(|| not_at(id, at))?,
        None => state
            .store
            .ci_software(id, after, limit)
            .await?
            .ok_or_else(|| no_such_ci(id))?,
    };
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

pub(crate) fn parse_time(
    name: &str,
    value: Option<&String>,
) -> Result<Option<OffsetDateTime>, ApiError> {
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
