//! From the raw tables to a [`Config`], collecting every problem with its key.

use super::raw::{
    self, RawAuth, RawDownload, RawHealth, RawHooks, RawHost, RawLimits, RawMetrics, RawPeers, RawService, RawSize,
    RawTls, RawTrust, RawZk,
};
use super::*;
use serde::Deserialize;
use std::collections::BTreeSet;
use znode_schema::{Layout, validate_host, validate_service};

fn default_root() -> String {
    znode_schema::layout::DEFAULT_ROOT.into()
}
fn default_session_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/baton")
}
fn default_keep_releases() -> i64 {
    3
}
fn default_stop_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_interval() -> Duration {
    Duration::from_millis(500)
}
fn default_check_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_hook_timeout() -> Duration {
    Duration::from_secs(30)
}

/// The problems found so far.
#[derive(Debug, Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, key: impl Into<String>, message: impl fmt::Display) {
        self.0.push(Problem { key: key.into(), message: message.to_string(), line: None });
    }

    /// A table deserialized; each unknown key is a problem (the rest is still read and
    /// checked); `None` (and a problem) when the table cannot be read.
    fn section<T: for<'de> Deserialize<'de> + Default>(&mut self, key: &str, value: Option<toml::Value>) -> Option<T> {
        let Some(value) = value else { return Some(T::default()) };
        match raw::section(key, value) {
            Ok((v, unknown)) => {
                for (key, message) in unknown {
                    self.push(key, message);
                }
                Some(v)
            }
            Err((key, message)) => {
                self.push(key, message);
                None
            }
        }
    }

    /// A positive duration, `default` when absent.
    fn duration(&mut self, key: &str, text: Option<&str>, default: Duration) -> Option<Duration> {
        let Some(text) = text else { return Some(default) };
        match text.parse::<HumanDuration>() {
            Ok(d) if d.0.is_zero() => self.none(key, "must be greater than zero"),
            Ok(d) => Some(d.0),
            Err(err) => self.none(key, err),
        }
    }

    /// A command line: a non-empty array whose program is not empty.
    fn command(&mut self, key: &str, argv: Vec<String>) -> Option<Vec<String>> {
        match argv.first() {
            None => self.none(key, "must not be empty: give the program and its arguments"),
            Some(program) if program.trim().is_empty() => {
                self.none(&format!("{key}[0]"), "the program must not be empty")
            }
            Some(_) => Some(argv),
        }
    }

    fn none<T>(&mut self, key: &str, message: impl fmt::Display) -> Option<T> {
        self.push(key, message);
        None
    }
}

/// Parses and validates a whole config.
pub(super) fn parse(text: &str) -> Result<Config, Vec<Problem>> {
    let mut table: toml::Table = text.parse().map_err(|err| vec![syntax_problem(text, &err)])?;
    let mut p = Problems::default();
    let zk = p.section::<RawZk>("zookeeper", table.remove("zookeeper")).and_then(|raw| zookeeper(&mut p, raw));
    let host = p.section::<RawHost>("host", table.remove("host")).and_then(|raw| host(&mut p, raw));
    let trust = p.section::<RawTrust>("trust", table.remove("trust")).and_then(|raw| trust(&mut p, raw));
    let limits = p.section::<RawLimits>("limits", table.remove("limits")).and_then(|raw| limits(&mut p, raw));
    let download = p.section::<RawDownload>("download", table.remove("download")).and_then(|raw| download(&mut p, raw));
    let peers = match table.remove("peers") {
        None => Some(None),
        raw => p.section::<RawPeers>("peers", raw).and_then(|raw| peers(&mut p, raw)).map(Some),
    };
    let metrics = p.section::<RawMetrics>("metrics", table.remove("metrics")).and_then(|raw| metrics(&mut p, raw));
    let services = services(&mut p, table.remove("service"));
    for key in table.keys() {
        p.push(key.as_str(), format!("unknown key; expected one of {}", raw::TOP_KEYS.join(", ")));
    }
    match (zk, host, trust, limits, download, peers, metrics, services) {
        (
            Some(zookeeper),
            Some(host),
            Some(trust),
            Some(limits),
            Some(download),
            Some(peers),
            Some(metrics),
            Some(services),
        ) if p.0.is_empty() => {
            Ok(Config { zookeeper, host, trust, limits, download, peers, metrics, services, upgrades_itself: true })
        }
        _ => Err(with_lines(text, without_follow_ons(p.0))),
    }
}

