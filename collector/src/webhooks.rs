//! Delivering webhook events from the outbox (`store::webhooks`) to their receivers.
//!
//! # Promises
//!
//! - **At least once.** A delivery leaves `pending` only when its receiver answered 2xx, or
//!   after [`MAX_ATTEMPTS`] failed attempts (then it is `failed`, visible in the API, and an
//!   admin may retry it). Outcomes are written after the requests of a pass: a crash or a stop
//!   between sending and recording sends the same row again after the restart, with the same
//!   `X-Census-Delivery` id, by which receivers dedupe.
//! - **Signed.** Every request carries `X-Census-Timestamp: <unix seconds>` and
//!   `X-Census-Signature: sha256=<hex>`, the HMAC-SHA256 under the webhook's secret of
//!   `<timestamp>.<body>`. The body is the stored payload, byte for byte.
//! - **Bounded.** A request has [`TIMEOUT`] in all, follows no redirect (a 3xx is a failure)
//!   and reads at most [`ERROR_BODY_BYTES`] of an answer that is not 2xx (to show in
//!   `last_error`); a 2xx body is not read.
//! - **Backoff.** After failed attempt `n` the next is due [`backoff`]`(n)` later: 30 s, 1 min,
//!   2 min, ... doubling up to 1 h. Twelve attempts span about five hours.
//! - **Order.** A pass sends the due rows of one webhook one at a time in id order (oldest
//!   event first) and stops that webhook's rows at its first failure, so a receiver that is
//!   down gets one request a pass. Rows are otherwise independent: a row waiting out its
//!   backoff does not hold back newer ones, so after a failure a newer event may arrive before
//!   an older one. Receivers order by the payload's `at` (and the incident's `updated_at`).
//!   Different webhooks are sent to concurrently, so a slow receiver does not delay others.
//!
//! Time comes from the injected clock: tests move a `ManualClock` and call [`deliver_due`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::store::{DeliveryAttempt, DueDelivery, Store, StoreError};

/// The whole of one request: connecting, sending, and the answer's status and bounded body.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts before a delivery is `failed`.
pub const MAX_ATTEMPTS: i64 = 12;
/// Most rows one pass sends.
pub const BATCH: u32 = 64;
/// Most rows of one webhook one pass sends, so one backlog does not fill the batch.
pub const PER_WEBHOOK: u32 = 16;
/// How much of an answer that is not 2xx is read, for `last_error`.
pub const ERROR_BODY_BYTES: usize = 256;
/// How often the task runs a pass unless configured otherwise (`webhook_interval`).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

const FIRST_BACKOFF: time::Duration = time::Duration::seconds(30);
const MAX_BACKOFF: time::Duration = time::Duration::hours(1);
/// Longest `last_error` kept, in characters.
const MAX_ERROR_CHARS: usize = 300;
const USER_AGENT: &str = concat!("census-collector/", env!("CARGO_PKG_VERSION"));

/// The HTTP client deliveries go through: rustls with the system's roots, [`TIMEOUT`], no
/// redirects.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    // reqwest is built without a default TLS provider; installing one twice is harmless, so
    // the result is ignored.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT)
        .build()
}

/// A new signing secret: 32 random bytes as 64 hex digits.
pub fn generate_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(hex(&bytes))
}

/// The `X-Census-Signature` value: `sha256=` and the hex HMAC-SHA256 under `secret` (its
/// UTF-8 bytes) of `<timestamp>.<body>`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    let mac = hmac_sha256(secret.as_bytes(), &[timestamp.as_bytes(), b".", body]);
    format!("sha256={}", hex(&mac))
}

