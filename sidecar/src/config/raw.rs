//! The config file as written: every field optional and loosely typed, unknown keys
//! refused. [`super::validate`] turns these into the validated types, reporting every
//! problem it finds instead of stopping at the first.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `[zookeeper]`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawZk {
    pub connect: Option<String>,
    pub root: Option<String>,
    pub session_timeout: Option<String>,
    pub tls: Option<RawTls>,
    pub auth: Option<RawAuth>,
}

/// `tls = { ... }` in `[zookeeper]`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// `auth = { ... }` in `[zookeeper]`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawAuth {
    pub digest_file: Option<PathBuf>,
}

/// `[host]`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawHost {
    pub id: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub keep_releases: Option<i64>,
}

/// `[trust]`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawTrust {
    pub minisign_keys: Option<Vec<String>>,
}

/// A size: bytes, or a string with a unit (`"4GiB"`, `"500MB"`, `"10k"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawSize {
    Bytes(i64),
    Text(String),
}

/// `[limits]`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawLimits {
    pub url_prefixes: Option<Vec<String>>,
    pub file_dirs: Option<Vec<PathBuf>>,
    pub max_artifact_size: Option<RawSize>,
    pub max_unpacked_size: Option<RawSize>,
    pub max_entries: Option<i64>,
}

/// `[download]`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawDownload {
    pub deadline: Option<String>,
    pub min_rate: Option<RawSize>,
    pub ca: Option<PathBuf>,
}

/// `[peers]`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawPeers {
    pub listen: Option<String>,
    pub advertise: Option<String>,
    pub max_uploads: Option<i64>,
    pub origin_fetches: Option<i64>,
    pub stall: Option<String>,
    pub max_upload_rate: Option<RawSize>,
}

/// One `[[service]]`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawService {
    pub name: Option<String>,
    pub run: Option<Vec<String>>,
    pub start: Option<Vec<String>>,
    pub stop: Option<Vec<String>>,
    pub stop_timeout: Option<String>,
    pub health: Option<RawHealth>,
    pub hooks: Option<RawHooks>,
    pub env: Option<BTreeMap<String, String>>,
    pub output: Option<String>,
    pub on_shutdown: Option<String>,
    pub user: Option<String>,
    pub apply: Option<String>,
    pub reload: Option<Vec<String>>,
    pub reload_signal: Option<String>,
}

/// `health = { ... }`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawHealth {
    pub http: Option<String>,
    pub tcp: Option<String>,
    pub exec: Option<Vec<String>>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
}

/// `hooks = { ... }`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawHooks {
    pub prepare: Option<Vec<String>>,
    pub drain: Option<Vec<String>>,
    pub undrain: Option<Vec<String>>,
    pub verify: Option<Vec<String>>,
    pub timeout: Option<String>,
    pub prepare_timeout: Option<String>,
    pub drain_timeout: Option<String>,
    pub undrain_timeout: Option<String>,
    pub verify_timeout: Option<String>,
}

/// The top-level keys, in the order they are documented.
pub(super) const TOP_KEYS: [&str; 8] =
    ["zookeeper", "host", "trust", "limits", "download", "peers", "metrics", "service"];

/// `[metrics]`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawMetrics {
    pub listen: Option<String>,
}

/// A problem found while reading: the key path and the message.
pub(super) type KeyProblem = (String, String);

/// Deserializes one table. Unknown keys do not stop it: they are returned as
/// problems (`key`, message) beside the value, so every other problem of the same
/// table is still found. A value that cannot be read at all is one problem.
pub(super) fn section<T: for<'de> Deserialize<'de>>(
    prefix: &str,
    mut value: toml::Value,
) -> Result<(T, Vec<KeyProblem>), KeyProblem> {
    let join =
        |path: String| if path == "." || path.is_empty() { prefix.to_string() } else { format!("{prefix}.{path}") };
    // A value of the wrong type is a problem of its key; the key is then dropped and
    // the table read again, so every other key of the table is still checked.
    let mut problems = Vec::new();
    loop {
        let mut unknown = Vec::new();
        let read = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(value.clone(), &mut |path| {
            // serde_ignored writes `?` for an Option's Some: not a key of the file.
            let path = path.to_string().split('.').filter(|seg| *seg != "?").collect::<Vec<_>>().join(".");
            let name = path.rsplit('.').next().unwrap_or(&path).to_string();
            unknown.push((join(path), format!("unknown field `{name}`")));
        }));
        match read {
            Ok(v) => {
                problems.extend(unknown);
                return Ok((v, problems));
            }
            Err(err) => {
                let path = err.path().to_string();
                // toml's messages end with "in `key`": the key path says it already.
                let message = err.into_inner().to_string();
                let message = message.lines().next().unwrap_or_default().trim().to_string();
                let first = path.split(['.', '[']).next().unwrap_or_default().to_string();
                let removed = match &mut value {
                    toml::Value::Table(t) if !first.is_empty() && first != "?" => t.remove(&first).is_some(),
                    _ => false,
                };
                if !removed {
                    return Err((join(path), message));
                }
                problems.push((join(path), message));
            }
        }
    }
}
