//! The fence (SPEC step 4): the decision to step, committed in one transaction.
//!
//! # Expected flow
//! A front host reads the head deploy entry (remembering its data version), counts
//! online hosts and markers, decides with [`crate::turn::decide`], and commits:
//! 1. `setData(deploy entry, same bytes, version read)`: fails with BadVersion when
//!    anyone else fenced, paused or halted since the read, and bumps the version;
//! 2. `check(ticket, version 0)`: the ticket (and so this session) still exists;
//! 3. `create(upgrading/<host>)`: the persistent slot marker;
//! 4. `delete(current/<service>/<host>)`, when the host was online.
//!
//! # Guarantees
//! No two hosts act on the same count: every fence rewrites the entry it read, so a
//! second fence based on the same read fails. Pause and halt rewrite the entry too,
//! so they take effect atomically: no fence commits after them on an older read.
//!
//! # ConnectionLoss
//! A fence whose reply was lost may have landed. The caller re-reads: the marker
//! exists if and only if the fence committed (only this host creates it).

use crate::session::Session;
use crate::turn::{Front, Head};
use crate::zk::{self, ZkError};
use znode_schema::{DeployEntry, DeployName, TicketName, Upgrading, decode, encode, seq::sorted_deploys, time};
use zookeeper_client::{self as zkc, MultiWriteError, OneshotWatcher};

/// The outcome of a fence attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fenced {
    /// The slot is ours.
    Won,
    /// Someone moved between the read and the commit: read and decide again.
    Moved,
}

/// Reads the head of `deploy/`, with a watch on the directory (for front hosts).
pub async fn head(s: &Session, watch: bool) -> Result<(Option<Head>, Option<OneshotWatcher>), ZkError> {
    let dir = s.layout.deploy_dir();
    let (children, watcher) = if watch {
        let (c, w) = s.client.list_and_watch_children(&dir).await.map_err(|e| ZkError::call("list", &dir, e))?;
        (c, Some(w))
    } else {
        (zk::children(&s.client, &dir).await?, None)
    };
    for name in sorted_deploys(&children) {
        let path = s.layout.deploy_entry(&name);
        match s.client.get_data(&path).await {
            Ok((raw, stat)) => {
                let entry = match decode::<DeployEntry>(&path, &raw) {
                    Ok(e) => Some(e),
                    Err(err) => {
                        tracing::error!(error = %err, "unreadable deploy entry at the head of the queue");
                        None
                    }
                };
                return Ok((Some(Head { name, entry, version: stat.version, raw }), watcher));
            }
            Err(zkc::Error::NoNode) => continue,
            Err(e) => return Err(ZkError::call("get", path, e)),
        }
    }
    Ok((None, watcher))
}

/// What a front host reads before deciding, and the watches that wake it when any
/// of it changes: `deploy/`, the head entry, `current/<service>`, `upgrading/`.
pub async fn front(s: &Session, service: &str) -> Result<(Front, Vec<OneshotWatcher>), ZkError> {
    let (head, dir_watch) = head(s, true).await?;
    let mut watches: Vec<OneshotWatcher> = dir_watch.into_iter().collect();
    let cur = s.layout.current_service(service);
    let (online, w) = s.client.list_and_watch_children(&cur).await.map_err(|e| ZkError::call("list", &cur, e))?;
    watches.push(w);
    let self_online = online.contains(&s.host);
    let mut upgrading = 0;
    if let Some(h) = &head {
        let entry = s.layout.deploy_entry(&h.name);
        if let Ok((_, _, w)) = s.client.get_and_watch_data(&entry).await {
            watches.push(w);
        }
        let dir = s.layout.upgrading_dir(&h.name);
        match s.client.list_and_watch_children(&dir).await {
            Ok((markers, w)) => {
                upgrading = markers.len() as u32;
                watches.push(w);
            }
            Err(zkc::Error::NoNode) => {}
            Err(e) => return Err(ZkError::call("list", dir, e)),
        }
    }
    Ok((Front { head, online: online.len() as u32, upgrading, self_online }, watches))
}

