//! The agent's configuration: built-in defaults, overridden by the TOML file, overridden by
//! `CENSUS_*` environment variables, overridden by command-line flags.
//!
//! Durations are written with a unit, as in `"60s"`, `"5m"`, `"1h"` or `"1h30m"`, and must lie
//! in their key's range: `health_interval` 1s to 1d, `inventory_interval` 1m to 30d,
//! `request_timeout` 1s to 10m, `retry_max_backoff` 10s to 1h (an absurd value is refused at load, naming the key and the
//! range, rather than overflowing a clock later). A key the agent does not know is an error
//! that names the key: a typo must not silently fall back to a default.
//!
//! `spool_max_bytes` bounds the on-disk spool of unacknowledged reports (see
//! [`crate::spool`]): a byte count, or a size such as `"64MiB"` (`KiB`, `MiB`, `GiB`; also
//! `KB`, `MB`, `GB` as powers of 1000), from 1 MiB to 1 GiB.
//!
//! Trust keys: `enroll_secret` (never logged or printed: `print-config` shows `<redacted>`),
//! `ca_file` (when set, only its CA certificates are trusted; checked by the commands that talk
//! to the collector, see [`crate::tls`]) and `allow_insecure_http`. A `server` with `http://` to
//! a host other than this machine (127.0.0.0/8, `::1`, `localhost`) is refused unless
//! `allow_insecure_http = true`: reports, the agent token and the enrollment secret would cross
//! the network in clear text, and anyone on the path could read or change them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::{REDACTED, Secret};

#[cfg(not(windows))]
pub const DEFAULT_CONFIG_PATH: &str = "/etc/census/agent.toml";
#[cfg(not(windows))]
pub const DEFAULT_STATE_DIR: &str = "/var/lib/census";
#[cfg(windows)]
pub const DEFAULT_CONFIG_PATH: &str = r"C:\ProgramData\Census\agent.toml";
#[cfg(windows)]
pub const DEFAULT_STATE_DIR: &str = r"C:\ProgramData\Census\state";
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_INVENTORY_INTERVAL: Duration = Duration::from_secs(3600);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_LOG_LEVEL: &str = "info";
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = crate::spool::DEFAULT_MAX_BYTES;
pub const DEFAULT_RETRY_MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Allowed `spool_max_bytes`, inclusive: below 1 MiB an inventory may not fit beside a day of
/// health samples; 1 GiB is years of health samples, and the spool's index (about 50 bytes of
/// memory a report) must stay small.
pub const SPOOL_MAX_BYTES_RANGE: (u64, u64) = (1 << 20, 1 << 30);
/// Allowed `retry_max_backoff`, inclusive.
pub const RETRY_MAX_BACKOFF_RANGE: (Duration, Duration) =
    (Duration::from_secs(10), Duration::from_secs(3600));

/// Allowed `health_interval`, inclusive: more often than every second is load, not insight;
/// less often than daily is no health monitoring.
pub const HEALTH_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(86_400));
/// Allowed `inventory_interval`, inclusive: the inventory is a full collection (software lists
/// included), so not more often than every minute; at least monthly.
pub const INVENTORY_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_secs(60), Duration::from_secs(30 * 86_400));
/// Allowed `request_timeout`, inclusive.
pub const REQUEST_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(600));

/// The effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Collector base URL without a trailing slash; `None` until configured. Only `run` and
    /// `once` need it.
    pub server: Option<String>,
    /// Traded for the agent's token by `enroll`, and by `run` and `once` when there is no
    /// token or the collector refused it. `Debug` prints `<redacted>`.
    pub enroll_secret: Option<Secret>,
    /// PEM file of the CA certificates to trust for the collector; when set, only these are
    /// trusted (the system's roots are not).
    pub ca_file: Option<PathBuf>,
    /// Allows `http://` to a host other than this machine.
    pub allow_insecure_http: bool,
    pub state_dir: PathBuf,
    pub health_interval: Duration,
    pub inventory_interval: Duration,
    pub request_timeout: Duration,
    /// Bound of the on-disk spool of unacknowledged reports.
    pub spool_max_bytes: u64,
    /// The longest wait between two delivery attempts after failures (exponential backoff with
    /// jitter up to this).
    pub retry_max_backoff: Duration,
    /// A `tracing` filter: `info`, `debug`, `census_agent=debug,warn`, ...
    pub log_level: String,
    /// The config file that was read, if any.
    pub file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: None,
            enroll_secret: None,
            ca_file: None,
            allow_insecure_http: false,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            health_interval: DEFAULT_HEALTH_INTERVAL,
            inventory_interval: DEFAULT_INVENTORY_INTERVAL,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            retry_max_backoff: DEFAULT_RETRY_MAX_BACKOFF,
            log_level: DEFAULT_LOG_LEVEL.to_owned(),
            file: None,
        }
    }
}

