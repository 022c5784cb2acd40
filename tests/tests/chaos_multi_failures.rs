//! Failed steps with two services per host (`api`, `web`): web's release fails its
//! health check on some hosts. A rollout never stays active once nobody can step,
//! a halted one stays halted past every periodic re-check, and a host whose step
//! failed does not step again on that release after its sidecar restarts. api is
//! untouched; the whole history satisfies the invariants.

use baton_tests::chaos::{PATIENCE, policy, verify, wait_halted, wait_service_done};
use baton_tests::fleet::{Fleet, deploys, stage};
use baton_tests::invariants::{self, Mark, assert_quiet};
use baton_tests::multi::{self, api_done_web_at_w1, artifact, identities};
use baton_tests::{eventually_async, shared_server, unique_root};
use std::time::Duration;
use znode_schema::{DeployState, EventKind, HumanDuration, Policy};

const HOSTS: usize = 3;

/// web's policy: one host at a time, quorum 1, 3 s to pass the health check.
fn web_policy(max_failures: u32) -> Policy {
    let mut p = policy(1, 1, Duration::from_millis(200));
    p.health_deadline = HumanDuration::secs(3);
    p.max_failures = max_failures;
    p
}

/// A web release whose `k`-th and later starts (counted across the fleet, from 0)
/// fail their health check: with one host at a time, the hosts stepping last fail.
fn failing_from(fleet: &Fleet, version: &str, k: usize) -> znode_schema::Artifact {
    let starts = fleet.dir().join(format!("starts-{version}"));
    let body = format!(
        "n=$(cat {s} 2>/dev/null | wc -l)\necho \"$BATON_RELEASE_DIR\" >> {s}\n\
         if [ \"$n\" -ge {k} ]; then exec {{demo}} --version {{version}} --health-fail; fi\n\
         exec {{demo}} --version {{version}}",
        s = starts.display()
    );
    artifact(fleet, "web", version, &body)
}

/// The hosts with a `host_failed` event of web so far, in order.
async fn failed_hosts(c: &zookeeper_client::Client, fleet: &Fleet) -> Vec<String> {
    let l = fleet.layout();
    let mut names = c.list_children(&l.history("web")).await.unwrap_or_default();
    names.sort();
    let mut out = Vec::new();
    for n in names {
        let path = l.history_event("web", &n);
        let Ok((data, _)) = c.get_data(&path).await else { continue };
        if let Ok(e) = znode_schema::decode::<znode_schema::HistoryEvent>(&path, &data) {
            if e.event == EventKind::HostFailed {
                out.extend(e.host);
            }
        }
    }
    out
}

async fn setup(name: &str) -> (Fleet, zookeeper_client::Client, String, i64) {
    let root = unique_root(name);
    let mut fleet = Fleet::multi(&shared_server().connect_string(), &root, &["api", "web"], HOSTS);
    let c = fleet.client().await;
    api_done_web_at_w1(&mut fleet, &c, None).await;
    let mark = invariants::last_zxid(shared_server(), &root);
    (fleet, c, root, mark)
}

/// `max_failures 1` and only the host stepping last fails: once its failure is
/// committed nobody is left to step, so the rollout ends (completed without it, or
/// halted) within 10 s; it is never left active.
#[tokio::test(flavor = "multi_thread")]
async fn the_last_host_failing_under_max_failures_1_ends_the_rollout() {
    let (fleet, c, root, mark) = setup("multi-lastfail").await;
    let api_before = identities(&fleet, &c, "api").await;
    let w2 = failing_from(&fleet, "w2", HOSTS - 1);
    let entry = stage(&c, &fleet.layout(), "web", "w2", &w2, web_policy(1)).await;
    eventually_async("the last host's step to fail", PATIENCE, || async {
        (!failed_hosts(&c, &fleet).await.is_empty()).then_some(())
    })
    .await;
    let l = fleet.layout();
    let left = eventually_async(
        "the rollout to end (completed or halted) after the last step",
        Duration::from_secs(10),
        || async {
            let d = deploys(&c, &l).await;
            match d.iter().find(|(n, _)| *n == entry) {
                None => Some("completed".to_string()),
                Some((_, e)) if e.state == DeployState::Halted => Some(format!("halted: {:?}", e.reason)),
                Some(_) => None,
            }
        },
    )
    .await;
    eprintln!("the rollout ended: {left}");
    assert_quiet(&invariants::history(shared_server(), &root), &l, "api", Mark::Zxid(mark), Mark::End);
    assert_eq!(identities(&fleet, &c, "api").await, api_before);
    verify(shared_server(), &c, &root, &["api", "web"], false).await;
}

