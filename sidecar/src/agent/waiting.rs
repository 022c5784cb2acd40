//! Transitions outside a step: boot, idle, download, queue (and the fence).

use super::{Agent, REEVALUATE};
use crate::boot;
use crate::commit;
use crate::fence::{self, Fenced};
use crate::lifecycle::Lifecycle;
use crate::queue;
use crate::session::Session;
use crate::step::StepError;
use crate::supervisor::Status;
use crate::turn::{self, Verdict};
use crate::zk::{self, ZkError};
use std::time::Duration;
use tokio::sync::watch;
use znode_schema::{DeployName, EventKind, Release, Staging, TicketName};
use zookeeper_client::OneshotWatcher;

impl Agent {
    pub(super) async fn boot(&mut self, s: &Session, sd: &mut watch::Receiver<bool>) -> Result<Lifecycle, ZkError> {
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
            // SPEC step 9: a boot that makes the rollout complete completes it, wherever
            // its entry stands in the queue.
            if let Some(name) = self.entry_of(s, &st).await? {
                commit::complete_if_done(s, &st, &name).await?;
            }
        }
        Ok(Lifecycle::Idle)
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

    pub(super) fn wants(&self, st: &Staging) -> bool {
        self.running.as_deref() != Some(st.version.as_str()) && !self.failed_here(st)
    }

    /// The deploy entry of this service, if it rolls out `st` (the first entry of the
    /// service in queue order decides: an older version ahead means not yet).
    pub(super) async fn entry_of(&self, s: &Session, st: &Staging) -> Result<Option<DeployName>, ZkError> {
        let dir = s.layout.deploy_dir();
        for name in znode_schema::seq::sorted_deploys(&zk::children(&s.client, &dir).await?) {
            let path = s.layout.deploy_entry(&name);
            match zk::get::<znode_schema::DeployEntry>(&s.client, &path).await {
                Ok(Some((e, _, _))) if e.service == st.service => return Ok((e.version == st.version).then_some(name)),
                Ok(_) | Err(ZkError::Decode(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Completes a rollout in which nobody needs to step (every host already runs
    /// the staged version, e.g. a rollback to what the fleet runs). Only the online
    /// host with the smallest id checks, so the fleet reads the hosts once, not N times.
    pub(super) async fn complete_no_op(&self, s: &Session, st: &Staging) -> Result<(), ZkError> {
        let Some(name) = self.entry_of(s, st).await? else { return Ok(()) };
        let hosts = zk::children(&s.client, &s.layout.current_service(&st.service)).await?;
        if hosts.iter().min() == Some(&s.host) {
            commit::complete_if_done(s, st, &name).await?;
        }
        Ok(())
    }

    /// Whether this host's step failed for this very staged release.
    pub(super) fn failed_here(&self, st: &Staging) -> bool {
        self.failed.as_ref() == Some(&(st.version.clone(), st.staged_at.clone()))
    }

    /// The deploy entry of `st` that still lists this host among its failed hosts,
    /// watched; `None` once an operator resumed (which clears the list) or the
    /// entry is gone.
    pub(super) async fn failed_entry(&self, s: &Session, st: &Staging) -> Result<Option<OneshotWatcher>, ZkError> {
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

    pub(super) async fn idle(&mut self, s: &Session, sd: &mut watch::Receiver<bool>) -> Result<Lifecycle, ZkError> {
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
        if let Some(st) = staged.as_ref().filter(|st| self.running.as_deref() == Some(st.version.as_str())) {
            self.complete_no_op(s, st).await?;
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

    pub(super) async fn download(
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

    pub(super) async fn report_download_failure(&self, s: &Session, version: &str, msg: &str) {
        let ev =
            crate::history::event(&self.cfg.name, EventKind::DownloadFailed, Some(version), &s.host, Some(msg.into()));
        let (prefix, data) = crate::history::create_op(&s.layout, &ev);
        if let Err(err) = s.client.create(&prefix, &data, &zk::persistent_sequential()).await {
            tracing::warn!(error = %err, "failed to record the download failure in history");
        }
    }

    /// Exponential backoff between download attempts: 2 s, 4 s, … 64 s.
    pub(super) fn download_pause(&self) -> Duration {
        Duration::from_secs(2u64.saturating_pow(self.download_failures.clamp(1, 6)))
    }

    pub(super) async fn queued(
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
}
