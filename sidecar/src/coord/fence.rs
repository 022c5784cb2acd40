//! The fence (SPEC step 4): the decision to step, committed in one transaction.
//!
//! # Expected flow
//! A front host reads the head deploy entry (remembering its data version), counts
//! online hosts and markers, decides with [`crate::coord::turn::decide`], and commits:
//! 1. `setData(deploy entry, same bytes, version read)`: fails with BadVersion when
//!    anyone else fenced, paused or halted since the read, and bumps the version;
//! 2. `check(ticket, version 0)`: the ticket (and so this session) still exists (a
//!    host going back under `on_halt = rollback` has no ticket);
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

use super::deploys::{self, Queue, Watch};
use super::session::Session;
use super::turn::{Front, Head};
use super::zk::{self, ZkError};
use znode_schema::{DeployName, TicketName, Upgrading, decode, encode, seq::sorted_deploys, time};
use zookeeper_client::{self as zkc, MultiWriteError, OneshotWatcher};

/// The outcome of a fence attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fenced {
    /// The slot is ours.
    Won,
    /// Someone moved between the read and the commit: read and decide again.
    Moved,
}

/// What a front host reads before deciding, and the watches that wake it when any
/// of it changes: `deploy/`, the head entry, `current/<service>`, and the head's
/// `upgrading/` when the head is this rollout. Also returns the queue as read.
pub async fn front(s: &Session, service: &str, version: &str) -> Result<(Front, Queue, Vec<OneshotWatcher>), ZkError> {
    let (queue, mut watches) = deploys::read(s, Watch { dir: true, head: true }).await?;
    let cur = s.layout.current_service(service);
    let (online, w) = s.client.list_and_watch_children(&cur).await.map_err(|e| ZkError::call("list", &cur, e))?;
    watches.push(w);
    let mut markers = Vec::new();
    if let Some(h) = queue.head().filter(|h| h.is(service, version)) {
        let dir = s.layout.upgrading_dir(&h.name);
        match s.client.list_and_watch_children(&dir).await {
            Ok((m, w)) => {
                markers = m;
                watches.push(w);
            }
            Err(zkc::Error::NoNode) => {}
            Err(e) => return Err(ZkError::call("list", dir, e)),
        }
    }
    let front = Front::new(queue.head().cloned(), &online, &markers, &s.host);
    Ok((front, queue, watches))
}

/// The front as one consistent snapshot, without watches: `deploy/`, `entry`,
/// `current/<service>` and `entry`'s `upgrading/`, read in one multi-read (one
/// request, all of it as of one point in ZooKeeper's order). `None` unless `entry`
/// heads the queue and decodes, or when the server cannot multi-read: then
/// [`front`] reads it all again with watches.
///
/// This is the handoff's read: a host whose turn it is fences right after it, and a
/// fence that sets no watches first wakes none of its own (its fence rewrites the
/// entry, deletes its registration and creates its marker, all of which [`front`]
/// watches). A host that must wait reads [`front`] for its watches.
pub async fn peek(s: &Session, service: &str, entry: &DeployName) -> Result<Option<Front>, ZkError> {
    let dir = s.layout.deploy_dir();
    let entry_path = s.layout.deploy_entry(entry);
    let cur = s.layout.current_service(service);
    let up = s.layout.upgrading_dir(entry);
    let mut reader = s.client.new_multi_reader();
    let built = (|| {
        reader.add_get_children(&dir)?;
        reader.add_get_data(&entry_path)?;
        reader.add_get_children(&cur)?;
        reader.add_get_children(&up)?;
        Ok::<_, zkc::Error>(())
    })();
    built.map_err(|e| ZkError::call("multi-read", &dir, e))?;
    let results = match reader.commit().await {
        Ok(r) => r,
        Err(zkc::Error::ConnectionLoss) => return Err(ZkError::call("multi-read", dir, zkc::Error::ConnectionLoss)),
        Err(e) => {
            tracing::debug!(error = %e, "multi-read refused; reading the front one by one");
            return Ok(None);
        }
    };
    let [deploys, data, online, markers] = <[zkc::MultiReadResult; 4]>::try_from(results).map_err(|r| {
        ZkError::call("multi-read", &dir, zkc::Error::UnexpectedError(format!("{} results for 4 reads", r.len())))
    })?;
    use zkc::MultiReadResult::{Children, Data, Error};
    let (Children { children: deploys }, Data { data, stat }, Children { children: online }) = (deploys, data, online)
    else {
        return Ok(None);
    };
    if sorted_deploys(&deploys).first() != Some(entry) {
        return Ok(None);
    }
    let Ok(decoded) = decode::<znode_schema::DeployEntry>(&entry_path, &data) else { return Ok(None) };
    let markers = match markers {
        Children { children } => children,
        Error { err: zkc::Error::NoNode } => Vec::new(),
        _ => return Ok(None),
    };
    let head = Head { name: *entry, entry: Some(decoded), version: stat.version, raw: data, mtime: stat.mtime };
    Ok(Some(Front::new(Some(head), &online, &markers, &s.host)))
}

