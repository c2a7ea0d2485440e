//! A blocking HTTP/1.1 client that keeps its connection open between requests, for the load
//! tools. Each worker thread owns one [`Conn`], so a measured latency is the collector's answer
//! and never a TCP handshake, and a long run does not leave tens of thousands of sockets in
//! `TIME_WAIT`. (reqwest is built here without a TLS crypto provider and would refuse to build a
//! client; the bench talks plain HTTP on this machine and needs nothing more.)
//!
//! **Promise:** a request either gets a whole response (status and body read to their declared
//! end) or a [`Failure`] naming what broke. A connection the server closed while it sat idle is
//! reopened and the request sent once more; a connection that broke mid-answer is dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use reqwest::Url;

/// How long one request may take before it counts as a `timeout` failure.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A plain-HTTP collector on this machine: its address and the admin token every request sends.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    host: String,
    authorization: String,
}

impl Target {
    /// `url` is `http://HOST:PORT` (a path after it is ignored).
    pub fn new(url: &str, token: &str) -> Result<Target> {
        let parsed = Url::parse(url).with_context(|| format!("--url {url:?} is not a URL"))?;
        if parsed.scheme() != "http" {
            bail!(
                "--url must be http://HOST:PORT (plain HTTP on this machine), not {:?}",
                parsed.scheme()
            );
        }
        let host = parsed.host_str().context("--url has no host")?.to_owned();
        let port = parsed.port_or_known_default().unwrap_or(80);
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .with_context(|| format!("could not resolve {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?;
        Ok(Target {
            addr,
            host: format!("{host}:{port}"),
            authorization: format!("Bearer {token}"),
        })
    }

    pub fn connect(&self) -> Conn {
        Conn {
            target: self.clone(),
            stream: None,
        }
    }
}

/// `path?name=value&...` with each value percent-encoded.
pub fn path_with_query(path: &str, params: &[(&str, &str)]) -> String {
    let mut url = Url::parse("http://127.0.0.1").expect("a valid base URL");
    url.set_path(path);
    if !params.is_empty() {
        url.query_pairs_mut().extend_pairs(params);
    }
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    }
}

/// A whole response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// How a failed response is tallied: its status and the API's error code
    /// (`404 not_found`), or the status alone when the body carries no code.
    pub fn error_label(&self) -> String {
        let code = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
        match code {
            Some(code) => format!("{} {code}", self.status),
            None => self.status.to_string(),
        }
    }
}

/// A request that got no whole response: `connect`, `timeout` or `io` (a broken or
/// malformed answer), as [`crate::stats::Tally`] counts transport failures.
#[derive(Debug)]
pub struct Failure {
    pub kind: &'static str,
    pub error: std::io::Error,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.error)
    }
}

impl std::error::Error for Failure {}

/// One keep-alive connection to a [`Target`], opened on first use.
pub struct Conn {
    target: Target,
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    pub fn get(&mut self, path_and_query: &str) -> Result<Response, Failure> {
        self.request("GET", path_and_query, None)
    }

    pub fn post_json(&mut self, path: &str, body: &[u8]) -> Result<Response, Failure> {
        self.request("POST", path, Some(body))
    }

