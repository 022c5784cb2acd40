//! `deployctl check` reads every znode as the sidecars read it: a mistyped policy
//! key, a staged release no deploy entry rolls out, a payload that does not decode
//! (naming path and field); exit 3 on any, and it writes nothing.

use baton_tests::ctl::{Ctl, client, online, put, snapshot};
use serde_json::Value;

#[tokio::test]
async fn check_finds_what_sidecars_would_misread() {
    let ctl = Ctl::new("check-payloads");
    let c = client(&ctl.connect).await;
    ctl.init_with_services().await;
    let l = &ctl.layout;
    online(&c, l, "api", "web-01", "0.9").await;
    // Staged by hand with zkCli: a typo in a policy key, and no deploy entry.
    let staging = format!(
        r#"{{"schema":1,"service":"api","version":"1.0","artifact":{{"url":"https://r/a","sha256":"{}","size":1,"format":"file"}},"policy":{{"quorum":"1","max_paralell":2}},"staged_at":"t","staged_by":"me@zkcli"}}"#,
        "a".repeat(64)
    );
    put(&c, &l.staging("api"), staging.as_bytes()).await;
    let bad_host = l.current_host("web", "web-09");
    put(&c, &bad_host, br#"{"schema":1,"host":"web-09","version":"1"}"#).await;
    let before = snapshot(&c, &ctl.root).await;

    let r = ctl.run(&["check"]).await;
    assert_eq!(r.code, 3, "{r:?}");
    let staging_path = l.staging("api");
    assert!(r.stdout.contains(&format!("INVALID {staging_path}: unknown policy key(s) policy.max_paralell")), "{r:?}");
    assert!(
        r.stdout.contains(&format!("INVALID {staging_path}: 1.0 is staged but no deploy entry rolls it out"))
            && r.stdout.contains("web-01 (0.9)"),
        "{r:?}"
    );
    assert!(r.stdout.contains(&format!("INVALID {bad_host}: missing field `service`")), "{r:?}");
    assert!(r.stderr.contains("3 node(s) under") && r.stderr.contains("are invalid"), "{r:?}");
    assert_eq!(snapshot(&c, &ctl.root).await, before, "check writes nothing");

    let r = ctl.run(&["check", "--json"]).await;
    assert_eq!(r.code, 3, "{r:?}");
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let invalid = v["invalid"].as_array().unwrap();
    assert_eq!(invalid.len(), 3, "{v}");
    assert!(invalid.iter().any(|f| f["path"] == bad_host.as_str() && f["problem"] == "missing field `service`"), "{v}");
    assert_eq!(v["open"], true);
    let err: Value = serde_json::from_str(r.stderr.trim()).expect("a JSON error on stderr");
    assert_eq!((err["exit"].as_i64(), err["kind"].as_str()), (Some(3), Some("refused")), "{err}");
}

#[tokio::test]
async fn check_of_a_sound_open_tree_reports_only_that_it_is_open() {
    let ctl = Ctl::new("check-open");
    let c = client(&ctl.connect).await;
    ctl.init_with_services().await;
    online(&c, &ctl.layout, "api", "web-01", "1").await;
    let r = ctl.run(&["check"]).await;
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stdout.contains("0 invalid") && r.stdout.contains("open tree"), "{r:?}");
    assert!(r.stderr.contains("is open (no security node)"), "{r:?}");
    assert!(!r.stdout.contains("INVALID"), "{r:?}");
}