/// Drops the "is required" problems a value of the wrong type caused: that value was
/// set aside to check the rest of its table, and its own problem says what is wrong.
fn without_follow_ons(problems: Vec<Problem>) -> Vec<Problem> {
    let typed: Vec<String> = problems
        .iter()
        .filter(|p| p.message.starts_with("invalid type") || p.message.starts_with("invalid value"))
        .map(|p| p.key.clone())
        .collect();
    let caused = |p: &Problem| {
        p.message.contains("required")
            && typed.iter().any(|k| k == &p.key || k.strip_prefix(p.key.as_str()).is_some_and(|r| r.starts_with('.')))
    };
    problems.into_iter().filter(|p| !caused(p)).collect()
}

/// Gives each problem the line of its key in `text` (the deepest part of the key
/// path found: `service[1].health.http` points at `http`, or at `health` when
/// `http` is missing), and sorts them in file order.
fn with_lines(text: &str, mut problems: Vec<Problem>) -> Vec<Problem> {
    let Ok(doc) = toml_edit::ImDocument::parse(text) else { return problems };
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    for p in &mut problems {
        p.line = key_span(doc.as_table(), &p.key).map(line_of);
    }
    problems.sort_by_key(|p| p.line.unwrap_or(0));
    problems
}

/// The offset of the deepest key of `path` (`a.b[2].c`) found in `table`.
fn key_span(table: &toml_edit::Table, path: &str) -> Option<usize> {
    use toml_edit::{Item, Value};
    let mut found = None;
    let mut tables: Option<&toml_edit::Table> = Some(table);
    let mut item: Option<&Item> = None;
    for seg in path.split('.').filter(|s| !s.is_empty()) {
        let (name, index) = match seg.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        let entry = match (tables, item) {
            (Some(t), _) => t.get_key_value(name),
            (None, Some(Item::Value(Value::InlineTable(t)))) => t.get_key_value(name),
            _ => None,
        };
        let Some((key, next)) = entry else { break };
        found = key.span().map(|s| s.start).or(found);
        tables = None;
        item = Some(next);
        if let Some(i) = index {
            match next {
                Item::ArrayOfTables(a) => match a.get(i) {
                    Some(t) => {
                        found = t.span().map(|s| s.start).or(found);
                        tables = Some(t);
                        item = None;
                    }
                    None => break,
                },
                _ => break,
            }
        } else if let Item::Table(t) = next {
            tables = Some(t);
        }
    }
    found
}

fn syntax_problem(text: &str, err: &toml::de::Error) -> Problem {
    let message = err.message().trim().to_string();
    let Some(span) = err.span() else { return Problem { key: String::new(), message, line: None } };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    let message = format!("TOML syntax error at line {line}, column {column}: {message}");
    Problem { key: String::new(), message, line: None }
}

fn trust(p: &mut Problems, raw: RawTrust) -> Option<TrustConfig> {
    let keys = raw.minisign_keys.unwrap_or_default();
    let before = p.0.len();
    for (i, key) in keys.iter().enumerate() {
        if let Err(e) = crate::host::trust::Trust::from_keys(std::slice::from_ref(key)) {
            p.push(format!("trust.minisign_keys[{i}]"), e);
        }
    }
    (p.0.len() == before).then_some(TrustConfig { minisign_keys: keys.iter().map(|k| k.trim().to_string()).collect() })
}

/// A size in bytes: an integer, or a number with a unit (B, k/K/KB/KiB, M…, G…, T…;
/// the decimal units are powers of 1000, the binary ones of 1024).
pub(crate) fn parse_size(raw: &RawSize) -> Result<u64, String> {
    let text = match raw {
        RawSize::Bytes(n) => return u64::try_from(*n).map_err(|_| format!("must not be negative, not {n}")),
        RawSize::Text(t) => t.trim(),
    };
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = (&text[..split], text[split..].trim());
    let number: f64 =
        number.parse().map_err(|_| format!("invalid size {text:?}: expected a number and a unit, like \"4GiB\""))?;
    let scale: f64 = match unit {
        "" | "B" => 1.0,
        "k" | "K" | "kB" | "KB" => 1e3,
        "KiB" => 1024.0,
        "M" | "MB" => 1e6,
        "MiB" => 1024.0 * 1024.0,
        "G" | "GB" => 1e9,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "T" | "TB" => 1e12,
        "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "invalid size {text:?}: unknown unit {other:?} (use B, KB, KiB, MB, MiB, GB, GiB, TB, TiB)"
            ));
        }
    };
    Ok((number * scale) as u64)
}

