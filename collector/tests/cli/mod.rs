//! The `census-collector` binary: serve, print-config, backup, config errors.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};

use crate::support::*;

fn collector() -> Command {
    Command::new(env!("CARGO_BIN_EXE_census-collector"))
}

/// An empty config file, so tests never read the host's /etc/census/collector.toml.
fn empty_config(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("collector.toml");
    std::fs::write(&path, "").unwrap();
    path
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn serve_reports_the_bound_address_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = collector()
        .arg("--config")
        .arg(empty_config(&dir))
        .arg("--data-dir")
        .arg(&data)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr: SocketAddr = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "collector exited before listening"
        );
        if let Some(rest) = line.split("listening addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    assert_ne!(addr.port(), 0);
    let written = std::fs::read_to_string(data.join("collector.addr")).unwrap();
    assert_eq!(written.trim().parse::<SocketAddr>().unwrap(), addr);

    let response = http_get(addr, "/livez");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with(r#"{"status":"ok"}"#), "{response}");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("stopped"), "{rest}");
    assert!(!data.join("collector.addr").exists());
    assert!(data.join("census.db").exists());
}

#[test]
fn print_config_shows_every_default_and_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let output = collector()
        .arg("--config")
        .arg(empty_config(&dir))
        .args(["--data-dir", "/srv/census", "print-config"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let config: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(config["listen"].as_str(), Some("127.0.0.1:8080"));
    assert_eq!(config["data_dir"].as_str(), Some("/srv/census"));
    assert_eq!(config["health_retention"].as_str(), Some("7d"));
    for key in [
        "max_body_bytes",
        "compaction_interval",
        "read_connections",
        "writer_batch",
    ] {
        assert!(config.contains_key(key), "{key} missing:\n{text}");
    }
}

#[test]
fn the_packaged_config_shows_every_key_at_its_default() {
    let packaged = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/collector.toml");
    let text = std::fs::read_to_string(packaged).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let output = collector()
        .arg("--config")
        .arg(empty_config(&dir))
        .arg("print-config")
        .output()
        .unwrap();
    assert!(output.status.success());
    let defaults: toml::Table = toml::from_str(&String::from_utf8(output.stdout).unwrap()).unwrap();
    let shown: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(
        shown, defaults,
        "packaging/collector.toml and print-config differ"
    );
    // Every key is introduced by a comment (a table, such as `sla`, by its first header).
    for key in defaults.keys() {
        let at = text
            .find(&format!("\n{key} = "))
            .or_else(|| text.find(&format!("\n[{key}.")))
            .unwrap_or_else(|| panic!("{key} is not in packaging/collector.toml"));
        let before = text[..at].lines().last().unwrap_or("");
        assert!(before.starts_with('#'), "{key} has no comment");
    }
}

#[test]
fn config_errors_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listen = \"127.0.0.1:9000\"\ncolour = \"blue\"\n").unwrap();
    let output = collector()
        .arg("--config")
        .arg(&bad)
        .arg("print-config")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("colour"), "{stderr}");

    let output = collector()
        .arg("--config")
        .arg(dir.path().join("missing.toml"))
        .arg("print-config")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.toml"));
}

#[tokio::test]
async fn backup_copies_a_live_database_and_never_overwrites() {
    let c = TestCollector::start();
    let inv = inventory(AGENT, "web-1", &[package("bash", "5.2")], &["/"], &[]);
    c.ingest(&batch(AGENT, vec![inventory_report(1, inv)]))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("backup.db");
    let run = || {
        collector()
            .arg("--config")
            .arg(empty_config(&dir))
            .arg("--data-dir")
            .arg(c.data_dir())
            .arg("backup")
            .arg(&target)
            .output()
            .unwrap()
    };
    // Taken while the collector is serving.
    let output = run();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let copy = rusqlite::Connection::open(&target).unwrap();
    let cis: i64 = copy
        .query_row("SELECT count(*) FROM ci", [], |r| r.get(0))
        .unwrap();
    assert_eq!(cis, 2);
    drop(copy);

    let before = std::fs::read(&target).unwrap();
    let output = run();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("already exists"));
    assert_eq!(std::fs::read(&target).unwrap(), before);
}
