//! Webhooks over real HTTP: a receiver on 127.0.0.1 records what the collector's delivery pass
//! sends and answers a scripted status sequence. Webhooks are managed through the API of a
//! real collector; the test runs delivery passes itself (`webhooks::deliver_due`) on the same
//! database with the collector's `ManualClock`, and sets the collector's own delivery task to
//! an interval the test never reaches, so only the test's passes send.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use census_collector::auth::Role;
use census_collector::clock::{Clock, ManualClock};
use census_collector::store::{Store, StoreOptions};
use census_collector::webhooks::{self, PassSummary};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use tempfile::TempDir;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::support::*;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }
}

#[derive(Default)]
struct Script {
    seen: Vec<Seen>,
    /// Statuses to answer, in order; 200 once it is empty.
    answers: VecDeque<u16>,
}

/// A webhook receiver on 127.0.0.1, serving until the test's runtime ends.
struct Receiver {
    url: String,
    script: Arc<Mutex<Script>>,
    /// How many requests arrived so far.
    count: tokio::sync::watch::Receiver<usize>,
}

impl Receiver {
    async fn start() -> Receiver {
        let script = Arc::new(Mutex::new(Script::default()));
        let (counted, count) = tokio::sync::watch::channel(0);
        let state = (script.clone(), Arc::new(counted));
        type Shared = (Arc<Mutex<Script>>, Arc<tokio::sync::watch::Sender<usize>>);
        let app = axum::Router::new()
            .fallback(
                |State((script, counted)): State<Shared>,
                 uri: axum::http::Uri,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    let mut script = script.lock().unwrap();
                    script.seen.push(Seen {
                        path: uri.path().to_owned(),
                        headers,
                        body,
                    });
                    counted.send_replace(script.seen.len());
                    let status = script.answers.pop_front().unwrap_or(200);
                    (
                        AxumStatus::from_u16(status).unwrap(),
                        format!("receiver says {status}\n(line two)"),
                    )
                },
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            url: format!("http://{addr}/hooks/census"),
            script,
            count,
        }
    }

    /// Waits (on the requests, not on the time) until `n` requests arrived.
    async fn arrived(&self, n: usize) {
        let mut count = self.count.clone();
        tokio::time::timeout(
            std::time::Duration::from_secs(60),
            count.wait_for(|c| *c >= n),
        )
        .await
        .expect("the request did not arrive within a minute")
        .unwrap();
    }

    fn answer(&self, statuses: &[u16]) {
        self.script.lock().unwrap().answers.extend(statuses);
    }

    fn seen(&self) -> Vec<Seen> {
        self.script.lock().unwrap().seen.clone()
    }
}

/// A collector on a `ManualClock`, its delivery task held back, and the test's own handle on
/// its database for delivery passes.
struct Setup {
    c: TestCollector,
    clock: Arc<ManualClock>,
    store: Store,
    client: reqwest::Client,
}

fn quiet(config: &mut census_collector::config::Config) {
    config.compaction_interval = "1d".parse().unwrap();
    // The collector's own pass would race the test's; it first runs an hour after the start,
    // and the wall clock never gets there during a test.
    config.webhook_interval = "1h".parse().unwrap();
}

impl Setup {
    fn start() -> Setup {
        let clock = Arc::new(ManualClock::new(whole_seconds(OffsetDateTime::now_utc())));
        Setup::start_in(tempfile::tempdir().unwrap(), clock)
    }

    fn start_in(dir: TempDir, clock: Arc<ManualClock>) -> Setup {
        let c = TestCollector::start_with_clock(dir, clock.clone(), quiet);
        let store = Store::open(&c.data_dir().join("census.db"), &StoreOptions::default()).unwrap();
        Setup {
            c,
            clock,
            store,
            client: webhooks::client().unwrap(),
        }
    }

    /// Closes the test's store and stops the collector; hands back the data dir.
    async fn stop(self) -> (TempDir, Arc<ManualClock>) {
        self.store.close().await;
        (self.c.stop(), self.clock)
    }

    async fn pass(&self) -> PassSummary {
        let clock: Arc<dyn Clock> = self.clock.clone();
        webhooks::deliver_due(&self.store, &clock, &self.client)
            .await
            .unwrap()
    }

    fn now_ms(&self) -> i64 {
        (self.clock.now().unix_timestamp_nanos() / 1_000_000) as i64
    }

    fn advance(&self, seconds: i64) {
        self.clock.advance(time::Duration::seconds(seconds));
    }

    fn db(&self) -> std::path::PathBuf {
        self.c.data_dir().join("census.db")
    }

    /// Creates a webhook through the API; answers its id and secret.
    async fn webhook(&self, body: Value) -> (i64, String) {
        let (status, made) = self.c.post_json("/api/v1/webhooks", &body).await;
        assert_eq!(status, StatusCode::CREATED, "{made}");
        (
            made["id"].as_i64().unwrap(),
            made["secret"].as_str().unwrap().to_owned(),
        )
    }

