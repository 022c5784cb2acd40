//! Per-service isolation, judged transaction by transaction.
//!
//! A *step transaction* of service A is a multi that touches a marker
//! `deploy/<entry of A>/upgrading/<host>` (the fence, and the success, failure and
//! undo commits). It must not create, delete or change `current/<B>/<host>` of any
//! other service B, nor touch a marker of B. A `host_upgraded` or `host_failed`
//! event of service X must be written together with a change of X's marker or
//! registration for that host. A fence's marker that names its service (the
//! redesigned payload's `"service"`) must name the entry's service; a marker
//! without the field is counted as a note while that field is landing.

use super::{Report, State, current_of, marker_of};
use crate::txnlog::{Op, Txn};
use std::collections::{BTreeMap, BTreeSet};
use znode_schema::{DeployEntry, DeployName, EventKind, HistoryEvent, Layout, decode};

/// The service of deploy entry `entry`, read before the transaction (or after it,
/// for an entry created in it).
fn entry_service(before: &State, after: &State, l: &Layout, entry: &DeployName) -> Option<String> {
    let path = l.deploy_entry(entry);
    before.get::<DeployEntry>(&path).or_else(|| after.get::<DeployEntry>(&path)).map(|e| e.service)
}

/// `history/<svc>/event-…` → the service.
fn history_service<'a>(l: &Layout, path: &'a str) -> Option<&'a str> {
    let rest = path.strip_prefix(&format!("{}/", l.history_dir()))?;
    let (svc, name) = rest.split_once('/')?;
    (!name.contains('/')).then_some(svc)
}

/// Checks one transaction; `before` and `after` are the states around it.
pub(super) fn check_txn(t: &Txn, l: &Layout, before: &State, after: &State, report: &mut Report) {
    let z = format!("zxid {:#x}", t.zxid);
    // Markers touched, by the service of their entry.
    let mut markers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut regs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for op in &t.ops {
        if let Some((entry, host)) = marker_of(l, op.path()) {
            if let Some(svc) = entry_service(before, after, l, &entry) {
                markers.entry(svc.clone()).or_default().insert(host.clone());
                if let (true, Op::Create { data, .. }) = (t.multi, op) {
                    check_marker_payload(&z, &entry, &host, &svc, data, report);
                }
            }
        }
        if let (Some((svc, host)), false) =
            (current_of(l, op.path()), matches!(op, Op::Delete { by_session: true, .. }))
        {
            regs.entry(svc).or_default().insert(host);
        }
    }
    if t.multi {
        if markers.len() > 1 {
            let svcs: Vec<&String> = markers.keys().collect();
            report.violations.push(format!("{z}: one step transaction touches markers of several services {svcs:?}"));
        }
        for (a, hosts) in &markers {
            for (b, touched) in regs.iter().filter(|(b, _)| *b != a) {
                report.violations.push(format!(
                    "{z}: a step of {a} (marker of {hosts:?}) also changes the registration of {b} on {touched:?}"
                ));
            }
        }
    }
    for op in &t.ops {
        let (Op::Create { path, data, .. }, Some(x)) = (op, history_service(l, op.path())) else { continue };
        let Ok(ev) = decode::<HistoryEvent>(path, data) else { continue };
        if !matches!(ev.event, EventKind::HostUpgraded | EventKind::HostFailed) {
            continue;
        }
        if ev.service != x {
            report.violations.push(format!("{z}: a {} event of {} written under history/{x}", ev.event, ev.service));
        }
        let touched = |m: &BTreeMap<String, BTreeSet<String>>| {
            m.get(x).is_some_and(|hosts| ev.host.as_ref().is_none_or(|h| hosts.contains(h)))
        };
        if !touched(&markers) && !touched(&regs) {
            report.violations.push(format!(
                "{z}: a {} event of {x} for {:?} in a transaction that touches neither its marker nor its \
                 registration (markers {markers:?}, registrations {regs:?})",
                ev.event, ev.host
            ));
        }
    }
}

