//! The sidecar upgrading itself (SPEC "Upgrading the sidecar itself") with real
//! sidecars running two real services each: the built-in service `baton-sidecar` is
//! staged like any other, its step hands over to the new image, and the services
//! never notice (same processes; their registrations exist at every transaction of
//! the upgrade, judged from ZooKeeper's transaction log). A broken binary halts after
//! one host, which keeps its old sidecar; a kill -9 of either image in the middle of
//! a handover leaves one supervising sidecar and the services running.

use baton_tests::chaos::{PATIENCE, policy, verify, wait_halted, wait_service_done, wait_service_versions};
use baton_tests::fleet::{Fleet, file_artifact, kill_pid, registration, stage};
use baton_tests::invariants;
use baton_tests::multi::{self, Identity, identities, start_at};
use baton_tests::txnlog::{Op, Txn};
use baton_tests::{eventually, eventually_async, shared_server, unique_root};
use std::path::PathBuf;
use std::time::Duration;
use znode_schema::{Artifact, EventKind, HumanDuration, Policy, SIDECAR_SERVICE as SC};
use zookeeper_client as zk;

/// The version the test sidecars are built as (what the installed binary registers).
const BUILT: &str = baton_sidecar::VERSION;

/// A fleet of `n` hosts running `api` (at a1) and `web` (at w1), every sidecar
/// registered as `baton-sidecar` at the built version.
async fn fleet(name: &str, n: usize) -> (Fleet, zk::Client) {
    let mut fleet = Fleet::multi(&shared_server().connect_string(), &unique_root(name), &["api", "web"], n);
    let client = fleet.client().await;
    start_at(&mut fleet, &client, &[("api", "a1"), ("web", "w1")]).await;
    wait_service_versions(&fleet, &client, SC, n, BUILT, PATIENCE).await;
    (fleet, client)
}

/// A sidecar release: a copy of the built sidecar binary, a real upgrade for the
/// protocol (the version is the release's, not the binary's).
fn sidecar_release(fleet: &Fleet, version: &str) -> Artifact {
    let dir = fleet.dir().join("sidecar-releases").join(version);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sidecar");
    std::fs::copy(baton_tests::bin::path("sidecar"), &path).unwrap();
    file_artifact(&path)
}

/// A broken "sidecar" release: a shell script with `body`.
fn broken_release(fleet: &Fleet, version: &str, body: &str) -> Artifact {
    let dir = fleet.dir().join("sidecar-releases").join(version);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sidecar");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    file_artifact(&path)
}

/// The binary a sidecar process runs.
fn exe(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap()
}

/// Host `i`'s installed sidecar release `version`'s binary (as the kernel names it).
fn release_binary(fleet: &Fleet, i: usize, version: &str) -> PathBuf {
    let path = fleet.hosts[i].data_dir.join(SC).join("releases").join(version).join("sidecar");
    path.canonicalize().unwrap_or(path)
}

/// The transactions after `mark`.
fn since(fleet: &Fleet, mark: i64) -> Vec<Txn> {
    invariants::history(shared_server(), &fleet.root).into_iter().filter(|t| t.zxid > mark).collect()
}

/// Checks that every `current/<service>/<host>` of `services` exists after every
/// transaction of `history` (they all existed before it); returns how many
/// transactions deleted and created one of them in the same step (take-overs).
fn never_absent(history: &[Txn], fleet: &Fleet, services: &[&str]) -> usize {
    let l = &fleet.layout();
    let paths: Vec<String> =
        services.iter().flat_map(|s| fleet.hosts.iter().map(move |h| l.current_host(s, &h.id))).collect();
    let mut present: std::collections::BTreeSet<String> = paths.iter().cloned().collect();
    let mut take_overs = 0;
    for t in history {
        let mut deleted = false;
        for op in &t.ops {
            match op {
                Op::Create { path, .. } if paths.contains(path) => {
                    present.insert(path.clone());
                }
                Op::Delete { path, .. } if paths.contains(path) => {
                    present.remove(path);
                    deleted = true;
                }
                _ => {}
            }
        }
        let missing: Vec<&String> = paths.iter().filter(|p| !present.contains(*p)).collect();
        assert!(
            missing.is_empty(),
            "after zxid {:#x} ({:?}) these registrations are absent: {missing:?}",
            t.zxid,
            t.ops
        );
        take_overs += deleted as usize;
    }
    take_overs
}

