//! The artifact server on its own network namespace, cut off from half the hosts
//! while web rolls: the hosts that reach it download, queue and step; the others
//! keep retrying (their service untouched, still registered at w1, so the rollout
//! cannot complete without them); healed, they download, step, and the rollout
//! completes. Judged from the transaction log with the invariants.
//!
//! Skipped (with a message) where network namespaces cannot be created.

use baton_tests::artifact_server::ArtifactServer;
use baton_tests::chaos::{PATIENCE, policy, verify, wait_service_done, wait_service_versions};
use baton_tests::fleet::{deploys, online, stage};
use baton_tests::multi::{self, log_since};
use baton_tests::netbed::NetBed;
use baton_tests::netns::Net;
use baton_tests::{eventually, eventually_async, invariants};
use std::time::Duration;
use znode_schema::{Artifact, ArtifactFormat};

const HOSTS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_artifact_server_cut_off_from_half_the_hosts_delays_them_until_the_heal() {
    let net = match Net::new() {
        Ok(n) => n,
        Err(why) => {
            eprintln!("SKIPPED: this test needs network namespaces: {why}");
            return;
        }
    };
    let mut bed = NetBed::new(net, "net-artifact", 1, &["api", "web"], HOSTS, Duration::from_secs(3));
    let art = bed.net.add("art");
    let server = ArtifactServer::start_on(bed.net.listen(art, 8080));
    let client = bed.client().await;
    multi::start_at(&mut bed.fleet, &client, &[("api", "a1"), ("web", "w1")]).await;
    let layout = bed.fleet.layout();
    let root = bed.fleet.root.clone();
    let local = multi::good(&bed.fleet, "web", "w2");
    let bytes = std::fs::read(local.url.strip_prefix("file://").unwrap()).unwrap();
    server.put("/web/w2/demo", bytes);
    let w2 = Artifact { url: server.url("/web/w2/demo"), format: ArtifactFormat::File, ..local };
    let offsets: Vec<usize> = (0..HOSTS).map(|i| baton_tests::chaos::plain_log(&bed.fleet, i).len()).collect();
    for i in [0, 1] {
        bed.net.cut(bed.hosts[i], art);
    }
    let entry = stage(&client, &layout, "web", "w2", &w2, policy(1, 2, Duration::ZERO)).await;
    // The hosts that reach the server step; the cut-off ones retry.
    eventually_async("host-3 and host-4 at w2", PATIENCE, || async {
        let o = online(&client, &layout, "web").await;
        let w2: Vec<&str> = o.iter().filter(|(_, v)| v == "w2").map(|(h, _)| h.as_str()).collect();
        (w2 == ["host-3", "host-4"]).then_some(())
    })
    .await;
    for i in [0, 1] {
        eventually("a cut-off host to fail a download attempt", PATIENCE, || {
            log_since(&bed.fleet, i, offsets[i]).contains("download failed; retrying").then_some(())
        });
    }
    let o = online(&client, &layout, "web").await;
    assert_eq!(o.iter().filter(|(_, v)| v == "w1").count(), 2, "the cut-off hosts still serve w1: {o:?}");
    assert!(deploys(&client, &layout).await.iter().any(|(n, _)| *n == entry), "the rollout waits for them");
    bed.heal();
    wait_service_versions(&bed.fleet, &client, "web", HOSTS, "w2", PATIENCE).await;
    wait_service_done(&bed.fleet, &client, "web", PATIENCE).await;
    let history = invariants::history(&bed.zk, &root);
    for h in &bed.fleet.hosts {
        assert_eq!(multi::fences(&history, &layout, "web", &h.id).len(), 1, "{} stepped once", h.id);
    }
    eprintln!("the artifact server answered {} request(s)", server.request_count());
    verify(&bed.zk, &client, &root, &["api", "web"], false).await;
}
