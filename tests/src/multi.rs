//! Fleets whose hosts run several services ([`Fleet::multi`]): per-service releases,
//! start-up, process identity, hooks, and what the transaction log says about one
//! service (its history events and fences).

use crate::chaos::{PATIENCE, policy, wait_service_done, wait_service_versions};
use crate::fleet::{Fleet, file_artifact, stage};
use crate::invariants::{State, marker_of};
use crate::txnlog::{Op, Txn};
use std::path::Path;
use std::time::Duration;
use znode_schema::{Artifact, Current, DeployEntry, HistoryEvent, Layout, decode};
use zookeeper_client as zk;

/// A one-file release of `service` at `version` running the shell `body`, where
/// `{demo}` is the demo service binary and `{version}` the version.
pub fn artifact(fleet: &Fleet, service: &str, version: &str, body: &str) -> Artifact {
    let dir = fleet.dir().join("releases").join(service).join(version);
    std::fs::create_dir_all(&dir).unwrap();
    let demo = crate::bin::path("baton-demo-service");
    let body = body.replace("{demo}", &demo.display().to_string()).replace("{version}", version);
    let path = dir.join("demo");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    file_artifact(&path)
}

/// A release of `service` at `version` that starts and passes its health check.
pub fn good(fleet: &Fleet, service: &str, version: &str) -> Artifact {
    artifact(fleet, service, version, "exec {demo} --version {version}")
}

/// Stages `versions` (service, version: good releases, every host at once), starts
/// every sidecar (configs already written) and waits until every service runs its
/// version everywhere and its rollout completed.
pub async fn start_at(fleet: &mut Fleet, client: &zk::Client, versions: &[(&str, &str)]) {
    let n = fleet.hosts.len();
    for (svc, v) in versions {
        let a = good(fleet, svc, v);
        stage(client, &fleet.layout(), svc, v, &a, policy(0, n as u32, Duration::ZERO)).await;
    }
    fleet.start_all();
    for (svc, v) in versions {
        wait_service_versions(fleet, client, svc, n, v, PATIENCE).await;
        wait_service_done(fleet, client, svc, PATIENCE).await;
    }
}

/// Host `i`'s sidecar log from byte `from` on, without terminal colour codes.
pub fn log_since(fleet: &Fleet, i: usize, from: usize) -> String {
    let log = crate::chaos::plain_log(fleet, i);
    log.get(from..).unwrap_or("").to_string()
}

/// The api-then-web fleet most scenarios start from: every host runs `api` at
/// `a1` and `web` at `w1`; then api rolls to `a2` (one host at a time, quorum 1)
/// and completes. `web_v1` is web's first release (`None`: a good one).
pub async fn api_done_web_at_w1(fleet: &mut Fleet, client: &zk::Client, web_v1: Option<Artifact>) {
    let n = fleet.hosts.len();
    let l = fleet.layout();
    let a1 = good(fleet, "api", "a1");
    stage(client, &l, "api", "a1", &a1, policy(0, n as u32, Duration::ZERO)).await;
    let w1 = web_v1.unwrap_or_else(|| good(fleet, "web", "w1"));
    stage(client, &l, "web", "w1", &w1, policy(0, n as u32, Duration::ZERO)).await;
    fleet.start_all();
    for (svc, v) in [("api", "a1"), ("web", "w1")] {
        wait_service_versions(fleet, client, svc, n, v, PATIENCE).await;
        wait_service_done(fleet, client, svc, PATIENCE).await;
    }
    let a2 = good(fleet, "api", "a2");
    stage(client, &l, "api", "a2", &a2, policy(1, 1, Duration::from_millis(200))).await;
    wait_service_versions(fleet, client, "api", n, "a2", PATIENCE).await;
    wait_service_done(fleet, client, "api", PATIENCE).await;
}

/// Which process runs a service on a host, by ZooKeeper and by its pid file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The version registered in `current/<svc>/<host>` (`None`: not registered).
    pub version: Option<String>,
    /// The `pid` field of that registration.
    pub registered_pid: Option<u32>,
    /// The pid in `<data_dir>/<svc>/service.pid`.
    pub pidfile_pid: Option<u32>,
    /// The version in the pid file.
    pub pidfile_version: Option<String>,
    /// The process start time in the pid file (tells a reused pid apart).
    pub start_time: Option<u64>,
}