fn limits(p: &mut Problems, raw: RawLimits) -> Option<LimitsConfig> {
    use crate::host::download::DownloadLimits;
    use crate::host::unpack::UnpackLimits;
    let before = p.0.len();
    let defaults = DownloadLimits::default();
    let url_prefixes = raw.url_prefixes.unwrap_or_default();
    for (i, prefix) in url_prefixes.iter().enumerate() {
        if !(prefix.starts_with("https://") || prefix.starts_with("http://")) || prefix.contains(char::is_whitespace) {
            p.push(format!("limits.url_prefixes[{i}]"), format!("{prefix:?} must start with https:// or http://"));
        }
    }
    let file_dirs = raw.file_dirs.unwrap_or_default();
    for (i, dir) in file_dirs.iter().enumerate() {
        if !dir.is_absolute() {
            p.push(format!("limits.file_dirs[{i}]"), format!("{} must be an absolute directory", dir.display()));
        }
    }
    let mut size = |key: &str, raw: Option<RawSize>, default: u64| match raw.map(|r| parse_size(&r)) {
        None => default,
        Some(Ok(0)) => p.none(key, "must be greater than zero").unwrap_or(default),
        Some(Ok(n)) => n,
        Some(Err(e)) => p.none(key, e).unwrap_or(default),
    };
    let max_artifact = size("limits.max_artifact_size", raw.max_artifact_size, defaults.max_artifact);
    let max_bytes = size("limits.max_unpacked_size", raw.max_unpacked_size, UnpackLimits::default().max_bytes);
    let max_entries = match raw.max_entries {
        None => UnpackLimits::default().max_entries,
        Some(n) if n >= 1 => n as u64,
        Some(n) => p.none("limits.max_entries", format!("must be at least 1, not {n}")).unwrap_or(1),
    };
    (p.0.len() == before).then_some(LimitsConfig {
        download: DownloadLimits { url_prefixes, file_dirs, max_artifact },
        unpack: UnpackLimits { max_bytes, max_entries },
    })
}

fn metrics(p: &mut Problems, raw: RawMetrics) -> Option<MetricsConfig> {
    let listen = match raw.listen {
        None => None,
        Some(text) => match text.parse::<std::net::SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                return p
                    .none("metrics.listen", format!("expected ADDR:PORT such as \"127.0.0.1:9464\", not {text:?}"));
            }
        },
    };
    Some(MetricsConfig { listen })
}

fn download(p: &mut Problems, raw: RawDownload) -> Option<DownloadConfig> {
    let deadline = p.duration("download.deadline", raw.deadline.as_deref(), Duration::from_secs(3600));
    // A rate may be written as a size per second: "1KiB/s".
    let rate = raw.min_rate.map(|r| match r {
        RawSize::Text(t) => RawSize::Text(t.trim().trim_end_matches("/s").to_string()),
        other => other,
    });
    let min_rate = match rate.map(|r| parse_size(&r)) {
        None => Some(1024),
        Some(Ok(n)) => Some(n),
        Some(Err(e)) => p.none("download.min_rate", e),
    };
    let ca = match raw.ca {
        None => Some(None),
        Some(path) if !path.is_absolute() => {
            p.none("download.ca", format!("{} must be an absolute path", path.display()))
        }
        Some(path) => match crate::host::download::read_ca_bundle(&path) {
            Ok(_) => Some(Some(path)),
            Err(e) => p.none("download.ca", e),
        },
    };
    Some(DownloadConfig { deadline: deadline?, min_rate: min_rate?, ca: ca? })
}

