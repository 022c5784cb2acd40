//! One service of this host: the state machine of [`lifecycle`] driven in a task of
//! its own, across a succession of ZooKeeper sessions.
//!
//! # Expected flow
//! Boot on the right version, register while healthy, download every staged
//! release, queue with a ticket, fence, step, commit, decide completion; see
//! `docs/protocol.md`.
//!
//! # Guarantees
//! - Each service's agent is its own task: another service's error, step or
//!   recovery never touches it; a session loss never cuts a step short (the local
//!   states run without ZooKeeper and commit on the next session).
//! - On a new session an agent that knows of no step in flight looks for a marker
//!   of its own service only ([`crate::coord::fence::find_marker`]).
//!
//! # Errors
//! Transient ZooKeeper errors (ConnectionLoss) retry the same transition after a
//! short backoff; no step starts meanwhile, because a fence needs the server. A
//! terminal error (session expired) makes the agent wait for the daemon's next
//! session. An unreadable payload is logged and re-evaluated later, never a reason
//! to drop a session. Only a write ZooKeeper refuses to this session's identity
//! (NoAuth: wrong credentials or ACLs, see [`ZkError::is_fatal`]) ends the agent with
//! an error; a host id held by another live session is waited for
//! ([`register::claim`]), never a reason to stop.
//!
//! The transitions live in [`waiting`] (boot, idle, download, queue, completion)
//! and [`stepping`] (the step, its commit, recovery).

mod boot;
mod itself;
pub mod lifecycle;
mod report;
mod stepping;
mod waiting;

use crate::config::{HostConfig, ServiceConfig};
use crate::coord::queue;
use crate::coord::register::{self, Registration};
use crate::coord::session::Session;
use crate::coord::zk::ZkError;
use crate::handover::SelfImage;
use crate::host::download::Fetcher;
use crate::host::releases::ReleaseStore;
use crate::host::step::Parts;
use crate::host::supervisor::{Status, Supervisor};
use lifecycle::Lifecycle;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use znode_schema::{Current, Staging, time};
use zookeeper_client::OneshotWatcher;

/// How often a waiting agent re-reads even without a watch firing (lost watches
/// around reconnects cannot strand it).
const REEVALUATE: Duration = Duration::from_secs(30);

/// How long a front host waits for the unfenced front host just ahead of it to fence
/// before it fences out of order ([`crate::coord::turn::predecessor`]): a hop of the
/// chain takes milliseconds; a host that takes this long is stuck or blocked.
const ORDER_PATIENCE: Duration = Duration::from_secs(3);

/// An instant no timer reaches (a disabled `select!` branch still builds its future).
fn far() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400)
}

/// The daemon's ZooKeeper link, as the agents see it.
#[derive(Debug, Clone)]
pub enum Link {
    /// Connecting (at start-up, or after a session ended).
    Connecting,
    /// ZooKeeper could not be reached at start-up: start what ran before.
    Offline,
    /// A live session.
    Up(Session),
}

/// One session as an agent uses it: the session and what the agent wrote in it.
#[derive(Debug)]
struct Ctx {
    s: Session,
    reg: Registration,
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
    host_id: String,
    /// What this host reports about the staged release.
    reporter: report::Reporter,
    /// When the step in flight started (for its duration metric).
    step_started: std::sync::Mutex<Option<std::time::Instant>>,
    /// The history event counting this host's failures to download the staged release.
    failure_event: std::sync::Mutex<Option<crate::coord::history::Coalesced>>,
    /// This sidecar as a service of its own (shared by every agent of the daemon).
    image: Option<Arc<SelfImage>>,
    /// The deploy entry of the rollout this host takes part in, by version, as last
    /// read: the handoff reads the front as one snapshot of it ([`crate::coord::fence::peek`]).
    rollout_entry: std::sync::Mutex<Option<(String, znode_schema::DeployName)>>,
    /// The unfenced front ticket this host waits for in the slot order, and since
    /// when ([`crate::coord::turn::predecessor`]): its patience with it.
    awaiting: std::sync::Mutex<Option<(znode_schema::TicketName, tokio::time::Instant)>>,
    /// Whether this host's ticket was at most `max_parallel` tickets from the front at
    /// its last read: woken, it reads the front's snapshot, tickets included, at
    /// once instead of the tickets first.
    near_front: std::sync::atomic::AtomicBool,
}

