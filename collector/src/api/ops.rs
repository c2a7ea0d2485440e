//! Operational routes: liveness, readiness and the answers for unknown routes.

use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use census_common::{ErrorBody, ErrorCode};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::codes;
use super::{ApiError, AppState};

/// The answer of a probe that passed: `{ "status": "ok" }`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProbeOk {
    status: ProbeStatus,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum ProbeStatus {
    Ok,
}

impl ProbeOk {
    const OK: ProbeOk = ProbeOk {
        status: ProbeStatus::Ok,
    };
}

/// `GET /livez`: the process is up and serving HTTP.
#[utoipa::path(
    get,
    path = "/livez",
    operation_id = "livez",
    tag = "operations",
    responses((status = 200, description = "The process is up.", body = ProbeOk)),
)]
pub async fn livez() -> Json<ProbeOk> {
    Json(ProbeOk::OK)
}

/// `GET /readyz`: the database answers a query on a read connection and the writer runs.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "operations",
    responses(
        (status = 200, description = "The database answers.", body = ProbeOk),
        (status = 503, body = ErrorBody, description = "`unavailable`: the database does not \
            answer."),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<ProbeOk>, ApiError> {
    match state.store.ping().await {
        Ok(()) => Ok(Json(ProbeOk::OK)),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "the database is not answering; the collector log has the details",
            ))
        }
    }
}

pub async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::with_code(
        StatusCode::METHOD_NOT_ALLOWED,
        codes::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}
