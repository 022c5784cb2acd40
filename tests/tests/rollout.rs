//! The coordinated upgrade (SPEC steps 3 to 8) with real sidecars, real demo
//! services and a real ZooKeeper.

use baton_tests::fleet::{Behaviour, Fleet, deploys, online, set_state, stage};
use baton_tests::monitor::Monitor;
use baton_tests::{eventually_async, shared_server, unique_root};
use std::time::Duration;
use znode_schema::{DeployState, HumanDuration, Policy, Quorum};

const PATIENCE: Duration = Duration::from_secs(60);

fn policy(quorum: u32, max_parallel: u32) -> Policy {
    Policy {
        quorum: Quorum::Count(quorum),
        max_parallel,
        health_deadline: HumanDuration::secs(10),
        ..Policy::default()
    }
}

/// A fleet of `n` hosts all online at version 1.
async fn fleet_at_v1(name: &str, n: usize) -> (Fleet, zookeeper_client::Client) {
    let mut fleet = Fleet::new(&shared_server().connect_string(), &unique_root(name), "api", n);
    let client = fleet.client().await;
    let v1 = fleet.artifact("1", Behaviour::Good);
    stage(&client, &fleet.layout(), "api", "1", &v1, policy(0, n as u32)).await;
    fleet.start_all();
    wait_versions(&fleet, &client, n, "1").await;
    eventually_async("the v1 rollout to complete", PATIENCE, || async {
        deploys(&client, &fleet.layout()).await.is_empty().then_some(())
    })
    .await;
    (fleet, client)
}

async fn wait_versions(fleet: &Fleet, client: &zookeeper_client::Client, n: usize, version: &str) {
    baton_tests::chaos::wait_versions_within(fleet, client, n, version, PATIENCE).await
}