/// Commits the fence for `ticket`, moving from `from` to `to`.
///
/// The `upgrading/` directory of the entry is created only when the transaction
/// says it is missing (the first fence of a rollout): creating it every time would
/// cost every handoff a failed write, which ZooKeeper logs and fsyncs like any other.
#[allow(clippy::too_many_arguments)]
pub async fn commit(
    s: &Session,
    service: &str,
    head: &Head,
    ticket: Option<&TicketName>,
    self_online: bool,
    from: Option<&str>,
    to: &str,
    canary: u32,
) -> Result<Fenced, ZkError> {
    let marker = Upgrading {
        host: s.host.clone(),
        service: Some(service.into()),
        from: from.map(str::to_string),
        to: to.into(),
        since: time::now(),
    };
    // The entry is rewritten as read (bumping its version), or, in a canary phase,
    // with this host added to its canaries.
    let data = match head.entry.as_ref() {
        Some(e) if e.canary_phase(canary) && !e.canaries.contains(&s.host) => {
            let mut e = e.clone();
            e.canaries.push(s.host.clone());
            encode(&e)
        }
        _ => head.raw.clone(),
    };
    let attempt = || try_commit(s, service, head, &data, ticket, self_online, &marker);
    match attempt().await? {
        Some(fenced) => Ok(fenced),
        None => {
            // Not mkdir -p: that would re-create an entry an operator just deleted
            // (abort), with empty data, at the head of the queue.
            let dir = s.layout.upgrading_dir(&head.name);
            match s.client.create(&dir, b"", &s.acl(&dir).options(zkc::CreateMode::Persistent)).await {
                Ok(_) | Err(zkc::Error::NodeExists) => {}
                Err(zkc::Error::NoNode) => return Ok(Fenced::Moved),
                Err(e) => return Err(ZkError::call("create", dir, e)),
            }
            Ok(attempt().await?.unwrap_or(Fenced::Moved))
        }
    }
}

/// One fence transaction; `None` when the entry's `upgrading/` directory is missing.
async fn try_commit(
    s: &Session,
    service: &str,
    head: &Head,
    data: &[u8],
    ticket: Option<&TicketName>,
    self_online: bool,
    marker: &Upgrading,
) -> Result<Option<Fenced>, ZkError> {
    let entry = s.layout.deploy_entry(&head.name);
    let marker_path = s.layout.upgrading(&head.name, &s.host);
    let ticket_path = ticket.map(|t| s.layout.ticket(service, t));
    let current = s.layout.current_host(service, &s.host);
    let marker_acl = s.acl(&marker_path);
    let marker_index = if ticket_path.is_some() { 2 } else { 1 };
    let mut txn = s.client.new_multi_writer();
    let built = (|| {
        txn.add_set_data(&entry, data, Some(head.version))?;
        if let Some(t) = &ticket_path {
            txn.add_check_version(t, 0)?;
        }
        txn.add_create(&marker_path, &encode(marker), &marker_acl.options(zkc::CreateMode::Persistent))?;
        if self_online {
            txn.add_delete(&current, None)?;
        }
        Ok::<_, zkc::Error>(())
    })();
    built.map_err(|e| ZkError::call("multi", &entry, e))?;
    match txn.commit().await {
        Ok(_) => Ok(Some(Fenced::Won)),
        // The marker's create follows the entry (and the ticket's check): NoNode there
        // means its parent is missing.
        Err(MultiWriteError::OperationFailed { index, source: zkc::Error::NoNode }) if index == marker_index => {
            Ok(None)
        }
        Err(MultiWriteError::OperationFailed { index, source }) => {
            tracing::info!(index, error = %source, "fence lost; re-reading");
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

/// Finds this host's marker of `service` (after a crash or a session loss): only
/// under entries of `service` (a host runs several services, each recovers its own),
/// and, where the marker names its service, only a marker naming `service`.
pub async fn find_marker(
    s: &Session,
    queue: &Queue,
    service: &str,
) -> Result<Option<(DeployName, Upgrading)>, ZkError> {
    for slot in queue.all_of(service) {
        let path = s.layout.upgrading(&slot.name, &s.host);
        match zk::get::<Upgrading>(&s.client, &path).await {
            Ok(Some((m, _, _))) if m.service.as_deref().is_none_or(|svc| svc == service) => {
                return Ok(Some((slot.name, m)));
            }
            Ok(Some((m, _, _))) => {
                tracing::error!(path, marker_service = ?m.service, "a marker naming another service under this service's entry; leaving it alone");
            }
            Ok(None) => {}
            Err(ZkError::Decode(err)) => {
                // A marker we cannot read under our own service's entry is still ours:
                // treat it as a step from nowhere (undone).
                tracing::error!(error = %err, "unreadable upgrading marker; undoing the step");
                let m = Upgrading {
                    host: s.host.clone(),
                    service: Some(service.into()),
                    from: None,
                    to: String::new(),
                    since: time::now(),
                };
                return Ok(Some((slot.name, m)));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}
