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
mod sources;
mod swarm;

pub use backoff::RetryPolicy;
pub use error::DownloadError;
pub(crate) use partial::partial_path;
pub use sources::{Fetched, NextTurn, OriginSlot, Peer, ReleaseId, Sources, Turn};

use crate::host::trust::Trust;
use bytes::{Bytes, BytesMut};
use partial::Partial;
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

/// What a host accepts to download (`[limits]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadLimits {
    /// URL prefixes an `http(s)://` artifact (and every redirect) must start with;
    /// empty: any http or https URL.
    pub url_prefixes: Vec<String>,
    /// Directories a `file://` artifact must lie in (after resolving symlinks);
    /// empty: `file://` is refused.
    pub file_dirs: Vec<PathBuf>,
    /// The largest artifact, bytes: checked against the declared size before
    /// downloading (the transfer is cut at the declared size).
    pub max_artifact: u64,
}

impl Default for DownloadLimits {
    /// The config's defaults: any http(s) URL, no `file://`, 4 GiB.
    fn default() -> Self {
        DownloadLimits { url_prefixes: Vec::new(), file_dirs: Vec::new(), max_artifact: 4 << 30 }
    }
}

impl DownloadLimits {
    /// Everything allowed (`file://` anywhere): for tools and tests, not the sidecar.
    pub fn permissive() -> Self {
        DownloadLimits { url_prefixes: Vec::new(), file_dirs: vec![PathBuf::from("/")], max_artifact: u64::MAX }
    }

    /// Whether `url` starts with an allowed prefix.
    fn allows_url(&self, url: &str) -> bool {
        self.url_prefixes.is_empty() || self.url_prefixes.iter().any(|p| url.starts_with(p.as_str()))
    }
}

/// How fast a download must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// The longest a whole [`Fetcher::fetch`] may take, every attempt included.
    pub deadline: Option<Duration>,
    /// The slowest accepted transfer, bytes per second over `window` (0: no minimum).
    pub min_rate: u64,
    /// The window the rate is measured over.
    pub window: Duration,
}

impl Default for Pace {
    /// No deadline, no minimum rate.
    fn default() -> Self {
        Pace { deadline: None, min_rate: 0, window: Duration::from_secs(30) }
    }
}

/// Downloads artifacts, verified, with retries and resume.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    retry: RetryPolicy,
    timeouts: Timeouts,
    trust: Trust,
    limits: DownloadLimits,
    pace: Pace,
    roots: Vec<reqwest::Certificate>,
    peers: Option<swarm::Peers>,
}

/// The most redirects followed.
const MAX_REDIRECTS: usize = 5;

/// Reads a PEM bundle of CA certificates: at least one, every one valid.
pub fn read_ca_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{} is not a PEM bundle of certificates: {}", path.display(), chain(&e)))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}