impl Agent {
    /// A new agent; nothing runs until [`Agent::run`].
    pub fn new(
        cfg: Arc<ServiceConfig>,
        host: &HostConfig,
        supervisor: Supervisor,
        store: ReleaseStore,
        fetcher: Arc<Fetcher>,
    ) -> Self {
        Agent {
            cfg,
            supervisor,
            store,
            fetcher,
            keep_releases: host.keep_releases,
            host_id: host.id.clone(),
            reporter: Default::default(),
            step_started: Default::default(),
            failure_event: Default::default(),
            image: None,
            rollout_entry: Default::default(),
            awaiting: Default::default(),
            near_front: Default::default(),
        }
    }

    /// This agent with the daemon's [`SelfImage`].
    pub fn with_image(mut self, image: Arc<SelfImage>) -> Self {
        self.image = Some(image);
        self
    }

    /// The image, when this agent's service is the sidecar itself (`baton-sidecar`).
    fn itself(&self) -> Option<&SelfImage> {
        self.supervisor.own_release().and(self.image.as_deref())
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.cfg.name
    }

    /// The release the store says is active (what runs, or last ran); for the sidecar
    /// itself, the release this process runs.
    fn active(&self) -> Option<String> {
        if let Some(own) = self.supervisor.own_release() {
            return Some(own.to_string());
        }
        self.store.state().ok().and_then(|s| s.active)
    }

