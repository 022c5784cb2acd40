//! ZooKeeper identities and ACLs (SPEC "Trust: ZooKeeper identity"): whole rollouts
//! over TLS with client certificates and over digest logins; every write the layout
//! has, tried by a client without identity, by a sidecar and by another host's
//! sidecar, refused with NoAuth and nothing changed; `check` and the in-place upgrade
//! of an open tree; a sidecar with a wrong password stops with a clear error.

use baton_tests::ctl::{Ctl, Run, snapshot};
use baton_tests::fleet::{Behaviour, Fleet, deploys};
use baton_tests::secure::{Cert, Pki, SecureZk, digest_file, x509_id};
use baton_tests::{eventually_async, unique_root};
use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;
use znode_schema::acl::{Grant, Node, digest_id, perm};
use znode_schema::{Artifact, Layout, Security};
use zookeeper_client as zk;

const PATIENCE: Duration = Duration::from_secs(60);

/// One TLS + plaintext server for every test of this binary.
fn server() -> &'static SecureZk {
    static ZK: OnceLock<SecureZk> = OnceLock::new();
    ZK.get_or_init(SecureZk::start)
}

fn tls_args(z: &SecureZk, c: &Cert) -> Vec<String> {
    let p = |p: &std::path::Path| p.display().to_string();
    vec!["--tls-ca".into(), p(&z.pki.ca()), "--tls-cert".into(), p(&c.cert), "--tls-key".into(), p(&c.key)]
}

