//! The deploy queue with two services per host (`api`, `web`): no slot is left free
//! with `max_parallel` 2 and 3 (judged from the transaction log), a front host that
//! is stuck before its fence does not hold the others (the slot order's patience),
//! and a ghost rollout at the head (a service no host runs) does not block the queue.

use baton_tests::chaos::{PATIENCE, policy, verify, wait_queued, wait_service_done, wait_service_versions};
use baton_tests::fleet::{Fleet, deploys, stage};
use baton_tests::multi::{self, artifact};
use baton_tests::{eventually_async, shared_server, unique_root};
use std::time::Duration;

/// The bound on the longest free slot beyond the grace (`invariants::GRACE_MS`).
const FREE_SLOT_BOUND_MS: i64 = 1_000;

/// Six hosts; web rolls with `max_parallel` `k`, quorum 1 and a 1 s bake. The
/// host holding the last front ticket of each round (positions k-1, 2k-1, ...)
/// starts 4 s late, so the other front hosts finish first: the next host in the
/// queue, whose predecessor ticket is that slow host's, must take the slot freed
/// by another host at once.
async fn no_free_slot_with(k: u32) {
    const HOSTS: usize = 6;
    let root = unique_root(&format!("multi-slots-{k}"));
    let mut fleet = Fleet::multi(&shared_server().connect_string(), &root, &["api", "web"], HOSTS);
    let c = fleet.client().await;
    let l = fleet.layout();
    multi::start_at(&mut fleet, &c, &[("api", "a1"), ("web", "w1")]).await;
    let slow = fleet.dir().join("slow-release-dirs");
    std::fs::write(&slow, "").unwrap();
    let body = format!(
        "if grep -qxF \"$BATON_RELEASE_DIR\" {s}; then exec {{demo}} --version {{version}} --start-delay 4s; fi\n\
         exec {{demo}} --version {{version}}",
        s = slow.display()
    );
    let w2 = artifact(&fleet, "web", "w2", &body);
    // Everyone queues first (nobody may step with quorum 6 of 6): the ticket order is known.
    stage(&c, &l, "web", "w2", &w2, policy(HOSTS as u32, k, Duration::from_secs(1))).await;
    let tickets = wait_queued(&fleet, &c, "web", HOSTS).await;
    let dirs: String = tickets
        .iter()
        .enumerate()
        .filter(|(pos, _)| *pos as u32 % k == k - 1)
        .map(|(_, t)| {
            let h = fleet.hosts.iter().find(|h| h.id == t.host).expect("a host of the fleet");
            format!("{}\n", h.data_dir.join("web/releases/w2").display())
        })
        .collect();
    std::fs::write(&slow, dirs).unwrap();
    stage(&c, &l, "web", "w2", &w2, policy(1, k, Duration::from_secs(1))).await;
    wait_service_versions(&fleet, &c, "web", HOSTS, "w2", Duration::from_secs(90)).await;
    wait_service_done(&fleet, &c, "web", Duration::from_secs(30)).await;
    let report = verify(shared_server(), &c, &root, &["api", "web"], false).await;
    assert!(report.max_markers as u32 <= k);
    let free = report.max_free_slot_ms_of("web");
    assert!(
        free < FREE_SLOT_BOUND_MS,
        "max_parallel {k}: a slot stayed free {free} ms beyond the grace while a queued host could take it \
         ({:?})",
        report.max_free_slot_ms
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn max_parallel_2_leaves_no_slot_free() {
    no_free_slot_with(2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn max_parallel_3_leaves_no_slot_free() {
    no_free_slot_with(3).await;
}

/// The slot order's patience. Three hosts, `max_parallel` 2, sessions of 30 s. Every
/// host queues (quorum 3 of 3), then the sidecar holding the first ticket is frozen
/// (SIGSTOP: its session lives on, its ticket stays at the front and it never
/// fences) and the rollout is let go. The host behind it waits for its fence in the
/// slot order, but only for the patience: the two others must step while the frozen
/// host's ticket still heads the queue (well before its session could expire).
/// Thawed, the frozen host steps too, and the log shows no more than 2 markers.
#[tokio::test(flavor = "multi_thread")]
async fn a_stuck_front_host_does_not_hold_the_others() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    const HOSTS: usize = 3;
    let root = unique_root("multi-stuck-front");
    let mut fleet = Fleet::multi(&shared_server().connect_string(), &root, &["api", "web"], HOSTS);
    fleet.session_timeout = Duration::from_secs(30);
    for h in &fleet.hosts {
        fleet.write_config_services(h, &[]);
    }
    let c = fleet.client().await;
    let l = fleet.layout();
    multi::start_at(&mut fleet, &c, &[("api", "a1"), ("web", "w1")]).await;
    let w2 = multi::good(&fleet, "web", "w2");
    stage(&c, &l, "web", "w2", &w2, policy(HOSTS as u32, 2, Duration::from_millis(200))).await;
    let tickets = wait_queued(&fleet, &c, "web", HOSTS).await;
    let stuck = fleet.hosts.iter().position(|h| h.id == tickets[0].host).expect("a host of the fleet");
    let pid = Pid::from_raw(fleet.sidecar_pid(stuck).expect("the front host's sidecar") as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    stage(&c, &l, "web", "w2", &w2, policy(1, 2, Duration::from_millis(200))).await;
    let others: Vec<String> = tickets[1..].iter().map(|t| t.host.clone()).collect();
    eventually_async("the hosts behind the frozen one to step", Duration::from_secs(20), || async {
        let online = baton_tests::fleet::online(&c, &l, "web").await;
        others.iter().all(|h| online.iter().any(|(o, v)| o == h && v == "w2")).then_some(())
    })
    .await;
    let held = c.check_stat(&l.ticket("web", &tickets[0])).await.unwrap();
    kill(pid, Signal::SIGCONT).unwrap();
    assert!(held.is_some(), "the frozen host's ticket went: the others stepped only after its session expired");
    wait_service_versions(&fleet, &c, "web", HOSTS, "w2", Duration::from_secs(60)).await;
    wait_service_done(&fleet, &c, "web", Duration::from_secs(30)).await;
    let report = verify(shared_server(), &c, &root, &["api", "web"], false).await;
    assert!(report.max_markers <= 2, "{} markers at once with max_parallel 2", report.max_markers);
}

/// A rollout of a service no host runs, staged by hand at the head of the queue,
/// then a rollout of api: api's rollout completes within 45 s, and the ghost entry
/// is completed or removed (nobody will ever step for it).
#[tokio::test(flavor = "multi_thread")]
async fn a_ghost_head_entry_does_not_block_the_queue() {
    const HOSTS: usize = 3;
    let root = unique_root("multi-ghost");
    let mut fleet = Fleet::multi(&shared_server().connect_string(), &root, &["api", "web"], HOSTS);
    let c = fleet.client().await;
    multi::start_at(&mut fleet, &c, &[("api", "a1"), ("web", "w1")]).await;
    let l = fleet.layout();
    let ghost = multi::good(&fleet, "ghost", "g1");
    stage(&c, &l, "ghost", "g1", &ghost, policy(1, 1, Duration::ZERO)).await;
    let a2 = multi::good(&fleet, "api", "a2");
    stage(&c, &l, "api", "a2", &a2, policy(1, 1, Duration::from_millis(200))).await;
    wait_service_versions(&fleet, &c, "api", HOSTS, "a2", Duration::from_secs(45)).await;
    wait_service_done(&fleet, &c, "api", Duration::from_secs(10)).await;
    let left: Vec<_> = deploys(&c, &l).await.into_iter().filter(|(_, e)| e.service == "ghost").collect();
    assert!(left.is_empty(), "the ghost entry is still queued: {left:?}");
    verify(shared_server(), &c, &root, &["api", "web", "ghost"], false).await;
}

/// A fence whose reply was lost landed: the host's own marker exists although the
/// host never heard back. Played here by writing the fence's transaction by hand
/// for the front host of web (everyone queued, quorum 3 of 3 so nobody fences on
/// its own). The host must take the marker as its own slot and step — not count it
/// as a slot taken by someone else and wait forever — and never fence a second time.
#[tokio::test(flavor = "multi_thread")]
async fn a_fence_whose_reply_was_lost_is_taken_as_this_hosts_step() {
    use zookeeper_client as zk;
    const HOSTS: usize = 3;
    let root = unique_root("multi-lost-fence");
    let mut fleet = Fleet::multi(&shared_server().connect_string(), &root, &["api", "web"], HOSTS);
    let c = fleet.client().await;
    multi::start_at(&mut fleet, &c, &[("api", "a1"), ("web", "w1")]).await;
    let l = fleet.layout();
    let w2 = multi::good(&fleet, "web", "w2");
    let entry = stage(&c, &l, "web", "w2", &w2, policy(HOSTS as u32, 1, Duration::from_millis(200))).await;
    let tickets = wait_queued(&fleet, &c, "web", HOSTS).await;
    let front = tickets[0].host.clone();
    // The fence transaction, as the sidecar commits it.
    let entry_path = l.deploy_entry(&entry);
    let (raw, stat) = c.get_data(&entry_path).await.unwrap();
    let marker = znode_schema::Upgrading {
        host: front.clone(),
        service: Some("web".into()),
        from: Some("w1".into()),
        to: "w2".into(),
        since: znode_schema::time::now(),
    };
    let mut txn = c.new_multi_writer();
    txn.add_set_data(&entry_path, &raw, Some(stat.version)).unwrap();
    txn.add_check_version(&l.ticket("web", &tickets[0]), 0).unwrap();
    let opts = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    txn.add_create(&l.upgrading(&entry, &front), &znode_schema::encode(&marker), &opts).unwrap();
    txn.add_delete(&l.current_host("web", &front), None).unwrap();
    txn.commit().await.unwrap();
    // The host steps: it comes back registered at w2 and its marker goes.
    eventually_async("the front host to finish the step it did not hear about", PATIENCE, || async {
        let online = deploys(&c, &l).await;
        let marker_gone = c.check_stat(&l.upgrading(&entry, &front)).await.unwrap().is_none();
        let at_w2 = baton_tests::fleet::online(&c, &l, "web").await.iter().any(|(h, v)| *h == front && v == "w2");
        (marker_gone && at_w2).then_some(online)
    })
    .await;
    let history = baton_tests::invariants::history(shared_server(), &root);
    let fences = multi::fences(&history, &l, "web", &front);
    assert_eq!(fences.len(), 1, "{front} fenced again instead of taking its landed fence: {} fences", fences.len());
    // The rest of the rollout goes on once the quorum allows it.
    stage(&c, &l, "web", "w2", &w2, policy(1, 1, Duration::from_millis(200))).await;
    wait_service_versions(&fleet, &c, "web", HOSTS, "w2", Duration::from_secs(60)).await;
    wait_service_done(&fleet, &c, "web", Duration::from_secs(30)).await;
}
