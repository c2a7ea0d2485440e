//! `census-bare-sink`: the baseline the collector's ingest rate is compared with. A bare axum
//! server that accepts what agents send (`POST /agent/v1/reports`, `POST /agent/v1/enroll`),
//! does the same parsing work as the collector (read the body, gunzip, check its shape and
//! decode it with `census_common`, check the batch's limits) and writes nothing: every report
//! is acked, every enrollment gets a token, nothing is checked against stored state.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use census_common::codec::{self, Format};
use census_common::limits::{self, Limits};
use census_common::{Ack, ENROLL_PATH, EnrollRequest, EnrollResponse, ErrorBody, ErrorCode};
use flate2::read::GzDecoder;

use super::wire::REPORTS_PATH;

/// The collector's default `max_body_bytes`.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

#[derive(Default)]
struct Counts {
    tokens: AtomicU64,
}

/// The router of the bare sink.
pub fn router() -> axum::Router {
    axum::Router::new()
        .route(REPORTS_PATH, post(reports))
        .route(ENROLL_PATH, post(enroll))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::new(Counts::default()))
}

/// Serves the bare sink on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, router()).await
}

fn refuse(status: StatusCode, code: ErrorCode, message: String) -> Response {
    (status, Json(ErrorBody::new(code, message))).into_response()
}

async fn reports(headers: HeaderMap, body: Bytes) -> Response {
    if headers.get(header::AUTHORIZATION).is_none() {
        return refuse(
            StatusCode::UNAUTHORIZED,
            ErrorCode::AgentTokenInvalid,
            "no agent token".to_owned(),
        );
    }
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let mut raw = Vec::new();
    let bytes: &[u8] = if gzip {
        let read = GzDecoder::new(&body[..])
            .take(MAX_BODY_BYTES as u64 + 1)
            .read_to_end(&mut raw);
        if read.is_err() || raw.len() > MAX_BODY_BYTES {
            return refuse(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidBody,
                "the body is not gzip within max_body_bytes".to_owned(),
            );
        }
        &raw
    } else {
        &body
    };
    let limits = Limits::default();
    let batch = match codec::decode_batch_within(bytes, Format::MessagePack, &limits) {
        Ok(batch) => batch,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidBody,
                e.to_string(),
            );
        }
    };
    if let Err(e) = limits::check_batch(&batch, &limits, time::OffsetDateTime::now_utc()) {
        return refuse(StatusCode::BAD_REQUEST, e.code(), e.to_string());
    }
    let acked: Vec<u64> = batch.reports.iter().map(|r| r.seq).collect();
    let last_seq = acked.iter().copied().max();
    Json(Ack {
        acked,
        send_inventory: false,
        last_seq,
    })
    .into_response()
}

async fn enroll(State(counts): State<Arc<Counts>>, Json(request): Json<EnrollRequest>) -> Response {
    let n = counts.tokens.fetch_add(1, Ordering::Relaxed);
    // Shaped like the collector's agent tokens: `cag_<12 hex>_<64 hex>`.
    let id: String = request
        .agent_id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(12)
        .collect();
    Json(EnrollResponse {
        token: format!("cag_{id:0>12}_{n:064x}"),
    })
    .into_response()
}
