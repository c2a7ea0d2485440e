//! Admin-API read latency against a collector's CMDB: CI list with a filter, CI detail, and
//! which computers run an openssl older than a version. See `census_tests::query`.
//!
//! Run: `census-query-bench --url http://127.0.0.1:8080 --token cat_... --collector-pid PID
//! --db /var/lib/census/census.db [--seed 1000] [--json]`.

use std::process::ExitCode;

use census_tests::query::{Options, run};
use clap::Parser;

fn main() -> ExitCode {
    let options = Options::parse();
    match run(&options) {
        Ok(report) if options.json => {
            println!(
                "{}",
                serde_json::to_string(&report).expect("a report encodes as JSON")
            );
            ExitCode::SUCCESS
        }
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("census-query-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
