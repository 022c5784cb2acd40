//! `deployctl`: parses the command line, runs it, maps the outcome to an exit code
//! (see `deployctl --help`).

use baton_deployctl::error::{Exit, exit_code};
use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = baton_deployctl::cli::Cli::parse();
    if let Err(err) = baton_deployctl::run(cli).await {
        eprintln!("deployctl: {err:#}");
        std::process::exit(exit_code(&err) as i32);
    }
    std::process::exit(Exit::Ok as i32);
}
