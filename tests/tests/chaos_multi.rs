//! Chaos with two services per host (`api` and `web`): a sidecar kill -9'd at each
//! point of a **web** step on hosts whose api rollout completed earlier. Whatever
//! the point, api is untouched on every host (same process, version, registration,
//! no api history, no api hook), web's rollout completes, and the whole history
//! satisfies the invariants (per-service isolation included). A kill during the
//! bake finishes the step with the same healthy process and counts no failure.

use baton_tests::chaos::{
    PATIENCE, policy, served_version, verify, wait_marker, wait_service_done, wait_service_versions,
};
use baton_tests::fleet::{Fleet, stage};
use baton_tests::invariants::{self, Mark, assert_quiet};
use baton_tests::multi::{self, Identity, api_done_web_at_w1, artifact, hook_calls, hooks, identities, log_since};
use baton_tests::{eventually, shared_server, unique_root};
use std::time::Duration;
use znode_schema::EventKind;

/// Where the victim's web step is when its sidecar is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Point {
    /// Just fenced: its marker exists and web's drain hook runs.
    Fenced,
    /// Stopping web's old release (whose wrapper takes 3 s to exit after SIGTERM).
    Stopping,
    /// web's new release started but is not healthy yet.
    Starting,
    /// web's new release is healthy and baking.
    Baking,
}

const HOSTS: usize = 3;

/// What a run leaves for the assertions of the scenario.
struct Run {
    fleet: Fleet,
    client: zookeeper_client::Client,
    root: String,
    victim: usize,
    /// web's identity on the victim just before the kill.
    web_before_kill: Identity,
    /// api's identity on every host before web's rollout.
    api_before: Vec<Identity>,
    /// The last zxid before web's rollout was staged.
    mark: i64,
    api_hooks: std::path::PathBuf,
    api_hook_calls: usize,
    with_api: bool,
}

/// Kills a sidecar at `point` of a web step; `with_api`: the hosts also run api,
/// whose rollout completed first (otherwise they run web alone).
async fn kill_web_at(point: Point, with_api: bool) -> Run {
    let root = unique_root(&format!("multi-kill-{point:?}-{with_api}").to_lowercase());
    let services: &[&str] = if with_api { &["api", "web"] } else { &["web"] };
    let mut fleet = Fleet::multi(&shared_server().connect_string(), &root, services, HOSTS);
    let gate = fleet.dir().join("drain-gate");
    let web_hooks = fleet.dir().join("web-hooks.log");
    let api_hooks = fleet.dir().join("api-hooks.log");
    for h in &fleet.hosts {
        let api = hooks(&h.id, &api_hooks, None);
        let web = hooks(&h.id, &web_hooks, Some(&gate));
        fleet.write_config_services(h, &[("api", api.as_str()), ("web", web.as_str())]);
    }
    std::fs::write(&gate, "").unwrap();
    let client = fleet.client().await;
    let layout = fleet.layout();
    let w1 = (point == Point::Stopping).then(|| {
        let slow = "{demo} --version {version} &\nchild=$!\ntrap 'sleep 3; exit 0' TERM\nwait $child\nwait $child";
        artifact(&fleet, "web", "w1", slow)
    });
    if with_api {
        api_done_web_at_w1(&mut fleet, &client, w1).await;
    } else {
        let w1 = w1.unwrap_or_else(|| multi::good(&fleet, "web", "w1"));
        stage(&client, &layout, "web", "w1", &w1, policy(0, HOSTS as u32, Duration::ZERO)).await;
        fleet.start_all();
        wait_service_versions(&fleet, &client, "web", HOSTS, "w1", PATIENCE).await;
        wait_service_done(&fleet, &client, "web", PATIENCE).await;
    }
    let api_before = identities(&fleet, &client, "api").await;
    let api_hook_calls = hook_calls(&api_hooks).len();
    let mark = invariants::last_zxid(shared_server(), &root);
    if point == Point::Fenced {
        std::fs::remove_file(&gate).unwrap();
    }
    let w2 = match point {
        Point::Starting => artifact(&fleet, "web", "w2", "exec {demo} --version {version} --start-delay 3s"),
        _ => multi::good(&fleet, "web", "w2"),
    };
    let bake = if point == Point::Baking { Duration::from_secs(4) } else { Duration::from_millis(200) };
    let offsets: Vec<usize> = (0..HOSTS).map(|i| baton_tests::chaos::plain_log(&fleet, i).len()).collect();
    let entry = stage(&client, &layout, "web", "w2", &w2, policy(1, 1, bake)).await;
    let victim = wait_marker(&fleet, &client, &entry).await;
    let id = fleet.hosts[victim].id.clone();
    let port = fleet.port_of(victim, "web");
    match point {
        Point::Fenced | Point::Stopping => {
            eventually("web's drain hook to run on the victim", PATIENCE, || {
                hook_calls(&web_hooks).contains(&format!("drain {id}")).then_some(())
            });
            if point == Point::Stopping {
                eventually("web's old release to get its SIGTERM", PATIENCE, || {
                    served_version(port).is_none().then_some(())
                });
            }
        }
        Point::Starting => {
            eventually("web's new release to start", PATIENCE, || {
                log_since(&fleet, victim, offsets[victim])
                    .contains("service started service=web version=\"w2\"")
                    .then_some(())
            });
        }
        Point::Baking => {
            eventually("web's new release to serve", PATIENCE, || {
                (served_version(port).as_deref() == Some("w2")).then_some(())
            });
        }
    }
    let web_before_kill = multi::identity(&fleet, &client, victim, "web").await;
    fleet.kill(victim);
    std::fs::write(&gate, "").unwrap();
    fleet.start(victim);
    wait_service_versions(&fleet, &client, "web", HOSTS, "w2", Duration::from_secs(60)).await;
    wait_service_done(&fleet, &client, "web", Duration::from_secs(60)).await;
    Run { fleet, client, root, victim, web_before_kill, api_before, mark, api_hooks, api_hook_calls, with_api }
}

