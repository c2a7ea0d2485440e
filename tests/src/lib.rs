//! Shared support for Census's end-to-end tests: the real `census-collector` and `census-agent`
//! binaries run as child processes against temporary directories, on 127.0.0.1 only.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod fleet;
pub mod query;
pub mod stats;

/// Path of a workspace binary (`census-agent`, `census-collector`). README's test command,
/// `cargo test --workspace`, builds both before any test runs. A binary that is missing (after
/// `cargo test -p census-tests` on a clean target dir) is built here; one left by an older build
/// is used as it is, so after changing agent or collector code, test through the workspace.
pub fn binary(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps; the binaries one level up.
    let exe = std::env::current_exe().expect("test executable has a path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable is inside target/<profile>/deps");
    let path = profile_dir.join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--bin", name]);
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "could not build {name}");
    }
    path
}

/// Polls `check` until it gives a value or `limit` passes. Used to wait for another process
/// to reach a state (a file written, a port answering), never to let time pass.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A real `census-collector serve` on 127.0.0.1 with its own data directory. Stopped with
/// SIGTERM (graceful shutdown) when dropped.
pub struct TestCollector {
    pub data_dir: TempDir,
    pub addr: SocketAddr,
    /// An admin-role token made with `census-collector token create`; [`TestCollector::get`]
    /// sends it.
    pub admin_token: String,
    /// An enrollment secret made with `census-collector enroll-secret create`.
    pub enroll_secret: String,
    /// `https` when started with a certificate.
    pub scheme: &'static str,
    child: Option<Child>,
}

impl TestCollector {
    pub fn start() -> Self {
        Self::start_in(tempfile::tempdir().expect("temp dir"))
    }

    /// Starts a collector on an existing data directory, e.g. to test a restart.
    pub fn start_in(data_dir: TempDir) -> Self {
        Self::start_with_config(data_dir, "")
    }

    /// Starts with `config` as the collector's configuration file. Logs (at debug level, so
    /// tests can check what never reaches them) go to `collector.log` in the data dir.
    pub fn start_with_config(data_dir: TempDir, config: &str) -> Self {
        Self::start_listening(data_dir, config, "127.0.0.1:0")
    }

    /// Starts on a given address, e.g. the one a stopped collector had, so that agents
    /// configured for it find it again.
    pub fn start_listening(data_dir: TempDir, config: &str, listen: &str) -> Self {
        let addr_file = data_dir.path().join("collector.addr");
        let _ = std::fs::remove_file(&addr_file);
        // A config of its own, so a collector.toml installed on the host cannot leak in.
        let config_path = data_dir.path().join("collector.toml");
        std::fs::write(&config_path, config).expect("config written");
        let admin_token = collector_cli(
            data_dir.path(),
            &["token", "create", "--role", "admin", "--name", "e2e"],
        );
        let enroll_secret = collector_cli(
            data_dir.path(),
            &["enroll-secret", "create", "--name", "e2e"],
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.path().join("collector.log"))
            .expect("log file");
        let child = Command::new(binary("census-collector"))
            .arg("--config")
            .arg(&config_path)
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(["serve", "--listen", listen])
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("census-collector starts");
        let mut collector = TestCollector {
            data_dir,
            addr: "127.0.0.1:0".parse().unwrap(),
            admin_token,
            enroll_secret,
            scheme: if config.contains("tls_cert") {
                "https"
            } else {
                "http"
            },
            child: Some(child),
        };
        collector.addr = wait_for("collector.addr", Duration::from_secs(30), || {
            if let Some(status) = collector.child.as_mut().and_then(|c| c.try_wait().ok()?) {
                panic!("census-collector exited early: {status}");
            }
            std::fs::read_to_string(&addr_file)
                .ok()?
                .trim()
                .parse()
                .ok()
        });
        collector
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// What the collector logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("collector.log")).unwrap_or_default()
    }

    /// Stops the collector with SIGKILL: no shutdown code runs.
    pub fn kill(mut self) -> TempDir {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let dir = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.data_dir, dir)
    }

    /// Stops the collector gracefully and hands back its data directory.
    pub fn stop(mut self) -> TempDir {
        self.terminate();
        let dir = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.data_dir, dir)
    }

    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// GET a JSON document from the admin API; panics with the body on a non-2xx answer.
    pub fn get(&self, path_and_query: &str) -> serde_json::Value {
        let (status, body) = http_request(
            self.addr,
            "GET",
            path_and_query,
            &[("Authorization", &format!("Bearer {}", self.admin_token))],
            b"",
        );
        assert!(
            (200..300).contains(&status),
            "GET {path_and_query} answered {status}: {body}"
        );
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path_and_query}: {e}: {body}"))
    }
}

