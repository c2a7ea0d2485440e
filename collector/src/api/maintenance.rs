//! `/api/v1/maintenance`: maintenance windows. While a window covers a CI, the incident engine
//! opens no incident for it; a breach still firing when the window ends opens then.
//!
//! - `POST /api/v1/maintenance` (operator) `{ "scope", "starts_at"?, "ends_at", "reason" }`:
//!   `scope` is required (`{}` covers every CI: say so on purpose), every id in `scope.ci_ids`
//!   must be a CI; `starts_at` defaults to now and may be in the past; `ends_at` must be after
//!   `starts_at` and in the future (a window wholly in the past holds nothing back), at most
//!   366 days after `starts_at`; `reason` 1 to 1000 characters. 201 with the window and a
//!   `Location` header.
//! - `GET /api/v1/maintenance` (viewer): filters `active` (`true`/`false`, at the collector's
//!   now) and `ci_id` (the windows whose scope matches that CI; none for a CI that does not
//!   exist), `limit` (1 to 1000, default 100) and `cursor`; by id.
//! - `GET /api/v1/maintenance/{id}` (viewer), `PATCH` (operator: `ends_at`, `reason`,
//!   `scope`), `DELETE` (operator, 204). An `ends_at` at or before now ends the window now (a
//!   window that is over stays as it is; one that has not started cannot end: delete it).
//!
//! Times are RFC 3339; the collector keeps them to the millisecond and answers them in UTC.
//! Field errors are 422 `invalid_field` naming the field.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Extension, Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use census_common::{ErrorBody, ErrorCode};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use super::auth::AdminPrincipal;
use super::ci_admin::{positive_id, refused};
use super::cis::ListView;
use super::rules::{Fields, scope, text};
use super::{ApiError, AppState, cursor, parse_limit, query_params, rfc3339_utc};
use crate::incidents::scope::Scope;
use crate::store::{
    MaintenanceFilter, MaintenancePatch, MaintenanceWindow, NewMaintenance, Source,
};

/// A maintenance window.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = MaintenanceWindow)]
pub struct MaintenanceView {
    pub id: i64,
    /// The CIs it covers; `{}`: every CI.
    pub scope: Scope,
    /// Inclusive.
    #[serde(with = "rfc3339_utc")]
    #[schema(value_type = String, format = DateTime)]
    pub starts_at: OffsetDateTime,
    /// Exclusive.
    #[serde(with = "rfc3339_utc")]
    #[schema(value_type = String, format = DateTime)]
    pub ends_at: OffsetDateTime,
    pub reason: String,
    /// `api:<token name>`.
    pub created_by: String,
    #[serde(with = "rfc3339_utc")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// Whether it holds incidents back now (`starts_at <= now < ends_at`).
    pub active: bool,
}

impl MaintenanceView {
    fn new(window: MaintenanceWindow, now: OffsetDateTime) -> MaintenanceView {
        MaintenanceView {
            active: window.active_at(now),
            id: window.id,
            scope: window.scope,
            starts_at: window.starts_at,
            ends_at: window.ends_at,
            reason: window.reason,
            created_by: window.created_by,
            created_at: window.created_at,
        }
    }
}

/// The body of `POST /api/v1/maintenance`.
#[derive(ToSchema)]
pub struct NewMaintenanceBody {
    /// The CIs it covers; `{}` covers every CI. Every id in `ci_ids` must be a CI.
    pub scope: Scope,
    /// RFC 3339; default now. May be in the past.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub starts_at: Option<String>,
    /// RFC 3339, in the future, after `starts_at` and at most 366 days after it.
    #[schema(value_type = String, format = DateTime)]
    pub ends_at: String,
    /// 1 to 1000 characters.
    pub reason: String,
}

