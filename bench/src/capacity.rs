//! `capacity`: how much the benchmarks' ZooKeeper server sustains on this machine,
//! to set a rollout's load against.
//!
//! C client sessions of this process (one connection each) drive the server flat
//! out, each with one request in flight at a time: first small `setData` writes
//! (16 bytes, each session on a znode of its own, so no two writes conflict), then
//! `getData` reads of the same znodes, each phase for `secs`. Reported per phase:
//! the operations completed over the phase's wall time, and the server's
//! transaction log fsyncs (`zk_cnt_fsynctime` of `mntr`) over the same time. One
//! second of each phase runs first, uncounted, to warm the JVM up. Several C are
//! measured in turn (group commit lets more concurrent writers share an fsync); the
//! capacity is the best of them. The bench and the server share the machine's
//! cores, as the sidecar cores of `scale` do.

use crate::report::Report;
use crate::stats::round3;
use crate::zkstat;
use anyhow::Context;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use zookeeper_client as zk;

/// One capacity measurement.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Concurrent client sessions.
    pub sessions: usize,
    /// Length of each phase.
    pub secs: f64,
}

/// What the server sustained.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Capacity {
    /// Writes (setData) per second.
    pub writes_per_s: f64,
    /// Transaction log fsyncs per second during the write phase.
    pub fsyncs_per_s: f64,
    /// Reads (getData) per second.
    pub reads_per_s: f64,
}

impl Capacity {
    /// As JSON.
    pub fn json(&self, opts: &Options) -> Value {
        json!({
            "sessions": opts.sessions, "secs_per_phase": opts.secs,
            "writes_per_s": self.writes_per_s.round(), "fsyncs_per_s": self.fsyncs_per_s.round(),
            "reads_per_s": self.reads_per_s.round(),
            "writes_per_fsync": round3(self.writes_per_s / self.fsyncs_per_s.max(1e-9)),
        })
    }
}

impl Capacity {
    /// The best figures with every measurement's, as JSON.
    pub fn summary_json(&self, all: Vec<Value>) -> Value {
        json!({
            "writes_per_s": self.writes_per_s.round(), "fsyncs_per_s": self.fsyncs_per_s.round(),
            "reads_per_s": self.reads_per_s.round(), "runs": all,
        })
    }
}

/// Measures the server on `port` (connect string `connect`) with each session
/// count of `sessions` in turn (after a warm-up of the JVM: one second of each
/// phase, not counted), reports each, and returns the best writes/s and reads/s
/// of them (with the fsyncs/s of the best write phase).
pub async fn run_all(
    sessions: &[usize],
    secs: f64,
    connect: &str,
    port: u16,
    report: &mut Report,
) -> anyhow::Result<(Capacity, Vec<Value>)> {
    let most = sessions.iter().copied().max().unwrap_or(1);
    let set = Set::open(most, connect).await?;
    let warm = Duration::from_secs(1);
    drive(&set.clients, &set.paths, warm, true).await?;
    drive(&set.clients, &set.paths, warm, false).await?;
    let mut best = Capacity::default();
    let mut all = Vec::new();
    for &c in sessions {
        let opts = Options { sessions: c, secs };
        let cap = measure(&opts, &set, port, report).await?;
        if cap.writes_per_s > best.writes_per_s {
            best.writes_per_s = cap.writes_per_s;
            best.fsyncs_per_s = cap.fsyncs_per_s;
        }
        best.reads_per_s = best.reads_per_s.max(cap.reads_per_s);
        all.push(cap.json(&opts));
    }
    set.close().await;
    Ok((best, all))
}

/// Client sessions, each with a znode of its own under `/capacity`.
struct Set {
    clients: Vec<zk::Client>,
    paths: Vec<String>,
}

const ROOT: &str = "/capacity";

impl Set {
    async fn open(sessions: usize, connect: &str) -> anyhow::Result<Set> {
        anyhow::ensure!(sessions >= 1, "capacity needs a session");
        let mut clients = Vec::with_capacity(sessions);
        for _ in 0..sessions {
            let c = zk::Client::connector()
                .with_session_timeout(Duration::from_secs(20))
                .connect(connect)
                .await
                .context("connect a capacity session")?;
            clients.push(c);
        }
        let acl = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        let paths: Vec<String> = (0..sessions).map(|i| format!("{ROOT}/c{i:04}")).collect();
        for p in std::iter::once(ROOT).chain(paths.iter().map(String::as_str)) {
            match clients[0].create(p, &[0u8; 16], &acl).await {
                Ok(_) | Err(zk::Error::NodeExists) => {}
                Err(e) => return Err(e).with_context(|| format!("create {p}")),
            }
        }
        Ok(Set { clients, paths })
    }

    async fn close(self) {
        for p in &self.paths {
            let _ = self.clients[0].delete(p, None).await;
        }
        let _ = self.clients[0].delete(ROOT, None).await;
    }
}

/// One measurement with the first `opts.sessions` sessions of `set`.
async fn measure(opts: &Options, set: &Set, port: u16, report: &mut Report) -> anyhow::Result<Capacity> {
    anyhow::ensure!(opts.secs > 0.0 && opts.sessions <= set.clients.len(), "capacity needs some time");
    let (clients, paths) = (&set.clients[..opts.sessions], &set.paths[..opts.sessions]);
    let phase = Duration::from_secs_f64(opts.secs);
    let before = zkstat::mntr(port)?;
    let (writes, secs) = drive(clients, paths, phase, true).await?;
    let after = zkstat::mntr(port)?;
    let fsyncs =
        after.get("zk_cnt_fsynctime").copied().unwrap_or(0.0) - before.get("zk_cnt_fsynctime").copied().unwrap_or(0.0);
    let (reads, rsecs) = drive(clients, paths, phase, false).await?;
    let cap = Capacity { writes_per_s: writes / secs, fsyncs_per_s: fsyncs / secs, reads_per_s: reads / rsecs };
    report.line(format!(
        "zookeeper capacity ({} sessions, one request in flight each, {:.1} s per phase): {:.0} writes/s (setData, 16 B; {:.0} fsyncs/s, {:.1} writes per fsync), {:.0} reads/s (getData)",
        opts.sessions,
        opts.secs,
        cap.writes_per_s,
        cap.fsyncs_per_s,
        cap.writes_per_s / cap.fsyncs_per_s.max(1e-9),
        cap.reads_per_s
    ));
    Ok(cap)
}

/// Every client loops on its own znode for `phase`: setData when `write`, getData
/// otherwise. Returns the operations completed and the seconds they took.
async fn drive(clients: &[zk::Client], paths: &[String], phase: Duration, write: bool) -> anyhow::Result<(f64, f64)> {
    let start = Instant::now();
    let deadline = start + phase;
    let mut tasks = Vec::with_capacity(clients.len());
    for (c, p) in clients.iter().zip(paths) {
        let (c, p) = (c.clone(), p.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            let data = [7u8; 16];
            while Instant::now() < deadline {
                match write {
                    true => c.set_data(&p, &data, None).await.map(drop),
                    false => c.get_data(&p).await.map(drop),
                }?;
                n += 1;
            }
            Ok::<u64, zk::Error>(n)
        }));
    }
    let mut total = 0u64;
    for t in tasks {
        total += t.await?.context("a capacity request failed")?;
    }
    Ok((total as f64, start.elapsed().as_secs_f64()))
}
