//! A host cut off from ZooKeeper by its network while both ends keep running (its
//! link taken down: packets vanish, no reset): queued at the front of a rollout,
//! in the middle of its step, and idle for longer than its session timeout. Every
//! host runs `api` and `web`; `web` rolls. Each scenario is judged from ZooKeeper's
//! transaction log: the invariants over the whole history, every fence made by the
//! session holding the host's ticket, api quiet throughout.
//!
//! Skipped (with a message) where network namespaces cannot be created.

use baton_tests::chaos::{
    PATIENCE, policy, verify, wait_marker, wait_queued, wait_service_done, wait_service_versions,
};
use baton_tests::ctl::Ctl;
use baton_tests::fleet::{online, stage};
use baton_tests::invariants::{self, Mark, assert_quiet};
use baton_tests::multi::{self, hook_calls, hooks, identities, identity};
use baton_tests::netbed::{NetBed, fences_off_their_session, set_quorum};
use baton_tests::{eventually, eventually_async, net_or_skip};
use std::time::Duration;

const SESSION: Duration = Duration::from_secs(3);

/// A bed of `hosts` hosts running api (a1) and web (w1), with drain/undrain hooks
/// logging to `<dir>/web-hooks.log` (web's drain waits for [`gate`] of its host,
/// open at first); every rollout done.
async fn bed(name: &str, hosts: usize) -> Option<(NetBed, zookeeper_client::Client, std::path::PathBuf)> {
    let net = match baton_tests::netns::Net::new() {
        Ok(n) => n,
        Err(why) => {
            eprintln!("SKIPPED: this test needs network namespaces: {why}");
            return None;
        }
    };
    let mut bed = NetBed::new(net, name, 1, &["api", "web"], hosts, SESSION);
    let log = bed.fleet.dir().join("web-hooks.log");
    for h in &bed.fleet.hosts {
        std::fs::write(gate(&bed, &h.id), "").unwrap();
        let web = hooks(&h.id, &log, Some(&gate(&bed, &h.id)));
        bed.fleet.write_config_services(h, &[("web", web.as_str())]);
    }
    let client = bed.client().await;
    multi::start_at(&mut bed.fleet, &client, &[("api", "a1"), ("web", "w1")]).await;
    Some((bed, client, log))
}

/// The file host `id`'s web drain hook waits for.
fn gate(bed: &NetBed, id: &str) -> std::path::PathBuf {
    bed.fleet.dir().join(format!("gate-{id}"))
}

/// The host whose registration of `service` is absent (`false`) or present.
async fn registered(bed: &NetBed, client: &zookeeper_client::Client, service: &str, i: usize) -> bool {
    let id = &bed.fleet.hosts[i].id;
    online(client, &bed.fleet.layout(), service).await.iter().any(|(h, _)| h == id)
}

