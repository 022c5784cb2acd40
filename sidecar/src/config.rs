//! The sidecar's TOML config: which ZooKeeper, which host, which services.
//!
//! [`Config::parse`] reads the file into loosely typed structs that refuse unknown keys
//! (`raw`), then `validate` converts them into the types below, collecting *every*
//! problem with the key it concerns (`service[1].health: exactly one of http, tcp,
//! exec is required`). Services are numbered from 0 in the order of the file.
//! `docs/config.md` is the reference of every key and its default.

mod raw;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use znode_schema::HumanDuration;

/// A validated sidecar config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[zookeeper]`.
    pub zookeeper: ZkConfig,
    /// `[host]`.
    pub host: HostConfig,
    /// `[trust]`.
    pub trust: TrustConfig,
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// `[download]`.
    pub download: DownloadConfig,
    /// `[metrics]`.
    pub metrics: MetricsConfig,
    /// `[peers]`: none when absent (peers off: every download is from the artifact URL).
    pub peers: Option<PeersConfig>,
    /// The `[[service]]` tables, in file order.
    pub services: Vec<ServiceConfig>,
    /// Whether the sidecar runs itself as the built-in service `baton-sidecar`
    /// (always, from a config file; in-process benchmark cores turn it off).
    pub upgrades_itself: bool,
}

/// Where ZooKeeper is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkConfig {
    /// The connect string, `host:port[,host:port...][/chroot]`.
    pub connect: String,
    /// The root of baton's znodes (default `/dc`).
    pub root: String,
    /// The session timeout asked for (default 10s).
    pub session_timeout: HumanDuration,
    /// `tls = { ca, cert, key }`: connect over TLS (none: plaintext).
    pub tls: Option<TlsConfig>,
    /// `auth = { digest_file }`: log in with a digest identity (none: no login).
    pub auth: Option<AuthConfig>,
}

/// TLS to ZooKeeper. The files are read again for every new session, so replacing
/// them rotates the credentials without a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The CA certificates (PEM) that signed the servers' certificates.
    pub ca: PathBuf,
    /// This client's certificate (PEM), for `ssl.clientAuth` and x509 identities.
    pub cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub key: Option<PathBuf>,
}

/// A digest login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// A file holding `user:password` (one line).
    pub digest_file: PathBuf,
}

/// Whom releases must come from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrustConfig {
    /// minisign public keys (base64); when not empty, only releases signed by one of
    /// them for their service and version are installed.
    pub minisign_keys: Vec<String>,
}

/// What this host accepts to download and unpack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// What may be fetched from where.
    pub download: crate::host::download::DownloadLimits,
    /// What one artifact may unpack into.
    pub unpack: crate::host::unpack::UnpackLimits,
}

/// How downloads go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadConfig {
    /// The longest a whole download (every attempt) may take.
    pub deadline: Duration,
    /// The slowest transfer accepted, bytes per second, averaged over 30 s.
    pub min_rate: u64,
    /// A PEM bundle of CA certificates trusted for https downloads, beside the
    /// system's trust store and the bundled public roots.
    pub ca: Option<PathBuf>,
}

/// Prometheus metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetricsConfig {
    /// Where `GET /metrics` is served (none: not served).
    pub listen: Option<std::net::SocketAddr>,
}

/// Peer-to-peer distribution (`[peers]`, see docs/download.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeersConfig {
    /// Where this host's peer server listens (`IP:PORT`).
    pub listen: std::net::SocketAddr,
    /// The address other hosts reach it at (`HOST:PORT`; default: `listen`).
    pub advertise: String,
    /// How many uploads this host serves at once; more are answered 503.
    pub max_uploads: u32,
    /// How many hosts of the fleet download one release from its URL at once.
    pub origin_fetches: u32,
    /// How long a peer may send nothing before the transfer moves to another source.
    pub stall: Duration,
    /// The most bytes per second one upload sends (none: no limit).
    pub max_upload_rate: Option<u64>,
}

/// This machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// The host id (default: the hostname), a valid host name.
    pub id: String,
    /// Where releases, pid files and logs live (default `/var/lib/baton`).
    pub data_dir: PathBuf,
    /// How many releases to keep per service (default 3, at least 2).
    pub keep_releases: usize,
}

