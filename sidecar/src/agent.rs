//! One service of this host: the state machine of [`crate::lifecycle`] driven
//! against one ZooKeeper session at a time.
//!
//! # Expected flow
//! Boot on the right version, register while healthy, download every staged
//! release, queue with a ticket, fence, step, commit; see `docs/protocol.md`.
//!
//! # Errors
//! Transient ZooKeeper errors (ConnectionLoss) are retried in place after a short
//! backoff; the service keeps running meanwhile and no step starts, because a fence
//! needs a live session. A terminal error (session expired) ends
//! [`Agent::run_session`]; the daemon opens a new session and calls it again, which
//! re-registers, re-creates the ticket and recovers an interrupted step.
//!
//! The transitions live in [`waiting`] (boot, idle, download, queue) and
//! [`stepping`] (the fenced step, its commit, recovery).

mod stepping;
mod waiting;

use crate::config::{HostConfig, ServiceConfig};
use crate::download::Fetcher;
use crate::fence::{self};
use crate::lifecycle::Lifecycle;
use crate::queue;
use crate::register::{self, RegisterError, Registration};
use crate::releases::ReleaseStore;
use crate::session::Session;
use crate::step::Parts;
use crate::supervisor::{Status, Supervisor};
use crate::zk::ZkError;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use znode_schema::{Current, Staging, time};
use zookeeper_client::OneshotWatcher;

/// How often a waiting agent re-reads even without a watch firing (lost watches
/// around reconnects cannot strand it).
const REEVALUATE: Duration = Duration::from_secs(30);

/// Why an agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// ZooKeeper failed in a way that needs a new session.
    #[error("service {service}: {source}")]
    Zk {
        /// The service.
        service: String,
        /// The error.
        #[source]
        source: ZkError,
    },
    /// This host id is taken by another live session: fatal.
    #[error("service {service}: {source}")]
    Register {
        /// The service.
        service: String,
        /// The error.
        #[source]
        source: RegisterError,
    },
}

/// One managed service and everything of it that outlives a ZooKeeper session.
#[derive(Debug)]
pub struct Agent {
    /// The service's config.
    pub cfg: Arc<ServiceConfig>,
    /// Its process.
    pub supervisor: Supervisor,
    /// Its local releases.
    pub store: ReleaseStore,
    fetcher: Arc<Fetcher>,
    keep_releases: usize,
    state: Lifecycle,
    /// The version the service runs (or last ran), per the release store.
    running: Option<String>,
    /// A staged release whose step failed here (`version`, `staged_at`): not queued again.
    failed: Option<(String, String)>,
    /// The last download problem, shown in the registration.
    last_error: Option<String>,
    /// Consecutive download failures, for the backoff.
    download_failures: u32,
    reg: Registration,
    booted: bool,
    /// The session this host used last (its previous run's, recorded in the data dir
    /// and read before this run records its own; then this run's latest): its
    /// ephemeral nodes are this host's own and are taken over at once.
    previous_session: Option<i64>,
}

impl Agent {
    /// A new agent; nothing runs until [`Agent::run_session`].
    pub fn new(
        cfg: Arc<ServiceConfig>,
        host: &HostConfig,
        supervisor: Supervisor,
        store: ReleaseStore,
        fetcher: Arc<Fetcher>,
    ) -> Self {
        let running = store.state().ok().and_then(|s| s.active);
        Agent {
            cfg,
            supervisor,
            store,
            fetcher,
            keep_releases: host.keep_releases,
            state: Lifecycle::Booting,
            running,
            failed: None,
            last_error: None,
            download_failures: 0,
            reg: Registration::default(),
            booted: false,
            previous_session: register::previous_session(&host.data_dir),
        }
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.cfg.name
    }

    /// The current lifecycle state.
    pub fn state(&self) -> &Lifecycle {
        &self.state
    }

