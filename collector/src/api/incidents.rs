//! `/api/v1/incidents`: the incidents the engine opened, and the work people do on them.
//!
//! - `GET /api/v1/incidents` (viewer): newest first, paged by `limit` (default 50, at most
//!   500) and `cursor`. Filters, all optional and combined with AND: `state` (a comma list of
//!   `new`, `acknowledged`, `in_progress`, `resolved`, `closed`, or `open` for the first
//!   three), `priority` (a comma list of `P1`..`P5`), `severity` (a comma list of `critical`,
//!   `high`, `medium`, `low`), `ci_id`, `rule_id`, `opened_since` (inclusive) and
//!   `opened_before` (exclusive, both RFC 3339), `breached` (`true`: the response or the
//!   resolution target is breached now; `false`: neither is). A bad value is 400
//!   `invalid_filter` naming the parameter. `Accept: text/csv` answers the page as a table.
//! - `GET /api/v1/incidents/{id}` (viewer): `{id}` is `42` or `INC-000042`; the incident with
//!   its whole timeline.
//! - `POST /api/v1/incidents/{id}/<action>` (operator or admin), a JSON object body, answers
//!   200 with the incident and timeline after the change:
//!   `acknowledge {note?}`, `assign {assignee}`, `notes {text}`, `resolve {resolution}`,
//!   `close {note?}`, `reopen {reason}`, `priority {priority, reason}`. An unknown incident is
//!   404 `not_found`, an action its state does not allow 409 `conflict` (the message says the
//!   state and what is allowed), a bad body 422 `invalid_field` (naming the field); a refused
//!   action writes nothing. The actor on the timeline is `api:<token name>`. The lifecycle and
//!   its rules are in `store::incident_ops`.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use census_common::{ErrorBody, ErrorCode};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use super::auth::AdminPrincipal;
use super::ci_admin::{Body, refused};
use super::cis::{ListView, parse_time};
use super::csv::{self, Cell};
use super::{ApiError, AppState, cursor, parse_limit_within, query_params};
use crate::incidents::priority;
use crate::incidents::rules::Severity;
use crate::store::incidents::{OPEN_STATES, parse_number};
use crate::store::{Incident, IncidentAction, IncidentDetail, IncidentFilter, Source};

/// `limit` of the list when none is given, and the most it may be.
pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

/// Every state, in lifecycle order.
const STATES: &[&str] = &["new", "acknowledged", "in_progress", "resolved", "closed"];

/// Longest assignee, note, resolution and reason, in characters.
const MAX_ASSIGNEE: usize = 200;
const MAX_TEXT: usize = 10_000;
const MAX_PRIORITY_REASON: usize = 1000;

/// The query parameters of the list.
const LIST_PARAMS: &[&str] = &[
    "state",
    "priority",
    "severity",
    "ci_id",
    "rule_id",
    "opened_since",
    "opened_before",
    "breached",
    "limit",
    "cursor",
];

/// The columns of the list as CSV.
const CSV_COLUMNS: &[&str] = &[
    "id",
    "number",
    "state",
    "priority",
    "severity",
    "ci_id",
    "ci_name",
    "rule_id",
    "rule_name",
    "dimension",
    "title",
    "assignee",
    "opened_at",
    "acknowledged_at",
    "resolved_at",
    "closed_at",
    "response_due_at",
    "resolve_due_at",
    "response_breached",
    "resolve_breached",
    "reopen_count",
];

/// The body of `acknowledge` and `close`.
#[derive(ToSchema)]
pub struct NoteBody {
    /// Put on the timeline event; at most 10000 characters.
    pub note: Option<String>,
}

/// The body of `assign`.
#[derive(ToSchema)]
pub struct AssignBody {
    /// Who works the incident: 1 to 200 characters, not blank.
    pub assignee: String,
}

/// The body of `notes`.
#[derive(ToSchema)]
pub struct TextBody {
    /// 1 to 10000 characters, not blank.
    pub text: String,
}

/// The body of `resolve`.
#[derive(ToSchema)]
pub struct ResolveBody {
    /// What was done: 1 to 10000 characters, not blank.
    pub resolution: String,
}

