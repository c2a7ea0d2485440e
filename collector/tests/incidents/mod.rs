//! The incident API over real HTTP: the list and its filters, one incident, the lifecycle
//! actions and their refusals, the priority override, the KPIs, the webhook outbox rows the
//! actions write, and the CI view's open incidents.
//!
//! Incidents are made by inserting rows through a connection of the test's own on the
//! collector's database (WAL lets it write while the collector runs), so each test builds the
//! exact set it needs; the CIs they belong to come from real inventories. Every rule is
//! disabled first, so that the engine opens nothing of its own while the manual clock moves.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use census_collector::clock::{Clock, ManualClock};
use reqwest::{Method, StatusCode};
use rusqlite::{Connection, params};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::support::*;

const MINUTE: i64 = 60_000;
const ACTIONS: [&str; 7] = [
    "acknowledge",
    "assign",
    "notes",
    "resolve",
    "close",
    "reopen",
    "priority",
];
const HOUR: i64 = 60 * MINUTE;

/// A collector on a manual clock with one computer CI (from a real inventory) and every rule
/// disabled.
struct Setup {
    c: TestCollector,
    clock: Arc<ManualClock>,
    ci: i64,
    db: PathBuf,
}

impl Setup {
    async fn start() -> Setup {
        Setup::start_with(|_| {}).await
    }

    async fn start_with(tweak: impl FnOnce(&mut census_collector::config::Config)) -> Setup {
        // Whole milliseconds, the resolution of stored times; ten days back, so the agent's
        // `collected_at` (the clock) is never ahead of the collector's.
        let start = OffsetDateTime::now_utc() - Duration::days(10);
        let start = start
            .replace_nanosecond(start.nanosecond() / 1_000_000 * 1_000_000)
            .unwrap();
        let clock = Arc::new(ManualClock::new(start));
        let c = TestCollector::start_with_clock(tempfile::tempdir().unwrap(), clock.clone(), tweak);
        let db = c.data_dir().join("census.db");
        conn(&db)
            .execute("UPDATE rule SET enabled = 0", [])
            .unwrap();
        let mut setup = Setup {
            c,
            clock,
            ci: 0,
            db,
        };
        setup.ci = setup.computer(AGENT, "web-1").await;
        setup
    }

    /// A computer CI made by an inventory of `agent`; its id.
    async fn computer(&self, agent: &str, hostname: &str) -> i64 {
        let mut inv = inventory(agent, hostname, &[], &["/"], &[]);
        inv.collected_at = self.now();
        self.c
            .ingest(&batch(agent, vec![inventory_report(1, inv)]))
            .await;
        let list = self
            .c
            .get_ok(&format!("/api/v1/cis?class=computer&hostname={hostname}"))
            .await;
        list["items"][0]["id"].as_i64().unwrap()
    }

    fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    fn now_ms(&self) -> i64 {
        ms(self.now())
    }

    /// The clock's time as the API writes it.
    fn now_text(&self) -> String {
        rfc3339(self.now_ms())
    }

    /// An incident opened now with the default P3 targets (2 h, 24 h).
    fn incident(&self, dimension: &str) -> i64 {
        let now = self.now_ms();
        open_incident(
            &self.db,
            self.ci,
            rule(&self.db, "Filesystem almost full"),
            dimension,
            3,
            now,
            now + 2 * HOUR,
            now + 24 * HOUR,
        )
    }

    /// `POST /api/v1/incidents/{id}/{action}` with the admin token.
    async fn act(
        &self,
        id: impl std::fmt::Display,
        action: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        self.c
            .post_json(&format!("/api/v1/incidents/{id}/{action}"), &body)
            .await
    }

    /// An action that must succeed; its answer.
    async fn act_ok(&self, id: i64, action: &str, body: Value) -> Value {
        let (status, answer) = self.act(id, action, body).await;
        assert_eq!(status, StatusCode::OK, "{action}: {answer}");
        answer
    }

    async fn incident_view(&self, id: i64) -> Value {
        self.c.get_ok(&format!("/api/v1/incidents/{id}")).await
    }

    /// The ids a list answers, in its order.
    async fn ids(&self, query: &str) -> Vec<i64> {
        let list = self.c.get_ok(&format!("/api/v1/incidents{query}")).await;
        ids_of(&list)
    }
}

fn ids_of(list: &Value) -> Vec<i64> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect()
}

fn ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

fn conn(db: &Path) -> Connection {
    let conn = Connection::open(db).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    conn
}

fn exec(db: &Path, sql: &str, values: impl rusqlite::Params) {
    conn(db).execute(sql, values).unwrap();
}

/// The id of the rule named `name` (one of the defaults).
fn rule(db: &Path, name: &str) -> i64 {
    conn(db)
        .query_row("SELECT id FROM rule WHERE name = ?1", [name], |r| r.get(0))
        .unwrap()
}

/// Inserts an open (`new`) incident as the engine would, with an `opened` timeline event;
/// answers its id. Impact and urgency are medium; the severity is the rule's.
#[allow(clippy::too_many_arguments)]
fn open_incident(
    db: &Path,
    ci_id: i64,
    rule_id: i64,
    dimension: &str,
    priority: i64,
    opened_at_ms: i64,
    response_due_ms: i64,
    resolve_due_ms: i64,
) -> i64 {
    let conn = conn(db);
    conn.execute(
        "INSERT INTO incident (ci_id, rule_id, rule_name, metric, dimension, title, description,
                               state, severity, impact, urgency, priority, opened_at,
                               response_due_at, resolve_due_at, updated_at)
         SELECT ?1, id, name, metric, ?3, name || ' on ' || ?1, 'made by the test', 'new',
                severity, 2, 2, ?4, ?5, ?6, ?7, ?5
         FROM rule WHERE id = ?2",
        params![
            ci_id,
            rule_id,
            dimension,
            priority,
            opened_at_ms,
            response_due_ms,
            resolve_due_ms
        ],
    )
    .unwrap();
    let id = conn.last_insert_rowid();
    conn.execute(
        "INSERT INTO incident_event (incident_id, at, kind, actor, detail)
         VALUES (?1, ?2, 'opened', 'collector', '{}')",
        params![id, opened_at_ms],
    )
    .unwrap();
    id
}

