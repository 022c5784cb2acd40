//! The sources of a release in ZooKeeper: `peers/<service>/<version>/source-<host>`
//! (hosts serving it) and `origin-<slot>` (hosts downloading it from its URL).
//!
//! # Expected flow
//! A downloader lists the release's directory once ([`list`]): the sources and the
//! taken origin slots, in one request. It reads the payload of the few sources it
//! tries ([`address`]), or takes a free origin slot with a plain ephemeral create
//! ([`take_slot`]): ZooKeeper lets one create of a name succeed, so at most
//! `origin_fetches` hosts hold a slot at once. A host that verified a release records
//! itself with [`publish`] and removes itself with [`unpublish`], which also removes
//! the release's directory once empty.
//!
//! # Guarantees
//! - A host only ever deletes nodes its own session owns.
//! - Every payload read here is untrusted: an address that is not `HOST:PORT` is
//!   refused with an error naming the node.

use crate::coord::session::Session;
use crate::coord::zk::{self, ZkError};
use std::collections::BTreeSet;
use znode_schema::codec::DecodeErrorKind;
use znode_schema::layout::{ORIGIN_PREFIX, SOURCE_PREFIX};
use znode_schema::{OriginFetch, PeerSource, encode, time};
use zookeeper_client as zkc;

/// A release's directory, as one listing shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The hosts that serve it.
    pub sources: Vec<String>,
    /// The origin slots taken.
    pub slots: BTreeSet<u32>,
}

/// Lists the sources and origin slots of `service` `version` (one request).
pub async fn list(s: &Session, service: &str, version: &str) -> Result<Listing, ZkError> {
    let names = zk::children(&s.client, &s.layout.peers_release(service, version)).await?;
    let mut out = Listing::default();
    for name in names {
        if let Some(host) = name.strip_prefix(SOURCE_PREFIX) {
            out.sources.push(host.to_string());
        } else if let Some(slot) = name.strip_prefix(ORIGIN_PREFIX).and_then(|n| n.parse().ok()) {
            out.slots.insert(slot);
        }
    }
    Ok(out)
}

/// What a source node says, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// `HOST:PORT`, checked.
    pub address: String,
    /// Whether the host holds the whole artifact verified (else it relays a download).
    pub complete: bool,
    /// The node's creation zxid: sources created earlier have smaller ones.
    pub czxid: i64,
}

/// Where `host` serves `service` `version`; `Ok(None)` when it stopped serving it,
/// `Err` for a payload that is not a valid source.
pub async fn address(s: &Session, service: &str, version: &str, host: &str) -> Result<Option<Found>, ZkError> {
    let path = s.layout.peer_source(service, version, host);
    let Some((source, stat, _)) = zk::get::<PeerSource>(&s.client, &path).await? else { return Ok(None) };
    match PeerSource::check_address(&source.address) {
        Ok(()) => Ok(Some(Found { address: source.address, complete: source.complete, czxid: stat.czxid })),
        Err(why) => {
            let kind = DecodeErrorKind::Invalid { field: "address".into(), message: why };
            Err(ZkError::Decode(znode_schema::DecodeError { path, kind }))
        }
    }
}

/// Creates `path` as an ephemeral node holding `data`, creating the release's
/// directory when missing (it may be removed by another host between the two);
/// returns the node's creation zxid.
async fn create_ephemeral(s: &Session, dir: &str, path: &str, data: &[u8]) -> Result<i64, zkc::Error> {
    for _ in 0..3 {
        let acl = s.acl(path);
        match s.client.create(path, data, &acl.options(zkc::CreateMode::Ephemeral)).await {
            Err(zkc::Error::NoNode) => {
                if let Err(e) = zk::mkdir_p(s, dir).await {
                    return Err(e.zk().cloned().unwrap_or(zkc::Error::NoNode));
                }
            }
            other => return other.map(|(stat, _)| stat.czxid),
        }
    }
    Err(zkc::Error::NoNode)
}