/// The pid file of `service` under `data_dir`: (pid, version, start time).
pub fn pidfile(data_dir: &Path, service: &str) -> Option<(u32, String, Option<u64>)> {
    let text = std::fs::read_to_string(data_dir.join(service).join("service.pid")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let pid = v.get("pid")?.as_u64()? as u32;
    let version = v.get("version")?.as_str()?.to_string();
    Some((pid, version, v.get("start_time").and_then(|t| t.as_u64())))
}

/// Host `i`'s identity for `service` now.
pub async fn identity(fleet: &Fleet, client: &zk::Client, i: usize, service: &str) -> Identity {
    let h = &fleet.hosts[i];
    let path = fleet.layout().current_host(service, &h.id);
    let cur = match client.get_data(&path).await {
        Ok((data, _)) => decode::<Current>(&path, &data).ok(),
        Err(_) => None,
    };
    let file = pidfile(&h.data_dir, service);
    Identity {
        version: cur.as_ref().map(|c| c.version.clone()),
        registered_pid: cur.and_then(|c| c.pid),
        pidfile_pid: file.as_ref().map(|f| f.0),
        pidfile_version: file.as_ref().map(|f| f.1.clone()),
        start_time: file.and_then(|f| f.2),
    }
}

/// Every host's identity for `service`, in host order.
pub async fn identities(fleet: &Fleet, client: &zk::Client, service: &str) -> Vec<Identity> {
    let mut out = Vec::new();
    for i in 0..fleet.hosts.len() {
        out.push(identity(fleet, client, i, service).await);
    }
    out
}

/// Drain and undrain hooks that append `drain <host>` / `undrain <host>` to `log`;
/// the drain hook waits for `gate` to exist when one is given.
pub fn hooks(host: &str, log: &Path, gate: Option<&Path>) -> String {
    let wait = gate.map(|g| format!("; while [ ! -e {} ]; do sleep 0.05; done", g.display())).unwrap_or_default();
    format!(
        "hooks = {{ drain = [\"sh\", \"-c\", \"echo drain {host} >> {log}{wait}\"], \
         undrain = [\"sh\", \"-c\", \"echo undrain {host} >> {log}\"] }}",
        log = log.display()
    )
}

/// The lines of a hook log.
pub fn hook_calls(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log).unwrap_or_default().lines().map(str::to_string).collect()
}

/// The history events of `service` written in `history`: (txn, event).
pub fn events<'a>(history: &'a [Txn], l: &Layout, service: &str) -> Vec<(&'a Txn, HistoryEvent)> {
    let prefix = format!("{}/", l.history(service));
    let mut out = Vec::new();
    for t in history {
        for op in &t.ops {
            if let Op::Create { path, data, .. } = op {
                if path.starts_with(&prefix) {
                    if let Ok(ev) = decode::<HistoryEvent>(path, data) {
                        out.push((t, ev));
                    }
                }
            }
        }
    }
    out
}

/// The fences of `host` on entries of `service` in `history`.
pub fn fences<'a>(history: &'a [Txn], l: &Layout, service: &str, host: &str) -> Vec<&'a Txn> {
    let mut state = State::default();
    let mut out = Vec::new();
    for t in history {
        let fenced = t.multi
            && t.ops.iter().any(|op| {
                let m = marker_of(l, op.path()).filter(|(_, h)| h == host && matches!(op, Op::Create { .. }));
                m.and_then(|(e, _)| state.get::<DeployEntry>(&l.deploy_entry(&e))).is_some_and(|e| e.service == service)
            });
        if fenced {
            out.push(t);
        }
        t.ops.iter().for_each(|op| state.apply(op));
    }
    out
}

/// The highest `failures` any version of deploy entries of `service` ever had.
pub fn max_failures(history: &[Txn], service: &str) -> u32 {
    let mut max = 0;
    for t in history {
        for op in &t.ops {
            if let Op::Create { path, data, .. } | Op::SetData { path, data } = op {
                if path.contains("/deploy/deploy-") && !path.contains("/upgrading") {
                    if let Ok(e) = decode::<DeployEntry>(path, data) {
                        if e.service == service {
                            max = max.max(e.failures);
                        }
                    }
                }
            }
        }
    }
    max
}
