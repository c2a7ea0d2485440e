//! `POST /agent/v1/reports`: an agent's batch of reports.
//!
//! **Promise:** the `Ack` is sent only after every report of the batch is durable (the store's
//! write transaction committed with `synchronous=FULL`). `acked` lists every seq of the batch,
//! including repeats of reports stored before, which are not stored again. `last_seq` is the
//! highest seq the collector has stored for this agent after the batch: an agent whose own
//! counter is not above it (its state dir went back in time) continues above it, or its new
//! reports would be taken as repeats. On any error nothing
//! of the batch is stored and the agent keeps the reports in its spool to send again.
//!
//! The body is MessagePack (`application/msgpack`) or JSON (`application/json`), optionally
//! `Content-Encoding: gzip` or `zstd`. `max_body_bytes` bounds both the body as received and the
//! body after decompression; decompression stops as soon as it passes the limit, so a small
//! "zip bomb" costs at most that much memory.
//!
//! In order, nothing stored on any refusal: the agent token and the token's agent's rate limit
//! (middleware, `401`; `reports_rate_per_minute`, `reports_burst`: 429 with `Retry-After`),
//! before the body is read; at most one decode per CPU at a time; the decompressed bytes' shape is checked before
//! the decoder sees them (`census_common::shape`: depth, string and list lengths, lying
//! lengths); the decoded batch's agent id, seqs and schema, and that it is the token's agent
//! (`403 agent_forbidden`); then the batch's
//! limits (`census_common::limits::check_batch`: list sizes, string fields, duplicate seqs,
//! numbers, `collected_at`), with the arrival time that is also stored.

use std::io::Read;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use census_common::codec::{self, DecodeError, Format};
use census_common::limits::{self, LimitError, Limits};
use census_common::{Ack, Batch, ErrorBody, ErrorCode, INVENTORY_SCHEMA, ReportBody};

use super::auth::AgentPrincipal;
use super::{ApiError, AppState};
use crate::store::IngestBatch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

