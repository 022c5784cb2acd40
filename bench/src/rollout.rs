//! `rollout --hosts N`: N real sidecar processes on one ZooKeeper roll a service
//! whose start, stop and health check take almost no time.
//!
//! # Method
//! 1. Stage release 1 and start the sidecars: each boots it and registers.
//! 2. Idle window: the per-connection counters show the pings' rate, and the
//!    footprint of the sidecars is read (RSS, CPU).
//! 3. Stage release 2 (quorum N-K, max_parallel K, 1 by default: one host down at
//!    a time), wait for the rollout to complete (the bench watches `deploy/` only),
//!    read counters.
//! 4. Handoffs come from the sidecars' JSON logs: "host upgraded" (the success
//!    transaction's reply) of host i and "fenced" (the fence's reply) of host i+1,
//!    microsecond wall-clock timestamps of one machine. With K > 1, the slot refill
//!    latency instead ([`crate::timeline::refills`]). Lost fences ("fence lost;
//!    re-reading") logged between the staging and the completion are counted per
//!    won fence.
//!
//! With `latency` (an added round-trip time), the sidecars reach ZooKeeper through
//! a [`DelayProxy`] adding half of it each way; the bench's own client does not.
//! [`compare`] sets runs at several latencies side by side: the growth of a
//! handoff (or a step) divided by the added round trip is the number of
//! sequential round trips it makes.

use crate::bed::{Bed, SERVICE};
use crate::load::{self, Traffic};
use crate::procfleet::{self, ProcHost};
use crate::procfs::{self, Footprint};
use crate::report::{Report, mib, ms};
use crate::stats::{Summary, round3};
use crate::timeline::{Event, Mark, Timeline};
use crate::zkstat;
use baton_tests::delay::DelayProxy;
use serde_json::json;
use std::time::{Duration, Instant, SystemTime};

/// Options of the `rollout` benchmark.
#[derive(Debug, Clone)]
pub struct Options {
    /// Hosts (sidecar processes).
    pub hosts: usize,
    /// Rollouts to run one after the other (more handoff samples).
    pub rounds: usize,
    /// The idle window.
    pub idle: Duration,
    /// Round-trip time added between the sidecars and ZooKeeper.
    pub latency: Duration,
    /// After the service rollouts, roll a new sidecar release (a copy of the binary)
    /// through the fleet: handover time per host and the service's downtime.
    pub sidecar: bool,
    /// `max_parallel` of the service rollouts (quorum N−K).
    pub max_parallel: u32,
    /// The length of the service's own step work (its start command's).
    pub step: Duration,
}

/// The figures of one run that [`compare`] sets side by side.
#[derive(Debug, Clone, Copy, Default)]
pub struct Figures {
    /// The added round-trip time, ms.
    pub latency_ms: f64,
    /// Rollout time per host (mean over rounds), ms.
    pub per_host_ms: f64,
    /// Handoff p50, ms.
    pub handoff_p50: f64,
    /// Own step p50, ms.
    pub step_p50: f64,
}

const ROOT: &str = "/bench";

