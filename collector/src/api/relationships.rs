//! `/api/v1/relationships`: relationships between CIs, read "source `type` target" (an
//! application `depends_on` its database, a service `runs_on` a computer).
//!
//! - `POST /api/v1/relationships` (admin) `{ "source", "type", "target", "description"? }`:
//!   201 with the relationship and a `Location` header. Both CIs must exist, the type must be one
//!   of the six, a CI cannot be related to itself (422 `invalid_field`, naming the field); the
//!   same (source, type, target) twice is 409 `conflict` naming the existing relationship.
//! - `GET /api/v1/relationships` (viewer): filters `ci` (either end), `source`, `target`,
//!   `type`, paged by `limit` and `cursor`, by id; `text/csv` on request.
//! - `GET /api/v1/relationships/{id}` (viewer), `PATCH` (admin: `type`, `description`; null
//!   clears the description), `DELETE` (admin, 204).
//!
//! The `contains` relationships from a computer to its parts belong to the computer's
//! inventory: making, changing or ending one here is 409 `conflict`. Every relationship made or
//! ended writes history on both ends (a type change is both); a description is not history.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use census_common::ErrorBody;
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::auth::AdminPrincipal;
use super::ci_admin::{Body, refused};
use super::cis::ListView;
use super::csv::{self, Cell};
use super::{ApiError, AppState, cursor, parse_limit, query_params, rfc3339_utc};
use crate::store::relations::TYPES;
use crate::store::{
    NewRelationship, RelationshipDetail, RelationshipFilter, RelationshipPatch, Source,
};

/// A relationship type.
// For the OpenAPI document only: the store keeps types as text and checks them against
// `store::relations::TYPES`; a test keeps the two in step.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum RelationshipType {
    Contains,
    RunsOn,
    DependsOn,
    HostedOn,
    ConnectsTo,
    MemberOf,
}

/// A relationship: "source `type` target".
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = RelationshipDetail)]
pub struct RelationshipDetailView {
    pub id: i64,
    #[serde(rename = "type")]
    #[schema(value_type = RelationshipType)]
    pub kind: String,
    pub source: i64,
    pub source_name: String,
    pub target: i64,
    pub target_name: String,
    #[schema(required = true)]
    pub description: Option<String>,
    #[serde(with = "rfc3339_utc")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// The name of the admin token that made it; null for one an inventory made.
    #[schema(required = true)]
    pub created_by: Option<String>,
}

impl From<RelationshipDetail> for RelationshipDetailView {
    fn from(r: RelationshipDetail) -> RelationshipDetailView {
        RelationshipDetailView {
            id: r.id,
            kind: r.kind,
            source: r.source,
            source_name: r.source_name,
            target: r.target,
            target_name: r.target_name,
            description: r.description,
            created_at: r.created_at,
            created_by: r.created_by,
        }
    }
}

/// The body of `POST /api/v1/relationships`.
#[derive(ToSchema)]
pub struct NewRelationshipBody {
    /// The CI id of the dependent end, as in "source depends_on target".
    pub source: i64,
    #[schema(value_type = RelationshipType)]
    pub r#type: String,
    pub target: i64,
    /// At most 1000 characters.
    pub description: Option<String>,
}

/// The body of `PATCH /api/v1/relationships/{id}`: the fields to change, each optional.
#[derive(ToSchema)]
pub struct RelationshipPatchBody {
    /// The new type; recorded as the old relationship ended and the new one made.
    #[schema(required = false, value_type = RelationshipType)]
    pub r#type: String,
    /// Null clears it.
    pub description: Option<String>,
}

fn relationship_id(path: Result<Path<String>, PathRejection>) -> Result<i64, ApiError> {
    super::ci_admin::positive_id(path, "relationship id")
}

fn no_such_relationship(id: i64) -> ApiError {
    ApiError::not_found(format!("there is no relationship with id {id}"))
}

