//! The command line. Flags override the environment, which overrides the config file, which
//! overrides the built-in defaults (see [`crate::config`]).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::auth::Secret;

/// Exit code when the configuration (file, environment or flags) is invalid.
pub const EXIT_CONFIG: u8 = 2;
/// Exit code of `once` when the collector did not acknowledge every report.
pub const EXIT_NOT_ACKNOWLEDGED: u8 = 3;
/// Exit code of any other failure.
pub const EXIT_FAILURE: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "census-agent",
    version,
    about = "Census agent: inventory and health of this machine"
)]
pub struct Cli {
    /// Config file. A missing default file is fine; a missing file named here is an error.
    #[arg(long, global = true, env = "CENSUS_AGENT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// State directory holding the agent id and sequence numbers [default: /var/lib/census]
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Collector base URL, e.g. https://census.example.org:8443
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,

    /// PEM file of the CA(s) that signed the collector's certificate; when set, only these
    /// are trusted
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The flags that take part in configuration layering.
    pub fn flags(&self) -> crate::config::Flags {
        crate::config::Flags {
            config: self.config.clone(),
            state_dir: self.state_dir.clone(),
            server: self.server.clone(),
            ca_file: self.ca_file.clone(),
            enroll_secret: match &self.command {
                Command::Enroll { secret } | Command::Install { secret } => secret.clone(),
                _ => None,
            },
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Collect this machine's inventory and print it as JSON; nothing is sent
    Inventory {
        /// Write the JSON to FILE instead of standard output
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Take one health sample and print it as JSON; nothing is sent
    Health,
    /// Trade an enrollment secret for this agent's own token, kept in the state directory
    Enroll {
        /// Enrollment secret from `census-collector enroll-secret create` (or set
        /// CENSUS_ENROLL_SECRET, which other users cannot see in the process list)
        #[arg(long, value_name = "SECRET")]
        secret: Option<Secret>,
    },
    /// Run the service loop: health every health_interval, inventory when it changes
    Run,
    /// Run one cycle (inventory if changed, health, flush) and exit
    Once,
    /// Print the effective configuration, every default included, as TOML
    PrintConfig,
    /// Install, enable and start the agent as a systemd service (Linux, as root)
    ///
    /// Creates the system user census-agent, writes /etc/systemd/system/census-agent.service
    /// (copying this binary to /usr/local/bin unless it lives under /usr or /opt), and writes
    /// --server, --ca-file and the secret, when given, to /etc/census/agent.env (mode 0600).
    /// Running it again updates the installation.
    Install {
        /// Enrollment secret the service enrolls with (or set CENSUS_ENROLL_SECRET, which
        /// other users cannot see in the process list)
        #[arg(long, value_name = "SECRET")]
        secret: Option<Secret>,
    },
    /// Stop, disable and remove the systemd service that `install` installed
    ///
    /// The agent's state (its id and token), its config and the census-agent user stay unless
    /// --purge.
    Uninstall {
        /// Also remove /var/lib/census, /etc/census/agent.toml, /etc/census/agent.env and the
        /// census-agent user
        #[arg(long)]
        purge: bool,
    },
    /// The service loop under the Windows Service Control Manager: the command line the
    /// service is registered with (in a console, use `run`)
    #[cfg(windows)]
    #[command(hide = true)]
    Service,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_are_accepted_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "census-agent",
            "once",
            "--server",
            "http://127.0.0.1:9",
            "--state-dir",
            "/tmp/x",
        ])
        .unwrap();
        assert_eq!(cli.server.as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(cli.state_dir, Some(PathBuf::from("/tmp/x")));
        assert!(matches!(cli.command, Command::Once));
    }

    #[test]
    fn the_enroll_secret_is_a_flag_of_enroll_only_and_is_redacted() {
        let cli = Cli::try_parse_from([
            "census-agent",
            "enroll",
            "--server",
            "https://c.example",
            "--secret",
            "s3cr3t-value",
        ])
        .unwrap();
        let flags = cli.flags();
        assert_eq!(
            flags.enroll_secret.as_ref().map(Secret::expose),
            Some("s3cr3t-value")
        );
        assert!(!format!("{cli:?} {flags:?}").contains("s3cr3t"));
        assert!(Cli::try_parse_from(["census-agent", "once", "--secret", "x"]).is_err());
        // `install` passes it on to the service the same way.
        let cli =
            Cli::try_parse_from(["census-agent", "install", "--secret", "s3cr3t-value"]).unwrap();
        assert_eq!(
            cli.flags().enroll_secret.as_ref().map(Secret::expose),
            Some("s3cr3t-value")
        );
        assert!(!format!("{cli:?}").contains("s3cr3t"));
    }

    #[test]
    fn uninstall_keeps_state_unless_purge() {
        let cli = Cli::try_parse_from(["census-agent", "uninstall"]).unwrap();
        assert!(matches!(cli.command, Command::Uninstall { purge: false }));
        let cli = Cli::try_parse_from(["census-agent", "uninstall", "--purge"]).unwrap();
        assert!(matches!(cli.command, Command::Uninstall { purge: true }));
    }
}
