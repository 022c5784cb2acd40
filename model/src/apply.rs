//! What each action does: the next state.

use crate::actions::Action;
use crate::config::{Bug, Config, Host, OpKind, Svc, Ver};
use crate::rules;
use crate::state::{DeployState, Entry, Marker, Phase, State, Ticket, Zk};

/// The state after `action` in `st` (the action must be enabled).
pub fn apply(cfg: &Config, st: &State, action: &Action) -> State {
    let mut n = st.clone();
    match *action {
        Action::Queue(h, s) => {
            let version = n.zk.services[s as usize].staged;
            n.zk.services[s as usize].tickets.push(Ticket { host: h, version });
            n.agent_mut(h, s).phase = Phase::Queued;
        }
        Action::DropTicket(h, s) => {
            n.zk.delete_ticket(h, s);
            let staged = n.zk.services[s as usize].staged;
            let a = n.agent_mut(h, s);
            a.phase = Phase::Idle;
            a.check |= a.running == Some(staged);
        }
        Action::Read(h, s) => {
            let head = match cfg.bug {
                Bug::EligibleBehindHead => n.zk.entry_of(s).expect("eligible"),
                _ => &n.zk.deploy[0],
            };
            let (entry, seen, seen_slots) = (head.id, head.data_version, head.slots_version);
            let online = n.zk.online_set(s);
            let self_online = n.zk.services[s as usize].current[h as usize].is_some();
            // From idle: a step back (only enabled on a rolling-back head).
            let back = n.agent(h, s).phase == Phase::Idle;
            let parallel = !back && rules::parallel(cfg, &n.zk, h, s);
            let faults_at_read = n.faults_left;
            n.agent_mut(h, s).phase =
                Phase::Read { entry, seen, seen_slots, online, self_online, back, parallel, faults_at_read };
        }
        Action::Fence(h, s) => fence(cfg, &mut n, h, s),
        Action::Switch(h, s) => {
            let a = n.agent_mut(h, s);
            if let Phase::Fenced { entry, from, to } = a.phase {
                a.running = Some(to);
                a.phase = Phase::Switched { entry, from, to };
            }
        }
        Action::Outcome(h, s, ok) => {
            let a = n.agent_mut(h, s);
            if let Phase::Switched { entry, from, to } = a.phase {
                if ok {
                    a.phase = Phase::Succeeded { entry, to };
                } else {
                    a.running = from;
                    a.phase = Phase::Failed { entry, to };
                }
            }
        }
        Action::Commit(h, s) => commit(cfg, &mut n, h, s),
        Action::Boot(h, s, healthy) => boot(cfg, &mut n, h, s, healthy),
        Action::Check(h, s) => {
            n.agent_mut(h, s).check = false;
            if let Some(id) = rules::done(cfg, &n.zk, s) {
                complete(cfg, &mut n, id);
            }
        }
        Action::Periodic(_, s) => {
            if let Some(id) = rules::done(cfg, &n.zk, s) {
                complete(cfg, &mut n, id);
            }
        }
        Action::Vacuous(id) => complete(cfg, &mut n, id),
        Action::Reconnect(h) => {
            n.zk.session[h as usize] = true;
            for s in 0..cfg.services.len() as Svc {
                if !cfg.runs(h, s) {
                    continue;
                }
                let a = n.agent(h, s).clone();
                if a.phase.in_step() || a.phase == Phase::Booting {
                    continue;
                }
                n.zk.services[s as usize].current[h as usize] = a.running;
                n.agent_mut(h, s).check = true;
            }
        }
        Action::Stage(s) => {
            n.stage_left &= !(1 << s);
            n.zk.services[s as usize].staged = 1;
            n.zk.push_entry(s, 1);
            n.left_behind[s as usize] = 0;
            n.rolled_back_to[s as usize] = None;
            staging_changed(cfg, &mut n, s);
        }
        Action::Expire(h) => {
            n.faults_left -= 1;
            n.zk.session[h as usize] = false;
            n.zk.drop_session(h);
            for a in agents_of(cfg, &mut n, h) {
                if matches!(a.phase, Phase::Queued | Phase::Read { .. }) {
                    a.phase = Phase::Idle;
                }
            }
        }
        Action::Crash(h) => {
            n.faults_left -= 1;
            n.zk.drop_session(h);
            n.zk.session[h as usize] = true;
            for a in agents_of(cfg, &mut n, h) {
                a.phase = Phase::Booting;
                a.check = false;
            }
        }
        Action::Op(kind, s) => {
            n.ops_left -= 1;
            operator(cfg, &mut n, kind, s);
        }
        Action::AutoPromote(_, s) => {
            if let Some(id) = n.zk.entry_of(s).map(|e| e.id) {
                let e = n.zk.entry_mut(id).expect("exists");
                e.state = DeployState::Active;
                e.canary_reason = false;
                e.promoted = true;
                e.data_version += 1;
            }
        }
        Action::Unlock(s, h) => {
            n.ops_left -= 1;
            if let Some(id) = n.zk.entry_of(s).map(|e| e.id) {
                n.zk.delete_marker(id, h);
            }
        }
    }
    n
}

