//! The collector over HTTP: real MessagePack + gzip batches in, the admin API out.

mod auth;
mod cis_search;
mod cli;
mod cmdb;
mod fuzz;
mod hostile;
mod incidents;
mod relations;
mod rules;
mod software_search;
mod support;
mod webhooks;

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::Value;
use support::*;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn computer_id(c: &TestCollector, hostname: &str) -> i64 {
    let list = c
        .get_ok(&format!("/api/v1/cis?class=computer&hostname={hostname}"))
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    list["items"][0]["id"].as_i64().unwrap()
}

#[tokio::test]
async fn an_inventory_becomes_a_computer_with_parts_and_software() {
    let c = TestCollector::start();
    let inv = inventory(
        AGENT,
        "web-1",
        &[
            package("openssl", "3.0.11"),
            package("bash", "5.2"),
            package("curl", "7.88"),
        ],
        &["/", "/home"],
        &["eth0", "wlan0"],
    );
    let ack = c
        .ingest(&batch(AGENT, vec![inventory_report(1, inv)]))
        .await;
    assert_eq!(
        ack,
        serde_json::json!({ "acked": [1], "send_inventory": false, "last_seq": 1 })
    );

    let id = computer_id(&c, "web-1").await;
    let ci = c.get_ok(&format!("/api/v1/cis/{id}")).await;
    assert_eq!(ci["class"], "computer");
    assert_eq!(ci["name"], "web-1");
    assert_eq!(ci["status"], "active");
    assert_eq!(ci["criticality"], 3);
    assert_eq!(ci["identified_by"], "new");
    assert_eq!(ci["attributes"]["hostname"], "web-1");
    assert_eq!(ci["attributes"]["os_name"], "Debian GNU/Linux");
    assert_eq!(ci["attributes"]["serial"], "SN-1234");
    assert_eq!(ci["health"], Value::Null);
    for key in ["first_seen", "last_seen"] {
        let text = ci[key].as_str().unwrap();
        assert!(text.ends_with('Z'), "{key} = {text}");
        OffsetDateTime::parse(text, &Rfc3339).unwrap();
    }
    let rels = ci["relationships"].as_array().unwrap();
    let targets: BTreeSet<_> = rels
        .iter()
        .map(|r| {
            assert_eq!(r["type"], "contains");
            assert_eq!(r["source"], id);
            r["target_name"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        targets,
        ["web-1:/", "web-1:/home", "web-1:eth0", "web-1:wlan0"]
            .map(String::from)
            .into()
    );

    // List items are summaries: health and relationships only on the CI itself.
    let listed = c.get_ok("/api/v1/cis?class=computer").await;
    let summary = listed["items"][0].as_object().unwrap();
    assert!(!summary.contains_key("health") && !summary.contains_key("relationships"));
    assert_eq!(summary["attributes"], ci["attributes"]);

    let filesystems = c.get_ok("/api/v1/cis?class=filesystem").await;
    assert_eq!(names(&filesystems), vec!["web-1:/", "web-1:/home"]);
    assert_eq!(filesystems["items"][0]["attributes"]["fs_type"], "ext4");
    let nics = c.get_ok("/api/v1/cis?class=network_interface").await;
    assert_eq!(
        nics["items"][0]["attributes"]["addresses"][0],
        "192.0.2.5/24"
    );
    assert_eq!(
        names(&c.get_ok("/api/v1/cis?os=linux").await),
        vec!["web-1"]
    );
    assert_eq!(
        names(&c.get_ok("/api/v1/cis?name_prefix=web-1:").await).len(),
        4
    );

    let software = c.get_ok(&format!("/api/v1/cis/{id}/software")).await;
    assert_eq!(names(&software), vec!["bash", "curl", "openssl"]);
    assert_eq!(software["items"][2]["version"], "3.0.11");
    assert_eq!(software["items"][2]["source"], "dpkg");
    assert_eq!(software["next_cursor"], Value::Null);
    // A well-formed cursor naming no catalog row: an empty page, not an error.
    let unknown = c
        .get_ok(&format!("/api/v1/cis/{id}/software?cursor=k1.ffff"))
        .await;
    assert_eq!(
        unknown,
        serde_json::json!({ "items": [], "next_cursor": null })
    );
}

#[tokio::test]
async fn a_repeated_batch_is_acked_again_and_stored_once() {
    let c = TestCollector::start();
    let now = OffsetDateTime::now_utc();
    let inv = inventory(AGENT, "web-1", &[package("bash", "5.2")], &["/"], &[]);
    let first = batch(
        AGENT,
        vec![
            inventory_report(1, inv),
            health_report(AGENT, 2, now - time::Duration::minutes(2), 10.0),
            health_report(AGENT, 3, now - time::Duration::minutes(1), 20.0),
        ],
    );
    let ack = c.ingest(&first).await;
    assert_eq!(ack["acked"], serde_json::json!([1, 2, 3]));
    // The agent did not get the ack (say) and sends the same batch again, plus a new sample.
    let mut again = first.clone();
    again.reports.push(health_report(AGENT, 4, now, 30.0));
    let ack = c.ingest(&again).await;
    assert_eq!(ack["acked"], serde_json::json!([1, 2, 3, 4]));

    let id = computer_id(&c, "web-1").await;
    let health = c.get_ok(&format!("/api/v1/cis/{id}/health")).await;
    let cpu: Vec<f64> = health["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["cpu_percent"].as_f64().unwrap())
        .collect();
    assert_eq!(cpu, vec![10.0, 20.0, 30.0]);
    assert_eq!(
        c.get_ok("/api/v1/cis").await["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        names(&c.get_ok(&format!("/api/v1/cis/{id}/software")).await),
        vec!["bash"]
    );
}

#[tokio::test]
async fn the_ack_names_the_highest_seq_stored_for_the_agent() {
    let c = TestCollector::start();
    let now = OffsetDateTime::now_utc();
    let inv = inventory(AGENT, "web-1", &[], &["/"], &[]);
    let ack = c
        .ingest(&batch(
            AGENT,
            vec![
                inventory_report(1, inv),
                health_report(AGENT, 2, now, 1.0),
                health_report(AGENT, 3, now, 2.0),
            ],
        ))
        .await;
    assert_eq!(ack["last_seq"], 3);
    // The agent's state dir went back in time: it numbers new reports from 2 again. They are
    // acked as repeats, and the ack tells it where to continue.
    let ack = c
        .ingest(&batch(AGENT, vec![health_report(AGENT, 2, now, 9.0)]))
        .await;
    assert_eq!(ack["acked"], serde_json::json!([2]));
    assert_eq!(ack["last_seq"], 3);
    let ack = c
        .ingest(&batch(AGENT, vec![health_report(AGENT, 4, now, 3.0)]))
        .await;
    assert_eq!(ack["last_seq"], 4);
    // Another agent has its own numbering.
    let ack = c
        .ingest(&batch(
            OTHER_AGENT,
            vec![health_report(OTHER_AGENT, 7, now, 1.0)],
        ))
        .await;
    assert_eq!(ack["last_seq"], 7);
}

#[tokio::test]
async fn a_second_inventory_removes_what_disappeared() {
    let c = TestCollector::start();
    let inv1 = inventory(
        AGENT,
        "web-1",
        &[package("bash", "5.2"), package("telnet", "0.17")],
        &["/", "/mnt/usb"],
        &["eth0"],
    );
    c.ingest(&batch(AGENT, vec![inventory_report(1, inv1)]))
        .await;
    let id = computer_id(&c, "web-1").await;

    let inv2 = inventory(
        AGENT,
        "web-1",
        &[package("bash", "5.2.15")],
        &["/"],
        &["eth0"],
    );
    c.ingest(&batch(AGENT, vec![inventory_report(2, inv2)]))
        .await;

    let software = c.get_ok(&format!("/api/v1/cis/{id}/software")).await;
    assert_eq!(names(&software), vec!["bash"]);
    assert_eq!(software["items"][0]["version"], "5.2.15");
    let retired = c
        .get_ok("/api/v1/cis?class=filesystem&status=retired")
        .await;
    assert_eq!(names(&retired), vec!["web-1:/mnt/usb"]);
    let ci = c.get_ok(&format!("/api/v1/cis/{id}")).await;
    let targets: Vec<_> = ci["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["target_name"].as_str().unwrap())
        .collect();
    assert!(!targets.contains(&"web-1:/mnt/usb"), "{targets:?}");
    assert_eq!(targets.len(), 2);
    // Nobody runs telnet any more.
    assert!(
        c.get_ok("/api/v1/software?name=telnet").await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn health_before_the_first_inventory_asks_for_it() {
    let c = TestCollector::start();
    let ack = c
        .ingest(&batch(
            AGENT,
            vec![health_report(AGENT, 1, OffsetDateTime::now_utc(), 5.0)],
        ))
        .await;
    assert_eq!(
        ack,
        serde_json::json!({ "acked": [1], "send_inventory": true, "last_seq": 1 })
    );
    assert!(
        c.get_ok("/api/v1/cis").await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let inv = inventory(AGENT, "web-1", &[], &[], &[]);
    let ack = c
        .ingest(&batch(AGENT, vec![inventory_report(2, inv)]))
        .await;
    assert_eq!(ack["send_inventory"], false);
    // The sample that came first is the computer's latest health, and in its series.
    let id = computer_id(&c, "web-1").await;
    assert_eq!(
        c.get_ok(&format!("/api/v1/cis/{id}")).await["health"]["cpu_percent"],
        5.0
    );
    let series = c.get_ok(&format!("/api/v1/cis/{id}/health")).await;
    assert_eq!(series["items"].as_array().unwrap().len(), 1, "{series}");
    assert_eq!(series["items"][0]["cpu_percent"], 5.0);
}

#[tokio::test]
async fn json_and_zstd_bodies_are_accepted() {
    let c = TestCollector::start();
    let json = census_common::codec::encode(
        &batch(
            AGENT,
            vec![inventory_report(
                1,
                inventory(AGENT, "web-1", &[], &[], &[]),
            )],
        ),
        census_common::Format::Json,
    );
    let response = c.post_raw(json, "application/json", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let packed = census_common::codec::encode(
        &batch(
            AGENT,
            vec![health_report(AGENT, 2, OffsetDateTime::now_utc(), 1.0)],
        ),
        census_common::Format::MessagePack,
    );
    let zstd = zstd::encode_all(packed.as_slice(), 3).unwrap();
    let response = c.post_raw(zstd, "application/msgpack", Some("zstd")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let ack: Value = response.json().await.unwrap();
    assert_eq!(ack["acked"], serde_json::json!([2]));
}

#[tokio::test]
async fn failures_answer_the_error_body() {
    let c = TestCollector::start_with(tempfile::tempdir().unwrap(), |config| {
        config.max_body_bytes = 64 * 1024
    });
    c.ingest(&batch(
        AGENT,
        vec![inventory_report(
            1,
            inventory(AGENT, "web-1", &[], &["/"], &[]),
        )],
    ))
    .await;

    let cases: &[(&str, StatusCode, &str)] = &[
        ("/api/v1/cis/999", StatusCode::NOT_FOUND, "not_found"),
        (
            "/api/v1/cis/999/software",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        ("/api/v1/cis/999/health", StatusCode::NOT_FOUND, "not_found"),
        ("/api/v1/cis/abc", StatusCode::BAD_REQUEST, "bad_request"),
        ("/api/v1/cis/-1", StatusCode::BAD_REQUEST, "bad_request"),
        (
            "/api/v1/cis?colour=red",
            StatusCode::BAD_REQUEST,
            "invalid_filter",
        ),
        (
            "/api/v1/cis?status=gone",
            StatusCode::BAD_REQUEST,
            "invalid_filter",
        ),
        (
            "/api/v1/cis?limit=0",
            StatusCode::BAD_REQUEST,
            "invalid_filter",
        ),
        (
            "/api/v1/cis?limit=1001",
            StatusCode::BAD_REQUEST,
            "invalid_filter",
        ),
        (
            "/api/v1/cis?class=a&class=b",
            StatusCode::BAD_REQUEST,
            "invalid_filter",
        ),
        (
            "/api/v1/cis?cursor=bogus",
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
        ),
        (
            "/api/v1/cis/1/health?from=yesterday",
            StatusCode::BAD_REQUEST,
            "invalid_filter",
        ),
        (
            "/api/v1/cis/1/health?from=2025-03-02T00:00:00Z&to=2025-03-01T00:00:00Z",
            StatusCode::BAD_REQUEST,
            "invalid_filter",
        ),
        (
            "/api/v1/cis/1/health?limit=10081",
            StatusCode::BAD_REQUEST,
            "invalid_filter",
        ),
        (
            "/api/v1/cis/1/health?cursor=k1.1",
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
        ),
        (
            "/api/v1/cis/1/software?limit=5000",
            StatusCode::BAD_REQUEST,
            "invalid_filter",
        ),
        (
            "/api/v1/software",
            StatusCode::BAD_REQUEST,
            "invalid_filter",
        ),
        (
            "/api/v1/software?name=bash&cursor=k1.1",
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
        ),
        ("/api/v1/nothing-here", StatusCode::NOT_FOUND, "not_found"),
    ];
    for (path, status, code) in cases {
        let (got, body) = c.get(path).await;
        let message = assert_error(got, &body, *status, code);
        assert!(!message.contains("SELECT"), "{path}: {message}");
    }
    let message = assert_error(
        c.get("/api/v1/cis?colour=red").await.0,
        &c.get("/api/v1/cis?colour=red").await.1,
        StatusCode::BAD_REQUEST,
        "invalid_filter",
    );
    assert!(message.contains("colour"), "{message}");

    let response = c.client.delete(c.url("/api/v1/cis")).send().await.unwrap();
    let status = response.status();
    assert_error(
        status,
        &response.json().await.unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );

    let post =
        |body: Vec<u8>, ct: &'static str, enc: Option<&'static str>| c.post_raw(body, ct, enc);
    let packed =
        census_common::codec::encode(&batch(AGENT, vec![]), census_common::Format::MessagePack);
    let checks = [
        (
            post(packed.clone(), "text/plain", None).await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            post(packed.clone(), "application/msgpack", Some("br")).await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
        ),
        (
            post(b"\xc1\xc1".to_vec(), "application/msgpack", None).await,
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            post(b"not gzip".to_vec(), "application/msgpack", Some("gzip")).await,
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            post(
                br#"{"agent_id":"nope","reports":[]}"#.to_vec(),
                "application/json",
                None,
            )
            .await,
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            post(
                format!(r#"{{"protocol":7,"agent_id":"{AGENT}","reports":[]}}"#).into_bytes(),
                "application/json",
                None,
            )
            .await,
            StatusCode::BAD_REQUEST,
            "unsupported_protocol",
        ),
        // Under the limit as sent, 1 MiB once inflated.
        (
            post(gzip(&vec![b' '; 1 << 20]), "application/json", Some("gzip")).await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (response, status, code) in checks {
        let got = response.status();
        let body: Value = response.json().await.unwrap();
        assert_error(got, &body, status, code);
    }
    // Over the limit as declared: answered from the head alone.
    let (got, body) = c.post_declared(100 * 1024).await;
    assert_error(
        got,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    // Nothing of the failed posts was stored.
    assert_eq!(
        c.get_ok("/api/v1/cis").await["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn the_ci_list_pages_with_a_cursor() {
    let c = TestCollector::start();
    let agents = [AGENT, OTHER_AGENT, "9f1d3c2b-6a5e-4f70-8e9d-0c1b2a3f4e5d"];
    for (i, agent) in agents.iter().enumerate() {
        let inv = inventory(agent, &format!("host-{i}"), &[], &["/"], &[]);
        c.ingest(&batch(agent, vec![inventory_report(1, inv)]))
            .await;
    }
    let all = names(&c.get_ok("/api/v1/cis?limit=1000").await);
    assert_eq!(all.len(), 6);

    let mut seen = Vec::new();
    let mut path = "/api/v1/cis?limit=4".to_owned();
    let mut pages = 0;
    loop {
        let page = c.get_ok(&path).await;
        pages += 1;
        seen.extend(names(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/cis?limit=4&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, 2);
    assert_eq!(seen, all);

    let computers = c.get_ok("/api/v1/cis?class=computer&limit=2").await;
    assert_eq!(names(&computers), vec!["host-0", "host-1"]);
    let cursor = computers["next_cursor"].as_str().unwrap();
    let rest = c
        .get_ok(&format!(
            "/api/v1/cis?class=computer&limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(names(&rest), vec!["host-2"]);
    assert_eq!(rest["next_cursor"], Value::Null);
}

#[tokio::test]
async fn the_software_query_lists_computers_and_versions() {
    let c = TestCollector::start();
    let web = inventory(
        AGENT,
        "web-1",
        &[package("openssl", "3.0.11"), package("bash", "5.2")],
        &[],
        &[],
    );
    let db = inventory(
        OTHER_AGENT,
        "db-1",
        &[package("openssl", "1.1.1w")],
        &[],
        &[],
    );
    c.ingest(&batch(AGENT, vec![inventory_report(1, web)]))
        .await;
    c.ingest(&batch(OTHER_AGENT, vec![inventory_report(1, db)]))
        .await;

    let found = c.get_ok("/api/v1/software?name=openssl").await;
    let rows: Vec<(String, String)> = found["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert_eq!(i["name"], "openssl");
            assert!(i["ci_id"].is_i64());
            (
                i["hostname"].as_str().unwrap().to_owned(),
                i["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("web-1".into(), "3.0.11".into()),
            ("db-1".into(), "1.1.1w".into())
        ]
    );
    assert_eq!(found["next_cursor"], Value::Null);

    let first = c.get_ok("/api/v1/software?name=openssl&limit=1").await;
    assert_eq!(first["items"][0]["hostname"], "web-1");
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = c
        .get_ok(&format!(
            "/api/v1/software?name=openssl&limit=1&cursor={cursor}"
        ))
        .await;
    assert_eq!(second["items"][0]["ci_name"], "db-1");
    assert!(
        c.get_ok("/api/v1/software?name=open").await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn health_is_served_by_time_range() {
    let c = TestCollector::start();
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let at = |minutes_ago: i64| now - time::Duration::minutes(minutes_ago);
    c.ingest(&batch(
        AGENT,
        vec![
            inventory_report(1, inventory(AGENT, "web-1", &[], &[], &[])),
            health_report(AGENT, 2, at(26 * 60), 1.0), // outside the default 24 h window
            health_report(AGENT, 3, at(120), 2.0),
            health_report(AGENT, 4, at(60), 3.0),
            health_report(AGENT, 5, at(10), 4.0),
        ],
    ))
    .await;
    let id = computer_id(&c, "web-1").await;
    let cpu = |v: &Value| -> Vec<f64> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["cpu_percent"].as_f64().unwrap())
            .collect()
    };

    assert_eq!(
        cpu(&c.get_ok(&format!("/api/v1/cis/{id}/health")).await),
        vec![2.0, 3.0, 4.0]
    );
    let from = at(90).format(&Rfc3339).unwrap();
    let to = at(30).format(&Rfc3339).unwrap();
    let window = c
        .get_ok(&format!("/api/v1/cis/{id}/health?from={from}&to={to}"))
        .await;
    assert_eq!(cpu(&window), vec![3.0]);
    let sample = &window["items"][0];
    assert_eq!(sample["agent_id"], AGENT);
    assert_eq!(sample["memory_used_percent"], 42.5);
    assert_eq!(sample["collected_at"], at(60).format(&Rfc3339).unwrap());
    let everything = c
        .get_ok(&format!(
            "/api/v1/cis/{id}/health?from=2000-01-01T00:00:00Z"
        ))
        .await;
    assert_eq!(cpu(&everything), vec![1.0, 2.0, 3.0, 4.0]);

    let ci = c.get_ok(&format!("/api/v1/cis/{id}")).await;
    assert_eq!(ci["health"]["cpu_percent"], 4.0);
}

#[tokio::test]
async fn health_pages_oldest_first_with_a_cursor() {
    let c = TestCollector::start();
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let at = |minutes_ago: i64| now - time::Duration::minutes(minutes_ago);
    // Samples 2 and 3 have the same time and fall on both sides of the first page boundary.
    let times = [at(50), at(40), at(40), at(30), at(20)];
    let mut reports = vec![inventory_report(
        1,
        inventory(AGENT, "web-1", &[], &[], &[]),
    )];
    for (i, t) in times.iter().enumerate() {
        reports.push(health_report(AGENT, 2 + i as u64, *t, i as f64));
    }
    c.ingest(&batch(AGENT, reports)).await;
    let id = computer_id(&c, "web-1").await;

    let whole = c.get_ok(&format!("/api/v1/cis/{id}/health")).await;
    assert_eq!(whole["items"].as_array().unwrap().len(), 5);
    assert!(whole.as_object().unwrap().contains_key("next_cursor"));
    assert_eq!(whole["next_cursor"], Value::Null);

    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut path = format!("/api/v1/cis/{id}/health?limit=2");
    loop {
        let page = c.get_ok(&path).await;
        let items = page["items"].as_array().unwrap();
        pages.push(items.len());
        seen.extend(items.iter().map(|s| s["cpu_percent"].as_f64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/cis/{id}/health?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, vec![2, 2, 1]);
    assert_eq!(seen, vec![0.0, 1.0, 2.0, 3.0, 4.0]);
}

#[tokio::test]
async fn probes_answer() {
    let c = TestCollector::start();
    assert_eq!(
        c.get_ok("/livez").await,
        serde_json::json!({ "status": "ok" })
    );
    assert_eq!(
        c.get_ok("/readyz").await,
        serde_json::json!({ "status": "ok" })
    );
}

#[tokio::test]
async fn data_survives_a_restart_and_dedup_with_it() {
    let c = TestCollector::start();
    let inv = inventory(AGENT, "web-1", &[package("bash", "5.2")], &["/"], &[]);
    let first = batch(
        AGENT,
        vec![
            inventory_report(1, inv),
            health_report(AGENT, 2, OffsetDateTime::now_utc(), 7.0),
        ],
    );
    c.ingest(&first).await;
    let addr_file = c.data_dir().join("collector.addr");
    assert_eq!(
        std::fs::read_to_string(&addr_file).unwrap(),
        format!("{}\n", c.addr)
    );
    let dir = c.stop();
    assert!(
        !addr_file.exists(),
        "the address file is removed on a clean stop"
    );

    let c = TestCollector::start_in(dir);
    let id = computer_id(&c, "web-1").await;
    // Written before the collector serves, so after an answer (not right after the start,
    // which returns before the database is open).
    assert_eq!(
        std::fs::read_to_string(&addr_file).unwrap(),
        format!("{}\n", c.addr)
    );
    assert_eq!(
        names(&c.get_ok(&format!("/api/v1/cis/{id}/software")).await),
        vec!["bash"]
    );
    assert_eq!(
        c.get_ok(&format!("/api/v1/cis/{id}/health")).await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // The agent resends after the restart: acked, not stored twice.
    let ack = c.ingest(&first).await;
    assert_eq!(
        ack,
        serde_json::json!({ "acked": [1, 2], "send_inventory": false, "last_seq": 2 })
    );
    assert_eq!(
        c.get_ok(&format!("/api/v1/cis/{id}/health")).await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        c.get_ok("/api/v1/cis").await["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}
