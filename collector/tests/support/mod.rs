//! `TestCollector`: a collector serving on 127.0.0.1 port 0 from a temp data dir, on its own
//! runtime thread, stopped (gracefully) on drop. Plus builders for real batches.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Once};
use std::thread::JoinHandle;

use std::collections::HashMap;
use std::sync::Mutex;

use census_collector::auth::Role;
use census_collector::clock::{Clock, SystemClock};
use census_collector::config::Config;
use census_collector::store::{Store, StoreOptions};
use census_common::codec::{self, Format};
use census_common::{
    Batch, Filesystem, HealthSample, Inventory, NetworkInterface, Report, ReportBody, Software,
};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tempfile::TempDir;
use time::OffsetDateTime;
use tokio::sync::oneshot;

pub const AGENT: &str = "0b0c6a34-8d54-4a4a-9d51-8f0e1c3b7a11";
pub const OTHER_AGENT: &str = "5a4c1e0e-2f43-4d8e-9b7e-1d2c3b4a5f60";

pub struct TestCollector {
    pub addr: SocketAddr,
    /// `https` when the configuration sets `tls_cert`, else `http`.
    pub scheme: &'static str,
    pub client: reqwest::Client,
    /// An admin-role token, sent by [`TestCollector::get`].
    pub admin_token: String,
    /// An enrollment secret; agents enroll with it on their first batch.
    pub enroll_secret: String,
    agent_tokens: Mutex<HashMap<String, String>>,
    dir: Option<TempDir>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestCollector {
    pub fn start() -> TestCollector {
        TestCollector::start_with(tempfile::tempdir().unwrap(), |_| {})
    }

    /// Starts on an existing data dir (a restart).
    pub fn start_in(dir: TempDir) -> TestCollector {
        TestCollector::start_with(dir, |_| {})
    }

    pub fn start_with(dir: TempDir, tweak: impl FnOnce(&mut Config)) -> TestCollector {
        TestCollector::start_with_clock(dir, Arc::new(SystemClock), tweak)
    }

    /// Starts with `clock` as the collector's time, so tests can move it.
    pub fn start_with_clock(
        dir: TempDir,
        clock: Arc<dyn Clock>,
        tweak: impl FnOnce(&mut Config),
    ) -> TestCollector {
        static PROVIDER: Once = Once::new();
        PROVIDER.call_once(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        tweak(&mut config);
        let (admin_token, enroll_secret) = credentials(&config);
        let scheme = if config.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                census_collector::server::serve_with_clock(listener, config, clock, async {
                    let _ = stopped.await;
                })
                .await
            })
        });
        TestCollector {
            addr,
            scheme,
            client: reqwest::Client::new(),
            admin_token,
            enroll_secret,
            agent_tokens: Mutex::new(HashMap::new()),
            dir: Some(dir),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// A new admin token of `role` (`viewer`, `operator`, `admin`), made with the real
    /// `census-collector token create` on this collector's data dir.
    pub fn token(&self, role: &str, name: &str) -> String {
        cli(self, &["token", "create", "--role", role, "--name", name])
    }

    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.as_ref().unwrap().path().join("data")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// Stops gracefully and hands back the data dir.
    pub fn stop(mut self) -> TempDir {
        self.shutdown();
        self.dir.take().unwrap()
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let result = thread.join();
            if !std::thread::panicking() {
                result
                    .expect("server thread panicked")
                    .expect("server failed");
            }
        }
    }

    /// Enrolls `agent` with the test's secret (once) and returns its token.
    pub async fn agent_token(&self, agent: &str) -> String {
        if let Some(token) = self.agent_tokens.lock().unwrap().get(agent) {
            return token.clone();
        }
        let response = self
            .client
            .post(self.url("/agent/v1/enroll"))
            .json(&serde_json::json!({
                "secret": self.enroll_secret, "agent_id": agent, "hostname": "test-host"
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "enrolling {agent}");
        let token = response.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned();
        self.agent_tokens
            .lock()
            .unwrap()
            .insert(agent.to_owned(), token.clone());
        token
    }

    /// Posts a batch as the agent does (MessagePack, gzip), with the batch's agent's token.
    pub async fn post_batch(&self, batch: &Batch) -> reqwest::Response {
        let token = self.agent_token(&batch.agent_id).await;
        self.post_raw_as(
            Some(&token),
            gzip(&codec::encode(batch, Format::MessagePack)),
            "application/msgpack",
            Some("gzip"),
        )
        .await
    }

    /// Posts a body with [`AGENT`]'s token.
    pub async fn post_raw(
        &self,
        body: Vec<u8>,
        content_type: &str,
        encoding: Option<&str>,
    ) -> reqwest::Response {
        let token = self.agent_token(AGENT).await;
        self.post_raw_as(Some(&token), body, content_type, encoding)
            .await
    }

    /// Posts a body to the report route with `token` (none: no Authorization header).
    pub async fn post_raw_as(
        &self,
        token: Option<&str>,
        body: Vec<u8>,
        content_type: &str,
        encoding: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url("/agent/v1/reports"))
            .header("content-type", content_type)
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(encoding) = encoding {
            request = request.header("content-encoding", encoding);
        }
        request.send().await.unwrap()
    }

    /// Sends only the head of a report POST that declares a `content_length`-byte body, then
    /// reads the answer: a body refused by its declared length is answered without a byte of it
    /// being sent. (Sending the body as well races the server's early answer and close: the
    /// client may see a broken pipe instead of the 413.) Returns the status and the JSON body.
    pub async fn post_declared(&self, content_length: usize) -> (StatusCode, Value) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let token = self.agent_token(AGENT).await;
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let head = format!(
            "POST /agent/v1/reports HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/msgpack\r\nContent-Length: {content_length}\r\n\
             Connection: close\r\n\r\n",
            self.addr
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(&answer)));
        let head = String::from_utf8_lossy(&answer[..split]);
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        let body = serde_json::from_slice(&answer[split + 4..])
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&answer)));
        (StatusCode::from_u16(status).unwrap(), body)
    }

    /// Posts a batch and returns the decoded ack, asserting 200.
    pub async fn ingest(&self, batch: &Batch) -> Value {
        let response = self.post_batch(batch).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// GET with the admin token.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.get_as(Some(&self.admin_token), path).await
    }

    /// GET with `token` (none: no Authorization header).
    pub async fn get_as(&self, token: Option<&str>, path: &str) -> (StatusCode, Value) {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body = response.json().await.unwrap();
        (status, body)
    }

    /// GET that must succeed.
    pub async fn get_ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// `method` on `path` with the admin token and, if given, a JSON body. The answer's body
    /// is `null` when it is empty (a 204).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        self.send_as(Some(&self.admin_token), method, path, body)
            .await
    }

    /// [`TestCollector::send`] with `token` (none: no Authorization header).
    pub async fn send_as(
        &self,
        token: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{path}: not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        (status, body)
    }

    /// POST a JSON body with the admin token.
    pub async fn post_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// PATCH a JSON body with the admin token.
    pub async fn patch_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::PATCH, path, Some(body)).await
    }

    /// DELETE with the admin token.
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    /// GET with `Accept: text/csv` and the admin token: the status, the content type and the
    /// body text.
    pub async fn get_csv(&self, path: &str) -> (StatusCode, String, String) {
        let response = self
            .client
            .get(self.url(path))
            .bearer_auth(&self.admin_token)
            .header("accept", "text/csv")
            .send()
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, content_type, response.text().await.unwrap())
    }
}

