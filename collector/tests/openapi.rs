//! The OpenAPI document against the code: it lists exactly the routes `router()` serves, every
//! documented query parameter is one the route takes, and real answers of a real collector
//! validate against the schemas the document gives for their status.

#[allow(dead_code)] // this binary uses a part of the helpers
mod support;

use std::collections::BTreeSet;

use census_collector::api::openapi;
use census_common::{HealthSample, Report, ReportBody, Software};
use reqwest::StatusCode;
use serde_json::Value;
use support::*;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Operations the document describes that `router()` does not serve on this branch yet: their
/// handlers or registrations land with other work. The test fails once one is served, so that
/// it is taken off this list.
const NOT_YET_ROUTED: &[(&str, &str)] = &[];

fn document() -> Value {
    serde_json::from_str(&openapi::openapi_json()).expect("the document is JSON")
}

/// (method, path) of every route registered in `router()`, read from its source, so that a
/// route added without a description fails here.
fn routed() -> BTreeSet<(String, String)> {
    let source: String = include_str!("../src/api/mod.rs")
        .split("#[cfg(test)]")
        .next()
        .unwrap()
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut routes = BTreeSet::new();
    for chunk in source.split(".route(").skip(1) {
        let chunk = chunk.trim_start();
        let path = chunk
            .strip_prefix('"')
            .and_then(|rest| rest.split('"').next())
            .expect("a route path is a string literal");
        // The method router: up to the parenthesis that closes `.route(`.
        let mut depth = 1;
        let end = chunk
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map(|(i, _)| i)
            .expect("`.route(` is closed");
        let methods = &chunk[..end];
        for method in ["get", "post", "put", "patch", "delete"] {
            let called = methods.match_indices(&format!("{method}(")).any(|(i, _)| {
                !methods[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':')
            });
            if called {
                routes.insert((method.to_owned(), path.to_owned()));
            }
        }
    }
    assert!(!routes.is_empty(), "no `.route(` found in api/mod.rs");
    routes
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                operations.insert((method.clone(), path.clone()));
            }
        }
    }
    operations
}

#[test]
fn the_document_is_openapi_3_1_with_unique_operation_ids() {
    let doc = document();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "Census collector");
    let mut ids = BTreeSet::new();
    for (method, path) in documented(&doc) {
        let id = doc["paths"][&path][&method]["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
        assert!(ids.insert(id.to_owned()), "operationId {id} twice");
    }
}

#[test]
fn the_document_lists_exactly_the_routes_the_router_serves() {
    let doc = document();
    let documented = documented(&doc);
    let routed = routed();
    let missing: Vec<_> = routed.difference(&documented).collect();
    assert!(missing.is_empty(), "served but not documented: {missing:?}");
    let pending: BTreeSet<_> = NOT_YET_ROUTED
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let now_routed: Vec<_> = pending.intersection(&routed).collect();
    assert!(
        now_routed.is_empty(),
        "served now, take them off NOT_YET_ROUTED: {now_routed:?}"
    );
    let extra: Vec<_> = documented
        .difference(&routed)
        .filter(|op| !pending.contains(*op))
        .collect();
    assert!(extra.is_empty(), "documented but not served: {extra:?}");
}

#[test]
fn the_admin_api_requires_the_admin_token_and_the_probes_none() {
    let doc = document();
    let scheme = &doc["components"]["securitySchemes"]["admin_token"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    for (method, path) in documented(&doc) {
        let operation = &doc["paths"][&path][&method];
        let security = &operation["security"];
        let responses = operation["responses"].as_object().unwrap();
        // `/metrics` is documented as it is served by default: behind an admin token.
        let needs_token = path.starts_with("/api/v1/") || path == "/metrics";
        if needs_token {
            assert_eq!(
                security,
                &serde_json::json!([{ "admin_token": [] }]),
                "{method} {path}"
            );
            for status in ["401", "403", "429"] {
                assert!(responses.contains_key(status), "{method} {path} {status}");
            }
        } else if !path.starts_with("/agent/") {
            assert!(security.is_null(), "{method} {path} needs no token");
        }
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
        }
        if let Some(parameters) = operation["parameters"].as_array() {
            for id in parameters.iter().filter(|p| p["in"] == "path") {
                assert_eq!(id["schema"]["type"], "integer", "{method} {path}");
                assert_eq!(id["schema"]["format"], "int64", "{method} {path}");
            }
        }
    }
}

