//! The `baton-bench` command line.

use clap::{Parser, Subcommand};

/// baton's benchmarks: handoff latency, rollout overhead and its growth with fleet
/// size, ZooKeeper load, sidecar footprint, download throughput. Each prints
/// readable figures and, last, one JSON line with all of them. Build with
/// `--release`; see docs/benchmarks.md for the method behind every figure.
#[derive(Debug, Parser)]
#[command(
    name = "baton-bench",
    after_help = "Examples:\n  cargo run --release -p baton-bench -- rollout --hosts 50\n  \
                  cargo run --release -p baton-bench -- scale --hosts 50,100,200,500\n  \
                  cargo run --release -p baton-bench -- scale --hosts 1000 --max-parallel 1,10,50 --step-ms 20\n  \
                  cargo run --release -p baton-bench -- scale --hosts 100 --services 100 --services-per-host 10\n  \
                  cargo run --release -p baton-bench -- capacity --sessions 50\n  \
                  cargo run --release -p baton-bench -- download --size-mb 200"
)]
pub struct Cli {
    /// Which benchmark.
    #[command(subcommand)]
    pub command: Command,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// N real sidecar processes on one ZooKeeper: rollout time, handoff latency,
    /// ZooKeeper requests and notifications per host, one sidecar's RSS and CPU.
    Rollout {
        /// Hosts: one sidecar process each (2 to 100).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(2..=100))]
        hosts: u16,
        /// Rollouts to run one after the other (more handoff samples).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=20))]
        rounds: u16,
        /// Seconds of the idle window (background traffic: pings every 3 s of
        /// silence, and idle footprint).
        #[arg(long, default_value_t = 9)]
        idle_secs: u64,
        /// Round-trip time added between every sidecar and ZooKeeper, in ms (half
        /// each way, through a delaying TCP proxy), as a cross-datacenter ensemble
        /// would add. Several values (`0,20,100`) run one after the other on fresh
        /// beds and are compared, with the round trips a handoff and a step make.
        #[arg(long, value_delimiter = ',', default_values_t = [0])]
        latency_ms: Vec<u64>,
        /// After the service rollouts, roll a new sidecar release (a copy of the
        /// binary) through the fleet: handover time per host, service downtime.
        #[arg(long)]
        sidecar: bool,
        /// `max_parallel` K of the service rollouts, with quorum N−K (K hosts may
        /// be down at once).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=99))]
        max_parallel: u32,
        /// The length of the service's own step work in ms: its start command is
        /// `sleep` for that long (0: `true`, a near-instant step).
        #[arg(long, default_value_t = 0)]
        step_ms: u64,
    },
    /// Many sidecar cores in this process, each with its own ZooKeeper session, for
    /// several fleet sizes: how rollout time and ZooKeeper traffic grow with N.
    Scale {
        /// Fleet sizes, comma-separated (up to 1000 each).
        #[arg(long, value_delimiter = ',', default_values_t = [25, 50, 100, 200])]
        hosts: Vec<u16>,
        /// Seconds of the idle window per fleet size (background traffic).
        #[arg(long, default_value_t = 9)]
        idle_secs: u64,
        /// `max_parallel` values, comma-separated: one rollout per value and fleet
        /// size, each with quorum N−K.
        #[arg(long, value_delimiter = ',', default_values_t = [1])]
        max_parallel: Vec<u32>,
        /// The length of the service's own step work in ms: its start command is
        /// `sleep` for that long (0: `true`, a near-instant step).
        #[arg(long, default_value_t = 0)]
        step_ms: u64,
        /// S services on the hosts (the first `--hosts` value) instead of one: boot,
        /// idle traffic and ZooKeeper's size, then several rollouts queued at once.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        services: Option<u32>,
        /// With `--services`: services each host runs, assigned round-robin
        /// (default: all of them).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        services_per_host: Option<u32>,
        /// With `--services`: services staged at once (queued in deploy order).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
        rollouts: u32,
        /// After the rollouts, measure the server's capacity (as `capacity` does,
        /// with 50 and 200 sessions) and print each rollout's peak rate as a
        /// fraction of it.
        #[arg(long)]
        capacity: bool,
    },
    /// The benchmarks' ZooKeeper server driven flat out by concurrent sessions:
    /// sustained setData writes/s (and fsyncs/s), then getData reads/s.
    Capacity {
        /// Concurrent client sessions, one request in flight each; several
        /// (`50,200`) are measured in turn and the best counts.
        #[arg(long, value_delimiter = ',', default_values_t = [50, 200])]
        sessions: Vec<u32>,
        /// Seconds of each phase (writes, then reads).
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
    },
    /// Fetch, verify and install a single-file artifact and a tar.gz service tree
    /// over loopback HTTP, against curl | openssl and curl | tar xz on the same bytes.
    Download {
        /// Size of the artifact in MB (10^6 bytes).
        #[arg(long, default_value_t = 200)]
        size_mb: u64,
        /// Files in the tar.gz artifact (a service tree adding up to --size-mb).
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        files: u32,
        /// Runs of each contender (the best run counts; the median is shown too).
        #[arg(long, default_value_t = 3)]
        runs: u32,
    },
    /// One release to N in-process sidecar cores from a rate-limited origin, with
    /// peers and without: origin bytes, time until every host holds it verified next
    /// to one host's download, uploads per host.
    Distribute {
        /// Hosts (sidecar cores in this process).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=200))]
        hosts: u16,
        /// Artifact size in MB (10^6 bytes).
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        size_mb: u64,
        /// The origin's rate in MB/s, shared by all its downloads.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        rate_mb: u64,
        /// `[peers] origin_fetches` of every host.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
        origin_fetches: u32,
        /// `[peers] max_uploads` of every host.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
        max_uploads: u32,
        /// Leave out the run with peers off (N downloads from the origin: N times one
        /// host's time when the origin is the bottleneck).
        #[arg(long)]
        peers_only: bool,
    },
    /// All three with their default sizes (`--hosts` for rollout), one JSON line.
    All {
        /// Hosts of the rollout benchmark.
        #[arg(long, default_value_t = 50)]
        hosts: u16,
    },
}
