//! ZooKeeper plumbing shared by the sidecar's modules: idempotent directories (with
//! the layout's ACLs), reads that decode payloads, and how errors are classified.
//! Connecting, with credentials, is [`crate::coord::identity`]'s.
//!
//! # ConnectionLoss
//! zookeeper-client does not retry: a call that fails with `ConnectionLoss` may or
//! may not have been applied. Reads are retried by callers; every write the sidecar
//! makes is either idempotent (create of a fixed path: `NodeExists` means done) or
//! followed by a re-read that finds out whether it landed (tickets carry the host
//! prefix; fences leave a marker).

use crate::coord::session::Session;
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
            ZkError::Decode(_) => None,
        }
    }

    /// The session is gone for good: a new client is needed.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.zk(),
            Some(zk::Error::SessionExpired | zk::Error::ClientClosed | zk::Error::AuthFailed | zk::Error::SessionMoved)
        )
    }

    /// ZooKeeper refused a write to this session's identity (NoAuth): the
    /// credentials or the tree's ACLs are wrong, and retrying cannot help. The
    /// daemon stops with an error naming the identity and the server.
    pub fn is_fatal(&self) -> bool {
        matches!(self.zk(), Some(zk::Error::NoAuth))
    }

    /// A transient failure: the same call may succeed after a reconnect.
    pub fn is_transient(&self) -> bool {
        matches!(self.zk(), Some(zk::Error::ConnectionLoss | zk::Error::Timeout | zk::Error::Throttled))
    }
}

/// Creates `path` and its missing parents with the ACL each one's place implies;
/// existing nodes are left alone (and not written to: a create of an existing node
/// needs the parent's create permission, which a sidecar may lack).
pub async fn mkdir_p(s: &Session, path: &str) -> Result<(), ZkError> {
    if path == "/" {
        return Ok(());
    }
    let mut prefix = String::new();
    for seg in path[1..].split('/') {
        prefix = format!("{prefix}/{seg}");
        match s.client.check_stat(&prefix).await {
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(e) => return Err(ZkError::call("exists", &prefix, e)),
        }
        let acl = s.acl(&prefix);
        match s.client.create(&prefix, b"", &acl.options(zk::CreateMode::Persistent)).await {
            Ok(_) | Err(zk::Error::NodeExists) => {}
            Err(e) => return Err(ZkError::call("create", &prefix, e)),
        }
    }
    Ok(())
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