/// Runs the benchmark and adds its figures to `report`.
pub async fn run(opts: &Options, bed: &Bed, report: &mut Report) -> anyhow::Result<Figures> {
    anyhow::ensure!(opts.hosts >= 2, "a rollout needs at least 2 hosts");
    let k = opts.max_parallel;
    anyhow::ensure!(k >= 1 && (k as usize) < opts.hosts, "max_parallel goes from 1 to N-1, not {k}");
    let bin = procfleet::sidecar_binary()?;
    let n = opts.hosts;
    let latency_ms = opts.latency.as_secs_f64() * 1000.0;
    report.line(format!(
        "== rollout: {n} sidecar processes, {} rollout(s), max_parallel {k}, step {} ms, {latency_ms:.0} ms round trip added to ZooKeeper, sidecar {}",
        opts.rounds,
        opts.step.as_millis(),
        bin.display()
    ));
    let proxy = if opts.latency.is_zero() {
        None
    } else {
        let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], bed.port));
        Some(DelayProxy::start(upstream, opts.latency / 2)?)
    };
    let connect = proxy.as_ref().map_or_else(|| bed.zk.connect_string(), |p| p.addr().to_string());
    bed.stage(ROOT, "1", n).await?;
    let booting = Instant::now();
    let hosts: Vec<ProcHost> = (1..=n)
        .map(|i| procfleet::spawn(bed, &bin, &connect, ROOT, &format!("h{i:04}"), opts.step))
        .collect::<anyhow::Result<_>>()?;
    bed.wait_online(ROOT, "1", n, Duration::from_secs(60 + n as u64)).await?;
    bed.wait_completed(ROOT, Duration::from_secs(30)).await?;
    report.line(format!("fleet booted at release 1 in {}", ms(booting.elapsed().as_secs_f64() * 1000.0)));

    let me = [bed.own_sid()];
    let (idle_rate, _) = load::idle_rate(bed.port, &me, opts.idle).await?;
    let sample = &hosts[n / 2];
    let sample_id = sample.id.clone();
    let idle = procfs::footprint(sample.pid()).unwrap_or_default();
    let idle_all: Vec<Footprint> = hosts.iter().filter_map(|h| procfs::footprint(h.pid())).collect();
    let watches_idle = load::watch_count(bed.port);

    let mut events: Vec<Event> = Vec::new();
    let mut totals = Vec::new();
    let mut rollout_ms = Vec::new();
    let mut server = Vec::new();
    for round in 0..opts.rounds {
        let version = (round + 2).to_string();
        let s0 = load::Server::now(bed.port)?;
        zkstat::crst(bed.port)?;
        let started = Instant::now();
        let wall = SystemTime::now();
        bed.stage_service(ROOT, SERVICE, &version, n, k).await?;
        bed.wait_completed(ROOT, Duration::from_secs(120 + 2 * n as u64)).await?;
        let secs = started.elapsed().as_secs_f64();
        let end = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.as_secs_f64() * 1000.0;
        totals.push(Traffic::new(zkstat::totals(&zkstat::cons(bed.port)?, &me), secs, idle_rate));
        server.push(load::Server::now(bed.port)?.per_host_since(&s0, n));
        let online = bed.online(ROOT).await?;
        let at = online.iter().filter(|(_, v)| *v == version).count();
        anyhow::ensure!(at == n, "only {at} of {n} hosts run release {version} after the rollout");
        let t0 = wall.duration_since(SystemTime::UNIX_EPOCH)?.as_secs_f64() * 1000.0;
        let mut marks = Vec::new();
        for h in &hosts {
            let mine = procfleet::marks(&h.id, &h.log, &version)?;
            marks.extend(mine.into_iter().filter(|e| e.mark != Mark::FenceLost || (t0..=end).contains(&e.at_ms)));
        }
        let tl = Timeline::build(&marks);
        let done = tl.completed_ms.map(|c| c - t0).unwrap_or(secs * 1000.0);
        rollout_ms.push(done);
        let refill = Summary::of(&tl.refills(k as usize).ms);
        report.line(format!(
            "rollout {}: release {version} on {n} hosts in {} ({} per host); {} {}, p50 {}; {} lost fences",
            round + 1,
            ms(done),
            ms(done / n as f64),
            refill.map_or(0, |s| s.count),
            if k == 1 { "handoffs" } else { "slot refills" },
            refill.map(|s| ms(s.p50)).unwrap_or_default(),
            tl.conflicts,
        ));
        events.extend(marks.into_iter().map(|mut e| {
            e.host = format!("{}#{round}", e.host);
            e
        }));
    }
    let peak = procfs::footprint(sample.pid()).unwrap_or_default();
    let after_all: Vec<Footprint> = hosts.iter().filter_map(|h| procfs::footprint(h.pid())).collect();
    let cpu_rollouts: f64 =
        after_all.iter().map(|f| f.cpu_ms).sum::<f64>() - idle_all.iter().map(|f| f.cpu_ms).sum::<f64>();
    // Last: the sidecars are new processes afterwards.
    let sidecar = match opts.sidecar {
        true => Some(sidecar_rollout(bed, &bin, &hosts, report).await?),
        false => None,
    };

    // Handoffs of every round (hosts renamed per round, so rounds do not mix).
    let mut handoffs = Vec::new();
    let mut steps = Vec::new();
    let mut refills = Vec::new();
    let (mut overlaps, mut inverted, mut fences, mut conflicts) = (0, 0, 0, 0);
    for round in 0..opts.rounds {
        let suffix = format!("#{round}");
        let evs: Vec<Event> = events.iter().filter(|e| e.host.ends_with(&suffix)).cloned().collect();
        let tl = Timeline::build(&evs);
        let r = tl.refills(k as usize);
        refills.extend(r.ms);
        inverted += r.inverted;
        fences += tl.steps.len();
        conflicts += tl.conflicts;
        if k == 1 {
            handoffs.extend(tl.handoffs);
            overlaps += tl.overlaps;
        }
        steps.extend(tl.step_ms);
    }
    let handoff = Summary::of(&handoffs);
    let refill = Summary::of(&refills);
    let step = Summary::of(&steps);
    let per_fence = conflicts as f64 / fences.max(1) as f64;
    let rounds_of_k = n.div_ceil(k as usize) as f64;
    let target = step.map(|s| 1.1 * rounds_of_k * s.p50);
    let ideal = rounds_of_k * opts.step.as_secs_f64() * 1000.0;
    let traffic = average(&totals);
    let rollout = Summary::of(&rollout_ms);
    let server = load::Server::mean(&server);
    drop(hosts);
    drop(proxy);

    if let Some(h) = handoff {
        report.line(format!(
            "handoff latency (host i registered at the new version -> host i+1 fenced), {} samples: p50 {}  p90 {}  p99 {}  max {}  (target p50 <= 10 ms: {})",
            h.count,
            ms(h.p50),
            ms(h.p90),
            ms(h.p99),
            ms(h.max),
            match (opts.latency.is_zero(), h.p50 <= 10.0) {
                (false, _) => "for loopback only",
                (true, true) => "met",
                (true, false) => "MISSED",
            }
        ));
    }
    if let (Some(r), true) = (refill, k > 1) {
        report.line(format!(
            "slot refill latency (a host registered at the new version -> the fence taking its slot), {} samples: p50 {}  p90 {}  p99 {}  max {}{}",
            r.count,
            ms(r.p50),
            ms(r.p90),
            ms(r.p99),
            ms(r.max),
            match inverted {
                0 => String::new(),
                i => format!("; {i} fences logged before the success that freed their slot"),
            }
        ));
    }
    if let Some(s) = step {
        report.line(format!(
            "own step (fenced -> registered at the new version): p50 {}  p99 {}",
            ms(s.p50),
            ms(s.p99)
        ));
    }
    if let (Some(t), Some(r)) = (target, rollout) {
        report.line(format!(
            "rollout time {} (mean over rounds) against 1.1 x ceil(N/K) x step p50 = 1.1 x {rounds_of_k:.0} x {} = {}: {}; ideal ceil(N/K) x step-ms = {}",
            ms(r.mean),
            ms(step.map_or(0.0, |s| s.p50)),
            ms(t),
            if r.mean <= t { "met" } else { "MISSED" },
            ms(ideal),
        ));
    }
    report.line(format!(
        "fence conflicts: {conflicts} lost fences for {fences} fences won = {per_fence:.3} per fence (goal <= 1: {})",
        if per_fence <= 1.0 { "met" } else { "MISSED" }
    ));
    if overlaps > 0 {
        report.line(format!("WARNING: {overlaps} fences came before the previous host registered"));
    }
    report.line(format!(
        "zookeeper per host per rollout: {:.1} requests (+{:.1} pings), {:.2} watch notifications; server watches idle: {watches_idle}",
        traffic.requests_per_host(),
        traffic.pings_per_host,
        traffic.notifications_per_host
    ));
    report.line(format!(
        "zookeeper server per host per rollout: {:.1} writes, {:.1} fsyncs, {:.1} reads (pings included), {:.2} watchers triggered",
        server.writes, server.fsyncs, server.reads, server.triggered
    ));
    report.line(format!(
        "sidecar {} footprint: idle RSS {} (target <= 10 MiB: {}), peak RSS {}, threads {}; CPU {:.0} ms idle-to-boot, {:.1} ms per host per rollout (all sidecars)",
        sample_id,
        mib(idle.rss_kib),
        if idle.rss_kib <= 10 * 1024 { "met" } else { "MISSED" },
        mib(peak.hwm_kib),
        idle.threads,
        idle.cpu_ms,
        cpu_rollouts / (n * opts.rounds) as f64,
    ));
    let max_idle = idle_all.iter().map(|f| f.rss_kib).max().unwrap_or(0);
    let mean_idle = idle_all.iter().map(|f| f.rss_kib).sum::<u64>() as f64 / idle_all.len().max(1) as f64;
    report.line(format!("idle RSS over all sidecars: mean {:.1} MiB, max {}", mean_idle / 1024.0, mib(max_idle)));
    let key = if opts.latency.is_zero() { "rollout".to_string() } else { format!("rollout_rtt_{latency_ms:.0}ms") };
    report.set(
        &key,
        json!({
            "hosts": n, "rounds": opts.rounds, "service": SERVICE, "added_rtt_ms": latency_ms,
            "max_parallel": k, "quorum": n - k as usize, "step_ms_configured": opts.step.as_millis() as u64,
            "target_ms": target.map(round3), "target_met": target.zip(rollout).map(|(t, r)| r.mean <= t),
            "ideal_ms": round3(ideal),
            "refill_ms": refill.map(|s| s.json()), "refill_inverted": inverted,
            "fences": fences, "fence_conflicts": conflicts, "conflicts_per_fence": round3(per_fence),
            "rollout_ms": rollout.map(|s| s.json()),
            "rollout_ms_per_host": rollout.map(|s| round3(s.mean / n as f64)),
            "handoff_ms": handoff.map(|s| s.json()),
            "step_ms": step.map(|s| s.json()),
            "overlaps": overlaps,
            "zk": traffic.json(),
            "zk_server_per_host": server.json(),
            "zk_watches_idle": watches_idle,
            "sidecar_rollout": sidecar,
            "sidecar": {
                "idle_rss_kib": idle.rss_kib, "peak_rss_kib": peak.hwm_kib, "threads": idle.threads,
                "cpu_ms_at_idle": round3(idle.cpu_ms), "cpu_ms_total": round3(peak.cpu_ms),
                "cpu_ms_per_host_per_rollout": round3(cpu_rollouts / (n * opts.rounds) as f64),
                "idle_rss_kib_mean_all": round3(mean_idle), "idle_rss_kib_max_all": max_idle,
            },
        }),
    );
    Ok(Figures {
        latency_ms,
        per_host_ms: rollout.map_or(0.0, |s| s.mean / n as f64),
        handoff_p50: handoff.map_or(0.0, |s| s.p50),
        step_p50: step.map_or(0.0, |s| s.p50),
    })
}

