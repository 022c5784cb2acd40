//! The release lifecycle (SPEC "Release lifecycle") with real sidecars, real demo
//! services and hooks that leave marks: canaries and promotion, `apply = "reload"`,
//! the prepare and verify hooks, `on_failure = "stay"`. Judged from ZooKeeper's
//! transaction log where order matters.

use baton_tests::chaos::{PATIENCE, policy, verify, wait_halted, wait_versions};
use baton_tests::ctl::Ctl;
use baton_tests::fleet::{Behaviour, Fleet, deploys, file_artifact, online, registration, stage};
use baton_tests::invariants::{self, marker_of};
use baton_tests::multi::{artifact, hook_calls};
use baton_tests::txnlog::{Op, Txn};
use baton_tests::{eventually_async, shared_server, unique_root};
use std::path::Path;
use std::time::Duration;
use znode_schema::{Artifact, DeployEntry, DeployName, EventKind, HistoryEvent, HumanDuration, OnFailure, decode};
use zookeeper_client as zk;

/// A fleet of `n` hosts of `api` (with `extra` in its service table), all at version 1.
async fn fleet_at_v1(name: &str, n: usize, extra: &str, v1: impl Fn(&Fleet) -> Artifact) -> (Fleet, zk::Client) {
    let mut fleet = Fleet::new(&shared_server().connect_string(), &unique_root(name), "api", n);
    for h in &fleet.hosts {
        fleet.write_config(h, extra);
    }
    let client = fleet.client().await;
    let a = v1(&fleet);
    stage(&client, &fleet.layout(), "api", "1", &a, policy(0, n as u32, Duration::ZERO)).await;
    fleet.start_all();
    wait_versions(&fleet, &client, n, "1").await;
    wait_done(&fleet, &client).await;
    (fleet, client)
}

async fn wait_done(fleet: &Fleet, client: &zk::Client) {
    eventually_async("the rollout to complete", PATIENCE, || async {
        deploys(client, &fleet.layout()).await.is_empty().then_some(())
    })
    .await;
}

/// Waits until the rollout on `name` pauses after its canary phase; returns the entry.
async fn wait_canary_pause(fleet: &Fleet, client: &zk::Client, name: &DeployName) -> DeployEntry {
    eventually_async("the rollout to pause after its canaries", PATIENCE, || async {
        deploys(client, &fleet.layout()).await.into_iter().find(|(n, e)| n == name && e.awaits_promotion()).map(|x| x.1)
    })
    .await
}

/// The zxids of every fence of `service` in `history` (any host).
fn fence_zxids(history: &[Txn], fleet: &Fleet) -> Vec<i64> {
    let l = fleet.layout();
    let mut out: Vec<i64> = fleet
        .hosts
        .iter()
        .flat_map(|h| baton_tests::multi::fences(history, &l, "api", &h.id))
        .map(|t| t.zxid)
        .collect();
    out.sort();
    out
}

/// The zxid of the first history event of `kind` of `api` in `history`.
fn event_zxid(history: &[Txn], fleet: &Fleet, kind: EventKind) -> Option<(i64, i64, HistoryEvent)> {
    let prefix = format!("{}/", fleet.layout().history("api"));
    history.iter().find_map(|t| {
        t.ops.iter().find_map(|op| match op {
            Op::Create { path, data, .. } if path.starts_with(&prefix) => {
                decode::<HistoryEvent>(path, data).ok().filter(|e| e.event == kind).map(|e| (t.zxid, t.time_ms, e))
            }
            _ => None,
        })
    })
}

