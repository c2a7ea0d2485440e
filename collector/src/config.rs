//! The collector's configuration: a TOML file (`/etc/census/collector.toml` unless `--config`
//! names another), overridden by command-line flags.
//!
//! Every key has a default, so an empty or absent default file is a working configuration. An
//! unknown key is an error, so a typo does not silently fall back to a default.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use census_common::Limits;
use serde::{Deserialize, Serialize};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/census/collector.toml";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on. Port 0 picks a free port; the bound address is
    /// logged and written to `<data_dir>/collector.addr`.
    pub listen: SocketAddr,
    /// Directory holding `census.db` (and its WAL) and `collector.addr`.
    pub data_dir: PathBuf,
    /// How long health samples are kept; from `1h` to `36500d` (100 years).
    pub health_retention: Span,
    /// How often the background task compacts and prunes health samples; from `1s` to `1d`.
    pub compaction_interval: Span,
    /// How long a computer may go without reporting before the background task marks it
    /// `stale`; from `1h` to `3650d`.
    pub stale_after: Span,
    /// Largest request body accepted, both as received and after decompression.
    pub max_body_bytes: u64,
    /// Read-only database connections serving the admin API.
    pub read_connections: usize,
    /// Most jobs (report batches) one write transaction commits together.
    pub writer_batch: usize,
    /// Largest body of every route but `/agent/v1/reports` (the admin API, enrollment).
    pub max_api_body_bytes: u64,
    /// Deepest nesting of maps and arrays in a batch; from 8 to 128 (a batch needs 6).
    pub max_nesting_depth: usize,
    /// Longest string in a batch, in bytes; from 256 to 1048576.
    pub max_string_bytes: usize,
    /// Most reports in one batch; from 100 (what the agent sends) to 100000.
    pub max_reports_per_batch: usize,
    /// Most software entries in one inventory; from 1000 to 1000000.
    pub max_software_entries: usize,
    /// Most filesystems, network interfaces, addresses or warnings in one report; from 16 to
    /// 65536.
    pub max_parts: usize,
    /// How far a report's `collected_at` may be ahead of the collector's clock; from `5m` to
    /// `365d`.
    pub max_clock_skew: Span,
    /// Enrollments a minute from one client IP address (an IPv6 /64), with a burst of as many;
    /// 0 turns the limit off.
    pub enroll_rate_per_minute: u32,
    /// Report batches a minute from one agent; 0 turns the limit off.
    pub reports_rate_per_minute: u32,
    /// Report batches one agent may send at once, above the steady rate.
    pub reports_burst: u32,
    /// PEM certificate chain; with `tls_key`, the collector serves HTTPS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on an address other than loopback. Without it the collector refuses to
    /// start that way: agent tokens would cross the network in clear.
    pub allow_insecure_http: bool,
    /// Serve `GET /metrics` without a token (for a Prometheus scraper on a trusted network).
    /// Off: it needs an admin token of any role.
    pub metrics_open: bool,
    /// Serials that never identify a computer, added to the built-in list of firmware
    /// defaults ("To Be Filled By O.E.M.", "Default string", ...). Case and spacing do not
    /// matter.
    pub placeholder_serials: Vec<String>,
    /// Hardware UUIDs that never identify a computer, added to the built-in ones (all zeros,
    /// all F, `03000200-0400-0500-0006-000700080009`).
    pub placeholder_uuids: Vec<String>,
    /// MAC addresses that never identify a computer, added to the built-in rule (all zeros,
    /// broadcast, multicast, locally administered, virtual interfaces).
    pub placeholder_macs: Vec<String>,
    /// A breach that fires again this soon after its incident was resolved reopens that
    /// incident instead of opening a new one; from `0s` (never reopen) to `30d`.
    pub reopen_window: Span,
    /// How often the silence check looks for agents that stopped reporting (and opens what a
    /// maintenance window held back); from `1s` to `10m`.
    pub incident_check_interval: Span,
    /// Response and resolution targets per priority (`[sla.p1]` to `[sla.p5]`).
    pub sla: Sla,
    /// How often the delivery task sends the webhook deliveries that are due: at most this
    /// long between an incident event and its first attempt; from `1s` to `1h`.
    pub webhook_interval: Span,
}

