//! The peer server: this host's verified artifacts to other hosts, over plain HTTP.
//!
//! # Expected flow
//! `GET /v1/<service>/<version>` (or `HEAD`) answers the artifact of a release in the
//! [`Catalog`] (one the store verified and keeps), whole (200) or from a byte range
//! (`Range: bytes=N-` or `bytes=N-M`, 206; past the end, 416). At most `max_uploads`
//! bodies are sent at once; more requests are answered 503 with `Retry-After`, so a
//! downloader moves on to another source. `GET /v1/stats` answers the upload counts.
//!
//! # Guarantees
//! - Only files the catalog names are served: verified artifacts, never partial or
//!   unverified bytes. A name that is not a valid service or version is a 404.
//! - The file is opened without following symlinks; one that is no longer its
//!   verified size is not served.
//! - A connection that sends no complete request head within 10 s is closed.
//!
//! Nothing here talks to ZooKeeper: `crate::peers` records the catalog as sources.

use crate::host::download::ReleaseId;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

type Body = BoxBody<Bytes, io::Error>;

/// What this host serves, and what it served.
#[derive(Debug)]
pub struct Catalog {
    entries: Mutex<HashMap<ReleaseId, Kept>>,
    uploads: Arc<Semaphore>,
    /// Bodies started (200 or 206), all releases.
    pub served: AtomicU64,
    /// Bytes sent in bodies.
    pub bytes: AtomicU64,
    /// Requests answered 503 (every upload slot taken).
    pub busy: AtomicU64,
    /// The most bytes per second one upload sends (none: as fast as it goes).
    rate: Option<u64>,
}

/// A kept, verified artifact, or one being downloaded (relayed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// The file.
    pub path: PathBuf,
    /// The artifact's size (verified when `complete`).
    pub size: u64,
    /// Whether the file is the whole verified artifact; `false`: a download in
    /// progress, whose bytes are sent as they land (see [`follow`]).
    pub complete: bool,
}

impl Catalog {
    /// An empty catalog serving at most `max_uploads` bodies at once, each at most
    /// `rate` bytes per second.
    pub fn new(max_uploads: u32, rate: Option<u64>) -> Arc<Self> {
        Arc::new(Catalog {
            entries: Mutex::default(),
            uploads: Arc::new(Semaphore::new(max_uploads as usize)),
            served: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            busy: AtomicU64::new(0),
            rate,
        })
    }

    /// Serves `release` from `kept`.
    pub fn insert(&self, release: ReleaseId, kept: Kept) {
        self.lock().insert(release, kept);
    }

    /// Stops serving `release`.
    pub fn remove(&self, release: &ReleaseId) -> Option<Kept> {
        self.lock().remove(release)
    }

    /// What is served now.
    pub fn entries(&self) -> Vec<(ReleaseId, Kept)> {
        self.lock().iter().map(|(r, k)| (r.clone(), k.clone())).collect()
    }

    fn get(&self, release: &ReleaseId) -> Option<Kept> {
        self.lock().get(release).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ReleaseId, Kept>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Serves `catalog` on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, catalog: Arc<Catalog>, mut shutdown: watch::Receiver<bool>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let (stream, from) = match accepted {
            Ok(a) => a,
            Err(err) => {
                tracing::warn!(error = %err, "peer server: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let catalog = catalog.clone();
        conns.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let catalog = catalog.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&catalog, &req, from).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(err) = conn.await {
                tracing::debug!(peer = %from, error = %err, "peer connection ended");
            }
        });
        while conns.try_join_next().is_some() {}
    }
    conns.abort_all();
}

fn status(code: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{text}\n"))).map_err(|e| match e {}).boxed());
    *r.status_mut() = code;
    r
}

