//! The transactions that end a step (SPEC steps 6 and 7) and complete a rollout.
//!
//! Each is one multi: the host's registration, its marker and ticket, the deploy
//! entry and the history event change together or not at all. Markers and tickets
//! may have vanished meanwhile (an operator's `unlock` or `abort`, a session that
//! expired): the transaction is built from what exists and rebuilt if that changed.

use crate::coord::history;
use crate::coord::session::Session;
use crate::coord::zk::{self, ZkError};
use znode_schema::{
    Current, DeployEntry, DeployName, DeployState, EventKind, Policy, TicketName, encode, seq::SeqName,
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

/// Success: register at the new version, drop marker and ticket, record
/// `host_upgraded`. In a canary phase (`canary` > 0, not promoted) a canary's success
/// is recorded on the deploy entry, and the last canary's pauses the rollout.
///
/// Under `progress_deadline` the entry is rewritten too (its `mtime` is the last
/// progress, see [`crate::coord::progress`]).
pub async fn success(s: &Session, end: &StepEnd<'_>, version: &str, policy: &Policy) -> Result<(), ZkError> {
    let ev = history::event(s, end.service, EventKind::HostUpgraded, Some(version), None);
    let (canary, progress) = (policy.canary, policy.progress_deadline.is_some());
    let done = |entry: &mut DeployEntry| canary_done(entry, &s.host, canary) || progress;
    let count: Option<Count<'_>> = if canary > 0 || progress { Some(&done) } else { None };
    finish(s, end, count, ev, None).await
}

/// Undo after a crash or session loss mid-step, not counted as a failure.
pub async fn undo(s: &Session, end: &StepEnd<'_>, version: Option<&str>, detail: String) -> Result<(), ZkError> {
    let ev = history::event(s, end.service, EventKind::HostFailed, version, Some(detail));
    finish(s, end, None, ev, None).await
}

/// How a failure is counted on the deploy entry.
#[derive(Debug, Clone, Copy)]
pub struct Failed<'a> {
    /// The version the failed step moved to.
    pub version: &'a str,
    /// Failures tolerated before the rollout halts.
    pub max_failures: u32,
    /// Why it failed.
    pub cause: &'a str,
    /// The policy's canary count.
    pub canary: u32,
    /// `on_halt = rollback`: the version to roll back to instead of halting (the one
    /// the failed host ran before).
    pub roll_back_to: Option<&'a str>,
}

/// Failure: count it on the deploy entry (halting it past `max_failures`, or under
/// `on_halt = rollback` turning it into a rollback to the version the host ran
/// before), register as given (the old version, or the new one under `on_failure =
/// "stay"`) if healthy, drop marker and ticket, record `host_failed`. A canary's
/// failure ends its canary step as a success does (see [`success`]) when it does not
/// halt the rollout. A failure of a step forward that ends after the rollout turned
/// into a rollback is counted and changes nothing else (the host went back already);
/// a failure while going back halts.
pub async fn failure(s: &Session, end: &StepEnd<'_>, f: Failed<'_>) -> Result<Option<DeployState>, ZkError> {
    let Failed { version, max_failures, cause, canary, roll_back_to } = f;
    let ev = history::event(s, end.service, EventKind::HostFailed, Some(version), Some(cause.into()));
    let mut last = None;
    let count = |entry: &mut DeployEntry| {
        entry.failures += 1;
        if !entry.failed_hosts.contains(&s.host) {
            entry.failed_hosts.push(s.host.clone());
        }
        let late_forward = entry.rolling_back_to.is_some() && version == entry.version;
        if entry.failures > max_failures && entry.state != DeployState::Halted && !late_forward {
            match roll_back_to.filter(|_| entry.rolling_back_to.is_none() && version == entry.version) {
                Some(back) => {
                    entry.rolling_back_to = Some(back.into());
                    entry.reason = Some(format!("rolling back to {back}: host {} failed: {cause}", s.host));
                }
                None => {
                    entry.state = DeployState::Halted;
                    entry.reason = Some(format!("host {} failed: {cause}", s.host));
                }
            }
        }
        canary_done(entry, &s.host, canary);
        true
    };
    finish(s, end, Some(&count), ev, Some(&mut last)).await?;
    Ok(last)
}

