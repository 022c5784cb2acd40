//! One service kept running on this machine: started from a release directory, health
//! checked for as long as it runs, restarted after a crash, stopped on purpose.
//!
//! # Expected flow
//! [`Supervisor::start`] spawns the service (run mode) or runs its `start` command
//! (start/stop mode) and hands it to a supervision task, which health checks it every
//! `interval` and publishes a [`Status`]. [`Supervisor::wait_healthy`] waits for the
//! first passing check. [`Supervisor::stop`] stops it (SIGTERM to its process group,
//! `stop_timeout`, SIGKILL; or the `stop` command). [`Supervisor::shutdown`] is for
//! the sidecar's own exit and honours `on_shutdown`.
//!
//! # Guarantees
//! - Run mode: the service leads its own process group; stopping it stops the group.
//!   `<data_dir>/<service>/service.pid` names the running process, its group, version
//!   and release directory while it runs, and only then.
//! - The service survives the sidecar: nothing kills it when the sidecar crashes or
//!   drops its `Supervisor`. A later `start` of the same version and release directory
//!   adopts it (no second copy); a `start` of another release stops it first.
//! - A crashed service is restarted after an exponential backoff (500ms doubling to
//!   30s, back to 500ms after it stayed healthy for 10s); its leftover group members
//!   are stopped first.
//!
//! # Assumptions
//! The service does not leave its process group (no `setsid`, no double fork), and a
//! start/stop service's `start` and `stop` commands are idempotent.
//!
//! # Cancellation safety
//! Dropping a `start`, `stop` or `shutdown` future part-way may leave the service
//! running without supervision; `stop` afterwards still stops it through the pid file.

mod backoff;
mod status;
mod task;

pub use status::{Started, Status, SupervisorError};

use crate::config::{OnShutdown, Output, RunMode, ServiceConfig};
use crate::host::child::ServiceProcess;
use crate::host::command::{self, CommandContext, ExitDescription};
use crate::host::logfile::LogFile;
use crate::host::pidfile::{self, PidRecord};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tracing::Instrument;

/// Time allowed to a start/stop service's `start` command.
pub const START_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// What the supervision task should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    /// Stop the service, then end.
    Stop,
    /// End, leaving the service running.
    Detach,
}

/// What the supervision task shares with the [`Supervisor`].
#[derive(Debug)]
struct Shared {
    service: Arc<ServiceConfig>,
    dir: PathBuf,
    log: LogFile,
    status: watch::Sender<Status>,
    diag: Mutex<Diag>,
    /// The release this process runs, when this supervises the sidecar itself.
    own: Option<String>,
}

/// Facts `wait_healthy` needs beyond the status.
#[derive(Debug, Default)]
struct Diag {
    exits: u64,
    last_exit: Option<ExitDescription>,
    last_error: Option<String>,
}

/// The running supervision task.
#[derive(Debug)]
struct Running {
    version: String,
    intent: oneshot::Sender<Intent>,
    task: tokio::task::JoinHandle<Result<(), SupervisorError>>,
}

/// Supervises one service. Cheap to clone; clones share the service. Dropping the last
/// clone ends supervision but leaves the service running (as a sidecar crash would).
#[derive(Debug, Clone)]
pub struct Supervisor {
    shared: Arc<Shared>,
    running: Arc<tokio::sync::Mutex<Option<Running>>>,
}

impl Supervisor {
    /// A supervisor for `service`, keeping its files in `<data_dir>/<name>`.
    pub fn new(service: Arc<ServiceConfig>, data_dir: &Path) -> Self {
        Self::with(service, data_dir, Status::Stopped, None)
    }

    /// The supervisor of the sidecar itself (the built-in `baton-sidecar` service):
    /// healthy for as long as this process runs, with its pid, running `version`.
    /// Nothing is started, stopped or reloaded: a handover replaces the process
    /// (see `crate::handover`).
    pub fn of_self(service: Arc<ServiceConfig>, data_dir: &Path, version: &str) -> Self {
        let healthy = Status::Healthy { pid: Some(std::process::id()), since: std::time::SystemTime::now() };
        Self::with(service, data_dir, healthy, Some(version.into()))
    }

    fn with(service: Arc<ServiceConfig>, data_dir: &Path, status: Status, own: Option<String>) -> Self {
        let dir = service.dir(data_dir);
        let shared = Shared {
            log: LogFile::in_dir(&dir),
            dir,
            service,
            status: watch::channel(status).0,
            diag: Mutex::default(),
            own,
        };
        Supervisor { shared: Arc::new(shared), running: Arc::default() }
    }

