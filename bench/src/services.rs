//! `scale --services S [--services-per-host P] [--rollouts R]`: S services on H
//! hosts (sidecar cores in this process, as in [`crate::scale`]) on one ZooKeeper,
//! each host running P of them, assigned round-robin ([`assign`]).
//!
//! # Method
//! 1. Stage release 1 of every service, start the H cores (each one config with P
//!    `[[service]]` tables), wait until every service has all its hosts registered
//!    and no deploy entry remains: the boot time and its requests per host.
//! 2. Idle window: packets and notifications per host per second (the sessions'
//!    counters, `crst` then `cons`). Then, idle: `mntr`'s `zk_watch_count`,
//!    `zk_znode_count`, `zk_approximate_data_size`, the ZooKeeper JVM's RSS
//!    (`/proc/<pid>/status` of the server process), and the bench process's RSS
//!    growth since before the cores started, per host.
//! 3. Stage release 2 of the first R services back to back (R staging
//!    transactions): their deploy entries queue in staging order, the first staged
//!    rolls first. Wait until no deploy entry remains.
//! 4. Per service, from the bench's tracing layer: its rollout time (from before
//!    the first staging to its "rollout completed"), its own span (its first fence
//!    to its completion) and step; between consecutive services A and B in the
//!    queue the **head-to-head handoff**: A's "rollout completed" (the host that
//!    deleted A's deploy entry got the reply) to B's first fence, and from A's
//!    last "host upgraded" to B's first fence.

use crate::bed::Bed;
use crate::load::{self, Traffic};
use crate::procfs;
use crate::recorder::Recorder;
use crate::report::{Report, mib, ms};
use crate::sampler::Sampler;
use crate::scale::{self, SAMPLE, join_cores, spawn_core};
use crate::stats::{Summary, round3};
use crate::timeline::Timeline;
use crate::zkstat;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use znode_schema::Layout;

/// Options of the many-services benchmark.
#[derive(Debug, Clone)]
pub struct Options {
    /// Hosts (sidecar cores).
    pub hosts: usize,
    /// Services.
    pub services: usize,
    /// Services per host.
    pub per_host: usize,
    /// Services staged at once.
    pub rollouts: usize,
    /// `max_parallel` of each rollout (quorum: the service's hosts − K).
    pub k: u32,
    /// The length of each service's own step work.
    pub step: Duration,
    /// The idle window.
    pub idle: Duration,
}

impl Options {
    /// From `scale`'s options: its first fleet size and first `max_parallel`.
    pub fn new(
        scale: &scale::Options,
        services: usize,
        per_host: Option<u32>,
        rollouts: usize,
    ) -> anyhow::Result<Self> {
        let hosts = *scale.sizes.first().ok_or_else(|| anyhow::anyhow!("--hosts is needed"))?;
        let per_host = per_host.map_or(services, |p| p as usize);
        anyhow::ensure!(per_host <= services, "--services-per-host {per_host} is more than --services {services}");
        anyhow::ensure!(rollouts <= services, "--rollouts {rollouts} is more than --services {services}");
        let k = scale.parallel.first().copied().unwrap_or(1);
        let least = hosts * per_host / services;
        anyhow::ensure!(least > k as usize, "each service has {least} hosts: too few for max_parallel {k}");
        Ok(Options { hosts, services, per_host, rollouts, k, step: scale.step, idle: scale.idle })
    }
}

/// The services (indices) each host runs: host `h` runs services `h·P … h·P+P−1`
/// modulo S, so every host runs P distinct services (P ≤ S) and, over the fleet,
/// each service runs on `H·P/S` hosts (rounded down or up).
pub fn assign(hosts: usize, services: usize, per_host: usize) -> Vec<Vec<usize>> {
    (0..hosts).map(|h| (0..per_host).map(|j| (h * per_host + j) % services.max(1)).collect()).collect()
}

