//! Downloads from peers first ([`Sources`]), the artifact URL when none serves.
//!
//! # Expected flow
//! Ask the sources for a turn: a few peers to try in order, or an origin slot. A
//! peer's transfer appends to the same partial file as any other source, resuming
//! with `Range` from its length; a peer that is busy (503) is passed over, one that
//! fails or stalls for `stall` is skipped for the rest of this download, and the next
//! turn is asked for. With an origin slot the URL is downloaded as without peers
//! (retries, backoff), resuming what the peers gave.
//!
//! # Guarantees
//! - Whatever the sources, the result has the artifact's size and sha256 before it is
//!   renamed into place (the signature is the caller's, as without peers).
//! - The peers whose bytes are in a partial file that fails verification are
//!   reported bad ([`Sources::bad`]) and never asked again for this release; the
//!   partial file restarts from zero.
//! - The artifact URL keeps its `[limits]` check; a peer's URL is built from an
//!   address checked by the sources, and its redirects are never followed.

use super::partial::{Partial, partial_path};
use super::sources::{Fetched, ReleaseId, Sources, Turn};
use super::{DownloadError, Fetcher, Source, Via, check_space, verify};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use znode_schema::Artifact;

/// Relaying a download in progress: armed (the download is served to peers) once
/// a source answers, so hosts coming later stream from this one as it downloads;
/// dropped armed (the download failed or was cancelled), it stops the relay.
struct Relay<'a> {
    sources: &'a Arc<dyn Sources>,
    release: &'a ReleaseId,
    artifact: &'a Artifact,
    file: std::path::PathBuf,
    armed: AtomicBool,
}

impl Relay<'_> {
    fn arm(&self) {
        if !self.armed.swap(true, Ordering::Relaxed) {
            self.sources.relay(self.release, self.artifact, &self.file);
        }
    }
}

impl Drop for Relay<'_> {
    fn drop(&mut self) {
        if self.armed.load(Ordering::Relaxed) {
            self.sources.unrelay(self.release);
        }
    }
}

/// The peers of a fetcher.
#[derive(Debug, Clone)]
pub(super) struct Peers {
    sources: Arc<dyn Sources>,
    client: reqwest::Client,
    stall: Duration,
}

impl Fetcher {
    /// This fetcher, downloading from `sources` first; a peer that sends nothing for
    /// `stall` is left for another source.
    ///
    /// # Panics
    /// If the HTTP client cannot be built.
    pub fn with_peers(mut self, sources: Arc<dyn Sources>, stall: Duration) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(stall.min(self.timeouts.connect))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("baton-sidecar/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("failed to build the peers' HTTP client");
        self.peers = Some(Peers { sources, client, stall });
        self
    }

    /// The peers this fetcher downloads from, if any.
    pub fn sources(&self) -> Option<&Arc<dyn Sources>> {
        self.peers.as_ref().map(|p| &p.sources)
    }

    /// Downloads `release`'s `artifact` to `dest`, verified, from peers first when
    /// this fetcher has some (an `http(s)` URL only), else as [`Fetcher::fetch`].
    /// The returned [`Fetched`] may hold an origin slot: drop it once the release is
    /// offered.
    pub async fn fetch_release(
        &self,
        release: &ReleaseId,
        artifact: &Artifact,
        dest: &Path,
    ) -> Result<Fetched, DownloadError> {
        let url = artifact.url.as_str();
        let Some(peers) = &self.peers else { return self.fetch(artifact, dest).await.map(|()| Fetched::default()) };
        let Source::Http(origin) = self.allowed_source(url, artifact.size)? else {
            return self.fetch(artifact, dest).await.map(|()| Fetched::default());
        };
        let swarm = self.swarm(peers, release, artifact, Source::Http(origin), dest);
        let Some(deadline) = self.pace.deadline else { return swarm.await };
        match tokio::time::timeout(deadline, swarm).await {
            Ok(result) => result,
            Err(_) => Err(DownloadError::Deadline { url: url.to_string(), after: deadline }),
        }
    }