fn agents_of<'a>(cfg: &Config, n: &'a mut State, h: Host) -> impl Iterator<Item = &'a mut crate::state::Agent> {
    let k = cfg.services.len();
    n.agents[h as usize * k..(h as usize + 1) * k].iter_mut().flatten()
}

/// The fence multi (`fence::try_commit`).
///
/// A step back (`on_halt = rollback`) is the same multi without the ticket's check,
/// to the entry's `rolling_back_to`; when it fails the host is idle again. In a
/// canary phase the entry's rewrite adds the host to its `canaries`.
fn fence(cfg: &Config, n: &mut State, h: Host, s: Svc) {
    let Phase::Read { entry, seen, seen_slots, self_online, back, parallel, .. } = n.agent(h, s).phase else {
        return;
    };
    let from = n.agent(h, s).running;
    let svc = &n.zk.services[s as usize];
    let ticket = back || svc.tickets.iter().any(|t| t.host == h);
    let registered = svc.current[h as usize].is_some();
    let ok = n.zk.entry(entry).is_some_and(|e| {
        let version_ok = cfg.bug == Bug::FenceWithoutVersionCheck || e.data_version == seen;
        // A rewriting fence also checks that no parallel fence committed since its read.
        let slots_ok = parallel || cfg.bug == Bug::RewriteIgnoresParallel || e.slots_version == seen_slots;
        let version_ok = version_ok && slots_ok;
        version_ok && !e.markers.iter().any(|m| m.host == h)
    });
    if !(ok && ticket && (registered || !self_online)) {
        n.agent_mut(h, s).phase = if back { Phase::Idle } else { Phase::Queued };
        return;
    }
    let canary = cfg.policy(s).canary;
    let e = n.zk.entry_mut(entry).expect("checked");
    if parallel {
        e.slots_version = e.slots_version.wrapping_add(1);
    } else {
        e.data_version += 1;
    }
    let to = if back { e.rolling_back_to.expect("read while rolling back, unchanged since") } else { e.version };
    if !back && e.canary_phase(canary) {
        e.canaries |= 1 << h;
    }
    // The canary limit is on steps forward: a step back has no canary phase.
    if !back && canary > 0 && !e.promoted {
        e.fenced_unpromoted |= 1 << h;
    }
    e.markers.push(Marker { host: h, service: s, from, to });
    if self_online {
        n.zk.services[s as usize].current[h as usize] = None;
    }
    n.agent_mut(h, s).phase = Phase::Fenced { entry, from, to };
}

