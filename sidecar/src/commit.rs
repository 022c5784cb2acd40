//! The transactions that end a step (SPEC steps 6 and 7) and complete a rollout.
//!
//! Each is one multi: the host's registration, its marker and ticket, the deploy
//! entry and the history event change together or not at all. Markers and tickets
//! may have vanished meanwhile (an operator's `unlock` or `abort`, a session that
//! expired): the transaction is built from what exists and rebuilt if that changed.

use crate::history;
use crate::session::Session;
use crate::zk::{self, ZkError};
use znode_schema::{
    Current, DeployEntry, DeployName, DeployState, EventKind, Staging, TicketName, decode, encode, seq::SeqName,
};
use zookeeper_client::{self as zkc, MultiWriteError};

/// Attempts before a transaction that keeps racing is reported as an error.
const ATTEMPTS: usize = 8;

/// What a step's end changes.
#[derive(Debug)]
pub struct StepEnd<'a> {
    /// The service.
    pub service: &'a str,
    /// The deploy entry the step was fenced on.
    pub entry: &'a DeployName,
    /// The host's ticket, if it still has one.
    pub ticket: Option<&'a TicketName>,
    /// The registration to create (the service is healthy), or none.
    pub register: Option<&'a Current>,
}

async fn exists(s: &Session, path: &str) -> Result<bool, ZkError> {
    s.client.check_stat(path).await.map(|st| st.is_some()).map_err(|e| ZkError::call("exists", path, e))
}

/// Success: register at the new version, drop marker and ticket, record `host_upgraded`.
pub async fn success(s: &Session, end: &StepEnd<'_>, version: &str) -> Result<(), ZkError> {
    let ev = history::event(end.service, EventKind::HostUpgraded, Some(version), &s.host, None);
    finish(s, end, None, ev, None).await
}

/// Undo after a crash or session loss mid-step, not counted as a failure.
pub async fn undo(s: &Session, end: &StepEnd<'_>, version: Option<&str>, detail: String) -> Result<(), ZkError> {
    let ev = history::event(end.service, EventKind::HostFailed, version, &s.host, Some(detail));
    finish(s, end, None, ev, None).await
}

/// Failure: count it on the deploy entry (halting it past `max_failures`), register
/// at the old version if healthy, drop marker and ticket, record `host_failed`.
pub async fn failure(
    s: &Session,
    end: &StepEnd<'_>,
    staging: &Staging,
    cause: &str,
) -> Result<Option<DeployState>, ZkError> {
    let ev = history::event(end.service, EventKind::HostFailed, Some(&staging.version), &s.host, Some(cause.into()));
    let mut last = None;
    let policy_max = staging.policy.max_failures;
    let count = |entry: &mut DeployEntry| {
        entry.failures += 1;
        if !entry.failed_hosts.contains(&s.host) {
            entry.failed_hosts.push(s.host.clone());
        }
        if entry.failures > policy_max && entry.state != DeployState::Halted {
            entry.state = DeployState::Halted;
            entry.reason = Some(format!("host {} failed: {cause}", s.host));
        }
        entry.state
    };
    finish(s, end, Some(&count), ev, Some(&mut last)).await?;
    Ok(last)
}

type Count<'a> = &'a (dyn Fn(&mut DeployEntry) -> DeployState + Sync);

async fn finish(
    s: &Session,
    end: &StepEnd<'_>,
    count: Option<Count<'_>>,
    ev: znode_schema::HistoryEvent,
    state_out: Option<&mut Option<DeployState>>,
) -> Result<(), ZkError> {
    let marker = s.layout.upgrading(end.entry, &s.host);
    let entry_path = s.layout.deploy_entry(end.entry);
    let current = s.layout.current_host(end.service, &s.host);
    let mut state = None;
    for _ in 0..ATTEMPTS {
        let ticket = match end.ticket {
            Some(t) if exists(s, &s.layout.ticket(end.service, t)).await? => Some(s.layout.ticket(end.service, t)),
            _ => None,
        };
        let has_marker = exists(s, &marker).await?;
        let registered = exists(s, &current).await?;
        let entry = match count {
            Some(_) => zk::get::<DeployEntry>(&s.client, &entry_path).await.or_else(|e| match e {
                ZkError::Decode(err) => {
                    tracing::error!(error = %err, "cannot count the failure on an unreadable deploy entry");
                    Ok(None)
                }
                e => Err(e),
            })?,
            None => None,
        };
        let mut txn = s.client.new_multi_writer();
        let mut extra = Vec::new();
        let built = (|| {
            if let (Some(count), Some((mut e, stat, _))) = (count, entry) {
                let before = e.state;
                state = Some(count(&mut e));
                txn.add_set_data(&entry_path, &encode(&e), Some(stat.version))?;
                if state == Some(DeployState::Halted) && before != DeployState::Halted {
                    let detail = e.reason.clone();
                    extra.push(history::event(end.service, EventKind::Halted, Some(&e.version), &s.host, detail));
                }
            }
            if has_marker {
                txn.add_delete(&marker, None)?;
            }
            if let Some(t) = &ticket {
                txn.add_delete(t, None)?;
            }
            if let Some(cur) = end.register {
                if registered {
                    txn.add_set_data(&current, &encode(cur), None)?;
                } else {
                    txn.add_create(&current, &encode(cur), &zk::ephemeral())?;
                }
            }
            for e in std::iter::once(&ev).chain(extra.iter()) {
                let (prefix, data) = history::create_op(&s.layout, e);
                txn.add_create(&prefix, &data, &zk::persistent_sequential())?;
            }
            Ok::<_, zkc::Error>(())
        })();
        built.map_err(|e| ZkError::call("multi", &marker, e))?;
        match txn.commit().await {
            Ok(_) => {
                if let Some(out) = state_out {
                    *out = state;
                }
                return Ok(());
            }
            Err(MultiWriteError::OperationFailed { index, source }) => {
                tracing::debug!(index, error = %source, "step transaction raced; rebuilding");
            }
            Err(MultiWriteError::RequestFailed { source: zkc::Error::ConnectionLoss }) if !has_marker => {
                // Without a marker there is nothing to tell whether it landed; the
                // registration and history event are idempotent enough to redo.
                tracing::debug!("step transaction lost its reply; retrying");
            }
            Err(MultiWriteError::RequestFailed { source: zkc::Error::ConnectionLoss }) => {
                if !exists(s, &marker).await? {
                    return Ok(()); // it landed: only this transaction deletes the marker
                }
            }
            Err(MultiWriteError::RequestFailed { source }) => return Err(ZkError::call("multi", marker, source)),
        }
    }
    Err(ZkError::call("multi", marker, zkc::Error::BadVersion))
}

