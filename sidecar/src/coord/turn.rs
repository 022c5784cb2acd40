//! Whose turn is it? SPEC step 3, as a pure decision over a snapshot of ZooKeeper.
//!
//! A host may start its step when:
//! 1. the head of `deploy/` (lowest sequence) is its service at the staged version, `active`;
//! 2. its ticket is among the first `max_parallel` tickets (by sequence);
//! 3. online hosts minus one is at least the quorum (of online plus upgrading hosts);
//! 4. fewer than `max_parallel` upgrading markers exist under the head entry.
//!
//! The snapshot is taken in that order of cost: a host that is not at the front of
//! the ticket queue reads nothing else and watches only the `max_parallel` tickets
//! just ahead of it, so ZooKeeper traffic per host does not grow with the number of
//! hosts (no herd).
//!
//! # Why the K tickets ahead
//! A host is eligible by position when fewer than K = `max_parallel` tickets are
//! ahead of it. While the K tickets just ahead of it all exist, at least K are ahead,
//! so it cannot have become eligible: watching exactly those K wakes it as soon as it
//! may be, whichever of the front tickets finishes first (a host watching only its
//! predecessor misses a further ticket finishing first and leaves a slot free).
//! Each ticket's deletion wakes at most the K hosts behind it: constant in N.

use super::deploys::Slot;
use znode_schema::{DeployState, Policy, Staging, TicketName};

/// The head deploy entry as read: a slot of the one queue reader.
pub type Head = Slot;

/// What a front host sees.
#[derive(Debug, Clone)]
pub struct Front {
    /// The head of `deploy/`, if any.
    pub head: Option<Head>,
    /// Children of `current/<service>`.
    pub online: u32,
    /// Upgrading markers under the head entry.
    pub upgrading: u32,
    /// Whether this host is among the online ones.
    pub self_online: bool,
    /// Whether this host's own marker is among the head's markers (a fence whose
    /// reply was lost landed): it is this host's slot, not a taken one.
    pub own_marker: bool,
    /// The hosts holding a marker under the head (at most `max_parallel` in a sound
    /// rollout): who of the front has fenced, for the slot order ([`predecessor`]).
    pub fenced: Vec<String>,
    /// The data version of the head's `upgrading/` as read (`None`: missing, or not
    /// read): a rewriting fence checks it, so that it fails when a parallel fence
    /// committed since the read.
    pub slots: Option<i32>,
    /// Whether this host's fence may be parallel ([`parallel`]): set only by a
    /// snapshot that read the tickets with the rest ([`crate::coord::fence::peek`]).
    pub parallel: bool,
}

impl Front {
    /// The front `host` sees from the children of `current/<service>` (`online`) and
    /// of the head's `upgrading/` (`markers`).
    pub fn new(head: Option<Head>, online: &[String], markers: &[String], host: &str) -> Front {
        let has = |names: &[String]| names.iter().any(|n| n == host);
        Front {
            head,
            online: online.len() as u32,
            upgrading: markers.len() as u32,
            self_online: has(online),
            own_marker: has(markers),
            fenced: markers.to_vec(),
            slots: None,
            parallel: false,
        }
    }
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Eligible: fence now.
    Go,
    /// The host has no ticket in the queue (it must create one first).
    NoTicket,
    /// Not among the first `max_parallel` tickets: watch the `max_parallel` tickets
    /// just ahead (see the module docs).
    Behind {
        /// The tickets just ahead of ours, nearest last.
        ahead: Vec<TicketName>,
    },
    /// The head of the deploy queue is another rollout (or none): wait for `deploy/`.
    NotHead,
    /// The head is ours but not active (paused, halted) or unreadable: wait for it to change.
    Inactive(String),
    /// Taking this host down would break the quorum: wait for `current/<service>`.
    Quorum {
        /// Hosts online now.
        online: u32,
        /// Hosts that must stay online.
        required: u32,
    },
    /// Every slot is taken: wait for `upgrading/`.
    Slots {
        /// Markers now.
        upgrading: u32,
    },
    /// The canary phase has its hosts: wait until they stepped and the rollout is
    /// promoted.
    Canary {
        /// Canaries fenced so far (the policy's `canary`).
        canaries: u32,
    },
}

/// Position check: the host's place among `tickets` (sorted by sequence).
pub fn position(tickets: &[TicketName], me: &TicketName, staging: &Staging) -> Verdict {
    let Some(pos) = tickets.iter().position(|t| t == me) else {
        return Verdict::NoTicket;
    };
    let k = staging.policy.max_parallel.max(1) as usize;
    if pos >= k {
        return Verdict::Behind { ahead: tickets[pos - k..pos].to_vec() };
    }
    Verdict::Go
}

