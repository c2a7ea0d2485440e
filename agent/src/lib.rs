//! The Census agent as a library: collection, scheduling and transport. `main.rs` only parses
//! the command line, starts logging and calls [`run`], so tests can drive every command directly.
//!
//! Module map:
//! - [`cli`]: the command line (clap) and the exit codes.
//! - [`config`]: defaults < file < environment < flags, and `print-config`.
//! - [`auth`]: the enrollment secret, the agent token, and what to do when one is refused.
//! - [`tls`]: which CA certificates the agent trusts for its collector.
//! - [`enroll`]: `census-agent enroll`, and the enrollment `run` and `once` do by themselves.
//! - [`state`]: the state directory: agent id, next sequence number, last acknowledged
//!   inventory digest; every file written atomically.
//! - [`collect`]: the inventory, one facet a module, each allowed to fail alone.
//! - [`health`]: one health sample, rates measured against the previous sample.
//! - [`spool`]: reports waiting for the collector's acknowledgement, on disk.
//! - [`retry`]: exponential backoff with jitter between failed delivery attempts.
//! - [`transport`]: encoding batches and posting them to the collector.
//! - [`service`]: `run` (the service loop) and `once`.
//! - [`install`]: `install` and `uninstall`, the agent as a systemd service (Linux); the unit
//!   is the packaged one from `packaging/systemd/`.
//! - `windows` (Windows only): the hidden `service` command, the service loop under the Service
//!   Control Manager.

pub mod auth;
pub mod cli;
pub mod collect;
pub mod config;
pub mod enroll;
pub mod health;
pub mod install;
pub mod retry;
pub mod service;
pub mod spool;
pub mod state;
pub mod tls;
pub mod transport;
#[cfg(windows)]
pub mod windows;

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use crate::cli::{Cli, Command};
use crate::collect::{Collector, Root};
use crate::config::Config;

/// Runs one command of the command line with an already loaded configuration.
pub fn run(cli: &Cli, config: Config) -> anyhow::Result<()> {
    match &cli.command {
        Command::Inventory { output } => {
            let agent_id = state::StateDir::new(&config.state_dir).display_agent_id()?;
            let mut collector = Collector::new(Root::host());
            let inventory = collector.inventory(&agent_id);
            let mut json = serde_json::to_vec_pretty(&inventory)?;
            json.push(b'\n');
            write_output(output.as_deref(), &json)
        }
        Command::Health => {
            let agent_id = state::StateDir::new(&config.state_dir).display_agent_id()?;
            let mut collector = Collector::new(Root::host());
            let sample = collector.health(&agent_id);
            let mut json = serde_json::to_vec_pretty(&sample)?;
            json.push(b'\n');
            write_output(None, &json)
        }
        Command::PrintConfig => write_output(None, config.to_toml().as_bytes()),
        Command::Enroll { .. } => {
            let line = enroll::command(&config)?;
            write_output(None, format!("{line}\n").as_bytes())
        }
        Command::Run => service::run(config),
        Command::Once => service::once(config),
        Command::Install { secret } => install::install_command(cli, &config, secret.as_ref()),
        Command::Uninstall { purge } => install::uninstall_command(*purge),
        #[cfg(windows)]
        Command::Service => windows::run_service(config),
    }
}

/// The exit code for a failed command; see the constants in [`cli`].
pub fn exit_code(error: &anyhow::Error) -> u8 {
    if error.downcast_ref::<config::ConfigError>().is_some() {
        cli::EXIT_CONFIG
    } else if error.downcast_ref::<service::NotAcknowledged>().is_some() {
        cli::EXIT_NOT_ACKNOWLEDGED
    } else {
        cli::EXIT_FAILURE
    }
}

fn write_output(path: Option<&Path>, bytes: &[u8]) -> anyhow::Result<()> {
    match path {
        Some(path) => std::fs::write(path, bytes)
            .with_context(|| format!("could not write {}", path.display())),
        None => {
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
                // `census-agent inventory | head` is a reader that has seen enough, not a
                // failure.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                result => result.context("could not write to standard output"),
            }
        }
    }
}
