//! The sidecar daemon: one agent per configured service, driven through a
//! succession of ZooKeeper sessions until shutdown.
//!
//! # Expected flow
//! Lock the data dir (one sidecar per data dir), start one task per service agent,
//! and keep a live session published to them: connect, create the tree, publish;
//! when the session expires, connect again. The agents are independent tasks: one
//! service's error, step or recovery never cancels another's, and a step in flight
//! goes on across a session loss (it commits on the next session). On shutdown
//! (SIGTERM/SIGINT) agents stop at their next safe point (a step in flight finishes
//! and commits first), each service is kept running or stopped per its
//! `on_shutdown`, and the session is closed so this host's ephemeral nodes vanish
//! at once. A host id held by another live session is waited for (and reported),
//! never a reason to stop; credentials that cannot be loaded, an identity the tree
//! does not accept and a write ZooKeeper refuses (NoAuth) stop the daemon with an
//! error naming the identity and the server.

use crate::agent::{Agent, Link};
use crate::config::{Config, ServiceConfig};
use crate::coord::identity::{self, Identity};
use crate::coord::session::Session;
use crate::coord::{register, zk};
use crate::handover::{Predecessor, SelfImage};
use crate::host::download::{Fetcher, Pace, RetryPolicy};
use crate::host::releases::ReleaseStore;
use crate::host::serve::Catalog;
use crate::host::supervisor::Supervisor;
use crate::host::trust::Trust;
use crate::peers::Peers;
use anyhow::Context;
use std::fs::File;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::Instrument;
use znode_schema::Layout;

/// How long a starting sidecar waits for the data dir's lock: an image handing over
/// (or exiting after a handover) releases it within moments.
const LOCK_PATIENCE: Duration = Duration::from_secs(10);

