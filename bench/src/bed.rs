//! The test bed of the rollout benchmarks: a real ZooKeeper, a client of the
//! bench's own (its session is left out of every count), a TCP health endpoint
//! shared by every host, and tiny one-file releases.
//!
//! The service is as cheap as a service can be, so the figures are baton's own
//! overhead: start/stop mode with `start = ["true"]` and `stop = ["true"]`, and a
//! TCP health check against a listener of the bench that accepts and closes. A step
//! is then two `true` processes and one loopback connect. With a step length
//! (`--step-ms`), the start command is `sleep` for that long instead: the host's
//! step really takes that much wall time.

use crate::zkserver::ZkServer;
use anyhow::Context;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use znode_schema::{Artifact, DeployName, Layout, Policy, Quorum, decode, seq::sorted_deploys};
use zookeeper_client as zk;

/// The service every benchmark host runs.
pub const SERVICE: &str = "svc";

/// Session timeout of benchmark hosts: long enough that a loaded 2-core machine
/// never expires a session, which would make the figures about recovery instead.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(20);

/// A running test bed.
#[derive(Debug)]
pub struct Bed {
    /// The ZooKeeper server.
    pub zk: ZkServer,
    /// Its client port.
    pub port: u16,
    /// The bench's own client.
    pub client: zk::Client,
    /// Where the bench's files go.
    pub dir: tempfile::TempDir,
    /// The shared health endpoint.
    pub health: SocketAddr,
}

impl Bed {
    /// Starts ZooKeeper and the health endpoint (blocking: call outside async code
    /// or in `spawn_blocking`).
    pub fn start() -> anyhow::Result<(ZkServer, SocketAddr)> {
        let zk = ZkServer::start()?;
        let listener = TcpListener::bind("127.0.0.1:0").context("bind the health endpoint")?;
        let health = listener.local_addr()?;
        std::thread::Builder::new().name("health".into()).spawn(move || {
            for conn in listener.incoming() {
                drop(conn);
            }
        })?;
        Ok((zk, health))
    }

    /// Connects the bench's client to a started bed.
    pub async fn connect(zk: ZkServer, health: SocketAddr) -> anyhow::Result<Bed> {
        let port = zk.port;
        let client = zk::Client::connector()
            .with_session_timeout(Duration::from_secs(20))
            .connect(&zk.connect_string())
            .await
            .context("connect the bench's client")?;
        let mut dir = tempfile::Builder::new().prefix("baton-bench-").tempdir()?;
        // BATON_BENCH_KEEP=1 keeps the bench's files (the sidecars' logs) for a look.
        if std::env::var_os("BATON_BENCH_KEEP").is_some() {
            dir.disable_cleanup(true);
            eprintln!("keeping {}", dir.path().display());
        }
        Ok(Bed { zk, port, client, dir, health })
    }

    /// The bench's own session id (left out of the counts).
    pub fn own_sid(&self) -> i64 {
        self.client.session_id().0
    }

    /// The sidecar config of host `id` with data dir `data_dir`, under `root`.
    pub fn config(&self, root: &str, id: &str, data_dir: &Path) -> String {
        self.config_via(&self.zk.connect_string(), root, id, data_dir)
    }

    /// [`Bed::config`] connecting to ZooKeeper through `connect` (a proxy).
    pub fn config_via(&self, connect: &str, root: &str, id: &str, data_dir: &Path) -> String {
        self.host_config(connect, root, id, data_dir, &[SERVICE], Duration::ZERO)
    }

    /// The sidecar config of host `id` running each of `services` (one
    /// `[[service]]` table each), whose start command takes `step` of wall time
    /// (`sleep`; `true` for zero), so a step lasts at least `step`.
    pub fn host_config(
        &self,
        connect: &str,
        root: &str,
        id: &str,
        data_dir: &Path,
        services: &[&str],
        step: Duration,
    ) -> String {
        let start = match step.is_zero() {
            true => "\"true\"".to_string(),
            false => format!("\"sleep\", \"{:.3}\"", step.as_secs_f64()),
        };
        let mut text = format!(
            "[zookeeper]\nconnect = \"{connect}\"\nroot = \"{root}\"\nsession_timeout = \"{st}s\"\n\n\
             [host]\nid = \"{id}\"\ndata_dir = \"{data}\"\n\n{limits}\n",
            st = SESSION_TIMEOUT.as_secs(),
            data = data_dir.display(),
            limits = baton_tests::fleet::default_host_config(),
        );
        for svc in services {
            text.push_str(&format!(
                "[[service]]\nname = \"{svc}\"\nstart = [{start}]\nstop = [\"true\"]\nstop_timeout = \"5s\"\n\
                 health = {{ tcp = \"{health}\", interval = \"10s\", timeout = \"2s\" }}\n\n",
                health = self.health,
            ));
        }
        text
    }