/// One service the sidecar runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// The service name.
    pub name: String,
    /// How it is run.
    pub mode: RunMode,
    /// Grace between SIGTERM and SIGKILL; also the time allowed to a `stop` command (default 10s).
    pub stop_timeout: HumanDuration,
    /// Its health check.
    pub health: HealthConfig,
    /// Its hooks: prepare, drain, undrain, verify.
    pub hooks: HooksConfig,
    /// How a step puts a new release to work: restart (the default) or reload.
    pub apply: Apply,
    /// Extra environment for run/start/stop, hooks and exec health checks.
    pub env: BTreeMap<String, String>,
    /// Where the output of run/start/stop goes.
    pub output: Output,
    /// What a sidecar shutdown does to the service.
    pub on_shutdown: OnShutdown,
    /// The user its run/start/stop commands run as (the sidecar's own when `None`);
    /// hooks and health checks stay with the sidecar's user.
    pub user: Option<crate::host::command::RunAs>,
}

/// How a service is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunMode {
    /// The sidecar runs this command and keeps it up.
    Run(Vec<String>),
    /// The service is managed elsewhere: these commands start and stop it.
    StartStop {
        /// Starts the service; must exit 0.
        start: Vec<String>,
        /// Stops the service.
        stop: Vec<String>,
    },
}

/// What a health check probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    /// An HTTP GET that must answer 2xx.
    Http(String),
    /// A TCP address that must accept a connection.
    Tcp(String),
    /// A command that must exit 0.
    Exec(Vec<String>),
}

/// A health check and its timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// What is probed.
    pub check: HealthCheck,
    /// Time between two checks (default 500ms).
    pub interval: Duration,
    /// Time allowed to one check (default 2s).
    pub timeout: Duration,
}

/// Commands run around an upgrade step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HooksConfig {
    /// Run before drain, in the new release's directory (validate it); a failure
    /// fails the step before the service is touched.
    pub prepare: Option<Hook>,
    /// Run before the service is stopped for an upgrade.
    pub drain: Option<Hook>,
    /// Run once the new release is healthy and baked.
    pub undrain: Option<Hook>,
    /// Run after undrain (check the host through the load balancer); a failure fails
    /// the step: drain, roll back, undrain.
    pub verify: Option<Hook>,
}

/// One hook: its command and the time it is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// The command.
    pub command: Vec<String>,
    /// Time allowed (the hook's own `<name>_timeout`, else `timeout`, default 30s).
    pub timeout: Duration,
}

/// How a step puts a new release to work.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Apply {
    /// Stop the service, switch the active release, start it (the default).
    #[default]
    Restart,
    /// Switch the active release and tell the running service to pick it up; the
    /// process keeps running (same pid).
    Reload(Reload),
}

/// How a reload is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// Run this command in the new release's directory (`reload = [...]`).
    Command(Vec<String>),
    /// Send this signal to the service's process (`reload_signal = "HUP"`, run mode).
    Signal(nix::sys::signal::Signal),
}

/// Where a service's output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    /// `<data_dir>/<service>/service.log`, rotated by size.
    #[default]
    File,
    /// The sidecar's own stdout and stderr.
    Inherit,
}

/// What the sidecar does to a service when the sidecar itself stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnShutdown {
    /// Leave it running; a restarted sidecar adopts it.
    #[default]
    Keep,
    /// Stop it.
    Stop,
}

/// One thing wrong with a config, and the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key, such as `service[1].health`; empty for the file as a whole.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// The line of the file the key is on, when it is in the file.
    pub line: Option<usize>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)?;
        } else {
            write!(f, "{}: {}", self.key, self.message)?;
        }
        match self.line {
            Some(line) => write!(f, " (line {line})"),
            None => Ok(()),
        }
    }
}

/// A config that could not be read or is invalid: every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config {origin}: {}", list(.problems))]
pub struct ConfigError {
    /// Where the config came from (usually its path).
    pub origin: String,
    /// Everything wrong with it, in file order.
    pub problems: Vec<Problem>,
}

fn list(problems: &[Problem]) -> String {
    match problems {
        [one] => one.to_string(),
        many => {
            let lines: Vec<String> = many.iter().map(|p| format!("\n  {p}")).collect();
            format!("{} problems:{}", many.len(), lines.concat())
        }
    }
}

impl Config {
    /// Reads, parses and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, &origin),
            Err(err) => {
                let message = format!("failed to read the file: {err}");
                let problem = Problem { key: String::new(), message, line: None };
                Err(ConfigError { origin, problems: vec![problem] })
            }
        }
    }

    /// Parses and validates config `text`; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        validate::parse(text).map_err(|problems| ConfigError { origin: origin.into(), problems })
    }
}

