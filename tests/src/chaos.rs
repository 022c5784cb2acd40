//! Shared steps of the chaos suite (`tests/tests/chaos*.rs`): a fleet at version 1,
//! waiting for versions, completion or a halt, and the final check of a test's whole
//! history with [`crate::invariants`].

use crate::fleet::{Behaviour, Fleet, deploys, online, stage};
use crate::invariants::{self, Report};
use crate::{ZkCluster, eventually_async};
use std::time::Duration;
use znode_schema::seq::sorted_tickets;
use znode_schema::{DeployEntry, DeployName, DeployState, HumanDuration, Policy, Quorum, TicketName};
use zookeeper_client as zk;

/// How long a chaos test waits for any one fact (ensembles on a loaded 2-core machine
/// elect slowly, and sessions take their timeout to expire).
pub const PATIENCE: Duration = Duration::from_secs(120);

/// A soak's seed and number of rounds: `BATON_CHAOS_SEED` (default: random) and
/// `BATON_CHAOS_ROUNDS` (default 3), printed with how to replay them.
pub fn soak_seed(name: &str) -> (u64, u64) {
    let env_u64 = |var: &str| std::env::var(var).ok().and_then(|v| v.parse::<u64>().ok());
    let rounds = env_u64("BATON_CHAOS_ROUNDS").unwrap_or(3);
    let seed = env_u64("BATON_CHAOS_SEED").unwrap_or_else(|| rand::random::<u32>() as u64);
    eprintln!("{name}: seed {seed}, {rounds} rounds (replay: BATON_CHAOS_SEED={seed} BATON_CHAOS_ROUNDS={rounds})");
    (seed, rounds)
}

/// Kills ZooKeeper member `i` of `cluster`, waits `down`, restarts it and waits
/// until the ensemble serves again.
pub async fn bounce_member(cluster: &ZkCluster, i: usize, down: Duration) {
    eprintln!("  kill ZooKeeper member {i}, restart it");
    cluster.kill(i);
    tokio::time::sleep(down).await;
    cluster.restart(i);
    cluster.wait_serving();
}

/// kill -9s host `i`'s sidecar, waits `down`, starts it again.
pub async fn bounce_sidecar(fleet: &mut Fleet, i: usize, down: Duration) {
    eprintln!("  kill -9 sidecar {i} ({}), restart it", fleet.hosts[i].id);
    fleet.kill(i);
    tokio::time::sleep(down).await;
    fleet.start(i);
}

/// A policy with `quorum`, `max_parallel`, `bake` and a 10 s health deadline.
pub fn policy(quorum: u32, max_parallel: u32, bake: Duration) -> Policy {
    Policy {
        quorum: Quorum::Count(quorum),
        max_parallel,
        bake: HumanDuration(bake),
        health_deadline: HumanDuration::secs(10),
        ..Policy::default()
    }
}

/// A client of `connect` whose session survives a failover (10 s timeout).
pub async fn client(connect: &str) -> zk::Client {
    zk::Client::connector().with_session_timeout(Duration::from_secs(10)).connect(connect).await.unwrap()
}

/// Starts `fleet` (configs already written) at version 1 and waits for the v1 rollout
/// to complete.
pub async fn start_at_v1(fleet: &mut Fleet, client: &zk::Client) {
    let v1 = fleet.artifact("1", Behaviour::Good);
    let n = fleet.hosts.len();
    stage(client, &fleet.layout(), &fleet.service, "1", &v1, policy(0, n as u32, Duration::ZERO)).await;
    fleet.start_all();
    wait_versions(fleet, client, n, "1").await;
    wait_done(fleet, client).await;
}

/// Waits until exactly `n` hosts are online, all at `version`.
pub async fn wait_versions(fleet: &Fleet, client: &zk::Client, n: usize, version: &str) {
    wait_versions_within(fleet, client, n, version, PATIENCE).await
}

/// [`wait_versions`] with its own patience.
pub async fn wait_versions_within(fleet: &Fleet, client: &zk::Client, n: usize, version: &str, patience: Duration) {
    wait_service_versions(fleet, client, &fleet.service, n, version, patience).await
}