/// The slot order among the front (`max_parallel` > 1): the unfenced ticket just
/// ahead of `me` among the first `max_parallel` tickets, which fences first. `None`
/// when `me` is the first unfenced one (or has fenced), with one slot, or in a
/// canary phase (canaries are let through out of order).
///
/// # Why an order
/// A rewriting fence rewrites the head entry at the version it read, so two hosts
/// fencing on the same read cannot both win (a parallel fence, [`parallel`], needs
/// no order). Without an order, each freed slot (and the start
/// of a rollout, with `max_parallel` slots free at once) woke every waiting front host
/// and all of them fenced on the same version: one won and the others read again, set
/// their watches again and were woken by the next fence, a herd of lost fences that
/// grew with `max_parallel`. In order, the first unfenced front host fences and each
/// of the others waits for the marker of the one just ahead: the slots fill as a chain
/// of single fences, and a fence wakes one host.
///
/// The order is a courtesy, not the guarantee (the fence's versions are):
/// a host whose predecessor does not fence within a patience fences on its own.
pub fn predecessor(tickets: &[TicketName], me: &TicketName, staging: &Staging, front: &Front) -> Option<TicketName> {
    let k = staging.policy.max_parallel.max(1) as usize;
    let canary_phase =
        front.head.as_ref().and_then(|h| h.entry.as_ref()).is_some_and(|e| e.canary_phase(staging.policy.canary));
    if k == 1 || front.own_marker || canary_phase {
        return None;
    }
    let unfenced = tickets.iter().take(k).filter(|t| !front.fenced.contains(&t.host));
    let mut before: Option<&TicketName> = None;
    for t in unfenced {
        if t == me {
            return before.cloned();
        }
        before = Some(t);
    }
    None
}

/// Whether the fence of the host holding `me` may be parallel: check the head
/// entry's version without rewriting it (and bump `upgrading/`'s), so that the
/// front hosts' fences do not conflict. `tickets` and `online` (the names under
/// `current/<service>`) are of the same snapshot as `front`.
///
/// It may when the head is not in a canary phase (a canary fence rewrites the
/// entry's `canaries`), `upgrading/` exists, `me` and the host of every marker hold
/// one of the first `max_parallel` tickets, and the quorum holds even if every
/// unfenced online host of those tickets fences. Then the fences of the front
/// cannot exceed the slots (each marker's host holds a ticket of the window, which
/// only moves forward) nor the quorum (the count covers all of them), whatever
/// their order. A marker whose host left the window (its session expired mid-step)
/// makes every fence rewrite again, and a rewriting fence fails when a parallel one
/// committed after its read (it checks `upgrading/`'s version). Checked with the
/// model (`model/`, `rules::parallel`).
pub fn parallel(tickets: &[TicketName], online: &[String], staging: &Staging, front: &Front, me: &TicketName) -> bool {
    let k = staging.policy.max_parallel.max(1) as usize;
    let Some(entry) = front.head.as_ref().and_then(|h| h.entry.as_ref()) else { return false };
    if k == 1 || front.slots.is_none() || entry.canary_phase(staging.policy.canary) || entry.rolling_back_to.is_some() {
        return false;
    }
    let window = &tickets[..tickets.len().min(k)];
    let in_window = |host: &str| window.iter().any(|t| t.host == host);
    if !window.contains(me) || !front.fenced.iter().all(|h| in_window(h)) {
        return false;
    }
    let unfenced_online =
        window.iter().filter(|t| !front.fenced.contains(&t.host) && online.contains(&t.host)).count() as u32;
    let required = staging.policy.quorum.required(front.online + front.upgrading);
    front.online >= required + unfenced_online
}

/// The front host's decision, once [`position`] said `Go`. `host` is this host's id:
/// in a canary phase only the first `canary` hosts fenced (and those again, after an
/// interrupted step was undone) may step.
pub fn decide(staging: &Staging, front: &Front, host: &str) -> Verdict {
    let Some(head) = &front.head else { return Verdict::NotHead };
    let Some(entry) = &head.entry else {
        return Verdict::Inactive(format!("deploy entry {} is unreadable", head.name));
    };
    if entry.service != staging.service || entry.version != staging.version || entry.rolling_back_to.is_some() {
        return Verdict::NotHead;
    }
    if front.own_marker {
        // A fence of this host for this rollout landed although its reply was lost
        // (a pause after it does not undo it): the slot is ours.
        return Verdict::Go;
    }
    if entry.state != DeployState::Active {
        return Verdict::Inactive(entry.state.to_string());
    }
    if front.upgrading >= staging.policy.max_parallel {
        return Verdict::Slots { upgrading: front.upgrading };
    }
    let canary = staging.policy.canary;
    if entry.canary_phase(canary) && entry.canaries.len() as u32 >= canary && !entry.canaries.iter().any(|h| h == host)
    {
        return Verdict::Canary { canaries: entry.canaries.len() as u32 };
    }
    let required = staging.policy.quorum.required(front.online + front.upgrading);
    // A host that is not online takes nobody down by stepping.
    let after = if front.self_online { front.online.saturating_sub(1) } else { front.online };
    if after < required {
        return Verdict::Quorum { online: front.online, required };
    }
    Verdict::Go
}

