//! `download --size-mb 200`: fetch, verify and install throughput over loopback HTTP,
//! against curl pipelines on the same bytes in the same run.
//!
//! Artifacts are served from memory by a plain HTTP/1.1 server of this bench (a
//! thread per connection, one `write_all` of the whole body), so the server costs
//! every contender the same. Two artifacts:
//! - a single file of random bytes (`--size-mb`);
//! - a tar.gz of a typical service tree: `--files` files (default 2,000) whose sizes
//!   spread log-uniformly from 1 KB to 2 MB and add up to `--size-mb`, in 40
//!   directories, filled with letter-text that gzip shrinks to about 60%.
//!
//! Contenders, alternated run by run (best run counted, median shown):
//! - `fetch+verify`: [`Fetcher::fetch`] streams to a `.partial` file while a writer
//!   thread hashes and writes, checks size and sha256, fsyncs and renames.
//! - `install (single file)`: [`ReleaseStore::install`] of the file: fetch+verify,
//!   then the release directory gets a hard link of the verified download.
//! - `install (tar.gz)`: the whole path for the tarball: fetch+verify, one streamed
//!   pass through gzip and the unpacker, one `syncfs`, rename into place.
//! - references: `curl -s URL | openssl dgst -sha256`, `curl -s URL | sha256sum`,
//!   `curl -s -o /dev/null URL`, and `curl -s URL | tar xz -C DIR` (nothing fsynced).
//!
//! Before the transfers, SHA-256 in memory: the sha2 crate the sidecar uses, ring's,
//! and `openssl speed`, so a gap in fetch+verify can be told from a gap in hashing.

use crate::report::{Report, ms};
use crate::stats::{Summary, round3};
use anyhow::Context;
use baton_sidecar::host::download::{Fetcher, RetryPolicy};
use baton_sidecar::host::releases::ReleaseStore;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Instant;
use znode_schema::{Artifact, ArtifactFormat};

/// Options of the `download` benchmark.
#[derive(Debug, Clone)]
pub struct Options {
    /// Artifact size, MB (10^6 bytes): the single file, and the tarball's content.
    pub size_mb: u64,
    /// Files in the tarball.
    pub files: u32,
    /// Runs per contender.
    pub runs: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options { size_mb: 200, files: 2000, runs: 3 }
    }
}

/// One contender's timings in seconds, one per run.
#[derive(Debug, Default)]
struct Timings(Vec<f64>);

impl Timings {
    async fn time<T>(&mut self, fut: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
        let t = Instant::now();
        let out = fut.await?;
        self.0.push(t.elapsed().as_secs_f64());
        Ok(out)
    }
}

