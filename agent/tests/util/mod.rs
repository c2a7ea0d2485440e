//! Helpers for the command-line tests: an isolated agent invocation and a fake collector.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use census_common::codec::{self, Format};
use census_common::{Ack, Batch, EnrollRequest, EnrollResponse, ErrorBody, ErrorCode};

/// The enrollment secret the fake collector accepts. Every agent run by [`TestAgent`] is checked
/// not to print it, on standard output or in its logs.
pub const TEST_SECRET: &str = "enroll-s3cret-9f2c41";

/// A temporary home for one agent: an empty config file and a state directory.
pub struct TestAgent {
    pub dir: tempfile::TempDir,
    /// Given as `CENSUS_ENROLL_SECRET` to every command, unless `None`.
    pub secret: Option<String>,
}

impl TestAgent {
    /// An agent with [`TEST_SECRET`] in its environment, so `run` and `once` enroll by
    /// themselves with a [`FakeCollector`].
    pub fn new() -> TestAgent {
        TestAgent {
            secret: Some(TEST_SECRET.to_owned()),
            ..TestAgent::without_secret()
        }
    }

    /// An agent with no enrollment secret: it sends only with a token in its state directory.
    pub fn without_secret() -> TestAgent {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agent.toml"), "").unwrap();
        TestAgent { dir, secret: None }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("agent.toml")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// Puts a token into the state directory, as an earlier enrollment would have.
    pub fn write_token(&self, token: &str) {
        std::fs::create_dir_all(self.state_dir()).unwrap();
        std::fs::write(self.state_dir().join("token"), format!("{token}\n")).unwrap();
    }

    /// The agent binary with this agent's config and state dir, its secret if it has one, and
    /// no `CENSUS_*` variables from the environment running the tests.
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_census-agent"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("CENSUS_") || name == "RUST_LOG" {
                command.env_remove(name);
            }
        }
        if let Some(secret) = &self.secret {
            command.env("CENSUS_ENROLL_SECRET", secret);
        }
        command
            .arg("--config")
            .arg(self.config_path())
            .arg("--state-dir")
            .arg(self.state_dir());
        command
    }

    /// Runs a command to its end. Whatever it did, it never printed the enrollment secret.
    pub fn run(&self, args: &[&str]) -> Output {
        checked(self.command().args(args).output().unwrap())
    }

    /// Starts `run`, its log read line by line as it comes.
    pub fn spawn_run(&self, args: &[&str]) -> RunningAgent {
        let mut child = self
            .command()
            .arg("run")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let reader = thread::spawn(move || {
            let mut log = String::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                log.push_str(&line);
                log.push('\n');
                let _ = tx.send(line);
            }
            log
        });
        RunningAgent {
            child,
            lines,
            reader: Some(reader),
        }
    }

    pub fn state_file(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.state_dir().join(name)).ok()
    }
}

/// Asserts that neither output of a finished command holds [`TEST_SECRET`].
pub fn checked(output: Output) -> Output {
    assert_no_secret(&stdout(&output));
    assert_no_secret(&stderr(&output));
    output
}

pub fn assert_no_secret(text: &str) {
    assert!(
        !text.contains(TEST_SECRET),
        "the enrollment secret was printed:\n{text}"
    );
}

/// `census-agent run` in the background.
pub struct RunningAgent {
    child: Child,
    lines: mpsc::Receiver<String>,
    reader: Option<thread::JoinHandle<String>>,
}

