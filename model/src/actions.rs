//! The model's actions and when each is enabled. Every action is one atomic
//! ZooKeeper operation or multi (or one local step of a sidecar).

use crate::config::{Bug, Config, Host, OpKind, Svc};
use crate::rules;
use crate::state::{DeployState, Phase, State};

/// One step of the system.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Action {
    /// Download done, ticket created (`Idle → Queued`).
    Queue(Host, Svc),
    /// The ticket is for a version no longer staged, or the host runs the staged
    /// version now: delete it (`Queued → Idle`).
    DropTicket(Host, Svc),
    /// The front read: head entry (and its data version), online count, markers;
    /// enabled only when eligible (a host that is not waits, watching).
    Read(Host, Svc),
    /// The fence multi on the read: check data version, check ticket, create the
    /// marker, delete the registration. Fails (back to `Queued`) if anything moved.
    Fence(Host, Svc),
    /// Local: stop the old release, switch, start the new one.
    Switch(Host, Svc),
    /// Local: health check and bake pass (`true`), or fail and the host switches back.
    Outcome(Host, Svc, bool),
    /// The success or failure transaction (needs a live session).
    Commit(Host, Svc),
    /// Boot or recovery after a (re)start; `healthy`: whether the new release of an
    /// interrupted step turns out healthy.
    Boot(Host, Svc, bool),
    /// The completion check due after a success, failure, boot, reconnect or stage.
    Check(Host, Svc),
    /// The periodic no-op check by the smallest online host at the staged version.
    Periodic(Host, Svc),
    /// A head entry of a service with no online host, no ticket and no marker is
    /// completed by whichever sidecar watches `deploy/`.
    Vacuous(u8),
    /// A host without a session opens a new one: re-registers, re-evaluates.
    Reconnect(Host),
    /// `deployctl stage s` of version 1 (a new entry at the back).
    Stage(Svc),
    /// Fault: host `h`'s session expires (its ephemeral nodes vanish).
    Expire(Host),
    /// Fault: host `h`'s sidecar crashes and restarts with a new session.
    Crash(Host),
    /// An operator action on service `s`'s entry.
    Op(OpKind, Svc),
    /// `deployctl unlock s h`.
    Unlock(Svc, Host),
    /// `promote::auto_promote` by host `h` (a front host queued, or the designated
    /// idle host): the entry paused after its canaries, whose canaries that did not
    /// fail are online at the version, becomes active and promoted.
    AutoPromote(Host, Svc),
}

impl Action {
    /// The (host, service) agent whose decision this action is, if any.
    pub fn agent(&self) -> Option<(Host, Svc)> {
        match *self {
            Action::Queue(h, s)
            | Action::DropTicket(h, s)
            | Action::Read(h, s)
            | Action::Fence(h, s)
            | Action::Switch(h, s)
            | Action::Outcome(h, s, _)
            | Action::Commit(h, s)
            | Action::Boot(h, s, _)
            | Action::Check(h, s)
            | Action::Periodic(h, s)
            | Action::AutoPromote(h, s) => Some((h, s)),
            _ => None,
        }
    }

    /// Whether an operator did it (abort, rollback, unlock, pause, resume, promote).
    pub fn is_operator(&self) -> bool {
        matches!(self, Action::Op(..) | Action::Unlock(..))
    }
}

