//! Who this sidecar is to ZooKeeper: the TLS and digest credentials of
//! `[zookeeper]` (read again for every new session, so replacing the files rotates
//! them), the identities the server authenticated (ZooKeeper's whoami), and the
//! roles of a secured tree (`<root>/security`, see [`znode_schema::acl`]), from
//! which the ACL of every node it creates follows.
//!
//! # Errors
//! A credential that cannot be loaded, a TLS session refused by either side
//! ([`diagnose_tls`]), an identity the tree does not know as a sidecar, and a write
//! ZooKeeper refuses (NoAuth) are fatal: the daemon stops with
//! an error naming the identity and the server instead of retrying forever.

use crate::config::{ZkConfig, read_digest};
use std::sync::Arc;
use znode_schema::acl::{Grant, Security};
use znode_schema::{Layout, acl};
use zookeeper_client as zkc;

/// Why no session could be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A credential file could not be read or parsed.
    #[error("failed to load the zookeeper credentials: {0}")]
    Credentials(String),
    /// The servers did not give a session.
    #[error("failed to connect to zookeeper at {connect}{how}: {source}")]
    Connect {
        /// The connect string.
        connect: String,
        /// ` over TLS as …` when relevant.
        how: String,
        /// The client's error.
        #[source]
        source: zkc::Error,
    },
}

impl ConnectError {
    /// Whether retrying cannot help (the credentials themselves are unusable).
    pub fn is_fatal(&self) -> bool {
        matches!(self, ConnectError::Credentials(_))
    }
}

fn read(path: &std::path::Path, key: &str) -> Result<String, ConnectError> {
    std::fs::read_to_string(path)
        .map_err(|e| ConnectError::Credentials(format!("zookeeper.tls.{key}: failed to read {}: {e}", path.display())))
}

/// This config's own digest ACL id (`digest:USER:HASH`), when it logs in with one.
pub fn digest_id(cfg: &ZkConfig) -> Option<String> {
    let (user, password) = read_digest(&cfg.auth.as_ref()?.digest_file).ok()?;
    Some(acl::digest_id(&user, &password))
}

/// Opens a session with the configured credentials: TLS for every server when
/// `tls` is set, a digest login when `auth` is.
pub async fn connect(cfg: &ZkConfig) -> Result<zkc::Client, ConnectError> {
    let mut connector = zkc::Client::connector().with_session_timeout(cfg.session_timeout.0);
    let mut how = String::new();
    if let Some(auth) = &cfg.auth {
        let (user, password) = read_digest(&auth.digest_file).map_err(ConnectError::Credentials)?;
        connector = connector.with_auth("digest", format!("{user}:{password}").as_bytes());
        how += &format!(" as digest user {user}");
    }
    let Some(tls) = &cfg.tls else {
        let connected = connector.connect(&cfg.connect).await;
        return connected.map_err(|source| ConnectError::Connect { connect: cfg.connect.clone(), how, source });
    };
    let bad = |key: &str, e: zkc::Error| ConnectError::Credentials(format!("zookeeper.tls.{key}: {e}"));
    let mut options = zkc::TlsOptions::new().with_pem_ca(&read(&tls.ca, "ca")?).map_err(|e| bad("ca", e))?;
    how += " over TLS";
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        options = options.with_pem_identity(&read(cert, "cert")?, &read(key, "key")?).map_err(|e| bad("cert", e))?;
        how += &format!(" with certificate {}", cert.display());
    }
    let connected = connector.with_tls(options).secure_connect(&cfg.connect).await;
    connected.map_err(|source| ConnectError::Connect { connect: cfg.connect.clone(), how, source })
}