    fn request(
        &mut self,
        method: &str,
        path_and_query: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, Failure> {
        let reused = self.stream.is_some();
        match self.exchange(method, path_and_query, body) {
            Ok(response) => Ok(response),
            // The server may close a keep-alive connection between requests; that is no
            // failure of the request, so it is sent once more on a new connection.
            Err(Exchange::Idle(_)) if reused => self
                .exchange(method, path_and_query, body)
                .map_err(Exchange::into_failure),
            Err(e) => Err(e.into_failure()),
        }
    }

    fn exchange(
        &mut self,
        method: &str,
        path_and_query: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, Exchange> {
        if self.stream.is_none() {
            let stream = TcpStream::connect_timeout(&self.target.addr, TIMEOUT)
                .map_err(Exchange::Connect)?;
            stream.set_nodelay(true).map_err(Exchange::Connect)?;
            stream
                .set_read_timeout(Some(TIMEOUT))
                .map_err(Exchange::Connect)?;
            stream
                .set_write_timeout(Some(TIMEOUT))
                .map_err(Exchange::Connect)?;
            self.stream = Some(BufReader::new(stream));
        }
        let result = self.send_and_read(method, path_and_query, body);
        if !matches!(result, Ok((_, true))) {
            self.stream = None;
        }
        result.map(|(response, _)| response)
    }

    /// The response and whether the connection may carry another request.
    fn send_and_read(
        &mut self,
        method: &str,
        path_and_query: &str,
        body: Option<&[u8]>,
    ) -> Result<(Response, bool), Exchange> {
        let stream = self.stream.as_mut().expect("connected above");
        let mut head = format!(
            "{method} {path_and_query} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nAccept: application/json\r\n",
            self.target.host, self.target.authorization
        );
        if let Some(body) = body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body.unwrap_or_default());
        stream
            .get_mut()
            .write_all(&request)
            .map_err(Exchange::Idle)?;

        let mut status_line = String::new();
        match stream.read_line(&mut status_line) {
            Ok(0) => return Err(Exchange::Idle(closed())),
            Ok(_) => {}
            Err(e) => return Err(Exchange::Idle(e)),
        }
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Exchange::Broken(malformed("no status line")))?;
        let mut length = None;
        let mut chunked = false;
        let mut keep_alive = true;
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).map_err(Exchange::Broken)? == 0 {
                return Err(Exchange::Broken(closed()));
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(Exchange::Broken(malformed("a header line without ':'")));
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| Exchange::Broken(malformed("bad Content-Length")))?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                keep_alive = !value.eq_ignore_ascii_case("close");
            }
        }
        let body = if chunked {
            read_chunked(stream).map_err(Exchange::Broken)?
        } else if let Some(length) = length {
            let mut body = vec![0; length];
            stream.read_exact(&mut body).map_err(Exchange::Broken)?;
            body
        } else {
            // No declared length: the body ends when the server closes the connection.
            keep_alive = false;
            let mut body = Vec::new();
            stream.read_to_end(&mut body).map_err(Exchange::Broken)?;
            body
        };
        Ok((Response { status, body }, keep_alive))
    }
}

fn read_chunked(stream: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        if stream.read_line(&mut size_line)? == 0 {
            return Err(closed());
        }
        let size = size_line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size, 16).map_err(|_| malformed("bad chunk size"))?;
        if size == 0 {
            // Trailers, if any, end with an empty line.
            loop {
                let mut line = String::new();
                if stream.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        stream.read_exact(&mut body[start..])?;
        let mut crlf = [0; 2];
        stream.read_exact(&mut crlf)?;
    }
}

/// What broke, and whether it broke before any of the answer arrived.
enum Exchange {
    Connect(std::io::Error),
    /// Nothing of the answer arrived: on a reused connection, the server had closed it.
    Idle(std::io::Error),
    Broken(std::io::Error),
}

impl Exchange {
    fn into_failure(self) -> Failure {
        let (kind, error) = match self {
            Exchange::Connect(e) => ("connect", e),
            Exchange::Idle(e) | Exchange::Broken(e) => (
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) {
                    "timeout"
                } else {
                    "io"
                },
                e,
            ),
        };
        Failure { kind, error }
    }
}

fn closed() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "the server closed the connection",
    )
}

fn malformed(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            path_with_query(
                "/api/v1/cis",
                &[("class", "computer"), ("os_name", "Debian GNU/Linux")]
            ),
            "/api/v1/cis?class=computer&os_name=Debian+GNU%2FLinux"
        );
        assert_eq!(path_with_query("/api/v1/cis/7", &[]), "/api/v1/cis/7");
    }

    #[test]
    fn only_plain_http_urls_are_taken() {
        assert!(Target::new("http://127.0.0.1:8080", "t").is_ok());
        let err = Target::new("https://127.0.0.1:8443", "t").unwrap_err();
        assert!(err.to_string().contains("plain HTTP"), "{err}");
    }
}