/// Takes a free origin slot of `service` `version` among `0..origin_fetches`
/// (skipping those `taken`); `Ok(None)` when every one is taken.
pub async fn take_slot(
    s: &Session,
    service: &str,
    version: &str,
    origin_fetches: u32,
    taken: &BTreeSet<u32>,
) -> Result<Option<String>, ZkError> {
    let dir = s.layout.peers_release(service, version);
    let data = encode(&OriginFetch { host: s.host.clone(), since: time::now() });
    for slot in (0..origin_fetches).filter(|n| !taken.contains(n)) {
        let path = s.layout.origin_slot(service, version, slot);
        match create_ephemeral(s, &dir, &path, &data).await {
            Ok(_) => return Ok(Some(path)),
            Err(zkc::Error::NodeExists) => continue,
            Err(e) => return Err(ZkError::call("create", path, e)),
        }
    }
    Ok(None)
}

/// Records this host as a source of `service` `version` (creating its node, or
/// rewriting the one this session owns; one left by this host's earlier sessions is
/// replaced); returns the node's creation zxid, or `None` when another session
/// holds it (a host with the same id: tried again later).
pub async fn publish(s: &Session, service: &str, version: &str, payload: &PeerSource) -> Result<Option<i64>, ZkError> {
    let dir = s.layout.peers_release(service, version);
    let path = s.layout.peer_source(service, version, &s.host);
    let data = encode(payload);
    for _ in 0..3 {
        match create_ephemeral(s, &dir, &path, &data).await {
            Ok(czxid) => return Ok(Some(czxid)),
            Err(zkc::Error::NodeExists) => {}
            Err(e) => return Err(ZkError::call("create", path, e)),
        }
        match s.client.check_stat(&path).await {
            Ok(Some(stat)) if stat.ephemeral_owner == s.id() => {
                return match s.client.set_data(&path, &data, None).await {
                    Ok(_) => Ok(Some(stat.czxid)),
                    Err(e) => Err(ZkError::call("set", path, e)),
                };
            }
            Ok(Some(stat)) if s.is_earlier(stat.ephemeral_owner) => {
                match s.client.delete(&path, Some(stat.version)).await {
                    Ok(()) | Err(zkc::Error::NoNode | zkc::Error::BadVersion) => {}
                    Err(e) => return Err(ZkError::call("delete", path, e)),
                }
            }
            Ok(Some(_)) => return Ok(None),
            Ok(None) => {}
            Err(e) => return Err(ZkError::call("exists", path, e)),
        }
    }
    Ok(None)
}

/// Deletes `path` when this session owns it, then the release's directory `dir`
/// when that leaves it empty.
pub async fn delete_own(s: &Session, path: &str, dir: &str) -> Result<(), ZkError> {
    if zk::owner(&s.client, path).await? == Some(s.id()) {
        match s.client.delete(path, None).await {
            Ok(()) | Err(zkc::Error::NoNode) => {}
            Err(e) => return Err(ZkError::call("delete", path, e)),
        }
    }
    match s.client.delete(dir, None).await {
        Ok(()) | Err(zkc::Error::NoNode | zkc::Error::NotEmpty) => Ok(()),
        Err(e) => Err(ZkError::call("delete", dir, e)),
    }
}

/// Removes this host's source node of `service` `version`.
pub async fn unpublish(s: &Session, service: &str, version: &str) -> Result<(), ZkError> {
    let dir = s.layout.peers_release(service, version);
    delete_own(s, &s.layout.peer_source(service, version, &s.host), &dir).await
}

/// Deletes the empty release directories under `peers/<service>` other than
/// `version`'s (left when their last source's session expired): one listing and one
/// delete per directory, refused by ZooKeeper for a directory that is not empty.
/// Done by the host holding a release's origin slot 0, so once per release.
pub async fn tidy(s: &Session, service: &str, version: &str) -> Result<usize, ZkError> {
    let mut removed = 0;
    for v in zk::children(&s.client, &s.layout.peers_service(service)).await? {
        if v == version {
            continue;
        }
        let dir = s.layout.peers_release(service, &v);
        match s.client.delete(&dir, None).await {
            Ok(()) => removed += 1,
            Err(zkc::Error::NoNode | zkc::Error::NotEmpty) => {}
            Err(e) => return Err(ZkError::call("delete", dir, e)),
        }
    }
    Ok(removed)
}
