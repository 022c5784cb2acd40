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

use crate::commit::{self, StepEnd};
use crate::config::{HostConfig, ServiceConfig};
use crate::download::Fetcher;
use crate::fence::{self, Fenced};
use crate::lifecycle::Lifecycle;
use crate::register::{self, RegisterError, Registration};
use crate::releases::ReleaseStore;
use crate::session::Session;
use crate::step::{Parts, StepError};
use crate::supervisor::{Status, Supervisor};
use crate::turn::{self, Verdict};
use crate::zk::{self, ZkError};
use crate::{boot, queue};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use znode_schema::{Current, EventKind, Release, Staging, TicketName, time};
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
                match self.parts().upgrade(&staging.version, &staging.policy).await {
                    Ok(()) => {
                        self.running = Some(staging.version.clone());
                        let end =
                            StepEnd { service: &self.cfg.name, entry: &entry, ticket: Some(&ticket), register: None };
                        let cur = self.registration(s, &staging.version);
                        let end = StepEnd { register: cur.as_ref(), ..end };
                        commit::success(s, &end, &staging.version).await?;
                        self.reg.assume(cur);
                        tracing::info!(service = %self.cfg.name, version = %staging.version, "host upgraded");
                        self.prune_releases();
                        commit::complete_if_done(s, &staging, &entry).await?;
                        Ok(Lifecycle::Idle)
                    }
                    Err(err) => {
                        tracing::error!(service = %self.cfg.name, error = %err, "upgrade step failed; rolling back");
                        Ok(Lifecycle::RollingBack { entry, from, staging, ticket, cause: err.to_string() })
                    }
                }
            }
            Lifecycle::RollingBack { entry, from, staging, ticket, cause } => {
                if let Err(err) = self.parts().revert(from.as_deref(), &staging.policy).await {
                    tracing::error!(service = %self.cfg.name, error = %err, "rollback of the failed step failed too");
                }
                self.running = from.clone();
                self.failed = Some((staging.version.clone(), staging.staged_at.clone()));
                let cur = from.as_deref().and_then(|v| self.registration(s, v));
                let end =
                    StepEnd { service: &self.cfg.name, entry: &entry, ticket: Some(&ticket), register: cur.as_ref() };
                let state = commit::failure(s, &end, &staging, &cause).await?;
                self.reg.assume(cur);
                tracing::warn!(service = %self.cfg.name, ?state, "failure counted on the rollout");
                Ok(Lifecycle::Idle)
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

    async fn boot(&mut self, s: &Session, sd: &mut watch::Receiver<bool>) -> Result<Lifecycle, ZkError> {
        let (staged, staging_watch) = self.staging(s).await?;
        let mut facts = boot::Facts {
            last_active: self.running.clone(),
            staged: staged.as_ref().map(|st| st.version.clone()),
            ..Default::default()
        };
        boot::read_online(s, &self.cfg.name, &mut facts).await?;
        let mut started = None;
        let supervised = !matches!(*self.supervisor.status().borrow(), Status::Stopped);
        if let Some(v) = self.running.clone().filter(|v| self.store.has(v) && supervised) {
            // Already supervised by this process (an earlier boot): treat as adopted.
            facts.running = Some(v.clone());
            started = Some(v);
        } else if let Some(v) = self.running.clone().filter(|v| self.store.has(v)) {
            match self.supervisor.start(&self.store.release_dir(&v), &v).await {
                Ok(crate::supervisor::Started::Adopted { .. }) => {
                    facts.running = Some(v.clone());
                    started = Some(v);
                }
                Ok(_) => started = Some(v),
                Err(err) => {
                    tracing::error!(service = %self.cfg.name, error = %err, "failed to start the last active release")
                }
            }
        }
        let Some((version, reason)) = boot::choose(&facts) else {
            self.booted = true;
            tracing::info!(service = %self.cfg.name, "nothing to run yet: no release staged, none local");
            return Ok(Lifecycle::Idle);
        };
        tracing::info!(service = %self.cfg.name, version = %version, ?reason, "boot version chosen");
        if let Err(err) = self.fetch_for_boot(s, &version, staged.as_ref()).await {
            tracing::error!(service = %self.cfg.name, version = %version, error = %err, "cannot fetch the boot version");
            self.last_error = Some(err);
            self.download_failures += 1;
            let pause = self.download_pause();
            self.wait(s, vec![staging_watch], sd, pause).await?;
            return Ok(Lifecycle::Booting);
        }
        let deadline = staged.as_ref().map(|st| st.policy.health_deadline.0).unwrap_or(Duration::from_secs(60));
        let result = if started.as_deref() == Some(version.as_str()) {
            self.supervisor.wait_healthy(deadline).await.map_err(|e| e.to_string())
        } else {
            self.parts().switch_to(&version, deadline).await.map_err(|e: StepError| e.to_string())
        };
        self.running = Some(version.clone());
        if let Err(err) = result {
            tracing::error!(service = %self.cfg.name, version = %version, error = %err, "boot version is not healthy");
        }
        self.booted = true;
        self.reconcile(s).await?;
        if let Some(st) = staged.filter(|st| st.version == version) {
            if let (Some(head), _) = fence::head(s, false).await? {
                commit::complete_if_done(s, &st, &head.name).await?;
            }
        }
        Ok(Lifecycle::Idle)
    }

    /// Makes sure `version` is installed, from the staged release or the catalog.
    async fn fetch_for_boot(&self, s: &Session, version: &str, staged: Option<&Staging>) -> Result<(), String> {
        if self.store.has(version) {
            return Ok(());
        }
        let artifact = match staged.filter(|st| st.version == version) {
            Some(st) => st.artifact.clone(),
            None => match zk::get::<Release>(&s.client, &s.layout.release(&self.cfg.name, version)).await {
                Ok(Some((r, _, _))) => r.artifact,
                Ok(None) => return Err(format!("version {version} is not in the releases catalog")),
                Err(e) => return Err(e.to_string()),
            },
        };
        self.store.install(&self.fetcher, version, &artifact).await.map(|_| ()).map_err(|e| e.to_string())
    }

    fn wants(&self, st: &Staging) -> bool {
        self.running.as_deref() != Some(st.version.as_str()) && !self.failed_here(st)
    }

    /// Whether this host's step failed for this very staged release.
    fn failed_here(&self, st: &Staging) -> bool {
        self.failed.as_ref() == Some(&(st.version.clone(), st.staged_at.clone()))
    }

    /// The deploy entry of `st` that still lists this host among its failed hosts,
    /// watched; `None` once an operator resumed (which clears the list) or the
    /// entry is gone.
    async fn failed_entry(&self, s: &Session, st: &Staging) -> Result<Option<OneshotWatcher>, ZkError> {
        let dir = s.layout.deploy_dir();
        for name in znode_schema::seq::sorted_deploys(&zk::children(&s.client, &dir).await?) {
            let path = s.layout.deploy_entry(&name);
            let Ok((data, _, w)) = s.client.get_and_watch_data(&path).await else { continue };
            let Ok(e) = znode_schema::decode::<znode_schema::DeployEntry>(&path, &data) else { continue };
            if e.service == st.service && e.version == st.version {
                return Ok(e.failed_hosts.contains(&s.host).then_some(w));
            }
        }
        Ok(None)
    }

    async fn idle(&mut self, s: &Session, sd: &mut watch::Receiver<bool>) -> Result<Lifecycle, ZkError> {
        let (staged, w) = self.staging(s).await?;
        if let Some(st) = &staged {
            if self.running.is_none() && !self.reg_online() {
                // Nothing runs here: installing the staged release takes nobody down.
                return Ok(Lifecycle::Booting);
            }
            if self.wants(st) {
                return Ok(Lifecycle::Downloading { version: st.version.clone() });
            }
        }
        let mut watches = vec![w];
        if let Some(st) = staged.as_ref().filter(|st| self.failed_here(st)) {
            match self.failed_entry(s, st).await? {
                Some(entry_watch) => watches.push(entry_watch),
                None => {
                    tracing::info!(service = %self.cfg.name, version = %st.version, "rollout resumed; queueing again");
                    self.failed = None;
                    return Ok(Lifecycle::Downloading { version: st.version.clone() });
                }
            }
        }
        self.wait(s, watches, sd, REEVALUATE).await?;
        Ok(Lifecycle::Idle)
    }

    async fn download(
        &mut self,
        s: &Session,
        sd: &mut watch::Receiver<bool>,
        version: String,
    ) -> Result<Lifecycle, ZkError> {
        let (staged, w) = self.staging(s).await?;
        let Some(st) = staged.filter(|st| st.version == version && self.wants(st)) else {
            return Ok(Lifecycle::Idle);
        };
        match self.store.install(&self.fetcher, &version, &st.artifact).await {
            Ok(_) => {
                self.download_failures = 0;
                if self.last_error.take().is_some() {
                    self.reconcile(s).await?;
                }
                self.prune_releases();
                let ticket = queue::ensure(s, &self.cfg.name, &version).await?;
                tracing::info!(service = %self.cfg.name, version = %version, ticket = %ticket, "release verified; queued");
                Ok(Lifecycle::Queued { version, ticket })
            }
            Err(err) => {
                let msg = format!("release {version}: {err}");
                tracing::error!(service = %self.cfg.name, error = %msg, "download failed; will retry");
                if self.last_error.as_deref() != Some(msg.as_str()) {
                    self.report_download_failure(s, &version, &msg).await;
                }
                self.last_error = Some(msg);
                self.download_failures += 1;
                let pause = self.download_pause();
                self.wait(s, vec![w], sd, pause).await?;
                Ok(Lifecycle::Downloading { version })
            }
        }
    }

    async fn report_download_failure(&self, s: &Session, version: &str, msg: &str) {
        let ev =
            crate::history::event(&self.cfg.name, EventKind::DownloadFailed, Some(version), &s.host, Some(msg.into()));
        let (prefix, data) = crate::history::create_op(&s.layout, &ev);
        if let Err(err) = s.client.create(&prefix, &data, &zk::persistent_sequential()).await {
            tracing::warn!(error = %err, "failed to record the download failure in history");
        }
    }

    /// Exponential backoff between download attempts: 2 s, 4 s, … 64 s.
    fn download_pause(&self) -> Duration {
        Duration::from_secs(2u64.saturating_pow(self.download_failures.clamp(1, 6)))
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

    async fn queued(
        &mut self,
        s: &Session,
        sd: &mut watch::Receiver<bool>,
        version: String,
        ticket: TicketName,
    ) -> Result<Lifecycle, ZkError> {
        let (staged, staging_watch) = self.staging(s).await?;
        let Some(st) = staged.filter(|st| st.version == version && self.wants(st)) else {
            queue::delete(s, &self.cfg.name, &ticket).await?;
            return Ok(Lifecycle::Idle);
        };
        let tickets = queue::tickets(s, &self.cfg.name).await?;
        let mut watches = vec![staging_watch];
        match turn::position(&tickets, &ticket, &st) {
            Verdict::NoTicket => return Ok(Lifecycle::Downloading { version }),
            Verdict::Behind { predecessor } => {
                let path = s.layout.ticket(&self.cfg.name, &predecessor);
                let (stat, w) =
                    s.client.check_and_watch_stat(&path).await.map_err(|e| ZkError::call("exists", path, e))?;
                if stat.is_none() {
                    return Ok(Lifecycle::Queued { version, ticket });
                }
                watches.push(w);
            }
            _ => {
                let (front, front_watches) = fence::front(s, &self.cfg.name).await?;
                let verdict = turn::decide(&st, &front);
                if verdict == Verdict::Go {
                    let head = front.head.expect("Go implies a head");
                    let from = self.running.clone();
                    return match fence::commit(
                        s,
                        &self.cfg.name,
                        &head,
                        &ticket,
                        front.self_online,
                        from.as_deref(),
                        &version,
                    )
                    .await?
                    {
                        Fenced::Won => {
                            tracing::info!(service = %self.cfg.name, entry = %head.name, from = ?from, to = %version, "fenced: starting the step");
                            self.reg.assume(None);
                            Ok(Lifecycle::Upgrading { entry: head.name, from, staging: Box::new(st), ticket })
                        }
                        Fenced::Moved => Ok(Lifecycle::Queued { version, ticket }),
                    };
                }
                tracing::debug!(service = %self.cfg.name, ?verdict, "not yet");
                watches.extend(front_watches);
            }
        }
        self.wait(s, watches, sd, REEVALUATE).await?;
        Ok(Lifecycle::Queued { version, ticket })
    }

    async fn recover(
        &mut self,
        s: &Session,
        entry: znode_schema::DeployName,
        marker: znode_schema::Upgrading,
    ) -> Result<Lifecycle, ZkError> {
        let (staged, _) = self.staging(s).await?;
        let active = self.store.state().ok().and_then(|st| st.active);
        let healthy = self.reg_online()
            || (active.is_some() && self.supervisor.wait_healthy(Duration::from_secs(5)).await.is_ok());
        if !marker.to.is_empty() && active.as_deref() == Some(marker.to.as_str()) && healthy {
            tracing::info!(service = %self.cfg.name, version = %marker.to, "finishing the interrupted step: the new release runs healthy");
            self.running = Some(marker.to.clone());
            let cur = self.registration(s, &marker.to);
            let end = StepEnd { service: &self.cfg.name, entry: &entry, ticket: None, register: cur.as_ref() };
            commit::success(s, &end, &marker.to).await?;
            self.reg.assume(cur);
            if let Some(st) = staged.filter(|st| st.version == marker.to) {
                commit::complete_if_done(s, &st, &entry).await?;
            }
            return Ok(Lifecycle::Idle);
        }
        tracing::warn!(service = %self.cfg.name, from = ?marker.from, "undoing the interrupted step");
        let policy = staged.map(|st| st.policy).unwrap_or_default();
        let back = marker.from.clone().filter(|v| self.store.has(v));
        if active != back || !healthy {
            if let Err(err) = self.parts().revert(back.as_deref(), &policy).await {
                tracing::error!(service = %self.cfg.name, error = %err, "undoing the interrupted step failed");
            }
        }
        self.running = back.clone();
        let cur = back.as_deref().and_then(|v| self.registration(s, v));
        let end = StepEnd { service: &self.cfg.name, entry: &entry, ticket: None, register: cur.as_ref() };
        let detail = "step interrupted (sidecar restart or session loss); undone, will queue again".to_string();
        commit::undo(s, &end, Some(&marker.to), detail).await?;
        self.reg.assume(cur);
        Ok(Lifecycle::Idle)
    }
}