fn stage_args(a: &Artifact, version: &str, quorum: &str) -> Vec<String> {
    [
        "stage",
        "api",
        "--version",
        version,
        "--url",
        &a.url,
        "--sha256",
        &a.sha256,
        "--size",
        &a.size.to_string(),
        // Some artifacts here are made up (file:///nonexistent): not fetched.
        "--no-fetch",
        "--quorum",
        quorum,
        "--health-deadline",
        "10s",
        "--force",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

async fn ok(ctl: &Ctl, args: &[String]) -> Run {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ctl.ok(&args).await
}

async fn run(ctl: &Ctl, args: &[String]) -> Run {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ctl.run(&args).await
}

/// Stages v1 then v2 with deployctl and waits until every host ran each and the
/// rollouts completed.
async fn two_rollouts(ctl: &Ctl, fleet: &Fleet, client: &zk::Client) {
    let n = fleet.hosts.len();
    for (version, quorum) in [("1", "0"), ("2", "1")] {
        let art = fleet.artifact(version, Behaviour::Good);
        ok(ctl, &stage_args(&art, version, quorum)).await;
        baton_tests::chaos::wait_versions_within(fleet, client, n, version, PATIENCE).await;
        eventually_async(&format!("the v{version} rollout to complete"), PATIENCE, || async {
            deploys(client, &fleet.layout()).await.is_empty().then_some(())
        })
        .await;
    }
}

async fn staged_by(client: &zk::Client, layout: &Layout) -> String {
    let (data, _) = client.get_data(&layout.staging("api")).await.unwrap();
    znode_schema::decode::<znode_schema::Staging>("staging", &data).unwrap().staged_by
}

async fn history_by(client: &zk::Client, layout: &Layout) -> Vec<String> {
    let mut out = Vec::new();
    for e in client.list_children(&layout.history("api")).await.unwrap() {
        let (data, _) = client.get_data(&layout.history_event("api", &e)).await.unwrap();
        let ev: znode_schema::HistoryEvent = znode_schema::decode("event", &data).unwrap();
        out.push(ev.by.unwrap_or_default());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_over_tls_with_client_certificates() {
    let z = server();
    let deployer = z.pki.issue("deployer");
    let mut ctl = Ctl::on(&z.tls_connect(), "tls");
    ctl.global = tls_args(z, &deployer);
    let mut fleet = Fleet::new(&z.tls_connect(), &ctl.root, "api", 2);
    for h in &fleet.hosts {
        z.pki.issue(&h.id);
    }
    let dir = z.pki.dir().display().to_string();
    fleet.set_zk_extra(&z.sidecar_tls(&format!("{dir}/{{host}}.pem"), &format!("{dir}/{{host}}.key")));
    let init: Vec<String> = ["init", "--deployer", &x509_id("deployer"), "--sidecar", &x509_id("api-1")]
        .iter()
        .map(|s| s.to_string())
        .chain(["--sidecar".into(), x509_id("api-2"), "--reader".into(), "world".into()])
        .collect();
    ok(&ctl, &init).await;
    fleet.start_all();
    let client = z.tls_client(&deployer).await;
    two_rollouts(&ctl, &fleet, &client).await;

    let layout = fleet.layout();
    assert_eq!(staged_by(&client, &layout).await, x509_id("deployer"));
    let by = history_by(&client, &layout).await;
    assert!(by.iter().any(|b| b == &x509_id("deployer")), "{by:?}");
    assert!(by.iter().any(|b| b.starts_with(&format!("{} (sidecar@api-1)", x509_id("api-1")))), "{by:?}");
    // A host's registration names only its own identity among the sidecars.
    let (acl, _) = client.get_acl(&layout.current_host("api", "api-1")).await.unwrap();
    let ids: Vec<&str> = acl.iter().map(|a| a.id()).collect();
    assert!(ids.contains(&"CN=api-1,O=baton") && !ids.contains(&"CN=api-2,O=baton"), "{acl:?}");
    let check = ok(&ctl, &["check".to_string()]).await;
    assert!(check.stdout.contains("0 looser"), "{check:?}");
}

/// Secures the tree with digest logins (deployer `deployer`, sidecars `sidecar`),
/// points deployctl and the fleet at them, starts the fleet, and returns the
/// deployer's client.
async fn digest_tree(z: &SecureZk, ctl: &mut Ctl, fleet: &mut Fleet) -> zk::Client {
    let deployer = digest_file(fleet.dir(), "deployer", "d-secret");
    let sidecar = digest_file(fleet.dir(), "sidecar", "s-secret");
    ctl.global = vec!["--digest-file".into(), deployer.display().to_string()];
    fleet.set_zk_extra(&format!("auth = {{ digest_file = \"{}\" }}", sidecar.display()));
    let init =
        ["init", "--deployer", &digest_id("deployer", "d-secret"), "--sidecar", &digest_id("sidecar", "s-secret")];
    ok(ctl, &init.map(String::from)).await;
    fleet.start_all();
    z.digest_client("deployer", "d-secret").await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_over_digest_logins() {
    let z = server();
    let mut ctl = Ctl::on(&z.plain_connect(), "digest");
    let mut fleet = Fleet::new(&z.plain_connect(), &ctl.root, "api", 2);
    let client = digest_tree(z, &mut ctl, &mut fleet).await;
    two_rollouts(&ctl, &fleet, &client).await;
    assert_eq!(staged_by(&client, &fleet.layout()).await, "digest:deployer");
    // Without --reader, a client without identity reads nothing.
    let anon = baton_tests::ctl::client(&z.plain_connect()).await;
    assert_eq!(anon.get_data(&fleet.layout().staging("api")).await.unwrap_err(), zk::Error::NoAuth);
}

/// ACLs of every node under `root`.
async fn acls(c: &zk::Client, root: &str) -> BTreeMap<String, Vec<zk::Acl>> {
    let mut out = BTreeMap::new();
    for path in snapshot(c, root).await.into_keys() {
        out.insert(path.clone(), c.get_acl(&path).await.unwrap().0);
    }
    out
}

fn zk_acl(grants: &[Grant]) -> Vec<zk::Acl> {
    grants
        .iter()
        .map(|g| {
            let mut p = zk::Permission::NONE;
            for (bit, zp) in [
                (perm::READ, zk::Permission::READ),
                (perm::WRITE, zk::Permission::WRITE),
                (perm::CREATE, zk::Permission::CREATE),
                (perm::DELETE, zk::Permission::DELETE),
                (perm::ADMIN, zk::Permission::ADMIN),
            ] {
                if g.perms & bit != 0 {
                    p = p | zp;
                }
            }
            zk::Acl::new(p, zk::AuthId::new(&g.scheme, &g.id))
        })
        .collect()
}

/// Tries every write on every node as `c`; returns the writes that were not refused
/// with NoAuth, skipping those `allowed(node, perm)` says the client may make.
async fn attack(c: &zk::Client, layout: &Layout, paths: &[String], allowed: impl Fn(Node, u32) -> bool) -> Vec<String> {
    let mut got = Vec::new();
    let mut expect = |what: String, r: Result<(), zk::Error>| {
        if r != Err(zk::Error::NoAuth) {
            got.push(format!("{what}: {r:?}"));
        }
    };
    let open = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    for p in paths {
        let node = layout.classify(p).unwrap();
        if !allowed(node, perm::WRITE) {
            expect(format!("set {p}"), c.set_data(p, b"{}", None).await.map(|_| ()));
        }
        if !allowed(node, perm::CREATE) {
            expect(format!("create under {p}"), c.create(&format!("{p}/evil"), b"{}", &open).await.map(|_| ()));
            let seq = zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all());
            expect(format!("create -s under {p}"), c.create(&format!("{p}/deploy-"), b"{}", &seq).await.map(|_| ()));
        }
        let parent = p.rsplit_once('/').map(|(d, _)| if d.is_empty() { "/" } else { d }).unwrap_or("/");
        let parent_node = layout.classify(parent).unwrap_or(Node::Other);
        if !allowed(parent_node, perm::DELETE) && p != layout.root() {
            expect(format!("delete {p}"), c.delete(p, None).await);
        }
        expect(format!("set ACL of {p}"), c.set_acl(p, &zk::Acls::anyone_all(), None).await.map(|_| ()));
    }
    got
}

#[tokio::test(flavor = "multi_thread")]
async fn no_identity_a_sidecar_and_another_host_change_nothing() {
    let z = server();
    let deployer = z.pki.issue("deployer");
    let (h1, h2) = (z.pki.issue("web-1"), z.pki.issue("web-2"));
    let mut ctl = Ctl::on(&z.tls_connect(), "refused");
    ctl.global = tls_args(z, &deployer);
    let roles = Security {
        deployer: vec![x509_id("deployer")],
        sidecar: vec![x509_id("web-1"), x509_id("web-2")],
        reader: vec![],
    };
    let init =
        ["init", "--deployer", &x509_id("deployer"), "--sidecar", &x509_id("web-1"), "--sidecar", &x509_id("web-2")];
    ok(&ctl, &init.map(String::from)).await;
    // Every kind of node: web-1 registers, stage (staging, release, entry, event), web-1 tickets and marks.
    let layout = ctl.layout.clone();
    let c1 = z.tls_client(&h1).await;
    let mine = vec![x509_id("web-1")];
    let reg = layout.current_host("api", "web-1");
    let dir_acl = zk_acl(&roles.acl(Node::CurrentService, &mine));
    c1.create(&layout.current_service("api"), b"", &zk::CreateMode::Persistent.with_acls(zk::Acls::new(&dir_acl)))
        .await
        .unwrap();
    let reg_acl = zk_acl(&roles.acl(Node::Registration, &mine));
    c1.create(&reg, b"{}", &zk::CreateMode::Ephemeral.with_acls(zk::Acls::new(&reg_acl))).await.unwrap();
    let art = Artifact {
        url: "file:///nonexistent".into(),
        sha256: "0".repeat(64),
        size: 1,
        format: znode_schema::ArtifactFormat::File,
        signature: None,
    };
    ok(&ctl, &stage_args(&art, "1", "1")).await;
    let ticket_acl = zk_acl(&roles.acl(Node::Ticket, &mine));
    c1.create(
        &layout.ticket_prefix("api", "web-1"),
        b"{}",
        &zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::new(&ticket_acl)),
    )
    .await
    .unwrap();
    let entry = c1.list_children(&layout.deploy_dir()).await.unwrap().pop().unwrap();
    let entry = znode_schema::DeployName::parse(&entry).unwrap();
    let marker_acl = zk_acl(&roles.acl(Node::Marker, &mine));
    c1.create(
        &layout.upgrading(&entry, "web-1"),
        b"{}",
        &zk::CreateMode::Persistent.with_acls(zk::Acls::new(&marker_acl)),
    )
    .await
    .unwrap();

    let admin = z.tls_client(&deployer).await;
    let before = (snapshot(&admin, &ctl.root).await, acls(&admin, &ctl.root).await);
    let paths: Vec<String> = before.0.keys().cloned().collect();
    assert!(paths.len() >= 15, "{paths:#?}");

    let anon = baton_tests::ctl::client(&z.plain_connect()).await;
    let leaks = attack(&anon, &layout, &paths, |_, _| false).await;
    assert!(leaks.is_empty(), "a client without identity wrote: {leaks:#?}");

    // Another host's sidecar: it may do what sidecars do on shared nodes, but not
    // change web-1's nodes, stage, catalog, queue deploys or touch ACLs.
    let c2 = z.tls_client(&h2).await;
    let sidecar_may = |node: Node, p: u32| !node.is_per_host() && node.sidecar_perms() & p != 0;
    let leaks = attack(&c2, &layout, &paths, sidecar_may).await;
    assert!(leaks.is_empty(), "web-2's identity wrote: {leaks:#?}");
    // The sidecar role cannot stage (set staging data), catalog or queue a deploy.
    for (what, r) in [
        ("set staging/api", c1.set_data(&layout.staging("api"), b"{}", None).await.map(|_| ())),
        (
            "create releases/api/9",
            c1.create(
                &layout.release("api", "9"),
                b"{}",
                &zk::CreateMode::Persistent.with_acls(zk::Acls::new(&reg_acl)),
            )
            .await
            .map(|_| ()),
        ),
        (
            "create a deploy entry",
            c1.create(
                &layout.deploy_prefix(),
                b"{}",
                &zk::CreateMode::PersistentSequential.with_acls(zk::Acls::new(&reg_acl)),
            )
            .await
            .map(|_| ()),
        ),
    ] {
        assert_eq!(r, Err(zk::Error::NoAuth), "{what}");
    }
    let after = (snapshot(&admin, &ctl.root).await, acls(&admin, &ctl.root).await);
    assert!(before == after, "the tree changed");

    // deployctl with a certificate that is no deployer's: refused with a clear error.
    let mut intruder = ctl.clone();
    intruder.global = tls_args(z, &h2);
    let r = run(&intruder, &stage_args(&art, "2", "1")).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("NoAuth") && r.stderr.contains(&x509_id("web-2")), "{r:?}");
    assert!(r.stderr.contains(&z.tls_connect()), "names the server: {r:?}");
    // Without identity, even reading is refused (no --reader), with the same message.
    let mut nobody = ctl.clone();
    nobody.connect = z.plain_connect();
    nobody.global.clear();
    let r = nobody.run(&["status"]).await;
    assert!(r.code == 1 && r.stderr.contains("refused this to an unauthenticated client (NoAuth)"), "{r:?}");

    // The deployer does everything deployctl does in the secured tree.
    for args in [
        vec!["status", "api", "--hosts"],
        vec!["pause", "api", "--reason", "checking"],
        vec!["resume", "api"],
        vec!["unlock", "api", "web-1", "--force"],
        vec!["history", "api"],
        vec!["releases", "api"],
        vec!["abort", "api"],
    ] {
        ctl.ok(&args).await;
    }
    ok(&ctl, &stage_args(&art, "2", "1")).await;
    ok(&ctl, &["rollback".to_string(), "api".into(), "--to".into(), "1".into()]).await;
    // No loose ACL; the `{}` payloads this test wrote as web-1 are reported as invalid.
    let check = run(&ctl, &["check".to_string()]).await;
    assert!(check.stdout.contains("0 looser") && !check.stdout.contains("LOOSE"), "{check:?}");
    assert!(check.stdout.contains("missing field `schema`"), "{check:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn init_secures_an_open_tree_in_place_and_check_finds_loose_nodes() {
    let z = server();
    let mut ctl = Ctl::on(&z.plain_connect(), "upgrade");
    let dir = tempfile::tempdir().unwrap();
    let deployer = digest_file(dir.path(), "deployer", "pw");
    ctl.global = vec!["--digest-file".into(), deployer.display().to_string()];
    ok(&ctl, &["init".to_string()]).await;
    let art = Artifact {
        url: "file:///nonexistent".into(),
        sha256: "0".repeat(64),
        size: 1,
        format: znode_schema::ArtifactFormat::File,
        signature: None,
    };
    ok(&ctl, &stage_args(&art, "1", "1")).await;
    let open = run(&ctl, &["check".to_string()]).await;
    assert_eq!(open.code, 3, "an open tree: {open:?}");
    let roles = [
        "init",
        "--deployer",
        &digest_id("deployer", "pw"),
        "--sidecar",
        &digest_id("sidecar", "x"),
        "--reader",
        "world",
    ];
    let secured = ok(&ctl, &roles.map(String::from)).await;
    assert!(secured.stdout.contains("secured the tree"), "{secured:?}");
    ok(&ctl, &["check".to_string()]).await;
    // A node created open by a client that ignores the layout is reported.
    let admin = z.digest_client("deployer", "pw").await;
    let loose = format!("{}/odd", ctl.layout.history("api"));
    admin.create(&loose, b"", &zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())).await.unwrap();
    let found = run(&ctl, &["check".to_string()]).await;
    assert_eq!(found.code, 3, "{found:?}");
    assert!(found.stdout.contains(&format!("LOOSE {loose}")), "{found:?}");
    ok(&ctl, &roles.map(String::from)).await;
    ok(&ctl, &["check".to_string()]).await;
    // Roles that would lock out the deployctl running init are refused.
    let lockout = ["init", "--deployer", &digest_id("someone", "else"), "--sidecar", &digest_id("sidecar", "x")];
    let r = run(&ctl, &lockout.map(String::from)).await;
    assert_eq!(r.code, 3, "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_with_a_wrong_password_stops_with_a_clear_error() {
    let z = server();
    let mut ctl = Ctl::on(&z.plain_connect(), "wrongpw");
    let mut fleet = Fleet::new(&z.plain_connect(), &ctl.root, "api", 1);
    let deployer = digest_file(fleet.dir(), "deployer", "pw");
    let wrong = digest_file(fleet.dir(), "sidecar", "not-the-password");
    ctl.global = vec!["--digest-file".into(), deployer.display().to_string()];
    let init = ["init", "--deployer", &digest_id("deployer", "pw"), "--sidecar", &digest_id("sidecar", "right")];
    ok(&ctl, &init.map(String::from)).await;
    fleet.set_zk_extra(&format!("auth = {{ digest_file = \"{}\" }}", wrong.display()));
    fleet.start(0);
    let code = eventually_async("the sidecar to give up", PATIENCE, || {
        let code = fleet.exited(0);
        async move { code }
    })
    .await;
    assert_ne!(code, Some(0));
    let log = fleet.log(0);
    assert!(log.contains("digest:sidecar") && log.contains(&z.plain_connect()), "{log}");
    assert!(log.contains("password"), "{log}");
    let _ = unique_root("unused");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_whose_certificate_the_server_refuses_stops_with_a_clear_error() {
    let z = server();
    let other_ca = Pki::new();
    let stranger = other_ca.issue("api-1");
    let mut fleet = Fleet::new(&z.tls_connect(), &unique_root("stranger"), "api", 1);
    fleet.set_zk_extra(&z.sidecar_tls(&stranger.cert.display().to_string(), &stranger.key.display().to_string()));
    fleet.start(0);
    let code = eventually_async("the sidecar to give up", PATIENCE, || {
        let code = fleet.exited(0);
        async move { code }
    })
    .await;
    assert_ne!(code, Some(0));
    let log = fleet.log(0);
    assert!(log.contains(&format!("zookeeper at {} refused TLS", z.tls_connect())), "{log}");
    assert!(log.contains(&stranger.cert.display().to_string()), "names the certificate: {log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn peers_record_their_sources_in_a_secured_tree() {
    let z = server();
    let mut ctl = Ctl::on(&z.plain_connect(), "peers");
    let fleet = Fleet::new(&z.plain_connect(), &ctl.root, "api", 2)
        .with_host_config("[peers]\nlisten = \"127.0.0.1:{peer_port}\"\norigin_fetches = 1\n");
    let mut fleet = fleet;
    let client = digest_tree(z, &mut ctl, &mut fleet).await;
    let v1 = fleet.artifact("1", Behaviour::Good);
    ok(&ctl, &stage_args(&v1, "1", "0")).await;
    baton_tests::chaos::wait_versions_within(&fleet, &client, 2, "1", PATIENCE).await;
    // v2 from an HTTP origin: one host fetches it, the other streams it from that one.
    let server = baton_tests::artifact_server::ArtifactServer::start();
    let file = fleet.artifact("2", Behaviour::Good);
    server.put("/demo", std::fs::read(file.url.trim_start_matches("file://")).unwrap());
    let v2 = Artifact { url: server.url("/demo"), format: znode_schema::ArtifactFormat::File, ..file };
    ok(&ctl, &stage_args(&v2, "2", "1")).await;
    baton_tests::chaos::wait_versions_within(&fleet, &client, 2, "2", PATIENCE).await;
    let gets = server.requests().iter().filter(|r| r.method == "GET").count();
    assert_eq!(gets, 1, "the origin was read once");
    let layout = fleet.layout();
    let sources = client.list_children(&layout.peers_release("api", "2")).await.unwrap();
    assert_eq!(sources.len(), 2, "both hosts serve v2: {sources:?}");
    let (acl, _) = client.get_acl(&layout.peer_source("api", "2", "api-1")).await.unwrap();
    assert!(acl.iter().any(|a| a.scheme() == "digest" && a.id().starts_with("sidecar:")), "{acl:?}");
    assert!(!acl.iter().any(|a| a.scheme() == "world" && a.permission() != zk::Permission::READ), "{acl:?}");
    for i in 0..2 {
        assert!(!fleet.log(i).contains("NoAuth"), "{}", fleet.log(i));
    }
    let check = ok(&ctl, &["check".to_string()]).await;
    assert!(check.stdout.contains("0 looser"), "{check:?}");
}
