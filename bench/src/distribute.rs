//! `distribute --hosts 50 --size-mb 200 --rate-mb 50`: how one release reaches N
//! hosts, with peers and without.
//!
//! N sidecar cores run in this process (`baton_sidecar::daemon::run`, each with its
//! own config, data dir, ZooKeeper session and, with peers, its own peer server on
//! loopback). The origin is an HTTP server of this bench serving a random artifact,
//! Range supported, rate-limited as a whole (its uplink) to `--rate-mb` MB/s, and
//! counting the bytes it sends. For each mode (peers on, then off) the release is
//! staged and the bench records when every host holds it verified (its
//! `releases/<version>` directory, which exists only complete and verified), next to
//! one host's download time from the origin alone, measured first.

use crate::bed::Bed;
use crate::report::Report;
use anyhow::Context;
use baton_sidecar::config::Config;
use baton_sidecar::host::download::{Fetcher, RetryPolicy};
use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::Instrument;
use znode_schema::{Artifact, ArtifactFormat, Layout, Policy, Quorum};

/// Options of the `distribute` benchmark.
#[derive(Debug, Clone)]
pub struct Options {
    /// Hosts.
    pub hosts: usize,
    /// Artifact size, MB (10^6 bytes).
    pub size_mb: u64,
    /// The origin's rate, MB/s.
    pub rate_mb: u64,
    /// `[peers] origin_fetches`.
    pub origin_fetches: u32,
    /// `[peers] max_uploads`.
    pub max_uploads: u32,
    /// Only the run with peers on.
    pub peers_only: bool,
}

/// The rate-limited origin.
struct Origin {
    url: String,
    sent: Arc<AtomicU64>,
    gets: Arc<AtomicU64>,
}

/// A token bucket shared by every connection: `rate` bytes per second in all.
struct Bucket {
    rate: f64,
    next: Mutex<Instant>,
}

impl Bucket {
    fn take(&self, n: usize) {
        let wait = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let start = (*next).max(now);
            *next = start + Duration::from_secs_f64(n as f64 / self.rate);
            start.saturating_duration_since(now)
        };
        std::thread::sleep(wait);
    }
}

impl Origin {
    fn start(body: Arc<[u8]>, rate: f64) -> anyhow::Result<Origin> {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind the origin")?;
        let url = format!("http://{}/artifact.bin", listener.local_addr()?);
        let (sent, gets) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let bucket = Arc::new(Bucket { rate, next: Mutex::new(Instant::now()) });
        let (s, g) = (sent.clone(), gets.clone());
        std::thread::Builder::new().name("origin".into()).spawn(move || {
            for conn in listener.incoming().flatten() {
                let (body, bucket, s, g) = (body.clone(), bucket.clone(), s.clone(), g.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &body, &bucket, &s, &g);
                });
            }
        })?;
        Ok(Origin { url, sent, gets })
    }
}

