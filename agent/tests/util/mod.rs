//! Helpers for the command-line tests: an isolated agent invocation and a fake collector.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use census_common::codec::{self, Format};
use census_common::{Ack, Batch, ErrorBody};

/// A temporary home for one agent: an empty config file and a state directory.
pub struct TestAgent {
    pub dir: tempfile::TempDir,
}

impl TestAgent {
    pub fn new() -> TestAgent {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agent.toml"), "").unwrap();
        TestAgent { dir }
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

    /// The agent binary with this agent's config and state dir, and no `CENSUS_*` variables
    /// from the environment running the tests.
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_census-agent"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("CENSUS_") || name == "RUST_LOG" {
                command.env_remove(name);
            }
        }
        command
            .arg("--config")
            .arg(self.config_path())
            .arg("--state-dir")
            .arg(self.state_dir());
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    pub fn state_file(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.state_dir().join(name)).ok()
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
}

/// One request the fake collector received.
#[derive(Debug)]
pub struct Received {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub batch: Batch,
}

/// A collector stand-in on 127.0.0.1: decodes each batch exactly as the real one must
/// (gzip, MessagePack, protocol checks), hands it to the test, and answers as told.
pub struct FakeCollector {
    pub url: String,
    pub received: mpsc::Receiver<Received>,
}

impl FakeCollector {
    /// `answer` gets each batch and its index (0 for the first request).
    pub fn start(answer: impl Fn(&Batch, usize) -> Answer + Send + 'static) -> FakeCollector {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for (index, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { return };
                let Some(received) = serve(stream, index, &answer) else {
                    continue;
                };
                if tx.send(received).is_err() {
                    return;
                }
            }
        });
        FakeCollector { url, received: rx }
    }

    /// Acknowledges every report.
    pub fn acking_everything() -> FakeCollector {
        FakeCollector::start(|batch, _| Answer::Ack(ack_all(batch, false)))
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
}

pub fn ack_all(batch: &Batch, send_inventory: bool) -> Ack {
    Ack {
        acked: batch.reports.iter().map(|r| r.seq).collect(),
        send_inventory,
        last_seq: None,
    }
}

fn serve(
    stream: TcpStream,
    index: usize,
    answer: &impl Fn(&Batch, usize) -> Answer,
) -> Option<Received> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut content_length = 0usize;
    let mut content_type = None;
    let mut content_encoding = None;
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    assert!(
        request_line.starts_with("POST /agent/v1/reports "),
        "{request_line}"
    );
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
            _ => {}
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body).ok()?;
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_end(&mut raw)
        .expect("body is gzip");
    let batch = codec::decode_batch(&raw, Format::MessagePack).expect("body is a valid batch");

    let (status, json) = match answer(&batch, index) {
        Answer::Ack(ack) => (200, serde_json::to_vec(&ack).unwrap()),
        Answer::Error(status, body) => (status, serde_json::to_vec(&body).unwrap()),
    };
    let mut stream = stream;
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        json.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(&json).ok()?;
    Some(Received {
        content_type,
        content_encoding,
        batch,
    })
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