/// Completes the rollout of `staging` on deploy entry `name` if it is done: every
/// online host runs the staged version (or failed in this rollout), and no markers
/// or tickets remain. Deletes the entry with a `completed` event. Returns whether
/// it completed. Cheap when it is not done: it lists tickets first.
pub async fn complete_if_done(s: &Session, staging: &Staging, name: &DeployName) -> Result<bool, ZkError> {
    let svc = &staging.service;
    if !zk::children(&s.client, &s.layout.staging(svc)).await?.is_empty() {
        return Ok(false);
    }
    let entry_path = s.layout.deploy_entry(name);
    let Some((entry, stat, _)) = zk::get::<DeployEntry>(&s.client, &entry_path).await? else {
        return Ok(false);
    };
    if entry.service != *svc || entry.version != staging.version {
        return Ok(false);
    }
    let up_dir = s.layout.upgrading_dir(name);
    let (markers, up_stat) = match s.client.get_children(&up_dir).await {
        Ok((c, st)) => (c, Some(st)),
        Err(zkc::Error::NoNode) => (Vec::new(), None),
        Err(e) => return Err(ZkError::call("list", up_dir, e)),
    };
    if !markers.is_empty() {
        return Ok(false);
    }
    let hosts = zk::children(&s.client, &s.layout.current_service(svc)).await?;
    for h in &hosts {
        if entry.failed_hosts.contains(h) {
            continue;
        }
        let path = s.layout.current_host(svc, h);
        match zk::get::<Current>(&s.client, &path).await {
            Ok(Some((c, _, _))) if c.version == staging.version => {}
            Ok(None) => {}
            Ok(Some(_)) => return Ok(false),
            Err(ZkError::Decode(err)) => {
                tracing::warn!(error = %err, "unreadable registration; not completing the rollout");
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
    }
    let detail = (!entry.failed_hosts.is_empty()).then(|| format!("failed hosts: {}", entry.failed_hosts.join(", ")));
    let ev = history::event(svc, EventKind::Completed, Some(&staging.version), &s.host, detail);
    let (prefix, data) = history::create_op(&s.layout, &ev);
    let mut txn = s.client.new_multi_writer();
    let built = (|| {
        if let Some(st) = up_stat {
            txn.add_delete(&up_dir, Some(st.version))?;
        }
        txn.add_delete(&entry_path, Some(stat.version))?;
        txn.add_create(&prefix, &data, &zk::persistent_sequential())
    })();
    built.map_err(|e| ZkError::call("multi", &entry_path, e))?;
    match txn.commit().await {
        Ok(_) => {
            tracing::info!(service = %svc, version = %staging.version, "rollout completed");
            prune_history(s, svc).await;
            Ok(true)
        }
        Err(MultiWriteError::OperationFailed { .. }) => Ok(false),
        Err(MultiWriteError::RequestFailed { source }) => Err(ZkError::call("multi", entry_path, source)),
    }
}

/// Deletes the oldest history events of `service` beyond [`history::KEEP`]; best effort.
pub async fn prune_history(s: &Session, service: &str) {
    let dir = s.layout.history(service);
    let Ok(children) = zk::children(&s.client, &dir).await else { return };
    let mut events: Vec<(SeqName, String)> = children
        .into_iter()
        .filter_map(|c| SeqName::parse(&c, znode_schema::layout::EVENT_PREFIX).map(|n| (n, c)))
        .collect();
    if events.len() <= history::KEEP {
        return;
    }
    events.sort();
    for (_, name) in &events[..events.len() - history::KEEP] {
        let _ = s.client.delete(&s.layout.history_event(service, name), None).await;
    }
}

/// Decodes `raw` as a deploy entry for logging; never fails.
pub fn describe_entry(path: &str, raw: &[u8]) -> String {
    match decode::<DeployEntry>(path, raw) {
        Ok(e) => format!("{} {} ({})", e.service, e.version, e.state),
        Err(err) => err.to_string(),
    }
}
