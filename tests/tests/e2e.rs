//! End to end: the real agent binary inventories this machine and reports to the real collector
//! over HTTP on 127.0.0.1; the admin API then shows what the agent saw.

use census_tests::{TestAgent, TestCollector, http_request};
use serde_json::Value;

fn items(v: &Value) -> &Vec<Value> {
    v["items"]
        .as_array()
        .expect("a list answers { items: [...] }")
}

/// Every page of a list route, following `next_cursor`.
fn all_items(collector: &TestCollector, path: &str) -> Vec<Value> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut out = Vec::new();
    let mut page = collector.get(&format!("{path}{sep}limit=100"));
    loop {
        out.extend(items(&page).iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => page = collector.get(&format!("{path}{sep}limit=100&cursor={cursor}")),
            None => return out,
        }
    }
}

fn count_class(collector: &TestCollector, class: &str) -> usize {
    all_items(collector, &format!("/api/v1/cis?class={class}")).len()
}

#[test]
fn agent_once_puts_this_machine_in_the_cmdb_and_a_second_run_duplicates_nothing() {
    let collector = TestCollector::start();
    let agent = TestAgent::new();
    let inventory = agent.inventory();
    let hostname = inventory["host"]["hostname"].as_str().expect("hostname");
    let software_seen = inventory["software"].as_array().unwrap().len();
    let filesystems_seen = inventory["filesystems"].as_array().unwrap().len();
    let nics_seen = inventory["network_interfaces"].as_array().unwrap().len();

    agent.once(&collector);

    let computers = all_items(&collector, "/api/v1/cis?class=computer");
    assert_eq!(computers.len(), 1, "{computers:?}");
    assert_eq!(computers[0]["name"], hostname);
    let id = computers[0]["id"].as_i64().expect("numeric CI id");

    let ci = collector.get(&format!("/api/v1/cis/{id}"));
    assert_eq!(ci["class"], "computer");
    assert_eq!(ci["status"], "active");
    assert!(ci["health"].is_object(), "latest health is shown: {ci}");
    assert!(ci["health"]["cpu_percent"].is_number(), "{ci}");
    let contains = |ci: &Value| {
        ci["relationships"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["type"] == "contains")
            .count()
    };
    assert_eq!(contains(&ci), filesystems_seen + nics_seen, "{ci}");

    let software = all_items(&collector, &format!("/api/v1/cis/{id}/software"));
    assert_eq!(software.len(), software_seen);
    if let Some(dpkg_installed) = dpkg_installed_count() {
        let from_dpkg = software.iter().filter(|s| s["source"] == "dpkg").count();
        assert_eq!(from_dpkg, dpkg_installed, "dpkg packages in the CMDB");
    }
    assert_eq!(count_class(&collector, "filesystem"), filesystems_seen);
    assert_eq!(count_class(&collector, "network_interface"), nics_seen);

    let health = collector.get(&format!("/api/v1/cis/{id}/health"));
    assert_eq!(items(&health).len(), 1, "{health}");

    // Which computers run a package this machine has, and at which version.
    let first = &software[0];
    let name = first["name"].as_str().unwrap();
    let runs_it = collector.get(&format!("/api/v1/software?name={name}"));
    assert!(
        items(&runs_it)
            .iter()
            .any(|row| row["ci_id"] == id && row["version"] == first["version"]),
        "{runs_it}"
    );

    // Nothing changed on the machine: a second cycle adds a health sample and nothing else.
    agent.once(&collector);
    assert_eq!(all_items(&collector, "/api/v1/cis?class=computer").len(), 1);
    assert_eq!(
        all_items(&collector, &format!("/api/v1/cis/{id}/software")).len(),
        software_seen
    );
    assert_eq!(count_class(&collector, "filesystem"), filesystems_seen);
    assert_eq!(count_class(&collector, "network_interface"), nics_seen);
    assert_eq!(
        contains(&collector.get(&format!("/api/v1/cis/{id}"))),
        contains(&ci)
    );
    let health = collector.get(&format!("/api/v1/cis/{id}/health"));
    assert_eq!(items(&health).len(), 2, "{health}");
}

#[test]
fn the_cmdb_survives_a_collector_restart() {
    let collector = TestCollector::start();
    let agent = TestAgent::new();
    agent.once(&collector);
    let before = collector.get("/api/v1/cis?class=computer");

    let collector = TestCollector::start_in(collector.stop());
    assert_eq!(
        collector.get("/api/v1/cis?class=computer")["items"],
        before["items"]
    );
    // The agent remembers its acked inventory, so the restarted collector gets health only and
    // still files it under the same computer.
    agent.once(&collector);
    let id = before["items"][0]["id"].as_i64().unwrap();
    let health = collector.get(&format!("/api/v1/cis/{id}/health"));
    assert_eq!(items(&health).len(), 2, "{health}");
}

#[test]
fn readiness_and_unknown_ci() {
    let collector = TestCollector::start();
    assert_eq!(collector.get("/livez")["status"], "ok");
    let (status, _) = census_tests::http_get(collector.addr, "/readyz");
    assert_eq!(status, 200);
    let (status, body) = census_tests::http_get(collector.addr, "/api/v1/cis/999999");
    assert_eq!(status, 401, "the API needs a token: {body}");
    let (status, body) = census_tests::http_request(
        collector.addr,
        "GET",
        "/api/v1/cis/999999",
        &[(
            "Authorization",
            &format!("Bearer {}", collector.admin_token),
        )],
        b"",
    );
    assert_eq!(status, 404);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}

