//! Identification, import, history, time travel and the change feed, over real HTTP against a
//! real database.

use std::sync::Arc;

use census_collector::clock::ManualClock;
use census_common::{Inventory, NetworkInterface};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::support::*;

const UUID_A: &str = "4c4c4544-0031-3510-8052-b4c04f4e4d32";
const UUID_B: &str = "9f1c2d3e-4b5a-6978-8a9b-0c1d2e3f4a5b";
const AGENT_C: &str = "7d2f0c1e-9a8b-4c6d-8e5f-3a2b1c0d9e8f";

/// A machine as an agent reports it: hostname, machine-id, serial, hardware UUID and one
/// physical NIC, with `packages`.
fn machine(
    agent: &str,
    host: &str,
    machine_id: &str,
    serial: &str,
    uuid: &str,
    packages: &[census_common::Software],
) -> Inventory {
    let mut inv = inventory(agent, host, packages, &["/"], &[]);
    inv.host.machine_id = Some(machine_id.into());
    inv.hardware.serial = Some(serial.into());
    inv.hardware.uuid = Some(uuid.into());
    inv.network_interfaces = vec![NetworkInterface {
        name: "eno1".into(),
        mac: Some("00:1a:2b:3c:4d:5e".into()),
        addresses: vec![],
        r#virtual: false,
    }];
    inv
}

async fn send_inventory(c: &TestCollector, seq: u64, inv: Inventory) -> Value {
    let agent = inv.agent_id.clone();
    c.ingest(&batch(&agent, vec![inventory_report(seq, inv)]))
        .await
}

async fn computers(c: &TestCollector) -> Vec<Value> {
    c.get_ok("/api/v1/cis?class=computer").await["items"]
        .as_array()
        .unwrap()
        .clone()
}

async fn history(c: &TestCollector, id: i64, query: &str) -> Vec<Value> {
    c.get_ok(&format!("/api/v1/cis/{id}/history{query}")).await["items"]
        .as_array()
        .unwrap()
        .clone()
}

