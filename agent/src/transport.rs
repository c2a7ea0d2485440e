//! Talking to the collector over HTTPS (reqwest with rustls): posting batches to
//! `POST {server}/agent/v1/reports` (MessagePack with named fields, gzip-compressed,
//! `Authorization: Bearer <agent token>`; the answer is a JSON [`Ack`]), and trading an
//! enrollment secret for a token at `POST {server}/agent/v1/enroll`.
//!
//! Answers the agent acts on have their own [`TransportError`] variants: a refused token or
//! secret, a token for another agent, a rate limit with its `Retry-After`, and a collector
//! certificate the agent does not trust (found in the rustls error, see [`crate::tls`]).
//!
//! Redirects are not followed: following one would send the batch with its token, or the
//! enrollment secret, to wherever the answer points, another host or plain `http://`
//! included. A 3xx is an error naming where it pointed, so an admin can set `server` to it.
//! Answers are read up to [`MAX_ANSWER_BYTES`]; a longer one is an error, not a bigger
//! allocation.

use std::io::Write;
use std::time::Duration;

use census_common::codec::{self, Format};
use census_common::{
    Ack, Batch, ENROLL_PATH, EnrollRequest, EnrollResponse, ErrorBody, ErrorCode,
    MSGPACK_CONTENT_TYPE,
};
use flate2::Compression;
use flate2::write::GzEncoder;
use time::OffsetDateTime;
use tracing::warn;

use crate::auth::Token;
use crate::config::{Config, ConfigError};
use crate::tls::{self, Trust};

pub const REPORTS_PATH: &str = "/agent/v1/reports";

/// The largest answer the agent reads. Its answers are an ack, a token or an error body, a
/// few kilobytes at most; a collector (or something posing as one) must not make the agent
/// hold an unbounded body in memory.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// How long to wait after a 429 whose `Retry-After` is missing or unreadable.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The longest wait a `Retry-After` can impose: a wrong header must not silence the agent for
/// days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("could not reach the collector at {url}: {message}")]
    Unreachable { url: String, message: String },
    /// The TLS handshake failed on the collector's certificate; `message` says why and what to
    /// do ([`Trust::untrusted_message`]).
    #[error("could not connect to the collector at {url}: {message}")]
    Untrusted { url: String, message: String },
    #[error("the collector at {url} refused the request (HTTP {status}, {code}): {message}")]
    Rejected {
        url: String,
        status: u16,
        code: String,
        message: String,
    },
    /// 401 `agent_token_invalid`: the token is unknown, revoked or missing.
    #[error(
        "the collector at {url} refused this agent's token (HTTP 401, agent_token_invalid): \
         {message}"
    )]
    TokenInvalid { url: String, message: String },
    /// 401 `enroll_secret_invalid`.
    #[error(
        "the collector at {url} refused the enrollment secret: it is wrong, revoked or expired \
         ({message}); get a new one with `census-collector enroll-secret create --name NAME` on \
         the collector and enroll again"
    )]
    SecretInvalid { url: String, message: String },
    /// 403 `agent_forbidden`: the batch names another agent than the token's.
    #[error(
        "the collector at {url} refused the reports: this agent's token belongs to another \
         agent id (HTTP 403, agent_forbidden): {message}"
    )]
    AgentForbidden { url: String, message: String },
    /// 429: nothing is to be sent before `retry_after` has passed.
    #[error(
        "the collector at {url} asks this agent to slow down (HTTP 429, rate_limited); next \
         attempt in {}s at the earliest",
        retry_after.as_secs()
    )]
    RateLimited { url: String, retry_after: Duration },
    /// A 3xx: the agent follows no redirect (module doc).
    #[error(
        "the collector at {url} answered a redirect (HTTP {status}) to {location}; set server \
         to the final URL"
    )]
    Redirected {
        url: String,
        status: u16,
        location: String,
    },
    #[error("the collector at {url} sent an answer that could not be read: {message}")]
    BadAnswer { url: String, message: String },
    #[error("could not set up the HTTP client: {0}")]
    Client(String),
}

