//! Unpacking a verified artifact into a release directory.
//!
//! A tarball is unpacked entry by entry with these rules, so nothing it holds can
//! write or point outside the directory:
//! - paths must be relative and free of `..`; `.` components are ignored;
//! - no entry may be created through a symlink (every parent is a real directory);
//! - a symlink's target must be relative, may climb with leading `..` components no
//!   higher than the directory, and then only descend (`../lib/x` is fine, `a/../b`
//!   is not), so whatever symlinks it passes through, it stays inside;
//! - a hard link must name a regular file unpacked earlier;
//! - device files, fifos and other special entries are refused.
//!
//! - names and link targets with control characters are refused;
//! - at most `max_entries` entries and `max_bytes` unpacked bytes ([`UnpackLimits`]);
//!   bytes are counted as they are written, so a sparse entry counts by the size it
//!   expands to, whatever its header claims.
//!
//! Directories are created 0755 (so a release can always be pruned); files keep their
//! permission bits without setuid, setgid, sticky, group-write and world-write
//! ([`file_mode`]). Files are created with `O_NOFOLLOW | O_CREAT | O_EXCL`.
//!
//! A tarball is read in one streamed pass (gzip, then tar, then the files), and made
//! durable at the end with one `syncfs` of the directory's filesystem rather than an
//! fsync per file: the caller renames the directory into place only after this
//! returns, so a crash before that leaves a temporary directory that is removed, and
//! one fsync barrier replaces thousands.
//!
//! A [`ArtifactFormat::File`] artifact is installed as one executable file: a hard
//! link to the verified download (no copy; a copy only where a link is impossible),
//! made 0755 and fsynced.

use flate2::read::GzDecoder;
use std::fs;
use std::io::{self, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use tar::EntryType;
use znode_schema::ArtifactFormat;

/// Bounds on what one artifact may unpack into (`[limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Bytes written, all files together (a sparse entry counts by the bytes it
    /// expands to, holes included).
    pub max_bytes: u64,
    /// Entries of the tarball (every kind, directories and links included).
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    /// 16 GiB and 100,000 entries.
    fn default() -> Self {
        UnpackLimits { max_bytes: 16 << 30, max_entries: 100_000 }
    }
}

/// Why a tarball entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The path is absolute.
    #[error("absolute paths are not allowed")]
    AbsolutePath,
    /// The path contains a `..` component.
    #[error("`..` components are not allowed")]
    ParentDir,
    /// The path is empty.
    #[error("the path is empty")]
    EmptyPath,
    /// A parent of the path is a symlink.
    #[error("it would be created through a symlink")]
    ThroughSymlink,
    /// A symlink's target is absolute, climbs out of the directory, or climbs after descending.
    #[error("its link target {target:?} leaves the release directory")]
    LinkEscapes { target: String },
    /// A hard link's target is not a regular file unpacked earlier.
    #[error("its hard link target {target:?} is not a regular file inside the release")]
    BadHardLink { target: String },
    /// A device file, fifo or other special entry.
    #[error("{kind} entries are not allowed")]
    SpecialFile { kind: String },
    /// The name (or a link target) holds a control character (a newline, ESC…),
    /// which would forge lines in logs or escape sequences on a terminal.
    #[error("its name or link target holds the control character {0:?}")]
    ControlCharacter(char),
    /// Unpacking it would write more than the largest unpacked size.
    #[error("the archive unpacks to more than {limit} bytes (the largest unpacked size, [limits] max_unpacked_size)")]
    TooLarge { limit: u64 },
    /// The archive holds more entries than allowed.
    #[error("the archive holds more than {limit} entries ([limits] max_entries)")]
    TooManyEntries { limit: u64 },
}

