//! Chaos, host side: a sidecar kill -9'd at each point of its upgrade, and a sidecar
//! frozen (SIGSTOP) past its session timeout in the middle of a step. The host comes
//! back, finishes or undoes the step, the rollout completes, every host serves the
//! staged version, and the whole history satisfies the invariants.

use baton_tests::artifact_server::{ArtifactServer, Fault};
use baton_tests::chaos::{
    PATIENCE, plain_log, policy, script_artifact, served_version, start_at_v1, verify, wait_done, wait_marker,
    wait_queued, wait_versions,
};
use baton_tests::fleet::{Fleet, stage};
use baton_tests::{eventually, eventually_async, shared_server, unique_root};
use nix::sys::signal::Signal;
use std::time::Duration;
use znode_schema::{Artifact, ArtifactFormat, Policy};

/// Where the victim is when it is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Point {
    /// Its download keeps failing (the server cuts every transfer).
    Downloading,
    /// It holds a ticket; nobody may step (quorum).
    Queued,
    /// Just fenced: its marker exists and its drain hook runs.
    Fenced,
    /// Stopping the old release (whose wrapper takes 3 s to exit after SIGTERM).
    Stopping,
    /// The new release started but is not healthy yet.
    Starting,
    /// The new release is healthy and baking.
    Baking,
}

const HOSTS: usize = 3;