/// HMAC-SHA256 under `key` of the concatenation of `parts`.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// How long after failed attempt number `attempts` (1 for the first) the next one is due:
/// 30 s doubled for each earlier failure, at most 1 h.
pub fn backoff(attempts: i64) -> time::Duration {
    let doublings = attempts.clamp(1, 32) - 1;
    let delay = FIRST_BACKOFF * (1i64 << doublings) as f64;
    delay.min(MAX_BACKOFF)
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassSummary {
    /// Due rows read.
    pub due: usize,
    /// Answered 2xx.
    pub delivered: usize,
    /// Failed and due again later.
    pub retrying: usize,
    /// Failed for the last time: now `failed`.
    pub gave_up: usize,
    /// Due but not sent: a row of the same webhook failed earlier in the pass.
    pub deferred: usize,
}

/// One pass: sends the deliveries due now (at most [`BATCH`], [`PER_WEBHOOK`] of one webhook)
/// and records every outcome in one write.
pub async fn deliver_due(
    store: &Store,
    clock: &Arc<dyn Clock>,
    client: &reqwest::Client,
) -> Result<PassSummary, StoreError> {
    let due = store
        .due_webhook_deliveries(clock.now(), BATCH, PER_WEBHOOK)
        .await?;
    let mut summary = PassSummary {
        due: due.len(),
        ..PassSummary::default()
    };
    if due.is_empty() {
        return Ok(summary);
    }
    let mut by_webhook: BTreeMap<i64, Vec<DueDelivery>> = BTreeMap::new();
    for row in due {
        by_webhook.entry(row.webhook_id).or_default().push(row);
    }
    let mut sending = tokio::task::JoinSet::new();
    for rows in by_webhook.into_values() {
        let (client, clock) = (client.clone(), clock.clone());
        sending.spawn(async move { send_in_order(&client, clock.as_ref(), rows).await });
    }
    let mut attempts = Vec::new();
    while let Some(done) = sending.join_next().await {
        let (made, deferred) = done.map_err(|_| StoreError::JobPanicked)?;
        summary.deferred += deferred;
        attempts.extend(made);
    }
    for a in &attempts {
        match a.state {
            "delivered" => summary.delivered += 1,
            "failed" => summary.gave_up += 1,
            _ => summary.retrying += 1,
        }
    }
    store.record_webhook_attempts(attempts).await?;
    Ok(summary)
}

/// Sends one webhook's rows in id order until one fails; answers the attempts made and how
/// many rows were left for a later pass.
async fn send_in_order(
    client: &reqwest::Client,
    clock: &dyn Clock,
    rows: Vec<DueDelivery>,
) -> (Vec<DeliveryAttempt>, usize) {
    let total = rows.len();
    let mut made = Vec::with_capacity(total);
    for row in rows {
        let at = clock.now();
        let outcome = send(client, &row, at.unix_timestamp()).await;
        let attempt = decide(&row, at, outcome);
        log(&row, &attempt);
        let failed = attempt.state != "delivered";
        made.push(attempt);
        if failed {
            break;
        }
    }
    let deferred = total - made.len();
    (made, deferred)
}

/// The answer of one request: the status when 2xx, else the status if any and why.
type Outcome = Result<u16, (Option<u16>, String)>;

async fn send(client: &reqwest::Client, row: &DueDelivery, timestamp: i64) -> Outcome {
    let request = client
        .post(&row.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Census-Event", &row.event)
        .header("X-Census-Delivery", row.id.to_string())
        .header("X-Census-Timestamp", timestamp.to_string())
        .header(
            "X-Census-Signature",
            signature(&row.secret, timestamp, row.payload.as_bytes()),
        )
        .body(row.payload.clone());
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(e) => return Err((None, describe(e))),
    };
    let status = response.status();
    if status.is_success() {
        return Ok(status.as_u16());
    }
    let mut text = format!("HTTP {status}");
    if status.is_redirection() {
        text.push_str(" (redirects are not followed; point the webhook at the final URL)");
    }
    let body = read_some(&mut response, ERROR_BODY_BYTES).await;
    let body = String::from_utf8_lossy(&body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>();
    let body = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if !body.is_empty() {
        text.push_str(": ");
        text.push_str(&body);
    }
    Err((Some(status.as_u16()), shorten(text)))
}

/// At most `max` bytes of the answer's body; whatever arrived if reading fails.
async fn read_some(response: &mut reqwest::Response, max: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < max {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(max - body.len())]),
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// Why a request got no answer, without the URL (it may carry a token in its query).
fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return shorten(format!("no answer within {} s", TIMEOUT.as_secs()));
    }
    let what = if e.is_connect() {
        "could not connect"
    } else {
        "the request failed"
    };
    let e = e.without_url();
    let mut text = format!("{what}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    shorten(text)
}

fn shorten(text: String) -> String {
    match text.char_indices().nth(MAX_ERROR_CHARS) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text,
    }
}

/// The row's next state after an attempt at `at`.
fn decide(row: &DueDelivery, at: time::OffsetDateTime, outcome: Outcome) -> DeliveryAttempt {
    let (state, next_attempt_at, status, error) = match outcome {
        Ok(status) => ("delivered", at, Some(status), None),
        Err((status, error)) => {
            let attempts = row.attempts + 1;
            if attempts >= MAX_ATTEMPTS {
                ("failed", at, status, Some(error))
            } else {
                ("pending", at + backoff(attempts), status, Some(error))
            }
        }
    };
    DeliveryAttempt {
        id: row.id,
        attempts_before: row.attempts,
        at,
        state,
        next_attempt_at,
        status,
        error,
    }
}

fn log(row: &DueDelivery, attempt: &DeliveryAttempt) {
    let error = attempt.error.as_deref().unwrap_or_default();
    match attempt.state {
        "delivered" => tracing::debug!(
            webhook = row.webhook_id,
            delivery = row.id,
            event = %row.event,
            "webhook delivered"
        ),
        "failed" => tracing::warn!(
            webhook = row.webhook_id,
            delivery = row.id,
            event = %row.event,
            attempts = row.attempts + 1,
            error,
            "webhook delivery failed for the last time; retry it through the API"
        ),
        _ => tracing::info!(
            webhook = row.webhook_id,
            delivery = row.id,
            event = %row.event,
            attempts = row.attempts + 1,
            error,
            retry_in_secs = (attempt.next_attempt_at - attempt.at).whole_seconds(),
            "webhook delivery failed; will retry"
        ),
    }
}

