//! `scale --hosts 25,50,100,... [--max-parallel 1,10,50] [--step-ms MS]`: for each
//! fleet size N, N sidecar cores run in this process, each the sidecar's own daemon
//! (`baton_sidecar::daemon::run`) with its own config, data dir, supervisor and
//! ZooKeeper session, exactly as N sidecar processes would, minus N runtimes and N
//! copies of the binary.
//!
//! For each N: boot the fleet at release 1 (its ZooKeeper traffic is reported
//! too), measure the pings over an idle window, then for each `max_parallel` K roll
//! out the next release (quorum N−K: K hosts may be down at once) and report its
//! time against `1.1 × ceil(N/K) × step` (step: the measured median own step), the
//! slot refill latency (the handoff for K = 1), lost fences per fence, and
//! ZooKeeper's load per host and its peak rate. Then fit rollout time against N
//! for the first K.

use crate::bed::{Bed, SERVICE};
use crate::capacity::{self, Capacity};
use crate::load::{self, Traffic};
use crate::procfs;
use crate::recorder::Recorder;
use crate::report::{Report, ms};
use crate::sampler::{Rates, Sampler};
use crate::stats::{Summary, linear_fit, r_squared, round3};
use crate::timeline::Timeline;
use crate::zkstat;
use baton_sidecar::config::Config;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::Instrument;

/// Options of the `scale` benchmark.
#[derive(Debug, Clone)]
pub struct Options {
    /// Fleet sizes.
    pub sizes: Vec<usize>,
    /// The idle window of each size.
    pub idle: Duration,
    /// `max_parallel` of each rollout, one rollout per value and size.
    pub parallel: Vec<u32>,
    /// The length of the service's own step work (its start command's).
    pub step: Duration,
    /// Measure the server's capacity after the rollouts, on the same server.
    pub capacity: Option<CapacityOptions>,
}

/// The capacity phase of `scale`.
#[derive(Debug, Clone)]
pub struct CapacityOptions {
    /// Session counts measured in turn (the best counts).
    pub sessions: Vec<usize>,
    /// Length of each phase.
    pub secs: f64,
}

/// How often the server's counters are sampled during a rollout.
pub const SAMPLE: Duration = Duration::from_millis(100);

/// The figures of one rollout of one fleet size.
#[derive(Debug, Clone)]
struct Row {
    n: usize,
    k: u32,
    boot_ms: f64,
    boot: Traffic,
    rollout_ms: f64,
    step: Option<Summary>,
    handoff: Option<Summary>,
    refill: Option<Summary>,
    inverted: usize,
    fences: usize,
    conflicts: usize,
    traffic: Traffic,
    server: load::Server,
    rates: Rates,
    watches: f64,
    cpu_ms_per_host: f64,
    rss_kib_per_host: f64,
}

impl Row {
    /// `ceil(N/K)`: the rounds of K hosts a rollout takes.
    fn rounds(&self) -> f64 {
        self.n.div_ceil(self.k as usize) as f64
    }

    /// The target: `1.1 × ceil(N/K) × the median own step`.
    fn target_ms(&self) -> Option<f64> {
        self.step.map(|s| 1.1 * self.rounds() * s.p50)
    }
}