/// The body of `reopen`.
#[derive(ToSchema)]
pub struct ReopenBody {
    /// Why: 1 to 10000 characters, not blank.
    pub reason: String,
}

/// A priority label.
// For the OpenAPI document only: the API takes and gives priorities as text.
#[derive(ToSchema)]
pub enum PriorityLabel {
    P1,
    P2,
    P3,
    P4,
    P5,
}

/// The body of `priority`.
#[derive(ToSchema)]
pub struct PriorityBody {
    #[schema(value_type = PriorityLabel)]
    pub priority: String,
    /// Why the matrix's priority is overridden: 1 to 1000 characters, not blank.
    pub reason: String,
}

/// The incident id of the path: `42` or `INC-000042`. Anything else names no incident.
fn incident_id(path: Result<Path<String>, PathRejection>) -> Result<i64, ApiError> {
    let text = path
        .map(|Path(text)| text)
        .map_err(|e| ApiError::bad_request(ErrorCode::BadRequest, e.body_text()))?;
    parse_number(&text).ok_or_else(|| {
        ApiError::not_found(format!(
            "there is no incident {text:?}; an incident id is a number such as 42 or INC-000042"
        ))
    })
}

fn no_such_incident(id: i64) -> ApiError {
    ApiError::not_found(format!(
        "there is no incident {}",
        crate::store::incidents::number(id)
    ))
}

fn invalid_field(message: String) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::InvalidField,
        message,
    )
}

/// `text` as field `name`: 1 to `max` characters and not only blanks.
fn checked_text(name: &str, text: String, max: usize) -> Result<String, ApiError> {
    let chars = text.chars().count();
    if chars > max {
        return Err(invalid_field(format!(
            "{name} must be at most {max} characters long, not {chars}"
        )));
    }
    if text.trim().is_empty() {
        return Err(invalid_field(format!("{name} must not be empty or blank")));
    }
    Ok(text)
}

fn required_text(body: &mut Body, name: &str, max: usize) -> Result<String, ApiError> {
    checked_text(name, body.required_string(name)?, max)
}

/// An optional note: absent or null is none.
fn optional_note(body: &mut Body) -> Result<Option<String>, ApiError> {
    body.nullable_string("note")?
        .flatten()
        .map(|text| checked_text("note", text, MAX_TEXT))
        .transpose()
}

/// Does `action` on the incident of the path and answers it as it then is.
async fn act(
    state: AppState,
    principal: AdminPrincipal,
    id: i64,
    action: IncidentAction,
) -> Result<Json<IncidentDetail>, ApiError> {
    let detail = state
        .store
        .act_on_incident(id, action, Source::Api(principal.name), state.clock.now())
        .await?
        .map_err(refused)?;
    Ok(Json(detail))
}

/// Incidents, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/incidents",
    operation_id = "list_incidents",
    tag = "incidents",
    params(
        ("state" = Option<String>, Query, description = "A comma list of `new`, \
            `acknowledged`, `in_progress`, `resolved`, `closed`; `open` stands for the first \
            three."),
        ("priority" = Option<String>, Query, description = "A comma list of `P1` to `P5`."),
        ("severity" = Option<String>, Query, description = "A comma list of `critical`, \
            `high`, `medium`, `low`: the rule's severity when the incident opened."),
        ("ci_id" = Option<i64>, Query, minimum = 1, description = "The CI's id."),
        ("rule_id" = Option<i64>, Query, minimum = 1, description = "The rule's id."),
        ("opened_since" = Option<String>, Query, format = DateTime,
            description = "Opened at or after this time."),
        ("opened_before" = Option<String>, Query, format = DateTime,
            description = "Opened before this time."),
        ("breached" = Option<bool>, Query, description = "`true`: the response or the \
            resolution target is breached now (`response_breached` or `resolve_breached`); \
            `false`: neither is."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500,
            description = "Page size; default 50."),
        ("cursor" = Option<String>, Query,
            description = "The previous page's `next_cursor`, unchanged."),
    ),
    responses(
        (status = 200, description = "Incidents, newest (highest id) first, without their \
            timelines. With `Accept: text/csv`, the page as a CSV table (the next cursor in \
            `X-Next-Cursor` and `Link`).",
            content(
                (ListView<Incident> = "application/json"),
                (String = "text/csv"),
            )),
        (status = 400, body = ErrorBody, description = "`invalid_filter`: an unknown, repeated \
            or malformed parameter (the message names it and what it takes); \
            `invalid_cursor`: a cursor this list did not return."),
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
    let filter = parse_filter(&uri)?;
    let page = state
        .store
        .list_incidents(filter, state.clock.now())
        .await?;
    let next_cursor = page.next.map(|id| cursor::encode(&[id]));
    if csv::wants_csv(&headers) {
        let rows: Vec<Vec<Cell>> = page.items.into_iter().map(csv_row).collect();
        return Ok(csv::response(
            &uri,
            CSV_COLUMNS,
            &rows,
            next_cursor.as_deref(),
        ));
    }
    Ok(Json(ListView {
        items: page.items,
        next_cursor,
    })
    .into_response())
}