fn kinds(rows: &[Value]) -> Vec<&str> {
    rows.iter().map(|r| r["kind"].as_str().unwrap()).collect()
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

#[tokio::test]
async fn a_reinstalled_machine_keeps_its_ci_and_history() {
    let c = TestCollector::start();
    let before = machine(
        AGENT,
        "web-1",
        "m-old",
        "CZ123",
        UUID_A,
        &[package("bash", "5.1")],
    );
    send_inventory(&c, 1, before).await;
    let id = computers(&c).await[0]["id"].as_i64().unwrap();
    let created = history(&c, id, "").await;
    assert_eq!(kinds(&created).last(), Some(&"created"));

    // Reinstalled: a new agent id and machine-id, the same serial and UUID (the firmware's
    // other byte order, in upper case).
    let after = machine(
        OTHER_AGENT,
        "web-1",
        "m-new",
        "cz123",
        "44454C4C-3100-1035-8052-B4C04F4E4D32",
        &[package("bash", "5.2")],
    );
    send_inventory(&c, 1, after).await;
    let all = computers(&c).await;
    assert_eq!(all.len(), 1, "one CI, not two: {all:?}");
    let ci = c.get_ok(&format!("/api/v1/cis/{id}")).await;
    assert_eq!(ci["identified_by"], "serial_uuid");
    assert_eq!(ci["attributes"]["machine_id"], "m-new");

    let rows = history(&c, id, "").await;
    // The old history is still there, after the new rows.
    assert_eq!(&rows[rows.len() - created.len()..], &created[..]);
    let agent_changed = rows.iter().find(|r| r["kind"] == "agent_changed").unwrap();
    assert_eq!(agent_changed["old"], AGENT);
    assert_eq!(agent_changed["new"], OTHER_AGENT);
    assert_eq!(agent_changed["source"], format!("agent:{OTHER_AGENT}"));
    let upgrade = rows
        .iter()
        .find(|r| r["kind"] == "software_upgraded")
        .unwrap();
    assert_eq!(upgrade["field"], "bash");
    assert_eq!(upgrade["old"]["version"], "5.1");
    assert_eq!(upgrade["new"]["version"], "5.2");
    assert!(rows.iter().any(|r| r["kind"] == "attribute_changed"
        && r["field"] == "machine_id"
        && r["old"] == "m-old"
        && r["new"] == "m-new"));

    // The new agent's health goes to the CI; the old agent is detached and asked for its
    // inventory if it ever reports again.
    let ack = c
        .ingest(&batch(
            OTHER_AGENT,
            vec![health_report(
                OTHER_AGENT,
                2,
                OffsetDateTime::now_utc(),
                12.0,
            )],
        ))
        .await;
    assert_eq!(ack["send_inventory"], false);
    let ci = c.get_ok(&format!("/api/v1/cis/{id}")).await;
    assert_eq!(ci["health"]["cpu_percent"], 12.0);
    let ack = c
        .ingest(&batch(
            AGENT,
            vec![health_report(AGENT, 2, OffsetDateTime::now_utc(), 99.0)],
        ))
        .await;
    assert_eq!(ack["send_inventory"], true);
    let ci = c.get_ok(&format!("/api/v1/cis/{id}")).await;
    assert_eq!(ci["health"]["cpu_percent"], 12.0);
}

#[tokio::test]
async fn a_renamed_machine_keeps_its_ci() {
    let c = TestCollector::start();
    send_inventory(&c, 1, machine(AGENT, "web-1", "m1", "CZ1", UUID_A, &[])).await;
    let id = computers(&c).await[0]["id"].as_i64().unwrap();
    send_inventory(&c, 2, machine(AGENT, "www-1", "m1", "CZ1", UUID_A, &[])).await;
    let all = computers(&c).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["name"], "www-1");
    let renamed = history(&c, id, "?kind=renamed").await;
    assert_eq!(renamed.len(), 1);
    assert_eq!(
        (&renamed[0]["old"], &renamed[0]["new"]),
        (&json!("web-1"), &json!("www-1"))
    );

    // Without readable hardware identity, the agent and machine-id carry it.
    let c = TestCollector::start();
    send_inventory(&c, 1, machine(AGENT, "a", "m1", "", "", &[])).await;
    send_inventory(&c, 2, machine(AGENT, "b", "m1", "", "", &[])).await;
    let all = computers(&c).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["identified_by"], "machine_id");
}

#[tokio::test]
async fn machines_sharing_a_placeholder_serial_stay_two() {
    let c = TestCollector::start();
    let zero = "00000000-0000-0000-0000-000000000000";
    let mut first = machine(AGENT, "pc-1", "m1", "Default string", zero, &[]);
    let mut second = machine(OTHER_AGENT, "pc-2", "m2", "Default string", zero, &[]);
    // Both NICs are locally administered: no MAC identifies them either.
    first.network_interfaces[0].mac = Some("02:00:00:00:00:01".into());
    second.network_interfaces[0].mac = Some("02:00:00:00:00:01".into());
    send_inventory(&c, 1, first).await;
    send_inventory(&c, 1, second).await;
    let all = computers(&c).await;
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all.iter().all(|ci| ci["identified_by"] == "new"));
}

#[tokio::test]
async fn a_cloned_vm_becomes_its_own_ci() {
    let c = TestCollector::start();
    send_inventory(&c, 1, machine(AGENT, "tmpl", "m1", "VMware-1", UUID_A, &[])).await;
    // Cloned: same machine-id and name, a new UUID and serial.
    send_inventory(
        &c,
        1,
        machine(OTHER_AGENT, "tmpl", "m1", "VMware-2", UUID_B, &[]),
    )
    .await;
    let all = computers(&c).await;
    assert_eq!(all.len(), 2, "{all:?}");
    // Each reports again and stays on its own CI.
    send_inventory(
        &c,
        2,
        machine(
            AGENT,
            "tmpl",
            "m1",
            "VMware-1",
            UUID_A,
            &[package("a", "1")],
        ),
    )
    .await;
    send_inventory(
        &c,
        2,
        machine(
            OTHER_AGENT,
            "tmpl",
            "m1",
            "VMware-2",
            UUID_B,
            &[package("b", "1")],
        ),
    )
    .await;
    let all = computers(&c).await;
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|ci| ci["identified_by"] == "serial_uuid"));
}

