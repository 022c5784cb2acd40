//! The sidecar on its own host (SPEC steps 2, 9, 10): membership follows the
//! service's health, sessions come back, bad artifacts are reported and never
//! installed, boot picks the right version, a duplicate host id is waited for and reported.

use baton_tests::fleet::{Behaviour, Fleet, deploys, online, stage};
use baton_tests::{eventually_async, shared_server, unique_root};
use nix::sys::signal::Signal;
use std::time::Duration;
use znode_schema::{Current, HumanDuration, Policy, Quorum, decode};
use zookeeper_client as zk;

const PATIENCE: Duration = Duration::from_secs(60);

fn policy(quorum: u32) -> Policy {
    Policy {
        quorum: Quorum::Count(quorum),
        max_parallel: 1,
        health_deadline: HumanDuration::secs(10),
        ..Policy::default()
    }
}

async fn current(client: &zk::Client, fleet: &Fleet, host: &str) -> Option<Current> {
    let path = fleet.layout().current_host(&fleet.service, host);
    let (data, _) = client.get_data(&path).await.ok()?;
    decode(&path, &data).ok()
}

async fn wait_current(
    client: &zk::Client,
    fleet: &Fleet,
    host: &str,
    what: &str,
    f: impl Fn(&Option<Current>) -> bool,
) -> Option<Current> {
    let r = tokio::time::timeout(PATIENCE, async {
        loop {
            let c = current(client, fleet, host).await;
            if f(&c) {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    r.unwrap_or_else(|_| panic!("timed out waiting for {what}\n{}", fleet.logs()))
}

#[tokio::test(flavor = "multi_thread")]
async fn registration_follows_the_service_through_a_crash() {
    let mut fleet = Fleet::new(&shared_server().connect_string(), &unique_root("member"), "api", 1);
    let client = fleet.client().await;
    let v1 = fleet.artifact("1", Behaviour::Good);
    stage(&client, &fleet.layout(), "api", "1", &v1, policy(0)).await;
    fleet.start(0);
    let first =
        wait_current(&client, &fleet, "api-1", "registration at v1", |c| c.as_ref().is_some_and(|c| c.version == "1"))
            .await
            .unwrap();
    let pid = first.pid.expect("run mode reports the pid");
    // Crash the service: the registration goes, then comes back with a new process.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    wait_current(&client, &fleet, "api-1", "registration to vanish after the crash", |c| {
        c.as_ref().is_none_or(|c| c.pid != Some(pid))
    })
    .await;
    let back = wait_current(&client, &fleet, "api-1", "registration after the restart", |c| {
        c.as_ref().is_some_and(|c| c.pid.is_some() && c.pid != Some(pid))
    })
    .await
    .unwrap();
    assert_eq!(back.version, "1");
    // A clean stop of the sidecar removes the registration at once (session closed).
    assert_eq!(fleet.stop(0), Some(0));
    assert!(current(&client, &fleet, "api-1").await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_sidecar_re_registers_after_its_session_expired() {
    let mut fleet = Fleet::new(&shared_server().connect_string(), &unique_root("expiry"), "api", 1);
    fleet.session_timeout = Duration::from_secs(2);
    fleet.write_config(&fleet.hosts[0], "");
    let client = fleet.client().await;
    let v1 = fleet.artifact("1", Behaviour::Good);
    stage(&client, &fleet.layout(), "api", "1", &v1, policy(0)).await;
    fleet.start(0);
    let before = wait_current(&client, &fleet, "api-1", "registration", |c| c.is_some()).await.unwrap();
    let path = fleet.layout().current_host("api", "api-1");
    let owner = client.check_stat(&path).await.unwrap().unwrap().ephemeral_owner;
    fleet.signal(0, Signal::SIGSTOP);
    wait_current(&client, &fleet, "api-1", "the session to expire", |c| c.is_none()).await;
    fleet.signal(0, Signal::SIGCONT);
    // Re-registered by a new session (health may flap once right after the thaw).
    eventually_async("re-registration by a new session", PATIENCE, || async {
        client.check_stat(&path).await.ok().flatten().filter(|st| st.ephemeral_owner != owner)
    })
    .await;
    let after = wait_current(&client, &fleet, "api-1", "re-registration", |c| c.is_some()).await.unwrap();
    assert_eq!(after.pid, before.pid, "the service kept running");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_artifact_is_reported_and_never_installed() {
    let (mut fleet, client) = {
        let mut f = Fleet::new(&shared_server().connect_string(), &unique_root("corrupt"), "api", 2);
        let c = f.client().await;
        let v1 = f.artifact("1", Behaviour::Good);
        stage(&c, &f.layout(), "api", "1", &v1, policy(0)).await;
        f.start_all();
        (f, c)
    };
    for h in ["api-1", "api-2"] {
        wait_current(&client, &fleet, h, "v1", |c| c.as_ref().is_some_and(|c| c.version == "1")).await;
    }
    let mut bad = fleet.artifact("2", Behaviour::Good);
    bad.sha256 = "0".repeat(64);
    stage(&client, &fleet.layout(), "api", "2", &bad, policy(1)).await;
    let c = wait_current(&client, &fleet, "api-1", "last_error in the registration", |c| {
        c.as_ref().is_some_and(|c| c.last_error.is_some())
    })
    .await
    .unwrap();
    let err = c.last_error.unwrap();
    assert!(err.contains("sha256") || err.contains("checksum"), "{err}");
    assert_eq!(c.version, "1");
    assert!(!fleet.hosts[0].data_dir.join("api/releases/2").exists(), "nothing installed");
    let history = client.list_children(&fleet.layout().history("api")).await.unwrap();
    let mut found = false;
    for e in history {
        let (d, _) = client.get_data(&fleet.layout().history_event("api", &e)).await.unwrap();
        found |= String::from_utf8_lossy(&d).contains("download_failed");
    }
    assert!(found, "a download_failed event");
    // Restaged correctly, the rollout goes through.
    let good = fleet.artifact("2", Behaviour::Good);
    stage(&client, &fleet.layout(), "api", "2", &good, policy(1)).await;
    for h in ["api-1", "api-2"] {
        wait_current(&client, &fleet, h, "v2", |c| {
            c.as_ref().is_some_and(|c| c.version == "2" && c.last_error.is_none())
        })
        .await;
    }
    fleet.stop(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn boot_picks_the_most_popular_version() {
    let mut fleet = Fleet::new(&shared_server().connect_string(), &unique_root("boot"), "api", 3);
    let client = fleet.client().await;
    let layout = fleet.layout();
    let v1 = fleet.artifact("1", Behaviour::Good);
    stage(&client, &layout, "api", "1", &v1, policy(0)).await;
    fleet.start(0);
    fleet.start(1);
    for h in ["api-1", "api-2"] {
        wait_current(&client, &fleet, h, "v1", |c| c.as_ref().is_some_and(|c| c.version == "1")).await;
    }
    // Stage v2 paused: nobody moves, so v1 stays the most popular.
    let v2 = fleet.artifact("2", Behaviour::Good);
    let entry = stage(&client, &layout, "api", "2", &v2, policy(1)).await;
    baton_tests::fleet::set_state(&client, &layout, &entry, znode_schema::DeployState::Paused).await;
    fleet.start(2);
    let c = wait_current(&client, &fleet, "api-3", "the new host to boot", |c| c.is_some()).await.unwrap();
    assert_eq!(c.version, "1", "boot takes the most popular version, not the staged one");
    // Unpaused, all three roll to v2.
    baton_tests::fleet::set_state(&client, &layout, &entry, znode_schema::DeployState::Active).await;
    eventually_async("all on v2", PATIENCE, || async {
        let o = online(&client, &layout, "api").await;
        (o.len() == 3 && o.iter().all(|(_, v)| v == "2")).then_some(())
    })
    .await;
    eventually_async("the rollout to complete", PATIENCE, || async {
        deploys(&client, &layout).await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn boot_with_nobody_online_uses_the_last_active_release() {
    let mut fleet = Fleet::new(&shared_server().connect_string(), &unique_root("lastactive"), "api", 1);
    let client = fleet.client().await;
    let layout = fleet.layout();
    let v1 = fleet.artifact("1", Behaviour::Good);
    stage(&client, &layout, "api", "1", &v1, policy(0)).await;
    fleet.start(0);
    let first =
        wait_current(&client, &fleet, "api-1", "v1", |c| c.as_ref().is_some_and(|c| c.version == "1")).await.unwrap();
    eventually_async("the v1 rollout to complete", PATIENCE, || async {
        deploys(&client, &layout).await.is_empty().then_some(())
    })
    .await;
    // The machine goes down (sidecar and service), and v2 is staged meanwhile.
    fleet.kill(0);
    baton_tests::fleet::kill_services(&fleet.hosts[0].data_dir);
    wait_current(&client, &fleet, "api-1", "the registration to expire", |c| c.is_none()).await;
    let v2 = fleet.artifact("2", Behaviour::Good);
    stage(&client, &layout, "api", "2", &v2, policy(0)).await;
    fleet.start(0);
    // Nobody online: it comes back on its own last release first (v1), then rolls to v2.
    let back = wait_current(&client, &fleet, "api-1", "back online", |c| c.is_some()).await.unwrap();
    assert_ne!(back.pid, first.pid);
    let log = fleet.log(0);
    assert!(log.contains("no host online: the last active release here"), "boot reason in the log:\n{log}");
    wait_current(&client, &fleet, "api-1", "v2", |c| c.as_ref().is_some_and(|c| c.version == "2")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_host_id_is_waited_for_and_reported() {
    let mut fleet = Fleet::new(&shared_server().connect_string(), &unique_root("dup"), "api", 1);
    fleet.session_timeout = Duration::from_secs(2);
    fleet.write_config(&fleet.hosts[0], "");
    let client = fleet.client().await;
    let v1 = fleet.artifact("1", Behaviour::Good);
    stage(&client, &fleet.layout(), "api", "1", &v1, policy(0)).await;
    fleet.start(0);
    let original = wait_current(&client, &fleet, "api-1", "registration", |c| c.is_some()).await.unwrap();
    // A second machine configured with the same host id (its own data dir and port).
    let i = fleet.add_host("api-1-twin");
    let twin_cfg =
        std::fs::read_to_string(&fleet.hosts[i].config).unwrap().replace("id = \"api-1-twin\"", "id = \"api-1\"");
    std::fs::write(&fleet.hosts[i].config, twin_cfg).unwrap();
    fleet.start(i);
    // It reports the session holding its registration (after waiting out a session
    // timeout), and keeps running instead of exiting.
    let log = eventually_async("the twin to report the other session", PATIENCE, || {
        let log = fleet.log(i);
        async move { log.contains("already registered").then_some(log) }
    })
    .await;
    let (_, stat) = client.get_data(&fleet.layout().current_host("api", "api-1")).await.unwrap();
    assert!(log.contains(&format!("{:#x}", stat.ephemeral_owner)), "names the session: {log}");
    assert_eq!(fleet.exited(i), None, "the twin keeps running:\n{log}");
    let now = current(&client, &fleet, "api-1").await.unwrap();
    assert_eq!(now.pid, original.pid, "the original keeps its registration");
}

#[test]
fn sidecar_check_lists_every_problem_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[zookeeper]\nconnect = \"127.0.0.1:2181\"\nsession_timeout = \"soon\"\n\n[host]\nid = \"web/01\"\ndata_dir = \"/tmp/x\"\ncolour = \"blue\"\n\n\
         [[service]]\nname = \"api\"\nrun = [\"bin/api\"]\nhealth = { tcp = \"127.0.0.1:1\", http = \"http://x/\" }\n",
    )
    .unwrap();
    let out = std::process::Command::new(baton_tests::bin::path("sidecar"))
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    for key in ["zookeeper.session_timeout", "host.id", "colour", "service[0].health"] {
        assert!(err.contains(key), "problem with {key} not listed:\n{err}");
    }
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[zookeeper]\nconnect = \"127.0.0.1:2181\"\n\n[host]\nid = \"web-01\"\ndata_dir = \"/tmp/x\"\n\n\
         [[service]]\nname = \"api\"\nrun = [\"bin/api\"]\nhealth = { tcp = \"127.0.0.1:1\" }\n",
    )
    .unwrap();
    let out = std::process::Command::new(baton_tests::bin::path("sidecar"))
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_with_a_user_runs_as_that_user() {
    use std::os::unix::fs::PermissionsExt;
    let mut fleet = Fleet::new(&shared_server().connect_string(), &unique_root("user"), "api", 1);
    // The release lies under the fleet's directory: let the user traverse it.
    std::fs::set_permissions(fleet.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    fleet.write_config(&fleet.hosts[0], "user = \"nobody\"");
    // The service's own program must be reachable by the user too, wherever the
    // checkout lies (a 0700 temporary directory in CI): a copy beside the release.
    let demo = fleet.dir().join("baton-demo-service");
    std::fs::copy(baton_tests::bin::path("baton-demo-service"), &demo).unwrap();
    std::fs::set_permissions(&demo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = fleet.dir().join("demo");
    std::fs::write(&script, format!("#!/bin/sh\nexec {} --version 1\n", demo.display())).unwrap();
    let v1 = baton_tests::fleet::file_artifact(&script);
    let client = fleet.client().await;
    stage(&client, &fleet.layout(), "api", "1", &v1, policy(0)).await;
    fleet.start(0);
    let c =
        wait_current(&client, &fleet, "api-1", "registration at v1", |c| c.as_ref().is_some_and(|c| c.version == "1"))
            .await
            .unwrap();
    let pid = c.pid.expect("run mode reports the pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid =
        status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap().split_whitespace().next().unwrap().to_string();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap().uid.as_raw().to_string();
    assert_eq!(uid, nobody, "the service runs as nobody:\n{status}");
    fleet.stop(0);
}
