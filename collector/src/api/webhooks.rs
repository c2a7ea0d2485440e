//! `/api/v1/webhooks` (admin): subscriptions to incident events and their deliveries.
//!
//! - `POST /api/v1/webhooks` `{ "url", "events"?, "secret"?, "enabled"?, "description"? }`:
//!   `url` is an absolute `http` or `https` URL of at most 2048 bytes with no user name or
//!   password (it is shown to every admin); `events` a non-empty list drawn from
//!   `store::webhooks::EVENTS` (default: all of them); `secret` 16 to 256 characters, or
//!   generated (32 random bytes as 64 hex digits); `enabled` default true; `description` at
//!   most 1000 characters. 201 with the webhook, its `secret` (the only answer that shows it) and a
//!   `Location` header.
//! - `GET /api/v1/webhooks` (paged by id), `GET /api/v1/webhooks/{id}`: the webhook with its
//!   outbox summary (`pending`, `failed`, `last_error`, `last_failure_at`,
//!   `last_delivered_at`); never the secret.
//! - `PATCH /api/v1/webhooks/{id}`: `url`, `events`, `enabled`, `description` (null clears it),
//!   `secret` (rotates it; the answer does not show it). Deliveries still pending go to the
//!   new URL with the new secret. `DELETE` removes the webhook and all its deliveries.
//! - `GET /api/v1/webhooks/{id}/deliveries?state=&limit=&cursor=`: its outbox rows, newest
//!   first: where failures are seen.
//! - `POST /api/v1/webhooks/{id}/deliveries/{delivery_id}/retry`: a `failed` delivery back to
//!   `pending`, due now, with a fresh count of attempts (409 `conflict` unless failed).
//!
//! A field error is 422 `invalid_field` naming the field, a body that is not a JSON object 400
//! `invalid_body`, a bad query parameter 400 `invalid_filter`, an unknown id 404; a refused
//! request changes nothing. How deliveries are sent and signed: [`crate::webhooks`].

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Extension, Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use census_common::{ErrorBody, ErrorCode};
use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::auth::AdminPrincipal;
use super::ci_admin::{positive_id, refused};
use super::cis::ListView;
use super::{ApiError, AppState, cursor, json_rejection, parse_limit, query_params, rfc3339_utc};
use crate::store::webhooks::{EVENTS, STATES};
use crate::store::{DeliveryFilter, NewWebhook, Source, Webhook, WebhookDelivery, WebhookPatch};

/// Longest URL, in bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// Shortest secret, in characters.
pub const MIN_SECRET_CHARS: usize = 16;
/// Longest secret, in characters.
pub const MAX_SECRET_CHARS: usize = 256;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;

/// An incident event a webhook may subscribe to.
// For the OpenAPI document only; a test keeps it in step with `store::webhooks::EVENTS`.
#[derive(Serialize, ToSchema)]
pub enum WebhookEvent {
    #[serde(rename = "incident.opened")]
    Opened,
    #[serde(rename = "incident.acknowledged")]
    Acknowledged,
    #[serde(rename = "incident.resolved")]
    Resolved,
    #[serde(rename = "incident.reopened")]
    Reopened,
}

/// The state of a delivery.
// For the OpenAPI document only; a test keeps it in step with `store::webhooks::STATES`.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

/// A webhook: where incident events are posted. Never shows the secret.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Webhook)]
pub struct WebhookView {
    pub id: i64,
    pub url: String,
    #[schema(value_type = Vec<WebhookEvent>)]
    pub events: Vec<String>,
    pub enabled: bool,
    #[schema(required = true)]
    pub description: Option<String>,
    /// `api:<token name>`.
    pub created_by: String,
    #[serde(with = "rfc3339_utc")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "rfc3339_utc")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
    /// Deliveries waiting for their first or next attempt.
    pub pending: i64,
    /// Deliveries that gave up; retry them through their `retry` route.
    pub failed: i64,
    /// The error of the newest failed attempt among deliveries whose last attempt failed.
    #[schema(required = true)]
    pub last_error: Option<String>,
    #[serde(with = "rfc3339_utc::option")]
    #[schema(required = true, value_type = Option<String>, format = DateTime)]
    pub last_failure_at: Option<OffsetDateTime>,
    #[serde(with = "rfc3339_utc::option")]
    #[schema(required = true, value_type = Option<String>, format = DateTime)]
    pub last_delivered_at: Option<OffsetDateTime>,
}

