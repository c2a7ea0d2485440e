//! An admin's writes to CIs, and the dependency walks from one CI.
//!
//! - `POST /api/v1/cis` (admin) `{ "class", "name", "criticality"?, "attributes"? }`: creates a
//!   CI that no agent reports (a business service, an application, a database, a computer with
//!   no agent). `class` matches `^[a-z][a-z0-9_]{0,63}$` and is not a part class (`filesystem`,
//!   `network_interface`: parts exist only inside a computer's inventory); `name` is 1 to 255
//!   characters; `criticality` 1 (highest) to 4, default 3; `attributes` an object of at most
//!   64 KiB. 201 with the CI as `GET /api/v1/cis/{id}` shows it, and a `Location` header.
//! - `PATCH /api/v1/cis/{id}` (admin) `{ "name"?, "criticality"?, "status"?, "attributes"? }`:
//!   `status` is `active` or `retired` (`stale` is the collector's); `attributes` is a JSON
//!   merge patch (a null value removes its key). A CI discovered from an inventory keeps the
//!   name and attributes the inventory gives it: changing them is 409 `conflict` (sending them
//!   back unchanged is not a change). A patch that changes nothing writes nothing. 200 with
//!   the CI.
//! - `DELETE /api/v1/cis/{id}` (admin): only a CI created through the API (a discovered one is
//!   409: retire it instead); its relationships end with it. 204.
//! - `GET /api/v1/cis/{id}/impact` and `/dependencies` (viewer), `max_depth` (1 to 50,
//!   default 10), `include_retired` (`true`/`false`, default false): every CI that depends on
//!   this one, directly or not (who is hurt if it fails), or every CI it depends on; see
//!   `store::relations` for the direction of each type and the walk's rules.
//!
//! Field errors are 422 `invalid_field` with a message naming the field; a body that is not a
//! JSON object is 400 `invalid_body`. Every change writes history with source
//! `api:<token name>`.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Extension, Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use census_common::{ErrorBody, ErrorCode};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::auth::AdminPrincipal;
use super::cis::{CiDetailView, CiStatus};
use super::relationships::RelationshipType;
use super::{ApiError, AppState, json_rejection, query_params};
use crate::store::relations::{DEFAULT_MAX_DEPTH, MAX_DEPTH};
use crate::store::{
    CiBrief, CiPatch, NewCi, Reached, Refusal, Source, Traversal, TraversalQuery, Walk,
};

/// Criticality of a CI created without one.
pub const DEFAULT_CRITICALITY: i64 = 3;

/// A refused store write as the API answers it: 404 `not_found`, 409 `conflict` or 422
/// `invalid_field`.
pub(crate) fn refused(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::NotFound(message) => ApiError::not_found(message),
        Refusal::Conflict(message) => {
            ApiError::new(StatusCode::CONFLICT, ErrorCode::Conflict, message)
        }
        Refusal::InvalidField(message) => invalid_field(message),
    }
}

fn invalid_field(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::InvalidField,
        message,
    )
}

/// An id from the path: a positive integer. `what` names it in the message.
pub(crate) fn positive_id(
    path: Result<Path<String>, PathRejection>,
    what: &str,
) -> Result<i64, ApiError> {
    let text = path
        .map(|Path(text)| text)
        .map_err(|e| ApiError::bad_request(ErrorCode::BadRequest, e.body_text()))?;
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::BadRequest,
                format!("{what} must be a positive integer, not {text:?}"),
            )
        })
}

fn no_such_ci(id: i64) -> ApiError {
    ApiError::not_found(format!("there is no CI with id {id}"))
}

/// A JSON object body whose fields are taken one at a time, each with a message naming it.
pub(crate) struct Body(Map<String, Value>);

