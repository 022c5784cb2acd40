//! A fleet of real sidecar processes on one machine, for integration tests.
//!
//! Each host has its own data dir, config and service port; the service is the
//! workspace's demo service, wrapped per version in a one-file artifact (a shell
//! script) served by `file://` URL or by an HTTP artifact server. Sidecars are real
//! processes tied to the test binary (see [`crate::process`]).

use crate::process::{signal_group, spawn_tied};
use nix::sys::signal::Signal;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use znode_schema::*;
use zookeeper_client as zk;

/// How a demo release behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Starts and passes its health check.
    Good,
    /// Starts but its health check always fails.
    HealthFail,
    /// Exits at once.
    Crash,
}

/// One host of the fleet.
#[derive(Debug)]
pub struct Host {
    /// Its host id.
    pub id: String,
    /// Its first service's HTTP port.
    pub port: u16,
    /// Each service's HTTP port, in the fleet's service order (`ports[0].1 == port`).
    pub ports: Vec<(String, u16)>,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// Its config file.
    pub config: PathBuf,
    /// Its sidecar's log file.
    pub log: PathBuf,
    /// The port its peer server may listen on (`{peer_port}` in the host config).
    pub peer_port: u16,
    /// The command prefix its sidecar is started with (e.g. `ip netns exec NS`, see
    /// [`crate::netns`]); empty by default.
    pub exec_prefix: Vec<String>,
    child: Option<Child>,
}

/// A fleet of sidecars sharing one ZooKeeper root.
#[derive(Debug)]
pub struct Fleet {
    /// The ZooKeeper connect string.
    pub zk: String,
    /// The root path of this test.
    pub root: String,
    /// The (first) service name.
    pub service: String,
    /// Every service each host runs, in config order (`services[0] == service`).
    pub services: Vec<String>,
    /// The hosts.
    pub hosts: Vec<Host>,
    /// Session timeout written in the configs.
    pub session_timeout: Duration,
    /// Host-level tables (`[trust]`, `[limits]`…) written in every config after `[host]`;
    /// `{peer_port}` is replaced by the host's [`Host::peer_port`].
    pub host_config: String,
    /// More `[zookeeper]` lines of every host's config (`tls = {…}`, `auth = {…}`),
    /// `{host}` replaced by the host id; empty by default.
    pub zk_extra: String,
    dir: tempfile::TempDir,
}

impl Fleet {
    /// A fleet of `n` hosts (`<svc>-1`…) of service `svc`, not started.
    pub fn new(zk: &str, root: &str, svc: &str, n: usize) -> Self {
        let mut fleet = Self::empty(zk, root, &[svc]);
        for i in 1..=n {
            fleet.add_host(&format!("{svc}-{i}"));
        }
        fleet
    }

    /// A fleet of `n` hosts (`host-1`…) each running every one of `services` (one
    /// sidecar config with a `[[service]]` table per service, each with its own
    /// port), not started.
    pub fn multi(zk: &str, root: &str, services: &[&str], n: usize) -> Self {
        assert!(!services.is_empty(), "a fleet runs at least one service");
        let mut fleet = Self::empty(zk, root, services);
        for i in 1..=n {
            fleet.add_host(&format!("host-{i}"));
        }
        fleet
    }

    fn empty(zk: &str, root: &str, services: &[&str]) -> Self {
        let dir = tempfile::Builder::new().prefix("baton-fleet-").tempdir().unwrap();
        Fleet {
            zk: zk.into(),
            root: root.into(),
            service: services[0].into(),
            services: services.iter().map(|s| s.to_string()).collect(),
            hosts: Vec::new(),
            session_timeout: Duration::from_secs(4),
            host_config: default_host_config(),
            zk_extra: String::new(),
            dir,
        }
    }

    /// This fleet with `text` (host-level tables such as `[trust]`) added to every
    /// host's config; rewrites the configs written so far.
    pub fn with_host_config(mut self, text: &str) -> Self {
        self.host_config = format!("{}\n{text}", self.host_config);
        for h in &self.hosts {
            self.write_config(h, "");
        }
        self
    }