/// The decision of a host that goes back (`on_halt = rollback`) from the rollout's
/// version to the entry's `rolling_back_to`: the head must be that entry, active (a
/// failure while rolling back halts it), with a free slot and the quorum kept, as
/// for any step; there is no ticket queue (only the hosts that stepped go back) and
/// no canary phase.
pub fn decide_return(policy: &Policy, front: &Front) -> Verdict {
    let Some(entry) = front.head.as_ref().and_then(|h| h.entry.as_ref()) else { return Verdict::NotHead };
    if entry.rolling_back_to.is_none() {
        return Verdict::NotHead;
    }
    if front.own_marker {
        return Verdict::Go;
    }
    if entry.state != DeployState::Active {
        return Verdict::Inactive(entry.state.to_string());
    }
    if front.upgrading >= policy.max_parallel {
        return Verdict::Slots { upgrading: front.upgrading };
    }
    let required = policy.quorum.required(front.online + front.upgrading);
    let after = if front.self_online { front.online.saturating_sub(1) } else { front.online };
    if after < required {
        return Verdict::Quorum { online: front.online, required };
    }
    Verdict::Go
}

#[cfg(test)]
mod tests {
    use super::*;
    use znode_schema::{Artifact, ArtifactFormat, DeployEntry, DeployName, Quorum};

    fn staging(quorum: Quorum, max_parallel: u32) -> Staging {
        Staging {
            service: "api".into(),
            version: "2".into(),
            artifact: Artifact {
                url: "file:///x".into(),
                sha256: "0".repeat(64),
                size: 1,
                format: ArtifactFormat::File,
                signature: None,
            },
            policy: Policy { quorum, max_parallel, ..Policy::default() },
            staged_at: "t".into(),
            staged_by: "u".into(),
        }
    }

    fn entry(service: &str, version: &str, state: DeployState) -> DeployEntry {
        DeployEntry {
            service: service.into(),
            version: version.into(),
            state,
            created_at: "t".into(),
            created_by: "u".into(),
            ..DeployEntry::default()
        }
    }

    fn front(entry: Option<DeployEntry>, online: u32, upgrading: u32) -> Front {
        let head = Head { name: DeployName { seq: 1 }, entry, version: 0, raw: vec![], mtime: 0 };
        Front {
            head: Some(head),
            online,
            upgrading,
            self_online: true,
            own_marker: false,
            fenced: vec![],
            slots: Some(0),
            parallel: false,
        }
    }

    fn decide_me(s: &Staging, f: &Front) -> Verdict {
        decide(s, f, "me")
    }

    fn t(host: &str, seq: u64) -> TicketName {
        TicketName { host: host.into(), seq }
    }

    #[test]
    fn position_in_queue() {
        let s = staging(Quorum::Count(1), 2);
        let q = [t("a", 1), t("b", 2), t("c", 5)];
        assert_eq!(position(&q, &t("a", 1), &s), Verdict::Go);
        assert_eq!(position(&q, &t("b", 2), &s), Verdict::Go);
        assert_eq!(position(&q, &t("c", 5), &s), Verdict::Behind { ahead: vec![t("a", 1), t("b", 2)] });
        assert_eq!(position(&q, &t("d", 9), &s), Verdict::NoTicket);
        let q = [t("a", 1), t("b", 2), t("c", 5), t("d", 7), t("e", 8)];
        assert_eq!(
            position(&q, &t("e", 8), &staging(Quorum::Count(1), 3)),
            Verdict::Behind { ahead: vec![t("b", 2), t("c", 5), t("d", 7)] }
        );
        assert_eq!(position(&q, &t("b", 2), &staging(Quorum::Count(1), 1)), Verdict::Behind { ahead: vec![t("a", 1)] });
    }

