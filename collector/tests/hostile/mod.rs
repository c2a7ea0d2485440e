//! Hostile input over real HTTP: every malformed, oversized, lying or injected request gets a
//! 4xx with a stable code, and the database holds exactly what it held before (a full dump of
//! every table is compared).

use std::io::Write;

use census_common::codec::{self, Format};
use census_common::{Batch, HealthSample, Report, ReportBody};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::support::*;

/// A collector with one computer (so a filter that wrongly matched everything would show) and
/// its agent's token made, whose compaction never runs during the test.
async fn seeded() -> TestCollector {
    let c = TestCollector::start_with(tempfile::tempdir().unwrap(), |config| {
        config.compaction_interval = "1d".parse().unwrap();
    });
    c.ingest(&batch(
        AGENT,
        vec![
            inventory_report(
                1,
                inventory(
                    AGENT,
                    "web-1",
                    &[package("openssl", "3.0.11")],
                    &["/"],
                    &["eth0"],
                ),
            ),
            health_report(AGENT, 2, OffsetDateTime::now_utc(), 12.5),
        ],
    ))
    .await;
    c
}

fn msgpack(value: &Value) -> Vec<u8> {
    rmp_serde::to_vec_named(value).unwrap()
}

fn encoded(batch: &Batch) -> Vec<u8> {
    codec::encode(batch, Format::MessagePack)
}

fn health(seq: u64, edit: impl FnOnce(&mut HealthSample)) -> Batch {
    let mut sample = HealthSample::empty(AGENT, OffsetDateTime::now_utc());
    sample.cpu_percent = Some(10.0);
    edit(&mut sample);
    batch(
        AGENT,
        vec![Report {
            seq,
            body: ReportBody::Health(sample),
        }],
    )
}

