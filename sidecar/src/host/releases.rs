//! The local releases of one service, under `<data_dir>/<service>/`:
//!
//! ```text
//! releases/<version>/          unpacked releases, complete ones only
//! releases/.tmp-<version>-<n>  a release being unpacked (removed by `open`)
//! releases/.trash-<version>-<n> a release being pruned (removed by `open`)
//! downloads/<version>/artifact[.partial]  downloads (a partial one is resumed)
//! artifacts/<version>          verified artifacts kept for peers (with [peers] only)
//! current -> releases/<version>  the active release, switched atomically
//! state.json                   {"active": "1.4.0", "previous": "1.3.0"}
//! ```
//!
//! # Guarantees
//! - A directory `releases/<version>` is always complete: it is unpacked under a
//!   temporary name, fsynced, and renamed into place. Versions never start with a dot,
//!   so temporary names are never mistaken for releases.
//! - `state.json` is written to a temporary file, fsynced and renamed, and the
//!   directory fsynced: it is the old content or the new one, never a mix.
//! - `state.json` is the truth about the active release; `current` follows it.
//!   [`ReleaseStore::activate`] writes the state first, then switches `current`;
//!   [`ReleaseStore::open`] points `current` at the active release if a crash came
//!   between the two.
//!
//! # Assumptions
//! One process uses a data directory at a time, and installs a given version from one
//! task at a time.

mod error;

pub use error::{InstallError, StoreError};

use crate::host::download::{Fetcher, ReleaseId, Sources};
use crate::host::unpack::{UnpackLimits, unpack};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use znode_schema::{Artifact, validate_service, validate_version};

const RELEASES: &str = "releases";
const DOWNLOADS: &str = "downloads";
const ARTIFACTS: &str = "artifacts";
const CURRENT: &str = "current";
const STATE: &str = "state.json";
const TMP_PREFIX: &str = ".tmp-";
const TRASH_PREFIX: &str = ".trash-";

/// What `state.json` records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalState {
    /// The release the service runs (or last ran).
    #[serde(default)]
    pub active: Option<String>,
    /// The release it ran before, the one a failed upgrade goes back to.
    #[serde(default)]
    pub previous: Option<String>,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// The local releases of one service.
#[derive(Debug, Clone)]
pub struct ReleaseStore {
    root: PathBuf,
    service: String,
    unpack_limits: UnpackLimits,
    sources: Option<std::sync::Arc<dyn Sources>>,
}

