//! The rules API and the maintenance-window API over HTTP: the default rules, round trips,
//! every refusal (its status, code and message, and a full dump of the database before and
//! after), who may write, what disabling, changing and deleting a rule does to its open
//! incidents, and windows turning active and inactive as simulated time moves.

use std::sync::Arc;

use census_collector::clock::ManualClock;
use reqwest::{Method, StatusCode};
use rusqlite::params;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::support::*;

/// A collector whose background tasks run only at start, so that the database changes only
/// through the requests of the test.
fn quiet(clock: Option<Arc<ManualClock>>) -> TestCollector {
    let tweak = |config: &mut census_collector::config::Config| {
        config.compaction_interval = "1d".parse().unwrap();
        config.incident_check_interval = "10m".parse().unwrap();
    };
    match clock {
        Some(clock) => TestCollector::start_with_clock(tempfile::tempdir().unwrap(), clock, tweak),
        None => TestCollector::start_with(tempfile::tempdir().unwrap(), tweak),
    }
}

/// A whole-second time ten days ago, so stored (millisecond) times compare equal.
fn start_time() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc() - time::Duration::days(10);
    now.replace_nanosecond(0).unwrap()
}

fn database(c: &TestCollector) -> std::path::PathBuf {
    c.data_dir().join("census.db")
}

/// A read-write connection to the collector's database, for what the API cannot do yet
/// (open an incident) and for checking rows.
fn sql(c: &TestCollector) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(database(c)).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    conn
}

fn time_of(value: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(value.as_str().unwrap(), &Rfc3339).unwrap()
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

/// POSTs a rule that must be made; answers it.
async fn create_rule(c: &TestCollector, body: Value) -> Value {
    let (status, rule) = c.post_json("/api/v1/rules", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}: {rule}");
    rule
}

/// POSTs a CI that must be created; answers its id.
async fn create_ci(c: &TestCollector, class: &str, name: &str) -> i64 {
    let body = json!({ "class": class, "name": name });
    let (status, ci) = c.post_json("/api/v1/cis", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}: {ci}");
    ci["id"].as_i64().unwrap()
}

fn ids(list: &Value) -> Vec<i64> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn rules_a_fresh_collector_lists_the_default_rules() {
    let c = quiet(None);
    let list = c.get_ok("/api/v1/rules").await;
    assert!(list["next_cursor"].is_null(), "{list}");
    let summary: Vec<Value> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            json!([
                r["name"],
                r["metric"],
                r["operator"],
                r["threshold"],
                r["for"],
                r["clear_threshold"],
                r["clear_for"],
                r["severity"],
                r["enabled"],
                r["scope"],
                r["dimension"]
            ])
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            json!([
                "Filesystem almost full",
                "fs_used_percent",
                ">",
                90.0,
                "5m",
                85.0,
                "5m",
                "high",
                true,
                {},
                null
            ]),
            json!([
                "Memory exhausted",
                "memory_used_percent",
                ">",
                95.0,
                "10m",
                90.0,
                "5m",
                "high",
                true,
                {},
                null
            ]),
            json!([
                "CPU saturated",
                "cpu_percent",
                ">",
                95.0,
                "15m",
                85.0,
                "5m",
                "medium",
                true,
                {},
                null
            ]),
            json!([
                "Load too high",
                "load_per_core",
                ">",
                4.0,
                "15m",
                3.0,
                "5m",
                "medium",
                true,
                {},
                null
            ]),
            json!([
                "Agent unreachable",
                "unreachable",
                ">",
                3.0,
                "5m",
                null,
                "0s",
                "high",
                true,
                {},
                null
            ]),
        ]
    );
    let first = &list["items"][0];
    let id = first["id"].as_i64().unwrap();
    assert_eq!(&c.get_ok(&format!("/api/v1/rules/{id}")).await, first);
    time_of(&first["created_at"]);
    time_of(&first["updated_at"]);

    // Filters.
    assert_eq!(ids(&c.get_ok("/api/v1/rules?enabled=true").await).len(), 5);
    assert!(ids(&c.get_ok("/api/v1/rules?enabled=false").await).is_empty());
    let unreachable = c.get_ok("/api/v1/rules?metric=unreachable").await;
    assert_eq!(unreachable["items"][0]["name"], "Agent unreachable");
    assert_eq!(ids(&unreachable).len(), 1);
    let page = c.get_ok("/api/v1/rules?limit=2").await;
    assert_eq!(ids(&page).len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = c
        .get_ok(&format!("/api/v1/rules?limit=3&cursor={cursor}"))
        .await;
    assert_eq!(ids(&rest).len(), 3);
    assert!(rest["next_cursor"].is_null());

    for (path, says) in [
        ("/api/v1/rules?enabled=yes", "enabled must be true or false"),
        ("/api/v1/rules?metric=cpu", "fs_used_percent"),
        ("/api/v1/rules?severity=high", "unknown query parameter"),
        ("/api/v1/rules?limit=0", "limit"),
    ] {
        let (status, body) = c.get(path).await;
        let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_filter");
        assert!(message.contains(says), "{path}: {message}");
    }
    let (status, body) = c.get("/api/v1/rules?cursor=nope").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_cursor");
    let (status, body) = c.get("/api/v1/rules/999").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = c.get("/api/v1/rules/x").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test]
