//! deployctl against a real ZooKeeper: init, stage (and every refused input), status,
//! history, releases, help and completions. Each test has its own root.

use baton_tests::ctl::{
    BY, Ctl, client, deploy_entries, get, history, json, marker, online, put, sha, snapshot, ticket,
};
use serde_json::Value;
use zookeeper_client as zk;

/// `stage SERVICE --version V` with a fake artifact.
fn stage_args<'a>(service: &'a str, version: &'a str, digest: &'a str) -> Vec<&'a str> {
    // --no-fetch: the artifact is made up (deployctl_stage.rs fetches real ones).
    let url = "https://repo/a.tar.gz";
    vec!["stage", service, "--version", version, "--url", url, "--sha256", digest, "--size", "10", "--no-fetch"]
}

async fn setup(name: &str) -> (Ctl, zk::Client) {
    let ctl = Ctl::new(name);
    let c = client(&ctl.connect).await;
    ctl.init_with_services().await;
    (ctl, c)
}

#[tokio::test]
async fn init_creates_the_tree_idempotently() {
    let ctl = Ctl::new("init");
    let c = client(&ctl.connect).await;
    let r = ctl.ok(&["init"]).await;
    assert!(r.stdout.contains(&format!("created {}/deploy", ctl.root)), "{r:?}");
    for dir in ctl.layout.top_dirs() {
        assert!(c.check_stat(&dir).await.unwrap().is_some(), "{dir} exists");
    }
    let before = snapshot(&c, &ctl.root).await;
    let r = ctl.ok(&["init"]).await;
    assert!(r.stdout.contains("already exists"), "{r:?}");
    assert_eq!(snapshot(&c, &ctl.root).await, before);
}

#[tokio::test]
async fn stage_writes_staging_release_entry_and_event() {
    let (ctl, c) = setup("stage").await;
    let l = &ctl.layout;
    let digest = sha('a');
    let mut args = stage_args("api", "1.4.0", &digest);
    args.extend(["--quorum", "60%", "--max-parallel", "2", "--bake", "10s", "--health-deadline", "30s"]);
    args.extend(["--max-failures", "1"]);
    let r = ctl.ok(&args).await;
    let staging = get(&c, &l.staging("api")).await;
    assert_eq!(staging["schema"], 1);
    assert_eq!(staging["version"], "1.4.0");
    assert_eq!(staging["artifact"]["sha256"], digest);
    assert_eq!(staging["artifact"]["format"], "tar.gz");
    assert_eq!(staging["policy"]["quorum"], "60%");
    assert_eq!(staging["policy"]["max_parallel"], 2);
    assert_eq!(staging["policy"]["bake"], "10s");
    assert_eq!(staging["policy"]["max_failures"], 1);
    assert_eq!(staging["staged_by"], BY);
    let release = get(&c, &l.release("api", "1.4.0")).await;
    assert_eq!(release["artifact"], staging["artifact"]);
    let entries = deploy_entries(&c, l).await;
    assert_eq!(entries.len(), 1);
    let entry = json(&entries[0].1);
    assert_eq!((entry["service"].as_str(), entry["state"].as_str()), (Some("api"), Some("active")));
    assert_eq!(entry["created_by"], BY);
    assert!(c.check_stat(&format!("{}/upgrading", entries[0].0)).await.unwrap().is_some());
    let events = history(&c, l, "api").await;
    assert_eq!(events.len(), 1);
    let ev = json(&events[0]);
    assert_eq!((ev["event"].as_str(), ev["by"].as_str()), (Some("staged"), Some(BY)));
    assert!(r.stdout.contains(&entries[0].0), "prints the entry: {r:?}");
    assert!(r.stdout.contains("queue position 1 of 1"), "{r:?}");
}

#[tokio::test]
async fn stage_with_file_computes_sha256_and_size() {
    let (ctl, c) = setup("file").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("api-2.0.tar.gz");
    std::fs::write(&file, b"not really a tarball").unwrap();
    let expected = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b"not really a tarball"))
    };
    let f = file.to_str().unwrap();
    ctl.ok(&["stage", "api", "--version", "2.0", "--file", f, "--json"]).await;
    let staging = get(&c, &ctl.layout.staging("api")).await;
    assert_eq!(staging["artifact"]["sha256"], expected);
    assert_eq!(staging["artifact"]["size"], 20);
    assert_eq!(staging["artifact"]["url"], format!("file://{}", std::fs::canonicalize(&file).unwrap().display()));
    // --file with an explicit URL and a matching --sha256 is accepted.
    let r = ctl
        .run(&[
            "stage",
            "api",
            "--version",
            "2.1",
            "--file",
            f,
            "--url",
            "https://r/x",
            "--sha256",
            &expected,
            "--replace",
        ])
        .await;
    assert_eq!(r.code, 0, "{r:?}");
}