/// Service-level targets: acknowledging within `response` and resolving within `resolution`
/// of the incident opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaTarget {
    pub response: Span,
    pub resolution: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sla {
    pub p1: SlaTarget,
    pub p2: SlaTarget,
    pub p3: SlaTarget,
    pub p4: SlaTarget,
    pub p5: SlaTarget,
}

impl Default for Sla {
    fn default() -> Self {
        let t = crate::incidents::priority::Targets::default();
        let target = |p: i64| SlaTarget {
            response: Span(Duration::from_millis(t.of(p).response_ms as u64)),
            resolution: Span(Duration::from_millis(t.of(p).resolution_ms as u64)),
        };
        Sla {
            p1: target(1),
            p2: target(2),
            p3: target(3),
            p4: target(4),
            p5: target(5),
        }
    }
}

impl Sla {
    fn targets(&self) -> [SlaTarget; 5] {
        [self.p1, self.p2, self.p3, self.p4, self.p5]
    }
}

impl Default for Config {
    fn default() -> Self {
        let limits = Limits::default();
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./census-data"),
            health_retention: Span(Duration::from_secs(7 * 86_400)),
            compaction_interval: Span(Duration::from_secs(60)),
            stale_after: Span(Duration::from_secs(30 * 86_400)),
            max_body_bytes: 16 * 1024 * 1024,
            read_connections: 4,
            writer_batch: 256,
            max_api_body_bytes: 1024 * 1024,
            max_nesting_depth: limits.max_nesting_depth,
            max_string_bytes: limits.max_string_bytes,
            max_reports_per_batch: limits.max_reports_per_batch,
            max_software_entries: limits.max_software_entries,
            max_parts: limits.max_parts,
            max_clock_skew: Span(limits.max_clock_skew.unsigned_abs()),
            enroll_rate_per_minute: 10,
            reports_rate_per_minute: 120,
            reports_burst: 60,
            tls_cert: None,
            tls_key: None,
            allow_insecure_http: false,
            metrics_open: false,
            placeholder_serials: Vec::new(),
            placeholder_uuids: Vec::new(),
            placeholder_macs: Vec::new(),
            reopen_window: Span(Duration::from_secs(3600)),
            incident_check_interval: Span(Duration::from_secs(15)),
            sla: Sla::default(),
            webhook_interval: Span(crate::webhooks::DEFAULT_INTERVAL),
        }
    }
}

