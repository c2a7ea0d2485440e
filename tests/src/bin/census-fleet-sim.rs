//! `census-fleet-sim`: N virtual agents against a running collector (see
//! `census_tests::fleet`). Prints the report (`--json`: one JSON object) on stdout and a
//! progress line every 10 seconds on stderr.

use std::process::ExitCode;

use census_tests::fleet::{self, Options};
use clap::Parser;

fn main() -> ExitCode {
    let options = Options::parse();
    if let Err(e) = options.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads as usize)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: could not start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = options.json;
    match runtime.block_on(fleet::sim::run(options)) {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&report).expect("a report encodes")
                );
            } else {
                println!("{report}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
