//! `deployctl`: parses the command line, runs it, maps the outcome to an exit code
//! (see `deployctl --help`).

use baton_deployctl::error::{Exit, exit_code, report};
use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // `--json` anywhere on the line: errors, usage errors included, are JSON too.
    let json = std::env::args().any(|a| a == "--json");
    let cli = match baton_deployctl::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if json && e.use_stderr() => {
            // clap's first line, without its `error: ` prefix and usage hints.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or_default().trim_start_matches("error: ").to_string();
            report(&anyhow::Error::from(baton_deployctl::error::Invalid::Flag(first)), true);
            std::process::exit(Exit::Usage as i32);
        }
        Err(e) => e.exit(),
    };
    if let Err(err) = baton_deployctl::run(cli).await {
        report(&err, json);
        std::process::exit(exit_code(&err) as i32);
    }
    std::process::exit(Exit::Ok as i32);
}