/// A canary of 1 on 5 hosts (quorum 3, two slots): exactly one host fences before the
/// pause and none between the pause and `deployctl promote`; then the rest roll,
/// with the quorum kept at every fence.
#[tokio::test(flavor = "multi_thread")]
async fn a_canary_of_one_pauses_after_exactly_one_host_and_promote_rolls_the_rest() {
    let (fleet, c) = fleet_at_v1("canary1", 5, "", |f| f.artifact("1", Behaviour::Good)).await;
    let mark = invariants::last_zxid(shared_server(), &fleet.root);
    let v2 = fleet.artifact("2", Behaviour::Good);
    let p = znode_schema::Policy { canary: 1, ..policy(3, 2, Duration::ZERO) };
    let entry = stage(&c, &fleet.layout(), "api", "2", &v2, p).await;
    let paused = wait_canary_pause(&fleet, &c, &entry).await;
    assert_eq!(paused.reason.as_deref(), Some("canary"), "{paused:?}");
    assert_eq!(paused.canaries.len(), 1, "{paused:?}");
    let at_v2: Vec<String> =
        online(&c, &fleet.layout(), "api").await.into_iter().filter(|(_, v)| v == "2").map(|(h, _)| h).collect();
    assert_eq!(at_v2, paused.canaries, "the canary, and only it, runs 2");

    let ctl = Ctl { root: fleet.root.clone(), layout: fleet.layout(), ..Ctl::new("unused") };
    let status = ctl.ok(&["status", "api"]).await;
    assert!(
        status.stdout.contains("paused after the canary phase") && status.stdout.contains("deployctl promote api"),
        "status says why: {status:?}"
    );
    let resume = ctl.run(&["resume", "api"]).await;
    assert_eq!(resume.code, 3, "resume refuses a canary pause: {resume:?}");
    assert!(resume.stderr.contains("deployctl promote api"), "{resume:?}");
    ctl.ok(&["promote", "api"]).await;
    wait_versions(&fleet, &c, 5, "2").await;
    wait_done(&fleet, &c).await;

    let history = invariants::history(shared_server(), &fleet.root);
    let history: Vec<Txn> = history.into_iter().filter(|t| t.zxid > mark).collect();
    let fences = fence_zxids(&history, &fleet);
    let (paused_at, _, _) = event_zxid(&history, &fleet, EventKind::CanaryPaused).expect("a canary_paused event");
    let (promoted_at, _, ev) = event_zxid(&history, &fleet, EventKind::Promoted).expect("a promoted event");
    assert_eq!(ev.by.as_deref(), Some(baton_tests::ctl::BY), "promoted by the operator: {ev:?}");
    assert_eq!(fences.iter().filter(|z| **z < paused_at).count(), 1, "one fence before the pause: {fences:?}");
    assert!(!fences.iter().any(|z| *z > paused_at && *z < promoted_at), "no fence while paused: {fences:?}");
    assert_eq!(fences.len(), 5, "every host fenced once: {fences:?}");
    verify(shared_server(), &c, &fleet.root, &["api"], false).await;
}

/// `auto_promote` promotes on its own, no sooner than its duration after the pause,
/// and the rollout completes.
#[tokio::test(flavor = "multi_thread")]
async fn auto_promote_promotes_once_the_canaries_stayed_healthy() {
    let (fleet, c) = fleet_at_v1("canary-auto", 4, "", |f| f.artifact("1", Behaviour::Good)).await;
    let mark = invariants::last_zxid(shared_server(), &fleet.root);
    let v2 = fleet.artifact("2", Behaviour::Good);
    let p =
        znode_schema::Policy { canary: 2, auto_promote: Some(HumanDuration::secs(2)), ..policy(1, 2, Duration::ZERO) };
    stage(&c, &fleet.layout(), "api", "2", &v2, p).await;
    wait_versions(&fleet, &c, 4, "2").await;
    wait_done(&fleet, &c).await;
    let history: Vec<Txn> =
        invariants::history(shared_server(), &fleet.root).into_iter().filter(|t| t.zxid > mark).collect();
    let (paused_at, paused_ms, _) = event_zxid(&history, &fleet, EventKind::CanaryPaused).expect("canary_paused");
    let (promoted_at, promoted_ms, ev) = event_zxid(&history, &fleet, EventKind::Promoted).expect("promoted");
    assert!(ev.by.as_deref().unwrap_or_default().starts_with("sidecar@"), "promoted by a sidecar: {ev:?}");
    assert!(promoted_ms - paused_ms >= 2000, "promoted {} ms after the pause", promoted_ms - paused_ms);
    let fences = fence_zxids(&history, &fleet);
    assert_eq!(fences.iter().filter(|z| **z < paused_at).count(), 2, "two canaries: {fences:?}");
    assert!(!fences.iter().any(|z| *z > paused_at && *z < promoted_at), "no fence while paused: {fences:?}");
    verify(shared_server(), &c, &fleet.root, &["api"], false).await;
}

