//! The local store: state.json, activation, pruning, crash leftovers. Installs use
//! `file://` artifacts; the HTTP paths are covered by `tests/tests/download.rs`.

use super::*;
use crate::host::download::{DownloadError, RetryPolicy};
use sha2::{Digest, Sha256};
use std::time::Duration;
use tempfile::TempDir;
use znode_schema::ArtifactFormat;

fn file_artifact(tmp: &Path, name: &str, content: &[u8]) -> Artifact {
    let path = tmp.join(name);
    fs::write(&path, content).unwrap();
    Artifact {
        url: format!("file://{}", path.display()),
        sha256: hex::encode(Sha256::digest(content)),
        size: content.len() as u64,
        format: ArtifactFormat::File,
        signature: None,
    }
}

fn fetcher() -> Fetcher {
    Fetcher::new(RetryPolicy { attempts: 1, ..RetryPolicy::default() })
}

/// A release directory created by hand with a given install time.
fn fake_release(store: &ReleaseStore, version: &str, age_secs: u64) {
    let dir = store.release_dir(version);
    fs::create_dir_all(&dir).unwrap();
    let when = SystemTime::now() - Duration::from_secs(age_secs);
    fs::File::open(&dir).unwrap().set_modified(when).unwrap();
}

#[test]
fn open_creates_the_layout_and_refuses_bad_names() {
    let tmp = TempDir::new().unwrap();
    let store = ReleaseStore::open(tmp.path(), "api").unwrap();
    assert!(store.root().join("releases").is_dir());
    assert!(store.root().join("downloads").is_dir());
    assert_eq!(store.state().unwrap(), LocalState::default());
    assert!(matches!(ReleaseStore::open(tmp.path(), "../x"), Err(StoreError::Name(_))));
    assert!(!store.has("../../etc"));
}

#[tokio::test]
async fn install_is_idempotent_and_lists_versions() {
    let tmp = TempDir::new().unwrap();
    let store = ReleaseStore::open(&tmp.path().join("data"), "api").unwrap();
    let artifact = file_artifact(tmp.path(), "api-bin", b"#!/bin/sh\necho 1\n");
    let dir = store.install(&fetcher(), "1.0.0", &artifact).await.unwrap();
    assert_eq!(dir, store.release_dir("1.0.0"));
    assert_eq!(fs::read(dir.join("api-bin")).unwrap(), b"#!/bin/sh\necho 1\n");
    // The source is gone: a second install must not fetch again.
    fs::remove_file(tmp.path().join("api-bin")).unwrap();
    assert_eq!(store.install(&fetcher(), "1.0.0", &artifact).await.unwrap(), dir);
    assert_eq!(store.versions(), ["1.0.0"]);
    assert!(fs::read_dir(store.root().join("downloads")).unwrap().next().is_none(), "download cleaned up");
}

#[tokio::test]
async fn a_refused_checksum_installs_nothing() {
    let tmp = TempDir::new().unwrap();
    let store = ReleaseStore::open(&tmp.path().join("data"), "api").unwrap();
    let mut artifact = file_artifact(tmp.path(), "api-bin", b"content");
    artifact.sha256 = "0".repeat(64);
    let err = store.install(&fetcher(), "1.0.0", &artifact).await.unwrap_err();
    assert!(matches!(err, InstallError::Download { source: DownloadError::Checksum { .. }, .. }), "{err}");
    assert!(!store.has("1.0.0"));
    assert!(store.versions().is_empty());
}

#[tokio::test]
async fn a_verified_download_left_by_a_crash_is_reused() {
    let tmp = TempDir::new().unwrap();
    let store = ReleaseStore::open(&tmp.path().join("data"), "api").unwrap();
    let artifact = file_artifact(tmp.path(), "tool", b"verified bytes");
    let left = store.root().join("downloads/2.0/artifact");
    fs::create_dir_all(left.parent().unwrap()).unwrap();
    fs::write(&left, b"verified bytes").unwrap();
    fs::remove_file(tmp.path().join("tool")).unwrap(); // the source is unreachable now
    let dir = store.install(&fetcher(), "2.0", &artifact).await.unwrap();
    assert_eq!(fs::read(dir.join("tool")).unwrap(), b"verified bytes");
}

#[test]
fn activate_tracks_previous_and_switches_current() {
    let tmp = TempDir::new().unwrap();
    let store = ReleaseStore::open(tmp.path(), "api").unwrap();
    fake_release(&store, "1.0", 30);
    fake_release(&store, "2.0", 20);
    assert_eq!(store.activate("3.0"), Err(StoreError::NotInstalled { version: "3.0".into() }));
    let s = |a: &str, p: Option<&str>| LocalState { active: Some(a.into()), previous: p.map(Into::into) };
    assert_eq!(store.activate("1.0").unwrap(), s("1.0", None));
    assert_eq!(store.activate("2.0").unwrap(), s("2.0", Some("1.0")));
    assert_eq!(store.activate("2.0").unwrap(), s("2.0", Some("1.0")), "re-activating keeps previous");
    assert_eq!(store.state().unwrap(), s("2.0", Some("1.0")));
    assert_eq!(fs::read_link(store.current_link()).unwrap(), Path::new("releases/2.0"));
    assert_eq!(store.activate("1.0").unwrap(), s("1.0", Some("2.0")), "a rollback swaps them");
    assert_eq!(fs::read_link(store.current_link()).unwrap(), Path::new("releases/1.0"));
}

