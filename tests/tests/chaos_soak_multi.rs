//! The randomized soak with two services per host (`api`, `web`): R rounds
//! (`BATON_CHAOS_ROUNDS`, default 3) each staging api, web or both (max_parallel
//! 1..=3, quorum 1..=2, a random bake; a bad release when one service is staged),
//! under sidecar kills and ZooKeeper member kills on a 3-node ensemble. After every
//! round: the invariants over the whole history (per-service isolation and free
//! slots included), and the service not staged in the round did not move at all.
//! The seed is printed; replay with `BATON_CHAOS_SEED`.

use baton_tests::ZkCluster;
use baton_tests::chaos::{
    PATIENCE, bounce_member, bounce_sidecar, client, policy, soak_seed, verify, wait_halted, wait_service_done,
    wait_service_versions,
};
use baton_tests::fleet::{Fleet, stage};
use baton_tests::invariants::{self, Mark, assert_quiet};
use baton_tests::multi::{self, artifact};
use baton_tests::unique_root;
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::time::Duration;
use znode_schema::HumanDuration;

const HOSTS: usize = 4;
const SERVICES: [&str; 2] = ["api", "web"];

#[tokio::test(flavor = "multi_thread")]
async fn randomized_rollouts_of_two_services_under_faults() {
    let (seed, rounds) = soak_seed("two-service soak");
    let mut rng = StdRng::seed_from_u64(seed);
    let cluster = ZkCluster::ensemble(3);
    let root = unique_root("soak-multi");
    let mut fleet = Fleet::multi(&cluster.connect_string(), &root, &SERVICES, HOSTS);
    let c = client(&cluster.connect_string()).await;
    let layout = fleet.layout();
    multi::start_at(&mut fleet, &c, &[("api", "api-1"), ("web", "web-1")]).await;
    // The last good version of each service, to roll back to after a halt.
    let mut good = ["api-1".to_string(), "web-1".to_string()];
    for round in 1..=rounds {
        let mark = invariants::last_zxid(&cluster, &root);
        let staged: Vec<usize> = match rng.gen_range(0..3) {
            0 => vec![0],
            1 => vec![1],
            _ => vec![0, 1],
        };
        let mut entries = Vec::new();
        for &s in &staged {
            let svc = SERVICES[s];
            let version = format!("{svc}-{}", round + 1);
            let bad = staged.len() == 1 && rng.gen_bool(0.25);
            let body =
                if bad { "exec {demo} --version {version} --health-fail" } else { "exec {demo} --version {version}" };
            let art = artifact(&fleet, svc, &version, body);
            let (quorum, parallel) = (rng.gen_range(1..=2), rng.gen_range(1..=3));
            let bake = Duration::from_millis(rng.gen_range(0..800));
            let mut p = policy(quorum, parallel, bake);
            p.health_deadline = HumanDuration::secs(3);
            eprintln!(
                "round {round}: stage {version} (bad {bad}, quorum {quorum}, parallel {parallel}, bake {bake:?})"
            );
            entries.push((s, version.clone(), bad, stage(&c, &layout, svc, &version, &art, p).await));
        }
        for _ in 0..rng.gen_range(1..=3) {
            match rng.gen_range(0..3) {
                0 => {
                    // A host in a step when there is one: its other service must not notice.
                    let mut i = rng.gen_range(0..HOSTS);
                    for (_, _, _, entry) in &entries {
                        let m = c.list_children(&layout.upgrading_dir(entry)).await.unwrap_or_default();
                        if let Some(h) = m.first().and_then(|h| fleet.hosts.iter().position(|x| x.id == *h)) {
                            i = h;
                        }
                    }
                    bounce_sidecar(&mut fleet, i, Duration::from_millis(rng.gen_range(0..1500))).await;
                }
                1 => {
                    let i = rng.gen_range(0..3);
                    bounce_member(&cluster, i, Duration::from_millis(rng.gen_range(0..2000))).await;
                }
                _ => {
                    eprintln!("  leave it alone for a while");
                    tokio::time::sleep(Duration::from_millis(rng.gen_range(100..1500))).await;
                }
            }
        }
        for (s, version, bad, entry) in &entries {
            let svc = SERVICES[*s];
            if *bad {
                let e = wait_halted(&fleet, &c, entry).await;
                assert!(e.reason.is_some_and(|r| !r.is_empty()), "a halt says why");
                eprintln!("  {svc} {version}: halted; rolling back to {}", good[*s]);
                let back = artifact(&fleet, svc, &good[*s], "exec {demo} --version {version}");
                stage(&c, &layout, svc, &good[*s], &back, policy(1, 1, Duration::ZERO)).await;
                wait_service_done(&fleet, &c, svc, PATIENCE).await;
                wait_service_versions(&fleet, &c, svc, HOSTS, &good[*s], PATIENCE).await;
            } else {
                wait_service_done(&fleet, &c, svc, PATIENCE).await;
                wait_service_versions(&fleet, &c, svc, HOSTS, version, PATIENCE).await;
                good[*s] = version.clone();
                eprintln!("  {svc} {version}: completed");
            }
        }
        let c2 = client(&cluster.connect_string()).await;
        verify(&cluster, &c2, &root, &SERVICES, false).await;
        let history = invariants::history(&cluster, &root);
        for s in (0..2).filter(|s| !staged.contains(s)) {
            assert_quiet(&history, &layout, SERVICES[s], Mark::Zxid(mark), Mark::End);
        }
    }
}