/// Waits until exactly `n` hosts of `service` are online, all at `version`.
pub async fn wait_service_versions(
    fleet: &Fleet,
    client: &zk::Client,
    service: &str,
    n: usize,
    version: &str,
    patience: Duration,
) {
    let layout = fleet.layout();
    let done = tokio::time::timeout(patience, async {
        loop {
            let o = online(client, &layout, service).await;
            if o.len() == n && o.iter().all(|(_, v)| v == version) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if done.is_err() {
        let now = online(client, &layout, service).await;
        let d = deploys(client, &layout).await;
        panic!(
            "timed out after {patience:?} waiting for {n} hosts of {service} at {version}; online {now:?}; \
             deploys {d:?}\n{}",
            fleet.logs()
        );
    }
}

/// Waits until no deploy entry of the fleet's service is left (its rollout completed).
pub async fn wait_done(fleet: &Fleet, client: &zk::Client) {
    wait_service_done(fleet, client, &fleet.service, PATIENCE).await
}

/// Waits until no deploy entry of `service` is left (its rollout completed).
pub async fn wait_service_done(fleet: &Fleet, client: &zk::Client, service: &str, patience: Duration) {
    let layout = fleet.layout();
    let done = tokio::time::timeout(patience, async {
        loop {
            if !deploys(client, &layout).await.iter().any(|(_, e)| e.service == service) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if done.is_err() {
        let d = deploys(client, &layout).await;
        panic!(
            "timed out after {patience:?} waiting for the rollout of {service} to complete; deploys {d:?}\n{}",
            fleet.logs()
        );
    }
}

/// Waits until deploy entry `name` is halted and returns it.
pub async fn wait_halted(fleet: &Fleet, client: &zk::Client, name: &DeployName) -> DeployEntry {
    let layout = fleet.layout();
    eventually_async("the rollout to halt", PATIENCE, || async {
        deploys(client, &layout).await.into_iter().find(|(n, e)| n == name && e.state == DeployState::Halted)
    })
    .await
    .1
}

/// Waits until `n` hosts hold a ticket for `service` and returns the tickets in
/// queue order.
pub async fn wait_queued(fleet: &Fleet, client: &zk::Client, service: &str, n: usize) -> Vec<TicketName> {
    let layout = fleet.layout();
    eventually_async("every host queued", PATIENCE, || async {
        let t = client.list_children(&layout.staging(service)).await.unwrap_or_default();
        (t.len() == n).then(|| sorted_tickets(&t))
    })
    .await
}

/// Waits until some host holds a marker under `entry` and returns its index.
pub async fn wait_marker(fleet: &Fleet, client: &zk::Client, entry: &DeployName) -> usize {
    let layout = fleet.layout();
    let host = eventually_async("a host to take the slot", PATIENCE, || async {
        client.list_children(&layout.upgrading_dir(entry)).await.ok().and_then(|m| m.into_iter().next())
    })
    .await;
    fleet.hosts.iter().position(|h| h.id == host).expect("a host of the fleet")
}

/// Reads the whole history of the fleet's root from `cluster`'s transaction logs,
/// checks every transaction and the end state of `services`, and checks that the
/// replayed end state is the live tree (the log reader missed nothing). Panics on
/// any violation; returns the report.
pub async fn verify(
    cluster: &ZkCluster,
    client: &zk::Client,
    root: &str,
    services: &[&str],
    paused_ok: bool,
) -> Report {
    let layout = znode_schema::Layout::new(root).unwrap();
    // The sidecars may still write (a health flap): compare until the replay of the
    // logs read after a live snapshot matches it.
    let mut attempt = 0;
    let (mut report, state) = loop {
        attempt += 1;
        let live = crate::ctl::snapshot(client, root).await;
        let (report, state) = invariants::check_cluster(cluster, root);
        let differs: Vec<String> = live
            .iter()
            .filter(|(p, d)| p.as_str() != root && state.nodes.get(*p) != Some(*d))
            .map(|(p, _)| format!("live only or different: {p}"))
            .chain(state.nodes.keys().filter(|p| !live.contains_key(*p)).map(|p| format!("replayed only: {p}")))
            .collect();
        if differs.is_empty() {
            break (report, state);
        }
        assert!(attempt < 10, "the transaction log replay disagrees with the live tree:\n{}", differs.join("\n"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (violations, notes) = invariants::end_with(&state, &layout, services, paused_ok, &report);
    report.violations.extend(violations);
    report.notes.extend(notes);
    report.assert_ok(root);
    eprintln!(
        "invariants hold over {} transactions, {} fences (max markers {}, fewest online at a fence {:?}, \
         longest free slot beyond the grace {:?}); notes: {:?}",
        report.txns,
        report.fences,
        report.max_markers,
        report.min_online_at_fence,
        report.max_free_slot_ms,
        report.notes
    );
    report
}

/// A one-file release for `version` running the shell `body`, where `{demo}` stands
/// for the demo service binary (which reads its port from `PORT`).
pub fn script_artifact(fleet: &Fleet, version: &str, body: &str) -> znode_schema::Artifact {
    let dir = fleet.dir().join("scripts").join(version);
    std::fs::create_dir_all(&dir).unwrap();
    let demo = crate::bin::path("baton-demo-service");
    let path = dir.join("demo");
    let body = body.replace("{demo}", &demo.display().to_string()).replace("{version}", version);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    crate::fleet::file_artifact(&path)
}

/// What the service on `port` answers at `/version` (`None`: nothing answers).
pub fn served_version(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /version HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.trim().to_string())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.trim().to_string()))
}

/// Host `i`'s sidecar log without terminal colour codes.
pub fn plain_log(fleet: &Fleet, i: usize) -> String {
    let raw = fleet.log(i);
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