#[tokio::test]
async fn stage_refuses_invalid_input_and_writes_nothing() {
    let (ctl, c) = setup("invalid").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.bin");
    std::fs::write(&file, b"abc").unwrap();
    let f = file.to_str().unwrap();
    let good = sha('b');
    let not_hex = "g".repeat(64);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (stage_args("bad/name", "1", &good), "service name \"bad/name\" contains '/'"),
        (stage_args("_api", "1", &good), "must start with an ASCII letter or digit"),
        (stage_args("api", "1 0", &good), "version \"1 0\" contains ' '"),
        (stage_args("api", "1", "abc"), "invalid sha256 \"abc\": expected 64 hex digits"),
        (stage_args("api", "1", &not_hex), "expected 64 hex digits"),
        (vec!["stage", "api", "--version", "1", "--url", "ftp://x/a", "--sha256", &good, "--size", "1"], "invalid URL"),
        (
            vec!["stage", "api", "--version", "1", "--url", "https://x/a", "--sha256", &good, "--no-fetch"],
            "--size BYTES",
        ),
        (vec!["stage", "api", "--version", "1", "--url", "https://x/a", "--size", "1"], "sha256 is unknown"),
        (vec!["stage", "api", "--version", "1", "--file", f, "--sha256", &good], "does not match"),
        (vec!["stage", "api", "--version", "1", "--file", f, "--size", "99"], "--size 99 does not match"),
        (vec!["stage", "api", "--version", "1", "--file", "/nonexistent/x"], "failed to read the artifact"),
        ([stage_args("api", "1", &good), vec!["--quorum", "half"]].concat(), "invalid quorum \"half\""),
        ([stage_args("api", "1", &good), vec!["--quorum", "150%"]].concat(), "between 0% and 100%"),
        ([stage_args("api", "1", &good), vec!["--max-parallel", "0"]].concat(), "max_parallel must be at least 1"),
        ([stage_args("api", "1", &good), vec!["--bake", "soon"]].concat(), "invalid duration \"soon\""),
        ([stage_args("api", "1", &good), vec!["--max-failures=-1"]].concat(), "invalid value '-1' for '--max-failures"),
    ];
    let before = snapshot(&c, &ctl.root).await;
    for (args, message) in cases {
        let r = ctl.run(&args).await;
        assert_eq!(r.code, 2, "{args:?} exits 2: {r:?}");
        assert!(r.stderr.contains(message), "{args:?}: stderr {:?} should contain {message:?}", r.stderr);
        assert_eq!(snapshot(&c, &ctl.root).await, before, "{args:?} wrote nothing");
    }
}

#[tokio::test]
async fn stage_refuses_a_second_unfinished_rollout_unless_replace() {
    let (ctl, c) = setup("replace").await;
    let l = &ctl.layout;
    ctl.ok(&stage_args("api", "1.0", &sha('a'))).await;
    let first = deploy_entries(&c, l).await[0].0.clone();
    let before = snapshot(&c, &ctl.root).await;
    let r = ctl.run(&stage_args("api", "1.1", &sha('b'))).await;
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains(&format!("api already has an unfinished rollout to 1.0 (active) at {first}")), "{r:?}");
    assert!(r.stderr.contains("--replace"), "{r:?}");
    assert_eq!(snapshot(&c, &ctl.root).await, before);

    let m = marker(&c, &first, "web-01", "0.9", "1.0").await;
    // --force: no host online and one mid-step, so with quorum 1 nobody could step.
    let r = ctl.ok(&[stage_args("api", "1.1", &sha('b')), vec!["--replace", "--force"]].concat()).await;
    assert!(r.stdout.contains(&format!("replaced the unfinished rollout at {first}")), "{r:?}");
    assert!(c.check_stat(&m).await.unwrap().is_none() && c.check_stat(&first).await.unwrap().is_none());
    let entries = deploy_entries(&c, l).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(json(&entries[0].1)["version"], "1.1");
    assert_eq!(get(&c, &l.staging("api")).await["version"], "1.1");
    let last = json(history(&c, l, "api").await.last().unwrap());
    assert!(last["detail"].as_str().unwrap().contains("replaces"), "{last}");
}

