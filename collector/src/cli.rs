//! The command line: `census-collector [--config FILE] [--data-dir DIR] <command>`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::{server, store};

#[derive(Debug, Parser)]
#[command(
    name = "census-collector",
    version,
    about = "The Census collector: CMDB, HTTP API and incident engine"
)]
pub struct Cli {
    /// Configuration file [default: /etc/census/collector.toml, skipped if absent]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of the database [default: ./census-data]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the agent and admin HTTP API until SIGINT or SIGTERM
    Serve {
        /// Address to listen on [default: 127.0.0.1:8080]; port 0 picks a free port
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Print the effective configuration, every default included, as TOML
    PrintConfig,
    /// Write a consistent copy of the database to FILE (safe while serving)
    Backup {
        /// The new file; an existing file is never overwritten
        file: PathBuf,
    },
}

impl Cli {
    /// The configuration file overridden by the flags.
    pub fn effective_config(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Command::Serve { listen: Some(addr) } = &self.command {
            config.listen = *addr;
        }
        Ok(config)
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.effective_config()?;
    match cli.command {
        Command::Serve { .. } => {
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("could not listen on {}", config.listen))?;
            server::serve(listener, config, server::shutdown_signal()).await
        }
        Command::PrintConfig => {
            print!("{}", config.to_toml());
            Ok(())
        }
        Command::Backup { file } => {
            let db = config.database_path();
            let target = file.clone();
            tokio::task::spawn_blocking(move || store::backup(&db, &target))
                .await
                .context("the backup task failed")?
                .context("backup failed")?;
            println!("backup written to {}", file.display());
            Ok(())
        }
    }
}
