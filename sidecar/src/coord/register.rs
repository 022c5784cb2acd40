//! Membership: `current/<service>/<host>` exists exactly while the service runs,
//! passes its health check and is not in the middle of an upgrade step.
//!
//! Also the duplicate host id guard (SPEC step 10): an ephemeral node of this host id
//! owned by another session is either one of this host's own earlier sessions
//! (recorded in the data dir: taken over at once, in one transaction that deletes the
//! old owner's node and creates this session's at the same path with the same data,
//! so nobody sees it absent) or another machine with the same id, or a
//! foreign client squatting on the path: waited for, for as long as it lives, with an
//! error in the log naming the session that holds it (again every few minutes). The
//! sidecar neither exits nor touches the node meanwhile; the services it runs keep
//! running. The guard runs at session start and again whenever a registration
//! meets a foreign node.

use crate::coord::session::Session;
use crate::coord::zk::{self, ZkError};
use std::path::{Path, PathBuf};
use std::time::Duration;
use znode_schema::{Current, encode};
use zookeeper_client as zkc;

/// Where the recent session ids of this host are kept, to recognise our own leftovers.
pub fn session_file(data_dir: &Path) -> PathBuf {
    data_dir.join("zk-session")
}

/// How many recent sessions of this host are remembered: a sidecar handing over to
/// its new image, the new image, and a restart of either may each hold nodes.
const REMEMBERED: usize = 4;

/// Records this session's id after the ones recorded before (best effort: a failure
/// only slows the next restart down).
pub fn record_session(data_dir: &Path, id: i64) {
    let mut ids = previous_sessions(data_dir);
    ids.retain(|&i| i != id);
    ids.push(id);
    let keep = &ids[ids.len().saturating_sub(REMEMBERED)..];
    let text: String = keep.iter().map(|&i| format!("{}\n", zk::session_hex(i))).collect();
    let tmp = data_dir.join("zk-session.tmp");
    let ok = crate::safefs::write_atomic(&session_file(data_dir), &tmp, text.as_bytes(), false);
    if let Err(err) = ok {
        tracing::warn!(error = %err, "failed to record the session id");
    }
}

/// The session ids recorded by this host's earlier runs (and this run), oldest first.
pub fn previous_sessions(data_dir: &Path) -> Vec<i64> {
    let text = std::fs::read_to_string(session_file(data_dir)).unwrap_or_default();
    text.lines().filter_map(|l| i64::from_str_radix(l.trim().trim_start_matches("0x"), 16).ok()).collect()
}

/// Takes over the node at `path` from `owner`, one of this host's earlier sessions:
/// one transaction deletes the old owner's node (at the version read) and creates
/// this session's at the same path with the same data. `false`: the node changed
/// meanwhile (read again).
async fn take_over(s: &Session, path: &str, owner: i64) -> Result<bool, ZkError> {
    let (data, stat) = match s.client.get_data(path).await {
        Ok(d) => d,
        Err(zkc::Error::NoNode) => return Ok(false),
        Err(e) => return Err(ZkError::call("get", path, e)),
    };
    if stat.ephemeral_owner != owner {
        return Ok(false);
    }
    let acl = s.acl(path);
    let mut txn = s.client.new_multi_writer();
    let built = (|| {
        txn.add_delete(path, Some(stat.version))?;
        txn.add_create(path, &data, &acl.options(zkc::CreateMode::Ephemeral))?;
        Ok::<_, zkc::Error>(())
    })();
    built.map_err(|e| ZkError::call("multi", path, e))?;
    match txn.commit().await {
        Ok(_) => {
            tracing::info!(path, owner = %zk::session_hex(owner), "took over this host's node from its earlier session");
            Ok(true)
        }
        Err(zkc::MultiWriteError::OperationFailed { .. }) => Ok(false),
        // Landed or not: the next read tells (the node is then this session's).
        Err(zkc::MultiWriteError::RequestFailed { source: zkc::Error::ConnectionLoss }) => Ok(false),
        Err(zkc::MultiWriteError::RequestFailed { source }) => Err(ZkError::call("multi", path, source)),
    }
}

/// How often a node held by another live session is reported again.
const REPORT_EVERY: Duration = Duration::from_secs(300);