    /// This fleet with `text` instead of the default host-level tables (which allow
    /// `file://` artifacts under the temporary directory).
    pub fn replacing_host_config(mut self, text: &str) -> Self {
        self.host_config = String::new();
        self.with_host_config(text)
    }

    /// Adds a host (not started) and returns its index.
    pub fn add_host(&mut self, id: &str) -> usize {
        let base = self.dir.path().join(id);
        let data_dir = base.join("data");
        std::fs::create_dir_all(&data_dir).unwrap();
        let ports: Vec<(String, u16)> = self.services.iter().map(|s| (s.clone(), crate::zk::free_port())).collect();
        let port = ports[0].1;
        let config = base.join("sidecar.toml");
        let log = base.join("sidecar.log");
        let peer_port = crate::zk::free_port();
        let host =
            Host { id: id.into(), port, ports, data_dir, config, log, peer_port, exec_prefix: vec![], child: None };
        self.write_config(&host, "");
        self.hosts.push(host);
        self.hosts.len() - 1
    }

    /// Writes host `h`'s config, with `extra` appended to its first `[[service]]` table.
    pub fn write_config(&self, h: &Host, extra: &str) {
        let first = self.service.clone();
        self.write_config_services(h, &[(first.as_str(), extra)]);
    }

    /// Writes host `h`'s config with a `[[service]]` table per service of the fleet,
    /// `extras` (service, text) appended to the tables they name (hooks, `env`...).
    /// An `env = {…}` in an extra replaces the default one (`PORT` is added to it).
    pub fn write_config_services(&self, h: &Host, extras: &[(&str, &str)]) {
        let mut cfg = format!(
            "[zookeeper]\nconnect = \"{zk}\"\nroot = \"{root}\"\nsession_timeout = \"{st}ms\"\n{extra}\n\
             [host]\nid = \"{id}\"\ndata_dir = \"{data}\"\n",
            extra = self.zk_extra.replace("{host}", &h.id),
            zk = self.zk,
            root = self.root,
            st = self.session_timeout.as_millis(),
            id = h.id,
            data = h.data_dir.display(),
        );
        if !self.host_config.is_empty() {
            let host_config = self.host_config.replace("{peer_port}", &h.peer_port.to_string());
            cfg.push_str(&format!("\n{}\n", host_config.trim_end()));
        }
        for (svc, port) in &h.ports {
            let extra: String = extras.iter().filter(|(s, _)| s == svc).map(|(_, e)| format!("{e}\n")).collect();
            cfg.push_str(&service_table(svc, *port, &extra));
        }
        std::fs::write(&h.config, cfg).unwrap();
    }

    /// Sets [`Fleet::zk_extra`] (credentials) and rewrites every host's config with it.
    pub fn set_zk_extra(&mut self, extra: &str) {
        self.zk_extra = extra.into();
        for h in &self.hosts {
            self.write_config(h, "");
        }
    }

    /// Host `i`'s port for `service`.
    pub fn port_of(&self, i: usize, service: &str) -> u16 {
        let h = &self.hosts[i];
        h.ports
            .iter()
            .find(|(s, _)| s == service)
            .map(|(_, p)| *p)
            .unwrap_or_else(|| panic!("{} runs no {service}", h.id))
    }