/// The HTTP client: `timeouts.connect`; the bundled public roots, the system's trust
/// store and `roots`; redirects followed only to https (or from http to http) within
/// `limits`' prefixes, at most [`MAX_REDIRECTS`].
fn client(timeouts: Timeouts, limits: &DownloadLimits, roots: &[reqwest::Certificate]) -> reqwest::Client {
    let limits = limits.clone();
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        let from_https = attempt.previous().iter().any(|u| u.scheme() == "https");
        let to = attempt.url().as_str().to_string();
        if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
        } else if from_https && attempt.url().scheme() != "https" {
            attempt.error(format!("refused a redirect from https to {to}"))
        } else if !matches!(attempt.url().scheme(), "http" | "https") || !limits.allows_url(&to) {
            attempt.error(format!("refused a redirect to {to}: outside [limits] url_prefixes"))
        } else {
            attempt.follow()
        }
    });
    let mut builder = reqwest::Client::builder();
    for root in roots {
        builder = builder.add_root_certificate(root.clone());
    }
    builder
        .connect_timeout(timeouts.connect)
        .redirect(redirects)
        .user_agent(concat!("baton-sidecar/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("failed to initialise the HTTP client's TLS backend")
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
        let limits = DownloadLimits::permissive();
        let client = client(timeouts, &limits, &[]);
        Fetcher {
            client,
            retry,
            timeouts,
            trust: Trust::default(),
            limits,
            pace: Pace::default(),
            roots: Vec::new(),
            peers: None,
        }
    }

    /// This fetcher, downloading only what `limits` allow.
    pub fn limited(mut self, limits: DownloadLimits) -> Self {
        self.client = client(self.timeouts, &limits, &self.roots);
        self.limits = limits;
        self
    }

    /// This fetcher, also trusting the CA certificates `roots` for https.
    pub fn with_roots(mut self, roots: Vec<reqwest::Certificate>) -> Self {
        self.client = client(self.timeouts, &self.limits, &roots);
        self.roots = roots;
        self
    }

    /// This fetcher, with a deadline and a minimum rate.
    pub fn paced(mut self, pace: Pace) -> Self {
        self.pace = pace;
        self
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
        let source = self.allowed_source(url, artifact.size)?;
        let Some(deadline) = self.pace.deadline else { return self.fetch_within(artifact, source, dest).await };
        match tokio::time::timeout(deadline, self.fetch_within(artifact, source, dest)).await {
            Ok(result) => result,
            Err(_) => Err(DownloadError::Deadline { url: url.to_string(), after: deadline }),
        }
    }

    /// The source of `url`, when `[limits]` allow it and an artifact of `size`.
    fn allowed_source(&self, url: &str, size: u64) -> Result<Source, DownloadError> {
        let refused = |reason: String| DownloadError::NotAllowed { url: url.to_string(), reason };
        let source = parse_source(url)?;
        if size > self.limits.max_artifact {
            return Err(DownloadError::TooLarge { url: url.to_string(), size, max: self.limits.max_artifact });
        }
        match &source {
            Source::Http(_) if !self.limits.allows_url(url) => {
                Err(refused("it starts with none of [limits] url_prefixes".into()))
            }
            Source::File(_) if self.limits.file_dirs.is_empty() => Err(refused(
                "file:// URLs are off; list the directories that may hold artifacts in [limits] file_dirs".into(),
            )),
            // Where the file really is is checked when it is read (`confined`): a
            // verified download on disk needs no source at all.
            Source::File(_) | Source::Http(_) => Ok(source),
        }
    }

    /// The real path of a `file://` source, when it lies in one of `[limits]
    /// file_dirs`: resolved first, so a symlink cannot lead out of them.
    fn confined(&self, url: &str, path: &Path) -> Result<PathBuf, DownloadError> {
        let refused = |reason: String| DownloadError::NotAllowed { url: url.to_string(), reason };
        let real = match std::fs::canonicalize(path) {
            Ok(real) => real,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(DownloadError::io(path)(e)),
            Err(e) => return Err(refused(format!("cannot resolve the path: {e}"))),
        };
        let inside = self.limits.file_dirs.iter().any(|d| std::fs::canonicalize(d).is_ok_and(|d| real.starts_with(d)));
        if inside { Ok(real) } else { Err(refused(format!("{} is in none of [limits] file_dirs", real.display()))) }
    }

    async fn fetch_within(&self, artifact: &Artifact, source: Source, dest: &Path) -> Result<(), DownloadError> {
        let url = artifact.url.as_str();
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
        check_space(url, &path, artifact.size.saturating_sub(partial.len()))?;
        self.attempts(artifact, &source, partial, dest).await
    }

    /// Transfers from `source` into `partial` until it is verified and renamed to
    /// `dest`, retrying what may succeed.
    async fn attempts(
        &self,
        artifact: &Artifact,
        source: &Source,
        mut partial: Partial,
        dest: &Path,
    ) -> Result<(), DownloadError> {
        let url = artifact.url.as_str();
        tracing::debug!(url, dest = %dest.display(), resume_from = partial.len(), "download starting");
        let attempts = self.retry.attempts();
        for attempt in 1.. {
            let result = match source {
                Source::Http(u) => self.transfer(&self.origin(), u, artifact, &mut partial).await,
                Source::File(p) => match self.confined(url, p) {
                    Ok(real) => read_file(&real, artifact, &mut partial).await,
                    Err(e) => Err(e),
                },
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
    async fn transfer(
        &self,
        via: &Via<'_>,
        url: &Url,
        artifact: &Artifact,
        partial: &mut Partial,
    ) -> Result<(), DownloadError> {
        if partial.len() > artifact.size {
            partial.reset().await?;
        }
        if partial.len() == artifact.size {
            return Ok(());
        }
        let mut request = via.client.get(url.clone());
        if let Some(range) = range_header(partial.len()) {
            request = request.header(header::RANGE, range);
        }
        let network =
            |e: reqwest::Error| DownloadError::Network { url: url.to_string(), message: chain(&e.without_url()) };
        let mut response = idle(via.idle, url, request.send()).await?.map_err(network)?;
        self.check_response(url, &response, artifact, partial).await?;
        if let Some(started) = via.started {
            started();
        }
        let truncated = |received| DownloadError::Truncated { url: url.to_string(), expected: artifact.size, received };
        let mut rate = RateWindow::new(self.pace);
        loop {
            match idle(via.idle, url, response.chunk()).await? {
                Ok(Some(chunk)) => {
                    rate.add(url.as_str(), chunk.len() as u64)?;
                    accept(url.as_str(), artifact.size, partial, chunk).await?
                }
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

    /// The artifact URL's client and idle timeout.
    fn origin(&self) -> Via<'_> {
        Via { client: &self.client, idle: self.timeouts.idle, started: None }
    }
}

/// The client and the idle timeout of one kind of source.
struct Via<'a> {
    client: &'a reqwest::Client,
    idle: Duration,
    /// Called when a response was accepted, before its body is read.
    started: Option<&'a (dyn Fn() + Sync)>,
}

/// Runs `fut`, cut after `after` (an idle timeout).
async fn idle<T>(after: Duration, url: &Url, fut: impl Future<Output = T>) -> Result<T, DownloadError> {
    tokio::time::timeout(after, fut).await.map_err(|_| DownloadError::Timeout { url: url.to_string(), after })
}

/// Bytes received in the current window, to cut a transfer below the minimum rate.
struct RateWindow {
    pace: Pace,
    started: tokio::time::Instant,
    bytes: u64,
}

impl RateWindow {
    fn new(pace: Pace) -> Self {
        RateWindow { pace, started: tokio::time::Instant::now(), bytes: 0 }
    }

    /// Counts `n` bytes; an error when a full window went by below the minimum rate.
    fn add(&mut self, url: &str, n: u64) -> Result<(), DownloadError> {
        self.bytes += n;
        let elapsed = self.started.elapsed();
        if self.pace.min_rate == 0 || elapsed < self.pace.window {
            return Ok(());
        }
        let needed = (self.pace.min_rate as f64 * elapsed.as_secs_f64()) as u64;
        if self.bytes < needed {
            return Err(DownloadError::TooSlow {
                url: url.to_string(),
                received: self.bytes,
                window: elapsed,
                min_rate: self.pace.min_rate,
            });
        }
        *self = RateWindow::new(self.pace);
        Ok(())
    }
}

/// The bytes the file system of `path` can still take, for the unprivileged user
/// (root may use the reserved blocks, but a host out of disk fails in worse ways).
fn free_bytes(path: &Path) -> Option<u64> {
    let dir = path.parent()?;
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// Refuses to start a transfer of `need` more bytes the disk cannot hold (with a
/// 64 MiB margin).
fn check_space(url: &str, partial: &Path, need: u64) -> Result<(), DownloadError> {
    const MARGIN: u64 = 64 << 20;
    match free_bytes(partial) {
        Some(available) if available < need.saturating_add(MARGIN) => Err(DownloadError::NoSpace {
            url: url.to_string(),
            path: partial.parent().unwrap_or(partial).to_path_buf(),
            need: need + MARGIN,
            available,
        }),
        _ => Ok(()),
    }
}

/// Sorts a failure: `Ok(err)` when another attempt may succeed, `Err(err)` when not.
/// A size or checksum mismatch (or a source the limits refuse) deletes the partial
/// file, except a checksum mismatch of content stitched from several pieces, which
/// starts over from zero.
async fn retryable(err: DownloadError, partial: &mut Partial) -> Result<DownloadError, DownloadError> {
    match err {
        DownloadError::Checksum { .. } if !partial.single_piece => {
            partial.reset().await?;
            Ok(err)
        }
        DownloadError::Checksum { .. } | DownloadError::Size { .. } | DownloadError::NotAllowed { .. } => {
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

/// Copies a local regular file into `partial` from zero. Opened without following a
/// symlink and without blocking (a FIFO opens at once), and refused unless it is a
/// regular file: a device or a FIFO never reaches the reader.
async fn read_file(path: &Path, artifact: &Artifact, partial: &mut Partial) -> Result<(), DownloadError> {
    use std::os::unix::fs::OpenOptionsExt;
    partial.reset().await?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(DownloadError::io(path))?;
    let meta = file.metadata().map_err(DownloadError::io(path))?;
    if !meta.file_type().is_file() {
        return Err(DownloadError::NotAllowed {
            url: artifact.url.clone(),
            reason: format!("{} is not a regular file", path.display()),
        });
    }
    let mut file = tokio::fs::File::from_std(file);
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