impl RunningAgent {
    /// Waits for the next log line containing `text`, at most `limit`.
    pub fn wait_for_log(&self, text: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(_) => panic!("the agent logged no line with {text:?} in time"),
            }
        }
    }

    /// Sends SIGTERM, waits for the exit, and returns the whole log (checked for the secret).
    pub fn stop(mut self) -> String {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let status = wait_with_limit(&mut self.child, Duration::from_secs(60));
        let log = self.reader.take().unwrap().join().unwrap();
        assert!(status.success(), "{status:?}: {log}");
        assert_no_secret(&log);
        log
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        // A test that failed half way does not leave the agent running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// What the fake collector answers to one request.
pub enum Answer {
    Ack(Ack),
    Error(u16, ErrorBody),
    /// 429 `rate_limited` with `Retry-After: <seconds>`.
    RateLimited(u64),
    /// 307 Temporary Redirect to this URL.
    Redirect(String),
    /// The ack followed by this many bytes of JSON whitespace: a valid answer of any size.
    Padded(Ack, usize),
}

/// What the fake collector answers to one enrollment.
pub enum EnrollAnswer {
    Token(String),
    Error(u16, ErrorBody),
    /// 307 Temporary Redirect to this URL.
    Redirect(String),
}

/// One batch the fake collector received.
#[derive(Debug)]
pub struct Received {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub authorization: Option<String>,
    pub batch: Batch,
}

/// One enrollment the fake collector received.
#[derive(Debug)]
pub struct Enrollment {
    pub request: EnrollRequest,
    pub content_type: Option<String>,
}

type ReportHandler = dyn Fn(&Received, usize) -> Answer + Send + Sync;
type EnrollHandler = dyn Fn(&EnrollRequest, usize) -> EnrollAnswer + Send + Sync;

/// A collector stand-in on 127.0.0.1 (plain HTTP, or TLS with the fixture certificate): decodes
/// each batch exactly as the real one must (gzip, MessagePack, protocol checks), hands it to
/// the test, and answers as told.
pub struct FakeCollector {
    pub url: String,
    pub received: mpsc::Receiver<Received>,
    pub enrollments: mpsc::Receiver<Enrollment>,
}

impl FakeCollector {
    /// A collector with the real one's rules of trust: enrollment trades [`TEST_SECRET`] for a
    /// new token `token-N` (401 `enroll_secret_invalid` for anything else), and a batch
    /// without such a token is refused with 401 `agent_token_invalid`. Any fake collector's
    /// tokens are good with any other, as a real collector's are after a restart. Other batches
    /// get `answer`, called with each batch and its index (0 for the first batch request).
    pub fn start(
        answer: impl Fn(&Batch, usize) -> Answer + Send + Sync + 'static,
    ) -> FakeCollector {
        FakeCollector::start_full(issue_token, move |received, index| {
            if has_issued_token(received) {
                answer(&received.batch, index)
            } else {
                token_invalid()
            }
        })
    }

    /// Acknowledges every report sent with a token a fake collector issued.
    pub fn acking_everything() -> FakeCollector {
        FakeCollector::start(|batch, _| Answer::Ack(ack_all(batch, false)))
    }

    /// A plain-HTTP collector whose answers the test decides entirely, enrollment included.
    pub fn start_full(
        enroll: impl Fn(&EnrollRequest, usize) -> EnrollAnswer + Send + Sync + 'static,
        reports: impl Fn(&Received, usize) -> Answer + Send + Sync + 'static,
    ) -> FakeCollector {
        FakeCollector::listen(None, Arc::new(enroll), Arc::new(reports))
    }

    /// [`FakeCollector::acking_everything`] over HTTPS, with the fixture certificate for
    /// 127.0.0.1 signed by `fixtures/tls/ca.pem`.
    pub fn acking_everything_over_tls() -> FakeCollector {
        let _ = rustls::crypto::ring::default_provider().install_default();
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = vec![CertificateDer::from_pem_file(tls_fixture("server.pem")).unwrap()];
        let key = PrivateKeyDer::from_pem_file(tls_fixture("server.key")).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        FakeCollector::listen(
            Some(Arc::new(config)),
            Arc::new(issue_token),
            // Trust in the token is not what these tests are about.
            Arc::new(|received, _| Answer::Ack(ack_all(&received.batch, false))),
        )
    }

    fn listen(
        tls: Option<Arc<rustls::ServerConfig>>,
        enroll: Arc<EnrollHandler>,
        reports: Arc<ReportHandler>,
    ) -> FakeCollector {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", listener.local_addr().unwrap());
        let (tx, received) = mpsc::channel();
        let (enroll_tx, enrollments) = mpsc::channel();
        thread::spawn(move || {
            let mut indexes = (0, 0);
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let served = match &tls {
                    None => serve(stream, &mut indexes, &*enroll, &*reports),
                    Some(config) => {
                        let Ok(connection) = rustls::ServerConnection::new(Arc::clone(config))
                        else {
                            continue;
                        };
                        let stream = rustls::StreamOwned::new(connection, stream);
                        serve(stream, &mut indexes, &*enroll, &*reports)
                    }
                };
                let sent = match served {
                    None => continue,
                    Some(Request::Batch(r)) => tx.send(r).is_ok(),
                    Some(Request::Enroll(e)) => enroll_tx.send(e).is_ok(),
                };
                if !sent {
                    return;
                }
            }
        });
        FakeCollector {
            url,
            received,
            enrollments,
        }
    }

    /// The next batch, waiting for it at most `limit`.
    pub fn next(&self, limit: Duration) -> Received {
        self.received
            .recv_timeout(limit)
            .expect("the agent sent no batch in time")
    }

    pub fn try_next(&self) -> Option<Received> {
        self.received.try_recv().ok()
    }

    /// The next enrollment, waiting for it at most `limit`.
    pub fn next_enrollment(&self, limit: Duration) -> Enrollment {
        self.enrollments
            .recv_timeout(limit)
            .expect("the agent did not enroll in time")
    }
}

