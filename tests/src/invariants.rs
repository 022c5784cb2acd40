//! The invariant checker: replays a test root's exact history (from
//! [`crate::txnlog`]) and checks baton's guarantees after every transaction.
//!
//! A *step* is a fence: a multi transaction that creates `upgrading/<host>` under a
//! deploy entry. At every fence:
//! - the entry is the head of `deploy/` (services roll in deploy order);
//! - the entry is `active` (a paused or halted rollout moves no host);
//! - the entry's markers are at most `max_parallel` of the staged policy;
//! - the service's online hosts are at least the quorum, counted as the sidecar
//!   counts it (of online plus upgrading hosts), when the fenced host was online.
//!   An online host that vanished on its own (session closed or expired, health
//!   lost) shortly before the fence may have raced its read: that is reported as a
//!   note, not a violation (the guarantee is "counted at the fence's read").
//!
//! And at every transaction: an online host's registration never changes version
//! in place (a host switches only while it is out of `current/`).
//!
//! Across services ([`isolation`]): a step transaction of one service touches no
//! other service's registration or marker; `host_upgraded`/`host_failed` events
//! come with their service's marker or registration; a marker naming a service
//! names its entry's. Free slots ([`slots`]): the longest stretch, beyond a grace,
//! during which a head entry had a free slot that a ticket holder could take
//! (`Report::max_free_slot_ms`). Quiet windows ([`quiet`]): nothing of a service
//! moved between two points of the history.
//!
//! [`end`] checks the final state: every online host runs the staged version, or the
//! service's rollout is halted with a reason (or paused, when the test paused it).

mod end;
mod isolation;
mod quiet;
mod slots;

pub use end::{end, end_with};
pub use quiet::{Mark, assert_quiet, moves, now_ms};
pub use slots::GRACE_MS;

use crate::txnlog::{Op, Txn};
use std::collections::{BTreeMap, BTreeSet};
use znode_schema::{Current, DeployEntry, DeployName, DeployState, Layout, Staging, decode};

/// How long before a fence a host's own disappearance counts as a race with its read.
const RACE_WINDOW_MS: i64 = 3_000;

/// What the replay found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Broken guarantees, each with its zxid and the facts.
    pub violations: Vec<String>,
    /// Things worth knowing that break no guarantee.
    pub notes: Vec<String>,
    /// Transactions replayed.
    pub txns: usize,
    /// Fences seen.
    pub fences: usize,
    /// The most markers seen at once under one entry.
    pub max_markers: usize,
    /// The fewest online hosts right after a fence, per service.
    pub min_online_at_fence: BTreeMap<String, usize>,
    /// Per `<service>/<entry>`: the longest stretch (ms) beyond [`GRACE_MS`] during
    /// which the entry was the active head with a free slot a ticket holder could take.
    pub max_free_slot_ms: BTreeMap<String, i64>,
    /// Fences whose marker carries no `service` field (the field is landing).
    pub markers_without_service: usize,
    /// Per service: the version and `failed_hosts` of its last entry deleted while
    /// listing failed hosts (a completion that counted them).
    pub completed_with_failures: BTreeMap<String, (String, Vec<String>)>,
    /// Per service: the version of its last entry deleted (completed or superseded)
    /// and the hosts registered online at that moment. A host that was not among them
    /// missed the rollout while dark and stays on its release: a known gap
    /// (docs/guarantees.md, "left behind"), reported as a note, not a violation.
    pub completed_online: BTreeMap<String, (String, Vec<String>)>,
    /// Per service, the last ended rollout's version and the version it rolled back to
    /// (`on_halt = rollback`), when it rolled back.
    pub rolled_back: BTreeMap<String, (String, String)>,
}

impl Report {
    /// Panics with every violation (and the notes) if there is any.
    pub fn assert_ok(&self, context: &str) {
        assert!(
            self.violations.is_empty(),
            "{context}: {} invariant violation(s):\n  {}\nnotes:\n  {}",
            self.violations.len(),
            self.violations.join("\n  "),
            self.notes.join("\n  ")
        );
    }

    /// The longest free-slot stretch beyond the grace of any entry of `service`.
    pub fn max_free_slot_ms_of(&self, service: &str) -> i64 {
        let prefix = format!("{service}/");
        self.max_free_slot_ms.iter().filter(|(k, _)| k.starts_with(&prefix)).map(|(_, v)| *v).max().unwrap_or(0)
    }
}

/// The nodes under the root after some prefix of the history.
#[derive(Debug, Default, Clone)]
pub struct State {
    /// Every node's data, by path.
    pub nodes: BTreeMap<String, Vec<u8>>,
}