async fn answer(catalog: &Arc<Catalog>, req: &Request<hyper::body::Incoming>, from: SocketAddr) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return status(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD");
    }
    let segs: Vec<&str> = req.uri().path().split('/').skip(1).collect();
    let release = match segs.as_slice() {
        ["v1", "stats"] => return stats(catalog),
        ["v1", service, version]
            if znode_schema::validate_service(service).is_ok() && znode_schema::validate_version(version).is_ok() =>
        {
            ReleaseId { service: service.to_string(), version: version.to_string() }
        }
        _ => return status(StatusCode::NOT_FOUND, "no such release"),
    };
    let Some(kept) = catalog.get(&release) else { return status(StatusCode::NOT_FOUND, "release not held here") };
    let range = req.headers().get(header::RANGE).and_then(|v| v.to_str().ok()).and_then(parse_range);
    let (first, last) = match range {
        Some((first, _)) if first >= kept.size => {
            let mut r = status(StatusCode::RANGE_NOT_SATISFIABLE, "range past the end");
            r.headers_mut().insert(header::CONTENT_RANGE, value(format!("bytes */{}", kept.size)));
            return r;
        }
        Some((first, last)) => (first, last.map_or(kept.size - 1, |l| l.min(kept.size - 1))),
        None => (0, kept.size.saturating_sub(1)),
    };
    let len = if kept.size == 0 { 0 } else { last + 1 - first };
    let Ok(permit) = catalog.uploads.clone().try_acquire_owned() else {
        catalog.busy.fetch_add(1, Ordering::Relaxed);
        let mut r = status(StatusCode::SERVICE_UNAVAILABLE, "every upload slot is taken");
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };
    if !kept.complete && last + 1 != kept.size {
        return status(StatusCode::RANGE_NOT_SATISFIABLE, "a relayed download serves open-ended ranges only");
    }
    let file = match open(&kept, first).await {
        Ok(f) => f,
        Err(err) => {
            tracing::warn!(%release, path = %kept.path.display(), error = %err, "peer server: cannot serve the kept artifact");
            return status(StatusCode::NOT_FOUND, "release not readable here");
        }
    };
    tracing::debug!(%release, peer = %from, first, len, "serving a peer");
    let mut r = if req.method() == Method::HEAD {
        Response::new(Empty::new().map_err(|e| match e {}).boxed())
    } else {
        catalog.served.fetch_add(1, Ordering::Relaxed);
        Response::new(body(file, first, len, kept.complete, permit, catalog.clone()))
    };
    if range.is_some() {
        *r.status_mut() = StatusCode::PARTIAL_CONTENT;
        r.headers_mut().insert(header::CONTENT_RANGE, value(format!("bytes {first}-{last}/{}", kept.size)));
    }
    r.headers_mut().insert(header::CONTENT_LENGTH, value(len.to_string()));
    r.headers_mut().insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    r
}

fn value(text: String) -> HeaderValue {
    HeaderValue::from_str(&text).expect("a header of digits and ASCII")
}

/// Opens the kept file at `first`, refusing a symlink or a file of another size.
async fn open(kept: &Kept, first: u64) -> io::Result<tokio::fs::File> {
    let path = kept.path.clone();
    let file = tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NOFOLLOW).open(path)
    })
    .await
    .map_err(io::Error::other)??;
    let meta = file.metadata()?;
    if !meta.is_file() || (kept.complete && meta.len() != kept.size) {
        return Err(io::Error::other(format!("the file is {} bytes, verified {}", meta.len(), kept.size)));
    }
    let mut file = tokio::fs::File::from_std(file);
    file.seek(io::SeekFrom::Start(first)).await?;
    Ok(file)
}

/// How long a relayed download may hold no new byte before its body is cut.
const RELAY_STALL: Duration = Duration::from_secs(10);
/// How often a relayed body looks for new bytes at the end of the file.
const RELAY_POLL: Duration = Duration::from_millis(10);