#[tokio::test]
async fn stage_refuses_a_service_no_sidecar_ever_registered_unless_force() {
    let (ctl, c) = setup("ghost").await;
    let before = snapshot(&c, &ctl.root).await;
    // A typo: no sidecar runs "apj", so its rollout would head the queue with nobody to move it.
    let r = ctl.run(&stage_args("apj", "1.0", &sha('a'))).await;
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("no sidecar has ever registered service apj"), "{r:?}");
    assert!(r.stderr.contains(&ctl.layout.current_service("apj")) && r.stderr.contains("--force"), "{r:?}");
    assert_eq!(snapshot(&c, &ctl.root).await, before, "nothing written");
    ctl.ok(&[stage_args("apj", "1.0", &sha('a')), vec!["--force"]].concat()).await;
    assert_eq!(get(&c, &ctl.layout.staging("apj")).await["version"], "1.0");
}

#[tokio::test]
async fn stage_refuses_a_cataloged_version_with_another_sha256() {
    let (ctl, c) = setup("catalog").await;
    ctl.ok(&stage_args("api", "1.0", &sha('a'))).await;
    let before = snapshot(&c, &ctl.root).await;
    let r = ctl.run(&[stage_args("api", "1.0", &sha('c')), vec!["--replace"]].concat()).await;
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains(&format!("release api 1.0 is already in the catalog with sha256 {}", sha('a'))), "{r:?}");
    assert_eq!(snapshot(&c, &ctl.root).await, before);
    // The same artifact again is fine (the catalog entry is left as it was).
    let r = ctl.run(&[stage_args("api", "1.0", &sha('A')), vec!["--replace"]].concat()).await;
    assert_eq!(r.code, 0, "uppercase digits are the same sha256: {r:?}");
    assert!(r.stdout.contains("already in the catalog"), "{r:?}");
}

#[tokio::test]
async fn stage_refuses_a_quorum_that_cannot_be_met_unless_force() {
    let (ctl, c) = setup("quorum").await;
    let l = &ctl.layout;
    online(&c, l, "api", "web-01", "1.0").await;
    online(&c, l, "api", "web-02", "1.0").await;
    let before = snapshot(&c, &ctl.root).await;
    let r = ctl.run(&[stage_args("api", "1.1", &sha('a')), vec!["--quorum", "2"]].concat()).await;
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stderr.contains("quorum 2 of api needs 2 host(s) to stay online while one steps, but 2 host(s) are online"),
        "{r:?}"
    );
    assert_eq!(snapshot(&c, &ctl.root).await, before, "nothing written");
    ctl.ok(&[stage_args("api", "1.1", &sha('a')), vec!["--quorum", "2", "--force"]].concat()).await;
    let r = ctl.ok(&[stage_args("api", "1.2", &sha('b')), vec!["--quorum", "1", "--replace"]].concat()).await;
    assert!(!r.stderr.contains("warning"), "quorum 1 of 2 can be met: {r:?}");
    let r = ctl.ok(&[stage_args("api", "1.3", &sha('c')), vec!["--quorum", "50%", "--replace"]].concat()).await;
    assert!(!r.stderr.contains("warning"), "50% of 2 is 1: {r:?}");
}

#[tokio::test]
async fn stage_prints_its_place_in_the_queue_and_needs_init() {
    let (ctl, c) = setup("queue").await;
    ctl.ok(&stage_args("api", "1.0", &sha('a'))).await;
    let r = ctl.ok(&[stage_args("web", "2.0", &sha('b')), vec!["--json"]].concat()).await;
    let v = json(&r.stdout);
    assert_eq!(v["deploy"]["position"], 2);
    assert_eq!(v["deploy"]["queue_length"], 2);
    let ahead = &v["deploy"]["ahead"][0];
    assert_eq!(
        (ahead["service"].as_str(), ahead["state"].as_str(), ahead["position"].as_u64()),
        (Some("api"), Some("active"), Some(1)),
        "{v}"
    );
    assert_eq!(v["deploy"]["path"].as_str(), Some(deploy_entries(&c, &ctl.layout).await[1].0.as_str()));

    let fresh = Ctl::new("noinit");
    let r = fresh.run(&stage_args("api", "1.0", &sha('a'))).await;
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("run `deployctl init` first"), "{r:?}");
    assert!(c.check_stat(&fresh.root).await.unwrap().is_none(), "nothing written");
}