    fn parts(&self) -> Parts<'_> {
        Parts { cfg: &self.cfg, supervisor: &self.supervisor, store: &self.store }
    }

    fn zk_err(&self, source: ZkError) -> AgentError {
        AgentError::Zk { service: self.cfg.name.clone(), source }
    }

    /// Starts the last active release without ZooKeeper (it is unreachable at start-up),
    /// so a rebooted machine serves while it waits; boot proper runs once a session exists.
    pub async fn boot_offline(&mut self) {
        let Some(v) = self.running.clone() else { return };
        if !self.store.has(&v) {
            return;
        }
        tracing::warn!(service = %self.cfg.name, version = %v, "zookeeper unreachable; starting the last active release");
        if let Err(err) = self.supervisor.start(&self.store.release_dir(&v), &v).await {
            tracing::error!(service = %self.cfg.name, error = %err, "failed to start the last active release");
        }
    }

    /// Drives the lifecycle on session `s` until the session ends (`Err`), or shutdown.
    pub async fn run_session(&mut self, s: &Session, shutdown: &mut watch::Receiver<bool>) -> Result<(), AgentError> {
        self.reg = Registration::default();
        self.claim(s).await?;
        self.previous_session = Some(s.id());
        match fence::find_marker(s).await.map_err(|e| self.zk_err(e))? {
            Some((entry, marker)) => self.state = Lifecycle::Recovering { entry, marker },
            None => {
                self.state = match std::mem::replace(&mut self.state, Lifecycle::Idle) {
                    // The old session's ticket vanished with it; a step whose marker is
                    // gone was unlocked or aborted: re-evaluate from Idle. A boot that
                    // started the service already is not repeated.
                    _ if !self.booted => Lifecycle::Booting,
                    _ => Lifecycle::Idle,
                }
            }
        }
        let mut backoff = Duration::from_millis(100);
        while !*shutdown.borrow() {
            match self.transition(s, shutdown).await {
                Ok(next) => {
                    if next.name() != self.state.name() {
                        tracing::info!(service = %self.cfg.name, from = self.state.name(), to = next.name(), "transition");
                    }
                    self.state = next;
                    backoff = Duration::from_millis(100);
                }
                Err(err) if err.is_transient() && !s.is_terminated() => {
                    tracing::warn!(service = %self.cfg.name, error = %err, "zookeeper call failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(err) => return Err(self.zk_err(err)),
            }
        }
        Ok(())
    }

    /// Makes sure no other session holds this host's registration or tickets.
    async fn claim(&self, s: &Session) -> Result<(), AgentError> {
        let wrap = |source| AgentError::Register { service: self.cfg.name.clone(), source };
        let previous = self.previous_session;
        let patience = s.timeout + s.timeout / 2;
        let cur = s.layout.current_host(&self.cfg.name, &s.host);
        register::claim(s, &cur, previous, patience).await.map_err(wrap)?;
        let tickets = queue::tickets(s, &self.cfg.name).await.map_err(|e| wrap(e.into()))?;
        for t in tickets.into_iter().filter(|t| t.host == s.host) {
            register::claim(s, &s.layout.ticket(&self.cfg.name, &t), previous, patience).await.map_err(wrap)?;
        }
        Ok(())
    }

    /// Performs one transition from the current state.
    pub async fn transition(&mut self, s: &Session, sd: &mut watch::Receiver<bool>) -> Result<Lifecycle, ZkError> {
        match self.state.clone() {
            Lifecycle::Booting => self.boot(s, sd).await,
            Lifecycle::Idle => self.idle(s, sd).await,
            Lifecycle::Downloading { version } => self.download(s, sd, version).await,
            Lifecycle::Queued { version, ticket } => self.queued(s, sd, version, ticket).await,
            Lifecycle::Upgrading { entry, from, staging, ticket } => {
                Ok(self.upgrading(entry, from, staging, ticket).await)
            }
            Lifecycle::Upgraded { entry, staging, ticket } => self.upgraded(s, entry, staging, ticket).await,
            Lifecycle::RollingBack { entry, from, staging, ticket, cause } => {
                Ok(self.rolling_back(entry, from, staging, ticket, cause).await)
            }
            Lifecycle::Reverted { entry, from, staging, ticket, cause } => {
                self.reverted(s, entry, from, staging, ticket, cause).await
            }
            Lifecycle::Recovering { entry, marker } => self.recover(s, entry, marker).await,
        }
    }

    /// The registration payload for `version` if the service is healthy now.
    fn registration(&self, s: &Session, version: &str) -> Option<Current> {
        let status = self.supervisor.status().borrow().clone();
        let Status::Healthy { pid, since } = status else { return None };
        Some(Current {
            host: s.host.clone(),
            service: self.cfg.name.clone(),
            version: version.into(),
            state: "online".into(),
            pid,
            since: time::format(since),
            sidecar: crate::VERSION.into(),
            last_error: self.last_error.clone(),
        })
    }

    async fn reconcile(&mut self, s: &Session) -> Result<(), ZkError> {
        if self.state.in_step() {
            return Ok(());
        }
        let want = self.running.as_deref().and_then(|v| self.registration(s, v));
        let svc = self.cfg.name.clone();
        self.reg.reconcile(s, &svc, want.as_ref()).await
    }

    /// Reads `staging/<service>` with a watch (on its data, or on its creation).
    async fn staging(&self, s: &Session) -> Result<(Option<Staging>, OneshotWatcher), ZkError> {
        let path = s.layout.staging(&self.cfg.name);
        loop {
            match s.client.get_and_watch_data(&path).await {
                Ok((data, _, w)) => {
                    let staged = znode_schema::decode::<Staging>(&path, &data)
                        .map_err(|err| tracing::error!(error = %err, "ignoring an unreadable staged release"))
                        .ok()
                        .filter(|st| st.service == self.cfg.name && st.policy.validate().is_ok());
                    return Ok((staged, w));
                }
                Err(zookeeper_client::Error::NoNode) => match s.client.check_and_watch_stat(&path).await {
                    Ok((None, w)) => return Ok((None, w)),
                    Ok((Some(_), _)) => continue,
                    Err(e) => return Err(ZkError::call("exists", path, e)),
                },
                Err(e) => return Err(ZkError::call("get", path, e)),
            }
        }
    }

    /// Waits until a watch fires, the service's health flips, the re-evaluation
    /// timer runs out, or shutdown; keeps the registration in step meanwhile.
    async fn wait(
        &mut self,
        s: &Session,
        watches: Vec<OneshotWatcher>,
        sd: &mut watch::Receiver<bool>,
        timer: Duration,
    ) -> Result<(), ZkError> {
        self.reconcile(s).await?;
        let mut status = self.supervisor.status();
        status.borrow_and_update();
        let any = async move {
            if watches.is_empty() {
                std::future::pending::<()>().await;
            }
            futures_util::future::select_all(watches.into_iter().map(|w| Box::pin(w.changed()))).await;
        };
        tokio::pin!(any);
        let sleep = tokio::time::sleep(timer);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut any => return Ok(()),
                _ = &mut sleep => return Ok(()),
                _ = sd.changed() => return Ok(()),
                r = status.changed() => {
                    if r.is_err() {
                        return Ok(());
                    }
                    status.borrow_and_update();
                    let before = self.reg_online();
                    self.reconcile(s).await?;
                    if before != self.reg_online() {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn reg_online(&self) -> bool {
        matches!(*self.supervisor.status().borrow(), Status::Healthy { .. })
    }

    fn prune_releases(&self) {
        match self.store.prune(self.keep_releases) {
            Ok(gone) if !gone.is_empty() => {
                tracing::info!(service = %self.cfg.name, removed = ?gone, "pruned old releases")
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(service = %self.cfg.name, error = %err, "failed to prune old releases"),
        }
    }
}