#[tokio::test]
async fn configured_placeholders_identify_nothing() {
    let c = TestCollector::start_with(tempfile::tempdir().unwrap(), |config| {
        config.placeholder_serials = vec!["LAB-IMAGE".into()];
        config.placeholder_uuids = vec![UUID_A.to_uppercase()];
    });
    // Same serial and UUID, both listed as placeholders, different machine-ids: two machines.
    send_inventory(
        &c,
        1,
        machine(AGENT, "lab-1", "m1", "lab-image", UUID_A, &[]),
    )
    .await;
    send_inventory(
        &c,
        1,
        machine(OTHER_AGENT, "lab-2", "m2", "LAB-IMAGE", UUID_A, &[]),
    )
    .await;
    assert_eq!(computers(&c).await.len(), 2);
}

async fn post_import(c: &TestCollector, body: &[u8], content_type: &str) -> (StatusCode, Value) {
    let response = c
        .client
        .post(c.url("/api/v1/import"))
        .bearer_auth(&c.admin_token)
        .header("content-type", content_type)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let location = response.headers().get("location").cloned();
    let mut value: Value = response.json().await.unwrap();
    if let Some(location) = location {
        value["location"] = json!(location.to_str().unwrap());
    }
    (status, value)
}

/// Every table a refused import must leave alone.
async fn snapshot(c: &TestCollector) -> Value {
    json!({
        "cis": c.get_ok("/api/v1/cis?limit=1000").await,
        "changes": c.get_ok("/api/v1/changes?limit=1000").await,
    })
}

#[tokio::test]
async fn import_runs_an_inventory_through_the_agents_path() {
    let c = TestCollector::start();
    // As `census-agent inventory` writes it.
    let printer = machine(
        AGENT_C,
        "printer-7",
        "m7",
        "PRN-77",
        UUID_B,
        &[package("cups", "2.4")],
    );
    let text = serde_json::to_vec_pretty(&printer).unwrap();
    let (status, created) = post_import(&c, &text, "application/json").await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["created"], true);
    assert_eq!(created["identified_by"], "new");
    let id = created["ci_id"].as_i64().unwrap();
    assert_eq!(created["location"], format!("/api/v1/cis/{id}"));

    let mut later = printer.clone();
    later.software = vec![package("cups", "2.4.2")];
    let (status, updated) =
        post_import(&c, &serde_json::to_vec(&later).unwrap(), "application/json").await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(
        updated,
        json!({ "ci_id": id, "created": false, "identified_by": "serial_uuid" })
    );
    let rows = history(&c, id, "?kind=software_upgraded").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["source"], "import:test-admin");
    let software = c.get_ok(&format!("/api/v1/cis/{id}/software")).await;
    assert_eq!(software["items"][0]["version"], "2.4.2");
    // gzip, like an agent's batch.
    let (status, _) = {
        let response = c
            .client
            .post(c.url("/api/v1/import"))
            .bearer_auth(&c.admin_token)
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(gzip(&serde_json::to_vec(&later).unwrap()))
            .send()
            .await
            .unwrap();
        (response.status(), ())
    };
    assert_eq!(status, StatusCode::OK);

    // Refusals change nothing.
    let before = snapshot(&c).await;
    let mut future = later.clone();
    future.collected_at = OffsetDateTime::now_utc() + time::Duration::days(30);
    let mut schema_two = serde_json::to_value(&later).unwrap();
    schema_two["schema"] = json!(2);
    let mut no_id = serde_json::to_value(&later).unwrap();
    no_id["agent_id"] = json!(" ");
    let cases: Vec<(Vec<u8>, &str, StatusCode, &str)> = vec![
        (
            b"{".to_vec(),
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            br#"{"schema": 1}"#.to_vec(),
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            serde_json::to_vec(&schema_two).unwrap(),
            "application/json",
            StatusCode::BAD_REQUEST,
            "unsupported_protocol",
        ),
        (
            serde_json::to_vec(&no_id).unwrap(),
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            serde_json::to_vec(&future).unwrap(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "value_out_of_range",
        ),
        (
            text.clone(),
            "application/msgpack",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            format!("{}1{}", "[".repeat(200), "]".repeat(200)).into_bytes(),
            "application/json",
            StatusCode::BAD_REQUEST,
            "nesting_too_deep",
        ),
    ];
    for (body, content_type, status, code) in cases {
        let (got, answer) = post_import(&c, &body, content_type).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{answer}"
        );
        assert!(!answer["error"]["message"].as_str().unwrap().is_empty());
    }
    assert_eq!(snapshot(&c).await, before);
    // A viewer may not import.
    let (status, answer) = c
        .send_as(
            None,
            reqwest::Method::POST,
            "/api/v1/import",
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
}

