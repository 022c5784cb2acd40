//! Slots never left free: for each deploy entry, the time during which it was the
//! head, active, had fewer markers than `max_parallel`, and some ticket holder of
//! its service (not in `failed_hosts`, not upgrading) could step by quorum (online
//! minus one, or minus nothing for a host not online, at least the quorum of online
//! plus upgrading hosts: the sidecar's own count). Only stretches longer than a
//! grace count (the handoff latency and the quorum regained after a success are
//! not free slots); the report keeps the longest stretch beyond the grace per entry.

use super::State;
use std::collections::{BTreeMap, BTreeSet};
use znode_schema::{DeployName, DeployState, Layout, Ticket, TicketName};

/// The default grace: a handoff takes a watch, a read and a fence.
pub const GRACE_MS: i64 = 1_500;

/// Tracks the free stretches of every entry over a replay.
#[derive(Debug)]
pub(super) struct Slots {
    grace_ms: i64,
    /// Entries free now: since when, and their service.
    open: BTreeMap<DeployName, (i64, String)>,
    /// Longest stretch beyond the grace, by `<service>/<entry>`.
    pub(super) max: BTreeMap<String, i64>,
}

impl Slots {
    pub(super) fn new(grace_ms: i64) -> Self {
        Slots { grace_ms, open: BTreeMap::new(), max: BTreeMap::new() }
    }

    /// The state right after a transaction at `at_ms`.
    pub(super) fn observe(&mut self, at_ms: i64, state: &State, l: &Layout) {
        let free = free_head(state, l);
        let closed: Vec<DeployName> =
            self.open.keys().filter(|e| free.as_ref().map(|(n, _)| n) != Some(e)).copied().collect();
        for e in closed {
            let (since, svc) = self.open.remove(&e).expect("open");
            self.record(&e, &svc, at_ms - since);
        }
        if let Some((name, svc)) = free {
            self.open.entry(name).or_insert((at_ms, svc));
        }
        // An entry seen at all gets a row, free or not.
        if let Some((name, Some(e))) = state.deploys(l).into_iter().next() {
            self.max.entry(key(&e.service, &name)).or_insert(0);
        }
    }

    /// Closes the stretches still open at the end of the history (`at_ms`).
    pub(super) fn finish(&mut self, at_ms: i64) {
        for (e, (since, svc)) in std::mem::take(&mut self.open) {
            self.record(&e, &svc, at_ms - since);
        }
    }

    fn record(&mut self, e: &DeployName, svc: &str, len: i64) {
        let beyond = (len - self.grace_ms).max(0);
        let m = self.max.entry(key(svc, e)).or_insert(0);
        *m = (*m).max(beyond);
    }
}

fn key(svc: &str, e: &DeployName) -> String {
    format!("{svc}/{e}")
}

/// The head entry and its service when it has a free slot some ticket holder could take.
fn free_head(state: &State, l: &Layout) -> Option<(DeployName, String)> {
    let (name, entry) = state.deploys(l).into_iter().next()?;
    let e = entry?;
    if e.state != DeployState::Active {
        return None;
    }
    let st = state.staging(l, &e.service).filter(|st| st.version == e.version)?;
    let markers: BTreeSet<String> = state.children(&l.upgrading_dir(&name)).into_iter().collect();
    if markers.len() >= st.policy.max_parallel as usize {
        return None;
    }
    let online = state.online(l, &e.service);
    let required = st.policy.quorum.required((online.len() + markers.len()) as u32) as usize;
    let holders = state.children(&l.staging(&e.service)).into_iter().filter_map(|c| {
        let t = TicketName::parse(&c)?;
        let ticket = state.get::<Ticket>(&format!("{}/{c}", l.staging(&e.service)))?;
        (ticket.version == st.version).then_some(t.host)
    });
    let could_step = holders
        .filter(|h| !e.failed_hosts.contains(h) && !markers.contains(h))
        .any(|h| online.len() - usize::from(online.contains_key(&h)) >= required);
    could_step.then_some((name, e.service))
}

#[cfg(test)]
mod tests {
    use super::super::check;
    use super::super::tests::{create, entry, multi, staging};
    use crate::txnlog::{Op, Txn};
    use znode_schema::Layout;

    fn ticket(host: &str) -> Vec<u8> {
        format!(r#"{{"schema":1,"host":"{host}","version":"2","at":"t"}}"#).into_bytes()
    }

    fn at(mut t: Txn, ms: i64) -> Txn {
        t.time_ms = ms;
        t
    }

    fn del(path: &str) -> Op {
        Op::Delete { path: path.into(), by_session: false }
    }

    /// web, max_parallel 2, quorum 0, hosts a, b, c queued; a and b fence at once;
    /// a finishes at 10 s, c fences only at `c_fences_ms`.
    fn history(c_fences_ms: i64) -> Vec<Txn> {
        let d = "/t/deploy/deploy-0000000001";
        vec![
            at(multi(1, vec![create("/t/staging/web", staging("web", "2", 2, 0)), create(d, entry("web", "2"))]), 0),
            at(
                multi(
                    2,
                    vec![
                        create("/t/staging/web/a-0000000001", ticket("a")),
                        create("/t/staging/web/b-0000000002", ticket("b")),
                        create("/t/staging/web/c-0000000003", ticket("c")),
                    ],
                ),
                100,
            ),
            at(multi(3, vec![create(&format!("{d}/upgrading/a"), b"{}".to_vec())]), 200),
            at(multi(4, vec![create(&format!("{d}/upgrading/b"), b"{}".to_vec())]), 300),
            at(multi(5, vec![del(&format!("{d}/upgrading/a")), del("/t/staging/web/a-0000000001")]), 10_000),
            at(multi(6, vec![create(&format!("{d}/upgrading/c"), b"{}".to_vec())]), c_fences_ms),
        ]
    }

    #[test]
    fn a_slot_taken_at_once_is_not_free() {
        let (r, _) = check(&history(10_400), &Layout::new("/t").unwrap());
        assert_eq!(r.max_free_slot_ms.get("web/deploy-0000000001"), Some(&0), "{:?}", r.max_free_slot_ms);
    }

    #[test]
    fn a_slot_left_free_is_reported_beyond_the_grace() {
        let (r, _) = check(&history(16_000), &Layout::new("/t").unwrap());
        assert_eq!(r.max_free_slot_ms.get("web/deploy-0000000001"), Some(&4_500), "{:?}", r.max_free_slot_ms);
        assert_eq!(r.max_free_slot_ms_of("web"), 4_500);
    }

    #[test]
    fn a_failed_host_or_a_missing_quorum_leaves_no_slot_free() {
        // c is a failed host: nobody could take a's slot.
        let mut h = history(16_000);
        h.truncate(5);
        let failed = br#"{"schema":1,"service":"web","version":"2","state":"active","failures":1,"failed_hosts":["c"],"created_at":"t","created_by":"u"}"#;
        h.push(at(
            multi(7, vec![Op::SetData { path: "/t/deploy/deploy-0000000001".into(), data: failed.to_vec() }]),
            10_001,
        ));
        h.push(at(multi(8, vec![create("/t/other", vec![])]), 20_000));
        let (r, _) = check(&h, &Layout::new("/t").unwrap());
        assert_eq!(r.max_free_slot_ms_of("web"), 0, "{:?}", r.max_free_slot_ms);
    }
}