impl State {
    /// Applies one change.
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::Create { path, data, .. } | Op::SetData { path, data } => {
                self.nodes.insert(path.clone(), data.clone());
            }
            Op::Delete { path, .. } => {
                self.nodes.remove(path);
            }
        }
    }

    /// The names of the children of `dir`.
    pub fn children(&self, dir: &str) -> Vec<String> {
        let prefix = format!("{dir}/");
        self.nodes
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .filter_map(|(p, _)| p[prefix.len()..].split('/').next().filter(|c| !c.contains('/')))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    /// The decoded payload at `path` (`None`: absent or unreadable).
    pub fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Option<T> {
        decode(path, self.nodes.get(path)?).ok()
    }

    /// Deploy entries, head first, with their payloads (`None`: unreadable).
    pub fn deploys(&self, l: &Layout) -> Vec<(DeployName, Option<DeployEntry>)> {
        let names = znode_schema::seq::sorted_deploys(&self.children(&l.deploy_dir()));
        names.into_iter().map(|n| (n, self.get(&l.deploy_entry(&n)))).collect()
    }

    /// The staged release of `service`.
    pub fn staging(&self, l: &Layout, service: &str) -> Option<Staging> {
        self.get(&l.staging(service))
    }

    /// Online hosts of `service` with their versions (unreadable: `None`).
    pub fn online(&self, l: &Layout, service: &str) -> BTreeMap<String, Option<String>> {
        let dir = l.current_service(service);
        self.children(&dir)
            .into_iter()
            .map(|h| {
                let v = self.get::<Current>(&l.current_host(service, &h)).map(|c| c.version);
                (h, v)
            })
            .collect()
    }
}

/// A marker path `…/deploy/<entry>/upgrading/<host>` → (entry, host).
pub fn marker_of(l: &Layout, path: &str) -> Option<(DeployName, String)> {
    let rest = path.strip_prefix(&format!("{}/", l.deploy_dir()))?;
    let mut parts = rest.split('/');
    let entry = DeployName::parse(parts.next()?)?;
    (parts.next()? == znode_schema::layout::UPGRADING).then_some(())?;
    let host = parts.next()?.to_string();
    parts.next().is_none().then_some((entry, host))
}

/// A registration path `…/current/<svc>/<host>` → (service, host).
fn current_of(l: &Layout, path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix(&format!("{}/", l.current_dir()))?;
    let (svc, host) = rest.split_once('/')?;
    (!host.contains('/')).then(|| (svc.to_string(), host.to_string()))
}

/// Replays `history` (already restricted to the root of `layout`) and checks every
/// transaction. Returns the report and the final state.
pub fn check(history: &[Txn], layout: &Layout) -> (Report, State) {
    let mut state = State::default();
    let mut report = Report::default();
    let mut free = slots::Slots::new(GRACE_MS);
    // Last time (ms) an online host of a service vanished other than by a fence.
    let mut last_drop: BTreeMap<String, (i64, String)> = BTreeMap::new();
    for t in history {
        report.txns += 1;
        let before = state.clone();
        // A fence is a multi; a marker created alone is some other client's write.
        let fences: Vec<(DeployName, String)> = t
            .ops
            .iter()
            .filter(|op| t.multi && matches!(op, Op::Create { .. }))
            .filter_map(|op| marker_of(layout, op.path()))
            .collect();
        for op in &t.ops {
            if let (Op::SetData { path, data }, Some((svc, host))) = (op, current_of(layout, op.path())) {
                let old = before.get::<Current>(path).map(|c| c.version);
                let new = decode::<Current>(path, data).ok().map(|c| c.version);
                if let (Some(o), Some(n)) = (&old, &new) {
                    if o != n {
                        report.violations.push(format!(
                            "zxid {:#x}: {host} of {svc} switched from {o} to {n} while registered online",
                            t.zxid
                        ));
                    }
                }
            }
            if let Op::Delete { path, .. } = op {
                let gone = DeployName::from_path(path).filter(|n| layout.deploy_entry(n) == *path);
                if let Some(e) = gone.and_then(|n| before.get::<DeployEntry>(&layout.deploy_entry(&n))) {
                    let online = before.online(layout, &e.service).into_keys().collect();
                    report.completed_online.insert(e.service.clone(), (e.version.clone(), online));
                    match &e.rolling_back_to {
                        Some(to) => report.rolled_back.insert(e.service.clone(), (e.version.clone(), to.clone())),
                        None => report.rolled_back.remove(&e.service),
                    };
                    if !e.failed_hosts.is_empty() {
                        report.completed_with_failures.insert(e.service.clone(), (e.version, e.failed_hosts));
                    }
                }
            }
            state.apply(op);
        }
        isolation::check_txn(t, layout, &before, &state, &mut report);
        free.observe(t.time_ms, &state, layout);
        // Registrations that vanished without a fence in the same transaction.
        if fences.is_empty() {
            for op in &t.ops {
                if let (Op::Delete { .. }, Some((svc, host))) = (op, current_of(layout, op.path())) {
                    last_drop.insert(svc, (t.time_ms, host));
                }
            }
        }
        for (entry, host) in fences {
            report.fences += 1;
            check_fence(t, layout, &before, &state, &entry, &host, &last_drop, &mut report);
        }
    }
    free.finish(history.last().map_or(0, |t| t.time_ms));
    report.max_free_slot_ms = free.max;
    if report.markers_without_service > 0 {
        report
            .notes
            .push(format!("{} fence(s) wrote a marker without a service field", report.markers_without_service));
    }
    (report, state)
}