/// Runs a pass every `every` (the first one `every` after the start) until `stop` turns true.
/// A failing pass is logged and the next tick tries again. A stop abandons a pass in flight:
/// what it sent without recording is sent again after the restart.
pub async fn run(
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    client: reqwest::Client,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stopped(&mut stop) => break,
        }
        tokio::select! {
            result = deliver_due(&store, &clock, &client) => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "webhook delivery pass failed; retrying at the next tick");
                }
            }
            () = stopped(&mut stop) => break,
        }
    }
}

/// Completes when `stop` is true or its sender is gone (the server is gone too).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // RFC 4231, 4.2 and 4.3 (test cases 1 and 2), HMAC-SHA-256.
        assert_eq!(
            hex(&hmac_sha256(&[0x0b; 20], &[b"Hi There"])),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        let case_2 = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", &[b"what do ya want for nothing?"])),
            case_2
        );
        assert_eq!(
            hex(&hmac_sha256(
                b"Jefe",
                &[b"what do ya", b" want ", b"for nothing?"]
            )),
            case_2
        );
    }

    #[test]
    fn the_signature_header_signs_timestamp_dot_body() {
        // Computed independently: Python's
        // hmac.new(b"Jefe", b"1700000000.what do ya want for nothing?", "sha256").hexdigest()
        let header = signature("Jefe", 1_700_000_000, b"what do ya want for nothing?");
        assert_eq!(
            header,
            "sha256=1cdd0650c8be1cb0974b1788d458b1e781206cfef59b85faafc582d2e182c57e"
        );
        // Any change to the timestamp, the body or the secret changes it.
        for other in [
            signature("Jefe", 1_700_000_001, b"what do ya want for nothing?"),
            signature("Jefe", 1_700_000_000, b"what do ya want for nothing!"),
            signature("Jeff", 1_700_000_000, b"what do ya want for nothing?"),
        ] {
            assert_ne!(header, other);
        }
    }

    #[test]
    fn backoff_doubles_from_30_seconds_up_to_an_hour() {
        let seconds: Vec<i64> = (1..=12).map(|n| backoff(n).whole_seconds()).collect();
        assert_eq!(
            seconds,
            vec![
                30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600, 3600, 3600
            ]
        );
        assert_eq!(backoff(1_000).whole_seconds(), 3600);
    }

    #[test]
    fn the_last_attempt_fails_the_row_and_earlier_ones_retry() {
        let at = time::macros::datetime!(2025-03-01 10:00 UTC);
        let row = |attempts| DueDelivery {
            id: 7,
            webhook_id: 1,
            event: "incident.opened".into(),
            payload: "{}".into(),
            attempts,
            url: "http://127.0.0.1:9/".into(),
            secret: "0123456789abcdef".into(),
        };
        let failure = || Err((Some(500), "HTTP 500".to_owned()));
        let first = decide(&row(0), at, failure());
        assert_eq!(
            (first.state, first.next_attempt_at, first.attempts_before),
            ("pending", at + time::Duration::seconds(30), 0)
        );
        let eleventh = decide(&row(10), at, failure());
        assert_eq!(eleventh.state, "pending");
        let twelfth = decide(&row(11), at, failure());
        assert_eq!((twelfth.state, twelfth.status), ("failed", Some(500)));
        let ok = decide(&row(11), at, Ok(204));
        assert_eq!(
            (ok.state, ok.status, ok.error),
            ("delivered", Some(204), None)
        );
    }

    #[test]
    fn errors_are_cut_to_a_few_hundred_characters() {
        assert_eq!(shorten("short".into()), "short");
        let long = shorten("é".repeat(1000));
        assert_eq!(long.chars().count(), MAX_ERROR_CHARS + 3);
    }

    #[test]
    fn webhook_interval_defaults_to_a_second_and_is_bounded() {
        use crate::config::Config;
        assert_eq!(Config::default().webhook_interval.0, DEFAULT_INTERVAL);
        assert_eq!(
            Config::parse("webhook_interval = \"1h\"")
                .unwrap()
                .webhook_interval
                .0,
            Duration::from_secs(3600)
        );
        for refused in ["500ms", "2h"] {
            let err = Config::parse(&format!("webhook_interval = \"{refused}\""))
                .unwrap_err()
                .to_string();
            assert!(err.contains("webhook_interval"), "{refused}: {err}");
        }
    }

    #[test]
    fn a_generated_secret_is_64_hex_digits_and_new_each_time() {
        let a = generate_secret().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, generate_secret().unwrap());
    }
}