    /// The release this process runs, when this supervisor is the sidecar's own.
    pub fn own_release(&self) -> Option<&str> {
        self.shared.own.as_deref()
    }

    /// The service this supervisor runs.
    pub fn service(&self) -> &ServiceConfig {
        &self.shared.service
    }

    /// The status channel; the current value is always there.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.shared.status.subscribe()
    }

    /// Where the service's output goes with `output = "file"`.
    pub fn log_path(&self) -> &Path {
        self.shared.log.path()
    }

    /// Where the pid file of a run-mode service is.
    pub fn pid_path(&self) -> PathBuf {
        self.shared.dir.join(pidfile::FILE_NAME)
    }

    /// The release of this service that runs now, if any: the one this supervisor
    /// keeps up, or (run mode) a live process an earlier sidecar recorded in the pid
    /// file, which [`Supervisor::start`] of that release adopts. `None`: nothing of
    /// this service is known to run (start/stop mode cannot tell without supervising).
    pub async fn running_release(&self) -> Option<String> {
        if let Some(own) = &self.shared.own {
            return Some(own.clone());
        }
        if let Some(r) = self.running.lock().await.as_ref().filter(|r| !r.task.is_finished()) {
            return Some(r.version.clone());
        }
        match &self.shared.service.mode {
            RunMode::Run(_) => self.shared.live_record().map(|r| r.version),
            RunMode::StartStop { .. } => None,
        }
    }

    /// Starts `version` from `release_dir` and keeps it up (see the module docs); in run
    /// mode a live process of the same release recorded in the pid file is adopted.
    pub async fn start(&self, release_dir: &Path, version: &str) -> Result<Started, SupervisorError> {
        if let Some(own) = &self.shared.own {
            return match own == version {
                true => Ok(Started::Adopted { pid: std::process::id() }),
                false => Err(SupervisorError::AlreadyRunning { requested: version.into(), running: own.clone() }),
            };
        }
        let mut running = self.running.lock().await;
        self.start_locked(&mut running, release_dir, version, false).await
    }

    /// Whether a supervision task keeps the service up now.
    pub async fn is_supervising(&self) -> bool {
        self.shared.own.is_some() || self.running.lock().await.as_ref().is_some_and(|r| !r.task.is_finished())
    }

    /// `apply = "reload"`: the running service picks up `version` (already the active
    /// release) without a restart. Supervision of the old release ends (the process
    /// runs on), the service is told (the `reload` command runs in `release_dir` with
    /// the new version's environment, or the signal goes to its process), the pid file
    /// is rewritten to name the new release, and supervision starts again on the same
    /// process: it is `Starting` until a health check passes.
    ///
    /// A crash between the signal and the pid file leaves a record of the old release:
    /// the next sidecar restarts the service into the new one instead of adopting it.
    pub async fn reload(
        &self,
        release_dir: &Path,
        version: &str,
        how: &crate::config::Reload,
        timeout: Duration,
    ) -> Result<Started, SupervisorError> {
        let mut running = self.running.lock().await;
        let Some(r) = running.take().filter(|r| !r.task.is_finished()) else {
            return Err(SupervisorError::NothingToReload);
        };
        let _ = r.intent.send(Intent::Detach);
        r.task.await.map_err(|e| SupervisorError::Task(e.to_string()))??;
        let shared = &self.shared;
        let record = match &shared.service.mode {
            RunMode::Run(_) => Some(shared.live_record().ok_or(SupervisorError::NothingToReload)?),
            RunMode::StartStop { .. } => None,
        };
        match how {
            crate::config::Reload::Command(argv) => {
                shared.run_command("reload", argv, &shared.context(release_dir, version), timeout).await?;
            }
            crate::config::Reload::Signal(signal) => {
                let pid = record.as_ref().map(|r| r.pid).ok_or(SupervisorError::NothingToReload)?;
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), *signal)
                    .map_err(|source| SupervisorError::Signal { signal: signal.as_str().into(), pid, source })?;
            }
        }
        if let Some(record) = record {
            let path = self.pid_path();
            pidfile::write(&path, &record.reloaded(version, release_dir)).map_err(io_err("write", &path))?;
        }
        tracing::info!(service = %shared.service.name, version, "service reloaded");
        self.start_locked(&mut running, release_dir, version, true).await
    }

    async fn start_locked(
        &self,
        running: &mut Option<Running>,
        release_dir: &Path,
        version: &str,
        reloaded: bool,
    ) -> Result<Started, SupervisorError> {
        if let Some(r) = running.as_ref().filter(|r| !r.task.is_finished()) {
            return Err(SupervisorError::AlreadyRunning { requested: version.into(), running: r.version.clone() });
        }
        let shared = &self.shared;
        std::fs::create_dir_all(&shared.dir).map_err(io_err("create", &shared.dir))?;
        let ctx = shared.context(release_dir, version);
        *shared.diag.lock().unwrap_or_else(|e| e.into_inner()) = Diag::default();
        let launched = match &shared.service.mode {
            RunMode::Run(argv) => self.start_process(argv, &ctx, version).await,
            // A reloaded start/stop service runs already: only its health is watched.
            RunMode::StartStop { .. } if reloaded => Ok((Started::Spawned { pid: None }, None)),
            RunMode::StartStop { start, .. } => {
                let ran = shared.run_command("start", start, &ctx, START_COMMAND_TIMEOUT).await;
                ran.map(|()| (Started::Spawned { pid: None }, None))
            }
        };
        let (started, process) = launched.inspect_err(|_| {
            shared.status.send_replace(Status::Stopped);
        })?;
        let pid = process.as_ref().map(ServiceProcess::pid);
        shared.status.send_replace(Status::Starting { pid });
        tracing::info!(service = %shared.service.name, version, %started, "service started");
        let (intent, intent_rx) = oneshot::channel();
        let span = tracing::info_span!("supervise", service = %shared.service.name, version);
        let run = task::Run { shared: shared.clone(), ctx, version: version.into(), intent: intent_rx };
        let task = tokio::spawn(task::supervise(run, process).instrument(span));
        *running = Some(Running { version: version.into(), intent, task });
        Ok(started)
    }

    /// Adopts the recorded process when it runs this release, otherwise stops it and
    /// spawns `argv`.
    async fn start_process(
        &self,
        argv: &[String],
        ctx: &CommandContext,
        version: &str,
    ) -> Result<(Started, Option<ServiceProcess>), SupervisorError> {
        let shared = &self.shared;
        let pid_path = self.pid_path();
        if let Some(record) = shared.live_record() {
            if record.runs(&ctx.cwd, version) {
                tracing::info!(service = %shared.service.name, pid = record.pid, "adopting the running service");
                return Ok((Started::Adopted { pid: record.pid }, Some(ServiceProcess::adopt(&record))));
            }
            tracing::info!(service = %shared.service.name, pid = record.pid, old = %record.version, "stopping the other release");
            crate::host::child::stop_group(record.pgid, shared.service.stop_timeout.0, None).await;
        }
        pidfile::remove(&pid_path).map_err(io_err("remove", &pid_path))?;
        let process = shared.spawn(argv, ctx, version).await?;
        Ok((Started::Spawned { pid: Some(process.pid()) }, Some(process)))
    }

    /// Stops the service on purpose: no restart follows. Idempotent. Without a running
    /// supervision task, a live process named by the pid file is stopped (run mode) or
    /// the `stop` command runs (start/stop mode).
    pub async fn stop(&self) -> Result<(), SupervisorError> {
        if self.shared.own.is_some() {
            return Ok(());
        }
        let mut running = self.running.lock().await;
        if let Some(r) = running.take().filter(|r| !r.task.is_finished()) {
            let _ = r.intent.send(Intent::Stop);
            return r.task.await.map_err(|e| SupervisorError::Task(e.to_string()))?;
        }
        let shared = &self.shared;
        match &shared.service.mode {
            RunMode::Run(_) => shared.stop_recorded().await?,
            RunMode::StartStop { stop, .. } => {
                let ctx = CommandContext {
                    cwd: shared.dir.clone(),
                    env: shared.service.env.clone(),
                    user: shared.service.user.clone(),
                };
                std::fs::create_dir_all(&shared.dir).map_err(io_err("create", &shared.dir))?;
                shared.run_command("stop", stop, &ctx, shared.service.stop_timeout.0).await?;
            }
        }
        shared.status.send_replace(Status::Stopped);
        Ok(())
    }

    /// Waits until a health check passes. Fails when `deadline` passes first, when the
    /// service exits meanwhile (run mode) or when it is not running.
    pub async fn wait_healthy(&self, deadline: Duration) -> Result<(), SupervisorError> {
        let mut status = self.status();
        let exits_before = self.shared.diag().exits;
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let current = status.borrow_and_update().clone();
            let exited = self.shared.diag().exits > exits_before;
            match current {
                Status::Healthy { .. } => return Ok(()),
                Status::Stopped => return Err(SupervisorError::NotRunning),
                Status::Down { .. } => return Err(self.shared.exited()),
                _ if exited => return Err(self.shared.exited()),
                _ => {}
            }
            if tokio::time::timeout_at(until, status.changed()).await.is_err() {
                let last_error = self.shared.diag().last_error.clone();
                return Err(SupervisorError::HealthDeadline { deadline, last_error });
            }
        }
    }

    /// The sidecar is shutting down: with `on_shutdown = "keep"` the service is left
    /// running (its pid file stays, for the next sidecar to adopt) and the status keeps
    /// its last value; with `"stop"` it is stopped.
    pub async fn shutdown(&self) -> Result<(), SupervisorError> {
        if self.shared.service.on_shutdown == OnShutdown::Stop {
            return self.stop().await;
        }
        self.detach().await
    }

    /// Ends supervision and leaves the service running whatever `on_shutdown` says
    /// (its pid file stays, for the next sidecar to adopt): the sidecar hands over
    /// to its new image.
    pub async fn detach(&self) -> Result<(), SupervisorError> {
        if let Some(r) = self.running.lock().await.take() {
            let _ = r.intent.send(Intent::Detach);
            r.task.await.map_err(|e| SupervisorError::Task(e.to_string()))??;
        }
        tracing::info!(service = %self.shared.service.name, "left running for the next sidecar");
        Ok(())
    }
}

