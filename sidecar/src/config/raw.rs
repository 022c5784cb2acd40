//! The config file as written: every field optional and loosely typed, unknown keys
//! refused. [`super::validate`] turns these into the validated types, reporting every
//! problem it finds instead of stopping at the first.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `[zookeeper]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawZk {
    pub connect: Option<String>,
    pub root: Option<String>,
    pub session_timeout: Option<String>,
}

/// `[host]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHost {
    pub id: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub keep_releases: Option<i64>,
}

/// One `[[service]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
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
}

/// `health = { ... }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub http: Option<String>,
    pub tcp: Option<String>,
    pub exec: Option<Vec<String>>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
}

/// `hooks = { ... }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHooks {
    pub drain: Option<Vec<String>>,
    pub undrain: Option<Vec<String>>,
    pub timeout: Option<String>,
}

/// The top-level keys, in the order they are documented.
pub(super) const TOP_KEYS: [&str; 3] = ["zookeeper", "host", "service"];

/// Deserializes one table, or returns the problem with the key path where it failed.
pub(super) fn section<T: for<'de> Deserialize<'de>>(prefix: &str, value: toml::Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let key = if path == "." || path.is_empty() { prefix.to_string() } else { format!("{prefix}.{path}") };
        (key, err.into_inner().to_string().trim().to_string())
    })
}
