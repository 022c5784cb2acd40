//! The baton sidecar library: everything the `sidecar` binary does.
//!
//! See ARCHITECTURE.md for the code map and `docs/protocol.md` for the protocol.

pub mod agent;
pub mod cli;
pub mod config;
pub mod coord;
pub mod daemon;
pub mod handover;
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

/// Loads the config at `path` and runs the daemon until SIGTERM or SIGINT, or until
/// it hands over to a new image of itself. `take_over`: this image was started by the
/// old one to take over from it, through that handover socket (see [`handover`]).
/// Without it, the active sidecar release runs instead of this binary when there is
/// one ([`handover::launch`]).
pub fn run_daemon(path: &std::path::Path, take_over: Option<&std::path::Path>) -> anyhow::Result<()> {
    use anyhow::Context;
    let cfg = config::Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    if take_over.is_none() {
        handover::launch(&cfg.host.data_dir);
    }
    install_crypto();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    rt.block_on(async {
        let shutdown = daemon::signals()?;
        let predecessor = match take_over {
            Some(sock) => Some(std::sync::Arc::new(
                handover::Predecessor::connect(sock)
                    .await
                    .with_context(|| format!("failed to reach the old sidecar image at {}", sock.display()))?,
            )),
            None => None,
        };
        match daemon::run_with(cfg, shutdown, predecessor).await? {
            daemon::Exit::Stopped | daemon::Exit::HandedOver => Ok(()),
            daemon::Exit::Restart(why) => {
                tracing::warn!(cause = %why, "starting this image again to take everything back");
                Err(anyhow::anyhow!("failed to start this image again: {}", handover::restart_self()))
            }
        }
    })
}
