//! `deployctl stage` as SPEC writes it: the artifact fetched once (sha256 and size
//! taken from it), every refusal before anything is written, `--no-fetch`,
//! `--dry-run`, the quorum and never-registered refusals, and a catalogued version
//! at another URL. Real ZooKeeper, real HTTP server.

use baton_tests::artifact_server::{ArtifactServer, Fault};
use baton_tests::ctl::{Ctl, client, deploy_entries, get, json, online, put, snapshot};
use serde_json::Value;
use sha2::Digest;
use zookeeper_client as zk;

fn sha256(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

async fn setup(name: &str) -> (Ctl, zk::Client) {
    let ctl = Ctl::new(name);
    let c = client(&ctl.connect).await;
    ctl.init_with_services().await;
    (ctl, c)
}

/// A URL on loopback where nothing listens.
fn dead_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("http://127.0.0.1:{port}/api-2.tar.gz")
}

#[tokio::test]
async fn stage_fetches_the_artifact_once_and_takes_its_size() {
    let (ctl, c) = setup("fetch").await;
    let server = ArtifactServer::start();
    let bytes = vec![7u8; 100_000];
    server.put("/api-2.tar.gz", bytes.clone());
    let url = server.url("/api-2.tar.gz");
    let digest = sha256(&bytes);
    // SPEC's command line, with no size.
    let r = ctl.ok(&["stage", "api", "--version", "2", "--url", &url, "--sha256", &digest]).await;
    assert!(r.stdout.contains("100000 bytes"), "{r:?}");
    let staging = get(&c, &ctl.layout.staging("api")).await;
    assert_eq!(staging["artifact"]["size"], 100_000);
    assert_eq!(staging["artifact"]["sha256"], digest);
    assert_eq!(server.request_count(), 1, "fetched exactly once");
    // With --size too, the size is checked against the fetched bytes.
    let r = ctl.run(&["stage", "api", "--version", "3", "--url", &url, "--sha256", &digest, "--size", "100000"]).await;
    assert_eq!(r.code, 3, "only refused for the unfinished rollout: {r:?}");
    assert!(r.stderr.contains("--replace"), "{r:?}");
}

#[tokio::test]
async fn stage_refuses_what_it_cannot_fetch_or_verify_and_writes_nothing() {
    let (ctl, c) = setup("fetch-refused").await;
    let server = ArtifactServer::start();
    let bytes = b"the real artifact".to_vec();
    server.put("/a.tar.gz", bytes.clone());
    let good = sha256(&bytes);
    let wrong = "0".repeat(64);
    let url = server.url("/a.tar.gz");
    let missing = server.url("/missing.tar.gz");
    let dead = dead_url();
    let file_missing = "file:///nonexistent/baton/a.tar.gz".to_string();
    let cases: Vec<(Vec<&str>, Vec<String>)> = vec![
        (vec!["--url", &dead, "--sha256", &good], vec![format!("failed to fetch {dead}"), "--no-fetch".into()]),
        (vec!["--url", &missing, "--sha256", &good], vec![format!("failed to fetch {missing}"), "HTTP 404".into()]),
        (
            vec!["--url", &url, "--sha256", &wrong],
            vec![format!("the artifact at {url} has sha256 {good}, not the expected {wrong}")],
        ),
        (
            vec!["--url", &url, "--sha256", &good, "--size", "5"],
            vec![format!("is {} bytes long, not the expected 5", bytes.len())],
        ),
        (vec!["--url", &file_missing, "--sha256", &good], vec![format!("failed to read {file_missing}")]),
        (vec!["--url", &url, "--sha256", &good, "--no-fetch"], vec!["--no-fetch needs --size".into()]),
    ];
    let before = snapshot(&c, &ctl.root).await;
    for (extra, messages) in cases {
        let args = [vec!["stage", "api", "--version", "2"], extra].concat();
        let r = ctl.run(&args).await;
        assert_eq!(r.code, 2, "{args:?} exits 2: {r:?}");
        for m in messages {
            assert!(r.stderr.contains(&m), "{args:?}: stderr {:?} should contain {m:?}", r.stderr);
        }
        assert_eq!(snapshot(&c, &ctl.root).await, before, "{args:?} wrote nothing");
    }
    // A server error is refused the same way.
    server.fail_always(Fault::Status(503));
    let r = ctl.run(&["stage", "api", "--version", "2", "--url", &url, "--sha256", &good]).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("HTTP 503"), "{r:?}");
    assert_eq!(snapshot(&c, &ctl.root).await, before, "nothing written");
}

