//! Peers (`[peers]`): this host serves the releases it verified to other hosts and
//! downloads from them first, with ZooKeeper as the tracker. Joins the coordination
//! half ([`crate::coord::sources`]) and the host half ([`crate::host::serve`],
//! [`crate::host::download::Sources`]), as `agent` does for the rollout.
//!
//! # Expected flow
//! - Choosing a source ([`Sources::next`]): one listing of the release's directory;
//!   if hosts serve it, the payloads of up to [`TRY_PEERS`] of them (picked at
//!   random, so uploads spread), which the fetcher tries in turn; if none does (or all
//!   those tried were busy) and fewer than `origin_fetches` origin slots are taken,
//!   one create takes a slot; otherwise wait, with backoff and jitter capped at
//!   [`MAX_WAIT`], and list again. No watch is set: a change of the directory wakes
//!   nobody, so there is no herd whatever the number of hosts.
//! - Serving: [`Sources::offer`] puts the verified artifact in the peer server's
//!   catalog and has the publisher task create `source-<host>` (ephemeral); on every
//!   new session the publisher creates them again. [`Sources::withdraw`] (a pruned
//!   release) removes both.
//!
//! # Guarantees
//! - Whatever a peer or a node says is untrusted: addresses are checked before a URL
//!   is built from them, and the fetcher verifies size, sha256 and signature of the
//!   whole artifact whatever the source. A peer whose bytes failed is never asked for
//!   that release again by this process.
//! - At most `origin_fetches` hosts hold an origin slot of a release at once (one
//!   create of a fixed name succeeds). Without ZooKeeper (no live session, or a tree
//!   whose ACLs refuse the peers' nodes) a download goes to the URL without a slot:
//!   availability first, logged.
//!
//! # Errors
//! A ZooKeeper error while choosing is logged and retried after the wait; a NoAuth
//! (a secured tree made before peers: run `deployctl init` again) falls back to the
//! URL. Never a reason to stop the daemon.

use crate::agent::Link;
use crate::coord::session::Session;
use crate::coord::sources;
use crate::host::download::{NextTurn, OriginSlot, Peer, ReleaseId, Sources, Turn};
use crate::host::releases::ReleaseStore;
use crate::host::serve::{Catalog, Kept};
use rand::seq::SliceRandom;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use znode_schema::layout::ORIGIN_PREFIX;
use znode_schema::{Artifact, PeerSource, time};

/// How many peers one turn offers the fetcher.
pub const TRY_PEERS: usize = 3;
/// The longest wait between two looks at a release's sources.
pub const MAX_WAIT: Duration = Duration::from_secs(2);
/// How often the publisher checks the kept files and its nodes without being asked.
const REPUBLISH: Duration = Duration::from_secs(10);

/// This host's peers.
#[derive(Debug)]
pub struct Peers {
    host: String,
    advertise: String,
    origin_fetches: u32,
    link: watch::Receiver<Link>,
    catalog: Arc<Catalog>,
    offered: Mutex<HashMap<ReleaseId, PeerSource>>,
    withdrawn: Mutex<Vec<ReleaseId>>,
    bad: Mutex<HashSet<(ReleaseId, String)>>,
    /// The creation zxid of this host's source node of each release (this session).
    mine: Mutex<HashMap<ReleaseId, i64>>,
    wake: Notify,
}

impl Peers {
    /// The peers of host `host`, advertised at `advertise`, with `origin_fetches`
    /// slots per release, serving `catalog`, using the sessions of `link`.
    pub fn new(
        host: String,
        advertise: String,
        origin_fetches: u32,
        catalog: Arc<Catalog>,
        link: watch::Receiver<Link>,
    ) -> Arc<Self> {
        Arc::new(Peers {
            host,
            advertise,
            origin_fetches,
            link,
            catalog,
            offered: Mutex::default(),
            withdrawn: Mutex::default(),
            bad: Mutex::default(),
            mine: Mutex::default(),
            wake: Notify::new(),
        })
    }

