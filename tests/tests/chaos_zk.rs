//! Chaos, ZooKeeper side: a real 3-node ensemble loses its leader, a follower, or
//! everything for longer than the sidecars' session timeout, in the middle of a
//! rollout of real sidecars. Afterwards the whole history, read from the members'
//! transaction logs, must satisfy every invariant, and the rollout must complete.

use baton_tests::ZkCluster;
use baton_tests::chaos::{PATIENCE, client, policy, start_at_v1, verify, wait_done, wait_marker, wait_versions};
use baton_tests::fleet::{Behaviour, Fleet, online, stage};
use baton_tests::{eventually, eventually_async, unique_root};
use std::time::Duration;

/// Four hosts on an ensemble, at v1; v2 staged one host at a time with a bake, and
/// `fault` applied once the first host holds the slot.
async fn rollout_through(name: &str, fault: impl FnOnce(&ZkCluster)) {
    let cluster = ZkCluster::ensemble(3);
    let root = unique_root(name);
    let mut fleet = Fleet::new(&cluster.connect_string(), &root, "api", 4);
    let c = client(&cluster.connect_string()).await;
    start_at_v1(&mut fleet, &c).await;
    let v2 = fleet.artifact("2", Behaviour::Good);
    let entry = stage(&c, &fleet.layout(), "api", "2", &v2, policy(2, 1, Duration::from_millis(1500))).await;
    wait_marker(&fleet, &c, &entry).await;
    fault(&cluster);
    wait_versions(&fleet, &c, 4, "2").await;
    wait_done(&fleet, &c).await;
    verify(&cluster, &c, &root, &["api"], false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_leader_killed_mid_rollout() {
    rollout_through("zkleader", |cluster| {
        let leader = cluster.leader().expect("a leader");
        cluster.kill(leader);
        cluster.wait_serving();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_killed_mid_rollout() {
    rollout_through("zkfollower", |cluster| {
        let leader = cluster.leader().expect("a leader");
        cluster.kill((leader + 1) % 3);
    })
    .await;
}

/// The whole ensemble goes away for longer than the sidecars' session timeout (4 s)
/// while a host is in its step: services keep running, and once ZooKeeper is back the
/// sidecars open new sessions, finish or undo the step, and the rollout completes.
#[tokio::test(flavor = "multi_thread")]
async fn the_whole_ensemble_stopped_past_the_session_timeout() {
    let cluster = ZkCluster::ensemble(3);
    let root = unique_root("zkall");
    let mut fleet = Fleet::new(&cluster.connect_string(), &root, "api", 3);
    let c = client(&cluster.connect_string()).await;
    start_at_v1(&mut fleet, &c).await;
    let pids: Vec<_> = fleet.hosts.iter().map(|h| service_pid(&h.data_dir)).collect();
    let v2 = fleet.artifact("2", Behaviour::Good);
    let entry = stage(&c, &fleet.layout(), "api", "2", &v2, policy(1, 1, Duration::from_secs(3))).await;
    let stepping = wait_marker(&fleet, &c, &entry).await;
    for i in 0..3 {
        cluster.stop(i);
    }
    // The outage must outlast the session timeout: wait until every sidecar noticed
    // its session is gone (the client declares it expired after ~7/5 of the timeout).
    let expired = |i: usize| fleet.log(i).matches("zookeeper session lost").count() > 0;
    eventually("every sidecar to lose its session", PATIENCE, || (0..3).all(expired).then_some(()));
    // The hosts not in a step kept their service running throughout.
    for (i, h) in fleet.hosts.iter().enumerate() {
        if i != stepping {
            assert_eq!(service_pid(&h.data_dir), pids[i], "{} kept its service", h.id);
        }
    }
    for i in 0..3 {
        cluster.start_member(i);
    }
    cluster.wait_serving();
    let c = client(&cluster.connect_string()).await;
    wait_versions(&fleet, &c, 3, "2").await;
    wait_done(&fleet, &c).await;
    verify(&cluster, &c, &root, &["api"], false).await;
    eventually_async("the sidecars to stay registered", PATIENCE, || async {
        (online(&c, &fleet.layout(), "api").await.len() == 3).then_some(())
    })
    .await;
}

/// The pid of the service recorded under a host's data dir.
fn service_pid(data_dir: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join("api/service.pid"))
        .ok()
        .map(|s| s.split_whitespace().next().unwrap_or("").into())
}