/// After a failed connect over TLS: one handshake with the first server, by hand,
/// tells whether TLS itself is refused (a certificate the server or this host does
/// not trust, no client certificate where one is required) and why, which the client
/// library reports only as a timeout. `None` when TLS is not the problem (the server
/// is down or unreachable: retry).
pub async fn diagnose_tls(cfg: &ZkConfig) -> Option<String> {
    let tls = cfg.tls.as_ref()?;
    let servers = cfg.connect.split('/').next().unwrap_or_default();
    let server = servers.split(',').next()?.trim().trim_start_matches("tcp+tls://").to_string();
    let refused = match handshake(&server, tls).await {
        Ok(()) => return None,
        Err(Handshake::Refused(why)) => why,
        Err(Handshake::Config(why)) => return Some(format!("failed to load the zookeeper credentials: {why}")),
    };
    let cert = tls.cert.as_ref().map_or("no client certificate".into(), |c| format!("certificate {}", c.display()));
    Some(format!(
        "zookeeper at {server} refused TLS with {cert} (trusting {}): {refused}; check [zookeeper] tls",
        tls.ca.display()
    ))
}

enum Handshake {
    /// The peer or this side refused the TLS session.
    Refused(String),
    /// The local files cannot be used.
    Config(String),
}

async fn handshake(server: &str, tls: &crate::config::TlsConfig) -> Result<(), Handshake> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
    use tokio::io::AsyncReadExt;
    let patience = std::time::Duration::from_secs(5);
    let config = |e: &dyn std::fmt::Display| Handshake::Config(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&tls.ca).map_err(|e| config(&e))? {
        roots.add(cert.map_err(|e| config(&e))?).map_err(|e| config(&e))?;
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let client = match (&tls.cert, &tls.key) {
        (Some(c), Some(k)) => {
            let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(c).map_err(|e| config(&e))?.collect();
            let key = PrivateKeyDer::from_pem_file(k).map_err(|e| config(&e))?;
            builder.with_client_auth_cert(certs.map_err(|e| config(&e))?, key).map_err(|e| config(&e))?
        }
        _ => builder.with_no_client_auth(),
    };
    let Some((host, _)) = server.rsplit_once(':') else { return Ok(()) };
    let name = ServerName::try_from(host.to_string()).map_err(|e| config(&e))?;
    // Unreachable is not a TLS problem: the caller retries.
    let Ok(Ok(tcp)) = tokio::time::timeout(patience, tokio::net::TcpStream::connect(server)).await else {
        return Ok(());
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let refused = |e: std::io::Error| match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(tls) => Err(Handshake::Refused(tls.to_string())),
        None => Ok(()),
    };
    let mut stream = match tokio::time::timeout(patience, connector.connect(name, tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return refused(e),
        Err(_) => return Ok(()),
    };
    // A refused client certificate shows as an alert on the first read (TLS 1.3); a
    // server that accepted it waits silently for the session request.
    let mut byte = [0u8; 1];
    match tokio::time::timeout(std::time::Duration::from_secs(1), stream.read(&mut byte)).await {
        Ok(Err(e)) => refused(e),
        _ => Ok(()),
    }
}

/// Who a session is, and the rules of the tree it works in.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// The identities the server authenticated (`x509:CN=…`, `digest:USER`), `ip` left out.
    pub ids: Vec<String>,
    /// The roles of a secured tree; `None`: an open tree (every node `world:anyone`).
    pub security: Option<Arc<Security>>,
    /// The tree's sidecar ids that are this session's (for its own nodes' ACLs).
    pub own: Vec<String>,
}

