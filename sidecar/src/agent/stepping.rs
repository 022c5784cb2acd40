//! Transitions of a fenced step: the local halves, their commits, and recovery of a
//! step interrupted by a crash or a session loss.
//!
//! The local halves never touch ZooKeeper and the commits are separate states, so a
//! ZooKeeper error while committing retries the commit only, never the step, and a
//! session loss lets the local half run to its end.

use super::lifecycle::{Lifecycle, Step};
use super::{Agent, Ctx};
use crate::coord::commit::{self, StepEnd};
use crate::coord::zk::ZkError;
use crate::host::step::{Move, Phase, StepError};
use znode_schema::{DeployName, OnFailure, OnHalt, Policy, Upgrading};

impl Agent {
    /// Runs a local state to its end (no ZooKeeper call).
    pub(super) async fn local(&self, state: Lifecycle) -> Lifecycle {
        match state {
            Lifecycle::Upgrading(step) => {
                if let Some(image) = self.itself() {
                    return self.hand_over(image, step).await;
                }
                match self.parts().upgrade(step.from.as_deref(), &step.to, &step.policy).await {
                    Ok(()) => Lifecycle::Upgraded(step),
                    Err(err) => self.failed(step, err),
                }
            }
            Lifecycle::Verifying(step) => match self.verify(&step).await {
                Ok(()) => Lifecycle::Upgraded(step),
                Err(err) => self.failed(step, err),
            },
            Lifecycle::RollingBack { step, cause, drain } => {
                if let Err(err) = self.parts().revert(step.from.as_deref(), &step.to, &step.policy, drain).await {
                    tracing::error!(error = %err, "rollback of the failed step failed too");
                }
                Lifecycle::Reverted { step, cause }
            }
            Lifecycle::Undoing(step) => {
                self.undo_locally(&step).await;
                Lifecycle::Undone(step)
            }
            other => other,
        }
    }

    /// Where a failed step goes: nothing to undo after a failed prepare (the service
    /// was not touched); the new release kept under `on_failure = "stay"`; otherwise
    /// back to the old release.
    pub(super) fn failed(&self, step: Step, err: StepError) -> Lifecycle {
        let cause = err.to_string();
        if !err.touched() {
            tracing::error!(error = %err, to = %step.to, "upgrade step failed before touching the service");
            return Lifecycle::Reverted { step, cause };
        }
        if step.policy.on_failure == OnFailure::Stay {
            tracing::error!(error = %err, to = %step.to, "upgrade step failed; on_failure = stay: keeping the new release");
            return Lifecycle::Stayed { step, cause };
        }
        tracing::error!(error = %err, to = %step.to, "upgrade step failed; rolling back");
        Lifecycle::RollingBack { step, cause, drain: err.undrained() }
    }

    /// The rest of an interrupted step whose new release is active: adopt it (or
    /// start it if it died with the sidecar), check its health within the deadline,
    /// bake for the full bake time (how much of it passed before the interruption is
    /// not known), undrain.
    async fn verify(&self, step: &Step) -> Result<(), StepError> {
        if self.itself().is_some() {
            return self.verify_itself(step).await;
        }
        self.keep(&step.to).await.map_err(|e| StepError::Start { version: step.to.clone(), reason: e.to_string() })?;
        self.supervisor
            .wait_healthy(step.policy.health_deadline.0)
            .await
            .map_err(|e| StepError::Health { version: step.to.clone(), reason: e.to_string() })?;
        self.parts().bake(&step.to, step.policy.bake.0).await?;
        let m = Move { from: step.from.as_deref(), to: &step.to, phase: Phase::Step };
        self.parts().undrain(m).await?;
        self.parts().verify(m).await
    }

    /// Goes back to `from` after an interrupted step whose new release is not active.
    /// When `from` still runs (the step was interrupted before it stopped the service)
    /// the process is adopted, not restarted, and only undrained (hooks are idempotent).
    async fn undo_locally(&self, step: &Step) {
        if self.itself().is_some() {
            // The old image runs; nothing was switched.
            return;
        }
        let back = step.from.clone().filter(|v| self.store.has(v));
        let runs = self.supervisor.running_release().await;
        if back.is_some() && runs == back {
            let v = back.clone().unwrap_or_default();
            if let Err(err) = self.keep(&v).await {
                tracing::error!(error = %err, "failed to adopt the old release");
            }
            if self.supervisor.wait_healthy(step.policy.health_deadline.0).await.is_ok() {
                let m = Move { from: step.from.as_deref(), to: &step.to, phase: Phase::Rollback };
                if let Err(err) = self.parts().undrain(m).await {
                    tracing::error!(error = %err, "undrain after the interrupted step failed");
                }
                return;
            }
        }
        if let Err(err) = self.parts().revert(back.as_deref(), &step.to, &step.policy, false).await {
            tracing::error!(error = %err, "undoing the interrupted step failed");
        }
    }