impl Config {
    /// Reads the configuration. `explicit` is the `--config` flag: that file must exist. Without
    /// it the default path is read if present.
    pub fn load(explicit: Option<&Path>) -> anyhow::Result<Config> {
        let (path, required) = match explicit {
            Some(path) => (path, true),
            None => (Path::new(DEFAULT_CONFIG_PATH), false),
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Config::default());
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("could not read config file {}", path.display()));
            }
        };
        Config::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        for (key, value) in [
            ("max_body_bytes", self.max_body_bytes),
            ("max_api_body_bytes", self.max_api_body_bytes),
        ] {
            if value == 0 || usize::try_from(value).is_err() {
                bail!("{key} must be a positive number of bytes");
            }
        }
        for (key, value, min, max) in [
            ("max_nesting_depth", self.max_nesting_depth, 8, 128),
            ("max_string_bytes", self.max_string_bytes, 256, 1 << 20),
            (
                "max_reports_per_batch",
                self.max_reports_per_batch,
                100,
                100_000,
            ),
            (
                "max_software_entries",
                self.max_software_entries,
                1000,
                1_000_000,
            ),
            ("max_parts", self.max_parts, 16, 65_536),
            (
                "enroll_rate_per_minute",
                self.enroll_rate_per_minute as usize,
                0,
                60_000,
            ),
            (
                "reports_rate_per_minute",
                self.reports_rate_per_minute as usize,
                0,
                60_000,
            ),
            ("reports_burst", self.reports_burst as usize, 1, 100_000),
        ] {
            if !(min..=max).contains(&value) {
                bail!("{key} must be from {min} to {max}, not {value}");
            }
        }
        check_span(
            "max_clock_skew",
            self.max_clock_skew,
            MIN_CLOCK_SKEW,
            MAX_CLOCK_SKEW,
        )?;
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            bail!("tls_cert and tls_key go together: set both to serve HTTPS, or neither");
        }
        check_span(
            "health_retention",
            self.health_retention,
            MIN_RETENTION,
            MAX_RETENTION,
        )?;
        check_span(
            "compaction_interval",
            self.compaction_interval,
            MIN_COMPACTION_INTERVAL,
            MAX_COMPACTION_INTERVAL,
        )?;
        check_span(
            "stale_after",
            self.stale_after,
            MIN_STALE_AFTER,
            MAX_STALE_AFTER,
        )?;
        check_span(
            "reopen_window",
            self.reopen_window,
            Span(Duration::ZERO),
            Span(Duration::from_secs(30 * 86_400)),
        )?;
        check_span(
            "incident_check_interval",
            self.incident_check_interval,
            Span(Duration::from_secs(1)),
            Span(Duration::from_secs(600)),
        )?;
        check_span(
            "webhook_interval",
            self.webhook_interval,
            Span(Duration::from_secs(1)),
            Span(Duration::from_secs(3600)),
        )?;
        for (i, target) in self.sla.targets().iter().enumerate() {
            let p = i + 1;
            let most = Span(Duration::from_secs(365 * 86_400));
            let least = Span(Duration::from_secs(60));
            check_span(&format!("sla.p{p}.response"), target.response, least, most)?;
            check_span(
                &format!("sla.p{p}.resolution"),
                target.resolution,
                least,
                most,
            )?;
            if target.response > target.resolution {
                bail!(
                    "sla.p{p}: the response target ({}) is longer than the resolution target ({})",
                    target.response,
                    target.resolution
                );
            }
        }
        if self.read_connections == 0 || self.writer_batch == 0 {
            bail!("read_connections and writer_batch must be at least 1");
        }
        for uuid in &self.placeholder_uuids {
            if crate::cmdb::identify::normalize_uuid(uuid).is_none() {
                bail!("placeholder_uuids: {uuid:?} is not a UUID (32 hex digits)");
            }
        }
        for mac in &self.placeholder_macs {
            let hex: String = mac
                .chars()
                .filter(|c| !matches!(c, ':' | '-' | '.'))
                .collect();
            if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                bail!("placeholder_macs: {mac:?} is not a MAC address (aa:bb:cc:dd:ee:ff)");
            }
        }
        if let Some(serial) = self
            .placeholder_serials
            .iter()
            .find(|s| s.trim().is_empty())
        {
            bail!(
                "placeholder_serials: {serial:?} is empty; empty serials are placeholders already"
            );
        }
        Ok(())
    }

    /// The identity values that never identify a computer: the built-in lists and this
    /// configuration's additions.
    pub fn placeholders(&self) -> crate::cmdb::Placeholders {
        crate::cmdb::Placeholders::with_extra(
            &self.placeholder_serials,
            &self.placeholder_uuids,
            &self.placeholder_macs,
        )
    }

    /// The incident engine's settings.
    pub fn engine(&self) -> crate::incidents::EngineOptions {
        let ms = |s: Span| i64::try_from(s.0.as_millis()).unwrap_or(i64::MAX);
        let targets = self
            .sla
            .targets()
            .map(|t| crate::incidents::priority::Target {
                response_ms: ms(t.response),
                resolution_ms: ms(t.resolution),
            });
        crate::incidents::EngineOptions {
            reopen_window_ms: ms(self.reopen_window),
            sla: crate::incidents::priority::Targets(targets),
        }
    }

    /// The effective configuration as TOML, every key spelled out.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("the configuration always serialises")
    }

    /// The bounds every batch is checked against.
    pub fn limits(&self) -> Limits {
        Limits {
            max_nesting_depth: self.max_nesting_depth,
            max_string_bytes: self.max_string_bytes,
            max_reports_per_batch: self.max_reports_per_batch,
            max_software_entries: self.max_software_entries,
            max_parts: self.max_parts,
            max_clock_skew: self.max_clock_skew.as_time(),
        }
    }

    /// Whether the collector serves HTTPS (`tls_cert` and `tls_key` are set).
    pub fn tls(&self) -> Option<(&Path, &Path)> {
        self.tls_cert.as_deref().zip(self.tls_key.as_deref())
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("census.db")
    }

    pub fn addr_file(&self) -> PathBuf {
        self.data_dir.join("collector.addr")
    }
}