/// Records on `entry` that canary `host`'s step ended; when every one of the
/// policy's `canary` hosts did, an active rollout pauses with reason `canary` until
/// it is promoted. Whether the entry changed.
pub fn canary_done(entry: &mut DeployEntry, host: &str, canary: u32) -> bool {
    let canary_step = entry.canary_phase(canary) && entry.canaries.iter().any(|h| h == host);
    if !canary_step || entry.canaries_done.iter().any(|h| h == host) {
        return false;
    }
    entry.canaries_done.push(host.to_string());
    // A rollout that rolls back (`on_halt = rollback`) is never paused for promotion:
    // its hosts go back instead. One an operator paused meanwhile records that its
    // canary phase ended (`canary_paused_at`) and keeps the operator's pause; resuming
    // it lands in the canary pause.
    if entry.canaries_done.len() as u32 >= canary && entry.rolling_back_to.is_none() {
        entry.canary_paused_at = Some(znode_schema::time::now());
        if entry.state == DeployState::Active {
            entry.state = DeployState::Paused;
            entry.reason = Some(znode_schema::CANARY_REASON.into());
        }
    }
    true
}

/// Changes a step's end makes to the deploy entry; whether it changed anything.
type Count<'a> = &'a (dyn Fn(&mut DeployEntry) -> bool + Sync);

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
    for attempt in 0..ATTEMPTS {
        // The first attempt assumes what a step leaves (its ticket and marker exist,
        // the registration does not: the fence deleted it), so the usual commit costs
        // one request; if that does not hold, the multi fails as a whole and the next
        // attempts are built from what exists.
        let optimistic = attempt == 0;
        let ticket = match end.ticket {
            Some(t) if optimistic || exists(s, &s.layout.ticket(end.service, t)).await? => {
                Some(s.layout.ticket(end.service, t))
            }
            _ => None,
        };
        let has_marker = optimistic || exists(s, &marker).await?;
        let owner = if optimistic { None } else { zk::owner(&s.client, &current).await? };
        let registered = owner.is_some();
        // Another session holding this host id's node is never overwritten here: the
        // registration's own guard claims it (or stops the sidecar).
        let foreign = owner.filter(|o| *o != s.id());
        if let Some(o) = foreign {
            tracing::error!(path = %current, owner = %zk::session_hex(o), "registration held by another session; committing without it");
        }
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
        let (cur_acl, ev_acl) = (s.acl(&current), s.acl(&s.layout.history_prefix(end.service)));
        let mut txn = s.client.new_multi_writer();
        let mut extra = Vec::new();
        let built = (|| {
            if let (Some(count), Some((mut e, stat, _))) = (count, entry) {
                let before = e.state;
                let was_rolling_back = e.rolling_back_to.is_some();
                if count(&mut e) {
                    txn.add_set_data(&entry_path, &encode(&e), Some(stat.version))?;
                }
                state = Some(e.state);
                if let Some(back) = e.rolling_back_to.as_deref().filter(|_| !was_rolling_back) {
                    let mark = s.layout.rollback_mark(end.entry);
                    txn.add_create(&mark, b"", &s.acl(&mark).options(zkc::CreateMode::Persistent))?;
                    let detail = format!(
                        "{}; on_halt = rollback: the hosts that stepped go back to {back}",
                        e.reason.as_deref().unwrap_or_default()
                    );
                    extra.push(history::event(s, end.service, EventKind::RollingBack, Some(&e.version), Some(detail)));
                }
                if e.state == DeployState::Halted && before != DeployState::Halted {
                    let detail = e.reason.clone();
                    extra.push(history::event(s, end.service, EventKind::Halted, Some(&e.version), detail));
                }
                if e.state == DeployState::Paused && before == DeployState::Active && e.awaits_promotion() {
                    let detail = format!(
                        "canaries stepped: {}; promote with `deployctl promote {}`",
                        e.canaries_done.join(", "),
                        end.service
                    );
                    extra.push(history::event(s, end.service, EventKind::CanaryPaused, Some(&e.version), Some(detail)));
                }
            }
            if has_marker {
                txn.add_delete(&marker, None)?;
            }
            if let Some(t) = &ticket {
                txn.add_delete(t, None)?;
            }
            if let Some(cur) = end.register.filter(|_| foreign.is_none()) {
                if registered {
                    txn.add_set_data(&current, &encode(cur), None)?;
                } else {
                    txn.add_create(&current, &encode(cur), &cur_acl.options(zkc::CreateMode::Ephemeral))?;
                }
            }
            for e in std::iter::once(&ev).chain(extra.iter()) {
                let (prefix, data) = history::create_op(&s.layout, e);
                txn.add_create(&prefix, &data, &ev_acl.options(zkc::CreateMode::PersistentSequential))?;
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

/// Why a rollout is not complete (or that it is), as decided by [`complete`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// It was complete: the entry is deleted, with a `completed` event.
    Completed,
    /// The entry is gone already (completed or aborted by someone else).
    Gone,
    /// Not complete, and why (for logs).
    NotDone(String),
}

/// The one decider of completion (SPEC step 6), called after every outcome: a
/// success, a failure, an undone step, a rollout in which nobody needs to step, a
/// boot, and by other services' hosts for a head no host of its service runs.
///
/// The rollout of `service` at `version` on entry `name` is complete when the entry
/// is `active` (a paused or halted rollout is never closed: it waits for an
/// operator), no ticket and no marker remain, and every online host of the service
/// that is not in the entry's `failed_hosts` runs `version`. With no online host at
/// all it is vacuous and completes too (it would block the queue forever). Then one
/// multi deletes `upgrading/` and the entry, checking the entry's data version (a
/// concurrent fence, pause or halt wins), and adds a `completed` event. Cheap when
/// it is not done: tickets are listed first. Unreadable nodes make it "not done",
/// never an error.
pub async fn complete(s: &Session, service: &str, version: &str, name: &DeployName) -> Result<Completion, ZkError> {
    let not_done = |why: String| Ok(Completion::NotDone(why));
    let tickets = zk::children(&s.client, &s.layout.staging(service)).await?;
    if !tickets.is_empty() {
        return not_done(format!("{} host(s) queued", tickets.len()));
    }
    let entry_path = s.layout.deploy_entry(name);
    let (entry, stat) = match zk::get::<DeployEntry>(&s.client, &entry_path).await {
        Ok(Some((e, stat, _))) => (e, stat),
        Ok(None) => return Ok(Completion::Gone),
        Err(ZkError::Decode(err)) => return not_done(format!("unreadable entry: {err}")),
        Err(e) => return Err(e),
    };
    if entry.service != service || (entry.version != version && entry.target() != version) {
        return not_done(format!("{name} is {} {}", entry.service, entry.version));
    }
    // A rollback (`on_halt = rollback`) is complete when every host runs its target.
    let version = entry.target().to_string();
    let version = version.as_str();
    if entry.state != DeployState::Active {
        return not_done(format!("the rollout is {}", entry.state));
    }
    let up_dir = s.layout.upgrading_dir(name);
    let (markers, up_stat) = match s.client.get_children(&up_dir).await {
        Ok((c, st)) => (c, Some(st)),
        Err(zkc::Error::NoNode) => (Vec::new(), None),
        Err(e) => return Err(ZkError::call("list", up_dir, e)),
    };
    if !markers.is_empty() {
        return not_done(format!("{} host(s) stepping", markers.len()));
    }
    let hosts = zk::children(&s.client, &s.layout.current_service(service)).await?;
    for h in hosts.iter().filter(|h| !entry.failed_hosts.contains(h)) {
        let path = s.layout.current_host(service, h);
        match zk::get::<Current>(&s.client, &path).await {
            Ok(Some((c, _, _))) if c.version == version => {}
            Ok(None) => {}
            Ok(Some(c)) => return not_done(format!("{h} runs {}", c.0.version)),
            Err(ZkError::Decode(err)) => return not_done(format!("unreadable registration: {err}")),
            Err(e) => return Err(e),
        }
    }
    let mut details = Vec::new();
    if hosts.is_empty() {
        details.push(format!("no host of {service} is online"));
    }
    if !entry.failed_hosts.is_empty() {
        details.push(format!("failed hosts: {}", entry.failed_hosts.join(", ")));
    }
    let detail = (!details.is_empty()).then(|| details.join("; "));
    let kind = if entry.rolling_back_to.is_some() { EventKind::RolledBack } else { EventKind::Completed };
    let ev = history::event(s, service, kind, Some(version), detail);
    let (prefix, data) = history::create_op(&s.layout, &ev);
    let has_history = exists(s, &s.layout.history(service)).await?;
    // The mark of a rollback; `deployctl rollback` of another service re-creates the
    // entries it moves without it.
    let mark = s.layout.rollback_mark(name);
    let has_mark = entry.rolling_back_to.is_some() && exists(s, &mark).await?;
    let ev_acl = s.acl(&prefix);
    let mut txn = s.client.new_multi_writer();
    let built = (|| {
        if let Some(st) = up_stat {
            txn.add_delete(&up_dir, Some(st.version))?;
        }
        if has_mark {
            txn.add_delete(&mark, None)?;
        }
        txn.add_delete(&entry_path, Some(stat.version))?;
        if has_history {
            txn.add_create(&prefix, &data, &ev_acl.options(zkc::CreateMode::PersistentSequential))?;
        }
        Ok::<_, zkc::Error>(())
    })();
    built.map_err(|e| ZkError::call("multi", &entry_path, e))?;
    match txn.commit().await {
        Ok(_) => {
            tracing::info!(%service, %version, entry = %name, "rollout completed");
            prune_history(s, service).await;
            Ok(Completion::Completed)
        }
        Err(MultiWriteError::OperationFailed { index, source }) => {
            not_done(format!("the completion raced another change (op {index}: {source})"))
        }
        Err(MultiWriteError::RequestFailed { source }) => Err(ZkError::call("multi", entry_path, source)),
    }
}

/// Deletes the oldest history events of `service` beyond [`history::KEEP`], and then
/// those older than [`znode_schema::HISTORY_MAX_AGE`] (oldest first, stopping at the
/// first younger one); best effort.
pub async fn prune_history(s: &Session, service: &str) {
    let dir = s.layout.history(service);
    let Ok(children) = zk::children(&s.client, &dir).await else { return };
    let mut events: Vec<(SeqName, String)> = children
        .into_iter()
        .filter_map(|c| SeqName::parse(&c, znode_schema::layout::EVENT_PREFIX).map(|n| (n, c)))
        .collect();
    events.sort();
    let excess = events.len().saturating_sub(history::KEEP);
    for (_, name) in &events[..excess] {
        let _ = s.client.delete(&s.layout.history_event(service, name), None).await;
    }
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let max_age_ms = znode_schema::HISTORY_MAX_AGE.as_millis() as i64;
    for (_, name) in &events[excess..] {
        let path = s.layout.history_event(service, name);
        match s.client.check_stat(&path).await {
            Ok(Some(stat)) if now_ms - stat.ctime > max_age_ms => {
                let _ = s.client.delete(&path, None).await;
            }
            Ok(None) => {}
            _ => break,
        }
    }
}