/// Values given on the command line; they win over everything else.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub config: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub server: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// `enroll --secret`.
    pub enroll_secret: Option<Secret>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("could not read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("no collector URL: set `server` in the config file, CENSUS_SERVER or --server")]
    MissingServer,
    #[error(
        "no enrollment secret: use --secret, CENSUS_ENROLL_SECRET or `enroll_secret` in the \
         config file (create one on the collector with `census-collector enroll-secret create \
         --name NAME`)"
    )]
    MissingSecret,
    #[error(
        "server `{server}` is plain http:// to a host that is not this machine: reports, the \
         agent token and the enrollment secret would cross the network unencrypted; use \
         https://, or set allow_insecure_http = true (CENSUS_ALLOW_INSECURE_HTTP=true) if the \
         network in between is trusted"
    )]
    InsecureServer { server: String },
    #[error("invalid ca_file {}: it {message}", path.display())]
    CaFile { path: PathBuf, message: String },
    #[error("invalid {key} from {origin}: {message}")]
    Value {
        key: &'static str,
        origin: String,
        message: String,
    },
}

/// The file's shape. Durations stay strings here so that an error can name the key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server: Option<String>,
    enroll_secret: Option<Secret>,
    ca_file: Option<PathBuf>,
    allow_insecure_http: Option<bool>,
    state_dir: Option<PathBuf>,
    health_interval: Option<String>,
    inventory_interval: Option<String>,
    request_timeout: Option<String>,
    spool_max_bytes: Option<Size>,
    retry_max_backoff: Option<String>,
    log_level: Option<String>,
}

/// `spool_max_bytes`: a TOML integer (bytes) or a string with a unit.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

/// One layer above the defaults: every value optional, with where it came from.
struct Layer {
    origin: String,
    values: FileConfig,
}

impl Config {
    /// Loads the configuration the way the binary does: the real environment and the flags.
    pub fn load(flags: &Flags) -> Result<Config, ConfigError> {
        Config::load_with_env(flags, |name| std::env::var(name).ok())
    }

