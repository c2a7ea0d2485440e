//! `/api/v1/rules`: the threshold rules the incident engine judges every health sample by.
//!
//! - `GET /api/v1/rules` (viewer): every rule by id; filters `enabled` (`true`/`false`) and
//!   `metric`, `limit` (1 to 1000, default 1000: the collector keeps at most 1000 rules, so one
//!   page holds them all) and `cursor`.
//! - `GET /api/v1/rules/{id}` (viewer).
//! - `POST /api/v1/rules` (admin): `name`, `metric`, `operator` and `threshold` are required;
//!   `dimension` (a pattern over the mount, per-filesystem metrics only), `scope` (default `{}`:
//!   every CI), `for` (default `5m`), `clear_threshold` (default null: recovered when no longer
//!   breaching), `clear_for` (default `5m`; `0s` for `unreachable`), `severity` (default
//!   `medium`), `enabled` (default true). Null counts as absent. 201 with the rule and a
//!   `Location` header; a duplicate name, or a 1001st rule, is 409 `conflict`.
//! - `PATCH /api/v1/rules/{id}` (admin): any of those fields (`dimension` and
//!   `clear_threshold` may be null); the merged rule is checked whole. Disabling a rule, or
//!   changing its metric, dimension or scope, resolves its open incidents (see
//!   `store::rules`). A patch that changes nothing writes nothing (`updated_at` stays). 200
//!   with the rule.
//! - `DELETE /api/v1/rules/{id}` (admin): resolves its open incidents, then deletes it. 204.
//!
//! Durations are written like the configuration's (`90s`, `5m`, `1h30m`, `0s`), from `0s` to
//! `7d`. Field errors are 422 `invalid_field` naming the field; a body that is not a JSON object
//! is 400 `invalid_body`.

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
use super::{ApiError, AppState, cursor, json_rejection, parse_limit_within, query_params};
use crate::config::Span;
use crate::incidents::rules::{Metric, Operator, Rule, Severity};
use crate::incidents::scope::Scope;
use crate::store::rules::{MAX_RULES, span_text};
use crate::store::{RuleFilter, RulePatch, RuleSpec, Source};

/// `for` and `clear_for` of a rule created without them: 5 minutes.
pub const DEFAULT_SPAN_MS: i64 = 300_000;

