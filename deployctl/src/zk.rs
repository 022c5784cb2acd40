//! The ZooKeeper connection: connect with a bounded patience, reads that ride out a
//! short `ConnectionLoss`, idempotent directory creation, and transactions.
//!
//! # ConnectionLoss
//! Reads and idempotent creates (`ensure`) are retried a few times with a growing
//! pause. A transaction is never retried here: its reply may have been lost after it
//! was applied, so callers re-read (after [`Zk::sync`]) to learn whether it landed.

use std::future::Future;
use std::time::Duration;
use zookeeper_client as zk;

pub use zk::{Error as ZkErr, MultiWriteError, MultiWriteResult, Stat};

/// Tries of a read before giving up on `ConnectionLoss`.
const READ_TRIES: u32 = 6;

/// A failed ZooKeeper operation, naming what was done and on which path.
#[derive(Debug, thiserror::Error)]
pub enum ZkError {
    /// No session could be established.
    #[error("failed to connect to ZooKeeper at {connect}: {source}")]
    Connect {
        connect: String,
        #[source]
        source: ZkErr,
    },
    /// No session within the patience.
    #[error("failed to connect to ZooKeeper at {connect}: no session within {patience:?}")]
    ConnectTimeout { connect: String, patience: Duration },
    /// A single operation failed.
    #[error("failed to {op} {path}: {source}")]
    Op {
        op: &'static str,
        path: String,
        #[source]
        source: ZkErr,
    },
}

impl ZkError {
    /// The underlying client error, when there is one.
    pub fn zk(&self) -> Option<&ZkErr> {
        match self {
            ZkError::Connect { source, .. } | ZkError::Op { source, .. } => Some(source),
            ZkError::ConnectTimeout { .. } => None,
        }
    }

    /// Whether the session is over (a new client is needed).
    pub fn session_ended(&self) -> bool {
        matches!(self.zk(), Some(ZkErr::SessionExpired | ZkErr::ClientClosed | ZkErr::AuthFailed))
    }
}

/// A connected client and what is needed to connect again.
#[derive(Debug)]
pub struct Zk {
    client: zk::Client,
    connect: String,
    session_timeout: Duration,
}

fn persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

fn persistent_sequential() -> zk::CreateOptions<'static> {
    zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all())
}

