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
            let err = anyhow::Error::from(baton_deployctl::error::Invalid::Flag(e.kind().to_string()))
                .context(e.render().to_string().trim().to_string());
            report(&err, true);
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
