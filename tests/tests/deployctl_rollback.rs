//! Safe rollback: nothing to roll back is refused, the target and the policy it
//! uses are printed (the target's own, from the catalog), a second rollback does not
//! walk the fleet back one more release, and after an abort the target is the
//! release before the aborted one. Hosts are played by the test (`ctl::online`).

use baton_tests::ctl::{Ctl, client, deploy_entries, finish_rollouts, get, json, online, refused};

async fn stage(ctl: &Ctl, service: &str, version: &str, policy: &[&str]) {
    let digest = std::iter::repeat_n(version.chars().next().unwrap_or('0'), 64).collect::<String>();
    let digest = digest.replace(|c: char| !c.is_ascii_hexdigit(), "0");
    let base = ["stage", service, "--version", version, "--url", "https://r/a", "--sha256", &digest];
    let args = [&base[..], &["--size", "1", "--no-fetch", "--replace"], policy].concat();
    ctl.ok(&args).await;
}

#[tokio::test]
async fn rollback_uses_the_targets_policy_and_does_not_walk_back_twice() {
    let ctl = Ctl::new("rb-twice");
    let c = client(&ctl.connect).await;
    ctl.init_with_services().await;
    let l = &ctl.layout;
    for h in ["web-01", "web-02", "web-03"] {
        online(&c, l, "api", h, "1").await;
    }
    stage(&ctl, "api", "1", &["--quorum", "0", "--max-parallel", "2", "--bake", "1s"]).await;
    finish_rollouts(&c, &ctl, "api").await;
    refused(
        &ctl,
        &c,
        &["rollback", "api"],
        "no release of api to roll back to: the catalog holds no release of api staged before 1",
    )
    .await;

    stage(&ctl, "api", "2", &["--quorum", "1", "--max-failures", "3"]).await;
    online(&c, l, "api", "web-01", "2").await;
    let r = ctl.ok(&["rollback", "api"]).await;
    assert!(r.stdout.contains("rolled back api to 1 (staged before: 2)"), "{r:?}");
    assert!(
        r.stdout.contains(
            "policy: quorum 0, max_parallel 2, bake 1s, health_deadline 1m, max_failures 0 (1's own policy from the catalog)"
        ),
        "{r:?}"
    );
    let staging = get(&c, &l.staging("api")).await;
    assert_eq!(staging["version"], "1");
    assert_eq!(
        (staging["policy"]["quorum"].as_str(), staging["policy"]["max_parallel"].as_u64()),
        (Some("0"), Some(2))
    );

    // Twice: the fleet is rolling to 1 already; a second rollback would go to 0.x silently.
    refused(&ctl, &c, &["rollback", "api"], "api was already rolled back to 1 by tester@test").await;
    finish_rollouts(&c, &ctl, "api").await;
    online(&c, l, "api", "web-01", "1").await;
    refused(&ctl, &c, &["rollback", "api"], "a second rollback would walk the fleet back one more release").await;
    // --to names the target explicitly; what every host runs already is refused.
    refused(
        &ctl,
        &c,
        &["rollback", "api", "--to", "1"],
        "nothing to roll back: api 1 is staged and every online host (3) runs it",
    )
    .await;
}

#[tokio::test]
async fn after_an_abort_rollback_targets_the_release_before_the_aborted_one() {
    let ctl = Ctl::new("rb-abort");
    let c = client(&ctl.connect).await;
    ctl.init_with_services().await;
    let l = &ctl.layout;
    for h in ["web-01", "web-02", "web-03"] {
        online(&c, l, "web", h, "1").await;
    }
    stage(&ctl, "web", "1", &["--quorum", "0"]).await;
    finish_rollouts(&c, &ctl, "web").await;
    stage(&ctl, "web", "2", &["--quorum", "1"]).await;
    online(&c, l, "web", "web-03", "2").await;
    let r = ctl.ok(&["abort", "web"]).await;
    assert!(r.stdout.contains("staged release back to 1"), "{r:?}");
    // web-03 still runs the aborted 2: rollback moves it back to 1, never forward to 2.
    let r = ctl.ok(&["rollback", "web", "--json"]).await;
    let v = json(&r.stdout);
    assert_eq!((v["version"].as_str(), v["from"].as_str()), (Some("1"), Some("1")), "{v}");
    assert_eq!(v["policy_source"], "1's own policy from the catalog");
    assert_eq!(v["queue"][0]["service"], "web", "the queue shape of status: {v}");
    let entries = deploy_entries(&c, l).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(json(&entries[0].1)["version"], "1");
    assert_eq!(get(&c, &l.staging("web")).await["version"], "1");
}

#[tokio::test]
async fn after_an_abort_with_every_host_back_there_is_nothing_to_roll_back() {
    let ctl = Ctl::new("rb-nothing");
    let c = client(&ctl.connect).await;
    ctl.init_with_services().await;
    let l = &ctl.layout;
    for h in ["web-01", "web-02"] {
        online(&c, l, "db", h, "1").await;
    }
    stage(&ctl, "db", "1", &["--quorum", "0"]).await;
    finish_rollouts(&c, &ctl, "db").await;
    stage(&ctl, "db", "2", &["--quorum", "0"]).await;
    ctl.ok(&["abort", "db"]).await;
    refused(&ctl, &c, &["rollback", "db"], "nothing to roll back: db 1 is staged and every online host (2) runs it")
        .await;
}
