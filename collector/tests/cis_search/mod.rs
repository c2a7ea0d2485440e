//! `GET /api/v1/cis` as admins script it: every filter, every sort both ways, keyset paging
//! while agents keep reporting, the CSV answer, and a 400 for every invalid parameter.

use std::collections::HashSet;
use std::sync::Arc;

use census_collector::api::cis::{CSV_COLUMNS, LIST_PARAMS};
use census_collector::clock::ManualClock;
use census_common::Inventory;
use reqwest::StatusCode;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::support::*;

/// A canonical agent id for agent `n`.
fn agent(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// Percent-encodes a query value.
fn enc(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn items(page: &Value) -> &Vec<Value> {
    page["items"].as_array().expect("a list page")
}

fn names_of(page: &Value) -> Vec<String> {
    items(page)
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Every page of `path` (which has a query), following `next_cursor`.
async fn walk(c: &TestCollector, path: &str, limit: u32) -> Vec<Value> {
    let mut out = Vec::new();
    let mut next = format!("{path}&limit={limit}");
    loop {
        let page = c.get_ok(&next).await;
        assert!(items(&page).len() <= limit as usize, "{page}");
        out.extend(items(&page).iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => next = format!("{path}&limit={limit}&cursor={cursor}"),
            None => return out,
        }
    }
}

struct Machine {
    agent: String,
    hostname: &'static str,
    os: (&'static str, &'static str),
    vendor: Option<&'static str>,
    model: Option<&'static str>,
    serial: &'static str,
    packages: Vec<(&'static str, &'static str)>,
    mounts: Vec<&'static str>,
}

impl Machine {
    fn inventory(&self) -> Inventory {
        let packages: Vec<_> = self
            .packages
            .iter()
            .map(|(name, version)| package(name, version))
            .collect();
        let mut inv = inventory(&self.agent, self.hostname, &packages, &self.mounts, &[]);
        inv.os.name = Some(self.os.0.into());
        inv.os.version = Some(self.os.1.into());
        inv.hardware.vendor = self.vendor.map(Into::into);
        inv.hardware.model = self.model.map(Into::into);
        inv.hardware.serial = Some(self.serial.into());
        inv
    }
}

/// Four computers on a manual clock. At `t0`: web-1 (Debian 12, Dell, openssl 3.0.11 and bash)
/// and Web-2 (Rocky 9, HPE, openssl 1.1.1w, mounts / and /data). At `t0 + 1h`: Web-2 again
/// without /data (which is retired), db_1% (Debian 11, Dell, bash) and dbx1 (Rocky 9, Lenovo).
/// Ids: web-1 1, web-1:/ 2, Web-2 3, Web-2:/ 4, Web-2:/data 5, db_1% 6, db_1%:/ 7, dbx1 8,
/// dbx1:/ 9.
async fn fleet() -> (TestCollector, OffsetDateTime) {
    let t0 = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let clock = Arc::new(ManualClock::new(t0));
    let c = TestCollector::start_with_clock(tempfile::tempdir().unwrap(), clock.clone(), |_| {});
    let web1 = Machine {
        agent: agent(1),
        hostname: "web-1",
        os: ("Debian GNU/Linux", "12"),
        vendor: Some("Dell Inc."),
        model: Some("PowerEdge R640"),
        serial: "SN-A",
        packages: vec![("openssl", "3.0.11"), ("bash", "5.2")],
        mounts: vec!["/"],
    };
    let mut web2 = Machine {
        agent: agent(2),
        hostname: "Web-2",
        os: ("Rocky Linux", "9"),
        vendor: Some("HPE"),
        model: Some("DL380"),
        serial: "SN-B",
        packages: vec![("openssl", "1.1.1w")],
        mounts: vec!["/", "/data"],
    };
    let db = Machine {
        agent: agent(3),
        hostname: "db_1%",
        os: ("Debian GNU/Linux", "11"),
        vendor: Some("Dell Inc."),
        model: None,
        serial: "SN-C",
        packages: vec![("bash", "5.2")],
        mounts: vec!["/"],
    };
    let dbx = Machine {
        agent: agent(4),
        hostname: "dbx1",
        os: ("Rocky Linux", "9"),
        vendor: Some("Lenovo"),
        model: Some("ThinkSystem"),
        serial: "SN-D",
        packages: vec![],
        mounts: vec!["/"],
    };
    c.ingest(&batch(
        &web1.agent,
        vec![inventory_report(1, web1.inventory())],
    ))
    .await;
    c.ingest(&batch(
        &web2.agent,
        vec![inventory_report(1, web2.inventory())],
    ))
    .await;
    clock.advance(time::Duration::HOUR);
    web2.mounts = vec!["/"];
    c.ingest(&batch(
        &web2.agent,
        vec![inventory_report(2, web2.inventory())],
    ))
    .await;
    for m in [&db, &dbx] {
        c.ingest(&batch(&m.agent, vec![inventory_report(1, m.inventory())]))
            .await;
    }
    (c, t0)
}

#[tokio::test]
async fn every_filter_selects_its_cis() {
    let (c, t0) = fleet().await;
    let t1 = (t0 + time::Duration::HOUR).format(&Rfc3339).unwrap();
    let all = walk(&c, "/api/v1/cis?include_retired=true", 100).await;
    assert_eq!(
        all.iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        [
            "web-1",
            "web-1:/",
            "Web-2",
            "Web-2:/",
            "Web-2:/data",
            "db_1%",
            "db_1%:/",
            "dbx1",
            "dbx1:/"
        ],
        "the fixture is as its doc says"
    );
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            "".into(),
            vec![
                "web-1", "web-1:/", "Web-2", "Web-2:/", "db_1%", "db_1%:/", "dbx1", "dbx1:/",
            ],
        ),
        (
            "class=filesystem".into(),
            vec!["web-1:/", "Web-2:/", "db_1%:/", "dbx1:/"],
        ),
        ("status=retired".into(), vec!["Web-2:/data"]),
        (
            "status=active&class=filesystem&include_retired=true".into(),
            vec!["web-1:/", "Web-2:/", "db_1%:/", "dbx1:/"],
        ),
        (
            "class=filesystem&include_retired=true".into(),
            vec!["web-1:/", "Web-2:/", "Web-2:/data", "db_1%:/", "dbx1:/"],
        ),
        (
            "class=filesystem&include_retired=false".into(),
            vec!["web-1:/", "Web-2:/", "db_1%:/", "dbx1:/"],
        ),
        ("name=web-1".into(), vec!["web-1"]),
        ("name=WEB-1".into(), vec![]),
        ("name_prefix=web-1".into(), vec!["web-1", "web-1:/"]),
        ("name_prefix=Web".into(), vec!["Web-2", "Web-2:/"]),
        (
            "name_contains=WEB-".into(),
            vec!["web-1", "web-1:/", "Web-2", "Web-2:/"],
        ),
        (
            format!("name_contains={}", enc("b_1")),
            vec!["db_1%", "db_1%:/"],
        ),
        (
            format!("name_contains={}", enc("%")),
            vec!["db_1%", "db_1%:/"],
        ),
        (format!("name_contains={}", enc("1%:")), vec!["db_1%:/"]),
        ("hostname=Web-2".into(), vec!["Web-2"]),
        ("hostname=web-2".into(), vec![]),
        ("hostname_contains=WEB".into(), vec!["web-1", "Web-2"]),
        (format!("hostname_contains={}", enc("_")), vec!["db_1%"]),
        ("os=linux".into(), vec!["web-1", "Web-2", "db_1%", "dbx1"]),
        (format!("os={}", enc("Rocky Linux")), vec!["Web-2", "dbx1"]),
        (
            format!("os_name={}", enc("Debian GNU/Linux")),
            vec!["web-1", "db_1%"],
        ),
        ("os_name=linux".into(), vec![]),
        ("os_version=9".into(), vec!["Web-2", "dbx1"]),
        (
            format!("vendor={}", enc("Dell Inc.")),
            vec!["web-1", "db_1%"],
        ),
        ("model=DL380".into(), vec!["Web-2"]),
        ("serial=SN-C".into(), vec!["db_1%"]),
        (
            "class=computer&criticality=3".into(),
            vec!["web-1", "Web-2", "db_1%", "dbx1"],
        ),
        ("criticality=1".into(), vec![]),
        ("criticality_max=2".into(), vec![]),
        (
            "class=computer&criticality_max=3".into(),
            vec!["web-1", "Web-2", "db_1%", "dbx1"],
        ),
        (
            format!("class=computer&last_seen_before={}", enc(&t1)),
            vec!["web-1"],
        ),
        (
            format!("class=computer&last_seen_after={}", enc(&t1)),
            vec!["Web-2", "db_1%", "dbx1"],
        ),
        // The same instant in another offset.
        (
            format!(
                "class=computer&last_seen_after={}",
                enc(&(t0 + time::Duration::HOUR)
                    .to_offset(time::macros::offset!(+02:00))
                    .format(&Rfc3339)
                    .unwrap())
            ),
            vec!["Web-2", "db_1%", "dbx1"],
        ),
        ("has_software=openssl".into(), vec!["web-1", "Web-2"]),
        (
            "has_software=openssl&has_software_version=1.1.1w".into(),
            vec!["Web-2"],
        ),
        ("has_software=openssl&has_software_version=9".into(), vec![]),
        ("has_software=bash".into(), vec!["web-1", "db_1%"]),
        ("has_software=zsh".into(), vec![]),
        (
            format!("os=linux&vendor={}&has_software=bash", enc("Dell Inc.")),
            vec!["web-1", "db_1%"],
        ),
        (
            format!(
                "os=linux&vendor={}&has_software=bash&os_version=12",
                enc("Dell Inc.")
            ),
            vec!["web-1"],
        ),
        (format!("class={}", enc("x' OR '1'='1")), vec![]),
    ];
    for (query, expected) in cases {
        let page = c.get_ok(&format!("/api/v1/cis?{query}")).await;
        assert_eq!(names_of(&page), expected, "?{query}");
    }
}

/// The value an item sorts by, as the API shows it: (no value, number, text).
fn sort_key(item: &Value, key: &str) -> (bool, Option<i128>, Option<String>) {
    let value = match key {
        "id" | "name" | "criticality" | "class" | "status" => item[key].clone(),
        "first_seen" | "last_seen" => {
            let t = OffsetDateTime::parse(item[key].as_str().unwrap(), &Rfc3339).unwrap();
            Value::from(t.unix_timestamp_nanos() as i64)
        }
        attribute => item["attributes"][attribute].clone(),
    };
    match value {
        Value::Null => (true, None, None),
        Value::Number(n) => (false, Some(i128::from(n.as_i64().unwrap())), None),
        Value::String(s) => (false, None, Some(s)),
        other => panic!("unexpected sort value {other}"),
    }
}

const SORT_KEYS: &[&str] = &[
    "id",
    "name",
    "hostname",
    "os_name",
    "os_version",
    "vendor",
    "model",
    "serial",
    "criticality",
    "last_seen",
    "first_seen",
    "class",
    "status",
];

#[tokio::test]
async fn every_sort_orders_both_ways() {
    let (c, _) = fleet().await;
    for key in SORT_KEYS {
        let up = walk(
            &c,
            &format!("/api/v1/cis?include_retired=true&sort={key}"),
            2,
        )
        .await;
        let down = walk(
            &c,
            &format!("/api/v1/cis?include_retired=true&sort=-{key}"),
            3,
        )
        .await;
        assert_eq!(up.len(), 9, "sort={key}");
        // Ascending: by key, CIs without it last, ties by id.
        for pair in up.windows(2) {
            let a = (sort_key(&pair[0], key), pair[0]["id"].as_i64());
            let b = (sort_key(&pair[1], key), pair[1]["id"].as_i64());
            assert!(a < b, "sort={key}: {} before {}", pair[0], pair[1]);
        }
        // Descending is ascending reversed.
        let mut reversed: Vec<_> = up.iter().map(|i| i["id"].as_i64()).collect();
        reversed.reverse();
        let down: Vec<_> = down.iter().map(|i| i["id"].as_i64()).collect();
        assert_eq!(down, reversed, "sort=-{key}");
    }
    let page = |query: &'static str| {
        let c = &c;
        async move { names_of(&c.get_ok(&format!("/api/v1/cis?{query}")).await) }
    };
    // Bytewise: capitals first.
    assert_eq!(
        page("class=computer&sort=hostname").await,
        ["Web-2", "db_1%", "dbx1", "web-1"]
    );
    assert_eq!(
        page("class=computer&sort=-hostname").await,
        ["web-1", "dbx1", "db_1%", "Web-2"]
    );
    // The three that reported an hour later, latest id first among equals.
    assert_eq!(
        page("class=computer&sort=-last_seen").await,
        ["dbx1", "db_1%", "Web-2", "web-1"]
    );
    // CIs without a model come last ascending, first descending.
    assert_eq!(
        page("os=linux&sort=model").await,
        ["Web-2", "web-1", "dbx1", "db_1%"]
    );
    assert_eq!(
        page("os=linux&sort=-model").await,
        ["db_1%", "dbx1", "web-1", "Web-2"]
    );
    assert_eq!(
        page("has_software=bash&sort=-name").await,
        ["web-1", "db_1%"]
    );
}

