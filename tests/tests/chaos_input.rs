//! Chaos, input side: malformed JSON written by another client at every path the
//! sidecar reads, a misbehaving artifact server, a release that crash-loops after
//! the upgrade. The sidecar logs an error naming the path, keeps running and keeps
//! its service up; bad releases never spread.

use baton_tests::artifact_server::{ArtifactServer, Fault};
use baton_tests::chaos::{
    PATIENCE, plain_log, policy, script_artifact, served_version, start_at_v1, verify, wait_done, wait_halted,
    wait_versions,
};
use baton_tests::ctl::put;
use baton_tests::fleet::{Behaviour, Fleet, online, stage};
use baton_tests::{eventually, shared_server, unique_root};
use std::time::Duration;
use znode_schema::{Artifact, ArtifactFormat, DeployName};
use zookeeper_client as zk;

const GARBAGE: &[u8] = b"{\"schema\":1,\"this is\": not json";

/// Asserts every sidecar runs, every host is registered with the same service
/// process as `before`, and `host`'s log names `path` in an error or warning.
async fn still_up(fleet: &mut Fleet, c: &zk::Client, before: &[(String, String)], path: &str) {
    eventually(&format!("a sidecar to log an error naming {path}"), PATIENCE, || {
        (0..fleet.hosts.len())
            .any(|i| {
                plain_log(fleet, i).lines().any(|l| (l.contains("ERROR") || l.contains("WARN")) && l.contains(path))
            })
            .then_some(())
    });
    for i in 0..fleet.hosts.len() {
        assert_eq!(fleet.exited(i), None, "{} keeps running", fleet.hosts[i].id);
    }
    let layout = fleet.layout();
    let registered = tokio::time::timeout(PATIENCE, async {
        while online(c, &layout, "api").await != before {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if registered.is_err() {
        panic!(
            "after garbage at {path}: online {:?}, before {before:?}\n{}",
            online(c, &layout, "api").await,
            fleet.logs()
        );
    }
    for h in &fleet.hosts {
        assert_eq!(served_version(h.port).as_deref(), Some("1"), "{} keeps serving", h.id);
    }
}

/// Kills host `i`'s sidecar (its service keeps running) and starts it again.
fn restart(fleet: &mut Fleet, i: usize) {
    fleet.kill(i);
    fleet.start(i);
}

/// A reboot of host `i`: its sidecar and its service die, so boot chooses a version
/// (a restarted sidecar whose service still runs keeps it and reads no popularity).
fn reboot(fleet: &mut Fleet, i: usize) {
    fleet.kill(i);
    baton_tests::fleet::kill_services(&fleet.hosts[i].data_dir);
    fleet.start(i);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_json_at_every_path_the_sidecar_reads() {
    let root = unique_root("garbage");
    let mut fleet = Fleet::new(&shared_server().connect_string(), &root, "api", 2);
    let c = fleet.client().await;
    start_at_v1(&mut fleet, &c).await;
    let l = fleet.layout();
    let before = online(&c, &l, "api").await;

    // staging/<svc>: read and watched by every sidecar.
    let staging = l.staging("api");
    let (good_staging, _) = c.get_data(&staging).await.unwrap();
    c.set_data(&staging, GARBAGE, None).await.unwrap();
    still_up(&mut fleet, &c, &before, &staging).await;
    c.set_data(&staging, &good_staging, None).await.unwrap();

    // current/<svc>/<other host>: read at boot (popularity) and at completion.
    let ghost = l.current_host("api", "ghost");
    put(&c, &ghost, GARBAGE).await;
    reboot(&mut fleet, 1);
    still_up(&mut fleet, &c, &before, &ghost).await;
    c.delete(&ghost, None).await.unwrap();

    // releases/<svc>/<version>: the catalog, read at boot.
    let release = l.release("api", "1");
    let (good_release, _) = c.get_data(&release).await.unwrap();
    c.set_data(&release, GARBAGE, None).await.unwrap();
    reboot(&mut fleet, 0);
    still_up(&mut fleet, &c, &before, &release).await;
    c.set_data(&release, &good_release, None).await.unwrap();

    // deploy/<entry>: a garbage entry at the head of the queue.
    let (_, seq) = c
        .create(&l.deploy_prefix(), GARBAGE, &zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all()))
        .await
        .unwrap();
    let bad_entry = l.deploy_entry(&DeployName { seq: seq.into_i64() as u64 });
    let v2 = fleet.artifact("2", Behaviour::Good);
    let entry = stage(&c, &l, "api", "2", &v2, policy(1, 1, Duration::ZERO)).await;
    still_up(&mut fleet, &c, &before, &bad_entry).await;

    // upgrading/<host>: this host's own marker, unreadable, found at session start.
    let marker = l.upgrading(&entry, &fleet.hosts[1].id);
    put(&c, &marker, GARBAGE).await;
    restart(&mut fleet, 1);
    still_up(&mut fleet, &c, &before, &marker).await;

    // staging/<svc>/<host>-<seq>: a persistent node named like this host's ticket.
    let ticket = format!("{}0000009999", l.ticket_prefix("api", &fleet.hosts[0].id));
    put(&c, &ticket, GARBAGE).await;
    restart(&mut fleet, 0);
    still_up(&mut fleet, &c, &before, &ticket).await;

    // Cleaned up, the rollout goes through and the history holds every invariant.
    let _ = c.delete(&ticket, None).await;
    c.delete(&bad_entry, None).await.unwrap();
    wait_versions(&fleet, &c, 2, "2").await;
    wait_done(&fleet, &c).await;
    verify(shared_server(), &c, &root, &["api"], false).await;
}

/// Serves v2 through a misbehaving artifact server: `times` faulty answers (the
/// download resumes or retries), or every answer faulty until cleared (the rollout
/// waits: nobody steps on a release it could not verify). Either way it goes
/// through once the server behaves.
async fn artifact_fault(name: &str, fault: Fault, times: Option<usize>) {
    let root = unique_root(name);
    let mut fleet = Fleet::new(&shared_server().connect_string(), &root, "api", 2);
    let c = fleet.client().await;
    start_at_v1(&mut fleet, &c).await;
    let server = ArtifactServer::start();
    let file = fleet.artifact("2", Behaviour::Good);
    server.put("/demo", std::fs::read(file.url.trim_start_matches("file://")).unwrap());
    match times {
        Some(n) => server.fail_next(n, fault),
        None => server.fail_always(fault),
    }
    let v2 = Artifact { url: server.url("/demo"), format: ArtifactFormat::File, ..file };
    stage(&c, &fleet.layout(), "api", "2", &v2, policy(1, 1, Duration::ZERO)).await;
    if times.is_none() {
        // Every download fails: nobody steps, everyone keeps serving v1.
        eventually("a few failed downloads", PATIENCE, || (server.request_count() >= 4).then_some(()));
        let markers = c.list_children(&fleet.layout().upgrading_dir(&DeployName { seq: 1 })).await;
        assert!(markers.unwrap_or_default().is_empty());
        wait_versions(&fleet, &c, 2, "1").await;
        server.clear_faults();
    }
    wait_versions(&fleet, &c, 2, "2").await;
    wait_done(&fleet, &c).await;
    verify(shared_server(), &c, &root, &["api"], false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn artifact_server_drops_connections() {
    artifact_fault("art-reset", Fault::CutAfter(20), Some(3)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn artifact_server_answers_500() {
    artifact_fault("art-500", Fault::Status(500), None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn artifact_server_serves_a_truncated_file() {
    artifact_fault("art-trunc", Fault::Truncate(20), Some(3)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn artifact_server_serves_a_corrupt_file() {
    artifact_fault("art-corrupt", Fault::Corrupt, None).await;
}

/// The first request hangs (no answer at all): the idle timeout (30 s) cuts it and
/// the retry succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn artifact_server_hangs() {
    artifact_fault("art-hang", Fault::Hang, Some(1)).await;
}

/// v2 passes its health check, then crashes during the bake and keeps crashing:
/// the first host goes back to v1, the rollout halts naming it, nobody else moves.
#[tokio::test(flavor = "multi_thread")]
async fn a_release_that_crash_loops_after_the_upgrade_halts_the_rollout() {
    let root = unique_root("crashloop");
    let mut fleet = Fleet::new(&shared_server().connect_string(), &root, "api", 3);
    let c = fleet.client().await;
    start_at_v1(&mut fleet, &c).await;
    let v2 = script_artifact(&fleet, "2", "exec {demo} --version {version} --crash-after 700ms");
    let entry = stage(&c, &fleet.layout(), "api", "2", &v2, policy(1, 1, Duration::from_secs(3))).await;
    let halted = wait_halted(&fleet, &c, &entry).await;
    let reason = halted.reason.unwrap_or_default();
    assert!(reason.contains("api-"), "the halt names the host: {reason}");
    wait_versions(&fleet, &c, 3, "1").await;
    for h in &fleet.hosts {
        assert_eq!(served_version(h.port).as_deref(), Some("1"), "{} serves v1", h.id);
    }
    verify(shared_server(), &c, &root, &["api"], false).await;
}
