//! An admin's CMDB writes over HTTP: creating, changing and deleting CIs, relationships, the
//! impact and dependency walks, and computers going stale. Every refusal is checked for its
//! status, code and message, and against a full dump of the database taken before it.

use std::sync::Arc;

use census_collector::clock::ManualClock;
use census_collector::store::{Store, StoreOptions};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::support::*;

/// A collector with one computer an agent reported (`web-1`, a filesystem `/` and an
/// interface `eth0`), whose background task runs only at start.
async fn seeded() -> TestCollector {
    let c = TestCollector::start_with(tempfile::tempdir().unwrap(), |config| {
        config.compaction_interval = "1d".parse().unwrap();
    });
    let inv = inventory(AGENT, "web-1", &[], &["/"], &["eth0"]);
    c.ingest(&batch(AGENT, vec![inventory_report(1, inv)]))
        .await;
    c
}

/// The ids of the agent's computer and of its `/` filesystem.
async fn discovered(c: &TestCollector) -> (i64, i64) {
    let list = c.get_ok("/api/v1/cis?class=computer&hostname=web-1").await;
    let computer = list["items"][0]["id"].as_i64().unwrap();
    let list = c.get_ok("/api/v1/cis?class=filesystem").await;
    let disk = list["items"][0]["id"].as_i64().unwrap();
    (computer, disk)
}

fn database(c: &TestCollector) -> std::path::PathBuf {
    c.data_dir().join("census.db")
}