/// A threshold rule. For metric `unreachable`, `threshold` is a number of health intervals
/// of silence and `for` the least silence.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Rule)]
pub struct RuleView {
    pub id: i64,
    pub name: String,
    pub metric: Metric,
    /// For a per-filesystem metric, a pattern the mount must match (`*` any run of
    /// characters, `?` one); null: every mount.
    #[schema(required = true)]
    pub dimension: Option<String>,
    /// Which CIs the rule applies to; `{}`: every CI.
    pub scope: Scope,
    pub operator: Operator,
    pub threshold: f64,
    /// How long the breach must last before an incident opens, like `5m`.
    #[serde(rename = "for")]
    #[schema(example = "5m")]
    pub for_: String,
    /// The value the metric must get past, going back, to count as recovered (hysteresis);
    /// null: no longer breaching `threshold`.
    #[schema(required = true)]
    pub clear_threshold: Option<f64>,
    /// How long the recovery must last before the incident resolves, like `5m`.
    #[schema(example = "5m")]
    pub clear_for: String,
    pub severity: Severity,
    pub enabled: bool,
    #[serde(with = "super::rfc3339_utc")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "super::rfc3339_utc")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl From<Rule> for RuleView {
    fn from(r: Rule) -> RuleView {
        RuleView {
            id: r.id,
            name: r.name,
            metric: r.metric,
            dimension: r.dimension,
            scope: r.scope,
            operator: r.operator,
            threshold: r.threshold,
            for_: span_text(r.for_ms),
            clear_threshold: r.clear_threshold,
            clear_for: span_text(r.clear_for_ms),
            severity: r.severity,
            enabled: r.enabled,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// The body of `POST /api/v1/rules`.
#[derive(ToSchema)]
pub struct NewRuleBody {
    /// 1 to 200 characters, unique.
    pub name: String,
    pub metric: Metric,
    pub operator: Operator,
    /// A finite number; for `unreachable`, health intervals from 1 to 1000.
    pub threshold: f64,
    /// A pattern over the mount, for `fs_used_percent` and `fs_inodes_used_percent` only;
    /// default null (every mount).
    pub dimension: Option<String>,
    /// Default `{}` (every CI). Every id in `ci_ids` must be a CI.
    pub scope: Option<Scope>,
    /// `0s` to `7d`; default `5m`.
    #[serde(rename = "for")]
    #[schema(example = "5m")]
    pub for_: Option<String>,
    /// At most `threshold` for `>`/`>=`, at least it for `<`/`<=`; null for `unreachable`.
    /// Default null.
    pub clear_threshold: Option<f64>,
    /// `0s` to `7d`; default `5m` (`0s`, the only value allowed, for `unreachable`).
    #[schema(example = "5m")]
    pub clear_for: Option<String>,
    /// Default `medium`.
    pub severity: Option<Severity>,
    /// Default true.
    pub enabled: Option<bool>,
}

/// The body of `PATCH /api/v1/rules/{id}`: the fields to change. The rule they make is
/// checked as a whole, as on `POST`.
#[derive(ToSchema)]
pub struct RulePatchBody {
    #[schema(required = false)]
    pub name: String,
    #[schema(required = false)]
    pub metric: Metric,
    #[schema(required = false)]
    pub operator: Operator,
    #[schema(required = false)]
    pub threshold: f64,
    /// Null: every mount.
    pub dimension: Option<String>,
    #[schema(required = false)]
    pub scope: Scope,
    #[serde(rename = "for")]
    #[schema(required = false, example = "5m")]
    pub for_: String,
    /// Null: recovered when no longer breaching.
    pub clear_threshold: Option<f64>,
    #[schema(required = false, example = "5m")]
    pub clear_for: String,
    #[schema(required = false)]
    pub severity: Severity,
    /// False resolves the rule's open incidents.
    #[schema(required = false)]
    pub enabled: bool,
}

const RULE_FIELDS: &[&str] = &[
    "name",
    "metric",
    "dimension",
    "scope",
    "operator",
    "threshold",
    "for",
    "clear_threshold",
    "clear_for",
    "severity",
    "enabled",
];

fn invalid_field(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::InvalidField,
        message,
    )
}

/// A JSON object body whose fields are taken one at a time, each refusal naming its field. It
/// answers as `ci_admin`'s reader does: 400 `invalid_body` for a body that is not an object,
/// 422 `invalid_field` for an unknown field.
pub(crate) struct Fields(Map<String, Value>);

impl Fields {
    pub(crate) fn parse(
        body: Result<Json<Value>, JsonRejection>,
        allowed: &[&str],
    ) -> Result<Fields, ApiError> {
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
        Ok(Fields(fields))
    }

    /// The field if present and not null.
    pub(crate) fn optional(&mut self, name: &str) -> Option<Value> {
        self.0.remove(name).filter(|v| !v.is_null())
    }

    pub(crate) fn required(&mut self, name: &str) -> Result<Value, ApiError> {
        self.optional(name)
            .ok_or_else(|| invalid_field(format!("{name}: required")))
    }

    /// For a patch: absent is `None`, null is refused.
    pub(crate) fn change(&mut self, name: &str) -> Result<Option<Value>, ApiError> {
        match self.0.remove(name) {
            Some(Value::Null) => Err(invalid_field(format!(
                "{name}: cannot be null; leave it out to keep it as it is"
            ))),
            other => Ok(other),
        }
    }

    /// For a patch of a nullable field: absent is `None`, null `Some(None)`.
    pub(crate) fn nullable_change(&mut self, name: &str) -> Option<Option<Value>> {
        self.0
            .remove(name)
            .map(|v| if v.is_null() { None } else { Some(v) })
    }
}

pub(crate) fn text(name: &str, value: Value) -> Result<String, ApiError> {
    match value {
        Value::String(text) => Ok(text),
        other => Err(invalid_field(format!("{name}: a string, not {other}"))),
    }
}

fn number(name: &str, value: Value) -> Result<f64, ApiError> {
    value
        .as_f64()
        .filter(|n| n.is_finite())
        .ok_or_else(|| invalid_field(format!("{name}: a finite number, not {value}")))
}

fn boolean(name: &str, value: Value) -> Result<bool, ApiError> {
    value
        .as_bool()
        .ok_or_else(|| invalid_field(format!("{name}: true or false, not {value}")))
}

/// A duration like `5m`, in milliseconds.
fn span(name: &str, value: Value) -> Result<i64, ApiError> {
    let text = text(name, value)?;
    let span: Span = text
        .parse()
        .map_err(|e: String| invalid_field(format!("{name}: {e}")))?;
    Ok(i64::try_from(span.0.as_millis()).unwrap_or(i64::MAX))
}

fn metric(value: Value) -> Result<Metric, ApiError> {
    let text = text("metric", value)?;
    Metric::parse(&text)
        .ok_or_else(|| invalid_field(format!("metric: one of {}, not {text:?}", Metric::names())))
}

fn operator(value: Value) -> Result<Operator, ApiError> {
    let text = text("operator", value)?;
    Operator::parse(&text)
        .ok_or_else(|| invalid_field(format!("operator: one of >, >=, <, <=, not {text:?}")))
}

fn severity(value: Value) -> Result<Severity, ApiError> {
    let text = text("severity", value)?;
    Severity::parse(&text).ok_or_else(|| {
        invalid_field(format!(
            "severity: one of critical, high, medium, low, not {text:?}"
        ))
    })
}

/// A scope object; its bounds are checked by the store.
pub(crate) fn scope(value: Value) -> Result<Scope, ApiError> {
    if !value.is_object() {
        return Err(invalid_field(format!(
            "scope: an object with classes, criticality, name_pattern and ci_ids, each \
             optional, not {value}"
        )));
    }
    serde_json::from_value(value).map_err(|e| invalid_field(format!("scope: {e}")))
}

fn rule_id(path: Result<Path<String>, PathRejection>) -> Result<i64, ApiError> {
    positive_id(path, "rule id")
}

fn no_such_rule(id: i64) -> ApiError {
    ApiError::not_found(format!("there is no rule with id {id}"))
}

/// Every rule, by id.
#[utoipa::path(
    get,
    path = "/api/v1/rules",
    operation_id = "list_rules",
    tag = "rules",
    params(
        ("enabled" = Option<bool>, Query, description = "Only enabled (`true`) or disabled \
            (`false`) rules."),
        ("metric" = Option<Metric>, Query, description = "Only rules on this metric."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
            description = "Page size; default 1000, every rule the collector can keep."),
        ("cursor" = Option<String>, Query,
            description = "The previous page's `next_cursor`, unchanged."),
    ),
    responses(
        (status = 200, description = "Rules, by id.", body = ListView<RuleView>),
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
) -> Result<Json<ListView<RuleView>>, ApiError> {
    let params = query_params(&uri, &["enabled", "metric", "limit", "cursor"])?;
    let enabled = match params.get("enabled").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(ApiError::invalid_filter(format!(
                "enabled must be true or false, not {other:?}"
            )));
        }
    };
    let metric = params
        .get("metric")
        .map(|text| {
            Metric::parse(text).ok_or_else(|| {
                ApiError::invalid_filter(format!(
                    "metric must be one of {}, not {text:?}",
                    Metric::names()
                ))
            })
        })
        .transpose()?;
    let after = match params.get("cursor") {
        Some(c) => Some(cursor::decode(c, 1)?[0]),
        None => None,
    };
    let filter = RuleFilter {
        enabled,
        metric,
        after,
        limit: parse_limit_within(params.get("limit"), MAX_RULES as u32, MAX_RULES as u32)?,
    };
    let page = state.store.list_rules(filter).await?;
    Ok(Json(ListView {
        items: page.items.into_iter().map(RuleView::from).collect(),
        next_cursor: page.next.map(|id| cursor::encode(&[id])),
    }))
}

