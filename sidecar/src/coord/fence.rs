//! The fence (SPEC step 4): the decision to step, committed in one transaction.
//!
//! # Expected flow
//! A front host reads the head deploy entry (remembering its data version) and the
//! data version of its `upgrading/`, counts online hosts and markers, decides with
//! [`crate::coord::turn::decide`], and commits one of two fences.
//!
//! The rewriting fence (SPEC step 4):
//! 1. `setData(deploy entry, same bytes, version read)`: fails with BadVersion when
//!    anyone else fenced (rewriting), paused or halted since the read, and bumps the
//!    version;
//! 2. `check(upgrading/, version read)`: no parallel fence committed since the read
//!    (`create(upgrading/)` when it was missing: the first fence of a rollout);
//! 3. `check(ticket, version 0)`: the ticket (and so this session) still exists (a
//!    host going back under `on_halt = rollback` has no ticket);
//! 4. `create(upgrading/<host>)`: the persistent slot marker;
//! 5. `delete(current/<service>/<host>)`, when the host was online.
//!
//! The parallel fence ([`crate::coord::turn::parallel`], issue 16), when the count
//! read covers every front host fencing at once: `check(deploy entry, version read)`
//! and `setData(upgrading/, any version)` instead of 1 and 2, then 3 to 5.
//!
//! # Guarantees
//! A rewriting fence acts on a count nobody else fenced on: a second fence (of either
//! kind) based on the same read fails. Parallel fences of the front may share a
//! count, which then covers all of them (the slots and the quorum hold whatever
//! their order). Pause and halt rewrite the entry, so they take effect atomically:
//! no fence commits after them on an older read.
//!
//! # ConnectionLoss
//! A fence whose reply was lost may have landed. The caller re-reads: the marker
//! exists if and only if the fence committed (only this host creates it).

use super::deploys::{self, Queue, Watch};
use super::session::Session;
use super::turn::{self, Front, Head};
use super::zk::{self, ZkError};
use znode_schema::seq::{sorted_deploys, sorted_tickets};
use znode_schema::{DeployName, Staging, TicketName, Upgrading, decode, encode, time};
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
    let mut slots = None;
    if let Some(h) = queue.head().filter(|h| h.is(service, version)) {
        let dir = s.layout.upgrading_dir(&h.name);
        match s.client.get_and_watch_children(&dir).await {
            Ok((m, stat, w)) => {
                markers = m;
                slots = Some(stat.version);
                watches.push(w);
            }
            Err(zkc::Error::NoNode) => {}
            Err(e) => return Err(ZkError::call("list", dir, e)),
        }
    }
    let front = Front { slots, ..Front::new(queue.head().cloned(), &online, &markers, &s.host) };
    Ok((front, queue, watches))
}