#[tokio::test]
async fn an_import_over_an_agents_computer_asks_the_agent_for_its_inventory() {
    let c = TestCollector::start();
    let inv = machine(
        AGENT,
        "web-1",
        "m1",
        "CZ1",
        UUID_A,
        &[package("bash", "5.1")],
    );
    send_inventory(&c, 1, inv.clone()).await;
    let ack = c
        .ingest(&batch(
            AGENT,
            vec![health_report(AGENT, 2, OffsetDateTime::now_utc(), 1.0)],
        ))
        .await;
    assert_eq!(ack["send_inventory"], false);
    let mut imported = inv.clone();
    imported.software = vec![];
    let (status, answer) = post_import(
        &c,
        &serde_json::to_vec(&imported).unwrap(),
        "application/json",
    )
    .await;
    assert_eq!(
        (status, &answer["identified_by"]),
        (StatusCode::OK, &json!("serial_uuid"))
    );
    let ack = c
        .ingest(&batch(
            AGENT,
            vec![health_report(AGENT, 3, OffsetDateTime::now_utc(), 1.0)],
        ))
        .await;
    assert_eq!(ack["send_inventory"], true);
    // The agent's unchanged inventory is applied in full again, not skipped as unchanged.
    send_inventory(&c, 4, inv).await;
    let id = answer["ci_id"].as_i64().unwrap();
    let software = c.get_ok(&format!("/api/v1/cis/{id}/software")).await;
    assert_eq!(software["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn history_records_every_change_and_time_travel_rebuilds_the_past() {
    let start = OffsetDateTime::now_utc() - time::Duration::days(10);
    let clock = Arc::new(ManualClock::new(start));
    let c = TestCollector::start_with_clock(tempfile::tempdir().unwrap(), clock.clone(), |_| {});
    let at = |inv: &mut Inventory| inv.collected_at = clock_now(&clock);

    let mut inv = machine(
        AGENT,
        "db-1",
        "m1",
        "CZ9",
        UUID_A,
        &[
            package("openssl", "3.0.11-1~deb12u2"),
            package("curl", "7.88"),
            package("vim", "9.0"),
        ],
    );
    inv.filesystems = inventory(AGENT, "db-1", &[], &["/", "/srv"], &[]).filesystems;
    at(&mut inv);
    send_inventory(&c, 1, inv.clone()).await;
    let id = computers(&c).await[0]["id"].as_i64().unwrap();
    let day1 = clock_now(&clock);

    clock.advance(time::Duration::days(1));
    // openssl upgraded, curl downgraded, vim removed, jq added, /srv gone, /data new, the OS
    // updated.
    inv.software = vec![
        package("openssl", "3.0.13-1~deb12u1"),
        package("curl", "7.74"),
        package("jq", "1.6"),
    ];
    inv.filesystems = inventory(AGENT, "db-1", &[], &["/", "/data"], &[]).filesystems;
    inv.os.version = Some("12.5".into());
    at(&mut inv);
    send_inventory(&c, 2, inv.clone()).await;
    let day2 = clock_now(&clock);

    clock.advance(time::Duration::days(1));
    inv.host.hostname = Some("db-01".into());
    at(&mut inv);
    send_inventory(&c, 3, inv.clone()).await;

    let rows = history(&c, id, "").await;
    let source = format!("agent:{AGENT}");
    assert!(rows.iter().all(|r| r["source"] == source), "{rows:?}");
    // Newest first.
    let ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    let find = |kind: &str, field: &str| -> Value {
        rows.iter()
            .find(|r| r["kind"] == kind && r["field"] == field)
            .unwrap_or_else(|| panic!("no {kind} {field} in {rows:?}"))
            .clone()
    };
    assert_eq!(
        find("software_upgraded", "openssl")["new"]["version"],
        "3.0.13-1~deb12u1"
    );
    assert_eq!(
        find("software_downgraded", "curl")["old"]["version"],
        "7.88"
    );
    assert_eq!(find("software_removed", "vim")["old"]["version"], "9.0");
    assert_eq!(find("software_added", "jq")["new"]["version"], "1.6");
    assert_eq!(
        find("part_removed", "filesystem:/srv")["old"]["key"],
        "/srv"
    );
    assert_eq!(
        find("part_added", "filesystem:/data")["new"]["key"],
        "/data"
    );
    assert_eq!(find("attribute_changed", "os_version")["old"], "12");
    let renamed = rows.iter().find(|r| r["kind"] == "renamed").unwrap();
    assert_eq!(
        (&renamed["field"], &renamed["new"]),
        (&Value::Null, &json!("db-01"))
    );

    // Filters: kind (several), time range, paging.
    let software = history(&c, id, "?kind=software_added,software_removed").await;
    // Newest first: vim went after jq came (rows are written in package name order).
    assert_eq!(kinds(&software), vec!["software_removed", "software_added"]);
    let day2_only = history(
        &c,
        id,
        &format!("?from={}&to={}", rfc3339(day2), rfc3339(day2)),
    )
    .await;
    assert!(!day2_only.is_empty());
    assert!(day2_only.iter().all(|r| r["at"] == rfc3339(day2)));
    let mut paged = Vec::new();
    let mut path = format!("/api/v1/cis/{id}/history?limit=3");
    loop {
        let page = c.get_ok(&path).await;
        paged.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => path = format!("/api/v1/cis/{id}/history?limit=3&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(paged, rows);

    // The CI as it was on day 1: its first name, OS version and filesystems.
    let then = c
        .get_ok(&format!("/api/v1/cis/{id}?at={}", rfc3339(day1)))
        .await;
    assert_eq!(then["name"], "db-1");
    assert_eq!(then["attributes"]["os_version"], "12");
    assert_eq!(then["health"], Value::Null);
    let parts: Vec<&str> = then["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["target_name"].as_str().unwrap())
        .collect();
    // The other ends' names as they are now: "/" was renamed with its computer, the retired
    // "/srv" was not.
    assert_eq!(parts, vec!["db-01:/", "db-1:/srv", "db-01:eno1"]);
    let now = c.get_ok(&format!("/api/v1/cis/{id}")).await;
    assert_eq!(now["name"], "db-01");
    assert_eq!(now["attributes"]["os_version"], "12.5");
    // Between day 2 and day 3: the new OS, the old name.
    let between = c
        .get_ok(&format!(
            "/api/v1/cis/{id}?at={}",
            rfc3339(day2 + time::Duration::hours(1))
        ))
        .await;
    assert_eq!(
        (&between["name"], &between["attributes"]["os_version"]),
        (&json!("db-1"), &json!("12.5"))
    );

    let software_then = c
        .get_ok(&format!("/api/v1/cis/{id}/software?at={}", rfc3339(day1)))
        .await;
    let versions: Vec<(String, String)> = software_then["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        vec![
            ("curl".to_owned(), "7.88".to_owned()),
            ("openssl".to_owned(), "3.0.11-1~deb12u2".to_owned()),
            ("vim".to_owned(), "9.0".to_owned()),
        ]
    );
    // Paged the same way as the current list.
    let first = c
        .get_ok(&format!(
            "/api/v1/cis/{id}/software?at={}&limit=2",
            rfc3339(day1)
        ))
        .await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let next = first["next_cursor"].as_str().unwrap();
    let second = c
        .get_ok(&format!(
            "/api/v1/cis/{id}/software?at={}&limit=2&cursor={next}",
            rfc3339(day1)
        ))
        .await;
    assert_eq!(second["items"][0]["name"], "vim");

    // Before the CI existed, and a time that is not one.
    let (status, body) = c
        .get(&format!(
            "/api/v1/cis/{id}?at={}",
            rfc3339(start - time::Duration::days(1))
        ))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, body) = c
        .get(&format!(
            "/api/v1/cis/{id}/software?at={}",
            rfc3339(start - time::Duration::days(1))
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    for bad in [
        format!("/api/v1/cis/{id}?at=yesterday"),
        format!("/api/v1/cis/{id}/history?kind=exploded"),
        format!(
            "/api/v1/cis/{id}/history?from={}&to={}",
            rfc3339(day2),
            rfc3339(day1)
        ),
        format!("/api/v1/cis/{id}/history?cursor=nope"),
    ] {
        let (status, body) = c.get(&bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (status, _) = c.get("/api/v1/cis/999/history").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

fn clock_now(clock: &ManualClock) -> OffsetDateTime {
    use census_collector::clock::Clock;
    // Whole milliseconds: the resolution of stored times.
    let now = clock.now();
    now.replace_nanosecond(now.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap()
}

#[tokio::test]
async fn the_change_feed_hands_out_every_change_once_in_commit_order() {
    let c = TestCollector::start();
    let empty = c.get_ok("/api/v1/changes").await;
    assert_eq!(empty["items"], json!([]));
    let mut cursor = empty["next_cursor"].as_str().unwrap().to_owned();

    send_inventory(
        &c,
        1,
        machine(AGENT, "a", "m1", "S1", UUID_A, &[package("x", "1")]),
    )
    .await;
    send_inventory(&c, 1, machine(OTHER_AGENT, "b", "m2", "S2", UUID_B, &[])).await;
    let mut seen = Vec::new();
    // Poll in small pages while more changes are committed in between.
    for round in 0..20u64 {
        let page = c
            .get_ok(&format!("/api/v1/changes?since={cursor}&limit=2"))
            .await;
        let items = page["items"].as_array().unwrap().clone();
        cursor = page["next_cursor"].as_str().unwrap().to_owned();
        seen.extend(items.iter().map(|i| i["id"].as_i64().unwrap()));
        if round == 1 {
            send_inventory(
                &c,
                2,
                machine(AGENT, "a2", "m1", "S1", UUID_A, &[package("x", "2")]),
            )
            .await;
        }
        if items.is_empty() && round > 2 {
            break;
        }
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    let all = c.get_ok("/api/v1/changes?limit=1000").await;
    let every: Vec<i64> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(seen, every);
    assert!(
        all["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["kind"] == "software_upgraded")
    );
    // The cursor after the last change stays put until something new is committed.
    let again = c.get_ok(&format!("/api/v1/changes?since={cursor}")).await;
    assert_eq!(
        (again["items"].clone(), again["next_cursor"].as_str()),
        (json!([]), Some(cursor.as_str()))
    );
    let (status, body) = c.get("/api/v1/changes?since=garbage").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_cursor"))
    );
}

#[tokio::test]
async fn a_retired_computer_that_reports_again_comes_back_active() {
    let c = TestCollector::start();
    send_inventory(&c, 1, machine(AGENT, "old-pc", "m1", "CZ5", UUID_A, &[])).await;
    let id = computers(&c).await[0]["id"].as_i64().unwrap();
    let (status, body) = c
        .patch_json(
            &format!("/api/v1/cis/{id}"),
            &json!({ "status": "retired" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        computers(&c).await.is_empty(),
        "retired CIs are hidden from lists"
    );
    let retired = c.get_ok("/api/v1/cis?class=computer&status=retired").await;
    assert_eq!(retired["items"][0]["id"], id);

    c.ingest(&batch(
        AGENT,
        vec![health_report(AGENT, 2, OffsetDateTime::now_utc(), 3.0)],
    ))
    .await;
    let ci = c.get_ok(&format!("/api/v1/cis/{id}")).await;
    assert_eq!(ci["status"], "active");
    let rows = history(&c, id, "?kind=status_changed").await;
    let summary: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["old"].as_str().unwrap(),
                r["new"].as_str().unwrap(),
                r["source"].as_str().unwrap(),
            )
        })
        .collect();
    let agent_source = format!("agent:{AGENT}");
    assert_eq!(
        summary,
        vec![
            ("retired", "active", agent_source.as_str()),
            ("active", "retired", "api:test-admin"),
        ]
    );
}