/// Takes the data dir's lock so two sidecars never manage the same services, and
/// writes this process's pid into the lock file (`<data_dir>/sidecar.lock`).
async fn lock_data_dir(cfg: &Config) -> anyhow::Result<nix::fcntl::Flock<File>> {
    let dir = &cfg.host.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create data dir {}", dir.display()))?;
    crate::safefs::check_data_dir(dir)?;
    let path = dir.join("sidecar.lock");
    let until = tokio::time::Instant::now() + LOCK_PATIENCE;
    let mut file = crate::safefs::append(&path).with_context(|| format!("failed to open {}", path.display()))?;
    let lock = loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => break lock,
            Err((f, e)) if tokio::time::Instant::now() >= until => {
                drop(f);
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                anyhow::bail!(
                    "another sidecar (pid {}) is running with data dir {} (lock {}: {e})",
                    if holder.is_empty() { "unknown" } else { holder },
                    dir.display(),
                    path.display()
                );
            }
            Err((f, _)) => {
                file = f;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let pid = format!("{}\n", std::process::id());
    if let Err(err) = lock.set_len(0).and_then(|()| std::io::Write::write_all(&mut &*lock, pid.as_bytes())) {
        tracing::warn!(path = %path.display(), error = %err, "failed to write the pid into the lock file");
    }
    Ok(lock)
}

/// Binds a listener of this sidecar, retrying for a moment: the image this one
/// takes over from closes its listeners as it hands over.
pub(crate) async fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tokio::time::Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// Starts the peer server and the publisher of `[peers]`, when configured.
async fn peers(
    cfg: &Config,
    link: &watch::Receiver<Link>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Option<Arc<Peers>>> {
    let Some(p) = &cfg.peers else { return Ok(None) };
    let listener = bind(p.listen)
        .await
        .with_context(|| format!("failed to listen on [peers] listen = {:?}", p.listen.to_string()))?;
    let catalog = Catalog::new(p.max_uploads, p.max_upload_rate);
    let peers = Peers::new(cfg.host.id.clone(), p.advertise.clone(), p.origin_fetches, catalog.clone(), link.clone());
    tracing::info!(listen = %p.listen, advertise = %p.advertise, max_uploads = p.max_uploads, origin_fetches = p.origin_fetches, "serving verified releases to peers");
    tokio::spawn(crate::host::serve::serve(listener, catalog, stop.clone()));
    tokio::spawn(peers.clone().publish(stop.clone()));
    Ok(Some(peers))
}

/// Builds the agents of every configured service, and of the sidecar itself.
fn agents(cfg: &Config, peers: Option<&Arc<Peers>>, image: &Arc<SelfImage>) -> anyhow::Result<Vec<Agent>> {
    let trust = Trust::from_keys(&cfg.trust.minisign_keys).context("reading [trust] minisign_keys")?;
    if trust.is_enforced() {
        tracing::info!(keys = cfg.trust.minisign_keys.len(), "only releases signed by a trusted key are installed");
    }
    let pace = Pace { deadline: Some(cfg.download.deadline), min_rate: cfg.download.min_rate, ..Pace::default() };
    let roots = match &cfg.download.ca {
        Some(path) => crate::host::download::read_ca_bundle(path).map_err(|e| anyhow::anyhow!("[download] ca: {e}"))?,
        None => Vec::new(),
    };
    let fetcher = Fetcher::new(RetryPolicy::default())
        .trusting(trust)
        .with_roots(roots)
        .limited(cfg.limits.download.clone())
        .paced(pace);
    let fetcher = match (peers, &cfg.peers) {
        (Some(peers), Some(p)) => fetcher.with_peers(peers.clone(), p.stall),
        _ => fetcher,
    };
    let fetcher = Arc::new(fetcher);
    let itself = cfg.upgrades_itself.then(ServiceConfig::sidecar);
    cfg.services
        .iter()
        .chain(itself.iter())
        .map(|svc| {
            let svc = Arc::new(svc.clone());
            let store = ReleaseStore::open(&cfg.host.data_dir, &svc.name)
                .with_context(|| format!("failed to open the release store of service {}", svc.name))?
                .with_unpack_limits(cfg.limits.unpack);
            let store = match peers {
                Some(peers) => store.with_sources(peers.clone()),
                None => store,
            };
            let sup = match svc.name == znode_schema::SIDECAR_SERVICE {
                true => Supervisor::of_self(svc.clone(), &cfg.host.data_dir, image.own()),
                false => Supervisor::new(svc.clone(), &cfg.host.data_dir),
            };
            Ok(Agent::new(svc, &cfg.host, sup, store, fetcher.clone()).with_image(image.clone()))
        })
        .collect()
}

/// How the daemon ended.
#[derive(Debug)]
pub enum Exit {
    /// Shut down (a signal, or a fatal error returned as `Err`).
    Stopped,
    /// Handed over to the new image, which runs the services now.
    HandedOver,
    /// A handover failed after `go`: this image must execute itself again (the
    /// fresh start takes everything back and counts the failure).
    Restart(String),
}

/// Runs the daemon until `shutdown` turns true.
pub async fn run(cfg: Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    run_with(cfg, shutdown, None).await.map(|_| ())
}

/// Runs the daemon until `shutdown` turns true or it hands over to a new image;
/// `predecessor` is the old image this one takes over from (`--take-over`).
pub async fn run_with(
    cfg: Config,
    shutdown: watch::Receiver<bool>,
    predecessor: Option<Arc<Predecessor>>,
) -> anyhow::Result<Exit> {
    if let Some(p) = &predecessor {
        // Proves this image can reach ZooKeeper before the old one lets go.
        identity::connect(&cfg.zookeeper).await.map_err(|e| anyhow::anyhow!("cannot reach zookeeper: {e}"))?;
        p.ready_then_go().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        tracing::info!("the old sidecar image let go: taking over");
        tokio::spawn(p.clone().watch());
    }
    let lock = lock_data_dir(&cfg).await?;
    let image = Arc::new(SelfImage::new(&cfg.host.data_dir, predecessor));
    let layout = Layout::new(&cfg.zookeeper.root).context("invalid [zookeeper] root")?;
    let (link_tx, link_rx) = watch::channel(Link::Connecting);
    // The agents stop on a signal, or when one of them hits a fatal error.
    let (stop_tx, stop_rx) = watch::channel(false);
    let peers = peers(&cfg, &link_rx, &stop_rx).await?;
    let agents: Vec<Arc<Agent>> = agents(&cfg, peers.as_ref(), &image)?.into_iter().map(Arc::new).collect();
    image.expect_agents(agents.len());
    if let Some(peers) = &peers {
        tokio::spawn(peers.clone().restore(agents.iter().map(|a| a.store.clone()).collect()));
    }
    let names: Vec<String> = agents.iter().map(|a| a.service().to_string()).collect();
    tracing::info!(
        version = crate::VERSION,
        host = %cfg.host.id,
        services = %names.join(", "),
        zookeeper = %cfg.zookeeper.connect,
        root = %cfg.zookeeper.root,
        data_dir = %cfg.host.data_dir.display(),
        peers = %cfg.peers.as_ref().map_or("off".to_string(), |p| p.advertise.clone()),
        "sidecar starting"
    );
    let metrics_server = match cfg.metrics.listen {
        Some(addr) => {
            let listener = crate::metrics::bind(addr).await?;
            tracing::info!(%addr, "serving metrics at /metrics");
            crate::metrics::get();
            Some(crate::metrics::Server(tokio::spawn(crate::metrics::serve(listener))))
        }
        None => None,
    };
    let mut tasks = tokio::task::JoinSet::new();
    let mut sidecar_task: Option<tokio::task::AbortHandle> = None;
    for a in &agents {
        let (a, link, stop) = (a.clone(), link_rx.clone(), stop_rx.clone());
        let span = tracing::info_span!("agent", service = %a.service());
        let own = a.supervisor.own_release().is_some();
        let task = tasks
            .spawn(async move { a.run(link, stop).await.map_err(|e| (a.service().to_string(), e)) }.instrument(span));
        if own {
            sidecar_task = Some(task);
        }
    }
    let (fatal_tx, mut fatal_rx) = watch::channel(None::<String>);
    let session_task = {
        let (cfg, shutdown, stop) = (cfg.clone(), shutdown.clone(), stop_rx.clone());
        tokio::spawn(async move { sessions(&cfg, layout, names, link_tx, shutdown, stop, fatal_tx).await })
    };
    let mut signal = shutdown.clone();
    let mut result = Ok(());
    let mut offered = image.offered();
    let mut handing_over = false;
    loop {
        tokio::select! {
            _ = signal.changed() => {
                let _ = stop_tx.send(true);
            }
            Ok(()) = offered.changed(), if !handing_over => {
                // The new image is ready: every other agent stops at its next safe point;
                // the sidecar's own agent waits in its step and is ended here.
                handing_over = true;
                tracing::info!("handing over to the new sidecar image: stopping the agents at their safe points");
                let _ = stop_tx.send(true);
                if let Some(t) = &sidecar_task {
                    t.abort();
                }
            }
            Ok(()) = fatal_rx.changed() => {
                let why = fatal_rx.borrow().clone().unwrap_or_default();
                tracing::error!(error = %why, "fatal: stopping the sidecar");
                result = Err(anyhow::anyhow!("{why}"));
                let _ = stop_tx.send(true);
            }
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err((service, err)))) => {
                    let who = match &*link_rx.borrow() {
                        Link::Up(s) => s.identity.describe(),
                        _ => "this sidecar".into(),
                    };
                    let err = format!(
                        "service {service}: zookeeper at {} refused {who}: {err}; check [zookeeper] tls and auth, \
                         and the ACLs `deployctl init` set",
                        cfg.zookeeper.connect
                    );
                    tracing::error!(error = %err, "fatal: stopping the sidecar");
                    result = Err(anyhow::anyhow!("{err}"));
                    let _ = stop_tx.send(true);
                }
                Some(Err(join)) if join.is_cancelled() => {}
                Some(Err(join)) => {
                    result = Err(anyhow::anyhow!("an agent task failed: {join}"));
                    let _ = stop_tx.send(true);
                }
            },
        }
    }
    if let Some(offer) = image.take_offer().filter(|_| handing_over && result.is_ok()) {
        for a in &agents {
            if let Err(err) = a.supervisor.detach().await {
                tracing::error!(service = %a.service(), error = %err, "failed to detach from the service");
            }
        }
        drop(metrics_server);
        drop(lock);
        return Ok(hand_over(offer, &cfg, session_task, link_rx).await);
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    close_session(session_task, link_rx).await;
    for a in &agents {
        if let Err(err) = a.supervisor.shutdown().await {
            tracing::error!(service = %a.service(), error = %err, "failed to shut the service down");
        }
    }
    result.map(|()| Exit::Stopped)
}