async fn with_retry<T, F, Fut>(mut f: F) -> Result<T, ZkErr>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ZkErr>>,
{
    let mut pause = Duration::from_millis(100);
    for _ in 1..READ_TRIES {
        match f().await {
            Err(ZkErr::ConnectionLoss) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
    f().await
}

impl Zk {
    /// Connects; the connect string may end with a chroot (`h1:2181,h2:2181/chroot`).
    pub async fn connect(connect: &str, session_timeout: Duration) -> Result<Zk, ZkError> {
        let patience = session_timeout + Duration::from_secs(2);
        let attempt = zk::Client::connector().with_session_timeout(session_timeout).connect(connect);
        let client = match tokio::time::timeout(patience, attempt).await {
            Ok(Ok(client)) => client,
            Ok(Err(source)) => return Err(ZkError::Connect { connect: connect.into(), source }),
            Err(_) => return Err(ZkError::ConnectTimeout { connect: connect.into(), patience }),
        };
        Ok(Zk { client, connect: connect.into(), session_timeout })
    }

    /// A new session with the same settings (after the old one expired).
    pub async fn reconnect(&self) -> Result<Zk, ZkError> {
        Zk::connect(&self.connect, self.session_timeout).await
    }

    /// The raw client.
    pub fn client(&self) -> &zk::Client {
        &self.client
    }

    /// Data and stat of `path`; `None` when it does not exist.
    pub async fn get(&self, path: &str) -> Result<Option<(Vec<u8>, Stat)>, ZkError> {
        match with_retry(|| self.client.get_data(path)).await {
            Ok(v) => Ok(Some(v)),
            Err(ZkErr::NoNode) => Ok(None),
            Err(source) => Err(ZkError::Op { op: "read", path: path.into(), source }),
        }
    }

    /// Children of `path`; `None` when it does not exist.
    pub async fn children(&self, path: &str) -> Result<Option<Vec<String>>, ZkError> {
        match with_retry(|| self.client.list_children(path)).await {
            Ok(v) => Ok(Some(v)),
            Err(ZkErr::NoNode) => Ok(None),
            Err(source) => Err(ZkError::Op { op: "list", path: path.into(), source }),
        }
    }

    /// The stat of `path`; `None` when it does not exist.
    pub async fn stat(&self, path: &str) -> Result<Option<Stat>, ZkError> {
        with_retry(|| self.client.check_stat(path)).await.map_err(|source| ZkError::Op {
            op: "check",
            path: path.into(),
            source,
        })
    }

    /// Creates `path` empty unless it exists; true when it was created here.
    /// Idempotent, so it is safely retried after `ConnectionLoss`.
    pub async fn ensure(&self, path: &str) -> Result<bool, ZkError> {
        match with_retry(|| self.client.create(path, b"", &persistent())).await {
            Ok(_) => Ok(true),
            Err(ZkErr::NodeExists) => Ok(false),
            Err(source) => Err(ZkError::Op { op: "create", path: path.into(), source }),
        }
    }

    /// Deletes `path` at `version`; a missing node is fine.
    pub async fn delete(&self, path: &str, version: Option<i32>) -> Result<(), ZkError> {
        match with_retry(|| self.client.delete(path, version)).await {
            Ok(()) | Err(ZkErr::NoNode) => Ok(()),
            Err(source) => Err(ZkError::Op { op: "delete", path: path.into(), source }),
        }
    }

    /// Makes this server catch up with the leader, so the next reads see every write
    /// committed before (used after a lost transaction reply).
    pub async fn sync(&self, path: &str) -> Result<(), ZkError> {
        with_retry(|| self.client.sync(path)).await.map_err(|source| ZkError::Op {
            op: "sync",
            path: path.into(),
            source,
        })
    }

    /// Commits `txn` in one ZooKeeper transaction. Not retried: see the module docs.
    pub async fn commit(&self, txn: &Txn) -> Result<Vec<MultiWriteResult>, MultiWriteError> {
        let mut w = self.client.new_multi_writer();
        for op in &txn.ops {
            let added = match op {
                Op::Check { path, version } => w.add_check_version(path, *version),
                Op::Create { path, data } => w.add_create(path, data, &persistent()),
                Op::CreateSeq { prefix, data } => w.add_create(prefix, data, &persistent_sequential()),
                Op::Set { path, data, version } => w.add_set_data(path, data, Some(*version)),
                Op::Delete { path, version } => w.add_delete(path, *version),
            };
            added.map_err(|source| MultiWriteError::RequestFailed { source })?;
        }
        w.commit().await
    }
}

/// One operation of a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Fails the transaction unless `path` is at `version`.
    Check { path: String, version: i32 },
    /// Creates a persistent node.
    Create { path: String, data: Vec<u8> },
    /// Creates a persistent sequential node under `prefix`.
    CreateSeq { prefix: String, data: Vec<u8> },
    /// Sets data, expecting `version`.
    Set { path: String, data: Vec<u8>, version: i32 },
    /// Deletes, expecting `version` (`None`: any).
    Delete { path: String, version: Option<i32> },
}

/// A transaction built before it is committed, so it can be rebuilt and inspected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// The operations, in order.
    pub ops: Vec<Op>,
}

impl Txn {
    /// Adds an operation and returns its index (to find its result).
    pub fn push(&mut self, op: Op) -> usize {
        self.ops.push(op);
        self.ops.len() - 1
    }
}

/// The path created by operation `index`, from a committed transaction's results.
pub fn created_path(results: &[MultiWriteResult], index: usize) -> Option<String> {
    match results.get(index) {
        Some(MultiWriteResult::Create { path, .. }) => Some(path.clone()),
        _ => None,
    }
}

/// How a failed transaction should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnFailure {
    /// Someone else changed what was read (BadVersion, NodeExists, NoNode, NotEmpty):
    /// nothing was written; re-read and decide again.
    Conflict,
    /// The reply was lost: the transaction may or may not have been applied.
    Unknown,
    /// Any other error: nothing was written.
    Other,
}

/// Classifies a transaction error.
pub fn classify(err: &MultiWriteError) -> TxnFailure {
    match err {
        MultiWriteError::OperationFailed {
            source: ZkErr::BadVersion | ZkErr::NodeExists | ZkErr::NoNode | ZkErr::NotEmpty,
            ..
        } => TxnFailure::Conflict,
        MultiWriteError::RequestFailed { source: ZkErr::ConnectionLoss } => TxnFailure::Unknown,
        _ => TxnFailure::Other,
    }
}