/// api is untouched on every host since `run.mark`; then the full-history check.
async fn api_untouched_then_verify(run: Run) {
    let Run { fleet, client, root, api_before, mark, api_hooks, api_hook_calls, with_api, .. } = run;
    if !with_api {
        verify(shared_server(), &client, &root, &["web"], false).await;
        return;
    }
    let history = invariants::history(shared_server(), &root);
    assert_quiet(&history, &fleet.layout(), "api", Mark::Zxid(mark), Mark::End);
    let api_after = identities(&fleet, &client, "api").await;
    for (i, (b, a)) in api_before.iter().zip(&api_after).enumerate() {
        assert_eq!(a, b, "api on {} was touched by web's rollout", fleet.hosts[i].id);
        assert_eq!(
            served_version(fleet.port_of(i, "api")).as_deref(),
            Some("a2"),
            "api serves a2 on {}",
            fleet.hosts[i].id
        );
    }
    let calls = hook_calls(&api_hooks);
    assert_eq!(calls.len(), api_hook_calls, "api hooks ran during web's rollout: {:?}", &calls[api_hook_calls..]);
    verify(shared_server(), &client, &root, &["api", "web"], false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn web_killed_just_after_the_fence_leaves_api_alone() {
    api_untouched_then_verify(kill_web_at(Point::Fenced, true).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn web_killed_while_stopping_leaves_api_alone() {
    api_untouched_then_verify(kill_web_at(Point::Stopping, true).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn web_killed_while_starting_leaves_api_alone() {
    api_untouched_then_verify(kill_web_at(Point::Starting, true).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn web_killed_while_baking_leaves_api_alone() {
    api_untouched_then_verify(kill_web_at(Point::Baking, true).await).await;
}

/// A kill during web's bake (hosts running web alone, so that nothing but the
/// bake is judged): the restarted sidecar finishes the step with the very process
/// that was baking (same pid, no restart), counts no failure and writes no
/// `host_failed` event for the victim.
#[tokio::test(flavor = "multi_thread")]
async fn a_kill_during_the_bake_finishes_the_step_with_the_same_process() {
    let run = kill_web_at(Point::Baking, false).await;
    let (fleet, client, victim) = (&run.fleet, &run.client, run.victim);
    let id = fleet.hosts[victim].id.clone();
    let after = multi::identity(fleet, client, victim, "web").await;
    let history = invariants::history(shared_server(), &run.root);
    let layout = fleet.layout();
    let failed: Vec<String> = multi::events(&history, &layout, "web")
        .into_iter()
        .filter(|(_, e)| e.event == EventKind::HostFailed)
        .map(|(t, e)| format!("zxid {:#x}: {:?} {:?}", t.zxid, e.host, e.detail))
        .collect();
    assert!(failed.is_empty(), "the kill during the bake counted as a failure of web: {failed:?}");
    assert_eq!(multi::max_failures(&history, "web"), 0, "web's entry counted a failure");
    assert_eq!(multi::fences(&history, &layout, "web", &id).len(), 1, "{id} was fenced again for web");
    let (b, a) = (&run.web_before_kill, &after);
    assert!(
        b.pidfile_pid.is_some() && b.pidfile_version.as_deref() == Some("w2"),
        "web baked w2 before the kill: {b:?}"
    );
    assert_eq!(
        (a.pidfile_pid, a.start_time),
        (b.pidfile_pid, b.start_time),
        "web on {id} was restarted after the kill during its bake (before {b:?}, after {a:?})"
    );
    api_untouched_then_verify(run).await;
}
