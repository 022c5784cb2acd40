//! `<service dir>/service.log`: the service's stdout and stderr, bounded in size.
//!
//! The service writes straight to the file (opened in append mode), so its output
//! survives a sidecar restart and an adopted service keeps logging. Rotation is
//! copy-and-truncate: when the file passes its size limit the sidecar copies it to
//! `service.log.1` (shifting older copies up to `service.log.<keep>`) and truncates it;
//! the service's appends continue at the new end. Lines written between the copy and
//! the truncation are lost, the price of never interrupting the service.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The file name inside the service directory.
pub const FILE_NAME: &str = "service.log";
/// Default size at which the log is rotated: 10 MiB.
pub const MAX_BYTES: u64 = 10 * 1024 * 1024;
/// Default number of rotated copies kept.
pub const KEEP: usize = 3;

/// A size-bounded log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
}

impl LogFile {
    /// `service.log` in `dir`, rotated at 10 MiB, 3 copies kept.
    pub fn in_dir(dir: &Path) -> Self {
        LogFile { path: dir.join(FILE_NAME), max_bytes: MAX_BYTES, keep: KEEP }
    }

    /// The same file with other limits.
    #[cfg(test)]
    pub fn with_limits(self, max_bytes: u64, keep: usize) -> Self {
        LogFile { max_bytes, keep: keep.max(1), ..self }
    }

    /// The path of the live file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the file for appending (creating it) as a child's stdout and stderr.
    pub fn stdio(&self) -> io::Result<(Stdio, Stdio)> {
        let file = crate::safefs::append(&self.path)?;
        Ok((Stdio::from(file.try_clone()?), Stdio::from(file)))
    }

    /// The current length of the live file (0 when it does not exist).
    pub fn len(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// Whether the live file is empty or missing.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rotates when the live file is larger than the limit; returns whether it did.
    pub fn rotate_if_needed(&self) -> io::Result<bool> {
        if self.len() <= self.max_bytes {
            return Ok(false);
        }
        for n in (1..self.keep).rev() {
            let from = self.copy(n);
            if from.exists() {
                std::fs::rename(&from, self.copy(n + 1))?;
            }
        }
        std::fs::copy(&self.path, self.copy(1))?;
        File::options().write(true).open(&self.path)?.set_len(0)?;
        Ok(true)
    }

    /// The path of rotated copy `n` (`service.log.<n>`).
    pub fn copy(&self, n: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        name.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn rotation_keeps_bounded_copies_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFile::in_dir(dir.path()).with_limits(10, 2);
        // The writer a service would hold: append mode, never reopened.
        let mut writer = std::fs::OpenOptions::new().create(true).append(true).open(log.path()).unwrap();
        for round in 0..4 {
            writer.write_all(format!("round {round} output\n").as_bytes()).unwrap();
            assert!(log.rotate_if_needed().unwrap());
            assert!(log.is_empty());
        }
        assert!(!log.rotate_if_needed().unwrap());
        writer.write_all(b"after\n").unwrap();
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(log.path().into()), "after\n");
        assert_eq!(read(log.copy(1)), "round 3 output\n");
        assert_eq!(read(log.copy(2)), "round 2 output\n");
        assert!(!log.copy(3).exists());
    }
}