/// The body of `PATCH /api/v1/maintenance/{id}`: the fields to change.
#[derive(ToSchema)]
pub struct MaintenancePatchBody {
    /// RFC 3339. At or before now: the window ends now. Later: it ends then (also reopening
    /// one that was over), at most 366 days after `starts_at`.
    #[schema(required = false, value_type = String, format = DateTime)]
    pub ends_at: String,
    #[schema(required = false)]
    pub reason: String,
    #[schema(required = false)]
    pub scope: Scope,
}

fn invalid_field(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::InvalidField,
        message,
    )
}

fn time_field(name: &str, value: Value) -> Result<OffsetDateTime, ApiError> {
    let text = text(name, value)?;
    OffsetDateTime::parse(&text, &Rfc3339).map_err(|_| {
        invalid_field(format!(
            "{name}: an RFC 3339 time like 2026-05-01T22:00:00Z, not {text:?}"
        ))
    })
}

fn window_id(path: Result<Path<String>, PathRejection>) -> Result<i64, ApiError> {
    positive_id(path, "maintenance window id")
}

/// Maintenance windows, by id.
#[utoipa::path(
    get,
    path = "/api/v1/maintenance",
    operation_id = "list_maintenance",
    tag = "maintenance",
    params(
        ("active" = Option<bool>, Query, description = "Only the windows that hold incidents \
            back now (`true`), or only the others (`false`: over or not started)."),
        ("ci_id" = Option<i64>, Query, minimum = 1, description = "Only the windows whose \
            scope matches this CI (none when there is no such CI)."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
            description = "Page size; default 100."),
        ("cursor" = Option<String>, Query,
            description = "The previous page's `next_cursor`, unchanged."),
    ),
    responses(
        (status = 200, description = "Windows, by id.", body = ListView<MaintenanceView>),
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
) -> Result<Json<ListView<MaintenanceView>>, ApiError> {
    let params = query_params(&uri, &["active", "ci_id", "limit", "cursor"])?;
    let active = match params.get("active").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(ApiError::invalid_filter(format!(
                "active must be true or false, not {other:?}"
            )));
        }
    };
    let ci_id = params
        .get("ci_id")
        .map(|text| {
            text.parse::<i64>()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(|| {
                    ApiError::invalid_filter(format!(
                        "ci_id must be a CI id (a positive integer), not {text:?}"
                    ))
                })
        })
        .transpose()?;
    let after = match params.get("cursor") {
        Some(c) => Some(cursor::decode(c, 1)?[0]),
        None => None,
    };
    let filter = MaintenanceFilter {
        active,
        ci_id,
        after,
        limit: parse_limit(params.get("limit"))?,
    };
    let now = state.clock.now();
    let page = state.store.list_maintenance(filter, now).await?;
    Ok(Json(ListView {
        items: page
            .items
            .into_iter()
            .map(|w| MaintenanceView::new(w, now))
            .collect(),
        next_cursor: page.next.map(|id| cursor::encode(&[id])),
    }))
}

