//! The `.partial` file a download streams into, hashed as it grows.
//!
//! A partial file left by an earlier attempt (or an earlier process) is re-hashed
//! when it is opened, so a resumed download verifies every byte of the result, not
//! only the bytes received last.
//!
//! # The pipeline
//! Received chunks go over a bounded channel to one blocking thread that hashes them
//! and writes them through a large buffer, so the network reads, the hashing and the
//! writes overlap instead of taking turns (a tokio file would send every small write
//! to the blocking pool and wait for it). [`Partial::drain`] waits until every chunk
//! handed over is hashed and written; every decision that depends on the file's
//! content (its length for a resume, its sha256, a reset, the commit) drains first.
//!
//! # Durability
//! Nothing is fsynced while the transfer runs: a crash may lose the tail of the file,
//! and a resume re-hashes whatever is on disk. The one fsync comes at the commit,
//! before the rename that makes the file visible under its final name.
//!
//! # One writer at a time
//! The file is held under an exclusive `flock` for as long as a `Partial` (or its
//! writer thread, which outlives a dropped `Partial` until it has written what it
//! was given) has it open, so an abandoned download's last writes can never
//! interleave with the next attempt's.

use super::DownloadError;
use bytes::Bytes;
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The writer's buffer: large writes keep the syscall count low.
const WRITE_BUFFER: usize = 1 << 20;
/// Chunks in flight between the network and the writer (a reqwest chunk is 8–64 KiB).
const CHANNEL_CHUNKS: usize = 256;

/// The file and the hash of what it holds, owned by whoever writes.
#[derive(Debug)]
struct Sink {
    file: Flock<File>,
    hasher: Sha256,
}

/// Where the sink is: here, or with the writer thread.
#[derive(Debug)]
enum Writer {
    Idle(Sink),
    Busy {
        tx: mpsc::Sender<Bytes>,
        task: JoinHandle<(Sink, io::Result<()>)>,
    },
    /// The writer thread panicked: the file's state is unknown.
    Lost,
}

/// A partial download: the file, the hash of its content and its length.
#[derive(Debug)]
pub(super) struct Partial {
    path: PathBuf,
    writer: Writer,
    /// Bytes handed over (written once drained).
    len: u64,
    /// Whether the content was written from offset 0 by a single response (or read).
    /// A checksum mismatch of content stitched from several pieces may come from a
    /// stale prefix, so it deserves one fresh try.
    pub(super) single_piece: bool,
}

/// `<dest>.partial`.
pub(crate) fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    dest.with_file_name(name)
}

impl Partial {
    /// Opens (or creates) the partial file, waits for any earlier writer of it to let
    /// go, and hashes what it already holds.
    pub(super) async fn open(path: &Path) -> io::Result<Partial> {
        let p = path.to_path_buf();
        let (sink, len) = blocking(move || open_locked(&p)).await?;
        Ok(Partial { path: path.to_path_buf(), writer: Writer::Idle(sink), len, single_piece: len == 0 })
    }

    /// Bytes held (once drained).
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    fn io_err(&self) -> impl FnOnce(io::Error) -> DownloadError + use<> {
        let path = self.path.clone();
        move |source| DownloadError::Io { path, source }
    }

    /// Waits until every chunk handed over is hashed and written; returns the sink.
    /// A write error is returned once, and the file then holds what reached it.
    async fn drain(&mut self) -> Result<&mut Sink, DownloadError> {
        if let Writer::Busy { .. } = self.writer {
            let Writer::Busy { tx, task } = std::mem::replace(&mut self.writer, Writer::Lost) else {
                unreachable!("matched above")
            };
            drop(tx);
            let (sink, result) = task.await.map_err(|e| self.io_err()(io::Error::other(e)))?;
            self.writer = Writer::Idle(sink);
            if let Err(e) = result {
                self.resync_len().await?;
                return Err(self.io_err()(e));
            }
        }
        let lost = self.io_err();
        match &mut self.writer {
            Writer::Idle(sink) => Ok(sink),
            _ => Err(lost(io::Error::other("the download's writer thread failed"))),
        }
    }

    /// After a failed write: the length and hash of what the file really holds.
    async fn resync_len(&mut self) -> Result<(), DownloadError> {
        let Writer::Idle(sink) = std::mem::replace(&mut self.writer, Writer::Lost) else { return Ok(()) };
        let (sink, len) = blocking(move || rehash(sink)).await.map_err(self.io_err())?;
        self.writer = Writer::Idle(sink);
        self.len = len;
        self.single_piece = false;
        Ok(())
    }

    /// Empties the file to start over from offset 0.
    pub(super) async fn reset(&mut self) -> Result<(), DownloadError> {
        let io_err = self.io_err();
        let sink = self.drain().await?;
        sink.file.set_len(0).map_err(io_err)?;
        sink.hasher = Sha256::new();
        self.len = 0;
        self.single_piece = true;
        Ok(())
    }