/// Every host's identity (registration and pid file) of both services.
async fn services(fleet: &Fleet, c: &zk::Client) -> (Vec<Identity>, Vec<Identity>) {
    (identities(fleet, c, "api").await, identities(fleet, c, "web").await)
}

/// Whether every service process named by `ids` is alive.
fn alive(ids: &[Identity]) -> bool {
    ids.iter().all(|i| i.pidfile_pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists()))
}

/// A 5-host fleet with two services each upgrades its sidecars (quorum 3, two at a
/// time, a bake): every service keeps its process and its registration at every
/// transaction, every sidecar runs the new release's binary, each first image exited
/// 0, the quorum of sidecars held at every fence; a sidecar killed and started again
/// from the installed binary comes back on the new release.
#[tokio::test(flavor = "multi_thread")]
async fn five_hosts_upgrade_their_sidecars_and_no_service_notices() {
    let (mut fleet, c) = fleet("self-upgrade", 5).await;
    let before = services(&fleet, &c).await;
    let mark = invariants::last_zxid(shared_server(), &fleet.root);
    let art = sidecar_release(&fleet, "2");
    stage(&c, &fleet.layout(), SC, "2", &art, policy(3, 2, Duration::from_millis(500))).await;
    wait_service_versions(&fleet, &c, SC, 5, "2", PATIENCE).await;
    wait_service_done(&fleet, &c, SC, PATIENCE).await;

    let after = services(&fleet, &c).await;
    assert_eq!(after, before, "every service kept its process, version and registration");
    assert!(alive(&after.0) && alive(&after.1), "every service process runs");
    for i in 0..5 {
        let pid = eventually("the new image to hold the lock", PATIENCE, || {
            fleet.sidecar_pid(i).filter(|p| Some(*p) != fleet.child_pid(i))
        });
        assert_eq!(exe(pid), release_binary(&fleet, i, "2"), "host {i} runs the new release's binary");
        let reg = registration(&c, &fleet, SC, &fleet.hosts[i].id).await.unwrap();
        assert_eq!(reg.pid, Some(pid), "the registration names the new image");
        let code = eventually("the old image to exit", PATIENCE, || fleet.exited(i));
        assert_eq!(code, Some(0), "host {i}'s old image exited cleanly");
    }
    let history = since(&fleet, mark);
    let take_overs = never_absent(&history, &fleet, &["api", "web"]);
    assert!(take_overs >= 10, "each host's two registrations were taken over in a transaction: {take_overs}");
    verify(shared_server(), &c, &fleet.root, &[SC, "api", "web"], false).await;

    // systemd restarts the unit: the installed binary runs the active release.
    fleet.kill(0);
    fleet.start(0);
    let pid = eventually("host 0's sidecar to come back on the new release", PATIENCE, || {
        fleet.sidecar_pid(0).filter(|p| exe(*p) == release_binary(&fleet, 0, "2"))
    });
    eventually_async("host 0's sidecar to register at 2", PATIENCE, || async {
        registration(&c, &fleet, SC, &fleet.hosts[0].id).await.filter(|r| r.version == "2" && r.pid == Some(pid))
    })
    .await;
    assert_eq!(services(&fleet, &c).await, before, "the restart adopted the services");
}