async fn rules_create_get_list_patch_and_delete() {
    let t0 = start_time();
    let clock = Arc::new(ManualClock::new(t0));
    let c = quiet(Some(clock.clone()));
    let web = create_ci(&c, "application", "web-shop").await;

    let body = json!({
        "name": "Data volume filling",
        "metric": "fs_used_percent",
        "dimension": "/srv*",
        "scope": { "classes": ["computer", "application"], "criticality": [1, 2],
                   "name_pattern": "web-*", "ci_ids": [web] },
        "operator": ">=",
        "threshold": 80.5,
        "for": "1h30m",
        "clear_threshold": 75,
        "clear_for": "90s",
        "severity": "critical",
        "enabled": false,
    });
    let response = c
        .client
        .post(c.url("/api/v1/rules"))
        .bearer_auth(&c.admin_token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let made: Value = response.json().await.unwrap();
    let id = made["id"].as_i64().unwrap();
    assert_eq!(location, format!("/api/v1/rules/{id}"));
    for field in [
        "name",
        "metric",
        "dimension",
        "scope",
        "operator",
        "for",
        "severity",
        "enabled",
    ] {
        assert_eq!(made[field], body[field], "{field}");
    }
    assert_eq!(made["threshold"], 80.5);
    assert_eq!(made["clear_threshold"], 75.0);
    assert_eq!(
        made["clear_for"], "1m30s",
        "written as the configuration writes it"
    );
    assert_eq!(time_of(&made["created_at"]), t0);
    assert_eq!(time_of(&made["updated_at"]), t0);
    assert_eq!(c.get_ok(&location).await, made);
    let disabled = c.get_ok("/api/v1/rules?enabled=false").await;
    assert_eq!(ids(&disabled), vec![id]);
    let on_fs = c.get_ok("/api/v1/rules?metric=fs_used_percent").await;
    assert_eq!(ids(&on_fs).len(), 2);
    assert_eq!(on_fs["items"][1], made);

    // The defaults of everything but name, metric, operator and threshold.
    let minimal = create_rule(
        &c,
        json!({ "name": "Swap", "metric": "swap_used_percent", "operator": ">",
                "threshold": 50, "dimension": null, "clear_threshold": null }),
    )
    .await;
    assert_eq!(
        json!([
            minimal["for"],
            minimal["clear_for"],
            minimal["severity"],
            minimal["enabled"],
            minimal["scope"],
            minimal["dimension"],
            minimal["clear_threshold"]
        ]),
        json!(["5m", "5m", "medium", true, {}, null, null])
    );
    let silent = create_rule(
        &c,
        json!({ "name": "Silent for long", "metric": "unreachable", "operator": ">",
                "threshold": 10, "for": "1h", "severity": "low" }),
    )
    .await;
    assert_eq!(silent["clear_for"], "0s");
    assert_eq!(silent["clear_threshold"], Value::Null);

    // A patch changes what it names; the rest stays, created_at stays, updated_at moves.
    clock.advance(time::Duration::minutes(1));
    let (status, patched) = c
        .patch_json(
            &location,
            &json!({ "threshold": 85, "clear_threshold": null, "dimension": null,
                     "enabled": true, "name": "Any volume filling", "for": "0s" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["threshold"], 85.0);
    assert!(patched["clear_threshold"].is_null() && patched["dimension"].is_null());
    assert_eq!(patched["enabled"], true);
    assert_eq!(patched["name"], "Any volume filling");
    assert_eq!(patched["for"], "0s");
    assert_eq!(patched["clear_for"], "1m30s");
    assert_eq!(patched["scope"], body["scope"]);
    assert_eq!(time_of(&patched["created_at"]), t0);
    assert_eq!(
        time_of(&patched["updated_at"]),
        t0 + time::Duration::minutes(1)
    );
    assert_eq!(c.get_ok(&location).await, patched);

    // A patch that changes nothing writes nothing.
    clock.advance(time::Duration::minutes(1));
    let before = dump(&database(&c));
    let (status, same) = c
        .patch_json(
            &location,
            &json!({ "threshold": 85, "severity": "critical" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(same, patched);
    let (status, same) = c.patch_json(&location, &json!({})).await;
    assert_eq!((status, &same), (StatusCode::OK, &patched));
    assert_eq!(dump(&database(&c)), before);

    // Renaming to a free name, including its own, is fine.
    let (status, renamed) = c
        .patch_json(&location, &json!({ "name": "Any volume filling" }))
        .await;
    assert_eq!(
        (status, &renamed["name"]),
        (StatusCode::OK, &json!("Any volume filling"))
    );

    let (status, gone) = c.delete(&location).await;
    assert_eq!((status, gone), (StatusCode::NO_CONTENT, Value::Null));
    let (status, body) = c.get(&location).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    refused(
        &c,
        Method::DELETE,
        &location,
        None,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    refused(
        &c,
        Method::PATCH,
        &location,
        Some(&json!({ "threshold": 1 })),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(ids(&c.get_ok("/api/v1/rules").await).len(), 7);
    // The name is free again.
    create_rule(
        &c,
        json!({ "name": "Any volume filling", "metric": "fs_used_percent",
                "operator": ">", "threshold": 99 }),
    )
    .await;
}

#[tokio::test]
async fn rules_every_refusal_names_its_field_and_changes_nothing() {
    let c = quiet(None);
    let web = create_ci(&c, "application", "web-shop").await;
    let base = json!({ "name": "Disk", "metric": "fs_used_percent", "operator": ">",
                       "threshold": 90, "clear_threshold": 85 });
    let with = |changes: Value| {
        let mut body = base.clone();
        for (k, v) in changes.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let without = |field: &str| {
        let mut body = base.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let cases: Vec<(Value, &str)> = vec![
        (without("name"), "name: required"),
        (without("metric"), "metric: required"),
        (without("operator"), "operator: required"),
        (without("threshold"), "threshold: required"),
        (with(json!({ "name": "" })), "name: 1 to 200"),
        (with(json!({ "name": "x".repeat(201) })), "name: 1 to 200"),
        (with(json!({ "name": 7 })), "name: a string"),
        (
            with(json!({ "metric": "disk" })),
            "metric: one of cpu_percent, memory_used_percent",
        ),
        (
            with(json!({ "operator": "=" })),
            "operator: one of >, >=, <, <=",
        ),
        (
            with(json!({ "threshold": "90" })),
            "threshold: a finite number",
        ),
        (
            with(json!({ "severity": "urgent" })),
            "severity: one of critical",
        ),
        (with(json!({ "enabled": "yes" })), "enabled: true or false"),
        (with(json!({ "for": "5" })), "for: invalid duration \"5\""),
        (with(json!({ "for": "8d" })), "for: from 0s to 7d, not 8d"),
        (
            with(json!({ "clear_for": "-1s" })),
            "clear_for: invalid duration",
        ),
        (
            with(json!({ "metric": "cpu_percent", "dimension": "/" })),
            "dimension: only the per-filesystem metrics",
        ),
        (
            with(json!({ "dimension": "" })),
            "dimension: a pattern over the mount",
        ),
        (with(json!({ "scope": [] })), "scope: an object"),
        (
            with(json!({ "scope": { "hosts": ["a"] } })),
            "scope: unknown field `hosts`",
        ),
        (
            with(json!({ "scope": { "criticality": [5] } })),
            "scope.criticality: criticality is 1 (highest) to 4",
        ),
        (
            with(json!({ "scope": { "classes": ["filesystem"] } })),
            "scope.classes",
        ),
        (
            with(json!({ "scope": { "ci_ids": [web, 4242, 4243] } })),
            "scope.ci_ids: there is no CI with id 4242, 4243",
        ),
        (
            with(json!({ "clear_threshold": 95 })),
            "clear_threshold: a rule that fires on high values (> 90) recovers below its \
             threshold, so its clear threshold must be at most 90",
        ),
        (
            with(json!({ "operator": "<", "threshold": 10, "clear_threshold": 5 })),
            "clear_threshold: a rule that fires on low values (< 10) recovers above",
        ),
        (
            with(
                json!({ "metric": "unreachable", "operator": ">=", "threshold": 3,
                         "clear_threshold": null }),
            ),
            "operator: an unreachable rule",
        ),
        (
            with(json!({ "metric": "unreachable", "threshold": 0, "clear_threshold": null })),
            "threshold: an unreachable rule's threshold is a number of health intervals from 1 \
             to 1000",
        ),
        (
            with(json!({ "metric": "unreachable", "threshold": 3 })),
            "clear_threshold: an unreachable rule resolves on the agent's next report",
        ),
        (
            with(
                json!({ "metric": "unreachable", "threshold": 3, "clear_threshold": null,
                         "clear_for": "1m" }),
            ),
            "clear_for: an unreachable rule resolves on the agent's next report, so clear_for \
             is 0s, not 1m",
        ),
        (with(json!({ "owner": "ops" })), "unknown field \"owner\""),
    ];
    for (body, says) in cases {
        let message = refused(
            &c,
            Method::POST,
            "/api/v1/rules",
            Some(&body),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
        assert!(
            message.starts_with(says) || message.contains(says),
            "{body}: {message}"
        );
    }
    refused(
        &c,
        Method::POST,
        "/api/v1/rules",
        Some(&json!([base])),
        StatusCode::BAD_REQUEST,
        "invalid_body",
    )
    .await;
    let before = dump(&database(&c));
    let response = c
        .client
        .post(c.url("/api/v1/rules"))
        .bearer_auth(&c.admin_token)
        .body(base.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(dump(&database(&c)), before);

    // A duplicate name names the rule that has it.
    let (status, defaults) = c.get("/api/v1/rules?metric=fs_used_percent").await;
    assert_eq!(status, StatusCode::OK);
    let fs = defaults["items"][0]["id"].as_i64().unwrap();
    let message = refused(
        &c,
        Method::POST,
        "/api/v1/rules",
        Some(&with(json!({ "name": "Filesystem almost full" }))),
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert!(
        message.contains(&format!("rule {fs} is already named")),
        "{message}"
    );

    // A patch is judged as the rule it makes.
    let disk = create_rule(&c, base.clone()).await;
    let path = format!("/api/v1/rules/{}", disk["id"]);
    let patches: Vec<(Value, StatusCode, &str, &str)> = vec![
        (
            json!({ "clear_threshold": 91 }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "clear_threshold: a rule that fires on high values (> 90)",
        ),
        (
            json!({ "threshold": 80 }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "must be at most 80 (hysteresis sits on the recovered side), not 85",
        ),
        (
            json!({ "metric": "unreachable" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "clear_threshold: an unreachable rule resolves",
        ),
        (
            json!({ "metric": "load1", "dimension": "/var" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "dimension: only the per-filesystem metrics",
        ),
        (
            json!({ "name": null }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "name: cannot be null",
        ),
        (
            json!({ "scope": null }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "scope: cannot be null",
        ),
        (
            json!({ "scope": { "ci_ids": [999] } }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "scope.ci_ids: there is no CI with id 999",
        ),
        (
            json!({ "id": 1 }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "unknown field \"id\"",
        ),
        (
            json!({ "name": "CPU saturated" }),
            StatusCode::CONFLICT,
            "conflict",
            "is already named \"CPU saturated\"",
        ),
        (
            json!("x"),
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "JSON object",
        ),
    ];
    for (patch, status, code, says) in patches {
        let message = refused(&c, Method::PATCH, &path, Some(&patch), status, code).await;
        assert!(message.contains(says), "{patch}: {message}");
    }
    refused(
        &c,
        Method::DELETE,
        "/api/v1/rules/0",
        None,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
}

#[tokio::test]
async fn rules_and_maintenance_writes_need_their_roles() {
    let c = quiet(None);
    let viewer = cli(
        &c,
        &["token", "create", "--role", "viewer", "--name", "grafana"],
    );
    let operator = cli(
        &c,
        &["token", "create", "--role", "operator", "--name", "oncall"],
    );
    let rule = json!({ "name": "x", "metric": "load1", "operator": ">", "threshold": 9 });
    let tomorrow = rfc3339(OffsetDateTime::now_utc() + time::Duration::days(1));
    let window = json!({ "scope": {}, "ends_at": tomorrow, "reason": "x" });
    // Viewers read both; neither writes rules; only operators (and admins) write windows.
    for token in [&viewer, &operator] {
        let (status, list) = c.get_as(Some(token), "/api/v1/rules").await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let (status, list) = c.get_as(Some(token), "/api/v1/maintenance").await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let (status, one) = c.get_as(Some(token), "/api/v1/rules/1").await;
        assert_eq!(status, StatusCode::OK, "{one}");
        for (method, path, body) in [
            (Method::POST, "/api/v1/rules", Some(&rule)),
            (
                Method::PATCH,
                "/api/v1/rules/1",
                Some(&json!({ "enabled": false })),
            ),
            (Method::DELETE, "/api/v1/rules/1", None),
        ] {
            refused_as(
                &c,
                Some(token),
                method,
                path,
                body,
                StatusCode::FORBIDDEN,
                "forbidden",
            )
            .await;
        }
    }
    for (method, path, body) in [
        (Method::POST, "/api/v1/maintenance", Some(&window)),
        (
            Method::PATCH,
            "/api/v1/maintenance/1",
            Some(&json!({ "reason": "y" })),
        ),
        (Method::DELETE, "/api/v1/maintenance/1", None),
    ] {
        refused_as(
            &c,
            Some(&viewer),
            method,
            path,
            body,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
    }
    let (status, made) = c
        .send_as(
            Some(&operator),
            Method::POST,
            "/api/v1/maintenance",
            Some(&window),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    assert_eq!(made["created_by"], "api:oncall");
    let path = format!("/api/v1/maintenance/{}", made["id"]);
    let (status, _) = c
        .send_as(
            Some(&operator),
            Method::PATCH,
            &path,
            Some(&json!({ "reason": "y" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = c
        .send_as(Some(&operator), Method::DELETE, &path, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, made) = c.post_json("/api/v1/maintenance", &window).await;
    assert_eq!(status, StatusCode::CREATED, "admins too: {made}");
    // No token at all.
    let (status, body) = c.get_as(None, "/api/v1/rules").await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "token_invalid");
}

/// Opens incident rows for `rule` on `ci` the way the engine would (state `new`, a firing
/// alert pointing at it), through SQL: the engine is not this test's subject. Answers the
/// incident id.
fn open_incident(conn: &rusqlite::Connection, ci: i64, rule: i64, dimension: &str) -> i64 {
    let (name, metric): (String, String) = conn
        .query_row("SELECT name, metric FROM rule WHERE id = ?1", [rule], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let now = OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let id: i64 = conn
        .query_row(
            "INSERT INTO incident (ci_id, rule_id, rule_name, metric, dimension, title,
                                   description, state, severity, impact, urgency, priority,
                                   opened_at, response_due_at, resolve_due_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'breach', 'seen', 'new', 'high', 2, 1, 2, ?6, ?7, ?8, ?6)
             RETURNING id",
            params![
                ci,
                rule,
                name,
                metric,
                dimension,
                now,
                now + 900_000,
                now + 14_400_000
            ],
            |r| r.get(0),
        )
        .unwrap();
    conn.execute(
        "INSERT INTO incident_event (incident_id, at, kind, actor) VALUES (?1, ?2, 'opened', 'collector')",
        params![id, now],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO alert (ci_id, rule_id, dimension, state, since, last_ts, value, peak,
                            incident_id)
         VALUES (?1, ?2, ?3, 'firing', ?4, ?4, 97, 97, ?5)",
        params![ci, rule, dimension, now, id],
    )
    .unwrap();
    id
}

/// (state, resolved_by, resolution, rule_id) of incident `id`.
fn incident(
    conn: &rusqlite::Connection,
    id: i64,
) -> (String, Option<String>, Option<String>, Option<i64>) {
    conn.query_row(
        "SELECT state, resolved_by, resolution, rule_id FROM incident WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .unwrap()
}

/// The (kind, actor, detail) of incident `id`'s timeline, oldest first.
fn timeline(conn: &rusqlite::Connection, id: i64) -> Vec<(String, String, Value)> {
    let mut stmt = conn
        .prepare(
            "SELECT kind, actor, detail FROM incident_event WHERE incident_id = ?1 ORDER BY id",
        )
        .unwrap();
    stmt.query_map([id], |r| {
        let detail: String = r.get(2)?;
        Ok((r.get(0)?, r.get(1)?, serde_json::from_str(&detail).unwrap()))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn alerts(conn: &rusqlite::Connection, rule: i64) -> i64 {
    conn.query_row(
        "SELECT count(*) FROM alert WHERE rule_id = ?1",
        [rule],
        |r| r.get(0),
    )
    .unwrap()
}

/// The events the webhook outbox holds for incident `id`.
fn outbox(conn: &rusqlite::Connection, id: i64) -> Vec<String> {
    let mut stmt = conn
        .prepare("SELECT event FROM webhook_delivery WHERE incident_id = ?1 ORDER BY id")
        .unwrap();
    stmt.query_map([id], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn rules_disabling_changing_or_deleting_a_rule_resolves_its_open_incidents() {
    let c = quiet(None);
    let inv = inventory(AGENT, "web-1", &[], &["/", "/srv"], &["eth0"]);
    c.ingest(&batch(AGENT, vec![inventory_report(1, inv)]))
        .await;
    let computer = c.get_ok("/api/v1/cis?class=computer").await["items"][0]["id"]
        .as_i64()
        .unwrap();
    let rules = c.get_ok("/api/v1/rules").await;
    let rule_id = |name: &str| {
        rules["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()["id"]
            .as_i64()
            .unwrap()
    };
    let (fs, memory, cpu) = (
        rule_id("Filesystem almost full"),
        rule_id("Memory exhausted"),
        rule_id("CPU saturated"),
    );
    let conn = sql(&c);
    conn.execute(
        "INSERT INTO webhook (url, secret, events, created_by, created_at, updated_at)
         VALUES ('https://hooks.example/census', 's', '[\"incident.resolved\"]', 'api:test', 0, 0)",
        [],
    )
    .unwrap();
    let root = open_incident(&conn, computer, fs, "/");
    let srv = open_incident(&conn, computer, fs, "/srv");
    let mem = open_incident(&conn, computer, memory, "");
    let busy = open_incident(&conn, computer, cpu, "");
    // An incident of the rule that is already resolved is left as it is.
    conn.execute(
        "UPDATE incident SET state = 'resolved', resolved_by = 'collector',
                             resolution = 'recovered', resolved_at = 1
         WHERE id = ?1",
        [srv],
    )
    .unwrap();

    // A new threshold keeps the alert state and the incident.
    let fs_path = format!("/api/v1/rules/{fs}");
    let (status, _) = c
        .patch_json(
            &fs_path,
            &json!({ "threshold": 99, "severity": "low", "for": "1m" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(incident(&conn, root).0, "new");
    assert_eq!(alerts(&conn, fs), 2);
    assert!(outbox(&conn, root).is_empty());

    // Disabling resolves it, forgets the alerts, and tells the webhooks.
    let (status, disabled) = c.patch_json(&fs_path, &json!({ "enabled": false })).await;
    assert_eq!(status, StatusCode::OK, "{disabled}");
    assert_eq!(
        incident(&conn, root),
        (
            "resolved".into(),
            Some("api:test-admin".into()),
            Some("rule disabled".into()),
            Some(fs)
        )
    );
    assert_eq!(
        timeline(&conn, root).last().unwrap(),
        &(
            "resolved".to_owned(),
            "api:test-admin".to_owned(),
            json!({ "resolution": "rule disabled" })
        )
    );
    assert_eq!(outbox(&conn, root), vec!["incident.resolved"]);
    assert_eq!(alerts(&conn, fs), 0);
    assert_eq!(
        incident(&conn, srv),
        (
            "resolved".into(),
            Some("collector".into()),
            Some("recovered".into()),
            Some(fs)
        )
    );
    assert_eq!(timeline(&conn, srv).len(), 1);
    // The other rules' incidents are untouched.
    assert_eq!(incident(&conn, mem).0, "new");
    assert_eq!(alerts(&conn, memory), 1);
    // Enabling it again opens nothing by itself.
    let (status, _) = c.patch_json(&fs_path, &json!({ "enabled": true })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(incident(&conn, root).0, "resolved");

    // Changing what the rule watches resolves with "rule changed".
    let (status, _) = c
        .patch_json(
            &format!("/api/v1/rules/{memory}"),
            &json!({ "scope": { "classes": ["computer"] } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        incident(&conn, mem),
        (
            "resolved".into(),
            Some("api:test-admin".into()),
            Some("rule changed".into()),
            Some(memory)
        )
    );
    assert_eq!(alerts(&conn, memory), 0);

    // Deleting resolves with "rule deleted"; the incident keeps the rule's name and metric.
    let (status, _) = c.delete(&format!("/api/v1/rules/{cpu}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        incident(&conn, busy),
        (
            "resolved".into(),
            Some("api:test-admin".into()),
            Some("rule deleted".into()),
            None
        )
    );
    let (name, metric): (String, String) = conn
        .query_row(
            "SELECT rule_name, metric FROM incident WHERE id = ?1",
            [busy],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (name.as_str(), metric.as_str()),
        ("CPU saturated", "cpu_percent")
    );
    assert_eq!(alerts(&conn, cpu), 0);
    assert_eq!(
        timeline(&conn, busy).last().unwrap().2,
        json!({ "resolution": "rule deleted" })
    );
    assert_eq!(outbox(&conn, busy), vec!["incident.resolved"]);
}

#[tokio::test]
async fn rules_maintenance_windows_turn_active_and_end_with_simulated_time() {
    let t0 = start_time();
    let clock = Arc::new(ManualClock::new(t0));
    let c = quiet(Some(clock.clone()));
    let hours = |n: i64| time::Duration::hours(n);
    let web = create_ci(&c, "application", "web-shop").await;
    let db = create_ci(&c, "database", "db-main").await;
    let operator = cli(
        &c,
        &["token", "create", "--role", "operator", "--name", "oncall"],
    );
    let post = |body: Value| {
        let c = &c;
        let operator = &operator;
        async move {
            let response = c
                .client
                .post(c.url("/api/v1/maintenance"))
                .bearer_auth(operator)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
            let location = response.headers()["location"].to_str().unwrap().to_owned();
            let window: Value = response.json().await.unwrap();
            assert_eq!(location, format!("/api/v1/maintenance/{}", window["id"]));
            window
        }
    };

    // Now until +2h, for the web shop only.
    let web_window = post(json!({
        "scope": { "ci_ids": [web] },
        "ends_at": rfc3339(t0 + hours(2)),
        "reason": "shop release",
    }))
    .await;
    assert_eq!(time_of(&web_window["starts_at"]), t0);
    assert_eq!(time_of(&web_window["ends_at"]), t0 + hours(2));
    assert_eq!(time_of(&web_window["created_at"]), t0);
    assert_eq!(web_window["scope"], json!({ "ci_ids": [web] }));
    assert_eq!(web_window["reason"], "shop release");
    assert_eq!(web_window["created_by"], "api:oncall");
    assert_eq!(web_window["active"], true);
    // +1h to +3h for the databases named db-*, given with an offset.
    let db_window = post(json!({
        "scope": { "classes": ["database"], "name_pattern": "db-*" },
        "starts_at": rfc3339((t0 + hours(1)).to_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap())),
        "ends_at": rfc3339(t0 + hours(3)),
        "reason": "database patching",
    }))
    .await;
    assert_eq!(db_window["active"], false);
    assert_eq!(time_of(&db_window["starts_at"]), t0 + hours(1));
    assert!(db_window["starts_at"].as_str().unwrap().ends_with('Z'));
    // Everything, from an hour ago to +30m.
    let all = post(json!({
        "scope": {},
        "starts_at": rfc3339(t0 - hours(1)),
        "ends_at": rfc3339(t0 + time::Duration::minutes(30)),
        "reason": "network maintenance",
    }))
    .await;
    assert_eq!(all["active"], true);
    let (w_web, w_db, w_all) = (
        web_window["id"].as_i64().unwrap(),
        db_window["id"].as_i64().unwrap(),
        all["id"].as_i64().unwrap(),
    );
    let list = |query: &str| {
        let c = &c;
        let path = format!("/api/v1/maintenance{query}");
        async move { ids(&c.get_ok(&path).await) }
    };
    assert_eq!(list("").await, vec![w_web, w_db, w_all]);
    assert_eq!(list("?active=true").await, vec![w_web, w_all]);
    assert_eq!(list("?active=false").await, vec![w_db]);
    assert_eq!(list(&format!("?ci_id={web}")).await, vec![w_web, w_all]);
    assert_eq!(list(&format!("?ci_id={db}")).await, vec![w_db, w_all]);
    assert_eq!(list(&format!("?ci_id={db}&active=true")).await, vec![w_all]);
    assert!(list("?ci_id=9999").await.is_empty());
    let page = c
        .get_ok(&format!("/api/v1/maintenance?ci_id={db}&limit=1"))
        .await;
    assert_eq!(ids(&page), vec![w_db]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = c
        .get_ok(&format!(
            "/api/v1/maintenance?ci_id={db}&limit=1&cursor={cursor}"
        ))
        .await;
    assert_eq!(ids(&rest), vec![w_all]);
    assert!(rest["next_cursor"].is_null());
    for (path, says) in [
        (
            "/api/v1/maintenance?active=1",
            "active must be true or false",
        ),
        ("/api/v1/maintenance?ci_id=web", "ci_id must be a CI id"),
        ("/api/v1/maintenance?reason=x", "unknown query parameter"),
    ] {
        let (status, body) = c.get(path).await;
        let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_filter");
        assert!(message.contains(says), "{path}: {message}");
    }

    // +1h: the database window starts, the one for everything is over.
    clock.advance(hours(1));
    assert_eq!(list("?active=true").await, vec![w_web, w_db]);
    // +2h: the web window ends (its end is exclusive).
    clock.advance(hours(1));
    let web_path = format!("/api/v1/maintenance/{w_web}");
    assert_eq!(c.get_ok(&web_path).await["active"], false);
    assert_eq!(list("?active=true").await, vec![w_db]);

    // Extending the web window opens it again; ending the database window early ends it at
    // the collector's now, even when the caller's clock is behind.
    let (status, extended) = c
        .patch_json(&web_path, &json!({ "ends_at": rfc3339(t0 + hours(4)) }))
        .await;
    assert_eq!(status, StatusCode::OK, "{extended}");
    assert_eq!(extended["active"], true);
    let db_path = format!("/api/v1/maintenance/{w_db}");
    clock.advance(time::Duration::minutes(10));
    let (status, ended) = c
        .patch_json(
            &db_path,
            &json!({ "ends_at": rfc3339(t0 + hours(2)), "reason": "done early" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ended}");
    assert_eq!(
        time_of(&ended["ends_at"]),
        t0 + hours(2) + time::Duration::minutes(10)
    );
    assert_eq!(ended["active"], false);
    assert_eq!(ended["reason"], "done early");
    assert_eq!(time_of(&ended["starts_at"]), t0 + hours(1));
    assert_eq!(c.get_ok(&db_path).await, ended);
    assert_eq!(list("?active=true").await, vec![w_web]);
    // Narrowing a scope.
    let (status, narrowed) = c
        .patch_json(
            &web_path,
            &json!({ "scope": { "ci_ids": [web], "criticality": [1] } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{narrowed}");
    assert!(list(&format!("?ci_id={web}&active=true")).await.is_empty());

    let (status, gone) = c.delete(&web_path).await;
    assert_eq!((status, gone), (StatusCode::NO_CONTENT, Value::Null));
    let (status, body) = c.get(&web_path).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(list("").await, vec![w_db, w_all]);
}

#[tokio::test]
async fn rules_maintenance_refusals_name_their_field_and_change_nothing() {
    let t0 = start_time();
    let clock = Arc::new(ManualClock::new(t0));
    let c = quiet(Some(clock.clone()));
    let web = create_ci(&c, "application", "web-shop").await;
    let at = |minutes: i64| rfc3339(t0 + time::Duration::minutes(minutes));
    let base = json!({ "scope": { "ci_ids": [web] }, "ends_at": at(60), "reason": "release" });
    let with = |changes: Value| {
        let mut body = base.clone();
        for (k, v) in changes.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let without = |field: &str| {
        let mut body = base.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let cases: Vec<(Value, &str)> = vec![
        (without("scope"), "scope: required"),
        (without("ends_at"), "ends_at: required"),
        (without("reason"), "reason: required"),
        (with(json!({ "reason": "" })), "reason: 1 to 1000"),
        (
            with(json!({ "reason": "x".repeat(1001) })),
            "reason: 1 to 1000",
        ),
        (
            with(json!({ "ends_at": "tomorrow" })),
            "ends_at: an RFC 3339 time",
        ),
        (with(json!({ "starts_at": 17 })), "starts_at: a string"),
        (
            with(json!({ "starts_at": at(90) })),
            "ends_at: must be after starts_at",
        ),
        (
            with(json!({ "starts_at": at(-120), "ends_at": at(-60) })),
            "ends_at: must be in the future",
        ),
        (
            with(json!({ "ends_at": at(0) })),
            "ends_at: must be after starts_at",
        ),
        (
            with(json!({ "ends_at": at(366 * 24 * 60 + 1) })),
            "ends_at: a window is at most 366 days long",
        ),
        (
            with(json!({ "scope": { "ci_ids": [web, 777] } })),
            "scope.ci_ids: there is no CI with id 777",
        ),
        (
            with(json!({ "scope": { "cis": [1] } })),
            "scope: unknown field `cis`",
        ),
        (with(json!({ "scope": "all" })), "scope: an object"),
        (
            with(json!({ "created_by": "me" })),
            "unknown field \"created_by\"",
        ),
    ];
    for (body, says) in cases {
        let message = refused(
            &c,
            Method::POST,
            "/api/v1/maintenance",
            Some(&body),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
        assert!(message.starts_with(says), "{body}: {message}");
    }
    // Exactly 366 days is allowed.
    let (status, long) = c
        .post_json(
            "/api/v1/maintenance",
            &with(json!({ "starts_at": at(0), "ends_at": at(366 * 24 * 60) })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{long}");

    let (status, window) = c.post_json("/api/v1/maintenance", &base).await;
    assert_eq!(status, StatusCode::CREATED, "{window}");
    let path = format!("/api/v1/maintenance/{}", window["id"]);
    let (status, later) = c
        .post_json("/api/v1/maintenance", &with(json!({ "starts_at": at(30) })))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{later}");
    let later_path = format!("/api/v1/maintenance/{}", later["id"]);
    let (path, later_path) = (path.as_str(), later_path.as_str());
    let patches: Vec<(&str, Value, StatusCode, &str, &str)> = vec![
        (
            path,
            json!({ "ends_at": null }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "ends_at: cannot be null",
        ),
        (
            path,
            json!({ "starts_at": at(5) }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "unknown field \"starts_at\"",
        ),
        (
            path,
            json!({ "reason": " " }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "reason: 1 to 1000",
        ),
        (
            path,
            json!({ "ends_at": at(367 * 24 * 60) }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "ends_at: a window is at most 366 days long",
        ),
        (
            path,
            json!({ "scope": { "ci_ids": [778] } }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "scope.ci_ids: there is no CI with id 778",
        ),
        (
            later_path,
            json!({ "ends_at": at(0) }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "ends_at: the window has not started",
        ),
        (
            "/api/v1/maintenance/999",
            json!({ "reason": "x" }),
            StatusCode::NOT_FOUND,
            "not_found",
            "no maintenance window with id 999",
        ),
        (
            path,
            json!(null),
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "JSON object",
        ),
    ];
    for (path, patch, status, code, says) in patches {
        let message = refused(&c, Method::PATCH, path, Some(&patch), status, code).await;
        assert!(
            message.starts_with(says) || message.contains(says),
            "{patch}: {message}"
        );
    }
    refused(
        &c,
        Method::DELETE,
        "/api/v1/maintenance/999",
        None,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let (status, body) = c.get("/api/v1/maintenance/999").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");

    // An end moved to the past ends the window now; once over, asking again changes nothing.
    clock.advance(time::Duration::minutes(5));
    let (status, ended) = c.patch_json(path, &json!({ "ends_at": at(-600) })).await;
    assert_eq!(status, StatusCode::OK, "{ended}");
    assert_eq!(time_of(&ended["ends_at"]), t0 + time::Duration::minutes(5));
    clock.advance(time::Duration::minutes(5));
    let before = dump(&database(&c));
    let (status, again) = c.patch_json(path, &json!({ "ends_at": at(10) })).await;
    assert_eq!((status, &again), (StatusCode::OK, &ended));
    assert_eq!(dump(&database(&c)), before);
}