impl TransportError {
    /// Whether the collector may have stored the batch although no ack said so: the request
    /// may have reached it (no answer, or an answer that could not be read), or a proxy
    /// answered 5xx on its behalf, possibly after it committed. A 4xx is the collector (or a
    /// proxy) refusing the request, so nothing was stored; a client that could not be set up,
    /// or a TLS handshake that failed, sent nothing.
    pub fn may_have_been_stored(&self) -> bool {
        match self {
            TransportError::Unreachable { .. } | TransportError::BadAnswer { .. } => true,
            TransportError::Rejected { status, .. } => *status >= 500,
            TransportError::Untrusted { .. }
            | TransportError::Redirected { .. }
            | TransportError::TokenInvalid { .. }
            | TransportError::SecretInvalid { .. }
            | TransportError::AgentForbidden { .. }
            | TransportError::RateLimited { .. }
            | TransportError::Client(_) => false,
        }
    }
}

/// Error codes that refuse a report for what it holds.
const REPORT_REFUSALS: [census_common::ErrorCode; 5] = [
    census_common::ErrorCode::FieldTooLong,
    census_common::ErrorCode::TooManyItems,
    census_common::ErrorCode::ValueOutOfRange,
    census_common::ErrorCode::NestingTooDeep,
    census_common::ErrorCode::PayloadTooLarge,
];

impl TransportError {
    /// Whether the collector refused the request for something in the reports themselves,
    /// which sending them again cannot fix: 413 (too large, whoever answered), or a 400 or
    /// 422 whose code names a report's content (a field too long, too many items, a value out
    /// of range, nesting too deep). A 400 or 422 about the request as a whole (an unknown
    /// protocol, an unreadable body, a proxy's own 400) is not: setting every report aside
    /// for it would empty the spool, so it is retried with backoff.
    pub fn is_permanent_refusal(&self) -> bool {
        match self {
            TransportError::Rejected { status: 413, .. } => true,
            TransportError::Rejected {
                status: 400 | 422,
                code,
                ..
            } => REPORT_REFUSALS.iter().any(|c| c.as_str() == code),
            _ => false,
        }
    }
}

/// What the service needs from its collector. [`Transport`] is the real one; the service's
/// tests put a scripted collector in its place, so they drive the loop on a paused clock with
/// no socket (a real socket's wait would let the paused clock jump to reqwest's timeout).
pub(crate) trait Uplink {
    /// The collector's base URL, for messages.
    fn server(&self) -> &str;
    /// Posts one batch with the agent's token.
    async fn send(&self, batch: &Batch, token: &Token) -> Result<Ack, TransportError>;
    /// Trades an enrollment secret for the agent's token.
    async fn enroll(&self, request: &EnrollRequest) -> Result<Token, TransportError>;
}

impl Uplink for Transport {
    fn server(&self) -> &str {
        Transport::server(self)
    }

    async fn send(&self, batch: &Batch, token: &Token) -> Result<Ack, TransportError> {
        Transport::send(self, batch, token).await
    }

    async fn enroll(&self, request: &EnrollRequest) -> Result<Token, TransportError> {
        Transport::enroll(self, request).await
    }
}

pub struct Transport {
    client: reqwest::Client,
    server: String,
    reports_url: String,
    enroll_url: String,
    trust: Trust,
}

impl Transport {
    /// `server` is the collector's base URL without a trailing slash.
    pub fn new(server: &str, timeout: Duration, trust: Trust) -> Result<Transport, TransportError> {
        // reqwest is built without a default TLS provider; installing one twice is harmless,
        // so the result is ignored.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let builder = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("census-agent/", env!("CARGO_PKG_VERSION")));
        let client = trust
            .configure(builder)
            .build()
            .map_err(|e| TransportError::Client(error_chain(&e)))?;
        Ok(Transport {
            client,
            server: server.to_owned(),
            reports_url: format!("{server}{REPORTS_PATH}"),
            enroll_url: format!("{server}{ENROLL_PATH}"),
            trust,
        })
    }