/// A broken sidecar binary halts the rollout after one host, which keeps its old
/// sidecar (same process) and its services; no other host fences.
async fn broken_binary_halts_after_one_host(name: &str, body: &str) {
    let (fleet, c) = fleet(name, 3).await;
    let before = services(&fleet, &c).await;
    let pids: Vec<Option<u32>> = (0..3).map(|i| fleet.sidecar_pid(i)).collect();
    let mark = invariants::last_zxid(shared_server(), &fleet.root);
    let art = broken_release(&fleet, "bad", body);
    let p = Policy { health_deadline: HumanDuration::secs(3), ..policy(1, 1, Duration::ZERO) };
    let entry = stage(&c, &fleet.layout(), SC, "bad", &art, p).await;
    let halted = wait_halted(&fleet, &c, &entry).await;
    let reason = halted.reason.clone().unwrap_or_default();
    assert!(reason.contains("new sidecar image did not take over"), "the halt says why: {reason}");
    let history = since(&fleet, mark);
    let l = fleet.layout();
    let fenced: Vec<usize> =
        (0..3).filter(|&i| !multi::fences(&history, &l, SC, &fleet.hosts[i].id).is_empty()).collect();
    assert_eq!(fenced.len(), 1, "exactly one host stepped: {fenced:?}");
    let failed = fenced[0];
    let reg = eventually_async("the failed host to register its old sidecar again", PATIENCE, || async {
        registration(&c, &fleet, SC, &fleet.hosts[failed].id).await
    })
    .await;
    assert_eq!(reg.version, BUILT, "the failed host runs its old sidecar");
    let now: Vec<Option<u32>> = (0..3).map(|i| fleet.sidecar_pid(i)).collect();
    assert_eq!(now, pids, "every host keeps its sidecar process");
    assert_eq!(reg.pid, pids[failed], "the registration names the old process");
    assert_eq!(services(&fleet, &c).await, before, "the services were not touched");
    never_absent(&history, &fleet, &["api", "web"]);
    verify(shared_server(), &c, &fleet.root, &[SC, "api", "web"], false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_binary_that_exits_halts_after_one_host() {
    broken_binary_halts_after_one_host("self-exits", "exit 1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_binary_that_hangs_without_connecting_halts_after_one_host() {
    let body = "if [ \"$1\" = --version ]; then echo sidecar 9; exit 0; fi\nexec sleep 600";
    broken_binary_halts_after_one_host("self-hangs", body).await;
}

/// A sidecar rollout staged while a service rolls waits for it: no sidecar fences
/// before the service's rollout completed.
#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_rollout_queued_behind_a_service_rollout_waits_its_turn() {
    let (fleet, c) = fleet("self-queued", 3).await;
    let mark = invariants::last_zxid(shared_server(), &fleet.root);
    let a2 = multi::good(&fleet, "api", "a2");
    stage(&c, &fleet.layout(), "api", "a2", &a2, policy(1, 1, Duration::from_millis(700))).await;
    let art = sidecar_release(&fleet, "2");
    stage(&c, &fleet.layout(), SC, "2", &art, policy(1, 1, Duration::ZERO)).await;
    wait_service_done(&fleet, &c, "api", PATIENCE).await;
    wait_service_versions(&fleet, &c, SC, 3, "2", PATIENCE).await;
    wait_service_done(&fleet, &c, SC, PATIENCE).await;
    let history = since(&fleet, mark);
    let l = fleet.layout();
    let completed = multi::events(&history, &l, "api")
        .into_iter()
        .find(|(_, e)| e.event == EventKind::Completed)
        .map(|(t, _)| t.zxid)
        .expect("api's rollout completed");
    let first_fence = (0..3)
        .flat_map(|i| multi::fences(&history, &l, SC, &fleet.hosts[i].id))
        .map(|t| t.zxid)
        .min()
        .expect("sidecars fenced");
    assert!(completed < first_fence, "api completed at {completed:#x}, the first sidecar fenced at {first_fence:#x}");
    verify(shared_server(), &c, &fleet.root, &[SC, "api", "web"], false).await;
}

/// Which image a handover loses.
#[derive(Debug, Clone, Copy)]
enum Victim {
    /// The new image, while it bakes (it took over): the old one takes everything
    /// back, counts the failure and the rollout halts.
    New,
    /// The old image, while the new one bakes: the new one exits too; "systemd"
    /// starts the sidecar again, which undoes the step and takes it again.
    Old,
}

async fn kill_during_handover(victim: Victim) {
    let (mut fleet, c) = fleet(&format!("self-kill-{victim:?}").to_lowercase(), 3).await;
    let before = services(&fleet, &c).await;
    let art = sidecar_release(&fleet, "2");
    let p = Policy { max_failures: 0, ..policy(1, 1, Duration::from_secs(4)) };
    let entry = stage(&c, &fleet.layout(), SC, "2", &art, p).await;
    let i = baton_tests::chaos::wait_marker(&fleet, &c, &entry).await;
    let old = fleet.child_pid(i).unwrap();
    let new = eventually("the new image to take the lock", PATIENCE, || fleet.sidecar_pid(i).filter(|p| *p != old));
    match victim {
        Victim::New => {
            kill_pid(new);
            let halted = wait_halted(&fleet, &c, &entry).await;
            assert!(halted.reason.unwrap_or_default().contains(&fleet.hosts[i].id), "the halt names the host");
            let reg = eventually_async("the old image to register again", PATIENCE, || async {
                registration(&c, &fleet, SC, &fleet.hosts[i].id).await
            })
            .await;
            assert_eq!(reg.version, BUILT, "the host is back on its old sidecar");
            assert_eq!(fleet.sidecar_pid(i), Some(old), "the old image (same pid, executed again) supervises");
            assert_eq!(reg.pid, Some(old));
        }
        Victim::Old => {
            kill_pid(old);
            eventually("the new image to exit after the old one died", PATIENCE, || {
                fleet.sidecar_pid(i).is_none().then_some(())
            });
            fleet.kill(i);
            fleet.start(i);
            wait_service_versions(&fleet, &c, SC, 3, "2", PATIENCE).await;
            wait_service_done(&fleet, &c, SC, PATIENCE).await;
            let pid = eventually("one sidecar image on the host", PATIENCE, || {
                fleet.sidecar_pid(i).filter(|p| Some(*p) != fleet.child_pid(i))
            });
            assert_eq!(exe(pid), release_binary(&fleet, i, "2"));
        }
    }
    let after = services(&fleet, &c).await;
    assert_eq!(after, before, "the services kept their processes and registrations");
    assert!(alive(&after.0) && alive(&after.1));
    verify(shared_server(), &c, &fleet.root, &[SC, "api", "web"], false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_new_image_mid_handover_leaves_the_old_one_supervising() {
    kill_during_handover(Victim::New).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_old_image_mid_handover_recovers_on_restart() {
    kill_during_handover(Victim::Old).await;
}

/// A sidecar release that waits `delay` before it runs the real binary (exec: the
/// same process), so a test can act before the new image is ready.
fn slow_release(fleet: &Fleet, version: &str, delay: &str) -> Artifact {
    let real = baton_tests::bin::path("sidecar");
    let body = format!(
        "if [ \"$1\" = --version ]; then exec {real} --version; fi\nsleep {delay}\nexec {real} \"$@\"",
        real = real.display()
    );
    broken_release(fleet, version, &body)
}

/// The new image dies before it is ready (while it starts): the old image never
/// let go of anything; the failure is counted and the rollout halts.
#[tokio::test(flavor = "multi_thread")]
async fn killing_the_new_image_before_it_is_ready_leaves_the_old_one_untouched() {
    let (fleet, c) = fleet("self-kill-early-new", 3).await;
    let before = services(&fleet, &c).await;
    let art = slow_release(&fleet, "2", "3");
    let entry = stage(&c, &fleet.layout(), SC, "2", &art, policy(1, 1, Duration::ZERO)).await;
    let i = baton_tests::chaos::wait_marker(&fleet, &c, &entry).await;
    let old = fleet.child_pid(i).unwrap();
    let new = eventually("the new image to start", PATIENCE, || child_of(old));
    kill_pid(new);
    let halted = wait_halted(&fleet, &c, &entry).await;
    assert!(halted.reason.unwrap_or_default().contains("exited before it was ready"), "the halt says why");
    assert_eq!(fleet.sidecar_pid(i), Some(old), "the old image kept the lock all along");
    let reg = eventually_async("the old image to register again", PATIENCE, || async {
        registration(&c, &fleet, SC, &fleet.hosts[i].id).await
    })
    .await;
    assert_eq!((reg.version.as_str(), reg.pid), (BUILT, Some(old)));
    assert_eq!(services(&fleet, &c).await, before);
    verify(shared_server(), &c, &fleet.root, &[SC, "api", "web"], false).await;
}

/// The old image dies before `go` (the new one is still starting): the new image
/// finds nobody to take over from and exits; "systemd" starts the sidecar again,
/// which undoes the interrupted step (not a failure) and takes it again.
#[tokio::test(flavor = "multi_thread")]
async fn killing_the_old_image_before_go_undoes_the_step_and_it_is_taken_again() {
    let (mut fleet, c) = fleet("self-kill-early-old", 3).await;
    let before = services(&fleet, &c).await;
    let art = slow_release(&fleet, "2", "2");
    let entry = stage(&c, &fleet.layout(), SC, "2", &art, policy(1, 1, Duration::ZERO)).await;
    let i = baton_tests::chaos::wait_marker(&fleet, &c, &entry).await;
    let old = fleet.child_pid(i).unwrap();
    let new = eventually("the new image to start", PATIENCE, || child_of(old));
    kill_pid(old);
    eventually("the new image to give up", PATIENCE, || {
        (!std::path::Path::new(&format!("/proc/{new}/cmdline")).exists() || !fleet.is_sidecar_of(i, new)).then_some(())
    });
    eventually("nobody to hold the lock", PATIENCE, || fleet.sidecar_pid(i).is_none().then_some(()));
    fleet.kill(i);
    fleet.start(i);
    wait_service_versions(&fleet, &c, SC, 3, "2", PATIENCE).await;
    wait_service_done(&fleet, &c, SC, PATIENCE).await;
    assert_eq!(services(&fleet, &c).await, before, "the services ran on");
    let history = since_all(&fleet);
    assert_eq!(multi::max_failures(&history, SC), 0, "an interrupted step is not counted as a failure");
    let undone = multi::events(&history, &fleet.layout(), SC)
        .into_iter()
        .filter(|(_, e)| e.event == EventKind::HostFailed && e.detail.as_deref().is_some_and(|d| d.contains("undone")))
        .count();
    assert_eq!(undone, 1, "the interrupted step was undone once");
    verify(shared_server(), &c, &fleet.root, &[SC, "api", "web"], false).await;
}

/// A machine that was down (here: a new one) starts the installed binary and comes
/// back on the fleet's sidecar version, handing over to it without a fence.
#[tokio::test(flavor = "multi_thread")]
async fn a_machine_that_was_down_comes_back_on_the_fleets_sidecar_version() {
    let (mut fleet, c) = fleet("self-boot", 3).await;
    let art = sidecar_release(&fleet, "2");
    stage(&c, &fleet.layout(), SC, "2", &art, policy(1, 1, Duration::ZERO)).await;
    wait_service_versions(&fleet, &c, SC, 3, "2", PATIENCE).await;
    wait_service_done(&fleet, &c, SC, PATIENCE).await;
    let i = fleet.add_host("host-new");
    fleet.write_config_services(&fleet.hosts[i], &[]);
    fleet.start(i);
    let pid = eventually("the new machine to run the fleet's sidecar release", PATIENCE, || {
        fleet.sidecar_pid(i).filter(|p| exe(*p) == release_binary(&fleet, i, "2"))
    });
    eventually_async("the new machine to register its sidecar at 2", PATIENCE, || async {
        registration(&c, &fleet, SC, "host-new").await.filter(|r| r.version == "2" && r.pid == Some(pid))
    })
    .await;
    wait_service_versions(&fleet, &c, "api", 4, "a1", PATIENCE).await;
    let code = eventually("the installed image to exit", PATIENCE, || fleet.exited(i));
    assert_eq!(code, Some(0));
}

/// The new image `pid` started (its child with `--take-over` on its command line).
fn child_of(pid: u32) -> Option<u32> {
    // Each thread lists the children it started: the runtime's workers start them.
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let text: String = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .collect::<Vec<_>>()
        .join(" ");
    text.split_whitespace().filter_map(|t| t.parse::<u32>().ok()).find(|c| {
        std::fs::read(format!("/proc/{c}/cmdline")).is_ok_and(|cmd| cmd.split(|b| *b == 0).any(|a| a == b"--take-over"))
    })
}

/// Every transaction of the fleet's root.
fn since_all(fleet: &Fleet) -> Vec<Txn> {
    since(fleet, 0)
}