/// The success or failure transaction (`commit::success`, `commit::failure`).
fn commit(cfg: &Config, n: &mut State, h: Host, s: Svc) {
    let a = n.agent(h, s).clone();
    let (entry, to, failed) = match a.phase {
        Phase::Succeeded { entry, to } => (entry, to, false),
        Phase::Failed { entry, to } => (entry, to, true),
        _ => return,
    };
    let p = cfg.policy(s);
    // The step's policy: a step back has no canary phase and `on_halt = stay`.
    let forward = n.zk.entry(entry).is_none_or(|e| to == e.version);
    let canary = if forward { p.canary } else { 0 };
    if let Some(e) = n.zk.entry_mut(entry) {
        if failed {
            e.failures += 1;
            e.failed_hosts |= 1 << h;
            // A step forward that ends after the entry turned into a rollback is
            // counted and changes nothing else.
            let late_forward = e.rolling_back_to.is_some() && forward;
            if e.failures > p.max_failures && e.state != DeployState::Halted && !late_forward {
                let roll_back = p.on_halt_rollback && forward && e.rolling_back_to.is_none();
                match a.running.filter(|_| roll_back) {
                    Some(v) => {
                        e.rolling_back_to = Some(v);
                        e.rollback_mark = true;
                        e.canary_reason = false;
                    }
                    None => {
                        e.state = DeployState::Halted;
                        e.canary_reason = false;
                    }
                }
            }
            canary_done(cfg, e, h, canary);
            e.data_version += 1;
        } else if canary_done(cfg, e, h, canary) {
            e.data_version += 1;
        }
    }
    n.zk.services[s as usize].current[h as usize] = a.running;
    n.zk.delete_marker(entry, h);
    n.zk.delete_ticket(h, s);
    let a = n.agent_mut(h, s);
    // Nothing running (a step from nothing failed): boot installs directly.
    a.phase = if a.running.is_some() { Phase::Idle } else { Phase::Booting };
    a.check = !failed || cfg.bug != Bug::NoCompletionAfterFailure;
}

/// `commit::canary_done` (as of cd77ead): records that canary `h`'s step on `e`
/// ended; the one that makes it `canary` records the end of the canary phase
/// (`canary_paused_at`) unless the entry rolls back, and pauses it for promotion
/// (reason `canary`) if it is active; an operator's pause stays. Whether it
/// changed the entry (the caller rewrites it, bumping its version).
fn canary_done(cfg: &Config, e: &mut Entry, h: Host, canary: u8) -> bool {
    let canary_step = e.canary_phase(canary) && e.canaries & (1 << h) != 0;
    if !canary_step || e.canaries_done & (1 << h) != 0 {
        return false;
    }
    e.canaries_done |= 1 << h;
    let last = e.canaries_done.count_ones() >= u32::from(canary);
    let active = e.state == DeployState::Active;
    let ends = match cfg.bug {
        Bug::NoCanaryPause => false,
        Bug::CanaryEndOnlyWhenActive => active && e.rolling_back_to.is_none(),
        Bug::CanaryPausesRollback => active,
        _ => e.rolling_back_to.is_none(),
    };
    if last && ends {
        e.canary_paused = true;
        if active {
            e.state = DeployState::Paused;
            e.canary_reason = true;
        }
    }
    true
}

/// Boot, or recovery of this service's interrupted step from its marker.
fn boot(cfg: &Config, n: &mut State, h: Host, s: Svc, healthy: bool) {
    let running = n.agent(h, s).running;
    let now = match rules::own_marker(cfg, &n.zk, h, s) {
        Some((id, m)) => {
            n.zk.delete_marker(id, h);
            n.zk.delete_ticket(h, s);
            // Finish the step when the new release is active and healthy (its
            // success commit, with the policy staged for `to`: a canary's ends its
            // canary step), else undo it (back to `from`), not counted as a failure.
            let finish = running == Some(m.to) && healthy;
            let canary = if n.zk.services[s as usize].staged == m.to { cfg.policy(s).canary } else { 0 };
            if let Some(e) = n.zk.entry_mut(id).filter(|_| finish) {
                if canary_done(cfg, e, h, canary) {
                    e.data_version += 1;
                }
            }
            if finish { Some(m.to) } else { m.from }
        }
        // A running service is kept (never switched without a fence); a host with
        // nothing running installs directly.
        None => Some(running.unwrap_or_else(|| rules::boot_version(&n.zk, s))),
    };
    n.zk.services[s as usize].current[h as usize] = now;
    let a = n.agent_mut(h, s);
    a.running = now;
    a.phase = if now.is_some() { Phase::Idle } else { Phase::Booting };
    a.check = true;
}

/// The decider deletes entry `id` (a completed rollout).
fn complete(cfg: &Config, n: &mut State, id: u8) {
    let e = n.zk.entry(id).expect("completing a live entry");
    let s = e.service;
    // Ghost state for the convergence property: who this rollout leaves behind.
    let mut left = e.failed_hosts;
    if cfg.exempt_late_hosts {
        let online = n.zk.online_set(s);
        left |= cfg.services[s as usize].runs_on & !online;
    }
    n.left_behind[s as usize] = left;
    n.rolled_back_to[s as usize] = e.rolling_back_to;
    n.promoted_completed |= e.promoted;
    n.zk.deploy.retain(|e| e.id != id);
    n.completed += 1;
}