/// Commits the fence for `ticket`, moving from `from` to `to`.
///
/// The `upgrading/` directory of the entry is created only when the transaction
/// says it is missing (the first fence of a rollout): creating it every time would
/// cost every handoff a failed write, which ZooKeeper logs and fsyncs like any other.
pub async fn commit(
    s: &Session,
    service: &str,
    head: &Head,
    ticket: &TicketName,
    self_online: bool,
    from: Option<&str>,
    to: &str,
) -> Result<Fenced, ZkError> {
    let marker = Upgrading { host: s.host.clone(), from: from.map(str::to_string), to: to.into(), since: time::now() };
    let attempt = || try_commit(s, service, head, ticket, self_online, &marker);
    match attempt().await? {
        Some(fenced) => Ok(fenced),
        None => {
            zk::mkdir_p(&s.client, &s.layout.upgrading_dir(&head.name)).await?;
            Ok(attempt().await?.unwrap_or(Fenced::Moved))
        }
    }
}

/// One fence transaction; `None` when the entry's `upgrading/` directory is missing.
async fn try_commit(
    s: &Session,
    service: &str,
    head: &Head,
    ticket: &TicketName,
    self_online: bool,
    marker: &Upgrading,
) -> Result<Option<Fenced>, ZkError> {
    let entry = s.layout.deploy_entry(&head.name);
    let marker_path = s.layout.upgrading(&head.name, &s.host);
    let ticket_path = s.layout.ticket(service, ticket);
    let current = s.layout.current_host(service, &s.host);
    let mut txn = s.client.new_multi_writer();
    let built = (|| {
        txn.add_set_data(&entry, &head.raw, Some(head.version))?;
        txn.add_check_version(&ticket_path, 0)?;
        txn.add_create(&marker_path, &encode(marker), &zk::persistent())?;
        if self_online {
            txn.add_delete(&current, None)?;
        }
        Ok::<_, zkc::Error>(())
    })();
    built.map_err(|e| ZkError::call("multi", &entry, e))?;
    match txn.commit().await {
        Ok(_) => Ok(Some(Fenced::Won)),
        // Index 2 is the marker's create: NoNode there means its parent is missing.
        Err(MultiWriteError::OperationFailed { index: 2, source: zkc::Error::NoNode }) => Ok(None),
        Err(MultiWriteError::OperationFailed { index, source }) => {
            tracing::debug!(index, error = %source, "fence lost; re-reading");
            Ok(Some(Fenced::Moved))
        }
        Err(MultiWriteError::RequestFailed { source: zkc::Error::ConnectionLoss }) => {
            // Landed or not: the marker tells.
            match s.client.check_stat(&marker_path).await {
                Ok(Some(_)) => Ok(Some(Fenced::Won)),
                Ok(None) => Ok(Some(Fenced::Moved)),
                Err(e) => Err(ZkError::call("exists", marker_path, e)),
            }
        }
        Err(MultiWriteError::RequestFailed { source }) => Err(ZkError::call("multi", entry, source)),
    }
}

/// Finds this host's marker in any deploy entry (after a crash or a session loss).
pub async fn find_marker(s: &Session) -> Result<Option<(DeployName, Upgrading)>, ZkError> {
    for name in sorted_deploys(&zk::children(&s.client, &s.layout.deploy_dir()).await?) {
        let path = s.layout.upgrading(&name, &s.host);
        match zk::get::<Upgrading>(&s.client, &path).await {
            Ok(Some((m, _, _))) => return Ok(Some((name, m))),
            Ok(None) => {}
            Err(ZkError::Decode(err)) => {
                // A marker we cannot read is still ours: treat it as a step from nowhere.
                tracing::error!(error = %err, "unreadable upgrading marker; undoing the step");
                let m = Upgrading { host: s.host.clone(), from: None, to: String::new(), since: time::now() };
                return Ok(Some((name, m)));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}
