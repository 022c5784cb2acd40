//! Peers with real sidecars: the origin is hit at most `origin_fetches` times, a peer
//! serving corrupt bytes is skipped and nothing bad is installed, a peer killed
//! mid-transfer is replaced and the download resumes where it was, a host streams
//! from a peer still downloading (relaying), a restarted host serves again.
//! Peers off is every other test of the suite.

use baton_tests::artifact_server::{ArtifactServer, Fault};
use baton_tests::chaos::{PATIENCE, plain_log, policy, served_version, start_at_v1, wait_done, wait_versions};
use baton_tests::fleet::{Fleet, file_artifact, stage};
use baton_tests::{eventually, shared_server, unique_root};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::Duration;
use znode_schema::{Artifact, ArtifactFormat};

/// `[peers]` on every host of the fleet, on its own port.
fn peers_config(extra: &str) -> String {
    format!("[peers]\nlisten = \"127.0.0.1:{{peer_port}}\"\n{extra}\n")
}

/// A one-file demo release of `version` padded to about `size` bytes (the padding is
/// a comment after `exec`, never read by the shell), served by `server` at `/demo`.
fn served_release(fleet: &Fleet, server: &ArtifactServer, version: &str, size: usize) -> (Artifact, Vec<u8>) {
    let demo = baton_tests::bin::path("baton-demo-service");
    let mut script = format!("#!/bin/sh\nexec {} --version {version}\n", demo.display()).into_bytes();
    let line = format!("# {}\n", "x".repeat(1021));
    while script.len() < size {
        script.extend_from_slice(line.as_bytes());
    }
    let dir = fleet.dir().join("padded").join(version);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("demo");
    std::fs::write(&path, &script).unwrap();
    server.put("/demo", script.clone());
    let file = file_artifact(&path);
    (Artifact { url: server.url("/demo"), format: ArtifactFormat::File, ..file }, script)
}

/// GETs the artifact server answered.
fn origin_gets(server: &ArtifactServer) -> Vec<Option<String>> {
    server.requests().into_iter().filter(|r| r.method == "GET").map(|r| r.range).collect()
}

/// What host `i`'s peer server says it served (`/v1/stats`).
fn uploads(fleet: &Fleet, i: usize) -> u64 {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], fleet.hosts[i].peer_port));
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else { return 0 };
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(b"GET /v1/stats HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("{}");
    serde_json::from_str::<serde_json::Value>(body).ok().and_then(|v| v["served"].as_u64()).unwrap_or(0)
}