/// The CI's history rows, oldest first, as `{kind, field, old, new, source}`.
fn history(c: &TestCollector, ci: i64) -> Vec<Value> {
    let conn = rusqlite::Connection::open_with_flags(
        database(c),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = conn
        .prepare("SELECT kind, field, old, new, source FROM history WHERE ci_id = ?1 ORDER BY id")
        .unwrap();
    let json =
        |text: Option<String>| text.map_or(Value::Null, |t| serde_json::from_str(&t).unwrap());
    stmt.query_map([ci], |r| {
        Ok(json!({
            "kind": r.get::<_, String>(0)?,
            "field": r.get::<_, Option<String>>(1)?,
            "old": json(r.get(2)?),
            "new": json(r.get(3)?),
            "source": r.get::<_, String>(4)?,
        }))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// POSTs a CI that must be created; answers its id.
async fn create_ci(c: &TestCollector, body: Value) -> i64 {
    let (status, ci) = c.post_json("/api/v1/cis", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}: {ci}");
    ci["id"].as_i64().unwrap()
}

/// POSTs "source `kind` target", which must be made; answers the relationship.
async fn relate(c: &TestCollector, source: i64, kind: &str, target: i64) -> Value {
    let body = json!({ "source": source, "type": kind, "target": target });
    let (status, rel) = c.post_json("/api/v1/relationships", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}: {rel}");
    rel
}

#[tokio::test]
async fn an_admin_creates_a_ci_no_agent_reports() {
    let c = seeded().await;
    let body = json!({
        "class": "business_service",
        "name": "Payroll",
        "criticality": 1,
        "attributes": { "owner": "finance", "hours": { "start": 8, "end": 18 } },
    });
    let response = c
        .client
        .post(c.url("/api/v1/cis"))
        .bearer_auth(&c.admin_token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_i64().unwrap();
    assert_eq!(location, format!("/api/v1/cis/{id}"));
    // The same view as GET.
    assert_eq!(c.get_ok(&location).await, created);
    assert_eq!(created["class"], "business_service");
    assert_eq!(created["name"], "Payroll");
    assert_eq!(created["status"], "active");
    assert_eq!(created["criticality"], 1);
    assert_eq!(created["attributes"], body["attributes"]);
    assert_eq!(created["identified_by"], Value::Null);
    assert_eq!(created["health"], Value::Null);
    assert_eq!(created["relationships"], json!([]));
    assert_eq!(created["first_seen"], created["last_seen"]);
    assert_eq!(
        history(&c, id),
        vec![json!({
            "kind": "created", "field": null, "old": null,
            "new": { "class": "business_service", "name": "Payroll" },
            "source": "api:test-admin",
        })]
    );

    // Defaults: criticality 3, no attributes; null counts as left out. A computer no agent
    // runs on may be created too.
    let printer = create_ci(
        &c,
        json!({ "class": "computer", "name": "printer-3", "criticality": null }),
    )
    .await;
    let printer = c.get_ok(&format!("/api/v1/cis/{printer}")).await;
    assert_eq!(printer["criticality"], 3);
    assert_eq!(printer["attributes"], json!({}));
    let listed = c.get_ok("/api/v1/cis?class=computer").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    // A name of 255 characters, not bytes.
    create_ci(
        &c,
        json!({ "class": "application", "name": "\u{e9}".repeat(255) }),
    )
    .await;
}

#[tokio::test]
async fn a_ci_with_bad_fields_is_refused_and_nothing_is_stored() {
    let c = seeded().await;
    let big = "x".repeat(70_000);
    let cases: Vec<(Value, &str)> = vec![
        (json!({ "name": "Payroll" }), "class is required"),
        (
            json!({ "class": 7, "name": "Payroll" }),
            "class must be a string",
        ),
        (
            json!({ "class": "Business Service", "name": "Payroll" }),
            "class must be 1 to 64 lowercase letters, digits and underscores",
        ),
        (
            json!({ "class": "a".repeat(65), "name": "x" }),
            "class must be 1 to 64",
        ),
        (
            json!({ "class": "filesystem", "name": "/data" }),
            "class filesystem is a part of a computer",
        ),
        (
            json!({ "class": "network_interface", "name": "eth9" }),
            "class network_interface is a part of a computer",
        ),
        (json!({ "class": "application" }), "name is required"),
        (
            json!({ "class": "application", "name": "" }),
            "name must be 1 to 255 characters, not 0",
        ),
        (
            json!({ "class": "application", "name": "x".repeat(256) }),
            "name must be 1 to 255 characters, not 256",
        ),
        (
            json!({ "class": "application", "name": "a\u{7}b" }),
            "name must not contain control characters",
        ),
        (
            json!({ "class": "application", "name": "x", "criticality": 0 }),
            "criticality must be an integer from 1 (highest) to 4, not 0",
        ),
        (
            json!({ "class": "application", "name": "x", "criticality": 5 }),
            "criticality must be an integer from 1 (highest) to 4, not 5",
        ),
        (
            json!({ "class": "application", "name": "x", "criticality": "high" }),
            "criticality must be an integer from 1 (highest) to 4, not \"high\"",
        ),
        (
            json!({ "class": "application", "name": "x", "criticality": 2.5 }),
            "criticality must be an integer from 1 (highest) to 4, not 2.5",
        ),
        (
            json!({ "class": "application", "name": "x", "attributes": [1] }),
            "attributes must be a JSON object",
        ),
        (
            json!({ "class": "application", "name": "x", "attributes": { "k": big } }),
            "attributes must be at most 65536 bytes of JSON",
        ),
        (
            json!({ "class": "application", "name": "x", "attributes": { "": 1 } }),
            "attributes: a key must be 1 to 128 characters",
        ),
        (
            json!({ "class": "application", "name": "x", "status": "retired" }),
            "unknown field \"status\"; this route takes class, name, criticality, attributes",
        ),
    ];
    for (body, expected) in cases {
        let message = refused(
            &c,
            Method::POST,
            "/api/v1/cis",
            Some(&body),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
        assert!(message.starts_with(expected), "{body}: {message}");
    }
    let message = refused(
        &c,
        Method::POST,
        "/api/v1/cis",
        Some(&json!(["business_service", "Payroll"])),
        StatusCode::BAD_REQUEST,
        "invalid_body",
    )
    .await;
    assert_eq!(message, "the body must be a JSON object");

    let before = dump(&database(&c));
    let response = c
        .client
        .post(c.url("/api/v1/cis"))
        .bearer_auth(&c.admin_token)
        .header("content-type", "application/json")
        .body("{\"class\": ")
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_body");
    let response = c
        .client
        .post(c.url("/api/v1/cis"))
        .bearer_auth(&c.admin_token)
        .body("{\"class\": \"application\", \"name\": \"x\"}")
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_error(
        status,
        &body,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    assert_eq!(dump(&database(&c)), before);

    // Writing needs the admin role; reading the walks does not.
    let viewer = cli(
        &c,
        &["token", "create", "--role", "viewer", "--name", "grafana"],
    );
    let operator = cli(
        &c,
        &["token", "create", "--role", "operator", "--name", "oncall"],
    );
    let before_tokens = dump(&database(&c));
    for token in [&viewer, &operator] {
        for (method, path, body) in [
            (
                Method::POST,
                "/api/v1/cis",
                Some(json!({ "class": "application", "name": "x" })),
            ),
            (
                Method::PATCH,
                "/api/v1/cis/1",
                Some(json!({ "criticality": 1 })),
            ),
            (Method::DELETE, "/api/v1/cis/1", None),
            (
                Method::POST,
                "/api/v1/relationships",
                Some(json!({ "source": 1, "type": "depends_on", "target": 2 })),
            ),
            (Method::PATCH, "/api/v1/relationships/1", Some(json!({}))),
            (Method::DELETE, "/api/v1/relationships/1", None),
        ] {
            let (status, answer) = c
                .send_as(Some(token), method.clone(), path, body.as_ref())
                .await;
            let message = assert_error(status, &answer, StatusCode::FORBIDDEN, "forbidden");
            assert!(message.contains("admin role"), "{method} {path}: {message}");
        }
        for path in [
            "/api/v1/cis/1/impact",
            "/api/v1/cis/1/dependencies",
            "/api/v1/relationships",
            "/api/v1/relationships/1",
        ] {
            let (status, answer) = c.get_as(Some(token), path).await;
            assert_ne!(status, StatusCode::FORBIDDEN, "{path}: {answer}");
            assert_ne!(status, StatusCode::UNAUTHORIZED, "{path}: {answer}");
        }
    }
    let (status, answer) = c
        .send_as(
            None,
            Method::POST,
            "/api/v1/cis",
            Some(&json!({ "class": "application", "name": "x" })),
        )
        .await;
    assert_error(status, &answer, StatusCode::UNAUTHORIZED, "token_invalid");
    assert_eq!(dump(&database(&c)), before_tokens);
    // Nothing of all that was stored: the only CIs are the agent's.
    assert_eq!(
        c.get_ok("/api/v1/cis").await["items"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test]
async fn a_patch_changes_fields_and_records_each_change() {
    let c = seeded().await;
    let id = create_ci(
        &c,
        json!({
            "class": "application", "name": "payroll-app", "criticality": 3,
            "attributes": { "owner": "finance", "port": 8080, "tier": "web" },
        }),
    )
    .await;
    let path = format!("/api/v1/cis/{id}");
    let (status, changed) = c
        .patch_json(
            &path,
            &json!({
                "name": "payroll", "criticality": 2, "status": "retired",
                "attributes": { "owner": "hr", "port": null, "url": "https://payroll" },
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(c.get_ok(&path).await, changed);
    assert_eq!(changed["name"], "payroll");
    assert_eq!(changed["criticality"], 2);
    assert_eq!(changed["status"], "retired");
    assert_eq!(
        changed["attributes"],
        json!({ "owner": "hr", "tier": "web", "url": "https://payroll" })
    );
    let api = "api:test-admin";
    assert_eq!(
        history(&c, id)[1..],
        [
            json!({ "kind": "renamed", "field": null, "old": "payroll-app", "new": "payroll",
                    "source": api }),
            json!({ "kind": "criticality_changed", "field": null, "old": 3, "new": 2,
                    "source": api }),
            json!({ "kind": "status_changed", "field": null, "old": "active", "new": "retired",
                    "source": api }),
            json!({ "kind": "attribute_changed", "field": "owner", "old": "finance",
                    "new": "hr", "source": api }),
            json!({ "kind": "attribute_changed", "field": "port", "old": 8080, "new": null,
                    "source": api }),
            json!({ "kind": "attribute_changed", "field": "url", "old": null,
                    "new": "https://payroll", "source": api }),
        ]
    );

    // An empty patch, or one that sends back what is stored, changes nothing and records
    // nothing.
    let before = dump(&database(&c));
    for noop in [
        json!({}),
        json!({ "name": "payroll", "criticality": 2, "status": "retired" }),
        json!({ "attributes": { "owner": "hr", "gone": null } }),
    ] {
        let (status, same) = c.patch_json(&path, &noop).await;
        assert_eq!(status, StatusCode::OK, "{noop}: {same}");
        assert_eq!(same, changed);
        assert_eq!(dump(&database(&c)), before, "{noop} changed something");
    }
    // Back to active.
    let (status, active) = c.patch_json(&path, &json!({ "status": "active" })).await;
    assert_eq!(
        (status, &active["status"]),
        (StatusCode::OK, &json!("active"))
    );
    assert_eq!(history(&c, id).len(), 8);
}

#[tokio::test]
async fn a_patch_with_bad_fields_or_to_what_an_inventory_owns_is_refused() {
    let c = seeded().await;
    let (computer, disk) = discovered(&c).await;
    let app = create_ci(&c, json!({ "class": "application", "name": "app" })).await;
    let path = format!("/api/v1/cis/{app}");
    for (body, expected) in [
        (
            json!({ "status": "stale" }),
            "status stale is set only by the collector",
        ),
        (
            json!({ "status": "gone" }),
            "status must be one of active, retired, not \"gone\"",
        ),
        (
            json!({ "name": null }),
            "name cannot be null; leave it out to keep it as it is",
        ),
        (json!({ "criticality": null }), "criticality cannot be null"),
        (json!({ "status": null }), "status cannot be null"),
        (json!({ "attributes": null }), "attributes cannot be null"),
        (
            json!({ "attributes": "x" }),
            "attributes must be a JSON object",
        ),
        (json!({ "name": "" }), "name must be 1 to 255 characters"),
        (json!({ "name": 5 }), "name must be a string"),
        (
            json!({ "criticality": 9 }),
            "criticality must be an integer from 1 (highest) to 4, not 9",
        ),
        (
            json!({ "class": "database" }),
            "unknown field \"class\"; this route takes name, criticality, status, attributes",
        ),
        // One bad field refuses the whole patch.
        (
            json!({ "name": "fine", "criticality": 0 }),
            "criticality must be an integer from 1 (highest) to 4, not 0",
        ),
        (
            json!({ "attributes": { "k": "x".repeat(70_000) } }),
            "attributes must be at most 65536 bytes of JSON",
        ),
    ] {
        let message = refused(
            &c,
            Method::PATCH,
            &path,
            Some(&body),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
        assert!(message.starts_with(expected), "{body}: {message}");
    }
    let message = refused(
        &c,
        Method::PATCH,
        "/api/v1/cis/999999",
        Some(&json!({ "criticality": 1 })),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(message, "there is no CI with id 999999");
    let message = refused(
        &c,
        Method::PATCH,
        "/api/v1/cis/abc",
        Some(&json!({ "criticality": 1 })),
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    assert_eq!(message, "CI id must be a positive integer, not \"abc\"");

    // The agent's computer and its part: the inventory sets name and attributes.
    for (id, body, what) in [
        (computer, json!({ "name": "renamed" }), "its name;"),
        (
            computer,
            json!({ "attributes": { "hostname": "other" } }),
            "its attributes;",
        ),
        (
            computer,
            json!({ "name": "renamed", "attributes": { "rack": "r1" }, "criticality": 1 }),
            "its name and attributes;",
        ),
        (disk, json!({ "name": "web-1:/data" }), "its name;"),
    ] {
        let message = refused(
            &c,
            Method::PATCH,
            &format!("/api/v1/cis/{id}"),
            Some(&body),
            StatusCode::CONFLICT,
            "conflict",
        )
        .await;
        assert!(
            message.contains("was discovered from an inventory, which sets")
                && message.contains(what),
            "{message}"
        );
        assert!(
            message.ends_with("only its criticality and status can be changed"),
            "{message}"
        );
    }
    // Its criticality and status may change; its own name and attributes sent back are no change.
    let current = c.get_ok(&format!("/api/v1/cis/{computer}")).await;
    let before = history(&c, computer).len();
    let (status, changed) = c
        .patch_json(
            &format!("/api/v1/cis/{computer}"),
            &json!({
                "name": current["name"], "attributes": current["attributes"],
                "criticality": 1, "status": "retired",
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(
        (changed["criticality"].as_i64(), changed["status"].as_str()),
        (Some(1), Some("retired"))
    );
    assert_eq!(changed["name"], current["name"]);
    let rows = history(&c, computer);
    let kinds: Vec<&str> = rows[before..]
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["criticality_changed", "status_changed"]);
    let (status, part) = c
        .patch_json(&format!("/api/v1/cis/{disk}"), &json!({ "criticality": 2 }))
        .await;
    assert_eq!((status, &part["criticality"]), (StatusCode::OK, &json!(2)));
}

#[tokio::test]
async fn deleting_a_ci_ends_its_relationships_and_refuses_discovered_ones() {
    let c = seeded().await;
    let (computer, disk) = discovered(&c).await;
    let app = create_ci(&c, json!({ "class": "application", "name": "app" })).await;
    let service = create_ci(&c, json!({ "class": "business_service", "name": "svc" })).await;
    relate(&c, app, "runs_on", computer).await;
    relate(&c, service, "depends_on", app).await;

    for (id, name) in [
        (computer, "computer \"web-1\""),
        (disk, "filesystem \"web-1:/\""),
    ] {
        let message = refused(
            &c,
            Method::DELETE,
            &format!("/api/v1/cis/{id}"),
            None,
            StatusCode::CONFLICT,
            "conflict",
        )
        .await;
        assert_eq!(
            message,
            format!(
                "CI {id} ({name}) was discovered from an inventory, which would bring it back; \
                 retire it instead: PATCH /api/v1/cis/{id} {{\"status\": \"retired\"}}"
            )
        );
    }
    refused(
        &c,
        Method::DELETE,
        "/api/v1/cis/999999",
        None,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    refused(
        &c,
        Method::DELETE,
        "/api/v1/cis/0",
        None,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;

    let (status, body) = c.delete(&format!("/api/v1/cis/{app}")).await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    let (status, body) = c.get(&format!("/api/v1/cis/{app}")).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let left = c.get_ok(&format!("/api/v1/relationships?ci={app}")).await;
    assert_eq!(left["items"], json!([]));
    // The computer keeps only its agent's relationships; the service has none.
    let rels = c.get_ok(&format!("/api/v1/cis/{computer}")).await["relationships"].clone();
    assert!(
        rels.as_array()
            .unwrap()
            .iter()
            .all(|r| r["type"] == "contains"),
        "{rels}"
    );
    let ended = |kind: &str, source: i64, target: i64| {
        json!({
            "kind": "relationship_removed", "field": kind,
            "old": { "type": kind, "source": source, "target": target },
            "new": null, "source": "api:test-admin",
        })
    };
    assert_eq!(
        history(&c, computer).last().unwrap(),
        &ended("runs_on", app, computer)
    );
    assert_eq!(
        history(&c, service).last().unwrap(),
        &ended("depends_on", service, app)
    );
    let gone = history(&c, app);
    assert_eq!(
        gone[gone.len() - 3..],
        [
            ended("runs_on", app, computer),
            ended("depends_on", service, app),
            json!({
                "kind": "deleted", "field": null,
                "old": { "class": "application", "name": "app" },
                "new": null, "source": "api:test-admin",
            }),
        ]
    );
    // Deleting it again: it is gone.
    let (status, body) = c.delete(&format!("/api/v1/cis/{app}")).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn relationships_are_made_listed_changed_and_ended() {
    let c = seeded().await;
    let (computer, _disk) = discovered(&c).await;
    let app = create_ci(&c, json!({ "class": "application", "name": "payroll-app" })).await;
    let db = create_ci(&c, json!({ "class": "database", "name": "payroll-db" })).await;

    let body = json!({
        "source": app, "type": "depends_on", "target": db,
        "description": "reads and writes salaries",
    });
    let response = c
        .client
        .post(c.url("/api/v1/relationships"))
        .bearer_auth(&c.admin_token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let made: Value = response.json().await.unwrap();
    let id = made["id"].as_i64().unwrap();
    assert_eq!(location, format!("/api/v1/relationships/{id}"));
    let created_at = made["created_at"].as_str().unwrap();
    OffsetDateTime::parse(created_at, &time::format_description::well_known::Rfc3339).unwrap();
    assert_eq!(
        made,
        json!({
            "id": id, "type": "depends_on",
            "source": app, "source_name": "payroll-app",
            "target": db, "target_name": "payroll-db",
            "description": "reads and writes salaries",
            "created_at": created_at, "created_by": "test-admin",
        })
    );
    assert_eq!(c.get_ok(&location).await, made);
    let added = json!({
        "kind": "relationship_added", "field": "depends_on", "old": null,
        "new": { "type": "depends_on", "source": app, "target": db },
        "source": "api:test-admin",
    });
    assert_eq!(history(&c, app).last().unwrap(), &added);
    assert_eq!(history(&c, db).last().unwrap(), &added);
    // Both CIs show it.
    let on_db = c.get_ok(&format!("/api/v1/cis/{db}")).await;
    assert_eq!(on_db["relationships"][0]["source"], app);

    let runs_on = relate(&c, app, "runs_on", computer).await;
    assert_eq!(runs_on["description"], Value::Null);
    let runs_on_id = runs_on["id"].as_i64().unwrap();

    let ids = |list: &Value| -> Vec<i64> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect()
    };
    let contains = c.get_ok("/api/v1/relationships?type=contains").await;
    assert_eq!(ids(&contains).len(), 2);
    assert!(
        contains["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["source"] == computer && r["created_by"].is_null())
    );
    for (query, expected) in [
        (format!("ci={app}"), vec![id, runs_on_id]),
        (format!("source={app}"), vec![id, runs_on_id]),
        (format!("target={db}"), vec![id]),
        (format!("ci={db}"), vec![id]),
        (format!("ci={app}&type=runs_on"), vec![runs_on_id]),
        (format!("source={db}"), vec![]),
        ("ci=999999".to_owned(), vec![]),
    ] {
        let list = c.get_ok(&format!("/api/v1/relationships?{query}")).await;
        assert_eq!(ids(&list), expected, "{query}");
    }
    // Keyset paging over everything.
    let mut seen = Vec::new();
    let mut path = "/api/v1/relationships?limit=1".to_owned();
    loop {
        let page = c.get_ok(&path).await;
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/relationships?limit=1&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    // As CSV.
    let (status, content_type, text) = c.get_csv(&format!("/api/v1/relationships?ci={db}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "text/csv; charset=utf-8");
    assert_eq!(
        text,
        format!(
            "id,type,source,source_name,target,target_name,description,created_at,created_by\r\n\
             {id},depends_on,{app},payroll-app,{db},payroll-db,reads and writes salaries,\
             {created_at},test-admin\r\n"
        )
    );

    // A new description is not history; a new type is an end and a make on both ends.
    let before = history(&c, app).len();
    let (status, described) = c
        .patch_json(&location, &json!({ "description": "salaries" }))
        .await;
    assert_eq!(
        (status, &described["description"]),
        (StatusCode::OK, &json!("salaries"))
    );
    assert_eq!(history(&c, app).len(), before);
    let (status, cleared) = c
        .patch_json(&location, &json!({ "description": null }))
        .await;
    assert_eq!(
        (status, &cleared["description"]),
        (StatusCode::OK, &Value::Null)
    );
    let (status, retyped) = c
        .patch_json(&location, &json!({ "type": "connects_to" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{retyped}");
    assert_eq!(
        (retyped["id"].as_i64(), &retyped["type"]),
        (Some(id), &json!("connects_to"))
    );
    assert_eq!(retyped["created_at"], made["created_at"]);
    let change = |kind: &str, rel: &str| {
        let value = json!({ "type": rel, "source": app, "target": db });
        let (old, new) = if kind == "relationship_added" {
            (Value::Null, value)
        } else {
            (value, Value::Null)
        };
        json!({ "kind": kind, "field": rel, "old": old, "new": new, "source": "api:test-admin" })
    };
    let expected = [
        change("relationship_removed", "depends_on"),
        change("relationship_added", "connects_to"),
    ];
    for ci in [app, db] {
        let rows = history(&c, ci);
        assert_eq!(rows[rows.len() - 2..], expected, "ci {ci}");
    }
    // A no-op patch records nothing.
    let before = dump(&database(&c));
    let (status, same) = c
        .patch_json(
            &location,
            &json!({ "type": "connects_to", "description": null }),
        )
        .await;
    assert_eq!((status, &same), (StatusCode::OK, &retyped));
    assert_eq!(dump(&database(&c)), before);

    let (status, body) = c.delete(&location).await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    let (status, body) = c.get(&location).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let ended = change("relationship_removed", "connects_to");
    assert_eq!(history(&c, app).last().unwrap(), &ended);
    assert_eq!(history(&c, db).last().unwrap(), &ended);
}

#[tokio::test]
async fn bad_relationships_are_refused_and_nothing_is_stored() {
    let c = seeded().await;
    let (computer, disk) = discovered(&c).await;
    let app = create_ci(&c, json!({ "class": "application", "name": "app" })).await;
    let db = create_ci(&c, json!({ "class": "database", "name": "db" })).await;
    let existing = relate(&c, app, "depends_on", db).await;
    let existing_id = existing["id"].as_i64().unwrap();
    let hosted = relate(&c, app, "hosted_on", computer).await;
    let hosted_id = hosted["id"].as_i64().unwrap();

    let long = "d".repeat(1001);
    let invalid: Vec<(Value, String)> = vec![
        (
            json!({ "type": "depends_on", "target": db }),
            "source is required: the id of a CI".to_owned(),
        ),
        (
            json!({ "source": "app", "type": "depends_on", "target": db }),
            "source must be the id of a CI (a positive integer), not \"app\"".to_owned(),
        ),
        (
            json!({ "source": 0, "type": "depends_on", "target": db }),
            "source must be the id of a CI (a positive integer), not 0".to_owned(),
        ),
        (
            json!({ "source": app, "type": "depends_on" }),
            "target is required: the id of a CI".to_owned(),
        ),
        (
            json!({ "source": app, "target": db }),
            "type is required".to_owned(),
        ),
        (
            json!({ "source": app, "type": "owns", "target": db }),
            "type must be one of contains, runs_on, depends_on, hosted_on, connects_to, \
             member_of, not \"owns\""
                .to_owned(),
        ),
        (
            json!({ "source": app, "type": "depends_on", "target": app }),
            format!(
                "target: a CI cannot have a relationship with itself (source and target are \
                 both {app})"
            ),
        ),
        (
            json!({ "source": 999999, "type": "depends_on", "target": db }),
            "source: there is no CI with id 999999".to_owned(),
        ),
        (
            json!({ "source": app, "type": "depends_on", "target": 999998 }),
            "target: there is no CI with id 999998".to_owned(),
        ),
        (
            json!({ "source": app, "type": "runs_on", "target": db, "description": long }),
            "description must be at most 1000 characters".to_owned(),
        ),
        (
            json!({ "source": app, "type": "runs_on", "target": db, "description": 3 }),
            "description must be a string or null".to_owned(),
        ),
        (
            json!({ "source": app, "type": "runs_on", "target": db, "weight": 3 }),
            "unknown field \"weight\"; this route takes source, type, target, description"
                .to_owned(),
        ),
    ];
    for (body, expected) in invalid {
        let message = refused(
            &c,
            Method::POST,
            "/api/v1/relationships",
            Some(&body),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
        assert_eq!(message, expected, "{body}");
    }
    let message = refused(
        &c,
        Method::POST,
        "/api/v1/relationships",
        Some(&json!({ "source": app, "type": "depends_on", "target": db })),
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert_eq!(
        message,
        format!("relationship {existing_id} already says CI {app} depends_on CI {db}")
    );
    // The agent's contains from its computer to its part.
    let owned = format!(
        "CI {disk} is a part of computer {computer}: the computer's inventory makes and ends \
         this contains relationship, not the API"
    );
    let message = refused(
        &c,
        Method::POST,
        "/api/v1/relationships",
        Some(&json!({ "source": computer, "type": "contains", "target": disk })),
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert_eq!(message, owned);
    let agents = c
        .get_ok(&format!(
            "/api/v1/relationships?source={computer}&target={disk}"
        ))
        .await;
    let agents_id = agents["items"][0]["id"].as_i64().unwrap();
    let agents_path = format!("/api/v1/relationships/{agents_id}");
    for (method, body) in [
        (Method::PATCH, Some(json!({ "description": "root disk" }))),
        (Method::PATCH, Some(json!({ "type": "depends_on" }))),
        (Method::DELETE, None),
    ] {
        let message = refused(
            &c,
            method.clone(),
            &agents_path,
            body.as_ref(),
            StatusCode::CONFLICT,
            "conflict",
        )
        .await;
        assert_eq!(message, owned, "{method} {body:?}");
    }
    // A new type that would duplicate another relationship.
    let linked = relate(&c, app, "connects_to", db).await;
    let linked_path = format!("/api/v1/relationships/{}", linked["id"]);
    let message = refused(
        &c,
        Method::PATCH,
        &linked_path,
        Some(&json!({ "type": "depends_on" })),
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert_eq!(
        message,
        format!("relationship {existing_id} already says CI {app} depends_on CI {db}")
    );
    // A new type that would be the agent's own contains.
    let (status, _) = c
        .patch_json(
            &format!("/api/v1/relationships/{hosted_id}"),
            &json!({ "type": "member_of" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for (body, expected) in [
        (
            json!({ "type": "owns" }),
            "type must be one of contains, runs_on, depends_on, hosted_on, connects_to, \
             member_of, not \"owns\"",
        ),
        (
            json!({ "type": null }),
            "type cannot be null; leave it out to keep it as it is",
        ),
        (
            json!({ "description": long }),
            "description must be at most 1000 characters",
        ),
        (
            json!({ "source": db }),
            "unknown field \"source\"; this route takes type, description",
        ),
    ] {
        let message = refused(
            &c,
            Method::PATCH,
            &linked_path,
            Some(&body),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
        assert_eq!(message, expected, "{body}");
    }
    for method in [Method::PATCH, Method::DELETE] {
        let body = (method == Method::PATCH).then(|| json!({ "description": "x" }));
        let message = refused(
            &c,
            method.clone(),
            "/api/v1/relationships/999999",
            body.as_ref(),
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
        assert_eq!(message, "there is no relationship with id 999999");
        let message = refused(
            &c,
            method,
            "/api/v1/relationships/-1",
            body.as_ref(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        )
        .await;
        assert_eq!(
            message,
            "relationship id must be a positive integer, not \"-1\""
        );
    }
    let (status, body) = c.get("/api/v1/relationships/999999").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    for (query, expected) in [
        (
            "type=owns",
            "type must be one of contains, runs_on, depends_on, hosted_on, connects_to, \
             member_of, not \"owns\"",
        ),
        (
            "ci=abc",
            "ci must be a CI id (a positive integer), not \"abc\"",
        ),
        (
            "source=0",
            "source must be a CI id (a positive integer), not \"0\"",
        ),
        (
            "target=1.5",
            "target must be a CI id (a positive integer), not \"1.5\"",
        ),
        (
            "limit=0",
            "limit must be an integer from 1 to 1000, not \"0\"",
        ),
        (
            "kind=runs_on",
            "unknown query parameter `kind`; allowed: ci, source, target, type, limit, cursor",
        ),
    ] {
        let (status, body) = c.get(&format!("/api/v1/relationships?{query}")).await;
        let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_filter");
        assert_eq!(message, expected, "{query}");
    }
    let (status, body) = c.get("/api/v1/relationships?cursor=nope").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_cursor");
}

#[tokio::test]
async fn impact_and_dependencies_walk_the_graph_over_http() {
    let c = seeded().await;
    let (computer, disk) = discovered(&c).await;
    let app = create_ci(&c, json!({ "class": "application", "name": "payroll-app" })).await;
    let service = create_ci(
        &c,
        json!({ "class": "business_service", "name": "Payroll", "criticality": 1 }),
    )
    .await;
    let old = create_ci(
        &c,
        json!({ "class": "business_service", "name": "Old payroll" }),
    )
    .await;
    relate(&c, app, "runs_on", computer).await;
    relate(&c, service, "depends_on", app).await;
    relate(&c, old, "depends_on", app).await;
    // A cycle back: the computer connects to the service's front end (the service).
    relate(&c, computer, "connects_to", service).await;
    c.patch_json(
        &format!("/api/v1/cis/{old}"),
        &json!({ "status": "retired" }),
    )
    .await;

    let impact = c.get_ok(&format!("/api/v1/cis/{disk}/impact")).await;
    assert_eq!(
        impact,
        json!({
            "items": [
                {
                    "ci": { "id": computer, "class": "computer", "name": "web-1",
                            "status": "active", "criticality": 3 },
                    "depth": 1, "path": [disk, computer], "via": ["contains"],
                },
                {
                    "ci": { "id": app, "class": "application", "name": "payroll-app",
                            "status": "active", "criticality": 3 },
                    "depth": 2, "path": [disk, computer, app], "via": ["contains", "runs_on"],
                },
                {
                    "ci": { "id": service, "class": "business_service", "name": "Payroll",
                            "status": "active", "criticality": 1 },
                    "depth": 3, "path": [disk, computer, app, service],
                    "via": ["contains", "runs_on", "depends_on"],
                },
            ],
            "truncated": false,
        })
    );
    let with_retired = c
        .get_ok(&format!("/api/v1/cis/{disk}/impact?include_retired=true"))
        .await;
    let reached: Vec<(i64, i64)> = with_retired["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["ci"]["id"].as_i64().unwrap(),
                r["depth"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        reached,
        vec![(computer, 1), (app, 2), (service, 3), (old, 3)]
    );
    let shallow = c
        .get_ok(&format!(
            "/api/v1/cis/{disk}/impact?max_depth=1&include_retired=false"
        ))
        .await;
    assert_eq!(shallow["items"].as_array().unwrap().len(), 1);
    assert_eq!(shallow["truncated"], true);

    // The service needs the app, the computer and its parts; the cycle back to the service
    // ends the walk.
    let needs = c
        .get_ok(&format!("/api/v1/cis/{service}/dependencies"))
        .await;
    let reached: Vec<(i64, Vec<i64>)> = needs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["ci"]["id"].as_i64().unwrap(),
                serde_json::from_value(r["path"].clone()).unwrap(),
            )
        })
        .collect();
    let nic = c.get_ok("/api/v1/cis?class=network_interface").await["items"][0]["id"]
        .as_i64()
        .unwrap();
    let mut parts = [disk, nic];
    parts.sort_unstable();
    assert_eq!(
        reached,
        vec![
            (app, vec![service, app]),
            (computer, vec![service, app, computer]),
            (parts[0], vec![service, app, computer, parts[0]]),
            (parts[1], vec![service, app, computer, parts[1]]),
        ]
    );
    assert_eq!(needs["truncated"], false);
    // Nothing hangs off the disk.
    let none = c.get_ok(&format!("/api/v1/cis/{disk}/dependencies")).await;
    assert_eq!(none, json!({ "items": [], "truncated": false }));

    for (query, expected) in [
        (
            "max_depth=0",
            "max_depth must be an integer from 1 to 50, not \"0\"",
        ),
        (
            "max_depth=51",
            "max_depth must be an integer from 1 to 50, not \"51\"",
        ),
        (
            "max_depth=deep",
            "max_depth must be an integer from 1 to 50, not \"deep\"",
        ),
        (
            "include_retired=yes",
            "include_retired must be true or false, not \"yes\"",
        ),
        (
            "depth=3",
            "unknown query parameter `depth`; allowed: max_depth, include_retired",
        ),
    ] {
        for route in ["impact", "dependencies"] {
            let (status, body) = c.get(&format!("/api/v1/cis/{disk}/{route}?{query}")).await;
            let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_filter");
            assert_eq!(message, expected, "{route}?{query}");
        }
    }
    for route in ["impact", "dependencies"] {
        let (status, body) = c.get(&format!("/api/v1/cis/999999/{route}")).await;
        let message = assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
        assert_eq!(message, "there is no CI with id 999999");
        let (status, body) = c.get(&format!("/api/v1/cis/x/{route}")).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    }
}

#[tokio::test]
async fn a_silent_computer_goes_stale_and_an_admin_may_set_it_active() {
    let start = OffsetDateTime::now_utc();
    let clock = Arc::new(ManualClock::new(start));
    let tweak = |config: &mut census_collector::config::Config| {
        config.compaction_interval = "1d".parse().unwrap();
    };
    let c = TestCollector::start_with_clock(tempfile::tempdir().unwrap(), clock.clone(), tweak);
    let inv = inventory(AGENT, "web-1", &[], &["/"], &[]);
    c.ingest(&batch(AGENT, vec![inventory_report(1, inv)]))
        .await;
    let (computer, _) = discovered(&c).await;
    let db = database(&c);
    let dir = c.stop();

    // The sweep of the retention task, on the stopped collector's database, 31 days later.
    clock.advance(time::Duration::days(31));
    {
        let clock = clock.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let store = Store::open(&db, &StoreOptions::default()).unwrap();
                let sweep = census_collector::retention::sweep_stale(
                    &store,
                    clock.as_ref(),
                    time::Duration::days(30),
                )
                .await
                .unwrap();
                assert_eq!(sweep.marked, 1);
                store.close().await;
            });
        })
        .join()
        .unwrap();
    }
    // Restarted with a stale_after its own sweep cannot reach, so that only the sweep above
    // and this test's requests change the computer.
    let c = TestCollector::start_with_clock(dir, clock.clone(), |config| {
        tweak(config);
        config.stale_after = "3650d".parse().unwrap();
    });
    let ci = c.get_ok(&format!("/api/v1/cis/{computer}")).await;
    assert_eq!(ci["status"], "stale");
    assert_eq!(
        history(&c, computer).last().unwrap(),
        &json!({
            "kind": "status_changed", "field": null, "old": "active", "new": "stale",
            "source": "collector",
        })
    );
    // Sending its own status back is no change.
    let before = dump(&database(&c));
    let (status, same) = c
        .patch_json(
            &format!("/api/v1/cis/{computer}"),
            &json!({ "status": "stale" }),
        )
        .await;
    assert_eq!((status, &same["status"]), (StatusCode::OK, &json!("stale")));
    assert_eq!(dump(&database(&c)), before);
    // An admin may set it active (or retired); stale is the collector's to set.
    let (status, active) = c
        .patch_json(
            &format!("/api/v1/cis/{computer}"),
            &json!({ "status": "active" }),
        )
        .await;
    assert_eq!(
        (status, &active["status"]),
        (StatusCode::OK, &json!("active"))
    );
    let message = refused(
        &c,
        Method::PATCH,
        &format!("/api/v1/cis/{computer}"),
        Some(&json!({ "status": "stale", "criticality": 2 })),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    )
    .await;
    assert_eq!(
        message,
        "status stale is set only by the collector, for a computer that stopped reporting; \
         set active or retired"
    );
    assert_eq!(
        history(&c, computer).last().unwrap()["source"],
        "api:test-admin"
    );
}
