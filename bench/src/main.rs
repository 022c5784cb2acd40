//! The `baton-bench` binary: parses arguments and calls the library.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = baton_bench::cli::Cli::parse();
    match baton_bench::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("baton-bench: {err:#}");
            ExitCode::from(1)
        }
    }
}