impl Drop for TestCollector {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Runs `census-collector --data-dir DIR ARGS`, asserting success; the last line of stdout
/// (where a created token or secret is printed).
pub fn collector_cli(data_dir: &Path, args: &[&str]) -> String {
    let out = Command::new(binary("census-collector"))
        .arg("--config")
        .arg("/dev/null")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("census-collector runs");
    assert!(
        out.status.success(),
        "census-collector {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .to_owned()
}

/// A minimal HTTP/1.1 GET over a plain TCP socket, without credentials.
pub fn http_get(addr: SocketAddr, path_and_query: &str) -> (u16, String) {
    http_request(addr, "GET", path_and_query, &[], b"")
}

/// A minimal HTTP/1.1 request over a plain TCP socket: the end-to-end tests need nothing more,
/// and this keeps an HTTP client library out of the harness. Panics when the collector cannot
/// be reached.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    try_http_request(addr, method, path_and_query, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path_and_query}: {e}"))
}

/// [`http_request`] that answers an error instead of panicking when the connection fails (a
/// collector killed mid-request).
pub fn try_http_request(
    addr: SocketAddr,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    use std::io::{Error, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8(raw).map_err(Error::other)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| Error::other("the response has no head"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::other("no status line"))?;
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// The real agent binary with its own state directory.
pub struct TestAgent {
    pub state_dir: TempDir,
}

impl Default for TestAgent {
    fn default() -> Self {
        Self::new()
    }
}

impl TestAgent {
    pub fn new() -> Self {
        let state_dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(state_dir.path().join("agent.toml"), "").expect("config written");
        TestAgent { state_dir }
    }

    /// Runs `census-agent ARGS` with this agent's state dir and no config file.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(binary("census-agent"))
            .arg("--config")
            .arg(self.state_dir.path().join("agent.toml"))
            .arg("--state-dir")
            .arg(self.state_dir.path())
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("census-agent runs")
    }

    /// Runs `census-agent ARGS` with this agent's state dir, `collector`'s URL and its
    /// enrollment secret (through the environment, as a service manager would pass it).
    pub fn run_against(&self, collector: &TestCollector, args: &[&str]) -> Output {
        Command::new(binary("census-agent"))
            .arg("--config")
            .arg(self.state_dir.path().join("agent.toml"))
            .arg("--state-dir")
            .arg(self.state_dir.path())
            .arg("--server")
            .arg(collector.url())
            .args(args)
            .env("RUST_LOG", "debug")
            .env("CENSUS_ENROLL_SECRET", &collector.enroll_secret)
            .output()
            .expect("census-agent runs")
    }

    /// `census-agent once` against `collector` (enrolling first if needed), asserting it
    /// succeeded.
    pub fn once(&self, collector: &TestCollector) {
        let out = self.run_against(collector, &["once"]);
        assert!(
            out.status.success(),
            "census-agent once failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `census-agent inventory` parsed as JSON.
    pub fn inventory(&self) -> serde_json::Value {
        let out = self.run(&["inventory"]);
        assert!(
            out.status.success(),
            "census-agent inventory failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("inventory is JSON")
    }
}

/// A test certificate authority and a server certificate for 127.0.0.1 and localhost signed by
/// it, written as PEM files into a directory: what an admin would give `tls_cert`, `tls_key`
/// (collector) and `ca_file` (agent).
pub struct TestCa {
    pub ca_pem: String,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TestCa {
    /// Generates a new CA named `name` and its server certificate into `dir`.
    pub fn generate(dir: &Path, name: &str) -> TestCa {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, format!("Census test CA {name}"));
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_pem = ca.self_signed(&ca_key).expect("CA certificate").pem();
        let issuer = Issuer::new(ca, ca_key);

        let key = KeyPair::generate().expect("server key");
        let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("server params");
        leaf.distinguished_name
            .push(DnType::CommonName, "census-collector");
        let cert = leaf.signed_by(&key, &issuer).expect("server certificate");
        let files = TestCa {
            ca_file: dir.join(format!("{name}-ca.pem")),
            cert_file: dir.join(format!("{name}.crt")),
            key_file: dir.join(format!("{name}.key")),
            ca_pem,
        };
        std::fs::write(&files.ca_file, &files.ca_pem).expect("CA written");
        std::fs::write(&files.cert_file, cert.pem()).expect("certificate written");
        std::fs::write(&files.key_file, key.serialize_pem()).expect("key written");
        files
    }
}