/// A tar.gz release of the demo service reading `app.conf` through the `current`
/// link (so a reload sees the new release's file), holding `conf`.
fn conf_release(fleet: &Fleet, version: &str, conf: &str) -> Artifact {
    let dir = fleet.dir().join("conf").join(version);
    std::fs::create_dir_all(&dir).unwrap();
    let demo = baton_tests::bin::path("baton-demo-service");
    let script = format!(
        "#!/bin/sh\nexec {} --version {version} --config \"$BATON_RELEASE_DIR/../../current/app.conf\"\n",
        demo.display()
    );
    std::fs::write(dir.join("demo"), script).unwrap();
    std::fs::write(dir.join("app.conf"), conf).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("demo"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = fleet.dir().join("conf").join(format!("api-{version}.tar.gz"));
    let status = std::process::Command::new("tar")
        .args(["czf", &out.display().to_string(), "-C", &dir.display().to_string(), "demo", "app.conf"])
        .status()
        .unwrap();
    assert!(status.success());
    file_artifact(&out)
}

/// `GET path` on the service at `port`: the body of a 200 answer.
fn get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.contains(" 200 ").then(|| body.to_string())
}

async fn pids(fleet: &Fleet, c: &zk::Client) -> Vec<Option<u32>> {
    let mut out = Vec::new();
    for h in &fleet.hosts {
        out.push(registration(c, fleet, "api", &h.id).await.and_then(|r| r.pid));
    }
    out
}

const RELOAD: &str = "apply = \"reload\"\nreload_signal = \"HUP\"";

/// A config release under `apply = "reload"`: every host serves the new config from
/// the same process (same pid), registered at the new version. Then a release whose
/// config makes the service unhealthy fails on the first host, which switches back
/// and reloads again: same pid, the old config served, the rollout halted.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_release_keeps_the_process_and_a_failing_reload_goes_back() {
    let (fleet, c) = fleet_at_v1("reload", 3, RELOAD, |f| conf_release(f, "1", "color=blue\n")).await;
    let before = pids(&fleet, &c).await;
    assert!(before.iter().all(Option::is_some), "{before:?}");
    for h in &fleet.hosts {
        assert_eq!(get(h.port, "/config").as_deref(), Some("color=blue\n"));
    }
    let v2 = conf_release(&fleet, "2", "color=green\n");
    stage(&c, &fleet.layout(), "api", "2", &v2, policy(1, 1, Duration::ZERO)).await;
    wait_versions(&fleet, &c, 3, "2").await;
    wait_done(&fleet, &c).await;
    assert_eq!(pids(&fleet, &c).await, before, "reloaded, not restarted");
    for h in &fleet.hosts {
        assert_eq!(get(h.port, "/config").as_deref(), Some("color=green\n"), "{} serves the new config", h.id);
    }
    assert!(fleet.logs().contains("service reloaded"), "the sidecars reloaded");

    let v3 = conf_release(&fleet, "3", "color=red\nhealth=fail\n");
    let p = znode_schema::Policy { health_deadline: HumanDuration::secs(2), ..policy(1, 1, Duration::ZERO) };
    let entry = stage(&c, &fleet.layout(), "api", "3", &v3, p).await;
    let halted = wait_halted(&fleet, &c, &entry).await;
    let failed = halted.failed_hosts.first().cloned().expect("a failed host");
    let i = fleet.hosts.iter().position(|h| h.id == failed).unwrap();
    wait_versions(&fleet, &c, 3, "2").await;
    assert_eq!(pids(&fleet, &c).await, before, "the failed host went back by reloading, not restarting");
    assert_eq!(get(fleet.hosts[i].port, "/config").as_deref(), Some("color=green\n"), "the old config again");
    verify(shared_server(), &c, &fleet.root, &["api"], true).await;
}

/// Hooks that append `<hook> <host> <from> <to> <phase>` to `log`; hook `fail` fails
/// on `fail_on` (every host when `None`).
fn hooks(log: &Path, fail: &str, fail_on: Option<&str>) -> String {
    let mark = |name: &str| {
        let tail = match (name == fail, fail_on) {
            (false, _) => String::new(),
            (true, None) => "; exit 1".into(),
            (true, Some(host)) => format!("; [ $BATON_HOST != {host} ]"),
        };
        format!(
            "[\"sh\", \"-c\", \"echo {name} $BATON_HOST $BATON_FROM_VERSION $BATON_TO_VERSION $BATON_PHASE >> {}{tail}\"]",
            log.display()
        )
    };
    format!(
        "hooks = {{ prepare = {}, drain = {}, undrain = {}, verify = {} }}",
        mark("prepare"),
        mark("drain"),
        mark("undrain"),
        mark("verify")
    )
}

