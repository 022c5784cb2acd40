//! Verified downloads and the local release store against a real HTTP server that
//! misbehaves on purpose (`baton_tests::artifact_server`). No ZooKeeper needed.

use baton_sidecar::host::download::{DownloadError, Fetcher, RetryPolicy, Timeouts};
use baton_sidecar::host::releases::{InstallError, LocalState, ReleaseStore};
use baton_sidecar::host::unpack::{Refusal, UnpackError};
use baton_tests::artifact_server::{ArtifactServer, Fault};
use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;
use znode_schema::{Artifact, ArtifactFormat};

/// The idle timeout of tests about hanging servers: short to keep them fast, long
/// enough that a loaded machine does not stall a healthy transfer that long.
const SHORT_IDLE: Duration = Duration::from_secs(1);

fn fetcher(attempts: u32) -> Fetcher {
    fetcher_with_idle(attempts, Duration::from_secs(20))
}

fn fetcher_with_idle(attempts: u32, idle: Duration) -> Fetcher {
    let retry = RetryPolicy { attempts, initial: Duration::from_millis(10), max: Duration::from_millis(50) };
    Fetcher::with_timeouts(retry, Timeouts { connect: Duration::from_secs(5), idle })
}

/// 300 kB that do not repeat, so a misplaced byte changes the hash.
fn payload() -> Vec<u8> {
    (0u32..75_000).flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()).collect()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn artifact(url: String, bytes: &[u8], format: ArtifactFormat) -> Artifact {
    Artifact { url, sha256: sha256(bytes), size: bytes.len() as u64, format, signature: None }
}

/// A server serving `payload()` at `/app.bin`, and its artifact.
fn serving_payload() -> (ArtifactServer, Artifact, Vec<u8>) {
    let server = ArtifactServer::start();
    let bytes = payload();
    server.put("/app.bin", bytes.clone());
    let artifact = artifact(server.url("/app.bin"), &bytes, ArtifactFormat::File);
    (server, artifact, bytes)
}

fn dest(tmp: &TempDir) -> (PathBuf, PathBuf) {
    (tmp.path().join("app.bin"), tmp.path().join("app.bin.partial"))
}

