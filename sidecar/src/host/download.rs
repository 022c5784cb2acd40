//! Verified downloads of release artifacts.
//!
//! # Expected flow
//! [`Fetcher::fetch`] streams the artifact into `<dest>.partial` while hashing it,
//! checks the size and the sha256, fsyncs, and renames the file to `dest` only on a
//! match. Model: rustup `src/dist/download.rs`.
//!
//! # Retries and resume
//! Network errors, idle timeouts, truncated bodies and every HTTP error status are
//! retried with exponential backoff and full jitter ([`RetryPolicy`]); each try counts
//! against `attempts`. Client errors (404, 403...) are retried too: an operator may
//! fix the file while the sidecar waits. A retry after a broken transfer resumes with
//! `Range: bytes=<len>-`; a server that answers 200 instead of 206 sends the whole file
//! again and the partial restarts from zero. A partial file left by an earlier call is
//! re-hashed first, so the result is always verified as a whole.
//!
//! # Guarantees
//! - Nothing is ever written at `dest` that does not have the artifact's size and
//!   sha256.
//! - A size or checksum mismatch deletes the partial file and is not retried, except
//!   a checksum mismatch of content stitched from several transfers: its prefix may be
//!   stale, so the download starts once more from zero.
//! - A response longer than `artifact.size` is cut at the first extra byte and refused.
//!
//! # Cancellation safety
//! Dropping the future leaves at most `<dest>.partial`, which the next call resumes.

mod backoff;
mod error;
mod partial;
mod range;

pub use backoff::RetryPolicy;
pub use error::DownloadError;

use crate::host::trust::Trust;
use bytes::{Bytes, BytesMut};
use partial::{Partial, partial_path};
use range::{ContentRange, parse_content_range, range_header};
use reqwest::{StatusCode, Url, header};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use znode_schema::Artifact;

/// The read size of a `file://` source.
const FILE_CHUNK: usize = 1 << 20;

/// How long a transfer may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To establish a connection (TCP and TLS).
    pub connect: Duration,
    /// For the response headers, and then for each chunk of the body: a server that
    /// stops sending is cut after this long.
    pub idle: Duration,
}

impl Default for Timeouts {
    /// 10 s to connect, 30 s without data.
    fn default() -> Self {
        Timeouts { connect: Duration::from_secs(10), idle: Duration::from_secs(30) }
    }
}

/// Downloads artifacts, verified, with retries and resume.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    retry: RetryPolicy,
    timeouts: Timeouts,
    trust: Trust,
}

enum Source {
    Http(Url),
    File(PathBuf),
}

fn parse_source(url: &str) -> Result<Source, DownloadError> {
    let unsupported = || DownloadError::UnsupportedScheme { url: url.to_string() };
    let parsed = Url::parse(url).map_err(|_| unsupported())?;
    match parsed.scheme() {
        "http" | "https" => Ok(Source::Http(parsed)),
        "file" => parsed.to_file_path().map(Source::File).map_err(|()| unsupported()),
        _ => Err(unsupported()),
    }
}

/// The cause chain of an error, joined with ": ".
fn chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

impl Fetcher {
    /// A fetcher with default [`Timeouts`].
    ///
    /// # Panics
    /// If the TLS backend cannot be initialised.
    pub fn new(retry: RetryPolicy) -> Self {
        Self::with_timeouts(retry, Timeouts::default())
    }

