//! The shipped systemd unit: valid for systemd, and hardened as far as a sidecar that
//! runs services allows (`systemd-analyze security` exposure at most 4.0, where an
//! unhardened root service scores 9.6).

use std::process::Command;

const UNIT: &str = include_str!("../../dist/systemd/baton-sidecar.service");

fn analyze_available() -> bool {
    Command::new("systemd-analyze").arg("--version").output().is_ok_and(|o| o.status.success())
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    if !analyze_available() {
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sidecar = baton_tests::bin::path("sidecar");
    let unit = dir.path().join("baton-sidecar.service");
    std::fs::write(&unit, UNIT.replace("/usr/local/bin/sidecar", &sidecar.display().to_string())).unwrap();
    let verify = Command::new("systemd-analyze").arg("verify").arg(&unit).output().unwrap();
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && !stderr.contains("baton-sidecar.service:"), "verify: {stderr}");
    let security = Command::new("systemd-analyze").args(["security", "--offline=yes"]).arg(&unit).output().unwrap();
    let text = String::from_utf8_lossy(&security.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.split("exposure level for baton-sidecar.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    assert!(exposure <= 4.0, "exposure {exposure} > 4.0:\n{text}");
    for kept in ["KillMode=process", "Type=notify", "ReadWritePaths=/var/lib/baton", "NoNewPrivileges=yes"] {
        assert!(UNIT.contains(kept), "the unit lost {kept}");
    }
}
