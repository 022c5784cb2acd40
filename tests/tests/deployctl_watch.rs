//! `deployctl watch` against a real ZooKeeper: the test plays the sidecars by
//! writing znodes, and checks the exit code on completion (0), on a halt and on an
//! abort (4), with nothing to watch, and across a ZooKeeper restart.

use baton_tests::ctl::{Ctl, client, deploy_entries, online, sha};
use baton_tests::{ZkCluster, eventually_async, process::spawn_tied};
use std::process::{Child, Stdio};
use std::time::Duration;
use znode_schema::{EventKind, HistoryEvent, encode};
use zookeeper_client as zk;

const PATIENCE: Duration = Duration::from_secs(30);

/// A running `deployctl watch` whose output goes to files.
struct Watch {
    child: Child,
    out: tempfile::NamedTempFile,
    err: tempfile::NamedTempFile,
}

impl Watch {
    fn start(ctl: &Ctl, args: &[&str]) -> Watch {
        let (out, err) = (tempfile::NamedTempFile::new().unwrap(), tempfile::NamedTempFile::new().unwrap());
        let mut cmd = ctl.command(&[&["watch", "--interval", "100ms", "--timeout", "60s"], args].concat());
        cmd.stdout(Stdio::from(out.reopen().unwrap())).stderr(Stdio::from(err.reopen().unwrap()));
        Watch { child: spawn_tied(cmd).expect("start deployctl watch"), out, err }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.out.path()).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.err.path()).unwrap_or_default()
    }

    /// Waits until the output shows `text`.
    async fn until_shows(&self, text: &str) {
        let what = format!("watch to print {text:?}");
        eventually_async(&what, PATIENCE, || async { self.stdout().contains(text).then_some(()) }).await;
    }

    /// Waits for the exit code.
    async fn code(&mut self) -> i32 {
        let status = eventually_async("watch to exit", PATIENCE, || {
            let s = self.child.try_wait().expect("poll watch");
            async move { s }
        })
        .await;
        status.code().unwrap_or(-1)
    }
}

async fn stage(ctl: &Ctl, service: &str, version: &str, digit: char) {
    let digest = sha(digit);
    // --quorum 0: the fleets here are one or two hosts played by the test.
    let artifact = ["--url", "https://r/a", "--sha256", &digest, "--size", "1", "--no-fetch", "--quorum", "0"];
    let args = [&["stage", service, "--version", version][..], &artifact[..], &["--replace"]].concat();
    ctl.ok(&args).await;
}

/// Plays the sidecars finishing a rollout: the last host re-registers at the new
/// version, the entry goes and a `completed` event is added.
async fn complete(c: &zk::Client, ctl: &Ctl, service: &str, version: &str) {
    for (path, _) in deploy_entries(c, &ctl.layout).await {
        let _ = c.delete(&format!("{path}/upgrading"), None).await;
        c.delete(&path, None).await.unwrap();
    }
    let ev = HistoryEvent {
        at: znode_schema::time::now(),
        event: EventKind::Completed,
        service: service.into(),
        version: Some(version.into()),
        host: None,
        detail: None,
        by: Some("sidecar@web-02".into()),
        count: None,
    };
    let opts = zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all());
    c.create(&ctl.layout.history_prefix(service), &encode(&ev), &opts).await.unwrap();
}

#[tokio::test]
async fn watch_exits_0_when_the_rollout_completes() {
    let ctl = Ctl::new("watch-done");
    let c = client(&ctl.connect).await;
    ctl.init_with_services().await;
    online(&c, &ctl.layout, "api", "web-01", "1.0").await;
    online(&c, &ctl.layout, "api", "web-02", "1.0").await;
    stage(&ctl, "api", "1.1", 'a').await;
    let mut w = Watch::start(&ctl, &["api"]);
    w.until_shows("api 1.1: 0/2 hosts at target").await;
    online(&c, &ctl.layout, "api", "web-01", "1.1").await;
    w.until_shows("api 1.1: 1/2 hosts at target").await;
    online(&c, &ctl.layout, "api", "web-02", "1.1").await;
    complete(&c, &ctl, "api", "1.1").await;
    assert_eq!(w.code().await, 0, "stdout {} stderr {}", w.stdout(), w.stderr());
    assert!(w.stdout().contains("api 1.1: completed"), "{}", w.stdout());
}

