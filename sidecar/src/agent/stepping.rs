//! Transitions of a fenced step: the local step, its commit, and recovery of a
//! step interrupted by a crash or a session loss.
//!
//! The local half and the commit are separate states so that a ZooKeeper error
//! while committing retries the commit only, never the step itself.

use super::Agent;
use crate::commit::{self, StepEnd};
use crate::lifecycle::Lifecycle;
use crate::session::Session;
use crate::zk::ZkError;
use std::time::Duration;
use znode_schema::{DeployName, Staging, TicketName};

impl Agent {
    /// The local step; never touches ZooKeeper.
    pub(super) async fn upgrading(
        &mut self,
        entry: DeployName,
        from: Option<String>,
        staging: Box<Staging>,
        ticket: TicketName,
    ) -> Lifecycle {
        match self.parts().upgrade(&staging.version, &staging.policy).await {
            Ok(()) => {
                self.running = Some(staging.version.clone());
                Lifecycle::Upgraded { entry, staging, ticket }
            }
            Err(err) => {
                tracing::error!(service = %self.cfg.name, error = %err, "upgrade step failed; rolling back");
                Lifecycle::RollingBack { entry, from, staging, ticket, cause: err.to_string() }
            }
        }
    }

    /// Commits a successful step, then completes the rollout if it is done.
    pub(super) async fn upgraded(
        &mut self,
        s: &Session,
        entry: DeployName,
        staging: Box<Staging>,
        ticket: TicketName,
    ) -> Result<Lifecycle, ZkError> {
        let cur = self.registration(s, &staging.version);
        let end = StepEnd { service: &self.cfg.name, entry: &entry, ticket: Some(&ticket), register: cur.as_ref() };
        commit::success(s, &end, &staging.version).await?;
        self.reg.assume(cur);
        tracing::info!(service = %self.cfg.name, version = %staging.version, "host upgraded");
        self.prune_releases();
        commit::complete_if_done(s, &staging, &entry).await?;
        Ok(Lifecycle::Idle)
    }

    /// Goes back to the previous release locally; never touches ZooKeeper.
    pub(super) async fn rolling_back(
        &mut self,
        entry: DeployName,
        from: Option<String>,
        staging: Box<Staging>,
        ticket: TicketName,
        cause: String,
    ) -> Lifecycle {
        if let Err(err) = self.parts().revert(from.as_deref(), &staging.policy).await {
            tracing::error!(service = %self.cfg.name, error = %err, "rollback of the failed step failed too");
        }
        self.running = from.clone();
        self.failed = Some((staging.version.clone(), staging.staged_at.clone()));
        Lifecycle::Reverted { entry, from, staging, ticket, cause }
    }

    /// Commits a failed step: counted on the deploy entry, maybe halting it.
    pub(super) async fn reverted(
        &mut self,
        s: &Session,
        entry: DeployName,
        from: Option<String>,
        staging: Box<Staging>,
        ticket: TicketName,
        cause: String,
    ) -> Result<Lifecycle, ZkError> {
        let cur = from.as_deref().and_then(|v| self.registration(s, v));
        let end = StepEnd { service: &self.cfg.name, entry: &entry, ticket: Some(&ticket), register: cur.as_ref() };
        let state = commit::failure(s, &end, &staging, &cause).await?;
        self.reg.assume(cur);
        tracing::warn!(service = %self.cfg.name, ?state, "failure counted on the rollout");
        Ok(Lifecycle::Idle)
    }

    pub(super) async fn recover(
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
        } else if let Err(err) = self.parts().undrain().await {
            // The old release still runs, but the step may have drained the host
            // before it was interrupted: undrain (hooks must be idempotent).
            tracing::error!(service = %self.cfg.name, error = %err, "undrain after the interrupted step failed");
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