    /// Hands `bytes` to the writer, which appends and hashes them in order.
    pub(super) async fn write(&mut self, bytes: Bytes) -> Result<(), DownloadError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let n = bytes.len() as u64;
        if self.sender()?.send(bytes).await.is_err() {
            // The writer stopped on an error, which drain returns.
            self.drain().await?;
            return Err(self.io_err()(io::Error::other("the download's writer stopped")));
        }
        self.len += n;
        Ok(())
    }

    /// The channel to the writer thread, started if idle.
    fn sender(&mut self) -> Result<&mpsc::Sender<Bytes>, DownloadError> {
        if let Writer::Idle(_) = self.writer {
            let Writer::Idle(sink) = std::mem::replace(&mut self.writer, Writer::Lost) else {
                unreachable!("matched above")
            };
            let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
            let task = tokio::task::spawn_blocking(move || write_chunks(sink, rx));
            self.writer = Writer::Busy { tx, task };
        }
        match &self.writer {
            Writer::Busy { tx, .. } => Ok(tx),
            _ => Err(self.io_err()(io::Error::other("the download's writer thread failed"))),
        }
    }

    /// Waits for the writer and makes sure the file holds `len` bytes: the end of a
    /// transfer, before its outcome is judged.
    pub(super) async fn settle(&mut self) -> Result<(), DownloadError> {
        self.drain().await.map(|_| ())
    }

    /// The lowercase hex sha256 of the content. Call after [`Partial::settle`].
    pub(super) fn sha256(&self) -> String {
        match &self.writer {
            Writer::Idle(sink) => hex::encode(sink.hasher.clone().finalize()),
            _ => String::new(),
        }
    }

    /// Fsyncs the file, renames it to `dest` and fsyncs the directory.
    pub(super) async fn commit(mut self, dest: &Path) -> Result<(), DownloadError> {
        self.drain().await?;
        let Writer::Idle(sink) = std::mem::replace(&mut self.writer, Writer::Lost) else { unreachable!("drained") };
        let (path, dest_buf) = (self.path.clone(), dest.to_path_buf());
        blocking(move || {
            sink.file.sync_all()?;
            std::fs::rename(&path, &dest_buf)?;
            drop(sink); // unlock after the rename: a new Partial at `path` is a new file
            sync_dir_of(&dest_buf)
        })
        .await
        .map_err(|source| DownloadError::Io { path: dest.to_path_buf(), source })
    }

    /// Deletes the file.
    pub(super) async fn remove(&mut self) -> Result<(), DownloadError> {
        self.drain().await?;
        match tokio::fs::remove_file(&self.path).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(self.io_err()(e)),
            _ => Ok(()),
        }
    }
}

/// Runs blocking file work off the runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(io::Error::other)?
}

fn open_locked(path: &Path) -> io::Result<(Sink, u64)> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    let file = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| io::Error::from(errno))?;
    rehash(Sink { file, hasher: Sha256::new() })
}

/// Hashes the file from its start: its length and a fresh hash of its content.
fn rehash(mut sink: Sink) -> io::Result<(Sink, u64)> {
    use std::io::Seek;
    let mut hasher = Sha256::new();
    let file: &mut File = &mut sink.file;
    file.seek(io::SeekFrom::Start(0))?;
    let mut buf = vec![0u8; WRITE_BUFFER];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    sink.hasher = hasher;
    Ok((sink, len))
}

/// The writer thread: hashes and appends every chunk until the channel closes or a
/// write fails, batching writes while chunks queue up and writing out whatever it
/// holds whenever it has caught up. Gives the sink back with the outcome.
fn write_chunks(mut sink: Sink, mut rx: mpsc::Receiver<Bytes>) -> (Sink, io::Result<()>) {
    let result = (|| {
        let file: &mut File = &mut sink.file;
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
        loop {
            let chunk = match rx.try_recv() {
                Ok(chunk) => chunk,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // Caught up with the network: what arrived is written before waiting,
                    // so a stalled transfer has its bytes on disk.
                    out.flush()?;
                    match rx.blocking_recv() {
                        Some(chunk) => chunk,
                        None => break,
                    }
                }
            };
            sink.hasher.update(&chunk);
            out.write_all(&chunk)?;
        }
        out.flush()
    })();
    (sink, result)
}

/// Fsyncs the directory holding `path`, so a rename into it survives a crash.
fn sync_dir_of(path: &Path) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
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
        p.write(Bytes::from_static(b"hello ")).await.unwrap();
        drop(p);
        // The dropped writer still finishes its chunk; the lock makes the reopen wait.
        let mut p = Partial::open(&path).await.unwrap();
        assert_eq!(p.len(), 6);
        assert!(!p.single_piece, "content from an earlier attempt is not a single piece");
        p.write(Bytes::from_static(b"world")).await.unwrap();
        p.settle().await.unwrap();
        assert_eq!(p.sha256(), hex::encode(Sha256::digest(b"hello world")));
        p.reset().await.unwrap();
        p.write(Bytes::from_static(b"abc")).await.unwrap();
        p.settle().await.unwrap();
        assert_eq!(p.sha256(), hex::encode(Sha256::digest(b"abc")));
        let dest = dir.path().join("x");
        p.commit(&dest).await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"abc");
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn many_chunks_hash_and_land_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("y.partial");
        let mut p = Partial::open(&path).await.unwrap();
        let mut expected = Vec::new();
        for i in 0..2000u32 {
            let chunk: Vec<u8> = (0..(i % 97 + 1)).map(|j| (i ^ j) as u8).collect();
            expected.extend_from_slice(&chunk);
            p.write(Bytes::from(chunk)).await.unwrap();
        }
        p.settle().await.unwrap();
        assert_eq!(p.len(), expected.len() as u64);
        assert_eq!(p.sha256(), hex::encode(Sha256::digest(&expected)));
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }

    #[tokio::test]
    async fn a_second_open_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z.partial");
        let first = Partial::open(&path).await.unwrap();
        let second = tokio::time::timeout(std::time::Duration::from_millis(200), Partial::open(&path)).await;
        assert!(second.is_err(), "the second open must wait for the lock");
        drop(first);
        let second = tokio::time::timeout(std::time::Duration::from_secs(10), Partial::open(&path)).await;
        assert!(second.unwrap().is_ok());
    }
}