/// A computer with parts, software (one package with unknown fields) and health samples.
async fn populated() -> (TestCollector, i64) {
    let c = TestCollector::start();
    let unknown_vendor = Software {
        vendor: None,
        arch: None,
        ..package("tzdata", "2025b")
    };
    let inv = inventory(
        AGENT,
        "web-1",
        &[package("openssl", "3.0.11"), unknown_vendor],
        &["/", "/home"],
        &["eth0"],
    );
    let now = OffsetDateTime::now_utc();
    let mut sample = HealthSample::empty(AGENT, now);
    sample.cpu_percent = Some(3.5);
    sample.load = Some([0.5, 0.25, 0.125]);
    sample.filesystems = vec![census_common::FilesystemUsage {
        mount: "/".into(),
        used_percent: Some(51.0),
        inodes_used_percent: None,
    }];
    c.ingest(&batch(
        AGENT,
        vec![
            inventory_report(1, inv),
            health_report(AGENT, 2, now - time::Duration::minutes(2), 10.0),
            Report {
                seq: 3,
                body: ReportBody::Health(sample),
            },
        ],
    ))
    .await;
    let list = c.get_ok("/api/v1/cis?class=computer").await;
    let id = list["items"][0]["id"].as_i64().unwrap();
    (c, id)
}

