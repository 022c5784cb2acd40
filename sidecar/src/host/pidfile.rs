//! `<service dir>/service.pid`: which process runs the service, from which release.
//!
//! Written atomically (a temporary file renamed into place) whenever the sidecar
//! spawns the service, removed when it stops it on purpose, and read by a restarted
//! sidecar to adopt the running service instead of starting a second one. The file is
//! JSON and local to the machine: `{"pid":4242,"pgid":4242,"version":"1.4.0",
//! "release_dir":"/var/lib/baton/api/releases/1.4.0","start_time":123456}`.

use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The file name inside the service directory.
pub const FILE_NAME: &str = "service.pid";

/// A running service process as the sidecar recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidRecord {
    /// The process id of the service (the process the sidecar spawned).
    pub pid: u32,
    /// Its process group (the same as `pid`: it leads its own group).
    pub pgid: i32,
    /// The version it runs.
    pub version: String,
    /// The release directory it was started from.
    pub release_dir: PathBuf,
    /// When it started (clock ticks since boot, from `/proc`), to tell it from a later
    /// process that reused the pid.
    #[serde(default)]
    pub start_time: Option<u64>,
}

impl PidRecord {
    /// A record for `pid`, just spawned as the leader of its own group.
    pub fn new(pid: u32, version: &str, release_dir: &Path) -> Self {
        let start_time = crate::host::process::start_time(pid as i32);
        PidRecord { pid, pgid: pid as i32, version: version.into(), release_dir: canonical(release_dir), start_time }
    }

    /// Whether the recorded process still runs (and is the same process).
    pub fn is_alive(&self) -> bool {
        let pid = self.pid as i32;
        let same = match (self.start_time, crate::host::process::start_time(pid)) {
            (Some(recorded), Some(now)) => recorded == now,
            _ => true,
        };
        same && crate::host::process::alive(pid)
    }

    /// Whether it runs `version` from `release_dir` (compared with symbolic links resolved,
    /// so a `current` link and the directory it points to are the same release).
    pub fn runs(&self, release_dir: &Path, version: &str) -> bool {
        self.version == version && canonical(&self.release_dir) == canonical(release_dir)
    }
}

/// `path` with symbolic links resolved, or as given when it cannot be.
fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Writes `record` to `path` atomically.
pub fn write(path: &Path, record: &PidRecord) -> io::Result<()> {
    let tmp = path.with_extension("pid.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec(record).map_err(io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Reads the record at `path`: `None` when there is none. A file that cannot be
/// decoded is an error of kind `InvalidData`.
pub fn read(path: &Path) -> io::Result<Option<PidRecord>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map(Some).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes the record at `path`, if any.
pub fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_removal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        assert_eq!(read(&path).unwrap(), None);
        let release = dir.path().join("releases/1.0.0");
        std::fs::create_dir_all(&release).unwrap();
        std::os::unix::fs::symlink(&release, dir.path().join("current")).unwrap();
        let record = PidRecord::new(std::process::id(), "1.0.0", &dir.path().join("current"));
        write(&path, &record).unwrap();
        assert_eq!(read(&path).unwrap(), Some(record.clone()));
        assert!(record.is_alive());
        assert!(record.runs(&release, "1.0.0"));
        assert!(record.runs(&dir.path().join("current"), "1.0.0"));
        assert!(!record.runs(&release, "1.0.1"));
        assert!(!record.runs(dir.path(), "1.0.0"));
        remove(&path).unwrap();
        remove(&path).unwrap();
        assert_eq!(read(&path).unwrap(), None);
    }

    #[test]
    fn a_reused_pid_is_not_the_recorded_process() {
        let mut record = PidRecord::new(std::process::id(), "1", Path::new("/r"));
        record.start_time = record.start_time.map(|t| t + 1);
        assert!(!record.is_alive() || record.start_time.is_none());
    }

    #[test]
    fn garbage_is_invalid_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, "4242\n").unwrap();
        assert_eq!(read(&path).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