    /// Commits a successful step.
    pub(super) async fn upgraded(&self, c: &mut Ctx, step: Step) -> Result<Lifecycle, ZkError> {
        if self.itself().is_some() {
            self.activate_itself(&step.to);
        }
        let cur = self.registration(&c.s, &step.to, None);
        let end = StepEnd {
            service: &self.cfg.name,
            entry: &step.entry,
            ticket: step.ticket.as_ref(),
            register: cur.as_ref(),
        };
        commit::success(&c.s, &end, &step.to, &step.policy).await?;
        self.step_ended("upgraded");
        if let Some(image) = self.itself() {
            crate::handover::forget_failure(image.data_dir());
            image.took_over().await;
        }
        c.reg.assume(cur);
        tracing::info!(version = %step.to, "host upgraded");
        self.prune_releases();
        Ok(Lifecycle::Completing { entry: step.entry, version: step.to })
    }

    /// Commits a failed step: counted on the deploy entry, maybe halting it.
    pub(super) async fn reverted(&self, c: &mut Ctx, step: Step, cause: String) -> Result<Lifecycle, ZkError> {
        self.count_failure(c, step, cause, false).await
    }

    /// Commits a failed step that keeps the new release (`on_failure = "stay"`):
    /// registered at the new version if it is healthy, the failure counted and the
    /// rollout halted whatever `max_failures` says (the release cannot be undone).
    pub(super) async fn stayed(&self, c: &mut Ctx, step: Step, cause: String) -> Result<Lifecycle, ZkError> {
        self.count_failure(c, step, cause, true).await
    }

    /// The failure commit of [`Agent::reverted`] (back on the old release) and
    /// [`Agent::stayed`] (`stay`: on the new one).
    async fn count_failure(&self, c: &mut Ctx, step: Step, cause: String, stay: bool) -> Result<Lifecycle, ZkError> {
        let runs = match self.supervisor.own_release() {
            Some(own) => Some(own),
            None if stay => Some(step.to.as_str()),
            None => step.from.as_deref(),
        };
        let cur = runs.and_then(|v| self.registration(&c.s, v, None));
        let end = StepEnd {
            service: &self.cfg.name,
            entry: &step.entry,
            ticket: step.ticket.as_ref(),
            register: cur.as_ref(),
        };
        let cause = match stay {
            true => format!(
                "{cause}; release {} cannot be undone (on_failure = stay): {} keeps it; fix forward, then resume or stage a new release",
                step.to, c.s.host
            ),
            false => cause,
        };
        let f = commit::Failed {
            version: &step.to,
            max_failures: if stay { 0 } else { step.policy.max_failures },
            cause: &cause,
            canary: step.policy.canary,
            roll_back_to: step.from.as_deref().filter(|_| !stay && step.policy.on_halt == OnHalt::Rollback),
        };
        let state = commit::failure(&c.s, &end, f).await?;
        self.step_ended("failed");
        if let Some(image) = self.itself() {
            crate::handover::forget_failure(image.data_dir());
        }
        c.reg.assume(cur);
        let state = state.map_or("unknown".to_string(), |s| s.to_string());
        tracing::warn!(%state, keeps_the_new_release = stay, "failure counted on the rollout");
        Ok(Lifecycle::Completing { entry: step.entry, version: step.to })
    }

    /// Commits an undone step: marker dropped, not counted; the host queues again.
    pub(super) async fn undone(&self, c: &mut Ctx, step: Step) -> Result<Lifecycle, ZkError> {
        let cur = self.active().and_then(|v| self.registration(&c.s, &v, None));
        let end = StepEnd {
            service: &self.cfg.name,
            entry: &step.entry,
            ticket: step.ticket.as_ref(),
            register: cur.as_ref(),
        };
        let detail = "step interrupted (sidecar restart or session loss); undone, will queue again".to_string();
        commit::undo(&c.s, &end, Some(&step.to), detail).await?;
        self.step_ended("undone");
        c.reg.assume(cur);
        Ok(Lifecycle::Completing { entry: step.entry, version: step.to })
    }

    /// Decides what an interrupted step needs: finished (its new release is active
    /// here: adopt it and verify) or undone (otherwise).
    pub(super) async fn recover(
        &self,
        c: &mut Ctx,
        entry: DeployName,
        marker: Upgrading,
    ) -> Result<Lifecycle, ZkError> {
        let (staged, _) = self.staging(&c.s).await?;
        let policy = staged.filter(|st| st.version == marker.to).map(|st| st.policy).unwrap_or_else(Policy::default);
        // An unreadable marker says nothing of the step: undo it by keeping what is active.
        let from = if marker.to.is_empty() { self.active() } else { marker.from.clone() };
        // The ticket of the interrupted step, taken over with the session: the commit drops it.
        let ticket = crate::coord::queue::mine(&c.s, &self.cfg.name).await?;
        let step = Step { entry, from, to: marker.to.clone(), policy, ticket };
        if let Some(image) = self.itself() {
            return Ok(self.recover_itself(image, step, &marker));
        }
        if !marker.to.is_empty() && self.store.has(&marker.to) && self.active().as_deref() == Some(marker.to.as_str()) {
            tracing::info!(version = %marker.to, "the new release is active: finishing the interrupted step");
            return Ok(Lifecycle::Verifying(step));
        }
        let was = marker.from.as_deref().unwrap_or("nothing");
        tracing::warn!(from = was, to = %marker.to, "the new release is not active: undoing the interrupted step");
        Ok(Lifecycle::Undoing(step))
    }
}
