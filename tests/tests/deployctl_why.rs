//! `status` (plain, `--hosts`, `--json`) and `watch` say why a rollout is not moving:
//! real sidecars failing to download, blocked by the quorum, paused (with the ETA
//! shown as paused); played hosts for a rollout behind another service and a slot
//! held by a host with no session.

use baton_tests::artifact_server::ArtifactServer;
use baton_tests::chaos::wait_versions_within;
use baton_tests::ctl::{Ctl, client, deploy_entries, marker, online as play_online};
use baton_tests::fleet::{Behaviour, Fleet, artifact_path};
use baton_tests::{eventually_async, shared_server};
use serde_json::Value;
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(60);

/// Waits until `status api` (with `extra` flags) prints `text`; returns its stdout.
async fn status_shows(ctl: &Ctl, extra: &[&str], text: &str) -> String {
    let args = [&["status", "api"][..], extra].concat();
    eventually_async(&format!("status to show {text:?}"), PATIENCE, || async {
        let r = ctl.run(&args).await;
        r.stdout.contains(text).then_some(r.stdout)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn status_and_watch_say_why_real_hosts_do_not_move() {
    let ctl = Ctl::new("why-live");
    let mut fleet = Fleet::new(&shared_server().connect_string(), &ctl.root, "api", 2);
    let client = fleet.client().await;
    ctl.ok(&["init"]).await;
    let v1 = fleet.artifact("1", Behaviour::Good);
    let first =
        ["stage", "api", "--version", "1", "--file", &artifact_path(&v1), "--quorum", "0", "--max-parallel", "2"];
    ctl.ok(&[&first[..], &["--force"]].concat()).await;
    fleet.start_all();
    wait_versions_within(&fleet, &client, 2, "1", PATIENCE).await;

    // An artifact the hosts cannot download (the operator skipped the check).
    let server = ArtifactServer::start();
    let gone = server.url("/api-2");
    let sha = "e".repeat(64);
    let bad = ["stage", "api", "--version", "2", "--url", &gone, "--sha256", &sha, "--size", "10", "--no-fetch"];
    ctl.ok(&[&bad[..], &["--quorum", "0"]].concat()).await;
    let out = status_shows(&ctl, &[], "api-1 fails to download").await;
    assert!(out.contains("404"), "the cause is shown: {out}");
    let out = status_shows(&ctl, &["--hosts"], "fails to download").await;
    let line = out.lines().find(|l| l.contains("api-2") && l.contains("online")).expect("api-2's line");
    assert!(line.contains("fails to download"), "the WHY column: {out}");
    let r = ctl.run(&["status", "api", "--json"]).await;
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let why = v["services"][0]["why"].as_array().unwrap();
    assert!(why.iter().any(|w| w["kind"] == "download_failing" && w["host"] == "api-1"), "{v}");
    let w = ctl.run(&["watch", "api", "--timeout", "2s"]).await;
    assert_eq!(w.code, 1, "{w:?}");
    assert!(w.stdout.contains("why: ") && w.stdout.contains("fails to download"), "{w:?}");

    // A good release whose quorum no host can meet.
    let v3 = fleet.artifact("3", Behaviour::Good);
    let q = ["stage", "api", "--version", "3", "--file", &artifact_path(&v3), "--quorum", "2", "--replace", "--force"];
    ctl.ok(&q).await;
    status_shows(&ctl, &[], "blocked: quorum 2 needs 2 online, 2 online").await;

    // Paused: who and why, and watch shows the ETA as paused.
    ctl.ok(&["pause", "api", "--reason", "error rate up"]).await;
    status_shows(&ctl, &[], "paused by tester@test: error rate up").await;
    let w = ctl.run(&["watch", "api", "--timeout", "2s"]).await;
    assert!(w.stdout.contains("eta paused") && w.stdout.contains("paused by tester@test: error rate up"), "{w:?}");
    fleet.stop(0);
    fleet.stop(1);
}

#[tokio::test]
async fn status_says_behind_which_rollout_and_which_slot_has_no_session() {
    let ctl = Ctl::new("why-played");
    let c = client(&ctl.connect).await;
    ctl.init_with_services().await;
    let l = &ctl.layout;
    play_online(&c, l, "web", "web-01", "1").await;
    play_online(&c, l, "api", "api-01", "1").await;
    play_online(&c, l, "api", "api-02", "1").await;
    let fake = ["--url", "https://r/a", "--sha256", &"f".repeat(64), "--size", "1", "--no-fetch", "--quorum", "0"];
    ctl.ok(&[&["stage", "web", "--version", "2"][..], &fake[..]].concat()).await;
    ctl.ok(&[&["stage", "api", "--version", "2"][..], &fake[..]].concat()).await;
    let r = ctl.ok(&["status", "api"]).await;
    let why: Vec<&str> = r.stdout.lines().map(str::trim).filter(|l| l.starts_with("why")).collect();
    assert!(why.iter().any(|l| l.ends_with("behind web 2 at the head (active)")), "{r:?}");
    // A host that holds a slot of api but has no live node anywhere: its sidecar is gone.
    let api_entry = deploy_entries(&c, l).await[1].0.clone();
    marker(&c, &api_entry, "api-07", "1", "2").await;
    let r = ctl.ok(&["status", "api"]).await;
    assert!(r.stdout.contains("api-07 stepping for 0s with no session — `deployctl unlock api api-07`"), "{r:?}");
    let r = ctl.ok(&["status", "api", "--hosts"]).await;
    let line = r.stdout.lines().find(|l| l.contains("api-07")).expect("api-07's line");
    assert!(line.contains("upgrading") && line.contains("with no session"), "{r:?}");
    assert!(r.stdout.contains("api: behind web 2 at the head (active)"), "{r:?}");
    // A host with a live session elsewhere is not stuck (it will finish its step).
    play_online(&c, l, "web", "api-07", "1").await;
    let r = ctl.ok(&["status", "api"]).await;
    assert!(!r.stdout.contains("with no session"), "{r:?}");
}
