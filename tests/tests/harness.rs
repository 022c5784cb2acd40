//! The harness's own tests: a standalone server serves; a 3-node ensemble keeps
//! serving writes after its leader is killed, and the killed member comes back.

use baton_tests::{ZkCluster, eventually_async, shared_server, unique_root};
use std::time::Duration;
use zookeeper_client as zk;

async fn connect(servers: &str) -> zk::Client {
    zk::Client::connector()
        .with_session_timeout(Duration::from_secs(6))
        .connect(servers)
        .await
        .unwrap_or_else(|e| panic!("connect to {servers}: {e}"))
}

fn persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

#[tokio::test]
async fn standalone_server_serves_reads_and_writes() {
    let server = shared_server();
    assert_eq!(server.mode(0).as_deref(), Some("standalone"));
    let client = connect(&server.connect_string()).await;
    let root = unique_root("standalone");
    client.create(&root, b"hello", &persistent()).await.unwrap();
    let (data, _) = client.get_data(&root).await.unwrap();
    assert_eq!(data, b"hello");
}

#[tokio::test]
async fn unique_roots_differ() {
    assert_ne!(unique_root("a"), unique_root("a"));
}

#[tokio::test(flavor = "multi_thread")]
async fn ensemble_survives_its_leader_being_killed() {
    let cluster = ZkCluster::ensemble(3);
    let leader = cluster.leader().expect("an ensemble has a leader");
    let client = connect(&cluster.connect_string()).await;
    let root = unique_root("failover");
    client.create(&root, b"before", &persistent()).await.unwrap();

    cluster.kill(leader);
    assert!(!cluster.members()[leader].is_running());

    // A write after the kill: the remaining two elect a leader and accept it. The
    // client reconnects to a survivor on its own; ConnectionLoss is the caller's to retry.
    let path = format!("{root}/after");
    eventually_async("a write to succeed after the leader was killed", Duration::from_secs(60), || async {
        match client.create(&path, b"after", &persistent()).await {
            Ok(_) | Err(zk::Error::NodeExists) => Some(()),
            Err(_) => None,
        }
    })
    .await;
    let new_leader = cluster.leader().expect("a new leader");
    assert_ne!(new_leader, leader);
    assert_eq!(client.get_data(&path).await.unwrap().0, b"after");

    // The killed member rejoins as a follower and serves the data written without it.
    cluster.restart(leader);
    assert_eq!(cluster.mode(leader).as_deref(), Some("follower"));
    let direct = connect(&cluster.members()[leader].address()).await;
    direct.sync(&path).await.unwrap();
    assert_eq!(direct.get_data(&path).await.unwrap().0, b"after");
}
