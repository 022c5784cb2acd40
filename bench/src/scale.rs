//! `scale --hosts 25,50,100,...`: for each fleet size N, N sidecar cores run in this
//! process, each the sidecar's own daemon (`baton_sidecar::daemon::run`) with its
//! own config, data dir, supervisor and ZooKeeper session, exactly as N sidecar
//! processes would, minus N runtimes and N copies of the binary.
//!
//! For each N: boot the fleet at release 1 (its ZooKeeper traffic is reported
//! too), measure the pings over an idle window, roll out release 2 and report its
//! time, handoffs and ZooKeeper traffic per host. Then fit rollout time against N.

use crate::bed::Bed;
use crate::load::{self, Traffic};
use crate::procfs;
use crate::recorder::Recorder;
use crate::report::{Report, ms};
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
}

/// The figures of one fleet size.
#[derive(Debug, Clone)]
struct Row {
    n: usize,
    boot_ms: f64,
    boot: Traffic,
    rollout_ms: f64,
    handoff: Option<Summary>,
    traffic: Traffic,
    watches: f64,
    cpu_ms_per_host: f64,
    rss_kib_per_host: f64,
}

/// Runs the benchmark and adds its figures to `report`.
pub async fn run(opts: &Options, bed: &Bed, report: &mut Report) -> anyhow::Result<()> {
    let rec = Recorder::global();
    report.line("== scale: sidecar cores in one process, one ZooKeeper session each");
    report.line(format!(
        "{:>5} {:>9} {:>10} {:>9} {:>10} {:>9} {:>9} {:>9} {:>8} {:>8} {:>9}",
        "N",
        "boot",
        "boot req/h",
        "rollout",
        "per host",
        "hand p50",
        "hand p99",
        "req/host",
        "notif/h",
        "cpu/h",
        "watches"
    ));
    let mut rows = Vec::new();
    for &n in &opts.sizes {
        anyhow::ensure!((2..=1000).contains(&n), "fleet sizes go from 2 to 1000, not {n}");
        let row = one(n, opts.idle, bed, rec).await?;
        report.line(format!(
            "{:>5} {:>9} {:>10.1} {:>9} {:>10} {:>9} {:>9} {:>9.1} {:>8.2} {:>8} {:>9}",
            n,
            ms(row.boot_ms),
            row.boot.requests_per_host(),
            ms(row.rollout_ms),
            ms(row.rollout_ms / n as f64),
            row.handoff.map(|h| ms(h.p50)).unwrap_or_default(),
            row.handoff.map(|h| ms(h.p99)).unwrap_or_default(),
            row.traffic.requests_per_host(),
            row.traffic.notifications_per_host,
            ms(row.cpu_ms_per_host),
            row.watches,
        ));
        rows.push(row);
    }
    growth(&rows, report);
    report.set("scale", Value::Array(rows.iter().map(row_json).collect()));
    Ok(())
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
        "rollout time ~ {:.2} ms x N + {:.0} ms (r^2 {:.4}); from N={} to N={}: requests/host x{:.2}, notifications/host x{:.2}, boot requests/host x{:.2}",
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
            "rollout_ms_per_host_slope": round3(fit.0), "rollout_ms_intercept": round3(fit.1), "r_squared": round3(r2),
            "requests_per_host_ratio": round3(req), "notifications_per_host_ratio": round3(notif),
        }),
    );
}

fn row_json(r: &Row) -> Value {
    json!({
        "hosts": r.n, "boot_ms": round3(r.boot_ms), "boot_zk": r.boot.json(),
        "rollout_ms": round3(r.rollout_ms), "rollout_ms_per_host": round3(r.rollout_ms / r.n as f64),
        "handoff_ms": r.handoff.map(|h| h.json()), "zk": r.traffic.json(), "zk_watches_idle": r.watches,
        "cpu_ms_per_host_per_rollout": round3(r.cpu_ms_per_host), "rss_kib_per_host": round3(r.rss_kib_per_host),
    })
}