    async fn swarm(
        &self,
        peers: &Peers,
        release: &ReleaseId,
        artifact: &Artifact,
        origin: Source,
        dest: &Path,
    ) -> Result<Fetched, DownloadError> {
        let url = artifact.url.as_str();
        let path = partial_path(dest);
        let mut partial = Partial::open(&path).await.map_err(DownloadError::io(&path))?;
        if partial.len() == artifact.size {
            if verify(artifact, &partial).is_ok() {
                partial.commit(dest).await?;
                return Ok(Fetched::default());
            }
            partial.reset().await?;
        }
        check_space(url, &path, artifact.size.saturating_sub(partial.len()))?;
        let relay =
            Relay { sources: &peers.sources, release, artifact, file: path.clone(), armed: AtomicBool::new(false) };
        let result = self.swarm_from(peers, release, artifact, origin, dest, partial, relay).await;
        if result.is_ok() {
            // Verified: relay the renamed file until the release is offered.
            peers.sources.relay(release, artifact, dest);
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn swarm_from(
        &self,
        peers: &Peers,
        release: &ReleaseId,
        artifact: &Artifact,
        origin: Source,
        dest: &Path,
        mut partial: Partial,
        relay: Relay<'_>,
    ) -> Result<Fetched, DownloadError> {
        let url = artifact.url.as_str();
        let started = || relay.arm();
        let via = Via { client: &peers.client, idle: peers.stall, started: Some(&started) };
        let mut skip = HashSet::new();
        let mut from: HashSet<String> = HashSet::new();
        let mut after_busy = false;
        loop {
            let list = match peers.sources.next(release, &skip, after_busy).await {
                Turn::Origin(slot) => {
                    relay.arm();
                    tracing::info!(%release, url, held = slot.is_held(), resume_from = partial.len(), "downloading from the artifact URL");
                    self.attempts(artifact, &origin, partial, dest).await?;
                    relay.armed.store(false, Ordering::Relaxed);
                    return Ok(Fetched { slot: Some(slot) });
                }
                Turn::Peers(list) => list,
            };
            after_busy = true;
            for peer in list {
                let before = partial.len();
                let result = self.transfer(&via, &peer.url, artifact, &mut partial).await;
                let settled = partial.settle().await;
                if partial.len() < before {
                    from.clear(); // restarted from zero: only this peer's bytes are left
                }
                if partial.len() > 0 && partial.len() != before {
                    from.insert(peer.host.clone());
                }
                match settled.and(result).and_then(|()| verify(artifact, &partial)) {
                    Ok(()) => {
                        partial.commit(dest).await?;
                        relay.armed.store(false, Ordering::Relaxed);
                        tracing::info!(%release, peer = %peer.host, bytes = artifact.size, "download verified (from peers)");
                        return Ok(Fetched::default());
                    }
                    Err(DownloadError::Http { status: 503, .. }) => {
                        tracing::debug!(%release, peer = %peer.host, "peer busy");
                    }
                    Err(err @ (DownloadError::Checksum { .. } | DownloadError::Size { .. })) => {
                        tracing::warn!(%release, peers = ?from, error = %err, "bytes from peers failed verification; skipping those peers");
                        for host in from.drain() {
                            peers.sources.bad(release, &host);
                            skip.insert(host);
                        }
                        skip.insert(peer.host.clone());
                        partial.reset().await?;
                        after_busy = false;
                        break;
                    }
                    Err(err @ (DownloadError::Io { .. } | DownloadError::NoSpace { .. })) => return Err(err),
                    Err(err) => {
                        tracing::warn!(%release, peer = %peer.host, error = %err, received = partial.len(), "peer failed; trying another source");
                        skip.insert(peer.host.clone());
                        after_busy = false;
                        break;
                    }
                }
            }
        }
    }
}