fn peers(p: &mut Problems, raw: RawPeers) -> Option<PeersConfig> {
    let listen = match raw.listen.as_deref().map(str::parse::<std::net::SocketAddr>) {
        None => p.none("peers.listen", "is required to turn peers on (for example \"0.0.0.0:7070\")"),
        Some(Ok(addr)) => Some(addr),
        Some(Err(_)) => p.none("peers.listen", format!("{:?} is not IP:PORT", raw.listen.unwrap_or_default())),
    };
    let advertise = match (raw.advertise, listen) {
        (Some(a), _) => match znode_schema::PeerSource::check_address(&a) {
            Ok(()) => Some(a),
            Err(e) => p.none("peers.advertise", e),
        },
        (None, Some(l)) if l.ip().is_unspecified() || l.port() == 0 => p.none(
            "peers.advertise",
            format!(
                "is required when peers.listen ({l}) is a wildcard address or port 0: the address other hosts reach"
            ),
        ),
        (None, l) => l.map(|l| l.to_string()),
    };
    let mut count = |key: &str, raw: Option<i64>, default: u32, max: u32| match raw {
        None => Some(default),
        Some(n) if (1..=i64::from(max)).contains(&n) => Some(n as u32),
        Some(n) => p.none(key, format!("must be between 1 and {max}, not {n}")),
    };
    let max_uploads = count("peers.max_uploads", raw.max_uploads, 4, 1000);
    let origin_fetches = count("peers.origin_fetches", raw.origin_fetches, 3, 100);
    let stall = p.duration("peers.stall", raw.stall.as_deref(), Duration::from_secs(5));
    let rate = raw.max_upload_rate.map(|r| match r {
        RawSize::Text(t) => RawSize::Text(t.trim().trim_end_matches("/s").to_string()),
        other => other,
    });
    let max_upload_rate = match rate.map(|r| parse_size(&r)) {
        None => Some(None),
        Some(Ok(0)) => p.none("peers.max_upload_rate", "must be greater than zero (leave it out for no limit)"),
        Some(Ok(n)) => Some(Some(n)),
        Some(Err(e)) => p.none("peers.max_upload_rate", e),
    };
    Some(PeersConfig {
        max_upload_rate: max_upload_rate?,
        listen: listen?,
        advertise: advertise?,
        max_uploads: max_uploads?,
        origin_fetches: origin_fetches?,
        stall: stall?,
    })
}

fn zookeeper(p: &mut Problems, raw: RawZk) -> Option<ZkConfig> {
    let connect = match raw.connect {
        None => p.none("zookeeper.connect", "is required (for example \"zk1:2181,zk2:2181,zk3:2181\")"),
        Some(c) => check_connect(&c).map_err(|m| p.push("zookeeper.connect", m)).ok().map(|()| c),
    };
    let root = raw.root.unwrap_or_else(default_root);
    let root_ok = Layout::new(&root).map_err(|e| p.push("zookeeper.root", e)).is_ok();
    let timeout = p.duration("zookeeper.session_timeout", raw.session_timeout.as_deref(), default_session_timeout());
    let session_timeout = HumanDuration(timeout?);
    let tls = tls(p, raw.tls);
    let auth = auth(p, raw.auth);
    root_ok.then_some(ZkConfig { connect: connect?, root, session_timeout, tls: tls?, auth: auth? })
}

/// `tls = { ca, cert, key }`; `Some(None)` when absent, `None` after a problem.
fn tls(p: &mut Problems, raw: Option<RawTls>) -> Option<Option<TlsConfig>> {
    let Some(raw) = raw else { return Some(None) };
    let ca = match raw.ca {
        None => p.none("zookeeper.tls.ca", "is required with tls: the CA certificate (PEM) of the servers"),
        Some(ca) => pem_file(p, "zookeeper.tls.ca", ca, "-----BEGIN CERTIFICATE-----", "a PEM certificate"),
    };
    let cert =
        |p: &mut Problems, c| pem_file(p, "zookeeper.tls.cert", c, "-----BEGIN CERTIFICATE-----", "a PEM certificate");
    let key = |p: &mut Problems, k| pem_file(p, "zookeeper.tls.key", k, "PRIVATE KEY-----", "a PEM private key");
    let (cert, key) = match (raw.cert, raw.key) {
        (Some(c), Some(k)) => (cert(p, c).map(Some), key(p, k).map(Some)),
        (None, None) => (Some(None), Some(None)),
        (Some(_), None) => (Some(None), p.none("zookeeper.tls.key", "is required with cert")),
        (None, Some(_)) => (p.none("zookeeper.tls.cert", "is required with key"), Some(None)),
    };
    Some(Some(TlsConfig { ca: ca?, cert: cert?, key: key? }))
}