/// Why unpacking failed. On error the target directory may hold part of the archive:
/// unpack into a temporary directory and remove it on failure.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// An entry of the tarball is unsafe.
    #[error("failed to unpack entry {entry:?}: {reason}")]
    Refused { entry: String, reason: Refusal },
    /// The target directory exists and is not empty.
    #[error("failed to unpack into {}: the directory is not empty", dir.display())]
    NotEmpty { dir: PathBuf },
    /// The artifact is not a readable gzip-compressed tarball.
    #[error("failed to read archive {}: {source}", path.display())]
    Archive {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Creating or writing a file or directory failed.
    #[error("failed to write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl PartialEq for UnpackError {
    /// Compares errors for tests; I/O errors compare by path and [`io::ErrorKind`].
    fn eq(&self, other: &Self) -> bool {
        use UnpackError::*;
        match (self, other) {
            (Refused { entry: a, reason: b }, Refused { entry: x, reason: y }) => a == x && b == y,
            (NotEmpty { dir: a }, NotEmpty { dir: x }) => a == x,
            (Archive { path: a, source: b }, Archive { path: x, source: y })
            | (Io { path: a, source: b }, Io { path: x, source: y }) => a == x && b.kind() == y.kind(),
            _ => false,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io { path: path.to_path_buf(), source }
}

/// Unpacks a verified artifact into `dir` (which must not exist yet or be empty).
/// A tar.gz is unpacked with the rules of the [module docs](self); a `File` artifact
/// is installed as a single executable file (mode 0755) named after the URL's last
/// path segment ([`file_name_from_url`]).
pub fn unpack(
    format: ArtifactFormat,
    artifact_file: &Path,
    url: &str,
    dir: &Path,
    limits: &UnpackLimits,
) -> Result<(), UnpackError> {
    prepare_dir(dir)?;
    match format {
        ArtifactFormat::TarGz => {
            unpack_tar_gz(artifact_file, dir, limits)?;
            sync_filesystem(dir)
        }
        ArtifactFormat::File => {
            install_file(artifact_file, &dir.join(file_name_from_url(url)))?;
            sync_dir(dir)
        }
    }
}

fn prepare_dir(dir: &Path) -> Result<(), UnpackError> {
    match fs::read_dir(dir).map(|mut entries| entries.next().is_none()) {
        Ok(true) => Ok(()),
        Ok(false) => Err(UnpackError::NotEmpty { dir: dir.to_path_buf() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir_all(dir).map_err(io_err(dir)),
        Err(e) => Err(io_err(dir)(e)),
    }
}

/// The file name a `File` artifact gets: the URL's last path segment with characters
/// other than ASCII letters, digits and `._+-` replaced by `_` and leading dots
/// dropped; `artifact` when nothing is left.
pub fn file_name_from_url(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let last = path.rsplit('/').next().unwrap_or_default();
    let name: String =
        last.chars().take(200).map(|c| if c.is_ascii_alphanumeric() || "._+-".contains(c) { c } else { '_' }).collect();
    let name = name.trim_start_matches('.');
    if name.is_empty() { "artifact".to_string() } else { name.to_string() }
}

/// Links (or, across filesystems, copies) the verified download to `dest`, mode 0755,
/// fsynced. The download is removed by the caller, so the link is the only name left;
/// nothing writes to either name afterwards.
fn install_file(source: &Path, dest: &Path) -> Result<(), UnpackError> {
    let file = match fs::hard_link(source, dest) {
        Ok(()) => fs::File::open(dest).map_err(io_err(dest))?,
        Err(e) if e.raw_os_error() == Some(nix::libc::EXDEV) || e.kind() == io::ErrorKind::PermissionDenied => {
            tracing::debug!(source = %source.display(), error = %e, "cannot link the download; copying it");
            let mut input =
                fs::File::open(source).map_err(|e| UnpackError::Archive { path: source.to_path_buf(), source: e })?;
            write_file(&mut input, dest, 0o755, &mut vec![0; COPY_BUFFER], &mut Budget::unlimited())?
        }
        Err(e) => return Err(io_err(dest)(e)),
    };
    file.set_permissions(fs::Permissions::from_mode(0o755)).map_err(io_err(dest))?;
    file.sync_all().map_err(io_err(dest))
}

/// The copy buffer: large enough that a big file takes few syscalls.
const COPY_BUFFER: usize = 256 * 1024;

/// Bytes a file may still take: what is left of the largest unpacked size.
#[derive(Debug)]
struct Budget {
    left: u64,
    limit: u64,
}

impl Budget {
    fn unlimited() -> Budget {
        Budget { left: u64::MAX, limit: u64::MAX }
    }
}

/// Creates `dest` (which must not exist, never through a symlink) with `mode` and
/// copies `input` into it through `buf`, counting every byte against `budget`. Not
/// fsynced: see the [module docs](self).
fn write_file(
    input: &mut impl io::Read,
    dest: &Path,
    mode: u32,
    buf: &mut [u8],
    budget: &mut Budget,
) -> Result<fs::File, UnpackError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .mode(0o600)
        .open(dest)
        .map_err(io_err(dest))?;
    loop {
        let n = match input.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(dest)(e)),
        };
        budget.left = budget.left.checked_sub(n as u64).ok_or_else(|| UnpackError::Refused {
            entry: dest.display().to_string(),
            reason: Refusal::TooLarge { limit: budget.limit },
        })?;
        file.write_all(&buf[..n]).map_err(io_err(dest))?;
    }
    file.set_permissions(fs::Permissions::from_mode(mode)).map_err(io_err(dest))?;
    Ok(file)
}

/// The permission bits an unpacked file gets: the archive's, without setuid, setgid,
/// sticky, and without group or world write (root runs what is unpacked).
pub fn file_mode(archived: u32) -> u32 {
    archived & 0o755
}

/// The first control character of `text`, if any.
fn control_char(text: &Path) -> Option<char> {
    use std::os::unix::ffi::OsStrExt;
    text.as_os_str().as_bytes().iter().map(|&b| b as char).find(|c| c.is_ascii_control())
}

fn unpack_tar_gz(artifact: &Path, dir: &Path, limits: &UnpackLimits) -> Result<(), UnpackError> {
    let archive_err = |source| UnpackError::Archive { path: artifact.to_path_buf(), source };
    let file = fs::File::open(artifact).map_err(archive_err)?;
    let mut archive = tar::Archive::new(GzDecoder::new(BufReader::with_capacity(COPY_BUFFER, file)));
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut budget = Budget { left: limits.max_bytes, limit: limits.max_bytes };
    for (n, entry) in archive.entries().map_err(archive_err)?.enumerate() {
        let mut entry = entry.map_err(archive_err)?;
        let raw = entry.path().map_err(archive_err)?.into_owned();
        let refused =
            |reason| UnpackError::Refused { entry: raw.display().to_string().escape_debug().to_string(), reason };
        if n as u64 >= limits.max_entries {
            return Err(refused(Refusal::TooManyEntries { limit: limits.max_entries }));
        }
        if let Some(c) = control_char(&raw) {
            return Err(refused(Refusal::ControlCharacter(c)));
        }
        if let Some(c) = entry.link_name().ok().flatten().and_then(|l| control_char(&l)) {
            return Err(refused(Refusal::ControlCharacter(c)));
        }
        let rel = relative_path(&raw).map_err(refused)?;
        let kind = entry.header().entry_type();
        if rel.as_os_str().is_empty() {
            if kind.is_dir() {
                continue; // "./": the directory itself
            }
            return Err(refused(Refusal::EmptyPath));
        }
        check_parents(dir, &rel).map_err(refused)?;
        let dest = dir.join(&rel);
        match kind {
            EntryType::Directory => make_dir(&dest, refused)?,
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                make_parent(&dest)?;
                remove_non_dir(&dest)?;
                let mode = file_mode(entry.header().mode().unwrap_or(0o644));
                write_file(&mut entry, &dest, mode, &mut buf, &mut budget)?;
            }
            EntryType::Symlink => {
                let target = entry.link_name().map_err(archive_err)?.unwrap_or_default().into_owned();
                check_symlink_target(&rel, &target).map_err(refused)?;
                make_parent(&dest)?;
                remove_non_dir(&dest)?;
                std::os::unix::fs::symlink(&target, &dest).map_err(io_err(&dest))?;
            }
            EntryType::Link => {
                let target = entry.link_name().map_err(archive_err)?.unwrap_or_default().into_owned();
                let source = hard_link_source(dir, &target).map_err(refused)?;
                make_parent(&dest)?;
                remove_non_dir(&dest)?;
                fs::hard_link(&source, &dest).map_err(io_err(&dest))?;
            }
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink => {}
            other => return Err(refused(Refusal::SpecialFile { kind: kind_name(other) })),
        }
    }
    Ok(())
}

