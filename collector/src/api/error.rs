//! One error type for every handler: an HTTP status, a stable snake_case code (scripts branch on
//! it) and a message a user can act on. Internal details are logged here, once, and never sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use census_common::{ErrorBody, ErrorCode, ErrorDetail};

use crate::store::StoreError;

/// Codes the collector uses beyond [`ErrorCode`].
pub mod codes {
    /// 405: the route exists but not with this method.
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
}

/// Put in the extensions of every error response, so middleware (metrics) can see the code.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCodeTag(pub &'static str);

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::with_code(status, code.as_str(), message)
    }

    pub fn with_code(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn invalid_filter(message: impl Into<String>) -> ApiError {
        ApiError::bad_request(ErrorCode::InvalidFilter, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::WriterGone => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "the collector is shutting down; retry later",
            ),
            StoreError::Commit(detail) => {
                tracing::error!(error = %detail, "a write transaction failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Unavailable,
                    "the data could not be stored; retry later",
                )
            }
            StoreError::Invalid(message) => ApiError::bad_request(ErrorCode::BadRequest, message),
            other => {
                tracing::error!(error = %other, "store request failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
                    "internal error; the collector log has the details",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        response.extensions_mut().insert(ErrorCodeTag(self.code));
        response
    }
}