#[tokio::test]
async fn paging_a_sorted_list_while_agents_report_misses_and_repeats_nothing() {
    let c = TestCollector::start_with(tempfile::tempdir().unwrap(), |config| {
        config.enroll_rate_per_minute = 60_000;
        config.reports_burst = 100_000;
    });
    let mut next_agent = 0u32;
    let mut add = |hostname: String, mounts: &[&str]| {
        next_agent += 1;
        let id = agent(next_agent);
        let inv = inventory(&id, &hostname, &[], mounts, &[]);
        batch(&id, vec![inventory_report(1, inv)])
    };
    for n in 0..8 {
        c.ingest(&add(format!("m-{n:02}"), &["/"])).await;
    }
    let existing: Vec<String> = (1..=8).map(agent).collect();
    let mut health_seq = 1u64;
    for sort in [
        "name",
        "-name",
        "hostname",
        "-hostname",
        "-last_seen",
        "criticality",
        "-id",
    ] {
        let start: HashSet<i64> = walk(&c, "/api/v1/cis?sort=id", 1000)
            .await
            .iter()
            .map(|i| i["id"].as_i64().unwrap())
            .collect();
        let mut seen = Vec::new();
        let mut path = format!("/api/v1/cis?sort={sort}&limit=3");
        let mut pages = 0;
        loop {
            let page = c.get_ok(&path).await;
            seen.extend(items(&page).iter().cloned());
            pages += 1;
            // Between two pages: a new computer whose name sorts before or after everything,
            // every other time with a part (no hostname), and, unless the list is sorted by
            // it, a report that moves an existing computer's last_seen. At most two new CIs
            // land after the cursor per page of three, so the walk ends.
            let inserted = if pages % 2 == 0 {
                add(format!("a-{pages}-{sort}"), &["/"])
            } else {
                add(format!("z-{pages}-{sort}"), &[])
            };
            c.ingest(&inserted).await;
            if sort != "-last_seen" {
                health_seq += 1;
                let who = &existing[pages % existing.len()];
                c.ingest(&batch(
                    who,
                    vec![health_report(
                        who,
                        health_seq,
                        OffsetDateTime::now_utc(),
                        1.0,
                    )],
                ))
                .await;
            }
            match page["next_cursor"].as_str() {
                Some(cursor) => path = format!("/api/v1/cis?sort={sort}&limit=3&cursor={cursor}"),
                None => break,
            }
            assert!(pages < 200, "sort={sort}: the walk does not end");
        }
        assert!(pages > 5, "sort={sort}: {pages} pages");
        let ids: Vec<i64> = seen.iter().map(|i| i["id"].as_i64().unwrap()).collect();
        let unique: HashSet<i64> = ids.iter().copied().collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "sort={sort}: a CI came twice: {ids:?}"
        );
        let missing: Vec<_> = start.difference(&unique).collect();
        assert!(
            missing.is_empty(),
            "sort={sort}: never returned: {missing:?}"
        );
        // And what came, came in order.
        let key = sort.trim_start_matches('-');
        let descending = sort.starts_with('-');
        for pair in seen.windows(2) {
            let a = (sort_key(&pair[0], key), pair[0]["id"].as_i64());
            let b = (sort_key(&pair[1], key), pair[1]["id"].as_i64());
            assert!(
                if descending { a > b } else { a < b },
                "sort={sort}: {} then {}",
                pair[0],
                pair[1]
            );
        }
    }
}