fn kind_name(kind: EntryType) -> String {
    match kind {
        EntryType::Char => "character device".into(),
        EntryType::Block => "block device".into(),
        EntryType::Fifo => "fifo".into(),
        other => format!("{other:?}"),
    }
}

/// The path without `.` components; refuses absolute paths and `..`.
fn relative_path(path: &Path) -> Result<PathBuf, Refusal> {
    let mut rel = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => return Err(Refusal::AbsolutePath),
            Component::ParentDir => return Err(Refusal::ParentDir),
            Component::CurDir => {}
            Component::Normal(name) => rel.push(name),
        }
    }
    Ok(rel)
}

/// Refuses `rel` when one of its parents under `dir` exists as a symlink.
fn check_parents(dir: &Path, rel: &Path) -> Result<(), Refusal> {
    let mut at = dir.to_path_buf();
    let parents: Vec<_> = rel.components().collect();
    for name in &parents[..parents.len().saturating_sub(1)] {
        at.push(name);
        match fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => return Err(Refusal::ThroughSymlink),
            Ok(_) => {}
            Err(_) => return Ok(()), // missing: created as a real directory
        }
    }
    Ok(())
}

/// A symlink at `rel` may point to `target` when it is relative, its leading `..`
/// components climb no higher than the release directory, and the rest only descends.
fn check_symlink_target(rel: &Path, target: &Path) -> Result<(), Refusal> {
    let escapes = || Refusal::LinkEscapes { target: target.display().to_string() };
    let mut depth = rel.components().count().saturating_sub(1);
    let mut descended = false;
    for component in target.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => return Err(escapes()),
            Component::CurDir => {}
            Component::ParentDir if descended => return Err(escapes()),
            Component::ParentDir => depth = depth.checked_sub(1).ok_or_else(escapes)?,
            Component::Normal(_) => descended = true,
        }
    }
    if target.as_os_str().is_empty() { Err(escapes()) } else { Ok(()) }
}

