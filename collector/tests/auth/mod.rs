//! Who may do what over HTTP: admin roles on `/api/v1`, enrollment, agent tokens bound to
//! their agent. Tokens are made with the real `census-collector` commands against the data dir
//! of a serving collector, as an admin would.

use reqwest::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::support::*;

/// The id of a credential text `prefix_id_secret`.
fn id_of(credential: &str) -> &str {
    credential.split('_').nth(1).unwrap()
}

async fn enroll(c: &TestCollector, secret: &str, agent: &str) -> (StatusCode, Value) {
    let response = c
        .client
        .post(c.url("/agent/v1/enroll"))
        .json(&json!({ "secret": secret, "agent_id": agent, "hostname": "pc-1" }))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

fn health_batch(agent: &str, seq: u64) -> Vec<u8> {
    let batch = batch(
        agent,
        vec![health_report(agent, seq, OffsetDateTime::now_utc(), 5.0)],
    );
    census_common::codec::encode(&batch, census_common::Format::MessagePack)
}

async fn cis(c: &TestCollector) -> usize {
    c.get_ok("/api/v1/cis").await["items"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn api_routes_need_an_admin_token_of_a_sufficient_role() {
    let c = TestCollector::start();
    let viewer = cli(
        &c,
        &["token", "create", "--role", "viewer", "--name", "grafana"],
    );
    assert!(viewer.starts_with("cat_"), "{viewer}");
    let agent_token = c.agent_token(AGENT).await;

    for token in [
        None,
        Some("not-a-token"),
        Some(agent_token.as_str()),
        Some("cat_000000000000_0000000000000000000000000000000000000000000000000000000000000000"),
    ] {
        let response = {
            let mut request = c.client.get(c.url("/api/v1/cis"));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            request.send().await.unwrap()
        };
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let status = response.status();
        let body = response.json().await.unwrap();
        assert_error(status, &body, StatusCode::UNAUTHORIZED, "token_invalid");
    }

    // A viewer reads but may not see the enrollment secrets, which need the admin role.
    assert_eq!(
        c.get_as(Some(&viewer), "/api/v1/cis").await.0,
        StatusCode::OK
    );
    let (status, body) = c.get_as(Some(&viewer), "/api/v1/enroll-secrets").await;
    let message = assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    assert!(message.contains("admin role"), "{message}");
    let operator = cli(
        &c,
        &["token", "create", "--role", "operator", "--name", "oncall"],
    );
    let (status, _) = c.get_as(Some(&operator), "/api/v1/enroll-secrets").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let secrets = c.get_ok("/api/v1/enroll-secrets").await;
    assert_eq!(secrets["items"][0]["name"], "test");
    assert_eq!(secrets["items"][0]["uses"], 1);
    assert!(secrets["items"][0].get("hash").is_none());

    // Revoked by the CLI while the collector serves: refused at once.
    cli(&c, &["token", "revoke", id_of(&viewer)]);
    let (status, body) = c.get_as(Some(&viewer), "/api/v1/cis").await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "token_invalid");
    // The probes stay open.
    assert_eq!(c.get_as(None, "/livez").await.0, StatusCode::OK);
    assert_eq!(c.get_as(None, "/readyz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn enrollment_trades_a_valid_secret_for_a_token_bound_to_the_agent() {
    let c = TestCollector::start();
    let secret = cli(&c, &["enroll-secret", "create", "--name", "laptops"]);
    let (status, body) = enroll(&c, &secret, AGENT).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("cag_"), "{token}");
    let response = c
        .post_raw_as(
            Some(&token),
            health_batch(AGENT, 1),
            "application/msgpack",
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    // Wrong, malformed and revoked secrets: 401, and nothing is written.
    let db = c.data_dir().join("census.db");
    let wrong = format!("ces_{}_{}", id_of(&secret), "0".repeat(64));
    cli(&c, &["enroll-secret", "revoke", id_of(&secret)]);
    let before = crate::support::dump(&db);
    for bad in [wrong.as_str(), "hunter2", "", secret.as_str()] {
        let (status, body) = enroll(&c, bad, OTHER_AGENT).await;
        assert_error(
            status,
            &body,
            StatusCode::UNAUTHORIZED,
            "enroll_secret_invalid",
        );
    }
    assert_eq!(
        crate::support::dump(&db),
        before,
        "a refused enrollment wrote"
    );
    // Agents enrolled with a revoked secret keep their tokens.
    let response = c
        .post_raw_as(
            Some(&token),
            health_batch(AGENT, 2),
            "application/msgpack",
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    // Malformed requests.
    let (status, body) = enroll(&c, &c.enroll_secret, "not-a-uuid").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_body");
    let response = c
        .client
        .post(c.url("/agent/v1/enroll"))
        .header("content-type", "application/json")
        .body("{\"secret\": 1}")
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert_error(
        status,
        &response.json().await.unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_body",
    );
    let listed = cli(&c, &["token", "list"]);
    assert!(
        !listed.contains(&token),
        "token list shows a token: {listed}"
    );
}

#[tokio::test]
async fn an_agent_token_writes_only_its_own_agents_reports() {
    let c = TestCollector::start();
    let token = c.agent_token(AGENT).await;
    let post = |token: Option<String>, body: Vec<u8>| {
        let c = &c;
        async move {
            let response = c
                .post_raw_as(token.as_deref(), body, "application/msgpack", None)
                .await;
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    };

    let db = c.data_dir().join("census.db");
    let before = crate::support::dump(&db);
    // A batch for another agent.
    let (status, body) = post(Some(token.clone()), health_batch(OTHER_AGENT, 1)).await;
    let message = assert_error(status, &body, StatusCode::FORBIDDEN, "agent_forbidden");
    assert!(message.contains(OTHER_AGENT), "{message}");
    // A batch of this agent holding a report of another.
    let mut mixed = batch(
        AGENT,
        vec![health_report(AGENT, 1, OffsetDateTime::now_utc(), 5.0)],
    );
    mixed.reports.push(inventory_report(
        2,
        inventory(OTHER_AGENT, "intruder", &[], &[], &[]),
    ));
    let (status, body) = post(
        Some(token.clone()),
        census_common::codec::encode(&mixed, census_common::Format::MessagePack),
    )
    .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "agent_forbidden");
    assert_eq!(cis(&c).await, 0, "a refused batch stored something");
    assert_eq!(crate::support::dump(&db), before, "a refused batch wrote");

    // Missing, malformed, admin and revoked tokens.
    for bad in [
        None,
        Some("garbage".to_owned()),
        Some(c.admin_token.clone()),
    ] {
        let (status, body) = post(bad, health_batch(AGENT, 1)).await;
        assert_error(
            status,
            &body,
            StatusCode::UNAUTHORIZED,
            "agent_token_invalid",
        );
    }
    cli(&c, &["token", "revoke", id_of(&token)]);
    let (status, body) = post(Some(token), health_batch(AGENT, 1)).await;
    let message = assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "agent_token_invalid",
    );
    assert!(message.contains("census-agent enroll"), "{message}");

    // The agent's own batch with a fresh token is stored.
    let (status, body) = enroll(&c, &c.enroll_secret, AGENT).await;
    assert_eq!(status, StatusCode::OK);
    let fresh = body["token"].as_str().unwrap().to_owned();
    let inv = batch(
        AGENT,
        vec![inventory_report(1, inventory(AGENT, "pc-1", &[], &[], &[]))],
    );
    let (status, _) = post(
        Some(fresh),
        census_common::codec::encode(&inv, census_common::Format::MessagePack),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cis(&c).await, 1);
}

async fn metrics_as(c: &TestCollector, token: Option<&str>) -> (StatusCode, String) {
    let mut request = c.client.get(c.url("/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

#[tokio::test]
async fn metrics_need_a_token_unless_configured_open_and_count_refusals() {
    let c = TestCollector::start();
    let (status, _) = metrics_as(&c, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    c.ingest(&batch(
        AGENT,
        vec![health_report(AGENT, 1, OffsetDateTime::now_utc(), 5.0)],
    ))
    .await;
    c.ingest(&batch(
        AGENT,
        vec![health_report(AGENT, 1, OffsetDateTime::now_utc(), 5.0)],
    ))
    .await;
    let (status, text) = metrics_as(&c, Some(&c.admin_token)).await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        "census_reports_stored_total 1",
        "census_reports_repeated_total 1",
        "census_enrollments_total 1",
        "census_http_errors_total{code=\"token_invalid\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }

    let open = TestCollector::start_with(tempfile::tempdir().unwrap(), |config| {
        config.metrics_open = true;
    });
    let (status, text) = metrics_as(&open, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.contains("# TYPE census_store_commits_total counter"),
        "{text}"
    );
    // The API stays closed.
    assert_eq!(
        open.get_as(None, "/api/v1/cis").await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn enrollment_is_rate_limited_per_client_address() {
    let c = TestCollector::start_with(tempfile::tempdir().unwrap(), |config| {
        config.enroll_rate_per_minute = 3;
    });
    // The test's own credentials were made in the store, so the budget is whole.
    let agents = [
        "11111111-1111-4111-8111-111111111111",
        "22222222-2222-4222-8222-222222222222",
        "33333333-3333-4333-8333-333333333333",
    ];
    for agent in agents {
        let (status, body) = enroll(&c, &c.enroll_secret, agent).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let db = c.data_dir().join("census.db");
    let before = crate::support::dump(&db);
    let response = c
        .client
        .post(c.url("/agent/v1/enroll"))
        .json(&json!({ "secret": c.enroll_secret, "agent_id": AGENT, "hostname": "pc" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    // 3 a minute: the next one in at most 20 s.
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry), "Retry-After {retry}");
    let body: Value = response.json().await.unwrap();
    let message = assert_error(
        StatusCode::TOO_MANY_REQUESTS,
        &body,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    );
    assert!(message.contains("enroll_rate_per_minute"), "{message}");
    assert_eq!(
        crate::support::dump(&db),
        before,
        "a limited enrollment wrote"
    );
    let (_, metrics) = metrics_as(&c, Some(&c.admin_token)).await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "census_http_errors_total{code=\"rate_limited\"} 1"),
        "{metrics}"
    );
}
