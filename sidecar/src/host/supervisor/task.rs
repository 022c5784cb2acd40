//! The supervision task: health checks, log rotation, restarts after crashes, and the
//! end of supervision (stop or detach).

use super::backoff::Backoff;
use super::{Intent, Shared, Status, SupervisorError, io_err};
use crate::config::{Output, RunMode};
use crate::host::child::{ServiceProcess, stop_group};
use crate::host::command::{CommandContext, ExitDescription};
use crate::host::health::{Checker, HealthError};
use crate::host::pidfile;
use crate::host::process::group_alive;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::oneshot;
use tokio::time::{MissedTickBehavior, interval, sleep};

/// How often the log file's size is checked.
const ROTATE_EVERY: Duration = Duration::from_secs(1);

/// One supervision: a service started for one version.
#[derive(Debug)]
pub(super) struct Run {
    pub shared: Arc<Shared>,
    pub ctx: CommandContext,
    pub version: String,
    pub intent: oneshot::Receiver<Intent>,
}

/// What ended a stretch of running.
enum Event {
    Exited(ExitDescription),
    Told(Intent),
}

/// Supervises until told to stop or detach; `process` is `None` in start/stop mode.
pub(super) async fn supervise(run: Run, process: Option<ServiceProcess>) -> Result<(), SupervisorError> {
    match process {
        Some(process) => run.keep_up(process).await,
        None => run.watch().await,
    }
}

impl Run {
    /// Start/stop mode: nothing to restart, only health to watch.
    async fn watch(mut self) -> Result<(), SupervisorError> {
        let intent = tokio::select! {
            told = &mut self.intent => told.unwrap_or(Intent::Detach),
            never = checks(&self.shared, &self.ctx, None) => match never {},
        };
        if intent == Intent::Detach {
            return Ok(());
        }
        let RunMode::StartStop { stop, .. } = &self.shared.service.mode else { unreachable!("start/stop mode") };
        let result = self.shared.run_command("stop", stop, &self.ctx, self.shared.service.stop_timeout.0).await;
        self.shared.status.send_replace(Status::Stopped);
        result
    }

    /// Run mode: restarts the service whenever it exits on its own.
    async fn keep_up(mut self, mut process: ServiceProcess) -> Result<(), SupervisorError> {
        let mut backoff = Backoff::default();
        loop {
            let pid = Some(process.pid());
            let event = tokio::select! {
                exit = process.exited() => Event::Exited(exit),
                told = &mut self.intent => Event::Told(told.unwrap_or(Intent::Detach)),
                never = checks(&self.shared, &self.ctx, pid) => match never {},
            };
            match event {
                Event::Told(intent) => return self.finish(intent, Some(process)).await,
                Event::Exited(exit) => match self.restart(&process, exit, &mut backoff).await? {
                    Some(next) => process = next,
                    None => return Ok(()),
                },
            }
        }
    }

    /// Ends supervision as told: stops the service, or leaves it running.
    async fn finish(self, intent: Intent, process: Option<ServiceProcess>) -> Result<(), SupervisorError> {
        if intent == Intent::Detach {
            return Ok(());
        }
        if let Some(mut process) = process {
            let stopped = process.stop(self.shared.service.stop_timeout.0).await;
            tracing::info!(pid = process.pid(), ?stopped, "service stopped");
        }
        let path = self.shared.dir.join(pidfile::FILE_NAME);
        let removed = pidfile::remove(&path).map_err(io_err("remove", &path));
        self.shared.status.send_replace(Status::Stopped);
        removed
    }

    /// After `process` exited on its own: clears up, waits out the backoff and spawns
    /// it again. `None` when told to stop or detach meanwhile.
    async fn restart(
        &mut self,
        process: &ServiceProcess,
        exit: ExitDescription,
        backoff: &mut Backoff,
    ) -> Result<Option<ServiceProcess>, SupervisorError> {
        let shared = &self.shared;
        let healthy_for = match &*shared.status.borrow() {
            Status::Healthy { since, .. } => since.elapsed().ok(),
            _ => None,
        };
        {
            let mut diag = shared.diag();
            diag.exits += 1;
            diag.last_exit = Some(exit);
        }
        tracing::warn!(pid = process.pid(), %exit, "service exited");
        if group_alive(process.pgid()) {
            tracing::warn!(pgid = process.pgid(), "stopping what the service left in its process group");
            stop_group(process.pgid(), shared.service.stop_timeout.0, None).await;
        }
        let pid_path = shared.dir.join(pidfile::FILE_NAME);
        pidfile::remove(&pid_path).map_err(io_err("remove", &pid_path))?;
        let mut delay = backoff.after_exit(healthy_for);
        let mut reason = exit.to_string();
        loop {
            shared.status.send_replace(Status::Down { reason: reason.clone(), restart_in: delay });
            tokio::select! {
                () = sleep(delay) => {}
                told = &mut self.intent => {
                    if told.unwrap_or(Intent::Detach) == Intent::Stop {
                        shared.status.send_replace(Status::Stopped);
                    }
                    return Ok(None);
                }
            }
            match self.spawn().await {
                Ok(process) => {
                    shared.status.send_replace(Status::Starting { pid: Some(process.pid()) });
                    tracing::info!(pid = process.pid(), "service restarted");
                    return Ok(Some(process));
                }
                Err(err) => {
                    tracing::warn!(%err, "failed to restart the service");
                    reason = err.to_string();
                    delay = backoff.next();
                }
            }
        }
    }

    /// Spawns the run command again.
    async fn spawn(&self) -> Result<ServiceProcess, SupervisorError> {
        let RunMode::Run(argv) = &self.shared.service.mode else { unreachable!("run mode") };
        self.shared.spawn(argv, &self.ctx, &self.version).await
    }
}

/// Health checks every `interval` (the first at once) and log rotation, forever.
async fn checks(shared: &Shared, ctx: &CommandContext, pid: Option<u32>) -> Infallible {
    let health = &shared.service.health;
    let checker = Checker::new(health.check.clone(), health.timeout);
    let mut ticker = interval(health.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut rotation = interval(ROTATE_EVERY);
    loop {
        tokio::select! {
            _ = ticker.tick() => shared.record_health(pid, checker.check(ctx).await),
            _ = rotation.tick(), if shared.service.output == Output::File => {
                if let Err(err) = shared.log.rotate_if_needed() {
                    tracing::warn!(path = %shared.log.path().display(), %err, "failed to rotate the service log");
                }
            }
        }
    }
}

impl Shared {
    /// Publishes the outcome of one health check.
    fn record_health(&self, pid: Option<u32>, result: Result<(), HealthError>) {
        match result {
            Ok(()) => {
                self.status.send_if_modified(|status| match status {
                    Status::Healthy { .. } => false,
                    _ => {
                        tracing::info!("service healthy");
                        *status = Status::Healthy { pid, since: SystemTime::now() };
                        true
                    }
                });
            }
            Err(err) => {
                let reason = err.to_string();
                self.diag().last_error = Some(reason.clone());
                self.status.send_if_modified(|status| match status {
                    Status::Healthy { .. } => {
                        tracing::warn!(%reason, "service unhealthy");
                        *status = Status::Unhealthy { pid, reason };
                        true
                    }
                    Status::Unhealthy { reason: old, .. } if *old != reason => {
                        *old = reason;
                        true
                    }
                    _ => false,
                });
            }
        }
    }
}