    #[test]
    fn the_front_fences_in_ticket_order() {
        let s = staging(Quorum::Count(1), 3);
        let q = [t("a", 1), t("b", 2), t("c", 5), t("d", 7)];
        let mut f = front(Some(entry("api", "2", DeployState::Active)), 4, 0);
        // Nobody fenced: a goes first, b waits for a, c for b; d is not at the front.
        assert_eq!(predecessor(&q, &t("a", 1), &s, &f), None);
        assert_eq!(predecessor(&q, &t("b", 2), &s, &f), Some(t("a", 1)));
        assert_eq!(predecessor(&q, &t("c", 5), &s, &f), Some(t("b", 2)));
        assert_eq!(predecessor(&q, &t("d", 7), &s, &f), None);
        // a fenced: b is first; c waits for b.
        f.fenced = vec!["a".into()];
        assert_eq!(predecessor(&q, &t("b", 2), &s, &f), None);
        assert_eq!(predecessor(&q, &t("c", 5), &s, &f), Some(t("b", 2)));
        // b fenced out of order (its patience ran out): c waits for a no more.
        f.fenced = vec!["b".into()];
        assert_eq!(predecessor(&q, &t("c", 5), &s, &f), Some(t("a", 1)));
        // One slot, an own marker, a canary phase: no order.
        assert_eq!(predecessor(&q, &t("b", 2), &staging(Quorum::Count(1), 1), &f), None);
        let mut own = f.clone();
        own.own_marker = true;
        assert_eq!(predecessor(&q, &t("c", 5), &s, &own), None);
        let mut canary = staging(Quorum::Count(1), 3);
        canary.policy.canary = 1;
        assert_eq!(predecessor(&q, &t("c", 5), &canary, &f), None);
    }

    #[test]
    fn the_front_fences_in_parallel_when_the_count_covers_it() {
        let s = staging(Quorum::Count(2), 3);
        let q = [t("a", 1), t("b", 2), t("c", 5), t("d", 7), t("e", 8)];
        let names = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let all = names(&["a", "b", "c", "d", "e"]);
        let head = front(Some(entry("api", "2", DeployState::Active)), 0, 0).head;
        let f = Front { slots: Some(0), ..Front::new(head.clone(), &all, &[], "a") };
        // 5 online, 3 unfenced in the window, 2 required: 5 >= 2 + 3.
        assert!(parallel(&q, &all, &s, &f, &t("a", 1)));
        assert!(parallel(&q, &all, &s, &f, &t("c", 5)));
        // Not in the window.
        assert!(!parallel(&q, &all, &s, &f, &t("d", 7)));
        // A quorum of 3: the window's hosts could not all go.
        assert!(!parallel(&q, &all, &staging(Quorum::Count(3), 3), &f, &t("a", 1)));
        // b fenced (its marker, not online): 4 online, 2 unfenced, 5 in all: 4 >= 2 + 2.
        let online = names(&["a", "c", "d", "e"]);
        let g = Front { slots: Some(1), ..Front::new(head.clone(), &online, &names(&["b"]), "a") };
        assert!(parallel(&q, &online, &s, &g, &t("a", 1)));
        // A marker of a host outside the window (its ticket went): rewrite.
        let h = Front { slots: Some(1), ..Front::new(head.clone(), &online, &names(&["x"]), "a") };
        assert!(!parallel(&q, &online, &s, &h, &t("a", 1)));
        // upgrading/ missing, one slot, a canary phase: rewrite.
        assert!(!parallel(&q, &all, &s, &Front { slots: None, ..f.clone() }, &t("a", 1)));
        assert!(!parallel(&q, &all, &staging(Quorum::Count(0), 1), &f, &t("a", 1)));
        let mut canary = staging(Quorum::Count(0), 3);
        canary.policy.canary = 1;
        assert!(!parallel(&q, &all, &canary, &f, &t("a", 1)));
    }

    #[test]
    fn an_own_marker_is_this_hosts_slot() {
        let a = Some(entry("api", "2", DeployState::Active));
        let mut f = front(a, 5, 1);
        assert_eq!(decide_me(&staging(Quorum::Count(0), 1), &f), Verdict::Slots { upgrading: 1 });
        f.own_marker = true;
        assert_eq!(decide_me(&staging(Quorum::Count(0), 1), &f), Verdict::Go);
    }

