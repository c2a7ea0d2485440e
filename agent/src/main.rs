//! `census-agent`: parse the command line, load the configuration, start logging to standard
//! error, run the command, and turn its error into an exit code.

use std::process::ExitCode;

use census_agent::cli::{self, Cli};
use census_agent::config::Config;
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli.flags()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("census-agent: {e}");
            return ExitCode::from(cli::EXIT_CONFIG);
        }
    };

    // RUST_LOG, when set, wins over the configured level so a single run can be debugged
    // without editing the config file.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    match census_agent::run(&cli, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("census-agent: {e:#}");
            ExitCode::from(census_agent::exit_code(&e))
        }
    }
}
