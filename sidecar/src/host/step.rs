//! The local half of an upgrade step (SPEC step 5) and of its undoing (step 7).
//!
//! prepare hook → drain hook → stop → switch the active release → start (or, with
//! `apply = "reload"`, switch and reload the running service) → health check until it
//! passes or the health deadline passes → stay healthy for the bake time → undrain
//! hook → verify hook.
//! Nothing here talks to ZooKeeper: the fence before and the commit after do.

use crate::config::{Apply, Hook, ServiceConfig};
use crate::host::hooks;
use crate::host::releases::ReleaseStore;
use crate::host::supervisor::{Status, Supervisor};
use std::path::PathBuf;
use std::time::Duration;
use znode_schema::Policy;

/// Why a step failed; the message becomes the failure's cause in ZooKeeper.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The prepare hook failed: nothing was touched.
    #[error("prepare hook failed: {0}")]
    Prepare(String),
    /// The drain hook failed.
    #[error("drain hook failed: {0}")]
    Drain(String),
    /// The old release would not stop.
    #[error("failed to stop the service: {0}")]
    Stop(String),
    /// The release could not be switched.
    #[error("failed to switch the active release to {version}: {reason}")]
    Switch { version: String, reason: String },
    /// The release could not be started.
    #[error("failed to start {version}: {reason}")]
    Start { version: String, reason: String },
    /// The running service could not be told to reload.
    #[error("failed to reload the service into {version}: {reason}")]
    Reload { version: String, reason: String },
    /// The health check did not pass before the deadline (or the process exited).
    #[error("{version} did not become healthy: {reason}")]
    Health { version: String, reason: String },
    /// It became unhealthy during the bake time.
    #[error("{version} became unhealthy while baking: {reason}")]
    Bake { version: String, reason: String },
    /// The undrain hook failed.
    #[error("undrain hook failed: {0}")]
    Undrain(String),
    /// The verify hook failed (after undrain).
    #[error("verify hook failed: {0}")]
    Verify(String),
    /// The sidecar's new image did not take over (the old one runs on, untouched).
    #[error("the new sidecar image did not take over: {0}")]
    Handover(String),
}

impl StepError {
    /// Whether the step touched the host before failing (everything but prepare and a
    /// sidecar handover that never reached `go`).
    pub fn touched(&self) -> bool {
        !matches!(self, StepError::Prepare(_) | StepError::Handover(_))
    }

    /// Whether the host was undrained when the step failed (a failed verify): going
    /// back drains it first.
    pub fn undrained(&self) -> bool {
        matches!(self, StepError::Verify(_))
    }
}

/// Which way a hook runs: the step forward, or going back after it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The upgrade step.
    Step,
    /// Going back to the old release.
    Rollback,
}

/// The parts of an agent a step uses.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    /// This host's id.
    pub host: &'a str,
    /// The service's config.
    pub cfg: &'a ServiceConfig,
    /// Its supervisor.
    pub supervisor: &'a Supervisor,
    /// Its releases.
    pub store: &'a ReleaseStore,
}

/// What a step is about, for the hooks' environment.
#[derive(Debug, Clone, Copy)]
pub struct Move<'a> {
    /// The version before the step (none on a host that ran nothing).
    pub from: Option<&'a str>,
    /// The version the step moves to.
    pub to: &'a str,
    /// Forward or back.
    pub phase: Phase,
}