/// Bounds of `health_retention`: at least an hour (compaction works in hours), at most 100
/// years (36500 days), which keeps every cut-off computed from it far inside the range of
/// millisecond timestamps.
pub const MIN_RETENTION: Span = Span(Duration::from_secs(3600));
pub const MAX_RETENTION: Span = Span(Duration::from_secs(36_500 * 86_400));
/// Bounds of `compaction_interval`: from one second to one day.
pub const MIN_COMPACTION_INTERVAL: Span = Span(Duration::from_secs(1));
pub const MAX_COMPACTION_INTERVAL: Span = Span(Duration::from_secs(86_400));
/// Bounds of `stale_after`: from an hour (agents report every minute) to ten years.
pub const MIN_STALE_AFTER: Span = Span(Duration::from_secs(3600));
pub const MAX_STALE_AFTER: Span = Span(Duration::from_secs(3650 * 86_400));
/// Bounds of `max_clock_skew`: from the 5 minutes within which a sample keeps its own time in
/// the health series, to a year.
pub const MIN_CLOCK_SKEW: Span = Span(Duration::from_secs(300));
pub const MAX_CLOCK_SKEW: Span = Span(Duration::from_secs(365 * 86_400));

fn check_span(key: &str, value: Span, min: Span, max: Span) -> anyhow::Result<()> {
    if value < min || value > max {
        bail!("{key} must be from {min} to {max}, not {value}");
    }
    Ok(())
}

/// A duration written as in `7d`, `90s`, `1h30m`, `500ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub Duration);

impl Span {
    pub fn as_time(self) -> time::Duration {
        time::Duration::try_from(self.0).unwrap_or(time::Duration::MAX)
    }
}