/// Rolls a new sidecar release (a copy of `bin`, a real upgrade for the protocol)
/// through the fleet, one host at a time, and reports: its time per host, each
/// host's handover (the old image's fence, its last write, to the new image's
/// registration at the new version, both in the host's log: the new image writes to
/// the same output), and the service's downtime from ZooKeeper's transaction log
/// (time any `current/svc/<host>` was absent during the rollout).
async fn sidecar_rollout(
    bed: &Bed,
    bin: &std::path::Path,
    hosts: &[ProcHost],
    report: &mut Report,
) -> anyhow::Result<serde_json::Value> {
    let n = hosts.len();
    let version = "sidecar-2";
    let dir = bed.dir.path().join("artifacts").join(version);
    std::fs::create_dir_all(&dir)?;
    let copy = dir.join("sidecar");
    std::fs::copy(bin, &copy)?;
    let artifact = baton_tests::fleet::file_artifact(&copy);
    let layout = znode_schema::Layout::new(ROOT)?;
    let policy = znode_schema::Policy {
        quorum: znode_schema::Quorum::Count(n.saturating_sub(1) as u32),
        max_parallel: 1,
        ..znode_schema::Policy::default()
    };
    let history =
        |dir: &std::path::Path| baton_tests::txnlog::under(baton_tests::txnlog::read_cluster(&[dir.into()]), ROOT);
    let mark = history(&bed.zk.data_dir()).last().map_or(0, |t| t.zxid);
    let started = Instant::now();
    let wall = SystemTime::now();
    baton_tests::fleet::stage(&bed.client, &layout, znode_schema::SIDECAR_SERVICE, version, &artifact, policy).await;
    bed.wait_completed(ROOT, Duration::from_secs(120 + 4 * n as u64)).await?;
    let secs = started.elapsed().as_secs_f64();
    let mut marks = Vec::new();
    for h in hosts {
        marks.extend(procfleet::marks(&h.id, &h.log, version)?);
    }
    let tl = Timeline::build(&marks);
    let t0 = wall.duration_since(SystemTime::UNIX_EPOCH)?.as_secs_f64() * 1000.0;
    let done = tl.completed_ms.map(|c| c - t0).unwrap_or(secs * 1000.0);
    // From the first fence: every host downloads and verifies the binary first.
    let first_fence = tl.steps.iter().map(|s| s.1).fold(f64::NAN, f64::min);
    let rolling = tl.completed_ms.map(|c| c - first_fence).filter(|r| r.is_finite()).unwrap_or(done);
    let handover = Summary::of(&tl.step_ms);
    let handoff = Summary::of(&tl.handoffs);
    // The service's registrations during the sidecar rollout, from the log.
    let txns: Vec<_> = history(&bed.zk.data_dir()).into_iter().filter(|t| t.zxid > mark).collect();
    let prefix = format!("{}/", layout.current_service(SERVICE));
    let mut gone: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    let (mut down_ms, mut absences, mut take_overs) = (0i64, 0usize, 0usize);
    for t in &txns {
        let mut touched = std::collections::BTreeSet::new();
        for op in &t.ops {
            match op {
                baton_tests::txnlog::Op::Delete { path, .. } if path.starts_with(&prefix) => {
                    gone.insert(path.clone(), t.time_ms);
                    touched.insert(path.clone());
                }
                baton_tests::txnlog::Op::Create { path, .. } if path.starts_with(&prefix) => {
                    if let Some(since) = gone.remove(path) {
                        if touched.contains(path) {
                            take_overs += 1;
                        } else {
                            down_ms += t.time_ms - since;
                        }
                    }
                }
                _ => {}
            }
        }
        // Absent at the end of a transaction: downtime starts then.
        absences += gone.keys().filter(|p| touched.contains(*p)).count();
    }
    report.line(format!(
        "sidecar rollout: {version} on {n} hosts in {} ({} from the first fence: {} per host); handover (fence -> new image registered) p50 {}  p99 {}; handoff p50 {}",
        ms(done),
        ms(rolling),
        ms(rolling / n as f64),
        handover.map(|s| ms(s.p50)).unwrap_or_default(),
        handover.map(|s| ms(s.p99)).unwrap_or_default(),
        handoff.map(|s| ms(s.p50)).unwrap_or_default(),
    ));
    report.line(format!(
        "service during the sidecar rollout: {take_overs} registrations taken over in one transaction, {absences} absent after a transaction, downtime {down_ms} ms (target 0: {})",
        if absences == 0 && down_ms == 0 { "met" } else { "MISSED" }
    ));
    Ok(json!({
        "version": version, "rollout_ms": round3(done), "rolling_ms": round3(rolling), "rolling_ms_per_host": round3(rolling / n as f64),
        "handover_ms": handover.map(|s| s.json()), "handoff_ms": handoff.map(|s| s.json()),
        "service_take_overs": take_overs, "service_absences": absences, "service_downtime_ms": down_ms,
    }))
}

