//! The command line: `census-collector [--config FILE] [--data-dir DIR] <command>`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::auth::Role;
use crate::config::{Config, Span};
use crate::store::auth::{Revocation, TokenHolder};
use crate::store::{Store, StoreOptions};
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
    /// Admin API tokens (and the agent tokens enrollment created)
    #[command(subcommand)]
    Token(TokenCommand),
    /// Enrollment secrets, which agents trade for their own tokens
    #[command(subcommand)]
    EnrollSecret(SecretCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an admin token; it is printed once, alone on the last line
    Create {
        /// viewer (read), operator (also incident work) or admin (everything)
        #[arg(long)]
        role: Role,
        /// Who or what holds it, e.g. "grafana" or "alice"
        #[arg(long)]
        name: String,
    },
    /// List admin and agent tokens (never their text)
    List,
    /// Revoke a token by its id (the second column of `token list`)
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Create an enrollment secret; it is printed once, alone on the last line
    Create {
        /// What it is for, e.g. "laptops-2026"
        #[arg(long)]
        name: String,
        /// How long it can enroll agents, e.g. 30d or 12h [default: no expiry]
        #[arg(long, value_name = "DURATION")]
        expires: Option<Span>,
    },
    /// List enrollment secrets (never their text)
    List,
    /// Revoke an enrollment secret by its id; agents enrolled with it keep their tokens
    Revoke { id: String },
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
            let shutdown = server::shutdown_signal();
            // Refused before binding: nothing listens off loopback, even for a moment.
            // (`serve` checks again and gives the warning when it is allowed.)
            if config.tls().is_none() && !config.allow_insecure_http {
                server::check_plain_http(config.listen, false)?;
            }
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("could not listen on {}", config.listen))?;
            server::serve(listener, config, shutdown).await
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
        Command::Token(command) => token_command(&config, command).await,
        Command::EnrollSecret(command) => secret_command(&config, command).await,
    }
}

/// Longest name of a token or secret.
const MAX_NAME: usize = 100;

fn check_name(name: &str) -> anyhow::Result<()> {
    if name.trim().is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        anyhow::bail!("--name must be 1 to {MAX_NAME} bytes of printable text");
    }
    Ok(())
}

/// Opens the store of `config`'s data dir, creating both if needed (a token can be made before
/// the first `serve`). Safe while a collector serves the same directory.
fn open_store(config: &Config) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("could not create data dir {}", config.data_dir.display()))?;
    let db = config.database_path();
    let options = StoreOptions {
        read_connections: 1,
        max_batch: 1,
        placeholders: config.placeholders(),
        engine: config.engine(),
        ..StoreOptions::default()
    };
    Store::open(&db, &options)
        .with_context(|| format!("could not open the store at {}", db.display()))
}

/// Now, to the millisecond: what the store keeps, so what is printed matches `list`.
fn now() -> time::OffsetDateTime {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(now)
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

fn revocation_result(what: &str, id: &str, outcome: Revocation) -> anyhow::Result<()> {
    match outcome {
        Revocation::Revoked => {
            println!("revoked {what} {id}");
            Ok(())
        }
        Revocation::AlreadyRevoked => {
            println!("{what} {id} was already revoked");
            Ok(())
        }
        Revocation::Unknown => anyhow::bail!("no {what} has the id {id:?}"),
    }
}

async fn token_command(config: &Config, command: TokenCommand) -> anyhow::Result<()> {
    let store = open_store(config)?;
    let result = async {
        match command {
            TokenCommand::Create { role, name } => {
                check_name(&name)?;
                let (record, token) = store.create_admin_token(name, role, now()).await?;
                println!(
                    "created {role} token {} ({}); it is shown only now:",
                    record.id, record.name
                );
                println!("{}", token.reveal());
            }
            TokenCommand::List => {
                println!("KIND\tID\tROLE_OR_AGENT\tNAME\tCREATED\tREVOKED");
                for t in store.list_tokens().await? {
                    let (kind, holder) = match &t.holder {
                        TokenHolder::Admin(role) => ("admin", role.as_str().to_owned()),
                        TokenHolder::Agent(agent) => ("agent", agent.clone()),
                    };
                    println!(
                        "{kind}\t{}\t{holder}\t{}\t{}\t{}",
                        t.id,
                        t.name,
                        rfc3339(t.created_at),
                        t.revoked_at.map_or_else(|| "-".to_owned(), rfc3339)
                    );
                }
            }
            TokenCommand::Revoke { id } => {
                let outcome = store.revoke_token(id.clone(), now()).await?;
                revocation_result("token", &id, outcome)?;
            }
        }
        anyhow::Ok(())
    }
    .await;
    store.close().await;
    result
}

async fn secret_command(config: &Config, command: SecretCommand) -> anyhow::Result<()> {
    let store = open_store(config)?;
    let result = async {
        match command {
            SecretCommand::Create { name, expires } => {
                check_name(&name)?;
                let now = now();
                let expires_at = expires
                    .map(|span| {
                        now.checked_add(span.as_time())
                            .filter(|_| span.0 > std::time::Duration::ZERO)
                            .context("--expires must be a positive duration within a few centuries")
                    })
                    .transpose()?;
                let (record, secret) = store.create_enroll_secret(name, expires_at, now).await?;
                let until = record.expires_at.map_or_else(
                    || "no expiry".to_owned(),
                    |t| format!("expires {}", rfc3339(t)),
                );
                println!(
                    "created enrollment secret {} ({}, {until}); it is shown only now:",
                    record.id, record.name
                );
                println!("{}", secret.reveal());
            }
            SecretCommand::List => {
                println!("ID\tNAME\tCREATED\tEXPIRES\tREVOKED\tUSES");
                for s in store.list_enroll_secrets().await? {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        s.id,
                        s.name,
                        rfc3339(s.created_at),
                        s.expires_at.map_or_else(|| "-".to_owned(), rfc3339),
                        s.revoked_at.map_or_else(|| "-".to_owned(), rfc3339),
                        s.uses
                    );
                }
            }
            SecretCommand::Revoke { id } => {
                let outcome = store.revoke_enroll_secret(id.clone(), now()).await?;
                revocation_result("enrollment secret", &id, outcome)?;
            }
        }
        anyhow::Ok(())
    }
    .await;
    store.close().await;
    result
}
