//! Signed releases with real sidecars: a host with trusted keys installs only what one
//! of them signed for that service and version. Every other release is refused on
//! every host, before anything is unpacked or queued, with the reason reported in the
//! host's registration; a correctly signed one rolls out; the other service of the
//! host is never touched.

use baton_tests::fleet::{Behaviour, Fleet, registration, stage, wait_registrations};
use baton_tests::signing::Signer;
use baton_tests::{shared_server, unique_root};
use std::time::Duration;
use znode_schema::{Artifact, Current, HumanDuration, Policy, Quorum};

const PATIENCE: Duration = Duration::from_secs(60);
const HOSTS: [&str; 3] = ["host-1", "host-2", "host-3"];

fn policy() -> Policy {
    Policy { quorum: Quorum::Count(1), max_parallel: 2, health_deadline: HumanDuration::secs(10), ..Policy::default() }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_releases_signed_for_their_service_and_version_by_a_trusted_key_are_installed() {
    let (signer, stranger) = (Signer::new(), Signer::new());
    let fleet = Fleet::multi(&shared_server().connect_string(), &unique_root("signed"), &["api", "web"], 3);
    let mut fleet = fleet.with_host_config(&format!("[trust]\nminisign_keys = [\"{}\"]\n", signer.public()));
    let client = fleet.client().await;
    let layout = fleet.layout();
    for svc in ["api", "web"] {
        let v1 = signer.signed(&fleet.artifact("1", Behaviour::Good), svc, "1");
        stage(&client, &layout, svc, "1", &v1, policy()).await;
    }
    fleet.start_all();
    let web_before = wait_registrations(&client, &fleet, "web", "web at 1", |c| c.version == "1").await;
    wait_registrations(&client, &fleet, "api", "api at 1", |c| c.version == "1").await;

    // Each refused the same way: reported by every host, nothing installed, no ticket.
    let tampered = {
        let good = fleet.artifact("6", Behaviour::Good);
        let signature = signer.signed(&good, "api", "6").signature;
        let evil = fleet.artifact("6", Behaviour::Crash); // same path, other bytes
        Artifact { signature, ..evil }
    };
    let cases: Vec<(&str, Artifact, &str)> = vec![
        ("2", fleet.artifact("2", Behaviour::Good), "is not signed"),
        (
            "3",
            stranger.signed(&fleet.artifact("3", Behaviour::Good), "api", "3"),
            "not among this host's 1 trusted keys",
        ),
        (
            "4",
            signer.signed(&fleet.artifact("4", Behaviour::Good), "web", "4"),
            "expected trusted comment \"baton api 4\"",
        ),
        (
            "5",
            signer.signed(&fleet.artifact("5", Behaviour::Good), "api", "9"),
            "expected trusted comment \"baton api 5\"",
        ),
        ("6", tampered, "does not verify"),
    ];
    for (version, artifact, reason) in cases {
        stage(&client, &layout, "api", version, &artifact, policy()).await;
        let reports = wait_registrations(&client, &fleet, "api", &format!("every host refusing {version}"), |c| {
            c.last_error.as_deref().is_some_and(|e| e.contains(&format!("release {version}")) && e.contains(reason))
        })
        .await;
        for (h, c) in HOSTS.iter().zip(&reports) {
            assert_eq!(c.version, "1", "{h} still runs 1");
        }
        for h in &fleet.hosts {
            let dir = h.data_dir.join("api/releases").join(version);
            assert!(!dir.exists(), "{} installed {version}", h.id);
            assert!(!h.data_dir.join("api/downloads").join(version).exists(), "{} kept the refused download", h.id);
        }
        let tickets = client.list_children(&layout.staging("api")).await.unwrap();
        assert!(tickets.is_empty(), "no host queued for {version}: {tickets:?}");
    }

    // Signed right, it rolls out; web's processes were never touched.
    let v7 = signer.signed(&fleet.artifact("7", Behaviour::Good), "api", "7");
    stage(&client, &layout, "api", "7", &v7, policy()).await;
    wait_registrations(&client, &fleet, "api", "api at 7", |c| c.version == "7" && c.last_error.is_none()).await;
    let web_after = wait_registrations(&client, &fleet, "web", "web at 1", |c| c.version == "1").await;
    let pids = |cs: &[Current]| cs.iter().map(|c| c.pid).collect::<Vec<_>>();
    assert_eq!(pids(&web_after), pids(&web_before), "web kept its processes");
    for i in 0..HOSTS.len() {
        fleet.stop(i);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_that_boots_with_trusted_keys_refuses_an_unsigned_catalog_version() {
    let signer = Signer::new();
    let fleet = Fleet::new(&shared_server().connect_string(), &unique_root("signed-boot"), "api", 1);
    let mut fleet = fleet.with_host_config(&format!("[trust]\nminisign_keys = [\"{}\"]\n", signer.public()));
    let client = fleet.client().await;
    let unsigned = fleet.artifact("1", Behaviour::Good);
    stage(&client, &fleet.layout(), "api", "1", &unsigned, policy()).await;
    fleet.start(0);
    let r = tokio::time::timeout(PATIENCE, async {
        loop {
            if fleet.log(0).contains("is not signed") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    r.unwrap_or_else(|_| panic!("the boot refusal was not logged\n{}", fleet.logs()));
    assert!(!fleet.hosts[0].data_dir.join("api/releases/1").exists(), "nothing installed");
    let c = registration(&client, &fleet, "api", "api-1").await;
    assert!(c.as_ref().is_none_or(|c| c.version != "1"), "not registered at the unsigned release: {c:?}");
    fleet.stop(0);
}
