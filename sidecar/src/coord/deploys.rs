//! The one reader of the deploy order queue (`deploy/`), with one policy for
//! entries it cannot read.
//!
//! # Policy for unreadable entries
//! An entry whose payload does not decode names no service, so nobody can tell whose
//! rollout it is. It is kept in the queue as [`Slot::entry`] `None`: it is never
//! matched to a service (no host fences on it, recovers from it or completes it), and
//! as the head it blocks every rollout behind it until an operator deletes it
//! (`deployctl abort`, or `zkCli.sh deleteall`). It is logged, never an error: one bad
//! znode does not tear down a session, and so never another service's step.
//!
//! An entry deleted between the listing and the read (completed, aborted) is skipped.

use super::session::Session;
use super::zk::{self, ZkError};
use znode_schema::{DeployEntry, DeployName, HistoryEvent, decode, encode, seq::sorted_deploys};
use zookeeper_client::{self as zkc, OneshotWatcher};

/// One entry of the queue as read.
#[derive(Debug, Clone)]
pub struct Slot {
    /// Its name (`deploy-<seq>`).
    pub name: DeployName,
    /// Its payload; `None` when it could not be decoded.
    pub entry: Option<DeployEntry>,
    /// Its data version, checked and bumped by the fence.
    pub version: i32,
    /// Its raw bytes, written back unchanged by the fence (unknown fields survive).
    pub raw: Vec<u8>,
    /// When it was last written (ms since the epoch, the server's clock): its
    /// creation, a fence, a step's end under `progress_deadline`, an operator's change.
    pub mtime: i64,
}

impl Slot {
    /// Whether this is the rollout of `service` at `version`.
    pub fn is(&self, service: &str, version: &str) -> bool {
        self.entry.as_ref().is_some_and(|e| e.service == service && e.version == version)
    }

    /// Whether `host`'s step failed in this rollout (the entry's `failed_hosts`: the
    /// failure memory, which survives restarts).
    pub fn failed_here(&self, host: &str) -> bool {
        self.entry.as_ref().is_some_and(|e| e.failed_hosts.iter().any(|h| h == host))
    }

    /// The version a rolling-back entry moves its stepped hosts back to.
    pub fn rolling_back_to(&self) -> Option<&str> {
        self.entry.as_ref().and_then(|e| e.rolling_back_to.as_deref())
    }

    /// Whether this entry is a rollout of `service` (any version).
    pub fn of(&self, service: &str) -> bool {
        self.entry.as_ref().is_some_and(|e| e.service == service)
    }
}

/// The deploy queue, head first.
#[derive(Debug, Clone, Default)]
pub struct Queue {
    /// The entries in sequence order.
    pub slots: Vec<Slot>,
}

impl Queue {
    /// The head entry (lowest sequence), if any.
    pub fn head(&self) -> Option<&Slot> {
        self.slots.first()
    }

    /// The first entry of `service` in queue order: its current rollout.
    pub fn of(&self, service: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| s.of(service))
    }

    /// The rollout of `service` at `version`, when it is that service's first entry
    /// (an older rollout of the service ahead of it goes first) and it is not rolling
    /// back (`on_halt = rollback`: then nobody moves to `version`).
    pub fn rollout(&self, service: &str, version: &str) -> Option<&Slot> {
        self.of(service).filter(|s| s.is(service, version) && s.rolling_back_to().is_none())
    }

    /// The first entry of `service` when it rolls back (`on_halt = rollback`).
    pub fn rolling_back(&self, service: &str) -> Option<&Slot> {
        self.of(service).filter(|s| s.rolling_back_to().is_some())
    }

    /// Every entry of `service`.
    pub fn all_of<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a Slot> + 'a {
        self.slots.iter().filter(move |s| s.of(service))
    }
}

/// What to watch while reading.
#[derive(Debug, Clone, Copy, Default)]
pub struct Watch {
    /// The children of `deploy/` (a new head, a completed entry).
    pub dir: bool,
    /// The head entry's data (a fence, pause or halt rewrites it).
    pub head: bool,
}

/// Reads the whole queue (deploy entries are few: one per service rollout) with the
/// watches asked for.
pub async fn read(s: &Session, watch: Watch) -> Result<(Queue, Vec<OneshotWatcher>), ZkError> {
    let dir = s.layout.deploy_dir();
    let mut watches = Vec::new();
    let children = if watch.dir {
        let (c, w) = s.client.list_and_watch_children(&dir).await.map_err(|e| ZkError::call("list", &dir, e))?;
        watches.push(w);
        c
    } else {
        zk::children(&s.client, &dir).await?
    };
    let mut slots = Vec::new();
    for name in sorted_deploys(&children) {
        let path = s.layout.deploy_entry(&name);
        let got = if watch.head && slots.is_empty() {
            s.client.get_and_watch_data(&path).await.map(|(raw, stat, w)| {
                watches.push(w);
                (raw, stat)
            })
        } else {
            s.client.get_data(&path).await
        };
        let (raw, stat) = match got {
            Ok(r) => r,
            Err(zkc::Error::NoNode) => continue,
            Err(e) => return Err(ZkError::call("get", path, e)),
        };
        let entry = match decode::<DeployEntry>(&path, &raw) {
            Ok(e) => Some(e),
            Err(err) => {
                tracing::error!(error = %err, "unreadable deploy entry: it blocks the queue while it is the head");
                None
            }
        };
        slots.push(Slot { name, entry, version: stat.version, raw, mtime: stat.mtime });
    }
    Ok((Queue { slots }, watches))
}

/// Rewrites `slot`'s entry as `entry` at the data version read, with history event
/// `ev`, in one multi. `false` when the entry moved since the read (someone fenced,
/// paused, halted or deleted it first): re-read and decide again.
pub async fn rewrite(s: &Session, slot: &Slot, entry: &DeployEntry, ev: &HistoryEvent) -> Result<bool, ZkError> {
    let (prefix, data) = super::history::create_op(&s.layout, ev);
    let path = s.layout.deploy_entry(&slot.name);
    let ev_acl = s.acl(&prefix);
    let mut txn = s.client.new_multi_writer();
    let built = (|| {
        txn.add_set_data(&path, &encode(entry), Some(slot.version))?;
        txn.add_create(&prefix, &data, &ev_acl.options(zkc::CreateMode::PersistentSequential))?;
        Ok::<_, zkc::Error>(())
    })();
    built.map_err(|err| ZkError::call("multi", &path, err))?;
    match txn.commit().await {
        Ok(_) => Ok(true),
        Err(zkc::MultiWriteError::OperationFailed { .. }) => Ok(false),
        Err(zkc::MultiWriteError::RequestFailed { source }) => Err(ZkError::call("multi", path, source)),
    }
}