/// A gzip-compressed tarball of `(path, content)` files; a path ending in `/` is a
/// directory. Paths are written raw, unvalidated, so tests can build evil ones.
fn tarball(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (path, content) in entries {
        let mut header = tar::Header::new_gnu();
        let kind = if path.ends_with('/') { tar::EntryType::Directory } else { tar::EntryType::Regular };
        header.set_entry_type(kind);
        header.set_size(content.len() as u64);
        header.set_mode(0o755);
        header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        builder.append(&header, *content).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

#[tokio::test]
async fn good_download_is_verified_and_renamed() {
    let (server, artifact, bytes) = serving_payload();
    let tmp = TempDir::new().unwrap();
    let (dest, partial) = dest(&tmp);
    fetcher(3).fetch(&artifact, &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    assert!(!partial.exists());
    assert_eq!(server.request_count(), 1);
    assert_eq!(server.ranges(), Vec::<String>::new());
}

#[tokio::test]
async fn wrong_sha256_is_refused_naming_expected_and_actual() {
    let (server, mut artifact, bytes) = serving_payload();
    artifact.sha256 = sha256(b"something else");
    let tmp = TempDir::new().unwrap();
    let (dest, partial) = dest(&tmp);
    let err = fetcher(3).fetch(&artifact, &dest).await.unwrap_err();
    let want = DownloadError::Checksum {
        url: artifact.url.clone(),
        expected: artifact.sha256.clone(),
        actual: sha256(&bytes),
    };
    assert_eq!(err, want);
    assert!(err.to_string().contains(&sha256(&bytes)) && err.to_string().contains(&artifact.sha256), "{err}");
    assert!(!dest.exists() && !partial.exists(), "nothing left behind");
    assert_eq!(server.request_count(), 1, "a checksum mismatch is not retried");

    let store = ReleaseStore::open(&tmp.path().join("data"), "api").unwrap();
    let err = store.install(&fetcher(3), "1.0", &artifact).await.unwrap_err();
    assert!(matches!(&err, InstallError::Download { source: DownloadError::Checksum { .. }, .. }), "{err:?}");
    assert!(!store.has("1.0") && store.versions().is_empty(), "nothing installed");
    assert_eq!(entries(&tmp.path().join("data/api/releases")), Vec::<String>::new());
}

#[tokio::test]
async fn corrupt_bytes_are_refused() {
    let (server, artifact, _) = serving_payload();
    server.fail_next(1, Fault::Corrupt);
    let tmp = TempDir::new().unwrap();
    let (dest, partial) = dest(&tmp);
    let err = fetcher(3).fetch(&artifact, &dest).await.unwrap_err();
    assert!(matches!(&err, DownloadError::Checksum { expected, .. } if *expected == artifact.sha256), "{err:?}");
    assert!(!dest.exists() && !partial.exists());
}

#[tokio::test]
async fn truncated_bodies_are_refused_then_resumed_once_fixed() {
    let (server, artifact, bytes) = serving_payload();
    server.fail_always(Fault::Truncate(1000));
    let tmp = TempDir::new().unwrap();
    let (dest, partial) = dest(&tmp);
    let err = fetcher(3).fetch(&artifact, &dest).await.unwrap_err();
    let last = DownloadError::Truncated { url: artifact.url.clone(), expected: artifact.size, received: 3000 };
    assert_eq!(err, DownloadError::GaveUp { url: artifact.url.clone(), attempts: 3, last: Box::new(last) });
    assert!(!dest.exists(), "nothing unverified at dest");
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), 3000, "the partial is kept for resume");
    assert_eq!(server.ranges(), ["bytes=1000-", "bytes=2000-"]);

    server.clear_faults();
    fetcher(3).fetch(&artifact, &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    assert_eq!(server.ranges().last().map(String::as_str), Some("bytes=3000-"), "resumed across calls");
    assert!(!partial.exists());
}

#[tokio::test]
async fn a_transfer_cut_midway_is_resumed_with_a_range_request() {
    let (server, artifact, bytes) = serving_payload();
    server.fail_next(1, Fault::Truncate(100_000));
    let tmp = TempDir::new().unwrap();
    let (dest, _) = dest(&tmp);
    fetcher(3).fetch(&artifact, &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].range.as_deref(), Some("bytes=100000-"));
}

#[tokio::test]
async fn a_reset_connection_is_retried_and_the_result_verifies() {
    let (server, artifact, bytes) = serving_payload();
    server.fail_next(2, Fault::CutAfter(150_000));
    let tmp = TempDir::new().unwrap();
    let (dest, _) = dest(&tmp);
    fetcher(4).fetch(&artifact, &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    assert_eq!(server.request_count(), 3);
    // How much arrived before each reset depends on the kernel; any resume starts inside the file.
    for range in server.ranges() {
        let from: u64 = range.strip_prefix("bytes=").and_then(|r| r.strip_suffix('-')).unwrap().parse().unwrap();
        assert!(from > 0 && from < artifact.size, "{range}");
    }
}

#[tokio::test]
async fn a_server_ignoring_the_range_restarts_from_zero() {
    let (server, artifact, bytes) = serving_payload();
    server.fail_next(1, Fault::Truncate(5000));
    server.fail_next(1, Fault::IgnoreRange);
    let tmp = TempDir::new().unwrap();
    let (dest, _) = dest(&tmp);
    fetcher(3).fetch(&artifact, &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    assert_eq!(server.ranges(), ["bytes=5000-"]);
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn a_corrupt_resumed_piece_restarts_from_zero() {
    let (server, artifact, bytes) = serving_payload();
    server.fail_next(1, Fault::Truncate(5000));
    server.fail_next(1, Fault::Corrupt);
    let tmp = TempDir::new().unwrap();
    let (dest, _) = dest(&tmp);
    fetcher(3).fetch(&artifact, &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    let ranges: Vec<_> = server.requests().into_iter().map(|r| r.range).collect();
    assert_eq!(ranges, [None, Some("bytes=5000-".to_string()), None]);
}

#[tokio::test]
async fn not_found_is_retried_and_succeeds_once_fixed() {
    let (server, artifact, bytes) = serving_payload();
    server.remove("/app.bin");
    let tmp = TempDir::new().unwrap();
    let (dest, _) = dest(&tmp);
    let err = fetcher(2).fetch(&artifact, &dest).await.unwrap_err();
    let last = DownloadError::Http { url: artifact.url.clone(), status: 404 };
    assert_eq!(err, DownloadError::GaveUp { url: artifact.url.clone(), attempts: 2, last: Box::new(last) });
    assert_eq!(server.request_count(), 2, "a 404 counts as an attempt and is retried");

    // An operator puts the file in place while the sidecar retries.
    server.put("/app.bin", bytes.clone());
    server.fail_next(2, Fault::Status(404));
    fetcher(3).fetch(&artifact, &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    assert_eq!(server.request_count(), 5);
}

#[tokio::test]
async fn server_errors_are_retried_until_recovered() {
    let (server, artifact, bytes) = serving_payload();
    for status in [500, 503, 429] {
        server.fail_next(1, Fault::Status(status));
    }
    let tmp = TempDir::new().unwrap();
    let (dest, _) = dest(&tmp);
    fetcher(4).fetch(&artifact, &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    assert_eq!(server.request_count(), 4);
}

#[tokio::test]
async fn a_hanging_server_is_cut_by_the_idle_timeout() {
    let (server, artifact, bytes) = serving_payload();
    server.fail_always(Fault::Hang);
    let tmp = TempDir::new().unwrap();
    let (dest, _) = dest(&tmp);
    let started = std::time::Instant::now();
    let err = fetcher_with_idle(2, SHORT_IDLE).fetch(&artifact, &dest).await.unwrap_err();
    let last = DownloadError::Timeout { url: artifact.url.clone(), after: SHORT_IDLE };
    assert_eq!(err, DownloadError::GaveUp { url: artifact.url.clone(), attempts: 2, last: Box::new(last) });
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    server.clear_faults();
    fetcher(2).fetch(&artifact, &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
}

#[tokio::test]
async fn a_server_stalling_mid_body_is_cut_and_resumed() {
    let (server, artifact, bytes) = serving_payload();
    server.fail_next(1, Fault::StallAfter(120_000));
    let tmp = TempDir::new().unwrap();
    let (dest, _) = dest(&tmp);
    fetcher_with_idle(2, SHORT_IDLE).fetch(&artifact, &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    assert_eq!(server.request_count(), 2);
    // The 120 000 bytes sent before the stall arrive well within the idle timeout.
    assert_eq!(server.ranges(), ["bytes=120000-"]);
}

/// A download abandoned mid-body (its future dropped: a re-stage, an abort or a
/// shutdown) leaves the bytes it had, and the next call resumes after them, never
/// interleaving with the abandoned writer.
#[tokio::test]
async fn a_download_dropped_mid_body_is_resumed_by_the_next_call() {
    let (server, artifact, bytes) = serving_payload();
    server.fail_next(1, Fault::StallAfter(120_000));
    let tmp = TempDir::new().unwrap();
    let (dest, partial) = dest(&tmp);
    let first = {
        let (artifact, dest) = (artifact.clone(), dest.clone());
        tokio::spawn(async move { fetcher(1).fetch(&artifact, &dest).await })
    };
    let written = || std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    let patience = std::time::Instant::now() + Duration::from_secs(20);
    while written() < 120_000 {
        assert!(std::time::Instant::now() < patience, "the first transfer wrote {} bytes", written());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    fetcher(1).fetch(&artifact, &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    assert_eq!(server.ranges(), ["bytes=120000-"]);
}

#[tokio::test]
async fn a_body_longer_than_the_artifact_is_refused() {
    let (server, mut artifact, _) = serving_payload();
    artifact.size -= 10;
    let tmp = TempDir::new().unwrap();
    let (dest, partial) = dest(&tmp);
    // Announced by Content-Length.
    let err = fetcher(3).fetch(&artifact, &dest).await.unwrap_err();
    let want = DownloadError::Size { url: artifact.url.clone(), expected: artifact.size, actual: artifact.size + 10 };
    assert_eq!(err, want);
    // Not announced: cut while streaming.
    server.fail_next(1, Fault::NoLength);
    let err = fetcher(3).fetch(&artifact, &dest).await.unwrap_err();
    assert!(
        matches!(err, DownloadError::Size { expected, actual, .. } if expected == artifact.size && actual > expected),
        "{err:?}"
    );
    assert!(!dest.exists() && !partial.exists());
    assert_eq!(server.request_count(), 2, "a size mismatch is not retried");
}

#[tokio::test]
async fn a_refused_connection_is_a_network_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bytes = payload();
    let artifact = artifact(format!("http://127.0.0.1:{port}/x"), &bytes, ArtifactFormat::File);
    let tmp = TempDir::new().unwrap();
    let err = fetcher(2).fetch(&artifact, &dest(&tmp).0).await.unwrap_err();
    assert!(
        matches!(&err, DownloadError::GaveUp { last, .. } if matches!(**last, DownloadError::Network { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn file_urls_are_read_and_verified() {
    let tmp = TempDir::new().unwrap();
    let source = tmp.path().join("source.bin");
    let bytes = payload();
    std::fs::write(&source, &bytes).unwrap();
    let mut artifact = artifact(format!("file://{}", source.display()), &bytes, ArtifactFormat::File);
    let dest = tmp.path().join("out");
    fetcher(1).fetch(&artifact, &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);

    artifact.sha256 = sha256(b"other");
    let dest = tmp.path().join("out2");
    let err = fetcher(1).fetch(&artifact, &dest).await.unwrap_err();
    assert!(matches!(err, DownloadError::Checksum { .. }), "{err:?}");
    assert!(!dest.exists());

    artifact.url = "ftp://example.com/x".into();
    let err = fetcher(1).fetch(&artifact, &dest).await.unwrap_err();
    assert_eq!(err, DownloadError::UnsupportedScheme { url: artifact.url.clone() });
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn install_unpacks_a_tarball_once() {
    let server = ArtifactServer::start();
    let tgz = tarball(&[("bin/", b""), ("bin/api", b"#!/bin/sh\necho api\n"), ("etc/api.conf", b"port=1\n")]);
    server.put("/api-1.0.tar.gz", tgz.clone());
    let artifact = artifact(server.url("/api-1.0.tar.gz"), &tgz, ArtifactFormat::TarGz);
    let tmp = TempDir::new().unwrap();
    let store = ReleaseStore::open(tmp.path(), "api").unwrap();
    let dir = store.install(&fetcher(3), "1.0", &artifact).await.unwrap();
    assert_eq!(dir, tmp.path().join("api/releases/1.0"));
    assert_eq!(std::fs::read(dir.join("bin/api")).unwrap(), b"#!/bin/sh\necho api\n");
    assert_eq!(entries(&tmp.path().join("api/releases")), ["1.0"]);
    assert_eq!(entries(&tmp.path().join("api/downloads")), Vec::<String>::new());

    assert_eq!(store.install(&fetcher(3), "1.0", &artifact).await.unwrap(), dir);
    assert_eq!(server.request_count(), 1, "an installed release is not downloaded again");
    assert!(store.has("1.0"));
    assert_eq!(store.versions(), ["1.0"]);
}

#[tokio::test]
async fn a_tarball_with_path_traversal_installs_nothing() {
    let server = ArtifactServer::start();
    let tgz = tarball(&[("bin/api", b"ok"), ("../../evil", b"gotcha")]);
    server.put("/evil.tar.gz", tgz.clone());
    let artifact = artifact(server.url("/evil.tar.gz"), &tgz, ArtifactFormat::TarGz);
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("data");
    let store = ReleaseStore::open(&data, "api").unwrap();
    let err = store.install(&fetcher(3), "6.6.6", &artifact).await.unwrap_err();
    let want = UnpackError::Refused { entry: "../../evil".into(), reason: Refusal::ParentDir };
    assert!(
        matches!(&err, InstallError::Unpack { version, source } if version == "6.6.6" && *source == want),
        "{err:?}"
    );
    assert!(!store.has("6.6.6"));
    assert_eq!(entries(&data.join("api/releases")), Vec::<String>::new());
    assert_eq!(entries(&data.join("api/downloads")), Vec::<String>::new());
    assert_eq!(entries(tmp.path()), ["data"], "nothing written outside");
}

#[tokio::test]
async fn activate_and_prune_installed_releases() {
    let server = ArtifactServer::start();
    let tmp = TempDir::new().unwrap();
    let store = ReleaseStore::open(tmp.path(), "api").unwrap();
    let versions = ["1.0", "1.1", "1.2", "1.3"];
    for v in versions {
        let bin = format!("#!/bin/sh\necho {v}\n").into_bytes();
        server.put(&format!("/api-{v}"), bin.clone());
        let artifact = artifact(server.url(&format!("/api-{v}")), &bin, ArtifactFormat::File);
        let dir = store.install(&fetcher(3), v, &artifact).await.unwrap();
        assert_eq!(std::fs::read(dir.join(format!("api-{v}"))).unwrap(), bin);
    }
    assert_eq!(store.versions(), versions);
    store.activate("1.0").unwrap();
    let state = store.activate("1.1").unwrap();
    assert_eq!(state, LocalState { active: Some("1.1".into()), previous: Some("1.0".into()) });
    assert_eq!(store.state().unwrap(), state);
    let current = std::fs::canonicalize(store.current_link()).unwrap();
    assert_eq!(current, std::fs::canonicalize(store.release_dir("1.1")).unwrap());

    // Keep the newest one: 1.3; 1.1 (active) and 1.0 (previous) stay too.
    assert_eq!(store.prune(1).unwrap(), ["1.2"]);
    assert_eq!(store.versions(), ["1.0", "1.1", "1.3"]);
    // A new process sees the same store.
    let reopened = ReleaseStore::open(tmp.path(), "api").unwrap();
    assert_eq!(reopened.versions(), ["1.0", "1.1", "1.3"]);
    assert_eq!(reopened.state().unwrap(), state);
}

// ---- [limits] and pace ----

use baton_sidecar::host::download::{DownloadLimits, Pace};

/// An error with its causes, joined with ": ".
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

fn limited(limits: DownloadLimits) -> Fetcher {
    fetcher(1).limited(limits)
}

fn file_dirs(dirs: &[&Path]) -> DownloadLimits {
    DownloadLimits { file_dirs: dirs.iter().map(|d| d.to_path_buf()).collect(), ..DownloadLimits::default() }
}

fn local(path: &Path, bytes: &[u8]) -> Artifact {
    artifact(format!("file://{}", path.display()), bytes, ArtifactFormat::File)
}

#[tokio::test]
async fn file_urls_are_off_by_default_and_confined_to_their_directories() {
    let tmp = TempDir::new().unwrap();
    let allowed = tmp.path().join("releases");
    let secret_dir = tmp.path().join("etc");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::create_dir_all(&secret_dir).unwrap();
    let secret = secret_dir.join("shadow");
    std::fs::write(&secret, b"root:secret").unwrap();
    std::fs::write(allowed.join("ok.bin"), b"fine").unwrap();
    std::os::unix::fs::symlink(&secret, allowed.join("link.bin")).unwrap();
    let (dest, partial) = dest(&tmp);

    let err = limited(DownloadLimits::default()).fetch(&local(&allowed.join("ok.bin"), b"fine"), &dest).await;
    assert!(
        matches!(&err, Err(DownloadError::NotAllowed { reason, .. }) if reason.contains("file:// URLs are off")),
        "{err:?}"
    );

    let confined = limited(file_dirs(&[&allowed]));
    confined.fetch(&local(&allowed.join("ok.bin"), b"fine"), &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"fine");
    std::fs::remove_file(&dest).unwrap();
    for path in [secret.clone(), allowed.join("link.bin"), allowed.join("../etc/shadow")] {
        // Even with the right sha256 and size, and nothing about the file is revealed.
        let err = confined.fetch(&local(&path, b"root:secret"), &dest).await.unwrap_err();
        match &err {
            DownloadError::NotAllowed { reason, .. } => {
                assert!(reason.contains("in none of [limits] file_dirs"), "{err}")
            }
            other => panic!("{} was not refused: {other}", path.display()),
        }
        assert!(!err.to_string().contains(&sha256(b"root:secret")), "{err}");
        assert!(!dest.exists() && !partial.exists());
    }
}

#[tokio::test]
async fn fifos_and_devices_are_refused_without_reading() {
    let tmp = TempDir::new().unwrap();
    let fifo = tmp.path().join("pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (dest, _) = dest(&tmp);
    let limits = file_dirs(&[tmp.path(), Path::new("/dev")]);
    let big = Artifact { size: 1 << 30, ..local(&fifo, b"") };
    let unbounded = limited(DownloadLimits { max_artifact: u64::MAX, ..limits.clone() });
    let fetch = unbounded.fetch(&big, &dest);
    let err = tokio::time::timeout(Duration::from_secs(20), fetch).await.expect("a FIFO must not hang").unwrap_err();
    assert!(matches!(&err, DownloadError::NotAllowed { reason, .. } if reason.contains("not a regular file")), "{err}");
    let zero = Artifact { size: 1 << 30, ..local(Path::new("/dev/zero"), b"") };
    let err = limited(DownloadLimits { max_artifact: u64::MAX, ..limits }).fetch(&zero, &dest).await.unwrap_err();
    assert!(matches!(&err, DownloadError::NotAllowed { reason, .. } if reason.contains("not a regular file")), "{err}");
}

#[tokio::test]
async fn an_artifact_larger_than_the_limit_is_refused_before_any_request() {
    let (server, artifact, _) = serving_payload();
    let tmp = TempDir::new().unwrap();
    let (dest, partial) = dest(&tmp);
    let limits = DownloadLimits { max_artifact: 1000, ..DownloadLimits::default() };
    let err = limited(limits).fetch(&artifact, &dest).await.unwrap_err();
    assert_eq!(err, DownloadError::TooLarge { url: artifact.url.clone(), size: artifact.size, max: 1000 });
    assert_eq!(server.request_count(), 0);
    assert!(!partial.exists());
}

#[tokio::test]
async fn urls_and_redirects_outside_the_allowed_prefixes_are_refused() {
    let (server, artifact, bytes) = serving_payload();
    let other = ArtifactServer::start();
    other.put("/app.bin", bytes.clone());
    let tmp = TempDir::new().unwrap();
    let (dest, _) = dest(&tmp);
    let limits = DownloadLimits { url_prefixes: vec![server.url("/")], ..DownloadLimits::default() };
    let outside = Artifact { url: other.url("/app.bin"), ..artifact.clone() };
    let err = limited(limits.clone()).fetch(&outside, &dest).await.unwrap_err();
    assert!(matches!(&err, DownloadError::NotAllowed { reason, .. } if reason.contains("url_prefixes")), "{err}");
    assert_eq!(other.request_count(), 0);

    server.fail_next(1, Fault::Redirect(other.url("/app.bin")));
    let err = limited(limits.clone()).fetch(&artifact, &dest).await.unwrap_err();
    let text = error_chain(&err);
    assert!(text.contains("outside [limits] url_prefixes"), "{text}");
    assert_eq!(other.request_count(), 0, "the redirect was not followed");

    // A redirect within the prefixes is followed.
    server.put("/moved.bin", bytes.clone());
    server.fail_next(1, Fault::Redirect(server.url("/moved.bin")));
    limited(limits).fetch(&artifact, &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
}

#[tokio::test]
async fn a_trickling_server_is_cut_by_the_minimum_rate_and_by_the_deadline() {
    let (server, artifact, bytes) = serving_payload();
    let tmp = TempDir::new().unwrap();
    let (dest, _) = dest(&tmp);
    server.fail_always(Fault::Trickle(Duration::from_millis(20)));
    let slow = Pace { deadline: None, min_rate: 10_000, window: Duration::from_millis(500) };
    let err = fetcher(1).paced(slow).fetch(&artifact, &dest).await.unwrap_err();
    let text = error_chain(&err);
    assert!(text.contains("below the minimum rate of 10000 bytes/s"), "{text}");

    let started = std::time::Instant::now();
    let deadline = Pace { deadline: Some(Duration::from_secs(1)), ..Pace::default() };
    let err = fetcher(50).paced(deadline).fetch(&artifact, &dest).await.unwrap_err();
    assert_eq!(err, DownloadError::Deadline { url: artifact.url.clone(), after: Duration::from_secs(1) });
    assert!(started.elapsed() < Duration::from_secs(10), "cut after {:?}", started.elapsed());
    server.clear_faults();
    fetcher(1).fetch(&artifact, &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes, "resumed after the trickle, verified");
}

/// An https server of the test's own CA: `openssl s_server -WWW` serving `dir`.
struct TlsServer {
    child: std::process::Child,
    port: u16,
}

impl TlsServer {
    fn start(dir: &Path, cert: &baton_tests::secure::Cert) -> TlsServer {
        let port = baton_tests::zk::free_port();
        let child = std::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-WWW", "-accept", &port.to_string(), "-cert"])
            .arg(&cert.cert)
            .arg("-key")
            .arg(&cert.key)
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl s_server");
        baton_tests::eventually("openssl s_server to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        });
        TlsServer { child, port }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn https_from_an_internal_ca_needs_its_bundle() {
    let pki = baton_tests::secure::Pki::new();
    let cert = pki.issue("artifacts");
    let served = TempDir::new().unwrap();
    let bytes = payload();
    std::fs::write(served.path().join("app.bin"), &bytes).unwrap();
    let server = TlsServer::start(served.path(), &cert);
    let art = artifact(format!("https://localhost:{}/app.bin", server.port), &bytes, ArtifactFormat::File);
    let tmp = TempDir::new().unwrap();
    let (dest, _) = dest(&tmp);
    let err = fetcher(1).fetch(&art, &dest).await.unwrap_err();
    assert!(error_chain(&err).to_lowercase().contains("certificate"), "{}", error_chain(&err));
    let roots = baton_sidecar::host::download::read_ca_bundle(&pki.ca()).unwrap();
    fetcher(1).with_roots(roots).fetch(&art, &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    let err = baton_sidecar::host::download::read_ca_bundle(&cert.key).unwrap_err();
    assert!(err.contains("holds no certificate") || err.contains("not a PEM bundle"), "{err}");
}