#[tokio::test]
async fn real_answers_validate_against_the_document() {
    let doc = document();
    let (c, id) = populated().await;
    let filesystem = c.get_ok("/api/v1/cis?class=filesystem&limit=1").await;
    let part = filesystem["items"][0]["id"].as_i64().unwrap();
    let cursor = filesystem["next_cursor"].as_str().unwrap().to_owned();
    let sorted = c
        .get_ok("/api/v1/cis?sort=-hostname&include_retired=true&limit=2")
        .await;
    let sorted_cursor = sorted["next_cursor"].as_str().unwrap().to_owned();

    // (path template, concrete path, the status it must answer)
    let cases = [
        ("/api/v1/cis", "/api/v1/cis".to_owned(), 200),
        (
            "/api/v1/cis",
            "/api/v1/cis?class=filesystem&limit=1".to_owned(),
            200,
        ),
        (
            "/api/v1/cis",
            format!("/api/v1/cis?class=filesystem&cursor={cursor}"),
            200,
        ),
        ("/api/v1/cis", "/api/v1/cis?status=gone".to_owned(), 400),
        ("/api/v1/cis", "/api/v1/cis?cursor=nope".to_owned(), 400),
        (
            "/api/v1/cis",
            "/api/v1/cis?sort=-hostname&include_retired=true&limit=2".to_owned(),
            200,
        ),
        (
            "/api/v1/cis",
            format!("/api/v1/cis?sort=-hostname&include_retired=true&cursor={sorted_cursor}"),
            200,
        ),
        (
            "/api/v1/cis",
            "/api/v1/cis?has_software=openssl&has_software_version=3.0.11&os=linux\
             &name_contains=WEB&criticality_max=3&last_seen_after=2000-01-01T00:00:00Z"
                .to_owned(),
            200,
        ),
        ("/api/v1/cis", "/api/v1/cis?criticality=7".to_owned(), 400),
        ("/api/v1/cis", "/api/v1/cis?sort=colour".to_owned(), 400),
        (
            "/api/v1/cis",
            "/api/v1/cis?last_seen_before=x".to_owned(),
            400,
        ),
        (
            "/api/v1/cis",
            "/api/v1/cis?has_software_version=1".to_owned(),
            400,
        ),
        (
            "/api/v1/cis",
            format!("/api/v1/cis?sort=hostname&cursor={sorted_cursor}"),
            400,
        ),
        ("/api/v1/cis/{id}", format!("/api/v1/cis/{id}"), 200),
        ("/api/v1/cis/{id}", format!("/api/v1/cis/{part}"), 200),
        ("/api/v1/cis/{id}", "/api/v1/cis/999999".to_owned(), 404),
        ("/api/v1/cis/{id}", "/api/v1/cis/abc".to_owned(), 400),
        (
            "/api/v1/cis/{id}/software",
            format!("/api/v1/cis/{id}/software"),
            200,
        ),
        (
            "/api/v1/cis/{id}/software",
            format!("/api/v1/cis/{id}/software?limit=1"),
            200,
        ),
        (
            "/api/v1/cis/{id}/software",
            "/api/v1/cis/999999/software".to_owned(),
            404,
        ),
        (
            "/api/v1/cis/{id}/health",
            format!("/api/v1/cis/{id}/health"),
            200,
        ),
        (
            "/api/v1/cis/{id}/health",
            format!("/api/v1/cis/{id}/health?limit=1"),
            200,
        ),
        (
            "/api/v1/cis/{id}/health",
            format!("/api/v1/cis/{id}/health?from=x"),
            400,
        ),
        (
            "/api/v1/software",
            "/api/v1/software?name=tzdata".to_owned(),
            200,
        ),
        (
            "/api/v1/software",
            "/api/v1/software?name=openssl".to_owned(),
            200,
        ),
        ("/api/v1/software", "/api/v1/software".to_owned(), 400),
        (
            "/api/v1/software",
            "/api/v1/software?name_contains=SSL&version_lt=9&include_retired=true".to_owned(),
            200,
        ),
        (
            "/api/v1/software",
            "/api/v1/software?name=openssl&version_ge=".to_owned(),
            400,
        ),
        (
            "/api/v1/software/catalog",
            "/api/v1/software/catalog".to_owned(),
            200,
        ),
        (
            "/api/v1/software/catalog",
            "/api/v1/software/catalog?include_unused=true&limit=1".to_owned(),
            200,
        ),
        (
            "/api/v1/software/catalog",
            "/api/v1/software/catalog?include_unused=yes".to_owned(),
            400,
        ),
        (
            "/api/v1/cis/{id}/sbom",
            format!("/api/v1/cis/{part}/sbom"),
            409,
        ),
        (
            "/api/v1/cis/{id}/sbom",
            "/api/v1/cis/999999/sbom".to_owned(),
            404,
        ),
        (
            "/api/v1/cis/{id}/sbom",
            "/api/v1/cis/abc/sbom".to_owned(),
            400,
        ),
        ("/livez", "/livez".to_owned(), 200),
        ("/readyz", "/readyz".to_owned(), 200),
    ];
    for (template, path, expected) in cases {
        let (status, body) = c.get(&path).await;
        assert_eq!(status.as_u16(), expected, "GET {path}: {body}");
        let schema = response_schema(&doc, template, "get", status);
        let errors = Validator { doc: &doc }.validate(&body, schema);
        assert!(
            errors.is_empty(),
            "GET {path} ({status}) does not match the document:\n{}\n{body:#}",
            errors.join("\n")
        );
    }

    // The answers above exercised what the schemas allow: nulls, a health sample, paging.
    let ci = c.get_ok(&format!("/api/v1/cis/{id}")).await;
    assert!(ci["health"]["load"].is_array() && ci["health"]["uptime_secs"].is_null());
    assert!(c.get_ok(&format!("/api/v1/cis/{part}")).await["health"].is_null());
    let tzdata = c.get_ok("/api/v1/software?name=tzdata").await;
    assert!(tzdata["items"][0]["vendor"].is_null());
    let health = c.get_ok(&format!("/api/v1/cis/{id}/health?limit=1")).await;
    assert!(health["next_cursor"].is_string());
}

