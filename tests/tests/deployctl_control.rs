//! deployctl's writes to a rollout against a real ZooKeeper: pause, resume, abort,
//! rollback, unlock, each refused case with its message and ZooKeeper untouched.

use baton_tests::ctl::{
    BY, Ctl, client, deploy_entries, finish_rollouts, get, history, json, marker, online, put, refused, sha, snapshot,
    ticket,
};
use serde_json::Value;
use zookeeper_client as zk;

async fn setup(name: &str) -> (Ctl, zk::Client) {
    let ctl = Ctl::new(name);
    let c = client(&ctl.connect).await;
    ctl.init_with_services().await;
    (ctl, c)
}

async fn stage(ctl: &Ctl, service: &str, version: &str, digit: char) {
    let digest = sha(digit);
    // --quorum 0: the fleets here are one or two hosts played by the test.
    let artifact = ["--url", "https://r/a", "--sha256", &digest, "--size", "1", "--no-fetch", "--quorum", "0"];
    ctl.ok(&[&["stage", service, "--version", version][..], &artifact[..]].concat()).await;
}

fn last_event(events: &[String]) -> Value {
    json(events.last().expect("an event"))
}

#[tokio::test]
async fn pause_and_resume_rewrite_the_entry_with_events() {
    let (ctl, c) = setup("pause").await;
    let l = &ctl.layout;
    refused(&ctl, &c, &["pause", "api"], "no unfinished rollout of api").await;
    stage(&ctl, "api", "1.0", 'a').await;
    let entry = deploy_entries(&c, l).await[0].0.clone();

    ctl.ok(&["pause", "api", "--reason", "error rate up"]).await;
    let e = get(&c, &entry).await;
    assert_eq!((e["state"].as_str(), e["reason"].as_str()), (Some("paused"), Some("error rate up")));
    let ev = last_event(&history(&c, l, "api").await);
    assert_eq!(
        (ev["event"].as_str(), ev["by"].as_str(), ev["detail"].as_str()),
        (Some("paused"), Some(BY), Some("error rate up"))
    );
    refused(&ctl, &c, &["pause", "api"], "api's rollout to 1.0 is already paused").await;

    let r = ctl.ok(&["resume", "api", "--json"]).await;
    assert_eq!(json(&r.stdout)["entry"]["state"], "active");
    let e = get(&c, &entry).await;
    assert_eq!((e["state"].as_str(), e["reason"].clone()), (Some("active"), Value::Null));
    assert_eq!(last_event(&history(&c, l, "api").await)["event"], "resumed");
    refused(&ctl, &c, &["resume", "api"], "nothing to resume: api's rollout to 1.0 is active with no failures").await;

    // A halt set by a sidecar: pause is refused, resume clears it and the failure count.
    let mut halted = e.clone();
    halted["state"] = "halted".into();
    halted["reason"] = "web-02 failed its health check".into();
    halted["failures"] = 2.into();
    put(&c, &entry, halted.to_string().as_bytes()).await;
    refused(&ctl, &c, &["pause", "api"], "is halted (web-02 failed its health check)").await;
    ctl.ok(&["resume", "api"]).await;
    let e = get(&c, &entry).await;
    assert_eq!((e["state"].as_str(), e["failures"].as_u64()), (Some("active"), Some(0)));
    let ev = last_event(&history(&c, l, "api").await);
    assert!(ev["detail"].as_str().unwrap().contains("was halted with 2 failure(s)"), "{ev}");
}

#[tokio::test]
async fn abort_removes_the_entry_and_restages_what_most_hosts_run() {
    let (ctl, c) = setup("abort").await;
    let l = &ctl.layout;
    stage(&ctl, "api", "1.0", 'a').await;
    finish_rollouts(&c, &ctl, "api").await;
    stage(&ctl, "api", "1.1", 'b').await;
    let entry = deploy_entries(&c, l).await[0].0.clone();
    online(&c, l, "api", "web-01", "1.0").await;
    online(&c, l, "api", "web-02", "1.0").await;
    online(&c, l, "api", "web-03", "1.1").await;
    let m = marker(&c, &entry, "web-04", "1.0", "1.1").await;

    let r = ctl.ok(&["abort", "api"]).await;
    assert!(r.stdout.contains("staged release back to 1.0; hosts mid-step: web-04"), "{r:?}");
    assert!(c.check_stat(&m).await.unwrap().is_none() && c.check_stat(&entry).await.unwrap().is_none());
    assert!(deploy_entries(&c, l).await.is_empty());
    let staging = get(&c, &l.staging("api")).await;
    assert_eq!(staging["version"], "1.0");
    assert_eq!(staging["artifact"]["sha256"], sha('a'));
    let ev = last_event(&history(&c, l, "api").await);
    assert_eq!(
        (ev["event"].as_str(), ev["version"].as_str(), ev["by"].as_str()),
        (Some("aborted"), Some("1.1"), Some(BY))
    );
    assert!(c.get_data(&l.current_host("api", "web-03")).await.is_ok(), "hosts keep what they run");
    refused(&ctl, &c, &["abort", "api"], "no unfinished rollout of api").await;

    // No host online: staging stays as it is.
    stage(&ctl, "db", "3.0", 'c').await;
    ctl.ok(&["abort", "db"]).await;
    assert_eq!(get(&c, &l.staging("db")).await["version"], "3.0");
}