/// Puts incident `id` in `state` as the engine or an operator would have.
fn put_in_state(db: &Path, id: i64, state: &str, at_ms: i64) {
    let sql = match state {
        "new" => return,
        "acknowledged" => {
            "UPDATE incident SET state = 'acknowledged', acknowledged_at = ?2 WHERE id = ?1"
        }
        "in_progress" => {
            "UPDATE incident SET state = 'in_progress', acknowledged_at = ?2, assignee = 'ann'
             WHERE id = ?1"
        }
        "resolved" => {
            "UPDATE incident SET state = 'resolved', resolved_at = ?2, resolution = 'fixed',
                                 resolved_by = 'collector' WHERE id = ?1"
        }
        "closed" => {
            "UPDATE incident SET state = 'closed', resolved_at = ?2, resolution = 'fixed',
                                 resolved_by = 'collector', closed_at = ?2 WHERE id = ?1"
        }
        other => panic!("no state {other}"),
    };
    exec(db, sql, params![id, at_ms]);
}

fn kinds(detail: &Value) -> Vec<String> {
    detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

fn last_event(detail: &Value) -> &Value {
    detail["timeline"].as_array().unwrap().last().unwrap()
}

/// Runs the collector's CLI on its data dir; the last line of its output.
fn token(c: &TestCollector, role: &str, name: &str) -> String {
    c.token(role, name)
}

#[tokio::test]
async fn an_incident_walks_from_new_to_closed() {
    let s = Setup::start().await;
    let id = s.incident("/");
    let opened = s.incident_view(id).await;
    assert_eq!(opened["state"], "new");
    assert_eq!(opened["number"], format!("INC-{id:06}"));
    assert_eq!(kinds(&opened), ["opened"]);

    s.clock.advance(Duration::minutes(5));
    let acked = s
        .act_ok(id, "acknowledge", json!({ "note": "looking" }))
        .await;
    assert_eq!(acked["state"], "acknowledged");
    assert_eq!(acked["acknowledged_at"], s.now_text());
    assert_eq!(acked["response_breached"], false);
    assert_eq!(kinds(&acked), ["opened", "acknowledged"]);
    let event = last_event(&acked);
    assert_eq!(event["actor"], "api:test-admin");
    assert_eq!(event["at"], s.now_text());
    assert_eq!(event["detail"], json!({ "note": "looking" }));
    let ack_time = s.now_text();

    s.clock.advance(Duration::minutes(5));
    let assigned = s.act_ok(id, "assign", json!({ "assignee": "ann" })).await;
    assert_eq!(assigned["state"], "in_progress");
    assert_eq!(assigned["assignee"], "ann");
    assert_eq!(
        last_event(&assigned)["detail"],
        json!({ "from": null, "to": "ann" })
    );
    // Reassigning an incident in progress records who had it.
    let reassigned = s.act_ok(id, "assign", json!({ "assignee": "bob" })).await;
    assert_eq!(reassigned["assignee"], "bob");
    assert_eq!(
        last_event(&reassigned)["detail"],
        json!({ "from": "ann", "to": "bob" })
    );
    // Already acknowledged: assigning adds no second acknowledgement.
    assert_eq!(reassigned["acknowledged_at"], ack_time);
    assert_eq!(
        kinds(&reassigned),
        ["opened", "acknowledged", "assigned", "assigned"]
    );

    let noted = s
        .act_ok(id, "notes", json!({ "text": "disk is a log flood" }))
        .await;
    assert_eq!(
        last_event(&noted)["detail"],
        json!({ "text": "disk is a log flood" })
    );
    assert_eq!(noted["state"], "in_progress");

    s.clock.advance(Duration::minutes(30));
    let resolved = s
        .act_ok(id, "resolve", json!({ "resolution": "rotated the logs" }))
        .await;
    assert_eq!(resolved["state"], "resolved");
    assert_eq!(resolved["resolution"], "rotated the logs");
    assert_eq!(resolved["resolved_by"], "api:test-admin");
    assert_eq!(resolved["resolved_at"], s.now_text());
    assert_eq!(
        last_event(&resolved)["detail"],
        json!({ "resolution": "rotated the logs" })
    );

    s.clock.advance(Duration::minutes(1));
    let closed = s.act_ok(id, "close", json!({})).await;
    assert_eq!(closed["state"], "closed");
    assert_eq!(closed["closed_at"], s.now_text());
    assert_eq!(last_event(&closed)["kind"], "closed");
    assert_eq!(last_event(&closed)["detail"], json!({}));

    // Notes are taken in every state, closed included.
    let noted = s
        .act_ok(id, "notes", json!({ "text": "post-mortem on Friday" }))
        .await;
    assert_eq!(noted["state"], "closed");
    assert_eq!(
        kinds(&noted),
        [
            "opened",
            "acknowledged",
            "assigned",
            "assigned",
            "note",
            "resolved",
            "closed",
            "note"
        ]
    );
    // The detail route answers what the last action answered.
    assert_eq!(s.incident_view(id).await, noted);
}

#[tokio::test]
async fn assigning_a_new_incident_acknowledges_it() {
    let s = Setup::start().await;
    let id = s.incident("/");
    s.clock.advance(Duration::minutes(3));
    let assigned = s.act_ok(id, "assign", json!({ "assignee": "ann" })).await;
    assert_eq!(assigned["state"], "in_progress");
    assert_eq!(assigned["acknowledged_at"], s.now_text());
    assert_eq!(kinds(&assigned), ["opened", "acknowledged", "assigned"]);
    // An acknowledged incident can be assigned as well.
    let other = s.incident("/home");
    s.act_ok(other, "acknowledge", json!({})).await;
    let assigned = s
        .act_ok(other, "assign", json!({ "assignee": "bob" }))
        .await;
    assert_eq!(assigned["state"], "in_progress");
    assert_eq!(kinds(&assigned), ["opened", "acknowledged", "assigned"]);
}

#[tokio::test]
async fn a_resolved_incident_is_reopened_and_keeps_its_first_acknowledgement() {
    let s = Setup::start().await;
    let id = s.incident("/");
    s.act_ok(id, "acknowledge", json!({})).await;
    let ack_time = s.now_text();
    s.clock.advance(Duration::minutes(10));
    s.act_ok(id, "resolve", json!({ "resolution": "restarted" }))
        .await;
    s.clock.advance(Duration::minutes(10));
    let reopened = s
        .act_ok(id, "reopen", json!({ "reason": "it is back" }))
        .await;
    assert_eq!(reopened["state"], "new");
    assert_eq!(reopened["reopen_count"], 1);
    assert_eq!(reopened["resolution"], Value::Null);
    assert_eq!(reopened["resolved_at"], Value::Null);
    assert_eq!(reopened["acknowledged_at"], ack_time);
    assert_eq!(last_event(&reopened)["kind"], "reopened");
    assert_eq!(
        last_event(&reopened)["detail"],
        json!({ "reason": "it is back" })
    );
    // Acknowledging it again keeps the first acknowledgement time (the response target it met).
    s.clock.advance(Duration::minutes(10));
    let acked = s.act_ok(id, "acknowledge", json!({})).await;
    assert_eq!(acked["state"], "acknowledged");
    assert_eq!(acked["acknowledged_at"], ack_time);
}

/// A body `action` takes.
fn valid_body(action: &str) -> Value {
    match action {
        "acknowledge" | "close" => json!({}),
        "assign" => json!({ "assignee": "ann" }),
        "notes" => json!({ "text": "a note" }),
        "resolve" => json!({ "resolution": "done" }),
        "reopen" => json!({ "reason": "again" }),
        "priority" => json!({ "priority": "P1", "reason": "board meeting" }),
        other => panic!("no action {other}"),
    }
}

/// Incidents in each state, on dimensions of their own.
fn one_in_each_state(s: &Setup) -> Vec<(&'static str, i64)> {
    ["new", "acknowledged", "in_progress", "resolved", "closed"]
        .into_iter()
        .map(|state| {
            let id = s.incident(&format!("/{state}"));
            put_in_state(&s.db, id, state, s.now_ms());
            (state, id)
        })
        .collect()
}

#[tokio::test]
async fn invalid_transitions_answer_409_and_change_nothing() {
    let s = Setup::start().await;
    let ids: std::collections::HashMap<_, _> = one_in_each_state(&s).into_iter().collect();
    // (action, state, what the message must say)
    let refused = [
        ("acknowledge", "acknowledged", "only a new incident"),
        ("acknowledge", "in_progress", "only a new incident"),
        ("acknowledge", "resolved", "only a new incident"),
        ("acknowledge", "closed", "only a new incident"),
        ("assign", "resolved", "reopen it first"),
        ("assign", "closed", "a closed incident is final"),
        ("resolve", "resolved", "only an open incident"),
        ("resolve", "closed", "a closed incident is final"),
        ("close", "new", "only a resolved incident"),
        ("close", "acknowledged", "only a resolved incident"),
        ("close", "in_progress", "only a resolved incident"),
        ("close", "closed", "closed already"),
        ("reopen", "new", "only a resolved incident"),
        ("reopen", "acknowledged", "only a resolved incident"),
        ("reopen", "in_progress", "only a resolved incident"),
        ("reopen", "closed", "a closed incident is final"),
        ("priority", "resolved", "only an open incident"),
        ("priority", "closed", "only an open incident"),
    ];
    for (action, state, says) in refused {
        let id = ids[state];
        let before = dump(&s.db);
        let (status, body) = s.act(id, action, valid_body(action)).await;
        let message = assert_error(status, &body, StatusCode::CONFLICT, "conflict");
        assert!(
            message.contains(&format!("INC-{id:06} is {state}")) && message.contains(says),
            "{action} on {state}: {message}"
        );
        assert_eq!(dump(&s.db), before, "{action} on {state} wrote");
    }

    // Reopening while another incident of the same CI, rule and dimension is open names it.
    let resolved = ids["resolved"];
    let other = s.incident("/resolved");
    let before = dump(&s.db);
    let (status, body) = s
        .act(resolved, "reopen", json!({ "reason": "again" }))
        .await;
    let message = assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    assert!(
        message.contains(&format!("INC-{other:06} is open")),
        "{message}"
    );
    assert_eq!(dump(&s.db), before);
}

#[tokio::test]
async fn bad_requests_are_refused_and_change_nothing() {
    let s = Setup::start().await;
    let id = s.incident("/");
    let long = |n: usize| "x".repeat(n);
    let before = dump(&s.db);
    // (action, body, status, code, what the message must name)
    let cases = [
        (
            "acknowledge",
            json!({ "colour": "red" }),
            422,
            "invalid_field",
            "colour",
        ),
        (
            "acknowledge",
            json!({ "note": 7 }),
            422,
            "invalid_field",
            "note",
        ),
        (
            "acknowledge",
            json!({ "note": long(10_001) }),
            422,
            "invalid_field",
            "note",
        ),
        ("acknowledge", json!([]), 400, "invalid_body", "object"),
        ("assign", json!({}), 422, "invalid_field", "assignee"),
        (
            "assign",
            json!({ "assignee": "  " }),
            422,
            "invalid_field",
            "assignee",
        ),
        (
            "assign",
            json!({ "assignee": long(201) }),
            422,
            "invalid_field",
            "assignee",
        ),
        (
            "assign",
            json!({ "assignee": null }),
            422,
            "invalid_field",
            "assignee",
        ),
        ("notes", json!({ "text": "" }), 422, "invalid_field", "text"),
        (
            "notes",
            json!({ "text": long(10_001) }),
            422,
            "invalid_field",
            "text",
        ),
        ("resolve", json!({}), 422, "invalid_field", "resolution"),
        ("reopen", json!({}), 422, "invalid_field", "reason"),
        ("close", json!({ "note": "" }), 422, "invalid_field", "note"),
        (
            "priority",
            json!({ "priority": "P0", "reason": "x" }),
            422,
            "invalid_field",
            "P1",
        ),
        (
            "priority",
            json!({ "priority": 1, "reason": "x" }),
            422,
            "invalid_field",
            "priority",
        ),
        (
            "priority",
            json!({ "priority": "P1" }),
            422,
            "invalid_field",
            "reason",
        ),
        (
            "priority",
            json!({ "priority": "P1", "reason": long(1001) }),
            422,
            "invalid_field",
            "reason",
        ),
    ];
    for (action, body, status, code, names) in cases {
        let (got, answer) = s.act(id, action, body.clone()).await;
        let message = assert_error(got, &answer, StatusCode::from_u16(status).unwrap(), code);
        assert!(message.contains(names), "{action} {body}: {message}");
    }
    // Just inside the limits is taken (checked below, after the dump comparison).
    assert_eq!(dump(&s.db), before);

    // Unknown incidents, in either form, for every action.
    for action in ACTIONS {
        for target in ["999", "INC-000999", "nope"] {
            let (status, answer) = s.act(target, action, valid_body(action)).await;
            assert_error(status, &answer, StatusCode::NOT_FOUND, "not_found");
        }
    }
    assert_eq!(dump(&s.db), before);

    let at_limits = s
        .act_ok(id, "assign", json!({ "assignee": long(200) }))
        .await;
    assert_eq!(at_limits["assignee"].as_str().unwrap().len(), 200);
    s.act_ok(id, "notes", json!({ "text": long(10_000) })).await;
}

#[tokio::test]
async fn viewers_read_operators_work_incidents() {
    let s = Setup::start().await;
    let id = s.incident("/");
    let viewer = token(&s.c, "viewer", "wallboard");
    let operator = token(&s.c, "operator", "oncall");
    let before = dump(&s.db);
    for action in ACTIONS {
        let body = valid_body(action);
        let (status, answer) =
            s.c.send_as(
                Some(&viewer),
                Method::POST,
                &format!("/api/v1/incidents/{id}/{action}"),
                Some(&body),
            )
            .await;
        assert_error(status, &answer, StatusCode::FORBIDDEN, "forbidden");
    }
    assert_eq!(dump(&s.db), before);
    for path in [
        "/api/v1/incidents".to_owned(),
        format!("/api/v1/incidents/{id}"),
        "/api/v1/kpis".to_owned(),
        format!("/api/v1/cis/{}", s.ci),
    ] {
        let (status, body) = s.c.get_as(Some(&viewer), &path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }

    let (status, acked) =
        s.c.send_as(
            Some(&operator),
            Method::POST,
            &format!("/api/v1/incidents/INC-{id:06}/acknowledge"),
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{acked}");
    assert_eq!(acked["state"], "acknowledged");
    assert_eq!(last_event(&acked)["actor"], "api:oncall");
    let (status, resolved) =
        s.c.send_as(
            Some(&operator),
            Method::POST,
            &format!("/api/v1/incidents/{id}/resolve"),
            Some(&json!({ "resolution": "done" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resolved}");
    assert_eq!(resolved["resolved_by"], "api:oncall");
    // No token at all: 401.
    let (status, _) =
        s.c.send_as(
            None,
            Method::POST,
            &format!("/api/v1/incidents/{id}/notes"),
            Some(&json!({ "text": "x" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_incident_is_found_by_id_or_number() {
    let s = Setup::start().await;
    let id = s.incident("/");
    let by_id = s.incident_view(id).await;
    assert_eq!(by_id["id"], id);
    assert_eq!(by_id["ci_id"], s.ci);
    assert_eq!(by_id["ci_name"], "web-1");
    assert_eq!(by_id["rule_name"], "Filesystem almost full");
    assert_eq!(by_id["priority"], "P3");
    for form in [
        format!("INC-{id:06}"),
        format!("inc-{id:06}"),
        format!("INC-{id}"),
    ] {
        assert_eq!(
            s.c.get_ok(&format!("/api/v1/incidents/{form}")).await,
            by_id,
            "{form}"
        );
    }
    for missing in ["INC-999999", "999999", "0", "INC-", "abc", "-1"] {
        let (status, body) = s.c.get(&format!("/api/v1/incidents/{missing}")).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    }
    let (status, body) = s.c.get(&format!("/api/v1/incidents/{id}?x=1")).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_filter");
}

#[tokio::test]
async fn every_list_filter_includes_and_excludes() {
    let s = Setup::start().await;
    let other_ci = s.computer(OTHER_AGENT, "db-1").await;
    let fs = rule(&s.db, "Filesystem almost full");
    let memory = rule(&s.db, "Memory exhausted");
    let t0 = s.now_ms();
    // a: web-1, fs, P1, new, opened t0, severity high (the rule's).
    let a = open_incident(&s.db, s.ci, fs, "/", 1, t0, t0 + 15 * MINUTE, t0 + 4 * HOUR);
    // b: db-1, memory, P3, acknowledged, opened t0 + 1 h.
    let b = open_incident(
        &s.db,
        other_ci,
        memory,
        "",
        3,
        t0 + HOUR,
        t0 + 3 * HOUR,
        t0 + 25 * HOUR,
    );
    put_in_state(&s.db, b, "acknowledged", t0 + HOUR + MINUTE);
    // c: web-1, memory, P2, resolved in time, opened t0 + 2 h, severity critical.
    let c = open_incident(
        &s.db,
        s.ci,
        memory,
        "",
        2,
        t0 + 2 * HOUR,
        t0 + 4 * HOUR,
        t0 + 10 * HOUR,
    );
    put_in_state(&s.db, c, "resolved", t0 + 3 * HOUR);
    exec(
        &s.db,
        "UPDATE incident SET severity = 'critical' WHERE id = ?1",
        [c],
    );
    // d: db-1, fs, P5, closed, opened t0 + 3 h.
    let d = open_incident(
        &s.db,
        other_ci,
        fs,
        "/",
        5,
        t0 + 3 * HOUR,
        t0 + 27 * HOUR,
        t0 + 171 * HOUR,
    );
    put_in_state(&s.db, d, "closed", t0 + 4 * HOUR);
    s.clock.set(s.now() + Duration::hours(5));

    let all = s.ids("").await;
    assert_eq!(all, [d, c, b, a], "newest first");
    let t = |ms: i64| rfc3339(ms).replace('+', "%2B");
    let cases: Vec<(String, Vec<i64>)> = vec![
        ("state=new".into(), vec![a]),
        ("state=acknowledged,closed".into(), vec![d, b]),
        ("state=open".into(), vec![b, a]),
        ("state=resolved".into(), vec![c]),
        ("state=in_progress".into(), vec![]),
        ("priority=P1".into(), vec![a]),
        ("priority=P2,P5".into(), vec![d, c]),
        ("priority=P4".into(), vec![]),
        (format!("ci_id={}", s.ci), vec![c, a]),
        (format!("ci_id={other_ci}"), vec![d, b]),
        ("ci_id=999".into(), vec![]),
        (format!("rule_id={fs}"), vec![d, a]),
        (format!("rule_id={memory}"), vec![c, b]),
        (format!("opened_since={}", t(t0 + HOUR)), vec![d, c, b]),
        (format!("opened_since={}", t(t0 + 3 * HOUR + 1)), vec![]),
        (format!("opened_before={}", t(t0 + HOUR)), vec![a]),
        (format!("opened_before={}", t(t0)), vec![]),
        (
            format!(
                "opened_since={}&opened_before={}",
                t(t0 + HOUR),
                t(t0 + 3 * HOUR)
            ),
            vec![c, b],
        ),
        ("severity=critical".into(), vec![c]),
        ("severity=high,low".into(), vec![d, b, a]),
        ("severity=medium".into(), vec![]),
        // At t0 + 5 h: a (new, response due t0 + 15 min) is breached; b was acknowledged in
        // time and its resolution is due at t0 + 25 h; c and d were resolved in time.
        ("breached=true".into(), vec![a]),
        ("breached=false".into(), vec![d, c, b]),
        (format!("state=open&ci_id={}&priority=P1,P3", s.ci), vec![a]),
    ];
    for (query, expected) in cases {
        assert_eq!(s.ids(&format!("?{query}")).await, expected, "{query}");
    }

    for (query, names) in [
        ("state=gone", "state"),
        ("state=open,", "state"),
        ("priority=P6", "priority"),
        ("priority=1", "priority"),
        ("severity=urgent", "severity"),
        ("ci_id=abc", "ci_id"),
        ("ci_id=0", "ci_id"),
        ("rule_id=-1", "rule_id"),
        ("opened_since=yesterday", "opened_since"),
        ("opened_before=2025-13-01T00:00:00Z", "opened_before"),
        ("breached=yes", "breached"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("colour=red", "colour"),
        ("state=new&state=closed", "state"),
    ] {
        let (status, body) = s.c.get(&format!("/api/v1/incidents?{query}")).await;
        let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_filter");
        assert!(message.contains(names), "{query}: {message}");
    }
    let (status, body) = s.c.get("/api/v1/incidents?cursor=k1.zz").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_cursor");
}

#[tokio::test]
async fn cursor_pages_add_up_to_the_whole_list() {
    let s = Setup::start().await;
    let made: Vec<i64> = (0..7).map(|n| s.incident(&format!("/{n}"))).collect();
    for n in [1, 3] {
        put_in_state(&s.db, made[n], "resolved", s.now_ms());
    }
    for query in ["", "&state=open"] {
        let whole = s.ids(&format!("?limit=500{query}")).await;
        let mut paged = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut path = format!("/api/v1/incidents?limit=2{query}");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let page = s.c.get_ok(&path).await;
            let items = ids_of(&page);
            assert!(items.len() <= 2);
            paged.extend(items);
            pages += 1;
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(paged, whole, "{query}");
        assert_eq!(pages, whole.len().div_ceil(2), "{query}");
    }
    let mut expected = made.clone();
    expected.reverse();
    assert_eq!(s.ids("").await, expected);
    // The default page holds 50.
    let page = s.c.get_ok("/api/v1/incidents").await;
    assert_eq!(page["next_cursor"], Value::Null);
}

#[tokio::test]
async fn the_list_is_offered_as_csv() {
    let s = Setup::start().await;
    let first = s.incident("/");
    let second = s.incident("/home");
    let (status, content_type, text) = s.c.get_csv("/api/v1/incidents?limit=1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert!(
        lines[0].starts_with("id,number,state,priority,severity,ci_id,ci_name,"),
        "{text}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "{second},INC-{second:06},new,P3,high,{},web-1,",
            s.ci
        )),
        "{text}"
    );
    assert_eq!(lines.len(), 3, "{text}");
    assert_ne!(first, second);
}

#[tokio::test]
async fn breached_flips_when_the_clock_passes_the_response_due_time() {
    let s = Setup::start().await;
    let late = s.incident("/");
    let on_time = s.incident("/home");
    let opened = s.now();

    // Acknowledged within the 2 h response target.
    s.clock.advance(Duration::minutes(30));
    s.act_ok(on_time, "acknowledge", json!({})).await;

    // Exactly at the due time the target is still met.
    s.clock.set(opened + Duration::hours(2));
    assert_eq!(s.ids("?breached=true").await, Vec::<i64>::new());
    assert_eq!(s.ids("?breached=false").await, [on_time, late]);
    assert_eq!(s.incident_view(late).await["response_breached"], false);

    s.clock.advance(Duration::milliseconds(1));
    assert_eq!(s.ids("?breached=true").await, [late]);
    assert_eq!(s.ids("?breached=false").await, [on_time]);
    let view = s.incident_view(late).await;
    assert_eq!(view["response_breached"], true);
    assert_eq!(view["resolve_breached"], false);

    // Acknowledging late does not make the breach go away.
    let acked = s.act_ok(late, "acknowledge", json!({})).await;
    assert_eq!(acked["response_breached"], true);

    // Past the 24 h resolution target, the one acknowledged in time is breached too.
    s.clock
        .set(opened + Duration::hours(24) + Duration::milliseconds(1));
    assert_eq!(s.ids("?breached=true").await, [on_time, late]);
    let view = s.incident_view(on_time).await;
    assert_eq!(
        (&view["response_breached"], &view["resolve_breached"]),
        (&json!(false), &json!(true))
    );
}

#[tokio::test]
async fn a_priority_override_recomputes_the_due_times() {
    // A P1 target unlike the default, to see the configured one is used.
    let s = Setup::start_with(|config| {
        config.sla.p1.response =
            census_collector::config::Span(std::time::Duration::from_secs(600));
        config.sla.p1.resolution =
            census_collector::config::Span(std::time::Duration::from_secs(7200));
    })
    .await;
    let id = s.incident("/");
    let opened = s.now_ms();
    let before = s.incident_view(id).await;
    assert_eq!(before["response_due_at"], rfc3339(opened + 2 * HOUR));

    s.clock.advance(Duration::minutes(20));
    let changed = s
        .act_ok(
            id,
            "priority",
            json!({ "priority": "P1", "reason": "the CEO's laptop" }),
        )
        .await;
    assert_eq!(changed["priority"], "P1");
    assert_eq!(changed["priority_reason"], "the CEO's laptop");
    // From the opening time, not from now.
    assert_eq!(changed["response_due_at"], rfc3339(opened + 10 * MINUTE));
    assert_eq!(changed["resolve_due_at"], rfc3339(opened + 2 * HOUR));
    // 20 minutes in, the new 10-minute response target is already breached.
    assert_eq!(changed["response_breached"], true);
    assert_eq!(changed["impact"], before["impact"]);
    assert_eq!(changed["urgency"], before["urgency"]);
    let event = last_event(&changed);
    assert_eq!(event["kind"], "priority_changed");
    assert_eq!(
        event["detail"],
        json!({ "from": "P3", "to": "P1", "reason": "the CEO's laptop" })
    );
    assert_eq!(s.ids("?priority=P1").await, [id]);

    // Back down to P4 (default targets 8 h / 72 h), from an acknowledged state.
    s.act_ok(id, "acknowledge", json!({})).await;
    let lowered = s
        .act_ok(
            id,
            "priority",
            json!({ "priority": "p4", "reason": "not urgent after all" }),
        )
        .await;
    assert_eq!(lowered["priority"], "P4");
    assert_eq!(lowered["response_due_at"], rfc3339(opened + 8 * HOUR));
    assert_eq!(lowered["resolve_due_at"], rfc3339(opened + 72 * HOUR));
    assert_eq!(lowered["response_breached"], false);
}

#[tokio::test]
async fn kpis_of_a_hand_built_set() {
    let s = Setup::start().await;
    let other_ci = s.computer(OTHER_AGENT, "db-1").await;
    let fs = rule(&s.db, "Filesystem almost full");
    let memory = rule(&s.db, "Memory exhausted");
    let cpu = rule(&s.db, "CPU saturated");
    let b = s.now_ms();
    let m = MINUTE;
    let h = HOUR;
    let set = |id: i64, sql: &str, at: i64| exec(&s.db, sql, params![id, at]);
    const ACK: &str =
        "UPDATE incident SET state = 'acknowledged', acknowledged_at = ?2 WHERE id = ?1";
    const RESOLVE: &str = "UPDATE incident SET state = 'resolved', resolved_at = ?2 WHERE id = ?1";

    // A: web-1, fs, P1, acknowledged after 10 min, resolved after 1 h: both targets met.
    let a = open_incident(&s.db, s.ci, fs, "/a", 1, b, b + 15 * m, b + 4 * h);
    set(a, ACK, b + 10 * m);
    set(a, RESOLVE, b + h);
    // B: web-1, fs, P2, acknowledged after 40 min (late), resolved after 2 h (in time).
    let bb = open_incident(&s.db, s.ci, fs, "/b", 2, b + h, b + h + 30 * m, b + 9 * h);
    set(bb, ACK, b + h + 40 * m);
    set(bb, RESOLVE, b + 3 * h);
    // C: web-1, memory, P3, acknowledged after 20 min, open; resolution due after `now`.
    let c = open_incident(
        &s.db,
        s.ci,
        memory,
        "/c",
        3,
        b + 2 * h,
        b + 4 * h,
        b + 26 * h,
    );
    set(c, ACK, b + 2 * h + 20 * m);
    // D: db-1, fs, P1, never acknowledged: both targets breached by `now`.
    open_incident(
        &s.db,
        other_ci,
        fs,
        "/d",
        1,
        b + 3 * h,
        b + 3 * h + 15 * m,
        b + 7 * h,
    );
    // E: db-1, memory, P2, resolved by the collector after 20 min, unacknowledged: the
    // resolution met the response target too.
    let e = open_incident(
        &s.db,
        other_ci,
        memory,
        "/e",
        2,
        b + 4 * h,
        b + 4 * h + 30 * m,
        b + 12 * h,
    );
    set(e, RESOLVE, b + 4 * h + 20 * m);
    // F: before the range, open (acknowledged), P1: only in open_by_priority.
    let f = open_incident(
        &s.db,
        s.ci,
        cpu,
        "/f",
        1,
        b - 2 * h,
        b - 2 * h + 15 * m,
        b + 2 * h,
    );
    set(f, ACK, b - 2 * h + 10 * m);
    // G: opened before the range, resolved in it: only in `resolved`.
    let g = open_incident(&s.db, s.ci, cpu, "/g", 3, b - 3 * h, b - h, b + 21 * h);
    set(g, RESOLVE, b + 30 * m);
    // H: opened at the range's end (exclusive): in nothing but open_by_priority.
    open_incident(
        &s.db,
        other_ci,
        cpu,
        "/h",
        5,
        b + 9 * h,
        b + 33 * h,
        b + 177 * h,
    );

    s.clock.set(s.now() + Duration::hours(10));
    let from = rfc3339(b - h);
    let to = rfc3339(b + 9 * h);
    let kpis =
        s.c.get_ok(&format!("/api/v1/kpis?from={from}&to={to}"))
            .await;
    // Opened in the range: A B C D E. MTTA over A (600 s), B (2400 s), C (1200 s);
    // MTTR over A (3600 s), B (7200 s), E (1200 s). Response decided for all five, met by A,
    // C, E; resolution decided for A, B, D (due and open), E, met by A, B, E; compliance
    // decided for A, E (both met) and B, D (a breach), C undecided.
    assert_eq!(
        kpis,
        json!({
            "from": from,
            "to": to,
            "open_by_priority": { "P1": 2, "P2": 0, "P3": 1, "P4": 0, "P5": 1 },
            "opened": 5,
            "resolved": 4,
            "mtta_seconds": 1400.0,
            "mttr_seconds": 4000.0,
            "sla": {
                "response_met_percent": 60.0,
                "resolution_met_percent": 75.0,
                "compliance_percent": 50.0,
            },
            "top_cis": [
                { "ci_id": s.ci, "ci_name": "web-1", "incidents": 3 },
                { "ci_id": other_ci, "ci_name": "db-1", "incidents": 2 },
            ],
            "top_rules": [
                { "rule_id": fs, "rule_name": "Filesystem almost full", "incidents": 3 },
                { "rule_id": memory, "rule_name": "Memory exhausted", "incidents": 2 },
            ],
        })
    );

    // A range with nothing opened in it: nulls, not zeros.
    let empty =
        s.c.get_ok(&format!(
            "/api/v1/kpis?from={}&to={}",
            rfc3339(b - 30 * h),
            rfc3339(b - 20 * h)
        ))
        .await;
    assert_eq!(empty["opened"], 0);
    assert_eq!(empty["mtta_seconds"], Value::Null);
    assert_eq!(empty["mttr_seconds"], Value::Null);
    assert_eq!(
        empty["sla"],
        json!({ "response_met_percent": null, "resolution_met_percent": null,
                "compliance_percent": null })
    );
    assert_eq!(empty["top_cis"], json!([]));
    assert_eq!(empty["open_by_priority"]["P1"], 2);

    // The default range: the 30 days up to now, which holds all eight.
    let default = s.c.get_ok("/api/v1/kpis").await;
    assert_eq!(default["to"], s.now_text());
    assert_eq!(default["from"], rfc3339(s.now_ms() - 30 * 24 * h));
    assert_eq!(default["opened"], 8);

    for query in [
        format!("from={to}&to={from}"),
        format!("from={from}&to={from}"),
        "from=2024-01-01T00:00:00Z&to=2025-01-02T00:00:00Z".to_owned(),
        "from=yesterday".to_owned(),
        "until=now".to_owned(),
    ] {
        let (status, body) = s.c.get(&format!("/api/v1/kpis?{query}")).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_filter");
    }
    // 366 days exactly is allowed.
    let (status, _) =
        s.c.get("/api/v1/kpis?from=2024-01-01T00:00:00Z&to=2025-01-01T00:00:00Z")
            .await;
    assert_eq!(status, StatusCode::OK);
}

/// The outbox rows as (webhook id, event, incident id), in order.
fn deliveries(db: &Path) -> Vec<(i64, String, i64)> {
    let conn = conn(db);
    let mut stmt = conn
        .prepare("SELECT webhook_id, event, incident_id FROM webhook_delivery ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn webhook(db: &Path, events: &[&str], enabled: bool) -> i64 {
    let conn = conn(db);
    conn.execute(
        "INSERT INTO webhook (url, secret, events, enabled, created_by, created_at, updated_at)
         VALUES ('http://127.0.0.1:9/hook', 's3cret', ?1, ?2, 'test', 0, 0)",
        params![serde_json::to_string(events).unwrap(), enabled],
    )
    .unwrap();
    conn.last_insert_rowid()
}

#[tokio::test]
async fn acknowledge_resolve_and_reopen_fill_the_webhook_outbox() {
    let s = Setup::start().await;
    let all = [
        "incident.opened",
        "incident.acknowledged",
        "incident.resolved",
        "incident.reopened",
    ];
    let hook = webhook(&s.db, &all, true);
    let disabled = webhook(&s.db, &all, false);
    let resolved_only = webhook(&s.db, &["incident.resolved"], true);
    assert_ne!(hook, disabled);

    let id = s.incident("/");
    s.act_ok(id, "acknowledge", json!({})).await;
    s.act_ok(id, "assign", json!({ "assignee": "ann" })).await;
    s.act_ok(id, "notes", json!({ "text": "x" })).await;
    s.act_ok(id, "priority", json!({ "priority": "P2", "reason": "x" }))
        .await;
    s.act_ok(id, "resolve", json!({ "resolution": "done" }))
        .await;
    s.act_ok(id, "reopen", json!({ "reason": "back" })).await;
    // Assigning a new incident acknowledges it, and says so.
    let other = s.incident("/home");
    s.act_ok(other, "assign", json!({ "assignee": "bob" }))
        .await;
    s.act_ok(other, "resolve", json!({ "resolution": "done" }))
        .await;
    s.act_ok(other, "close", json!({})).await;

    let expected = vec![
        (hook, "incident.acknowledged".to_owned(), id),
        (hook, "incident.resolved".to_owned(), id),
        (resolved_only, "incident.resolved".to_owned(), id),
        (hook, "incident.reopened".to_owned(), id),
        (hook, "incident.acknowledged".to_owned(), other),
        (hook, "incident.resolved".to_owned(), other),
        (resolved_only, "incident.resolved".to_owned(), other),
    ];
    assert_eq!(deliveries(&s.db), expected);

    // The payload is the incident as the action left it.
    let payload: Value = serde_json::from_str(
        &conn(&s.db)
            .query_row(
                "SELECT payload FROM webhook_delivery WHERE event = 'incident.resolved'
                   AND incident_id = ?1 AND webhook_id = ?2",
                [id, hook],
                |r| r.get::<_, String>(0),
            )
            .unwrap(),
    )
    .unwrap();
    assert_eq!(payload["event"], "incident.resolved");
    assert_eq!(payload["incident"]["number"], format!("INC-{id:06}"));
    assert_eq!(payload["incident"]["state"], "resolved");
    assert_eq!(payload["incident"]["resolution"], "done");

    // A refused action queues nothing.
    let before = deliveries(&s.db);
    let (status, _) = s.act(other, "reopen", json!({ "reason": "x" })).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(deliveries(&s.db), before);
}

#[tokio::test]
async fn the_ci_view_lists_its_open_incidents() {
    let s = Setup::start().await;
    let other_ci = s.computer(OTHER_AGENT, "db-1").await;
    let view = s.c.get_ok(&format!("/api/v1/cis/{}", s.ci)).await;
    assert_eq!(view["open_incidents"], json!([]));

    let older = s.incident("/");
    let resolved = s.incident("/var");
    put_in_state(&s.db, resolved, "resolved", s.now_ms());
    let closed = s.incident("/tmp");
    put_in_state(&s.db, closed, "closed", s.now_ms());
    let newer = s.incident("/home");
    s.act_ok(newer, "assign", json!({ "assignee": "ann" }))
        .await;
    let elsewhere = open_incident(
        &s.db,
        other_ci,
        rule(&s.db, "Memory exhausted"),
        "",
        2,
        s.now_ms(),
        s.now_ms() + HOUR,
        s.now_ms() + 8 * HOUR,
    );

    let view = s.c.get_ok(&format!("/api/v1/cis/{}", s.ci)).await;
    let listed: Vec<i64> = view["open_incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, [newer, older]);
    // The same incidents as the list shows them.
    let list =
        s.c.get_ok(&format!("/api/v1/incidents?ci_id={}&state=open", s.ci))
            .await;
    assert_eq!(view["open_incidents"], list["items"]);
    let other = s.c.get_ok(&format!("/api/v1/cis/{other_ci}")).await;
    assert_eq!(other["open_incidents"][0]["id"], elsewhere);

    // An answer rebuilt for a past time has none.
    let at = s.now_text();
    let past = s.c.get_ok(&format!("/api/v1/cis/{}?at={at}", s.ci)).await;
    assert_eq!(past["open_incidents"], json!([]));

    // Resolving takes it off the view.
    s.act_ok(newer, "resolve", json!({ "resolution": "done" }))
        .await;
    let view = s.c.get_ok(&format!("/api/v1/cis/{}", s.ci)).await;
    assert_eq!(view["open_incidents"].as_array().unwrap().len(), 1);
    assert_eq!(view["open_incidents"][0]["id"], older);
    // An admin's change answers the CI with its open incidents too.
    let (status, patched) =
        s.c.patch_json(
            &format!("/api/v1/cis/{}", s.ci),
            &json!({ "criticality": 1 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["open_incidents"], view["open_incidents"]);
}