fn csv_row(i: Incident) -> Vec<Cell> {
    let time = |t: OffsetDateTime| t.format(&Rfc3339).map_or(Cell::Empty, Cell::Text);
    let opt_time = |t: Option<OffsetDateTime>| t.map_or(Cell::Empty, time);
    vec![
        i.id.into(),
        i.number.into(),
        i.state.into(),
        i.priority.into(),
        i.severity.into(),
        i.ci_id.into(),
        i.ci_name.into(),
        i.rule_id.into(),
        i.rule_name.into(),
        i.dimension.into(),
        i.title.into(),
        i.assignee.into(),
        time(i.opened_at),
        opt_time(i.acknowledged_at),
        opt_time(i.resolved_at),
        opt_time(i.closed_at),
        time(i.response_due_at),
        time(i.resolve_due_at),
        i.response_breached.into(),
        i.resolve_breached.into(),
        i.reopen_count.into(),
    ]
}

/// The items of a comma list parameter, each checked by `parse`.
fn comma_list<T>(
    name: &str,
    value: Option<&String>,
    allowed: &str,
    parse: impl Fn(&str) -> Option<Vec<T>>,
) -> Result<Vec<T>, ApiError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let mut items = Vec::new();
    for item in value.split(',') {
        let found = parse(item.trim()).ok_or_else(|| {
            ApiError::invalid_filter(format!(
                "{name} must be a comma-separated list of {allowed}; {item:?} is not one"
            ))
        })?;
        items.extend(found);
    }
    Ok(items)
}

fn parse_filter(uri: &Uri) -> Result<IncidentFilter, ApiError> {
    let params = query_params(uri, LIST_PARAMS)?;
    let mut states: Vec<String> = comma_list(
        "state",
        params.get("state"),
        "new, acknowledged, in_progress, resolved, closed or open",
        |item| match item {
            "open" => Some(OPEN_STATES.iter().map(|s| (*s).to_owned()).collect()),
            _ if STATES.contains(&item) => Some(vec![item.to_owned()]),
            _ => None,
        },
    )?;
    states.sort();
    states.dedup();
    let priorities = comma_list("priority", params.get("priority"), "P1 to P5", |item| {
        priority::parse_label(item).map(|p| vec![p])
    })?;
    let severities = comma_list(
        "severity",
        params.get("severity"),
        "critical, high, medium or low",
        |item| Severity::parse(item).map(|s| vec![s.as_str().to_owned()]),
    )?;
    let id = |name: &str, what: &str| -> Result<Option<i64>, ApiError> {
        params
            .get(name)
            .map(|text| {
                text.parse::<i64>()
                    .ok()
                    .filter(|id| *id > 0)
                    .ok_or_else(|| {
                        ApiError::invalid_filter(format!(
                            "{name} must be {what} (a positive integer), not {text:?}"
                        ))
                    })
            })
            .transpose()
    };
    let breached = params
        .get("breached")
        .map(|text| match text.as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(ApiError::invalid_filter(format!(
                "breached must be true or false, not {text:?}"
            ))),
        })
        .transpose()?;
    let before = match params.get("cursor") {
        Some(c) => Some(cursor::decode(c, 1)?[0]),
        None => None,
    };
    Ok(IncidentFilter {
        states,
        priorities,
        severities,
        ci_id: id("ci_id", "a CI id")?,
        rule_id: id("rule_id", "a rule id")?,
        opened_since: parse_time("opened_since", params.get("opened_since"))?,
        opened_before: parse_time("opened_before", params.get("opened_before"))?,
        breached,
        before,
        limit: parse_limit_within(params.get("limit"), DEFAULT_LIMIT, MAX_LIMIT)?,
    })
}

