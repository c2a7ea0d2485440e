//! The HTTP API: the agent's ingest route, the admin JSON API under `/api/v1` and the
//! operational probes. Every route is listed in [`router`]; handlers live in one file per
//! resource. Every failure answers `{ "error": { "code", "message" } }`.

pub mod auth;
pub mod ci_admin;
pub mod cis;
pub mod csv;
pub mod cursor;
pub mod enroll;
pub mod error;
pub mod fuzz;
pub mod history;
pub mod import;
pub mod incidents;
pub mod ingest;
pub mod kpis;
pub mod maintenance;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod relationships;
pub mod rules;
pub mod sbom;
pub mod secrets;
pub mod software;
pub mod webhooks;

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Query, Request};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::IntoResponse;
use axum::routing::{get, patch, post};
use census_common::{ErrorCode, Limits};

use crate::auth::Role;
use crate::clock::Clock;
use crate::config::Config;
use crate::ratelimit::{self, Rate, RateLimiter};
use crate::store::Store;
pub use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub clock: Arc<dyn Clock>,
    /// Largest body of `/agent/v1/reports`, as received and after decompression.
    pub max_body_bytes: usize,
    /// Largest body of every other route.
    pub max_api_body_bytes: usize,
    /// Bounds every batch is checked against before anything of it is stored.
    pub limits: Limits,
    /// Report batches per agent id (`reports_rate_per_minute`, `reports_burst`).
    pub reports_limiter: Arc<RateLimiter<String>>,
    /// Enrollments per client address, keyed by [`ratelimit::ip_key`]
    /// (`enroll_rate_per_minute`). Handlers find the client address in
    /// `ConnectInfo<SocketAddr>`.
    pub enroll_limiter: Arc<RateLimiter<IpAddr>>,
    /// Report bodies decoded at once: one per CPU (a decoded batch can be several times its
    /// body, so this bounds the memory decoding takes).
    pub decode_permits: Arc<tokio::sync::Semaphore>,
    /// Counters served by `GET /metrics`.
    pub metrics: Arc<metrics::Metrics>,
    /// `GET /metrics` without a token (`metrics_open`).
    pub metrics_open: bool,
}

impl AppState {
    pub fn new(store: Arc<Store>, clock: Arc<dyn Clock>, config: &Config) -> AppState {
        fn limiter<K: Eq + Hash>(
            per_minute: u32,
            burst: u32,
            clock: &Arc<dyn Clock>,
        ) -> Arc<RateLimiter<K>> {
            let rate = Rate { per_minute, burst };
            Arc::new(RateLimiter::new(
                rate,
                ratelimit::DEFAULT_MAX_KEYS,
                clock.clone(),
            ))
        }
        AppState {
            reports_limiter: limiter(config.reports_rate_per_minute, config.reports_burst, &clock),
            enroll_limiter: limiter(
                config.enroll_rate_per_minute,
                config.enroll_rate_per_minute,
                &clock,
            ),
            store,
            clock: clock.clone(),
            max_body_bytes: config.max_body_bytes as usize,
            max_api_body_bytes: config.max_api_body_bytes as usize,
            limits: config.limits(),
            decode_permits: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, usize::from),
            )),
            metrics: Arc::default(),
            metrics_open: config.metrics_open,
        }
    }
}

