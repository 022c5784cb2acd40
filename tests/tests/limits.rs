//! `[limits]` and `[download]` with real sidecars: a host downloads only what its
//! limits allow, and a stalled download never wedges it: a re-stage takes effect at
//! once and SIGTERM stops it within its stop timeout.

use baton_tests::artifact_server::{ArtifactServer, Fault};
use baton_tests::fleet::{Behaviour, Fleet, stage, wait_registrations};
use baton_tests::{shared_server, unique_root};
use std::time::{Duration, Instant};
use znode_schema::{Artifact, ArtifactFormat, Current, HumanDuration, Policy, Quorum, decode};
use zookeeper_client as zk;

const PATIENCE: Duration = Duration::from_secs(60);

fn policy() -> Policy {
    Policy { quorum: Quorum::Count(0), max_parallel: 2, health_deadline: HumanDuration::secs(10), ..Policy::default() }
}

async fn wait_all(client: &zk::Client, fleet: &Fleet, what: &str, f: impl Fn(&Current) -> bool) {
    wait_registrations(client, fleet, &fleet.service, what, f).await;
}

/// The demo release `version` served over HTTP by `server` at `/<version>/demo`.
fn served(fleet: &Fleet, server: &ArtifactServer, version: &str) -> Artifact {
    let local = fleet.artifact(version, Behaviour::Good);
    let path = format!("/{version}/demo");
    server.put(&path, std::fs::read(local.url.strip_prefix("file://").unwrap()).unwrap());
    Artifact { url: server.url(&path), format: ArtifactFormat::File, ..local }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_download_gives_way_to_a_restage_and_to_sigterm() {
    let server = ArtifactServer::start();
    let mut fleet = Fleet::new(&shared_server().connect_string(), &unique_root("stalled"), "api", 2);
    let client = fleet.client().await;
    let layout = fleet.layout();
    let v1 = served(&fleet, &server, "1");
    stage(&client, &layout, "api", "1", &v1, policy()).await;
    fleet.start_all();
    wait_all(&client, &fleet, "api at 1", |c| c.version == "1").await;

    // A server sending a byte every 2 s: never idle for long, never done.
    server.fail_always(Fault::Trickle(Duration::from_secs(2)));
    let v2 = served(&fleet, &server, "2");
    stage(&client, &layout, "api", "2", &v2, policy()).await;
    baton_tests::eventually("both hosts to be downloading 2", PATIENCE, || {
        let asked = server.requests().iter().filter(|r| r.path == "/2/demo").count();
        (asked >= 2).then_some(())
    });
    // The corrected release is taken at once, whatever the stalled transfer does.
    server.clear_faults();
    let v3 = served(&fleet, &server, "3");
    let restaged = Instant::now();
    stage(&client, &layout, "api", "3", &v3, policy()).await;
    wait_all(&client, &fleet, "api at 3", |c| c.version == "3").await;
    assert!(restaged.elapsed() < Duration::from_secs(30), "the re-stage took {:?}", restaged.elapsed());

    // Stalled again, SIGTERM stops the sidecar within its stop timeout (5 s per
    // service here), not when the server gives up.
    server.fail_always(Fault::Trickle(Duration::from_secs(2)));
    let v4 = served(&fleet, &server, "4");
    stage(&client, &layout, "api", "4", &v4, policy()).await;
    baton_tests::eventually("both hosts to be downloading 4", PATIENCE, || {
        let asked = server.requests().iter().filter(|r| r.path == "/4/demo").count();
        (asked >= 2).then_some(())
    });
    let stopping = Instant::now();
    fleet.stop(0);
    assert!(stopping.elapsed() < Duration::from_secs(8), "SIGTERM took {:?} to stop the sidecar", stopping.elapsed());
    fleet.stop(1);
}

#[tokio::test(flavor = "multi_thread")]
async fn file_urls_outside_the_allowed_directories_are_refused_on_every_host() {
    let fleet = Fleet::new(&shared_server().connect_string(), &unique_root("file-dirs"), "api", 2);
    let allowed = fleet.dir().join("artifacts");
    let mut fleet = fleet.replacing_host_config(&format!("[limits]\nfile_dirs = [\"{}\"]\n", allowed.display()));
    let client = fleet.client().await;
    let layout = fleet.layout();
    let v1 = fleet.artifact("1", Behaviour::Good);
    stage(&client, &layout, "api", "1", &v1, policy()).await;
    fleet.start_all();
    wait_all(&client, &fleet, "api at 1", |c| c.version == "1").await;

    // The same bytes, right sha256 and size, from a directory the hosts do not allow.
    let elsewhere = tempfile::tempdir().unwrap();
    let outside = elsewhere.path().join("demo");
    std::fs::copy(fleet.artifact("2", Behaviour::Good).url.strip_prefix("file://").unwrap(), &outside).unwrap();
    let v2 = baton_tests::fleet::file_artifact(&outside);
    stage(&client, &layout, "api", "2", &v2, policy()).await;
    wait_all(&client, &fleet, "every host refusing 2", |c| {
        c.version == "1" && c.last_error.as_deref().is_some_and(|e| e.contains("in none of [limits] file_dirs"))
    })
    .await;
    for h in &fleet.hosts {
        assert!(!h.data_dir.join("api/releases/2").exists(), "{} installed 2", h.id);
    }
    for i in 0..fleet.hosts.len() {
        fleet.stop(i);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_download_failures_are_one_event_per_host_with_a_count() {
    let mut fleet = Fleet::new(&shared_server().connect_string(), &unique_root("coalesce"), "api", 2);
    let client = fleet.client().await;
    let layout = fleet.layout();
    let v1 = fleet.artifact("1", Behaviour::Good);
    stage(&client, &layout, "api", "1", &v1, policy()).await;
    fleet.start_all();
    wait_all(&client, &fleet, "api at 1", |c| c.version == "1").await;
    let mut bad = fleet.artifact("2", Behaviour::Good);
    bad.sha256 = "0".repeat(64);
    stage(&client, &layout, "api", "2", &bad, policy()).await;
    let failures = || async {
        let mut found = Vec::new();
        for name in client.list_children(&layout.history("api")).await.unwrap() {
            let path = layout.history_event("api", &name);
            let (data, _) = client.get_data(&path).await.unwrap();
            let ev: znode_schema::HistoryEvent = decode(&path, &data).unwrap();
            if ev.event == znode_schema::EventKind::DownloadFailed {
                found.push(ev);
            }
        }
        found
    };
    // The sidecar retries after 2 s, then 4 s: three failures each within ~10 s.
    let r = tokio::time::timeout(PATIENCE, async {
        loop {
            let found = failures().await;
            if found.len() == 2 && found.iter().all(|e| e.count.unwrap_or(1) >= 3) {
                return found;
            }
            assert!(found.len() <= 2, "one event per host, not one per retry: {found:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let found = r.unwrap_or_else(|_| panic!("no coalesced failures\n{}", fleet.logs()));
    for ev in &found {
        assert!(ev.detail.as_deref().is_some_and(|d| d.contains("sha256")), "{ev:?}");
    }
    for i in 0..fleet.hosts.len() {
        fleet.stop(i);
    }
}