#[tokio::test]
async fn no_fetch_takes_the_size_as_given() {
    let (ctl, c) = setup("no-fetch").await;
    let dead = dead_url();
    let digest = "ab".repeat(32);
    ctl.ok(&["stage", "api", "--version", "2", "--url", &dead, "--sha256", &digest, "--size", "123", "--no-fetch"])
        .await;
    let staging = get(&c, &ctl.layout.staging("api")).await;
    assert_eq!(
        (staging["artifact"]["size"].as_u64(), staging["artifact"]["url"].as_str()),
        (Some(123), Some(dead.as_str()))
    );
}

#[tokio::test]
async fn dry_run_prints_the_plan_and_writes_nothing() {
    let (ctl, c) = setup("dry-run").await;
    let l = &ctl.layout;
    for h in ["web-01", "web-02", "web-03", "web-04"] {
        online(&c, l, "api", h, "1.0").await;
    }
    let fake = "--url https://r/a --sha256 cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc --size 1 --no-fetch";
    let web: Vec<&str> =
        ["stage", "web", "--version", "9", "--quorum", "0"].into_iter().chain(fake.split(' ')).collect();
    ctl.ok(&web).await;
    let before = snapshot(&c, &ctl.root).await;
    let stage: Vec<&str> = ["stage", "api", "--version", "2", "--quorum", "50%", "--max-parallel", "3", "--dry-run"]
        .into_iter()
        .chain(fake.split(' '))
        .collect();
    let r = ctl.ok(&stage).await;
    assert!(r.stdout.contains("plan for api 2 (dry run: nothing written)"), "{r:?}");
    assert!(r.stdout.contains("4 host(s): web-01 1.0, web-02 1.0, web-03 1.0, web-04 1.0"), "{r:?}");
    assert!(
        r.stdout.contains("50% of 4 = 2 must stay online; 4 - 2 = 2 may step, max_parallel 3: 2 at a time"),
        "{r:?}"
    );
    let batches: Vec<&str> = r.stdout.lines().filter(|l| l.trim_start().starts_with("batch")).collect();
    assert_eq!(batches.len(), 2, "{r:?}");
    assert!(batches[0].ends_with("web-01, web-02") && batches[1].ends_with("web-03, web-04"), "{r:?}");
    assert!(r.stdout.contains("position 2: behind deploy-") && r.stdout.contains("web 9 (active)"), "{r:?}");
    assert_eq!(snapshot(&c, &ctl.root).await, before, "a dry run writes nothing");

    let r = ctl.ok(&[&stage[..], &["--json"]].concat()).await;
    let v = json(&r.stdout);
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["quorum"]["required"], 2);
    assert_eq!(v["quorum"]["parallel"], 2);
    assert_eq!(v["batches"], serde_json::json!([["web-01", "web-02"], ["web-03", "web-04"]]));
    assert_eq!(v["deploy"]["position"], 2);
    assert_eq!(v["deploy"]["ahead"][0]["service"], "web", "the queue shape of status: {v}");
    assert_eq!(v["refused"], Value::Null);

    // A plan that would be refused says so, exits 3 and writes nothing either.
    let never: Vec<&str> =
        ["stage", "api", "--version", "2", "--quorum", "4", "--dry-run"].into_iter().chain(fake.split(' ')).collect();
    let r = ctl.run(&never).await;
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stdout.contains("refused") && r.stdout.contains("quorum 4 of api needs 4 host(s)"), "{r:?}");
    assert_eq!(snapshot(&c, &ctl.root).await, before, "nothing written");
}

