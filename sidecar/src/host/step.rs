//! The local half of an upgrade step (SPEC step 5) and of its undoing (step 7).
//!
//! drain hook → stop → switch the active release → start → health check until it
//! passes or the health deadline passes → stay healthy for the bake time → undrain.
//! Nothing here talks to ZooKeeper: the fence before and the commit after do.

use crate::config::ServiceConfig;
use crate::host::hooks;
use crate::host::releases::ReleaseStore;
use crate::host::supervisor::{Status, Supervisor};
use std::path::PathBuf;
use std::time::Duration;
use znode_schema::Policy;

/// Why a step failed; the message becomes the failure's cause in ZooKeeper.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
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
    /// The health check did not pass before the deadline (or the process exited).
    #[error("{version} did not become healthy: {reason}")]
    Health { version: String, reason: String },
    /// It became unhealthy during the bake time.
    #[error("{version} became unhealthy while baking: {reason}")]
    Bake { version: String, reason: String },
    /// The undrain hook failed.
    #[error("undrain hook failed: {0}")]
    Undrain(String),
}

/// The parts of an agent a step uses.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    /// The service's config.
    pub cfg: &'a ServiceConfig,
    /// Its supervisor.
    pub supervisor: &'a Supervisor,
    /// Its releases.
    pub store: &'a ReleaseStore,
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

    async fn hook(&self, name: &str, cmd: &Option<Vec<String>>) -> Result<(), String> {
        let Some(cmd) = cmd else { return Ok(()) };
        let (version, dir) = self.active();
        let env = self.cfg.command_env(&version, &dir);
        hooks::run_hook(name, cmd, &dir, &env, self.cfg.hooks.timeout).await.map_err(|e| e.to_string())
    }

    /// Drains the host (the drain hook), if configured.
    pub async fn drain(&self) -> Result<(), StepError> {
        self.hook("drain", &self.cfg.hooks.drain).await.map_err(StepError::Drain)
    }

    /// Undrains the host (the undrain hook), if configured.
    pub async fn undrain(&self) -> Result<(), StepError> {
        self.hook("undrain", &self.cfg.hooks.undrain).await.map_err(StepError::Undrain)
    }

    /// Stops the running release, activates `version` and starts it, then waits for
    /// it to pass its health check within `deadline`.
    pub async fn switch_to(&self, version: &str, deadline: Duration) -> Result<(), StepError> {
        self.supervisor.stop().await.map_err(|e| StepError::Stop(e.to_string()))?;
        self.store
            .activate(version)
            .map_err(|e| StepError::Switch { version: version.into(), reason: e.to_string() })?;
        let dir = self.store.release_dir(version);
        self.supervisor
            .start(&dir, version)
            .await
            .map_err(|e| StepError::Start { version: version.into(), reason: e.to_string() })?;
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

    /// The whole step towards `to` under `policy`. On error the host may be drained
    /// and the service stopped or unhealthy: the caller reverts with [`Parts::revert`].
    pub async fn upgrade(&self, to: &str, policy: &Policy) -> Result<(), StepError> {
        self.drain().await?;
        self.switch_to(to, policy.health_deadline.0).await?;
        self.bake(to, policy.bake.0).await?;
        self.undrain().await
    }

    /// Goes back to `from` after a failed step: start it, check it, undrain.
    /// `from` of `None` (the host ran nothing before) stops the service.
    pub async fn revert(&self, from: Option<&str>, policy: &Policy) -> Result<(), StepError> {
        match from {
            Some(v) => self.switch_to(v, policy.health_deadline.0).await?,
            None => self.supervisor.stop().await.map_err(|e| StepError::Stop(e.to_string()))?,
        }
        self.undrain().await
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