    /// Loads the configuration with an injected environment, so tests do not touch the
    /// process-wide one. An empty environment variable counts as unset.
    pub fn load_with_env(
        flags: &Flags,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config = Config::default();

        let (path, explicit) = match &flags.config {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        if let Some(values) = read_file(&path, explicit)? {
            config.file = Some(path.clone());
            config.apply(Layer {
                origin: format!("config file {}", path.display()),
                values,
            })?;
        }

        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        let env_origin = "the environment";
        let allow_insecure_http = var("CENSUS_ALLOW_INSECURE_HTTP")
            .map(|v| parse_bool(&v))
            .transpose()
            .map_err(|message| ConfigError::Value {
                key: "allow_insecure_http",
                origin: env_origin.to_owned(),
                message,
            })?;
        config.apply(Layer {
            origin: env_origin.to_owned(),
            values: FileConfig {
                server: var("CENSUS_SERVER"),
                enroll_secret: var("CENSUS_ENROLL_SECRET").map(Secret::new),
                ca_file: var("CENSUS_CA_FILE").map(PathBuf::from),
                allow_insecure_http,
                state_dir: var("CENSUS_STATE_DIR").map(PathBuf::from),
                health_interval: var("CENSUS_HEALTH_INTERVAL"),
                inventory_interval: var("CENSUS_INVENTORY_INTERVAL"),
                request_timeout: var("CENSUS_REQUEST_TIMEOUT"),
                spool_max_bytes: var("CENSUS_SPOOL_MAX_BYTES").map(Size::Text),
                retry_max_backoff: var("CENSUS_RETRY_MAX_BACKOFF"),
                log_level: var("CENSUS_LOG_LEVEL"),
            },
        })?;

        config.apply(Layer {
            origin: "the command line".to_owned(),
            values: FileConfig {
                server: flags.server.clone(),
                state_dir: flags.state_dir.clone(),
                ca_file: flags.ca_file.clone(),
                enroll_secret: flags.enroll_secret.clone(),
                ..FileConfig::default()
            },
        })?;

        // Checked once every layer is in: the file may name the server and the environment
        // allow plain HTTP, or the other way round.
        if let Some(server) = &config.server
            && !config.allow_insecure_http
            && is_plain_http_off_loopback(server)
        {
            return Err(ConfigError::InsecureServer {
                server: server.clone(),
            });
        }
        Ok(config)
    }

    /// Whether the server is reached over plain HTTP on the network (allowed only with
    /// `allow_insecure_http`); the commands that talk to the collector warn about it.
    pub fn sends_in_clear_text(&self) -> bool {
        self.server
            .as_deref()
            .is_some_and(is_plain_http_off_loopback)
    }

    fn apply(&mut self, layer: Layer) -> Result<(), ConfigError> {
        let origin = &layer.origin;
        let values = layer.values;
        let invalid = |key: &'static str, message: String| ConfigError::Value {
            key,
            origin: origin.clone(),
            message,
        };
        if let Some(server) = values.server {
            self.server = Some(validate_server(&server).map_err(|m| invalid("server", m))?);
        }
        if let Some(secret) = values.enroll_secret {
            // The messages never quote the value: it is a secret.
            let text = secret.expose().trim();
            if text.is_empty() {
                return Err(invalid("enroll_secret", "must not be empty".to_owned()));
            }
            if text == REDACTED {
                return Err(invalid(
                    "enroll_secret",
                    format!(
                        "`{REDACTED}` is what print-config shows in place of the secret; write \
                         the secret itself"
                    ),
                ));
            }
            self.enroll_secret = Some(Secret::new(text));
        }
        if let Some(path) = values.ca_file {
            if path.as_os_str().is_empty() {
                return Err(invalid("ca_file", "must not be empty".to_owned()));
            }
            self.ca_file = Some(path);
        }
        if let Some(allow) = values.allow_insecure_http {
            self.allow_insecure_http = allow;
        }
        if let Some(dir) = values.state_dir {
            if dir.as_os_str().is_empty() {
                return Err(invalid("state_dir", "must not be empty".to_owned()));
            }
            self.state_dir = dir;
        }
        let interval = |key: &'static str,
                        (min, max): (Duration, Duration),
                        text: Option<String>|
         -> Result<_, ConfigError> {
            text.map(|t| match parse_duration(&t) {
                Ok(d) if d < min || d > max => Err(invalid(
                    key,
                    format!(
                        "`{}` is outside the allowed range {} to {}",
                        t.trim(),
                        format_duration(min),
                        format_duration(max)
                    ),
                )),
                Ok(d) => Ok(d),
                Err(m) => Err(invalid(key, m)),
            })
            .transpose()
        };
        if let Some(d) = interval(
            "health_interval",
            HEALTH_INTERVAL_RANGE,
            values.health_interval,
        )? {
            self.health_interval = d;
        }
        if let Some(d) = interval(
            "inventory_interval",
            INVENTORY_INTERVAL_RANGE,
            values.inventory_interval,
        )? {
            self.inventory_interval = d;
        }
        if let Some(d) = interval(
            "request_timeout",
            REQUEST_TIMEOUT_RANGE,
            values.request_timeout,
        )? {
            self.request_timeout = d;
        }
        if let Some(d) = interval(
            "retry_max_backoff",
            RETRY_MAX_BACKOFF_RANGE,
            values.retry_max_backoff,
        )? {
            self.retry_max_backoff = d;
        }
        if let Some(size) = values.spool_max_bytes {
            let bytes = match size {
                Size::Bytes(n) => n,
                Size::Text(t) => parse_size(&t).map_err(|m| invalid("spool_max_bytes", m))?,
            };
            let (min, max) = SPOOL_MAX_BYTES_RANGE;
            if !(min..=max).contains(&bytes) {
                return Err(invalid(
                    "spool_max_bytes",
                    format!("{bytes} bytes is outside the allowed range 1MiB to 1GiB"),
                ));
            }
            self.spool_max_bytes = bytes;
        }
        if let Some(level) = values.log_level {
            tracing_subscriber::EnvFilter::try_new(&level)
                .map_err(|e| invalid("log_level", e.to_string()))?;
            self.log_level = level;
        }
        Ok(())
    }

    /// The configuration as TOML that the agent reads back unchanged, every default written
    /// out. An unset `server` is a comment, since TOML has no null.
    pub fn to_toml(&self) -> String {
        #[derive(Serialize)]
        struct Out<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            server: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            ca_file: Option<&'a Path>,
            allow_insecure_http: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            enroll_secret: Option<&'a str>,
            state_dir: &'a Path,
            health_interval: String,
            inventory_interval: String,
            request_timeout: String,
            spool_max_bytes: String,
            retry_max_backoff: String,
            log_level: &'a str,
        }
        let out = Out {
            server: self.server.as_deref(),
            ca_file: self.ca_file.as_deref(),
            allow_insecure_http: self.allow_insecure_http,
            enroll_secret: self.enroll_secret.as_ref().map(|_| REDACTED),
            state_dir: &self.state_dir,
            health_interval: format_duration(self.health_interval),
            inventory_interval: format_duration(self.inventory_interval),
            request_timeout: format_duration(self.request_timeout),
            spool_max_bytes: format_size(self.spool_max_bytes),
            retry_max_backoff: format_duration(self.retry_max_backoff),
            log_level: &self.log_level,
        };
        let mut text = String::new();
        let source = match &self.file {
            Some(path) => format!("defaults < {} < environment < flags", path.display()),
            None => "defaults < environment < flags (no config file read)".to_owned(),
        };
        let _ = writeln!(text, "# effective census-agent configuration: {source}");
        if self.server.is_none() {
            text.push_str(
                "# server is not set: use --server, CENSUS_SERVER or `server = \"https://...\"`\n",
            );
        }
        if self.ca_file.is_none() {
            text.push_str("# ca_file is not set: the system's trusted CAs verify the collector\n");
        }
        if self.enroll_secret.is_none() {
            text.push_str(
                "# enroll_secret is not set: the agent uses the token in its state directory\n",
            );
        }
        text.push_str(&toml::to_string(&out).expect("config always serialises to TOML"));
        text
    }
}

