//! A randomized soak in the spirit of Kubernetes' iterative deployment test: R rounds
//! (`BATON_CHAOS_ROUNDS`, default 3) of random stages, pauses, resumes, aborts by
//! restaging, bad releases, sidecar kills and ZooKeeper member kills on a 3-node
//! ensemble, with the invariant checker over the whole history after every round.
//! The seed is printed; replay with `BATON_CHAOS_SEED`.

use baton_tests::ZkCluster;
use baton_tests::chaos::{
    bounce_member, bounce_sidecar, client, policy, script_artifact, soak_seed, verify, wait_done, wait_halted,
};
use baton_tests::fleet::{Fleet, deploys, stage};
use baton_tests::{eventually_async, unique_root};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::time::Duration;
use znode_schema::Layout;
use znode_schema::{DeployName, DeployState};

const HOSTS: usize = 4;

#[tokio::test(flavor = "multi_thread")]
async fn randomized_rollouts_under_faults() {
    let (seed, rounds) = soak_seed("chaos soak");
    let mut rng = StdRng::seed_from_u64(seed);
    let cluster = ZkCluster::ensemble(3);
    let root = unique_root("soak");
    let mut fleet = Fleet::new(&cluster.connect_string(), &root, "api", HOSTS);
    let c = client(&cluster.connect_string()).await;
    let layout = fleet.layout();
    let v1 = script_artifact(&fleet, "1", "exec {demo} --version {version}");
    stage(&c, &layout, "api", "1", &v1, policy(0, HOSTS as u32, Duration::ZERO)).await;
    fleet.start_all();
    wait_done(&fleet, &c).await;
    for round in 1..=rounds {
        let version = format!("{}", round + 1);
        let bad = rng.gen_bool(0.2);
        let body =
            if bad { "exec {demo} --version {version} --health-fail" } else { "exec {demo} --version {version}" };
        let art = script_artifact(&fleet, &version, body);
        let quorum = rng.gen_range(1..=2);
        let parallel = rng.gen_range(1..=2);
        let bake = Duration::from_millis(rng.gen_range(0..800));
        let mut p = policy(quorum, parallel, bake);
        p.health_deadline = znode_schema::HumanDuration::secs(3);
        eprintln!("round {round}: stage {version} (bad {bad}, quorum {quorum}, parallel {parallel}, bake {bake:?})");
        let entry = stage(&c, &layout, "api", &version, &art, p).await;
        let mut paused = false;
        for _ in 0..rng.gen_range(1..=3) {
            match rng.gen_range(0..5) {
                0 => {
                    eprintln!("  pause, then resume");
                    set_state_if_any(&c, &layout, &entry, DeployState::Paused).await;
                    tokio::time::sleep(Duration::from_millis(rng.gen_range(100..1000))).await;
                    set_state_if_any(&c, &layout, &entry, DeployState::Active).await;
                }
                1 => {
                    let i = rng.gen_range(0..HOSTS);
                    bounce_sidecar(&mut fleet, i, Duration::from_millis(rng.gen_range(0..1500))).await;
                }
                2 => {
                    let i = rng.gen_range(0..3);
                    bounce_member(&cluster, i, Duration::from_millis(rng.gen_range(0..2000))).await;
                }
                3 => {
                    eprintln!("  leave it alone for a while");
                    tokio::time::sleep(Duration::from_millis(rng.gen_range(100..1500))).await;
                }
                _ => {
                    eprintln!("  pause and leave it paused briefly");
                    set_state_if_any(&c, &layout, &entry, DeployState::Paused).await;
                    paused = true;
                }
            }
        }
        if paused {
            set_state_if_any(&c, &layout, &entry, DeployState::Active).await;
        }
        // The round ends when the rollout completed, or halted (a bad release): then an
        // operator rolls back by staging the previous version again... here it simply
        // stays halted until the next round's stage supersedes it.
        let outcome = settle(&fleet, &c, &entry, bad).await;
        eprintln!("  round {round}: {outcome}");
        let c2 = client(&cluster.connect_string()).await;
        verify(&cluster, &c2, &root, &["api"], false).await;
    }
}

/// Waits until `entry` completed (a good release) or halted (a bad one).
async fn settle(fleet: &Fleet, c: &zookeeper_client::Client, entry: &DeployName, bad: bool) -> &'static str {
    if bad {
        let e = wait_halted(fleet, c, entry).await;
        assert!(e.reason.is_some_and(|r| !r.is_empty()), "a halt says why");
        return "halted";
    }
    wait_done(fleet, c).await;
    let layout = fleet.layout();
    let n = fleet.hosts.len();
    eventually_async("every host online after the round", baton_tests::chaos::PATIENCE, || async {
        let o = baton_tests::fleet::online(c, &layout, "api").await;
        (o.len() == n && deploys(c, &layout).await.is_empty()).then_some(())
    })
    .await;
    "completed"
}

/// Pauses or resumes `entry` like an operator (`deployctl pause|resume`), unless its
/// rollout already completed.
async fn set_state_if_any(c: &zookeeper_client::Client, l: &Layout, entry: &DeployName, state: DeployState) {
    use zookeeper_client::Error;
    let path = l.deploy_entry(entry);
    loop {
        let (data, stat) = match c.get_data(&path).await {
            Ok(r) => r,
            Err(Error::NoNode) => return,
            Err(e) => panic!("get {path}: {e}"),
        };
        let mut e: znode_schema::DeployEntry = znode_schema::decode(&path, &data).unwrap();
        e.state = state;
        if state == DeployState::Active {
            e.failures = 0;
            e.failed_hosts.clear();
            e.reason = None;
        }
        match c.set_data(&path, &znode_schema::encode(&e), Some(stat.version)).await {
            Ok(_) | Err(Error::NoNode) => return,
            Err(Error::BadVersion) => continue,
            Err(e) => panic!("set {path}: {e}"),
        }
    }
}
