//! Two services per host (`api`, `web`) against ZooKeeper faults: the server gone
//! past the session timeout during web's bake, and a deploy entry at the head made
//! unreadable. api is untouched throughout; the whole history satisfies the
//! invariants.

use baton_tests::ZkCluster;
use baton_tests::chaos::{
    PATIENCE, client, plain_log, policy, served_version, verify, wait_service_done, wait_service_versions,
};
use baton_tests::fleet::{Fleet, deploys, stage};
use baton_tests::invariants::{self, Mark, assert_quiet, now_ms};
use baton_tests::multi::{self, api_done_web_at_w1, hook_calls, hooks, identities, log_since};
use baton_tests::txnlog::Op;
use baton_tests::{eventually, eventually_async, shared_server, unique_root};
use std::time::Duration;
use znode_schema::EventKind;

const BAKE: Duration = Duration::from_secs(15);

/// ZooKeeper (a standalone server of this test's own) stopped past the session
/// timeout while both hosts bake web: each step runs its full bake, runs its
/// undrain hook, and commits on the new session; api keeps its processes.
#[tokio::test(flavor = "multi_thread")]
async fn zookeeper_down_past_the_session_timeout_during_the_bake() {
    let cluster = ZkCluster::standalone();
    let root = unique_root("multi-zkdown");
    let mut fleet = Fleet::multi(&cluster.connect_string(), &root, &["api", "web"], 2);
    let web_hooks = fleet.dir().join("web-hooks.log");
    for h in &fleet.hosts {
        let web = hooks(&h.id, &web_hooks, None);
        fleet.write_config_services(h, &[("web", web.as_str())]);
    }
    let c = client(&cluster.connect_string()).await;
    api_done_web_at_w1(&mut fleet, &c, None).await;
    let api_before = identities(&fleet, &c, "api").await;
    let mark = invariants::last_zxid(&cluster, &root);
    let w2 = multi::good(&fleet, "web", "w2");
    stage(&c, &fleet.layout(), "web", "w2", &w2, policy(0, 2, BAKE)).await;
    let ports: Vec<u16> = (0..2).map(|i| fleet.port_of(i, "web")).collect();
    eventually("both hosts to bake web's new release", PATIENCE, || {
        ports.iter().all(|p| served_version(*p).as_deref() == Some("w2")).then_some(())
    });
    let healthy_at = now_ms();
    let offsets: Vec<usize> = (0..2).map(|i| plain_log(&fleet, i).len()).collect();
    cluster.stop(0);
    eventually("both sidecars to lose their session", PATIENCE, || {
        (0..2).all(|i| log_since(&fleet, i, offsets[i]).contains("zookeeper session lost")).then_some(())
    });
    cluster.start_member(0);
    cluster.wait_serving();
    let c = client(&cluster.connect_string()).await;
    wait_service_versions(&fleet, &c, "web", 2, "w2", Duration::from_secs(60)).await;
    wait_service_done(&fleet, &c, "web", Duration::from_secs(60)).await;

    let history = invariants::history(&cluster, &root);
    let layout = fleet.layout();
    for h in &fleet.hosts {
        let fences = multi::fences(&history, &layout, "web", &h.id);
        assert_eq!(fences.len(), 1, "{} was fenced once for web", h.id);
        let commits: Vec<_> = multi::events(&history, &layout, "web")
            .into_iter()
            .filter(|(_, e)| e.host.as_deref() == Some(h.id.as_str()))
            .filter(|(_, e)| matches!(e.event, EventKind::HostUpgraded | EventKind::HostFailed))
            .collect();
        assert!(
            commits.len() == 1 && commits[0].1.event == EventKind::HostUpgraded,
            "{}: one host_upgraded event, got {:?}",
            h.id,
            commits.iter().map(|(_, e)| (e.event, &e.detail)).collect::<Vec<_>>()
        );
        let commit = commits[0].0;
        let baked = commit.time_ms - healthy_at;
        assert!(
            baked >= BAKE.as_millis() as i64 - 1_000,
            "{}: the step committed {baked} ms after web's new release was healthy, before its {BAKE:?} bake ended",
            h.id
        );
        assert_ne!(commit.session, fences[0].session, "{}: the commit landed on a new session", h.id);
        let calls = hook_calls(&web_hooks);
        let last = calls.iter().rfind(|l| l.ends_with(&format!(" {}", h.id)));
        assert_eq!(
            last.map(String::as_str),
            Some(format!("undrain {}", h.id).as_str()),
            "{} undrained: {calls:?}",
            h.id
        );
    }
    assert_quiet(&history, &layout, "api", Mark::Zxid(mark), Mark::End);
    assert_eq!(identities(&fleet, &c, "api").await, api_before, "api kept its processes and registrations");
    verify(&cluster, &c, &root, &["api", "web"], false).await;
}

