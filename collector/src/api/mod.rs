//! The HTTP API: the agent's ingest route, the admin JSON API under `/api/v1` and the
//! operational probes. Every route is listed in [`router`]; handlers live in one file per
//! resource. Every failure answers `{ "error": { "code", "message" } }`.

pub mod auth;
pub mod cis;
pub mod cursor;
pub mod enroll;
pub mod error;
pub mod ingest;
pub mod ops;
pub mod secrets;
pub mod software;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Query};
use axum::http::{StatusCode, Uri};
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use census_common::ErrorCode;

use crate::auth::Role;
use crate::clock::Clock;
use crate::store::Store;
pub use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub clock: Arc<dyn Clock>,
    /// Largest request body, as received and after decompression.
    pub max_body_bytes: usize,
}

/// All routes. The groups are separate routers so that each gets its own middleware: agent
/// tokens on the report route, admin roles on the API, nothing on enrollment and the probes.
pub fn router(state: AppState) -> Router {
    let reports = Router::new()
        .route("/agent/v1/reports", post(ingest::post_reports))
        // The extractor's own limit; decompression enforces the same limit again.
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .route_layer(from_fn_with_state(state.clone(), auth::require_agent));
    let enroll = Router::new().route("/agent/v1/enroll", post(enroll::post_enroll));
    let read = Router::new()
        .route("/api/v1/cis", get(cis::list))
        .route("/api/v1/cis/{id}", get(cis::get))
        .route("/api/v1/cis/{id}/software", get(cis::software))
        .route("/api/v1/cis/{id}/health", get(cis::health))
        .route("/api/v1/software", get(software::list))
        .route_layer(from_fn_with_state(
            (state.clone(), Role::Viewer),
            auth::require_role,
        ));
    let admin = Router::new()
        .route("/api/v1/enroll-secrets", get(secrets::list))
        .route_layer(from_fn_with_state(
            (state.clone(), Role::Admin),
            auth::require_role,
        ));
    let ops = Router::new()
        .route("/livez", get(ops::livez))
        .route("/readyz", get(ops::readyz));
    Router::new()
        .merge(reports)
        .merge(enroll)
        .merge(read)
        .merge(admin)
        .merge(ops)
        .fallback(ops::no_route)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .with_state(state)
}

/// A JSON body that could not be read: too large (`413`) or not the expected document (`400`).
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

    #[tokio::test]
    async fn a_closed_store_makes_readyz_and_ingest_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(Store::open(&dir.path().join("census.db"), &StoreOptions::default()).unwrap());
        let state = AppState {
            store: store.clone(),
            clock: Arc::new(SystemClock),
            max_body_bytes: 1 << 20,
        };
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
}