/// An absolute path to a readable file containing `marker`.
fn pem_file(p: &mut Problems, key: &str, path: PathBuf, marker: &str, what: &str) -> Option<PathBuf> {
    if !path.is_absolute() {
        return p.none(key, format!("must be an absolute path, not {}", path.display()));
    }
    match std::fs::read_to_string(&path) {
        Ok(text) if text.contains(marker) => Some(path),
        Ok(_) => p.none(key, format!("{} is not {what}", path.display())),
        Err(err) => p.none(key, format!("failed to read {}: {err}", path.display())),
    }
}

/// `auth = { digest_file }`; `Some(None)` when absent, `None` after a problem.
fn auth(p: &mut Problems, raw: Option<RawAuth>) -> Option<Option<AuthConfig>> {
    let Some(raw) = raw else { return Some(None) };
    let Some(path) = raw.digest_file else {
        return p.none("zookeeper.auth.digest_file", "is required with auth: a file holding user:password");
    };
    if !path.is_absolute() {
        return p.none("zookeeper.auth.digest_file", format!("must be an absolute path, not {}", path.display()));
    }
    match read_digest(&path) {
        Ok(_) => Some(Some(AuthConfig { digest_file: path })),
        Err(err) => p.none("zookeeper.auth.digest_file", err),
    }
}

/// `host:port[,host:port...][/chroot]`.
fn check_connect(connect: &str) -> Result<(), String> {
    let (servers, chroot) = match connect.find('/') {
        Some(i) => (&connect[..i], Some(&connect[i..])),
        None => (connect, None),
    };
    if servers.trim().is_empty() {
        return Err("must name at least one server as host:port".into());
    }
    for server in servers.split(',').map(str::trim) {
        check_host_port(server).map_err(|m| format!("server {server:?} {m}"))?;
    }
    if let Some(chroot) = chroot {
        Layout::new(chroot).map_err(|e| format!("chroot: {e}"))?;
    }
    Ok(())
}

/// `host:port` with a non-zero port.
fn check_host_port(addr: &str) -> Result<(), &'static str> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => match port.parse::<u16>() {
            Ok(port) if port > 0 => Ok(()),
            _ => Err("has an invalid port: expected 1 to 65535"),
        },
        _ => Err("must be host:port"),
    }
}

fn host(p: &mut Problems, raw: RawHost) -> Option<HostConfig> {
    let id = match raw.id {
        Some(id) => validate_host(&id).map_err(|e| p.push("host.id", e)).ok().map(|()| id),
        None => hostname().map_err(|m| p.push("host.id", m)).ok(),
    };
    let data_dir = raw.data_dir.unwrap_or_else(default_data_dir);
    let dir_ok = data_dir.is_absolute() || p.none::<()>("host.data_dir", "must be an absolute path").is_some();
    let keep_releases = match raw.keep_releases.unwrap_or_else(default_keep_releases) {
        n if n < 2 => {
            p.none("host.keep_releases", format!("must be at least 2 (the active and the previous release), not {n}"))
        }
        n => usize::try_from(n).ok(),
    };
    dir_ok.then_some(HostConfig { id: id?, data_dir, keep_releases: keep_releases? })
}

/// The default host id: this machine's hostname, when it is a valid host id.
fn hostname() -> Result<String, String> {
    let name = nix::unistd::gethostname().map_err(|e| format!("failed to read the hostname ({e}); set host.id"))?;
    let name = name.to_string_lossy().into_owned();
    validate_host(&name).map_err(|e| format!("the hostname is not a valid host id ({e}); set host.id"))?;
    Ok(name)
}

fn services(p: &mut Problems, value: Option<toml::Value>) -> Option<Vec<ServiceConfig>> {
    let tables = match value {
        None => return p.none("service", "at least one [[service]] is required"),
        Some(toml::Value::Array(tables)) if !tables.is_empty() => tables,
        Some(_) => return p.none("service", "expected an array of tables: one [[service]] per service"),
    };
    let mut names = BTreeSet::new();
    let mut out = Some(Vec::new());
    for (i, table) in tables.into_iter().enumerate() {
        let key = format!("service[{i}]");
        let service = p.section::<RawService>(&key, Some(table)).and_then(|raw| service(p, &key, raw));
        if let Some(s) = &service {
            if !names.insert(s.name.clone()) {
                p.push(format!("{key}.name"), format!("service {:?} is configured twice", s.name));
            }
        }
        out = out.zip(service).map(|(mut v, s)| {
            v.push(s);
            v
        });
    }
    out
}

