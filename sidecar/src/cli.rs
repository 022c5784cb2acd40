//! The `sidecar` command line.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// baton's sidecar: registers the services of this machine in ZooKeeper, downloads
/// every staged release (sha256-verified) and upgrades each service when its turn
/// comes and the service's quorum holds.
#[derive(Debug, Parser)]
#[command(
    name = "sidecar",
    version,
    after_help = "Example:\n  sidecar --config /etc/baton/sidecar.toml\n  sidecar check --config /etc/baton/sidecar.toml"
)]
pub struct Cli {
    /// The TOML config file.
    #[arg(long, short, global = true, env = "BATON_CONFIG", default_value = "/etc/baton/sidecar.toml")]
    pub config: PathBuf,
    /// Log format (filter with RUST_LOG, e.g. RUST_LOG=baton_sidecar=debug).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Internal: started by the running sidecar to take over from it, through this
    /// handover socket (the sidecar upgrading itself).
    #[arg(long, global = true, hide = true, value_name = "SOCKET")]
    pub take_over: Option<PathBuf>,
    /// What to do (default: run the daemon).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config file, list every problem, and exit (non-zero on problems).
    Check,
    /// Run the daemon (the default).
    Run,
}

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the tracing subscriber.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: a journal or a log file gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