/// Runs a v1 → v2 rollout of three hosts and kills one sidecar at `point`.
async fn kill_at(point: Point) {
    let root = unique_root(&format!("kill-{point:?}").to_lowercase());
    let mut fleet = Fleet::new(&shared_server().connect_string(), &root, "api", HOSTS);
    let gate = fleet.dir().join("drain-gate");
    let hook_log = fleet.dir().join("hooks.log");
    if point != Point::Fenced {
        std::fs::write(&gate, "").unwrap();
    }
    for h in &fleet.hosts {
        let hooks = format!(
            "hooks = {{ drain = [\"sh\", \"-c\", \"echo drain {id} >> {log}; while [ ! -e {gate} ]; do sleep 0.05; done\"], \
             undrain = [\"sh\", \"-c\", \"echo undrain {id} >> {log}\"] }}\n",
            id = h.id,
            log = hook_log.display(),
            gate = gate.display()
        );
        fleet.write_config(h, &hooks);
    }
    let client = fleet.client().await;
    let layout = fleet.layout();
    // When stopping is the point, v1's wrapper takes 3 s to exit after SIGTERM.
    let v1 = match point {
        Point::Stopping => script_artifact(
            &fleet,
            "1",
            "{demo} --version {version} &\nchild=$!\ntrap 'sleep 3; exit 0' TERM\nwait $child\nwait $child",
        ),
        _ => script_artifact(&fleet, "1", "exec {demo} --version {version}"),
    };
    stage(&client, &layout, "api", "1", &v1, policy(0, HOSTS as u32, Duration::ZERO)).await;
    fleet.start_all();
    wait_versions(&fleet, &client, HOSTS, "1").await;
    wait_done(&fleet, &client).await;

    let v2 = match point {
        Point::Starting => script_artifact(&fleet, "2", "exec {demo} --version {version} --start-delay 3s"),
        _ => script_artifact(&fleet, "2", "exec {demo} --version {version}"),
    };
    let bake = if point == Point::Baking { Duration::from_secs(4) } else { Duration::from_millis(200) };
    let server = ArtifactServer::start();
    let (v2, p) = match point {
        Point::Downloading => {
            let bytes = std::fs::read(v2.url.trim_start_matches("file://")).unwrap();
            server.put("/demo", bytes);
            server.fail_always(Fault::CutAfter(10));
            let a = Artifact { url: server.url("/demo"), format: ArtifactFormat::File, ..v2 };
            (a, policy(1, 1, bake))
        }
        // Nobody may step while every host must stay online.
        Point::Queued => (v2, policy(HOSTS as u32, 1, bake)),
        _ => (v2, policy(1, 1, bake)),
    };
    let entry = stage(&client, &layout, "api", "2", &v2, p.clone()).await;
    let victim = match point {
        Point::Downloading => {
            eventually("a cut download", PATIENCE, || (server.request_count() > 0).then_some(()));
            0
        }
        Point::Queued => {
            wait_queued(&fleet, &client, "api", HOSTS).await;
            1
        }
        _ => wait_marker(&fleet, &client, &entry).await,
    };
    let id = fleet.hosts[victim].id.clone();
    let port = fleet.hosts[victim].port;
    match point {
        Point::Fenced => {
            let log = hook_log.clone();
            eventually("the drain hook to run", PATIENCE, || {
                std::fs::read_to_string(&log).ok().filter(|l| l.contains(&format!("drain {id}")))
            });
        }
        Point::Stopping => {
            eventually("the old release to be stopping", PATIENCE, || {
                let log = plain_log(&fleet, victim);
                (log.contains("running hook hook=\"drain\"") && log.contains("undrain").then_some(()).is_none())
                    .then_some(())
            });
            eventually("the old release to get its SIGTERM", PATIENCE, || {
                (served_version(port).is_none() && !plain_log(&fleet, victim).contains("service stopped")).then_some(())
            });
        }
        Point::Starting => {
            eventually("the new release to start", PATIENCE, || {
                plain_log(&fleet, victim).contains("service started service=api version=\"2\"").then_some(())
            });
        }
        Point::Baking => {
            eventually("the new release to serve", PATIENCE, || {
                (served_version(port).as_deref() == Some("2")).then_some(())
            });
        }
        _ => {}
    }
    fleet.kill(victim);
    // Whatever the point, the rollout does not run on without the victim's slot.
    let markers = client.list_children(&layout.upgrading_dir(&entry)).await.unwrap_or_default();
    assert!(markers.len() <= 1, "{markers:?}");
    std::fs::write(&gate, "").unwrap();
    server.clear_faults();
    if point == Point::Queued {
        // Let the rollout move (a new stage of the same release with quorum 1).
        stage(&client, &layout, "api", "2", &v2, Policy { quorum: znode_schema::Quorum::Count(1), ..p }).await;
    }
    fleet.start(victim);
    wait_versions(&fleet, &client, HOSTS, "2").await;
    wait_done(&fleet, &client).await;
    for h in &fleet.hosts {
        assert_eq!(served_version(h.port).as_deref(), Some("2"), "{} serves the staged release", h.id);
    }
    if !matches!(point, Point::Downloading | Point::Queued) {
        let log = plain_log(&fleet, victim);
        assert!(log.contains("the interrupted step"), "the victim recovered its step from its marker:\n{log}");
    }
    // Every drain of the victim was followed by an undrain: no host is left drained.
    let hooks = std::fs::read_to_string(&hook_log).unwrap_or_default();
    let last = hooks.lines().rfind(|l| l.ends_with(&format!(" {id}")));
    assert!(last.is_none_or(|l| l.starts_with("undrain")), "{id} left drained; hook calls:\n{hooks}");
    verify(shared_server(), &client, &root, &["api"], false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_while_downloading() {
    kill_at(Point::Downloading).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_while_queued() {
    kill_at(Point::Queued).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_just_after_the_fence() {
    kill_at(Point::Fenced).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_while_stopping_the_old_release() {
    kill_at(Point::Stopping).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_while_the_new_release_starts() {
    kill_at(Point::Starting).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_while_baking() {
    kill_at(Point::Baking).await;
}

/// A sidecar frozen past its session timeout while baking: its session expires (its
/// marker stays, the slot stays taken), and once thawed it finishes the step on a new
/// session without anyone else stepping meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn frozen_past_the_session_timeout_mid_step() {
    let root = unique_root("frozen");
    let mut fleet = Fleet::new(&shared_server().connect_string(), &root, "api", HOSTS);
    fleet.session_timeout = Duration::from_secs(2);
    for h in &fleet.hosts {
        fleet.write_config(h, "");
    }
    let client = fleet.client().await;
    start_at_v1(&mut fleet, &client).await;
    let layout = fleet.layout();
    let v2 = script_artifact(&fleet, "2", "exec {demo} --version {version}");
    let entry = stage(&client, &layout, "api", "2", &v2, policy(1, 1, Duration::from_secs(3))).await;
    let victim = wait_marker(&fleet, &client, &entry).await;
    let id = fleet.hosts[victim].id.clone();
    fleet.signal(victim, Signal::SIGSTOP);
    // Its ticket is ephemeral: gone once the session expired.
    eventually_async("the frozen host's session to expire", PATIENCE, || async {
        let t = client.list_children(&layout.staging("api")).await.unwrap_or_default();
        (!t.iter().any(|t| t.starts_with(&format!("{id}-")))).then_some(())
    })
    .await;
    let markers = client.list_children(&layout.upgrading_dir(&entry)).await.unwrap();
    assert_eq!(markers, vec![id.clone()], "the frozen host keeps its slot");
    fleet.signal(victim, Signal::SIGCONT);
    wait_versions(&fleet, &client, HOSTS, "2").await;
    wait_done(&fleet, &client).await;
    verify(shared_server(), &client, &root, &["api"], false).await;
}