    #[test]
    fn head_must_be_this_rollout_and_active() {
        let s = staging(Quorum::Count(1), 1);
        let active = entry("api", "2", DeployState::Active);
        assert_eq!(decide_me(&s, &front(Some(active.clone()), 3, 0)), Verdict::Go);
        assert_eq!(decide_me(&s, &front(Some(entry("web", "2", DeployState::Active)), 3, 0)), Verdict::NotHead);
        assert_eq!(decide_me(&s, &front(Some(entry("api", "1", DeployState::Active)), 3, 0)), Verdict::NotHead);
        assert_eq!(
            decide_me(&s, &front(Some(entry("api", "2", DeployState::Paused)), 3, 0)),
            Verdict::Inactive("paused".into())
        );
        assert!(matches!(decide_me(&s, &front(None, 3, 0)), Verdict::Inactive(_)));
        let no_head = Front { head: None, ..front(None, 3, 0) };
        assert_eq!(decide_me(&s, &no_head), Verdict::NotHead);
    }

    #[test]
    fn quorum_counts_online_minus_self() {
        let a = Some(entry("api", "2", DeployState::Active));
        let s3 = staging(Quorum::Count(3), 2);
        assert_eq!(decide_me(&s3, &front(a.clone(), 4, 0)), Verdict::Go);
        assert_eq!(decide_me(&s3, &front(a.clone(), 3, 1)), Verdict::Quorum { online: 3, required: 3 });
        // 60% of 5 (online + upgrading) is 3.
        let p = staging(Quorum::Percent(60), 2);
        assert_eq!(decide_me(&p, &front(a.clone(), 4, 1)), Verdict::Go);
        assert_eq!(decide_me(&p, &front(a.clone(), 3, 1)), Verdict::Quorum { online: 3, required: 3 });
        // One host, default quorum 1: never.
        let s1 = staging(Quorum::Count(1), 1);
        assert_eq!(decide_me(&s1, &front(a, 1, 0)), Verdict::Quorum { online: 1, required: 1 });
    }

    #[test]
    fn slots_are_bounded_by_max_parallel() {
        let a = Some(entry("api", "2", DeployState::Active));
        assert_eq!(decide_me(&staging(Quorum::Count(0), 1), &front(a.clone(), 5, 1)), Verdict::Slots { upgrading: 1 });
        assert_eq!(decide_me(&staging(Quorum::Count(0), 2), &front(a, 5, 1)), Verdict::Go);
    }

    #[test]
    fn an_offline_host_does_not_lower_the_count() {
        let a = Some(entry("api", "2", DeployState::Active));
        let mut f = front(a, 2, 0);
        f.self_online = false;
        assert_eq!(decide_me(&staging(Quorum::Count(2), 1), &f), Verdict::Go);
    }

    #[test]
    fn a_canary_phase_admits_its_canaries_only() {
        let mut s = staging(Quorum::Count(0), 2);
        s.policy.canary = 1;
        let mut e = entry("api", "2", DeployState::Active);
        assert_eq!(decide_me(&s, &front(Some(e.clone()), 5, 0)), Verdict::Go, "the first host is a canary");
        e.canaries = vec!["other".into()];
        assert_eq!(decide_me(&s, &front(Some(e.clone()), 5, 0)), Verdict::Canary { canaries: 1 });
        e.canaries = vec!["me".into()];
        assert_eq!(decide_me(&s, &front(Some(e.clone()), 5, 0)), Verdict::Go, "a canary steps again after an undo");
        e.canaries = vec!["other".into()];
        e.promoted_by = Some("ops".into());
        assert_eq!(decide_me(&s, &front(Some(e), 5, 0)), Verdict::Go, "promoted: everyone");
    }

    #[test]
    fn going_back_needs_the_rolling_back_head_a_slot_and_the_quorum() {
        let p = Policy { quorum: Quorum::Count(2), max_parallel: 1, ..Policy::default() };
        let mut e = entry("api", "2", DeployState::Active);
        assert_eq!(decide_return(&p, &front(Some(e.clone()), 3, 0)), Verdict::NotHead, "not rolling back");
        e.rolling_back_to = Some("1".into());
        assert_eq!(decide_return(&p, &front(Some(e.clone()), 3, 0)), Verdict::Go);
        assert_eq!(decide_return(&p, &front(Some(e.clone()), 3, 1)), Verdict::Slots { upgrading: 1 });
        assert_eq!(decide_return(&p, &front(Some(e.clone()), 2, 0)), Verdict::Quorum { online: 2, required: 2 });
        let s = staging(Quorum::Count(0), 1);
        assert_eq!(decide_me(&s, &front(Some(e.clone()), 3, 0)), Verdict::NotHead, "nobody moves forward");
        e.state = DeployState::Halted;
        assert_eq!(decide_return(&p, &front(Some(e), 3, 0)), Verdict::Inactive("halted".into()));
    }
}
