//! `census-bare-sink`: a bare axum server that accepts agents' reports and enrollments, parses
//! them as the collector does and writes nothing (see `census_tests::fleet::sink`). Prints the
//! address it listens on as the first line of its standard output.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;

/// The baseline for the collector's ingest rate.
#[derive(Debug, Parser)]
#[command(name = "census-bare-sink", version)]
struct Options {
    /// Address to listen on (127.0.0.1:0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: u32,
}

fn main() -> ExitCode {
    let options = Options::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads as usize)
        .enable_all()
        .build();
    let result = runtime.map_err(anyhow::Error::from).and_then(|rt| {
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind(options.listen).await?;
            println!("{}", listener.local_addr()?);
            std::io::stdout().flush()?;
            census_tests::fleet::sink::serve(listener).await?;
            Ok(())
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