#[tokio::test]
async fn status_shows_versions_steps_tickets_and_malformed_nodes() {
    let (ctl, c) = setup("status").await;
    let l = &ctl.layout;
    ctl.ok(&stage_args("api", "1.0", &sha('a'))).await;
    ctl.ok(&[stage_args("api", "1.1", &sha('b')), vec!["--replace"]].concat()).await;
    let entry = deploy_entries(&c, l).await[0].0.clone();
    online(&c, l, "api", "web-01", "1.1").await;
    online(&c, l, "api", "web-02", "1.0").await;
    online(&c, l, "api", "web-03", "1.0").await;
    marker(&c, &entry, "web-04", "1.0", "1.1").await;
    ticket(&c, l, "api", "web-02", "1.1").await;
    ticket(&c, l, "api", "web-03", "1.1").await;
    put(&c, &l.current_host("api", "web-05"), b"{not json").await;
    put(&c, &format!("{}/deploy-0000009999", l.deploy_dir()), b"{\"schema\":1}").await;

    let r = ctl.ok(&["status"]).await;
    let out = &r.stdout;
    assert!(out.contains("staged     1.1 by tester@test"), "{out}");
    assert!(out.contains("active, queue position 1 of 2, failures 0/0"), "{out}");
    assert!(out.contains("1.0: web-02, web-03 | 1.1: web-01 (4 online)"), "{out}");
    assert!(out.contains("upgrading  web-04 1.0 -> 1.1 since"), "{out}");
    assert!(out.contains("tickets    web-02, web-03"), "{out}");
    assert!(out.contains(&format!("MALFORMED {}: malformed JSON", l.current_host("api", "web-05"))), "{out}");
    assert!(out.contains("deploy-0000009999 (malformed: missing field `service`)"), "{out}");

    let v = json(&ctl.ok(&["status", "api", "--json"]).await.stdout);
    let s = &v["services"][0];
    assert_eq!(s["service"], "api");
    assert_eq!(s["staged_version"], "1.1");
    assert_eq!(s["deploy"]["path"], entry.as_str());
    assert_eq!(s["deploy"]["state"], "active");
    assert_eq!(s["deploy"]["position"], 1);
    assert_eq!(s["hosts_by_version"][0], serde_json::json!({"version": "1.0", "hosts": ["web-02", "web-03"]}));
    assert_eq!(s["upgrading"][0]["host"], "web-04");
    assert_eq!(s["tickets"].as_array().unwrap().len(), 2);
    assert_eq!(s["problems"][0]["path"], l.current_host("api", "web-05"));
    assert_eq!(v["problems"][0]["path"], format!("{}/deploy-0000009999", l.deploy_dir()));

    let r = ctl.ok(&["status", "api", "--hosts"]).await;
    let line = |host: &str| r.stdout.lines().find(|x| x.contains(host)).unwrap_or_default().to_string();
    assert!(line("web-01").contains("online") && line("web-01").contains("1.1"), "{r:?}");
    assert!(line("web-02").contains("#1"), "{r:?}");
    assert!(line("web-04").contains("upgrading") && line("web-04").contains("1.0 -> 1.1"), "{r:?}");
    assert!(line("web-05").contains("MALFORMED"), "{r:?}");
}

#[tokio::test]
async fn history_is_newest_first_limited_and_pruned() {
    let (ctl, c) = setup("history").await;
    let l = &ctl.layout;
    for (i, v) in ["1", "2", "3", "4", "5"].iter().enumerate() {
        let digest = sha(char::from(b'a' + i as u8));
        ctl.ok(&[stage_args("api", v, &digest), vec!["--replace", "--history-keep", "3"]].concat()).await;
    }
    assert_eq!(history(&c, l, "api").await.len(), 3, "pruned to the newest 3");
    let r = ctl.ok(&["history", "api", "--limit", "2"]).await;
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "header and two events: {r:?}");
    assert!(lines[1].contains("staged") && lines[1].contains(" 5 "), "{r:?}");
    assert!(lines[2].contains(" 4 "), "{r:?}");
    let v = json(&ctl.ok(&["history", "api", "--json"]).await.stdout);
    let versions: Vec<&str> = v["events"].as_array().unwrap().iter().map(|e| e["version"].as_str().unwrap()).collect();
    assert_eq!(versions, ["5", "4", "3"]);
    assert_eq!(v["events"][0]["by"], BY);
    let r = ctl.run(&["history", "nope"]).await;
    assert_eq!(r.code, 3, "{r:?}");
    let r = ctl.run(&["history", "api", "--limit", "0"]).await;
    assert_eq!(r.code, 2, "{r:?}");
}

