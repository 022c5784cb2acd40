//! Partitions inside a 3-member ZooKeeper ensemble, each member and each host in its
//! own network namespace: the leader cut off into a minority together with some
//! hosts, and one host cut off from two of the three members only. Judged from the
//! members' transaction logs (a transaction counts when a majority logged it).
//!
//! Skipped (with a message) where network namespaces cannot be created.

use baton_tests::chaos::{PATIENCE, policy, verify, wait_service_done, wait_service_versions};
use baton_tests::fleet::{online, stage};
use baton_tests::invariants;
use baton_tests::multi;
use baton_tests::netbed::{NetBed, fences_off_their_session, sessions_of, writes_by};
use baton_tests::netns::Net;
use baton_tests::{eventually, eventually_async};
use std::time::Duration;

const SESSION: Duration = Duration::from_secs(4);
const HOSTS: usize = 4;

async fn bed(name: &str) -> Option<(NetBed, zookeeper_client::Client)> {
    let net = match Net::new() {
        Ok(n) => n,
        Err(why) => {
            eprintln!("SKIPPED: this test needs network namespaces: {why}");
            return None;
        }
    };
    let mut bed = NetBed::new(net, name, 3, &["api", "web"], HOSTS, SESSION);
    let client = bed.client().await;
    multi::start_at(&mut bed.fleet, &client, &[("api", "a1"), ("web", "w1")]).await;
    Some((bed, client))
}

/// web rolls one host at a time; once two hosts run w2, the leader is cut off from
/// the other members together with those two hosts. No transaction of theirs is
/// committed while the partition lasts (the minority cannot reach a quorum); the
/// majority elects a leader and the two other hosts step there; healed, the
/// minority's hosts register again and every host runs w2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_cut_off_with_two_hosts_commits_nothing_and_the_majority_rolls_on() {
    let Some((bed, client)) = bed("net-leader").await else { return };
    let layout = bed.fleet.layout();
    let root = bed.fleet.root.clone();
    let w2 = multi::good(&bed.fleet, "web", "w2");
    stage(&client, &layout, "web", "w2", &w2, policy(1, 1, Duration::from_millis(1500))).await;
    let stepped: Vec<usize> = eventually_async("two hosts at w2", PATIENCE, || async {
        let o = online(&client, &layout, "web").await;
        let done: Vec<usize> = o
            .iter()
            .filter(|(_, v)| v == "w2")
            .filter_map(|(h, _)| bed.fleet.hosts.iter().position(|x| &x.id == h))
            .collect();
        (done.len() >= 2).then_some(done)
    })
    .await;
    let minority = &stepped[..2];
    let leader = bed.zk.leader().expect("a leader");
    let before = invariants::last_zxid(&bed.zk, &root);
    bed.isolate_member_with(leader, minority);
    let cut = invariants::history(&bed.zk, &root).last().map_or(before, |t| t.zxid);
    eventually("a new leader on the majority side", PATIENCE, || {
        (0..3).any(|i| i != leader && bed.zk.mode(i).as_deref() == Some("leader")).then_some(())
    });
    // The majority's hosts finish the rollout: the minority's ran w2 already.
    let majority: Vec<String> =
        (0..HOSTS).filter(|i| !minority.contains(i)).map(|i| bed.fleet.hosts[i].id.clone()).collect();
    eventually_async("the majority's hosts at w2", PATIENCE, || async {
        let o = online(&client, &layout, "web").await;
        majority.iter().all(|h| o.iter().any(|(x, v)| x == h && v == "w2")).then_some(())
    })
    .await;
    // The minority's sessions expire on the majority side.
    let gone: Vec<String> = minority.iter().map(|&i| bed.fleet.hosts[i].id.clone()).collect();
    eventually_async("the minority's registrations to expire", PATIENCE, || async {
        let o = online(&client, &layout, "api").await;
        (!o.iter().any(|(h, _)| gone.contains(h))).then_some(())
    })
    .await;
    let healed_at = invariants::history(&bed.zk, &root).last().map_or(cut, |t| t.zxid);
    let committed: std::collections::BTreeSet<i64> =
        baton_tests::txnlog::read_cluster(&bed.zk.data_dirs()).iter().map(|t| t.zxid).collect();
    let alone = baton_tests::txnlog::read_cluster(&[bed.zk.data_dir(leader)])
        .iter()
        .filter(|t| !committed.contains(&t.zxid))
        .count();
    eprintln!("the isolated leader logged {alone} proposal(s) no majority logged (never committed)");
    bed.heal();
    bed.zk.wait_serving();
    wait_service_versions(&bed.fleet, &client, "web", HOSTS, "w2", PATIENCE).await;
    wait_service_versions(&bed.fleet, &client, "api", HOSTS, "a1", PATIENCE).await;
    wait_service_done(&bed.fleet, &client, "web", PATIENCE).await;
    let history = invariants::history(&bed.zk, &root);
    for &m in minority {
        let id = &bed.fleet.hosts[m].id;
        let sessions = sessions_of(&history, &layout, id);
        let during = writes_by(&history, &sessions, cut, healed_at);
        assert!(during.is_empty(), "{id} (cut off with the old leader) committed during the partition: {during:?}");
    }
    for h in &bed.fleet.hosts {
        let off = fences_off_their_session(&history, &layout, "web", &h.id);
        assert!(off.is_empty(), "fences off their session: {off:?}");
        assert_eq!(multi::fences(&history, &layout, "web", &h.id).len(), 1, "{} stepped once", h.id);
    }
    verify(&bed.zk, &client, &root, &["api", "web"], false).await;
}

/// One host cut off from two of the three members while web rolls two at a time:
/// it reaches the third member (its session survives or a new one is opened), the
/// rollout completes, and every host steps once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cut_off_from_two_members_reaches_the_third_and_the_rollout_completes() {
    let Some((bed, client)) = bed("net-partial").await else { return };
    let layout = bed.fleet.layout();
    let root = bed.fleet.root.clone();
    let before = sessions_of(&invariants::history(&bed.zk, &root), &layout, &bed.fleet.hosts[0].id);
    bed.cut_host_from(0, &[0, 1]);
    let w2 = multi::good(&bed.fleet, "web", "w2");
    stage(&client, &layout, "web", "w2", &w2, policy(2, 2, Duration::from_millis(500))).await;
    wait_service_versions(&bed.fleet, &client, "web", HOSTS, "w2", PATIENCE).await;
    wait_service_done(&bed.fleet, &client, "web", PATIENCE).await;
    bed.heal();
    let history = invariants::history(&bed.zk, &root);
    let after = sessions_of(&history, &layout, &bed.fleet.hosts[0].id);
    eprintln!("host-1's sessions: before the cut {before:x?}, over the whole test {after:x?}");
    for h in &bed.fleet.hosts {
        let off = fences_off_their_session(&history, &layout, "web", &h.id);
        assert!(off.is_empty(), "fences off their session: {off:?}");
        assert_eq!(multi::fences(&history, &layout, "web", &h.id).len(), 1, "{} stepped once", h.id);
    }
    verify(&bed.zk, &client, &root, &["api", "web"], false).await;
}