fn check_marker_payload(z: &str, entry: &DeployName, host: &str, svc: &str, data: &[u8], report: &mut Report) {
    let named = serde_json::from_slice::<serde_json::Value>(data)
        .ok()
        .and_then(|v| v.get("service").and_then(|s| s.as_str()).map(str::to_string));
    match named {
        Some(s) if s != svc => report
            .violations
            .push(format!("{z}: the marker of {host} on {entry} names service {s:?}, the entry is of {svc}")),
        Some(_) => {}
        None => report.markers_without_service += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{create, entry, multi, set, staging};
    use super::super::{Report, check};
    use super::*;

    fn layout() -> Layout {
        Layout::new("/t").unwrap()
    }

    fn cur(svc: &str, host: &str, v: &str) -> Vec<u8> {
        format!(r#"{{"schema":1,"host":"{host}","service":"{svc}","version":"{v}","state":"online","since":"t","sidecar":"0"}}"#).into_bytes()
    }

    fn event(kind: &str, svc: &str, host: &str) -> Vec<u8> {
        format!(r#"{{"schema":1,"at":"t","event":"{kind}","service":"{svc}","version":"2","host":"{host}"}}"#)
            .into_bytes()
    }

    /// Two entries: deploy-1 of web, deploy-2 of api; h1 runs both.
    fn base() -> Vec<Txn> {
        vec![multi(
            1,
            vec![
                create("/t/staging/web", staging("web", "2", 1, 0)),
                create("/t/staging/api", staging("api", "2", 1, 0)),
                create("/t/deploy/deploy-0000000001", entry("web", "2")),
                create("/t/deploy/deploy-0000000002", entry("api", "2")),
                create("/t/current/api/h1", cur("api", "h1", "1")),
                create("/t/current/web/h1", cur("web", "h1", "1")),
            ],
        )]
    }

    fn run(extra: Vec<Txn>) -> Report {
        let mut h = base();
        h.extend(extra);
        check(&h, &layout()).0
    }

    #[test]
    fn a_step_of_web_that_stays_in_web_is_fine() {
        let marker = br#"{"schema":1,"host":"h1","service":"web","from":"1","to":"2","since":"t"}"#.to_vec();
        let r = run(vec![
            multi(
                2,
                vec![
                    create("/t/deploy/deploy-0000000001/upgrading/h1", marker),
                    Op::Delete { path: "/t/current/web/h1".into(), by_session: false },
                ],
            ),
            multi(
                3,
                vec![
                    Op::Delete { path: "/t/deploy/deploy-0000000001/upgrading/h1".into(), by_session: false },
                    create("/t/current/web/h1", cur("web", "h1", "2")),
                    create("/t/history/web/event-0000000001", event("host_upgraded", "web", "h1")),
                ],
            ),
        ]);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!(r.markers_without_service, 0);
    }

    #[test]
    fn undoing_web_s_marker_as_api_is_a_violation() {
        let r = run(vec![
            multi(
                2,
                vec![create(
                    "/t/deploy/deploy-0000000001/upgrading/h1",
                    b"{\"schema\":1,\"host\":\"h1\",\"to\":\"2\",\"since\":\"t\"}".to_vec(),
                )],
            ),
            multi(
                3,
                vec![
                    Op::Delete { path: "/t/deploy/deploy-0000000001/upgrading/h1".into(), by_session: false },
                    set("/t/current/api/h1", cur("api", "h1", "1")),
                    create("/t/history/api/event-0000000001", event("host_failed", "api", "h1")),
                ],
            ),
        ]);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(r.violations[0].contains("zxid 0x3: a step of web"), "{:?}", r.violations);
        assert_eq!(r.markers_without_service, 1, "the missing field is a note, not a violation");
    }

    #[test]
    fn an_event_without_its_marker_or_registration_is_a_violation() {
        let r = run(vec![multi(
            2,
            vec![
                set("/t/current/web/h1", cur("web", "h1", "1")),
                create("/t/history/api/event-0000000001", event("host_failed", "api", "h1")),
            ],
        )]);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(r.violations[0].contains("host_failed event of api"), "{:?}", r.violations);
    }

    #[test]
    fn a_marker_naming_another_service_is_a_violation() {
        let marker = br#"{"schema":1,"host":"h1","service":"api","from":"1","to":"2","since":"t"}"#.to_vec();
        let r = run(vec![multi(2, vec![create("/t/deploy/deploy-0000000001/upgrading/h1", marker)])]);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(r.violations[0].contains("names service \"api\""), "{:?}", r.violations);
    }
}
