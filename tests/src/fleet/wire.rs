//! What a virtual agent puts on the wire, exactly as `census-agent` does (its `transport`
//! module): batches as named-field MessagePack through `census_common::codec`, gzip-compressed
//! at the default level, `POST /agent/v1/reports` with `Authorization: Bearer`,
//! `Content-Type: application/msgpack`, `Content-Encoding: gzip`; enrollment as JSON to
//! `POST /agent/v1/enroll`. Answers are classified the way the tallies count them: success, or
//! `STATUS code` from the collector's error body, or the transport failure (`connect`,
//! `timeout`, `io`).

use std::io::Write;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use census_common::codec::{self, Format};
use census_common::{
    Ack, Batch, ENROLL_PATH, EnrollRequest, EnrollResponse, ErrorBody, MSGPACK_CONTENT_TYPE,
};
use flate2::Compression;
use flate2::write::GzEncoder;
use reqwest::header::{self, HeaderValue};

pub const REPORTS_PATH: &str = "/agent/v1/reports";

/// The request body the agent sends for `batch`.
pub fn encode_batch(batch: &Batch) -> Vec<u8> {
    let raw = codec::encode(batch, Format::MessagePack);
    let mut gz = GzEncoder::new(Vec::with_capacity(raw.len() / 3), Compression::default());
    gz.write_all(&raw).expect("writing to memory cannot fail");
    gz.finish().expect("writing to memory cannot fail")
}

/// The collector's URLs and one HTTP client for every virtual agent (connections are kept
/// and reused across agents, as a load balancer in front of many agents would see them).
pub struct Wire {
    client: reqwest::Client,
    reports_url: reqwest::Url,
    enroll_url: reqwest::Url,
    /// `host: 127.0.0.1:PORT\r\n`, which hyper adds to every request.
    host_header_bytes: usize,
}

/// How one request went: on the wire and in the answer.
#[derive(Debug)]
pub struct Exchange {
    /// When the request went out.
    pub started: Instant,
    pub latency: Duration,
    /// The body as sent (compressed).
    pub body_bytes: usize,
    /// The request line and headers as sent (see [`Wire::head_bytes`]).
    pub head_bytes: usize,
    /// What went wrong, as the tallies name it.
    pub error: Option<String>,
}

impl Wire {
    pub fn new(base_url: &str, timeout: Duration, max_idle: usize) -> anyhow::Result<Wire> {
        // reqwest is built without a default TLS provider and refuses to build a client
        // without one, even for plain http; installing it twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(max_idle)
            .user_agent(concat!("census-fleet-sim/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let base = base_url.trim_end_matches('/');
        let reports_url = reqwest::Url::parse(&format!("{base}{REPORTS_PATH}"))?;
        let enroll_url = reqwest::Url::parse(&format!("{base}{ENROLL_PATH}"))?;
        let host = reports_url.host_str().unwrap_or("").len()
            + reports_url.port().map_or(0, |p| 1 + p.to_string().len());
        Ok(Wire {
            client,
            reports_url,
            enroll_url,
            host_header_bytes: "host: \r\n".len() + host,
        })
    }

    /// Posts a batch body with the agent's `Authorization` value; the ack on success.
    pub async fn send(&self, auth: &HeaderValue, body: Vec<u8>) -> (Exchange, Option<Ack>) {
        let request = self
            .client
            .post(self.reports_url.clone())
            .header(header::AUTHORIZATION, auth.clone())
            .header(header::CONTENT_TYPE, MSGPACK_CONTENT_TYPE)
            .header(header::CONTENT_ENCODING, "gzip")
            .header(header::ACCEPT, "application/json")
            .body(body);
        let (exchange, answer) = self.exchange(request).await;
        let ack = answer.and_then(|bytes| codec::decode_ack(&bytes, Format::Json).ok());
        match (exchange.error.is_none(), ack) {
            (true, None) => (
                Exchange {
                    error: Some("bad_ack".to_owned()),
                    ..exchange
                },
                None,
            ),
            (_, ack) => (exchange, ack),
        }
    }

    /// Trades the secret for agent `agent_id`'s token; its `Authorization` value on success.
    pub async fn enroll(&self, request: &EnrollRequest) -> (Exchange, Option<HeaderValue>) {
        let request = self
            .client
            .post(self.enroll_url.clone())
            .header(header::ACCEPT, "application/json")
            .json(request);
        let (exchange, answer) = self.exchange(request).await;
        let auth = answer.and_then(|bytes| {
            let answer: EnrollResponse = serde_json::from_slice(&bytes).ok()?;
            HeaderValue::from_str(&format!("Bearer {}", answer.token)).ok()
        });
        match (exchange.error.is_none(), auth) {
            (true, None) => (
                Exchange {
                    error: Some("bad_token".to_owned()),
                    ..exchange
                },
                None,
            ),
            (_, auth) => (exchange, auth),
        }
    }

    /// Sends `request`; the exchange and, for a 2xx answer, its body.
    async fn exchange(&self, request: reqwest::RequestBuilder) -> (Exchange, Option<Bytes>) {
        let started = Instant::now();
        let (body_bytes, head_bytes, request) = match request.build() {
            Ok(request) => {
                let body = request
                    .body()
                    .and_then(reqwest::Body::as_bytes)
                    .map_or(0, <[u8]>::len);
                (body, self.head_bytes(&request, body), request)
            }
            Err(_) => {
                return (
                    Exchange {
                        started,
                        latency: Duration::ZERO,
                        body_bytes: 0,
                        head_bytes: 0,
                        error: Some("request".to_owned()),
                    },
                    None,
                );
            }
        };
        let outcome = async {
            let response = self.client.execute(request).await?;
            let status = response.status();
            let bytes = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, bytes))
        }
        .await;
        let latency = started.elapsed();
        let exchange = |error: Option<String>| Exchange {
            started,
            latency,
            body_bytes,
            head_bytes,
            error,
        };
        match outcome {
            Ok((status, bytes)) if status.is_success() => (exchange(None), Some(bytes)),
            Ok((status, bytes)) => {
                let what = match serde_json::from_slice::<ErrorBody>(&bytes) {
                    Ok(e) => format!("{} {}", status.as_u16(), e.error.code),
                    Err(_) => status.as_u16().to_string(),
                };
                (exchange(Some(what)), None)
            }
            Err(e) => (exchange(Some(transport_kind(&e).to_owned())), None),
        }
    }

    /// The request line and headers hyper writes for `request`: what reqwest set, plus the
    /// `host` and `content-length` headers it adds and the blank line. TCP and IP headers
    /// (about 52 bytes a segment) are not counted.
    pub fn head_bytes(&self, request: &reqwest::Request, body: usize) -> usize {
        let line = request.method().as_str().len() + 1 + request.url().path().len() + 11;
        let headers: usize = request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
            .sum();
        let content_length = "content-length: \r\n".len() + body.to_string().len();
        line + headers + self.host_header_bytes + content_length + 2
    }
}

/// How a request failed without an answer.
fn transport_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "io"
    }
}
