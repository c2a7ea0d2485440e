//! Posting batches to the collector: MessagePack with named fields, gzip-compressed, to
//! `POST {server}/agent/v1/reports`; the answer is a JSON [`Ack`].

use std::io::Write;
use std::time::Duration;

use census_common::codec::{self, Format};
use census_common::{Ack, Batch, ErrorBody, MSGPACK_CONTENT_TYPE};
use flate2::Compression;
use flate2::write::GzEncoder;

pub const REPORTS_PATH: &str = "/agent/v1/reports";

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("could not reach the collector at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("the collector at {url} refused the batch (HTTP {status}, {code}): {message}")]
    Rejected {
        url: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("the collector at {url} sent an acknowledgement that could not be read: {message}")]
    BadAck { url: String, message: String },
    #[error("could not set up the HTTP client: {0}")]
    Client(String),
}

impl TransportError {
    /// Whether the collector may have stored the batch although no ack said so: the request
    /// may have reached it (no answer, or an answer that could not be read), or a proxy
    /// answered 5xx on its behalf, possibly after it committed. A 4xx is the collector (or a
    /// proxy) refusing the request, so nothing was stored; a client that could not be set up
    /// sent nothing.
    pub fn may_have_been_stored(&self) -> bool {
        match self {
            TransportError::Unreachable { .. } | TransportError::BadAck { .. } => true,
            TransportError::Rejected { status, .. } => *status >= 500,
            TransportError::Client(_) => false,
        }
    }
}

pub struct Transport {
    client: reqwest::Client,
    url: String,
}

impl Transport {
    /// `server` is the collector's base URL without a trailing slash.
    pub fn new(server: &str, timeout: Duration) -> Result<Transport, TransportError> {
        // reqwest is built without a default TLS provider; installing one twice is harmless,
        // so the result is ignored.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("census-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TransportError::Client(error_chain(&e)))?;
        Ok(Transport {
            client,
            url: format!("{server}{REPORTS_PATH}"),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn send(&self, batch: &Batch) -> Result<Ack, TransportError> {
        let body = encode_batch(batch);
        let response = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, MSGPACK_CONTENT_TYPE)
            .header(reqwest::header::CONTENT_ENCODING, "gzip")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| TransportError::Unreachable {
                url: self.url.clone(),
                message: error_chain(&e),
            })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| TransportError::Unreachable {
                url: self.url.clone(),
                message: error_chain(&e),
            })?;
        if !status.is_success() {
            return Err(rejected(&self.url, status.as_u16(), &bytes));
        }
        codec::decode_ack(&bytes, Format::Json).map_err(|e| TransportError::BadAck {
            url: self.url.clone(),
            message: e.to_string(),
        })
    }
}

/// The request body: the batch as named-field MessagePack, gzip-compressed.
pub fn encode_batch(batch: &Batch) -> Vec<u8> {
    let raw = codec::encode(batch, Format::MessagePack);
    let mut gz = GzEncoder::new(Vec::with_capacity(raw.len() / 4), Compression::default());
    gz.write_all(&raw).expect("writing to memory cannot fail");
    gz.finish().expect("writing to memory cannot fail")
}

/// Reads the collector's `{error: {code, message}}`; any other body is quoted, shortened.
fn rejected(url: &str, status: u16, body: &[u8]) -> TransportError {
    let (code, message) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => (e.error.code, e.error.message),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let short: String = text.chars().take(200).collect();
            ("unknown".to_owned(), short.trim().to_owned())
        }
    };
    TransportError::Rejected {
        url: url.to_owned(),
        status,
        code,
        message,
    }
}

/// reqwest's own message ("error sending request") hides the cause; the chain names it
/// ("connection refused", "dns error", "operation timed out").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use census_common::{ErrorCode, HealthSample, Report, ReportBody};
    use std::io::Read;
    use time::OffsetDateTime;

    #[test]
    fn body_is_gzipped_named_msgpack_the_collector_can_decode() {
        let batch = Batch {
            protocol: census_common::PROTOCOL_VERSION,
            agent_id: "a1".to_owned(),
            reports: vec![Report {
                seq: 7,
                body: ReportBody::Health(HealthSample::empty("a1", OffsetDateTime::UNIX_EPOCH)),
            }],
        };
        let body = encode_batch(&batch);
        assert_eq!(&body[..2], &[0x1f, 0x8b], "gzip magic");
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut raw)
            .unwrap();
        let decoded = codec::decode_batch(&raw, Format::MessagePack).unwrap();
        assert_eq!(decoded, batch);
    }

    #[test]
    fn only_a_send_without_a_definite_answer_may_have_stored_the_batch() {
        let url = "http://c/agent/v1/reports".to_owned();
        let unreachable = TransportError::Unreachable {
            url: url.clone(),
            message: "operation timed out".to_owned(),
        };
        let bad_ack = TransportError::BadAck {
            url: url.clone(),
            message: "EOF".to_owned(),
        };
        assert!(unreachable.may_have_been_stored());
        assert!(bad_ack.may_have_been_stored());
        assert!(rejected(&url, 504, b"Gateway Timeout").may_have_been_stored());
        assert!(!rejected(&url, 413, b"{}").may_have_been_stored());
        assert!(!TransportError::Client("no TLS".to_owned()).may_have_been_stored());
    }

    #[test]
    fn error_body_code_and_message_are_kept() {
        let body =
            serde_json::to_vec(&ErrorBody::new(ErrorCode::UnsupportedProtocol, "speak 1")).unwrap();
        let err = rejected("http://c/agent/v1/reports", 400, &body);
        let text = err.to_string();
        assert!(
            text.contains("unsupported_protocol")
                && text.contains("speak 1")
                && text.contains("400"),
            "{text}"
        );
        let err = rejected(
            "http://c/agent/v1/reports",
            502,
            b"<html>Bad Gateway</html>",
        );
        assert!(err.to_string().contains("Bad Gateway"), "{err}");
    }
}