/// Runs the benchmark and adds its figures to `report`.
pub async fn run(opts: &Options, report: &mut Report) -> anyhow::Result<()> {
    let size = opts.size_mb * 1_000_000;
    report.line(format!(
        "== download: {} MB over loopback HTTP, {} runs each; CPU: {}",
        opts.size_mb,
        opts.runs,
        cpu_summary()
    ));
    let file_body: Arc<[u8]> = tokio::task::spawn_blocking(move || random_bytes(size as usize)).await?.into();
    let hashing = hash_in_memory(file_body.clone()).await?;
    report.line(format!(
        "sha256 in memory, one core: sha2 {:.0} MB/s, ring {:.0} MB/s, openssl speed {:.0} MB/s",
        hashing.sha2, hashing.ring, hashing.openssl
    ));
    let files = opts.files;
    let (tar_body, tree_bytes) = tokio::task::spawn_blocking(move || service_tree(size, files)).await??;
    let tar_body: Arc<[u8]> = tar_body.into();
    report.line(format!(
        "tarball: {files} files, {:.0} MB unpacked, {:.0} MB compressed",
        tree_bytes as f64 / 1e6,
        tar_body.len() as f64 / 1e6
    ));
    let file = Served::start(file_body, "artifact.bin", ArtifactFormat::File)?;
    let tar = Served::start(tar_body, "tree.tar.gz", ArtifactFormat::TarGz)?;

    let dir = tempfile::Builder::new().prefix("baton-bench-download-").tempdir()?;
    let fetcher = Fetcher::new(RetryPolicy::default());
    let [mut fetch, mut install, mut tar_install, mut openssl, mut sha256sum, mut raw, mut curl_tar] =
        std::array::from_fn(|_| Timings::default());
    for run in 0..opts.runs {
        let dest = dir.path().join(format!("fetch-{run}"));
        fetch.time(async { fetcher.fetch(&file.artifact, &dest).await.context("fetch") }).await?;
        std::fs::remove_file(&dest)?;

        let store = ReleaseStore::open(&dir.path().join(format!("store-{run}")), "svc")?;
        install.time(async { store.install(&fetcher, "1", &file.artifact).await.context("install") }).await?;
        tar_install.time(async { store.install(&fetcher, "2", &tar.artifact).await.context("install tar.gz") }).await?;
        let unpacked = tree_size(&store.release_dir("2"))?;
        anyhow::ensure!(unpacked == tree_bytes, "the tarball unpacked to {unpacked} bytes, expected {tree_bytes}");
        std::fs::remove_dir_all(store.root())?;

        let url = &file.artifact.url;
        let out = openssl.time(shell_output(&format!("curl -s {url} | openssl dgst -sha256 -r"))).await?;
        anyhow::ensure!(out.starts_with(&file.artifact.sha256), "curl | openssl printed {out:?}");
        let out = sha256sum.time(shell_output(&format!("curl -s {url} | sha256sum"))).await?;
        anyhow::ensure!(out.starts_with(&file.artifact.sha256), "curl | sha256sum printed {out:?}");
        raw.time(shell_output(&format!("curl -s -o /dev/null {url}"))).await?;

        let into = dir.path().join(format!("curl-tar-{run}"));
        std::fs::create_dir(&into)?;
        curl_tar.time(shell_output(&format!("curl -s {} | tar xz -C {}", tar.artifact.url, into.display()))).await?;
        std::fs::remove_dir_all(&into)?;
    }
    let mb = size as f64 / 1e6;
    let rate = |t: &Timings| Summary::of(&t.0.iter().map(|s| mb / s).collect::<Vec<_>>()).expect("runs >= 1");
    let (f, i, t) = (rate(&fetch), rate(&install), rate(&tar_install));
    let (o, c, r, ct) = (rate(&openssl), rate(&sha256sum), rate(&raw), rate(&curl_tar));
    let contenders = [
        ("fetch+verify", &f),
        ("install (single file)", &i),
        ("install (tar.gz)", &t),
        ("curl -s | openssl dgst -sha256", &o),
        ("curl -s | sha256sum", &c),
        ("curl -s -o /dev/null", &r),
        ("curl -s | tar xz", &ct),
    ];
    for (name, s) in contenders {
        report.line(format!(
            "{name:<31} best {:>6.0} MB/s  median {:>6.0} MB/s  ({} for {mb:.0} MB at best)",
            s.max,
            s.p50,
            ms(mb / s.max * 1000.0)
        ));
    }
    let ratios = [
        ("fetch+verify / curl | openssl dgst", f.max / o.max, 0.95),
        ("single-file install / fetch+verify", i.max / f.max, 0.90),
        ("tar.gz install / curl | tar xz", t.max / ct.max, 0.80),
    ];
    for (name, ratio, target) in ratios {
        let verdict = if ratio >= target { "met" } else { "MISSED" };
        report.line(format!("ratio {name:<36} {:>4.0}%  (target >= {:.0}%: {verdict})", ratio * 100.0, target * 100.0));
    }
    let summary = |s: &Summary| json!({"best": round3(s.max), "median": round3(s.p50)});
    report.set(
        "download",
        json!({
            "size_mb": opts.size_mb, "files": opts.files, "runs": opts.runs, "cpu": cpu_summary(),
            "tar_gz_mb": round3(tar.len as f64 / 1e6),
            "sha256_in_memory_mb_s": {"sha2": round3(hashing.sha2), "ring": round3(hashing.ring), "openssl": round3(hashing.openssl)},
            "fetch_verify_mb_s": summary(&f),
            "install_file_mb_s": summary(&i),
            "install_tar_gz_mb_s": summary(&t),
            "curl_openssl_mb_s": summary(&o),
            "curl_sha256sum_mb_s": summary(&c),
            "curl_devnull_mb_s": summary(&r),
            "curl_tar_xz_mb_s": summary(&ct),
            "fetch_verify_to_openssl": round3(f.max / o.max),
            "install_file_to_fetch_verify": round3(i.max / f.max),
            "install_tar_gz_to_curl_tar": round3(t.max / ct.max),
        }),
    );
    Ok(())
}

/// An artifact served by this bench.
struct Served {
    artifact: Artifact,
    len: usize,
}

impl Served {
    fn start(body: Arc<[u8]>, name: &str, format: ArtifactFormat) -> anyhow::Result<Served> {
        let sha256 = hex::encode(Sha256::digest(&body));
        let len = body.len();
        let url = serve(body, name)?;
        Ok(Served { artifact: Artifact { url, sha256, size: len as u64, format, signature: None }, len })
    }
}