#[tokio::test]
async fn releases_lists_the_catalog_newest_first() {
    let (ctl, c) = setup("releases").await;
    ctl.ok(&stage_args("api", "1.0", &sha('a'))).await;
    ctl.ok(&[stage_args("api", "1.1", &sha('b')), vec!["--replace"]].concat()).await;
    online(&c, &ctl.layout, "api", "web-01", "1.0").await;
    let v = json(&ctl.ok(&["releases", "api", "--json"]).await.stdout);
    let rel = v["releases"].as_array().unwrap();
    assert_eq!(rel.len(), 2);
    let by_version = |ver: &str| rel.iter().find(|r| r["version"] == ver).unwrap().clone();
    assert_eq!(by_version("1.1")["staged"], true);
    assert_eq!(by_version("1.0")["hosts_online"], 1);
    assert_eq!(by_version("1.0")["artifact"]["sha256"], sha('a'));
    let r = ctl.ok(&["releases", "api"]).await;
    assert!(r.stdout.starts_with("VERSION"), "{r:?}");
    assert_eq!(ctl.run(&["releases", "nope"]).await.code, 3);
}

#[tokio::test]
async fn help_completions_and_missing_zookeeper() {
    let ctl = Ctl::new("help");
    let subcommands =
        ["init", "stage", "status", "watch", "pause", "resume", "abort", "rollback", "unlock", "history", "releases"];
    for sub in subcommands {
        let r = baton_tests::ctl::run_command(ctl.command(&[sub, "--help"])).await;
        assert_eq!(r.code, 0, "{sub} --help: {r:?}");
        assert!(r.stdout.contains("Example"), "{sub} --help has an example: {}", r.stdout);
    }
    let r = baton_tests::ctl::run_command(ctl.command(&["--help"])).await;
    assert!(r.stdout.contains("Exit codes:") && r.stdout.contains("4  watch"), "{r:?}");
    for shell in ["bash", "zsh", "fish"] {
        let r = ctl.run(&["completions", shell]).await;
        assert_eq!(r.code, 0, "{r:?}");
        assert!(r.stdout.contains("deployctl"), "{shell} completion");
    }
    let mut cmd = std::process::Command::new(baton_tests::bin::path("deployctl"));
    cmd.args(["status"]).env_remove("BATON_ZK");
    let r = baton_tests::ctl::run_command(cmd).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("no ZooKeeper given"), "{r:?}");
    let mut cmd = std::process::Command::new(baton_tests::bin::path("deployctl"));
    cmd.args(["--zk", &ctl.connect, "--root", "relative", "status"]);
    let r = baton_tests::ctl::run_command(cmd).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("invalid root path \"relative\""), "{r:?}");
}