/// Runs the benchmark and adds its figures to `report`.
pub async fn run(opts: &Options, bed: &Bed, report: &mut Report) -> anyhow::Result<()> {
    let rec = Recorder::global();
    anyhow::ensure!(!opts.parallel.is_empty(), "at least one --max-parallel value");
    report.line(format!(
        "== scale: sidecar cores in one process, one ZooKeeper session each; step {} ms",
        opts.step.as_millis()
    ));
    report.line(format!(
        "{:>5} {:>4} {:>9} {:>10} {:>9} {:>10} {:>9} {:>6} {:>9} {:>9} {:>10} {:>10} {:>11} {:>8} {:>8} {:>8} {:>8}",
        "N",
        "K",
        "boot",
        "boot req/h",
        "rollout",
        "per host",
        "target",
        "met",
        "ideal",
        "step p50",
        "refill p50",
        "refill p99",
        "confl/fence",
        "req/host",
        "notif/h",
        "cpu/h",
        "watches"
    ));
    let mut rows = Vec::new();
    for &n in &opts.sizes {
        anyhow::ensure!((2..=1000).contains(&n), "fleet sizes go from 2 to 1000, not {n}");
        for &k in &opts.parallel {
            anyhow::ensure!(k >= 1 && (k as usize) < n, "max_parallel goes from 1 to N-1, not {k} for N={n}");
        }
        for row in one(n, opts, bed, rec).await? {
            print_row(&row, opts.step, report);
            rows.push(row);
        }
    }
    let first_k: Vec<Row> = rows.iter().filter(|r| r.k == opts.parallel[0]).cloned().collect();
    growth(&first_k, report);
    report.set("scale", Value::Array(rows.iter().map(|r| row_json(r, opts.step)).collect()));
    if let Some(c) = &opts.capacity {
        let (cap, all) = capacity::run_all(&c.sessions, c.secs, &bed.zk.connect_string(), bed.port, report).await?;
        against_capacity(&rows, &cap, report);
        report.set("zk_capacity", cap.summary_json(all));
    }
    Ok(())
}

fn print_row(row: &Row, step: Duration, report: &mut Report) {
    let target = row.target_ms();
    let met = match target {
        Some(t) if row.rollout_ms <= t => "met",
        Some(_) => "MISSED",
        None => "-",
    };
    // For K = 1 the refill latency is the handoff (see `timeline::refills`).
    report.line(format!(
        "{:>5} {:>4} {:>9} {:>10.1} {:>9} {:>10} {:>9} {:>6} {:>9} {:>9} {:>10} {:>10} {:>11.3} {:>8.1} {:>8.2} {:>8} {:>8}",
        row.n,
        row.k,
        ms(row.boot_ms),
        row.boot.requests_per_host(),
        ms(row.rollout_ms),
        ms(row.rollout_ms / row.n as f64),
        target.map(ms).unwrap_or_default(),
        met,
        ms(row.rounds() * step.as_secs_f64() * 1000.0),
        row.step.map(|s| ms(s.p50)).unwrap_or_default(),
        row.refill.map(|h| ms(h.p50)).unwrap_or_default(),
        row.refill.map(|h| ms(h.p99)).unwrap_or_default(),
        conflicts_per_fence(row),
        row.traffic.requests_per_host(),
        row.traffic.notifications_per_host,
        ms(row.cpu_ms_per_host),
        row.watches,
    ));
    report.line(format!(
        "      zookeeper server per host: {:.1} writes, {:.1} fsyncs, {:.1} reads (pings included), {:.2} watchers triggered; requests/s peak {:.0} mean {:.0}, writes/s peak {:.0} mean {:.0} ({} samples, {:.0} ms apart); {} fences, {} lost{}",
        row.server.writes,
        row.server.fsyncs,
        row.server.reads,
        row.server.triggered,
        row.rates.packets_peak,
        row.rates.packets_mean,
        row.rates.writes_peak,
        row.rates.writes_mean,
        row.rates.samples,
        row.rates.interval_ms,
        row.fences,
        row.conflicts,
        match row.inverted {
            0 => String::new(),
            i => format!("; {i} refills where the fence was logged before the success that freed its slot"),
        },
    ));
}

fn conflicts_per_fence(row: &Row) -> f64 {
    row.conflicts as f64 / row.fences.max(1) as f64
}

/// Each rollout's peak rates as a fraction of the server's capacity.
fn against_capacity(rows: &[Row], cap: &Capacity, report: &mut Report) {
    for r in rows {
        report.line(format!(
            "N={} K={}: peak {:.0} writes/s = {:.1}% of capacity ({:.0}), peak {:.0} requests/s = {:.1}% of read capacity ({:.0})",
            r.n,
            r.k,
            r.rates.writes_peak,
            100.0 * r.rates.writes_peak / cap.writes_per_s.max(1e-9),
            cap.writes_per_s,
            r.rates.packets_peak,
            100.0 * r.rates.packets_peak / cap.reads_per_s.max(1e-9),
            cap.reads_per_s,
        ));
    }
}

