//! Where a release's bytes may come from besides its artifact URL: other hosts.
//!
//! The host half only knows this trait; `crate::peers` implements it with ZooKeeper
//! (which hosts serve a release, the origin slots) and this host's peer server.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use znode_schema::Artifact;

/// One release of one service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReleaseId {
    /// The service name (validated).
    pub service: String,
    /// The version (validated).
    pub version: String,
}

impl fmt::Display for ReleaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.service, self.version)
    }
}

/// A host that says it serves a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its host id.
    pub host: String,
    /// Where its artifact is (`http://<address>/v1/<service>/<version>`), built from
    /// a checked address.
    pub url: reqwest::Url,
}

/// One of the `origin_fetches` slots of a release: while it is held this host may
/// download from the artifact URL. Dropping it frees the slot.
pub struct OriginSlot(Option<Box<dyn Send + Sync>>);

impl OriginSlot {
    /// A slot held by `guard` (which frees it when dropped).
    pub fn held(guard: Box<dyn Send + Sync>) -> Self {
        OriginSlot(Some(guard))
    }

    /// No slot: the origin is used without one (peers unreachable through ZooKeeper).
    pub fn unbounded() -> Self {
        OriginSlot(None)
    }

    /// Whether a slot is actually held.
    pub fn is_held(&self) -> bool {
        self.0.is_some()
    }
}

impl fmt::Debug for OriginSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("OriginSlot").field(&self.is_held()).finish()
    }
}

/// What to try next.
#[derive(Debug)]
pub enum Turn {
    /// These peers, in this order (a few: trying them costs no ZooKeeper request).
    Peers(Vec<Peer>),
    /// The artifact URL.
    Origin(OriginSlot),
}

/// A finished download, and the origin slot it may still hold: drop it once the
/// release is offered to peers, so a waiting host never sees neither.
#[derive(Debug, Default)]
pub struct Fetched {
    /// The slot, if the bytes came (partly) from the origin through one.
    pub slot: Option<OriginSlot>,
}

/// The boxed future of [`Sources::next`].
pub type NextTurn<'a> = Pin<Box<dyn Future<Output = Turn> + Send + 'a>>;

/// The peers of this host, as a downloader uses them.
pub trait Sources: Send + Sync + fmt::Debug {
    /// The next sources to try for `release`, never one of `skip`: peers serving it,
    /// or an origin slot when none does (or `after_busy`: every peer tried was
    /// busy) and one is free; waits, bounded, when neither.
    fn next<'a>(&'a self, release: &'a ReleaseId, skip: &'a HashSet<String>, after_busy: bool) -> NextTurn<'a>;

    /// `host` served bytes that failed verification: never pick it again for `release`.
    fn bad(&self, release: &ReleaseId, host: &str);

    /// This host verified `release` (size, sha256, signature) and keeps its artifact
    /// at `file`: serve it and record this host as a source.
    fn offer(&self, release: &ReleaseId, artifact: &Artifact, file: &Path);

    /// This host no longer holds `release`.
    fn withdraw(&self, release: &ReleaseId);

    /// This host is downloading `release` into `file`: serve the bytes it holds so
    /// far to peers (relaying). Called again with the renamed file once the download
    /// is verified; [`Sources::offer`] then replaces it with the kept artifact.
    fn relay(&self, release: &ReleaseId, artifact: &Artifact, file: &Path);

    /// The download of `release` ended without a verified artifact: stop relaying it
    /// (unless it was offered meanwhile).
    fn unrelay(&self, release: &ReleaseId);
}