    /// The peer server's catalog.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The live session, waiting a little for one.
    async fn session(&self) -> Option<Session> {
        let mut link = self.link.clone();
        let wait = link.wait_for(|l| matches!(l, Link::Up(s) if !s.is_terminated()));
        match tokio::time::timeout(Duration::from_secs(10), wait).await {
            Ok(Ok(l)) => match &*l {
                Link::Up(s) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        }
    }

    /// One look at the release's sources; `Ok(None)`: wait and look again.
    async fn turn(
        &self,
        s: &Session,
        release: &ReleaseId,
        skip: &HashSet<String>,
        after_busy: bool,
    ) -> Result<Option<Turn>, crate::coord::zk::ZkError> {
        let (service, version) = (release.service.as_str(), release.version.as_str());
        let listing = sources::list(s, service, version).await?;
        let hosts = self.usable(s, release, skip, listing.sources);
        if !hosts.is_empty() && !after_busy {
            let peers = self.candidates(s, release, hosts).await;
            if !peers.is_empty() {
                return Ok(Some(Turn::Peers(peers)));
            }
        }
        if (listing.slots.len() as u32) < self.origin_fetches {
            if let Some(path) = sources::take_slot(s, service, version, self.origin_fetches, &listing.slots).await? {
                let first = path.ends_with(&format!("{ORIGIN_PREFIX}0"));
                let guard = SlotGuard { session: s.clone(), path, dir: s.layout.peers_release(service, version) };
                if !first {
                    // Hosts arriving together all find nothing; the first origin
                    // fetcher relays at once, so a later slot is given back when a
                    // source appeared meanwhile (one more listing).
                    let again = sources::list(s, service, version).await?;
                    let hosts = self.usable(s, release, skip, again.sources);
                    let peers = self.candidates(s, release, hosts).await;
                    if !peers.is_empty() {
                        drop(guard);
                        return Ok(Some(Turn::Peers(peers)));
                    }
                }
                if first {
                    let (s, service, version) = (s.clone(), service.to_string(), version.to_string());
                    tokio::spawn(async move {
                        match sources::tidy(&s, &service, &version).await {
                            Ok(n) if n > 0 => {
                                tracing::debug!(%service, removed = n, "removed empty release directories under peers/")
                            }
                            Ok(_) => {}
                            Err(err) => tracing::debug!(%service, error = %err, "failed to tidy peers/"),
                        }
                    });
                }
                tracing::info!(%release, slot = %guard.path, "took an origin slot");
                return Ok(Some(Turn::Origin(OriginSlot::held(Box::new(guard)))));
            }
        }
        Ok(None)
    }

    /// The hosts of `sources` this host may ask: not itself, not skipped, not bad.
    fn usable(&self, s: &Session, release: &ReleaseId, skip: &HashSet<String>, sources: Vec<String>) -> Vec<String> {
        let bad = lock(&self.bad);
        let ok = |h: &String| *h != s.host && !skip.contains(h) && !bad.contains(&(release.clone(), h.clone()));
        sources.into_iter().filter(ok).collect()
    }

    /// Up to [`TRY_PEERS`] of `hosts` (in random order, at most `2 × TRY_PEERS` of
    /// them read) with their checked URLs. A
    /// relaying source created after this host's own is left out: it may be
    /// downstream of this host, and streaming from it would be a cycle.
    async fn candidates(&self, s: &Session, release: &ReleaseId, mut hosts: Vec<String>) -> Vec<Peer> {
        let (service, version) = (release.service.as_str(), release.version.as_str());
        let mine = lock(&self.mine).get(release).copied();
        hosts.shuffle(&mut rand::thread_rng());
        let mut peers = Vec::new();
        // At most twice as many reads as peers offered, whatever N.
        for host in hosts.into_iter().take(2 * TRY_PEERS) {
            if peers.len() == TRY_PEERS {
                break;
            }
            match sources::address(s, service, version, &host).await {
                Ok(Some(found)) if !found.complete && mine.is_some_and(|m| found.czxid > m) => {}
                Ok(Some(found)) => match peer_url(&found.address, release) {
                    Some(url) => peers.push(Peer { host, url }),
                    None => tracing::warn!(%release, peer = %host, address = %found.address, "unusable peer address"),
                },
                Ok(None) => {}
                Err(err) => tracing::warn!(%release, peer = %host, error = %err, "unusable peer source"),
            }
        }
        peers
    }

    /// After a restart: offers again the artifacts `stores` kept, each once it is
    /// verified again from disk against the catalog (`releases/<service>/<version>`:
    /// size and sha256; its signature was checked when it was installed); an
    /// artifact that no longer matches is deleted.
    pub async fn restore(self: Arc<Self>, stores: Vec<ReleaseStore>) {
        let kept: Vec<(ReleaseStore, String)> =
            stores.into_iter().flat_map(|st| st.kept_versions().into_iter().map(move |v| (st.clone(), v))).collect();
        for (store, version) in kept {
            let Some(s) = self.session().await else { return };
            let release = ReleaseId { service: store.service().to_string(), version: version.clone() };
            let path = s.layout.release(&release.service, &version);
            let artifact = match crate::coord::zk::get::<znode_schema::Release>(&s.client, &path).await {
                Ok(Some((r, _, _))) => r.artifact,
                Ok(None) => continue,
                Err(err) => {
                    tracing::warn!(%release, error = %err, "cannot read the catalog; not serving the kept artifact");
                    continue;
                }
            };
            let file = store.kept_artifact(&version);
            let (f, a) = (file.clone(), artifact.clone());
            let same = tokio::task::spawn_blocking(move || matches_artifact(&f, &a)).await.unwrap_or(false);
            if same {
                self.offer(&release, &artifact, &file);
            } else {
                tracing::warn!(%release, file = %file.display(), "the kept artifact no longer matches its release; deleted");
                let _ = std::fs::remove_file(&file);
            }
        }
    }

    /// Runs the publisher until `shutdown`: makes this host's source nodes match what
    /// it offers, in every session.
    pub async fn publish(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut link = self.link.clone();
        let mut published: (i64, HashMap<ReleaseId, bool>) = (0, HashMap::new());
        loop {
            let up = match &*link.borrow_and_update() {
                Link::Up(s) => Some(s.clone()),
                _ => None,
            };
            if let Some(s) = up {
                if published.0 != s.id() {
                    published = (s.id(), HashMap::new());
                    lock(&self.mine).clear();
                }
                self.reconcile(&s, &mut published.1).await;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = link.changed() => {}
                _ = tokio::time::sleep(REPUBLISH) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn reconcile(&self, s: &Session, published: &mut HashMap<ReleaseId, bool>) {
        let gone: Vec<ReleaseId> = std::mem::take(&mut *lock(&self.withdrawn));
        for release in gone {
            published.remove(&release);
            lock(&self.mine).remove(&release);
            if let Err(err) = sources::unpublish(s, &release.service, &release.version).await {
                tracing::warn!(%release, error = %err, "failed to remove this host's source node");
                lock(&self.withdrawn).push(release);
            }
        }
        let offered: Vec<(ReleaseId, PeerSource)> =
            lock(&self.offered).iter().map(|(r, p)| (r.clone(), p.clone())).collect();
        for (release, payload) in offered {
            if published.get(&release) == Some(&payload.complete) {
                continue;
            }
            match sources::publish(s, &release.service, &release.version, &payload).await {
                Ok(None) => {
                    tracing::warn!(%release, "another session holds this host's source node; trying again later")
                }
                Ok(Some(czxid)) => {
                    let what = if payload.complete {
                        "serving the release to peers"
                    } else {
                        "relaying the download to peers"
                    };
                    tracing::info!(%release, address = %payload.address, "{what}");
                    lock(&self.mine).insert(release.clone(), czxid);
                    published.insert(release, payload.complete);
                }
                Err(err) => tracing::warn!(%release, error = %err, "failed to record this host as a source"),
            }
        }
    }
}

/// Whether `file` has `artifact`'s size and sha256.
fn matches_artifact(file: &Path, artifact: &Artifact) -> bool {
    use sha2::Digest;
    let Ok(mut f) = std::fs::File::open(file) else { return false };
    if f.metadata().map(|m| m.len()).ok() != Some(artifact.size) {
        return false;
    }
    let mut hasher = sha2::Sha256::new();
    if std::io::copy(&mut f, &mut hasher).is_err() {
        return false;
    }
    hex::encode(hasher.finalize()).eq_ignore_ascii_case(&artifact.sha256)
}

/// `http://<address>/v1/<service>/<version>` for a checked address.
fn peer_url(address: &str, release: &ReleaseId) -> Option<reqwest::Url> {
    PeerSource::check_address(address).ok()?;
    reqwest::Url::parse(&format!("http://{address}/v1/{}/{}", release.service, release.version)).ok()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sources for Peers {
    fn next<'a>(&'a self, release: &'a ReleaseId, skip: &'a HashSet<String>, after_busy: bool) -> NextTurn<'a> {
        Box::pin(async move {
            let mut after_busy = after_busy;
            let mut ceiling = Duration::from_millis(100);
            loop {
                let Some(s) = self.session().await else {
                    tracing::warn!(%release, "no ZooKeeper session to find peers; downloading from the artifact URL");
                    return Turn::Origin(OriginSlot::unbounded());
                };
                match self.turn(&s, release, skip, after_busy).await {
                    Ok(Some(turn)) => return turn,
                    Ok(None) => {}
                    Err(err) if err.is_fatal() => {
                        tracing::error!(%release, error = %err, "ZooKeeper refuses the peers' nodes (a tree secured before peers existed: run `deployctl init` again); downloading from the artifact URL");
                        return Turn::Origin(OriginSlot::unbounded());
                    }
                    Err(err) => tracing::warn!(%release, error = %err, "failed to look for sources; looking again"),
                }
                after_busy = false;
                let wait = ceiling.mul_f64(rand::random::<f64>() * 0.5 + 0.5);
                tracing::debug!(%release, ?wait, "every source busy and every origin slot taken; waiting");
                tokio::time::sleep(wait).await;
                ceiling = (ceiling * 2).min(MAX_WAIT);
            }
        })
    }

    fn bad(&self, release: &ReleaseId, host: &str) {
        tracing::warn!(%release, peer = %host, "peer served bytes that failed verification; skipped for this release");
        lock(&self.bad).insert((release.clone(), host.to_string()));
    }

    fn offer(&self, release: &ReleaseId, artifact: &Artifact, file: &Path) {
        self.serve(release, artifact, file, true);
    }

    fn withdraw(&self, release: &ReleaseId) {
        self.catalog.remove(release);
        if lock(&self.offered).remove(release).is_some() {
            lock(&self.withdrawn).push(release.clone());
            self.wake.notify_one();
        }
    }

    fn relay(&self, release: &ReleaseId, artifact: &Artifact, file: &Path) {
        if !self.catalog.entries().iter().any(|(r, k)| r == release && k.complete) {
            self.serve(release, artifact, file, false);
        }
    }

    fn unrelay(&self, release: &ReleaseId) {
        if self.catalog.entries().iter().any(|(r, k)| r == release && !k.complete) {
            self.withdraw(release);
        }
    }
}

impl Peers {
    /// Serves `file` as `release` and has the publisher record it.
    fn serve(&self, release: &ReleaseId, artifact: &Artifact, file: &Path, complete: bool) {
        let kept = Kept { path: file.to_path_buf(), size: artifact.size, complete };
        self.catalog.insert(release.clone(), kept);
        let payload = PeerSource {
            host: self.host.clone(),
            address: self.advertise.clone(),
            size: artifact.size,
            sha256: artifact.sha256.to_ascii_lowercase(),
            since: time::now(),
            complete,
        };
        lock(&self.offered).insert(release.clone(), payload);
        lock(&self.withdrawn).retain(|r| r != release);
        self.wake.notify_one();
    }
}

/// An origin slot held: dropping it deletes the slot node (if this session still
/// owns it) and the release's directory if that leaves it empty.
struct SlotGuard {
    session: Session,
    path: String,
    dir: String,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let (s, path, dir) = (self.session.clone(), std::mem::take(&mut self.path), std::mem::take(&mut self.dir));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(err) = sources::delete_own(&s, &path, &dir).await {
                    tracing::warn!(slot = %path, error = %err, "failed to free the origin slot (it goes with the session)");
                }
            });
        }
    }
}