/// Installed packages by dpkg's own count, when this machine has dpkg: the packages whose
/// current state (the second letter of `db:Status-Abbrev`) is "installed", whatever the admin
/// wants done with them (`ii`, and also `hi` held and `ri` marked for removal).
fn dpkg_installed_count() -> Option<usize> {
    let out = std::process::Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Abbrev}\n"])
        .output()
        .ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.as_bytes().get(1) == Some(&b'i'))
            .count()
    })
}

/// A machine inventoried by hand first (`census-agent inventory` posted to `/api/v1/import`),
/// then by its agent: one computer CI, found again by the agent, with both sources in its
/// history.
#[test]
fn an_imported_machine_is_the_same_ci_when_its_agent_reports() {
    let collector = TestCollector::start();
    let agent = TestAgent::new();
    let document = agent.inventory();
    let software_seen = document["software"].as_array().unwrap().len();
    let body = serde_json::to_vec(&document).unwrap();
    let token = format!("Bearer {}", collector.admin_token);
    let (status, answer) = http_request(
        collector.addr,
        "POST",
        "/api/v1/import",
        &[
            ("Authorization", token.as_str()),
            ("Content-Type", "application/json"),
        ],
        &body,
    );
    assert_eq!(status, 201, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["created"], true);
    assert_eq!(answer["identified_by"], "new");
    let id = answer["ci_id"].as_i64().unwrap();
    assert_eq!(
        all_items(&collector, &format!("/api/v1/cis/{id}/software")).len(),
        software_seen
    );

    agent.once(&collector);
    let computers = all_items(&collector, "/api/v1/cis?class=computer");
    assert_eq!(computers.len(), 1, "{computers:?}");
    assert_eq!(computers[0]["id"], id);
    let rule = computers[0]["identified_by"].as_str().unwrap().to_owned();
    assert_ne!(rule, "new");
    let history = all_items(&collector, &format!("/api/v1/cis/{id}/history"));
    let sources: std::collections::BTreeSet<&str> = history
        .iter()
        .map(|row| row["source"].as_str().unwrap())
        .collect();
    assert!(
        sources.iter().any(|s| s.starts_with("import:")),
        "{sources:?}"
    );
    assert!(
        history.iter().any(|row| row["kind"] == "agent_changed"),
        "{history:?}"
    );
}

/// A JSON request with the admin token; answers the status and the parsed body.
fn admin_json(collector: &TestCollector, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let token = format!("Bearer {}", collector.admin_token);
    let (status, answer) = http_request(
        collector.addr,
        method,
        path,
        &[
            ("Authorization", token.as_str()),
            ("Content-Type", "application/json"),
        ],
        body.to_string().as_bytes(),
    );
    (status, serde_json::from_str(&answer).unwrap_or(Value::Null))
}

#[test]
fn a_rule_low_enough_to_fire_opens_an_incident_that_resolves_when_the_rule_is_raised() {
    let collector = TestCollector::start();
    let agent = TestAgent::new();
    agent.once(&collector);
    let computer = all_items(&collector, "/api/v1/cis?class=computer")[0].clone();
    let ci_id = computer["id"].as_i64().unwrap();

    // Every running machine has been up for more than a second.
    let (status, rule) = admin_json(
        &collector,
        "POST",
        "/api/v1/rules",
        &serde_json::json!({
            "name": "up at all",
            "metric": "uptime_secs",
            "operator": ">",
            "threshold": 1,
            "for": "0s",
            "clear_for": "0s",
            "severity": "low",
        }),
    );
    assert_eq!(status, 201, "{rule}");
    let rule_id = rule["id"].as_i64().unwrap();

    agent.once(&collector);
    let open = all_items(
        &collector,
        &format!("/api/v1/incidents?state=open&rule_id={rule_id}"),
    );
    assert_eq!(open.len(), 1, "{open:?}");
    let incident = &open[0];
    assert_eq!(incident["ci_id"], ci_id);
    assert_eq!(incident["state"], "new");
    assert!(
        incident["number"].as_str().unwrap().starts_with("INC-"),
        "{incident}"
    );
    let number = incident["number"].as_str().unwrap().to_owned();
    let shown = collector.get(&format!("/api/v1/cis/{ci_id}"));
    assert_eq!(
        shown["open_incidents"][0]["number"],
        number.as_str(),
        "{shown}"
    );

    // Nobody's uptime reaches a million years.
    let (status, raised) = admin_json(
        &collector,
        "PATCH",
        &format!("/api/v1/rules/{rule_id}"),
        &serde_json::json!({ "threshold": 3.2e13 }),
    );
    assert_eq!(status, 200, "{raised}");
    agent.once(&collector);
    let detail = collector.get(&format!("/api/v1/incidents/{number}"));
    assert_eq!(detail["state"], "resolved", "{detail}");
    assert_eq!(detail["resolved_by"], "collector");
    let kinds: Vec<&str> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["opened", "resolved"]);
}