/// All routes, in groups that each get their own middleware: an agent token on the report
/// route, an admin role on the API, nothing on enrollment and the probes. Agent batches may be
/// large (`max_body_bytes`); every other body is a small JSON document, bounded by
/// `max_api_body_bytes`.
pub fn router(state: AppState) -> Router {
    let reports = Router::new()
        .route("/agent/v1/reports", post(ingest::post_reports))
        .route_layer(from_fn_with_state(state.clone(), auth::require_agent));
    let enroll = Router::new()
        .route("/agent/v1/enroll", post(enroll::post_enroll))
        .route_layer(from_fn_with_state(state.clone(), auth::limit_enrollment));
    // Open, or behind any admin role, as `metrics_open` says.
    let (open_metrics, guarded_metrics) = if state.metrics_open {
        (
            Router::new().route("/metrics", get(metrics::get)),
            Router::new(),
        )
    } else {
        (
            Router::new(),
            Router::new().route("/metrics", get(metrics::get)),
        )
    };
    let read = guarded_metrics
        .route("/api/v1/cis", get(cis::list))
        .route("/api/v1/cis/{id}", get(cis::get))
        .route("/api/v1/cis/{id}/software", get(cis::software))
        .route("/api/v1/cis/{id}/health", get(cis::health))
        .route("/api/v1/cis/{id}/history", get(history::ci_history))
        .route("/api/v1/changes", get(history::changes))
        .route("/api/v1/cis/{id}/impact", get(ci_admin::impact))
        .route("/api/v1/cis/{id}/dependencies", get(ci_admin::dependencies))
        .route("/api/v1/relationships", get(relationships::list))
        .route("/api/v1/relationships/{id}", get(relationships::get))
        .route("/api/v1/software", get(software::list))
        .route("/api/v1/software/catalog", get(software::catalog))
        .route("/api/v1/cis/{id}/sbom", get(sbom::get))
        .route("/api/v1/rules", get(rules::list))
        .route("/api/v1/rules/{id}", get(rules::get))
        .route("/api/v1/maintenance", get(maintenance::list))
        .route("/api/v1/maintenance/{id}", get(maintenance::get))
        .route("/api/v1/incidents", get(incidents::list))
        .route("/api/v1/incidents/{id}", get(incidents::get))
        .route("/api/v1/kpis", get(kpis::get))
        .route("/api/v1/openapi.json", get(openapi::openapi))
        .route_layer(from_fn_with_state(
            (state.clone(), Role::Viewer),
            auth::require_role,
        ));
    let admin = Router::new()
        .route("/api/v1/enroll-secrets", get(secrets::list))
        .route("/api/v1/cis", post(ci_admin::create))
        .route(
            "/api/v1/cis/{id}",
            patch(ci_admin::update).delete(ci_admin::delete),
        )
        .route("/api/v1/relationships", post(relationships::create))
        .route(
            "/api/v1/relationships/{id}",
            patch(relationships::update).delete(relationships::delete),
        )
        .route("/api/v1/rules", post(rules::create))
        .route(
            "/api/v1/rules/{id}",
            patch(rules::update).delete(rules::delete),
        )
        .route(
            "/api/v1/webhooks",
            get(webhooks::list).post(webhooks::create),
        )
        .route(
            "/api/v1/webhooks/{id}",
            get(webhooks::get)
                .patch(webhooks::update)
                .delete(webhooks::delete),
        )
        .route(
            "/api/v1/webhooks/{id}/deliveries",
            get(webhooks::deliveries),
        )
        .route(
            "/api/v1/webhooks/{id}/deliveries/{delivery_id}/retry",
            post(webhooks::retry),
        )
        .route_layer(from_fn_with_state(
            (state.clone(), Role::Admin),
            auth::require_role,
        ));
    // Incident work: maintenance windows and the incident actions; operators and admins.
    let operator = Router::new()
        .route("/api/v1/maintenance", post(maintenance::create))
        .route(
            "/api/v1/maintenance/{id}",
            patch(maintenance::update).delete(maintenance::delete),
        )
        .route(
            "/api/v1/incidents/{id}/acknowledge",
            post(incidents::acknowledge),
        )
        .route("/api/v1/incidents/{id}/assign", post(incidents::assign))
        .route("/api/v1/incidents/{id}/notes", post(incidents::notes))
        .route("/api/v1/incidents/{id}/resolve", post(incidents::resolve))
        .route("/api/v1/incidents/{id}/close", post(incidents::close))
        .route("/api/v1/incidents/{id}/reopen", post(incidents::reopen))
        .route(
            "/api/v1/incidents/{id}/priority",
            post(incidents::set_priority),
        )
        .route_layer(from_fn_with_state(
            (state.clone(), Role::Operator),
            auth::require_role,
        ));
    // Imports carry a whole inventory: bounded like agent batches (`max_body_bytes`).
    let import = Router::new()
        .route("/api/v1/import", post(import::post_import))
        .route_layer(from_fn_with_state(
            (state.clone(), Role::Admin),
            auth::require_role,
        ));
    let ops = open_metrics
        .route("/livez", get(ops::livez))
        .route("/readyz", get(ops::readyz));
    let small = Router::new()
        .merge(enroll)
        .merge(read)
        .merge(admin)
        .merge(operator)
        .merge(ops);
    Router::new()
        .merge(limit_bodies(
            reports.merge(import),
            state.max_body_bytes,
            "max_body_bytes",
        ))
        .merge(limit_bodies(
            small,
            state.max_api_body_bytes,
            "max_api_body_bytes",
        ))
        .fallback(ops::no_route)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(from_fn_with_state(state.clone(), metrics::count_responses))
        .with_state(state)
}