    /// Starts host `i`'s sidecar.
    pub fn start(&mut self, i: usize) {
        let h = &mut self.hosts[i];
        assert!(h.child.is_none(), "{} already started", h.id);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&h.log).unwrap();
        let sidecar = crate::bin::path("sidecar");
        let mut cmd = match h.exec_prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(sidecar);
                c
            }
            None => Command::new(sidecar),
        };
        cmd.arg("--config")
            .arg(&h.config)
            .env("RUST_LOG", std::env::var("BATON_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        h.child = Some(spawn_tied(cmd).expect("start sidecar"));
    }

    /// Starts every host.
    pub fn start_all(&mut self) {
        for i in 0..self.hosts.len() {
            self.start(i);
        }
    }

    /// SIGKILLs host `i`'s sidecar (its service keeps running in its own group): the
    /// process this fleet started and, after the sidecar upgraded itself, the image
    /// holding the data dir's lock now.
    pub fn kill(&mut self, i: usize) {
        let holder = self.sidecar_pid(i);
        if let Some(mut c) = self.hosts[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(pid) = holder.filter(|&p| self.is_sidecar_of(i, p)) {
            kill_pid(pid);
        }
    }

    /// The pid of the sidecar image holding host `i`'s data-dir lock (written into
    /// `<data_dir>/sidecar.lock`), when it is alive.
    pub fn sidecar_pid(&self, i: usize) -> Option<u32> {
        let text = std::fs::read_to_string(self.hosts[i].data_dir.join("sidecar.lock")).ok()?;
        let pid: u32 = text.trim().parse().ok()?;
        self.is_sidecar_of(i, pid).then_some(pid)
    }

    /// Whether `pid` is a live (not zombie) sidecar process of host `i` (its command
    /// line names the host's config).
    pub fn is_sidecar_of(&self, i: usize, pid: u32) -> bool {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        let config = self.hosts[i].config.display().to_string();
        !zombie && cmdline.split(|b| *b == 0).any(|a| a == config.as_bytes())
    }

    /// The pid of the process this fleet started for host `i` (the first image).
    pub fn child_pid(&self, i: usize) -> Option<u32> {
        self.hosts[i].child.as_ref().map(Child::id)
    }

    /// Sends `sig` to host `i`'s sidecar only.
    pub fn signal(&self, i: usize, sig: Signal) {
        let c = self.hosts[i].child.as_ref().expect("running sidecar");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig).unwrap();
    }

    /// SIGTERMs host `i`'s sidecar and waits for it to exit; returns its exit code.
    pub fn stop(&mut self, i: usize) -> Option<i32> {
        let mut c = self.hosts[i].child.take()?;
        let _ = signal_group(&c, Signal::SIGTERM);
        let status =
            crate::eventually("sidecar to exit after SIGTERM", Duration::from_secs(30), || c.try_wait().ok().flatten());
        status.code()
    }

    /// Whether host `i`'s sidecar process has exited, with its code.
    pub fn exited(&mut self, i: usize) -> Option<Option<i32>> {
        let c = self.hosts[i].child.as_mut()?;
        c.try_wait().ok().flatten().map(|s| s.code())
    }

    /// Host `i`'s sidecar log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.hosts[i].log).unwrap_or_default()
    }

    /// Every host's log, for failure messages.
    pub fn logs(&self) -> String {
        (0..self.hosts.len()).map(|i| format!("==== {} ====\n{}", self.hosts[i].id, self.log(i))).collect()
    }

    /// Writes a one-file demo release for `version` and returns its artifact (file:// URL).
    pub fn artifact(&self, version: &str, behaviour: Behaviour) -> Artifact {
        let dir = self.dir.path().join("artifacts").join(version);
        std::fs::create_dir_all(&dir).unwrap();
        let demo = crate::bin::path("baton-demo-service");
        let body = match behaviour {
            Behaviour::Good => format!("exec {} --version {version}\n", demo.display()),
            Behaviour::HealthFail => format!("exec {} --version {version} --health-fail\n", demo.display()),
            Behaviour::Crash => "echo crashing >&2; exit 3\n".to_string(),
        };
        let path = dir.join("demo");
        let script = format!("#!/bin/sh\n{body}");
        std::fs::write(&path, &script).unwrap();
        file_artifact(&path)
    }

    /// The directory for test files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The layout of this fleet's root.
    pub fn layout(&self) -> Layout {
        Layout::new(&self.root).unwrap()
    }

    /// Connects a test client.
    pub async fn client(&self) -> zk::Client {
        zk::Client::connector().with_session_timeout(Duration::from_secs(10)).connect(&self.zk).await.unwrap()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("sidecar logs of the failed test:\n{}", self.logs());
        }
        for i in 0..self.hosts.len() {
            self.kill(i);
        }
        // The services run in their own process groups, recorded by their sidecars.
        for h in &self.hosts {
            kill_services(&h.data_dir);
        }
    }
}

