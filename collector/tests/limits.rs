//! No input can crash the collector or fill its disk or memory, and the transport it serves:
//! body and batch limits, rate limits, HTTPS and the refusal of plain HTTP off loopback. Over
//! real HTTP(S) on 127.0.0.1.

// Each test binary uses part of the shared helpers.
#[allow(dead_code)]
mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use census_collector::clock::{Clock, ManualClock};
use census_collector::config::Config;
use census_collector::server;
use census_common::codec::{self, Format};
use census_common::{Batch, HealthSample, Report, ReportBody};
use reqwest::StatusCode;
use serde_json::Value;
use support::*;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn refused(response: reqwest::Response, status: StatusCode, code: &str) -> String {
    let got = response.status();
    let body: Value = response.json().await.unwrap();
    assert_error(got, &body, status, code)
}

async fn nothing_stored(c: &TestCollector) {
    let list = c.get_ok("/api/v1/cis").await;
    assert_eq!(list["items"], serde_json::json!([]), "{list}");
}

fn health_at(seq: u64, at: OffsetDateTime) -> Report {
    health_report(AGENT, seq, at, 5.0)
}

fn with_health(seq: u64, at: OffsetDateTime, edit: impl FnOnce(&mut HealthSample)) -> Batch {
    let mut report = health_at(seq, at);
    if let ReportBody::Health(sample) = &mut report.body {
        edit(sample);
    }
    batch(AGENT, vec![report])
}

async fn post_json(c: &TestCollector, value: &impl serde::Serialize) -> reqwest::Response {
    c.post_raw(codec::encode(value, Format::Json), "application/json", None)
        .await
}

/// MessagePack `{"agent_id": AGENT, "reports": <rest>`: a batch whose reports are `rest`.
fn msgpack_batch_with_reports(rest: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0x82, 0xa8];
    bytes.extend_from_slice(b"agent_id");
    bytes.push(0xd9);
    bytes.push(AGENT.len() as u8);
    bytes.extend_from_slice(AGENT.as_bytes());
    bytes.push(0xa7);
    bytes.extend_from_slice(b"reports");
    bytes.extend_from_slice(rest);
    bytes
}

