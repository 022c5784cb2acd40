//! deployctl against live rollouts of real sidecars: stage, watch to completion,
//! a halt seen by watch, rollback and abort with hosts that really move.

use baton_tests::chaos::wait_versions_within;
use baton_tests::ctl::Ctl;
use baton_tests::fleet::{Behaviour, Fleet, artifact_path, deploys};
use baton_tests::shared_server;
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn stage_watch_halt_and_rollback_with_real_hosts() {
    let ctl = Ctl::new("live");
    let mut fleet = Fleet::new(&shared_server().connect_string(), &ctl.root, "api", 3);
    let client = fleet.client().await;
    assert_eq!(ctl.run(&["init"]).await.code, 0);
    let v1 = fleet.artifact("1", Behaviour::Good);
    let r = ctl
        // --force: the sidecars, which register the service, start only after this.
        .run(&[
            "stage",
            "api",
            "--version",
            "1",
            "--file",
            &artifact_path(&v1),
            "--quorum",
            "0",
            "--max-parallel",
            "3",
            "--force",
        ])
        .await;
    assert_eq!(r.code, 0, "{r:?}");
    fleet.start_all();
    wait_versions_within(&fleet, &client, 3, "1", PATIENCE).await;

    // A good release: watch follows it to completion and exits 0.
    let v2 = fleet.artifact("2", Behaviour::Good);
    let r = ctl
        .run(&["stage", "api", "--version", "2", "--file", &artifact_path(&v2), "--quorum", "2", "--bake", "200ms"])
        .await;
    assert_eq!(r.code, 0, "{r:?}");
    let w = ctl.run(&["watch", "api", "--timeout", "60s"]).await;
    assert_eq!(w.code, 0, "watch: {w:?}\n{}", fleet.logs());
    wait_versions_within(&fleet, &client, 3, "2", PATIENCE).await;
    assert!(deploys(&client, &fleet.layout()).await.is_empty());

    // A broken release: the first host fails its health check and the rollout halts;
    // watch exits 4 with the reason.
    let bad = fleet.artifact("3", Behaviour::HealthFail);
    let r =
        ctl.run(&["stage", "api", "--version", "3", "--file", &artifact_path(&bad), "--health-deadline", "2s"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let w = ctl.run(&["watch", "api", "--timeout", "60s"]).await;
    assert_eq!(w.code, 4, "watch: {w:?}");
    assert!(w.stdout.contains("halted") || w.stderr.contains("halted"), "{w:?}");
    wait_versions_within(&fleet, &client, 3, "2", PATIENCE).await;

    // Rollback stages the release most hosts run (2) as a new rollout; nothing needs
    // to move, so it completes.
    let r = ctl.run(&["rollback", "api"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let w = ctl.run(&["watch", "api", "--timeout", "60s"]).await;
    assert_eq!(w.code, 0, "watch after rollback: {w:?}\n{}", fleet.logs());
    let (data, _) = client.get_data(&fleet.layout().staging("api")).await.unwrap();
    let staged: znode_schema::Staging = znode_schema::decode("", &data).unwrap();
    assert_eq!(staged.version, "2");
    fleet.stop(0);
}