/// A host's web at the front of the queue when its link goes down: it cannot
/// fence (no live session), two hosts behind it step meanwhile and the last one
/// is held in its drain hook (so the rollout cannot end before the heal); healed,
/// it opens a new session, queues again, takes the free slot and steps to w2, and
/// the rollout completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cut_off_while_queued_at_the_front_rejoins_at_the_staged_version() {
    let Some((bed, client, _)) = bed("net-front", 4).await else { return };
    let layout = bed.fleet.layout();
    let root = bed.fleet.root.clone();
    let api_before = identities(&bed.fleet, &client, "api").await;
    let mark = invariants::last_zxid(&bed.zk, &root);
    // Quorum 4 of 4 holds everyone in the queue; then the front host goes dark and
    // the quorum drops to 2.
    let w2 = multi::good(&bed.fleet, "web", "w2");
    stage(&client, &layout, "web", "w2", &w2, policy(4, 2, Duration::from_millis(500))).await;
    let tickets = wait_queued(&bed.fleet, &client, "web", 4).await;
    let victim = bed.fleet.hosts.iter().position(|h| h.id == tickets[0].host).unwrap();
    let last = bed.fleet.hosts.iter().position(|h| h.id == tickets[3].host).unwrap();
    std::fs::remove_file(gate(&bed, &tickets[3].host)).unwrap();
    let web_before = identity(&bed.fleet, &client, victim, "web").await;
    bed.isolate_host(victim);
    set_quorum(&client, &layout, "web", 2).await;
    // The rollout goes on without it: two others step, the last one is held in
    // its step; the victim's session expires.
    eventually_async(
        "two other hosts at w2, the last one stepping, the victim's registration gone",
        PATIENCE,
        || async {
            let o = online(&client, &layout, "web").await;
            let at_w2 = o.iter().filter(|(_, v)| v == "w2").count();
            let gone = !registered(&bed, &client, "web", victim).await && !registered(&bed, &client, "web", last).await;
            (at_w2 == 2 && gone && o.len() == 2).then_some(())
        },
    )
    .await;
    // Its service kept running, unchanged, all along.
    assert_eq!(bed.served_version(victim, "web").as_deref(), Some("w1"));
    let web_dark = identity(&bed.fleet, &client, victim, "web").await;
    assert_eq!((web_dark.pidfile_pid, web_dark.start_time), (web_before.pidfile_pid, web_before.start_time));
    bed.heal();
    eventually_async("the victim back at w2", PATIENCE, || async {
        let o = online(&client, &layout, "web").await;
        o.iter().any(|(h, v)| *h == tickets[0].host && v == "w2").then_some(())
    })
    .await;
    std::fs::write(gate(&bed, &tickets[3].host), "").unwrap();
    wait_service_versions(&bed.fleet, &client, "web", 4, "w2", PATIENCE).await;
    wait_service_done(&bed.fleet, &client, "web", PATIENCE).await;
    let history = invariants::history(&bed.zk, &root);
    for h in &bed.fleet.hosts {
        let off = fences_off_their_session(&history, &layout, "web", &h.id);
        assert!(off.is_empty(), "fences off their session: {off:?}");
        assert_eq!(multi::fences(&history, &layout, "web", &h.id).len(), 1, "{} stepped once", h.id);
    }
    assert_quiet(&history, &layout, "api", Mark::Zxid(mark), Mark::End);
    let api_after = identities(&bed.fleet, &client, "api").await;
    for (b, a) in api_before.iter().zip(&api_after) {
        assert_eq!((a.pidfile_pid, a.start_time), (b.pidfile_pid, b.start_time), "api's process kept");
    }
    verify(&bed.zk, &client, &root, &["api", "web"], false).await;
}

/// A host cut off while queued for as long as the rest of the fleet needs to finish:
/// the rollout completes without it (completion counts online hosts only), and once
/// healed it should end at the staged version. It does not: it registers again at
/// w1 and, with no deploy entry left for w2, never steps (the model's "a host
/// offline when its rollout completes is left behind for good").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "known bug: a host offline when its rollout completes is left behind at the old version (fix belongs in sidecar/src/agent)"]
async fn a_host_cut_off_until_its_rollout_completed_without_it_is_not_left_behind() {
    let Some((bed, client, _)) = bed("net-behind", 3).await else { return };
    let layout = bed.fleet.layout();
    let root = bed.fleet.root.clone();
    let w2 = multi::good(&bed.fleet, "web", "w2");
    stage(&client, &layout, "web", "w2", &w2, policy(3, 1, Duration::ZERO)).await;
    let tickets = wait_queued(&bed.fleet, &client, "web", 3).await;
    let victim = bed.fleet.hosts.iter().position(|h| h.id == tickets[0].host).unwrap();
    bed.isolate_host(victim);
    set_quorum(&client, &layout, "web", 1).await;
    wait_service_versions(&bed.fleet, &client, "web", 2, "w2", PATIENCE).await;
    wait_service_done(&bed.fleet, &client, "web", PATIENCE).await;
    bed.heal();
    wait_service_versions(&bed.fleet, &client, "web", 3, "w2", PATIENCE).await;
    verify(&bed.zk, &client, &root, &["api", "web"], false).await;
}

