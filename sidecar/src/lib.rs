//! The baton sidecar library: everything the `sidecar` binary does.
//!
//! See ARCHITECTURE.md for the code map and `docs/protocol.md` for the protocol.

pub mod agent;
pub mod cli;
pub mod config;
pub mod coord;
pub mod daemon;
pub mod host;
pub mod metrics;
pub mod peers;
pub mod safefs;

/// The sidecar's version, written into registrations.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Picks rustls's crypto provider for ZooKeeper TLS (two are compiled in; choosing
/// twice is harmless).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Loads the config at `path` and runs the daemon until SIGTERM or SIGINT.
pub fn run_daemon(path: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let cfg = config::Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    install_crypto();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    rt.block_on(async {
        let shutdown = daemon::signals()?;
        daemon::run(cfg, shutdown).await
    })
}
