//! A ZooKeeper that checks who its clients are: TLS with client certificates (x509
//! identities) and digest logins, with a CA and certificates made per test run.
//!
//! [`Pki`] makes a CA and certificates with the `openssl` command (RSA keys, PKCS#8
//! PEM as ZooKeeper's PEM stores want them; subjects `/O=baton/CN=<name>`, whose
//! x509 ACL id is `x509:CN=<name>,O=baton`). [`SecureZk`] is a standalone server
//! serving TLS on its secure port (`ssl.clientAuth=need`, Netty) and plaintext on
//! its plain port, where digest logins (built into ZooKeeper) work too.

use crate::zk::{ServerOptions, ServerTls, ZkCluster};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use zookeeper_client as zk;

/// A certificate authority and the certificates it issued, in a temporary directory.
#[derive(Debug)]
pub struct Pki {
    dir: tempfile::TempDir,
}

/// A certificate and its key.
#[derive(Debug, Clone)]
pub struct Cert {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PKCS#8 PEM).
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out =
        Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl (apt-get install openssl)");
    assert!(out.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

impl Pki {
    /// A new CA (`ca.pem`).
    pub fn new() -> Pki {
        let dir = tempfile::Builder::new().prefix("baton-pki-").tempdir().unwrap();
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/O=baton/CN=baton test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        Pki { dir }
    }

    /// The CA certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Issues a certificate for `/O=baton/CN=<name>`, valid for clients and for a
    /// server on 127.0.0.1 and localhost.
    pub fn issue(&self, name: &str) -> Cert {
        let d = self.dir.path();
        let (key, csr, cert, ext) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
        std::fs::write(
            d.join(&ext),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        let subj = format!("/O=baton/CN={name}");
        openssl(d, &["req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", &subj]);
        let serial = format!("{}", rand::random::<u32>());
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &serial,
                "-days",
                "2",
                "-out",
                &cert,
                "-extfile",
                &ext,
            ],
        );
        Cert { cert: d.join(cert), key: d.join(key) }
    }

    /// The directory of the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

/// The x509 ACL id of a certificate issued by [`Pki::issue`] for `name`.
pub fn x509_id(name: &str) -> String {
    format!("x509:CN={name},O=baton")
}

/// A standalone server with TLS (client certificates required) on its secure port
/// and plaintext (digest logins, or nobody) on its plain port.
#[derive(Debug)]
pub struct SecureZk {
    /// The server.
    pub cluster: ZkCluster,
    /// The CA of the server's and the clients' certificates.
    pub pki: Pki,
}

impl SecureZk {
    /// Makes a CA, a server certificate, and starts the server.
    pub fn start() -> SecureZk {
        let pki = Pki::new();
        let server = pki.issue("zookeeper");
        let both = pki.dir().join("server-both.pem");
        let text = std::fs::read_to_string(&server.key).unwrap() + &std::fs::read_to_string(&server.cert).unwrap();
        std::fs::write(&both, text).unwrap();
        let tls = ServerTls { keystore: both, truststore: pki.ca() };
        let cluster = ZkCluster::standalone_with(ServerOptions { tls: Some(tls), ..Default::default() });
        SecureZk { cluster, pki }
    }

    /// The TLS connect string.
    pub fn tls_connect(&self) -> String {
        self.cluster.secure_connect_string()
    }

    /// The plaintext connect string.
    pub fn plain_connect(&self) -> String {
        self.cluster.connect_string()
    }

    /// A TLS client authenticated by `cert`.
    pub async fn tls_client(&self, cert: &Cert) -> zk::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        let tls = zk::TlsOptions::new()
            .with_pem_ca(&read(&self.pki.ca()))
            .unwrap()
            .with_pem_identity(&read(&cert.cert), &read(&cert.key))
            .unwrap();
        zk::Client::connector()
            .with_session_timeout(Duration::from_secs(6))
            .with_tls(tls)
            .secure_connect(&self.tls_connect())
            .await
            .unwrap_or_else(|e| panic!("TLS connect with {}: {e}", cert.cert.display()))
    }

    /// A plaintext client logged in as digest `user:password`.
    pub async fn digest_client(&self, user: &str, password: &str) -> zk::Client {
        zk::Client::connector()
            .with_session_timeout(Duration::from_secs(6))
            .with_auth("digest", format!("{user}:{password}").as_bytes())
            .connect(&self.plain_connect())
            .await
            .unwrap()
    }

    /// `[zookeeper]` lines for a sidecar using TLS with `cert` (`{host}` in the
    /// file names is left for [`crate::fleet::Fleet::zk_extra`]).
    pub fn sidecar_tls(&self, cert: &str, key: &str) -> String {
        format!("tls = {{ ca = \"{}\", cert = \"{cert}\", key = \"{key}\" }}", self.pki.ca().display())
    }
}

/// Writes a digest file `user:password` under `dir` and returns its path.
pub fn digest_file(dir: &Path, user: &str, password: &str) -> PathBuf {
    let p = dir.join(format!("{user}.digest"));
    std::fs::write(&p, format!("{user}:{password}\n")).unwrap();
    p
}
