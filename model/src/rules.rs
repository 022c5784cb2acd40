//! The protocol's decisions as pure functions over the state, mirroring
//! `sidecar/src/turn.rs` (eligibility) and `sidecar/src/commit.rs` (completion).

use crate::config::{Bug, Config, Host, Svc, Ver};
use crate::state::{DeployState, Entry, Marker, State, Zk};

/// SPEC step 3 for host `h`'s ticket of service `s`, on the state now: the head
/// entry is `s` at the staged version and active, the ticket is among the first
/// `max_parallel`, online − 1 (− 0 when not online) ≥ quorum, markers < `max_parallel`.
pub fn eligible(cfg: &Config, zk: &Zk, h: Host, s: Svc) -> bool {
    let p = cfg.policy(s);
    let svc = &zk.services[s as usize];
    let Some(pos) = svc.tickets.iter().position(|t| t.host == h) else { return false };
    if svc.tickets[pos].version != svc.staged {
        return false;
    }
    if pos >= p.max_parallel as usize && !canary_behind(cfg, zk, h, s) {
        return false;
    }
    let head = match cfg.bug {
        Bug::EligibleBehindHead => zk.entry_of(s),
        _ => zk.deploy.first(),
    };
    let Some(head) = head else { return false };
    let rolling_back = head.rolling_back_to.is_some() && cfg.bug != Bug::ForwardWhileRollingBack;
    if head.service != s || head.version != svc.staged || rolling_back || head.state != DeployState::Active {
        return false;
    }
    if head.markers.len() >= p.max_parallel as usize {
        return false;
    }
    let limit = head.canary_phase(p.canary) && head.canaries.count_ones() >= u32::from(p.canary);
    if limit && head.canaries & (1 << h) == 0 && cfg.bug != Bug::IgnoreCanaryLimit {
        return false;
    }
    quorum_kept(cfg, zk, h, s)
}

/// `turn::parallel` (issue 16), on the state of host `h`'s read for service `s`:
/// whether its fence may check the head entry's version instead of rewriting it
/// (fences of the front do not conflict). It may when the head is not in a canary
/// phase, every marker's host holds one of the first `max_parallel` tickets (as
/// does `h`), and the quorum holds even if every unfenced online host of those
/// tickets fences. Never with [`Bug::NoParallelFence`].
pub fn parallel(cfg: &Config, zk: &Zk, h: Host, s: Svc) -> bool {
    let p = cfg.policy(s);
    let Some(head) = zk.deploy.first() else { return false };
    if cfg.bug == Bug::NoParallelFence || head.canary_phase(p.canary) || head.rolling_back_to.is_some() {
        return false;
    }
    let svc = &zk.services[s as usize];
    let front: Vec<Host> = svc.tickets.iter().take(p.max_parallel as usize).map(|t| t.host).collect();
    let ticketless = head.markers.iter().any(|m| !front.contains(&m.host));
    if !front.contains(&h) || (ticketless && cfg.bug != Bug::ParallelBesideTicketlessMarker) {
        return false;
    }
    let fenced = |x: Host| head.markers.iter().any(|m| m.host == x);
    let unfenced_online = front.iter().filter(|&&x| !fenced(x) && svc.current[x as usize].is_some()).count();
    usize::from(zk.online(s)) >= usize::from(p.quorum) + unfenced_online
}

/// `waiting::canary_behind` (cd77ead): host `h`, queued behind the ticket window
/// of `s`, is a canary of the rollout whose canary phase is full. It skips the
/// "behind" wait and goes to the front decision (the hosts ahead of it wait for
/// the canaries).
pub fn canary_behind(cfg: &Config, zk: &Zk, h: Host, s: Svc) -> bool {
    let canary = cfg.policy(s).canary;
    cfg.bug != Bug::CanaryWaitsBehind
        && canary > 0
        && rollout(zk, s).is_some_and(|e| {
            e.canary_phase(canary) && e.canaries.count_ones() >= u32::from(canary) && e.canaries & (1 << h) != 0
        })
}

/// Online − 1 (− 0 when `h` is not online) ≥ quorum.
fn quorum_kept(cfg: &Config, zk: &Zk, h: Host, s: Svc) -> bool {
    let online = zk.online(s);
    let self_online = zk.services[s as usize].current[h as usize].is_some();
    let after = if self_online { online.saturating_sub(1) } else { online };
    after >= cfg.policy(s).quorum
}

/// `turn::decide_return` for host `h` of service `s` (`on_halt = rollback`): the
/// head of `deploy/` is the service's entry rolling back, active, with a free slot,
/// and the quorum kept. (Who goes back, a host at the entry's version not in its
/// `failed_hosts`, is the caller's.)
pub fn eligible_back(cfg: &Config, zk: &Zk, h: Host, s: Svc) -> bool {
    let Some(head) = zk.deploy.first() else { return false };
    if head.service != s || head.rolling_back_to.is_none() || head.state != DeployState::Active {
        return false;
    }
    if head.markers.len() >= cfg.policy(s).max_parallel as usize {
        return false;
    }
    cfg.bug == Bug::ReturnIgnoresQuorum || quorum_kept(cfg, zk, h, s)
}