#[tokio::test]
async fn rollback_goes_to_the_front_of_the_queue() {
    let (ctl, c) = setup("rollback").await;
    let l = &ctl.layout;
    stage(&ctl, "api", "1.0", 'a').await;
    finish_rollouts(&c, &ctl, "api").await;
    stage(&ctl, "web", "2.0", 'b').await;
    stage(&ctl, "api", "1.1", 'c').await;
    stage(&ctl, "db", "3.0", 'd').await;
    online(&c, l, "api", "a-01", "1.0").await;
    online(&c, l, "api", "a-02", "1.1").await;
    let before: Vec<(String, String)> = deploy_entries(&c, l).await;
    let web_entry = before[0].clone();

    let r = ctl.ok(&["rollback", "api"]).await;
    assert!(r.stdout.contains("rolled back api to 1.0"), "{r:?}");
    assert!(r.stdout.contains(&format!("superseded {}", before[1].0)), "{r:?}");
    let after = deploy_entries(&c, l).await;
    let services: Vec<(String, String)> = after
        .iter()
        .map(|(_, p)| json(p))
        .map(|v| (v["service"].as_str().unwrap().into(), v["version"].as_str().unwrap().into()))
        .collect();
    let expect = |s: &str, v: &str| (s.to_string(), v.to_string());
    assert_eq!(services, [expect("api", "1.0"), expect("web", "2.0"), expect("db", "3.0")]);
    assert_eq!(after[1].1, web_entry.1, "moved entries keep their payload");
    assert!(after[1].0 > web_entry.0, "moved entries get new sequence numbers");
    for (path, _) in &after {
        assert!(c.check_stat(&format!("{path}/upgrading")).await.unwrap().is_some(), "{path}/upgrading");
    }
    assert_eq!(get(&c, &l.staging("api")).await["version"], "1.0");
    let ev = last_event(&history(&c, l, "api").await);
    assert_eq!((ev["event"].as_str(), ev["version"].as_str()), (Some("rolled_back"), Some("1.0")));
    assert!(ev["detail"].as_str().unwrap().contains("from 1.1"), "{ev}");

    // A head with hosts mid-step cannot move: the rollback goes right after it.
    finish_rollouts(&c, &ctl, "api").await;
    let head = deploy_entries(&c, l).await[0].0.clone();
    marker(&c, &head, "w-01", "1.9", "2.0").await;
    ctl.ok(&["rollback", "api", "--to", "1.1"]).await;
    let order: Vec<String> =
        deploy_entries(&c, l).await.iter().map(|(_, p)| json(p)["service"].as_str().unwrap().into()).collect();
    assert_eq!(order, ["web", "api", "db"]);
    assert_eq!(deploy_entries(&c, l).await[0].0, head, "the head kept its place");
}

#[tokio::test]
async fn rollback_refuses_unknown_or_staged_versions() {
    let (ctl, c) = setup("rollback-refused").await;
    stage(&ctl, "api", "1.0", 'a').await;
    refused(&ctl, &c, &["rollback", "api", "--to", "0.9"], "release api 0.9 is not in the catalog").await;
    refused(&ctl, &c, &["rollback", "api", "--to", "1.0"], "api is already rolling to 1.0").await;
    refused(&ctl, &c, &["rollback", "api"], "no release of api to roll back to").await;
    let before = snapshot(&c, &ctl.root).await;
    let r = ctl.run(&["rollback", "api", "--to", "bad/version"]).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("version \"bad/version\" contains '/'"), "{r:?}");
    assert_eq!(snapshot(&c, &ctl.root).await, before);
}

#[tokio::test]
async fn unlock_frees_a_slot_only_when_the_host_is_gone_or_forced() {
    let (ctl, c) = setup("unlock").await;
    let l = &ctl.layout;
    stage(&ctl, "api", "1.1", 'a').await;
    let entry = deploy_entries(&c, l).await[0].0.clone();
    refused(&ctl, &c, &["unlock", "api", "web-01"], "host web-01 holds no upgrading slot in api's rollout").await;
    let m1 = marker(&c, &entry, "web-01", "1.0", "1.1").await;
    let m2 = marker(&c, &entry, "web-02", "1.0", "1.1").await;
    let m3 = marker(&c, &entry, "web-03", "1.0", "1.1").await;
    online(&c, l, "api", "web-01", "1.0").await;
    let t = ticket(&c, l, "api", "web-02", "1.1").await;
    refused(&ctl, &c, &["unlock", "api", "web-01"], &format!("{} exists", l.current_host("api", "web-01"))).await;
    refused(&ctl, &c, &["unlock", "api", "web-02"], &format!("({t} exists)")).await;

    let r = ctl.ok(&["unlock", "api", "web-03"]).await;
    assert!(r.stdout.contains(&format!("removed {m3}")), "{r:?}");
    assert!(c.check_stat(&m3).await.unwrap().is_none());
    let ev = last_event(&history(&c, l, "api").await);
    assert_eq!(
        (ev["event"].as_str(), ev["host"].as_str(), ev["by"].as_str()),
        (Some("unlocked"), Some("web-03"), Some(BY))
    );

    ctl.ok(&["unlock", "api", "web-01", "--force"]).await;
    assert!(c.check_stat(&m1).await.unwrap().is_none());
    assert!(c.check_stat(&m2).await.unwrap().is_some());
    let r = ctl.run(&["unlock", "api", "web/02"]).await;
    assert_eq!(r.code, 2, "{r:?}");
}
