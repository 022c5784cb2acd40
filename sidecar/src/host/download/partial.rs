//! The `.partial` file a download streams into, hashed as it grows.
//!
//! A partial file left by an earlier attempt (or an earlier process) is re-hashed
//! when it is opened, so a resumed download verifies every byte of the result, not
//! only the bytes received last.

use super::DownloadError;
use sha2::{Digest, Sha256};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// A partial download: the file, the hash of its content and its length.
#[derive(Debug)]
pub(super) struct Partial {
    path: PathBuf,
    file: tokio::fs::File,
    hasher: Sha256,
    len: u64,
    /// Whether the content was written from offset 0 by a single response (or read).
    /// A checksum mismatch of content stitched from several pieces may come from a
    /// stale prefix, so it deserves one fresh try.
    pub(super) single_piece: bool,
}

/// `<dest>.partial`.
pub(super) fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    dest.with_file_name(name)
}

impl Partial {
    /// Opens (or creates) the partial file and hashes what it already holds.
    pub(super) async fn open(path: &Path) -> io::Result<Partial> {
        let p = path.to_path_buf();
        let (hasher, len) =
            tokio::task::spawn_blocking(move || hash_existing(&p)).await.map_err(io::Error::other)??;
        let file = tokio::fs::OpenOptions::new().create(true).append(true).open(path).await?;
        Ok(Partial { path: path.to_path_buf(), file, hasher, len, single_piece: len == 0 })
    }

    /// Bytes held.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    fn io_err(&self) -> impl FnOnce(io::Error) -> DownloadError + use<> {
        let path = self.path.clone();
        move |source| DownloadError::Io { path, source }
    }

    /// Empties the file to start over from offset 0.
    pub(super) async fn reset(&mut self) -> Result<(), DownloadError> {
        self.file.set_len(0).await.map_err(self.io_err())?;
        self.hasher = Sha256::new();
        self.len = 0;
        self.single_piece = true;
        Ok(())
    }

    /// Appends `bytes` and hashes them. Flushed before returning: a tokio file writes
    /// in the background, and the file must hold `len` bytes whenever the download
    /// stops, or a resume could hash a shorter prefix than the one later written.
    pub(super) async fn write(&mut self, bytes: &[u8]) -> Result<(), DownloadError> {
        self.file.write_all(bytes).await.map_err(self.io_err())?;
        self.file.flush().await.map_err(self.io_err())?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// The lowercase hex sha256 of the content.
    pub(super) fn sha256(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }

    /// Flushes and fsyncs the file, renames it to `dest` and fsyncs the directory.
    pub(super) async fn commit(mut self, dest: &Path) -> Result<(), DownloadError> {
        self.file.flush().await.map_err(self.io_err())?;
        self.file.sync_all().await.map_err(self.io_err())?;
        let io_err = self.io_err();
        drop(self.file);
        tokio::fs::rename(&self.path, dest).await.map_err(io_err)?;
        sync_parent(dest).await.map_err(|source| DownloadError::Io { path: dest.to_path_buf(), source })
    }

    /// Deletes the file.
    pub(super) async fn remove(&mut self) -> Result<(), DownloadError> {
        self.file.flush().await.map_err(self.io_err())?;
        match tokio::fs::remove_file(&self.path).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(self.io_err()(e)),
            _ => Ok(()),
        }
    }
}

fn hash_existing(path: &Path) -> io::Result<(Sha256, u64)> {
    let mut hasher = Sha256::new();
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((hasher, 0)),
        Err(e) => return Err(e),
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((hasher, len));
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
}

/// Fsyncs the directory holding `path`, so a rename into it survives a crash.
pub(crate) async fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all()).await.map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_path_appends_suffix() {
        assert_eq!(partial_path(Path::new("/d/1.2.0")), Path::new("/d/1.2.0.partial"));
        assert_eq!(partial_path(Path::new("/d/a.tar.gz")), Path::new("/d/a.tar.gz.partial"));
    }

    #[tokio::test]
    async fn reopening_rehashes_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.partial");
        let mut p = Partial::open(&path).await.unwrap();
        assert!(p.single_piece);
        p.write(b"hello ").await.unwrap();
        p.file.flush().await.unwrap();
        drop(p);
        let mut p = Partial::open(&path).await.unwrap();
        assert_eq!(p.len(), 6);
        assert!(!p.single_piece, "content from an earlier attempt is not a single piece");
        p.write(b"world").await.unwrap();
        assert_eq!(p.sha256(), hex::encode(Sha256::digest(b"hello world")));
        p.reset().await.unwrap();
        p.write(b"abc").await.unwrap();
        assert_eq!(p.sha256(), hex::encode(Sha256::digest(b"abc")));
        let dest = dir.path().join("x");
        p.commit(&dest).await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"abc");
        assert!(!path.exists());
    }
}