#[tokio::test(flavor = "multi_thread")]
async fn five_hosts_quorum_three_never_below_quorum() {
    let (fleet, client) = fleet_at_v1("quorum3", 5).await;
    let monitor = Monitor::spawn(client.clone(), fleet.layout(), "api");
    eventually_async("monitor to start", PATIENCE, || async { (monitor.stats().samples > 0).then_some(()) }).await;
    monitor.arm();
    let v2 = fleet.artifact("2", Behaviour::Good);
    stage(&client, &fleet.layout(), "api", "2", &v2, policy(3, 1)).await;
    wait_versions(&fleet, &client, 5, "2").await;
    eventually_async("the deploy entry to be deleted", PATIENCE, || async {
        deploys(&client, &fleet.layout()).await.is_empty().then_some(())
    })
    .await;
    let stats = monitor.stats();
    assert!(stats.min_online.unwrap() >= 4, "one host at a time of five: {stats:?}");
    assert!(stats.max_markers <= 1, "{stats:?}");
    let history = client.list_children(&fleet.layout().history("api")).await.unwrap();
    assert!(history.len() >= 5 + 2, "staged, 5 host_upgraded, completed: {history:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn max_parallel_two_respects_the_quorum() {
    let (fleet, client) = fleet_at_v1("parallel2", 5).await;
    let monitor = Monitor::spawn(client.clone(), fleet.layout(), "api");
    eventually_async("monitor to start", PATIENCE, || async { (monitor.stats().samples > 0).then_some(()) }).await;
    monitor.arm();
    let v2 = fleet.artifact("2", Behaviour::Good);
    let p = Policy { bake: HumanDuration::millis(300), ..policy(3, 2) };
    stage(&client, &fleet.layout(), "api", "2", &v2, p).await;
    wait_versions(&fleet, &client, 5, "2").await;
    let stats = monitor.stats();
    assert!(stats.min_online.unwrap() >= 3, "{stats:?}");
    assert!(stats.max_markers <= 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_failing_its_health_check_halts_after_one_host() {
    let (fleet, client) = fleet_at_v1("halt", 3).await;
    let bad = fleet.artifact("2", Behaviour::HealthFail);
    let p = Policy { health_deadline: HumanDuration::secs(2), ..policy(1, 1) };
    let entry = stage(&client, &fleet.layout(), "api", "2", &bad, p).await;
    let halted = eventually_async("the rollout to halt", PATIENCE, || async {
        deploys(&client, &fleet.layout()).await.into_iter().find(|(n, e)| *n == entry && e.state == DeployState::Halted)
    })
    .await;
    let reason = halted.1.reason.unwrap();
    assert!(reason.contains("failed") && reason.contains("api-"), "{reason}");
    assert_eq!(halted.1.failures, 1);
    // Every host serves the old version again, and none is upgrading.
    wait_versions(&fleet, &client, 3, "1").await;
    let markers = client.list_children(&fleet.layout().upgrading_dir(&entry)).await.unwrap();
    assert!(markers.is_empty(), "{markers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_stops_further_steps_and_resume_continues() {
    let (fleet, client) = fleet_at_v1("pause", 4).await;
    let v2 = fleet.artifact("2", Behaviour::Good);
    let p = Policy { bake: HumanDuration::millis(500), ..policy(1, 1) };
    let entry = stage(&client, &fleet.layout(), "api", "2", &v2, p).await;
    let layout = fleet.layout();
    eventually_async("a first host at version 2", PATIENCE, || async {
        online(&client, &layout, "api").await.iter().any(|(_, v)| v == "2").then_some(())
    })
    .await;
    set_state(&client, &layout, &entry, DeployState::Paused).await;
    // The step in flight (if any) finishes; then nothing moves.
    eventually_async("no host upgrading", PATIENCE, || async {
        client.list_children(&layout.upgrading_dir(&entry)).await.ok().filter(|m| m.is_empty())
    })
    .await;
    let before = online(&client, &layout, "api").await;
    let upgraded = before.iter().filter(|(_, v)| v == "2").count();
    assert!(upgraded < 4, "paused before the end: {before:?}");
    // Observe for a few bake periods that no further host moves while paused.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        let markers = client.list_children(&layout.upgrading_dir(&entry)).await.unwrap();
        assert!(markers.is_empty(), "a host stepped while paused: {markers:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(online(&client, &layout, "api").await.iter().filter(|(_, v)| v == "2").count(), upgraded);
    set_state(&client, &layout, &entry, DeployState::Active).await;
    wait_versions(&fleet, &client, 4, "2").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_services_roll_in_deploy_order() {
    let zk = shared_server().connect_string();
    let root = unique_root("order");
    let mut a = Fleet::new(&zk, &root, "alpha", 2);
    let mut b = Fleet::new(&zk, &root, "beta", 2);
    let client = a.client().await;
    let layout = a.layout();
    let a1 = a.artifact("1", Behaviour::Good);
    let b1 = b.artifact("1", Behaviour::Good);
    stage(&client, &layout, "alpha", "1", &a1, policy(0, 2)).await;
    stage(&client, &layout, "beta", "1", &b1, policy(0, 2)).await;
    a.start_all();
    b.start_all();
    wait_versions(&a, &client, 2, "1").await;
    wait_versions(&b, &client, 2, "1").await;
    eventually_async("v1 entries done", PATIENCE, || async {
        deploys(&client, &layout).await.is_empty().then_some(())
    })
    .await;

    let mon_b = Monitor::spawn(client.clone(), layout.clone(), "beta");
    let a2 = a.artifact("2", Behaviour::Good);
    let b2 = b.artifact("2", Behaviour::Good);
    let slow = Policy { bake: HumanDuration::millis(400), ..policy(1, 1) };
    stage(&client, &layout, "alpha", "2", &a2, slow.clone()).await;
    stage(&client, &layout, "beta", "2", &b2, slow).await;
    wait_versions(&a, &client, 2, "2").await;
    wait_versions(&b, &client, 2, "2").await;
    assert!(!mon_b.stats().out_of_order, "beta stepped while alpha's rollout was the head");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_in_flight_host_keeps_its_slot_and_finishes_after_restart() {
    let (mut fleet, client) = fleet_at_v1("inflight", 3).await;
    let layout = fleet.layout();
    let v2 = fleet.artifact("2", Behaviour::Good);
    let p = Policy { bake: HumanDuration::secs(3), ..policy(1, 1) };
    let entry = stage(&client, &layout, "api", "2", &v2, p).await;
    let host = eventually_async("a host to take the slot", PATIENCE, || async {
        client.list_children(&layout.upgrading_dir(&entry)).await.ok().and_then(|m| m.into_iter().next())
    })
    .await;
    let i = fleet.hosts.iter().position(|h| h.id == host).unwrap();
    fleet.kill(i);
    // While it is gone its marker stays and nobody else steps.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < deadline {
        let markers = client.list_children(&layout.upgrading_dir(&entry)).await.unwrap();
        assert_eq!(markers, vec![host.clone()], "the slot must stay with the killed host");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fleet.start(i);
    wait_versions(&fleet, &client, 3, "2").await;
    eventually_async("the rollout to complete", PATIENCE, || async {
        deploys(&client, &layout).await.is_empty().then_some(())
    })
    .await;
}

/// Many hosts read the same count and commit at once: the fence lets through
/// exactly as many as the quorum allows, never more. Half of them read the front as
/// the handoff does (one snapshot: a parallel fence when the count covers the whole
/// ticket window), half with watches (a rewriting fence).
#[tokio::test(flavor = "multi_thread")]
async fn the_fence_lets_exactly_the_allowed_number_through() {
    // 8 online hosts, quorum 5: exactly 3 may go down, whatever the interleaving
    // (the window of 8 cannot all go: every fence rewrites).
    let (won, markers, online, rewrites) = fence_race(5, 8).await;
    assert_eq!((won, markers, online), (3, 3, 5), "exactly online - quorum hosts may step");
    assert_eq!(rewrites, 3, "every fence rewrote the entry");
}

/// The same race where the quorum (3 of 8) covers the whole window of 5 tickets:
/// the hosts that read it as the handoff does fence in parallel (the entry is
/// rewritten fewer times than hosts stepped), the others rewrite, and together
/// they take exactly the 5 slots.
#[tokio::test(flavor = "multi_thread")]
async fn parallel_fences_fill_exactly_the_slots() {
    let (won, markers, online, rewrites) = fence_race(3, 5).await;
    assert_eq!((won, markers, online), (5, 5, 3), "exactly max_parallel hosts may step");
    assert!(rewrites < 5, "no fence was parallel: the entry was rewritten {rewrites} times");
}

/// 8 hosts queued and online race to fence under `quorum` and `max_parallel`;
/// returns how many won, the markers and online hosts after, and the entry's
/// data version (its rewrites).
async fn fence_race(quorum: u32, max_parallel: u32) -> (usize, usize, usize, i32) {
    use baton_sidecar::coord::{fence, queue, session::Session, turn};
    use zookeeper_client as zk;
    let zk_addr = shared_server().connect_string();
    let layout = znode_schema::Layout::new(&unique_root("race")).unwrap();
    let admin = zk::Client::connect(&zk_addr).await.unwrap();
    let art = znode_schema::Artifact {
        url: "file:///nonexistent".into(),
        sha256: "0".repeat(64),
        size: 1,
        format: znode_schema::ArtifactFormat::File,
        signature: None,
    };
    let p = Policy { quorum: Quorum::Count(quorum), max_parallel, ..Policy::default() };
    stage(&admin, &layout, "api", "2", &art, p).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let client = zk::Client::connect(&zk_addr).await.unwrap();
        let s = Session {
            client,
            layout: layout.clone(),
            host: format!("h{i}"),
            timeout: Duration::from_secs(10),
            previous: Vec::new().into(),
            identity: Default::default(),
        };
        let cur = znode_schema::Current {
            host: s.host.clone(),
            service: "api".into(),
            version: "1".into(),
            state: "online".into(),
            pid: None,
            since: "t".into(),
            sidecar: "test".into(),
            last_error: None,
            report: None,
        };
        let opts = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
        s.client.create(&layout.current_host("api", &s.host), &znode_schema::encode(&cur), &opts).await.unwrap();
        let ticket = queue::ensure(&s, "api", "2").await.unwrap();
        tasks.push((s, ticket));
    }
    let staging: znode_schema::Staging = {
        let (d, _) = admin.get_data(&layout.staging("api")).await.unwrap();
        znode_schema::decode("", &d).unwrap()
    };
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
    let handles: Vec<_> = tasks
        .into_iter()
        .enumerate()
        .map(|(i, (s, ticket))| {
            let (staging, barrier) = (staging.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                // The session is handed back so its ephemeral nodes outlive the task.
                loop {
                    let (_, q, _) = fence::front(&s, "api", "2").await.unwrap();
                    let entry = q.head().map(|h| h.name).expect("the rollout heads the queue");
                    let peeked = if i % 2 == 0 { fence::peek(&s, "api", &entry).await.unwrap() } else { None };
                    let front = match peeked {
                        Some(snap) => snap.front_for(&staging, &ticket),
                        None => fence::front(&s, "api", "2").await.unwrap().0,
                    };
                    let tickets = queue::tickets(&s, "api").await.unwrap();
                    let in_window = turn::position(&tickets, &ticket, &staging) == turn::Verdict::Go;
                    if !in_window || turn::decide(&staging, &front, &s.host) != turn::Verdict::Go {
                        return (false, s);
                    }
                    match fence::commit(&s, "api", &front, Some(&ticket), Some("1"), "2", 0).await.unwrap() {
                        fence::Fenced::Won => return (true, s),
                        fence::Fenced::Moved => continue,
                    }
                }
            })
        })
        .collect();
    let mut won = 0;
    let mut sessions = Vec::new();
    for h in handles {
        let (w, s) = h.await.unwrap();
        won += w as usize;
        sessions.push(s);
    }
    let (entry, _) = deploys(&admin, &layout).await.into_iter().next().unwrap();
    let markers = admin.list_children(&layout.upgrading_dir(&entry)).await.unwrap();
    let online_now = admin.list_children(&layout.current_service("api")).await.unwrap();
    let (_, stat) = admin.get_data(&layout.deploy_entry(&entry)).await.unwrap();
    drop(sessions);
    (won, markers.len(), online_now.len(), stat.version)
}