#[tokio::test]
async fn watch_exits_4_with_the_reason_when_the_rollout_halts() {
    let ctl = Ctl::new("watch-halt");
    let c = client(&ctl.connect).await;
    ctl.init_with_services().await;
    online(&c, &ctl.layout, "api", "web-01", "1.0").await;
    stage(&ctl, "api", "1.1", 'a').await;
    let mut w = Watch::start(&ctl, &["--json"]);
    w.until_shows(r#""at_target":0"#).await;
    let (path, payload) = deploy_entries(&c, &ctl.layout).await.remove(0);
    let mut entry: serde_json::Value = serde_json::from_str(&payload).unwrap();
    entry["state"] = "halted".into();
    entry["reason"] = "web-01 failed its health check".into();
    c.set_data(&path, entry.to_string().as_bytes(), None).await.unwrap();
    assert_eq!(w.code().await, 4, "stdout {} stderr {}", w.stdout(), w.stderr());
    let last: serde_json::Value = serde_json::from_str(w.stdout().lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "failed");
    assert_eq!(last["reason"], "halted: web-01 failed its health check");
    assert_eq!((last["service"].as_str(), last["version"].as_str()), (Some("api"), Some("1.1")));
    assert!(w.stderr().contains("did not complete"), "{}", w.stderr());
}

#[tokio::test]
async fn watch_exits_4_when_the_rollout_is_aborted() {
    let ctl = Ctl::new("watch-abort");
    let c = client(&ctl.connect).await;
    ctl.init_with_services().await;
    online(&c, &ctl.layout, "api", "web-01", "1.0").await;
    stage(&ctl, "api", "1.0", 'a').await;
    complete(&c, &ctl, "api", "1.0").await;
    stage(&ctl, "api", "1.1", 'b').await;
    let mut w = Watch::start(&ctl, &["api"]);
    w.until_shows("0/1 hosts at target").await;
    ctl.ok(&["abort", "api"]).await;
    assert_eq!(w.code().await, 4, "stdout {} stderr {}", w.stdout(), w.stderr());
    assert!(w.stdout().contains("aborted by tester@test"), "{}", w.stdout());
}

#[tokio::test]
async fn watch_without_a_rollout() {
    let ctl = Ctl::new("watch-none");
    let c = client(&ctl.connect).await;
    ctl.init_with_services().await;
    let r = ctl.run(&["watch"]).await;
    assert_eq!((r.code, r.stdout.trim()), (0, "no rollout in progress"), "{r:?}");
    let r = ctl.run(&["watch", "api"]).await;
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("nothing is staged"), "{r:?}");
    online(&c, &ctl.layout, "api", "web-01", "1.0").await;
    stage(&ctl, "api", "1.0", 'a').await;
    complete(&c, &ctl, "api", "1.0").await;
    let r = ctl.run(&["watch", "api"]).await;
    assert_eq!(r.code, 0, "a complete service: {r:?}");
    assert!(r.stdout.contains("all 1 online host(s) run the staged release"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_rides_out_a_zookeeper_restart() {
    let cluster = ZkCluster::standalone();
    let ctl = Ctl::on(&cluster.connect_string(), "watch-restart");
    ctl.init_with_services().await;
    stage(&ctl, "api", "1.1", 'a').await;
    let mut w = Watch::start(&ctl, &["api", "--session-timeout", "4s"]);
    w.until_shows("api 1.1: 0/0 hosts at target").await;
    cluster.stop(0);
    let stderr = || async { w.stderr().contains("retrying").then_some(()) };
    eventually_async("watch to notice the lost connection", PATIENCE, stderr).await;
    cluster.restart(0);
    let c = client(&ctl.connect).await;
    online(&c, &ctl.layout, "api", "web-01", "1.1").await;
    complete(&c, &ctl, "api", "1.1").await;
    assert_eq!(w.code().await, 0, "stdout {} stderr {}", w.stdout(), w.stderr());
    assert!(w.stderr().contains("connected again"), "{}", w.stderr());
    assert!(
        w.stdout().contains("api 1.1: stale since") && w.stdout().contains("ZooKeeper unreachable"),
        "the progress was marked stale while ZooKeeper was down: {}",
        w.stdout()
    );
}
