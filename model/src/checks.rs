//! Invariants over transitions (what one step did), recorded in
//! [`State::violations`] so that `always` properties can see them.

use crate::actions::Action;
use crate::config::{Config, OpKind};
use crate::state::{DeployState, Phase, State};

/// A transition invariant, as a bit of [`State::violations`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Violation {
    /// A fence left fewer online hosts than the quorum, the fenced host being
    /// online, and no host vanished on its own between its read and its commit.
    Quorum = 1,
    /// Same without the exemption for a host that vanished on its own (the race
    /// docs/guarantees.md describes); only a property with `strict_quorum`.
    QuorumStrict = 2,
    /// A fence on an entry that is not the head of `deploy/`.
    NotHead = 4,
    /// A fence on a paused or halted entry.
    Inactive = 8,
    /// A halted entry stopped being halted (or vanished) without an operator.
    LeftHalted = 16,
    /// A step, commit, recovery or boot of one service changed another service's
    /// agent, registration, tickets or markers.
    CrossService = 32,
    /// A marker deleted by someone other than its own host's commit or recovery
    /// of the entry's service, or an operator.
    MarkerTheft = 64,
    /// A fence forward (to the entry's version) on an entry whose
    /// `rolling_back_to` is set.
    ForwardWhileRollingBack = 128,
}

/// Checks the transition `before --action--> after` and returns `after` with the
/// violations it commits added.
pub fn record(cfg: &Config, before: &State, action: &Action, mut after: State) -> State {
    let mut v = 0u16;
    if let Action::Fence(h, s) = *action {
        let fenced = matches!(after.agent(h, s).phase, Phase::Fenced { .. });
        if let (true, Phase::Read { entry, self_online, faults_at_read, .. }) = (fenced, &before.agent(h, s).phase) {
            let e = before.zk.entry(*entry).expect("fenced on a live entry");
            if before.zk.deploy.first().map(|h| h.id) != Some(*entry) {
                v |= Violation::NotHead as u16;
            }
            if e.state != DeployState::Active {
                v |= Violation::Inactive as u16;
            }
            let to = after.zk.entry(*entry).and_then(|a| a.markers.iter().find(|m| m.host == h)).map(|m| m.to);
            if e.rolling_back_to.is_some() && to == Some(e.version) {
                v |= Violation::ForwardWhileRollingBack as u16;
            }
            let quorum = cfg.policy(s).quorum;
            if *self_online && after.zk.online(s) < quorum {
                v |= Violation::QuorumStrict as u16;
                // A host that went offline on its own (a fault) after the read is
                // not seen by the fence (it checks the entry's version, not
                // current/'s): the quorum must hold counting one host back online
                // per fault since the read. One that went offline by fencing since
                // (a parallel fence, which the read accounted for; a rewriting fence
                // would have failed this one) counts as offline.
                let faults_since = faults_at_read.saturating_sub(before.faults_left);
                if after.zk.online(s) + faults_since < quorum {
                    v |= Violation::Quorum as u16;
                }
            }
        }
    }
    if !action.is_operator() {
        for e in before.zk.deploy.iter().filter(|e| e.state == DeployState::Halted) {
            if after.zk.entry(e.id).is_none_or(|a| a.state != DeployState::Halted) {
                v |= Violation::LeftHalted as u16;
            }
        }
    }
    if let Some((_, s)) = action.agent() {
        for t in (0..cfg.services.len() as u8).filter(|&t| t != s) {
            let (b, a) = (&before.zk.services[t as usize], &after.zk.services[t as usize]);
            let agents_same =
                (0..cfg.hosts).filter(|&x| cfg.runs(x, t)).all(|x| before.agent(x, t) == after.agent(x, t));
            let markers = |st: &State| -> Vec<_> {
                st.zk.deploy.iter().filter(|e| e.service == t).map(|e| e.markers.clone()).collect()
            };
            if !agents_same || b.current != a.current || b.tickets != a.tickets || markers(before) != markers(&after) {
                v |= Violation::CrossService as u16;
            }
        }
    }
    let op_may_delete = matches!(action, Action::Unlock(..) | Action::Op(OpKind::Abort | OpKind::Rollback, _));
    for e in &before.zk.deploy {
        for m in &e.markers {
            let gone = after.zk.entry(e.id).is_none_or(|a| !a.markers.iter().any(|x| x.host == m.host));
            let own = matches!(action, Action::Commit(h, s) | Action::Boot(h, s, _) if *h == m.host && *s == e.service);
            if gone && !own && !op_may_delete {
                v |= Violation::MarkerTheft as u16;
            }
            if gone && op_may_delete && before.agent(m.host, e.service).phase.in_step() {
                after.freed_live_slot = true;
            }
        }
    }
    after.violations |= v;
    after
}
