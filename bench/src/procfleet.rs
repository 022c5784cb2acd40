//! Real sidecar processes for the `rollout` benchmark: one per host, each with its
//! own data dir, config and JSON log file, tied to the bench's life.

use crate::bed::{Bed, SERVICE};
use crate::timeline::{Event, Mark};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One sidecar process.
#[derive(Debug)]
pub struct ProcHost {
    /// Its host id.
    pub id: String,
    /// Its log file (JSON lines).
    pub log: PathBuf,
    child: Child,
}

impl ProcHost {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ProcHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `sidecar` binary: `$BATON_SIDECAR`, or next to this program (built by
/// `cargo build --release -p baton-sidecar`; built here when run through cargo).
pub fn sidecar_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("BATON_SIDECAR") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the bench's directory")?;
    let bin = dir.join("sidecar");
    if bin.is_file() {
        return Ok(bin);
    }
    let Some(cargo) = std::env::var_os("CARGO") else {
        anyhow::bail!("{} not found: run `cargo build --release -p baton-sidecar` first", bin.display());
    };
    eprintln!("building the sidecar: cargo build --release -p baton-sidecar");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "baton-sidecar", "--bin", "sidecar"]);
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    anyhow::ensure!(cmd.status()?.success(), "failed to build the sidecar");
    anyhow::ensure!(bin.is_file(), "{} still not found after building it", bin.display());
    Ok(bin)
}

/// Starts host `id`'s sidecar under `root`, connecting to ZooKeeper at `connect`,
/// its service's step taking `step` (see [`Bed::host_config`]).
pub fn spawn(bed: &Bed, bin: &Path, connect: &str, root: &str, id: &str, step: Duration) -> anyhow::Result<ProcHost> {
    let base = bed.dir.path().join("hosts").join(id);
    let data = base.join("data");
    std::fs::create_dir_all(&data)?;
    let config = base.join("sidecar.toml");
    std::fs::write(&config, bed.host_config(connect, root, id, &data, &[SERVICE], step))?;
    let log = base.join("sidecar.log");
    let out = std::fs::File::create(&log)?;
    let mut cmd = Command::new(bin);
    cmd.arg("--config")
        .arg(&config)
        .args(["--log-format", "json"])
        .env("RUST_LOG", std::env::var("BATON_BENCH_SIDECAR_LOG").unwrap_or_else(|_| "info".into()))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    let child = baton_tests::process::spawn_tied(cmd).with_context(|| format!("start the sidecar of {id}"))?;
    Ok(ProcHost { id: id.into(), log, child })
}

/// The marks of rollout to `version` in a sidecar's JSON log, and its lost fences
/// (which name no version: the caller picks them by time).
pub fn marks(host: &str, log: &Path, version: &str) -> anyhow::Result<Vec<Event>> {
    let text = std::fs::read_to_string(log)?;
    Ok(text.lines().filter_map(|l| parse_line(host, l, version)).collect())
}

fn parse_line(host: &str, line: &str, version: &str) -> Option<Event> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = v.get("fields")?;
    let mark = Mark::from_message(fields.get("message")?.as_str()?)?;
    let key = match mark {
        Mark::Fenced => Some("to"),
        Mark::FenceLost => None,
        _ => Some("version"),
    };
    match key {
        Some(key) if fields.get(key)?.as_str()? != version => return None,
        _ => {}
    }
    let at = humantime::parse_rfc3339(v.get("timestamp")?.as_str()?).ok()?;
    let at_ms = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64() * 1000.0;
    Some(Event { host: host.into(), mark, at_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_json_log_lines() {
        let line = r#"{"timestamp":"2026-01-02T03:04:05.123456Z","level":"INFO","fields":{"message":"fenced: starting the step","service":"svc","entry":"deploy-0000000001","from":"Some(\"1\")","to":"2"},"target":"baton_sidecar::agent"}"#;
        let e = parse_line("h1", line, "2").unwrap();
        assert_eq!(e.mark, Mark::Fenced);
        assert!((e.at_ms % 1000.0 - 123.456).abs() < 1e-3, "{}", e.at_ms);
        assert!(parse_line("h1", line, "3").is_none());
        let up = r#"{"timestamp":"2026-01-02T03:04:05.2Z","level":"INFO","fields":{"message":"host upgraded","service":"svc","version":"2"}}"#;
        assert_eq!(parse_line("h1", up, "2").unwrap().mark, Mark::Upgraded);
        assert!(parse_line("h1", "not json", "2").is_none());
        let lost = r#"{"timestamp":"2026-01-02T03:04:05.3Z","level":"INFO","fields":{"message":"fence lost; re-reading","index":0,"error":"BadVersion"}}"#;
        assert_eq!(parse_line("h1", lost, "7").unwrap().mark, Mark::FenceLost);
    }
}