    /// The transport `config` asks for: its server (a config error without one) and its
    /// trust (a config error if `ca_file` is unusable). Warns when the server is plain HTTP on
    /// the network (only allowed with `allow_insecure_http`).
    pub fn from_config(config: &Config) -> anyhow::Result<Transport> {
        let server = config.server.as_deref().ok_or(ConfigError::MissingServer)?;
        let trust = Trust::load(config.ca_file.as_deref())?;
        if config.sends_in_clear_text() {
            warn!(
                server,
                "allow_insecure_http is set: reports, the agent token and the enrollment secret \
                 go to the collector unencrypted and unauthenticated"
            );
        } else if server.starts_with("http://") && config.ca_file.is_some() {
            warn!(server, "ca_file is not used: the server is plain http://");
        }
        Ok(Transport::new(server, config.request_timeout, trust)?)
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn url(&self) -> &str {
        &self.reports_url
    }

    /// Posts one batch with the agent's token.
    pub async fn send(&self, batch: &Batch, token: &Token) -> Result<Ack, TransportError> {
        let url = &self.reports_url;
        let request = self
            .client
            .post(url)
            .bearer_auth(token.expose())
            .header(reqwest::header::CONTENT_TYPE, MSGPACK_CONTENT_TYPE)
            .header(reqwest::header::CONTENT_ENCODING, "gzip")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(encode_batch(batch));
        let bytes = self.exchange(url, request).await?;
        codec::decode_ack(&bytes, Format::Json).map_err(|e| TransportError::BadAnswer {
            url: url.clone(),
            message: e.to_string(),
        })
    }

    /// Trades an enrollment secret for the agent's token.
    pub async fn enroll(&self, request: &EnrollRequest) -> Result<Token, TransportError> {
        let url = &self.enroll_url;
        let request = self
            .client
            .post(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .json(request);
        let bytes = self.exchange(url, request).await?;
        let bad = |message: String| TransportError::BadAnswer {
            url: url.clone(),
            message,
        };
        let answer: EnrollResponse =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("not an enrollment: {e}")))?;
        Token::parse(&answer.token).map_err(|e| bad(format!("the token is not usable: {e}")))
    }

    /// Sends the request; the body of a 2xx answer, or the error it amounts to.
    async fn exchange(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Vec<u8>, TransportError> {
        let response = request.send().await.map_err(|e| self.failed(url, &e))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(redirected(url, status.as_u16(), response.headers()));
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (bytes, complete) = self.read_capped(url, response).await?;
        if !status.is_success() {
            // Only the start of an error body is quoted; the status decides.
            return Err(rejected(
                url,
                status.as_u16(),
                retry_after.as_deref(),
                &bytes,
            ));
        }
        if !complete {
            return Err(TransportError::BadAnswer {
                url: url.to_owned(),
                message: format!("the answer is larger than {MAX_ANSWER_BYTES} bytes"),
            });
        }
        Ok(bytes)
    }

    /// Reads the body chunk by chunk, at most [`MAX_ANSWER_BYTES`] of it; `false` when there
    /// was more (the rest is not read).
    async fn read_capped(
        &self,
        url: &str,
        mut response: reqwest::Response,
    ) -> Result<(Vec<u8>, bool), TransportError> {
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.failed(url, &e))? {
            let room = MAX_ANSWER_BYTES - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                return Ok((body, false));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, true))
    }

    /// A request that got no answer: an untrusted certificate says so, naming `ca_file`.
    fn failed(&self, url: &str, error: &reqwest::Error) -> TransportError {
        match tls::certificate_error(error) {
            Some(refused) => TransportError::Untrusted {
                url: url.to_owned(),
                message: self.trust.untrusted_message(&refused),
            },
            None => TransportError::Unreachable {
                url: url.to_owned(),
                message: error_chain(error),
            },
        }
    }
}