#[tokio::test]
async fn compression_bombs_stop_at_max_body_bytes() {
    let c = TestCollector::start();
    // 64 MiB of zeros against the default 16 MiB limit, written in chunks so the test itself
    // does not hold them.
    let chunk = vec![0u8; 1 << 20];
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut zstd = zstd::stream::write::Encoder::new(Vec::new(), 19).unwrap();
    for _ in 0..64 {
        gzip.write_all(&chunk).unwrap();
        zstd.write_all(&chunk).unwrap();
    }
    let (gzip, zstd) = (gzip.finish().unwrap(), zstd.finish().unwrap());
    assert!(gzip.len() < 128 * 1024 && zstd.len() < 128 * 1024);

    for (body, encoding) in [(gzip, "gzip"), (zstd, "zstd")] {
        let response = c
            .post_raw(body, "application/msgpack", Some(encoding))
            .await;
        let message = refused(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
        assert!(message.contains("max_body_bytes = 16777216"), "{message}");
    }
    nothing_stored(&c).await;
    c.get_ok("/livez").await;
}

#[tokio::test]
async fn a_body_declared_too_large_is_refused_before_it_is_read() {
    let c = TestCollector::start_with(tempfile::tempdir().unwrap(), |config| {
        config.max_body_bytes = 64 * 1024;
    });
    // Only the head is sent: the answer comes without the body.
    let (status, body) = c.post_declared(200 * 1024).await;
    let message = assert_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    assert!(
        message.starts_with("the request body is larger")
            && message.contains("max_body_bytes = 65536"),
        "{message}"
    );
}

#[tokio::test]
async fn batches_past_the_limits_are_refused_whole() {
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let now = clock.now();
    let c =
        TestCollector::start_with_clock(tempfile::tempdir().unwrap(), clock.clone(), |config| {
            config.max_software_entries = 1000;
            config.max_parts = 16;
            config.max_string_bytes = 256;
            config.max_reports_per_batch = 100;
        });
    let mut many_packages = inventory(AGENT, "web-1", &[], &["/"], &[]);
    many_packages.software = (0..1001).map(|i| package(&format!("p{i}"), "1")).collect();
    let mounts: Vec<String> = (0..17).map(|i| format!("/m{i}")).collect();
    let mount_refs: Vec<&str> = mounts.iter().map(String::as_str).collect();
    let many_mounts = inventory(AGENT, "web-1", &[], &mount_refs, &[]);
    let long_name = inventory(AGENT, &"h".repeat(300), &[], &[], &[]);
    let too_many_reports = batch(AGENT, (1..=101).map(|seq| health_at(seq, now)).collect());
    let mut twice = batch(AGENT, vec![health_at(1, now), health_at(2, now)]);
    twice.reports[1].seq = 1;

    // (body as MessagePack + gzip unless JSON, status, code, words the message must hold)
    let cases: Vec<(reqwest::Response, StatusCode, &str, &[&str])> = vec![
        (
            c.post_batch(&batch(AGENT, vec![inventory_report(1, many_packages)]))
                .await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_items",
            &["`software`", "1001 entries", "max_software_entries = 1000"],
        ),
        (
            c.post_batch(&batch(AGENT, vec![inventory_report(1, many_mounts)]))
                .await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_items",
            &["report 1: filesystems has 17 entries", "max_parts = 16"],
        ),
        (
            c.post_batch(&too_many_reports).await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_items",
            &["reports has 101 entries", "max_reports_per_batch = 100"],
        ),
        (
            c.post_batch(&batch(AGENT, vec![inventory_report(1, long_name.clone())]))
                .await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "field_too_long",
            &["`hostname`", "300 bytes", "max_string_bytes = 256"],
        ),
        (
            post_json(&c, &batch(AGENT, vec![inventory_report(1, long_name)])).await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "field_too_long",
            &[
                "report 1: host.hostname is 300 bytes",
                "max_string_bytes = 256",
            ],
        ),
        (
            c.post_batch(&twice).await,
            StatusCode::BAD_REQUEST,
            "duplicate_seq",
            &["seq 1 appears more than once"],
        ),
        (
            c.post_batch(&with_health(1, now, |h| h.cpu_percent = Some(250.0)))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "value_out_of_range",
            &["report 1: cpu_percent is 250"],
        ),
        (
            c.post_batch(&with_health(1, now, |h| {
                h.memory_used_percent = Some(f64::NAN)
            }))
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "value_out_of_range",
            &["memory_used_percent is NaN, not a finite number"],
        ),
        (
            c.post_batch(&batch(
                AGENT,
                vec![health_at(1, now + time::Duration::hours(25))],
            ))
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "value_out_of_range",
            &["collected_at", "max_clock_skew"],
        ),
        (
            c.post_batch(&batch(
                AGENT,
                vec![health_at(1, time::macros::datetime!(1999-12-31 23:00 UTC))],
            ))
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "value_out_of_range",
            &["before 2000-01-01"],
        ),
        (
            // "reports": forty arrays deep.
            c.post_raw(
                msgpack_batch_with_reports(&[0x91; 40]),
                "application/msgpack",
                None,
            )
            .await,
            StatusCode::BAD_REQUEST,
            "nesting_too_deep",
            &["max_nesting_depth = 32"],
        ),
        (
            c.post_raw(
                format!(
                    r#"{{"agent_id": "{AGENT}", "reports": {}{}}}"#,
                    "[".repeat(40),
                    "]".repeat(40)
                )
                .into_bytes(),
                "application/json",
                None,
            )
            .await,
            StatusCode::BAD_REQUEST,
            "nesting_too_deep",
            &["max_nesting_depth = 32"],
        ),
        (
            // "reports": an array claiming four billion entries in a few bytes.
            c.post_raw(
                msgpack_batch_with_reports(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0]),
                "application/msgpack",
                None,
            )
            .await,
            StatusCode::BAD_REQUEST,
            "invalid_body",
            &["runs past the end of the body"],
        ),
    ];
    for (response, status, code, words) in cases {
        let message = refused(response, status, code).await;
        for word in words {
            assert!(
                message.contains(word),
                "{code}: {word:?} not in {message:?}"
            );
        }
    }
    nothing_stored(&c).await;

    // None of the refused seqs was stored, and a sample a few hours ahead (within the skew)
    // is still taken.
    let ack = c
        .ingest(&batch(
            AGENT,
            vec![
                health_at(1, now),
                health_at(2, now + time::Duration::hours(3)),
            ],
        ))
        .await;
    assert_eq!(ack["acked"], serde_json::json!([1, 2]));
    assert_eq!(ack["last_seq"], 2);
}