impl ReleaseStore {
    /// Opens (creating it if needed) the store of `service` under `data_dir`, and
    /// cleans what a crash may have left: temporary and half-pruned release
    /// directories, a temporary `state.json` or `current`, downloads of releases
    /// already installed. Partial downloads of other releases are kept for resume.
    pub fn open(data_dir: &Path, service: &str) -> Result<Self, StoreError> {
        validate_service(service)?;
        let store = ReleaseStore {
            root: data_dir.join(service),
            service: service.to_string(),
            unpack_limits: Default::default(),
            sources: None,
        };
        for dir in [store.root.join(RELEASES), store.root.join(DOWNLOADS)] {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        store.clean()?;
        store.repair_current()?;
        Ok(store)
    }

    /// This store, unpacking within `limits`.
    pub fn with_unpack_limits(mut self, limits: UnpackLimits) -> Self {
        self.unpack_limits = limits;
        self
    }

    /// This store, telling `sources` when a kept artifact is pruned.
    pub fn with_sources(mut self, sources: std::sync::Arc<dyn Sources>) -> Self {
        self.sources = Some(sources);
        self
    }

    /// Where the verified artifact of installed release `version` is kept for peers.
    pub fn kept_artifact(&self, version: &str) -> PathBuf {
        self.root.join(ARTIFACTS).join(version)
    }

    /// The installed releases whose artifact is kept for peers.
    pub fn kept_versions(&self) -> Vec<String> {
        let names = dir_names(&self.root.join(ARTIFACTS)).unwrap_or_default();
        names.into_iter().filter(|v| self.has(v)).collect()
    }

    /// The service this store holds.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// `<data_dir>/<service>`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory release `version` has when installed.
    pub fn release_dir(&self, version: &str) -> PathBuf {
        self.root.join(RELEASES).join(version)
    }

    /// The `current` symlink.
    pub fn current_link(&self) -> PathBuf {
        self.root.join(CURRENT)
    }

    /// Whether release `version` is installed (complete).
    pub fn has(&self, version: &str) -> bool {
        validate_version(version).is_ok() && self.release_dir(version).is_dir()
    }

    /// The installed versions, oldest install first.
    pub fn versions(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.root.join(RELEASES)) else { return Vec::new() };
        let mut found: Vec<(SystemTime, String)> = entries
            .filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().into_string().ok()?;
                let meta = e.metadata().ok().filter(|m| m.is_dir())?;
                validate_version(&name).ok()?;
                Some((meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), name))
            })
            .collect();
        found.sort();
        found.into_iter().map(|(_, name)| name).collect()
    }

    /// Where release `version`'s artifact is downloaded to.
    fn download_file(&self, version: &str) -> PathBuf {
        self.root.join(DOWNLOADS).join(version).join("artifact")
    }

    /// The partial download of release `version` (its size is the bytes so far).
    pub fn partial_download(&self, version: &str) -> PathBuf {
        crate::host::download::partial_path(&self.download_file(version))
    }

    /// Downloads (with `fetcher`), verifies (size, sha256, and the signature when the
    /// fetcher has trusted keys) and unpacks release `version` unless it is already
    /// installed, and returns its directory. Idempotent. A verified download
    /// left by an interrupted install is verified again from disk, not downloaded again.
    pub async fn install(
        &self,
        fetcher: &Fetcher,
        version: &str,
        artifact: &Artifact,
    ) -> Result<PathBuf, InstallError> {
        validate_version(version).map_err(StoreError::from)?;
        let dir = self.release_dir(version);
        if self.has(version) {
            return Ok(dir);
        }
        let file = self.download_file(version);
        let downloads = file.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&downloads).map_err(io_err(&downloads))?;
        if file.exists() {
            let partial = self.partial_download(version);
            fs::rename(&file, &partial).map_err(io_err(&partial))?;
        }
        let release = ReleaseId { service: self.service.clone(), version: version.to_string() };
        let fetched = fetcher.fetch_release(&release, artifact, &file).await;
        let fetched = fetched.map_err(|source| InstallError::Download { version: version.to_string(), source })?;
        if fetcher.trust().is_enforced() {
            let (trust, path, a, service, v) =
                (fetcher.trust().clone(), file.clone(), artifact.clone(), self.service.clone(), version.to_string());
            let checked = tokio::task::spawn_blocking(move || trust.check_file(&path, &a, &service, &v))
                .await
                .map_err(|e| StoreError::Io { path: file.clone(), source: io::Error::other(e) })?;
            if let Err(source) = checked {
                // The bytes are what ZooKeeper names, but not what a trusted key signed:
                // downloading them again would not help.
                if fetcher.sources().is_some() {
                    self.drop_artifact(fetcher.sources(), &release)?;
                }
                remove_dir_all(&downloads)?;
                return Err(InstallError::Signature { version: version.to_string(), source });
            }
        }
        if let Some(sources) = fetcher.sources() {
            // Verified (size, sha256, signature): other hosts may have it from here.
            self.keep_artifact(version, &file)?;
            sources.offer(&release, artifact, &self.kept_artifact(version));
        }
        drop(fetched); // the origin slot, once this host is a source
        let store = self.clone();
        let (version, artifact) = (version.to_string(), artifact.clone());
        let unpacked = tokio::task::spawn_blocking(move || store.unpack_into_place(&version, &artifact, &file))
            .await
            .map_err(|e| StoreError::Io { path: dir.clone(), source: io::Error::other(e) })?;
        if matches!(unpacked, Ok(()) | Err(InstallError::Unpack { .. })) {
            // Installed, or verified but refused: downloading it again would not help.
            remove_dir_all(&downloads)?;
        }
        if unpacked.is_err() && fetcher.sources().is_some() {
            self.drop_artifact(fetcher.sources(), &release)?;
        }
        unpacked.map(|()| dir)
    }

    /// Keeps the verified download `file` as `artifacts/<version>` (a hard link).
    fn keep_artifact(&self, version: &str, file: &Path) -> Result<(), StoreError> {
        let dir = self.root.join(ARTIFACTS);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let kept = self.kept_artifact(version);
        match fs::remove_file(&kept) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&kept)(e)),
            _ => {}
        }
        fs::hard_link(file, &kept).map_err(io_err(&kept))?;
        sync_dir(&dir)
    }

    /// Stops serving and deletes the kept artifact of `release`.
    fn drop_artifact(
        &self,
        sources: Option<&std::sync::Arc<dyn Sources>>,
        release: &ReleaseId,
    ) -> Result<(), StoreError> {
        if let Some(sources) = sources {
            sources.withdraw(release);
        }
        let kept = self.kept_artifact(&release.version);
        match fs::remove_file(&kept) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&kept)(e)),
            _ => Ok(()),
        }
    }

    /// Unpacks a verified artifact into a temporary directory and renames it into place.
    fn unpack_into_place(&self, version: &str, artifact: &Artifact, file: &Path) -> Result<(), InstallError> {
        let releases = self.root.join(RELEASES);
        let tmp = releases.join(format!("{TMP_PREFIX}{version}-{}", unique()));
        let result = unpack(artifact.format, file, &artifact.url, &tmp, &self.unpack_limits)
            .map_err(|source| InstallError::Unpack { version: version.to_string(), source })
            .and_then(|()| {
                // The install time, which `versions` and `prune` order by.
                let dir = fs::File::open(&tmp).map_err(io_err(&tmp))?;
                dir.set_modified(SystemTime::now()).map_err(io_err(&tmp))?;
                let dest = self.release_dir(version);
                match fs::rename(&tmp, &dest) {
                    Err(_) if self.has(version) => Ok(()), // installed meanwhile
                    other => other.map_err(io_err(&dest)),
                }?;
                sync_dir(&releases).map_err(InstallError::from)
            });
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    /// The local state; the default when `state.json` does not exist yet.
    pub fn state(&self) -> Result<LocalState, StoreError> {
        let path = self.root.join(STATE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::State { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(LocalState::default()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Makes installed release `version` the active one: `previous` becomes the old
    /// active release (unless it is `version` already), `state.json` is written
    /// atomically, then `current` is switched atomically.
    pub fn activate(&self, version: &str) -> Result<LocalState, StoreError> {
        validate_version(version)?;
        if !self.has(version) {
            return Err(StoreError::NotInstalled { version: version.to_string() });
        }
        let old = self.state()?;
        let previous = if old.active.as_deref() == Some(version) { old.previous } else { old.active };
        let state = LocalState { active: Some(version.to_string()), previous };
        self.write_state(&state)?;
        self.switch_current(version)?;
        let previous = state.previous.as_deref().unwrap_or("none");
        tracing::info!(root = %self.root.display(), version, previous, "release activated");
        Ok(state)
    }

    /// Records that no release of the store is active (the sidecar runs its installed
    /// binary again): the old active release becomes `previous`.
    pub fn deactivate(&self) -> Result<LocalState, StoreError> {
        let old = self.state()?;
        if old.active.is_none() {
            return Ok(old);
        }
        let state = LocalState { active: None, previous: old.active };
        self.write_state(&state)?;
        tracing::info!(root = %self.root.display(), "no release active");
        Ok(state)
    }

    /// Removes installed releases beyond the newest `keep` (by install time), never the
    /// active or the previous one; returns the removed versions, oldest first.
    pub fn prune(&self, keep: usize) -> Result<Vec<String>, StoreError> {
        let state = self.state()?;
        let protected = [state.active, state.previous];
        let versions = self.versions();
        let newest_kept = versions.len().saturating_sub(keep);
        let mut removed = Vec::new();
        for version in &versions[..newest_kept] {
            if protected.iter().any(|p| p.as_deref() == Some(version)) {
                continue;
            }
            self.remove_release(version)?;
            removed.push(version.clone());
        }
        Ok(removed)
    }

    /// Renames a release out of sight first, so a crash never leaves a half-removed
    /// directory under its version's name.
    fn remove_release(&self, version: &str) -> Result<(), StoreError> {
        let releases = self.root.join(RELEASES);
        let trash = releases.join(format!("{TRASH_PREFIX}{version}-{}", unique()));
        let dir = self.release_dir(version);
        fs::rename(&dir, &trash).map_err(io_err(&dir))?;
        sync_dir(&releases)?;
        remove_dir_all(&trash)?;
        remove_dir_all(&self.root.join(DOWNLOADS).join(version))?;
        let release = ReleaseId { service: self.service.clone(), version: version.to_string() };
        self.drop_artifact(self.sources.as_ref(), &release)?;
        tracing::info!(root = %self.root.display(), version, "release pruned");
        Ok(())
    }

    fn write_state(&self, state: &LocalState) -> Result<(), StoreError> {
        let path = self.root.join(STATE);
        let tmp = self.root.join(format!("{STATE}.tmp"));
        let mut json = serde_json::to_vec_pretty(state).map_err(|source| StoreError::State { path, source })?;
        json.push(b'\n');
        crate::safefs::write_atomic(&self.root.join(STATE), &tmp, &json, true).map_err(io_err(&tmp))?;
        sync_dir(&self.root)
    }

    fn switch_current(&self, version: &str) -> Result<(), StoreError> {
        let tmp = self.root.join(format!("{CURRENT}.tmp"));
        let _ = fs::remove_file(&tmp);
        let target = Path::new(RELEASES).join(version);
        std::os::unix::fs::symlink(&target, &tmp).map_err(io_err(&tmp))?;
        fs::rename(&tmp, self.current_link()).map_err(io_err(&tmp))?;
        sync_dir(&self.root)
    }

    /// Points `current` at the active release when a crash left it behind.
    fn repair_current(&self) -> Result<(), StoreError> {
        let Some(active) = self.state()?.active else { return Ok(()) };
        let wanted = Path::new(RELEASES).join(&active);
        let link = fs::read_link(self.current_link()).ok();
        if self.has(&active) && link.as_deref() != Some(&wanted) {
            tracing::warn!(root = %self.root.display(), version = %active, "repairing the current symlink");
            self.switch_current(&active)?;
        }
        Ok(())
    }

    fn clean(&self) -> Result<(), StoreError> {
        let releases = self.root.join(RELEASES);
        for name in dir_names(&releases)? {
            if name.starts_with(TMP_PREFIX) || name.starts_with(TRASH_PREFIX) {
                remove_dir_all(&releases.join(&name))?;
            }
        }
        let downloads = self.root.join(DOWNLOADS);
        for name in dir_names(&downloads)? {
            if self.has(&name) {
                remove_dir_all(&downloads.join(&name))?;
            }
        }
        let artifacts = self.root.join(ARTIFACTS);
        for name in dir_names(&artifacts).unwrap_or_default() {
            if !self.has(&name) {
                let path = artifacts.join(&name);
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&path)(e)),
                    _ => {}
                }
            }
        }
        for name in [format!("{STATE}.tmp"), format!("{CURRENT}.tmp")] {
            let path = self.root.join(name);
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&path)(e)),
                _ => {}
            }
        }
        Ok(())
    }
}

fn dir_names(dir: &Path) -> Result<Vec<String>, StoreError> {
    let entries = fs::read_dir(dir).map_err(io_err(dir))?;
    Ok(entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
}

fn remove_dir_all(dir: &Path) -> Result<(), StoreError> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(dir)(e)),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

/// A suffix no other temporary name of this store has.
fn unique() -> String {
    format!("{}-{:08x}", std::process::id(), rand::random::<u32>())
}

#[cfg(test)]
mod tests;