impl From<Webhook> for WebhookView {
    fn from(w: Webhook) -> WebhookView {
        WebhookView {
            id: w.id,
            url: w.url,
            events: w.events,
            enabled: w.enabled,
            description: w.description,
            created_by: w.created_by,
            created_at: w.created_at,
            updated_at: w.updated_at,
            pending: w.pending,
            failed: w.failed,
            last_error: w.last_error,
            last_failure_at: w.last_failure_at,
            last_delivered_at: w.last_delivered_at,
        }
    }
}

/// A webhook just created, with its secret: the only answer that shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CreatedWebhook)]
pub struct CreatedWebhookView {
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// The key of `X-Census-Signature`; keep it, it is not shown again.
    pub secret: String,
}

/// One event for one webhook, and how its delivery went.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WebhookDelivery)]
pub struct DeliveryView {
    /// Also sent as `X-Census-Delivery`: the same on every attempt, for receivers to dedupe.
    pub id: i64,
    #[schema(value_type = WebhookEvent)]
    pub event: String,
    #[schema(required = true)]
    pub incident_id: Option<i64>,
    #[serde(with = "rfc3339_utc")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[schema(value_type = DeliveryState)]
    pub state: String,
    /// Attempts made (counted from zero again by a retry).
    pub attempts: i64,
    /// When the next attempt is due; null unless `pending`.
    #[serde(with = "rfc3339_utc::option")]
    #[schema(required = true, value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<OffsetDateTime>,
    #[serde(with = "rfc3339_utc::option")]
    #[schema(required = true, value_type = Option<String>, format = DateTime)]
    pub last_attempt_at: Option<OffsetDateTime>,
    /// The HTTP status of the last attempt; null when it got no answer.
    #[schema(required = true)]
    pub last_status: Option<i64>,
    /// Why the last attempt failed; null after a success.
    #[schema(required = true)]
    pub last_error: Option<String>,
    #[serde(with = "rfc3339_utc::option")]
    #[schema(required = true, value_type = Option<String>, format = DateTime)]
    pub delivered_at: Option<OffsetDateTime>,
}

impl From<WebhookDelivery> for DeliveryView {
    fn from(d: WebhookDelivery) -> DeliveryView {
        DeliveryView {
            id: d.id,
            event: d.event,
            incident_id: d.incident_id,
            created_at: d.created_at,
            state: d.state,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            last_attempt_at: d.last_attempt_at,
            last_status: d.last_status,
            last_error: d.last_error,
            delivered_at: d.delivered_at,
        }
    }
}

/// The body of `POST /api/v1/webhooks`.
#[derive(ToSchema)]
pub struct NewWebhookBody {
    /// An absolute `http` or `https` URL, at most 2048 bytes, without user name or password.
    pub url: String,
    /// Default: every event.
    #[schema(value_type = Option<Vec<WebhookEvent>>, min_items = 1)]
    pub events: Option<Vec<String>>,
    /// 16 to 256 characters; generated when absent.
    pub secret: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
    /// At most 1000 characters.
    pub description: Option<String>,
}

/// The body of `PATCH /api/v1/webhooks/{id}`: the fields to change, each optional.
#[derive(ToSchema)]
pub struct WebhookPatchBody {
    #[schema(required = false)]
    pub url: String,
    #[schema(required = false, value_type = Vec<WebhookEvent>, min_items = 1)]
    pub events: Vec<String>,
    #[schema(required = false)]
    pub enabled: bool,
    /// Null clears it.
    pub description: Option<String>,
    /// A new secret (16 to 256 characters): signs every attempt from now on, pending ones too.
    #[schema(required = false)]
    pub secret: String,
}

fn invalid_field(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::InvalidField,
        message,
    )
}

/// The body as an object with only fields from `allowed`.
fn object(
    body: Result<Json<Value>, JsonRejection>,
    allowed: &[&str],
) -> Result<Map<String, Value>, ApiError> {
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
    Ok(fields)
}

