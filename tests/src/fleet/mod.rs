//! The fleet simulator behind `census-fleet-sim`, and the bare sink behind `census-bare-sink`.
//!
//! N virtual agents talk to a running collector over real HTTP exactly as `census-agent` does
//! ([`wire`]): each enrolls on first contact when it has no token, sends its inventory once
//! ([`inventory`]), then a health sample every interval ([`health`]) and a new inventory when
//! its inventory changes. Identities and contents derive from `--seed` ([`identity`]), so a
//! rerun with the same seed (and `--state`) is the same fleet, already known to the collector.
//!
//! **Promise:** requests are scheduled by time, not sent as fast as answers come back: each
//! agent has its own due times, and how late a request went out (schedule lag) is measured and
//! reported, so a sender that cannot keep its schedule is visible rather than mistaken for a
//! slow collector. An agent never has two requests in flight, as a real agent never has; a
//! request due while the previous one is still in flight goes out when it is answered (its
//! lateness counted). The counts in the report are exact: every request is counted once, as
//! acked or as failed.

pub mod health;
pub mod identity;
pub mod inventory;
pub mod report;
pub mod sim;
pub mod sink;
pub mod state;
pub mod wire;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Health every interval (and inventories: at first contact, then every
    /// --inventory-every).
    Health,
    /// A full inventory per agent per interval: first-time for agents the collector has not
    /// seen (new seed), else with --churn of the packages changed.
    Inventory,
    /// Every agent's first inventory once, as fast as --concurrency allows, then exit.
    Seed,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Health => "health",
            Mode::Inventory => "inventory",
            Mode::Seed => "seed",
        }
    }
}

/// `census-fleet-sim`: N virtual agents against a running collector.
#[derive(Debug, Clone, Parser)]
#[command(name = "census-fleet-sim", version)]
pub struct Options {
    /// The collector's base URL, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub url: String,
    /// Number of virtual agents.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=4_194_304))]
    pub agents: u32,
    /// Health interval of every agent (inventory mode: inventory interval), e.g. 60s, 500ms.
    #[arg(long, default_value = "60s", value_parser = parse_span)]
    pub interval: Duration,
    /// How long to run (ignored by --mode seed).
    #[arg(long, default_value = "60s", value_parser = parse_span)]
    pub duration: Duration,
    /// Agents make first contact spread over this time (at least one interval); the measured
    /// window starts after it.
    #[arg(long, default_value = "0s", value_parser = parse_span)]
    pub ramp: Duration,
    /// Fraction of an inventory's packages that change when it changes, 0 to 1.
    #[arg(long, default_value_t = 0.1, value_parser = parse_fraction)]
    pub churn: f64,
    /// How often each agent's inventory changes in health mode (0: never after the first).
    #[arg(long, default_value = "0s", value_parser = parse_span)]
    pub inventory_every: Duration,
    /// Fraction of machines that report a breaching value (/ > 95 % used, memory > 97 %).
    #[arg(long, default_value_t = 0.02, value_parser = parse_fraction)]
    pub breaching: f64,
    /// Most requests in flight at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,
    /// Seed of the fleet: the same seed is the same agents.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// JSON file keeping tokens, sequence numbers and inventory versions between runs.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Enrollment secret for agents without a token.
    #[arg(long, env = "CENSUS_ENROLL_SECRET", hide_env_values = true)]
    pub enroll_secret: Option<String>,
    #[arg(long, value_enum, default_value_t = Mode::Health)]
    pub mode: Mode,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: u32,
    /// Timeout of one request.
    #[arg(long, default_value = "30s", value_parser = parse_span)]
    pub timeout: Duration,
}

/// `500ms`, `30s`, `5m`, `1h`, `1d`; a bare number is seconds.
pub fn parse_span(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 30s, 5m, 1h"))?;
    let scale = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        other => return Err(format!("unknown unit {other:?}: use ms, s, m, h or d")),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|e| e.to_string())
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("{text:?} is not a fraction from 0 to 1")),
    }
}

impl Options {
    /// Checks what clap cannot: combinations.
    pub fn validate(&self) -> Result<(), String> {
        if self.interval.is_zero() {
            return Err("--interval must be more than 0".to_owned());
        }
        if self.mode != Mode::Seed && self.ramp >= self.duration {
            return Err(format!(
                "--ramp ({:?}) must be shorter than --duration ({:?}): the measured window is \
                 the time after the ramp",
                self.ramp, self.duration
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_like_the_collector_config() {
        assert_eq!(parse_span("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_span("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_span("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_span("0"), Ok(Duration::ZERO));
        assert!(parse_span("5 parsecs").is_err());
        assert!(parse_span("").is_err());
        assert!(parse_fraction("1.5").is_err());
    }
}