/// The answers of the admin writes, the relationship routes and the walks, successes and
/// refusals, against the document.
#[tokio::test]
async fn admin_writes_relationships_and_walks_validate_against_the_document() {
    let doc = document();
    let (c, computer) = populated().await;
    let disk = c.get_ok("/api/v1/cis?class=filesystem&limit=1").await["items"][0]["id"]
        .as_i64()
        .unwrap();
    let validator = Validator { doc: &doc };
    let check = |template: &str, method: &str, status: StatusCode, body: &Value| {
        let schema = response_schema(&doc, template, method, status);
        let errors = validator.validate(body, schema);
        assert!(
            errors.is_empty(),
            "{method} {template} ({status}) does not match the document:\n{}\n{body:#}",
            errors.join("\n")
        );
    };
    let documented = |template: &str, method: &str, status: u16| {
        assert!(
            doc["paths"][template][method]["responses"][status.to_string()].is_object(),
            "{method} {template}: {status} is not documented"
        );
    };

    let (status, app) = c
        .post_json(
            "/api/v1/cis",
            &serde_json::json!({ "class": "application", "name": "app", "attributes": { "a": 1 } }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    check("/api/v1/cis", "post", status, &app);
    let app = app["id"].as_i64().unwrap();
    let (status, service) = c
        .post_json(
            "/api/v1/cis",
            &serde_json::json!({ "class": "business_service", "name": "svc", "criticality": 1 }),
        )
        .await;
    check("/api/v1/cis", "post", status, &service);
    let service = service["id"].as_i64().unwrap();
    let (status, body) = c
        .post_json(
            "/api/v1/cis",
            &serde_json::json!({ "class": "filesystem", "name": "x" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    check("/api/v1/cis", "post", status, &body);
    let (status, body) = c.post_json("/api/v1/cis", &serde_json::json!([])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    check("/api/v1/cis", "post", status, &body);

    let (status, body) = c
        .patch_json(
            &format!("/api/v1/cis/{app}"),
            &serde_json::json!({ "criticality": 2, "attributes": { "a": null } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    check("/api/v1/cis/{id}", "patch", status, &body);
    for (id, patch, expected) in [
        (computer, serde_json::json!({ "name": "x" }), 409),
        (app, serde_json::json!({ "status": "stale" }), 422),
        (999_999, serde_json::json!({}), 404),
    ] {
        let (status, body) = c.patch_json(&format!("/api/v1/cis/{id}"), &patch).await;
        assert_eq!(status.as_u16(), expected, "{body}");
        check("/api/v1/cis/{id}", "patch", status, &body);
    }

    let (status, rel) = c
        .post_json(
            "/api/v1/relationships",
            &serde_json::json!({ "source": app, "type": "runs_on", "target": computer }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    check("/api/v1/relationships", "post", status, &rel);
    let (status, with_note) = c
        .post_json(
            "/api/v1/relationships",
            &serde_json::json!({
                "source": service, "type": "depends_on", "target": app, "description": "core",
            }),
        )
        .await;
    check("/api/v1/relationships", "post", status, &with_note);
    for (body, expected) in [
        (
            serde_json::json!({ "source": app, "type": "runs_on", "target": computer }),
            409,
        ),
        (
            serde_json::json!({ "source": app, "type": "owns", "target": computer }),
            422,
        ),
    ] {
        let (status, answer) = c.post_json("/api/v1/relationships", &body).await;
        assert_eq!(status.as_u16(), expected, "{answer}");
        check("/api/v1/relationships", "post", status, &answer);
    }
    let rel_path = format!("/api/v1/relationships/{}", rel["id"]);
    let (status, body) = c
        .patch_json(&rel_path, &serde_json::json!({ "description": "prod" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    check("/api/v1/relationships/{id}", "patch", status, &body);
    let (status, body) = c.get("/api/v1/relationships/999999").await;
    check("/api/v1/relationships/{id}", "get", status, &body);

    for (template, path) in [
        ("/api/v1/relationships", "/api/v1/relationships".to_owned()),
        (
            "/api/v1/relationships",
            format!("/api/v1/relationships?ci={app}&limit=1"),
        ),
        (
            "/api/v1/relationships",
            "/api/v1/relationships?type=owns".to_owned(),
        ),
        ("/api/v1/relationships/{id}", rel_path.clone()),
        (
            "/api/v1/cis/{id}/impact",
            format!("/api/v1/cis/{disk}/impact"),
        ),
        (
            "/api/v1/cis/{id}/impact",
            format!("/api/v1/cis/{disk}/impact?max_depth=1"),
        ),
        (
            "/api/v1/cis/{id}/impact",
            format!("/api/v1/cis/{disk}/impact?max_depth=99"),
        ),
        (
            "/api/v1/cis/{id}/impact",
            "/api/v1/cis/999999/impact".to_owned(),
        ),
        (
            "/api/v1/cis/{id}/dependencies",
            format!("/api/v1/cis/{service}/dependencies"),
        ),
        (
            "/api/v1/cis/{id}/dependencies",
            format!("/api/v1/cis/{service}/dependencies?include_retired=true"),
        ),
        ("/api/v1/cis/{id}", format!("/api/v1/cis/{app}")),
    ] {
        let (status, body) = c.get(&path).await;
        check(template, "get", status, &body);
    }
    // The walks above found something, so their items were checked too.
    let impact = c.get_ok(&format!("/api/v1/cis/{disk}/impact")).await;
    assert_eq!(impact["items"].as_array().unwrap().len(), 3, "{impact}");

    let (status, body) = c.delete(&format!("/api/v1/cis/{computer}")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    check("/api/v1/cis/{id}", "delete", status, &body);
    let (status, _) = c.delete(&rel_path).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    documented("/api/v1/relationships/{id}", "delete", 204);
    let (status, body) = c.delete(&rel_path).await;
    check("/api/v1/relationships/{id}", "delete", status, &body);
    let (status, _) = c.delete(&format!("/api/v1/cis/{app}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    documented("/api/v1/cis/{id}", "delete", 204);
}

/// The incident routes' answers, and a CI's with open incidents, successes and refusals,
/// against the document. The incident is inserted as the engine would make it.
#[tokio::test]
async fn incident_answers_validate_against_the_document() {
    let doc = document();
    let (c, computer) = populated().await;
    let now = OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let db = rusqlite::Connection::open(c.data_dir().join("census.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    db.execute(
        "INSERT INTO incident (ci_id, rule_id, rule_name, metric, dimension, title, description,
                               state, severity, impact, urgency, priority, opened_at,
                               response_due_at, resolve_due_at, updated_at)
         SELECT ?1, id, name, metric, '/', name, 'test', 'new', severity, 2, 2, 3, ?2,
                ?2 + 7200000, ?2 + 86400000, ?2
         FROM rule WHERE name = 'Filesystem almost full'",
        rusqlite::params![computer, now],
    )
    .unwrap();
    db.execute(
        "INSERT INTO incident_event (incident_id, at, kind, actor, detail)
         VALUES (?1, ?2, 'opened', 'collector', '{\"value\": 93.5}')",
        rusqlite::params![db.last_insert_rowid(), now],
    )
    .unwrap();
    let id = db.last_insert_rowid();
    let validator = Validator { doc: &doc };
    let check = |template: &str, method: &str, status: StatusCode, body: &Value| {
        let schema = response_schema(&doc, template, method, status);
        let errors = validator.validate(body, schema);
        assert!(
            errors.is_empty(),
            "{method} {template} ({status}) does not match the document:\n{}\n{body:#}",
            errors.join("\n")
        );
    };

    let ci = c.get_ok(&format!("/api/v1/cis/{computer}")).await;
    assert_eq!(ci["open_incidents"][0]["id"], id);
    check("/api/v1/cis/{id}", "get", StatusCode::OK, &ci);
    for (template, path, expected) in [
        ("/api/v1/incidents", "/api/v1/incidents".to_owned(), 200),
        (
            "/api/v1/incidents",
            "/api/v1/incidents?state=open&priority=P3&breached=false&limit=1".to_owned(),
            200,
        ),
        (
            "/api/v1/incidents",
            "/api/v1/incidents?state=gone".to_owned(),
            400,
        ),
        (
            "/api/v1/incidents/{id}",
            format!("/api/v1/incidents/{id}"),
            200,
        ),
        (
            "/api/v1/incidents/{id}",
            "/api/v1/incidents/INC-999999".to_owned(),
            404,
        ),
        ("/api/v1/kpis", "/api/v1/kpis".to_owned(), 200),
        ("/api/v1/kpis", "/api/v1/kpis?from=x".to_owned(), 400),
    ] {
        let (status, body) = c.get(&path).await;
        assert_eq!(status.as_u16(), expected, "GET {path}: {body}");
        check(template, "get", status, &body);
    }
    let kpis = c.get_ok("/api/v1/kpis").await;
    assert_eq!(kpis["opened"], 1);

    for (action, body, expected) in [
        ("acknowledge", serde_json::json!({ "note": "mine" }), 200),
        ("acknowledge", serde_json::json!({}), 409),
        ("assign", serde_json::json!({ "assignee": "ann" }), 200),
        ("notes", serde_json::json!({ "text": "x" }), 200),
        (
            "priority",
            serde_json::json!({ "priority": "P1", "reason": "vip" }),
            200,
        ),
        (
            "priority",
            serde_json::json!({ "priority": "P9", "reason": "x" }),
            422,
        ),
        ("resolve", serde_json::json!({ "resolution": "done" }), 200),
        ("close", serde_json::json!({}), 200),
        ("reopen", serde_json::json!({ "reason": "x" }), 409),
        ("close", serde_json::json!([]), 400),
    ] {
        let template = format!("/api/v1/incidents/{{id}}/{action}");
        let (status, answer) = c
            .post_json(&format!("/api/v1/incidents/{id}/{action}"), &body)
            .await;
        assert_eq!(status.as_u16(), expected, "{action} {body}: {answer}");
        check(&template, "post", status, &answer);
    }
    let (status, answer) = c
        .post_json(
            "/api/v1/incidents/999999/notes",
            &serde_json::json!({ "text": "x" }),
        )
        .await;
    check("/api/v1/incidents/{id}/notes", "post", status, &answer);
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_validator_refuses_what_the_document_rules_out() {
    let doc = document();
    let (c, id) = populated().await;
    let ci = c.get_ok(&format!("/api/v1/cis/{id}")).await;
    let schema = response_schema(&doc, "/api/v1/cis/{id}", "get", StatusCode::OK);
    let validator = Validator { doc: &doc };
    assert!(validator.validate(&ci, schema).is_empty());
    type Mutation = (&'static str, fn(&mut Value));
    let mutations: [Mutation; 7] = [
        ("a required field missing", |v| {
            v.as_object_mut().unwrap().remove("identified_by");
        }),
        ("an undocumented field", |v| v["colour"] = "blue".into()),
        ("a wrong type", |v| v["id"] = "1".into()),
        ("null where none is allowed", |v| v["name"] = Value::Null),
        ("a value outside the enum", |v| v["status"] = "gone".into()),
        ("not a time", |v| v["first_seen"] = "yesterday".into()),
        ("a bad nested sample", |v| {
            v["health"]["load"] = serde_json::json!([1.0])
        }),
    ];
    for (what, mutate) in mutations {
        let mut wrong = ci.clone();
        mutate(&mut wrong);
        assert!(
            !validator.validate(&wrong, schema).is_empty(),
            "{what} passed"
        );
    }
}

#[tokio::test]
async fn the_ingest_answer_validates_against_the_document() {
    let doc = document();
    let c = TestCollector::start();
    let ack = c
        .ingest(&batch(
            AGENT,
            vec![health_report(AGENT, 1, OffsetDateTime::now_utc(), 1.0)],
        ))
        .await;
    let schema = response_schema(&doc, "/agent/v1/reports", "post", StatusCode::OK);
    let errors = Validator { doc: &doc }.validate(&ack, schema);
    assert!(errors.is_empty(), "{}\n{ack:#}", errors.join("\n"));
}

#[tokio::test]
async fn every_documented_query_parameter_is_taken() {
    let doc = document();
    let (c, id) = populated().await;
    for (method, path) in documented(&doc) {
        if method != "get" {
            continue;
        }
        let Some(parameters) = doc["paths"][&path]["get"]["parameters"].as_array() else {
            continue;
        };
        let concrete = path.replace("{id}", &id.to_string());
        for parameter in parameters.iter().filter(|p| p["in"] == "query") {
            let name = parameter["name"].as_str().unwrap();
            let value = match name {
                "limit" => "1",
                "status" => "active",
                "from" | "to" | "last_seen_before" | "last_seen_after" => "2025-03-01T12:00:00Z",
                "criticality" | "criticality_max" => "2",
                "include_retired" => "true",
                "sort" => "-name",
                "cursor" => "k1.1",
                _ => "x",
            };
            let (status, body) = c.get(&format!("{concrete}?{name}={value}")).await;
            let message = body["error"]["message"].as_str().unwrap_or("");
            assert!(
                !message.contains("unknown query parameter"),
                "GET {path}: documented `{name}` refused: {body}"
            );
            assert!(status.as_u16() < 500, "GET {path}?{name}: {body}");
        }
    }
}

#[tokio::test]
async fn the_document_is_served_to_any_admin_token_only() {
    let c = TestCollector::start();
    let (status, _) = c.get_as(None, "/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let response = c
        .client
        .get(c.url("/api/v1/openapi.json"))
        .bearer_auth(&c.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, document());
}

/// The schema of the answer `status` of an operation.
fn response_schema<'a>(doc: &'a Value, path: &str, method: &str, status: StatusCode) -> &'a Value {
    let responses = &doc["paths"][path][method]["responses"];
    let response = &responses[status.as_str()];
    assert!(
        response.is_object(),
        "{method} {path}: status {status} is not documented"
    );
    let schema = &response["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path} {status}: no JSON schema"
    );
    schema
}

/// A JSON Schema validator for the keywords utoipa emits. A keyword it does not know fails the
/// validation, so that no constraint is ignored unnoticed. Objects are checked strictly: a
/// property the schema does not name is an error, since the document is meant to be exact.
struct Validator<'a> {
    doc: &'a Value,
}

const ANNOTATIONS: &[&str] = &["description", "title", "example", "examples", "default"];

impl Validator<'_> {
    fn validate(&self, value: &Value, schema: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(value, schema, "$", true, &mut errors);
        errors
    }

    fn resolve<'s>(&'s self, schema: &'s Value) -> &'s Value {
        match schema["$ref"].as_str() {
            Some(reference) => {
                let name = reference
                    .strip_prefix("#/components/schemas/")
                    .unwrap_or_else(|| panic!("unsupported $ref {reference}"));
                let target = &self.doc["components"]["schemas"][name];
                assert!(target.is_object(), "dangling $ref {reference}");
                self.resolve(target)
            }
            None => schema,
        }
    }

    /// The property names an object may have under `schema`, through `$ref` and `allOf`;
    /// `None` when it may have any (a free-form object).
    fn named_properties(&self, schema: &Value) -> Option<BTreeSet<String>> {
        let schema = self.resolve(schema);
        if let Some(parts) = schema["allOf"].as_array() {
            let mut names = BTreeSet::new();
            for part in parts {
                names.extend(self.named_properties(part)?);
            }
            return Some(names);
        }
        if schema.get("additionalProperties").is_some() {
            return None;
        }
        schema["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
    }

    fn check(
        &self,
        value: &Value,
        schema: &Value,
        at: &str,
        strict: bool,
        errors: &mut Vec<String>,
    ) {
        let schema = self.resolve(schema);
        let object = schema.as_object().expect("a schema is an object");
        for keyword in object.keys() {
            let known = ANNOTATIONS.contains(&keyword.as_str())
                || [
                    "type",
                    "format",
                    "enum",
                    "properties",
                    "required",
                    "items",
                    "minItems",
                    "maxItems",
                    "minimum",
                    "maximum",
                    "minLength",
                    "allOf",
                    "oneOf",
                    "$ref",
                ]
                .contains(&keyword.as_str());
            assert!(known, "the validator does not know `{keyword}` (at {at})");
        }
        if let Some(types) = object.get("type") {
            let types: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().map(|t| t.as_str().unwrap()).collect(),
                other => panic!("bad type {other}"),
            };
            if !types.iter().any(|t| has_type(value, t)) {
                errors.push(format!("{at}: {value} is not of type {types:?}"));
                return;
            }
        }
        if let Some(values) = object.get("enum")
            && !values.as_array().unwrap().contains(value)
        {
            errors.push(format!("{at}: {value} is not one of {values}"));
        }
        if let (Some(format), Some(text)) = (object.get("format"), value.as_str()) {
            match format.as_str().unwrap() {
                "date-time" => {
                    if OffsetDateTime::parse(text, &Rfc3339).is_err() {
                        errors.push(format!("{at}: {text:?} is not an RFC 3339 time"));
                    }
                }
                "uuid" => {
                    if uuid::Uuid::parse_str(text).is_err() {
                        errors.push(format!("{at}: {text:?} is not a UUID"));
                    }
                }
                other => panic!("the validator does not know format {other} (at {at})"),
            }
        }
        if let (Some(format), Some(n)) = (object.get("format"), value.as_f64()) {
            let fits = match format.as_str().unwrap() {
                "int64" => value.is_i64() || value.is_u64(),
                "int32" => {
                    value.as_i64().is_some_and(|n| i32::try_from(n).is_ok())
                        || value.as_u64().is_some_and(|n| u32::try_from(n).is_ok())
                }
                "double" | "float" => true,
                other => panic!("the validator does not know format {other} (at {at})"),
            };
            if !fits {
                errors.push(format!("{at}: {n} does not fit {format}"));
            }
        }
        if let (Some(minimum), Some(n)) = (object.get("minimum"), value.as_f64())
            && n < minimum.as_f64().unwrap()
        {
            errors.push(format!("{at}: {n} is below {minimum}"));
        }
        if let (Some(maximum), Some(n)) = (object.get("maximum"), value.as_f64())
            && n > maximum.as_f64().unwrap()
        {
            errors.push(format!("{at}: {n} is above {maximum}"));
        }
        if let (Some(min), Some(text)) = (object.get("minLength"), value.as_str())
            && (text.chars().count() as u64) < min.as_u64().unwrap()
        {
            errors.push(format!("{at}: {text:?} is shorter than {min}"));
        }
        if let Some(items) = value.as_array() {
            if let Some(min) = object.get("minItems")
                && (items.len() as u64) < min.as_u64().unwrap()
            {
                errors.push(format!("{at}: fewer than {min} items"));
            }
            if let Some(max) = object.get("maxItems")
                && (items.len() as u64) > max.as_u64().unwrap()
            {
                errors.push(format!("{at}: more than {max} items"));
            }
            if let Some(item_schema) = object.get("items") {
                for (i, item) in items.iter().enumerate() {
                    self.check(item, item_schema, &format!("{at}[{i}]"), true, errors);
                }
            }
        }
        if let Some(fields) = value.as_object() {
            for name in object
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = name.as_str().unwrap();
                if !fields.contains_key(name) {
                    errors.push(format!("{at}: required `{name}` is missing"));
                }
            }
            if let Some(properties) = object.get("properties").and_then(Value::as_object) {
                for (name, property) in properties {
                    if let Some(field) = fields.get(name) {
                        self.check(field, property, &format!("{at}.{name}"), true, errors);
                    }
                }
            }
            if strict && let Some(named) = self.named_properties(schema) {
                for name in fields.keys().filter(|n| !named.contains(*n)) {
                    errors.push(format!("{at}: `{name}` is not in the document"));
                }
            }
        }
        if let Some(parts) = object.get("allOf").and_then(Value::as_array) {
            // Each part sees only its own properties; the union was checked above.
            for part in parts {
                self.check(value, part, at, false, errors);
            }
        }
        if let Some(alternatives) = object.get("oneOf").and_then(Value::as_array) {
            let matching = alternatives
                .iter()
                .filter(|alternative| {
                    let mut found = Vec::new();
                    self.check(value, alternative, at, strict, &mut found);
                    found.is_empty()
                })
                .count();
            if matching != 1 {
                errors.push(format!(
                    "{at}: {value} matches {matching} of the oneOf alternatives, not exactly one"
                ));
            }
        }
    }
}

fn has_type(value: &Value, name: &str) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        other => panic!("unknown type {other}"),
    }
}