/// Sets runs at several added round-trip times side by side, with the sequential
/// round trips of a handoff and a step: their growth over the run without added
/// latency, divided by the added round trip.
pub fn compare(runs: &[Figures], report: &mut Report) {
    let Some(base) = runs.iter().find(|f| f.latency_ms == 0.0).copied() else { return };
    if runs.len() < 2 {
        return;
    }
    report.line("added RTT   per host   handoff p50   step p50   round trips: handoff  step");
    let mut rows = Vec::new();
    for f in runs {
        let trips = |x: f64, b: f64| (f.latency_ms > 0.0).then(|| (x - b) / f.latency_ms);
        let (h, s) = (trips(f.handoff_p50, base.handoff_p50), trips(f.step_p50, base.step_p50));
        let show = |t: Option<f64>| t.map_or_else(|| "-".to_string(), |t| format!("{t:.1}"));
        report.line(format!(
            "{:>6.0} ms {:>10} {:>13} {:>10}   {:>19} {:>5}",
            f.latency_ms,
            ms(f.per_host_ms),
            ms(f.handoff_p50),
            ms(f.step_p50),
            show(h),
            show(s)
        ));
        rows.push(json!({
            "added_rtt_ms": f.latency_ms, "per_host_ms": round3(f.per_host_ms),
            "handoff_p50_ms": round3(f.handoff_p50), "step_p50_ms": round3(f.step_p50),
            "handoff_round_trips": h.map(round3), "step_round_trips": s.map(round3),
        }));
    }
    report.set("latency", json!(rows));
}

/// The mean of several rounds' traffic.
pub fn average(ts: &[Traffic]) -> Traffic {
    let k = ts.len().max(1) as f64;
    Traffic {
        hosts: ts.first().map(|t| t.hosts).unwrap_or(0),
        packets_per_host: ts.iter().map(|t| t.packets_per_host).sum::<f64>() / k,
        pings_per_host: ts.iter().map(|t| t.pings_per_host).sum::<f64>() / k,
        notifications_per_host: ts.iter().map(|t| t.notifications_per_host).sum::<f64>() / k,
    }
}