/// One incident with its timeline.
#[utoipa::path(
    get,
    path = "/api/v1/incidents/{id}",
    operation_id = "get_incident",
    tag = "incidents",
    params(("id" = i64, Path, minimum = 1,
        description = "The incident's id; its number (`INC-000042`) is taken too.")),
    responses(
        (status = 200, description = "The incident and its timeline, oldest event first.",
            body = IncidentDetail),
        (status = 400, body = ErrorBody,
            description = "`invalid_filter`: a query parameter (this route takes none)."),
        (status = 404, body = ErrorBody, description = "`not_found`: no incident has this id \
            or number."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn get(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Json<IncidentDetail>, ApiError> {
    let id = incident_id(path)?;
    query_params(&uri, &[])?;
    let detail = state
        .store
        .get_incident(id, state.clock.now())
        .await?
        .ok_or_else(|| no_such_incident(id))?;
    Ok(Json(detail))
}

/// Acknowledges a new incident.
#[utoipa::path(
    post,
    path = "/api/v1/incidents/{id}/acknowledge",
    operation_id = "acknowledge_incident",
    tag = "incidents",
    params(("id" = i64, Path, minimum = 1,
        description = "The incident's id; its number (`INC-000042`) is taken too.")),
    request_body = NoteBody,
    responses(
        (status = 200, description = "Now `acknowledged`, with an `acknowledged` timeline \
            event and an `incident.acknowledged` webhook. `acknowledged_at` is the first \
            acknowledgement: a reopened incident keeps the one it had.",
            body = IncidentDetail),
        (status = 400, body = ErrorBody, description = "`invalid_body`: not a JSON object."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such incident."),
        (status = 409, body = ErrorBody, description = "`conflict`: the incident is not `new`."),
        (status = 413, body = ErrorBody, description = "`payload_too_large`."),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`: not JSON."),
        (status = 422, body = ErrorBody, description = "`invalid_field`: an unknown field or \
            a bad note; the message names it."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn acknowledge(
    State(state): State<AppState>,
    Extension(principal): Extension<AdminPrincipal>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<IncidentDetail>, ApiError> {
    let id = incident_id(path)?;
    let mut body = Body::parse(body, &["note"])?;
    let note = optional_note(&mut body)?;
    act(state, principal, id, IncidentAction::Acknowledge { note }).await
}

/// Assigns an open incident; it is then `in_progress`.
#[utoipa::path(
    post,
    path = "/api/v1/incidents/{id}/assign",
    operation_id = "assign_incident",
    tag = "incidents",
    params(("id" = i64, Path, minimum = 1,
        description = "The incident's id; its number (`INC-000042`) is taken too.")),
    request_body = AssignBody,
    responses(
        (status = 200, description = "Now `in_progress` with this assignee and an `assigned` \
            timeline event (`from`, `to`). A `new` incident is acknowledged too (an \
            `acknowledged` event and webhook).", body = IncidentDetail),
        (status = 400, body = ErrorBody, description = "`invalid_body`: not a JSON object."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such incident."),
        (status = 409, body = ErrorBody, description = "`conflict`: the incident is resolved \
            or closed."),
        (status = 413, body = ErrorBody, description = "`payload_too_large`."),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`: not JSON."),
        (status = 422, body = ErrorBody, description = "`invalid_field`: `assignee` missing, \
            blank or too long, or an unknown field."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn assign(
    State(state): State<AppState>,
    Extension(principal): Extension<AdminPrincipal>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<IncidentDetail>, ApiError> {
    let id = incident_id(path)?;
    let mut body = Body::parse(body, &["assignee"])?;
    let assignee = required_text(&mut body, "assignee", MAX_ASSIGNEE)?;
    act(state, principal, id, IncidentAction::Assign { assignee }).await
}

/// Adds a note to the timeline, in any state.
#[utoipa::path(
    post,
    path = "/api/v1/incidents/{id}/notes",
    operation_id = "add_incident_note",
    tag = "incidents",
    params(("id" = i64, Path, minimum = 1,
        description = "The incident's id; its number (`INC-000042`) is taken too.")),
    request_body = TextBody,
    responses(
        (status = 200, description = "The incident with a `note` timeline event (`text`).",
            body = IncidentDetail),
        (status = 400, body = ErrorBody, description = "`invalid_body`: not a JSON object."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such incident."),
        (status = 413, body = ErrorBody, description = "`payload_too_large`."),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`: not JSON."),
        (status = 422, body = ErrorBody, description = "`invalid_field`: `text` missing, \
            blank or too long, or an unknown field."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn notes(
    State(state): State<AppState>,
    Extension(principal): Extension<AdminPrincipal>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<IncidentDetail>, ApiError> {
    let id = incident_id(path)?;
    let mut body = Body::parse(body, &["text"])?;
    let text = required_text(&mut body, "text", MAX_TEXT)?;
    act(state, principal, id, IncidentAction::Note { text }).await
}

/// Resolves an open incident with a resolution note.
#[utoipa::path(
    post,
    path = "/api/v1/incidents/{id}/resolve",
    operation_id = "resolve_incident",
    tag = "incidents",
    params(("id" = i64, Path, minimum = 1,
        description = "The incident's id; its number (`INC-000042`) is taken too.")),
    request_body = ResolveBody,
    responses(
        (status = 200, description = "Now `resolved` with the resolution, `resolved_by` the \
            caller, a `resolved` timeline event and an `incident.resolved` webhook.",
            body = IncidentDetail),
        (status = 400, body = ErrorBody, description = "`invalid_body`: not a JSON object."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such incident."),
        (status = 409, body = ErrorBody, description = "`conflict`: the incident is resolved \
            or closed already."),
        (status = 413, body = ErrorBody, description = "`payload_too_large`."),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`: not JSON."),
        (status = 422, body = ErrorBody, description = "`invalid_field`: `resolution` \
            missing, blank or too long, or an unknown field."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn resolve(
    State(state): State<AppState>,
    Extension(principal): Extension<AdminPrincipal>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<IncidentDetail>, ApiError> {
    let id = incident_id(path)?;
    let mut body = Body::parse(body, &["resolution"])?;
    let resolution = required_text(&mut body, "resolution", MAX_TEXT)?;
    act(state, principal, id, IncidentAction::Resolve { resolution }).await
}

/// Closes a resolved incident, for good.
#[utoipa::path(
    post,
    path = "/api/v1/incidents/{id}/close",
    operation_id = "close_incident",
    tag = "incidents",
    params(("id" = i64, Path, minimum = 1,
        description = "The incident's id; its number (`INC-000042`) is taken too.")),
    request_body = NoteBody,
    responses(
        (status = 200, description = "Now `closed` (final: only notes are added after), with \
            `closed_at` and a `closed` timeline event.", body = IncidentDetail),
        (status = 400, body = ErrorBody, description = "`invalid_body`: not a JSON object."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such incident."),
        (status = 409, body = ErrorBody, description = "`conflict`: the incident is not \
            `resolved` (still open, or closed already)."),
        (status = 413, body = ErrorBody, description = "`payload_too_large`."),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`: not JSON."),
        (status = 422, body = ErrorBody, description = "`invalid_field`: an unknown field or \
            a bad note; the message names it."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn close(
    State(state): State<AppState>,
    Extension(principal): Extension<AdminPrincipal>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<IncidentDetail>, ApiError> {
    let id = incident_id(path)?;
    let mut body = Body::parse(body, &["note"])?;
    let note = optional_note(&mut body)?;
    act(state, principal, id, IncidentAction::Close { note }).await
}

/// Reopens a resolved incident.
#[utoipa::path(
    post,
    path = "/api/v1/incidents/{id}/reopen",
    operation_id = "reopen_incident",
    tag = "incidents",
    params(("id" = i64, Path, minimum = 1,
        description = "The incident's id; its number (`INC-000042`) is taken too.")),
    request_body = ReopenBody,
    responses(
        (status = 200, description = "Now `new` again, the reopen counted, the resolution \
            cleared, with a `reopened` timeline event (`reason`) and an `incident.reopened` \
            webhook.", body = IncidentDetail),
        (status = 400, body = ErrorBody, description = "`invalid_body`: not a JSON object."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such incident."),
        (status = 409, body = ErrorBody, description = "`conflict`: the incident is open, or \
            closed (final), or another incident for the same CI, rule and dimension is open \
            (the message names it)."),
        (status = 413, body = ErrorBody, description = "`payload_too_large`."),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`: not JSON."),
        (status = 422, body = ErrorBody, description = "`invalid_field`: `reason` missing, \
            blank or too long, or an unknown field."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn reopen(
    State(state): State<AppState>,
    Extension(principal): Extension<AdminPrincipal>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<IncidentDetail>, ApiError> {
    let id = incident_id(path)?;
    let mut body = Body::parse(body, &["reason"])?;
    let reason = required_text(&mut body, "reason", MAX_TEXT)?;
    act(state, principal, id, IncidentAction::Reopen { reason }).await
}

/// Overrides the priority of an open incident.
#[utoipa::path(
    post,
    path = "/api/v1/incidents/{id}/priority",
    operation_id = "set_incident_priority",
    tag = "incidents",
    params(("id" = i64, Path, minimum = 1,
        description = "The incident's id; its number (`INC-000042`) is taken too.")),
    request_body = PriorityBody,
    responses(
        (status = 200, description = "The new priority and `priority_reason`; \
            `response_due_at` and `resolve_due_at` are recomputed from `opened_at` with the \
            new priority's targets (`impact` and `urgency` stay as computed). A \
            `priority_changed` timeline event (`from`, `to`, `reason`).",
            body = IncidentDetail),
        (status = 400, body = ErrorBody, description = "`invalid_body`: not a JSON object."),
        (status = 404, body = ErrorBody, description = "`not_found`: no such incident."),
        (status = 409, body = ErrorBody, description = "`conflict`: the incident is resolved \
            or closed."),
        (status = 413, body = ErrorBody, description = "`payload_too_large`."),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`: not JSON."),
        (status = 422, body = ErrorBody, description = "`invalid_field`: `priority` not one \
            of P1 to P5, `reason` missing, blank or too long, or an unknown field."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn set_priority(
    State(state): State<AppState>,
    Extension(principal): Extension<AdminPrincipal>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<IncidentDetail>, ApiError> {
    let id = incident_id(path)?;
    let mut body = Body::parse(body, &["priority", "reason"])?;
    let label = body.required_string("priority")?;
    let priority = priority::parse_label(&label).ok_or_else(|| {
        invalid_field(format!(
            "priority must be one of P1, P2, P3, P4, P5, not {label:?}"
        ))
    })?;
    let reason = required_text(&mut body, "reason", MAX_PRIORITY_REASON)?;
    act(
        state,
        principal,
        id,
        IncidentAction::Priority { priority, reason },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::PartialSchema;

    #[test]
    fn the_documented_priorities_are_the_labels() {
        let schema = serde_json::to_value(PriorityLabel::schema()).unwrap();
        let labels: Vec<String> = (1..=5).map(priority::label).collect();
        assert_eq!(schema["enum"], serde_json::json!(labels));
    }

    #[test]
    fn a_comma_list_names_the_bad_item() {
        let uri: Uri = "/api/v1/incidents?state=open,gone".parse().unwrap();
        let err = parse_filter(&uri).unwrap_err();
        assert_eq!(err.code(), "invalid_filter");
        let uri: Uri = "/api/v1/incidents?state=open,resolved&priority=P1,p2"
            .parse()
            .unwrap();
        let filter = parse_filter(&uri).unwrap();
        assert_eq!(
            filter.states,
            ["acknowledged", "in_progress", "new", "resolved"]
        );
        assert_eq!(filter.priorities, [1, 2]);
    }
}