/// Host counts per service of an assignment.
pub fn hosts_per_service(assignment: &[Vec<usize>], services: usize) -> Vec<usize> {
    let mut count = vec![0; services];
    for s in assignment.iter().flatten() {
        count[*s] += 1;
    }
    count
}

fn name(s: usize) -> String {
    format!("s{s:03}")
}

/// Runs the benchmark and adds its figures to `report`.
pub async fn run(opts: &Options, bed: &Bed, report: &mut Report) -> anyhow::Result<()> {
    let rec = Recorder::global();
    let (h, s, p) = (opts.hosts, opts.services, opts.per_host);
    let root = format!("/services-{s}x{h}");
    let prefix = format!("m{s}x{h}-");
    let assignment = assign(h, s, p);
    let counts = hosts_per_service(&assignment, s);
    report.line(format!(
        "== scale --services: {s} services on {h} hosts (sidecar cores), {p} per host, {}–{} hosts per service; {} rollouts staged at once, max_parallel {}, step {} ms",
        counts.iter().min().unwrap_or(&0),
        counts.iter().max().unwrap_or(&0),
        opts.rollouts,
        opts.k,
        opts.step.as_millis()
    ));
    for (j, &c) in counts.iter().enumerate() {
        bed.stage_service(&root, &name(j), "1", c, 1).await?;
    }
    let rss_before = procfs::footprint(std::process::id()).unwrap_or_default().rss_kib;
    let (stop, stopped) = watch::channel(false);
    zkstat::crst(bed.port)?;
    let boot_start = Instant::now();
    let mut cores = Vec::with_capacity(h);
    for (i, mine) in assignment.iter().enumerate() {
        let id = format!("{prefix}h{:04}", i + 1);
        let data = bed.dir.path().join(&root[1..]).join(&id);
        let names: Vec<String> = mine.iter().map(|&j| name(j)).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let text = bed.host_config(&bed.zk.connect_string(), &root, &id, &data, &refs, opts.step);
        cores.push(spawn_core(&text, &id, stopped.clone())?);
    }
    let ctx = Ctx { root: &root, prefix: &prefix, counts: &counts, boot_start, rss_before };
    let result = measure(opts, &ctx, bed, rec, report).await;
    let _ = stop.send(true);
    join_cores(cores).await;
    result
}

struct Ctx<'a> {
    root: &'a str,
    prefix: &'a str,
    counts: &'a [usize],
    boot_start: Instant,
    rss_before: u64,
}