/// The request body: the batch as named-field MessagePack, gzip-compressed.
pub fn encode_batch(batch: &Batch) -> Vec<u8> {
    let raw = codec::encode(batch, Format::MessagePack);
    let mut gz = GzEncoder::new(Vec::with_capacity(raw.len() / 4), Compression::default());
    gz.write_all(&raw).expect("writing to memory cannot fail");
    gz.finish().expect("writing to memory cannot fail")
}

/// Reads the collector's `{error: {code, message}}`; any other body is quoted, shortened. The
/// codes the agent acts on become their own variants; a 429 is a rate limit whatever its body.
fn rejected(url: &str, status: u16, retry_after: Option<&str>, body: &[u8]) -> TransportError {
    let (code, message) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => (e.error.code, e.error.message),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let short: String = text.chars().take(200).collect();
            ("unknown".to_owned(), short.trim().to_owned())
        }
    };
    let url = url.to_owned();
    let is = |expected: ErrorCode| code == expected.as_str();
    match status {
        429 => TransportError::RateLimited {
            url,
            retry_after: parse_retry_after(retry_after, OffsetDateTime::now_utc()),
        },
        401 if is(ErrorCode::AgentTokenInvalid) => TransportError::TokenInvalid { url, message },
        401 if is(ErrorCode::EnrollSecretInvalid) => TransportError::SecretInvalid { url, message },
        403 if is(ErrorCode::AgentForbidden) => TransportError::AgentForbidden { url, message },
        _ => TransportError::Rejected {
            url,
            status,
            code,
            message,
        },
    }
}

/// A 3xx answer, naming where it points: its `Location` resolved against `url`, so that the
/// message holds the whole URL to configure.
fn redirected(url: &str, status: u16, headers: &reqwest::header::HeaderMap) -> TransportError {
    let location = match headers.get(reqwest::header::LOCATION).map(|v| v.to_str()) {
        None => "nowhere (the answer has no Location header)".to_owned(),
        Some(Err(_)) => "an unreadable Location header".to_owned(),
        Some(Ok(location)) => {
            let location = reqwest::Url::parse(url)
                .and_then(|base| base.join(location.trim()))
                .map_or_else(|_| location.trim().to_owned(), String::from);
            location.chars().take(300).collect()
        }
    };
    TransportError::Redirected {
        url: url.to_owned(),
        status,
        location,
    }
}

