//! The errors of a download.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The bytes' sha256 differs from the artifact's. The partial file is deleted.
    #[error("failed to verify {url}: its sha256 is {actual}, expected {expected}")]
    Checksum { url: String, expected: String, actual: String },
    /// The server's (or file's) size differs from the artifact's. `actual` is the size
    /// announced or read, or for a body that runs past the expected size, the bytes
    /// received when it was cut. The partial file is deleted.
    #[error("failed to verify {url}: its size is {actual} bytes, expected {expected}")]
    Size { url: String, expected: u64, actual: u64 },
    /// The server answered an HTTP status other than 200 or 206 (retried).
    #[error("failed to download {url}: the server answered HTTP {status}")]
    Http { url: String, status: u16 },
    /// Connecting, sending or receiving failed (retried). `message` holds the cause chain.
    #[error("failed to download {url}: {message}")]
    Network { url: String, message: String },
    /// No byte arrived for the idle timeout (retried).
    #[error("failed to download {url}: no data for {after:?}")]
    Timeout { url: String, after: Duration },
    /// The body ended before the artifact's size (retried, resuming).
    #[error("failed to download {url}: the transfer ended after {received} of {expected} bytes")]
    Truncated { url: String, expected: u64, received: u64 },
    /// The server answered a range request inconsistently (retried from zero).
    #[error("failed to download {url}: {message}")]
    Protocol { url: String, message: String },
    /// The URL is not `http://`, `https://` or `file://` (or is not a URL).
    #[error("failed to download {url}: unsupported URL; use http://, https:// or file://")]
    UnsupportedScheme { url: String },
    /// Reading a `file://` source or writing the partial file or `dest` failed.
    #[error("failed to access {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The URL is outside what `[limits]` allows (a URL prefix, a `file://` directory,
    /// a file that is not a regular file, a redirect). Not retried.
    #[error("refused to download {url}: {reason}")]
    NotAllowed { url: String, reason: String },
    /// The declared size is larger than `[limits] max_artifact_size`. Not retried.
    #[error(
        "refused to download {url}: its declared size {size} bytes is larger than the largest artifact allowed ({max} bytes, [limits] max_artifact_size)"
    )]
    TooLarge { url: String, size: u64, max: u64 },
    /// The file system lacks room for the artifact (retried: room may be made).
    #[error("not enough room for {url} in {}: {need} bytes needed, {available} available", path.display())]
    NoSpace { url: String, path: PathBuf, need: u64, available: u64 },
    /// A transfer ran below the minimum rate (retried, resuming).
    #[error("failed to download {url}: {received} bytes in {window:?}, below the minimum rate of {min_rate} bytes/s")]
    TooSlow { url: String, received: u64, window: Duration, min_rate: u64 },
    /// The whole download (every attempt) took longer than its deadline.
    #[error("failed to download {url}: not done within the download deadline of {after:?}")]
    Deadline { url: String, after: Duration },
    /// Every attempt failed; `last` is the last failure.
    #[error("failed to download {url} after {attempts} attempts: {last}")]
    GaveUp {
        url: String,
        attempts: u32,
        #[source]
        last: Box<DownloadError>,
    },
}

impl DownloadError {
    /// Whether another attempt may succeed.
    pub fn is_transient(&self) -> bool {
        use DownloadError::*;
        matches!(
            self,
            Http { .. }
                | Network { .. }
                | Timeout { .. }
                | Truncated { .. }
                | Protocol { .. }
                | TooSlow { .. }
                | NoSpace { .. }
        )
    }

    pub(super) fn io(path: &Path) -> impl FnOnce(io::Error) -> DownloadError + '_ {
        move |source| DownloadError::Io { path: path.to_path_buf(), source }
    }
}

/// Compares errors for tests; I/O errors compare by path and [`io::ErrorKind`].
impl PartialEq for DownloadError {
    fn eq(&self, other: &Self) -> bool {
        use DownloadError::*;
        match (self, other) {
            (Checksum { url: a, expected: b, actual: c }, Checksum { url: x, expected: y, actual: z }) => {
                (a, b, c) == (x, y, z)
            }
            (Size { url: a, expected: b, actual: c }, Size { url: x, expected: y, actual: z }) => {
                (a, b, c) == (x, y, z)
            }
            (Http { url: a, status: b }, Http { url: x, status: y }) => (a, b) == (x, y),
            (Network { url: a, message: b }, Network { url: x, message: y }) => (a, b) == (x, y),
            (Timeout { url: a, after: b }, Timeout { url: x, after: y }) => (a, b) == (x, y),
            (Truncated { url: a, expected: b, received: c }, Truncated { url: x, expected: y, received: z }) => {
                (a, b, c) == (x, y, z)
            }
            (Protocol { url: a, message: b }, Protocol { url: x, message: y }) => (a, b) == (x, y),
            (UnsupportedScheme { url: a }, UnsupportedScheme { url: x }) => a == x,
            (NotAllowed { url: a, reason: b }, NotAllowed { url: x, reason: y }) => (a, b) == (x, y),
            (TooLarge { url: a, size: b, max: c }, TooLarge { url: x, size: y, max: z }) => (a, b, c) == (x, y, z),
            (Deadline { url: a, after: b }, Deadline { url: x, after: y }) => (a, b) == (x, y),
            (TooSlow { url: a, .. }, TooSlow { url: x, .. }) => a == x,
            (NoSpace { url: a, .. }, NoSpace { url: x, .. }) => a == x,
            (Io { path: a, source: b }, Io { path: x, source: y }) => a == x && b.kind() == y.kind(),
            (GaveUp { url: a, attempts: b, last: c }, GaveUp { url: x, attempts: y, last: z }) => {
                (a, b, c) == (x, y, z)
            }
            _ => false,
        }
    }
}
