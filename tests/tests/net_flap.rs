//! A flapping link: one host's link goes down and up every few seconds (some
//! outages shorter than its session timeout, some longer) while web rolls two hosts
//! at a time. No host steps twice, no fence is made off the session holding the
//! host's ticket, the invariants hold over the whole history, and once the link
//! settles the rollout completes. Another host is held in its step until the
//! flapping stops, so the rollout cannot complete while the flapping host is dark
//! (a host offline at completion is left behind: see net_partition).
//!
//! `BATON_NET_FLAP_SECS` sets how long the link flaps (default 60 s). Skipped (with
//! a message) where network namespaces cannot be created.

use baton_tests::chaos::{PATIENCE, policy, verify, wait_service_done, wait_service_versions};
use baton_tests::fleet::stage;
use baton_tests::invariants::{self, Mark, assert_quiet};
use baton_tests::multi::{self, hooks};
use baton_tests::netbed::{NetBed, fences_off_their_session};
use baton_tests::netns::Net;
use std::time::{Duration, Instant};

const HOSTS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_link_makes_no_double_step_and_no_stuck_rollout() {
    let net = match Net::new() {
        Ok(n) => n,
        Err(why) => {
            eprintln!("SKIPPED: this test needs network namespaces: {why}");
            return;
        }
    };
    let flap_for =
        Duration::from_secs(std::env::var("BATON_NET_FLAP_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60));
    let mut bed = NetBed::new(net, "net-flap", 1, &["api", "web"], HOSTS, Duration::from_secs(3));
    // host-4's web step waits in its drain hook until the flapping is over.
    let gate = bed.fleet.dir().join("gate");
    let hook_log = bed.fleet.dir().join("web-hooks.log");
    for h in &bed.fleet.hosts {
        let g = (h.id == "host-4").then_some(gate.as_path());
        // The held drain must outlast the flapping (hooks time out after 30 s by default).
        let mut web = hooks(&h.id, &hook_log, g);
        let end = web.rfind(" }").expect("a hooks table");
        web.replace_range(end.., &format!(", timeout = \"{}s\" }}", flap_for.as_secs() + 60));
        bed.fleet.write_config_services(h, &[("web", web.as_str())]);
    }
    let client = bed.client().await;
    multi::start_at(&mut bed.fleet, &client, &[("api", "a1"), ("web", "w1")]).await;
    let layout = bed.fleet.layout();
    let root = bed.fleet.root.clone();
    let mark = invariants::last_zxid(&bed.zk, &root);
    let w2 = multi::good(&bed.fleet, "web", "w2");
    stage(&client, &layout, "web", "w2", &w2, policy(2, 2, Duration::from_millis(700))).await;
    // Outages of 1 s, 4 s (past the 3 s session timeout) and 2 s, 1.5 s apart.
    let start = Instant::now();
    let mut outages = [1000u64, 4000, 2000].iter().cycle();
    while start.elapsed() < flap_for {
        bed.isolate_host(0);
        tokio::time::sleep(Duration::from_millis(*outages.next().unwrap())).await;
        bed.net.reconnect(bed.hosts[0]);
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    bed.heal();
    std::fs::write(&gate, "").unwrap();
    wait_service_versions(&bed.fleet, &client, "web", HOSTS, "w2", PATIENCE).await;
    wait_service_done(&bed.fleet, &client, "web", PATIENCE).await;
    let history = invariants::history(&bed.zk, &root);
    for h in &bed.fleet.hosts {
        let off = fences_off_their_session(&history, &layout, "web", &h.id);
        assert!(off.is_empty(), "fences off their session: {off:?}");
        assert_eq!(multi::fences(&history, &layout, "web", &h.id).len(), 1, "{} stepped once", h.id);
    }
    let sessions = baton_tests::netbed::sessions_of(&history, &layout, "host-1");
    eprintln!("host-1 used {} session(s) over the test", sessions.len());
    assert_quiet(&history, &layout, "api", Mark::Zxid(mark), Mark::End);
    verify(&bed.zk, &client, &root, &["api", "web"], false).await;
}