fn gzip_of(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// `{"agent_id": AGENT, "reports": <raw>}` with `raw` spliced in as MessagePack bytes.
fn batch_with_raw_reports(raw: &[u8]) -> Vec<u8> {
    let mut out = vec![0x82];
    out.extend(msgpack(&json!("agent_id")).iter().copied());
    out.extend(msgpack(&json!(AGENT)));
    out.extend(msgpack(&json!("reports")));
    out.extend_from_slice(raw);
    out
}

struct Case {
    name: &'static str,
    body: Vec<u8>,
    content_type: &'static str,
    encoding: Option<&'static str>,
    status: StatusCode,
    code: &'static str,
}

fn case(name: &'static str, body: Vec<u8>, status: StatusCode, code: &'static str) -> Case {
    Case {
        name,
        body,
        content_type: "application/msgpack",
        encoding: None,
        status,
        code,
    }
}

fn hostile_cases() -> Vec<Case> {
    let good = encoded(&health(10, |_| {}));
    let now = OffsetDateTime::now_utc();
    let mut cases = vec![
        case(
            "truncated MessagePack",
            good[..good.len() / 2].to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        case(
            "empty body",
            Vec::new(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        case(
            "seq of the wrong type",
            msgpack(&json!({"agent_id": AGENT, "reports": [
                {"seq": "ten", "kind": "health", "agent_id": AGENT,
                 "collected_at": "2026-11-25T12:00:00Z"}]})),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        case(
            "reports of the wrong type",
            msgpack(&json!({"agent_id": AGENT, "reports": {"seq": 1}})),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        case(
            "unknown report kind",
            msgpack(&json!({"agent_id": AGENT, "reports": [
                {"seq": 10, "kind": "rootkit", "agent_id": AGENT}]})),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        case(
            "array claiming 4 billion reports",
            batch_with_raw_reports(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0]),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        case(
            "string claiming 4 GiB",
            batch_with_raw_reports(&[
                0x91, 0x81, 0xa4, b'k', b'i', b'n', b'd', 0xdb, 0xff, 0xff, 0xff, 0xff, b'x',
            ]),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        case(
            "1000-deep nesting",
            batch_with_raw_reports(&[[0x91u8; 1000].as_slice(), &[0xc0]].concat()),
            StatusCode::BAD_REQUEST,
            "nesting_too_deep",
        ),
        case(
            "negative seq",
            msgpack(&json!({"agent_id": AGENT, "reports": [
                {"seq": -1, "kind": "health", "agent_id": AGENT,
                 "collected_at": "2026-11-25T12:00:00Z"}]})),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        case(
            "seq past i64",
            encoded(&health(u64::MAX, |_| {})),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        case(
            "negative uptime",
            msgpack(&json!({"agent_id": AGENT, "reports": [
                {"seq": 10, "kind": "health", "agent_id": AGENT, "uptime_secs": -5,
                 "collected_at": "2026-11-25T12:00:00Z"}]})),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        case(
            "duplicate seqs in one batch",
            {
                let mut b = health(10, |_| {});
                b.reports.push(b.reports[0].clone());
                encoded(&b)
            },
            StatusCode::BAD_REQUEST,
            "duplicate_seq",
        ),
        case(
            "collected_at years ahead",
            encoded(&health(10, |s| {
                s.collected_at = now + time::Duration::days(3650);
            })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "value_out_of_range",
        ),
        case(
            "collected_at in 1970",
            encoded(&health(10, |s| {
                s.collected_at = OffsetDateTime::UNIX_EPOCH;
            })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "value_out_of_range",
        ),
        case(
            "NaN CPU",
            encoded(&health(10, |s| s.cpu_percent = Some(f64::NAN))),
            StatusCode::UNPROCESSABLE_ENTITY,
            "value_out_of_range",
        ),
        case(
            "memory used 1e300 %",
            encoded(&health(10, |s| s.memory_used_percent = Some(1e300))),
            StatusCode::UNPROCESSABLE_ENTITY,
            "value_out_of_range",
        ),
        case(
            "a 10 MB hostname",
            encoded(&batch(
                AGENT,
                vec![inventory_report(
                    10,
                    inventory(AGENT, &"h".repeat(10 << 20), &[], &[], &[]),
                )],
            )),
            StatusCode::PAYLOAD_TOO_LARGE,
            "field_too_long",
        ),
        case(
            "an agent id that is not a UUID",
            msgpack(&json!({"agent_id": "'; DROP TABLE ci; --", "reports": []})),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
    ];
    // Invalid UTF-8 where a string must be: the hostname's bytes replaced in place.
    let marker = "MARKERMARKER";
    let mut bytes = encoded(&batch(
        AGENT,
        vec![inventory_report(
            10,
            inventory(AGENT, marker, &[], &[], &[]),
        )],
    ));
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .unwrap();
    bytes[at..at + 4].copy_from_slice(&[0xff, 0xfe, 0xc0, 0x80]);
    cases.push(case(
        "invalid UTF-8",
        bytes,
        StatusCode::BAD_REQUEST,
        "invalid_body",
    ));
    // Compression bombs: 64 MiB of zeros, far past the 16 MiB default limit.
    let zeros = vec![0u8; 64 << 20];
    cases.push(Case {
        encoding: Some("gzip"),
        ..case(
            "gzip bomb",
            gzip_of(&zeros),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        )
    });
    cases.push(Case {
        encoding: Some("zstd"),
        ..case(
            "zstd bomb",
            zstd::encode_all(zeros.as_slice(), 19).unwrap(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        )
    });
    cases.push(Case {
        encoding: Some("gzip"),
        ..case(
            "gzip garbage",
            b"\x1f\x8b\x08\x00garbage".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        )
    });
    cases.push(Case {
        content_type: "application/json",
        ..case(
            "1000-deep JSON",
            format!(
                r#"{{"agent_id": "{AGENT}", "reports": {}{}}}"#,
                "[".repeat(1000),
                "]".repeat(1000)
            )
            .into_bytes(),
            StatusCode::BAD_REQUEST,
            "nesting_too_deep",
        )
    });
    cases.push(Case {
        content_type: "application/json",
        ..case(
            "JSON with a number past u64",
            format!(
                r#"{{"agent_id": "{AGENT}", "reports": [{{"seq": 1e400, "kind": "health"}}]}}"#
            )
            .into_bytes(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        )
    });
    cases
}

#[tokio::test]
async fn hostile_report_bodies_get_a_4xx_and_change_nothing() {
    let c = seeded().await;
    let db = c.data_dir().join("census.db");
    let before = dump(&db);
    for case in hostile_cases() {
        let response = c
            .post_raw(case.body, case.content_type, case.encoding)
            .await;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{}: the answer is not JSON: {e}", case.name));
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (case.status, Some(case.code)),
            "{}: {body}",
            case.name
        );
        assert!(
            !body["error"]["message"].as_str().unwrap_or("").is_empty(),
            "{}",
            case.name
        );
        assert_eq!(dump(&db), before, "{} changed the database", case.name);
    }
    // The collector still serves.
    assert_eq!(c.get("/readyz").await.0, StatusCode::OK);
    let ack = c.ingest(&health(3, |_| {})).await;
    assert_eq!(ack["acked"], json!([3]));
}

/// Payloads sent to every filter: classic, UNION, stacked and time-based (heavy `randomblob`,
/// recursive CTE) injections.
const INJECTIONS: &[&str] = &[
    "' OR '1'='1",
    "' OR 1=1 --",
    "web-1' --",
    "%",
    "%' OR name LIKE '%",
    "\" OR \"\"=\"",
    "1; DROP TABLE ci; --",
    "'; DELETE FROM token; --",
    "' UNION SELECT id, kind, role, agent_id, name, hash, created_at, revoked_at, 1 FROM token --",
    "1' AND 1=(SELECT count(*) FROM token) --",
    "' AND randomblob(1000000000) --",
    "'||(SELECT CASE WHEN 1 THEN randomblob(500000000) END)||'",
    "' AND 1=(WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM r) SELECT count(*) FROM r) --",
    "1 OR sleep(5)",
    "\0",
    "web-1\u{0}' OR 1=1",
];

#[tokio::test]
async fn injections_in_every_filter_match_nothing_and_change_nothing() {
    let c = seeded().await;
    let db = c.data_dir().join("census.db");
    let before = dump(&db);
    let ci = c.get_ok("/api/v1/cis?hostname=web-1").await["items"][0]["id"]
        .as_i64()
        .unwrap();
    let routes = [
        (
            "/api/v1/cis".to_owned(),
            vec![
                "class", "status", "name", "hostname", "os", "limit", "cursor",
            ],
        ),
        (
            "/api/v1/software".to_owned(),
            vec!["name", "limit", "cursor"],
        ),
        (
            format!("/api/v1/cis/{ci}/software"),
            vec!["limit", "cursor"],
        ),
        (
            format!("/api/v1/cis/{ci}/health"),
            vec!["from", "to", "limit", "cursor"],
        ),
    ];
    for payload in INJECTIONS {
        let encoded: String = url_encode(payload);
        for (route, params) in &routes {
            for param in params {
                let path = format!("{route}?{param}={encoded}");
                let (status, body) = c.get(&path).await;
                match status {
                    StatusCode::OK => {
                        let items = body["items"].as_array().unwrap();
                        assert!(items.is_empty(), "{path} matched: {body}");
                    }
                    StatusCode::BAD_REQUEST => {
                        let code = body["error"]["code"].as_str().unwrap();
                        assert!(
                            ["invalid_filter", "invalid_cursor"].contains(&code),
                            "{path}: {body}"
                        );
                    }
                    other => panic!("{path}: {other} {body}"),
                }
            }
        }
        // In the path, too.
        let path = format!("/api/v1/cis/{encoded}");
        let (status, body) = c.get(&path).await;
        assert!(status.is_client_error(), "{path}: {status} {body}");
    }
    assert_eq!(dump(&db), before, "an injection changed the database");
    // The seeded computer is still found by an honest filter.
    assert_eq!(
        c.get_ok("/api/v1/software?name=openssl").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

fn url_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