/// How long a `Retry-After` header asks to wait: seconds, or an HTTP date (compared with
/// `now`). Missing or unreadable is [`DEFAULT_RETRY_AFTER`]; the wait is at least a second and
/// at most [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: Option<&str>, now: OffsetDateTime) -> Duration {
    let Some(value) = value.map(str::trim) else {
        return DEFAULT_RETRY_AFTER;
    };
    let wait = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else if let Ok(date) =
        OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822)
    {
        Duration::try_from(date - now).unwrap_or(Duration::ZERO)
    } else {
        return DEFAULT_RETRY_AFTER;
    };
    wait.clamp(Duration::from_secs(1), MAX_RETRY_AFTER)
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
    use census_common::{HealthSample, Report, ReportBody};
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
        let bad_ack = TransportError::BadAnswer {
            url: url.clone(),
            message: "EOF".to_owned(),
        };
        assert!(unreachable.may_have_been_stored());
        assert!(bad_ack.may_have_been_stored());
        assert!(rejected(&url, 504, None, b"Gateway Timeout").may_have_been_stored());
        assert!(!rejected(&url, 413, None, b"{}").may_have_been_stored());
        assert!(!rejected(&url, 429, Some("5"), b"{}").may_have_been_stored());
        assert!(!TransportError::Client("no TLS".to_owned()).may_have_been_stored());
        let untrusted = TransportError::Untrusted {
            url,
            message: "certificate".to_owned(),
        };
        assert!(!untrusted.may_have_been_stored());
    }

    fn error(status: u16, code: ErrorCode, retry_after: Option<&str>) -> TransportError {
        let body = serde_json::to_vec(&ErrorBody::new(code, "because")).unwrap();
        rejected("http://c/x", status, retry_after, &body)
    }

    #[test]
    fn the_answers_the_agent_acts_on_have_their_own_variants() {
        assert!(matches!(
            error(401, ErrorCode::AgentTokenInvalid, None),
            TransportError::TokenInvalid { .. }
        ));
        let secret = error(401, ErrorCode::EnrollSecretInvalid, None);
        assert!(matches!(secret, TransportError::SecretInvalid { .. }));
        let text = secret.to_string();
        assert!(
            text.contains("revoked or expired")
                && text.contains("census-collector enroll-secret create"),
            "{text}"
        );
        assert!(matches!(
            error(403, ErrorCode::AgentForbidden, None),
            TransportError::AgentForbidden { .. }
        ));
        let TransportError::RateLimited { retry_after, .. } =
            error(429, ErrorCode::RateLimited, Some("7"))
        else {
            panic!()
        };
        assert_eq!(retry_after, Duration::from_secs(7));
        // A 401 without the collector's code (a proxy) is not taken for a refused token.
        assert!(matches!(
            rejected("http://c/x", 401, None, b"Unauthorized"),
            TransportError::Rejected { status: 401, .. }
        ));
    }

    #[test]
    fn a_redirect_names_the_whole_url_it_points_to() {
        use reqwest::header::{HeaderMap, HeaderValue, LOCATION};
        let url = "https://c.example/agent/v1/reports";
        let mut headers = HeaderMap::new();
        headers.insert(
            LOCATION,
            HeaderValue::from_static("/census/agent/v1/reports"),
        );
        let err = redirected(url, 308, &headers);
        assert!(!err.may_have_been_stored());
        let text = err.to_string();
        assert!(
            text.contains("redirect (HTTP 308) to https://c.example/census/agent/v1/reports"),
            "{text}"
        );
        assert!(text.contains("set server to the final URL"), "{text}");
        let text = redirected(url, 301, &HeaderMap::new()).to_string();
        assert!(text.contains("no Location header"), "{text}");
    }

    #[test]
    fn retry_after_is_seconds_or_a_date_and_bounded() {
        let now = OffsetDateTime::from_unix_timestamp(784_111_777).unwrap(); // 06 Nov 1994 08:49:37
        let at = |v: &str| parse_retry_after(Some(v), now);
        assert_eq!(at("120"), Duration::from_secs(120));
        assert_eq!(at(" 3 "), Duration::from_secs(3));
        assert_eq!(at("0"), Duration::from_secs(1));
        assert_eq!(at("999999999"), MAX_RETRY_AFTER);
        assert_eq!(at("Sun, 06 Nov 1994 08:50:07 GMT"), Duration::from_secs(30));
        assert_eq!(at("Sun, 06 Nov 1994 08:00:00 GMT"), Duration::from_secs(1));
        assert_eq!(at("soon"), DEFAULT_RETRY_AFTER);
        assert_eq!(at("-5"), DEFAULT_RETRY_AFTER);
        assert_eq!(parse_retry_after(None, now), DEFAULT_RETRY_AFTER);
    }

    #[test]
    fn error_body_code_and_message_are_kept() {
        let body =
            serde_json::to_vec(&ErrorBody::new(ErrorCode::UnsupportedProtocol, "speak 1")).unwrap();
        let err = rejected("http://c/agent/v1/reports", 400, None, &body);
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
            None,
            b"<html>Bad Gateway</html>",
        );
        assert!(err.to_string().contains("Bad Gateway"), "{err}");
    }
}
