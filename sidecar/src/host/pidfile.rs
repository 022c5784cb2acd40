//! `<service dir>/service.pid`: which process runs the service, from which release.
//!
//! Written atomically (a temporary file renamed into place) whenever the sidecar
//! spawns the service, removed when it stops it on purpose, and read by a restarted
//! sidecar to adopt the running service instead of starting a second one. The file is
//! JSON and local to the machine: `{"pid":4242,"pgid":4242,"version":"1.4.0",
//! "release_dir":"/var/lib/baton/api/releases/1.4.0","start_time":123456}`.

use serde::{Deserialize, Serialize};
use std::io;
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
    /// The boot it started in (`/proc/sys/kernel/random/boot_id`). Absent in records
    /// written by older sidecars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
}

impl PidRecord {
    /// A record for `pid`, just spawned as the leader of its own group.
    pub fn new(pid: u32, version: &str, release_dir: &Path) -> Self {
        let start_time = crate::host::process::start_time(pid as i32);
        let boot_id = crate::host::process::boot_id();
        let release_dir = canonical(release_dir);
        PidRecord { pid, pgid: pid as i32, version: version.into(), release_dir, start_time, boot_id }
    }

    /// Whether the recorded process still runs and is provably the one recorded: the
    /// file is not trusted, since the sidecar signals the group it names. The record
    /// must name a start time equal to the live process's, the boot it was written in
    /// (when it names one), and a group that the process leads. Otherwise (a forged
    /// or stale record, a reused pid, no `/proc` to check against) it is not adopted
    /// and nothing is signalled.
    pub fn is_alive(&self) -> bool {
        use crate::host::process;
        let pid = self.pid as i32;
        if pid < 2 || self.pgid != pid {
            return false;
        }
        let same_start = matches!((self.start_time, process::start_time(pid)), (Some(a), Some(b)) if a == b);
        let same_boot = self.boot_id.is_none() || self.boot_id == process::boot_id();
        let leads_group = process::group_of(pid) == Some(self.pgid);
        same_start && same_boot && leads_group && process::alive(pid)
    }

    /// The same process, now running `version` from `release_dir` (after a reload).
    pub fn reloaded(self, version: &str, release_dir: &Path) -> Self {
        PidRecord { version: version.into(), release_dir: canonical(release_dir), ..self }
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
    crate::safefs::write_atomic(path, &tmp, &serde_json::to_vec(record).map_err(io::Error::other)?, true)
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
        let mut child = leader();
        let record = PidRecord::new(child.id(), "1.0.0", &dir.path().join("current"));
        write(&path, &record).unwrap();
        assert_eq!(read(&path).unwrap(), Some(record.clone()));
        assert!(record.is_alive());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!record.is_alive(), "gone once it exited");
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
        assert!(!record.is_alive());
    }

    /// A group leader of its own, as the sidecar spawns services.
    fn leader() -> std::process::Child {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("sleep").arg("30").process_group(0).spawn().unwrap()
    }

    #[test]
    fn forged_records_are_not_the_recorded_process() {
        let mut child = leader();
        let genuine = PidRecord::new(child.id(), "1", Path::new("/r"));
        assert!(genuine.is_alive(), "{genuine:?}");
        let forged = [
            PidRecord { start_time: None, ..genuine.clone() },
            PidRecord { boot_id: Some("another-boot".into()), ..genuine.clone() },
            // This test's own group, which the child does not lead.
            PidRecord { pgid: nix::unistd::getpgrp().as_raw(), ..genuine.clone() },
            PidRecord { pid: 1, pgid: 1, ..genuine.clone() },
        ];
        for record in forged {
            assert!(!record.is_alive(), "{record:?} must not count as the recorded process");
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn garbage_is_invalid_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, "4242\n").unwrap();
        assert_eq!(read(&path).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