/// The hook calls of `host` in `log`.
fn calls_of(log: &Path, host: &str) -> Vec<String> {
    hook_calls(log)
        .into_iter()
        .filter(|l| l.split_whitespace().nth(1) == Some(host))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            format!("{} {}", w[0], w.last().unwrap_or(&""))
        })
        .collect()
}

/// A failing prepare hook fails the step before the service is touched: no drain, the
/// same process at the old version, the failure counted (halted with max_failures 0).
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_prepare_touches_nothing() {
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("hooks.log");
    let (fleet, c) =
        fleet_at_v1("prepare", 3, &hooks(&log, "prepare", None), |f| f.artifact("1", Behaviour::Good)).await;
    let before = pids(&fleet, &c).await;
    std::fs::write(&log, "").unwrap();
    let v2 = fleet.artifact("2", Behaviour::Good);
    let entry = stage(&c, &fleet.layout(), "api", "2", &v2, policy(1, 1, Duration::ZERO)).await;
    let halted = wait_halted(&fleet, &c, &entry).await;
    assert!(halted.reason.as_deref().unwrap_or_default().contains("prepare hook failed"), "{halted:?}");
    let failed = &halted.failed_hosts[0];
    wait_versions(&fleet, &c, 3, "1").await;
    assert_eq!(pids(&fleet, &c).await, before, "nothing was restarted");
    assert_eq!(calls_of(&log, failed), vec!["prepare step".to_string()], "only prepare ran on {failed}");
    let line = hook_calls(&log).into_iter().next().unwrap();
    assert_eq!(line, format!("prepare {failed} 1 2 step"), "the hook's environment names host, from and to");
    verify(shared_server(), &c, &fleet.root, &["api"], true).await;
}

/// A failing verify hook (on one host) fails that host's step after undrain: it
/// drains, goes back to the old release, and undrains again; the rest roll on
/// (`max_failures` 1).
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_verify_rolls_the_host_back_and_leaves_it_undrained() {
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("hooks.log");
    let (fleet, c) =
        fleet_at_v1("verify", 3, &hooks(&log, "verify", Some("api-2")), |f| f.artifact("1", Behaviour::Good)).await;
    std::fs::write(&log, "").unwrap();
    let v2 = fleet.artifact("2", Behaviour::Good);
    let p = znode_schema::Policy { max_failures: 1, ..policy(1, 1, Duration::ZERO) };
    stage(&c, &fleet.layout(), "api", "2", &v2, p).await;
    wait_done(&fleet, &c).await;
    let versions = online(&c, &fleet.layout(), "api").await;
    assert_eq!(
        versions,
        vec![("api-1".into(), "2".into()), ("api-2".into(), "1".into()), ("api-3".into(), "2".into())],
        "api-2 went back"
    );
    assert_eq!(
        calls_of(&log, "api-2"),
        ["prepare step", "drain step", "undrain step", "verify step", "drain rollback", "undrain rollback"],
        "verify failed after undrain; the host drained, went back and undrained"
    );
    assert_eq!(calls_of(&log, "api-1"), ["prepare step", "drain step", "undrain step", "verify step"]);
    verify(shared_server(), &c, &fleet.root, &["api"], false).await;
}