/// Whether `text` is a UUID in its one canonical form (lowercase, hyphenated), as agents write
/// them: the braced, `urn:`, hyphenless and uppercase forms of one UUID would otherwise be as
/// many agent ids.
pub(crate) fn is_canonical_uuid(text: &str) -> bool {
    uuid::Uuid::parse_str(text).is_ok_and(|id| id.hyphenated().to_string() == text)
}

/// A JSON body that could not be read: too large (`413`), not JSON (`415`) or not the expected
/// document (`400`).
pub(crate) fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::BytesRejection(_) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                "the body is too large for this route",
            )
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "send the body as application/json",
        ),
        other => ApiError::bad_request(
            ErrorCode::InvalidBody,
            format!(
                "the body is not the expected JSON document: {}",
                other.body_text()
            ),
        ),
    }
}

/// Bounds the request bodies of every route in `routes` to `max` bytes, set by config key
/// `key`. A body declared larger (`Content-Length`) is refused before it is read; one that
/// turns out larger is refused by the extractor reading it (`DefaultBodyLimit`), whose
/// plain-text answer is replaced by the JSON error body. Either way: 413 `payload_too_large`.
pub fn limit_bodies(routes: Router<AppState>, max: usize, key: &'static str) -> Router<AppState> {
    routes
        .layer(axum::middleware::from_fn(
            move |request: Request, next: Next| async move {
                if content_length(request.headers()).is_some_and(|len| len > max as u64) {
                    return payload_too_large(max, key).into_response();
                }
                let response = next.run(request).await;
                if response.status() == StatusCode::PAYLOAD_TOO_LARGE
                    && !is_json(response.headers())
                {
                    return payload_too_large(max, key).into_response();
                }
                response
            },
        ))
        .layer(DefaultBodyLimit::max(max))
}

/// 413 `payload_too_large`, naming the limit and its config key.
pub fn payload_too_large(max: usize, key: &str) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
        format!("the request body is larger than the collector accepts here ({key} = {max} bytes)"),
    )
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// The query string as named parameters, refusing names not in `allowed` and repeated names,
/// so a typo in a filter is an error rather than an unfiltered list.
pub(crate) fn query_params(
    uri: &Uri,
    allowed: &[&str],
) -> Result<HashMap<String, String>, ApiError> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|e| ApiError::invalid_filter(format!("malformed query string: {e}")))?;
    let mut params = HashMap::new();
    for (name, value) in pairs {
        if !allowed.contains(&name.as_str()) {
            let hint = if allowed.is_empty() {
                "this route takes no query parameters".to_owned()
            } else {
                format!("allowed: {}", allowed.join(", "))
            };
            return Err(ApiError::invalid_filter(format!(
                "unknown query parameter `{name}`; {hint}"
            )));
        }
        if params.insert(name.clone(), value).is_some() {
            return Err(ApiError::invalid_filter(format!(
                "query parameter `{name}` given more than once"
            )));
        }
    }
    Ok(params)
}

pub(crate) const DEFAULT_LIMIT: u32 = 100;
pub(crate) const MAX_LIMIT: u32 = 1000;

pub(crate) fn parse_limit(value: Option<&String>) -> Result<u32, ApiError> {
    parse_limit_within(value, DEFAULT_LIMIT, MAX_LIMIT)
}

/// `limit` of a list whose default and maximum differ from the usual ones.
pub(crate) fn parse_limit_within(
    value: Option<&String>,
    default: u32,
    max: u32,
) -> Result<u32, ApiError> {
    match value {
        None => Ok(default),
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::invalid_filter(format!(
                    "limit must be an integer from 1 to {max}, not {text:?}"
                ))
            }),
    }
}