/// Creates an admin token and an enrollment secret in the data dir of `config`, through the
/// store as `census-collector token create` and `enroll-secret create` do.
fn credentials(config: &Config) -> (String, String) {
    std::fs::create_dir_all(&config.data_dir).unwrap();
    let db = config.database_path();
    // Its own thread and runtime: tests call `start` from inside their own runtime.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let store = Store::open(&db, &StoreOptions::default()).unwrap();
            let now = OffsetDateTime::now_utc();
            let (_, admin) = store
                .create_admin_token("test-admin".into(), Role::Admin, now)
                .await
                .unwrap();
            let (_, secret) = store
                .create_enroll_secret("test".into(), None, now)
                .await
                .unwrap();
            store.close().await;
            (admin.reveal(), secret.reveal())
        })
    })
    .join()
    .unwrap()
}

impl Drop for TestCollector {
    fn drop(&mut self) {
        self.shutdown();
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

pub fn batch(agent: &str, reports: Vec<Report>) -> Batch {
    Batch {
        protocol: census_common::PROTOCOL_VERSION,
        agent_id: agent.into(),
        reports,
    }
}

pub fn package(name: &str, version: &str) -> Software {
    Software {
        name: name.into(),
        version: Some(version.into()),
        arch: Some("amd64".into()),
        vendor: Some("Debian".into()),
        source: "dpkg".into(),
    }
}

/// An inventory of `hostname` with the given packages, mounts and interfaces.
pub fn inventory(
    agent: &str,
    hostname: &str,
    packages: &[Software],
    mounts: &[&str],
    nics: &[&str],
) -> Inventory {
    let mut inv = Inventory::new(agent, OffsetDateTime::now_utc());
    inv.host.hostname = Some(hostname.into());
    inv.os.family = Some("linux".into());
    inv.os.name = Some("Debian GNU/Linux".into());
    inv.os.version = Some("12".into());
    inv.hardware.serial = Some("SN-1234".into());
    inv.memory.total_bytes = Some(8 << 30);
    inv.software = packages.to_vec();
    inv.filesystems = mounts
        .iter()
        .map(|m| Filesystem {
            mount: (*m).into(),
            device: Some("/dev/sda1".into()),
            fs_type: Some("ext4".into()),
            total_bytes: Some(100 << 30),
            removable: false,
        })
        .collect();
    inv.network_interfaces = nics
        .iter()
        .map(|n| NetworkInterface {
            name: (*n).into(),
            mac: Some("52:54:00:12:34:56".into()),
            addresses: vec!["192.0.2.5/24".into()],
            r#virtual: false,
        })
        .collect();
    inv
}

pub fn inventory_report(seq: u64, inv: Inventory) -> Report {
    Report {
        seq,
        body: ReportBody::Inventory(inv),
    }
}

pub fn health_report(agent: &str, seq: u64, at: OffsetDateTime, cpu: f64) -> Report {
    let mut sample = HealthSample::empty(agent, at);
    sample.cpu_percent = Some(cpu);
    sample.memory_used_percent = Some(42.5);
    Report {
        seq,
        body: ReportBody::Health(sample),
    }
}

/// Asserts the error body shape and code; returns the message.
pub fn assert_error(
    status: StatusCode,
    body: &Value,
    expected_status: StatusCode,
    code: &str,
) -> String {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"]
        .as_str()
        .expect("a message")
        .to_owned();
    assert!(!message.is_empty());
    message
}

/// Runs `census-collector --data-dir DIR ARGS` and returns the last line of its stdout.
pub fn cli(c: &TestCollector, args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_census-collector"))
        .arg("--data-dir")
        .arg(c.data_dir())
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    stdout.lines().last().unwrap_or("").to_owned()
}

/// Every row of every table, the schema and the schema version, as sorted text.
pub fn dump(db: &std::path::Path) -> String {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut out = String::new();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    out.push_str(&format!("user_version {version}\n"));
    let mut tables = Vec::new();
    {
        let mut stmt = conn
            // The planner's statistics (sqlite_stat1, refreshed by the compaction task at any
            // moment) are not data.
            .prepare(
                "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_stat%'
                 ORDER BY type, name",
            )
            .unwrap();
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })
            .unwrap();
        for row in rows {
            let (kind, name, sql) = row.unwrap();
            out.push_str(&format!("{kind} {name}: {}\n", sql.unwrap_or_default()));
            if kind == "table" {
                tables.push(name);
            }
        }
    }
    for table in tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let columns = stmt.column_count();
        let mut rows: Vec<String> = stmt
            .query_map([], |r| {
                let mut line = String::new();
                for i in 0..columns {
                    line.push_str(&format!("{:?}|", r.get_ref(i)?));
                }
                Ok(line)
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows.sort();
        out.push_str(&format!("-- {table}: {} rows\n", rows.len()));
        for row in rows {
            out.push_str(&row);
            out.push('\n');
        }
    }
    out
}

/// Sends a request (with `token`, or the admin's) that must be refused with `status` and
/// `code` and change nothing; answers the message.
pub async fn refused_as(
    c: &TestCollector,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<&Value>,
    status: StatusCode,
    code: &str,
) -> String {
    let before = dump(&c.data_dir().join("census.db"));
    let token = token.unwrap_or(c.admin_token.as_str());
    let (got, answer) = c.send_as(Some(token), method.clone(), path, body).await;
    let message = assert_error(got, &answer, status, code);
    assert_eq!(
        dump(&c.data_dir().join("census.db")),
        before,
        "{method} {path} {body:?} changed the database"
    );
    message
}

/// [`refused_as`] with the admin token.
pub async fn refused(
    c: &TestCollector,
    method: Method,
    path: &str,
    body: Option<&Value>,
    status: StatusCode,
    code: &str,
) -> String {
    refused_as(c, None, method, path, body, status, code).await
}
