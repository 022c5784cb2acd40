//! ZooKeeper traffic of the hosts during one phase, from the server's per-connection
//! counters, with the keep-alive pings of the phase estimated and taken out.

use crate::stats::round3;
use crate::zkstat::{self, Totals};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The traffic of `hosts` hosts over one phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Traffic {
    /// Hosts (sessions) counted.
    pub hosts: u64,
    /// Packets the hosts sent per host: requests and pings.
    pub packets_per_host: f64,
    /// Estimated pings per host (the idle rate times the phase's length).
    pub pings_per_host: f64,
    /// Watch notifications the hosts received, per host.
    pub notifications_per_host: f64,
}

impl Traffic {
    /// From the counters `t` of a phase of `secs` seconds, with `idle_rate` packets
    /// per host per second measured while idle (pings only).
    pub fn new(t: Totals, secs: f64, idle_rate: f64) -> Traffic {
        let hosts = t.connections.max(1);
        Traffic {
            hosts: t.connections,
            packets_per_host: t.recved as f64 / hosts as f64,
            pings_per_host: idle_rate * secs,
            notifications_per_host: t.notifications as f64 / hosts as f64,
        }
    }

    /// Requests per host, pings excluded.
    pub fn requests_per_host(&self) -> f64 {
        (self.packets_per_host - self.pings_per_host).max(0.0)
    }

    /// As JSON.
    pub fn json(&self) -> Value {
        json!({
            "sessions": self.hosts,
            "requests_per_host": round3(self.requests_per_host()),
            "packets_per_host_incl_pings": round3(self.packets_per_host),
            "pings_per_host_est": round3(self.pings_per_host),
            "notifications_per_host": round3(self.notifications_per_host),
        })
    }
}

/// Measures the idle packet rate per host per second over `window`: resets the
/// counters, waits, reads them. Returns the rate and the watches the server holds.
pub async fn idle_rate(port: u16, exclude: &[i64], window: Duration) -> anyhow::Result<(f64, Totals)> {
    zkstat::crst(port)?;
    let start = Instant::now();
    tokio::time::sleep(window).await;
    let t = zkstat::totals(&zkstat::cons(port)?, exclude);
    let secs = start.elapsed().as_secs_f64();
    Ok((t.recved as f64 / t.connections.max(1) as f64 / secs, t))
}

/// The server's watch count (`zk_watch_count` of `mntr`).
pub fn watch_count(port: u16) -> f64 {
    zkstat::mntr(port).ok().and_then(|m| m.get("zk_watch_count").copied()).unwrap_or(f64::NAN)
}

/// Server-wide counters of `mntr` that bear on the rollout.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Server {
    /// Write requests processed (`zk_cnt_updatelatency`: creates, deletes, sets,
    /// multis as one, failed writes too).
    pub writes: f64,
    /// Other requests processed (`zk_cnt_readlatency`: reads, and pings).
    pub reads: f64,
    /// Transaction log fsyncs (`zk_cnt_fsynctime`; group commit batches writes).
    pub fsyncs: f64,
    /// Watchers triggered (`zk_sum_node_{created,deleted,changed,children}_watch_count`).
    pub triggered: f64,
}

impl Server {
    /// Reads the counters now.
    pub fn now(port: u16) -> anyhow::Result<Server> {
        let m = zkstat::mntr(port)?;
        let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
        let triggered = ["created", "deleted", "changed", "children"]
            .iter()
            .map(|k| get(&format!("zk_sum_node_{k}_watch_count")))
            .sum();
        Ok(Server {
            writes: get("zk_cnt_updatelatency"),
            reads: get("zk_cnt_readlatency"),
            fsyncs: get("zk_cnt_fsynctime"),
            triggered,
        })
    }

    /// What happened since `before`, per host of `hosts`.
    pub fn per_host_since(&self, before: &Server, hosts: usize) -> Server {
        let n = hosts.max(1) as f64;
        Server {
            writes: (self.writes - before.writes) / n,
            reads: (self.reads - before.reads) / n,
            fsyncs: (self.fsyncs - before.fsyncs) / n,
            triggered: (self.triggered - before.triggered) / n,
        }
    }

    /// The mean of several phases.
    pub fn mean(all: &[Server]) -> Server {
        let k = all.len().max(1) as f64;
        let sum = |f: fn(&Server) -> f64| all.iter().map(f).sum::<f64>() / k;
        Server {
            writes: sum(|s| s.writes),
            reads: sum(|s| s.reads),
            fsyncs: sum(|s| s.fsyncs),
            triggered: sum(|s| s.triggered),
        }
    }

    /// As JSON.
    pub fn json(&self) -> Value {
        json!({
            "writes": round3(self.writes), "reads_incl_pings": round3(self.reads),
            "fsyncs": round3(self.fsyncs), "watchers_triggered": round3(self.triggered),
        })
    }
}