/// The staged release of `s` changed: the smallest online host re-evaluates.
fn staging_changed(cfg: &Config, n: &mut State, s: Svc) {
    if let Some(h) = rules::min_online(&n.zk, s).filter(|&h| cfg.runs(h, s)) {
        n.agent_mut(h, s).check = true;
    }
}

/// The version most online hosts of `s` run among those `keep` accepts (ties: newest).
fn majority(zk: &Zk, s: Svc, keep: impl Fn(Ver) -> bool) -> Option<Ver> {
    let cur = &zk.services[s as usize].current;
    let count = |v: Ver| cur.iter().filter(|c| **c == Some(v)).count();
    cur.iter().flatten().copied().filter(|v| keep(*v)).max_by_key(|v| (count(*v), *v))
}

fn operator(cfg: &Config, n: &mut State, kind: OpKind, s: Svc) {
    let first = n.zk.entry_of(s).map(|e| e.id);
    match kind {
        OpKind::Pause | OpKind::Resume => {
            let Some(e) = first.and_then(|id| n.zk.entry_mut(id)) else { return };
            if !(kind == OpKind::Pause && cfg.bug == Bug::PauseWithoutRewrite) {
                e.data_version += 1;
            }
            if kind == OpKind::Pause {
                e.state = DeployState::Paused;
                e.canary_reason = false;
            } else if e.state == DeployState::Paused && e.canary_ended() {
                // An operator's pause of an entry whose canary phase ended: back to
                // the canary pause (awaiting promotion).
                e.canary_reason = true;
            } else {
                e.state = DeployState::Active;
                e.canary_reason = false;
                e.failures = 0;
                // A canary whose step failed steps again: its canary step is not
                // done, nor is the phase; a phase that ended stays ended.
                let done = e.canaries_done & !e.failed_hosts;
                if done != e.canaries_done {
                    e.canary_paused = false;
                } else if e.canary_ended() {
                    e.state = DeployState::Paused;
                    e.canary_reason = true;
                }
                e.canaries_done = done;
                e.failed_hosts = 0;
            }
        }
        OpKind::Promote => {
            let Some(e) = first.and_then(|id| n.zk.entry_mut(id)) else { return };
            if e.canary_ended() && e.state == DeployState::Paused {
                e.state = DeployState::Active;
                e.canary_reason = false;
            }
            e.promoted = true;
            e.data_version += 1;
        }
        OpKind::Abort => {
            n.aborted |= 1 << s;
            n.rolled_back_to[s as usize] = None;
            n.zk.deploy.retain(|e| e.service != s);
            if let Some(v) = majority(&n.zk, s, |_| true) {
                n.zk.services[s as usize].staged = v;
            }
            staging_changed(cfg, n, s);
        }
        OpKind::Rollback => {
            let staged = n.zk.services[s as usize].staged;
            let target = majority(&n.zk, s, |v| v != staged).unwrap_or(staged - 1);
            n.zk.deploy.retain(|e| e.service != s);
            n.zk.services[s as usize].staged = target;
            n.left_behind[s as usize] = 0;
            n.rolled_back_to[s as usize] = None;
            // The front: behind the leading entries whose hosts are mid-step; every
            // other entry without markers is re-created behind it (a new sequence).
            let lead = n.zk.deploy.iter().take_while(|e| !e.markers.is_empty()).count();
            let rest: Vec<_> = n.zk.deploy.split_off(lead);
            let rollback = n.zk.new_entry(s, target);
            let (stuck, movable): (Vec<_>, Vec<_>) = rest.into_iter().partition(|e| !e.markers.is_empty());
            n.zk.deploy.extend(stuck);
            n.zk.deploy.push(rollback);
            for e in movable {
                // The payload unchanged, under a new sequence number (only its
                // `upgrading/` is created again, not a `rollback` mark).
                let moved = Entry { id: n.zk.next_seq, data_version: 0, slots_version: 0, rollback_mark: false, ..e };
                n.zk.next_seq += 1;
                n.zk.deploy.push(moved);
            }
            staging_changed(cfg, n, s);
        }
        OpKind::Unlock => {}
    }
}