#[tokio::test]
async fn report_batches_are_rate_limited_per_agent() {
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let now = clock.now();
    let c =
        TestCollector::start_with_clock(tempfile::tempdir().unwrap(), clock.clone(), |config| {
            // One batch every 10 s, two at once.
            config.reports_rate_per_minute = 6;
            config.reports_burst = 2;
        });
    c.ingest(&batch(AGENT, vec![health_at(1, now)])).await;
    c.ingest(&batch(AGENT, vec![health_at(2, now)])).await;
    let response = c.post_batch(&batch(AGENT, vec![health_at(3, now)])).await;
    assert_eq!(response.headers()["retry-after"], "10");
    let message = refused(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert!(
        message.contains(AGENT) && message.contains("reports_rate_per_minute"),
        "{message}"
    );
    // Another agent has its own bucket.
    c.ingest(&batch(
        OTHER_AGENT,
        vec![health_report(OTHER_AGENT, 1, now, 1.0)],
    ))
    .await;

    clock.advance(time::Duration::seconds(4));
    let response = c.post_batch(&batch(AGENT, vec![health_at(3, now)])).await;
    assert_eq!(response.headers()["retry-after"], "6");
    clock.advance(time::Duration::seconds(6));
    let ack = c.ingest(&batch(AGENT, vec![health_at(3, now)])).await;
    assert_eq!(
        (&ack["acked"], &ack["last_seq"]),
        (&serde_json::json!([3]), &serde_json::json!(3))
    );
}

#[tokio::test]
async fn the_default_burst_drains_a_backlog() {
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let now = clock.now();
    let c = TestCollector::start_with_clock(tempfile::tempdir().unwrap(), clock, |_| {});
    // After an outage the agent sends its queue back to back, 100 reports a batch: the
    // default burst takes 60 batches at once with the clock standing still.
    for i in 0..60u64 {
        let reports = (1..=100).map(|j| health_at(i * 100 + j, now)).collect();
        c.ingest(&batch(AGENT, reports)).await;
    }
    let response = c
        .post_batch(&batch(AGENT, vec![health_at(6001, now)]))
        .await;
    refused(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
}

/// A CA and a server certificate for 127.0.0.1 and localhost signed by it, in `dir`.
struct Certificates {
    ca_pem: String,
    cert: PathBuf,
    key: PathBuf,
}

fn certificates(dir: &Path, name: &str) -> Certificates {
    let ca = census_tests::TestCa::generate(dir, name);
    Certificates {
        ca_pem: ca.ca_pem,
        cert: ca.cert_file,
        key: ca.key_file,
    }
}

fn client_trusting(ca_pem: &str) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .build()
        .unwrap()
}

fn start_https(dir: &tempfile::TempDir) -> (TestCollector, Certificates) {
    let certs = certificates(dir.path(), "server");
    let (cert, key) = (certs.cert.clone(), certs.key.clone());
    let mut c = TestCollector::start_with(tempfile::tempdir().unwrap(), |config| {
        config.tls_cert = Some(cert);
        config.tls_key = Some(key);
    });
    c.client = client_trusting(&certs.ca_pem);
    (c, certs)
}

#[tokio::test]
async fn https_serves_clients_that_trust_its_ca_only() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = start_https(&dir);
    assert!(c.url("/livez").starts_with("https://127.0.0.1:"));
    assert_eq!(
        c.get_ok("/livez").await,
        serde_json::json!({ "status": "ok" })
    );
    let ack = c
        .ingest(&batch(AGENT, vec![health_at(1, OffsetDateTime::now_utc())]))
        .await;
    assert_eq!(ack["acked"], serde_json::json!([1]));
    // The address file still holds ip:port only.
    let written = std::fs::read_to_string(c.data_dir().join("collector.addr")).unwrap();
    assert_eq!(written.trim().parse::<SocketAddr>().unwrap(), c.addr);

    let stranger = certificates(dir.path(), "other");
    let err = client_trusting(&stranger.ca_pem)
        .get(c.url("/livez"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    // Plain HTTP to the HTTPS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/livez", c.addr))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
}

#[tokio::test]
async fn a_stalled_or_failed_handshake_holds_up_nobody_and_not_the_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = start_https(&dir);
    // Connects and never says anything.
    let _stalled = tokio::net::TcpStream::connect(c.addr).await.unwrap();
    // Speaks plain HTTP to the TLS port: the handshake fails and the connection is closed.
    let mut garbage = tokio::net::TcpStream::connect(c.addr).await.unwrap();
    garbage
        .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = garbage.read_to_end(&mut answer).await;
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");

    // Well inside the 10 s handshake timeout: were the accept loop or the shutdown waiting on
    // the stalled handshake, these would run out.
    let within = std::time::Duration::from_secs(5);
    for _ in 0..3 {
        tokio::time::timeout(within, c.get_ok("/livez"))
            .await
            .expect("served while a handshake stalls");
    }
    // Dropping the collector stops it gracefully (and asserts that it stopped cleanly) while
    // the stalled handshake is still pending.
    tokio::time::timeout(within, tokio::task::spawn_blocking(move || drop(c)))
        .await
        .expect("stopped while a handshake stalls")
        .unwrap();
}

#[tokio::test]
async fn handlers_see_the_client_address_over_http_and_https() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certificates(dir.path(), "server");
    let tls = census_collector::tls::server_config(&certs.cert, &certs.key).unwrap();
    let app = || {
        Router::new().route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        )
    };
    for (tls, client, scheme) in [
        (None, reqwest::Client::new(), "http"),
        (Some(tls), client_trusting(&certs.ca_pem), "https"),
    ] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server::serve_app(listener, tls, app(), async {
            let _ = stopped.await;
        }));
        let text = client
            .get(format!("{scheme}://{addr}/peer"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let peer: SocketAddr = text.parse().unwrap();
        assert_eq!(peer.ip().to_string(), "127.0.0.1", "{scheme}");
        assert_ne!(peer.port(), addr.port());
        stop.send(()).unwrap();
        serving.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_bad_tls_setup_or_plain_http_off_loopback_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let server_certs = certificates(dir.path(), "server");
    let other = certificates(dir.path(), "other");
    let start = |tweak: Box<dyn FnOnce(&mut Config)>, listen: &'static str| async move {
        let data = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: data.path().join("data"),
            ..Config::default()
        };
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
        let result = server::serve(listener, config, std::future::pending()).await;
        // Refused before anything was created.
        assert!(!data.path().join("data").exists());
        format!("{:#}", result.unwrap_err())
    };

    let err = start(Box::new(|_| {}), "0.0.0.0:0").await;
    assert!(
        err.contains("refusing to serve plain HTTP")
            && err.contains("Set tls_cert and tls_key")
            && err.contains("allow_insecure_http = true"),
        "{err}"
    );
    let missing = dir.path().join("missing.crt");
    let key = server_certs.key.clone();
    let err = start(
        Box::new(move |c| {
            c.tls_cert = Some(missing);
            c.tls_key = Some(key);
        }),
        "127.0.0.1:0",
    )
    .await;
    assert!(err.contains("could not read tls_cert"), "{err}");
    let (cert, key) = (server_certs.cert.clone(), other.key.clone());
    let err = start(
        Box::new(move |c| {
            c.tls_cert = Some(cert);
            c.tls_key = Some(key);
        }),
        "127.0.0.1:0",
    )
    .await;
    assert!(err.contains("does not fit tls_cert"), "{err}");
    let cert = server_certs.cert.clone();
    let err = start(Box::new(move |c| c.tls_cert = Some(cert)), "127.0.0.1:0").await;
    assert!(err.contains("tls_cert and tls_key go together"), "{err}");
}

#[test]
fn serve_logs_whether_it_speaks_tls() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let certs = certificates(dir.path(), "server");
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "tls_cert = {:?}\ntls_key = {:?}\n",
            certs.cert.display().to_string(),
            certs.key.display().to_string()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_census-collector"))
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let listening = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "collector exited before listening"
        );
        if line.contains("listening addr=") {
            break line.clone();
        }
    };
    assert!(listening.contains(" tls=true"), "{listening}");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(child.wait().unwrap().success());
}