#[allow(clippy::too_many_arguments)]
fn check_fence(
    t: &Txn,
    l: &Layout,
    before: &State,
    after: &State,
    entry: &DeployName,
    host: &str,
    last_drop: &BTreeMap<String, (i64, String)>,
    report: &mut Report,
) {
    let z = format!("zxid {:#x}: fence of {host} on {entry}", t.zxid);
    let deploys = before.deploys(l);
    let Some((_, e)) = deploys.iter().find(|(n, _)| n == entry) else {
        report.violations.push(format!("{z}: the entry did not exist"));
        return;
    };
    if deploys.first().map(|(n, _)| n) != Some(entry) {
        let head = deploys.first().map(|(n, e)| format!("{n} ({:?})", e.as_ref().map(|e| &e.service)));
        report.violations.push(format!("{z}: out of deploy order, the head was {head:?}"));
    }
    let Some(e) = e else {
        report.violations.push(format!("{z}: the entry was unreadable"));
        return;
    };
    if e.state != DeployState::Active {
        report.violations.push(format!("{z}: the rollout was {} ({:?})", e.state, e.reason));
    }
    let Some(st) = before.staging(l, &e.service) else {
        report.violations.push(format!("{z}: no readable staged release of {}", e.service));
        return;
    };
    if st.version != e.version {
        report.violations.push(format!("{z}: the entry is {} {} but {} is staged", e.service, e.version, st.version));
    }
    let markers = after.children(&l.upgrading_dir(entry)).len();
    report.max_markers = report.max_markers.max(markers);
    if markers > st.policy.max_parallel as usize {
        report.violations.push(format!("{z}: {markers} markers, max_parallel {}", st.policy.max_parallel));
    }
    let was_online = before.online(l, &e.service).contains_key(host);
    let online = after.online(l, &e.service).len();
    let m = report.min_online_at_fence.entry(e.service.clone()).or_insert(online);
    *m = (*m).min(online);
    let required = st.policy.quorum.required((online + markers) as u32) as usize;
    if was_online && online < required {
        let msg = format!("{z}: {online} online after the fence, quorum {required}");
        match last_drop.get(&e.service).filter(|(at, _)| t.time_ms - at <= RACE_WINDOW_MS) {
            Some((at, who)) => report
                .notes
                .push(format!("{msg}; {who} went offline on its own {} ms before (raced the read)", t.time_ms - at)),
            None => report.violations.push(msg),
        }
    }
}

/// Reads the committed history of `root` from `cluster`'s transaction logs and
/// checks it: the report and the final state.
pub fn check_cluster(cluster: &crate::ZkCluster, root: &str) -> (Report, State) {
    check(&history(cluster, root), &Layout::new(root).expect("a valid root"))
}

/// The committed history of `root` so far, from `cluster`'s transaction logs.
pub fn history(cluster: &crate::ZkCluster, root: &str) -> Vec<Txn> {
    crate::txnlog::under(crate::txnlog::read_cluster(&cluster.data_dirs()), root)
}

/// The last zxid of `root`'s history so far (0 when there is none): a [`Mark`].
pub fn last_zxid(cluster: &crate::ZkCluster, root: &str) -> i64 {
    history(cluster, root).last().map_or(0, |t| t.zxid)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A multi transaction at time `zxid` ms.
    pub(crate) fn multi(zxid: i64, ops: Vec<Op>) -> Txn {
        Txn { zxid, time_ms: zxid, session: 0, ops, multi: true }
    }

    pub(crate) fn create(path: &str, data: Vec<u8>) -> Op {
        Op::Create { path: path.into(), data, ephemeral: false }
    }

    pub(crate) fn set(path: &str, data: Vec<u8>) -> Op {
        Op::SetData { path: path.into(), data }
    }

    /// An active deploy entry's payload.
    pub(crate) fn entry(svc: &str, version: &str) -> Vec<u8> {
        format!(r#"{{"schema":1,"service":"{svc}","version":"{version}","state":"active","failures":0,"created_at":"t","created_by":"u"}}"#).into_bytes()
    }

    /// A staged release's payload with `max_parallel` and a quorum count.
    pub(crate) fn staging(svc: &str, version: &str, max_parallel: u32, quorum: u32) -> Vec<u8> {
        format!(
            r#"{{"schema":1,"service":"{svc}","version":"{version}","artifact":{{"url":"file:///x","sha256":"{}","size":1,"format":"file"}},"policy":{{"quorum":"{quorum}","max_parallel":{max_parallel}}},"staged_at":"t","staged_by":"u"}}"#,
            "0".repeat(64)
        )
        .into_bytes()
    }

    #[test]
    fn paths_are_recognised() {
        let l = Layout::new("/t").unwrap();
        assert_eq!(
            marker_of(&l, "/t/deploy/deploy-0000000003/upgrading/h1"),
            Some((DeployName { seq: 3 }, "h1".into()))
        );
        assert_eq!(marker_of(&l, "/t/deploy/deploy-0000000003/upgrading"), None);
        assert_eq!(current_of(&l, "/t/current/api/h1"), Some(("api".into(), "h1".into())));
        assert_eq!(current_of(&l, "/t/current/api"), None);
    }
}
