//! One exit-code table for every command: a bad name is 2, no tree and no such
//! service are 3 with the same message in every command; a closed stdout ends
//! deployctl quietly; under `--json` errors are one JSON object on stderr.

use baton_tests::ctl::{Ctl, client, online, snapshot};
use serde_json::Value;
use std::process::Stdio;

const NAMED: [&[&str]; 9] = [
    &["status", "nosuch"],
    &["status", "nosuch", "--hosts"],
    &["watch", "nosuch"],
    &["history", "nosuch"],
    &["releases", "nosuch"],
    &["pause", "nosuch"],
    &["resume", "nosuch"],
    &["abort", "nosuch"],
    &["rollback", "nosuch"],
];

#[tokio::test]
async fn an_unknown_service_and_a_missing_tree_exit_3_in_every_command() {
    let ctl = Ctl::new("exit-codes");
    let c = client(&ctl.connect).await;
    ctl.init_with_services().await;
    let before = snapshot(&c, &ctl.root).await;
    let unlock = ["unlock", "nosuch", "web-01"];
    for args in NAMED.iter().copied().chain([&unlock[..]]) {
        let r = ctl.run(args).await;
        assert_eq!(r.code, 3, "{args:?}: {r:?}");
        assert!(r.stderr.contains("no such service nosuch"), "{args:?}: {r:?}");
        let r = ctl.run(&[args, &["--json"]].concat()).await;
        assert_eq!(r.code, 3, "{args:?} --json: {r:?}");
        let err: Value = serde_json::from_str(r.stderr.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {r:?}"));
        assert_eq!(err["kind"], "refused", "{args:?}");
        assert!(err["error"].as_str().unwrap().contains("no such service nosuch"), "{args:?}: {err}");
        assert!(r.stdout.is_empty(), "{args:?}: {r:?}");
    }
    for args in NAMED {
        let bad = [args[0], "bad/name"];
        let r = ctl.run(&bad).await;
        assert_eq!(r.code, 2, "{bad:?}: {r:?}");
    }
    assert_eq!(snapshot(&c, &ctl.root).await, before, "nothing written");

    let fresh = Ctl::new("exit-notree");
    for args in [&["status"][..], &["status", "api"], &["watch"], &["history", "api"], &["pause", "api"], &["check"]] {
        let r = fresh.run(args).await;
        assert_eq!(r.code, 3, "{args:?}: {r:?}");
        assert!(r.stderr.contains("run `deployctl init` first"), "{args:?}: {r:?}");
    }
    // A usage error under --json is JSON too.
    let r = ctl.run(&["status", "--json", "--no-such-flag"]).await;
    assert_eq!(r.code, 2, "{r:?}");
    let err: Value = serde_json::from_str(r.stderr.trim()).expect("JSON usage error");
    assert_eq!(err["kind"], "usage");
}

#[tokio::test]
async fn a_closed_stdout_ends_deployctl_quietly() {
    let ctl = Ctl::new("exit-pipe");
    let c = client(&ctl.connect).await;
    ctl.init_with_services().await;
    for i in 0..20 {
        online(&c, &ctl.layout, "api", &format!("web-{i:02}"), "1").await;
    }
    for args in [&["status"][..], &["status", "--hosts"], &["status", "--json"]] {
        let mut cmd = ctl.command(args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn deployctl");
        drop(child.stdout.take()); // `| head -0`: the reader is gone before the first line
        let out = child.wait_with_output().expect("deployctl ends");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn global_options_have_their_own_heading_and_the_exit_codes_are_in_help() {
    let ctl = Ctl::new("exit-help");
    let r = ctl.run(&["status", "--help"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let (own, global) = r.stdout.split_once("Global options:").expect("a Global options heading");
    assert!(own.contains("--hosts") && !own.contains("--zk"), "{r:?}");
    assert!(global.contains("--zk") && global.contains("--json"), "{r:?}");
    let r = ctl.run(&["--help"]).await;
    assert!(
        r.stdout.contains("Exit codes:")
            && r.stdout.contains("same for every command")
            && r.stdout.contains("no such service"),
        "{r:?}"
    );
}