/// `on_failure = "stay"`: the failed host keeps the new release (not rolled back),
/// and the rollout halts whatever max_failures says, saying the release cannot be
/// undone; nobody else steps.
#[tokio::test(flavor = "multi_thread")]
async fn on_failure_stay_keeps_the_new_release_and_halts() {
    let (fleet, c) = fleet_at_v1("stay", 3, "", |f| f.artifact("1", Behaviour::Good)).await;
    let v2 = artifact(&fleet, "api", "2", "exec {demo} --version {version} --health-fail");
    let p = znode_schema::Policy {
        on_failure: OnFailure::Stay,
        max_failures: 5,
        health_deadline: HumanDuration::secs(2),
        ..policy(1, 1, Duration::ZERO)
    };
    let entry = stage(&c, &fleet.layout(), "api", "2", &v2, p).await;
    let halted = wait_halted(&fleet, &c, &entry).await;
    let reason = halted.reason.clone().unwrap_or_default();
    assert!(reason.contains("cannot be undone"), "{reason}");
    let failed = halted.failed_hosts[0].clone();
    let h = fleet.hosts.iter().find(|h| h.id == failed).unwrap();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.data_dir.join("api").join("state.json")).unwrap()).unwrap();
    assert_eq!(state["active"], "2", "the failed host keeps 2 active: {state}");
    eventually_async("the failed host's service to run 2", PATIENCE, || async {
        (get(h.port, "/version").as_deref() == Some("2")).then_some(())
    })
    .await;
    // Unhealthy at 2: not registered; the others stay at 1 and nobody else fenced.
    let at = online(&c, &fleet.layout(), "api").await;
    assert_eq!(at.len(), 2, "{at:?}");
    assert!(at.iter().all(|(host, v)| *host != failed && v == "1"), "{at:?}");
    let history = invariants::history(shared_server(), &fleet.root);
    let l = fleet.layout();
    let markers = history
        .iter()
        .flat_map(|t| t.ops.iter())
        .filter(|op| matches!(op, Op::Create { .. }) && marker_of(&l, op.path()).is_some_and(|(e, _)| e == entry))
        .count();
    assert_eq!(markers, 1, "one host stepped");
    let ctl = Ctl { root: fleet.root.clone(), layout: fleet.layout(), ..Ctl::new("unused") };
    let before = baton_tests::ctl::snapshot(&c, &fleet.root).await;
    let refused = ctl.run(&["rollback", "api", "--to", "1"]).await;
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(refused.stderr.contains("cannot be undone") && refused.stderr.contains("--force"), "{refused:?}");
    assert_eq!(baton_tests::ctl::snapshot(&c, &fleet.root).await, before, "the refusal wrote nothing");
}

/// `on_halt = rollback` (`--auto-rollback`): 5 hosts, quorum 3, one slot. Once a
/// host runs 2, the release starts failing its health check; the failure that halts
/// turns the rollout into a rollback: every host that stepped goes back to 1, fenced
/// one at a time with the quorum kept at every fence (judged from the log), and the
/// rollout ends with a `rolled_back` event.
#[tokio::test(flavor = "multi_thread")]
async fn auto_rollback_takes_every_stepped_host_back_under_the_quorum() {
    let (fleet, c) = fleet_at_v1("autorollback", 5, "", |f| f.artifact("1", Behaviour::Good)).await;
    let mark = invariants::last_zxid(shared_server(), &fleet.root);
    let fail = fleet.dir().join("fail-now");
    let body = format!(
        "if [ -e {} ]; then exec {{demo}} --version {{version}} --health-fail; fi; exec {{demo}} --version {{version}}",
        fail.display()
    );
    let v2 = artifact(&fleet, "api", "2", &body);
    let p = znode_schema::Policy {
        on_halt: znode_schema::OnHalt::Rollback,
        health_deadline: HumanDuration::secs(2),
        ..policy(3, 1, Duration::from_millis(500))
    };
    let entry = stage(&c, &fleet.layout(), "api", "2", &v2, p).await;
    eventually_async("a host to run 2", PATIENCE, || async {
        online(&c, &fleet.layout(), "api").await.iter().any(|(_, v)| v == "2").then_some(())
    })
    .await;
    std::fs::write(&fail, "").unwrap();
    wait_done(&fleet, &c).await;
    wait_versions(&fleet, &c, 5, "1").await;

    let history: Vec<Txn> =
        invariants::history(shared_server(), &fleet.root).into_iter().filter(|t| t.zxid > mark).collect();
    let (rolling_at, _, ev) = event_zxid(&history, &fleet, EventKind::RollingBack).expect("a rolling_back event");
    assert!(ev.detail.as_deref().unwrap_or_default().contains("go back to 1"), "{ev:?}");
    let (done_at, _, done) = event_zxid(&history, &fleet, EventKind::RolledBack).expect("a rolled_back event");
    assert_eq!(done.version.as_deref(), Some("1"), "{done:?}");
    assert!(done_at > rolling_at);
    assert!(event_zxid(&history, &fleet, EventKind::Completed).is_none(), "rolled back, not completed");
    let l = fleet.layout();
    let back: Vec<&Txn> = history
        .iter()
        .filter(|t| {
            t.zxid > rolling_at
                && t.ops.iter().any(|op| {
                    matches!(op, Op::Create { data, .. } if marker_of(&l, op.path()).is_some_and(|(e, _)| e == entry)
                        && decode::<znode_schema::Upgrading>(op.path(), data).is_ok_and(|m| m.to == "1"))
                })
        })
        .collect();
    assert!(!back.is_empty(), "at least the host that ran 2 went back");
    assert!(
        !history.iter().any(|t| t.zxid > rolling_at
            && t.ops.iter().any(|op| matches!(op, Op::Create { data, .. } if marker_of(&l, op.path()).is_some()
                && decode::<znode_schema::Upgrading>(op.path(), data).is_ok_and(|m| m.to == "2")))),
        "nobody stepped forward once the rollback started"
    );
    eprintln!("{} host(s) went back", back.len());
    verify(shared_server(), &c, &fleet.root, &["api"], false).await;
}