/// The rollout of `s` (`Queue::rollout` of the staged version): the service's
/// first entry, at the staged version, not rolling back.
pub fn rollout(zk: &Zk, s: Svc) -> Option<&Entry> {
    entry_to_complete(zk, s).filter(|e| e.rolling_back_to.is_none())
}

/// `promote::auto_promote`'s condition on entry `e`: the policy has
/// `auto_promote`, the entry awaits promotion, at least one canary did not fail,
/// and every canary that did not fail is online at the version.
pub fn auto_promotable(cfg: &Config, zk: &Zk, e: &Entry) -> bool {
    let healthy = e.canaries_done & !e.failed_hosts;
    let cur = &zk.services[e.service as usize].current;
    cfg.policy(e.service).auto_promote
        && e.awaits_promotion()
        && healthy != 0
        && (0..cfg.hosts).filter(|x| healthy & (1 << x) != 0).all(|x| cur[x as usize] == Some(e.version))
}

/// The entry the completion decider of service `s` looks at: the service's first
/// entry, when it rolls out the staged version.
pub fn entry_to_complete(zk: &Zk, s: Svc) -> Option<&Entry> {
    zk.entry_of(s).filter(|e| e.version == zk.services[s as usize].staged)
}

/// `commit::complete`: whether the decider of service `s` deletes its entry now:
/// active (not paused, not halted), no tickets, no markers, every online host not
/// in `failed_hosts` at the entry's target (the staged version, or the one it rolls
/// back to).
pub fn done(cfg: &Config, zk: &Zk, s: Svc) -> Option<u8> {
    let e = entry_to_complete(zk, s)?;
    let svc = &zk.services[s as usize];
    let state_ok = match cfg.bug {
        Bug::CompleteWhileHalted => e.state != DeployState::Paused,
        _ => e.state == DeployState::Active,
    };
    let target = e.target();
    let hosts_ok = svc
        .current
        .iter()
        .enumerate()
        .all(|(h, c)| c.is_none() || *c == Some(target) || e.failed_hosts & (1 << h) != 0);
    // The completion multi deletes a rolling-back entry's `rollback` mark if it
    // exists (afb8d8e; before, unconditionally: NoNode when it is missing).
    let mark_ok = e.rolling_back_to.is_none() || e.rollback_mark || cfg.bug != Bug::CompletionNeedsMark;
    (state_ok && svc.tickets.is_empty() && e.markers.is_empty() && hosts_ok && mark_ok).then_some(e.id)
}

/// The online host of `s` with the smallest id (the periodic no-op decider).
pub fn min_online(zk: &Zk, s: Svc) -> Option<Host> {
    zk.services[s as usize].current.iter().position(|c| c.is_some()).map(|h| h as Host)
}

/// This host's marker that recovery of service `s` acts on: under an entry of
/// `s` (with [`Bug::IgnoreServiceInRecovery`]: under any entry, first in order).
pub fn own_marker(cfg: &Config, zk: &Zk, h: Host, s: Svc) -> Option<(u8, Marker)> {
    zk.deploy
        .iter()
        .filter(|e| e.service == s || cfg.bug == Bug::IgnoreServiceInRecovery)
        .find_map(|e| e.markers.iter().find(|m| m.host == h).map(|m| (e.id, m.clone())))
}

/// The version boot installs on a host with nothing running: the most popular
/// among online hosts (ties: the newest), else the staged one.
pub fn boot_version(zk: &Zk, s: Svc) -> Ver {
    let svc = &zk.services[s as usize];
    let mut best: Option<(usize, Ver)> = None;
    for v in svc.current.iter().flatten() {
        let n = svc.current.iter().filter(|c| **c == Some(*v)).count();
        if best.is_none_or(|(bn, bv)| (n, *v) > (bn, bv)) {
            best = Some((n, *v));
        }
    }
    best.map_or(svc.staged, |(_, v)| v)
}

/// Whether `state` has an enabled protocol action (anything but a fault, an
/// operator action or a stage): used by the no-deadlock property.
pub fn can_progress(cfg: &Config, state: &State) -> bool {
    let mut actions = Vec::new();
    crate::actions::protocol_actions(cfg, state, &mut actions);
    !actions.is_empty()
}

/// Whether every online host of every service without a deploy entry (and not
/// aborted) runs the staged version (the version rolled back to, when its last
/// entry rolled back), but those its last rollout left behind.
pub fn converged(cfg: &Config, st: &State) -> bool {
    (0..cfg.services.len() as Svc).all(|s| {
        let svc = &st.zk.services[s as usize];
        let target = st.rolled_back_to[s as usize].unwrap_or(svc.staged);
        st.aborted & (1 << s) != 0
            || st.zk.entry_of(s).is_some()
            || svc
                .current
                .iter()
                .enumerate()
                .all(|(h, c)| c.is_none() || *c == Some(target) || st.left_behind[s as usize] & (1 << h) != 0)
    })
}