/// A field that may be absent but not null.
fn present(fields: &mut Map<String, Value>, name: &str) -> Result<Option<Value>, ApiError> {
    match fields.remove(name) {
        Some(Value::Null) => Err(invalid_field(format!(
            "{name} cannot be null; leave it out to keep it as it is"
        ))),
        other => Ok(other),
    }
}

fn string(name: &str, value: Value) -> Result<String, ApiError> {
    match value {
        Value::String(text) => Ok(text),
        _ => Err(invalid_field(format!("{name} must be a string"))),
    }
}

/// The URL to store: parsed as reqwest will parse it, in that parser's normal form.
pub fn check_url(text: &str) -> Result<String, ApiError> {
    let too_long = || invalid_field(format!("url must be at most {MAX_URL_BYTES} bytes"));
    if text.len() > MAX_URL_BYTES {
        return Err(too_long());
    }
    let url = reqwest::Url::parse(text.trim())
        .map_err(|e| invalid_field(format!("url {text:?} is not an absolute URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid_field(format!(
            "url must be http or https, not {}",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid_field("url must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid_field(
            "url must not carry a user name or password: every admin can read it; receivers \
             check X-Census-Signature instead",
        ));
    }
    let url = String::from(url);
    if url.len() > MAX_URL_BYTES {
        return Err(too_long());
    }
    Ok(url)
}

/// The events, in the order of `store::webhooks::EVENTS`, each once.
pub fn check_events(value: Value) -> Result<Vec<String>, ApiError> {
    let expected = || {
        invalid_field(format!(
            "events must be a non-empty list drawn from {}",
            EVENTS.join(", ")
        ))
    };
    let Value::Array(items) = value else {
        return Err(expected());
    };
    if items.is_empty() {
        return Err(expected());
    }
    for item in &items {
        match item.as_str() {
            Some(event) if EVENTS.contains(&event) => {}
            Some(event) => {
                return Err(invalid_field(format!(
                    "events: unknown event {event:?}; known: {}",
                    EVENTS.join(", ")
                )));
            }
            None => return Err(expected()),
        }
    }
    Ok(EVENTS
        .iter()
        .filter(|e| items.iter().any(|i| i.as_str() == Some(**e)))
        .map(|e| (*e).to_owned())
        .collect())
}

pub fn check_secret(text: String) -> Result<String, ApiError> {
    let chars = text.chars().count();
    if !(MIN_SECRET_CHARS..=MAX_SECRET_CHARS).contains(&chars) {
        return Err(invalid_field(format!(
            "secret must be {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} characters, not {chars}; \
             leave it out on create to have one generated"
        )));
    }
    Ok(text)
}

fn check_description(text: String) -> Result<String, ApiError> {
    if text.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(invalid_field(format!(
            "description must be at most {MAX_DESCRIPTION_CHARS} characters"
        )));
    }
    Ok(text)
}

fn boolean(name: &str, value: Value) -> Result<bool, ApiError> {
    value
        .as_bool()
        .ok_or_else(|| invalid_field(format!("{name} must be true or false")))
}

/// `description`: absent `None`, null `Some(None)`, else checked text.
fn description(fields: &mut Map<String, Value>) -> Result<Option<Option<String>>, ApiError> {
    match fields.remove("description") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(text)) => Ok(Some(Some(check_description(text)?))),
        Some(_) => Err(invalid_field("description must be a string or null")),
    }
}

fn webhook_id(path: Result<Path<String>, PathRejection>) -> Result<i64, ApiError> {
    positive_id(path, "webhook id")
}

fn no_such_webhook(id: i64) -> ApiError {
    ApiError::not_found(format!("there is no webhook with id {id}"))
}