/// Host `i` cut off while baking its web step (max_parallel 1): its session
/// expires, its marker (persistent) keeps the slot so no other host steps, the step
/// finishes locally (bake, undrain); healed, it commits on a new session and the
/// rollout completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cut_off_mid_step_keeps_its_slot_and_commits_after_the_heal() {
    let Some((bed, client, hook_log)) = bed("net-midstep", 3).await else { return };
    let layout = bed.fleet.layout();
    let root = bed.fleet.root.clone();
    let mark = invariants::last_zxid(&bed.zk, &root);
    let w2 = multi::good(&bed.fleet, "web", "w2");
    let entry = stage(&client, &layout, "web", "w2", &w2, policy(1, 1, Duration::from_secs(4))).await;
    let victim = wait_marker(&bed.fleet, &client, &entry).await;
    let id = bed.fleet.hosts[victim].id.clone();
    eventually("the victim's new web release to serve", PATIENCE, || {
        (bed.served_version(victim, "web").as_deref() == Some("w2")).then_some(())
    });
    bed.isolate_host(victim);
    let cut_at = invariants::now_ms();
    // The step ends locally (undrain) while no session is alive.
    eventually("the victim to finish its step locally (undrain)", PATIENCE, || {
        hook_calls(&hook_log).contains(&format!("undrain {id}")).then_some(())
    });
    eventually_async("the victim's session to expire (its api registration gone)", PATIENCE, || async {
        (!registered(&bed, &client, "api", victim).await).then_some(())
    })
    .await;
    let markers = client.list_children(&layout.upgrading_dir(&entry)).await.unwrap();
    assert_eq!(markers, vec![id.clone()], "the marker keeps the slot");
    let dark_until = invariants::now_ms();
    bed.heal();
    wait_service_versions(&bed.fleet, &client, "web", 3, "w2", PATIENCE).await;
    wait_service_done(&bed.fleet, &client, "web", PATIENCE).await;
    let history = invariants::history(&bed.zk, &root);
    // Nobody else stepped while the victim was dark.
    for (i, h) in bed.fleet.hosts.iter().enumerate().filter(|(i, _)| *i != victim) {
        for f in multi::fences(&history, &layout, "web", &h.id) {
            assert!(
                f.time_ms < cut_at || f.time_ms > dark_until,
                "host {i} fenced at {} while the victim held the slot ({cut_at}..{dark_until})",
                f.time_ms
            );
        }
    }
    let fenced_on = multi::fences(&history, &layout, "web", &id)[0].session;
    let upgraded = multi::events(&history, &layout, "web")
        .into_iter()
        .find(|(_, e)| e.host.as_deref() == Some(id.as_str()) && e.event == znode_schema::EventKind::HostUpgraded)
        .expect("the victim's host_upgraded event");
    assert_ne!(upgraded.0.session, fenced_on, "the commit is on a new session");
    assert_quiet(&history, &layout, "api", Mark::Zxid(mark), Mark::End);
    verify(&bed.zk, &client, &root, &["api", "web"], false).await;
}

/// As above, but an operator frees the dark host's slot with `deployctl unlock`
/// once its session expired: another host steps meanwhile (the documented caveat:
/// the dark host's step still runs locally). Healed, the dark host commits its step
/// on a new session without its marker, and the rollout completes with every host
/// at w2 and the invariants holding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cut_off_mid_step_and_unlocked_by_an_operator_commits_after_the_heal() {
    let Some((bed, client, hook_log)) = bed("net-unlock", 3).await else { return };
    let layout = bed.fleet.layout();
    let root = bed.fleet.root.clone();
    let w2 = multi::good(&bed.fleet, "web", "w2");
    let entry = stage(&client, &layout, "web", "w2", &w2, policy(1, 1, Duration::from_secs(4))).await;
    let victim = wait_marker(&bed.fleet, &client, &entry).await;
    let id = bed.fleet.hosts[victim].id.clone();
    eventually("the victim's new web release to serve", PATIENCE, || {
        (bed.served_version(victim, "web").as_deref() == Some("w2")).then_some(())
    });
    bed.isolate_host(victim);
    eventually_async("the victim's session to expire (its api registration gone)", PATIENCE, || async {
        (!registered(&bed, &client, "api", victim).await).then_some(())
    })
    .await;
    let ctl = Ctl { connect: bed.zk.connect_string(), root: root.clone(), layout: layout.clone(), global: Vec::new() };
    ctl.ok(&["unlock", "web", &id]).await;
    let other = eventually_async("another host to take the freed slot", PATIENCE, || async {
        let m = client.list_children(&layout.upgrading_dir(&entry)).await.unwrap_or_default();
        m.into_iter().find(|h| *h != id)
    })
    .await;
    eprintln!("{other} stepped while {id} was dark and unlocked");
    eventually("the victim to finish its step locally (undrain)", PATIENCE, || {
        hook_calls(&hook_log).contains(&format!("undrain {id}")).then_some(())
    });
    bed.heal();
    wait_service_versions(&bed.fleet, &client, "web", 3, "w2", PATIENCE).await;
    wait_service_done(&bed.fleet, &client, "web", PATIENCE).await;
    let history = invariants::history(&bed.zk, &root);
    assert_eq!(multi::fences(&history, &layout, "web", &id).len(), 1, "the victim stepped once");
    verify(&bed.zk, &client, &root, &["api", "web"], false).await;
}

