//! Completions: `deployctl complete` lists names from ZooKeeper, and the generated
//! bash script completes services, a service's hosts and versions through it, with
//! the `--zk`/`--root` of the line being completed.

use baton_tests::ctl::{Ctl, client, online, run_command};

#[tokio::test]
async fn bash_completes_services_hosts_and_versions_from_zookeeper() {
    let ctl = Ctl::new("complete");
    let c = client(&ctl.connect).await;
    ctl.init_with_services().await;
    online(&c, &ctl.layout, "api", "web-01", "1").await;
    online(&c, &ctl.layout, "api", "web-02", "1").await;
    let fake = ["--url", "https://r/a", "--sha256", &"a".repeat(64), "--size", "1", "--no-fetch", "--quorum", "0"];
    ctl.ok(&[&["stage", "api", "--version", "1.4.0"][..], &fake[..]].concat()).await;
    let r = ctl.ok(&["complete", "services"]).await;
    assert_eq!(r.stdout.lines().collect::<Vec<_>>(), ["api", "db", "web"], "{r:?}");
    let r = ctl.ok(&["complete", "hosts", "api"]).await;
    assert_eq!(r.stdout.lines().collect::<Vec<_>>(), ["web-01", "web-02"], "{r:?}");

    let script = ctl.ok(&["completions", "bash"]).await.stdout;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deployctl.bash");
    std::fs::write(&file, script).unwrap();
    let bin_dir = baton_tests::bin::path("deployctl").parent().unwrap().to_path_buf();
    let complete = |line: &str| {
        let words: Vec<String> = shell_words(line);
        let body = format!(
            "source {}; COMP_WORDS=({}); COMP_CWORD={}; _deployctl_dynamic deployctl; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file.display(),
            words.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" "),
            words.len() - 1
        );
        let mut cmd = std::process::Command::new("bash");
        cmd.args(["-c", &body]).env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()));
        cmd
    };
    let prefix = format!("deployctl --zk {} --root {}", ctl.connect, ctl.root);
    let r = run_command(complete(&format!("{prefix} status a"))).await;
    assert_eq!(r.stdout.trim(), "api", "{r:?}");
    let r = run_command(complete(&format!("{prefix} unlock api web-0"))).await;
    assert_eq!(r.stdout.lines().collect::<Vec<_>>(), ["web-01", "web-02"], "{r:?}");
    let r = run_command(complete(&format!("{prefix} rollback api --to 1."))).await;
    assert_eq!(r.stdout.trim(), "1.4.0", "{r:?}");
}

/// Splits on spaces; a trailing space would be an empty last word (not used here).
fn shell_words(line: &str) -> Vec<String> {
    line.split(' ').map(String::from).collect()
}