/// Creates a webhook.
#[utoipa::path(
    post,
    path = "/api/v1/webhooks",
    operation_id = "create_webhook",
    tag = "webhooks",
    request_body = NewWebhookBody,
    responses(
        (status = 201, description = "The webhook made, with its secret (shown only here).",
            body = CreatedWebhookView,
            headers(("Location" = String, description = "The webhook's URL."))),
        (status = 400, body = ErrorBody, description = "`invalid_body`: not a JSON object."),
        (status = 413, body = ErrorBody, description = "`payload_too_large`."),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`: not JSON."),
        (status = 422, body = ErrorBody, description = "`invalid_field`: a field missing, \
            unknown or not allowed (a URL that is not http or https, an unknown event, a secret \
            shorter than 16 characters); the message names it."),
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
    let mut fields = object(body, &["url", "events", "secret", "enabled", "description"])?;
    let url = match fields.remove("url") {
        None | Some(Value::Null) => return Err(invalid_field("url is required")),
        Some(value) => check_url(&string("url", value)?)?,
    };
    let events = match present(&mut fields, "events")? {
        Some(value) => check_events(value)?,
        None => EVENTS.iter().map(|e| (*e).to_owned()).collect(),
    };
    let secret = match present(&mut fields, "secret")? {
        Some(value) => check_secret(string("secret", value)?)?,
        None => crate::webhooks::generate_secret().map_err(|e| {
            tracing::error!(error = %e, "the system random source failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                "could not generate a secret; the collector log has the details",
            )
        })?,
    };
    let enabled = match present(&mut fields, "enabled")? {
        Some(value) => boolean("enabled", value)?,
        None => true,
    };
    let description = description(&mut fields)?.flatten();
    let new = NewWebhook {
        url,
        events,
        secret: secret.clone(),
        enabled,
        description,
    };
    let made = state
        .store
        .create_webhook(
            new,
            Source::Api(principal.name).as_text(),
            state.clock.now(),
        )
        .await?;
    let location = format!("/api/v1/webhooks/{}", made.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(CreatedWebhookView {
            webhook: made.into(),
            secret,
        }),
    )
        .into_response())
}

/// Webhooks, by id.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    operation_id = "list_webhooks",
    tag = "webhooks",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
            description = "Page size; default 100."),
        ("cursor" = Option<String>, Query,
            description = "The previous page's `next_cursor`, unchanged."),
    ),
    responses(
        (status = 200, description = "Webhooks, by id, without their secrets.",
            body = ListView<WebhookView>),
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
) -> Result<Json<ListView<WebhookView>>, ApiError> {
    let params = query_params(&uri, &["limit", "cursor"])?;
    let limit = parse_limit(params.get("limit"))?;
    let after = match params.get("cursor") {
        Some(c) => Some(cursor::decode(c, 1)?[0]),
        None => None,
    };
    let page = state.store.list_webhooks(after, limit).await?;
    Ok(Json(ListView {
        items: page.items.into_iter().map(WebhookView::from).collect(),
        next_cursor: page.next.map(|id| cursor::encode(&[id])),
    }))
}

/// One webhook.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}",
    operation_id = "get_webhook",
    tag = "webhooks",
    params(("id" = i64, Path, minimum = 1, description = "The webhook's id.")),
    responses(
        (status = 200, description = "The webhook, without its secret.", body = WebhookView),
        (status = 400, body = ErrorBody, description = "`bad_request`: the id is not a positive \
            integer; `invalid_filter`: a query parameter (this route takes none)."),
        (status = 404, body = ErrorBody, description = "`not_found`: no webhook has this id."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn get(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Json<WebhookView>, ApiError> {
    let id = webhook_id(path)?;
    query_params(&uri, &[])?;
    let found = state
        .store
        .get_webhook(id)
        .await?
        .ok_or_else(|| no_such_webhook(id))?;
    Ok(Json(found.into()))
}

/// Changes a webhook.
#[utoipa::path(
    patch,
    path = "/api/v1/webhooks/{id}",
    operation_id = "update_webhook",
    tag = "webhooks",
    params(("id" = i64, Path, minimum = 1, description = "The webhook's id.")),
    request_body = WebhookPatchBody,
    responses(
        (status = 200, description = "The webhook as it now is, without its secret. Pending \
            deliveries go to its URL, signed with its secret, as they are at each attempt.",
            body = WebhookView),
        (status = 400, body = ErrorBody, description = "`bad_request`: the id is not a positive \
            integer; `invalid_body`: not a JSON object."),
        (status = 404, body = ErrorBody, description = "`not_found`: no webhook has this id."),
        (status = 413, body = ErrorBody, description = "`payload_too_large`."),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`: not JSON."),
        (status = 422, body = ErrorBody, description = "`invalid_field`: an unknown field or a \
            value not allowed; the message names it."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn update(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<WebhookView>, ApiError> {
    let id = webhook_id(path)?;
    let mut fields = object(body, &["url", "events", "enabled", "description", "secret"])?;
    let patch = WebhookPatch {
        url: present(&mut fields, "url")?
            .map(|v| check_url(&string("url", v)?))
            .transpose()?,
        events: present(&mut fields, "events")?
            .map(check_events)
            .transpose()?,
        enabled: present(&mut fields, "enabled")?
            .map(|v| boolean("enabled", v))
            .transpose()?,
        description: description(&mut fields)?,
        secret: present(&mut fields, "secret")?
            .map(|v| check_secret(string("secret", v)?))
            .transpose()?,
    };
    let changed = state
        .store
        .update_webhook(id, patch, state.clock.now())
        .await?
        .map_err(refused)?;
    Ok(Json(changed.into()))
}

/// Deletes a webhook and its deliveries.
#[utoipa::path(
    delete,
    path = "/api/v1/webhooks/{id}",
    operation_id = "delete_webhook",
    tag = "webhooks",
    params(("id" = i64, Path, minimum = 1, description = "The webhook's id.")),
    responses(
        (status = 204, description = "Deleted, with all its deliveries, pending ones too."),
        (status = 400, body = ErrorBody, description = "`bad_request`: the id is not a positive \
            integer; `invalid_filter`: a query parameter (this route takes none)."),
        (status = 404, body = ErrorBody, description = "`not_found`: no webhook has this id."),
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
    let id = webhook_id(path)?;
    query_params(&uri, &[])?;
    state.store.delete_webhook(id).await?.map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A webhook's deliveries, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}/deliveries",
    operation_id = "list_webhook_deliveries",
    tag = "webhooks",
    params(
        ("id" = i64, Path, minimum = 1, description = "The webhook's id."),
        ("state" = Option<DeliveryState>, Query, description = "Only deliveries in this state."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
            description = "Page size; default 100."),
        ("cursor" = Option<String>, Query,
            description = "The previous page's `next_cursor`, unchanged."),
    ),
    responses(
        (status = 200, description = "Deliveries, newest first.",
            body = ListView<DeliveryView>),
        (status = 400, body = ErrorBody, description = "`bad_request`: the id is not a positive \
            integer; `invalid_filter`: an unknown, repeated or malformed parameter; \
            `invalid_cursor`: a cursor this list did not return."),
        (status = 404, body = ErrorBody, description = "`not_found`: no webhook has this id."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn deliveries(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Json<ListView<DeliveryView>>, ApiError> {
    let id = webhook_id(path)?;
    let params = query_params(&uri, &["state", "limit", "cursor"])?;
    let delivery_state = params.get("state").cloned();
    if let Some(wanted) = &delivery_state
        && !STATES.contains(&wanted.as_str())
    {
        return Err(ApiError::invalid_filter(format!(
            "state must be one of {}, not {wanted:?}",
            STATES.join(", ")
        )));
    }
    let filter = DeliveryFilter {
        webhook_id: id,
        state: delivery_state,
        before: match params.get("cursor") {
            Some(c) => Some(cursor::decode(c, 1)?[0]),
            None => None,
        },
        limit: parse_limit(params.get("limit"))?,
    };
    let page = state
        .store
        .list_webhook_deliveries(filter)
        .await?
        .ok_or_else(|| no_such_webhook(id))?;
    Ok(Json(ListView {
        items: page.items.into_iter().map(DeliveryView::from).collect(),
        next_cursor: page.next.map(|id| cursor::encode(&[id])),
    }))
}

/// Sends a failed delivery again.
#[utoipa::path(
    post,
    path = "/api/v1/webhooks/{id}/deliveries/{delivery_id}/retry",
    operation_id = "retry_webhook_delivery",
    tag = "webhooks",
    params(
        ("id" = i64, Path, minimum = 1, description = "The webhook's id."),
        ("delivery_id" = i64, Path, minimum = 1, description = "The delivery's id."),
    ),
    responses(
        (status = 200, description = "The delivery, `pending` again and due now, its attempts \
            counted from zero.", body = DeliveryView),
        (status = 400, body = ErrorBody, description = "`bad_request`: an id is not a positive \
            integer; `invalid_filter`: a query parameter (this route takes none)."),
        (status = 404, body = ErrorBody, description = "`not_found`: no webhook has this id, or \
            it has no delivery with this id."),
        (status = 409, body = ErrorBody, description = "`conflict`: the delivery is not \
            `failed` (it is pending or delivered)."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn retry(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    uri: Uri,
) -> Result<Json<DeliveryView>, ApiError> {
    let (webhook, delivery) = path
        .map(|Path(ids)| ids)
        .map_err(|e| ApiError::bad_request(ErrorCode::BadRequest, e.body_text()))?;
    let id = |text: &str, what: &str| {
        text.parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| {
                ApiError::bad_request(
                    ErrorCode::BadRequest,
                    format!("{what} must be a positive integer, not {text:?}"),
                )
            })
    };
    let webhook = id(&webhook, "webhook id")?;
    let delivery = id(&delivery, "delivery id")?;
    query_params(&uri, &[])?;
    let retried = state
        .store
        .retry_webhook_delivery(webhook, delivery, state.clock.now())
        .await?
        .map_err(refused)?;
    Ok(Json(retried.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::PartialSchema;

    #[test]
    fn the_documented_events_and_states_are_the_store_s() {
        let events = serde_json::to_value(WebhookEvent::schema()).unwrap();
        assert_eq!(events["enum"], serde_json::json!(EVENTS));
        let states = serde_json::to_value(DeliveryState::schema()).unwrap();
        assert_eq!(states["enum"], serde_json::json!(STATES));
    }

    #[test]
    fn urls_are_absolute_http_or_https_without_credentials() {
        assert_eq!(
            check_url("https://127.0.0.1:9/census?x=1").unwrap(),
            "https://127.0.0.1:9/census?x=1"
        );
        // Stored as reqwest will request it.
        assert_eq!(
            check_url("HTTP://LocalHost:8080").unwrap(),
            "http://localhost:8080/"
        );
        for (bad, says) in [
            ("ftp://127.0.0.1:9/", "http or https"),
            ("/relative", "not an absolute URL"),
            ("127.0.0.1:9/hook", "not an absolute URL"),
            ("https://user:pw@127.0.0.1:9/", "user name or password"),
            ("https://user@127.0.0.1:9/", "user name or password"),
            ("http://", "not an absolute URL"),
            ("mailto:a@127.0.0.1:9", "http or https"),
        ] {
            let err = check_url(bad).unwrap_err();
            assert_eq!(err.code(), "invalid_field");
            assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
            let message = format!("{err:?}");
            assert!(message.contains(says), "{bad}: {message}");
        }
        let long = format!("https://127.0.0.1:9/{}", "a".repeat(MAX_URL_BYTES));
        assert!(format!("{:?}", check_url(&long).unwrap_err()).contains("2048"));
        let just = format!("https://127.0.0.1:9/{}", "a".repeat(MAX_URL_BYTES - 20));
        assert_eq!(check_url(&just).unwrap().len(), MAX_URL_BYTES);
    }

    #[test]
    fn events_are_a_non_empty_subset_in_a_fixed_order() {
        assert_eq!(
            check_events(serde_json::json!([
                "incident.resolved",
                "incident.opened",
                "incident.opened"
            ]))
            .unwrap(),
            vec!["incident.opened", "incident.resolved"]
        );
        for bad in [
            serde_json::json!([]),
            serde_json::json!("incident.opened"),
            serde_json::json!(["incident.closed"]),
            serde_json::json!([1]),
        ] {
            assert_eq!(check_events(bad).unwrap_err().code(), "invalid_field");
        }
    }

    #[test]
    fn secrets_are_16_to_256_characters() {
        assert!(check_secret("x".repeat(15)).is_err());
        assert!(check_secret("é".repeat(16)).is_ok());
        assert!(check_secret("x".repeat(256)).is_ok());
        assert!(check_secret("x".repeat(257)).is_err());
    }
}