/// One rule.
#[utoipa::path(
    get,
    path = "/api/v1/rules/{id}",
    operation_id = "get_rule",
    tag = "rules",
    params(("id" = i64, Path, minimum = 1, description = "The rule's id.")),
    responses(
        (status = 200, description = "The rule.", body = RuleView),
        (status = 400, body = ErrorBody, description = "`bad_request`: the id is not a positive \
            integer; `invalid_filter`: a query parameter (this route takes none)."),
        (status = 404, body = ErrorBody, description = "`not_found`: no rule has this id."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn get(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Json<RuleView>, ApiError> {
    let id = rule_id(path)?;
    query_params(&uri, &[])?;
    let found = state
        .store
        .get_rule(id)
        .await?
        .ok_or_else(|| no_such_rule(id))?;
    Ok(Json(found.into()))
}

/// Makes a rule.
#[utoipa::path(
    post,
    path = "/api/v1/rules",
    operation_id = "create_rule",
    tag = "rules",
    request_body = NewRuleBody,
    responses(
        (status = 201, description = "The rule made; the engine judges the next health sample \
            by it.", body = RuleView,
            headers(("Location" = String, description = "The rule's URL."))),
        (status = 400, body = ErrorBody, description = "`invalid_body`: not a JSON object."),
        (status = 409, body = ErrorBody, description = "`conflict`: another rule has this name \
            (the message names it), or the collector has its 1000 rules."),
        (status = 413, body = ErrorBody, description = "`payload_too_large`."),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`: not JSON."),
        (status = 422, body = ErrorBody, description = "`invalid_field`: a field missing, \
            unknown or not allowed (an unknown metric, a dimension on a metric without mounts, \
            a duration past 7d, a clear threshold on the breaching side, a CI of the scope that \
            does not exist, an `unreachable` rule that is not `>` over 1 to 1000 intervals); \
            the message names it."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let mut body = Fields::parse(body, RULE_FIELDS)?;
    let name = text("name", body.required("name")?)?;
    let metric = metric(body.required("metric")?)?;
    let operator = operator(body.required("operator")?)?;
    let threshold = number("threshold", body.required("threshold")?)?;
    let spec = RuleSpec {
        name,
        metric,
        dimension: body
            .optional("dimension")
            .map(|v| text("dimension", v))
            .transpose()?,
        scope: body
            .optional("scope")
            .map(scope)
            .transpose()?
            .unwrap_or_default(),
        operator,
        threshold,
        for_ms: body
            .optional("for")
            .map(|v| span("for", v))
            .transpose()?
            .unwrap_or(DEFAULT_SPAN_MS),
        clear_threshold: body
            .optional("clear_threshold")
            .map(|v| number("clear_threshold", v))
            .transpose()?,
        // An unreachable rule resolves on the next report: it has no recovery to wait for.
        clear_for_ms: body
            .optional("clear_for")
            .map(|v| span("clear_for", v))
            .transpose()?
            .unwrap_or(if metric == Metric::Unreachable {
                0
            } else {
                DEFAULT_SPAN_MS
            }),
        severity: body
            .optional("severity")
            .map(severity)
            .transpose()?
            .unwrap_or(Severity::Medium),
        enabled: body
            .optional("enabled")
            .map(|v| boolean("enabled", v))
            .transpose()?
            .unwrap_or(true),
    };
    let made = state
        .store
        .create_rule(spec, state.clock.now())
        .await?
        .map_err(refused)?;
    let location = format!("/api/v1/rules/{}", made.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(RuleView::from(made)),
    )
        .into_response())
}

/// Changes a rule.
#[utoipa::path(
    patch,
    path = "/api/v1/rules/{id}",
    operation_id = "update_rule",
    tag = "rules",
    params(("id" = i64, Path, minimum = 1, description = "The rule's id.")),
    request_body = RulePatchBody,
    responses(
        (status = 200, description = "The rule as it now is. Disabling it, or changing its \
            metric, dimension or scope, resolved its open incidents (`resolved_by` is the \
            caller, the resolution `rule disabled` or `rule changed`); a new threshold keeps \
            the alert state and judges the next sample by it.", body = RuleView),
        (status = 400, body = ErrorBody, description = "`bad_request`: the id is not a positive \
            integer; `invalid_body`: not a JSON object."),
        (status = 404, body = ErrorBody, description = "`not_found`: no rule has this id."),
        (status = 409, body = ErrorBody, description = "`conflict`: another rule has the new \
            name (the message names it)."),
        (status = 413, body = ErrorBody, description = "`payload_too_large`."),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`: not JSON."),
        (status = 422, body = ErrorBody, description = "`invalid_field`: an unknown field, a \
            null where one is not allowed, or a rule that is not allowed as a whole (see \
            `POST`); the message names the field."),
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
) -> Result<Json<RuleView>, ApiError> {
    let id = rule_id(path)?;
    let mut body = Fields::parse(body, RULE_FIELDS)?;
    let patch = RulePatch {
        name: body.change("name")?.map(|v| text("name", v)).transpose()?,
        metric: body.change("metric")?.map(metric).transpose()?,
        dimension: body
            .nullable_change("dimension")
            .map(|v| v.map(|v| text("dimension", v)).transpose())
            .transpose()?,
        scope: body.change("scope")?.map(scope).transpose()?,
        operator: body.change("operator")?.map(operator).transpose()?,
        threshold: body
            .change("threshold")?
            .map(|v| number("threshold", v))
            .transpose()?,
        for_ms: body.change("for")?.map(|v| span("for", v)).transpose()?,
        clear_threshold: body
            .nullable_change("clear_threshold")
            .map(|v| v.map(|v| number("clear_threshold", v)).transpose())
            .transpose()?,
        clear_for_ms: body
            .change("clear_for")?
            .map(|v| span("clear_for", v))
            .transpose()?,
        severity: body.change("severity")?.map(severity).transpose()?,
        enabled: body
            .change("enabled")?
            .map(|v| boolean("enabled", v))
            .transpose()?,
    };
    let changed = state
        .store
        .update_rule(id, patch, Source::Api(principal.name), state.clock.now())
        .await?
        .map_err(refused)?;
    Ok(Json(changed.into()))
}

/// Deletes a rule.
#[utoipa::path(
    delete,
    path = "/api/v1/rules/{id}",
    operation_id = "delete_rule",
    tag = "rules",
    params(("id" = i64, Path, minimum = 1, description = "The rule's id.")),
    responses(
        (status = 204, description = "Deleted. Its open incidents were resolved first \
            (resolution `rule deleted`); its incidents stay, with `rule_id` null and their \
            `rule_name` and `metric`."),
        (status = 400, body = ErrorBody, description = "`bad_request`: the id is not a positive \
            integer; `invalid_filter`: a query parameter (this route takes none)."),
        (status = 404, body = ErrorBody, description = "`not_found`: no rule has this id."),
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
    let id = rule_id(path)?;
    query_params(&uri, &[])?;
    state
        .store
        .delete_rule(id, Source::Api(principal.name), state.clock.now())
        .await?
        .map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::PartialSchema;

    #[test]
    fn the_documented_metrics_are_the_engine_s() {
        let schema = serde_json::to_value(Metric::schema()).unwrap();
        let names: Vec<&str> = Metric::ALL.iter().map(|m| m.as_str()).collect();
        assert_eq!(schema["enum"], serde_json::json!(names));
    }

    #[test]
    fn a_rule_writes_its_durations_like_the_configuration() {
        let rule = Rule {
            id: 1,
            name: "Disk".into(),
            metric: Metric::FsUsedPercent,
            dimension: None,
            scope: Scope::default(),
            operator: Operator::Ge,
            threshold: 90.0,
            for_ms: 5_400_000,
            clear_threshold: None,
            clear_for_ms: 0,
            severity: Severity::High,
            enabled: true,
            created_at: OffsetDateTime::UNIX_EPOCH,
            updated_at: OffsetDateTime::UNIX_EPOCH,
        };
        let json = serde_json::to_value(RuleView::from(rule)).unwrap();
        assert_eq!(json["for"], "1h30m");
        assert_eq!(json["clear_for"], "0s");
        assert_eq!(json["operator"], ">=");
        assert_eq!(json["scope"], serde_json::json!({}));
        assert_eq!(json["created_at"], "1970-01-01T00:00:00Z");
        assert!(json["clear_threshold"].is_null() && json["dimension"].is_null());
    }
}