/// Makes sure no other session holds the ephemeral node at `path`: when it belongs to
/// one of this host's earlier sessions, takes it over ([`take_over`]) if `keep` (what
/// it says is still true: the service runs, the ticket's release is verified) or
/// deletes it; otherwise waits
/// for it to vanish, reporting the session that holds it when it outlives `patience`
/// (an old session of this host would have expired by then).
pub async fn claim(s: &Session, path: &str, keep: bool, patience: Duration) -> Result<(), ZkError> {
    let mut deadline = tokio::time::Instant::now() + patience;
    let mut seen = None;
    loop {
        let (stat, watcher) = match s.client.check_and_watch_stat(path).await {
            Ok(r) => r,
            Err(e) => return Err(ZkError::call("exists", path, e)),
        };
        let Some(stat) = stat else { return Ok(()) };
        let owner = stat.ephemeral_owner;
        if owner == s.id() {
            return Ok(());
        }
        if owner == 0 {
            // Not a session's node at all: another client wrote a persistent node where
            // only this host's ephemeral nodes belong. No live host holds it.
            tracing::error!(path, "a persistent node stands where this host's ephemeral node belongs; deleting it");
            match s.client.delete(path, Some(stat.version)).await {
                Ok(()) | Err(zkc::Error::NoNode) => return Ok(()),
                Err(zkc::Error::BadVersion) => continue,
                Err(e) => return Err(ZkError::call("delete", path, e)),
            }
        }
        if s.is_earlier(owner) && keep {
            if take_over(s, path, owner).await? {
                return Ok(());
            }
            continue;
        }
        if s.is_earlier(owner) {
            tracing::info!(path, owner = %zk::session_hex(owner), "deleting this host's node left by its earlier session");
            match s.client.delete(path, Some(stat.version)).await {
                Ok(()) | Err(zkc::Error::NoNode) => return Ok(()),
                Err(zkc::Error::BadVersion) => continue,
                Err(e) => return Err(ZkError::call("delete", path, e)),
            }
        }
        if seen != Some(owner) {
            tracing::warn!(path, owner = %zk::session_hex(owner), "host id held by another session; waiting for it to expire");
            seen = Some(owner);
        }
        if tokio::time::timeout_at(deadline, watcher.changed()).await.is_err() {
            tracing::error!(
                host = %s.host,
                path,
                owner = %zk::session_hex(owner),
                "host id {} is already registered at {path} by another live session ({}): is another sidecar \
                 running with the same [host] id? The services here keep running; waiting for that session to end",
                s.host,
                zk::session_hex(owner),
            );
            deadline = tokio::time::Instant::now() + REPORT_EVERY;
        }
    }
}

/// The registration this agent keeps in ZooKeeper during one session.
#[derive(Debug, Default)]
pub struct Registration {
    /// What the node holds now, as far as this session knows.
    written: Option<Current>,
}

impl Registration {
    /// Makes `current/<service>/<host>` hold `want`, or removes it when `want` is `None`.
    /// A node of this host id held by another session is claimed first (the
    /// duplicate-host guard holds for the whole session, not only at its start).
    pub async fn reconcile(&mut self, s: &Session, service: &str, want: Option<&Current>) -> Result<(), ZkError> {
        if self.written.as_ref() == want {
            return Ok(());
        }
        let path = s.layout.current_host(service, &s.host);
        match want {
            // Only this session's node is removed: another one is never touched here.
            None => match s.client.check_stat(&path).await {
                Ok(Some(stat)) if stat.ephemeral_owner == s.id() => match s.client.delete(&path, None).await {
                    Ok(()) | Err(zkc::Error::NoNode) => {}
                    Err(e) => return Err(ZkError::call("delete", path, e)),
                },
                Ok(_) => {}
                Err(e) => return Err(ZkError::call("exists", path, e)),
            },
            Some(cur) => {
                let data = encode(cur);
                let acl = s.acl(&path);
                loop {
                    match s.client.create(&path, &data, &acl.options(zkc::CreateMode::Ephemeral)).await {
                        Ok(_) => break,
                        Err(zkc::Error::NodeExists) => match zk::owner(&s.client, &path).await? {
                            Some(owner) if owner == s.id() => {
                                let set = s.client.set_data(&path, &data, None).await;
                                set.map_err(|e| ZkError::call("set", &path, e))?;
                                break;
                            }
                            // Someone else's node (or it just vanished): claim it, create again.
                            _ => claim(s, &path, true, s.timeout + s.timeout / 2).await?,
                        },
                        Err(e) => return Err(ZkError::call("create", path, e)),
                    }
                }
            }
        }
        self.written = want.cloned();
        Ok(())
    }

    /// Whether this session holds the registration now, as far as it knows.
    pub fn is_online(&self) -> bool {
        self.written.is_some()
    }

    /// Forgets what was written: a step's transaction changed the node itself.
    pub fn assume(&mut self, now: Option<Current>) {
        self.written = now;
    }
}