#[test]
fn state_json_is_written_atomically_and_leftovers_are_ignored() {
    let tmp = TempDir::new().unwrap();
    let store = ReleaseStore::open(tmp.path(), "api").unwrap();
    fake_release(&store, "1.0", 0);
    store.activate("1.0").unwrap();
    let text = fs::read_to_string(store.root().join("state.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(parsed, serde_json::json!({"active": "1.0", "previous": null}));
    // A crash in the middle of the next write leaves a half-written temporary file.
    fs::write(store.root().join("state.json.tmp"), b"{\"active\": \"2.").unwrap();
    let store = ReleaseStore::open(tmp.path(), "api").unwrap();
    assert_eq!(store.state().unwrap().active.as_deref(), Some("1.0"));
    assert!(!store.root().join("state.json.tmp").exists());
}

#[test]
fn open_cleans_crash_leftovers_and_repairs_current() {
    let tmp = TempDir::new().unwrap();
    let store = ReleaseStore::open(tmp.path(), "api").unwrap();
    fake_release(&store, "1.0", 20);
    fake_release(&store, "2.0", 10);
    store.activate("1.0").unwrap();
    // Killed: while unpacking 3.0, while pruning 0.9, between state.json and `current`.
    let releases = store.root().join("releases");
    fs::create_dir_all(releases.join(".tmp-3.0-1-abc/bin")).unwrap();
    fs::create_dir_all(releases.join(".trash-0.9-1-abc/bin")).unwrap();
    fs::create_dir_all(store.root().join("downloads/1.0")).unwrap();
    fs::create_dir_all(store.root().join("downloads/4.0")).unwrap();
    fs::write(store.root().join("downloads/4.0/artifact.partial"), b"half").unwrap();
    store.write_state(&LocalState { active: Some("2.0".into()), previous: Some("1.0".into()) }).unwrap();

    let store = ReleaseStore::open(tmp.path(), "api").unwrap();
    assert_eq!(store.versions(), ["1.0", "2.0"]);
    assert_eq!(dir_names(&releases).unwrap().len(), 2, "temporary directories removed");
    assert!(!store.root().join("downloads/1.0").exists(), "download of an installed release removed");
    assert!(store.root().join("downloads/4.0/artifact.partial").exists(), "partial kept for resume");
    assert_eq!(fs::read_link(store.current_link()).unwrap(), Path::new("releases/2.0"));
}

#[test]
fn prune_keeps_the_newest_and_never_active_or_previous() {
    let tmp = TempDir::new().unwrap();
    let store = ReleaseStore::open(tmp.path(), "api").unwrap();
    for (i, v) in ["1.0", "2.0", "3.0", "4.0", "5.0", "6.0"].iter().enumerate() {
        fake_release(&store, v, 100 - 10 * i as u64);
    }
    store.activate("1.0").unwrap();
    store.activate("2.0").unwrap(); // active 2.0, previous 1.0: the two oldest
    assert_eq!(store.prune(2).unwrap(), ["3.0", "4.0"]);
    assert_eq!(store.versions(), ["1.0", "2.0", "5.0", "6.0"]);
    assert_eq!(store.prune(0).unwrap(), ["5.0", "6.0"]);
    assert_eq!(store.versions(), ["1.0", "2.0"]);
    assert_eq!(store.prune(0).unwrap(), Vec::<String>::new());
    assert!(fs::read_link(store.current_link()).unwrap().ends_with("2.0"));
}

/// The single-file install path, crash point by crash point: the verified download is
/// hard-linked into a temporary release directory, which is renamed into place, and
/// then the download is removed.
#[tokio::test]
async fn a_crash_at_each_point_of_a_single_file_install_recovers() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("data");
    let artifact = file_artifact(tmp.path(), "tool", b"#!/bin/sh\necho linked\n");
    let source = tmp.path().join("tool");

    // 1. Killed after the download was committed, before the link.
    let store = ReleaseStore::open(&data, "api").unwrap();
    let download = store.root().join("downloads/1.0/artifact");
    fs::create_dir_all(download.parent().unwrap()).unwrap();
    fs::copy(&source, &download).unwrap();
    // 2. ...and after the link into the temporary directory, before its rename.
    let half = store.root().join("releases/.tmp-1.0-1-dead");
    fs::create_dir_all(&half).unwrap();
    fs::hard_link(&download, half.join("tool")).unwrap();
    assert_eq!(fs::metadata(&download).unwrap().nlink(), 2);

    let store = ReleaseStore::open(&data, "api").unwrap();
    assert!(!half.exists(), "the temporary directory is removed");
    assert_eq!(fs::metadata(&download).unwrap().nlink(), 1, "the download is intact");
    fs::remove_file(&source).unwrap(); // the origin is gone: the download must be reused
    let dir = store.install(&fetcher(), "1.0", &artifact).await.unwrap();
    let installed = dir.join("tool");
    assert_eq!(fs::read(&installed).unwrap(), b"#!/bin/sh\necho linked\n");
    let meta = fs::metadata(&installed).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    assert_eq!(meta.nlink(), 1, "the download's name is removed once installed");
    assert!(!store.root().join("downloads/1.0").exists());

    // 3. Killed after the rename, before the download was removed: open removes it and
    //    the release keeps its content (the link, not the download, is the file).
    fs::create_dir_all(store.root().join("downloads/1.0")).unwrap();
    fs::hard_link(&installed, store.root().join("downloads/1.0/artifact")).unwrap();
    let store = ReleaseStore::open(&data, "api").unwrap();
    assert!(!store.root().join("downloads/1.0").exists());
    assert_eq!(fs::read(store.release_dir("1.0").join("tool")).unwrap(), b"#!/bin/sh\necho linked\n");
    assert_eq!(fs::metadata(store.release_dir("1.0").join("tool")).unwrap().nlink(), 1);
}
