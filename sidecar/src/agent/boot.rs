//! The Booting transition (SPEC step 9): keep what runs, or install what the fleet runs.

use super::lifecycle::Lifecycle;
use super::{Agent, Ctx};
use crate::coord::deploys::{self, Queue};
use crate::coord::zk::{self, ZkError};
use crate::coord::{boot, session::Session};
use std::time::Duration;
use tokio::sync::watch;
use znode_schema::{Release, Staging};

/// How long a boot whose version cannot be fetched waits before trying again.
const BOOT_RETRY: Duration = Duration::from_secs(5);

impl Agent {
    /// Boot. A service that runs (a restarted sidecar adopts its process) keeps its
    /// release: boot never switches a running service (a fenced step moves it, if the
    /// rollout needs it). A service that does not run takes nobody down by starting:
    /// it installs the boot version directly ([`boot::choose`]).
    pub(super) async fn boot(&self, c: &mut Ctx, sd: &mut watch::Receiver<bool>) -> Result<Lifecycle, ZkError> {
        if let Some(image) = self.itself() {
            return self.boot_itself(image, c, sd).await;
        }
        let (staged, staging_watch) = self.staging(&c.s).await?;
        let (queue, _) = deploys::read(&c.s, Default::default()).await?;
        let deadline = staged.as_ref().map(|st| st.policy.health_deadline.0).unwrap_or(Duration::from_secs(60));
        let version = match self.supervisor.running_release().await.filter(|v| self.store.has(v)) {
            Some(v) => {
                tracing::info!(version = %v, "the service runs: keeping its release");
                if let Err(err) = self.keep(&v).await {
                    tracing::error!(error = %err, "failed to adopt the running release");
                }
                // Its registration may have been taken over from the sidecar before:
                // it stands only on the first checks' verdict (not the whole health
                // deadline); a service healthy later registers then (the idle wait).
                let h = &self.cfg.health;
                let verdict = (h.interval * 2 + h.timeout).min(deadline);
                if let Err(err) = self.supervisor.wait_healthy(verdict).await {
                    tracing::warn!(version = %v, error = %err, "the running release is not healthy (yet)");
                }
                v
            }
            None => {
                let Some(v) = self.choose(&c.s, &queue, staged.as_ref()).await? else {
                    tracing::info!("nothing to run yet: no release staged, none local");
                    self.wait(c, vec![staging_watch], sd, super::REEVALUATE, None).await?;
                    return Ok(Lifecycle::Idle);
                };
                if let Err(err) = self.fetch_for_boot(&c.s, &v, staged.as_ref()).await {
                    tracing::error!(version = %v, error = %err, "cannot fetch the boot version; retrying");
                    self.wait(c, vec![staging_watch], sd, BOOT_RETRY, Some(&err)).await?;
                    return Ok(Lifecycle::Booting);
                }
                if let Err(err) = self.parts().switch_to(&v, deadline).await {
                    tracing::error!(version = %v, error = %err, "boot version is not healthy");
                }
                v
            }
        };
        self.reconcile(c, None).await?;
        // SPEC step 9: a boot that makes the rollout complete completes it, wherever its
        // entry stands in the queue.
        match staged.filter(|st| st.version == version).and_then(|st| queue.rollout(&st.service, &st.version).cloned())
        {
            Some(slot) => Ok(Lifecycle::Completing { entry: slot.name, version }),
            None => Ok(Lifecycle::Idle),
        }
    }

    /// The boot version when nothing runs, from the fleet's registrations and the
    /// failure memory in ZooKeeper.
    pub(super) async fn choose(
        &self,
        s: &Session,
        queue: &Queue,
        staged: Option<&Staging>,
    ) -> Result<Option<String>, ZkError> {
        let mut facts = boot::Facts {
            last_active: self.active(),
            staged: staged.map(|st| st.version.clone()),
            failed: queue
                .all_of(&self.cfg.name)
                .filter(|slot| slot.failed_here(&s.host))
                .filter_map(|slot| slot.entry.as_ref().map(|e| e.version.clone()))
                .collect(),
            ..Default::default()
        };
        boot::read_online(s, &self.cfg.name, &mut facts).await?;
        let chosen = boot::choose(&facts);
        if let Some((version, reason)) = &chosen {
            let failed = facts.failed.iter().cloned().collect::<Vec<_>>().join(", ");
            tracing::info!(%version, reason = %reason, failed_here = %failed, "boot version chosen");
        }
        Ok(chosen.map(|(v, _)| v))
    }

    /// Makes sure `version` is installed, from the staged release or the catalog.
    pub(super) async fn fetch_for_boot(
        &self,
        s: &Session,
        version: &str,
        staged: Option<&Staging>,
    ) -> Result<(), String> {
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
}
