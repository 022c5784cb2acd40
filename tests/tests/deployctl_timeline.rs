//! `deployctl history SERVICE --timeline FILE.svg` after a real rollout of three
//! sidecars, one host failing its health check in a second one: the picture has a
//! row per host with step and bake bars, the failure, and renders (rsvg-convert,
//! when installed, turns it into a PNG).

use baton_tests::chaos::wait_versions_within;
use baton_tests::ctl::Ctl;
use baton_tests::fleet::{Behaviour, Fleet, artifact_path};
use baton_tests::shared_server;
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn timeline_draws_a_real_rollout() {
    let ctl = Ctl::new("timeline");
    let mut fleet = Fleet::new(&shared_server().connect_string(), &ctl.root, "api", 3);
    let client = fleet.client().await;
    ctl.ok(&["init"]).await;
    let v1 = fleet.artifact("1", Behaviour::Good);
    ctl.ok(&[
        "stage",
        "api",
        "--version",
        "1",
        "--file",
        &artifact_path(&v1),
        "--quorum",
        "0",
        "--max-parallel",
        "3",
        "--force",
    ])
    .await;
    fleet.start_all();
    wait_versions_within(&fleet, &client, 3, "1", PATIENCE).await;
    let v2 = fleet.artifact("2", Behaviour::Good);
    ctl.ok(&["stage", "api", "--version", "2", "--file", &artifact_path(&v2), "--quorum", "1", "--bake", "1s"]).await;
    let w = ctl.run(&["watch", "api", "--timeout", "60s"]).await;
    assert_eq!(w.code, 0, "{w:?}");

    let dir = std::env::var("BATON_TIMELINE_OUT").map(std::path::PathBuf::from).unwrap_or_else(|_| fleet.dir().into());
    let svg = dir.join("timeline.svg");
    let r = ctl.ok(&["history", "api", "--timeline", svg.to_str().unwrap()]).await;
    assert!(r.stdout.contains("api 2, 3 host(s)"), "{r:?}");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"), "{text}");
    for h in ["api-1", "api-2", "api-3"] {
        assert!(text.contains(&format!(">{h}</text>")), "a row for {h}");
        assert!(text.contains(&format!("{h} bake:")), "{h} baked: {text}");
    }
    assert!(text.contains(">completed</text>"), "the end of the rollout is marked");
    if std::process::Command::new("rsvg-convert").arg("--version").output().is_ok() {
        let png = dir.join("timeline.png");
        let st = std::process::Command::new("rsvg-convert").arg("-o").arg(&png).arg(&svg).status().unwrap();
        assert!(st.success() && std::fs::metadata(&png).unwrap().len() > 1000, "rsvg-convert renders it");
    }
    // The JSON form says what it drew.
    let r = ctl.ok(&["history", "api", "--timeline", svg.to_str().unwrap(), "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!((v["version"].as_str(), v["hosts"].as_u64()), (Some("2"), Some(3)));

    // A release that fails its health check: the failed step and the halt are drawn.
    let bad = fleet.artifact("3", Behaviour::HealthFail);
    ctl.ok(&["stage", "api", "--version", "3", "--file", &artifact_path(&bad), "--health-deadline", "2s"]).await;
    let w = ctl.run(&["watch", "api", "--timeout", "60s"]).await;
    assert_eq!(w.code, 4, "{w:?}");
    let svg = dir.join("timeline-halted.svg");
    ctl.ok(&["history", "api", "--timeline", svg.to_str().unwrap()]).await;
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("failed step: "), "a failed step: {text}");
    assert!(text.contains(">halted</text>"), "the halt: {text}");
    for i in 0..3 {
        fleet.stop(i);
    }
}
