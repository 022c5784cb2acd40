//! The `sidecar` binary: parses arguments and calls the library.

use baton_sidecar::cli::{Cli, Command, init_logging};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check) => match baton_sidecar::config::check(&cli.config) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("{err}");
                ExitCode::from(2)
            }
        },
        Some(Command::Run) | None => {
            init_logging(cli.log_format);
            match baton_sidecar::run_daemon(&cli.config, cli.take_over.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!("{err:#}");
                    eprintln!("sidecar: {err:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
