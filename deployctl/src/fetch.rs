//! Fetching an artifact once, before anything is written, to learn its sha256 and
//! size (`deployctl stage` without `--no-fetch`): `http://`, `https://` (the system's
//! trust store) and `file://`. Nothing is kept on disk: the bytes are hashed as they
//! stream past.

use crate::artifact::hash_file;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

/// How long connecting, and then each read, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What every fetch error ends with.
const HINT: &str = "nothing was staged (give --size BYTES --no-fetch for an artifact this machine cannot reach)";

/// Why an artifact could not be fetched. The causes are in the messages (one line
/// with the hint last), not in `source`.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The server could not be reached, or the connection broke.
    #[error("failed to fetch {url}: {message}; {HINT}")]
    Unreachable { url: String, message: String },
    /// The server answered with an HTTP error.
    #[error("failed to fetch {url}: the server answered HTTP {status}; {HINT}")]
    Http { url: String, status: String },
    /// A `file://` artifact cannot be read.
    #[error("failed to read {url}: {error}; {HINT}")]
    File { url: String, error: String },
}

/// What a fetch saw: the artifact's sha256 (lowercase hex) and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// sha256, 64 lowercase hex digits.
    pub sha256: String,
    /// Bytes read.
    pub size: u64,
}

/// Streams `url` once, hashing it.
pub async fn fetch(url: &str) -> Result<Fetched, FetchError> {
    if let Some(path) = url.strip_prefix("file://") {
        return match hash_file(Path::new(path)) {
            Ok((sha256, size)) => Ok(Fetched { sha256, size }),
            Err(crate::error::Invalid::File { source, .. }) => {
                Err(FetchError::File { url: url.into(), error: source.to_string() })
            }
            Err(other) => Err(FetchError::Unreachable { url: url.into(), message: other.to_string() }),
        };
    }
    let unreachable = |e: reqwest::Error| FetchError::Unreachable { url: url.into(), message: chain(&e.without_url()) };
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .user_agent(concat!("deployctl/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(unreachable)?;
    let mut response = client.get(url).send().await.map_err(unreachable)?;
    if !response.status().is_success() {
        return Err(FetchError::Http { url: url.into(), status: response.status().to_string() });
    }
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        hasher.update(&chunk);
        size += chunk.len() as u64;
    }
    Ok(Fetched { sha256: hex::encode(hasher.finalize()), size })
}

/// An error and its causes on one line (reqwest's top message alone says little).
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