    /// Puts an event in the outbox for `webhook`, due now, as `store::webhooks::enqueue`
    /// does inside an incident transaction; answers the delivery id and the payload.
    fn event(&self, webhook: i64, event: &str, incident: i64) -> (i64, String) {
        let payload = json!({
            "event": event,
            "at": self.clock.now().format(&Rfc3339).unwrap(),
            "incident": { "id": incident, "number": format!("INC-{incident:06}") },
        })
        .to_string();
        let conn = rusqlite::Connection::open(self.db()).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        conn.execute(
            "INSERT INTO webhook_delivery
               (webhook_id, event, incident_id, payload, created_at, state, next_attempt_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?5)",
            rusqlite::params![webhook, event, incident, payload, self.now_ms()],
        )
        .unwrap();
        (conn.last_insert_rowid(), payload)
    }

    async fn deliveries(&self, webhook: i64, query: &str) -> Vec<Value> {
        self.c
            .get_ok(&format!("/api/v1/webhooks/{webhook}/deliveries{query}"))
            .await["items"]
            .as_array()
            .unwrap()
            .clone()
    }

    async fn delivery(&self, webhook: i64, id: i64) -> Value {
        self.deliveries(webhook, "")
            .await
            .into_iter()
            .find(|d| d["id"] == id)
            .unwrap_or_else(|| panic!("no delivery {id}"))
    }
}

fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap()
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