/// `progress_deadline`: a rollout whose hosts all fail to download (a wrong sha256)
/// halts once the deadline passes, the reason naming the deadline and the error; one
/// whose quorum can never be met halts saying so. Neither halts before its deadline.
#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_that_moves_no_host_halts_at_its_progress_deadline() {
    let (fleet, c) = fleet_at_v1("progress", 3, "", |f| f.artifact("1", Behaviour::Good)).await;
    let mut bad = fleet.artifact("2", Behaviour::Good);
    bad.sha256 = "0".repeat(64);
    let p = znode_schema::Policy { progress_deadline: Some(HumanDuration::secs(3)), ..policy(1, 1, Duration::ZERO) };
    let staged = std::time::Instant::now();
    let entry = stage(&c, &fleet.layout(), "api", "2", &bad, p.clone()).await;
    let halted = wait_halted(&fleet, &c, &entry).await;
    let reason = halted.reason.unwrap_or_default();
    assert!(staged.elapsed() >= Duration::from_secs(3), "halted before the deadline: {reason}");
    assert!(reason.contains("progress_deadline") && reason.contains("sha256"), "{reason}");

    let v3 = fleet.artifact("3", Behaviour::Good);
    let p = znode_schema::Policy { progress_deadline: Some(HumanDuration::secs(2)), ..policy(5, 1, Duration::ZERO) };
    let staged = std::time::Instant::now();
    let entry = stage(&c, &fleet.layout(), "api", "3", &v3, p).await;
    let halted = wait_halted(&fleet, &c, &entry).await;
    let reason = halted.reason.unwrap_or_default();
    assert!(staged.elapsed() >= Duration::from_secs(2), "halted before the deadline: {reason}");
    assert!(reason.contains("progress_deadline") && reason.contains("quorum"), "{reason}");
    assert_eq!(online(&c, &fleet.layout(), "api").await.iter().filter(|(_, v)| v == "1").count(), 3);
}

/// Every host says in its registration what it does about the staged release once it
/// has been at it for a while (SPEC "What a host reports"): downloading with bytes so
/// far, failed with the error, waiting at the front (and for what), queued behind.
#[tokio::test(flavor = "multi_thread")]
async fn hosts_report_what_they_do_about_the_staged_release() {
    use baton_tests::artifact_server::{ArtifactServer, Fault};
    use znode_schema::Activity;
    let (fleet, c) = fleet_at_v1("reports", 3, "", |f| f.artifact("1", Behaviour::Good)).await;
    let server = ArtifactServer::start();
    let body = vec![7u8; 64 * 1024];
    server.put("/api-2", body.clone());
    server.fail_always(Fault::StallAfter(10_000));
    let v2 = Artifact {
        url: server.url("/api-2"),
        sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body)),
        size: body.len() as u64,
        format: znode_schema::ArtifactFormat::File,
        signature: None,
    };
    let l = fleet.layout();
    stage(&c, &l, "api", "2", &v2, policy(1, 1, Duration::ZERO)).await;
    baton_tests::fleet::wait_registrations(&c, &fleet, "api", "every host reporting its download", |cur| {
        cur.report.as_ref().is_some_and(|r| {
            r.activity == Activity::Downloading && r.bytes >= Some(10_000) && r.size == Some(64 * 1024)
        })
    })
    .await;

    server.clear_faults();
    server.fail_always(Fault::Status(404));
    let mut v3 = v2.clone();
    v3.url = server.url("/api-3");
    stage(&c, &l, "api", "3", &v3, policy(1, 1, Duration::ZERO)).await;
    baton_tests::fleet::wait_registrations(&c, &fleet, "api", "every host reporting its failure", |cur| {
        cur.report.as_ref().is_some_and(|r| {
            r.activity == Activity::Failed && r.version == "3" && r.error.as_deref().unwrap_or_default().contains("404")
        })
    })
    .await;

    // Quorum 3 of 3: nobody may step. The front host waits for the quorum; the others
    // are queued behind it.
    let v4 = fleet.artifact("4", Behaviour::Good);
    stage(&c, &l, "api", "4", &v4, policy(3, 1, Duration::ZERO)).await;
    let regs = baton_tests::fleet::wait_registrations(&c, &fleet, "api", "front and queued reports", |cur| {
        cur.report
            .as_ref()
            .is_some_and(|r| r.version == "4" && matches!(r.activity, Activity::Waiting | Activity::Queued))
    })
    .await;
    let mut seen: Vec<(Activity, Option<u32>)> =
        regs.iter().map(|c| c.report.as_ref().map(|r| (r.activity, r.position)).unwrap()).collect();
    seen.sort_by_key(|(_, p)| *p);
    assert_eq!(
        seen,
        vec![(Activity::Waiting, Some(1)), (Activity::Queued, Some(2)), (Activity::Queued, Some(3))],
        "{regs:?}"
    );
    let front = regs.iter().find(|c| c.report.as_ref().unwrap().activity == Activity::Waiting).unwrap();
    let why = front.report.as_ref().unwrap().waiting_for.clone().unwrap_or_default();
    assert!(why.contains("quorum: 3 online, 3 must stay online"), "{why}");
}