impl Shared {
    /// How the service's commands run for `version` from `release_dir`.
    fn context(&self, release_dir: &Path, version: &str) -> CommandContext {
        CommandContext {
            cwd: release_dir.into(),
            env: self.service.command_env(version, release_dir),
            user: self.service.user.clone(),
        }
    }

    fn diag(&self) -> std::sync::MutexGuard<'_, Diag> {
        self.diag.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn exited(&self) -> SupervisorError {
        let exit = self.diag().last_exit.unwrap_or(ExitDescription { code: None, signal: None });
        SupervisorError::Exited { code: exit.code, signal: exit.signal }
    }

    /// The service's stdout and stderr.
    fn output(&self) -> Result<(Stdio, Stdio), SupervisorError> {
        match self.service.output {
            Output::Inherit => Ok((Stdio::inherit(), Stdio::inherit())),
            Output::File => self.log.stdio().map_err(io_err("open", self.log.path())),
        }
    }

    /// Spawns `argv` in `ctx` and records it in the pid file; if the record cannot be
    /// written the process is stopped again (an unrecorded service could not be adopted).
    async fn spawn(
        &self,
        argv: &[String],
        ctx: &CommandContext,
        version: &str,
    ) -> Result<ServiceProcess, SupervisorError> {
        let mut process = ServiceProcess::spawn(argv, ctx, self.output()?).map_err(SupervisorError::Spawn)?;
        let path = self.dir.join(pidfile::FILE_NAME);
        if let Err(source) = pidfile::write(&path, &PidRecord::new(process.pid(), version, &ctx.cwd)) {
            process.stop(self.service.stop_timeout.0).await;
            return Err(SupervisorError::Io { what: "write", path, source });
        }
        process.release().await;
        Ok(process)
    }