/// SHA-256 throughput in memory, MB/s.
struct Hashing {
    sha2: f64,
    ring: f64,
    openssl: f64,
}

async fn hash_in_memory(body: Arc<[u8]>) -> anyhow::Result<Hashing> {
    let mb = body.len() as f64 / 1e6;
    let (sha2, ring) = tokio::task::spawn_blocking(move || {
        let best = |f: &dyn Fn()| {
            (0..3)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    mb / t.elapsed().as_secs_f64()
                })
                .fold(0.0, f64::max)
        };
        let sha2 = best(&|| {
            std::hint::black_box(Sha256::digest(&body));
        });
        let ring = best(&|| {
            std::hint::black_box(ring::digest::digest(&ring::digest::SHA256, &body));
        });
        (sha2, ring)
    })
    .await?;
    // `openssl speed` prints "sha256 <16 B> ... <16384 B>" in kB/s; the last column.
    let out = shell_output("openssl speed -evp sha256 -bytes 16384 -seconds 2 2>/dev/null | tail -1").await?;
    let openssl = out
        .split_whitespace()
        .last()
        .and_then(|v| v.trim_end_matches('k').parse::<f64>().ok())
        .map(|kb| kb * 1000.0 / 1e6)
        .unwrap_or(f64::NAN);
    Ok(Hashing { sha2, ring, openssl })
}

/// The CPU model and the flags that matter to hashing and copying.
fn cpu_summary() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info.lines().find_map(|l| l.strip_prefix("model name")).map(|l| l.trim_start_matches([' ', '\t', ':']));
    let flags: Vec<&str> =
        info.lines().find_map(|l| l.strip_prefix("flags")).unwrap_or_default().split_whitespace().collect();
    let wanted = ["sha_ni", "avx2", "avx512f", "aes", "pclmulqdq"];
    let present: Vec<&str> = wanted.iter().copied().filter(|w| flags.contains(w)).collect();
    format!("{} ({}), {} cores", model.unwrap_or("unknown"), present.join(" "), num_cpus())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// A tar.gz of `files` files adding up to `total` bytes; returns it and the total.
fn service_tree(total: u64, files: u32) -> anyhow::Result<(Vec<u8>, u64)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261201);
    let weights: Vec<f64> = (0..files).map(|_| (rng.gen_range(0.0f64..1.0) * (2e6f64 / 1e3).ln()).exp()).collect();
    let sum: f64 = weights.iter().sum();
    let mut sizes: Vec<u64> = weights.iter().map(|w| (w / sum * total as f64) as u64).collect();
    let short = total - sizes.iter().sum::<u64>();
    sizes[0] += short;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    {
        let mut builder = tar::Builder::new(&mut gz);
        let mut text = vec![0u8; *sizes.iter().max().unwrap_or(&0) as usize];
        for (n, size) in sizes.iter().enumerate() {
            let content = &mut text[..*size as usize];
            for b in content.iter_mut() {
                *b = b'a' + (rng.next_u32() % 26) as u8;
            }
            let mut header = tar::Header::new_gnu();
            header.set_size(*size);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, format!("lib/d{:02}/f{n:04}.dat", n % 40), &content[..])?;
        }
        builder.finish()?;
    }
    Ok((gz.finish()?, total))
}

/// Bytes of regular files under `dir`.
fn tree_size(dir: &std::path::Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            total += tree_size(&entry.path())?;
        } else if kind.is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

/// Runs `script` with `sh -c`; its stdout, or an error when it fails.
async fn shell_output(script: &str) -> anyhow::Result<String> {
    let out = tokio::process::Command::new("sh").arg("-c").arg(script).output().await?;
    anyhow::ensure!(out.status.success(), "`{script}` failed: {}", out.status);
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

/// Serves `body` at every path on a free loopback port; returns its URL.
fn serve(body: Arc<[u8]>, name: &str) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/{name}", listener.local_addr()?);
    std::thread::Builder::new().name("http".into()).spawn(move || {
        for conn in listener.incoming().flatten() {
            let body = body.clone();
            std::thread::spawn(move || answer(conn, &body));
        }
    })?;
    Ok(url)
}

/// Reads a request head and answers 200 with the whole body (ranges are not needed:
/// nothing fails here).
fn answer(mut conn: TcpStream, body: &[u8]) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let header = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: application/octet-stream\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(header.as_bytes()).and_then(|()| conn.write_all(body));
}