fn service(p: &mut Problems, key: &str, raw: RawService) -> Option<ServiceConfig> {
    let name = match raw.name {
        None => p.none(&format!("{key}.name"), "is required"),
        Some(n) if n == znode_schema::SIDECAR_SERVICE => p.none(
            &format!("{key}.name"),
            format!("{n:?} is the sidecar itself, a built-in service of every sidecar; choose another name"),
        ),
        Some(n) => validate_service(&n).map_err(|e| p.push(format!("{key}.name"), e)).ok().map(|()| n),
    };
    let mode = mode(p, key, raw.run, raw.start, raw.stop);
    let stop_timeout = p.duration(&format!("{key}.stop_timeout"), raw.stop_timeout.as_deref(), default_stop_timeout());
    let health = health(p, &format!("{key}.health"), raw.health);
    let hooks = hooks(p, &format!("{key}.hooks"), raw.hooks.unwrap_or_default());
    let apply = apply(p, key, mode.as_ref(), raw.apply, raw.reload, raw.reload_signal);
    let env = env(p, &format!("{key}.env"), raw.env.unwrap_or_default());
    let output = match raw.output.as_deref() {
        None | Some("file") => Some(Output::File),
        Some("inherit") => Some(Output::Inherit),
        Some(other) => p.none(&format!("{key}.output"), format!("expected \"file\" or \"inherit\", not {other:?}")),
    };
    let on_shutdown = match raw.on_shutdown.as_deref() {
        None | Some("keep") => Some(OnShutdown::Keep),
        Some("stop") => Some(OnShutdown::Stop),
        Some(other) => p.none(&format!("{key}.on_shutdown"), format!("expected \"keep\" or \"stop\", not {other:?}")),
    };
    let user = match raw.user {
        None => Some(None),
        Some(name) => match crate::host::command::RunAs::lookup(&name) {
            Ok(user) => Some(Some(user)),
            Err(e) => p.none(&format!("{key}.user"), e),
        },
    };
    Some(ServiceConfig {
        name: name?,
        mode: mode?,
        stop_timeout: HumanDuration(stop_timeout?),
        health: health?,
        hooks: hooks?,
        apply: apply?,
        env: env?,
        output: output?,
        on_shutdown: on_shutdown?,
        user: user?,
    })
}

fn mode(
    p: &mut Problems,
    key: &str,
    run: Option<Vec<String>>,
    start: Option<Vec<String>>,
    stop: Option<Vec<String>>,
) -> Option<RunMode> {
    match (run, start, stop) {
        (Some(run), None, None) => p.command(&format!("{key}.run"), run).map(RunMode::Run),
        (None, Some(start), Some(stop)) => {
            let start = p.command(&format!("{key}.start"), start);
            let stop = p.command(&format!("{key}.stop"), stop);
            Some(RunMode::StartStop { start: start?, stop: stop? })
        }
        (None, None, None) => p.none(key, "one of run, or start and stop, is required"),
        (Some(_), _, _) => p.none(key, "run and start/stop are mutually exclusive"),
        (None, Some(_), None) => p.none(&format!("{key}.stop"), "is required with start"),
        (None, None, Some(_)) => p.none(&format!("{key}.start"), "is required with stop"),
    }
}

fn health(p: &mut Problems, key: &str, raw: Option<RawHealth>) -> Option<HealthConfig> {
    let Some(raw) = raw else { return p.none(key, "is required: one of http, tcp, exec") };
    let check = match (raw.http, raw.tcp, raw.exec) {
        (Some(url), None, None) => {
            check_url(&url).map_err(|m| p.push(format!("{key}.http"), m)).ok().map(|()| HealthCheck::Http(url))
        }
        (None, Some(addr), None) => {
            check_host_port(&addr).map_err(|m| p.push(format!("{key}.tcp"), m)).ok().map(|()| HealthCheck::Tcp(addr))
        }
        (None, None, Some(argv)) => p.command(&format!("{key}.exec"), argv).map(HealthCheck::Exec),
        _ => p.none(key, "exactly one of http, tcp, exec is required"),
    };
    let interval = p.duration(&format!("{key}.interval"), raw.interval.as_deref(), default_interval());
    let timeout = p.duration(&format!("{key}.timeout"), raw.timeout.as_deref(), default_check_timeout());
    Some(HealthConfig { check: check?, interval: interval?, timeout: timeout? })
}