/// `max_failures 1` and the last two hosts fail: the second failure halts the
/// rollout with a reason naming that host.
#[tokio::test(flavor = "multi_thread")]
async fn two_failing_hosts_under_max_failures_1_halt_naming_the_host() {
    let (fleet, c, root, mark) = setup("multi-twofail").await;
    let w2 = failing_from(&fleet, "w2", HOSTS - 2);
    let entry = stage(&c, &fleet.layout(), "web", "w2", &w2, web_policy(1)).await;
    let e = wait_halted(&fleet, &c, &entry).await;
    let failed = failed_hosts(&c, &fleet).await;
    assert_eq!(failed.len(), 2, "two hosts failed: {failed:?}");
    let reason = e.reason.clone().unwrap_or_default();
    assert!(reason.contains(&failed[1]), "the halt names the host that failed last ({}): {reason:?}", failed[1]);
    assert_eq!(e.failures, 2, "{e:?}");
    assert_quiet(&invariants::history(shared_server(), &root), &fleet.layout(), "api", Mark::Zxid(mark), Mark::End);
    verify(shared_server(), &c, &root, &["api", "web"], false).await;
}

/// A halted rollout stays halted for longer than the sidecars' periodic re-check
/// (30 s): held 35 s, the log shows no fence, marker, event or registration change
/// of web (or api) in that window.
#[tokio::test(flavor = "multi_thread")]
async fn a_halted_rollout_stays_halted_past_every_periodic_recheck() {
    let (fleet, c, root, _) = setup("multi-halted").await;
    let bad = artifact(&fleet, "web", "w2", "exec {demo} --version {version} --health-fail");
    let entry = stage(&c, &fleet.layout(), "web", "w2", &bad, web_policy(0)).await;
    wait_halted(&fleet, &c, &entry).await;
    let from = invariants::last_zxid(shared_server(), &root);
    // The window observed (not a synchronisation): past the 30 s re-evaluation.
    tokio::time::sleep(Duration::from_secs(35)).await;
    let history = invariants::history(shared_server(), &root);
    for svc in ["web", "api"] {
        assert_quiet(&history, &fleet.layout(), svc, Mark::Zxid(from), Mark::End);
    }
    let d = deploys(&c, &fleet.layout()).await;
    assert!(d.iter().any(|(n, e)| *n == entry && e.state == DeployState::Halted), "still halted: {d:?}");
    verify(shared_server(), &c, &root, &["api", "web"], false).await;
}

/// A host whose web step failed (the release fails its health check on that host
/// only) has its sidecar killed and restarted while the rollout goes on
/// (`max_failures` 5): it never steps on that release again (one fence, one
/// `host_failed` event), and the rollout completes without it.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_host_does_not_step_again_on_a_release_that_failed_there() {
    let root = unique_root("multi-failmemory");
    let mut fleet = Fleet::multi(&shared_server().connect_string(), &root, &["api", "web"], 4);
    let c = fleet.client().await;
    multi::start_at(&mut fleet, &c, &[("api", "a1"), ("web", "w1")]).await;
    // The first host to start w2 fails its health check there, every time.
    let bad = fleet.dir().join("bad-host");
    let body = format!(
        "[ -e {b} ] || echo \"$BATON_RELEASE_DIR\" > {b}\n\
         if [ \"$(cat {b})\" = \"$BATON_RELEASE_DIR\" ]; then exec {{demo}} --version {{version}} --health-fail; fi\n\
         exec {{demo}} --version {{version}}",
        b = bad.display()
    );
    let w2 = artifact(&fleet, "web", "w2", &body);
    let mut p = web_policy(5);
    p.bake = HumanDuration(Duration::from_secs(1));
    stage(&c, &fleet.layout(), "web", "w2", &w2, p).await;
    let victim_id = eventually_async("a host's step to fail", PATIENCE, || async {
        failed_hosts(&c, &fleet).await.into_iter().next()
    })
    .await;
    let victim = fleet.hosts.iter().position(|h| h.id == victim_id).unwrap();
    fleet.kill(victim);
    fleet.start(victim);
    wait_service_done(&fleet, &c, "web", Duration::from_secs(90)).await;
    let history = invariants::history(shared_server(), &root);
    let l = fleet.layout();
    let failures: Vec<_> = multi::events(&history, &l, "web")
        .into_iter()
        .filter(|(_, e)| e.event == EventKind::HostFailed && e.host.as_deref() == Some(victim_id.as_str()))
        .map(|(t, e)| format!("zxid {:#x}: {:?}", t.zxid, e.detail))
        .collect();
    let fences = multi::fences(&history, &l, "web", &victim_id).len();
    assert!(
        failures.len() == 1 && fences == 1,
        "{victim_id} stepped again on w2 after its restart: fenced {fences} times, host_failed {failures:?}"
    );
    verify(shared_server(), &c, &root, &["api", "web"], false).await;
}