    /// A one-file release `version` (a few bytes, `file://` URL).
    pub fn artifact(&self, version: &str) -> anyhow::Result<Artifact> {
        let dir: PathBuf = self.dir.path().join("artifacts").join(version);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("svc");
        std::fs::write(&path, format!("#!/bin/sh\necho {version}\n"))?;
        Ok(baton_tests::fleet::file_artifact(&path))
    }

    /// Stages `version` under `root` for `hosts` hosts: quorum `hosts - 1`, so only
    /// one host may be down at a time, and `max_parallel` 1.
    pub async fn stage(&self, root: &str, version: &str, hosts: usize) -> anyhow::Result<DeployName> {
        self.stage_service(root, SERVICE, version, hosts, 1).await
    }

    /// Stages `version` of `service` under `root` for `hosts` hosts with
    /// `max_parallel` `k` and quorum `hosts - k`: `k` hosts may be down at once.
    pub async fn stage_service(
        &self,
        root: &str,
        service: &str,
        version: &str,
        hosts: usize,
        k: u32,
    ) -> anyhow::Result<DeployName> {
        let layout = Layout::new(root)?;
        let quorum = Quorum::Count(hosts.saturating_sub(k as usize) as u32);
        let policy = Policy { quorum, max_parallel: k, ..Policy::default() };
        let artifact = self.artifact(version)?;
        Ok(baton_tests::fleet::stage(&self.client, &layout, service, version, &artifact, policy).await)
    }

    /// Waits, with watches on `deploy/` only, until no deploy entry remains under
    /// `root` (the rollout completed), or `patience` passes.
    pub async fn wait_completed(&self, root: &str, patience: Duration) -> anyhow::Result<()> {
        let layout = Layout::new(root)?;
        let deadline = Instant::now() + patience;
        loop {
            let (children, w) = self.client.list_and_watch_children(&layout.deploy_dir()).await?;
            if sorted_deploys(&children).is_empty() {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, w.changed()).await.is_err() {
                anyhow::bail!("the rollout under {root} did not complete within {patience:?}");
            }
        }
    }

    /// The versions of the online hosts under `root`, by host (reads every host).
    pub async fn online(&self, root: &str) -> anyhow::Result<Vec<(String, String)>> {
        self.online_of(root, SERVICE).await
    }

    /// The versions of the online hosts of `service` under `root`, by host.
    pub async fn online_of(&self, root: &str, service: &str) -> anyhow::Result<Vec<(String, String)>> {
        let layout = Layout::new(root)?;
        let mut out = Vec::new();
        for h in self.client.list_children(&layout.current_service(service)).await.unwrap_or_default() {
            if let Ok((data, _)) = self.client.get_data(&layout.current_host(service, &h)).await {
                let cur: znode_schema::Current = decode("", &data)?;
                out.push((h, cur.version));
            }
        }
        Ok(out)
    }

    /// Waits until `n` hosts are online at `version` under `root` (polling, for set-up).
    pub async fn wait_online(&self, root: &str, version: &str, n: usize, patience: Duration) -> anyhow::Result<()> {
        self.wait_online_of(root, SERVICE, version, n, patience).await
    }

    /// Waits until `n` hosts of `service` are online at `version` under `root`.
    pub async fn wait_online_of(
        &self,
        root: &str,
        service: &str,
        version: &str,
        n: usize,
        patience: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + patience;
        loop {
            let online = self.online_of(root, service).await?;
            let at = online.iter().filter(|(_, v)| v == version).count();
            if at == n {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!("{at} of {n} hosts online at {version} under {root} after {patience:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
