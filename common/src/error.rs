//! The error body every Census HTTP endpoint answers with, and its stable codes.

use serde::{Deserialize, Serialize};

/// `{ "error": { "code": "snake_case", "message": "..." } }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// 401: the agent token is unknown, revoked, or missing; enroll again.
    AgentTokenInvalid,
    /// 401: the enrollment secret is unknown, revoked or expired.
    EnrollSecretInvalid,
    /// 401: the admin token is missing, unknown or revoked.
    TokenInvalid,
    /// 403: the token is valid but its role may not do this.
    Forbidden,
    /// 403: a report names an agent other than the one the token belongs to.
    AgentForbidden,
    /// 429: too many requests; `Retry-After` says when to try again.
    RateLimited,
    /// 400: MessagePack or JSON nested deeper than the collector accepts.
    NestingTooDeep,
    /// 413: a string longer than the collector accepts.
    FieldTooLong,
    /// 413: a list (reports, software, filesystems, interfaces...) longer than accepted.
    TooManyItems,
    /// 400: the same seq twice in one batch.
    DuplicateSeq,
    /// 422: a number or time outside the range it can have (a percentage of 250, a time
    /// days in the future).
    ValueOutOfRange,
    /// 409: the request conflicts with what is stored (a duplicate relationship, a change to
    /// a CI the agent owns).
    Conflict,
    /// 422: a field of the body is missing or has a value this route does not allow; the
    /// message names the field and what is allowed.
    InvalidField,
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
            ErrorCode::AgentTokenInvalid => "agent_token_invalid",
            ErrorCode::EnrollSecretInvalid => "enroll_secret_invalid",
            ErrorCode::TokenInvalid => "token_invalid",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::AgentForbidden => "agent_forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NestingTooDeep => "nesting_too_deep",
            ErrorCode::FieldTooLong => "field_too_long",
            ErrorCode::TooManyItems => "too_many_items",
            ErrorCode::DuplicateSeq => "duplicate_seq",
            ErrorCode::ValueOutOfRange => "value_out_of_range",
            ErrorCode::Conflict => "conflict",
            ErrorCode::InvalidField => "invalid_field",
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
