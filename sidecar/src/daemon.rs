//! The sidecar daemon: one agent per configured service, driven through a
//! succession of ZooKeeper sessions until shutdown.
//!
//! # Expected flow
//! Lock the data dir (one sidecar per data dir), connect, create the tree, run every
//! agent on the session. When the session expires, connect again; the services keep
//! running throughout. On shutdown (SIGTERM/SIGINT) agents stop at their next safe
//! point (a step in flight finishes first), each service is kept running or stopped
//! per its `on_shutdown`, and the session is closed so this host's ephemeral nodes
//! vanish at once.

use crate::agent::{Agent, AgentError};
use crate::config::Config;
use crate::download::{Fetcher, RetryPolicy};
use crate::releases::ReleaseStore;
use crate::session::Session;
use crate::supervisor::Supervisor;
use crate::{register, zk};
use anyhow::Context;
use std::fs::File;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use znode_schema::Layout;

/// Takes the data dir's lock so two sidecars never manage the same services.
fn lock_data_dir(cfg: &Config) -> anyhow::Result<nix::fcntl::Flock<File>> {
    let dir = &cfg.host.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create data dir {}", dir.display()))?;
    let path = dir.join("sidecar.lock");
    let file = File::create(&path).with_context(|| format!("failed to open {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        anyhow::anyhow!("another sidecar is running with data dir {} (lock {}: {e})", dir.display(), path.display())
    })
}

/// Builds the agents of every configured service.
fn agents(cfg: &Config) -> anyhow::Result<Vec<Agent>> {
    let fetcher = Arc::new(Fetcher::new(RetryPolicy::default()));
    cfg.services
        .iter()
        .map(|svc| {
            let svc = Arc::new(svc.clone());
            let store = ReleaseStore::open(&cfg.host.data_dir, &svc.name)
                .with_context(|| format!("failed to open the release store of service {}", svc.name))?;
            let sup = Supervisor::new(svc.clone(), &cfg.host.data_dir);
            Ok(Agent::new(svc, &cfg.host, sup, store, fetcher.clone()))
        })
        .collect()
}

/// Runs the daemon until `shutdown` turns true.
pub async fn run(cfg: Config, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let _lock = lock_data_dir(&cfg)?;
    let layout = Layout::new(&cfg.zookeeper.root).context("invalid [zookeeper] root")?;
    let mut agents = agents(&cfg)?;
    let names: Vec<String> = agents.iter().map(|a| a.service().to_string()).collect();
    let timeout = cfg.zookeeper.session_timeout.0;
    let mut offline_booted = false;
    let mut backoff = Duration::from_millis(200);
    let result = loop {
        if *shutdown.borrow() {
            break Ok(());
        }
        let client = tokio::select! {
            c = zk::connect(&cfg.zookeeper.connect, timeout) => c,
            _ = shutdown.changed() => continue,
        };
        let client = match client {
            Ok(c) => c,
            Err(err) => {
                tracing::warn!(connect = %cfg.zookeeper.connect, error = %err, "cannot reach zookeeper; retrying");
                if !offline_booted {
                    offline_booted = true;
                    for a in agents.iter_mut() {
                        a.boot_offline().await;
                    }
                    // Ready as far as systemd is concerned: the services run.
                    notify(&[sd_notify::NotifyState::Ready]);
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {},
                    _ = shutdown.changed() => {},
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        let s =
            Session { timeout: client.session_timeout(), client, layout: layout.clone(), host: cfg.host.id.clone() };
        tracing::info!(session = %zk::session_hex(s.id()), host = %s.host, "zookeeper session established");
        register::record_session(&cfg.host.data_dir, s.id());
        if let Err(err) = s.ensure_tree(&names).await {
            tracing::warn!(error = %err, "failed to create the znode tree; retrying");
            continue;
        }
        notify(&[sd_notify::NotifyState::Ready]);
        match run_session(&mut agents, &s, &shutdown).await {
            Ok(()) => break Ok(()),
            Err(AgentError::Register { service, source }) => {
                break Err(anyhow::anyhow!("service {service}: {source}"));
            }
            Err(err) => tracing::warn!(error = %err, "zookeeper session lost; opening a new one"),
        }
    };
    notify(&[sd_notify::NotifyState::Stopping]);
    for a in &agents {
        if let Err(err) = a.supervisor.shutdown().await {
            tracing::error!(service = %a.service(), error = %err, "failed to shut the service down");
        }
    }
    result
}

/// Runs every agent on session `s` until shutdown (`Ok`) or the first error, which
/// cancels the others (an agent cancelled mid-step recovers from its marker on the
/// next session, exactly as after a crash).
async fn run_session(agents: &mut [Agent], s: &Session, shutdown: &watch::Receiver<bool>) -> Result<(), AgentError> {
    let futs = agents.iter_mut().map(|a| {
        let mut sd = shutdown.clone();
        async move { a.run_session(s, &mut sd).await }
    });
    futures_util::future::try_join_all(futs).await.map(|_| ())
}

/// Tells systemd (`Type=notify`) about readiness and shutdown; a no-op elsewhere.
fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(err) = sd_notify::notify(false, states) {
        tracing::debug!(error = %err, "sd_notify failed");
    }
}

/// A shutdown signal: turns true on SIGTERM or SIGINT.
pub fn signals() -> anyhow::Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("failed to install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("failed to install the SIGINT handler")?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        let _ = tx.send(true);
    });
    Ok(rx)
}
