//! The software lists and the SBOM over real HTTP: `GET /api/v1/software` with name and version
//! filters compared by each package manager's ordering, `GET /api/v1/software/catalog`, the
//! CSV answers, and `GET /api/v1/cis/{id}/sbom` validated against the real CycloneDX 1.5
//! JSON schema (vendored under `tests/fixtures/cyclonedx/`). JSON answers are also validated
//! against the collector's own OpenAPI document.

use std::collections::BTreeSet;

use census_common::Software;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

/// A canonical agent id per test computer.
fn agent(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

fn pkg(name: &str, version: Option<&str>, source: &str, vendor: Option<&str>) -> Software {
    Software {
        name: name.into(),
        version: version.map(Into::into),
        arch: Some(if source == "dpkg" { "amd64" } else { "x86_64" }.into()),
        vendor: vendor.map(Into::into),
        source: source.into(),
    }
}

/// Ingests an inventory of `hostname` running `os_name` with `packages`; returns its CI id.
async fn computer(
    c: &TestCollector,
    n: u32,
    hostname: &str,
    os_name: &str,
    packages: Vec<Software>,
) -> i64 {
    let id = agent(n);
    let mut inv = inventory(&id, hostname, &packages, &["/"], &[]);
    inv.os.name = Some(os_name.into());
    c.ingest(&batch(&id, vec![inventory_report(1, inv)])).await;
    let list = c
        .get_ok(&format!("/api/v1/cis?class=computer&hostname={hostname}"))
        .await;
    list["items"][0]["id"].as_i64().unwrap()
}

/// Six computers with openssl from three package managers, and a few other packages.
async fn fleet(c: &TestCollector) -> Vec<i64> {
    let openssl = |v: &str, source: &str| pkg("openssl", Some(v), source, None);
    vec![
        computer(
            c,
            1,
            "deb12",
            "Debian GNU/Linux",
            vec![
                openssl("3.0.11-1~deb12u2", "dpkg"),
                pkg(
                    "libssl3",
                    Some("3.0.11-1~deb12u2"),
                    "dpkg",
                    Some("Debian OpenSSL Team"),
                ),
                pkg("tzdata", None, "dpkg", None),
            ],
        )
        .await,
        computer(
            c,
            2,
            "deb11",
            "Debian GNU/Linux",
            vec![openssl("1:1.1.1w-0+deb11u1", "dpkg")],
        )
        .await,
        computer(
            c,
            3,
            "deb12-patched",
            "Debian GNU/Linux",
            vec![openssl("3.0.13-1~deb12u1", "dpkg")],
        )
        .await,
        computer(
            c,
            4,
            "sid",
            "Debian GNU/Linux",
            vec![openssl("3.0.13-1", "dpkg")],
        )
        .await,
        computer(
            c,
            5,
            "rhel9",
            "Red Hat Enterprise Linux",
            vec![
                openssl("1:3.0.7-28.el9_4", "rpm"),
                pkg("bash", Some("5.1.8-9.el9"), "rpm", Some("Red Hat, Inc.")),
            ],
        )
        .await,
        computer(
            c,
            6,
            "alpine",
            "Alpine Linux",
            vec![
                openssl("3.0.12-r4", "apk"),
                pkg("musl", Some("1.2.4-r2"), "apk", None),
            ],
        )
        .await,
    ]
}

fn hostnames(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["hostname"].as_str().unwrap().to_owned())
        .collect()
}