/// Parses a size: a byte count, or a number with a unit (`KiB`, `MiB`, `GiB`, or `KB`, `MB`,
/// `GB` as powers of 1000; `B` for bytes). Case does not matter.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{t}` is not a size such as 67108864 or \"64MiB\""))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{t}` (use B, KiB, MiB, GiB, KB, MB or GB)"
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("`{t}` is too large"))
}

/// Writes a size the way [`parse_size`] reads it, in the largest binary unit that is exact.
pub fn format_size(bytes: u64) -> String {
    for (unit, factor) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    bytes.to_string()
}

/// Reads and parses the config file. A missing default file is no error (a machine may run the
/// agent with flags only); a missing file the user named is.
fn read_file(path: &Path, explicit: bool) -> Result<Option<FileConfig>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(None),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: parse_error_message(&text, &e),
        })
}

/// toml's `Display` spans several lines with a source excerpt that quotes the line, value
/// and all. Any value may be the secret (under a misspelt key, or pasted into the wrong one),
/// so the message names the line and at most its key, and drops the value from serde's
/// "invalid type" text.
fn parse_error_message(text: &str, e: &toml::de::Error) -> String {
    let message = without_value(e.message());
    let Some(span) = e.span() else {
        return message;
    };
    let number = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let line = text.lines().nth(number - 1).unwrap_or("");
    match line_key(line) {
        Some(key) => format!("{message} (line {number}, key `{key}`)"),
        None => format!("{message} (line {number})"),
    }
}

/// The key of a `key = value` line, if the text before `=` is a bare (possibly dotted) key.
/// Anything else, say a line of a multi-line array or string, may be part of a value.
fn line_key(line: &str) -> Option<&str> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let bare = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ');
    (!key.is_empty() && key.chars().all(bare)).then_some(key)
}

/// serde writes the offending value into "invalid type: string \"...\", expected a boolean"
/// (and "invalid value: ..."); keeps only what kind of value it was.
fn without_value(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((unexpected, expected)) = rest.rsplit_once(", expected ")
        {
            // `string "..."`, `integer `5``, `floating point `1.5``, or a bare kind (`sequence`).
            let kind = unexpected
                .split_once(['`', '"'])
                .map_or(unexpected, |(kind, _)| kind)
                .trim();
            return format!("{prefix}{kind}, expected {expected}");
        }
    }
    message.to_owned()
}

fn validate_server(url: &str) -> Result<String, String> {
    let url = url.trim();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("`{url}` must start with http:// or https://"))?;
    if rest.trim_end_matches('/').is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    // The same parser as reqwest's, so what is accepted here is what gets requested.
    reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a valid URL: {e}"))?;
    Ok(url.trim_end_matches('/').to_owned())
}