/// `len` bytes of `file` from `first`, at most `catalog`'s rate, holding the upload
/// slot until the body ends or is dropped. Of a download in progress (`!complete`),
/// the bytes are sent as they land ([`follow`]).
fn body(
    file: tokio::fs::File,
    first: u64,
    len: u64,
    complete: bool,
    permit: tokio::sync::OwnedSemaphorePermit,
    catalog: Arc<Catalog>,
) -> Body {
    let chunk = catalog.rate.map_or(256 << 10, |r| (r / 10).clamp(4 << 10, 256 << 10) as usize);
    let start = tokio::time::Instant::now();
    let end = first + len;
    let state = Some((file, permit, catalog, first));
    let frames = futures_util::stream::unfold(state, move |state| async move {
        let (mut file, permit, catalog, pos) = state?;
        let want = chunk.min((end - pos) as usize);
        if want == 0 {
            return None;
        }
        let mut buf = bytes::BytesMut::with_capacity(want);
        let read = if complete { read_some(&mut file, &mut buf).await } else { follow(&mut file, pos, &mut buf).await };
        match read {
            Ok(0) => None,
            Ok(n) => {
                let pos = pos + n as u64;
                catalog.bytes.fetch_add(n as u64, Ordering::Relaxed);
                if let Some(rate) = catalog.rate {
                    tokio::time::sleep_until(start + Duration::from_secs_f64((pos - first) as f64 / rate as f64)).await;
                }
                Some((Ok(Frame::data(buf.freeze())), Some((file, permit, catalog, pos))))
            }
            Err(err) => Some((Err(err), None)),
        }
    });
    StreamBody::new(frames).boxed()
}

async fn read_some(file: &mut tokio::fs::File, buf: &mut bytes::BytesMut) -> io::Result<usize> {
    let want = buf.capacity() as u64;
    (&mut *file).take(want).read_buf(buf).await
}

/// Reads the next bytes of a file another task is still writing: waits at its end
/// for more, and fails when the file shrank below `pos` (the download restarted) or
/// nothing came for [`RELAY_STALL`]. The downloader then leaves this host for
/// another source; what it received is verified with the whole artifact anyway.
async fn follow(file: &mut tokio::fs::File, pos: u64, buf: &mut bytes::BytesMut) -> io::Result<usize> {
    let since = tokio::time::Instant::now();
    loop {
        let n = read_some(file, buf).await?;
        if n > 0 {
            return Ok(n);
        }
        if file.metadata().await?.len() < pos {
            return Err(io::Error::other("the relayed download restarted"));
        }
        if since.elapsed() > RELAY_STALL {
            return Err(io::Error::other("the relayed download stalled"));
        }
        tokio::time::sleep(RELAY_POLL).await;
    }
}

fn stats(catalog: &Catalog) -> Response<Body> {
    let json = serde_json::json!({
        "served": catalog.served.load(Ordering::Relaxed),
        "bytes": catalog.bytes.load(Ordering::Relaxed),
        "busy": catalog.busy.load(Ordering::Relaxed),
        "releases": catalog.entries().iter().map(|(r, _)| r.to_string()).collect::<Vec<_>>(),
    });
    let mut r = Response::new(Full::new(Bytes::from(json.to_string())).map_err(|e| match e {}).boxed());
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// `bytes=N-` or `bytes=N-M` (M ≥ N); anything else (several ranges, suffixes) is
/// ignored and the whole file sent, as RFC 9110 allows.
fn parse_range(text: &str) -> Option<(u64, Option<u64>)> {
    let spec = text.trim().strip_prefix("bytes=")?;
    let (first, last) = spec.split_once('-')?;
    let first = first.trim().parse::<u64>().ok()?;
    match last.trim() {
        "" => Some((first, None)),
        l => l.parse::<u64>().ok().filter(|l| *l >= first).map(|l| (first, Some(l))),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_range;
    use test_case::test_case;

    #[test_case("bytes=0-" => Some((0, None)))]
    #[test_case("bytes=100-" => Some((100, None)))]
    #[test_case("bytes=5-9" => Some((5, Some(9))))]
    #[test_case("bytes=9-5" => None)]
    #[test_case("bytes=-500" => None)]
    #[test_case("bytes=0-1,5-9" => None)]
    #[test_case("items=0-" => None)]
    fn ranges(text: &str) -> Option<(u64, Option<u64>)> {
        parse_range(text)
    }
}