/// Every page of `path` (which has a `?`), `limit` items at a time, following `next_cursor`.
async fn all_pages(c: &TestCollector, path: &str, limit: u32) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(cursor) => format!("{path}&limit={limit}&cursor={cursor}"),
            None => format!("{path}&limit={limit}"),
        };
        let page = c.get_ok(&url).await;
        let got = page["items"].as_array().unwrap();
        assert!(got.len() <= limit as usize, "{page}");
        items.extend(got.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

/// The OpenAPI document as served, checked with a JSON Schema validator: an answer of
/// `(path, status)` must match the schema the document gives for its JSON content.
struct Document {
    doc: Value,
}

impl Document {
    async fn fetch(c: &TestCollector) -> Document {
        Document {
            doc: c.get_ok("/api/v1/openapi.json").await,
        }
    }

    fn assert_valid(&self, path: &str, status: StatusCode, media: &str, body: &Value) {
        let errors = self.errors(path, status, media, body);
        assert!(
            errors.is_empty(),
            "GET {path} {status} does not match the document: {errors:?}\n{body:#}"
        );
    }

    fn errors(&self, path: &str, status: StatusCode, media: &str, body: &Value) -> Vec<String> {
        // A JSON pointer inside a URI fragment: `~` and `/` escaped for the pointer, then the
        // characters a URI cannot hold percent-encoded.
        let pointer = |s: &str| {
            s.replace('~', "~0")
                .replace('/', "~1")
                .replace(' ', "%20")
                .replace('{', "%7B")
                .replace('}', "%7D")
        };
        let response = &self.doc["paths"][path]["get"]["responses"][status.as_str()];
        assert!(
            response["content"][media]["schema"].is_object(),
            "GET {path} {status}: no {media} schema in the document"
        );
        const BASE: &str = "https://census.invalid/openapi.json";
        let schema = json!({
            "$ref": format!(
                "{BASE}#/paths/{}/get/responses/{}/content/{}/schema",
                pointer(path),
                status.as_str(),
                pointer(media)
            )
        });
        let registry = jsonschema::Registry::new()
            .add(BASE, self.doc.clone())
            .unwrap()
            .prepare()
            .unwrap();
        let validator = jsonschema::options()
            .with_registry(&registry)
            .build(&schema)
            .unwrap();
        validator.iter_errors(body).map(|e| e.to_string()).collect()
    }
}

#[tokio::test]
async fn every_computer_with_openssl_older_than_3_0_13() {
    let c = TestCollector::start();
    fleet(&c).await;
    let doc = Document::fetch(&c).await;

    // An epoch (1:...) is newer than any version without one; a Debian revision of 3.0.13
    // (3.0.13-1~deb12u1) is not older than 3.0.13; apk and rpm versions compare by their own
    // rules.
    let older = c
        .get_ok("/api/v1/software?name=openssl&version_lt=3.0.13")
        .await;
    assert_eq!(hostnames(&older), ["deb12", "alpine"]);
    assert_eq!(older["items"][0]["version"], "3.0.11-1~deb12u2");
    assert_eq!(older["items"][0]["ci_status"], "active");
    doc.assert_valid(
        "/api/v1/software",
        StatusCode::OK,
        "application/json",
        &older,
    );
    // The check is live: an answer the document rules out fails it.
    let json = "application/json";
    let mut wrong = older.clone();
    wrong["items"][0]["ci_status"] = "gone".into();
    assert!(
        !doc.errors("/api/v1/software", StatusCode::OK, json, &wrong)
            .is_empty()
    );
    wrong = older.clone();
    wrong.as_object_mut().unwrap().remove("next_cursor");
    assert!(
        !doc.errors("/api/v1/software", StatusCode::OK, json, &wrong)
            .is_empty()
    );

    // Older than the Debian release 3.0.13-1: the ~deb12u1 backport is.
    let older_than_release = c
        .get_ok("/api/v1/software?name=openssl&version_lt=3.0.13-1&source=dpkg")
        .await;
    assert_eq!(hostnames(&older_than_release), ["deb12", "deb12-patched"]);

    let newer_or_same = c
        .get_ok("/api/v1/software?name=openssl&version_ge=3.0.13")
        .await;
    assert_eq!(
        hostnames(&newer_or_same),
        ["deb11", "deb12-patched", "sid", "rhel9"]
    );
    let range = c
        .get_ok("/api/v1/software?name=openssl&version_gt=3.0.11-1~deb12u2&version_le=3.0.13-1")
        .await;
    assert_eq!(hostnames(&range), ["deb12-patched", "sid", "alpine"]);
    let exact = c
        .get_ok("/api/v1/software?name=openssl&version=3.0.13-1")
        .await;
    assert_eq!(hostnames(&exact), ["sid"]);
    let rpm = c
        .get_ok("/api/v1/software?name=openssl&source=rpm&arch=x86_64")
        .await;
    assert_eq!(hostnames(&rpm), ["rhel9"]);
    assert!(
        c.get_ok("/api/v1/software?name=openssl&source=rpm&arch=amd64")
            .await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // name_contains: case-insensitive, across packages.
    let ssl = c
        .get_ok("/api/v1/software?name_contains=SSL&version_lt=3.0.13")
        .await;
    let found: BTreeSet<(String, String)> = ssl["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["hostname"].as_str().unwrap().to_owned(),
                i["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("deb12", "libssl3"),
            ("deb12", "openssl"),
            ("alpine", "openssl")
        ]
        .map(|(h, n)| (h.to_owned(), n.to_owned()))
        .into()
    );
    // A package of unknown version matches no version comparison.
    assert!(
        c.get_ok("/api/v1/software?name=tzdata&version_lt=9999")
            .await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        hostnames(&c.get_ok("/api/v1/software?name=tzdata").await),
        ["deb12"]
    );

    // One installation a page: the same items, in the same (CI id) order, none twice.
    let whole = c.get_ok("/api/v1/software?name=openssl").await;
    let paged = all_pages(&c, "/api/v1/software?name=openssl", 1).await;
    assert_eq!(paged.len(), 6);
    assert_eq!(&paged, whole["items"].as_array().unwrap());
    let ids: Vec<i64> = paged.iter().map(|i| i["ci_id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let two = c.get_ok("/api/v1/software?name=openssl&limit=2").await;
    doc.assert_valid("/api/v1/software", StatusCode::OK, "application/json", &two);
}

#[tokio::test]
async fn retired_computers_are_left_out_unless_asked_for() {
    let c = TestCollector::start();
    let ids = fleet(&c).await;
    // Retire deb12 (as an admin's retirement would). No API on this branch retires a computer,
    // so the test writes the status itself, through SQLite as a second process would.
    let db = rusqlite::Connection::open(c.data_dir().join("census.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    db.execute("UPDATE ci SET status = 'retired' WHERE id = ?1", [ids[0]])
        .unwrap();

    let older = c
        .get_ok("/api/v1/software?name=openssl&version_lt=3.0.13")
        .await;
    assert_eq!(hostnames(&older), ["alpine"]);
    let with_retired = c
        .get_ok("/api/v1/software?name=openssl&version_lt=3.0.13&include_retired=true")
        .await;
    assert_eq!(hostnames(&with_retired), ["deb12", "alpine"]);
    assert_eq!(with_retired["items"][0]["ci_status"], "retired");
    let explicit_false = c
        .get_ok("/api/v1/software?name=openssl&version_lt=3.0.13&include_retired=false")
        .await;
    assert_eq!(explicit_false, older);
    Document::fetch(&c).await.assert_valid(
        "/api/v1/software",
        StatusCode::OK,
        "application/json",
        &with_retired,
    );

    // The catalog counts installations on CIs that are not retired; libssl3 was only on
    // deb12, so it is unused now.
    let openssl = c
        .get_ok("/api/v1/software/catalog?name=openssl&source=dpkg&version=3.0.11-1~deb12u2&include_unused=true")
        .await;
    assert_eq!(openssl["items"][0]["installs"], 0);
    assert!(
        c.get_ok("/api/v1/software/catalog?name=libssl3").await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_catalog_counts_installs_and_pages_in_a_stable_order() {
    let c = TestCollector::start();
    fleet(&c).await;
    // A second computer with deb12's openssl: that catalog row counts 2.
    computer(
        &c,
        7,
        "deb12-b",
        "Debian GNU/Linux",
        vec![pkg("openssl", Some("3.0.11-1~deb12u2"), "dpkg", None)],
    )
    .await;
    let doc = Document::fetch(&c).await;

    let catalog = c.get_ok("/api/v1/software/catalog?name=openssl").await;
    doc.assert_valid(
        "/api/v1/software/catalog",
        StatusCode::OK,
        "application/json",
        &catalog,
    );
    let rows: Vec<(String, String, i64)> = catalog["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["source"].as_str().unwrap().to_owned(),
                e["version"].as_str().unwrap().to_owned(),
                e["installs"].as_i64().unwrap(),
            )
        })
        .collect();
    // By name, then source, then version *text* (1:... before 3.0...).
    assert_eq!(
        rows,
        [
            ("apk", "3.0.12-r4", 1),
            ("dpkg", "1:1.1.1w-0+deb11u1", 1),
            ("dpkg", "3.0.11-1~deb12u2", 2),
            ("dpkg", "3.0.13-1", 1),
            ("dpkg", "3.0.13-1~deb12u1", 1),
            ("rpm", "1:3.0.7-28.el9_4", 1),
        ]
        .map(|(s, v, n)| (s.to_owned(), v.to_owned(), n))
    );
    let older = c
        .get_ok("/api/v1/software/catalog?name_contains=ssl&version_lt=3.0.13")
        .await;
    let names: Vec<(&str, &str)> = older["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["version"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("libssl3", "3.0.11-1~deb12u2"),
            ("openssl", "3.0.12-r4"),
            ("openssl", "3.0.11-1~deb12u2"),
        ]
    );

    // The whole catalog, a row a page, equals the whole catalog in one page.
    let whole = c.get_ok("/api/v1/software/catalog?limit=1000").await;
    let paged = all_pages(&c, "/api/v1/software/catalog?include_unused=false", 1).await;
    assert_eq!(&paged, whole["items"].as_array().unwrap());
    assert_eq!(paged.len(), 10);
    let keys: Vec<(String, String, String)> = paged
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["source"].as_str().unwrap().to_owned(),
                e["version"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    // A row with no version answers null; a well-formed cursor naming no row, an empty page.
    let tzdata = c.get_ok("/api/v1/software/catalog?name=tzdata").await;
    assert_eq!(tzdata["items"][0]["version"], Value::Null);
    assert_eq!(tzdata["items"][0]["arch"], "amd64");
    assert_eq!(
        c.get_ok("/api/v1/software/catalog?cursor=k1.ffffff").await,
        json!({ "items": [], "next_cursor": null })
    );
}

/// GET with `Accept: text/csv`: status, content type, `X-Next-Cursor`, `Link`, body.
async fn csv(
    c: &TestCollector,
    path: &str,
) -> (StatusCode, String, Option<String>, Option<String>, String) {
    let response = c
        .client
        .get(c.url(path))
        .bearer_auth(&c.admin_token)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (content_type, next, link) = (
        header("content-type").unwrap_or_default(),
        header("x-next-cursor"),
        header("link"),
    );
    let status = response.status();
    (
        status,
        content_type,
        next,
        link,
        response.text().await.unwrap(),
    )
}

#[tokio::test]
async fn the_software_lists_answer_csv() {
    let c = TestCollector::start();
    let ids = fleet(&c).await;
    let doc = Document::fetch(&c).await;
    for path in [
        "/api/v1/software",
        "/api/v1/software/catalog",
        "/api/v1/cis/{id}/software",
    ] {
        let content = &doc.doc["paths"][path]["get"]["responses"]["200"]["content"];
        assert!(content["text/csv"].is_object(), "{path}: {content}");
        assert!(content["application/json"].is_object(), "{path}: {content}");
    }

    let (status, content_type, next, _, body) =
        csv(&c, "/api/v1/software?name=openssl&version_lt=3.0.13").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "text/csv; charset=utf-8");
    assert_eq!(next, None);
    assert_eq!(
        body,
        format!(
            "ci_id,ci_name,hostname,ci_status,name,version,arch,vendor,source\r\n\
             {},deb12,deb12,active,openssl,3.0.11-1~deb12u2,amd64,,dpkg\r\n\
             {},alpine,alpine,active,openssl,3.0.12-r4,x86_64,,apk\r\n",
            ids[0], ids[5]
        )
    );
    // A page of CSV carries the next cursor in its headers; following it gives the rest.
    let (_, _, next, link, first) = csv(&c, "/api/v1/software?name=openssl&limit=4").await;
    let next = next.expect("a next cursor");
    assert_eq!(
        link.unwrap(),
        format!("</api/v1/software?name=openssl&limit=4&cursor={next}>; rel=\"next\"")
    );
    assert_eq!(first.lines().count(), 5);
    let (_, _, last, _, rest) = csv(
        &c,
        &format!("/api/v1/software?name=openssl&limit=4&cursor={next}"),
    )
    .await;
    assert_eq!((rest.lines().count(), last), (3, None));

    let (status, _, _, _, body) = csv(
        &c,
        "/api/v1/software/catalog?name_contains=ssl&version_lt=3.0.13",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], "id,name,version,arch,vendor,source,installs");
    assert!(
        lines[1].ends_with(",libssl3,3.0.11-1~deb12u2,amd64,Debian OpenSSL Team,dpkg,1"),
        "{body}"
    );
    assert_eq!(lines.len(), 4, "{body}");

    let (status, _, _, _, body) = csv(&c, &format!("/api/v1/cis/{}/software", ids[0])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        "name,version,arch,vendor,source\r\n\
         libssl3,3.0.11-1~deb12u2,amd64,Debian OpenSSL Team,dpkg\r\n\
         openssl,3.0.11-1~deb12u2,amd64,,dpkg\r\n\
         tzdata,,amd64,,dpkg\r\n"
    );
    let (_, _, next, link, body) =
        csv(&c, &format!("/api/v1/cis/{}/software?limit=1", ids[0])).await;
    assert_eq!(body.lines().count(), 2);
    assert!(link.unwrap().contains(&format!("cursor={}", next.unwrap())));
    // JSON stays the default.
    let json = c.get_ok(&format!("/api/v1/cis/{}/software", ids[0])).await;
    assert_eq!(json["items"][0]["name"], "libssl3");
    // Errors stay JSON, whatever was asked for.
    let (status, content_type, _, _, body) = csv(&c, "/api/v1/software").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    assert!(body.contains("invalid_filter"), "{body}");
}

#[tokio::test]
async fn bad_filters_are_refused_naming_the_parameter() {
    let c = TestCollector::start();
    fleet(&c).await;
    let doc = Document::fetch(&c).await;
    let long = "9".repeat(300);
    let cases: Vec<(String, &str, &str)> = vec![
        ("/api/v1/software".into(), "invalid_filter", "name_contains"),
        (
            "/api/v1/software?version_lt=1".into(),
            "invalid_filter",
            "`name` or `name_contains`",
        ),
        ("/api/v1/software?name=".into(), "invalid_filter", "`name`"),
        (
            "/api/v1/software?name_contains=".into(),
            "invalid_filter",
            "`name_contains`",
        ),
        (
            "/api/v1/software?name=openssl&version_lt=".into(),
            "invalid_filter",
            "`version_lt`",
        ),
        (
            "/api/v1/software?name=openssl&version_ge=".into(),
            "invalid_filter",
            "`version_ge`",
        ),
        (
            format!("/api/v1/software?name=openssl&version_gt={long}"),
            "invalid_filter",
            "`version_gt`",
        ),
        (
            "/api/v1/software?name=openssl&arch=%01".into(),
            "invalid_filter",
            "`arch`",
        ),
        (
            "/api/v1/software?name=openssl&include_retired=yes".into(),
            "invalid_filter",
            "`include_retired`",
        ),
        (
            "/api/v1/software?name=openssl&version_older=1".into(),
            "invalid_filter",
            "`version_older`",
        ),
        (
            "/api/v1/software?name=openssl&name=curl".into(),
            "invalid_filter",
            "`name`",
        ),
        (
            "/api/v1/software?name=openssl&limit=0".into(),
            "invalid_filter",
            "limit",
        ),
        (
            "/api/v1/software?name=openssl&cursor=k1.1".into(),
            "invalid_cursor",
            "cursor",
        ),
        (
            "/api/v1/software/catalog?include_unused=1".into(),
            "invalid_filter",
            "`include_unused`",
        ),
        (
            "/api/v1/software/catalog?source=".into(),
            "invalid_filter",
            "`source`",
        ),
        (
            "/api/v1/software/catalog?include_retired=true".into(),
            "invalid_filter",
            "`include_retired`",
        ),
        (
            "/api/v1/software/catalog?cursor=k1.1.2".into(),
            "invalid_cursor",
            "cursor",
        ),
        (
            "/api/v1/software/catalog?limit=1001".into(),
            "invalid_filter",
            "limit",
        ),
    ];
    for (path, code, named) in cases {
        let (status, body) = c.get(&path).await;
        let message = assert_error(status, &body, StatusCode::BAD_REQUEST, code);
        assert!(
            message.contains(named),
            "GET {path}: {message:?} names no {named}"
        );
        let template = path.split('?').next().unwrap();
        doc.assert_valid(template, status, "application/json", &body);
    }
    // A value that looks like SQL is just a value: bound, never spliced.
    let sneaky = c
        .get_ok("/api/v1/software?name=openssl'%20OR%20'1'='1&version_lt=1'%20OR%201=1--")
        .await;
    assert!(sneaky["items"].as_array().unwrap().is_empty());
    assert_eq!(
        c.get_ok("/api/v1/software?name=openssl").await["items"]
            .as_array()
            .unwrap()
            .len(),
        6,
        "nothing changed"
    );
}

/// The CycloneDX 1.5 JSON schema with the two schemas it references, as published in
/// CycloneDX/specification (Apache-2.0; see `tests/fixtures/cyclonedx/README.md`).
fn cyclonedx_validator() -> jsonschema::Validator {
    let load = |name: &str| -> Value {
        let path = format!(
            "{}/tests/fixtures/cyclonedx/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    };
    let bom = load("bom-1.5.schema.json");
    let registry = jsonschema::Registry::new()
        .add(
            "http://cyclonedx.org/schema/spdx.schema.json",
            load("spdx.schema.json"),
        )
        .unwrap()
        .add(
            "http://cyclonedx.org/schema/jsf-0.82.schema.json",
            load("jsf-0.82.schema.json"),
        )
        .unwrap()
        .prepare()
        .unwrap();
    jsonschema::options()
        .with_registry(&registry)
        .should_validate_formats(true)
        .build(&bom)
        .expect("the CycloneDX schema compiles, its references resolved offline")
}

fn cyclonedx_errors(validator: &jsonschema::Validator, bom: &Value) -> Vec<String> {
    validator
        .iter_errors(bom)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

async fn sbom(c: &TestCollector, id: i64) -> (StatusCode, String, Value) {
    let response = c
        .client
        .get(c.url(&format!("/api/v1/cis/{id}/sbom")))
        .bearer_auth(&c.admin_token)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    (status, content_type, response.json().await.unwrap())
}

fn component<'a>(bom: &'a Value, name: &str) -> &'a Value {
    bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no component {name} in {bom:#}"))
}

#[tokio::test]
async fn a_computers_sbom_is_valid_cyclonedx_1_5() {
    let c = TestCollector::start();
    let ids = fleet(&c).await;
    let validator = cyclonedx_validator();
    let doc = Document::fetch(&c).await;

    let (status, content_type, bom) = sbom(&c, ids[0]).await;
    assert_eq!(status, StatusCode::OK, "{bom}");
    assert_eq!(content_type, "application/vnd.cyclonedx+json; version=1.5");
    let errors = cyclonedx_errors(&validator, &bom);
    assert!(errors.is_empty(), "{errors:#?}\n{bom:#}");
    let media = "application/vnd.cyclonedx+json; version=1.5";
    doc.assert_valid("/api/v1/cis/{id}/sbom", StatusCode::OK, media, &bom);
    let mut wrong = bom.clone();
    wrong["metadata"]["component"]
        .as_object_mut()
        .unwrap()
        .remove("name");
    assert!(
        !doc.errors("/api/v1/cis/{id}/sbom", StatusCode::OK, media, &wrong)
            .is_empty()
    );

    assert_eq!(bom["bomFormat"], "CycloneDX");
    assert_eq!(bom["specVersion"], "1.5");
    assert_eq!(bom["version"], 1);
    let serial = bom["serialNumber"].as_str().unwrap();
    let uuid = uuid::Uuid::parse_str(serial.strip_prefix("urn:uuid:").unwrap()).unwrap();
    assert_eq!(uuid.get_version_num(), 4);
    let metadata = &bom["metadata"];
    assert!(metadata["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        metadata["tools"]["components"][0]["name"],
        "census-collector"
    );
    assert_eq!(
        metadata["tools"]["components"][0]["version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(metadata["component"]["type"], "device");
    assert_eq!(metadata["component"]["name"], "deb12");
    assert_eq!(
        metadata["component"]["bom-ref"],
        format!("census-ci-{}", ids[0])
    );

    let names: Vec<&str> = bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["libssl3", "openssl", "tzdata"]);
    let libssl = component(&bom, "libssl3");
    assert_eq!(libssl["type"], "library");
    assert_eq!(libssl["version"], "3.0.11-1~deb12u2");
    assert_eq!(
        libssl["purl"],
        "pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=amd64"
    );
    assert_eq!(libssl["publisher"], "Debian OpenSSL Team");
    assert_eq!(libssl["supplier"]["name"], "Debian OpenSSL Team");
    let openssl = component(&bom, "openssl");
    assert_eq!(openssl["type"], "application");
    assert!(openssl.get("supplier").is_none() && openssl.get("publisher").is_none());
    // No version known: no version, and a purl without one.
    let tzdata = component(&bom, "tzdata");
    assert!(tzdata.get("version").is_none());
    assert_eq!(tzdata["purl"], "pkg:deb/debian/tzdata?arch=amd64");

    // The bom-refs are stable across answers; the serial number is not.
    let (_, _, again) = sbom(&c, ids[0]).await;
    assert_ne!(again["serialNumber"], bom["serialNumber"]);
    let refs = |b: &Value| -> Vec<Value> {
        b["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["bom-ref"].clone())
            .collect()
    };
    assert_eq!(refs(&again), refs(&bom));
    let unique: BTreeSet<String> = refs(&bom).iter().map(|r| r.to_string()).collect();
    assert_eq!(unique.len(), 3);

    // Epochs: kept in a deb version (percent-encoded +), a qualifier of an rpm purl.
    let (_, _, deb11) = sbom(&c, ids[1]).await;
    assert_eq!(
        component(&deb11, "openssl")["purl"],
        "pkg:deb/debian/openssl@1:1.1.1w-0%2Bdeb11u1?arch=amd64"
    );
    let (_, _, rhel) = sbom(&c, ids[4]).await;
    assert!(cyclonedx_errors(&validator, &rhel).is_empty());
    assert_eq!(
        component(&rhel, "openssl")["purl"],
        "pkg:rpm/rhel/openssl@3.0.7-28.el9_4?arch=x86_64&epoch=1"
    );
    assert_eq!(component(&rhel, "openssl")["version"], "1:3.0.7-28.el9_4");
    assert_eq!(component(&rhel, "bash")["publisher"], "Red Hat, Inc.");
    let (_, _, alpine) = sbom(&c, ids[5]).await;
    assert!(cyclonedx_errors(&validator, &alpine).is_empty());
    assert_eq!(
        component(&alpine, "musl")["purl"],
        "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64"
    );

    // The validator is live: documents the schema rules out are refused.
    type Mutation = (&'static str, fn(&mut Value));
    let mutations: [Mutation; 5] = [
        ("a component type outside the enum", |b| {
            b["components"][0]["type"] = "gadget".into()
        }),
        ("a serial number that is not a urn:uuid", |b| {
            b["serialNumber"] = "1234".into()
        }),
        ("a component without a name", |b| {
            b["components"][0].as_object_mut().unwrap().remove("name");
        }),
        ("a field CycloneDX does not have", |b| {
            b["colour"] = "blue".into()
        }),
        ("a timestamp that is not one", |b| {
            b["metadata"]["timestamp"] = "yesterday".into()
        }),
    ];
    for (what, mutate) in mutations {
        let mut wrong = bom.clone();
        mutate(&mut wrong);
        assert!(
            !cyclonedx_errors(&validator, &wrong).is_empty(),
            "{what} passed the CycloneDX schema"
        );
    }
}

#[tokio::test]
async fn an_sbom_only_for_a_computer_that_exists() {
    let c = TestCollector::start();
    let ids = fleet(&c).await;
    let doc = Document::fetch(&c).await;
    let filesystem = c.get_ok("/api/v1/cis?class=filesystem&limit=1").await;
    let part = filesystem["items"][0]["id"].as_i64().unwrap();

    let (status, body) = c.get(&format!("/api/v1/cis/{part}/sbom")).await;
    let message = assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    assert!(
        message.contains("filesystem") && message.contains("not a computer"),
        "{message}"
    );
    doc.assert_valid("/api/v1/cis/{id}/sbom", status, "application/json", &body);

    let (status, body) = c.get("/api/v1/cis/999999/sbom").await;
    let message = assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    assert!(message.contains("999999"), "{message}");
    doc.assert_valid("/api/v1/cis/{id}/sbom", status, "application/json", &body);

    for path in [
        "/api/v1/cis/abc/sbom".to_owned(),
        "/api/v1/cis/0/sbom".to_owned(),
        format!("/api/v1/cis/{}/sbom?format=xml", ids[0]),
    ] {
        let (status, body) = c.get(&path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        doc.assert_valid("/api/v1/cis/{id}/sbom", status, "application/json", &body);
    }
    // Only with a token.
    let (status, _) = c
        .get_as(None, &format!("/api/v1/cis/{}/sbom", ids[0]))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