/// The front as one consistent snapshot ([`Snapshot`]), without watches:
/// `deploy/`, `entry`, `current/<service>`, `entry`'s `upgrading/` (children and
/// data version) and the service's tickets, read in one multi-read (one request,
/// all of it as of one point in ZooKeeper's order). `None` unless `entry` heads the
/// queue and decodes, or when the server cannot multi-read: then [`front`] reads it
/// all again with watches.
///
/// This is the handoff's read: a host whose turn it is fences right after it, and a
/// fence that sets no watches first wakes none of its own (its fence writes the
/// entry or `upgrading/`, deletes its registration and creates its marker, all of
/// which [`front`] watches). A host that must wait reads [`front`] for its watches.
pub async fn peek(s: &Session, service: &str, entry: &DeployName) -> Result<Option<Snapshot>, ZkError> {
    let dir = s.layout.deploy_dir();
    let entry_path = s.layout.deploy_entry(entry);
    let cur = s.layout.current_service(service);
    let up = s.layout.upgrading_dir(entry);
    let queue = s.layout.staging(service);
    let mut reader = s.client.new_multi_reader();
    let built = (|| {
        reader.add_get_children(&dir)?;
        reader.add_get_data(&entry_path)?;
        reader.add_get_children(&cur)?;
        reader.add_get_children(&up)?;
        reader.add_get_data(&up)?;
        reader.add_get_children(&queue)?;
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
    let [deploys, data, online, markers, slots, tickets] =
        <[zkc::MultiReadResult; 6]>::try_from(results).map_err(|r| {
            ZkError::call("multi-read", &dir, zkc::Error::UnexpectedError(format!("{} results for 6 reads", r.len())))
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
    let (markers, slots) = match (markers, slots) {
        (Children { children }, Data { stat, .. }) => (children, Some(stat.version)),
        (Error { err: zkc::Error::NoNode }, Error { err: zkc::Error::NoNode }) => (Vec::new(), None),
        _ => return Ok(None),
    };
    let Children { children: tickets } = tickets else { return Ok(None) };
    let head = Head { name: *entry, entry: Some(decoded), version: stat.version, raw: data, mtime: stat.mtime };
    let front = Front { slots, ..Front::new(Some(head), &online, &markers, &s.host) };
    Ok(Some(Snapshot { front, tickets: sorted_tickets(&tickets), online }))
}

/// What [`peek`] read: the front, and with it the service's tickets (sorted) and
/// the hosts online.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The front; `parallel` is unset until [`Snapshot::front_for`].
    pub front: Front,
    /// The service's tickets, by sequence.
    pub tickets: Vec<TicketName>,
    /// The names under `current/<service>`.
    pub online: Vec<String>,
}

impl Snapshot {
    /// The front for the host holding `ticket` of `st`: with whether its fence may be
    /// parallel ([`turn::parallel`]).
    pub fn front_for(&self, st: &Staging, ticket: &TicketName) -> Front {
        let parallel = turn::parallel(&self.tickets, &self.online, st, &self.front, ticket);
        Front { parallel, ..self.front.clone() }
    }
}

/// Commits the fence for `ticket` on `front` (its head), moving from `from` to `to`:
/// parallel when `front` says it may be, else rewriting (see the module docs).
///
/// The `upgrading/` directory of the entry is created by the rewriting fence that
/// read it missing (the first fence of a rollout), in its transaction: creating it
/// every time would cost every handoff a failed write, which ZooKeeper logs and
/// fsyncs like any other, and creating it apart would re-create an entry an
/// operator just deleted (abort), with empty data, at the head of the queue.
pub async fn commit(
    s: &Session,
    service: &str,
    front: &Front,
    ticket: Option<&TicketName>,
    from: Option<&str>,
    to: &str,
    canary: u32,
) -> Result<Fenced, ZkError> {
    let head = front.head.as_ref().expect("a fence is on the head");
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
    let entry = s.layout.deploy_entry(&head.name);
    let dir = s.layout.upgrading_dir(&head.name);
    let marker_path = s.layout.upgrading(&head.name, &s.host);
    let ticket_path = ticket.map(|t| s.layout.ticket(service, t));
    let current = s.layout.current_host(service, &s.host);
    let marker_acl = s.acl(&marker_path);
    let parallel = front.parallel && front.slots.is_some();
    let mut txn = s.client.new_multi_writer();
    let built = (|| {
        match front.slots {
            Some(_) if parallel => {
                txn.add_check_version(&entry, head.version)?;
                txn.add_set_data(&dir, b"", None)?;
            }
            Some(slots) => {
                txn.add_set_data(&entry, &data, Some(head.version))?;
                txn.add_check_version(&dir, slots)?;
            }
            None => {
                txn.add_set_data(&entry, &data, Some(head.version))?;
                txn.add_create(&dir, b"", &s.acl(&dir).options(zkc::CreateMode::Persistent))?;
            }
        }
        if let Some(t) = &ticket_path {
            txn.add_check_version(t, 0)?;
        }
        txn.add_create(&marker_path, &encode(&marker), &marker_acl.options(zkc::CreateMode::Persistent))?;
        if front.self_online {
            txn.add_delete(&current, None)?;
        }
        Ok::<_, zkc::Error>(())
    })();
    built.map_err(|e| ZkError::call("multi", &entry, e))?;
    match txn.commit().await {
        Ok(_) => Ok(Fenced::Won),
        Err(MultiWriteError::OperationFailed { index, source }) => {
            tracing::info!(index, error = %source, parallel, "fence lost; re-reading");
            Ok(Fenced::Moved)
        }
        Err(MultiWriteError::RequestFailed { source: zkc::Error::ConnectionLoss }) => {
            // Landed or not: the marker tells.
            match s.client.check_stat(&marker_path).await {
                Ok(Some(_)) => Ok(Fenced::Won),
                Ok(None) => Ok(Fenced::Moved),
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