impl Body {
    /// The body as an object with only fields from `allowed`.
    pub(crate) fn parse(
        body: Result<Json<Value>, JsonRejection>,
        allowed: &[&str],
    ) -> Result<Body, ApiError> {
        let Json(value) = body.map_err(json_rejection)?;
        let Value::Object(fields) = value else {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidBody,
                "the body must be a JSON object",
            ));
        };
        if let Some(unknown) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(invalid_field(format!(
                "unknown field {unknown:?}; this route takes {}",
                allowed.join(", ")
            )));
        }
        Ok(Body(fields))
    }

    /// The field, `None` when absent. Null is refused unless `nullable`, in which case it is
    /// `Some(Value::Null)`.
    fn take(&mut self, name: &str, nullable: bool) -> Result<Option<Value>, ApiError> {
        match self.0.remove(name) {
            Some(Value::Null) if !nullable => Err(invalid_field(format!(
                "{name} cannot be null; leave it out to keep it as it is"
            ))),
            other => Ok(other),
        }
    }

    pub(crate) fn required_string(&mut self, name: &str) -> Result<String, ApiError> {
        match self.0.remove(name) {
            None | Some(Value::Null) => Err(invalid_field(format!("{name} is required"))),
            Some(Value::String(text)) => Ok(text),
            Some(_) => Err(invalid_field(format!("{name} must be a string"))),
        }
    }

    pub(crate) fn optional_string(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        match self.take(name, false)? {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(invalid_field(format!("{name} must be a string"))),
        }
    }

    /// Absent: `None`; null: `Some(None)`; a string: `Some(Some(text))`.
    pub(crate) fn nullable_string(
        &mut self,
        name: &str,
    ) -> Result<Option<Option<String>>, ApiError> {
        match self.take(name, true)? {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(text)) => Ok(Some(Some(text))),
            Some(_) => Err(invalid_field(format!("{name} must be a string or null"))),
        }
    }

    pub(crate) fn required_id(&mut self, name: &str) -> Result<i64, ApiError> {
        match self.0.remove(name) {
            None | Some(Value::Null) => {
                Err(invalid_field(format!("{name} is required: the id of a CI")))
            }
            Some(value) => value.as_i64().filter(|id| *id > 0).ok_or_else(|| {
                invalid_field(format!(
                    "{name} must be the id of a CI (a positive integer), not {value}"
                ))
            }),
        }
    }

    /// An integer; null counts as absent when `null_is_absent`, else it is refused.
    fn optional_integer(
        &mut self,
        name: &str,
        null_is_absent: bool,
        expected: &str,
    ) -> Result<Option<i64>, ApiError> {
        match self.take(name, null_is_absent)? {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_i64()
                .map(Some)
                .ok_or_else(|| invalid_field(format!("{name} must be {expected}, not {value}"))),
        }
    }

    /// An object; null counts as absent when `null_is_absent`, else it is refused.
    fn optional_object(
        &mut self,
        name: &str,
        null_is_absent: bool,
    ) -> Result<Option<Map<String, Value>>, ApiError> {
        match self.take(name, null_is_absent)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(fields)) => Ok(Some(fields)),
            Some(_) => Err(invalid_field(format!("{name} must be a JSON object"))),
        }
    }
}

const CRITICALITY: &str = "an integer from 1 (highest) to 4";

/// The body of `POST /api/v1/cis`.
#[derive(ToSchema)]
pub struct NewCiBody {
    /// `^[a-z][a-z0-9_]{0,63}$`, e.g. `business_service`, `application`, `database`,
    /// `computer`; not `filesystem` or `network_interface`.
    pub class: String,
    /// 1 to 255 characters.
    pub name: String,
    /// 1 (highest) to 4; default 3.
    #[schema(minimum = 1, maximum = 4)]
    pub criticality: Option<i64>,
    /// Free-form, at most 64 KiB of JSON; default `{}`.
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Value>,
}

/// The body of `PATCH /api/v1/cis/{id}`: the fields to change, each optional and none null.
#[derive(ToSchema)]
pub struct CiPatchBody {
    /// 1 to 255 characters. Not on a CI discovered from an inventory.
    #[schema(required = false)]
    pub name: String,
    #[schema(required = false, minimum = 1, maximum = 4)]
    pub criticality: i64,
    /// `active` or `retired`; `stale` is set only by the collector (sending back the status
    /// the CI has is no change).
    #[schema(required = false, value_type = CiStatus)]
    pub status: String,
    /// A JSON merge patch of the attributes: a key with null is removed, others are set. Not
    /// on a CI discovered from an inventory.
    #[schema(required = false, value_type = Object)]
    pub attributes: Value,
}

/// The CI as `GET /api/v1/cis/{id}` answers it, read after the write committed.
async fn ci_view(state: &AppState, id: i64) -> Result<CiDetailView, ApiError> {
    super::cis::current_view(state, id).await
}