/// Whether the batch came with a token a fake collector issues.
pub fn has_issued_token(received: &Received) -> bool {
    received
        .authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer token-"))
        .is_some_and(|n| n.parse::<usize>().is_ok())
}

/// Enrollment as the fake collector does it by default: [`TEST_SECRET`] gets `token-N`.
pub fn issue_token(request: &EnrollRequest, index: usize) -> EnrollAnswer {
    if request.secret != TEST_SECRET {
        return EnrollAnswer::Error(
            401,
            ErrorBody::new(
                ErrorCode::EnrollSecretInvalid,
                "unknown, revoked or expired enrollment secret",
            ),
        );
    }
    EnrollAnswer::Token(format!("token-{index}"))
}

/// 401 `agent_token_invalid`, as the collector answers a token it does not know.
pub fn token_invalid() -> Answer {
    Answer::Error(
        401,
        ErrorBody::new(
            ErrorCode::AgentTokenInvalid,
            "unknown or revoked agent token",
        ),
    )
}

pub fn tls_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/tls")
        .join(name)
}

pub fn ack_all(batch: &Batch, send_inventory: bool) -> Ack {
    Ack {
        acked: batch.reports.iter().map(|r| r.seq).collect(),
        send_inventory,
        last_seq: None,
    }
}

enum Request {
    Batch(Received),
    Enroll(Enrollment),
}

fn serve(
    mut stream: impl Read + Write,
    (batches, enrollments): &mut (usize, usize),
    enroll: &EnrollHandler,
    reports: &ReportHandler,
) -> Option<Request> {
    let mut reader = BufReader::new(&mut stream);
    let mut content_length = 0usize;
    let mut content_type = None;
    let mut content_encoding = None;
    let mut authorization = None;
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        let value = value.trim().to_owned();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => content_length = value.parse().ok()?,
            "content-type" => content_type = Some(value),
            "content-encoding" => content_encoding = Some(value),
            "authorization" => authorization = Some(value),
            _ => {}
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body).ok()?;
    drop(reader);

    let (request, status, json, header) = if request_line.starts_with("POST /agent/v1/enroll ") {
        let request: EnrollRequest =
            serde_json::from_slice(&body).expect("body is an enrollment request");
        let (status, json, header) = match enroll(&request, *enrollments) {
            EnrollAnswer::Token(token) => (
                200,
                serde_json::to_vec(&EnrollResponse { token }).unwrap(),
                None,
            ),
            EnrollAnswer::Error(status, body) => (status, serde_json::to_vec(&body).unwrap(), None),
            EnrollAnswer::Redirect(to) => (307, Vec::new(), Some(format!("Location: {to}"))),
        };
        *enrollments += 1;
        let enrollment = Enrollment {
            request,
            content_type,
        };
        (Request::Enroll(enrollment), status, json, header)
    } else {
        assert!(
            request_line.starts_with("POST /agent/v1/reports "),
            "{request_line}"
        );
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut raw)
            .expect("body is gzip");
        let batch = codec::decode_batch(&raw, Format::MessagePack).expect("body is a valid batch");
        let received = Received {
            content_type,
            content_encoding,
            authorization,
            batch,
        };
        let (status, json, header) = match reports(&received, *batches) {
            Answer::Ack(ack) => (200, serde_json::to_vec(&ack).unwrap(), None),
            Answer::Error(status, body) => (status, serde_json::to_vec(&body).unwrap(), None),
            Answer::RateLimited(secs) => {
                let body = ErrorBody::new(ErrorCode::RateLimited, "slow down");
                let header = format!("Retry-After: {secs}");
                (429, serde_json::to_vec(&body).unwrap(), Some(header))
            }
            Answer::Redirect(to) => (307, Vec::new(), Some(format!("Location: {to}"))),
            Answer::Padded(ack, padding) => {
                let mut json = serde_json::to_vec(&ack).unwrap();
                json.resize(json.len() + padding, b' ');
                (200, json, None)
            }
        };
        *batches += 1;
        (Request::Batch(received), status, json, header)
    };

    let header = header.map(|h| format!("{h}\r\n")).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         {header}Connection: close\r\n\r\n",
        json.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(&json).ok()?;
    stream.flush().ok()?;
    Some(request)
}

/// Waits for a child to exit, killing it if it has not after `limit`.
pub fn wait_with_limit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the agent did not exit within {limit:?}");
        }
        // Polls for an exit that is already under way; no test outcome depends on this pause.
        thread::sleep(Duration::from_millis(10));
    }
}

/// A 127.0.0.1 port that nothing listens on: bound, then released.
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}