/// An idle host cut off for longer than its session timeout: both services keep
/// running (same processes, still serving), the registrations vanish with the
/// session and come back unchanged after the heal; nothing else moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_host_cut_off_past_its_session_timeout_keeps_serving_and_registers_again() {
    let Some((bed, client, _)) = bed("net-idle", 2).await else { return };
    let layout = bed.fleet.layout();
    let root = bed.fleet.root.clone();
    let mark = invariants::last_zxid(&bed.zk, &root);
    let before = [identities(&bed.fleet, &client, "api").await, identities(&bed.fleet, &client, "web").await];
    bed.isolate_host(0);
    eventually_async("host-1's registrations to vanish with its session", PATIENCE, || async {
        let gone = !registered(&bed, &client, "api", 0).await && !registered(&bed, &client, "web", 0).await;
        gone.then_some(())
    })
    .await;
    for svc in ["api", "web"] {
        let v = if svc == "api" { "a1" } else { "w1" };
        assert_eq!(bed.served_version(0, svc).as_deref(), Some(v), "{svc} keeps serving while cut off");
    }
    bed.heal();
    for (svc, v) in [("api", "a1"), ("web", "w1")] {
        wait_service_versions(&bed.fleet, &client, svc, 2, v, PATIENCE).await;
    }
    let after = [identities(&bed.fleet, &client, "api").await, identities(&bed.fleet, &client, "web").await];
    assert_eq!(after, before, "same processes and versions, registered again");
    let history = invariants::history(&bed.zk, &root);
    for svc in ["api", "web"] {
        assert_quiet(&history, &layout, svc, Mark::Zxid(mark), Mark::End);
    }
    verify(&bed.zk, &client, &root, &["api", "web"], false).await;
}

/// The harness itself: a cut drops packets between two nodes only, isolation drops
/// everything, healing restores both, and dropping the net removes its namespaces.
#[test]
fn the_net_harness_cuts_heals_and_cleans_up() {
    let net = net_or_skip!();
    let (a, b) = (net.add("a"), net.add("b"));
    let listener = net.listen(b, 0);
    let addr = listener.local_addr().unwrap();
    let connects =
        |from| net.in_ns(from, move || std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok());
    let from_here = || std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok();
    // Reaching a node again after a heal takes a fresh neighbour resolution.
    let reach = |what: &str| {
        eventually(what, Duration::from_secs(10), || (connects(a) && from_here()).then_some(()));
    };
    reach("a and the test to reach b");
    net.cut(a, b);
    assert!(!connects(a), "a cut drops a's packets to b");
    assert!(from_here(), "a cut leaves other paths alone");
    net.heal();
    reach("a to reach b after the cut healed");
    net.isolate(b);
    assert!(!connects(a) && !from_here(), "an isolated node is reached by nobody");
    net.heal();
    reach("a and the test to reach b after the isolation healed");
    let ns = net.ns(a);
    drop(listener);
    drop(net);
    let left = std::process::Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&left.stdout).contains(&ns), "namespace {ns} removed");
}