const UNITS: &[(&str, u64)] = &[
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

impl FromStr for Span {
    type Err = String;

    fn from_str(text: &str) -> Result<Span, String> {
        let invalid =
            || format!("invalid duration {text:?}: write it like 7d, 12h, 1h30m, 90s or 500ms");
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(invalid());
        }
        let mut total: u64 = 0;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .ok_or_else(invalid)?;
            let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            let (_, ms) = UNITS.iter().find(|(u, _)| *u == unit).ok_or_else(invalid)?;
            total = number
                .checked_mul(*ms)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(invalid)?;
            rest = &rest[unit_len..];
        }
        Ok(Span(Duration::from_millis(total)))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis() as u64;
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in UNITS {
            if ms >= *size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_parse_and_print() {
        for (text, secs) in [
            ("7d", 604_800),
            ("90s", 90),
            ("1h30m", 5_400),
            ("2h", 7_200),
        ] {
            let span: Span = text.parse().unwrap();
            assert_eq!(span.0, Duration::from_secs(secs), "{text}");
        }
        assert_eq!(
            "500ms".parse::<Span>().unwrap().0,
            Duration::from_millis(500)
        );
        assert_eq!(Span(Duration::from_secs(5_400)).to_string(), "1h30m");
        assert_eq!(Span(Duration::from_secs(604_800)).to_string(), "7d");
        for bad in ["", "7", "d", "7 days", "-1s", "1y"] {
            assert!(bad.parse::<Span>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn empty_file_gives_defaults_and_print_round_trips() {
        let config = Config::parse("").unwrap();
        assert_eq!(config, Config::default());
        let printed = config.to_toml();
        for key in [
            "listen",
            "data_dir",
            "health_retention",
            "max_body_bytes",
            "compaction_interval",
        ] {
            assert!(
                printed.contains(&format!("{key} = ")),
                "{key} missing in {printed}"
            );
        }
        assert!(printed.contains("health_retention = \"7d\""), "{printed}");
        assert!(printed.contains("stale_after = \"30d\""), "{printed}");
        assert_eq!(Config::parse(&printed).unwrap(), config);
    }

    #[test]
    fn keys_override_and_unknown_keys_fail() {
        let config =
            Config::parse("listen = \"127.0.0.1:9000\"\nhealth_retention = \"2d\"\n").unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.health_retention.0, Duration::from_secs(2 * 86_400));
        let err = Config::parse("listne = \"127.0.0.1:9000\"").unwrap_err();
        assert!(format!("{err:#}").contains("listne"), "{err:#}");
        let err = Config::parse("health_retention = \"10m\"").unwrap_err();
        assert_eq!(
            err.to_string(),
            "health_retention must be from 1h to 36500d, not 10m"
        );
    }

    #[test]
    fn durations_out_of_bounds_name_their_key() {
        for (text, key) in [
            // u64::MAX milliseconds: parses, and must not reach the store as a negative i64.
            ("health_retention = \"213503982334d\"", "health_retention"),
            ("health_retention = \"36501d\"", "health_retention"),
            ("compaction_interval = \"0s\"", "compaction_interval"),
            ("compaction_interval = \"999ms\"", "compaction_interval"),
            ("compaction_interval = \"1d1ms\"", "compaction_interval"),
            ("stale_after = \"59m\"", "stale_after"),
            ("stale_after = \"3650d1s\"", "stale_after"),
        ] {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("{key} must be from ")),
                "{text}: {err}"
            );
        }
        for ok in [
            "health_retention = \"36500d\"",
            "health_retention = \"1h\"",
            "compaction_interval = \"1s\"",
            "compaction_interval = \"1d\"",
            "stale_after = \"1h\"",
            "stale_after = \"3650d\"",
        ] {
            Config::parse(ok).unwrap();
        }
    }

    #[test]
    fn limits_are_bounded_and_tls_needs_both_files() {
        for (text, message) in [
            (
                "max_nesting_depth = 7",
                "max_nesting_depth must be from 8 to 128, not 7",
            ),
            ("max_parts = 0", "max_parts must be from 16 to 65536, not 0"),
            (
                "max_reports_per_batch = 10",
                "max_reports_per_batch must be from 100 to 100000, not 10",
            ),
            (
                "reports_burst = 0",
                "reports_burst must be from 1 to 100000, not 0",
            ),
            (
                "max_api_body_bytes = 0",
                "max_api_body_bytes must be a positive number of bytes",
            ),
            (
                "max_clock_skew = \"1m\"",
                "max_clock_skew must be from 5m to 365d, not 1m",
            ),
            (
                "stale_after = \"30m\"",
                "stale_after must be from 1h to 3650d, not 30m",
            ),
            (
                "tls_cert = \"/etc/census/collector.crt\"",
                "tls_cert and tls_key go together: set both to serve HTTPS, or neither",
            ),
        ] {
            assert_eq!(
                Config::parse(text).unwrap_err().to_string(),
                message,
                "{text}"
            );
        }
        let config = Config::parse(
            "tls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\nreports_rate_per_minute = 0\n\
             max_clock_skew = \"2h\"\n",
        )
        .unwrap();
        assert_eq!(
            config.tls(),
            Some((Path::new("/c.pem"), Path::new("/k.pem")))
        );
        assert_eq!(Config::parse(&config.to_toml()).unwrap(), config);
        assert_eq!(config.limits().max_clock_skew, time::Duration::hours(2));
        assert_eq!(Config::default().limits(), Limits::default());
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Config::load(Some(&dir.path().join("nope.toml"))).unwrap_err();
        assert!(
            format!("{err:#}").contains("could not read config file"),
            "{err:#}"
        );
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "writer_batch = 8\n").unwrap();
        assert_eq!(Config::load(Some(&file)).unwrap().writer_batch, 8);
    }

    #[test]
    fn incident_settings_are_bounded_and_reach_the_engine() {
        let config = Config::parse(
            "reopen_window = \"30m\"\n[sla.p2]\nresponse = \"10m\"\nresolution = \"2h\"\n",
        )
        .unwrap();
        let engine = config.engine();
        assert_eq!(engine.reopen_window_ms, 30 * 60_000);
        assert_eq!(engine.sla.of(2).response_ms, 10 * 60_000);
        assert_eq!(engine.sla.of(2).resolution_ms, 2 * 3_600_000);
        // The others keep their defaults.
        assert_eq!(engine.sla.of(1).response_ms, 15 * 60_000);
        for (text, key) in [
            (
                "[sla.p1]\nresponse = \"5h\"\nresolution = \"4h\"\n",
                "sla.p1",
            ),
            (
                "[sla.p3]\nresponse = \"10s\"\nresolution = \"4h\"\n",
                "sla.p3.response",
            ),
            ("[sla.p3]\nresponse = \"1h\"\n", "resolution"),
            ("reopen_window = \"31d\"\n", "reopen_window"),
            (
                "incident_check_interval = \"0s\"\n",
                "incident_check_interval",
            ),
        ] {
            let err = format!("{:#}", Config::parse(text).unwrap_err());
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