#[tokio::test]
async fn a_service_is_known_by_its_hosts_catalog_or_history() {
    let (ctl, c) = setup("known").await;
    let fake = ["--url", "https://r/a", "--sha256", &"d".repeat(64), "--size", "1", "--no-fetch"].map(String::from);
    let stage = |svc: &'static str| {
        let mut a: Vec<String> = ["stage", svc, "--version", "1"].map(String::from).to_vec();
        a.extend(fake.iter().cloned());
        a
    };
    let before = snapshot(&c, &ctl.root).await;
    let args = stage("ghost");
    let r = ctl.run(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("no sidecar has ever registered service ghost"), "{r:?}");
    assert_eq!(snapshot(&c, &ctl.root).await, before, "nothing written");
    // A history of the service is evidence enough (it was staged and run before).
    put(&c, &format!("{}/event-0000009999", ctl.layout.history("old")), b"{\"schema\":1}").await;
    let args = stage("old");
    ctl.ok(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
}

#[tokio::test]
async fn restaging_a_version_at_another_url_records_it_and_warns() {
    let (ctl, c) = setup("new-url").await;
    let server = ArtifactServer::start();
    let bytes = b"same bytes".to_vec();
    server.put("/old/a", bytes.clone());
    server.put("/new/a", bytes.clone());
    let digest = sha256(&bytes);
    let (old, new) = (server.url("/old/a"), server.url("/new/a"));
    ctl.ok(&["stage", "api", "--version", "1", "--url", &old, "--sha256", &digest, "--quorum", "0"]).await;
    let r = ctl
        .ok(&["stage", "api", "--version", "1", "--url", &new, "--sha256", &digest, "--quorum", "0", "--replace"])
        .await;
    assert!(
        r.stderr.contains(&format!("warning: release api 1 was catalogued at {old}; the catalog now records {new}")),
        "{r:?}"
    );
    let release = get(&c, &ctl.layout.release("api", "1")).await;
    assert_eq!(release["artifact"]["url"], new.as_str());
    assert_eq!(release["artifact"]["sha256"], digest.as_str());
    assert_eq!(get(&c, &ctl.layout.staging("api")).await["artifact"]["url"], new.as_str());
    assert_eq!(deploy_entries(&c, &ctl.layout).await.len(), 1);
}

/// `openssl` with `args` in `dir`, which must succeed.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn stage_fetches_over_https_trusting_the_system_store() {
    let (ctl, c) = setup("https").await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (days, rsa) = (["-days", "1"], ["-newkey", "rsa:2048", "-nodes"]);
    openssl(
        d,
        &[&["req", "-x509"][..], &rsa, &["-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=baton test CA"], &days]
            .concat(),
    );
    openssl(d, &[&["req"][..], &rsa, &["-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost"]].concat());
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let sign =
        ["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "leaf.pem"];
    openssl(d, &[&sign[..], &["-extfile", "ext.cnf"], &days].concat());
    let bytes = b"an artifact served over https".to_vec();
    std::fs::write(d.join("a.bin"), &bytes).unwrap();
    let port = baton_tests::zk::free_port();
    let mut server = std::process::Command::new("openssl");
    server.args(["s_server", "-quiet", "-WWW", "-accept", &port.to_string(), "-cert", "leaf.pem", "-key", "leaf.key"]);
    server.current_dir(d).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
    let mut server = baton_tests::process::spawn_tied(server).expect("start openssl s_server");
    baton_tests::eventually("openssl s_server to listen", std::time::Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let url = format!("https://localhost:{port}/a.bin");
    let digest = sha256(&bytes);
    let args = ["stage", "api", "--version", "2", "--url", &url, "--sha256", &digest];
    // Not trusted: refused, naming the URL and the TLS error; nothing written.
    let before = snapshot(&c, &ctl.root).await;
    let r = ctl.run(&args).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains(&format!("failed to fetch {url}")) && r.stderr.contains("UnknownIssuer"), "{r:?}");
    assert_eq!(snapshot(&c, &ctl.root).await, before, "nothing written");
    // The system store (SSL_CERT_FILE, as rustls-native-certs reads it) trusts the CA.
    let mut cmd = ctl.command(&args);
    cmd.env("SSL_CERT_FILE", d.join("ca.pem"));
    let r = baton_tests::ctl::run_command(cmd).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(get(&c, &ctl.layout.staging("api")).await["artifact"]["size"], bytes.len());
    let _ = server.kill();
    let _ = server.wait();
}