/// `[metrics] listen` serves OpenMetrics at `/metrics`: scraped during a rollout
/// (a host in its bake shows state `upgrading`) and after it (steps, downloads,
/// versions, the session).
#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_served_and_follow_a_rollout() {
    let mut fleet = Fleet::new(&shared_server().connect_string(), &unique_root("metrics"), "api", 2);
    let ports: Vec<u16> = fleet.hosts.iter().map(|_| baton_tests::zk::free_port()).collect();
    for (h, port) in fleet.hosts.iter().zip(&ports) {
        fleet.write_config(h, "");
        let mut text = std::fs::read_to_string(&h.config).unwrap();
        text.push_str(&format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
        std::fs::write(&h.config, text).unwrap();
    }
    let c = fleet.client().await;
    let v1 = fleet.artifact("1", Behaviour::Good);
    stage(&c, &fleet.layout(), "api", "1", &v1, policy(0, 2, Duration::ZERO)).await;
    fleet.start_all();
    wait_versions(&fleet, &c, 2, "1").await;
    wait_done(&fleet, &c).await;
    let scrape = |port: u16| get(port, "/metrics").unwrap_or_default();
    let m = scrape(ports[0]);
    assert!(m.contains("baton_build_info{version=\""), "{m}");
    assert!(m.contains("baton_service_version_info{service=\"api\",version=\"1\"} 1"), "{m}");
    assert!(m.contains("baton_zookeeper_session_up 1"), "{m}");
    assert!(m.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF");
    assert!(get(ports[0], "/nope").is_none(), "404 elsewhere");

    let v2 = fleet.artifact("2", Behaviour::Good);
    stage(&c, &fleet.layout(), "api", "2", &v2, policy(1, 1, Duration::from_secs(2))).await;
    eventually_async("a host to show its step in progress", PATIENCE, || async {
        ports
            .iter()
            .any(|p| scrape(*p).contains("baton_service_state{service=\"api\",state=\"upgrading\"} 1"))
            .then_some(())
    })
    .await;
    wait_versions(&fleet, &c, 2, "2").await;
    wait_done(&fleet, &c).await;
    for port in &ports {
        let m = scrape(*port);
        assert!(m.contains("baton_steps_total{service=\"api\",outcome=\"upgraded\"} 1"), "{m}");
        assert!(m.contains("baton_downloads_total{service=\"api\",outcome=\"verified\"}"), "{m}");
        assert!(m.contains("baton_step_duration_seconds_count{service=\"api\",outcome=\"upgraded\"} 1"), "{m}");
        assert!(m.contains("baton_service_version_info{service=\"api\",version=\"2\"} 1"), "{m}");
        assert!(!m.contains("version=\"1\"} 1"), "the old version is gone: {m}");
    }
}