/// Checks `X-Census-Signature` as a receiver would: HMAC-SHA256 under `secret` of
/// `<X-Census-Timestamp>.<body>`, compared in constant time.
fn signature_verifies(seen: &Seen, secret: &str) -> bool {
    let Some(hex) = seen.header("x-census-signature").strip_prefix("sha256=") else {
        return false;
    };
    let Some(expected) = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(seen.header("x-census-timestamp").as_bytes());
    mac.update(b".");
    mac.update(&seen.body);
    mac.verify_slice(&expected).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_is_delivered_signed_with_the_webhook_s_secret() {
    let s = Setup::start();
    let receiver = Receiver::start().await;
    let (status, made) =
        s.c.post_json(
            "/api/v1/webhooks",
            &json!({ "url": receiver.url, "description": "on-call bridge" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let id = made["id"].as_i64().unwrap();
    let secret = made["secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 64, "a generated secret is 32 bytes in hex");
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));
    let now = rfc3339(s.clock.now());
    assert_eq!(
        made,
        json!({
            "id": id, "url": receiver.url,
            "events": ["incident.opened", "incident.acknowledged", "incident.resolved",
                       "incident.reopened"],
            "enabled": true, "description": "on-call bridge", "created_by": "api:test-admin",
            "created_at": now, "updated_at": now, "pending": 0, "failed": 0,
            "last_error": null, "last_failure_at": null, "last_delivered_at": null,
            "secret": secret,
        })
    );
    let (delivery, payload) = s.event(id, "incident.opened", 42);

    s.advance(5);
    let sent_at = s.clock.now();
    assert_eq!(
        s.pass().await,
        PassSummary {
            due: 1,
            delivered: 1,
            ..PassSummary::default()
        }
    );
    let seen = receiver.seen();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(request.path, "/hooks/census");
    assert_eq!(
        request.body,
        payload.as_bytes(),
        "the stored payload, byte for byte"
    );
    assert_eq!(request.header("content-type"), "application/json");
    assert_eq!(
        request.header("user-agent"),
        concat!("census-collector/", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(request.header("x-census-event"), "incident.opened");
    assert_eq!(request.header("x-census-delivery"), delivery.to_string());
    assert_eq!(
        request.header("x-census-timestamp"),
        sent_at.unix_timestamp().to_string()
    );
    assert!(signature_verifies(request, &secret));
    assert!(!signature_verifies(request, "not the secret at all"));

    let rows = s.deliveries(id, "").await;
    assert_eq!(
        rows,
        vec![json!({
            "id": delivery, "event": "incident.opened", "incident_id": 42,
            "created_at": now, "state": "delivered", "attempts": 1, "next_attempt_at": null,
            "last_attempt_at": rfc3339(sent_at), "last_status": 200, "last_error": null,
            "delivered_at": rfc3339(sent_at),
        })]
    );
    let hook = s.c.get_ok(&format!("/api/v1/webhooks/{id}")).await;
    assert_eq!(hook["last_delivered_at"], rfc3339(sent_at));
    assert_eq!((&hook["pending"], &hook["failed"]), (&json!(0), &json!(0)));

    // Delivered rows are never sent again.
    s.advance(3600);
    assert_eq!(s.pass().await, PassSummary::default());
    assert_eq!(receiver.seen().len(), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_is_retried_with_backoff_until_the_delivery_fails() {
    let s = Setup::start();
    let receiver = Receiver::start().await;
    receiver.answer(&[500; 12]);
    let secret = "a shared secret of the on-call team";
    let (id, _) = s
        .webhook(json!({ "url": receiver.url, "secret": secret, "events": ["incident.opened"] }))
        .await;
    let (delivery, _) = s.event(id, "incident.opened", 7);

    let first_at = s.clock.now();
    let summary = s.pass().await;
    assert_eq!((summary.due, summary.retrying), (1, 1));
    let row = s.delivery(id, delivery).await;
    assert_eq!(
        (&row["state"], &row["attempts"], &row["last_status"]),
        (&json!("pending"), &json!(1), &json!(500))
    );
    assert_eq!(
        row["last_error"],
        "HTTP 500 Internal Server Error: receiver says 500 (line two)"
    );
    assert_eq!(
        row["next_attempt_at"],
        rfc3339(first_at + time::Duration::seconds(30))
    );
    assert_eq!(row["last_attempt_at"], rfc3339(first_at));

    // Nothing is sent before the backoff is over, and the row is sent again once it is.
    s.advance(29);
    assert_eq!(s.pass().await, PassSummary::default());
    assert_eq!(receiver.seen().len(), 1);
    s.advance(1);
    assert_eq!(s.pass().await.retrying, 1);
    assert_eq!(receiver.seen().len(), 2);
    let row = s.delivery(id, delivery).await;
    assert_eq!(row["attempts"], 2);
    assert_eq!(
        row["next_attempt_at"],
        rfc3339(s.clock.now() + time::Duration::seconds(60))
    );

    // Attempts 3 to 12, each one second before and at its due time.
    for attempt in 3..=12 {
        let wait = webhooks::backoff(attempt - 1).whole_seconds();
        s.advance(wait - 1);
        assert_eq!(s.pass().await.due, 0, "attempt {attempt} is not due yet");
        s.advance(1);
        s.pass().await;
        assert_eq!(receiver.seen().len() as i64, attempt);
    }
    let failed_at = s.clock.now();
    let row = s.delivery(id, delivery).await;
    assert_eq!(
        (&row["state"], &row["attempts"], &row["next_attempt_at"]),
        (&json!("failed"), &json!(12), &Value::Null)
    );
    assert_eq!(row["last_attempt_at"], rfc3339(failed_at));
    // Every attempt was signed, each with its own timestamp.
    let seen = receiver.seen();
    assert!(seen.iter().all(|r| signature_verifies(r, secret)));
    assert_eq!(
        seen.last().unwrap().header("x-census-timestamp"),
        failed_at.unix_timestamp().to_string()
    );
    // Failed rows are not sent again by themselves.
    s.advance(86_400);
    assert_eq!(s.pass().await, PassSummary::default());

    // Visible in the API: the webhook's summary and the filtered deliveries.
    let hook = s.c.get_ok(&format!("/api/v1/webhooks/{id}")).await;
    assert_eq!((&hook["pending"], &hook["failed"]), (&json!(0), &json!(1)));
    assert_eq!(
        hook["last_error"],
        "HTTP 500 Internal Server Error: receiver says 500 (line two)"
    );
    assert_eq!(hook["last_failure_at"], rfc3339(failed_at));
    let failed = s.deliveries(id, "?state=failed").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["id"], delivery);
    assert!(s.deliveries(id, "?state=pending").await.is_empty());

    // The retry route makes it pending, due now, with a fresh count of attempts.
    let retry = format!("/api/v1/webhooks/{id}/deliveries/{delivery}/retry");
    let (status, retried) = s.c.send(reqwest::Method::POST, &retry, None).await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(
        (&retried["state"], &retried["attempts"]),
        (&json!("pending"), &json!(0))
    );
    assert_eq!(retried["next_attempt_at"], rfc3339(s.clock.now()));
    let (status, body) = s.c.send(reqwest::Method::POST, &retry, None).await;
    let message = assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    assert_eq!(
        message,
        format!("delivery {delivery} is pending; only a failed delivery can be retried")
    );
    assert_eq!(s.pass().await.delivered, 1);
    assert_eq!(s.delivery(id, delivery).await["state"], "delivered");
    let (status, body) = s.c.send(reqwest::Method::POST, &retry, None).await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    for path in [
        format!("/api/v1/webhooks/{id}/deliveries/999999/retry"),
        format!("/api/v1/webhooks/999999/deliveries/{delivery}/retry"),
    ] {
        let (status, body) = s.c.send(reqwest::Method::POST, &path, None).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    }
    let (status, body) =
        s.c.send(
            reqwest::Method::POST,
            &format!("/api/v1/webhooks/{id}/deliveries/x/retry"),
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");

    // The secret is in no answer but the one that created the webhook.
    for path in [
        "/api/v1/webhooks".to_owned(),
        format!("/api/v1/webhooks/{id}"),
        format!("/api/v1/webhooks/{id}/deliveries"),
    ] {
        let text = s.c.get_ok(&path).await.to_string();
        assert!(!text.contains(secret), "{path}: {text}");
        assert!(!text.contains("\"secret\""), "{path}: {text}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_or_redirects_is_a_failed_attempt() {
    let s = Setup::start();
    // A port nothing listens on: bound, then closed.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let (down, _) = s
        .webhook(json!({ "url": format!("http://{closed}/") }))
        .await;
    let receiver = Receiver::start().await;
    receiver.answer(&[301]);
    let (moved, _) = s.webhook(json!({ "url": receiver.url })).await;
    let (to_down, _) = s.event(down, "incident.resolved", 1);
    let (to_moved, _) = s.event(moved, "incident.resolved", 1);

    assert_eq!(s.pass().await.retrying, 2);
    let row = s.delivery(down, to_down).await;
    assert_eq!(row["last_status"], Value::Null);
    let error = row["last_error"].as_str().unwrap();
    assert!(error.starts_with("could not connect"), "{error}");
    assert!(
        !error.contains(&closed.to_string()),
        "no URL in errors: {error}"
    );
    let row = s.delivery(moved, to_moved).await;
    assert_eq!(row["last_status"], 301);
    assert!(
        row["last_error"]
            .as_str()
            .unwrap()
            .starts_with("HTTP 301 Moved Permanently (redirects are not followed"),
        "{row}"
    );
    assert_eq!(receiver.seen().len(), 1, "the redirect was not followed");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_s_rows_go_in_order_and_one_failing_webhook_does_not_hold_back_another() {
    let s = Setup::start();
    let failing = Receiver::start().await;
    failing.answer(&[503]);
    let working = Receiver::start().await;
    let (a, _) = s.webhook(json!({ "url": failing.url })).await;
    let (b, _) = s.webhook(json!({ "url": working.url })).await;
    let (a1, _) = s.event(a, "incident.opened", 1);
    let (b1, _) = s.event(b, "incident.opened", 1);
    let (a2, _) = s.event(a, "incident.acknowledged", 1);
    let (b2, _) = s.event(b, "incident.acknowledged", 1);

    // A's first row fails, so its second waits for the next pass; B gets both, in order.
    assert_eq!(
        s.pass().await,
        PassSummary {
            due: 4,
            delivered: 2,
            retrying: 1,
            gave_up: 0,
            deferred: 1,
        }
    );
    let ids = |r: &Receiver| -> Vec<String> {
        r.seen()
            .iter()
            .map(|s| s.header("x-census-delivery").to_owned())
            .collect()
    };
    assert_eq!(ids(&working), vec![b1.to_string(), b2.to_string()]);
    assert_eq!(ids(&failing), vec![a1.to_string()]);
    assert_eq!(s.delivery(a, a2).await["attempts"], 0);

    // Rows are independent: the next pass sends A's second row while the first waits out its
    // backoff, so the receiver sees the newer event first.
    s.advance(1);
    assert_eq!(s.pass().await.delivered, 1);
    s.advance(30);
    assert_eq!(s.pass().await.delivered, 1);
    assert_eq!(
        ids(&failing),
        vec![a1.to_string(), a2.to_string(), a1.to_string()]
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_deliveries_survive_a_restart() {
    let s = Setup::start();
    let receiver = Receiver::start().await;
    receiver.answer(&[500]);
    let (id, secret) = s.webhook(json!({ "url": receiver.url })).await;
    let (retried, _) = s.event(id, "incident.opened", 1);
    assert_eq!(s.pass().await.retrying, 1);
    let (fresh, _) = s.event(id, "incident.resolved", 1);
    let retry_due = s.clock.now() + time::Duration::seconds(30);
    let (dir, clock) = s.stop().await;

    let s = Setup::start_in(dir, clock);
    let row = s.delivery(id, retried).await;
    assert_eq!(
        (&row["state"], &row["attempts"], &row["next_attempt_at"]),
        (&json!("pending"), &json!(1), &json!(rfc3339(retry_due)))
    );
    assert_eq!(s.delivery(id, fresh).await["state"], "pending");
    assert_eq!(s.pass().await.delivered, 1);
    s.advance(30);
    assert_eq!(s.pass().await.delivered, 1);
    let seen = receiver.seen();
    let ids: Vec<&str> = seen.iter().map(|r| r.header("x-census-delivery")).collect();
    assert_eq!(
        ids,
        vec![retried.to_string(), fresh.to_string(), retried.to_string()]
    );
    assert!(seen.iter().all(|r| signature_verifies(r, &secret)));
    assert!(s.deliveries(id, "?state=pending").await.is_empty());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_apply_to_pending_rows_and_delete_removes_them() {
    let s = Setup::start();
    let old = Receiver::start().await;
    let new = Receiver::start().await;
    let (id, _) = s
        .webhook(json!({ "url": old.url, "enabled": false, "description": "old" }))
        .await;
    let (delivery, _) = s.event(id, "incident.opened", 3);
    // A disabled webhook's rows wait.
    assert_eq!(s.pass().await, PassSummary::default());

    s.advance(60);
    let rotated = "the rotated secret, 16+ chars";
    let (status, changed) =
        s.c.patch_json(
            &format!("/api/v1/webhooks/{id}"),
            &json!({
                "url": new.url, "enabled": true, "description": null,
                "events": ["incident.resolved", "incident.opened"], "secret": rotated,
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(
        (
            &changed["url"],
            &changed["enabled"],
            &changed["description"],
            &changed["events"]
        ),
        (
            &json!(new.url),
            &json!(true),
            &Value::Null,
            &json!(["incident.opened", "incident.resolved"])
        )
    );
    assert_eq!(changed["updated_at"], rfc3339(s.clock.now()));
    assert!(changed.get("secret").is_none());
    // A patch that changes nothing leaves updated_at.
    s.advance(60);
    let (status, same) =
        s.c.patch_json(
            &format!("/api/v1/webhooks/{id}"),
            &json!({ "enabled": true }),
        )
        .await;
    assert_eq!((status, &same), (StatusCode::OK, &changed));

    assert_eq!(s.pass().await.delivered, 1);
    assert!(old.seen().is_empty());
    let seen = new.seen();
    assert_eq!(seen.len(), 1);
    assert!(signature_verifies(&seen[0], rotated));
    assert_eq!(seen[0].header("x-census-delivery"), delivery.to_string());

    s.event(id, "incident.opened", 4);
    let (status, body) = s.c.delete(&format!("/api/v1/webhooks/{id}")).await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    let rows: i64 = rusqlite::Connection::open(s.db())
        .unwrap()
        .query_row("SELECT count(*) FROM webhook_delivery", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0);
    for path in [
        format!("/api/v1/webhooks/{id}"),
        format!("/api/v1/webhooks/{id}/deliveries"),
    ] {
        let (status, body) = s.c.get(&path).await;
        let message = assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
        assert_eq!(message, format!("there is no webhook with id {id}"));
    }
    let (status, body) = s.c.delete(&format!("/api/v1/webhooks/{id}")).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_clear_message_and_changes_nothing() {
    let s = Setup::start();
    let (id, _) = s
        .webhook(json!({ "url": "https://127.0.0.1:9/census", "secret": "0123456789abcdef" }))
        .await;
    s.event(id, "incident.opened", 1);
    let before = dump(&s.db());
    let long_url = format!("https://127.0.0.1:9/{}", "a".repeat(2048));
    let refused: Vec<(Value, &str)> = vec![
        (json!({}), "url is required"),
        (json!({ "url": 5 }), "url must be a string"),
        (
            json!({ "url": "ftp://127.0.0.1:9/" }),
            "url must be http or https, not ftp",
        ),
        (json!({ "url": "127.0.0.1:9" }), "is not an absolute URL"),
        (json!({ "url": long_url }), "url must be at most 2048 bytes"),
        (
            json!({ "url": "https://u:p@127.0.0.1:9/" }),
            "url must not carry a user name or password",
        ),
        (
            json!({ "url": "https://127.0.0.1:9/", "events": [] }),
            "events must be a non-empty list drawn from incident.opened, incident.acknowledged, \
             incident.resolved, incident.reopened",
        ),
        (
            json!({ "url": "https://127.0.0.1:9/", "events": ["incident.closed"] }),
            "events: unknown event \"incident.closed\"",
        ),
        (
            json!({ "url": "https://127.0.0.1:9/", "events": null }),
            "events cannot be null",
        ),
        (
            json!({ "url": "https://127.0.0.1:9/", "secret": "short" }),
            "secret must be 16 to 256 characters, not 5",
        ),
        (
            json!({ "url": "https://127.0.0.1:9/", "enabled": "yes" }),
            "enabled must be true or false",
        ),
        (
            json!({ "url": "https://127.0.0.1:9/", "description": "d".repeat(1001) }),
            "description must be at most 1000 characters",
        ),
        (
            json!({ "url": "https://127.0.0.1:9/", "colour": "red" }),
            "unknown field \"colour\"; this route takes url, events, secret, enabled, description",
        ),
    ];
    for (body, says) in &refused {
        let (status, answer) = s.c.post_json("/api/v1/webhooks", body).await;
        let message = assert_error(
            status,
            &answer,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        );
        assert!(message.contains(says), "{body}: {message}");
    }
    let (status, answer) = s.c.post_json("/api/v1/webhooks", &json!([])).await;
    assert_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_body");

    let path = format!("/api/v1/webhooks/{id}");
    for (body, says) in [
        (
            json!({ "url": "gopher://127.0.0.1:9/" }),
            "url must be http or https",
        ),
        (json!({ "url": null }), "url cannot be null"),
        (json!({ "events": [] }), "events must be a non-empty list"),
        (
            json!({ "secret": "x" }),
            "secret must be 16 to 256 characters",
        ),
        (json!({ "enabled": 1 }), "enabled must be true or false"),
        (
            json!({ "description": 7 }),
            "description must be a string or null",
        ),
        // One bad field refuses the whole patch.
        (
            json!({ "description": "fine", "events": ["nope"] }),
            "unknown event \"nope\"",
        ),
        (json!({ "id": 9 }), "unknown field \"id\""),
    ] {
        let (status, answer) = s.c.patch_json(&path, &body).await;
        let message = assert_error(
            status,
            &answer,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        );
        assert!(message.contains(says), "{body}: {message}");
    }
    let (status, answer) =
        s.c.patch_json("/api/v1/webhooks/999999", &json!({ "enabled": false }))
            .await;
    let message = assert_error(status, &answer, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(message, "there is no webhook with id 999999");

    for (query, status, code) in [
        (
            "/api/v1/webhooks/abc",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        ("/api/v1/webhooks/0", StatusCode::BAD_REQUEST, "bad_request"),
        (
            "/api/v1/webhooks?sort=url",
            StatusCode::BAD_REQUEST,
            "invalid_filter",
        ),
        (
            "/api/v1/webhooks?limit=0",
            StatusCode::BAD_REQUEST,
            "invalid_filter",
        ),
        (
            "/api/v1/webhooks?cursor=nope",
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
        ),
        (
            "/api/v1/webhooks/999999",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ] {
        let (got, body) = s.c.get(query).await;
        assert_error(got, &body, status, code);
    }
    let deliveries = format!("/api/v1/webhooks/{id}/deliveries");
    let (status, body) = s.c.get(&format!("{deliveries}?state=lost")).await;
    let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_filter");
    assert_eq!(
        message,
        "state must be one of pending, delivered, failed, not \"lost\""
    );
    let (status, body) = s.c.get(&format!("{deliveries}?cursor=k1.zz")).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_cursor");
    assert_eq!(dump(&s.db()), before);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_by_cursor_and_only_admins_see_webhooks() {
    let s = Setup::start();
    let mut hooks = Vec::new();
    for n in 0..3 {
        let (id, _) = s
            .webhook(json!({ "url": format!("https://127.0.0.1:9/{n}") }))
            .await;
        hooks.push(id);
    }
    let first = s.c.get_ok("/api/v1/webhooks?limit=2").await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let second =
        s.c.get_ok(&format!("/api/v1/webhooks?limit=2&cursor={cursor}"))
            .await;
    let listed: Vec<i64> = [&first, &second]
        .iter()
        .flat_map(|page| page["items"].as_array().unwrap().iter())
        .map(|w| w["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, hooks);
    assert_eq!(second["next_cursor"], Value::Null);

    let events: Vec<i64> = (1..=3)
        .map(|n| s.event(hooks[0], "incident.opened", n).0)
        .collect();
    let path = format!("/api/v1/webhooks/{}/deliveries", hooks[0]);
    let first = s.c.get_ok(&format!("{path}?limit=2")).await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = s.c.get_ok(&format!("{path}?limit=2&cursor={cursor}")).await;
    let listed: Vec<i64> = [&first, &second]
        .iter()
        .flat_map(|page| page["items"].as_array().unwrap().iter())
        .map(|d| d["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, events.iter().rev().copied().collect::<Vec<_>>());
    assert_eq!(second["next_cursor"], Value::Null);

    // Webhook URLs may carry a receiver's token: an operator (who works incidents) may not
    // read or change them.
    let (_, operator) = s
        .store
        .create_admin_token("ops".into(), Role::Operator, OffsetDateTime::now_utc())
        .await
        .unwrap();
    let operator = operator.reveal();
    for (method, path) in [
        (reqwest::Method::GET, "/api/v1/webhooks".to_owned()),
        (reqwest::Method::GET, path.clone()),
        (
            reqwest::Method::DELETE,
            format!("/api/v1/webhooks/{}", hooks[0]),
        ),
    ] {
        let (status, body) = s.c.send_as(Some(&operator), method, &path, None).await;
        assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    }
    s.stop().await;
}

/// The collector's own task delivers (the tests above hold it back and run passes
/// themselves). Its first pass runs one `webhook_interval` (1 s) after the start; the test
/// waits for the request to arrive, then stops the collector with the task running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_s_own_task_delivers_and_stops_with_the_collector() {
    let clock = Arc::new(ManualClock::new(whole_seconds(OffsetDateTime::now_utc())));
    let c =
        TestCollector::start_with_clock(tempfile::tempdir().unwrap(), clock.clone(), |config| {
            config.compaction_interval = "1d".parse().unwrap();
            assert_eq!(config.webhook_interval.to_string(), "1s", "the default");
        });
    let receiver = Receiver::start().await;
    let (status, made) = c
        .post_json("/api/v1/webhooks", &json!({ "url": receiver.url }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let secret = made["secret"].as_str().unwrap();
    let payload = r#"{"event":"incident.opened"}"#;
    rusqlite::Connection::open(c.data_dir().join("census.db"))
        .unwrap()
        .execute(
            "INSERT INTO webhook_delivery
               (webhook_id, event, incident_id, payload, created_at, state, next_attempt_at)
             VALUES (?1, 'incident.opened', 1, ?2, 0, 'pending', 0)",
            rusqlite::params![made["id"].as_i64().unwrap(), payload],
        )
        .unwrap();
    receiver.arrived(1).await;
    let seen = receiver.seen();
    assert_eq!(seen[0].body, payload.as_bytes());
    assert!(signature_verifies(&seen[0], secret));
    assert_eq!(
        seen[0].header("x-census-timestamp"),
        clock.now().unix_timestamp().to_string(),
        "the collector's clock"
    );
    c.stop();
}

/// Every answer of the webhook routes against the OpenAPI document: the properties each
/// answer has are exactly those its schema names, and the ones it requires are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_match_the_openapi_document() {
    let doc: Value = serde_json::from_str(&census_collector::api::openapi::openapi_json()).unwrap();
    let s = Setup::start();
    let receiver = Receiver::start().await;
    receiver.answer(&[500]);
    let (status, made) =
        s.c.post_json("/api/v1/webhooks", &json!({ "url": receiver.url }))
            .await;
    conforms(&doc, "/api/v1/webhooks", "post", status, &made);
    let id = made["id"].as_i64().unwrap();
    let (delivery, _) = s.event(id, "incident.opened", 1);
    s.pass().await;
    let (status, body) = s.c.get("/api/v1/webhooks").await;
    conforms(&doc, "/api/v1/webhooks", "get", status, &body);
    let (status, body) = s.c.get(&format!("/api/v1/webhooks/{id}")).await;
    conforms(&doc, "/api/v1/webhooks/{id}", "get", status, &body);
    let (status, body) =
        s.c.patch_json(&format!("/api/v1/webhooks/{id}"), &json!({ "events": [] }))
            .await;
    conforms(&doc, "/api/v1/webhooks/{id}", "patch", status, &body);
    let (status, body) =
        s.c.patch_json(
            &format!("/api/v1/webhooks/{id}"),
            &json!({ "description": "x" }),
        )
        .await;
    conforms(&doc, "/api/v1/webhooks/{id}", "patch", status, &body);
    let (status, body) = s.c.get(&format!("/api/v1/webhooks/{id}/deliveries")).await;
    conforms(
        &doc,
        "/api/v1/webhooks/{id}/deliveries",
        "get",
        status,
        &body,
    );
    let retry = format!("/api/v1/webhooks/{id}/deliveries/{delivery}/retry");
    let (status, body) = s.c.send(reqwest::Method::POST, &retry, None).await;
    let template = "/api/v1/webhooks/{id}/deliveries/{delivery_id}/retry";
    conforms(&doc, template, "post", status, &body);
    let (status, body) =
        s.c.send(
            reqwest::Method::POST,
            "/api/v1/webhooks/1/deliveries/999/retry",
            None,
        )
        .await;
    conforms(&doc, template, "post", status, &body);
    s.stop().await;
}

/// Asserts that `status` is documented for the operation and `body` has exactly the
/// properties its schema names, recursively through objects and arrays.
fn conforms(doc: &Value, template: &str, method: &str, status: StatusCode, body: &Value) {
    let response = &doc["paths"][template][method]["responses"][status.as_str()];
    assert!(
        response.is_object(),
        "{method} {template}: {status} is not documented"
    );
    let schema = &response["content"]["application/json"]["schema"];
    check_shape(doc, schema, body, &format!("{method} {template} {status}"));
}

fn resolve<'d>(doc: &'d Value, schema: &'d Value) -> &'d Value {
    match schema["$ref"].as_str() {
        Some(r) => resolve(
            doc,
            &doc["components"]["schemas"][r.strip_prefix("#/components/schemas/").unwrap()],
        ),
        None => schema,
    }
}

/// (properties, required) of an object schema, through `$ref` and `allOf`.
fn object_schema(doc: &Value, schema: &Value) -> (serde_json::Map<String, Value>, Vec<String>) {
    let schema = resolve(doc, schema);
    let mut properties = serde_json::Map::new();
    let mut required = Vec::new();
    for part in schema["allOf"].as_array().into_iter().flatten() {
        let (p, r) = object_schema(doc, part);
        properties.extend(p);
        required.extend(r);
    }
    if let Some(p) = schema["properties"].as_object() {
        properties.extend(p.clone());
    }
    for r in schema["required"].as_array().into_iter().flatten() {
        required.push(r.as_str().unwrap().to_owned());
    }
    (properties, required)
}

fn check_shape(doc: &Value, schema: &Value, value: &Value, at: &str) {
    let resolved = resolve(doc, schema);
    // `oneOf` (an optional `$ref`): the non-null branch.
    let resolved = match resolved["oneOf"].as_array() {
        Some(branches) if !value.is_null() => branches
            .iter()
            .find(|b| b["type"] != "null")
            .map_or(resolved, |b| resolve(doc, b)),
        _ => resolved,
    };
    match value {
        Value::Object(fields) => {
            let (properties, required) = object_schema(doc, resolved);
            let mut names: Vec<&String> = fields.keys().collect();
            names.sort();
            let mut documented: Vec<&String> = properties.keys().collect();
            documented.sort();
            assert_eq!(names, documented, "{at}: {value}");
            for name in &required {
                assert!(fields.contains_key(name), "{at}: {name} is required");
            }
            for (name, field) in fields {
                check_shape(doc, &properties[name], field, &format!("{at}.{name}"));
            }
        }
        Value::Array(items) => {
            for item in items {
                check_shape(doc, &resolved["items"], item, &format!("{at}[]"));
            }
        }
        Value::Null => {
            let types = resolved["type"].clone();
            let nullable = types == "null"
                || types.as_array().is_some_and(|t| t.contains(&json!("null")))
                || resolved["oneOf"]
                    .as_array()
                    .is_some_and(|b| b.iter().any(|b| b["type"] == "null"));
            assert!(nullable, "{at}: null where the schema says {resolved}");
        }
        _ => {}
    }
}

/// The whole path with no outbox row written by hand: health samples over HTTP make the engine
/// open, resolve and reopen an incident, an operator acknowledges it through the API, and each
/// event reaches the receiver signed, in order, with the incident as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_events_from_the_engine_and_the_api_reach_the_receiver() {
    let s = Setup::start();
    let receiver = Receiver::start().await;
    let (hook, secret) = s.webhook(json!({ "url": receiver.url })).await;
    // Only this rule: CPU above 90 at once, clear below 50 at once.
    for id in 1..=5 {
        let (status, _) =
            s.c.patch_json(&format!("/api/v1/rules/{id}"), &json!({ "enabled": false }))
                .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, rule) =
        s.c.post_json(
            "/api/v1/rules",
            &json!({ "name": "cpu", "metric": "cpu_percent", "operator": ">", "threshold": 90,
                     "for": "0s", "clear_threshold": 50, "clear_for": "0s",
                     "severity": "critical" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rule}");

    let agent = "0b0c6a34-8d54-4a4a-9d51-8f0e1c3b7a11";
    let inv = inventory(agent, "db-1", &[], &["/"], &[]);
    s.c.ingest(&batch(agent, vec![inventory_report(1, inv)]))
        .await;
    let mut seq = 1;
    let mut cpu = |value: f64| {
        seq += 1;
        s.advance(60);
        batch(agent, vec![health_report(agent, seq, s.clock.now(), value)])
    };
    s.c.ingest(&cpu(97.0)).await;
    assert_eq!(s.pass().await.delivered, 1);

    let operator = s.c.token("operator", "oncall");
    let (status, acked) =
        s.c.send_as(
            Some(&operator),
            reqwest::Method::POST,
            "/api/v1/incidents/INC-000001/acknowledge",
            Some(&json!({ "note": "looking" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{acked}");
    s.c.ingest(&cpu(20.0)).await;
    s.c.ingest(&cpu(99.0)).await;
    assert_eq!(s.pass().await.delivered, 3);

    let seen = receiver.seen();
    let events: Vec<(String, String, String)> = seen
        .iter()
        .map(|r| {
            assert!(signature_verifies(r, &secret));
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(body["event"], r.header("x-census-event"));
            assert_eq!(body["incident"]["number"], "INC-000001");
            (
                body["event"].as_str().unwrap().to_owned(),
                body["incident"]["state"].as_str().unwrap().to_owned(),
                body["incident"]["priority"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expect = |e: &str, s: &str| (e.to_owned(), s.to_owned(), "P2".to_owned());
    assert_eq!(
        events,
        vec![
            expect("incident.opened", "new"),
            expect("incident.acknowledged", "acknowledged"),
            expect("incident.resolved", "resolved"),
            expect("incident.reopened", "new"),
        ]
    );
    let reopened: Value = serde_json::from_slice(&seen[3].body).unwrap();
    assert_eq!(reopened["incident"]["reopen_count"], 1);
    assert_eq!(s.deliveries(hook, "?state=delivered").await.len(), 4);
    s.stop().await;
}