    /// The pid file's record when it names a live process.
    fn live_record(&self) -> Option<PidRecord> {
        let path = self.dir.join(pidfile::FILE_NAME);
        match pidfile::read(&path) {
            Ok(record) => record.filter(PidRecord::is_alive),
            Err(err) => {
                tracing::warn!(service = %self.service.name, path = %path.display(), %err, "ignoring an unreadable pid file");
                None
            }
        }
    }

    /// Stops the process the pid file names, if it lives, and removes the file.
    async fn stop_recorded(&self) -> Result<(), SupervisorError> {
        if let Some(record) = self.live_record() {
            tracing::info!(service = %self.service.name, pid = record.pid, "stopping the recorded service process");
            crate::host::child::stop_group(record.pgid, self.service.stop_timeout.0, None).await;
        }
        let path = self.dir.join(pidfile::FILE_NAME);
        pidfile::remove(&path).map_err(io_err("remove", &path))
    }

    /// Runs a start/stop service's `start` or `stop` command, its output with the service's.
    async fn run_command(
        &self,
        name: &'static str,
        argv: &[String],
        ctx: &CommandContext,
        timeout: Duration,
    ) -> Result<(), SupervisorError> {
        let output = match self.service.output {
            Output::File => self.log.path().display().to_string(),
            Output::Inherit => "the sidecar's output".to_string(),
        };
        let result = command::run_with_output(argv, ctx, self.output()?, timeout).await;
        result.map_err(|source| SupervisorError::Command { name, command: argv.join(" "), source, output })
    }
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SupervisorError {
    let path = path.to_path_buf();
    move |source| SupervisorError::Io { what, path, source }
}