/// One maintenance window.
#[utoipa::path(
    get,
    path = "/api/v1/maintenance/{id}",
    operation_id = "get_maintenance",
    tag = "maintenance",
    params(("id" = i64, Path, minimum = 1, description = "The window's id.")),
    responses(
        (status = 200, description = "The window.", body = MaintenanceView),
        (status = 400, body = ErrorBody, description = "`bad_request`: the id is not a positive \
            integer; `invalid_filter`: a query parameter (this route takes none)."),
        (status = 404, body = ErrorBody, description = "`not_found`: no window has this id."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn get(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Json<MaintenanceView>, ApiError> {
    let id = window_id(path)?;
    query_params(&uri, &[])?;
    let found = state.store.get_maintenance(id).await?.ok_or_else(|| {
        ApiError::not_found(format!("there is no maintenance window with id {id}"))
    })?;
    Ok(Json(MaintenanceView::new(found, state.clock.now())))
}

/// Makes a maintenance window.
#[utoipa::path(
    post,
    path = "/api/v1/maintenance",
    operation_id = "create_maintenance",
    tag = "maintenance",
    request_body = NewMaintenanceBody,
    responses(
        (status = 201, description = "The window made.", body = MaintenanceView,
            headers(("Location" = String, description = "The window's URL."))),
        (status = 400, body = ErrorBody, description = "`invalid_body`: not a JSON object."),
        (status = 413, body = ErrorBody, description = "`payload_too_large`."),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`: not JSON."),
        (status = 422, body = ErrorBody, description = "`invalid_field`: a field missing, \
            unknown or not allowed (a time that is not RFC 3339, an end not after the start \
            or not in the future, a window longer than 366 days, an empty reason, a CI of the \
            scope that does not exist); the message names it."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<AdminPrincipal>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let mut body = Fields::parse(body, &["scope", "starts_at", "ends_at", "reason"])?;
    let now = state.clock.now();
    let new = NewMaintenance {
        scope: scope(body.required("scope")?)?,
        starts_at: body
            .optional("starts_at")
            .map(|v| time_field("starts_at", v))
            .transpose()?
            .unwrap_or(now),
        ends_at: time_field("ends_at", body.required("ends_at")?)?,
        reason: text("reason", body.required("reason")?)?,
    };
    let made = state
        .store
        .create_maintenance(new, Source::Api(principal.name), now)
        .await?
        .map_err(refused)?;
    let location = format!("/api/v1/maintenance/{}", made.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(MaintenanceView::new(made, now)),
    )
        .into_response())
}

/// Ends a maintenance window early, extends it, or changes its reason or scope.
#[utoipa::path(
    patch,
    path = "/api/v1/maintenance/{id}",
    operation_id = "update_maintenance",
    tag = "maintenance",
    params(("id" = i64, Path, minimum = 1, description = "The window's id.")),
    request_body = MaintenancePatchBody,
    responses(
        (status = 200, description = "The window as it now is.", body = MaintenanceView),
        (status = 400, body = ErrorBody, description = "`bad_request`: the id is not a positive \
            integer; `invalid_body`: not a JSON object."),
        (status = 404, body = ErrorBody, description = "`not_found`: no window has this id."),
        (status = 413, body = ErrorBody, description = "`payload_too_large`."),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`: not JSON."),
        (status = 422, body = ErrorBody, description = "`invalid_field`: an unknown field, a \
            null, a time that is not RFC 3339, an end for a window that has not started, a \
            window longer than 366 days, an empty reason, a CI of the scope that does not \
            exist; the message names it."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn update(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<MaintenanceView>, ApiError> {
    let id = window_id(path)?;
    let mut body = Fields::parse(body, &["ends_at", "reason", "scope"])?;
    let patch = MaintenancePatch {
        ends_at: body
            .change("ends_at")?
            .map(|v| time_field("ends_at", v))
            .transpose()?,
        reason: body
            .change("reason")?
            .map(|v| text("reason", v))
            .transpose()?,
        scope: body.change("scope")?.map(scope).transpose()?,
    };
    let now = state.clock.now();
    let changed = state
        .store
        .update_maintenance(id, patch, now)
        .await?
        .map_err(refused)?;
    Ok(Json(MaintenanceView::new(changed, now)))
}

/// Deletes a maintenance window.
#[utoipa::path(
    delete,
    path = "/api/v1/maintenance/{id}",
    operation_id = "delete_maintenance",
    tag = "maintenance",
    params(("id" = i64, Path, minimum = 1, description = "The window's id.")),
    responses(
        (status = 204, description = "Deleted: it holds nothing back any more; a breach it \
            held back opens its incident at the next health sample or silence check."),
        (status = 400, body = ErrorBody, description = "`bad_request`: the id is not a positive \
            integer; `invalid_filter`: a query parameter (this route takes none)."),
        (status = 404, body = ErrorBody, description = "`not_found`: no window has this id."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn delete(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<StatusCode, ApiError> {
    let id = window_id(path)?;
    query_params(&uri, &[])?;
    state.store.delete_maintenance(id).await?.map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}