/// GET with `Accept: text/csv`: status, headers, body.
async fn get_csv_page(
    c: &TestCollector,
    path: &str,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let response = c
        .client
        .get(c.url(path))
        .bearer_auth(&c.admin_token)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

#[tokio::test]
async fn csv_answers_the_page_with_the_next_one_in_link() {
    let (c, _) = fleet().await;
    let json = walk(&c, "/api/v1/cis?os=linux&sort=-hostname", 100).await;
    let mut path = "/api/v1/cis?os=linux&sort=-hostname&limit=3".to_owned();
    let mut rows = Vec::new();
    let mut pages = 0;
    loop {
        let (status, headers, body) = get_csv_page(&c, &path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
        pages += 1;
        let mut lines = body.split("\r\n");
        assert_eq!(lines.next().unwrap(), CSV_COLUMNS.join(","));
        assert_eq!(body.split("\r\n").last(), Some(""), "CRLF after each row");
        rows.extend(lines.filter(|l| !l.is_empty()).map(str::to_owned));
        match headers.get("link") {
            Some(link) => {
                let link = link.to_str().unwrap();
                let url = link
                    .strip_prefix('<')
                    .and_then(|l| l.strip_suffix(">; rel=\"next\""))
                    .unwrap_or_else(|| panic!("Link {link}"));
                assert!(url.starts_with("/api/v1/cis?os=linux&sort=-hostname&limit=3&cursor="));
                let cursor = headers["x-next-cursor"].to_str().unwrap();
                assert!(url.ends_with(&format!("cursor={cursor}")), "{url}");
                path = url.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(pages, 2);
    let expected: Vec<String> = json
        .iter()
        .map(|i| {
            let text = |v: &Value| v.as_str().map(str::to_owned).unwrap_or_default();
            let a = &i["attributes"];
            [
                i["id"].to_string(),
                text(&i["class"]),
                text(&i["name"]),
                text(&i["status"]),
                i["criticality"].to_string(),
                text(&a["hostname"]),
                text(&a["os_name"]),
                text(&a["os_version"]),
                text(&a["vendor"]),
                text(&a["model"]),
                text(&a["serial"]),
                text(&i["identified_by"]),
                text(&i["first_seen"]),
                text(&i["last_seen"]),
            ]
            .join(",")
        })
        .collect();
    assert_eq!(rows, expected);
    assert!(
        rows[0].starts_with("1,computer,web-1,active,3,web-1,Debian GNU/Linux,12,Dell Inc.,"),
        "{}",
        rows[0]
    );
    // Errors stay JSON.
    let (status, _, body) = get_csv_page(&c, "/api/v1/cis?sort=colour").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "invalid_filter");
}

#[tokio::test]
async fn every_invalid_parameter_is_refused_with_its_name() {
    let (c, _) = fleet().await;
    let long = "x".repeat(4097);
    let cases: Vec<(String, &str)> = vec![
        ("colour=red".into(), "colour"),
        ("class=a&class=b".into(), "class"),
        ("status=gone".into(), "status"),
        ("status=Active".into(), "status"),
        ("include_retired=yes".into(), "include_retired"),
        ("include_retired=".into(), "include_retired"),
        ("criticality=7".into(), "criticality"),
        ("criticality=0".into(), "criticality"),
        ("criticality=high".into(), "criticality"),
        ("criticality_max=5".into(), "criticality_max"),
        ("criticality_max=-1".into(), "criticality_max"),
        ("last_seen_before=yesterday".into(), "last_seen_before"),
        ("last_seen_after=2025-03-01".into(), "last_seen_after"),
        (
            "last_seen_after=2025-03-02T00:00:00Z&last_seen_before=2025-03-01T00:00:00Z".into(),
            "last_seen_after",
        ),
        ("has_software_version=1.0".into(), "has_software_version"),
        ("sort=colour".into(), "sort"),
        ("sort=--name".into(), "sort"),
        ("sort=Name".into(), "sort"),
        ("sort=".into(), "sort"),
        ("limit=0".into(), "limit"),
        ("limit=1001".into(), "limit"),
        ("limit=ten".into(), "limit"),
        (format!("name_contains={long}"), "name_contains"),
        (format!("hostname_contains={long}"), "hostname_contains"),
    ];
    let mut all = cases;
    for name in LIST_PARAMS {
        if ![
            "status",
            "include_retired",
            "criticality",
            "criticality_max",
            "last_seen_before",
            "last_seen_after",
            "sort",
            "limit",
            "cursor",
        ]
        .contains(name)
        {
            all.push((format!("{name}="), name));
        }
    }
    for (query, name) in all {
        let (status, body) = c.get(&format!("/api/v1/cis?{query}")).await;
        let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_filter");
        assert!(message.contains(name), "?{query}: {message}");
    }
    // Exact values are as long as the request line allows; a substring at the limit, made of
    // LIKE wildcards, is still searched for literally.
    let page = c
        .get_ok(&format!("/api/v1/cis?name={}", "x".repeat(20_000)))
        .await;
    assert!(items(&page).is_empty());
    let wildcards = enc(&"%_\\x".repeat(1024));
    let page = c
        .get_ok(&format!("/api/v1/cis?name_contains={wildcards}"))
        .await;
    assert!(items(&page).is_empty(), "{page}");
    // The limit counts characters, as the document's maxLength does.
    let wide = enc(&"\u{e9}".repeat(4096));
    let page = c
        .get_ok(&format!("/api/v1/cis?hostname_contains={wide}"))
        .await;
    assert!(items(&page).is_empty(), "{page}");
    // What is allowed is named too.
    let (status, body) = c.get("/api/v1/cis?sort=colour").await;
    let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_filter");
    assert!(
        message.contains("first_seen") && message.contains("leading -"),
        "{message}"
    );
    let (status, body) = c.get("/api/v1/cis?criticality=7").await;
    let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_filter");
    assert!(message.contains("from 1 (highest) to 4"), "{message}");
}

#[tokio::test]
async fn a_cursor_only_resumes_the_list_it_came_from() {
    let (c, _) = fleet().await;
    // Bytewise by name: Web-2, db_1%, dbx1, web-1.
    let first = c.get_ok("/api/v1/cis?os=linux&sort=name&limit=1").await;
    assert_eq!(names_of(&first), ["Web-2"]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let resumed = c
        .get_ok(&format!(
            "/api/v1/cis?os=linux&sort=name&limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(names_of(&resumed), ["db_1%", "dbx1"]);
    // A page size may change between pages; the parameters' order does not matter.
    let resumed = c
        .get_ok(&format!(
            "/api/v1/cis?cursor={cursor}&sort=name&os=linux&limit=5"
        ))
        .await;
    assert_eq!(names_of(&resumed), ["db_1%", "dbx1", "web-1"]);
    for other in [
        format!("/api/v1/cis?os=linux&sort=-name&cursor={cursor}"),
        format!("/api/v1/cis?os=linux&sort=hostname&cursor={cursor}"),
        format!("/api/v1/cis?os=linux&cursor={cursor}"),
        format!("/api/v1/cis?sort=name&cursor={cursor}"),
        format!("/api/v1/cis?os=Linux&sort=name&cursor={cursor}"),
        format!("/api/v1/cis?os=linux&sort=name&include_retired=true&cursor={cursor}"),
        format!(
            "/api/v1/cis?os=linux&sort=name&cursor={}",
            cursor.replace("c1.", "c2.")
        ),
        format!("/api/v1/cis?os=linux&sort=name&cursor={cursor}x"),
        "/api/v1/cis?sort=name&cursor=k1.1".to_owned(),
        "/api/v1/cis?cursor=bogus".to_owned(),
    ] {
        let (status, body) = c.get(&other).await;
        let message = assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_cursor");
        assert!(message.contains("cursor"), "{other}: {message}");
    }
    let (_, body) = c
        .get(&format!("/api/v1/cis?os=linux&sort=-name&cursor={cursor}"))
        .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sort=name"),
        "{body}"
    );
}

#[test]
fn the_document_describes_every_list_parameter_and_the_csv_answer() {
    let doc: Value = serde_json::from_str(&census_collector::api::openapi::openapi_json()).unwrap();
    let operation = &doc["paths"]["/api/v1/cis"]["get"];
    let documented: HashSet<&str> = operation["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let taken: HashSet<&str> = LIST_PARAMS.iter().copied().collect();
    assert_eq!(documented, taken);
    let ok = &operation["responses"]["200"]["content"];
    assert!(ok["application/json"]["schema"].is_object(), "{ok}");
    assert_eq!(ok["text/csv"]["schema"]["type"], "string", "{ok}");
    assert!(operation["responses"]["200"]["headers"]["Link"].is_object());
    let sort = operation["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "sort")
        .unwrap();
    let schema = &sort["schema"];
    let values: Vec<&str> = schema["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for key in SORT_KEYS {
        assert!(values.contains(key) && values.contains(&format!("-{key}").as_str()));
    }
    assert_eq!(values.len(), 2 * SORT_KEYS.len());
}