/// Whether `url` is `http://` to a host other than this machine. Loopback is 127.0.0.0/8,
/// `::1` (also as `::ffff:127.x.y.z`) and the name `localhost`; any other name is taken for the
/// network, since it may resolve anywhere.
///
/// The host is the one reqwest connects to: the URL is parsed by the same WHATWG parser
/// (`reqwest::Url`), which also reads `\` as `/` and normalises `127.1` or `0x7f.0.0.1`, so
/// `http://evil.example\@127.0.0.1/` is evil.example, as reqwest sees it. A URL it cannot
/// parse is taken for the network.
fn is_plain_http_off_loopback(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url.trim()) else {
        return true;
    };
    if url.scheme() != "http" {
        return false;
    }
    // `host_str` is the parsed host, serialised: a domain, a dotted IPv4 address, or an IPv6
    // address in brackets.
    let host = url.host_str().unwrap_or("");
    let ip = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse::<std::net::IpAddr>();
    let loopback = match ip {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(std::net::IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => host.trim_end_matches('.').eq_ignore_ascii_case("localhost"),
    };
    !loopback
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`), as environment variables are written.
fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("`{}` is not true or false", text.trim())),
    }
}

/// Parses `"60s"`, `"5m"`, `"1h30m"`, `"250ms"`, `"1d"`. A number needs a unit: a bare `60`
/// could mean seconds or milliseconds, so it is refused rather than guessed.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; write it like \"60s\", \"5m\" or \"1h\"".to_owned());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "`{text}` is not a duration; write it like \"60s\", \"5m\" or \"1h\""
            ));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let piece = match unit {
            "ms" => Some(Duration::from_millis(number)),
            "s" => Some(Duration::from_secs(number)),
            "m" => number.checked_mul(60).map(Duration::from_secs),
            "h" => number.checked_mul(3600).map(Duration::from_secs),
            "d" => number.checked_mul(86_400).map(Duration::from_secs),
            "" => return Err(format!("`{text}` needs a unit: ms, s, m, h or d")),
            other => {
                return Err(format!(
                    "`{text}` has unknown unit `{other}`; use ms, s, m, h or d"
                ));
            }
        };
        total = piece
            .and_then(|p| total.checked_add(p))
            .ok_or_else(|| format!("`{text}`: duration too large"))?;
    }
    Ok(total)
}

/// Writes a duration in the largest unit that represents it exactly, so that
/// `parse_duration(format_duration(d)) == d`.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() != 0 {
        return format!("{}ms", d.as_millis());
    }
    let secs = d.as_secs();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs != 0 && secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn flags_with_file(path: &Path) -> Flags {
        Flags {
            config: Some(path.to_owned()),
            ..Flags::default()
        }
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(" 2d "), Ok(Duration::from_secs(172_800)));
    }

    #[test]
    fn sizes_parse_with_units_and_round_trip() {
        assert_eq!(parse_size("67108864"), Ok(64 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size(" 512 kib "), Ok(512 << 10));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert!(
            parse_size("64 furlongs")
                .unwrap_err()
                .contains("unknown size unit")
        );
        assert!(parse_size("MiB").is_err());
        assert!(
            parse_size("99999999999GiB")
                .unwrap_err()
                .contains("too large")
        );
        for bytes in [1 << 20, 64 << 20, 3 << 30, 1_500_000] {
            assert_eq!(parse_size(&format_size(bytes)), Ok(bytes));
        }
    }

    #[test]
    fn spool_and_backoff_keys_come_from_file_and_environment_within_range() {
        let (_dir, path) = write_config("spool_max_bytes = 2097152\nretry_max_backoff = \"1m\"\n");
        let config = Config::load_with_env(&flags_with_file(&path), no_env).unwrap();
        assert_eq!(config.spool_max_bytes, 2 << 20);
        assert_eq!(config.retry_max_backoff, Duration::from_secs(60));
        let env: HashMap<&str, &str> = [
            ("CENSUS_SPOOL_MAX_BYTES", "8MiB"),
            ("CENSUS_RETRY_MAX_BACKOFF", "30s"),
        ]
        .into();
        let config = Config::load_with_env(&flags_with_file(&path), |k| {
            env.get(k).map(|v| v.to_string())
        })
        .unwrap();
        assert_eq!(config.spool_max_bytes, 8 << 20);
        assert_eq!(config.retry_max_backoff, Duration::from_secs(30));
        for (text, needle) in [
            ("spool_max_bytes = \"1KiB\"\n", "spool_max_bytes"),
            ("spool_max_bytes = \"2GiB\"\n", "1MiB to 1GiB"),
            ("retry_max_backoff = \"1s\"\n", "10s to 1h"),
        ] {
            let (_dir, path) = write_config(text);
            let err = Config::load_with_env(&flags_with_file(&path), no_env).unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn durations_without_unit_or_with_junk_are_refused() {
        assert!(parse_duration("60").unwrap_err().contains("needs a unit"));
        assert!(parse_duration("5 minutes").is_err());
        assert!(
            parse_duration("1w")
                .unwrap_err()
                .contains("unknown unit `w`")
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
    }

    #[test]
    fn formatted_durations_parse_back() {
        for secs in [1, 59, 60, 90, 300, 3600, 5400, 86_400] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{secs}s");
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
    }

    #[test]
    fn empty_file_gives_defaults() {
        let (_dir, path) = write_config("");
        let config = Config::load_with_env(&flags_with_file(&path), no_env).unwrap();
        assert_eq!(
            config,
            Config {
                file: Some(path),
                ..Config::default()
            }
        );
    }

    #[test]
    fn missing_default_file_is_no_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            read_file(&dir.path().join("agent.toml"), false)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.toml");
        let err = Config::load_with_env(&flags_with_file(&path), no_env).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(err.to_string().contains("absent.toml"), "{err}");
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_key() {
        let (_dir, path) = write_config("server = \"http://c\"\nhealth_intervall = \"5s\"\n");
        let err = Config::load_with_env(&flags_with_file(&path), no_env).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("health_intervall"), "{text}");
        assert!(text.contains("agent.toml"), "{text}");
    }

    #[test]
    fn bad_duration_in_file_names_key_and_file() {
        let (_dir, path) = write_config("health_interval = 60\n");
        let text = Config::load_with_env(&flags_with_file(&path), no_env)
            .unwrap_err()
            .to_string();
        assert!(text.contains("line 1, key `health_interval`"), "{text}");
        assert!(
            text.contains("invalid type: integer, expected a string"),
            "{text}"
        );
        let (_dir, path) = write_config("health_interval = \"60\"\n");
        let text = Config::load_with_env(&flags_with_file(&path), no_env)
            .unwrap_err()
            .to_string();
        assert!(text.contains("health_interval"), "{text}");
        assert!(text.contains("agent.toml"), "{text}");
        let (_dir, path) = write_config("inventory_interval = \"0s\"\n");
        assert!(Config::load_with_env(&flags_with_file(&path), no_env).is_err());
    }

    #[test]
    fn durations_outside_their_range_are_refused_naming_key_and_range() {
        let cases = [
            ("health_interval", "18446744073709551615s", "1s to 1d"),
            ("health_interval", "500ms", "1s to 1d"),
            ("health_interval", "0s", "1s to 1d"),
            ("health_interval", "2d", "1s to 1d"),
            ("inventory_interval", "59s", "1m to 30d"),
            ("inventory_interval", "31d", "1m to 30d"),
            ("request_timeout", "0s", "1s to 10m"),
            ("request_timeout", "11m", "1s to 10m"),
        ];
        for (key, value, range) in cases {
            let (_dir, path) = write_config(&format!("{key} = \"{value}\"\n"));
            let text = Config::load_with_env(&flags_with_file(&path), no_env)
                .unwrap_err()
                .to_string();
            assert!(
                text.contains(key) && text.contains(value) && text.contains(range),
                "{key} = {value}: {text}"
            );
            // The same from the environment.
            let (_dir, empty) = write_config("");
            let var = format!("CENSUS_{}", key.to_ascii_uppercase());
            let env = |k: &str| (k == var).then(|| value.to_owned());
            let text = Config::load_with_env(&flags_with_file(&empty), env)
                .unwrap_err()
                .to_string();
            assert!(
                text.contains(range) && text.contains("environment"),
                "{text}"
            );
        }
        // The ends of each range are allowed.
        let (_dir, path) = write_config(
            "health_interval = \"1s\"\ninventory_interval = \"30d\"\nrequest_timeout = \"10m\"\n",
        );
        let config = Config::load_with_env(&flags_with_file(&path), no_env).unwrap();
        assert_eq!(config.health_interval, Duration::from_secs(1));
        assert_eq!(config.inventory_interval, Duration::from_secs(30 * 86_400));
        assert_eq!(config.request_timeout, Duration::from_secs(600));
        let (_dir, path) = write_config("health_interval = \"1d\"\ninventory_interval = \"1m\"\n");
        assert!(Config::load_with_env(&flags_with_file(&path), no_env).is_ok());
    }

    #[test]
    fn layers_apply_in_order_defaults_file_env_flags() {
        let (_dir, path) = write_config(
            "server = \"http://from-file:1\"\nstate_dir = \"/file/state\"\n\
             health_interval = \"10s\"\ninventory_interval = \"2h\"\n\
             allow_insecure_http = true\n",
        );
        let env: HashMap<&str, &str> = [
            ("CENSUS_SERVER", "http://from-env:2/"),
            ("CENSUS_STATE_DIR", "/env/state"),
            ("CENSUS_HEALTH_INTERVAL", "20s"),
            ("CENSUS_REQUEST_TIMEOUT", ""),
        ]
        .into();
        let env = |k: &str| env.get(k).map(|v| v.to_string());

        let file_and_env = Config::load_with_env(&flags_with_file(&path), env).unwrap();
        assert_eq!(file_and_env.server.as_deref(), Some("http://from-env:2"));
        assert_eq!(file_and_env.state_dir, PathBuf::from("/env/state"));
        assert_eq!(file_and_env.health_interval, Duration::from_secs(20));
        // Only the file sets this one.
        assert_eq!(file_and_env.inventory_interval, Duration::from_secs(7200));
        // Nobody sets this one (the empty variable counts as unset).
        assert_eq!(file_and_env.request_timeout, DEFAULT_REQUEST_TIMEOUT);

        let flags = Flags {
            config: Some(path.clone()),
            state_dir: Some(PathBuf::from("/flag/state")),
            server: Some("https://from-flag:3".to_owned()),
            ..Flags::default()
        };
        let all = Config::load_with_env(&flags, env).unwrap();
        assert_eq!(all.server.as_deref(), Some("https://from-flag:3"));
        assert_eq!(all.state_dir, PathBuf::from("/flag/state"));
        assert_eq!(all.health_interval, Duration::from_secs(20));
    }

    #[test]
    fn bad_env_value_names_the_variable_origin() {
        let (_dir, path) = write_config("");
        let env = |k: &str| (k == "CENSUS_SERVER").then(|| "ftp://x".to_owned());
        let text = Config::load_with_env(&flags_with_file(&path), env)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("server") && text.contains("environment"),
            "{text}"
        );
    }

    #[test]
    fn printed_config_reads_back_to_the_same_config() {
        let (dir, path) = write_config("");
        let config = Config {
            server: Some("https://census.example:8443".to_owned()),
            health_interval: Duration::from_secs(90),
            file: Some(path.clone()),
            ..Config::default()
        };
        let printed = config.to_toml();
        assert!(printed.contains("health_interval = \"90s\""), "{printed}");
        assert!(printed.contains("inventory_interval = \"1h\""), "{printed}");
        std::fs::write(&path, &printed).unwrap();
        let reread = Config::load_with_env(&flags_with_file(&path), no_env).unwrap();
        assert_eq!(reread, config);
        drop(dir);
    }

    #[test]
    fn plain_http_is_refused_off_loopback_unless_allowed() {
        for loopback in [
            "http://127.0.0.1:8080",
            "http://127.1.2.3",
            "http://localhost:8080/",
            "http://LOCALHOST",
            "http://[::1]:8080",
            "http://[::ffff:127.0.0.1]:80",
            "http://user@127.0.0.1:9/census",
            "http://user:pass@[::1]:8080/census",
            "http://[0:0:0:0:0:0:0:1]",
            "http://127.1:8080",
            "http://0x7f.0.0.1",
            "http://LocalHost.:8080",
            // `\` is read as `/`: the host is 127.0.0.1, the rest is the path.
            "http://127.0.0.1\\@evil.example/",
            "https://census.example.org",
            "https://192.0.2.7:8443",
        ] {
            assert!(!is_plain_http_off_loopback(loopback), "{loopback}");
        }
        for network in [
            "http://census.example.org",
            "http://192.0.2.7:8080",
            "http://[2001:db8::1]:80",
            "http://localhost.example.org",
            "http://127.0.0.1.example.org",
            "http://127.0.0.1@census.example.org",
            "http://0.0.0.0:8080",
            // reqwest reads `\` as `/`: the host is evil.example, the rest is the path.
            "http://evil.example\\@127.0.0.1/",
            "http://evil.example\\@localhost:8080/",
            "http://[::1]@evil.example/",
            "http://localhost:8080@evil.example/",
        ] {
            assert!(is_plain_http_off_loopback(network), "{network}");
        }

        // A URL reqwest could not request is refused as such.
        let (_dir, path) = write_config("server = \"http://[::1:8080\"\n");
        let text = Config::load_with_env(&flags_with_file(&path), no_env)
            .unwrap_err()
            .to_string();
        assert!(text.contains("is not a valid URL"), "{text}");
        let evil = "http://evil.example\\@127.0.0.1:8080";
        let flags = Flags {
            server: Some(evil.to_owned()),
            ..Flags::default()
        };
        let (_dir, empty) = write_config("");
        let err = Config::load_with_env(
            &Flags {
                config: Some(empty),
                ..flags
            },
            no_env,
        );
        assert!(
            matches!(err, Err(ConfigError::InsecureServer { .. })),
            "{err:?}"
        );
        let (_dir, path) = write_config("server = \"http://census.example.org:8080\"\n");
        let err = Config::load_with_env(&flags_with_file(&path), no_env).unwrap_err();
        assert!(matches!(err, ConfigError::InsecureServer { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("http://census.example.org:8080")
                && text.contains("allow_insecure_http")
                && text.contains("https://"),
            "{text}"
        );
        // Allowed from another layer than the one that names the server.
        let env = |k: &str| (k == "CENSUS_ALLOW_INSECURE_HTTP").then(|| "true".to_owned());
        let config = Config::load_with_env(&flags_with_file(&path), env).unwrap();
        assert!(config.allow_insecure_http && config.sends_in_clear_text());
        // A flag naming an https server makes the file's http server irrelevant.
        let flags = Flags {
            server: Some("https://census.example.org".to_owned()),
            ..flags_with_file(&path)
        };
        assert!(
            !Config::load_with_env(&flags, no_env)
                .unwrap()
                .sends_in_clear_text()
        );
        let env = |k: &str| (k == "CENSUS_ALLOW_INSECURE_HTTP").then(|| "maybe".to_owned());
        let text = Config::load_with_env(&flags_with_file(&path), env)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("allow_insecure_http") && text.contains("maybe"),
            "{text}"
        );
    }

    #[test]
    fn the_enroll_secret_layers_like_every_key_and_is_never_shown() {
        let (_dir, path) = write_config(
            "enroll_secret = \"from-file-s3cret\"\nca_file = \"/etc/census/ca.pem\"\n",
        );
        let config = Config::load_with_env(&flags_with_file(&path), no_env).unwrap();
        assert_eq!(
            config.enroll_secret.as_ref().map(Secret::expose),
            Some("from-file-s3cret")
        );
        assert_eq!(config.ca_file, Some(PathBuf::from("/etc/census/ca.pem")));
        let env = |k: &str| (k == "CENSUS_ENROLL_SECRET").then(|| " from-env-s3cret\n".to_owned());
        let config = Config::load_with_env(&flags_with_file(&path), env).unwrap();
        assert_eq!(
            config.enroll_secret.as_ref().map(Secret::expose),
            Some("from-env-s3cret")
        );
        let flags = Flags {
            enroll_secret: Some(Secret::new("from-flag-s3cret")),
            ca_file: Some(PathBuf::from("/flag/ca.pem")),
            ..flags_with_file(&path)
        };
        let config = Config::load_with_env(&flags, env).unwrap();
        assert_eq!(
            config.enroll_secret.as_ref().map(Secret::expose),
            Some("from-flag-s3cret")
        );
        assert_eq!(config.ca_file, Some(PathBuf::from("/flag/ca.pem")));

        let debug = format!("{config:?}");
        let printed = config.to_toml();
        for text in [&debug, &printed] {
            assert!(!text.contains("s3cret"), "{text}");
            assert!(text.contains(REDACTED), "{text}");
        }
        assert!(
            printed.contains("enroll_secret = \"<redacted>\""),
            "{printed}"
        );
        assert!(printed.contains("ca_file = \"/flag/ca.pem\""), "{printed}");
        assert!(printed.contains("allow_insecure_http = false"), "{printed}");
        // Pasting print-config's output back does not enroll with the placeholder.
        std::fs::write(&path, &printed).unwrap();
        let text = Config::load_with_env(&flags_with_file(&path), no_env)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("enroll_secret") && text.contains("print-config"),
            "{text}"
        );
        // A mistake on the secret's line is located without quoting the line.
        let (_dir, path) = write_config("enroll_secret = \"s3cret-unterminated\n");
        let text = Config::load_with_env(&flags_with_file(&path), no_env)
            .unwrap_err()
            .to_string();
        assert!(text.contains("line 1, key `enroll_secret`"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        // An empty secret is a mistake, not "no secret".
        let (_dir, path) = write_config("enroll_secret = \" \"\n");
        let text = Config::load_with_env(&flags_with_file(&path), no_env)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("enroll_secret") && text.contains("empty"),
            "{text}"
        );
    }

    #[test]
    fn a_parse_error_quotes_no_value_whatever_the_key() {
        let cases = [
            // A misspelt key holding the secret.
            (
                "enrolment_secret = \"ces_1_s3cret\"\n",
                "line 1, key `enrolment_secret`",
            ),
            // The secret pasted into the wrong key: serde would quote it in "invalid type".
            (
                "server = \"https://c\"\nallow_insecure_http = \"ces_1_s3cret\"\n",
                "invalid type: string, expected a boolean (line 2, key `allow_insecure_http`)",
            ),
            (
                "enroll_secret = \"ces_1_s3cret\nserver = 1\n",
                "line 1, key `enroll_secret`",
            ),
            (
                "enroll_secret = 'a'\nenroll_secret = 'ces_1_s3cret'\n",
                "duplicate key",
            ),
            // Lines without a key, or where the text before `=` is part of a value.
            ("ces_1_s3cret\n", "(line 1)"),
            ("server = [\n  \"ces_1_s3cret=x\",\n  1 2\n]\n", "(line 3)"),
            ("server = 'x' ces_1_s3cret\n", "line 1, key `server`"),
        ];
        for (file, expected) in cases {
            let (_dir, path) = write_config(file);
            let text = Config::load_with_env(&flags_with_file(&path), no_env)
                .unwrap_err()
                .to_string();
            assert!(text.contains(expected), "{file:?}: {text}");
            assert!(!text.contains("s3cret"), "{file:?}: {text}");
        }
    }

    #[test]
    fn unset_server_is_printed_as_a_comment_and_still_parses() {
        let printed = Config::default().to_toml();
        assert!(
            !printed.lines().any(|l| l.starts_with("server")),
            "{printed}"
        );
        assert!(printed.contains("# server is not set"), "{printed}");
        let (_dir, path) = write_config(&printed);
        let reread = Config::load_with_env(&flags_with_file(&path), no_env).unwrap();
        assert_eq!(reread.server, None);
        assert_eq!(reread.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    }
}
