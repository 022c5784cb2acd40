//! The ZooKeeper connection: connect with a bounded patience and the credentials of
//! [`Creds`] (TLS, digest), who the server says this session is, reads that ride out
//! a short `ConnectionLoss`, idempotent directory creation, and transactions. Every
//! node created here gets the ACL the tree's roles give its path ([`Zk::acl`]).
//!
//! # ConnectionLoss
//! Reads and idempotent creates (`ensure`) are retried a few times with a growing
//! pause. A transaction is never retried here: its reply may have been lost after it
//! was applied, so callers re-read (after [`Zk::sync`]) to learn whether it landed.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;
use znode_schema::acl::{Grant, Node, perm};
use znode_schema::{Layout, Security};
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
    #[error("failed to connect to ZooKeeper at {connect}{how}: no session within {patience:?}")]
    ConnectTimeout { connect: String, how: String, patience: Duration },
    /// A credential file could not be used.
    #[error("failed to load the ZooKeeper credentials: {0}")]
    Credentials(String),
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
            ZkError::ConnectTimeout { .. } | ZkError::Credentials(_) => None,
        }
    }

    /// Whether the session is over (a new client is needed).
    pub fn session_ended(&self) -> bool {
        matches!(self.zk(), Some(ZkErr::SessionExpired | ZkErr::ClientClosed | ZkErr::AuthFailed))
    }
}

/// How deployctl proves who it is: `--tls-ca`/`--tls-cert`/`--tls-key` and
/// `--digest-file` (or their `BATON_ZK_*` variables). The files are read at connect.
#[derive(Debug, Clone, Default)]
pub struct Creds {
    /// The CA certificates (PEM) of the servers: TLS when set.
    pub ca: Option<PathBuf>,
    /// The client certificate (PEM).
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
    /// A file holding `user:password` for a digest login.
    pub digest_file: Option<PathBuf>,
}

impl Creds {
    /// The digest login, `(user, password)`, when one is configured.
    pub fn digest(&self) -> Result<Option<(String, String)>, ZkError> {
        let Some(path) = &self.digest_file else { return Ok(None) };
        let text = std::fs::read_to_string(path)
            .map_err(|e| ZkError::Credentials(format!("--digest-file: failed to read {}: {e}", path.display())))?;
        let line = text.trim();
        match line.split_once(':') {
            Some((u, p)) if !u.is_empty() && !p.is_empty() && !line.contains('\n') => Ok(Some((u.into(), p.into()))),
            _ => {
                Err(ZkError::Credentials(format!("--digest-file: {} must hold one line user:password", path.display())))
            }
        }
    }

    fn tls(&self) -> Result<Option<zk::TlsOptions>, ZkError> {
        let read = |flag: &str, p: &PathBuf| {
            std::fs::read_to_string(p)
                .map_err(|e| ZkError::Credentials(format!("{flag}: failed to read {}: {e}", p.display())))
        };
        let bad = |flag: &str, e: ZkErr| ZkError::Credentials(format!("{flag}: {e}"));
        let Some(ca) = &self.ca else {
            if self.cert.is_some() || self.key.is_some() {
                return Err(ZkError::Credentials("--tls-cert and --tls-key need --tls-ca".into()));
            }
            return Ok(None);
        };
        let options = zk::TlsOptions::new().with_pem_ca(&read("--tls-ca", ca)?).map_err(|e| bad("--tls-ca", e))?;
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Ok(Some(
                options
                    .with_pem_identity(&read("--tls-cert", c)?, &read("--tls-key", k)?)
                    .map_err(|e| bad("--tls-cert", e))?,
            )),
            (None, None) => Ok(Some(options)),
            _ => Err(ZkError::Credentials("--tls-cert and --tls-key go together".into())),
        }
    }

    /// Reads and parses every credential file, before connecting.
    pub fn check(&self) -> Result<(), ZkError> {
        self.digest()?;
        self.tls().map(|_| ())
    }

    /// How the connection is made, for messages.
    fn describe(&self) -> String {
        let mut how = String::new();
        if self.ca.is_some() {
            how += " over TLS";
        }
        if let Some(c) = &self.cert {
            how += &format!(" with certificate {}", c.display());
        }
        if let Ok(Some((user, _))) = self.digest() {
            how += &format!(" as digest user {user}");
        }
        how
    }
}