/// Makes a relationship.
#[utoipa::path(
    post,
    path = "/api/v1/relationships",
    operation_id = "create_relationship",
    tag = "relationships",
    request_body = NewRelationshipBody,
    responses(
        (status = 201, description = "The relationship made.", body = RelationshipDetailView,
            headers(("Location" = String, description = "The relationship's URL."))),
        (status = 400, body = ErrorBody, description = "`invalid_body`: not a JSON object."),
        (status = 409, body = ErrorBody, description = "`conflict`: the same source, type and \
            target exist already (the message names that relationship), or it is a computer's \
            `contains` to its own part, which the inventory owns."),
        (status = 413, body = ErrorBody, description = "`payload_too_large`."),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`: not JSON."),
        (status = 422, body = ErrorBody, description = "`invalid_field`: a field missing, \
            unknown or not allowed (an unknown type, a CI that does not exist, a CI related to \
            itself); the message names it."),
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
    let mut body = Body::parse(body, &["source", "type", "target", "description"])?;
    let new = NewRelationship {
        source: body.required_id("source")?,
        kind: body.required_string("type")?,
        target: body.required_id("target")?,
        description: body.nullable_string("description")?.flatten(),
    };
    let made = state
        .store
        .create_relationship(new, Source::Api(principal.name), state.clock.now())
        .await?
        .map_err(refused)?;
    let location = format!("/api/v1/relationships/{}", made.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(RelationshipDetailView::from(made)),
    )
        .into_response())
}

const LIST_COLUMNS: &[&str] = &[
    "id",
    "type",
    "source",
    "source_name",
    "target",
    "target_name",
    "description",
    "created_at",
    "created_by",
];

/// Relationships, filtered, by id.
#[utoipa::path(
    get,
    path = "/api/v1/relationships",
    operation_id = "list_relationships",
    tag = "relationships",
    params(
        ("ci" = Option<i64>, Query, minimum = 1, description = "A CI id at either end."),
        ("source" = Option<i64>, Query, minimum = 1, description = "The source CI id."),
        ("target" = Option<i64>, Query, minimum = 1, description = "The target CI id."),
        ("type" = Option<RelationshipType>, Query, description = "Exact type."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
            description = "Page size; default 100."),
        ("cursor" = Option<String>, Query,
            description = "The previous page's `next_cursor`, unchanged."),
    ),
    responses(
        (status = 200, description = "Relationships, by id. With `Accept: text/csv`, the page \
            as a CSV table (the next cursor in `X-Next-Cursor` and `Link`).",
            content(
                (ListView<RelationshipDetailView> = "application/json"),
                (String = "text/csv"),
            )),
        (status = 400, body = ErrorBody, description = "`invalid_filter`: an unknown, repeated \
            or malformed parameter; `invalid_cursor`: a cursor this list did not return."),
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
    let page = state.store.list_relationships(filter).await?;
    let next_cursor = page.next.map(|id| cursor::encode(&[id]));
    if csv::wants_csv(&headers) {
        let rows: Vec<Vec<Cell>> = page
            .items
            .into_iter()
            .map(|r| {
                let view = RelationshipDetailView::from(r);
                vec![
                    view.id.into(),
                    view.kind.into(),
                    view.source.into(),
                    view.source_name.into(),
                    view.target.into(),
                    view.target_name.into(),
                    view.description.into(),
                    time_cell(view.created_at),
                    view.created_by.into(),
                ]
            })
            .collect();
        return Ok(csv::response(
            &uri,
            LIST_COLUMNS,
            &rows,
            next_cursor.as_deref(),
        ));
    }
    Ok(Json(ListView {
        items: page
            .items
            .into_iter()
            .map(RelationshipDetailView::from)
            .collect(),
        next_cursor,
    })
    .into_response())
}

fn time_cell(t: OffsetDateTime) -> Cell {
    t.format(&time::format_description::well_known::Rfc3339)
        .map_or(Cell::Empty, Cell::Text)
}

fn parse_filter(uri: &Uri) -> Result<RelationshipFilter, ApiError> {
    let params = query_params(uri, &["ci", "source", "target", "type", "limit", "cursor"])?;
    let id = |name: &str| -> Result<Option<i64>, ApiError> {
        params
            .get(name)
            .map(|text| {
                text.parse::<i64>()
                    .ok()
                    .filter(|id| *id > 0)
                    .ok_or_else(|| {
                        ApiError::invalid_filter(format!(
                            "{name} must be a CI id (a positive integer), not {text:?}"
                        ))
                    })
            })
            .transpose()
    };
    let kind = params.get("type").cloned();
    if let Some(kind) = &kind
        && !TYPES.iter().any(|(k, _)| k == kind)
    {
        return Err(ApiError::invalid_filter(format!(
            "type must be one of {}, not {kind:?}",
            crate::store::relations::type_names()
        )));
    }
    let after = match params.get("cursor") {
        Some(c) => Some(cursor::decode(c, 1)?[0]),
        None => None,
    };
    Ok(RelationshipFilter {
        ci: id("ci")?,
        source: id("source")?,
        target: id("target")?,
        kind,
        after,
        limit: parse_limit(params.get("limit"))?,
    })
}

/// One relationship.
#[utoipa::path(
    get,
    path = "/api/v1/relationships/{id}",
    operation_id = "get_relationship",
    tag = "relationships",
    params(("id" = i64, Path, minimum = 1, description = "The relationship's id.")),
    responses(
        (status = 200, description = "The relationship.", body = RelationshipDetailView),
        (status = 400, body = ErrorBody, description = "`bad_request`: the id is not a positive \
            integer; `invalid_filter`: a query parameter (this route takes none)."),
        (status = 404, body = ErrorBody, description = "`not_found`: no relationship has this id."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn get(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Json<RelationshipDetailView>, ApiError> {
    let id = relationship_id(path)?;
    query_params(&uri, &[])?;
    let found = state
        .store
        .get_relationship(id)
        .await?
        .ok_or_else(|| no_such_relationship(id))?;
    Ok(Json(found.into()))
}

/// Changes a relationship's type or description.
#[utoipa::path(
    patch,
    path = "/api/v1/relationships/{id}",
    operation_id = "update_relationship",
    tag = "relationships",
    params(("id" = i64, Path, minimum = 1, description = "The relationship's id.")),
    request_body = RelationshipPatchBody,
    responses(
        (status = 200, description = "The relationship as it now is. A type change is recorded \
            in both CIs' history as the old relationship ended and the new one made.",
            body = RelationshipDetailView),
        (status = 400, body = ErrorBody, description = "`bad_request`: the id is not a positive \
            integer; `invalid_body`: not a JSON object."),
        (status = 404, body = ErrorBody, description = "`not_found`: no relationship has this id."),
        (status = 409, body = ErrorBody, description = "`conflict`: the new type makes a \
            duplicate (the message names it), or the relationship is a computer's `contains` \
            to its own part, which the inventory owns."),
        (status = 413, body = ErrorBody, description = "`payload_too_large`."),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`: not JSON."),
        (status = 422, body = ErrorBody, description = "`invalid_field`: an unknown field, an \
            unknown type, a description too long; the message names it."),
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
) -> Result<Json<RelationshipDetailView>, ApiError> {
    let id = relationship_id(path)?;
    let mut body = Body::parse(body, &["type", "description"])?;
    let patch = RelationshipPatch {
        kind: body.optional_string("type")?,
        description: body.nullable_string("description")?,
    };
    let changed = state
        .store
        .update_relationship(id, patch, Source::Api(principal.name), state.clock.now())
        .await?
        .map_err(refused)?;
    Ok(Json(changed.into()))
}

/// Ends a relationship.
#[utoipa::path(
    delete,
    path = "/api/v1/relationships/{id}",
    operation_id = "delete_relationship",
    tag = "relationships",
    params(("id" = i64, Path, minimum = 1, description = "The relationship's id.")),
    responses(
        (status = 204, description = "Ended; both CIs' history records it."),
        (status = 400, body = ErrorBody, description = "`bad_request`: the id is not a positive \
            integer; `invalid_filter`: a query parameter (this route takes none)."),
        (status = 404, body = ErrorBody, description = "`not_found`: no relationship has this id."),
        (status = 409, body = ErrorBody, description = "`conflict`: a computer's `contains` to \
            its own part, which the inventory owns."),
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
    let id = relationship_id(path)?;
    query_params(&uri, &[])?;
    state
        .store
        .delete_relationship(id, Source::Api(principal.name), state.clock.now())
        .await?
        .map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::PartialSchema;

    #[test]
    fn the_documented_types_are_the_store_s() {
        let schema = serde_json::to_value(RelationshipType::schema()).unwrap();
        let names: Vec<&str> = TYPES.iter().map(|(k, _)| *k).collect();
        assert_eq!(schema["enum"], serde_json::json!(names));
    }
}