/// Waits until every service has its hosts registered (children of
/// `current/<svc>`: at release 1 every registration is at 1).
async fn wait_registered(bed: &Bed, root: &str, counts: &[usize], patience: Duration) -> anyhow::Result<()> {
    let layout = Layout::new(root)?;
    let deadline = Instant::now() + patience;
    let mut next = 0;
    while next < counts.len() {
        let have = bed.client.list_children(&layout.current_service(&name(next))).await.unwrap_or_default().len();
        if have >= counts[next] {
            next += 1;
            continue;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} has {have} of {} hosts after {patience:?}",
            name(next),
            counts[next]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

async fn measure(opts: &Options, c: &Ctx<'_>, bed: &Bed, rec: &Recorder, report: &mut Report) -> anyhow::Result<()> {
    let h = opts.hosts;
    let me = [bed.own_sid()];
    let patience = Duration::from_secs(300 + (h * opts.per_host) as u64 / 10);
    wait_registered(bed, c.root, c.counts, patience).await?;
    bed.wait_completed(c.root, patience).await?;
    let boot_secs = c.boot_start.elapsed().as_secs_f64();
    let boot_totals = zkstat::totals(&zkstat::cons(bed.port)?, &me);
    let (idle_rate, idle_totals) = load::idle_rate(bed.port, &me, opts.idle).await?;
    let boot = Traffic::new(boot_totals, boot_secs, idle_rate);
    let idle_notif = idle_totals.notifications as f64 / idle_totals.connections.max(1) as f64 / opts.idle.as_secs_f64();
    let m = zkstat::mntr(bed.port)?;
    let get = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
    let (watches, znodes, bytes) = (get("zk_watch_count"), get("zk_znode_count"), get("zk_approximate_data_size"));
    let jvm = procfs::footprint(bed.zk.pid()).unwrap_or_default();
    let bench = procfs::footprint(std::process::id()).unwrap_or_default();
    let rss_per_host = bench.rss_kib.saturating_sub(c.rss_before) as f64 / h as f64;
    report.line(format!(
        "boot: {} ({:.1} requests per host); idle: {:.3} packets/host/s, {:.3} notifications/host/s",
        ms(boot_secs * 1000.0),
        boot.requests_per_host(),
        idle_rate,
        idle_notif
    ));
    report.line(format!(
        "zookeeper idle: {watches} watches ({:.1} per host), {znodes} znodes, {:.1} MiB approximate data; JVM RSS {} (peak {}); bench RSS {} = {:.0} KiB per host ({:.1} KiB per host-service)",
        watches / h as f64,
        bytes / 1048576.0,
        mib(jvm.rss_kib),
        mib(jvm.hwm_kib),
        mib(bench.rss_kib),
        rss_per_host,
        rss_per_host / opts.per_host as f64,
    ));

    // Several rollouts staged back to back: they queue in deploy order.
    let staged: Vec<usize> = (0..opts.rollouts).collect();
    let cpu0 = procfs::footprint(std::process::id()).unwrap_or_default().cpu_ms;
    let s0 = load::Server::now(bed.port)?;
    zkstat::crst(bed.port)?;
    let sampler = Sampler::start(bed.port, SAMPLE)?;
    let t0 = rec.ms(Instant::now());
    let started = Instant::now();
    for &j in &staged {
        bed.stage_service(c.root, &name(j), "2", c.counts[j], opts.k).await?;
    }
    let staging_ms = started.elapsed().as_secs_f64() * 1000.0;
    let done = bed.wait_completed(c.root, Duration::from_secs(300 + h as u64)).await;
    let rates = sampler.stop(SAMPLE).await;
    done?;
    let secs = started.elapsed().as_secs_f64();
    let t1 = rec.ms(Instant::now());
    let traffic = Traffic::new(zkstat::totals(&zkstat::cons(bed.port)?, &me), secs, idle_rate);
    let server = load::Server::now(bed.port)?.per_host_since(&s0, h);
    let cpu = procfs::footprint(std::process::id()).unwrap_or_default().cpu_ms - cpu0;
    let mut rows = Vec::new();
    let mut prev: Option<(String, Timeline)> = None;
    let mut h2h = Vec::new();
    for &j in &staged {
        let svc = name(j);
        let online = bed.online_of(c.root, &svc).await?;
        let at = online.iter().filter(|(_, v)| v == "2").count();
        anyhow::ensure!(at == c.counts[j], "only {at} of {} hosts run {svc} 2 after the rollouts", c.counts[j]);
        let tl = Timeline::build(&rec.rollout(c.prefix, &svc, "2", t0, t1));
        let span = tl.span();
        let head = prev.as_ref().and_then(|(_, a)| {
            let first = span?.0;
            Some((first - a.completed_ms?, first - a.span()?.1))
        });
        if let Some((from_completed, _)) = head {
            h2h.push(from_completed);
        }
        let line = format!(
            "{svc}: {} hosts, rollout {} from staging ({} from its first fence), step p50 {}, {} fences {} lost{}",
            c.counts[j],
            tl.completed_ms.map(|t| ms(t - t0)).unwrap_or_default(),
            tl.completed_ms.zip(span).map(|(t, s)| ms(t - s.0)).unwrap_or_default(),
            tl.step().map(|s| ms(s.p50)).unwrap_or_default(),
            tl.steps.len(),
            tl.conflicts,
            match (&prev, head) {
                (Some((a, _)), Some((x, y))) => format!(
                    "; head-to-head from {a}: completed -> first fence {} (goal <= 10 ms: {}), last host upgraded -> first fence {}",
                    ms(x),
                    if x <= 10.0 { "met" } else { "MISSED" },
                    ms(y)
                ),
                _ => String::new(),
            }
        );
        report.line(line);
        rows.push(json!({
            "service": svc, "hosts": c.counts[j],
            "rollout_ms": tl.completed_ms.map(|t| round3(t - t0)),
            "own_rollout_ms": tl.completed_ms.zip(span).map(|(t, s)| round3(t - s.0)),
            "step_ms": tl.step().map(|s| s.json()), "fences": tl.steps.len(), "fence_conflicts": tl.conflicts,
            "head_to_head_ms": head.map(|(x, _)| round3(x)), "last_upgraded_to_first_fence_ms": head.map(|(_, y)| round3(y)),
        }));
        prev = Some((svc, tl));
    }
    let h2h = Summary::of(&h2h);
    report.line(format!(
        "{} rollouts staged in {} all completed in {}; zookeeper per host: {:.1} requests, {:.2} notifications; server per host: {:.1} writes, {:.1} fsyncs, {:.1} reads, {:.2} watchers triggered; requests/s peak {:.0} mean {:.0}, writes/s peak {:.0} mean {:.0}; bench CPU {:.1} ms per host",
        staged.len(),
        ms(staging_ms),
        ms(secs * 1000.0),
        traffic.requests_per_host(),
        traffic.notifications_per_host,
        server.writes,
        server.fsyncs,
        server.reads,
        server.triggered,
        rates.packets_peak,
        rates.packets_mean,
        rates.writes_peak,
        rates.writes_mean,
        cpu / h as f64,
    ));
    report.set(
        "services",
        json!({
            "hosts": h, "services": opts.services, "services_per_host": opts.per_host,
            "hosts_per_service_min": c.counts.iter().min(), "hosts_per_service_max": c.counts.iter().max(),
            "max_parallel": opts.k, "step_ms_configured": opts.step.as_millis() as u64,
            "boot_ms": round3(boot_secs * 1000.0), "boot_zk": boot.json(),
            "idle_packets_per_host_per_s": round3(idle_rate), "idle_notifications_per_host_per_s": round3(idle_notif),
            "zk_watch_count": watches, "zk_znode_count": znodes, "zk_approximate_data_size": bytes,
            "zk_jvm_rss_kib": jvm.rss_kib, "zk_jvm_hwm_kib": jvm.hwm_kib,
            "bench_rss_kib": bench.rss_kib, "bench_rss_kib_per_host": round3(rss_per_host),
            "rollouts": Value::Array(rows), "head_to_head_ms": h2h.map(|s| s.json()),
            "staging_ms": round3(staging_ms), "all_rollouts_ms": round3(secs * 1000.0),
            "zk": traffic.json(), "zk_server_per_host": server.json(), "zk_rates": rates.json(),
            "cpu_ms_per_host": round3(cpu / h as f64),
        }),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_gives_each_host_distinct_services_and_each_service_its_share() {
        for (h, s, p) in [(100, 100, 100), (20, 10, 5), (100, 100, 10), (7, 3, 2), (10, 4, 1)] {
            let a = assign(h, s, p);
            assert_eq!(a.len(), h);
            for mine in &a {
                let mut d = mine.clone();
                d.sort();
                d.dedup();
                assert_eq!(d.len(), p, "{h} {s} {p}: {mine:?}");
            }
            let counts = hosts_per_service(&a, s);
            let (lo, hi) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
            assert!(lo == h * p / s && hi <= lo + 1, "{h} {s} {p}: {counts:?}");
            assert_eq!(counts.iter().sum::<usize>(), h * p);
        }
        assert_eq!(assign(3, 4, 2), vec![vec![0, 1], vec![2, 3], vec![0, 1]]);
    }
}