/// RFC 3339 UTC, the form of every time in the API.
pub(crate) mod rfc3339_utc {
    use serde::Serializer;
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        let text = t
            .to_offset(time::UtcOffset::UTC)
            .format(&Rfc3339)
            .map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    /// An optional time: `null` or RFC 3339 UTC.
    pub mod option {
        use serde::Serializer;
        use time::OffsetDateTime;

        pub fn serialize<S: Serializer>(
            t: &Option<OffsetDateTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::store::{Store, StoreOptions};
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    async fn call(router: Router, request: Request<Body>) -> (StatusCode, serde_json::Value) {
        let response = router.oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn only_the_canonical_uuid_form_is_an_agent_id() {
        assert!(is_canonical_uuid("0b0c6a34-8d54-4a4a-9d51-8f0e1c3b7a11"));
        for other in [
            "0B0C6A34-8D54-4A4A-9D51-8F0E1C3B7A11",
            "{0b0c6a34-8d54-4a4a-9d51-8f0e1c3b7a11}",
            "urn:uuid:0b0c6a34-8d54-4a4a-9d51-8f0e1c3b7a11",
            "0b0c6a348d544a4a9d518f0e1c3b7a11",
            "not-a-uuid",
        ] {
            assert!(!is_canonical_uuid(other), "{other}");
        }
    }

    #[tokio::test]
    async fn a_closed_store_makes_readyz_and_ingest_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(Store::open(&dir.path().join("census.db"), &StoreOptions::default()).unwrap());
        let state = AppState::new(store.clone(), Arc::new(SystemClock), &Config::default());
        let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
        let (status, _) = call(router(state.clone()), get("/readyz")).await;
        assert_eq!(status, StatusCode::OK);

        store.close().await;
        let (status, body) = call(router(state.clone()), get("/readyz")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "unavailable");
        // Liveness does not depend on the database.
        assert_eq!(
            call(router(state.clone()), get("/livez")).await.0,
            StatusCode::OK
        );

        let batch = r#"{"agent_id": "0b0c6a34-8d54-4a4a-9d51-8f0e1c3b7a11", "reports": []}"#;
        // A well-formed token: checking it needs the database.
        let token = crate::auth::Credential::generate(crate::auth::Kind::AgentToken).unwrap();
        let post = Request::post("/agent/v1/reports")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", token.reveal()))
            .body(Body::from(batch))
            .unwrap();
        let (status, body) = call(router(state), post).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "unavailable");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_answers_the_json_error() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(Store::open(&dir.path().join("census.db"), &StoreOptions::default()).unwrap());
        let state = AppState::new(store.clone(), Arc::new(SystemClock), &Config::default());
        let echo = Router::new().route(
            "/echo",
            post(|axum::Json(v): axum::Json<serde_json::Value>| async move { axum::Json(v) }),
        );
        let app = limit_bodies(echo, 64, "max_api_body_bytes").with_state(state);
        let big = format!(r#"{{"text": "{}"}}"#, "x".repeat(100));

        // Declared too large: refused before reading.
        let declared = Request::post("/echo")
            .header("content-type", "application/json")
            .header("content-length", big.len())
            .body(Body::from(big.clone()))
            .unwrap();
        // Not declared: the extractor finds out while reading, and its plain-text rejection
        // is replaced.
        let undeclared = Request::post("/echo")
            .header("content-type", "application/json")
            .body(Body::from(big))
            .unwrap();
        for request in [declared, undeclared] {
            let (status, body) = call(app.clone(), request).await;
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
            assert_eq!(body["error"]["code"], "payload_too_large");
            assert_eq!(
                body["error"]["message"],
                "the request body is larger than the collector accepts here \
                 (max_api_body_bytes = 64 bytes)"
            );
        }
        let small = Request::post("/echo")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"text": "hi"}"#))
            .unwrap();
        let (status, body) = call(app, small).await;
        assert_eq!(
            (status, &body["text"]),
            (StatusCode::OK, &serde_json::json!("hi"))
        );
        store.close().await;
    }
}