/// web's deploy entry, at the head with api's behind it, overwritten with garbage:
/// the sidecars log it, keep their sessions and services, and nothing moves; once
/// an operator deletes it (and stages web again), both rollouts complete.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_head_entry_keeps_sessions_and_services_until_deleted() {
    let root = unique_root("multi-garbage");
    let mut fleet = Fleet::multi(&shared_server().connect_string(), &root, &["api", "web"], 3);
    let c = fleet.client().await;
    let layout = fleet.layout();
    api_done_web_at_w1(&mut fleet, &c, None).await;
    // web's rollout cannot move (quorum 3 of 3); api's waits behind it.
    let w2 = multi::good(&fleet, "web", "w2");
    let web_entry = stage(&c, &layout, "web", "w2", &w2, policy(3, 1, Duration::ZERO)).await;
    let a3 = multi::good(&fleet, "api", "a3");
    stage(&c, &layout, "api", "a3", &a3, policy(1, 1, Duration::from_millis(200))).await;
    eventually_async("every host queued for both", PATIENCE, || async {
        let a = c.list_children(&layout.staging("api")).await.unwrap_or_default().len();
        let w = c.list_children(&layout.staging("web")).await.unwrap_or_default().len();
        (a == 3 && w == 3).then_some(())
    })
    .await;
    let before = (identities(&fleet, &c, "api").await, identities(&fleet, &c, "web").await);
    let offsets: Vec<usize> = (0..3).map(|i| plain_log(&fleet, i).len()).collect();
    let mark = invariants::last_zxid(shared_server(), &root);
    let path = layout.deploy_entry(&web_entry);
    c.set_data(&path, b"\x00\xffnot json{", None).await.unwrap();
    eventually("a sidecar to log the unreadable head entry", PATIENCE, || {
        (0..3)
            .any(|i| log_since(&fleet, i, offsets[i]).lines().any(|l| l.contains("ERROR") && l.contains(&path)))
            .then_some(())
    });
    // The window observed (not a synchronisation): two session timeouts, so that a
    // session torn down over the entry shows in the log as its nodes' removal.
    tokio::time::sleep(2 * fleet.session_timeout).await;
    let history = invariants::history(shared_server(), &root);
    let dropped: Vec<String> = history
        .iter()
        .filter(|t| t.zxid > mark)
        .flat_map(|t| t.ops.iter())
        .filter(|op| matches!(op, Op::Delete { by_session: true, .. }))
        .map(|op| op.path().to_string())
        .collect();
    assert!(dropped.is_empty(), "a sidecar lost or tore down its session over the unreadable entry: {dropped:?}");
    for (i, from) in offsets.iter().enumerate() {
        let log = log_since(&fleet, i, *from);
        assert!(!log.contains("zookeeper session lost"), "{} tore its session down:\n{log}", fleet.hosts[i].id);
    }
    for svc in ["api", "web"] {
        assert_quiet(&history, &layout, svc, Mark::Zxid(mark), Mark::End);
    }
    assert_eq!((identities(&fleet, &c, "api").await, identities(&fleet, &c, "web").await), before);
    // The operator deletes the entry (and its upgrading/ dir), then stages web again.
    let _ = c.delete(&layout.upgrading_dir(&web_entry), None).await;
    c.delete(&path, None).await.unwrap();
    wait_service_versions(&fleet, &c, "api", 3, "a3", Duration::from_secs(60)).await;
    wait_service_done(&fleet, &c, "api", Duration::from_secs(60)).await;
    stage(&c, &layout, "web", "w2", &w2, policy(1, 1, Duration::ZERO)).await;
    wait_service_versions(&fleet, &c, "web", 3, "w2", Duration::from_secs(60)).await;
    wait_service_done(&fleet, &c, "web", Duration::from_secs(60)).await;
    assert!(deploys(&c, &layout).await.is_empty());
    verify(shared_server(), &c, &root, &["api", "web"], false).await;
}