/// Actions of the protocol itself (sidecars), enabled in `st`.
pub fn protocol_actions(cfg: &Config, st: &State, out: &mut Vec<Action>) {
    let zk = &st.zk;
    for (h, s) in cfg.agents() {
        let a = st.agent(h, s);
        let live = zk.session[h as usize];
        let svc = &zk.services[s as usize];
        let staged = svc.staged;
        let has_ticket = svc.tickets.iter().any(|t| t.host == h);
        // The service's first entry rolls back (`on_halt = rollback`): nobody
        // queues for its release, and the hosts that run it go back.
        let back = zk.entry_of(s).filter(|e| e.rolling_back_to.is_some());
        match &a.phase {
            Phase::Idle if live && back.is_some() => {
                let e = back.expect("checked");
                let steps_back = a.running == Some(e.version) && e.failed_hosts & (1 << h) == 0;
                if steps_back && rules::eligible_back(cfg, zk, h, s) {
                    out.push(Action::Read(h, s));
                }
            }
            Phase::Idle if live && a.running.is_some() && a.running != Some(staged) && !has_ticket => {
                let failed = rules::entry_to_complete(zk, s).is_some_and(|e| e.failed_hosts & (1 << h) != 0);
                if !failed {
                    out.push(Action::Queue(h, s));
                }
            }
            Phase::Queued if live => {
                let stale = svc.tickets.iter().any(|t| t.host == h && t.version != staged);
                let dropped = back.is_some() && cfg.bug != Bug::ForwardWhileRollingBack;
                if stale || a.running == Some(staged) || !has_ticket || dropped {
                    out.push(Action::DropTicket(h, s));
                } else if rules::eligible(cfg, zk, h, s) {
                    out.push(Action::Read(h, s));
                }
            }
            Phase::Read { .. } => out.push(Action::Fence(h, s)),
            Phase::Fenced { .. } => out.push(Action::Switch(h, s)),
            Phase::Switched { .. } => {
                out.push(Action::Outcome(h, s, true));
                out.push(Action::Outcome(h, s, false));
            }
            Phase::Succeeded { .. } | Phase::Failed { .. } if live => out.push(Action::Commit(h, s)),
            Phase::Booting if live => {
                out.push(Action::Boot(h, s, true));
                if rules::own_marker(cfg, zk, h, s).is_some_and(|(_, m)| a.running == Some(m.to)) {
                    out.push(Action::Boot(h, s, false));
                }
            }
            _ => {}
        }
        let settled = matches!(a.phase, Phase::Idle | Phase::Queued);
        if live && settled && a.check {
            out.push(Action::Check(h, s));
        }
        // The designated idle host: the smallest online one, at the entry's target
        // (`designated_completer`, and `rolling_back` for a rollback), or, since
        // cd77ead, at any version when its step failed in the rollout.
        let target = rules::entry_to_complete(zk, s).map_or(staged, |e| e.target());
        // (`NoCompletionAfterFailure` is today's sidecar before the fix: only the
        // smallest online host at the staged version runs the periodic check.)
        let old_designated = matches!(cfg.bug, Bug::FailedHostNotDesignated | Bug::NoCompletionAfterFailure);
        let failed_here = !old_designated && rules::rollout(zk, s).is_some_and(|e| e.failed_hosts & (1 << h) != 0);
        let designated = live
            && a.phase == Phase::Idle
            && (a.running == Some(target) || failed_here)
            && rules::min_online(zk, s) == Some(h);
        if designated && rules::done(cfg, zk, s).is_some() {
            out.push(Action::Periodic(h, s));
        }
        // Auto-promotion: by the front hosts queued (`queued`, on `Inactive`; a
        // canary let through from behind the window included) and by the designated
        // idle host (`designated_completer`), on the rollout.
        if let Some(e) = rules::rollout(zk, s).filter(|e| rules::auto_promotable(cfg, zk, e)) {
            let p = cfg.policy(s);
            let front = svc.tickets.iter().take(p.max_parallel as usize).any(|t| t.host == h && t.version == staged);
            let front = front || (has_ticket && rules::canary_behind(cfg, zk, h, s));
            let front = live
                && a.phase == Phase::Queued
                && front
                && e.failed_hosts & (1 << h) == 0
                && zk.deploy.first().map(|d| d.id) == Some(e.id);
            if front || designated {
                out.push(Action::AutoPromote(h, s));
            }
        }
    }
    if let Some(head) = zk.deploy.first() {
        let s = head.service;
        let nobody = zk.online(s) == 0;
        let anyone = zk.session.iter().any(|l| *l);
        if cfg.bug != Bug::NoVacuousCompletion && nobody && anyone && rules::done(cfg, zk, s) == Some(head.id) {
            out.push(Action::Vacuous(head.id));
        }
    }
    for h in 0..cfg.hosts {
        if !zk.session[h as usize] {
            out.push(Action::Reconnect(h));
        }
    }
}

/// Every action enabled in `st`: the protocol's, then stages, faults, operators.
pub fn all_actions(cfg: &Config, st: &State, out: &mut Vec<Action>) {
    protocol_actions(cfg, st, out);
    for s in 0..cfg.services.len() as Svc {
        if st.stage_left & (1 << s) != 0 {
            out.push(Action::Stage(s));
        }
    }
    if st.faults_left > 0 {
        for h in 0..cfg.hosts {
            if cfg.expiry && st.zk.session[h as usize] {
                out.push(Action::Expire(h));
            }
            if cfg.crash {
                out.push(Action::Crash(h));
            }
        }
    }
    if st.ops_left == 0 {
        return;
    }
    for s in 0..cfg.services.len() as Svc {
        let entry = st.zk.entry_of(s);
        for &k in &cfg.op_kinds {
            let ok = match k {
                OpKind::Pause => entry.is_some_and(|e| e.state == DeployState::Active),
                OpKind::Resume => {
                    entry.is_some_and(|e| (e.state != DeployState::Active || e.failures > 0) && !e.awaits_promotion())
                }
                OpKind::Promote => entry.is_some_and(|e| {
                    let staged = st.zk.services[s as usize].staged;
                    e.version == staged && e.canary_phase(cfg.policy(s).canary)
                }),
                OpKind::Abort => entry.is_some(),
                OpKind::Rollback => st.zk.services[s as usize].staged > 0,
                OpKind::Unlock => {
                    for m in entry.iter().flat_map(|e| e.markers.iter()) {
                        out.push(Action::Unlock(s, m.host));
                    }
                    false
                }
            };
            if ok {
                out.push(Action::Op(k, s));
            }
        }
    }
}
