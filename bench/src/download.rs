//! `download --size-mb 200`: fetch, verify and unpack throughput over loopback HTTP,
//! against `curl -s URL | sha256sum` on the same file in the same run.
//!
//! The artifact is random bytes served from memory by a plain HTTP/1.1 server of
//! this bench (a thread per connection, one `write_all` of the whole body), so the
//! server costs both contenders the same. Contenders, alternated run by run:
//! - `fetch+verify`: [`Fetcher::fetch`] streams to a `.partial` file while hashing,
//!   checks size and sha256, fsyncs and renames: the sidecar's download step.
//! - `install`: [`ReleaseStore::install`], the sidecar's whole path: fetch+verify,
//!   then unpack (a `File` artifact is installed as one executable file), fsync,
//!   rename into place.
//! - `curl | sha256sum`: transfer and hash, nothing written to disk.

use crate::report::{Report, ms};
use crate::stats::{Summary, round3};
use anyhow::Context;
use baton_sidecar::host::download::{Fetcher, RetryPolicy};
use baton_sidecar::host::releases::ReleaseStore;
use rand::RngCore;
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
    /// Artifact size, MB (10^6 bytes).
    pub size_mb: u64,
    /// Runs per contender.
    pub runs: u32,
}

/// Runs the benchmark and adds its figures to `report`.
pub async fn run(opts: &Options, report: &mut Report) -> anyhow::Result<()> {
    let size = opts.size_mb * 1_000_000;
    report.line(format!("== download: {} MB artifact over loopback HTTP, {} runs each", opts.size_mb, opts.runs));
    let body: Arc<[u8]> = tokio::task::spawn_blocking(move || random_bytes(size as usize)).await?.into();
    let sha256 = hex::encode(Sha256::digest(&body));
    let url = serve(body)?;
    let artifact = Artifact { url: url.clone(), sha256: sha256.clone(), size, format: ArtifactFormat::File };
    let dir = tempfile::Builder::new().prefix("baton-bench-download-").tempdir()?;
    let fetcher = Fetcher::new(RetryPolicy::default());
    let (mut fetch, mut install, mut curl) = (Vec::new(), Vec::new(), Vec::new());
    let (mut openssl, mut raw) = (Vec::new(), Vec::new());
    for run in 0..opts.runs {
        let dest = dir.path().join(format!("fetch-{run}"));
        let t = Instant::now();
        fetcher.fetch(&artifact, &dest).await.context("fetch")?;
        fetch.push(t.elapsed().as_secs_f64());
        std::fs::remove_file(&dest)?;

        let store = ReleaseStore::open(&dir.path().join(format!("store-{run}")), "svc")?;
        let t = Instant::now();
        store.install(&fetcher, "1", &artifact).await.context("install")?;
        install.push(t.elapsed().as_secs_f64());
        std::fs::remove_dir_all(store.root())?;

        let t = Instant::now();
        let out =
            tokio::process::Command::new("sh").arg("-c").arg(format!("curl -s {url} | sha256sum")).output().await?;
        curl.push(t.elapsed().as_secs_f64());
        let got = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(got.starts_with(&sha256), "curl | sha256sum printed {got:?}, expected {sha256}");
        // References: the same transfer hashed by OpenSSL (SHA-NI), and not hashed at all.
        openssl.push(shell(&format!("curl -s {url} | openssl dgst -sha256 -r")).await?);
        raw.push(shell(&format!("curl -s -o /dev/null {url}")).await?);
    }
    let mb = size as f64 / 1e6;
    let rate = |secs: &[f64]| Summary::of(&secs.iter().map(|s| mb / s).collect::<Vec<_>>());
    let (f, i, c) = (rate(&fetch).unwrap(), rate(&install).unwrap(), rate(&curl).unwrap());
    let (o, r) = (rate(&openssl).unwrap(), rate(&raw).unwrap());
    let contenders = [
        ("fetch+verify", f),
        ("install (fetch+verify+unpack)", i),
        ("curl -s | sha256sum", c),
        ("curl -s | openssl dgst -sha256", o),
        ("curl -s -o /dev/null", r),
    ];
    for (name, s) in contenders {
        report.line(format!(
            "{name:<30} best {:>6.0} MB/s  median {:>6.0} MB/s  ({} for {mb:.0} MB at best)",
            s.max,
            s.p50,
            ms(mb / s.max * 1000.0)
        ));
    }
    let (rf, ri) = (f.max / c.max, i.max / c.max);
    report.line(format!(
        "ratio to curl | sha256sum (best runs): fetch+verify {:.0}% (target >= 90%: {}), install {:.0}%; fetch+verify to curl | openssl {:.0}%",
        rf * 100.0,
        if rf >= 0.9 { "met" } else { "MISSED" },
        ri * 100.0,
        f.max / o.max * 100.0
    ));
    report.set(
        "download",
        json!({
            "size_mb": opts.size_mb, "runs": opts.runs,
            "fetch_verify_mb_s": {"best": round3(f.max), "median": round3(f.p50)},
            "install_mb_s": {"best": round3(i.max), "median": round3(i.p50)},
            "curl_sha256sum_mb_s": {"best": round3(c.max), "median": round3(c.p50)},
            "curl_openssl_mb_s": {"best": round3(o.max), "median": round3(o.p50)},
            "curl_devnull_mb_s": {"best": round3(r.max), "median": round3(r.p50)},
            "fetch_verify_ratio": round3(rf), "install_ratio": round3(ri),
            "fetch_verify_ratio_to_openssl": round3(f.max / o.max),
        }),
    );
    Ok(())
}

/// Runs `script` with `sh -c` and returns its wall time in seconds.
async fn shell(script: &str) -> anyhow::Result<f64> {
    let t = Instant::now();
    let status = tokio::process::Command::new("sh").arg("-c").arg(script).status().await?;
    anyhow::ensure!(status.success(), "`{script}` failed: {status}");
    Ok(t.elapsed().as_secs_f64())
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

/// Serves `body` at every path on a free loopback port; returns its URL.
fn serve(body: Arc<[u8]>) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/artifact.bin", listener.local_addr()?);
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
