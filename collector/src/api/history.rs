//! The CMDB's memory: one CI's history, and the change feed across every CI.
//!
//! - `GET /api/v1/cis/{id}/history?kind=&from=&to=&limit=&cursor=`: the CI's changes, newest
//!   first. `kind` is a comma-separated list of change kinds (see [`ChangeKind`]); `from` and
//!   `to` (RFC 3339, inclusive) bound the time of the change. A deleted CI keeps its history.
//! - `GET /api/v1/changes?since=&limit=`: every change to every CI in commit order, oldest
//!   first. `next_cursor` is never null: it is the position after the last change returned
//!   (or the `since` given, when nothing newer has been committed), so a system that stays in
//!   sync stores it and polls with `since=<next_cursor>`; a change is in exactly one answer.
//!
//! Each change: `{ id, ci_id, at, kind, field, old, new, source }`; what `field`, `old` and
//! `new` hold per kind is written in `store::history::ChangeKind`, and `source` is
//! `agent:<agent id>`, `import:<token name>`, `api:<token name>` or `collector`.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::Uri;
use census_common::ErrorBody;
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::cis::{ListView, ci_id, no_such_ci, parse_time};
use super::{ApiError, AppState, cursor, parse_limit, query_params, rfc3339_utc};
use crate::store::{ChangeKind, HistoryQuery, HistoryRecord};

/// One change to a CI.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Change)]
pub struct ChangeView {
    /// The change's position in the change feed; later changes have larger ids.
    pub id: i64,
    pub ci_id: i64,
    /// When the change was stored.
    #[serde(with = "rfc3339_utc")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    /// `created`, `attribute_changed`, `renamed`, `status_changed`, `criticality_changed`,
    /// `reidentified`, `software_added`, `software_removed`, `software_upgraded`,
    /// `software_downgraded`, `part_added`, `part_removed`, `relationship_added`,
    /// `relationship_removed`, `agent_changed`, `deleted`.
    pub kind: String,
    /// The attribute, package name, part (`class:key`) or relationship type changed; null for
    /// changes of the CI itself.
    #[schema(required = true)]
    pub field: Option<String>,
    /// The value before (null when there was none).
    #[schema(value_type = Value, required = true)]
    pub old: Value,
    /// The value after (null when there is none).
    #[schema(value_type = Value, required = true)]
    pub new: Value,
    /// `agent:<agent id>`, `import:<token name>`, `api:<token name>` or `collector`.
    pub source: String,
}

impl From<HistoryRecord> for ChangeView {
    fn from(r: HistoryRecord) -> ChangeView {
        ChangeView {
            id: r.id,
            ci_id: r.ci_id,
            at: r.at,
            kind: r.kind,
            field: r.field,
            old: r.old,
            new: r.new,
            source: r.source,
        }
    }
}

/// The change feed's page: `next_cursor` is always set.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ChangeFeed)]
pub struct ChangeFeedView {
    pub items: Vec<ChangeView>,
    /// Poll again with `since=<next_cursor>`.
    pub next_cursor: String,
}

fn parse_kinds(value: Option<&String>) -> Result<Vec<ChangeKind>, ApiError> {
    let Some(text) = value else {
        return Ok(Vec::new());
    };
    text.split(',')
        .map(|kind| {
            ChangeKind::parse(kind.trim()).ok_or_else(|| {
                let known: Vec<&str> = ChangeKind::ALL.iter().map(|k| k.as_str()).collect();
                ApiError::invalid_filter(format!(
                    "kind {kind:?} is not a change kind; use one or more of {}, separated by commas",
                    known.join(", ")
                ))
            })
        })
        .collect()
}

/// A CI's changes, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/cis/{id}/history",
    operation_id = "list_ci_history",
    tag = "cis",
    params(
        ("id" = i64, Path, minimum = 1, description = "The CI's id."),
        ("kind" = Option<String>, Query, description = "Only these kinds of change, \
            comma-separated, e.g. `software_upgraded,software_downgraded`."),
        ("from" = Option<String>, Query, format = DateTime,
            description = "Only changes made at or after this time."),
        ("to" = Option<String>, Query, format = DateTime,
            description = "Only changes made at or before this time."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
            description = "Page size; default 100."),
        ("cursor" = Option<String>, Query,
            description = "The previous page's `next_cursor`, unchanged."),
    ),
    responses(
        (status = 200, description = "The CI's changes, newest first.",
            body = ListView<ChangeView>),
        (status = 400, body = ErrorBody, description = "`bad_request`: the id is not a positive \
            integer; `invalid_filter`: an unknown, repeated or malformed parameter, an unknown \
            kind, or `from` after `to`; `invalid_cursor`: a malformed cursor."),
        (status = 404, body = ErrorBody, description = "`not_found`: no CI has or had this id."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn ci_history(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Json<ListView<ChangeView>>, ApiError> {
    let id = ci_id(path)?;
    let params = query_params(&uri, &["kind", "from", "to", "limit", "cursor"])?;
    let from = parse_time("from", params.get("from"))?;
    let to = parse_time("to", params.get("to"))?;
    if let (Some(from), Some(to)) = (from, to)
        && from > to
    {
        return Err(ApiError::invalid_filter("from must not be after to"));
    }
    let query = HistoryQuery {
        kinds: parse_kinds(params.get("kind"))?,
        from,
        to,
        before: match params.get("cursor") {
            Some(c) => Some(cursor::decode(c, 1)?[0]),
            None => None,
        },
        limit: parse_limit(params.get("limit"))?,
    };
    let page = state
        .store
        .ci_history(id, query)
        .await?
        .ok_or_else(|| no_such_ci(id))?;
    Ok(Json(ListView {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next.map(|id| cursor::encode(&[id])),
    }))
}

/// Every change to every CI, in commit order.
#[utoipa::path(
    get,
    path = "/api/v1/changes",
    operation_id = "list_changes",
    tag = "cis",
    params(
        ("since" = Option<String>, Query, description = "The `next_cursor` of the previous \
            answer, unchanged; without it the feed starts at the first change."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
            description = "Page size; default 100."),
    ),
    responses(
        (status = 200, description = "The changes after `since`, oldest first, and the cursor \
            to poll with next.", body = ChangeFeedView),
        (status = 400, body = ErrorBody, description = "`invalid_filter`: an unknown, repeated \
            or malformed parameter; `invalid_cursor`: a malformed `since`."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn changes(
    State(state): State<AppState>,
    uri: Uri,
) -> Result<Json<ChangeFeedView>, ApiError> {
    let params = query_params(&uri, &["since", "limit"])?;
    let after = match params.get("since") {
        Some(c) => cursor::decode(c, 1)?[0],
        None => 0,
    };
    let limit = parse_limit(params.get("limit"))?;
    let (items, next) = state.store.changes(after, limit).await?;
    Ok(Json(ChangeFeedView {
        items: items.into_iter().map(Into::into).collect(),
        next_cursor: cursor::encode(&[next]),
    }))
}