impl Parts<'_> {
    /// The active release and its directory: hooks run there, with its environment.
    fn active(&self) -> (String, PathBuf) {
        match self.store.state().ok().and_then(|s| s.active) {
            Some(v) => {
                let dir = self.store.release_dir(&v);
                (v, dir)
            }
            None => (String::new(), self.store.root().to_path_buf()),
        }
    }

    /// Runs hook `name` if configured: in `dir` (the active release's by default),
    /// with the service's environment and what the step is about.
    async fn hook(&self, name: &str, hook: &Option<Hook>, m: Move<'_>, dir: Option<PathBuf>) -> Result<(), String> {
        let Some(hook) = hook else { return Ok(()) };
        let (version, active_dir) = self.active();
        let dir = dir.unwrap_or(active_dir);
        let mut env = self.cfg.command_env(&version, &dir);
        env.insert("BATON_HOST".into(), self.host.into());
        env.insert("BATON_HOOK".into(), name.into());
        env.insert("BATON_FROM_VERSION".into(), m.from.unwrap_or_default().into());
        env.insert("BATON_TO_VERSION".into(), m.to.into());
        let from_dir = m.from.map(|v| self.store.release_dir(v).display().to_string()).unwrap_or_default();
        env.insert("BATON_FROM_RELEASE_DIR".into(), from_dir);
        env.insert("BATON_TO_RELEASE_DIR".into(), self.store.release_dir(m.to).display().to_string());
        let phase = match m.phase {
            Phase::Step => "step",
            Phase::Rollback => "rollback",
        };
        env.insert("BATON_PHASE".into(), phase.into());
        hooks::run_hook(name, &hook.command, &dir, &env, hook.timeout).await.map_err(|e| e.to_string())
    }

    /// Checks the new release before anything is touched (the prepare hook), in its
    /// own directory.
    pub async fn prepare(&self, m: Move<'_>) -> Result<(), StepError> {
        let dir = Some(self.store.release_dir(m.to));
        self.hook("prepare", &self.cfg.hooks.prepare, m, dir).await.map_err(StepError::Prepare)
    }

    /// Drains the host (the drain hook), if configured.
    pub async fn drain(&self, m: Move<'_>) -> Result<(), StepError> {
        self.hook("drain", &self.cfg.hooks.drain, m, None).await.map_err(StepError::Drain)
    }

    /// Undrains the host (the undrain hook), if configured.
    pub async fn undrain(&self, m: Move<'_>) -> Result<(), StepError> {
        self.hook("undrain", &self.cfg.hooks.undrain, m, None).await.map_err(StepError::Undrain)
    }

    /// Checks the host once it serves again (the verify hook), if configured.
    pub async fn verify(&self, m: Move<'_>) -> Result<(), StepError> {
        self.hook("verify", &self.cfg.hooks.verify, m, None).await.map_err(StepError::Verify)
    }

    /// Puts `version` to work: with `apply = "restart"` stops the running release,
    /// activates `version` and starts it; with `apply = "reload"` activates it and
    /// tells the running service to reload (started instead when nothing runs).
    /// Then waits for it to pass its health check within `deadline`.
    pub async fn switch_to(&self, version: &str, deadline: Duration) -> Result<(), StepError> {
        let reload = match &self.cfg.apply {
            Apply::Reload(how) if self.supervisor.is_supervising().await => Some(how),
            _ => None,
        };
        if reload.is_none() {
            self.supervisor.stop().await.map_err(|e| StepError::Stop(e.to_string()))?;
        }
        self.store
            .activate(version)
            .map_err(|e| StepError::Switch { version: version.into(), reason: e.to_string() })?;
        let dir = self.store.release_dir(version);
        match reload {
            Some(how) => {
                self.supervisor
                    .reload(&dir, version, how, self.cfg.stop_timeout.0)
                    .await
                    .map_err(|e| StepError::Reload { version: version.into(), reason: e.to_string() })?;
            }
            None => {
                self.supervisor
                    .start(&dir, version)
                    .await
                    .map_err(|e| StepError::Start { version: version.into(), reason: e.to_string() })?;
            }
        }
        self.supervisor
            .wait_healthy(deadline)
            .await
            .map_err(|e| StepError::Health { version: version.into(), reason: e.to_string() })
    }

    /// Stays healthy for `bake`; fails at the first status that is not healthy.
    pub async fn bake(&self, version: &str, bake: Duration) -> Result<(), StepError> {
        let mut status = self.supervisor.status();
        let watch = async {
            loop {
                let current = status.borrow_and_update().clone();
                if !matches!(current, Status::Healthy { .. }) {
                    return StepError::Bake { version: version.into(), reason: describe(&current) };
                }
                if status.changed().await.is_err() {
                    return StepError::Bake { version: version.into(), reason: "supervisor stopped".into() };
                }
            }
        };
        tokio::select! {
            err = watch => Err(err),
            _ = tokio::time::sleep(bake) => Ok(()),
        }
    }

    /// The whole step from `from` to `to` under `policy`: prepare, drain, switch
    /// (restart or reload), health, bake, undrain, verify. On error the host may be
    /// drained and the service stopped or unhealthy: the caller reverts with
    /// [`Parts::revert`] (nothing to revert after a failed prepare, see
    /// [`StepError::touched`]).
    pub async fn upgrade(&self, from: Option<&str>, to: &str, policy: &Policy) -> Result<(), StepError> {
        let m = Move { from, to, phase: Phase::Step };
        self.prepare(m).await?;
        self.drain(m).await?;
        self.switch_to(to, policy.health_deadline.0).await?;
        self.bake(to, policy.bake.0).await?;
        self.undrain(m).await?;
        self.verify(m).await
    }

    /// Goes back to `from` after a failed step towards `to`: drain first when the
    /// host was undrained (a failed verify), switch back (restart or reload), check
    /// it, undrain. `from` of `None` (the host ran nothing before) stops the service.
    pub async fn revert(&self, from: Option<&str>, to: &str, policy: &Policy, drain: bool) -> Result<(), StepError> {
        let m = Move { from, to, phase: Phase::Rollback };
        if drain {
            if let Err(err) = self.drain(m).await {
                tracing::error!(error = %err, "drain before going back failed; going back anyway");
            }
        }
        match from {
            Some(v) => self.switch_to(v, policy.health_deadline.0).await?,
            None => self.supervisor.stop().await.map_err(|e| StepError::Stop(e.to_string()))?,
        }
        self.undrain(m).await
    }
}

/// A status as a cause for logs and ZooKeeper.
pub fn describe(status: &Status) -> String {
    match status {
        Status::Stopped => "the service stopped".into(),
        Status::Starting { .. } => "the service is restarting".into(),
        Status::Healthy { .. } => "healthy".into(),
        Status::Unhealthy { reason, .. } => format!("health check failed: {reason}"),
        Status::Down { reason, .. } => format!("the service exited: {reason}"),
    }
}