/// The host-level tables every test fleet gets: `file://` artifacts are allowed under
/// the temporary directory, where the harness writes them (the sidecar's default
/// refuses `file://`).
pub fn default_host_config() -> String {
    let tmp = std::env::temp_dir().canonicalize().unwrap_or_else(|_| std::env::temp_dir());
    format!("[limits]\nfile_dirs = [\"{}\"]\n", tmp.display())
}

/// One `[[service]]` table of the demo service on `port`; an `env = { … }` line in
/// `extra` is merged with `PORT`.
fn service_table(svc: &str, port: u16, extra: &str) -> String {
    let mut env = format!("PORT = \"{port}\"");
    let mut rest = String::new();
    for line in extra.lines() {
        match line.trim().strip_prefix("env = {").and_then(|l| l.trim_end().strip_suffix('}')) {
            Some(vars) if !vars.trim().is_empty() => env = format!("{env}, {}", vars.trim()),
            Some(_) => {}
            None => rest.push_str(&format!("{line}\n")),
        }
    }
    format!(
        "\n[[service]]\nname = \"{svc}\"\nrun = [\"./demo\"]\nstop_timeout = \"5s\"\nenv = {{ {env} }}\n\
         health = {{ http = \"http://127.0.0.1:{port}/health\", interval = \"100ms\", timeout = \"1s\" }}\n{rest}"
    )
}

/// SIGKILLs one process.
pub fn kill_pid(pid: u32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
}

/// Kills every service process group recorded under a data dir (`*/service.pid`).
pub fn kill_services(data_dir: &Path) {
    let Ok(dirs) = std::fs::read_dir(data_dir) else { return };
    for d in dirs.flatten() {
        let Ok(text) = std::fs::read_to_string(d.path().join("service.pid")) else { continue };
        for pid in text.split(|c: char| !c.is_ascii_digit()).filter_map(|t| t.parse::<i32>().ok()).take(2) {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// The artifact of a local file (file:// URL, its sha256 and size).
pub fn file_artifact(path: &Path) -> Artifact {
    let bytes = std::fs::read(path).unwrap();
    Artifact {
        url: format!("file://{}", path.display()),
        sha256: hex::encode(Sha256::digest(&bytes)),
        size: bytes.len() as u64,
        format: ArtifactFormat::from_url(&path.display().to_string()),
        signature: None,
    }
}

/// The local path of a `file://` artifact (as `deployctl stage --file` takes it).
pub fn artifact_path(a: &Artifact) -> String {
    a.url.trim_start_matches("file://").to_string()
}

/// Host `host`'s registration of `service`, when it exists and decodes.
pub async fn registration(client: &zk::Client, fleet: &Fleet, service: &str, host: &str) -> Option<Current> {
    let path = fleet.layout().current_host(service, host);
    let (data, _) = client.get_data(&path).await.ok()?;
    decode(&path, &data).ok()
}

/// Waits (at most 60 s) until every host's registration of `service` satisfies `f`,
/// and returns them in host order; panics naming `what`, with the fleet's logs.
pub async fn wait_registrations(
    client: &zk::Client,
    fleet: &Fleet,
    service: &str,
    what: &str,
    f: impl Fn(&Current) -> bool,
) -> Vec<Current> {
    let r = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let mut all = Vec::new();
            for h in &fleet.hosts {
                match registration(client, fleet, service, &h.id).await {
                    Some(c) if f(&c) => all.push(c),
                    _ => break,
                }
            }
            if all.len() == fleet.hosts.len() {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    r.unwrap_or_else(|_| panic!("timed out waiting for {what}\n{}", fleet.logs()))
}

pub use crate::staging::{deploys, online, set_state, stage};
