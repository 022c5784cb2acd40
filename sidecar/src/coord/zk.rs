//! ZooKeeper plumbing shared by the sidecar's modules: connecting, idempotent
//! directories, reads that decode payloads, and how errors are classified.
//!
//! # ConnectionLoss
//! zookeeper-client does not retry: a call that fails with `ConnectionLoss` may or
//! may not have been applied. Reads are retried by callers; every write the sidecar
//! makes is either idempotent (create of a fixed path: `NodeExists` means done) or
//! followed by a re-read that finds out whether it landed (tickets carry the host
//! prefix; fences leave a marker).

use std::time::Duration;
use znode_schema::{DecodeError, codec};
use zookeeper_client as zk;

/// Why a ZooKeeper operation of the sidecar failed.
#[derive(Debug, thiserror::Error)]
pub enum ZkError {
    /// The server or the connection failed the call.
    #[error("zookeeper {op} {path} failed: {source}")]
    Call {
        /// What was being done (`get`, `create`, `multi`...).
        op: &'static str,
        /// The path concerned.
        path: String,
        /// The client's error.
        #[source]
        source: zk::Error,
    },
    /// A payload could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Another live session holds this host id (SPEC step 10): fatal for the sidecar.
    #[error(
        "host id {host:?} is already registered at {path} by another live session ({owner}); \
         waited {waited:?} for it to expire. Is another sidecar running with the same [host] id?"
    )]
    Duplicate {
        /// This host's id.
        host: String,
        /// The ephemeral node held by the other session.
        path: String,
        /// The other session's id.
        owner: String,
        /// How long the sidecar waited for it to vanish.
        waited: Duration,
    },
}

impl ZkError {
    /// Wraps a client error with the operation and path.
    pub fn call(op: &'static str, path: impl Into<String>, source: zk::Error) -> Self {
        ZkError::Call { op, path: path.into(), source }
    }

    /// The client's error, if this is one.
    pub fn zk(&self) -> Option<&zk::Error> {
        match self {
            ZkError::Call { source, .. } => Some(source),
            ZkError::Decode(_) | ZkError::Duplicate { .. } => None,
        }
    }

    /// The session is gone for good: a new client is needed.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.zk(),
            Some(zk::Error::SessionExpired | zk::Error::ClientClosed | zk::Error::AuthFailed | zk::Error::SessionMoved)
        )
    }

    /// This host id belongs to another live sidecar: the daemon must stop.
    pub fn is_fatal(&self) -> bool {
        matches!(self, ZkError::Duplicate { .. })
    }

    /// A transient failure: the same call may succeed after a reconnect.
    pub fn is_transient(&self) -> bool {
        matches!(self.zk(), Some(zk::Error::ConnectionLoss | zk::Error::Timeout | zk::Error::Throttled))
    }
}

/// Connects with a session timeout; the connect string may hold several servers
/// and a chroot (`h1:2181,h2:2181/chroot`).
pub async fn connect(servers: &str, session_timeout: Duration) -> Result<zk::Client, zk::Error> {
    zk::Client::connector().with_session_timeout(session_timeout).connect(servers).await
}

/// Options for persistent nodes (open ACL: baton relies on network access control).
pub fn persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

/// Options for ephemeral nodes.
pub fn ephemeral() -> zk::CreateOptions<'static> {
    zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all())
}

/// Options for ephemeral sequential nodes (tickets).
pub fn ephemeral_sequential() -> zk::CreateOptions<'static> {
    zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all())
}

/// Options for persistent sequential nodes (history events).
pub fn persistent_sequential() -> zk::CreateOptions<'static> {
    zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all())
}

/// Creates `path` and its missing parents; existing nodes are left alone.
pub async fn mkdir_p(client: &zk::Client, path: &str) -> Result<(), ZkError> {
    if path == "/" {
        return Ok(());
    }
    client.mkdir(path, &persistent()).await.map_err(|e| ZkError::call("mkdir", path, e))
}

/// Reads and decodes `path`; `Ok(None)` when it does not exist.
pub async fn get<T: serde::de::DeserializeOwned>(
    client: &zk::Client,
    path: &str,
) -> Result<Option<(T, zk::Stat, Vec<u8>)>, ZkError> {
    match client.get_data(path).await {
        Ok((data, stat)) => Ok(Some((codec::decode(path, &data)?, stat, data))),
        Err(zk::Error::NoNode) => Ok(None),
        Err(e) => Err(ZkError::call("get", path, e)),
    }
}

/// The session owning the ephemeral node at `path` (0 for a persistent node), or
/// `None` when there is no node.
pub async fn owner(client: &zk::Client, path: &str) -> Result<Option<i64>, ZkError> {
    match client.check_stat(path).await {
        Ok(stat) => Ok(stat.map(|st| st.ephemeral_owner)),
        Err(e) => Err(ZkError::call("exists", path, e)),
    }
}

/// Lists the children of `path`; an absent node has none.
pub async fn children(client: &zk::Client, path: &str) -> Result<Vec<String>, ZkError> {
    match client.list_children(path).await {
        Ok(c) => Ok(c),
        Err(zk::Error::NoNode) => Ok(Vec::new()),
        Err(e) => Err(ZkError::call("list", path, e)),
    }
}

/// Formats a session id the way ZooKeeper's logs do (`0x…`).
pub fn session_hex(id: i64) -> String {
    format!("{:#x}", id)
}