fn check_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    match parsed.scheme() {
        "http" | "https" if parsed.host().is_some() => Ok(()),
        "http" | "https" => Err(format!("URL {url:?} has no host")),
        other => Err(format!("URL {url:?} has scheme {other:?}; expected http or https")),
    }
}

fn hooks(p: &mut Problems, key: &str, raw: RawHooks) -> Option<HooksConfig> {
    let timeout = p.duration(&format!("{key}.timeout"), raw.timeout.as_deref(), default_hook_timeout());
    let mut hook = |name: &str, argv: Option<Vec<String>>, own: Option<String>| -> Option<Option<Hook>> {
        let own_key = format!("{key}.{name}_timeout");
        if argv.is_none() && own.is_some() {
            p.push(own_key.clone(), format!("is set but there is no {name} hook"));
        }
        let limit = p.duration(&own_key, own.as_deref(), timeout.unwrap_or_else(default_hook_timeout));
        let command = argv.map(|argv| p.command(&format!("{key}.{name}"), argv));
        match command {
            None => limit.map(|_| None),
            Some(c) => Some(Some(Hook { command: c?, timeout: limit? })),
        }
    };
    let prepare = hook("prepare", raw.prepare, raw.prepare_timeout);
    let drain = hook("drain", raw.drain, raw.drain_timeout);
    let undrain = hook("undrain", raw.undrain, raw.undrain_timeout);
    let verify = hook("verify", raw.verify, raw.verify_timeout);
    timeout?;
    Some(HooksConfig { prepare: prepare?, drain: drain?, undrain: undrain?, verify: verify? })
}

fn apply(
    p: &mut Problems,
    key: &str,
    mode: Option<&RunMode>,
    apply: Option<String>,
    reload: Option<Vec<String>>,
    signal: Option<String>,
) -> Option<Apply> {
    let reload = reload.map(|argv| p.command(&format!("{key}.reload"), argv));
    let signal = signal.map(|name| {
        let full = if name.starts_with("SIG") { name.clone() } else { format!("SIG{name}") };
        full.parse::<nix::sys::signal::Signal>()
            .map_err(|_| {
                p.push(format!("{key}.reload_signal"), format!("unknown signal {name:?} (e.g. \"HUP\", \"USR1\")"))
            })
            .ok()
    });
    match apply.as_deref() {
        None | Some("restart") => {
            if reload.is_some() || signal.is_some() {
                return p.none(&format!("{key}.apply"), "reload and reload_signal need apply = \"reload\"");
            }
            Some(Apply::Restart)
        }
        Some("reload") => match (reload, signal) {
            (Some(cmd), None) => cmd.map(|c| Apply::Reload(Reload::Command(c))),
            (None, Some(sig)) => {
                if matches!(mode, Some(RunMode::StartStop { .. })) {
                    return p.none(
                        &format!("{key}.reload_signal"),
                        "a start/stop service has no process to signal: give reload = [...]",
                    );
                }
                sig.map(|s| Apply::Reload(Reload::Signal(s)))
            }
            (None, None) => p.none(&format!("{key}.apply"), "apply = \"reload\" needs reload = [...] or reload_signal"),
            (Some(_), Some(_)) => p.none(&format!("{key}.apply"), "reload and reload_signal are mutually exclusive"),
        },
        Some(other) => p.none(&format!("{key}.apply"), format!("expected \"restart\" or \"reload\", not {other:?}")),
    }
}

fn env(p: &mut Problems, key: &str, env: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    let before = p.0.len();
    for (name, value) in &env {
        let key = format!("{key}.{name}");
        if name.is_empty() || name.contains(['=', '\0']) {
            p.push(key, "a variable name must be non-empty, without '=' or NUL");
        } else if name.starts_with("BATON_") {
            p.push(key, "the BATON_ prefix is reserved for the variables the sidecar sets");
        } else if value.contains('\0') {
            p.push(key, "the value must not contain NUL");
        }
    }
    (p.0.len() == before).then_some(env)
}
