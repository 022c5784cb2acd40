//! `capacity`: how much the benchmarks' ZooKeeper server sustains on this machine,
//! to set a rollout's load against.
//!
//! `sessions` client sessions of this process (one connection each) drive the
//! server flat out, each with one request in flight at a time: first small
//! `setData` writes (16 bytes, each session on a znode of its own, so no two
//! writes conflict), then `getData` reads of the same znodes, each phase for
//! `secs`. Reported per phase: the operations completed over the phase's wall
//! time, and the server's transaction log fsyncs (`zk_cnt_fsynctime` of `mntr`)
//! over the same time. The bench and the server share the machine's cores, as the
//! sidecar cores of `scale` do.

use crate::report::Report;
use crate::stats::round3;
use crate::zkstat;
use anyhow::Context;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use zookeeper_client as zk;

/// Options of the capacity measurement.
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

/// Measures the server on `port` (connect string `connect`) and reports it.
pub async fn run(opts: &Options, connect: &str, port: u16, report: &mut Report) -> anyhow::Result<Capacity> {
    anyhow::ensure!(opts.sessions >= 1 && opts.secs > 0.0, "capacity needs a session and some time");
    let mut clients = Vec::with_capacity(opts.sessions);
    for _ in 0..opts.sessions {
        let c = zk::Client::connector()
            .with_session_timeout(Duration::from_secs(20))
            .connect(connect)
            .await
            .context("connect a capacity session")?;
        clients.push(c);
    }
    let opts_acl = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    let root = "/capacity";
    match clients[0].create(root, b"", &opts_acl).await {
        Ok(_) | Err(zk::Error::NodeExists) => {}
        Err(e) => return Err(e).context("create /capacity"),
    }
    let paths: Vec<String> = (0..opts.sessions).map(|i| format!("{root}/c{i:04}")).collect();
    for p in &paths {
        match clients[0].create(p, &[0u8; 16], &opts_acl).await {
            Ok(_) | Err(zk::Error::NodeExists) => {}
            Err(e) => return Err(e).with_context(|| format!("create {p}")),
        }
    }
    let phase = Duration::from_secs_f64(opts.secs);
    let before = zkstat::mntr(port)?;
    let (writes, secs) = drive(&clients, &paths, phase, true).await?;
    let after = zkstat::mntr(port)?;
    let fsyncs =
        after.get("zk_cnt_fsynctime").copied().unwrap_or(0.0) - before.get("zk_cnt_fsynctime").copied().unwrap_or(0.0);
    let (reads, rsecs) = drive(&clients, &paths, phase, false).await?;
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
    for c in &clients[..1] {
        for p in &paths {
            let _ = c.delete(p, None).await;
        }
        let _ = c.delete(root, None).await;
    }
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
