//! Transitions outside a step: idle, download, queue (and the fence), completion.

use super::lifecycle::{Lifecycle, Step};
use super::report;
use super::{Agent, Ctx, ORDER_PATIENCE, REEVALUATE};
use crate::coord::commit::{self, Completion};
use crate::coord::deploys::{Queue, Slot};
use crate::coord::fence::{self, Fenced};
use crate::coord::progress::{self, Progress};
use crate::coord::promote::{self, Promotion};
use crate::coord::turn::{self, Verdict};
use crate::coord::zk::{self, ZkError};
use crate::coord::{queue, session::Session};
use std::time::Duration;
use tokio::sync::watch;
use znode_schema::{Activity, DeployName, DeployState, Staging, TicketName};
use zookeeper_client::OneshotWatcher;

impl Agent {
    /// Whether this host takes part in the rollout of `st`: one is in progress (a
    /// deploy entry of the service at that version is its first entry), the host does
    /// not run it yet, and its step did not fail in this rollout (`failed_hosts`, in
    /// ZooKeeper: the memory survives restarts; `deployctl resume` clears it).
    fn wants<'q>(&self, s: &Session, st: &Staging, q: &'q Queue) -> Option<&'q Slot> {
        let slot = q.rollout(&self.cfg.name, &st.version)?;
        let wanted = !slot.failed_here(&s.host) && self.active().as_deref() != Some(st.version.as_str());
        wanted.then(|| self.remember_entry(&st.version, slot))
    }

    /// Remembers `slot` as the entry of the rollout to `version` (see `rollout_entry`).
    fn remember_entry<'q>(&self, version: &str, slot: &'q Slot) -> &'q Slot {
        *self.rollout_entry.lock().unwrap_or_else(|e| e.into_inner()) = Some((version.into(), slot.name));
        slot
    }

    /// The entry of the rollout to `version` as last read, if any.
    fn entry_of(&self, version: &str) -> Option<DeployName> {
        let known = self.rollout_entry.lock().unwrap_or_else(|e| e.into_inner());
        known.as_ref().filter(|(v, _)| v == version).map(|(_, name)| *name)
    }

    pub(super) async fn idle(&self, c: &mut Ctx, sd: &mut watch::Receiver<bool>) -> Result<Lifecycle, ZkError> {
        self.reporter.set(None);
        let (staged, w) = self.staging(&c.s).await?;
        let mut watches = vec![w];
        let mut timer = REEVALUATE;
        if let Some(st) = &staged {
            let (q, _) = crate::coord::deploys::read(&c.s, Default::default()).await?;
            if let Some(slot) = q.rolling_back(&self.cfg.name) {
                if let Some(next) = self.rolling_back(c, slot, &mut watches).await? {
                    return Ok(next);
                }
            }
            if let Some(slot) = self.wants(&c.s, st, &q) {
                if self.active().is_none() && self.supervisor.running_release().await.is_none() {
                    // Nothing runs here: installing the staged release takes nobody down.
                    return Ok(Lifecycle::Booting);
                }
                tracing::debug!(entry = %slot.name, version = %st.version, "taking part in the rollout");
                return Ok(Lifecycle::Downloading { version: st.version.clone(), attempts: 0, error: None });
            }
            if let Some(slot) = q.rollout(&self.cfg.name, &st.version) {
                if slot.failed_here(&c.s.host) {
                    tracing::info!(entry = %slot.name, version = %st.version, "waiting: this host's step failed in this rollout (until resume or a new stage)");
                    // It may be the designated host all the same (completion, auto_promote).
                    let (w, t) = self.designated_completer(c, st, slot).await?;
                    if w.is_none() {
                        watches.extend(self.watch_entry(&c.s, &slot.name).await?);
                    }
                    watches.extend(w);
                    timer = t.unwrap_or(REEVALUATE);
                } else {
                    let (w, t) = self.designated_completer(c, st, slot).await?;
                    watches.extend(w);
                    timer = t.unwrap_or(REEVALUATE);
                    if st.policy.on_halt == znode_schema::OnHalt::Rollback {
                        // Woken if the rollout halts and rolls back: fences never fire this.
                        let mark = c.s.layout.rollback_mark(&slot.name);
                        let (stat, w) =
                            c.s.client
                                .check_and_watch_stat(&mark)
                                .await
                                .map_err(|e| ZkError::call("exists", &mark, e))?;
                        watches.push(w);
                        if stat.is_some() {
                            return Ok(Lifecycle::Idle);
                        }
                    }
                }
            }
        }
        self.wait(c, watches, sd, timer, None).await?;
        Ok(Lifecycle::Idle)
    }

    /// The service's first entry rolls back (`on_halt = rollback`). A host that runs
    /// the rollout's version and whose step did not fail goes back ([`Lifecycle::Returning`]);
    /// the others wait, and the online host with the smallest id decides completion,
    /// watching the entry and the tickets (hosts queued for the halted release drop
    /// them, and the rollback is complete without them).
    async fn rolling_back(
        &self,
        c: &mut Ctx,
        slot: &Slot,
        watches: &mut Vec<OneshotWatcher>,
    ) -> Result<Option<Lifecycle>, ZkError> {
        let (Some(e), Some(to)) = (slot.entry.as_ref(), slot.rolling_back_to()) else { return Ok(None) };
        let active = self.active();
        if active.as_deref() == Some(e.version.as_str())
            && !slot.failed_here(&c.s.host)
            && e.state == DeployState::Active
        {
            tracing::info!(entry = %slot.name, from = %e.version, to, "the rollout halted and rolls back: going back");
            return Ok(Some(Lifecycle::Returning { entry: slot.name, from: e.version.clone(), to: to.into() }));
        }
        self.reconcile(c, None).await?;
        let hosts = zk::children(&c.s.client, &c.s.layout.current_service(&self.cfg.name)).await?;
        if hosts.iter().min() == Some(&c.s.host) && active.as_deref() == Some(to) {
            match commit::complete(&c.s, &self.cfg.name, to, &slot.name).await? {
                Completion::NotDone(why) => {
                    tracing::debug!(entry = %slot.name, %why, "rollback not complete");
                    watches.extend(self.watch_entry(&c.s, &slot.name).await?);
                    let tickets = c.s.layout.staging(&self.cfg.name);
                    if let Ok((_, w)) = c.s.client.list_and_watch_children(&tickets).await {
                        watches.push(w);
                    }
                }
                _ => return Ok(Some(Lifecycle::Idle)),
            }
        }
        Ok(None)
    }

    /// Waits for this host's turn to go back from `from` to `to` (see
    /// [`turn::decide_return`]) and fences its step: the same fence as a step forward,
    /// without a ticket, under the rollout's quorum and slots and no canary phase.
    pub(super) async fn returning(
        &self,
        c: &mut Ctx,
        sd: &mut watch::Receiver<bool>,
        entry: DeployName,
        from: String,
        to: String,
    ) -> Result<Lifecycle, ZkError> {
        let (staged, staging_watch) = self.staging(&c.s).await?;
        let (front, q, front_watches) = fence::front(&c.s, &self.cfg.name, &from).await?;
        let ours = |slot: &Slot| slot.name == entry && slot.rolling_back_to() == Some(to.as_str());
        let again = Lifecycle::Returning { entry, from: from.clone(), to: to.clone() };
        let Some(head) = front.head.clone().filter(|h| ours(h)) else {
            if q.of(&self.cfg.name).is_some_and(ours) {
                // Another rollout heads the queue (an operator's rollback moved ours
                // behind it): wait for the queue to move.
                let mut watches = vec![staging_watch];
                watches.extend(front_watches);
                self.wait(c, watches, sd, REEVALUATE, None).await?;
                return Ok(again);
            }
            return Ok(Lifecycle::Idle);
        };
        if head.failed_here(&c.s.host) || self.active().as_deref() != Some(from.as_str()) {
            return Ok(Lifecycle::Idle);
        }
        let mut policy = staged.filter(|st| st.version == from).map(|st| st.policy).unwrap_or_default();
        policy.canary = 0;
        policy.on_halt = znode_schema::OnHalt::Stay;
        policy.on_failure = znode_schema::OnFailure::Rollback;
        if !self.store.has(&to) {
            if let Err(err) = self.fetch_for_boot(&c.s, &to, None).await {
                tracing::error!(version = %to, error = %err, "cannot fetch the release to go back to; retrying");
                self.wait(c, vec![staging_watch], sd, Duration::from_secs(5), Some(&err)).await?;
                return Ok(again);
            }
        }
        let verdict = turn::decide_return(&policy, &front);
        if verdict == Verdict::Go {
            let won = front.own_marker
                || fence::commit(&c.s, &self.cfg.name, &front, None, Some(&from), &to, 0).await? == Fenced::Won;
            if !won {
                return Ok(again);
            }
            tracing::info!(entry = %head.name, %from, %to, "fenced: going back");
            self.reporter.set(None);
            c.reg.assume(None);
            let step = Step { entry, from: Some(from), to, policy, ticket: None };
            return Ok(Lifecycle::Upgrading(step));
        }
        let why = match &verdict {
            Verdict::Quorum { online, required } => {
                format!("going back: quorum: {online} online, {required} must stay online")
            }
            Verdict::Slots { upgrading } => format!("going back: slots: {upgrading} host(s) stepping"),
            other => format!("going back: {other:?}"),
        };
        tracing::debug!(reason = %why, "waiting");
        let mut r = report::report(&to, Activity::Waiting);
        r.waiting_for = Some(why);
        self.reporter.set(Some(r));
        let mut watches = vec![staging_watch];
        watches.extend(front_watches);
        self.wait(c, watches, sd, REEVALUATE, None).await?;
        Ok(again)
    }

    async fn watch_entry(&self, s: &Session, name: &DeployName) -> Result<Option<OneshotWatcher>, ZkError> {
        let path = s.layout.deploy_entry(name);
        match s.client.get_and_watch_data(&path).await {
            Ok((_, _, w)) => Ok(Some(w)),
            Err(zookeeper_client::Error::NoNode) => Ok(None),
            Err(e) => Err(ZkError::call("get", path, e)),
        }
    }

    /// A rollout this host is already done with: the online host with the smallest id
    /// decides completion (a rollout in which nobody needs to step, or one resumed
    /// after every host finished) and auto-promotion (a canary phase that took every
    /// host that needed a step), and watches the entry; the others only watch staging,
    /// so the fleet reads the hosts once, not N times. Returns the watch and a timer.
    async fn designated_completer(
        &self,
        c: &mut Ctx,
        st: &Staging,
        slot: &Slot,
    ) -> Result<(Option<OneshotWatcher>, Option<Duration>), ZkError> {
        self.reconcile(c, None).await?;
        let hosts = zk::children(&c.s.client, &c.s.layout.current_service(&st.service)).await?;
        if hosts.iter().min() != Some(&c.s.host) {
            return Ok((None, None));
        }
        match commit::complete(&c.s, &st.service, &st.version, &slot.name).await? {
            Completion::NotDone(why) => {
                tracing::debug!(entry = %slot.name, %why, "rollout not complete");
                let mut timer = match promote::auto_promote(&c.s, st, slot).await? {
                    Promotion::Wait(left) => Some(left),
                    Promotion::Done => Some(Duration::ZERO),
                    _ => None,
                };
                match progress::check(&c.s, &st.service, &st.policy, slot, &why).await? {
                    Progress::Halted => timer = Some(Duration::ZERO),
                    Progress::Within(left) => {
                        let left = left + Duration::from_millis(100);
                        timer = Some(timer.map_or(left, |t| t.min(left)));
                    }
                    Progress::NotWatched => {}
                }
                Ok((self.watch_entry(&c.s, &slot.name).await?, timer))
            }
            _ => Ok((None, None)),
        }
    }

    pub(super) async fn download(
        &self,
        c: &mut Ctx,
        sd: &mut watch::Receiver<bool>,
        version: String,
        attempts: u32,
        error: Option<String>,
    ) -> Result<Lifecycle, ZkError> {
        let (staged, w) = self.staging(&c.s).await?;
        let (q, _) = crate::coord::deploys::read(&c.s, Default::default()).await?;
        let Some(st) = staged.filter(|st| st.version == version && self.wants(&c.s, st, &q).is_some()) else {
            return Ok(Lifecycle::Idle);
        };
        let partial = self.store.partial_download(&version);
        let downloading = || {
            let mut r = report::report(&version, Activity::Downloading);
            r.bytes = Some(report::partial_size(&partial).unwrap_or(0));
            r.size = Some(st.artifact.size);
            Some(r)
        };
        if error.is_none() {
            self.reporter.set(downloading());
        }
        let began = std::time::Instant::now();
        let result = {
            let install = self.store.install(&self.fetcher, &version, &st.artifact);
            tokio::pin!(install);
            let mut w = std::pin::pin!(w.changed());
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    r = &mut install => break r,
                    _ = &mut w => return Ok(Lifecycle::Idle),
                    _ = sd.changed() => return Ok(Lifecycle::Idle),
                    _ = tick.tick() => {
                        // Bytes so far, published at most every few seconds (see `report`).
                        if error.is_none() {
                            self.reporter.set(downloading());
                        }
                        if self.reporter.publish_if_due() {
                            self.reconcile(c, error.as_deref()).await?;
                        }
                    }
                }
            }
        };
        match &result {
            Ok(_) => crate::metrics::get().downloaded(&self.cfg.name, st.artifact.size, began.elapsed()),
            Err(err) => crate::metrics::get().download_failed(&self.cfg.name, crate::metrics::verification_reason(err)),
        }
        match result {
            Ok(_) => {
                if error.is_some() {
                    self.reconcile(c, None).await?;
                }
                self.prune_releases();
                let ticket = queue::ensure(&c.s, &self.cfg.name, &version).await?;
                tracing::info!(version = %version, ticket = %ticket, "release verified; queued");
                Ok(Lifecycle::Queued { version, ticket, waiting: None, vacuous_since: None })
            }
            Err(err) => {
                let msg = format!("release {version}: {err}");
                tracing::error!(error = %msg, "download failed; will retry");
                let mut r = report::report(&version, Activity::Failed);
                r.error = Some(msg.clone());
                self.reporter.set(Some(r));
                let last = self.failure_event.lock().unwrap_or_else(|e| e.into_inner()).take();
                let next = crate::coord::history::record_failure(&c.s, &self.cfg.name, &version, &msg, last).await;
                *self.failure_event.lock().unwrap_or_else(|e| e.into_inner()) = next;
                let attempts = attempts + 1;
                let (_, w) = self.staging(&c.s).await?;
                let mut pause = Duration::from_secs(2u64.saturating_pow(attempts.clamp(1, 6)));
                if let Some(slot) = q.rollout(&self.cfg.name, &version) {
                    match progress::check(&c.s, &self.cfg.name, &st.policy, slot, &msg).await? {
                        Progress::Halted => return Ok(Lifecycle::Idle),
                        Progress::Within(left) => pause = pause.min(left + Duration::from_millis(100)),
                        Progress::NotWatched => {}
                    }
                }
                self.wait(c, vec![w], sd, pause, Some(&msg)).await?;
                Ok(Lifecycle::Downloading { version, attempts, error: Some(msg) })
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn queued(
        &self,
        c: &mut Ctx,
        sd: &mut watch::Receiver<bool>,
        version: String,
        ticket: TicketName,
        waiting: Option<String>,
        vacuous_since: Option<(DeployName, tokio::time::Instant)>,
    ) -> Result<Lifecycle, ZkError> {
        // Both reads in flight at once (one connection keeps their order). A host that
        // was at the front or just behind it reads the front's snapshot, tickets
        // included, instead of the tickets alone: the handoff's read and fence follow
        // the notification with no read between.
        let near = self.entry_of(&version).filter(|_| self.near_front.load(std::sync::atomic::Ordering::Relaxed));
        let ((staged, staging_watch), snapshot, tickets) = match near {
            Some(entry) => {
                let (staging, snapshot) =
                    tokio::try_join!(self.staging(&c.s), fence::peek(&c.s, &self.cfg.name, &entry))?;
                let tickets = match &snapshot {
                    Some(snap) => snap.tickets.clone(),
                    None => queue::tickets(&c.s, &self.cfg.name).await?,
                };
                (staging, snapshot, tickets)
            }
            None => {
                let (staging, tickets) = tokio::try_join!(self.staging(&c.s), queue::tickets(&c.s, &self.cfg.name))?;
                (staging, None, tickets)
            }
        };
        let Some(st) = staged.filter(|st| st.version == version) else {
            queue::delete(&c.s, &self.cfg.name, &ticket).await?;
            return Ok(Lifecycle::Idle);
        };
        let mut watches = vec![staging_watch];
        let again = |waiting, vacuous_since| Lifecycle::Queued {
            version: version.clone(),
            ticket: ticket.clone(),
            waiting,
            vacuous_since,
        };
        let position = turn::position(&tickets, &ticket, &st);
        let k = st.policy.max_parallel.max(1) as usize;
        // Next time, at most one ticket ahead gone puts this host at the front. With one
        // slot, a host behind is woken only when the ticket just ahead goes: then it
        // is at the front, wherever it waited.
        let near = tickets.iter().position(|t| *t == ticket).is_some_and(|p| k == 1 || p <= k);
        self.near_front.store(near, std::sync::atomic::Ordering::Relaxed);
        match position {
            Verdict::NoTicket => return Ok(Lifecycle::Downloading { version, attempts: 0, error: None }),
            Verdict::Behind { .. } if self.canary_behind(c, &st).await? => {
                // A canary that queued again (its step was undone, or failed and was
                // resumed) is let through: the hosts ahead wait for the canaries.
            }
            Verdict::Behind { ahead } => {
                // The K watches set at once (one round trip, not K).
                let s = &c.s;
                let set =
                    ahead.iter().map(|t| {
                        let path = s.layout.ticket(&self.cfg.name, t);
                        async move {
                            s.client.check_and_watch_stat(&path).await.map_err(|e| ZkError::call("exists", path, e))
                        }
                    });
                for (stat, w) in futures_util::future::try_join_all(set).await? {
                    if stat.is_none() {
                        return Ok(again(waiting, None));
                    }
                    watches.push(w);
                }
                let why = format!("{} ticket(s) ahead hold the {} slot(s)", ahead.len(), st.policy.max_parallel);
                let mut r = report::report(&version, Activity::Queued);
                r.position = tickets.iter().position(|t| *t == ticket).map(|p| p as u32 + 1);
                r.waiting_for = Some(why.clone());
                self.reporter.set(Some(r));
                self.log_wait(&waiting, &why);
                self.wait(c, watches, sd, REEVALUATE, None).await?;
                return Ok(again(Some(why), None));
            }
            _ => {}
        }
        // The handoff: the front as one snapshot without watches; a host whose turn it
        // is fences on it and wakes none of its own watches. One that must wait reads
        // the front again with its watches.
        let snapshot = match (snapshot, self.entry_of(&version)) {
            (Some(snap), _) => Some(snap),
            (None, Some(entry)) => fence::peek(&c.s, &self.cfg.name, &entry).await?,
            (None, None) => None,
        };
        if let Some(snap) = snapshot {
            let front = snap.front_for(&st, &ticket);
            if let Some(head) = front.head.as_ref().filter(|h| !h.failed_here(&c.s.host)) {
                let entry = head.name;
                // A parallel fence goes at once: the count covers the whole front.
                let go = turn::decide(&st, &front, &c.s.host) == Verdict::Go;
                if go && front.parallel {
                    return self.fence_step(c, st, &front, ticket, waiting).await;
                }
                if let Some(ahead) = turn::predecessor(&tickets, &ticket, &st, &front) {
                    return self.after(c, sd, st, &front, entry, ticket, ahead, watches).await;
                }
                if go {
                    return self.fence_step(c, st, &front, ticket, waiting).await;
                }
            }
        }
        let (front, q, front_watches) = fence::front(&c.s, &self.cfg.name, &version).await?;
        let Some(slot) = q.rollout(&self.cfg.name, &version) else {
            // No rollout of this version (aborted, superseded, or completed meanwhile).
            queue::delete(&c.s, &self.cfg.name, &ticket).await?;
            return Ok(Lifecycle::Idle);
        };
        if slot.failed_here(&c.s.host) {
            queue::delete(&c.s, &self.cfg.name, &ticket).await?;
            return Ok(Lifecycle::Idle);
        }
        self.remember_entry(&version, slot);
        if front.head.as_ref().is_some_and(|h| h.name == slot.name) {
            if let Some(ahead) = turn::predecessor(&tickets, &ticket, &st, &front) {
                return self.after(c, sd, st, &front, slot.name, ticket, ahead, watches).await;
            }
        }
        let verdict = turn::decide(&st, &front, &c.s.host);
        if verdict == Verdict::Go {
            return self.fence_step(c, st, &front, ticket, waiting).await;
        }
        watches.extend(front_watches);
        let (why, vacuous_since, mut timer) = match &verdict {
            Verdict::NotHead => self.behind_head(c, &q, vacuous_since).await?,
            Verdict::Inactive(state) => match front.head.as_ref() {
                Some(head) => match promote::auto_promote(&c.s, &st, head).await? {
                    Promotion::Done => return Ok(again(waiting, None)),
                    Promotion::Wait(left) => {
                        let why = format!("paused after the canary phase; auto_promote in {}s", left.as_secs());
                        (why, None, left.min(REEVALUATE))
                    }
                    Promotion::Unhealthy(why) => {
                        (format!("paused after the canary phase; not promoting on its own: {why}"), None, REEVALUATE)
                    }
                    Promotion::NotWaiting => (format!("the rollout is {state}"), None, REEVALUATE),
                },
                None => (format!("the rollout is {state}"), None, REEVALUATE),
            },
            Verdict::Quorum { online, required } => {
                (format!("quorum: {online} online, {required} must stay online"), None, REEVALUATE)
            }
            Verdict::Slots { upgrading } => (format!("slots: {upgrading} host(s) stepping"), None, REEVALUATE),
            Verdict::Canary { canaries } => {
                (format!("canary phase: {canaries} canary host(s) step first, then promotion"), None, REEVALUATE)
            }
            other => (format!("{other:?}"), None, REEVALUATE),
        };
        if matches!(verdict, Verdict::Quorum { .. } | Verdict::Canary { .. }) {
            match progress::check(&c.s, &self.cfg.name, &st.policy, slot, &format!("waiting: {why}")).await? {
                Progress::Halted => return Ok(again(waiting, None)),
                Progress::Within(left) => timer = timer.min(left + Duration::from_millis(100)),
                Progress::NotWatched => {}
            }
        }
        let mut r = report::report(&version, Activity::Waiting);
        r.position = tickets.iter().position(|t| *t == ticket).map(|p| p as u32 + 1);
        r.waiting_for = Some(why.clone());
        self.reporter.set(Some(r));
        self.log_wait(&waiting, &why);
        self.wait(c, watches, sd, timer, None).await?;
        Ok(again(Some(why), vacuous_since))
    }

    /// The slot order ([`turn::predecessor`]): waits for `ahead`, the unfenced front
    /// ticket just ahead of this host's, to fence (its marker under `entry` appears)
    /// or to leave (its ticket goes), watching only those two and staging
    /// (`watches`). A host whose patience with `ahead` ran out fences when its turn
    /// says go: the one ahead is stuck, or blocked where this host is not.
    #[allow(clippy::too_many_arguments)]
    async fn after(
        &self,
        c: &mut Ctx,
        sd: &mut watch::Receiver<bool>,
        st: Staging,
        front: &crate::coord::turn::Front,
        entry: DeployName,
        ticket: TicketName,
        ahead: TicketName,
        mut watches: Vec<OneshotWatcher>,
    ) -> Result<Lifecycle, ZkError> {
        let now = tokio::time::Instant::now();
        let since = {
            let mut awaiting = self.awaiting.lock().unwrap_or_else(|e| e.into_inner());
            match &*awaiting {
                Some((t, since)) if *t == ahead => *since,
                _ => awaiting.insert((ahead.clone(), now)).1,
            }
        };
        let version = st.version.clone();
        let again = |waiting| Lifecycle::Queued {
            version: version.clone(),
            ticket: ticket.clone(),
            waiting,
            vacuous_since: None,
        };
        let mut timer = ORDER_PATIENCE.saturating_sub(now.duration_since(since));
        if timer.is_zero() {
            if turn::decide(&st, front, &c.s.host) == Verdict::Go {
                tracing::warn!(ahead = %ahead, waited_ms = now.duration_since(since).as_millis() as u64, "the front host ahead has not fenced; fencing out of order");
                return self.fence_step(c, st, front, ticket.clone(), None).await;
            }
            // Blocked as the one ahead is (paused, quorum, slots): its moves still wake
            // this host, and the patience starts again.
            timer = REEVALUATE;
            *self.awaiting.lock().unwrap_or_else(|e| e.into_inner()) = Some((ahead.clone(), now));
        }
        let marker = c.s.layout.upgrading(&entry, &ahead.host);
        let their_ticket = c.s.layout.ticket(&self.cfg.name, &ahead);
        let ((fenced, marker_watch), (queued, ticket_watch)) = tokio::try_join!(
            async { c.s.client.check_and_watch_stat(&marker).await.map_err(|e| ZkError::call("exists", &marker, e)) },
            async {
                c.s.client
                    .check_and_watch_stat(&their_ticket)
                    .await
                    .map_err(|e| ZkError::call("exists", &their_ticket, e))
            },
        )?;
        let why = format!("slot order: {} fences first", ahead.host);
        if fenced.is_some() || queued.is_none() {
            return Ok(again(Some(why)));
        }
        watches.extend([marker_watch, ticket_watch]);
        let mut r = report::report(&st.version, Activity::Waiting);
        r.waiting_for = Some(why.clone());
        self.reporter.set(Some(r));
        tracing::debug!(reason = %why, "waiting");
        self.wait(c, watches, sd, timer, None).await?;
        Ok(again(Some(why)))
    }

    /// Fences this host's step to `st` on `front` (its turn: [`turn::decide`] said
    /// go): the step, or [`Lifecycle::Queued`] again to read and decide again when
    /// someone moved first.
    async fn fence_step(
        &self,
        c: &mut Ctx,
        st: Staging,
        front: &crate::coord::turn::Front,
        ticket: TicketName,
        waiting: Option<String>,
    ) -> Result<Lifecycle, ZkError> {
        self.reporter.set(None);
        let head = front.head.clone().expect("Go implies a head");
        let from = self.active();
        let (svc, version) = (&self.cfg.name, st.version.clone());
        let won = front.own_marker
            || fence::commit(&c.s, svc, front, Some(&ticket), from.as_deref(), &version, st.policy.canary).await?
                == Fenced::Won;
        if !won {
            return Ok(Lifecycle::Queued { version, ticket, waiting, vacuous_since: None });
        }
        let was = from.as_deref().unwrap_or("nothing");
        tracing::info!(entry = %head.name, from = was, to = %version, recovered = front.own_marker, parallel = front.parallel, "fenced: starting the step");
        c.reg.assume(None);
        let step = Step { entry: head.name, from, to: version, policy: st.policy, ticket: Some(ticket) };
        Ok(Lifecycle::Upgrading(step))
    }

    /// Whether this host is a canary of the rollout of `st` whose canary phase is
    /// full: the hosts ahead of it in the ticket queue are not canaries and wait for
    /// the phase to end, so it must not wait for them (read only under a canary
    /// policy, while behind).
    async fn canary_behind(&self, c: &Ctx, st: &Staging) -> Result<bool, ZkError> {
        let canary = st.policy.canary;
        if canary == 0 {
            return Ok(false);
        }
        let (q, _) = crate::coord::deploys::read(&c.s, Default::default()).await?;
        Ok(q.rollout(&st.service, &st.version).and_then(|slot| slot.entry.as_ref()).is_some_and(|e| {
            e.canary_phase(canary) && e.canaries.len() as u32 >= canary && e.canaries.contains(&c.s.host)
        }))
    }

    fn log_wait(&self, before: &Option<String>, why: &str) {
        if before.as_deref() != Some(why) {
            tracing::info!(reason = %why, "waiting");
        }
    }

    /// Another rollout heads the queue. One whose service no host runs (no host
    /// online, queued or stepping) would block every rollout behind it forever: once
    /// it has looked vacuous for two session timeouts (a fleet whose sessions expired
    /// has re-registered by then), a front host behind it completes it, through the
    /// one decider of completion. Returns why it waits, the vacuous mark and a timer.
    async fn behind_head(
        &self,
        c: &mut Ctx,
        q: &Queue,
        vacuous_since: Option<(DeployName, tokio::time::Instant)>,
    ) -> Result<(String, Option<(DeployName, tokio::time::Instant)>, Duration), ZkError> {
        let Some(head) = q.head() else {
            return Ok(("no rollout of this version heads the queue".into(), None, REEVALUATE));
        };
        let Some(e) = head.entry.as_ref() else {
            return Ok((format!("deploy entry {} heads the queue and is unreadable", head.name), None, REEVALUATE));
        };
        let why = format!("another rollout heads the queue: {} {} ({})", e.service, e.version, e.state);
        if e.state != DeployState::Active || !self.vacuous(&c.s, head, &e.service).await? {
            return Ok((why, None, REEVALUATE));
        }
        let grace = c.s.timeout * 2;
        let now = tokio::time::Instant::now();
        match vacuous_since.filter(|(n, _)| *n == head.name) {
            Some((name, since)) if now.duration_since(since) >= grace => {
                tracing::warn!(entry = %name, service = %e.service, "the head rollout's service has no host online, queued or stepping; completing it");
                let done = commit::complete(&c.s, &e.service, &e.version, &name).await?;
                tracing::info!(entry = %name, outcome = ?done, "vacuous head rollout");
                Ok((why, None, Duration::ZERO))
            }
            Some((name, since)) => Ok((why, Some((name, since)), grace.saturating_sub(now.duration_since(since)))),
            None => Ok((why, Some((head.name, now)), grace)),
        }
    }

    /// Whether `service` has no host online, queued or stepping on `slot`.
    async fn vacuous(&self, s: &Session, slot: &Slot, service: &str) -> Result<bool, ZkError> {
        Ok(zk::children(&s.client, &s.layout.current_service(service)).await?.is_empty()
            && zk::children(&s.client, &s.layout.staging(service)).await?.is_empty()
            && zk::children(&s.client, &s.layout.upgrading_dir(&slot.name)).await?.is_empty())
    }

    /// Decides completion of the rollout a step (or boot) of this host took part in.
    pub(super) async fn completing(
        &self,
        c: &mut Ctx,
        entry: DeployName,
        version: String,
    ) -> Result<Lifecycle, ZkError> {
        match commit::complete(&c.s, &self.cfg.name, &version, &entry).await? {
            Completion::NotDone(why) => tracing::debug!(%entry, %why, "rollout not complete"),
            done => tracing::debug!(%entry, ?done, "completion"),
        }
        Ok(Lifecycle::Idle)
    }
}