/// The old image's half of a handover, once its agents stopped and the lock is free:
/// `go`, then `done` (systemd is told the new main pid, this session closes with none
/// of this host's nodes left in it) or a failure (the new image is killed, the
/// failure recorded for the recovery of the step, and this image must start again).
async fn hand_over(
    offer: crate::handover::Offer,
    cfg: &Config,
    session_task: tokio::task::JoinHandle<()>,
    link: watch::Receiver<Link>,
) -> Exit {
    let crate::handover::Offer { mut successor, within } = offer;
    let outcome = match successor.go().await {
        Ok(()) => successor.done(within).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => {
            tracing::info!(pid = successor.pid, version = %successor.to, "the new sidecar image took over; exiting");
            crate::handover::notify_main_pid(successor.pid);
            close_session(session_task, link).await;
            Exit::HandedOver
        }
        Err(why) => {
            tracing::error!(version = %successor.to, error = %why, "the handover failed; taking everything back");
            let to = successor.to.clone();
            successor.kill().await;
            crate::handover::record_failure(&cfg.host.data_dir, &to, &why);
            Exit::Restart(why)
        }
    }
}

/// Closes the last session (its ephemeral nodes vanish at once, not after its
/// timeout): every handle of its client is dropped, then the close is awaited for a
/// moment. zookeeper-client closes a session when its last handle goes.
async fn close_session(task: tokio::task::JoinHandle<()>, link: watch::Receiver<Link>) {
    let watcher = match &*link.borrow() {
        Link::Up(s) => Some(s.client.state_watcher()),
        _ => None,
    };
    task.abort();
    let _ = task.await;
    drop(link);
    let Some(mut watcher) = watcher else { return };
    let closed = async {
        while !watcher.state().is_terminated() {
            watcher.changed().await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(3), closed).await.is_err() {
        tracing::warn!("the zookeeper session did not close in time; its nodes go when it expires");
    }
}

/// Keeps a live session published on `link` until `stop`: connects (the first
/// failure at start-up publishes [`Link::Offline`] so the services start), creates
/// the tree, publishes the session, and opens a new one when it ends. The session
/// is dropped (closed) when this returns, so this host's ephemeral nodes vanish.
async fn sessions(
    cfg: &Config,
    layout: Layout,
    names: Vec<String>,
    link: watch::Sender<Link>,
    mut shutdown: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
    fatal: watch::Sender<Option<String>>,
) {
    let give_up = |why: String| {
        fatal.send_replace(Some(why));
        std::future::pending::<()>()
    };
    let mut previous = register::previous_sessions(&cfg.host.data_dir);
    let mut backoff = Duration::from_millis(200);
    let mut ever_up = false;
    loop {
        if *stop.borrow() || *shutdown.borrow() {
            // Keep the last session open until every agent stopped: a step in flight
            // commits on it. The daemon drops this future then.
            std::future::pending::<()>().await;
        }
        let client = tokio::select! {
            c = identity::connect(&cfg.zookeeper) => c,
            _ = stop.changed() => continue,
            _ = shutdown.changed() => continue,
        };
        let client = match client {
            Ok(c) => c,
            Err(err) if err.is_fatal() => return give_up(err.to_string()).await,
            Err(err) => {
                if let Some(why) = identity::diagnose_tls(&cfg.zookeeper).await {
                    return give_up(why).await;
                }
                tracing::warn!(connect = %cfg.zookeeper.connect, error = %err, "cannot reach zookeeper; retrying");
                if !ever_up && !matches!(*link.borrow(), Link::Offline) {
                    link.send_replace(Link::Offline);
                    // Ready as far as systemd is concerned: the services run.
                    notify(&[sd_notify::NotifyState::Ready]);
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {},
                    _ = stop.changed() => {},
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        let digest = identity::digest_id(&cfg.zookeeper);
        let identity = match Identity::learn(&client, &layout, &cfg.zookeeper.connect, digest.as_deref()).await {
            Ok(identity) => identity,
            Err(why) if client.state().is_terminated() => {
                tracing::warn!(error = %why, "zookeeper session lost while starting; opening a new one");
                continue;
            }
            Err(why) => return give_up(why).await,
        };
        let s = Session {
            timeout: client.session_timeout(),
            client,
            layout: layout.clone(),
            host: cfg.host.id.clone(),
            previous: previous.clone().into(),
            identity: Arc::new(identity),
        };
        let secured = s.identity.security.is_some();
        tracing::info!(session = %zk::session_hex(s.id()), host = %s.host, identity = %s.identity.describe(), secured, "zookeeper session established");
        register::record_session(&cfg.host.data_dir, s.id());
        previous.push(s.id());
        if let Err(err) = s.ensure_tree(&names).await {
            if err.is_fatal() {
                let who = s.identity.describe();
                return give_up(format!("zookeeper at {} refused {who}: {err}", cfg.zookeeper.connect)).await;
            }
            tracing::warn!(error = %err, "failed to create the znode tree; retrying");
            continue;
        }
        if !ever_up {
            let (dir, own) = (cfg.host.data_dir.clone(), crate::handover::own_release(&cfg.host.data_dir));
            tokio::spawn(async move {
                tokio::time::sleep(crate::handover::PROVEN_AFTER).await;
                crate::handover::proven(&dir, &own);
            });
        }
        ever_up = true;
        let mut state = s.client.state_watcher();
        link.send_replace(Link::Up(s.clone()));
        crate::metrics::get().session(true);
        notify(&[sd_notify::NotifyState::Ready]);
        loop {
            let now = state.changed().await;
            if now.is_terminated() {
                tracing::warn!(session = %zk::session_hex(s.id()), state = ?now, "zookeeper session lost; opening a new one");
                break;
            }
        }
        link.send_replace(Link::Connecting);
        crate::metrics::get().session(false);
    }
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
