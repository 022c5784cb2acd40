//! The transitions of the built-in service `baton-sidecar`, the sidecar itself: its
//! step is a handover to the new image (see [`crate::handover`]); its boot registers
//! the release this process runs; its recovery knows which image runs.

use super::lifecycle::{Lifecycle, Step};
use super::{Agent, Ctx};
use crate::coord::deploys;
use crate::coord::zk::ZkError;
use crate::handover::{self, Offer, SelfImage};
use crate::host::step::StepError;
use std::time::Duration;
use tokio::sync::watch;
use znode_schema::Upgrading;

/// Margin on top of the health deadline and the bake for the new image to say `done`.
const TAKE_OVER_MARGIN: Duration = Duration::from_secs(10);

/// The health deadline of a boot handover (no rollout policy applies).
const BOOT_DEADLINE: Duration = Duration::from_secs(60);

impl Agent {
    /// The step of the sidecar itself: start the new image and, once it is ready,
    /// offer it to the daemon, which stops the agents and hands over (this task ends
    /// there). A new image that does not come up fails the step with nothing touched.
    pub(super) async fn hand_over(&self, image: &SelfImage, step: Step) -> Lifecycle {
        let within = step.policy.health_deadline.0 + step.policy.bake.0 + TAKE_OVER_MARGIN;
        let why = self.offer_successor(image, &step.to, step.policy.health_deadline.0, within).await;
        self.failed(step, StepError::Handover(why))
    }

    /// Starts release `version`'s binary as the new image and, once it is ready
    /// (within `deadline`), offers it to the daemon, which ends this task as it hands
    /// over (`within`: the new image's time to say `done`). Returns only why the new
    /// image did not come up; nothing was touched then.
    async fn offer_successor(&self, image: &SelfImage, version: &str, deadline: Duration, within: Duration) -> String {
        let started = match handover::binary_in(&self.store.release_dir(version)) {
            None => Err(format!("release {version} holds no sidecar binary (sidecar, bin/sidecar or one file)")),
            Some(binary) => handover::start_successor(image.data_dir(), &binary, version, deadline).await,
        };
        match started {
            Ok(successor) => {
                tracing::info!(pid = successor.pid, %version, "the new sidecar image is ready");
                image.offer(Offer { successor, within });
                std::future::pending::<()>().await;
                unreachable!("the daemon ends the sidecar's agent when it hands over")
            }
            Err(why) => why,
        }
    }

    /// The rest of the step in the new image: it runs already and took over; it stays
    /// up for the bake time. The release is activated by the commit.
    pub(super) async fn verify_itself(&self, step: &Step) -> Result<(), StepError> {
        self.parts().bake(&step.to, step.policy.bake.0).await
    }

    /// Recovery of the sidecar's own step: finished when this image is the new
    /// release; otherwise undone, or counted as failed when a handover to it failed
    /// here (recorded by the old image before it started again).
    pub(super) fn recover_itself(&self, image: &SelfImage, step: Step, marker: &Upgrading) -> Lifecycle {
        if marker.to == image.own() {
            tracing::info!(version = %marker.to, "this image is the new sidecar release: finishing the step");
            return Lifecycle::Verifying(step);
        }
        // The launcher runs the active release: keep it the one that runs.
        let settled = match self.store.has(image.own()) {
            true => self.store.activate(image.own()).map(|_| ()),
            false => self.store.deactivate().map(|_| ()),
        };
        if let Err(err) = settled {
            tracing::error!(error = %err, "failed to record the running sidecar release as active");
        }
        match handover::failed_attempt(image.data_dir(), &marker.to) {
            Some(cause) => {
                tracing::error!(to = %marker.to, %cause, "the handover to the new sidecar image failed");
                Lifecycle::Reverted { step, cause: StepError::Handover(cause).to_string() }
            }
            None => {
                tracing::warn!(to = %marker.to, runs = image.own(), "the sidecar's step was interrupted: undoing it");
                Lifecycle::Undoing(step)
            }
        }
    }

    /// Boot of the sidecar itself. On a machine that was down (or is new) the boot
    /// version is chosen as for any service (SPEC step 9: the most popular version
    /// online); when it is not the one this image runs, it is fetched and handed over
    /// to, without a fence: no service is touched, and a machine coming up is no
    /// host of a rollout yet. Otherwise (a restart, or the new image of a handover):
    /// register the release this image runs, tell the old image (after a handover) it
    /// may go, and complete a rollout this makes complete.
    pub(super) async fn boot_itself(
        &self,
        image: &SelfImage,
        c: &mut Ctx,
        _sd: &mut watch::Receiver<bool>,
    ) -> Result<Lifecycle, ZkError> {
        let (staged, _) = self.staging(&c.s).await?;
        let (queue, _) = deploys::read(&c.s, Default::default()).await?;
        let version = image.own().to_string();
        if image.is_successor() && self.store.has(&version) {
            self.activate_itself(&version);
        }
        if !image.is_successor() && handover::machine_booted(image.data_dir()) {
            if let Some(lifecycle) = self.boot_to_fleet_version(image, c, &queue, staged.as_ref()).await? {
                return Ok(lifecycle);
            }
        }
        tracing::info!(%version, "the sidecar runs this release");
        self.reconcile(c, None).await?;
        image.took_over().await;
        match staged.filter(|st| st.version == version).and_then(|st| queue.rollout(&st.service, &st.version).cloned())
        {
            Some(slot) => Ok(Lifecycle::Completing { entry: slot.name, version }),
            None => Ok(Lifecycle::Idle),
        }
    }

    /// The boot of a machine that was down: hands over to the fleet's sidecar version
    /// when this image runs another (`None`: stay on this image, it is that version,
    /// or that version failed here, or cannot be fetched or started).
    async fn boot_to_fleet_version(
        &self,
        image: &SelfImage,
        c: &mut Ctx,
        queue: &deploys::Queue,
        staged: Option<&znode_schema::Staging>,
    ) -> Result<Option<Lifecycle>, ZkError> {
        let Some(chosen) = self.choose(&c.s, queue, staged).await? else { return Ok(None) };
        if chosen == image.own() {
            return Ok(None);
        }
        if let Some(cause) = handover::failed_attempt(image.data_dir(), &chosen) {
            tracing::warn!(version = %chosen, %cause, "staying on this image: a handover to the fleet's version failed here");
            return Ok(None);
        }
        tracing::info!(version = %chosen, runs = image.own(), "the machine was down: taking the fleet's sidecar version");
        let why = match self.fetch_for_boot(&c.s, &chosen, staged).await {
            Err(why) => format!("cannot fetch it: {why}"),
            Ok(()) => self.offer_successor(image, &chosen, BOOT_DEADLINE, BOOT_DEADLINE + TAKE_OVER_MARGIN).await,
        };
        tracing::warn!(version = %chosen, error = %why, "staying on this image");
        handover::record_failure(image.data_dir(), &chosen, &why);
        Ok(None)
    }

    /// The sidecar's release `version` becomes the active one (the launcher runs it
    /// from now on): before the success commit of its step, or once a boot handover
    /// to it took over.
    pub(super) fn activate_itself(&self, version: &str) {
        if let Err(err) = self.store.activate(version) {
            tracing::error!(%version, error = %err, "failed to record the new sidecar release as active");
        }
    }
}