/// The path of a hard link's target: a regular file already unpacked.
fn hard_link_source(dir: &Path, target: &Path) -> Result<PathBuf, Refusal> {
    let bad = || Refusal::BadHardLink { target: target.display().to_string() };
    let rel = relative_path(target).map_err(|_| bad())?;
    if rel.as_os_str().is_empty() || check_parents(dir, &rel).is_err() {
        return Err(bad());
    }
    let source = dir.join(rel);
    match fs::symlink_metadata(&source) {
        Ok(meta) if meta.file_type().is_file() => Ok(source),
        _ => Err(bad()),
    }
}

fn make_dir(dest: &Path, refused: impl FnOnce(Refusal) -> UnpackError) -> Result<(), UnpackError> {
    match fs::symlink_metadata(dest) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(meta) if meta.file_type().is_symlink() => Err(refused(Refusal::ThroughSymlink)),
        _ => fs::DirBuilder::new().recursive(true).mode(0o755).create(dest).map_err(io_err(dest)),
    }
}

fn make_parent(dest: &Path) -> Result<(), UnpackError> {
    match dest.parent() {
        Some(parent) => fs::DirBuilder::new().recursive(true).mode(0o755).create(parent).map_err(io_err(parent)),
        None => Ok(()),
    }
}

/// A later entry replaces an earlier file or link of the same path, as tar does.
fn remove_non_dir(dest: &Path) -> Result<(), UnpackError> {
    match fs::symlink_metadata(dest) {
        Ok(meta) if !meta.is_dir() => fs::remove_file(dest).map_err(io_err(dest)),
        _ => Ok(()),
    }
}

/// Makes everything written under `dir` durable: one `syncfs` of its filesystem.
fn sync_filesystem(dir: &Path) -> Result<(), UnpackError> {
    use std::os::fd::AsRawFd;
    let handle = fs::File::open(dir).map_err(io_err(dir))?;
    nix::unistd::syncfs(handle.as_raw_fd()).map_err(|errno| io_err(dir)(errno.into()))
}

fn sync_dir(dir: &Path) -> Result<(), UnpackError> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

#[cfg(test)]
mod tests;