/// One fleet size: boot, idle, roll out, shut down.
async fn one(n: usize, idle: Duration, bed: &Bed, rec: &Recorder) -> anyhow::Result<Row> {
    let root = format!("/scale-{n}");
    let prefix = format!("n{n}-");
    let me = [bed.own_sid()];
    bed.stage(&root, "1", n).await?;
    let rss_before = procfs::footprint(std::process::id()).unwrap_or_default().rss_kib;
    let (stop, stopped) = watch::channel(false);
    zkstat::crst(bed.port)?;
    let boot_start = Instant::now();
    let mut cores = Vec::with_capacity(n);
    for i in 1..=n {
        let id = format!("{prefix}h{i:04}");
        let data = bed.dir.path().join(&root[1..]).join(&id);
        let mut cfg = Config::parse(&bed.config(&root, &id, &data), &id).map_err(|e| anyhow::anyhow!("{e}"))?;
        // Cores in one process cannot hand over to a new image of themselves.
        cfg.upgrades_itself = false;
        let span = tracing::info_span!("host", id = %id);
        cores.push(tokio::spawn(baton_sidecar::daemon::run(cfg, stopped.clone()).instrument(span)));
    }
    let result = measure(n, idle, bed, rec, &root, &prefix, &me, boot_start, rss_before).await;
    let _ = stop.send(true);
    for c in cores {
        match tokio::time::timeout(Duration::from_secs(30), c).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => eprintln!("a sidecar core failed: {err:#}"),
            Ok(Err(err)) => eprintln!("a sidecar core panicked: {err}"),
            Err(_) => eprintln!("a sidecar core did not stop within 30 s"),
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    n: usize,
    idle: Duration,
    bed: &Bed,
    rec: &Recorder,
    root: &str,
    prefix: &str,
    me: &[i64],
    boot_start: Instant,
    rss_before: u64,
) -> anyhow::Result<Row> {
    bed.wait_online(root, "1", n, Duration::from_secs(120 + n as u64 / 2)).await?;
    bed.wait_completed(root, Duration::from_secs(60)).await?;
    let boot_secs = boot_start.elapsed().as_secs_f64();
    let boot_totals = zkstat::totals(&zkstat::cons(bed.port)?, me);
    let (idle_rate, _) = load::idle_rate(bed.port, me, idle).await?;
    let boot = Traffic::new(boot_totals, boot_secs, idle_rate);
    let watches = load::watch_count(bed.port);
    let before = procfs::footprint(std::process::id()).unwrap_or_default();

    zkstat::crst(bed.port)?;
    let t0 = rec.ms(Instant::now());
    let started = Instant::now();
    bed.stage(root, "2", n).await?;
    bed.wait_completed(root, Duration::from_secs(120 + n as u64)).await?;
    let secs = started.elapsed().as_secs_f64();
    let traffic = Traffic::new(zkstat::totals(&zkstat::cons(bed.port)?, me), secs, idle_rate);
    let after = procfs::footprint(std::process::id()).unwrap_or_default();
    let online = bed.online(root).await?;
    let at = online.iter().filter(|(_, v)| v == "2").count();
    anyhow::ensure!(at == n, "only {at} of {n} hosts run release 2 after the rollout");
    let tl = Timeline::build(&rec.marks(prefix, "2"));
    if tl.overlaps > 0 {
        eprintln!("WARNING: N={n}: {} fences came before the previous host registered", tl.overlaps);
    }
    Ok(Row {
        n,
        boot_ms: boot_secs * 1000.0,
        boot,
        rollout_ms: tl.completed_ms.map(|c| c - t0).unwrap_or(secs * 1000.0),
        handoff: tl.handoff(),
        traffic,
        watches,
        cpu_ms_per_host: (after.cpu_ms - before.cpu_ms) / n as f64,
        rss_kib_per_host: before.rss_kib.saturating_sub(rss_before) as f64 / n as f64,
    })
}