/// Creates a CI no agent reports.
#[utoipa::path(
    post,
    path = "/api/v1/cis",
    operation_id = "create_ci",
    tag = "cis",
    request_body = NewCiBody,
    responses(
        (status = 201, description = "The CI created, as `GET /api/v1/cis/{id}` shows it.",
            body = CiDetailView,
            headers(("Location" = String, description = "The CI's URL."))),
        (status = 400, body = ErrorBody, description = "`invalid_body`: not a JSON object."),
        (status = 413, body = ErrorBody, description = "`payload_too_large`."),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`: not JSON."),
        (status = 422, body = ErrorBody, description = "`invalid_field`: a field missing, \
            unknown or out of range (a class that is not a class name or is a part class, an \
            empty or long name, a criticality outside 1 to 4, attributes not an object or too \
            large); the message names it."),
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
    let mut body = Body::parse(body, &["class", "name", "criticality", "attributes"])?;
    let new = NewCi {
        class: body.required_string("class")?,
        name: body.required_string("name")?,
        criticality: body
            .optional_integer("criticality", true, CRITICALITY)?
            .unwrap_or(DEFAULT_CRITICALITY),
        attributes: body
            .optional_object("attributes", true)?
            .unwrap_or_default(),
    };
    let id = state
        .store
        .create_ci(new, Source::Api(principal.name), state.clock.now())
        .await?
        .map_err(refused)?;
    let view = ci_view(&state, id).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/v1/cis/{id}"))],
        Json(view),
    )
        .into_response())
}

/// Changes a CI.
#[utoipa::path(
    patch,
    path = "/api/v1/cis/{id}",
    operation_id = "update_ci",
    tag = "cis",
    params(("id" = i64, Path, minimum = 1, description = "The CI's id.")),
    request_body = CiPatchBody,
    responses(
        (status = 200, description = "The CI as it now is.", body = CiDetailView),
        (status = 400, body = ErrorBody, description = "`bad_request`: the id is not a positive \
            integer; `invalid_body`: not a JSON object."),
        (status = 404, body = ErrorBody, description = "`not_found`: no CI has this id."),
        (status = 409, body = ErrorBody, description = "`conflict`: a change to the name or \
            attributes of a CI discovered from an inventory, which sets them."),
        (status = 413, body = ErrorBody, description = "`payload_too_large`."),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`: not JSON."),
        (status = 422, body = ErrorBody, description = "`invalid_field`: an unknown field, a \
            null, a value out of range, status `stale`; the message names it."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn update(
    State(state): State<AppState>,
    Extension(principal): Extension<AdminPrincipal>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<CiDetailView>, ApiError> {
    let id = positive_id(path, "CI id")?;
    let mut body = Body::parse(body, &["name", "criticality", "status", "attributes"])?;
    let patch = CiPatch {
        name: body.optional_string("name")?,
        criticality: body.optional_integer("criticality", false, CRITICALITY)?,
        status: body.optional_string("status")?,
        attributes: body.optional_object("attributes", false)?,
    };
    state
        .store
        .update_ci(id, patch, Source::Api(principal.name), state.clock.now())
        .await?
        .map_err(refused)?;
    Ok(Json(ci_view(&state, id).await?))
}

/// Deletes a CI created through the API.
#[utoipa::path(
    delete,
    path = "/api/v1/cis/{id}",
    operation_id = "delete_ci",
    tag = "cis",
    params(("id" = i64, Path, minimum = 1, description = "The CI's id.")),
    responses(
        (status = 204, description = "Deleted, with its relationships; the history of both \
            ends records it."),
        (status = 400, body = ErrorBody, description = "`bad_request`: the id is not a positive \
            integer; `invalid_filter`: a query parameter (this route takes none)."),
        (status = 404, body = ErrorBody, description = "`not_found`: no CI has this id."),
        (status = 409, body = ErrorBody, description = "`conflict`: the CI was discovered from \
            an inventory, which would bring it back; retire it instead."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<AdminPrincipal>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<StatusCode, ApiError> {
    let id = positive_id(path, "CI id")?;
    query_params(&uri, &[])?;
    state
        .store
        .delete_ci(id, Source::Api(principal.name), state.clock.now())
        .await?
        .map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A CI's identifying fields, in a walk.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CiBrief)]
pub struct CiBriefView {
    pub id: i64,
    pub class: String,
    pub name: String,
    #[schema(value_type = CiStatus)]
    pub status: String,
    #[schema(minimum = 1, maximum = 4)]
    pub criticality: i64,
}

impl From<CiBrief> for CiBriefView {
    fn from(ci: CiBrief) -> CiBriefView {
        CiBriefView {
            id: ci.id,
            class: ci.class,
            name: ci.name,
            status: ci.status,
            criticality: ci.criticality,
        }
    }
}

/// A CI a walk reached, by one of its shortest paths.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ReachedCi)]
pub struct ReachedView {
    pub ci: CiBriefView,
    /// Relationships between the start and this CI.
    #[schema(minimum = 1)]
    pub depth: u32,
    /// CI ids from the start to this CI, both included.
    #[schema(min_items = 2)]
    pub path: Vec<i64>,
    /// The relationship types along `path`, one per step.
    #[schema(value_type = Vec<RelationshipType>, min_items = 1)]
    pub via: Vec<String>,
}

impl From<Reached> for ReachedView {
    fn from(r: Reached) -> ReachedView {
        ReachedView {
            ci: r.ci.into(),
            depth: r.depth,
            path: r.path,
            via: r.via,
        }
    }
}

/// Every CI a walk reached, nearest first (by depth, then id).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Traversal)]
pub struct TraversalView {
    pub items: Vec<ReachedView>,
    /// Some CIs were left out: they are further than `max_depth`, or past the first 10000.
    pub truncated: bool,
}

impl From<Traversal> for TraversalView {
    fn from(t: Traversal) -> TraversalView {
        TraversalView {
            items: t.items.into_iter().map(Into::into).collect(),
            truncated: t.truncated,
        }
    }
}

fn parse_traversal(uri: &Uri) -> Result<TraversalQuery, ApiError> {
    let params = query_params(uri, &["max_depth", "include_retired"])?;
    let max_depth = match params.get("max_depth") {
        None => DEFAULT_MAX_DEPTH,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|d| (1..=MAX_DEPTH).contains(d))
            .ok_or_else(|| {
                ApiError::invalid_filter(format!(
                    "max_depth must be an integer from 1 to {MAX_DEPTH}, not {text:?}"
                ))
            })?,
    };
    let include_retired = match params.get("include_retired").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::invalid_filter(format!(
                "include_retired must be true or false, not {other:?}"
            )));
        }
    };
    Ok(TraversalQuery {
        max_depth,
        include_retired,
    })
}

async fn walk(
    state: AppState,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    walk: Walk,
) -> Result<Json<TraversalView>, ApiError> {
    let id = positive_id(path, "CI id")?;
    let query = parse_traversal(&uri)?;
    let walked = state
        .store
        .traverse(id, walk, query)
        .await?
        .ok_or_else(|| no_such_ci(id))?;
    Ok(Json(walked.into()))
}

/// Every CI that depends on this one, directly or not: who is hurt if it fails.
#[utoipa::path(
    get,
    path = "/api/v1/cis/{id}/impact",
    operation_id = "ci_impact",
    tag = "cis",
    params(
        ("id" = i64, Path, minimum = 1, description = "The CI's id."),
        ("max_depth" = Option<u32>, Query, minimum = 1, maximum = 50,
            description = "Deepest level reported; default 10."),
        ("include_retired" = Option<bool>, Query,
            description = "Report and walk through retired CIs too; default false."),
    ),
    responses(
        (status = 200, description = "The CIs that depend on this one, nearest first. For \
            every type the source depends on the target (`contains`: the container on its \
            part), so this walks from targets to sources.", body = TraversalView),
        (status = 400, body = ErrorBody, description = "`bad_request`: the id is not a positive \
            integer; `invalid_filter`: an unknown, repeated or malformed parameter."),
        (status = 404, body = ErrorBody, description = "`not_found`: no CI has this id."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn impact(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Json<TraversalView>, ApiError> {
    walk(state, path, uri, Walk::Impact).await
}

/// Every CI this one depends on, directly or not.
#[utoipa::path(
    get,
    path = "/api/v1/cis/{id}/dependencies",
    operation_id = "ci_dependencies",
    tag = "cis",
    params(
        ("id" = i64, Path, minimum = 1, description = "The CI's id."),
        ("max_depth" = Option<u32>, Query, minimum = 1, maximum = 50,
            description = "Deepest level reported; default 10."),
        ("include_retired" = Option<bool>, Query,
            description = "Report and walk through retired CIs too; default false."),
    ),
    responses(
        (status = 200, description = "The CIs this one depends on, nearest first: from sources \
            to targets.", body = TraversalView),
        (status = 400, body = ErrorBody, description = "`bad_request`: the id is not a positive \
            integer; `invalid_filter`: an unknown, repeated or malformed parameter."),
        (status = 404, body = ErrorBody, description = "`not_found`: no CI has this id."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn dependencies(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Json<TraversalView>, ApiError> {
    walk(state, path, uri, Walk::Dependencies).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::relations::MAX_REACHED;

    #[test]
    fn the_documented_bounds_are_the_store_s() {
        let doc = serde_json::to_value(crate::api::openapi::document()).unwrap();
        let truncated =
            doc["components"]["schemas"]["Traversal"]["properties"]["truncated"]["description"]
                .as_str()
                .unwrap();
        assert!(
            truncated.contains(&format!("first {MAX_REACHED}")),
            "{truncated}"
        );
        for route in ["impact", "dependencies"] {
            let params = doc["paths"][format!("/api/v1/cis/{{id}}/{route}")]["get"]["parameters"]
                .as_array()
                .unwrap();
            let depth = params.iter().find(|p| p["name"] == "max_depth").unwrap();
            assert_eq!(depth["schema"]["maximum"], MAX_DEPTH, "{route}");
            assert!(
                depth["description"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("default {DEFAULT_MAX_DEPTH}")),
                "{route}"
            );
        }
    }
}
