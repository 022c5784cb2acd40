//! "Nothing moved" windows, judged from the transaction log: within a window, a
//! service had no fence, no marker created, no `host_upgraded`/`host_failed` event,
//! and no registration whose version or pid differs from that host's previous
//! registration (a restart or a switch). A registration that vanishes with a
//! killed sidecar's session and comes back unchanged is not a move.

use super::{State, current_of, marker_of};
use crate::txnlog::{Op, Txn};
use std::collections::BTreeMap;
use znode_schema::{Current, DeployEntry, EventKind, HistoryEvent, Layout, decode};

/// One end of a window: a zxid (exclusive at the start, inclusive at the end) or a
/// time (ms since the epoch, by ZooKeeper's clock, the same machine's here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// After (from) or up to (to) this zxid.
    Zxid(i64),
    /// After (from) or up to (to) this time.
    Ms(i64),
    /// The end of the history.
    End,
}

impl Mark {
    /// Now, by this machine's clock.
    pub fn now() -> Self {
        Mark::Ms(now_ms())
    }

    fn after(&self, t: &Txn) -> bool {
        match *self {
            Mark::Zxid(z) => t.zxid > z,
            Mark::Ms(ms) => t.time_ms > ms,
            Mark::End => false,
        }
    }

    fn up_to(&self, t: &Txn) -> bool {
        match *self {
            Mark::Zxid(z) => t.zxid <= z,
            Mark::Ms(ms) => t.time_ms <= ms,
            Mark::End => true,
        }
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// What moved of `service` in the window `(from, to]`, one line per move.
pub fn moves(history: &[Txn], l: &Layout, service: &str, from: Mark, to: Mark) -> Vec<String> {
    let mut state = State::default();
    // Each host's last registration of the service: (version, pid).
    let mut last: BTreeMap<String, (String, Option<u32>)> = BTreeMap::new();
    let mut out = Vec::new();
    for t in history {
        let inside = from.after(t) && to.up_to(t);
        let z = format!("zxid {:#x} (t={})", t.zxid, t.time_ms);
        for op in &t.ops {
            let path = op.path();
            if let (Some((entry, host)), Op::Create { .. }) = (marker_of(l, path), op) {
                let svc = state.get::<DeployEntry>(&l.deploy_entry(&entry)).map(|e| e.service);
                if inside && svc.as_deref() == Some(service) {
                    let what = if t.multi { "fence" } else { "marker created" };
                    out.push(format!("{z}: {what} of {host} on {entry}"));
                }
            }
            if let (Some((svc, host)), Op::Create { data, .. } | Op::SetData { data, .. }) = (current_of(l, path), op) {
                if svc == service {
                    if let Ok(c) = decode::<Current>(path, data) {
                        let now = (c.version.clone(), c.pid);
                        if let Some((v, pid)) = last.get(&host) {
                            if inside && *v != c.version {
                                out.push(format!("{z}: {host} registered at {} (was {v})", c.version));
                            } else if inside && pid.is_some() && c.pid.is_some() && *pid != c.pid {
                                out.push(format!("{z}: {host} registered with pid {:?} (was {pid:?})", c.pid));
                            }
                        }
                        last.insert(host, now);
                    }
                }
            }
            if let Op::Create { path, data, .. } = op {
                if path.starts_with(&format!("{}/", l.history(service))) && inside {
                    if let Ok(ev) = decode::<HistoryEvent>(path, data) {
                        if matches!(ev.event, EventKind::HostUpgraded | EventKind::HostFailed) {
                            out.push(format!("{z}: {} event for {:?}", ev.event, ev.host));
                        }
                    }
                }
            }
            state.apply(op);
        }
    }
    out
}

/// Panics unless nothing of `service` moved in `(from, to]` (see [`moves`]).
pub fn assert_quiet(history: &[Txn], l: &Layout, service: &str, from: Mark, to: Mark) {
    let m = moves(history, l, service, from, to);
    assert!(m.is_empty(), "{service} moved within {from:?}..{to:?}:\n  {}", m.join("\n  "));
}

#[cfg(test)]
mod tests {
    use super::super::tests::{create, entry, multi, set};
    use super::*;

    fn cur(host: &str, v: &str, pid: u32) -> Vec<u8> {
        format!(r#"{{"schema":1,"host":"{host}","service":"api","version":"{v}","state":"online","pid":{pid},"since":"t","sidecar":"0"}}"#).into_bytes()
    }

    fn history() -> Vec<Txn> {
        vec![
            multi(
                1,
                vec![
                    create("/t/deploy/deploy-0000000001", entry("api", "2")),
                    create("/t/current/api/h1", cur("h1", "1", 10)),
                ],
            ),
            // The sidecar was killed: its registration goes with its session, and comes back the same.
            Txn {
                zxid: 2,
                time_ms: 2,
                session: 1,
                ops: vec![Op::Delete { path: "/t/current/api/h1".into(), by_session: true }],
                multi: false,
            },
            multi(3, vec![create("/t/current/api/h1", cur("h1", "1", 10))]),
            multi(4, vec![set("/t/current/api/h1", cur("h1", "1", 11))]),
            multi(5, vec![create("/t/deploy/deploy-0000000001/upgrading/h1", b"{}".to_vec())]),
        ]
    }

    #[test]
    fn a_registration_back_unchanged_is_quiet() {
        let l = Layout::new("/t").unwrap();
        assert_quiet(&history(), &l, "api", Mark::Zxid(1), Mark::Zxid(3));
        assert_quiet(&history(), &l, "web", Mark::Zxid(0), Mark::End);
    }

    #[test]
    fn a_restart_and_a_fence_are_moves() {
        let l = Layout::new("/t").unwrap();
        let m = moves(&history(), &l, "api", Mark::Zxid(1), Mark::End);
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[0].contains("pid Some(11) (was Some(10))"), "{m:?}");
        assert!(m[1].contains("fence of h1"), "{m:?}");
        assert!(std::panic::catch_unwind(|| assert_quiet(&history(), &l, "api", Mark::Zxid(3), Mark::End)).is_err());
    }
}