    /// A fetcher with the given timeouts.
    ///
    /// # Panics
    /// If the TLS backend cannot be initialised.
    pub fn with_timeouts(retry: RetryPolicy, timeouts: Timeouts) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .user_agent(concat!("baton-sidecar/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("failed to initialise the HTTP client's TLS backend");
        Fetcher { client, retry, timeouts, trust: Trust::default() }
    }

    /// This fetcher, with releases checked against `trust` before they are installed.
    pub fn trusting(mut self, trust: Trust) -> Self {
        self.trust = trust;
        self
    }

    /// The keys releases must be signed with (none: signatures are not required).
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The timeouts.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Downloads `artifact` to `dest` (a file path), verified; see the [module
    /// docs](self). `file://` URLs are read from the local path, verified too, and not
    /// retried.
    pub async fn fetch(&self, artifact: &Artifact, dest: &Path) -> Result<(), DownloadError> {
        let url = artifact.url.as_str();
        let source = parse_source(url)?;
        let path = partial_path(dest);
        let mut partial = Partial::open(&path).await.map_err(DownloadError::io(&path))?;
        if partial.len() == artifact.size {
            // Complete but not renamed: a crash came between the transfer and the rename,
            // or the caller handed back a verified file to check again.
            if verify(artifact, &partial).is_ok() {
                tracing::info!(url, dest = %dest.display(), "download verified from disk");
                return partial.commit(dest).await;
            }
            partial.reset().await?;
        }
        tracing::debug!(url, dest = %dest.display(), resume_from = partial.len(), "download starting");
        let attempts = self.retry.attempts();
        for attempt in 1.. {
            let result = match &source {
                Source::Http(u) => self.transfer(u, artifact, &mut partial).await,
                Source::File(p) => read_file(p, artifact, &mut partial).await,
            };
            // Every chunk handed to the writer is on disk before the outcome is judged.
            let settled = partial.settle().await;
            let err = match settled.and(result).and_then(|()| verify(artifact, &partial)) {
                Ok(()) => {
                    partial.commit(dest).await?;
                    tracing::info!(url, dest = %dest.display(), bytes = artifact.size, attempt, "download verified");
                    return Ok(());
                }
                Err(err) => retryable(err, &mut partial).await?,
            };
            if attempt >= attempts {
                return Err(DownloadError::GaveUp { url: url.to_string(), attempts, last: Box::new(err) });
            }
            let delay = self.retry.delay(attempt);
            tracing::warn!(url, attempt, error = %err, ?delay, "download failed; retrying");
            tokio::time::sleep(delay).await;
        }
        unreachable!("the attempt loop returns")
    }

    /// One HTTP transfer appending to `partial`, resuming from its length. Ends with
    /// `partial` holding exactly `artifact.size` bytes, or an error.
    async fn transfer(&self, url: &Url, artifact: &Artifact, partial: &mut Partial) -> Result<(), DownloadError> {
        if partial.len() > artifact.size {
            partial.reset().await?;
        }
        if partial.len() == artifact.size {
            return Ok(());
        }
        let mut request = self.client.get(url.clone());
        if let Some(range) = range_header(partial.len()) {
            request = request.header(header::RANGE, range);
        }
        let network =
            |e: reqwest::Error| DownloadError::Network { url: url.to_string(), message: chain(&e.without_url()) };
        let mut response = self.idle(url, request.send()).await?.map_err(network)?;
        self.check_response(url, &response, artifact, partial).await?;
        let truncated = |received| DownloadError::Truncated { url: url.to_string(), expected: artifact.size, received };
        loop {
            match self.idle(url, response.chunk()).await? {
                Ok(Some(chunk)) => accept(url.as_str(), artifact.size, partial, chunk).await?,
                Ok(None) if partial.len() == artifact.size => return Ok(()),
                Ok(None) => return Err(truncated(partial.len())),
                Err(err) => {
                    // A reset, or an end before Content-Length: the transfer broke mid-body.
                    tracing::debug!(url = %url, error = %chain(&err.without_url()), "transfer broken");
                    return Err(truncated(partial.len()));
                }
            }
        }
    }

    /// Checks a response's status and headers against the request; restarts `partial`
    /// from zero when the server sends the whole file.
    async fn check_response(
        &self,
        url: &Url,
        response: &reqwest::Response,
        artifact: &Artifact,
        partial: &mut Partial,
    ) -> Result<(), DownloadError> {
        let (offset, size) = (partial.len(), artifact.size);
        let size_err = |actual| DownloadError::Size { url: url.to_string(), expected: size, actual };
        let protocol = |message: String| DownloadError::Protocol { url: url.to_string(), message };
        let content_range = response.headers().get(header::CONTENT_RANGE).and_then(|v| v.to_str().ok());
        let content_range = content_range.and_then(parse_content_range);
        match response.status() {
            StatusCode::OK => {
                if offset > 0 {
                    tracing::debug!(url = %url, offset, "the server ignored the range; starting over");
                    partial.reset().await?;
                }
                match response.content_length() {
                    Some(len) if len != size => Err(size_err(len)),
                    _ => Ok(()),
                }
            }
            StatusCode::PARTIAL_CONTENT => match content_range {
                Some(ContentRange::Bytes { total: Some(total), .. }) if total != size => Err(size_err(total)),
                Some(ContentRange::Bytes { first, .. }) if first == offset => {
                    tracing::debug!(url = %url, offset, "resuming download");
                    partial.single_piece &= offset == 0;
                    Ok(())
                }
                other => {
                    partial.reset().await?;
                    Err(protocol(format!("the server answered {other:?} to a request from byte {offset}")))
                }
            },
            StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 => match content_range {
                Some(ContentRange::Unsatisfied { total }) if total != size => Err(size_err(total)),
                _ => {
                    partial.reset().await?;
                    Err(protocol(format!("the server refused a request from byte {offset}")))
                }
            },
            status => Err(DownloadError::Http { url: url.to_string(), status: status.as_u16() }),
        }
    }

    /// Runs `fut`, cut after the idle timeout.
    async fn idle<T>(&self, url: &Url, fut: impl Future<Output = T>) -> Result<T, DownloadError> {
        let after = self.timeouts.idle;
        tokio::time::timeout(after, fut).await.map_err(|_| DownloadError::Timeout { url: url.to_string(), after })
    }
}

/// Sorts a failure: `Ok(err)` when another attempt may succeed, `Err(err)` when not.
/// A size or checksum mismatch deletes the partial file, except a checksum mismatch
/// of content stitched from several pieces, which starts over from zero.
async fn retryable(err: DownloadError, partial: &mut Partial) -> Result<DownloadError, DownloadError> {
    match err {
        DownloadError::Checksum { .. } if !partial.single_piece => {
            partial.reset().await?;
            Ok(err)
        }
        DownloadError::Checksum { .. } | DownloadError::Size { .. } => {
            partial.remove().await?;
            Err(err)
        }
        err if err.is_transient() => Ok(err),
        err => Err(err),
    }
}

/// Appends a chunk, refusing bytes past `size`.
async fn accept(url: &str, size: u64, partial: &mut Partial, chunk: Bytes) -> Result<(), DownloadError> {
    let total = partial.len() + chunk.len() as u64;
    if total > size {
        return Err(DownloadError::Size { url: url.to_string(), expected: size, actual: total });
    }
    partial.write(chunk).await
}

/// Copies a local file into `partial` from zero.
async fn read_file(path: &Path, artifact: &Artifact, partial: &mut Partial) -> Result<(), DownloadError> {
    partial.reset().await?;
    let mut file = tokio::fs::File::open(path).await.map_err(DownloadError::io(path))?;
    loop {
        let mut buf = BytesMut::with_capacity(FILE_CHUNK);
        let n = file.read_buf(&mut buf).await.map_err(DownloadError::io(path))?;
        if n == 0 {
            return Ok(());
        }
        accept(&artifact.url, artifact.size, partial, buf.freeze()).await?;
    }
}

/// Checks size and sha256 of the complete partial file.
fn verify(artifact: &Artifact, partial: &Partial) -> Result<(), DownloadError> {
    let url = artifact.url.clone();
    if partial.len() != artifact.size {
        return Err(DownloadError::Size { url, expected: artifact.size, actual: partial.len() });
    }
    let actual = partial.sha256();
    if !actual.eq_ignore_ascii_case(&artifact.sha256) {
        return Err(DownloadError::Checksum { url, expected: artifact.sha256.to_ascii_lowercase(), actual });
    }
    Ok(())
}