/// A connected client and what is needed to connect again.
#[derive(Debug)]
pub struct Zk {
    client: zk::Client,
    connect: String,
    session_timeout: Duration,
    creds: Creds,
    /// Who the server says this session is (`x509:CN=…`, `digest:USER`).
    ids: Vec<String>,
    /// The roles of a secured tree (ACLs of new nodes), once [`Zk::learn`] read them.
    security: Option<(Layout, Security)>,
}

/// A grant as the client's ACL type.
pub fn to_acl(g: &Grant) -> zk::Acl {
    let mut p = zk::Permission::NONE;
    for (bit, perm) in [
        (perm::READ, zk::Permission::READ),
        (perm::WRITE, zk::Permission::WRITE),
        (perm::CREATE, zk::Permission::CREATE),
        (perm::DELETE, zk::Permission::DELETE),
        (perm::ADMIN, zk::Permission::ADMIN),
    ] {
        if g.perms & bit != 0 {
            p = p | perm;
        }
    }
    zk::Acl::new(p, zk::AuthId::new(&g.scheme, &g.id))
}

/// The client's ACL entry as a grant.
pub fn from_acl(a: &zk::Acl) -> Grant {
    let p = a.permission();
    let bits = [
        (perm::READ, zk::Permission::READ),
        (perm::WRITE, zk::Permission::WRITE),
        (perm::CREATE, zk::Permission::CREATE),
        (perm::DELETE, zk::Permission::DELETE),
        (perm::ADMIN, zk::Permission::ADMIN),
    ];
    let perms = bits.iter().filter(|(_, zp)| p.has(*zp)).fold(0, |acc, (b, _)| acc | b);
    Grant { perms, scheme: a.scheme().into(), id: a.id().into() }
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
    /// With TLS every server is reached over TLS; a digest login is sent at once.
    pub async fn connect(connect: &str, session_timeout: Duration, creds: &Creds) -> Result<Zk, ZkError> {
        let patience = session_timeout + Duration::from_secs(2);
        let mut connector = zk::Client::connector().with_session_timeout(session_timeout);
        if let Some((user, password)) = creds.digest()? {
            connector = connector.with_auth("digest", format!("{user}:{password}").as_bytes());
        }
        let attempt = async {
            match creds.tls()? {
                Some(tls) => connector.with_tls(tls).secure_connect(connect).await,
                None => connector.connect(connect).await,
            }
            .map_err(|source| ZkError::Connect { connect: format!("{connect}{}", creds.describe()), source })
        };
        let client = match tokio::time::timeout(patience, attempt).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(ZkError::ConnectTimeout { connect: connect.into(), how: creds.describe(), patience });
            }
        };
        let mut zk = Zk {
            client,
            connect: connect.into(),
            session_timeout,
            creds: creds.clone(),
            ids: Vec::new(),
            security: None,
        };
        zk.ids = zk.whoami().await;
        Ok(zk)
    }

    /// A new session with the same settings (after the old one expired).
    pub async fn reconnect(&self) -> Result<Zk, ZkError> {
        let mut zk = Zk::connect(&self.connect, self.session_timeout, &self.creds).await?;
        zk.security = self.security.clone();
        Ok(zk)
    }

    async fn whoami(&self) -> Vec<String> {
        match self.client.list_auth_users().await {
            Ok(users) => {
                users.iter().filter(|u| u.scheme() != "ip").map(|u| format!("{}:{}", u.scheme(), u.user())).collect()
            }
            Err(_) => Vec::new(), // a server before 3.7 cannot tell
        }
    }

    /// Reads the roles of the tree under `layout` (none: an open tree), so that
    /// every node created from now on carries the layout's ACL.
    pub async fn learn(&mut self, layout: &Layout) -> Result<(), anyhow::Error> {
        let path = layout.security();
        self.security = match self.get(&path).await? {
            Some((data, _)) => Some((layout.clone(), znode_schema::decode::<Security>(&path, &data)?)),
            None => None,
        };
        Ok(())
    }

    /// Uses `security` for the ACLs of new nodes (after `init` wrote it).
    pub fn set_security(&mut self, layout: &Layout, security: Security) {
        self.security = Some((layout.clone(), security));
    }

    /// Who the server says this session is; empty when unauthenticated.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// The digest ACL id of this session's login, if it has one.
    pub fn digest_id(&self) -> Option<String> {
        self.creds.digest().ok().flatten().map(|(u, p)| znode_schema::acl::digest_id(&u, &p))
    }

    /// The connect string.
    pub fn connect_string(&self) -> &str {
        &self.connect
    }

    /// The ACL a node created at `path` gets: the layout's, or open in an open tree.
    pub fn acl(&self, path: &str) -> Vec<zk::Acl> {
        match &self.security {
            None => zk::Acls::anyone_all().to_vec(),
            Some((layout, sec)) => {
                let node = layout.classify(path).unwrap_or(Node::Other);
                sec.acl(node, &[]).iter().map(to_acl).collect()
            }
        }
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
        let acl = self.acl(path);
        let options = zk::CreateMode::Persistent.with_acls(zk::Acls::new(&acl));
        // Existing: nothing to do (a create would need the parent's create right).
        if let Ok(Some(_)) = self.client.check_stat(path).await {
            return Ok(false);
        }
        match with_retry(|| self.client.create(path, b"", &options)).await {
            Ok(_) => Ok(true),
            Err(ZkErr::NodeExists) => Ok(false),
            Err(source) => Err(ZkError::Op { op: "create", path: path.into(), source }),
        }
    }

    /// The ACL of `path`; `None` when it does not exist.
    pub async fn get_acl(&self, path: &str) -> Result<Option<Vec<Grant>>, ZkError> {
        match with_retry(|| self.client.get_acl(path)).await {
            Ok((acl, _)) => Ok(Some(acl.iter().map(from_acl).collect())),
            Err(ZkErr::NoNode) => Ok(None),
            Err(source) => Err(ZkError::Op { op: "read the ACL of", path: path.into(), source }),
        }
    }

    /// Sets the ACL of `path` (any ACL version); a missing node is fine.
    pub async fn set_acl(&self, path: &str, acl: &[Grant]) -> Result<(), ZkError> {
        let acl: Vec<zk::Acl> = acl.iter().map(to_acl).collect();
        match with_retry(|| self.client.set_acl(path, &acl, None)).await {
            Ok(_) | Err(ZkErr::NoNode) => Ok(()),
            Err(source) => Err(ZkError::Op { op: "set the ACL of", path: path.into(), source }),
        }
    }

    /// Sets the data of `path` at `version`, or creates it when `version` is `None`.
    pub async fn put(&self, path: &str, data: &[u8], version: Option<i32>) -> Result<(), ZkError> {
        let acl = self.acl(path);
        let result = match version {
            Some(v) => self.client.set_data(path, data, Some(v)).await.map(|_| ()),
            None => self
                .client
                .create(path, data, &zk::CreateMode::Persistent.with_acls(zk::Acls::new(&acl)))
                .await
                .map(|_| ()),
        };
        result.map_err(|source| ZkError::Op { op: "write", path: path.into(), source })
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
        let acls: Vec<Vec<zk::Acl>> = txn
            .ops
            .iter()
            .map(|op| match op {
                Op::Create { path, .. } | Op::CreateSeq { prefix: path, .. } => self.acl(path),
                _ => Vec::new(),
            })
            .collect();
        let mut w = self.client.new_multi_writer();
        for (op, acl) in txn.ops.iter().zip(&acls) {
            let added = match op {
                Op::Check { path, version } => w.add_check_version(path, *version),
                Op::Create { path, data } => {
                    w.add_create(path, data, &zk::CreateMode::Persistent.with_acls(zk::Acls::new(acl)))
                }
                Op::CreateSeq { prefix, data } => {
                    w.add_create(prefix, data, &zk::CreateMode::PersistentSequential.with_acls(zk::Acls::new(acl)))
                }
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