#[utoipa::path(
    post,
    path = "/agent/v1/reports",
    operation_id = "post_reports",
    tag = "agent",
    summary = "An agent's batch of reports.",
    description = "The answer is sent only after every report of the batch is durable. A report \
        whose (agent, seq) was stored before is acknowledged again and not stored twice. On any \
        error nothing of the batch is stored.",
    request_body(
        description = "A batch of reports, MessagePack with named fields or JSON, optionally \
            compressed (`Content-Encoding: gzip` or `zstd`). At most `max_body_bytes` as \
            received and after decompression.",
        content(
            (Batch = "application/msgpack"),
            (Batch = "application/json"),
        ),
    ),
    responses(
        (status = 200, body = Ack, description = "Every report of the batch is durable; \
            `acked` lists each seq, repeats of reports stored before included."),
        (status = 400, body = ErrorBody, description = "`invalid_body`, \
            `unsupported_protocol`, `duplicate_seq`, `nesting_too_deep`."),
        (status = 401, body = ErrorBody, description = "`agent_token_invalid`: the agent \
            token is missing, unknown or revoked; enroll again."),
        (status = 403, body = ErrorBody, description = "`agent_forbidden`: the batch, or a \
            report in it, names an agent other than the token's."),
        (status = 413, body = ErrorBody, description = "`payload_too_large`, \
            `field_too_long`, `too_many_items`."),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`, \
            `unsupported_encoding`."),
        (status = 422, body = ErrorBody, description = "`value_out_of_range`: a number or \
            time outside the range it can have."),
        (status = 429, body = ErrorBody, description = "`rate_limited`; `Retry-After` says \
            when to try again.",
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: the batch could not \
            be stored now; nothing of it is stored; send it again later."),
    ),
    security(("agent_token" = [])),
)]
pub async fn post_reports(
    State(state): State<AppState>,
    Extension(principal): Extension<AgentPrincipal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Ack>, Response> {
    let batch = receive(&state, &headers, body)
        .await
        .map_err(IntoResponse::into_response)?;
    if batch.agent_id != principal.agent_id {
        return Err(foreign_agent(&principal.agent_id, &batch.agent_id).into_response());
    }
    let received_at = state.clock.now();
    limits::check_batch(&batch, &state.limits, received_at)
        .map_err(|e| limit_error(e).into_response())?;

    let agent = batch.agent_id.clone();
    let count = batch.reports.len();
    let outcome = state
        .store
        .ingest(IngestBatch {
            agent_id: batch.agent_id,
            reports: batch.reports,
            received_at,
        })
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    state
        .metrics
        .reports_stored
        .fetch_add(outcome.stored as u64, Ordering::Relaxed);
    state
        .metrics
        .reports_repeated
        .fetch_add((count - outcome.stored) as u64, Ordering::Relaxed);
    tracing::debug!(agent = %agent, reports = count, stored = outcome.stored, send_inventory = outcome.send_inventory, "batch stored");
    Ok(Json(Ack {
        acked: outcome.acked,
        send_inventory: outcome.send_inventory,
        last_seq: outcome.last_seq,
    }))
}

/// Reads, decompresses, shape-checks and decodes the body, then checks the agent id, seqs and
/// schema.
async fn receive(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Batch, ApiError> {
    let format = format_of(headers)?;
    let encoding = encoding_of(headers)?;
    let limit = state.max_body_bytes;
    let body = body.map_err(|rejection| match rejection {
        BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
            too_large(limit)
        }
        other => ApiError::bad_request(
            ErrorCode::InvalidBody,
            format!("could not read the request body: {other}"),
        ),
    })?;
    // Decompression and decoding are CPU work on up to max_body_bytes: keep them off the
    // async workers.
    let limits = state.limits;
    // At most one decode per CPU at a time: a decoded batch can be several times its body.
    let _permit = state
        .decode_permits
        .acquire()
        .await
        .map_err(|_| ApiError::from(crate::store::StoreError::WriterGone))?;
    let batch =
        tokio::task::spawn_blocking(move || decode_body(&body, encoding, format, limit, &limits))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "decoding task failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
                    "internal error; the collector log has the details",
                )
            })??;
    Ok(batch)
}

fn foreign_agent(token_agent: &str, batch_agent: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        ErrorCode::AgentForbidden,
        format!(
            "this agent token belongs to agent {token_agent}, not {batch_agent}; an agent token \
             writes only its own agent's reports"
        ),
    )
}

pub(crate) fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
        format!(
            "the body is larger than the collector accepts, as sent or decompressed \
             (max_body_bytes = {limit} bytes); send fewer reports per batch"
        ),
    )
}

/// A batch beyond the configured limits: the status that goes with each code.
pub(crate) fn limit_error(e: LimitError) -> ApiError {
    let code = e.code();
    let status = match code {
        ErrorCode::FieldTooLong | ErrorCode::TooManyItems => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::ValueOutOfRange => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, code, e.to_string())
}

pub(crate) fn format_of(headers: &HeaderMap) -> Result<Format, ApiError> {
    let unsupported = |what: &str| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            format!("{what}; send application/msgpack or application/json"),
        )
    };
    let value = headers
        .get(header::CONTENT_TYPE)
        .ok_or_else(|| unsupported("the Content-Type header is missing"))?;
    let text = value
        .to_str()
        .map_err(|_| unsupported("the Content-Type header is not text"))?;
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => {
            Ok(Format::MessagePack)
        }
        "application/json" => Ok(Format::Json),
        _ => Err(unsupported(&format!(
            "Content-Type {essence:?} is not supported"
        ))),
    }
}

pub(crate) fn encoding_of(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let unsupported = |what: String| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedEncoding,
            format!("{what}; send gzip, zstd or no Content-Encoding"),
        )
    };
    let mut values = headers.get_all(header::CONTENT_ENCODING).iter();
    let Some(value) = values.next() else {
        return Ok(Encoding::Identity);
    };
    if values.next().is_some() {
        return Err(unsupported("more than one Content-Encoding".into()));
    }
    let text = value
        .to_str()
        .map_err(|_| unsupported("the Content-Encoding header is not text".into()))?
        .trim()
        .to_ascii_lowercase();
    match text.as_str() {
        "" | "identity" => Ok(Encoding::Identity),
        "gzip" | "x-gzip" => Ok(Encoding::Gzip),
        "zstd" => Ok(Encoding::Zstd),
        other => Err(unsupported(format!(
            "Content-Encoding {other:?} is not supported"
        ))),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InflateError {
    #[error("the decompressed body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the body is not valid {encoding}: {source}")]
    Corrupt {
        encoding: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Reads a decompressing `reader` to the end, failing as soon as the output passes `limit`: at
/// most `limit + 1` bytes are ever buffered.
pub fn inflate(
    reader: impl Read,
    limit: usize,
    encoding: &'static str,
) -> Result<Vec<u8>, InflateError> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|source| InflateError::Corrupt { encoding, source })?;
    if out.len() > limit {
        return Err(InflateError::TooLarge(limit));
    }
    Ok(out)
}

/// The report decoder, as the route runs it on a body that passed the token check:
/// decompression within `limit`, the shape check, decoding, and what the codec does not check
/// (agent id form, seq range, inventory schema). The fuzz targets and property tests call it.
/// [`limits::check_batch`] then checks the decoded batch against the arrival time.
pub fn decode_body(
    body: &[u8],
    encoding: Encoding,
    format: Format,
    limit: usize,
    limits: &Limits,
) -> Result<Batch, ApiError> {
    let batch = decode(body, encoding, format, limit, limits)?;
    validate(&batch)?;
    Ok(batch)
}

fn decode(
    body: &[u8],
    encoding: Encoding,
    format: Format,
    limit: usize,
    limits: &Limits,
) -> Result<Batch, ApiError> {
    let plain = decompress(body, encoding, limit)?;
    codec::decode_batch_within(&plain, format, limits).map_err(|e| match e {
        DecodeError::Limit(e) => limit_error(e),
        DecodeError::UnsupportedProtocol { .. } => {
            ApiError::bad_request(ErrorCode::UnsupportedProtocol, e.to_string())
        }
        // A report for another agent than the batch's is a write for that agent: refused
        // whatever the token says, as the handler refuses a batch for another agent.
        DecodeError::AgentMismatch { .. } => ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::AgentForbidden,
            format!("{e}; an agent token writes only its own agent's reports"),
        ),
        DecodeError::MessagePack(_) | DecodeError::Json(_) => {
            ApiError::bad_request(ErrorCode::InvalidBody, e.to_string())
        }
    })
}

/// The body as sent, or decompressed within `limit` bytes.
pub(crate) fn decompress(
    body: &[u8],
    encoding: Encoding,
    limit: usize,
) -> Result<std::borrow::Cow<'_, [u8]>, ApiError> {
    let inflated = match encoding {
        Encoding::Identity => return Ok(std::borrow::Cow::Borrowed(body)),
        Encoding::Gzip => inflate(flate2::read::GzDecoder::new(body), limit, "gzip"),
        Encoding::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(body).map_err(|source| {
                inflate_error(
                    &InflateError::Corrupt {
                        encoding: "zstd",
                        source,
                    },
                    limit,
                )
            })?;
            inflate(decoder, limit, "zstd")
        }
    };
    inflated
        .map(std::borrow::Cow::Owned)
        .map_err(|e| inflate_error(&e, limit))
}

fn inflate_error(e: &InflateError, limit: usize) -> ApiError {
    match e {
        InflateError::TooLarge(_) => too_large(limit),
        InflateError::Corrupt { .. } => {
            ApiError::bad_request(ErrorCode::InvalidBody, e.to_string())
        }
    }
}

/// What the codec does not check: the agent id's form, seq range, the inventory schema.
fn validate(batch: &Batch) -> Result<(), ApiError> {
    if !super::is_canonical_uuid(&batch.agent_id) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidBody,
            format!(
                "agent_id {:?} is not a UUID in lowercase hyphenated form",
                batch.agent_id
            ),
        ));
    }
    for report in &batch.reports {
        if i64::try_from(report.seq).is_err() {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidBody,
                format!("seq {} is out of range (at most {})", report.seq, i64::MAX),
            ));
        }
        if let ReportBody::Inventory(inv) = &report.body
            && inv.schema != INVENTORY_SCHEMA
        {
            return Err(ApiError::bad_request(
                ErrorCode::UnsupportedProtocol,
                format!(
                    "inventory schema {} is not supported (this build reads schema {INVENTORY_SCHEMA})",
                    inv.schema
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    /// Counts what the decompressor hands out, to prove the limit stops it early.
    struct Counting<R> {
        inner: R,
        read: usize,
    }

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n;
            Ok(n)
        }
    }

    /// The refusal of `body` decoded within 1 MiB and the default limits.
    fn decode_err(body: &[u8], encoding: Encoding, format: Format) -> ApiError {
        decode(body, encoding, format, 1 << 20, &Limits::default()).unwrap_err()
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        // 64 MiB of zeros compress to about 64 KiB.
        let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..64 {
            encoder.write_all(&chunk).unwrap();
        }
        let bomb = encoder.finish().unwrap();
        assert!(bomb.len() < 256 * 1024, "{}", bomb.len());

        let limit = 1 << 20;
        let mut counting = Counting {
            inner: flate2::read::GzDecoder::new(bomb.as_slice()),
            read: 0,
        };
        let err = inflate(&mut counting, limit, "gzip").unwrap_err();
        assert!(matches!(err, InflateError::TooLarge(_)));
        // It stopped right after the limit instead of inflating all 64 MiB.
        assert!(counting.read <= limit + 64 * 1024, "read {}", counting.read);

        let err = decode(
            &bomb,
            Encoding::Gzip,
            Format::MessagePack,
            limit,
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(
            (err.status(), err.code()),
            (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
        );
    }

    #[test]
    fn zstd_is_limited_too_and_garbage_is_invalid() {
        let big = zstd::encode_all(vec![0u8; 4 << 20].as_slice(), 3).unwrap();
        let err = decode_err(&big, Encoding::Zstd, Format::Json);
        assert_eq!(err.code(), "payload_too_large");
        let err = decode_err(b"not gzip", Encoding::Gzip, Format::Json);
        assert_eq!(
            (err.status(), err.code()),
            (StatusCode::BAD_REQUEST, "invalid_body")
        );
        let small = inflate(
            flate2::read::GzDecoder::new(gzip(b"hello").as_slice()),
            5,
            "gzip",
        )
        .unwrap();
        assert_eq!(small, b"hello");
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn content_type_and_encoding_are_checked() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            format_of(&headers).unwrap_err().code(),
            "unsupported_media_type"
        );
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert_eq!(format_of(&headers).unwrap(), Format::Json);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/MsgPack"),
        );
        assert_eq!(format_of(&headers).unwrap(), Format::MessagePack);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(
            format_of(&headers).unwrap_err().status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );

        assert_eq!(encoding_of(&headers).unwrap(), Encoding::Identity);
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
        assert_eq!(encoding_of(&headers).unwrap(), Encoding::Zstd);
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        assert_eq!(
            encoding_of(&headers).unwrap_err().code(),
            "unsupported_encoding"
        );
        headers.append(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(
            encoding_of(&headers).unwrap_err().code(),
            "unsupported_encoding"
        );
    }

    #[test]
    fn decoder_errors_map_to_their_codes() {
        let agent = "0b0c6a34-8d54-4a4a-9d51-8f0e1c3b7a11";
        let json = format!(r#"{{"protocol": 99, "agent_id": "{agent}", "reports": []}}"#);
        let err = decode_err(json.as_bytes(), Encoding::Identity, Format::Json);
        assert_eq!(err.code(), "unsupported_protocol");
        let json = format!(
            r#"{{"agent_id": "{agent}", "reports": [{{"seq": 1, "kind": "health",
                "agent_id": "someone-else", "collected_at": "2025-03-01T12:00:00Z"}}]}}"#
        );
        let err = decode_err(json.as_bytes(), Encoding::Identity, Format::Json);
        assert_eq!(
            (err.status(), err.code()),
            (StatusCode::FORBIDDEN, "agent_forbidden")
        );
        let err = decode_err(b"\xc1", Encoding::Identity, Format::MessagePack);
        assert_eq!(err.code(), "invalid_body");

        let batch = Batch {
            protocol: 1,
            agent_id: "not-a-uuid".into(),
            reports: vec![],
        };
        assert_eq!(validate(&batch).unwrap_err().code(), "invalid_body");
    }
}
