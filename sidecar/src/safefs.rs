//! Files in the data dir, written without following symbolic links.
//!
//! The sidecar runs as root and writes into its data dir: a symlink planted there
//! (`state.json.tmp -> /etc/shadow`) must never redirect a write. Temporary files are
//! removed (the link itself, not its target) and created anew with `O_EXCL |
//! O_NOFOLLOW`; files opened for appending refuse a symlink (`O_NOFOLLOW`: ELOOP).
//! The data dir itself must belong to the sidecar's user and be writable by nobody
//! else, or anyone who can write it could plant such links or forge pid files.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Creates `path` anew for writing: an existing file or symlink at `path` is removed
/// first, and the creation fails rather than follow a link created meanwhile.
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    OpenOptions::new().write(true).create_new(true).custom_flags(nix::libc::O_NOFOLLOW).mode(mode).open(path)
}

/// Opens `path` for appending, creating it; refuses a symlink.
pub fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).custom_flags(nix::libc::O_NOFOLLOW).mode(0o644).open(path)
}

/// Writes `bytes` to `path` atomically: a new temporary file beside it (`<path>.tmp`
/// unless `tmp` is given), fsynced when `durable`, renamed over `path`.
pub fn write_atomic(path: &Path, tmp: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let mut file = create_new(tmp, 0o644)?;
    file.write_all(bytes)?;
    if durable {
        file.sync_all()?;
    }
    std::fs::rename(tmp, path)
}

/// Why the data dir is refused.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// It cannot be read.
    #[error("cannot use data dir {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    /// Another user owns it.
    #[error("data dir {path} belongs to uid {owner}, not to the sidecar's user (uid {uid}): chown it")]
    Owner { path: String, owner: u32, uid: u32 },
    /// Group or others may write it.
    #[error(
        "data dir {path} has mode {mode:04o}: group or others may write it, and could plant links or forge pid files; chmod go-w it"
    )]
    Mode { path: String, mode: u32 },
}

/// Checks that `dir` belongs to this process's effective user and is not writable by
/// group or others.
pub fn check_data_dir(dir: &Path) -> Result<(), DataDirError> {
    let path = dir.display().to_string();
    let meta = std::fs::metadata(dir).map_err(|source| DataDirError::Io { path: path.clone(), source })?;
    let uid = nix::unistd::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(DataDirError::Owner { path, owner: meta.uid(), uid });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(DataDirError::Mode { path, mode });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_planted_symlink_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, b"keep me").unwrap();
        let tmp = dir.path().join("state.json.tmp");
        std::os::unix::fs::symlink(&target, &tmp).unwrap();
        write_atomic(&dir.path().join("state.json"), &tmp, b"{}", true).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
        assert_eq!(std::fs::read(dir.path().join("state.json")).unwrap(), b"{}");
        let log = dir.path().join("service.log");
        std::os::unix::fs::symlink(&target, &log).unwrap();
        assert!(append(&log).is_err(), "appending through a symlink is refused");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    }

    #[test]
    fn a_data_dir_others_may_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        check_data_dir(dir.path()).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_data_dir(dir.path()).unwrap_err();
        assert!(matches!(err, DataDirError::Mode { mode: 0o777, .. }), "{err}");
        assert!(err.to_string().contains("chmod go-w"), "{err}");
    }
}