#[tokio::test]
async fn stage_stores_a_signature_only_when_it_is_for_this_release_and_verifies() {
    use baton_tests::signing::Signer;
    let (ctl, c) = setup("signature").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("api.bin");
    std::fs::write(&file, b"the release").unwrap();
    let f = file.to_str().unwrap();
    let (signer, stranger) = (Signer::new(), Signer::new());
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let other_version = write("v9.minisig", signer.sign(b"the release", "baton api 9"));
    let by_stranger = write("stranger.minisig", stranger.sign(b"the release", "baton api 1"));
    let other_bytes = write("bytes.minisig", signer.sign(b"other bytes", "baton api 1"));
    let good = write("good.minisig", signer.sign(b"the release", "baton api 1"));
    let pubfile = write("signer.pub", signer.public_file());
    let key = signer.public();
    fn stage<'a>(f: &'a str, extra: Vec<&'a str>) -> Vec<&'a str> {
        [vec!["stage", "api", "--version", "1", "--file", f], extra].concat()
    }
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (stage(f, vec!["--signature", &other_version]), "trusted comment is \"baton api 9\", expected \"baton api 1\""),
        (stage(f, vec!["--signature", "/nonexistent.minisig"]), "failed to read the signature"),
        (stage(f, vec!["--signature", f]), "not a minisign signature"),
        (stage(f, vec!["--signature", &by_stranger, "--trust-key", &key]), "made by none of the trusted keys"),
        (stage(f, vec!["--signature", &other_bytes, "--trust-key", &key]), "does not verify over"),
        (stage(f, vec!["--trust-key", &key]), "--trust-key needs a signature"),
        (stage(f, vec!["--signature", &good, "--trust-key", "RWnotakey"]), "is not a minisign public key"),
    ];
    let before = snapshot(&c, &ctl.root).await;
    for (args, message) in cases {
        let r = ctl.run(&args).await;
        assert_eq!(r.code, 2, "{args:?} exits 2: {r:?}");
        assert!(r.stderr.contains(message), "{args:?}: stderr {:?} should contain {message:?}", r.stderr);
        assert_eq!(snapshot(&c, &ctl.root).await, before, "{args:?} wrote nothing");
    }
    ctl.ok(&stage(f, vec!["--signature", &good, "--trust-key", &pubfile])).await;
    let (data, _) = c.get_data(&ctl.layout.staging("api")).await.unwrap();
    let staged: znode_schema::Staging = znode_schema::decode("staging", &data).unwrap();
    assert_eq!(staged.artifact.signature.as_deref(), Some(std::fs::read_to_string(&good).unwrap().as_str()));

    // A signature made by the minisign tool, checked against its minisign.pub file.
    let (public, secret) = baton_tests::signing::minisign_keypair(dir.path(), "release");
    let sig = baton_tests::signing::minisign_sign(&secret, &file, "baton web 2");
    let sig = sig.to_str().unwrap();
    let stage_web = ["stage", "web", "--version", "2", "--file", f, "--signature", sig];
    let r = ctl.run(&[&stage_web[..], &["--trust-key", &key]].concat()).await;
    assert_eq!(r.code, 2, "signed by another key than the one trusted: {r:?}");
    assert!(r.stderr.contains("made by none of the trusted keys"), "{r:?}");
    ctl.ok(&[&stage_web[..], &["--trust-key", public.to_str().unwrap()]].concat()).await;
    // --sign-key signs with the minisign tool, the trusted comment made right.
    let sign_db = ["stage", "db", "--version", "7", "--file", f, "--sign-key", secret.to_str().unwrap()];
    let r = ctl.run(&[&sign_db[..], &["--trust-key", &key]].concat()).await;
    assert_eq!(r.code, 2, "signed by a key other than the trusted one: {r:?}");
    ctl.ok(&[&sign_db[..], &["--trust-key", public.to_str().unwrap()]].concat()).await;
    let (data, _) = c.get_data(&ctl.layout.staging("db")).await.unwrap();
    let staged: znode_schema::Staging = znode_schema::decode("staging", &data).unwrap();
    assert!(staged.artifact.signature.is_some_and(|s| s.contains("trusted comment: baton db 7")));
    let (data, _) = c.get_data(&ctl.layout.staging("web")).await.unwrap();
    let staged: znode_schema::Staging = znode_schema::decode("staging", &data).unwrap();
    let signature = staged.artifact.signature.expect("signed");
    assert!(signature.contains("trusted comment: baton web 2"), "{signature}");
}

#[tokio::test]
async fn strings_from_zookeeper_reach_the_terminal_escaped() {
    let (ctl, c) = setup("escape").await;
    ctl.ok(&stage_args("api", "1", &sha('a'))).await;
    let evil = "\u{1b}[2J\u{1b}[31mowned\nforged line";
    let event = serde_json::json!({
        "schema": 1, "at": "2026-12-01T00:00:00Z", "event": "download_failed", "service": "api",
        "version": "1", "host": "h1", "detail": evil, "by": "h1",
    });
    put(&c, &ctl.layout.history_event("api", "event-0000009999"), event.to_string().as_bytes()).await;
    let (data, _) = c.get_data(&ctl.layout.staging("api")).await.unwrap();
    let mut staging: Value = serde_json::from_slice(&data).unwrap();
    staging["staged_by"] = Value::from(evil);
    c.set_data(&ctl.layout.staging("api"), &serde_json::to_vec(&staging).unwrap(), None).await.unwrap();
    for args in [vec!["history", "api"], vec!["status"], vec!["status", "api", "--hosts"], vec!["releases", "api"]] {
        let r = ctl.ok(&args).await;
        assert!(!r.stdout.contains('\u{1b}'), "{args:?} printed a raw ESC: {:?}", r.stdout);
        assert!(!r.stdout.contains("\nforged line"), "{args:?} let a newline forge a line: {:?}", r.stdout);
    }
    let r = ctl.ok(&["history", "api"]).await;
    assert!(r.stdout.contains("\\u{1b}[31mowned\\nforged line"), "{:?}", r.stdout);
}