/// Fits rollout time against N and compares per-host traffic at both ends.
fn growth(rows: &[Row], report: &mut Report) {
    let pts: Vec<(f64, f64)> = rows.iter().map(|r| (r.n as f64, r.rollout_ms)).collect();
    let (Some(fit), Some(first), Some(last)) = (linear_fit(&pts), rows.first(), rows.last()) else { return };
    let r2 = r_squared(&pts, fit);
    let ratio = |f: fn(&Row) -> f64| f(last) / f(first);
    let req = ratio(|r| r.traffic.requests_per_host());
    let notif = ratio(|r| r.traffic.notifications_per_host);
    report.line(format!(
        "K={}: rollout time ~ {:.2} ms x N + {:.0} ms (r^2 {:.4}); from N={} to N={}: requests/host x{:.2}, notifications/host x{:.2}, boot requests/host x{:.2}",
        first.k,
        fit.0,
        fit.1,
        r2,
        first.n,
        last.n,
        req,
        notif,
        ratio(|r| r.boot.requests_per_host()),
    ));
    report.set(
        "scale_fit",
        json!({
            "max_parallel": first.k,
            "rollout_ms_per_host_slope": round3(fit.0), "rollout_ms_intercept": round3(fit.1), "r_squared": round3(r2),
            "requests_per_host_ratio": round3(req), "notifications_per_host_ratio": round3(notif),
        }),
    );
}

fn row_json(r: &Row, step: Duration) -> Value {
    let ideal = r.rounds() * step.as_secs_f64() * 1000.0;
    json!({
        "hosts": r.n, "max_parallel": r.k, "quorum": r.n - r.k as usize, "step_ms_configured": step.as_millis() as u64,
        "boot_ms": round3(r.boot_ms), "boot_zk": r.boot.json(),
        "rollout_ms": round3(r.rollout_ms), "rollout_ms_per_host": round3(r.rollout_ms / r.n as f64),
        "target_ms": r.target_ms().map(round3), "target_met": r.target_ms().map(|t| r.rollout_ms <= t),
        "ideal_ms": round3(ideal),
        "step_ms": r.step.map(|s| s.json()),
        "handoff_ms": r.handoff.map(|h| h.json()), "refill_ms": r.refill.map(|h| h.json()),
        "refill_inverted": r.inverted,
        "fences": r.fences, "fence_conflicts": r.conflicts, "conflicts_per_fence": round3(conflicts_per_fence(r)),
        "zk": r.traffic.json(), "zk_server_per_host": r.server.json(), "zk_rates": r.rates.json(),
        "zk_watches_idle": r.watches,
        "cpu_ms_per_host_per_rollout": round3(r.cpu_ms_per_host), "rss_kib_per_host": round3(r.rss_kib_per_host),
    })
}

/// One fleet size: boot, idle, one rollout per K, shut down.
async fn one(n: usize, opts: &Options, bed: &Bed, rec: &Recorder) -> anyhow::Result<Vec<Row>> {
    let root = format!("/scale-{n}");
    let prefix = format!("n{n}-");
    bed.stage(&root, "1", n).await?;
    let rss_before = procfs::footprint(std::process::id()).unwrap_or_default().rss_kib;
    let (stop, stopped) = watch::channel(false);
    zkstat::crst(bed.port)?;
    let boot_start = Instant::now();
    let mut cores = Vec::with_capacity(n);
    for i in 1..=n {
        let id = format!("{prefix}h{i:04}");
        let data = bed.dir.path().join(&root[1..]).join(&id);
        let text = bed.host_config(&bed.zk.connect_string(), &root, &id, &data, &[SERVICE], opts.step);
        cores.push(spawn_core(&text, &id, stopped.clone())?);
    }
    let fleet = Fleet { n, root: &root, prefix: &prefix, boot_start, rss_before };
    let result = measure(&fleet, opts, bed, rec).await;
    let _ = stop.send(true);
    join_cores(cores).await;
    result
}