fn installed(fleet: &Fleet, i: usize, version: &str) -> PathBuf {
    fleet.hosts[i].data_dir.join("api").join("releases").join(version).join("demo")
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_hosts_hit_the_origin_at_most_origin_fetches_times() {
    let root = unique_root("peers-eight");
    let mut fleet = Fleet::new(&shared_server().connect_string(), &root, "api", 8)
        .with_host_config(&peers_config("origin_fetches = 2"));
    let c = fleet.client().await;
    start_at_v1(&mut fleet, &c).await;
    let server = ArtifactServer::start();
    let (v2, bytes) = served_release(&fleet, &server, "2", 2 << 20);
    // An empty release directory an expired session left: tidied by the next release.
    let leftover = fleet.layout().peers_release("api", "0.9");
    let open = zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all());
    for dir in [fleet.layout().peers_dir(), fleet.layout().peers_service("api"), leftover.clone()] {
        let _ = c.create(&dir, b"", &open).await;
    }
    stage(&c, &fleet.layout(), "api", "2", &v2, policy(1, 4, Duration::ZERO)).await;
    wait_versions(&fleet, &c, 8, "2").await;
    wait_done(&fleet, &c).await;
    let gets = origin_gets(&server);
    assert!(!gets.is_empty() && gets.len() <= 2, "the origin answered {} GETs: {gets:?}", gets.len());
    let served: u64 = (0..8).map(|i| uploads(&fleet, i)).sum();
    assert!(served >= (8 - gets.len()) as u64, "peers served {served} downloads");
    for i in 0..8 {
        let sha = hex::encode(Sha256::digest(std::fs::read(installed(&fleet, i, "2")).unwrap()));
        assert_eq!(sha, v2.sha256, "{} installed the verified release", fleet.hosts[i].id);
    }
    assert_eq!(bytes.len() as u64, v2.size);
    // Every host is a source of the release it holds, while it holds it.
    let sources = c.list_children(&fleet.layout().peers_release("api", "2")).await.unwrap();
    assert_eq!(sources.iter().filter(|n| n.starts_with("source-")).count(), 8, "{sources:?}");
    let tidied = tokio::time::timeout(PATIENCE, async {
        while !matches!(c.check_stat(&leftover).await, Ok(None)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(tidied.is_ok(), "{leftover} is still there");
}

/// A host that runs v2 alone; `extra` more `[peers]` lines.
async fn one_host_at_v2(
    name: &str,
    extra: &str,
    size: usize,
) -> (Fleet, zookeeper_client::Client, ArtifactServer, Artifact) {
    let root = unique_root(name);
    let mut fleet =
        Fleet::new(&shared_server().connect_string(), &root, "api", 1).with_host_config(&peers_config(extra));
    let c = fleet.client().await;
    start_at_v1(&mut fleet, &c).await;
    let server = ArtifactServer::start();
    let (v2, _) = served_release(&fleet, &server, "2", size);
    stage(&c, &fleet.layout(), "api", "2", &v2, policy(0, 1, Duration::ZERO)).await;
    wait_versions(&fleet, &c, 1, "2").await;
    wait_done(&fleet, &c).await;
    let source = fleet.layout().peer_source("api", "2", &fleet.hosts[0].id);
    eventually_source(&c, &source).await;
    assert_eq!(origin_gets(&server).len(), 1);
    (fleet, c, server, v2)
}

async fn eventually_source(c: &zookeeper_client::Client, path: &str) {
    let found = tokio::time::timeout(PATIENCE, async {
        while !matches!(c.check_stat(path).await, Ok(Some(_))) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(found.is_ok(), "{path} never appeared");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_serving_corrupt_bytes_is_skipped_and_nothing_bad_is_installed() {
    let (mut fleet, c, server, v2) = one_host_at_v2("peers-corrupt", "", 256 << 10).await;
    // Corrupt the kept artifact of the first host on disk (a new file of the same
    // size: the release it runs keeps its own, good, copy).
    let kept = fleet.hosts[0].data_dir.join("api").join("artifacts").join("2");
    let mut bytes = std::fs::read(&kept).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    let tmp = kept.with_extension("tmp");
    std::fs::write(&tmp, &bytes).unwrap();
    std::fs::rename(&tmp, &kept).unwrap();
    // A new host boots on what the fleet runs (v2): from the peer first.
    let b = fleet.add_host("api-new");
    fleet.start(b);
    wait_versions(&fleet, &c, 2, "2").await;
    let log = plain_log(&fleet, b);
    assert!(log.contains("failed verification"), "the bad peer was not detected:\n{log}");
    assert!(uploads(&fleet, 0) >= 1, "the corrupt peer was never asked");
    let sha = hex::encode(Sha256::digest(std::fs::read(installed(&fleet, b, "2")).unwrap()));
    assert_eq!(sha, v2.sha256, "the new host installed the verified release, not the peer's bytes");
    assert_eq!(served_version(fleet.hosts[b].port).as_deref(), Some("2"));
    assert_eq!(origin_gets(&server).len(), 2, "the new host fell back to the origin once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_killed_mid_transfer_is_replaced_and_the_download_resumes() {
    // The peer uploads at 1 MiB/s: the 6 MiB transfer is in flight for seconds.
    let (mut fleet, _c, server, v2) = one_host_at_v2("peers-killed", "max_upload_rate = \"1MiB/s\"", 6 << 20).await;
    let b = fleet.add_host("api-new");
    fleet.start(b);
    let partial = fleet.hosts[b].data_dir.join("api").join("downloads").join("2").join("artifact.partial");
    eventually("the new host to download from the peer", PATIENCE, || {
        std::fs::metadata(&partial).ok().filter(|m| m.len() >= 1 << 20).map(|_| ())
    });
    fleet.kill(0);
    let port = fleet.hosts[b].port;
    eventually("the new host to run v2", PATIENCE, || (served_version(port).as_deref() == Some("2")).then_some(()));
    let sha = hex::encode(Sha256::digest(std::fs::read(installed(&fleet, b, "2")).unwrap()));
    assert_eq!(sha, v2.sha256);
    let gets = origin_gets(&server);
    assert_eq!(gets.len(), 2, "{gets:?}");
    let resumed_at: u64 = gets[1]
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse().ok())
        .unwrap_or_else(|| panic!("the origin download did not resume: {gets:?}"));
    assert!(resumed_at >= 1 << 20, "resumed at byte {resumed_at}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_host_serves_its_kept_release_again() {
    let (mut fleet, c, _server, _v2) = one_host_at_v2("peers-restart", "", 64 << 10).await;
    let path = fleet.layout().peer_source("api", "2", &fleet.hosts[0].id);
    let before = c.check_stat(&path).await.unwrap().unwrap().ephemeral_owner;
    fleet.kill(0);
    fleet.start(0);
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Ok((data, stat)) = c.get_data(&path).await {
                let source: znode_schema::PeerSource = znode_schema::decode(&path, &data).unwrap();
                if stat.ephemeral_owner != before && source.complete {
                    return source;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let source = found.unwrap_or_else(|_| panic!("{path} was not taken over by the new session"));
    assert_eq!(source.address, format!("127.0.0.1:{}", fleet.hosts[0].peer_port));
    assert!(plain_log(&fleet, 0).contains("serving the release to peers"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_streams_from_a_peer_still_downloading_and_the_origin_is_read_once() {
    let root = unique_root("peers-relay");
    let mut fleet = Fleet::new(&shared_server().connect_string(), &root, "api", 2)
        .with_host_config(&peers_config("origin_fetches = 1"));
    let c = fleet.client().await;
    start_at_v1(&mut fleet, &c).await;
    // A slow origin: 2 MiB at 512 KiB/s, about 4 s for the host that fetches it.
    let server = ArtifactServer::start();
    let (v2, _) = served_release(&fleet, &server, "2", 2 << 20);
    server.fail_always(Fault::Throttle(512 << 10));
    stage(&c, &fleet.layout(), "api", "2", &v2, policy(1, 2, Duration::ZERO)).await;
    let layout = fleet.layout();
    let slot = layout.origin_slot("api", "2", 0);
    let relayed = tokio::time::timeout(PATIENCE, async {
        loop {
            // The origin fetcher, and the other host's partial download while the
            // fetcher's source node still says it relays an unfinished download.
            if let Ok((data, _)) = c.get_data(&slot).await {
                let fetcher: znode_schema::OriginFetch = znode_schema::decode(&slot, &data).unwrap();
                let other = fleet.hosts.iter().position(|h| h.id != fetcher.host).unwrap();
                let source = layout.peer_source("api", "2", &fetcher.host);
                let partial = fleet.hosts[other].data_dir.join("api/downloads/2/artifact.partial");
                let got = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
                if let Ok((data, _)) = c.get_data(&source).await {
                    let s: znode_schema::PeerSource = znode_schema::decode(&source, &data).unwrap();
                    if !s.complete && got >= 256 << 10 {
                        return other;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let other = relayed.unwrap_or_else(|_| panic!("no host streamed from a download in progress\n{}", fleet.logs()));
    wait_versions(&fleet, &c, 2, "2").await;
    assert_eq!(origin_gets(&server).len(), 1, "{:?}", server.requests());
    assert!(plain_log(&fleet, other).contains("download verified (from peers)"));
    let sha = hex::encode(Sha256::digest(std::fs::read(installed(&fleet, other, "2")).unwrap()));
    assert_eq!(sha, v2.sha256);
}