/// One request: `GET` with an optional `Range: bytes=N-`.
fn serve(conn: TcpStream, body: &[u8], bucket: &Bucket, sent: &AtomicU64, gets: &AtomicU64) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut from = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("range: bytes=") {
            from = v.trim().trim_end_matches('-').parse().unwrap_or(0);
        }
    }
    gets.fetch_add(1, Ordering::Relaxed);
    let mut conn = conn;
    let head = if from > 0 {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{}\r\nConnection: close\r\n\r\n",
            body.len() - from,
            body.len() - 1,
            body.len()
        )
    } else {
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())
    };
    conn.write_all(head.as_bytes())?;
    for chunk in body[from.min(body.len())..].chunks(64 << 10) {
        bucket.take(chunk.len());
        conn.write_all(chunk)?;
        sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// What one mode measured.
#[derive(Debug)]
struct Outcome {
    secs: f64,
    origin_bytes: u64,
    origin_gets: u64,
    uploads: Vec<u64>,
}

/// Runs the benchmark and adds its figures to `report`.
pub async fn run(opts: &Options, bed: &Bed, report: &mut Report) -> anyhow::Result<()> {
    let size = (opts.size_mb * 1_000_000) as usize;
    let body: Arc<[u8]> = tokio::task::spawn_blocking(move || {
        let mut v = vec![0u8; size];
        rand::thread_rng().fill_bytes(&mut v);
        v
    })
    .await?
    .into();
    let sha256 = hex::encode(Sha256::digest(&body));
    report.line(format!(
        "== distribute: {} hosts, {} MB artifact, origin at {} MB/s, origin_fetches {}, max_uploads {}",
        opts.hosts, opts.size_mb, opts.rate_mb, opts.origin_fetches, opts.max_uploads
    ));
    let origin = Origin::start(body, opts.rate_mb as f64 * 1e6)?;
    let artifact =
        Artifact { url: origin.url.clone(), sha256, size: size as u64, format: ArtifactFormat::File, signature: None };
    let single = {
        let dest = bed.dir.path().join("single");
        let t = Instant::now();
        Fetcher::new(RetryPolicy::default()).fetch(&artifact, &dest).await.context("one host's download")?;
        let secs = t.elapsed().as_secs_f64();
        std::fs::remove_file(&dest)?;
        secs
    };
    report.line(format!("one host alone from the origin: {single:.2} s"));
    let mut figures = Vec::new();
    let modes: &[bool] = if opts.peers_only { &[true] } else { &[true, false] };
    for &peers in modes {
        let (sent0, gets0) = (origin.sent.load(Ordering::Relaxed), origin.gets.load(Ordering::Relaxed));
        let mut out = fleet(opts, bed, &artifact, peers).await?;
        out.origin_bytes = origin.sent.load(Ordering::Relaxed) - sent0;
        out.origin_gets = origin.gets.load(Ordering::Relaxed) - gets0;
        let mode = if peers { "peers on " } else { "peers off" };
        let max_up = out.uploads.iter().max().copied().unwrap_or(0);
        let busy_uploaders = out.uploads.iter().filter(|u| **u > 0).count();
        report.line(format!(
            "{mode}: every host verified in {:.2} s ({:.2}x one host); origin sent {:.0} MB ({:.2}x the artifact, goal <= {}x) in {} GETs; uploads per host: max {max_up}, {busy_uploaders} hosts uploaded",
            out.secs,
            out.secs / single,
            out.origin_bytes as f64 / 1e6,
            out.origin_bytes as f64 / size as f64,
            opts.origin_fetches,
            out.origin_gets,
        ));
        if peers {
            report.line(format!("uploads per host: {:?}", out.uploads));
        }
        figures.push(json!({
            "peers": peers,
            "secs": out.secs,
            "ratio_to_one_host": out.secs / single,
            "origin_bytes": out.origin_bytes,
            "origin_artifacts": out.origin_bytes as f64 / size as f64,
            "origin_gets": out.origin_gets,
            "uploads": out.uploads,
        }));
    }
    report.set(
        "distribute",
        json!({
            "hosts": opts.hosts,
            "size_mb": opts.size_mb,
            "rate_mb": opts.rate_mb,
            "origin_fetches": opts.origin_fetches,
            "max_uploads": opts.max_uploads,
            "single_host_secs": single,
            "modes": figures,
        }),
    );
    Ok(())
}

/// Boots N cores at a tiny release 1, stages `artifact` as release 2 and waits until
/// every host holds it verified.
async fn fleet(opts: &Options, bed: &Bed, artifact: &Artifact, peers: bool) -> anyhow::Result<Outcome> {
    let root = format!("/distribute-{}", if peers { "peers" } else { "origin" });
    bed.stage(&root, "1", opts.hosts).await?;
    let (stop, stopped) = watch::channel(false);
    let mut cores = Vec::new();
    let mut hosts = Vec::new();
    for i in 1..=opts.hosts {
        let id = format!("h{i:03}");
        let data = bed.dir.path().join(&root[1..]).join(&id);
        let port = baton_tests::zk::free_port();
        let mut text = bed.config(&root, &id, &data);
        if peers {
            text = text.replacen(
                "[[service]]",
                &format!(
                    "[peers]\nlisten = \"127.0.0.1:{port}\"\norigin_fetches = {}\nmax_uploads = {}\n\n[[service]]",
                    opts.origin_fetches, opts.max_uploads
                ),
                1,
            );
        }
        let mut cfg = Config::parse(&text, &id).map_err(|e| anyhow::anyhow!("{e}"))?;
        // Cores in one process cannot hand over to a new image of themselves.
        cfg.upgrades_itself = false;
        let span = tracing::info_span!("host", id = %id);
        cores.push(tokio::spawn(baton_sidecar::daemon::run(cfg, stopped.clone()).instrument(span)));
        hosts.push((data.join(crate::bed::SERVICE).join("releases").join("2"), port));
    }
    bed.wait_online(&root, "1", opts.hosts, Duration::from_secs(120)).await?;
    let layout = Layout::new(&root)?;
    let policy = Policy { quorum: Quorum::Count(0), max_parallel: opts.hosts as u32, ..Policy::default() };
    let start = Instant::now();
    baton_tests::fleet::stage(&bed.client, &layout, crate::bed::SERVICE, "2", artifact, policy).await;
    // Sampling what is on disk measures; nothing waits on it but the bench.
    let deadline = start + Duration::from_secs(1800);
    while !hosts.iter().all(|(dir, _)| dir.is_dir()) {
        anyhow::ensure!(Instant::now() < deadline, "not every host verified the release within 30 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let uploads = if peers { hosts.iter().map(|(_, port)| stats(*port)).collect() } else { Vec::new() };
    let _ = stop.send(true);
    for c in cores {
        let _ = tokio::time::timeout(Duration::from_secs(30), c).await;
    }
    let _ = std::fs::remove_dir_all(bed.dir.path().join(&root[1..]));
    Ok(Outcome { secs, origin_bytes: 0, origin_gets: 0, uploads })
}

/// The uploads a peer server reports (`/v1/stats`).
fn stats(port: u16) -> u64 {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return 0 };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(b"GET /v1/stats HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("{}");
    serde_json::from_str::<serde_json::Value>(body).ok().and_then(|v| v["served"].as_u64()).unwrap_or(0)
}