/// Starts one sidecar core from config `text` in a `host` span named `id`.
pub fn spawn_core(
    text: &str,
    id: &str,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let mut cfg = Config::parse(text, id).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Cores in one process cannot hand over to a new image of themselves.
    cfg.upgrades_itself = false;
    let span = tracing::info_span!("host", id = %id);
    Ok(tokio::spawn(baton_sidecar::daemon::run(cfg, stopped).instrument(span)))
}

/// Waits for stopped cores (30 s each at most), reporting failures on stderr.
pub async fn join_cores(cores: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>) {
    for c in cores {
        match tokio::time::timeout(Duration::from_secs(30), c).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => eprintln!("a sidecar core failed: {err:#}"),
            Ok(Err(err)) => eprintln!("a sidecar core panicked: {err}"),
            Err(_) => eprintln!("a sidecar core did not stop within 30 s"),
        }
    }
}

/// A booting fleet of one size.
struct Fleet<'a> {
    n: usize,
    root: &'a str,
    prefix: &'a str,
    boot_start: Instant,
    rss_before: u64,
}

async fn measure(f: &Fleet<'_>, opts: &Options, bed: &Bed, rec: &Recorder) -> anyhow::Result<Vec<Row>> {
    let (n, root) = (f.n, f.root);
    let me = [bed.own_sid()];
    bed.wait_online(root, "1", n, Duration::from_secs(120 + n as u64 / 2)).await?;
    bed.wait_completed(root, Duration::from_secs(60)).await?;
    let boot_secs = f.boot_start.elapsed().as_secs_f64();
    let boot_totals = zkstat::totals(&zkstat::cons(bed.port)?, &me);
    let (idle_rate, _) = load::idle_rate(bed.port, &me, opts.idle).await?;
    let boot = Traffic::new(boot_totals, boot_secs, idle_rate);
    let watches = load::watch_count(bed.port);
    let mut rows = Vec::new();
    for (j, &k) in opts.parallel.iter().enumerate() {
        let version = (j + 2).to_string();
        let before = procfs::footprint(std::process::id()).unwrap_or_default();
        let s0 = load::Server::now(bed.port)?;
        zkstat::crst(bed.port)?;
        let sampler = Sampler::start(bed.port, SAMPLE)?;
        let t0 = rec.ms(Instant::now());
        let started = Instant::now();
        bed.stage_service(root, SERVICE, &version, n, k).await?;
        let done = bed.wait_completed(root, Duration::from_secs(120 + n as u64)).await;
        let rates = sampler.stop(SAMPLE).await;
        done?;
        let secs = started.elapsed().as_secs_f64();
        let t1 = rec.ms(Instant::now());
        let traffic = Traffic::new(zkstat::totals(&zkstat::cons(bed.port)?, &me), secs, idle_rate);
        let server = load::Server::now(bed.port)?.per_host_since(&s0, n);
        let after = procfs::footprint(std::process::id()).unwrap_or_default();
        let online = bed.online(root).await?;
        let at = online.iter().filter(|(_, v)| *v == version).count();
        anyhow::ensure!(at == n, "only {at} of {n} hosts run release {version} after the rollout");
        let tl = Timeline::build(&rec.rollout(f.prefix, SERVICE, &version, t0, t1));
        if k == 1 && tl.overlaps > 0 {
            eprintln!("WARNING: N={n}: {} fences came before the previous host registered", tl.overlaps);
        }
        let refills = tl.refills(k as usize);
        rows.push(Row {
            n,
            k,
            boot_ms: boot_secs * 1000.0,
            boot,
            rollout_ms: tl.completed_ms.map(|c| c - t0).unwrap_or(secs * 1000.0),
            step: tl.step(),
            handoff: if k == 1 { tl.handoff() } else { None },
            refill: Summary::of(&refills.ms),
            inverted: refills.inverted,
            fences: tl.steps.len(),
            conflicts: tl.conflicts,
            traffic,
            server,
            rates,
            watches,
            cpu_ms_per_host: (after.cpu_ms - before.cpu_ms) / n as f64,
            rss_kib_per_host: before.rss_kib.saturating_sub(f.rss_before) as f64 / n as f64,
        });
    }
    Ok(rows)
}
