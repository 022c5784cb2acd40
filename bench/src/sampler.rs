//! The server's load over time: `mntr` sampled at a fixed interval in a thread of
//! its own while a rollout runs, for its peak and mean request and write rates.

use crate::stats::rates;
use crate::zkstat;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One `mntr` sample: seconds since the sampler started, and the counters.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Sample {
    at: f64,
    /// `zk_packets_received`: every packet from every client (requests and pings).
    packets: f64,
    /// `zk_cnt_updatelatency`: write requests processed.
    writes: f64,
}

/// A running sampler; [`Sampler::stop`] ends it and returns the rates.
#[derive(Debug)]
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Sample>>,
}

/// Peak (between two consecutive samples) and mean (over the whole sampled span)
/// rates per second.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rates {
    /// Samples taken.
    pub samples: usize,
    /// The sampling interval, ms.
    pub interval_ms: f64,
    /// Packets received per second (`zk_packets_received`): peak.
    pub packets_peak: f64,
    /// Packets received per second: mean.
    pub packets_mean: f64,
    /// Writes per second (`zk_cnt_updatelatency`): peak.
    pub writes_peak: f64,
    /// Writes per second: mean.
    pub writes_mean: f64,
}

impl Sampler {
    /// Starts sampling the server on `port` every `interval`.
    pub fn start(port: u16, interval: Duration) -> anyhow::Result<Sampler> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name("mntr-sampler".into()).spawn(move || {
            let base = Instant::now();
            let mut out = Vec::new();
            let mut next = base;
            loop {
                if let Ok(m) = zkstat::mntr(port) {
                    let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
                    let at = base.elapsed().as_secs_f64();
                    out.push(Sample { at, packets: get("zk_packets_received"), writes: get("zk_cnt_updatelatency") });
                }
                if flag.load(Ordering::Relaxed) {
                    return out;
                }
                next += interval;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        })?;
        Ok(Sampler { stop, thread })
    }

    /// Takes a last sample, stops, and returns the rates (zero without two samples).
    pub async fn stop(self, interval: Duration) -> Rates {
        self.stop.store(true, Ordering::Relaxed);
        let samples =
            tokio::task::spawn_blocking(move || self.thread.join().unwrap_or_default()).await.unwrap_or_default();
        let series = |f: fn(&Sample) -> f64| samples.iter().map(|s| (s.at, f(s))).collect::<Vec<_>>();
        let (packets_peak, packets_mean) = rates(&series(|s| s.packets)).unwrap_or_default();
        let (writes_peak, writes_mean) = rates(&series(|s| s.writes)).unwrap_or_default();
        Rates {
            samples: samples.len(),
            interval_ms: interval.as_secs_f64() * 1000.0,
            packets_peak,
            packets_mean,
            writes_peak,
            writes_mean,
        }
    }
}

impl Rates {
    /// As JSON (rates rounded to whole numbers per second).
    pub fn json(&self) -> Value {
        json!({
            "samples": self.samples, "interval_ms": self.interval_ms,
            "requests_per_s_peak": self.packets_peak.round(), "requests_per_s_mean": self.packets_mean.round(),
            "writes_per_s_peak": self.writes_peak.round(), "writes_per_s_mean": self.writes_mean.round(),
        })
    }
}