impl ServiceConfig {
    /// The built-in service `baton-sidecar`: the sidecar itself. Only its name and
    /// directory are used; it has no command, health check or hooks of its own (its
    /// supervisor is [`crate::host::supervisor::Supervisor::of_self`]).
    pub fn sidecar() -> ServiceConfig {
        ServiceConfig {
            name: znode_schema::SIDECAR_SERVICE.into(),
            mode: RunMode::Run(Vec::new()),
            stop_timeout: HumanDuration(Duration::from_secs(10)),
            health: HealthConfig {
                check: HealthCheck::Exec(Vec::new()),
                interval: Duration::from_millis(500),
                timeout: Duration::from_secs(2),
            },
            hooks: HooksConfig { prepare: None, drain: None, undrain: None, verify: None },
            apply: Apply::Restart,
            env: BTreeMap::new(),
            output: Output::File,
            on_shutdown: OnShutdown::Keep,
            user: None,
        }
    }

    /// The service's own directory: `<data_dir>/<name>`.
    pub fn dir(&self, data_dir: &Path) -> PathBuf {
        data_dir.join(&self.name)
    }

    /// The environment of the service's commands for `version` in `release_dir`:
    /// `env` plus `BATON_SERVICE`, `BATON_VERSION` and `BATON_RELEASE_DIR`.
    pub fn command_env(&self, version: &str, release_dir: &Path) -> BTreeMap<String, String> {
        let mut env = self.env.clone();
        env.insert("BATON_SERVICE".into(), self.name.clone());
        env.insert("BATON_VERSION".into(), version.into());
        env.insert("BATON_RELEASE_DIR".into(), release_dir.display().to_string());
        env
    }
}

/// Reads a digest file: one line `user:password` (surrounding whitespace ignored).
/// The error names the file and never shows the password.
pub fn read_digest(path: &Path) -> Result<(String, String), String> {
    let text = std::fs::read_to_string(path).map_err(|err| format!("failed to read {}: {err}", path.display()))?;
    let line = text.trim();
    match line.split_once(':') {
        Some((user, password)) if !user.is_empty() && !password.is_empty() && !line.contains('\n') => {
            Ok((user.to_string(), password.to_string()))
        }
        _ => Err(format!("{} must hold one line user:password", path.display())),
    }
}

/// `sidecar check --config FILE`: validates the file and summarises it.
pub fn check(path: &Path) -> Result<String, ConfigError> {
    let config = Config::load(path)?;
    Ok(config.summary(&path.display().to_string()))
}

impl Config {
    /// A few human lines describing the config, for `sidecar check`.
    pub fn summary(&self, origin: &str) -> String {
        let (zk, host) = (&self.zookeeper, &self.host);
        let mut out = format!("config {origin} is valid\n");
        out += &format!("  zookeeper {} (root {}, session timeout {})\n", zk.connect, zk.root, zk.session_timeout);
        if let Some(tls) = &zk.tls {
            let cert =
                tls.cert.as_ref().map_or("no client certificate".into(), |c| format!("certificate {}", c.display()));
            out += &format!("  tls: ca {}, {cert}\n", tls.ca.display());
        }
        if let Some(auth) = &zk.auth {
            out += &format!("  auth: digest from {}\n", auth.digest_file.display());
        }
        out += &format!(
            "  host {} (data dir {}, keep {} releases)\n",
            host.id,
            host.data_dir.display(),
            host.keep_releases
        );
        if let Some(p) = &self.peers {
            out += &format!(
                "  peers: listen {} (advertised {}), {} uploads at once, {} origin fetches per release\n",
                p.listen, p.advertise, p.max_uploads, p.origin_fetches
            );
        }
        for s in &self.services {
            let mode = match &s.mode {
                RunMode::Run(cmd) => format!("run {}", cmd.join(" ")),
                RunMode::StartStop { start, stop } => format!("start {}, stop {}", start.join(" "), stop.join(" ")),
            };
            let check = match &s.health.check {
                HealthCheck::Http(url) => format!("http {url}"),
                HealthCheck::Tcp(addr) => format!("tcp {addr}"),
                HealthCheck::Exec(cmd) => format!("exec {}", cmd.join(" ")),
            };
            out += &format!("  service {}: {mode}; health {check} every {:?}\n", s.name, s.health.interval);
        }
        out
    }
}