impl Identity {
    /// Asks the server who this session is and reads the tree's roles. Fails when
    /// the tree is secured and none of its sidecar ids is this session's (a digest id
    /// must match exactly: `digest` is this session's own digest id, so a wrong
    /// password is caught here rather than at the first refused write).
    pub async fn learn(
        client: &zkc::Client,
        layout: &Layout,
        connect: &str,
        digest: Option<&str>,
    ) -> Result<Identity, String> {
        let ids = match client.list_auth_users().await {
            Ok(users) => {
                users.iter().filter(|u| u.scheme() != "ip").map(|u| format!("{}:{}", u.scheme(), u.user())).collect()
            }
            Err(err) => {
                tracing::warn!(error = %err, "zookeeper does not say who this session is (whoami needs 3.7+)");
                Vec::new()
            }
        };
        let path = layout.security();
        let security = match client.get_data(&path).await {
            Ok((data, _)) => {
                Some(znode_schema::decode::<Security>(&path, &data).map_err(|e| format!("unreadable roles: {e}"))?)
            }
            Err(zkc::Error::NoNode) => None,
            Err(zkc::Error::NoAuth) => {
                let who = if ids.is_empty() { "an unauthenticated client".into() } else { ids.join(", ") };
                let hint = if digest.is_some() { " (is the password right?)" } else { "" };
                return Err(format!(
                    "zookeeper at {connect} refused {who}{hint} reading the roles of the tree at {path} (NoAuth): \
                     this is not one of the tree's identities; check [zookeeper] tls and auth"
                ));
            }
            Err(e) => return Err(format!("failed to read {path}: {e}")),
        };
        let exact = |id: &String| !id.starts_with("digest:") || Some(id.as_str()) == digest;
        let own: Vec<String> =
            security.as_ref().map(|s| s.sidecar_ids(&ids)).unwrap_or_default().into_iter().filter(exact).collect();
        if let (Some(s), true) = (&security, own.is_empty()) {
            let who = if ids.is_empty() { "nobody (no certificate, no digest login)".into() } else { ids.join(", ") };
            let hint = match digest {
                Some(_) if s.sidecar_ids(&ids).iter().any(|i| i.starts_with("digest:")) => " (is the password right?)",
                _ => "",
            };
            return Err(format!(
                "zookeeper at {connect} authenticated this sidecar as {who}{hint}, but the tree at {} accepts \
                 only these sidecar ids: {}; check [zookeeper] tls and auth",
                layout.root(),
                s.sidecar.join(", ")
            ));
        }
        Ok(Identity { ids, security: security.map(Arc::new), own })
    }

    /// The ACL of a node created at `path`: open without roles, else the layout's.
    pub fn acl(&self, layout: &Layout, path: &str) -> Acl {
        let Some(security) = &self.security else { return Acl(zkc::Acls::anyone_all().to_vec()) };
        let node = layout.classify(path).unwrap_or(acl::Node::Other);
        Acl(security.acl(node, &self.own).iter().map(to_zk).collect())
    }

    /// `by` in history events: the authenticated identity when there is one.
    pub fn by(&self, host: &str) -> String {
        match self.ids.first() {
            Some(id) => format!("{id} (sidecar@{host})"),
            None => format!("sidecar@{host}"),
        }
    }

    /// This session's identity for error messages.
    pub fn describe(&self) -> String {
        if self.ids.is_empty() { "an unauthenticated client".into() } else { self.ids.join(", ") }
    }
}

/// A grant as the client's ACL type.
fn to_zk(g: &Grant) -> zkc::Acl {
    let mut p = zkc::Permission::NONE;
    for (bit, perm) in [
        (acl::perm::READ, zkc::Permission::READ),
        (acl::perm::WRITE, zkc::Permission::WRITE),
        (acl::perm::CREATE, zkc::Permission::CREATE),
        (acl::perm::DELETE, zkc::Permission::DELETE),
        (acl::perm::ADMIN, zkc::Permission::ADMIN),
    ] {
        if g.perms & bit != 0 {
            p = p | perm;
        }
    }
    zkc::Acl::new(p, zkc::AuthId::new(&g.scheme, &g.id))
}

/// An owned ACL for one create.
#[derive(Debug, Clone)]
pub struct Acl(Vec<zkc::Acl>);

impl Acl {
    /// Create options of `mode` with this ACL.
    pub fn options(&self, mode: zkc::CreateMode) -> zkc::CreateOptions<'_> {
        mode.with_acls(zkc::Acls::new(&self.0))
    }
}
