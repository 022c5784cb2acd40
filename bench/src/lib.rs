//! baton's benchmark program. Every figure is measured against real processes: a
//! real ZooKeeper (started by the test harness's launcher), real sidecars (as
//! processes, or as sidecar cores in this process each with its own session), a
//! real HTTP transfer. Nothing here runs as part of the test suite.
//!
//! - [`rollout`]: N sidecar processes, handoff latency, traffic, footprint.
//! - [`scale`]: in-process sidecar cores for several N and `max_parallel` K, growth
//!   of time and traffic, ZooKeeper's peak rate.
//! - [`services`]: many services on in-process sidecar cores, queued rollouts.
//! - [`capacity`]: what the ZooKeeper server sustains, writes and reads.
//! - [`download`]: fetch, verify and install throughput against curl pipelines.
//! - [`distribute`]: one release to N hosts from a rate-limited origin, peers on and off.

pub mod bed;
pub mod capacity;
pub mod cli;
pub mod distribute;
pub mod download;
pub mod load;
pub mod procfleet;
pub mod procfs;
pub mod recorder;
pub mod report;
pub mod rollout;
pub mod sampler;
pub mod scale;
pub mod services;
pub mod stats;
pub mod timeline;
pub mod zkserver;
pub mod zkstat;

use bed::Bed;
use cli::{Cli, Command};
use report::Report;
use std::time::Duration;

/// Runs the benchmark `cli` asks for.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let mut report = Report::default();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    match cli.command {
        Command::Rollout { hosts, rounds, idle_secs, latency_ms, sidecar, max_parallel, step_ms } => {
            let mut figures = Vec::new();
            for latency in latency_ms {
                let opts = rollout::Options {
                    hosts: hosts.into(),
                    rounds: rounds.into(),
                    idle: Duration::from_secs(idle_secs),
                    latency: Duration::from_millis(latency),
                    sidecar,
                    max_parallel,
                    step: Duration::from_millis(step_ms),
                };
                let (r, f) = with_bed(&rt, |bed| {
                    Box::pin(async move { rollout::run(&opts, bed, &mut report).await.map(|f| (report, f)) })
                })?;
                report = r;
                figures.push(f);
            }
            rollout::compare(&figures, &mut report);
            report.finish()
        }
        Command::Scale { hosts, idle_secs, max_parallel, step_ms, services, services_per_host, rollouts, capacity } => {
            let capacity = capacity.then_some(scale::CapacityOptions { sessions: vec![50, 200], secs: 3.0 });
            let opts = scale::Options {
                sizes: hosts.into_iter().map(usize::from).collect(),
                idle: Duration::from_secs(idle_secs),
                parallel: max_parallel,
                step: Duration::from_millis(step_ms),
                capacity,
            };
            let report = match services {
                None => with_bed(&rt, |bed| {
                    Box::pin(async move { scale::run(&opts, bed, &mut report).await.map(|()| report) })
                })?,
                Some(s) => {
                    let opts = services::Options::new(&opts, s as usize, services_per_host, rollouts as usize)?;
                    with_bed(&rt, |bed| {
                        Box::pin(async move { services::run(&opts, bed, &mut report).await.map(|()| report) })
                    })?
                }
            };
            report.finish()
        }
        Command::Capacity { sessions, secs } => {
            let sessions: Vec<usize> = sessions.into_iter().map(|s| s as usize).collect();
            anyhow::ensure!(sessions.iter().all(|&s| (1..=2000).contains(&s)), "sessions go from 1 to 2000");
            let report = with_bed(&rt, |bed| {
                Box::pin(async move {
                    let (best, all) =
                        capacity::run_all(&sessions, secs, &bed.zk.connect_string(), bed.port, &mut report).await?;
                    report.set("zk_capacity", best.summary_json(all));
                    Ok(report)
                })
            })?;
            report.finish()
        }
        Command::Download { size_mb, files, runs } => {
            rt.block_on(download::run(&download::Options { size_mb, files, runs }, &mut report))?;
            report.finish()
        }
        Command::Distribute { hosts, size_mb, rate_mb, origin_fetches, max_uploads, peers_only } => {
            let opts =
                distribute::Options { hosts: hosts.into(), size_mb, rate_mb, origin_fetches, max_uploads, peers_only };
            with_bed(&rt, |bed| {
                Box::pin(async move { distribute::run(&opts, bed, &mut report).await.map(|()| report) })
            })?
            .finish()
        }
        Command::All { hosts } => {
            let opts = rollout::Options {
                hosts: hosts.into(),
                rounds: 1,
                idle: Duration::from_secs(9),
                latency: Duration::ZERO,
                sidecar: false,
                max_parallel: 1,
                step: Duration::ZERO,
            };
            let sizes = scale::Options {
                sizes: vec![25, 50, 100, 200],
                idle: Duration::from_secs(9),
                parallel: vec![1],
                step: Duration::ZERO,
                capacity: None,
            };
            let mut report = with_bed(&rt, |bed| {
                Box::pin(async move {
                    rollout::run(&opts, bed, &mut report).await?;
                    Ok(report)
                })
            })?;
            report = with_bed(&rt, |bed| {
                Box::pin(async move { scale::run(&sizes, bed, &mut report).await.map(|()| report) })
            })?;
            rt.block_on(download::run(&download::Options::default(), &mut report))?;
            report.finish()
        }
    }
    Ok(())
}

type BoxFut<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<T>> + 'a>>;

/// Starts a test bed, runs `f` on it, and tears it down.
fn with_bed<T>(rt: &tokio::runtime::Runtime, f: impl for<'a> FnOnce(&'a Bed) -> BoxFut<'a, T>) -> anyhow::Result<T> {
    let (zk, health) = Bed::start()?;
    rt.block_on(async move {
        let bed = Bed::connect(zk, health).await?;
        f(&bed).await
    })
}