    fn parts(&self) -> Parts<'_> {
        Parts { host: &self.host_id, cfg: &self.cfg, supervisor: &self.supervisor, store: &self.store }
    }

    /// Drives the lifecycle until shutdown (at a safe point: a step in flight
    /// finishes first, and commits if a session is live) or a fatal error.
    pub async fn run(&self, mut link: watch::Receiver<Link>, mut sd: watch::Receiver<bool>) -> Result<(), ZkError> {
        let mut state = Lifecycle::Booting;
        let mut ctx: Option<Ctx> = None;
        let mut offline_booted = false;
        let mut begun = false;
        let mut backoff = Duration::from_millis(100);
        loop {
            let live = ctx.as_ref().is_some_and(|c| !c.s.is_terminated());
            if *sd.borrow() && !state.is_local() && !(state.in_step() && live) {
                return Ok(());
            }
            if state.is_local() {
                state = self.logged(&state, self.local(state.clone()).await);
                continue;
            }
            let mut c = match ctx.take().filter(|c| !c.s.is_terminated()) {
                Some(c) => c,
                None => {
                    let Some(s) = self.next_session(&mut link, &mut sd, &mut offline_booted).await else { continue };
                    match self.begin(&s, state.clone()).await {
                        Ok(next) => {
                            if !std::mem::replace(&mut begun, true) {
                                if let Some(image) = &self.image {
                                    image.begun();
                                }
                            }
                            state = self.logged(&state, next);
                            Ctx { s, reg: Registration::default() }
                        }
                        Err(err) if err.is_fatal() => return Err(err),
                        Err(err) => {
                            tracing::warn!(error = %err, "failed to take up the new session; retrying");
                            self.pause(&mut sd, &mut backoff).await;
                            continue;
                        }
                    }
                }
            };
            match self.transition(&mut c, state.clone(), &mut sd).await {
                Ok(next) => {
                    state = self.logged(&state, next);
                    backoff = Duration::from_millis(100);
                    ctx = Some(c);
                }
                Err(err) if err.is_fatal() => return Err(err),
                Err(err) if err.is_terminal() || c.s.is_terminated() => {
                    tracing::warn!(error = %err, state = state.name(), "zookeeper session lost; waiting for the next one");
                }
                Err(err) => {
                    // ConnectionLoss, or an unreadable payload: the same transition again.
                    tracing::warn!(error = %err, state = state.name(), "zookeeper call failed; retrying");
                    self.pause(&mut sd, &mut backoff).await;
                    ctx = Some(c);
                }
            }
        }
    }

    fn logged(&self, from: &Lifecycle, to: Lifecycle) -> Lifecycle {
        if from.name() != to.name() {
            tracing::info!(from = from.name(), to = to.name(), "transition");
            let mut started = self.step_started.lock().unwrap_or_else(|e| e.into_inner());
            if to.in_step() && started.is_none() {
                *started = Some(std::time::Instant::now());
            }
            // The active release changes only inside a step, whose states have names
            // of their own: reading it (state.json) on a change of state is enough.
            crate::metrics::get().service(&self.cfg.name, self.active().as_deref(), to.name());
        }
        to
    }

    /// A step ended with `outcome` (`upgraded`, `failed`, `undone`): counted, with its
    /// time since the fence (or recovery) when this process saw it start.
    fn step_ended(&self, outcome: &str) {
        let took = self.step_started.lock().unwrap_or_else(|e| e.into_inner()).take().map(|t| t.elapsed());
        crate::metrics::get().step(&self.cfg.name, outcome, took);
    }

    async fn pause(&self, sd: &mut watch::Receiver<bool>, backoff: &mut Duration) {
        tokio::select! {
            _ = tokio::time::sleep(*backoff) => {}
            _ = sd.changed() => {}
        }
        *backoff = (*backoff * 2).min(Duration::from_secs(2));
    }

    /// Waits for a live session from the daemon; starts the last active release once
    /// if ZooKeeper is unreachable at start-up. `None` on shutdown.
    async fn next_session(
        &self,
        link: &mut watch::Receiver<Link>,
        sd: &mut watch::Receiver<bool>,
        offline_booted: &mut bool,
    ) -> Option<Session> {
        loop {
            let now = link.borrow_and_update().clone();
            match now {
                Link::Up(s) if !s.is_terminated() => return Some(s),
                Link::Offline if !*offline_booted => {
                    *offline_booted = true;
                    self.boot_offline().await;
                }
                _ => {}
            }
            tokio::select! {
                r = link.changed() => if r.is_err() { return None },
                _ = sd.changed() => return None,
            }
        }
    }

    /// Takes up session `s`: claims this host's registration and tickets from any
    /// earlier session, then resumes `state`: a step this process knows of goes on;
    /// otherwise a marker of this service means an interrupted step (recovery).
    async fn begin(&self, s: &Session, state: Lifecycle) -> Result<Lifecycle, ZkError> {
        tracing::info!(session = %crate::coord::zk::session_hex(s.id()), state = state.name(), "taking up the session");
        let patience = s.timeout + s.timeout / 2;
        // A registration is taken over only while the service it names runs (a
        // handover, a sidecar restart); after a reboot it is deleted and written again
        // once the service is healthy.
        let runs = self.supervisor.running_release().await.is_some();
        register::claim(s, &s.layout.current_host(&self.cfg.name, &s.host), runs, patience).await?;
        for t in queue::tickets(s, &self.cfg.name).await?.into_iter().filter(|t| t.host == s.host) {
            register::claim(s, &s.layout.ticket(&self.cfg.name, &t), true, patience).await?;
        }
        if state.in_step() {
            return Ok(state.on_new_session());
        }
        let (q, _) = crate::coord::deploys::read(s, Default::default()).await?;
        match crate::coord::fence::find_marker(s, &q, &self.cfg.name).await? {
            Some((entry, marker)) => {
                let from = marker.from.as_deref().unwrap_or("nothing");
                tracing::warn!(entry = %entry, from, to = %marker.to, "found this service's marker: a step was interrupted");
                Ok(Lifecycle::Recovering { entry, marker })
            }
            None => Ok(state.on_new_session()),
        }
    }

    /// Starts the last active release without ZooKeeper (it is unreachable at
    /// start-up), so a rebooted machine serves while it waits.
    async fn boot_offline(&self) {
        let Some(v) = self.active().filter(|v| self.store.has(v)) else { return };
        tracing::warn!(version = %v, "zookeeper unreachable; starting the last active release");
        if let Err(err) = self.supervisor.start(&self.store.release_dir(&v), &v).await {
            tracing::error!(error = %err, "failed to start the last active release");
        }
    }

    /// Performs one transition that needs ZooKeeper.
    async fn transition(
        &self,
        c: &mut Ctx,
        state: Lifecycle,
        sd: &mut watch::Receiver<bool>,
    ) -> Result<Lifecycle, ZkError> {
        match state {
            Lifecycle::Booting => self.boot(c, sd).await,
            Lifecycle::Idle => self.idle(c, sd).await,
            Lifecycle::Downloading { version, attempts, error } => self.download(c, sd, version, attempts, error).await,
            Lifecycle::Queued { version, ticket, waiting, vacuous_since } => {
                self.queued(c, sd, version, ticket, waiting, vacuous_since).await
            }
            Lifecycle::Returning { entry, from, to } => self.returning(c, sd, entry, from, to).await,
            Lifecycle::Upgraded(step) => self.upgraded(c, step).await,
            Lifecycle::Reverted { step, cause } => self.reverted(c, step, cause).await,
            Lifecycle::Stayed { step, cause } => self.stayed(c, step, cause).await,
            Lifecycle::Undone(step) => self.undone(c, step).await,
            Lifecycle::Completing { entry, version } => self.completing(c, entry, version).await,
            Lifecycle::Recovering { entry, marker } => self.recover(c, entry, marker).await,
            local => Ok(self.local(local).await),
        }
    }

    /// The registration payload for `version` if the service is healthy now.
    fn registration(&self, s: &Session, version: &str, last_error: Option<&str>) -> Option<Current> {
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
            last_error: last_error.map(str::to_string),
            report: self.reporter.published(),
        })
    }

    /// Keeps `current/<service>/<host>` in step with the service's health (outside steps).
    async fn reconcile(&self, c: &mut Ctx, last_error: Option<&str>) -> Result<(), ZkError> {
        let want = self.active().and_then(|v| self.registration(&c.s, &v, last_error));
        c.reg.reconcile(&c.s, &self.cfg.name, want.as_ref()).await
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

    /// Waits until a watch fires, the service's health flips, `timer` runs out, or
    /// shutdown; keeps the registration in step meanwhile.
    async fn wait(
        &self,
        c: &mut Ctx,
        watches: Vec<OneshotWatcher>,
        sd: &mut watch::Receiver<bool>,
        timer: Duration,
        last_error: Option<&str>,
    ) -> Result<(), ZkError> {
        self.reconcile(c, last_error).await?;
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
            let due = self.reporter.due();
            tokio::select! {
                _ = &mut any => return Ok(()),
                _ = &mut sleep => return Ok(()),
                _ = sd.changed() => return Ok(()),
                _ = tokio::time::sleep_until(due.unwrap_or_else(far)), if due.is_some() => {
                    if self.reporter.publish_if_due() {
                        self.reconcile(c, last_error).await?;
                    }
                }
                r = status.changed() => {
                    if r.is_err() {
                        return Ok(());
                    }
                    status.borrow_and_update();
                    let before = c.reg.is_online();
                    self.reconcile(c, last_error).await?;
                    if before != c.reg.is_online() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Keeps `version`, whose process runs (or ran) here, supervised: unless this
    /// supervisor keeps it up already, adopts the live process the pid file records
    /// (or starts the release if it died); and records it as the active release (a
    /// failure to record is logged). Fails when it can be neither adopted nor started.
    async fn keep(&self, version: &str) -> Result<(), crate::host::supervisor::SupervisorError> {
        let stopped = matches!(*self.supervisor.status().borrow(), Status::Stopped);
        let started = match stopped {
            true => self.supervisor.start(&self.store.release_dir(version), version).await.map(|started| {
                tracing::info!(%version, %started, "supervising the release that runs here");
            }),
            false => Ok(()),
        };
        if self.active().as_deref() != Some(version) {
            if let Err(err) = self.store.activate(version) {
                tracing::error!(%version, error = %err, "failed to record the running release as active");
            }
        }
        started
    }

    fn prune_releases(&self) {
        match self.store.prune(self.keep_releases) {
            Ok(gone) if !gone.is_empty() => tracing::info!(removed = %gone.join(", "), "pruned old releases"),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "failed to prune old releases"),
        }
    }
}
