//! The error body every Census HTTP endpoint answers with, and its stable codes.

use serde::{Deserialize, Serialize};

/// `{ "error": { "code": "snake_case", "message": "..." } }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// Codes scripts may branch on. They never change meaning; new ones may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadRequest,
    InvalidBody,
    UnsupportedMediaType,
    UnsupportedEncoding,
    UnsupportedProtocol,
    AgentMismatch,
    PayloadTooLarge,
    InvalidFilter,
    InvalidCursor,
    NotFound,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidBody => "invalid_body",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::UnsupportedEncoding => "unsupported_encoding",
            ErrorCode::UnsupportedProtocol => "unsupported_protocol",
            ErrorCode::AgentMismatch => "agent_mismatch",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::InvalidFilter => "invalid_filter",
            ErrorCode::InvalidCursor => "invalid_cursor",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code: code.as_str().to_owned(),
                message: message.into(),
            },
        }
    }
}
