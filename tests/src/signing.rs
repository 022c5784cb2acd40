//! minisign keys and signatures for tests of signed releases, made with the
//! `minisign` crate (the same format as the `minisign` tool).

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;
use znode_schema::Artifact;

/// A minisign key pair.
pub struct Signer {
    pk: minisign::PublicKey,
    sk: minisign::SecretKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("public", &self.public()).finish()
    }
}

impl Default for Signer {
    fn default() -> Self {
        Signer::new()
    }
}

impl Signer {
    /// A fresh key pair.
    pub fn new() -> Signer {
        let minisign::KeyPair { pk, sk } = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        Signer { pk, sk }
    }

    /// The public key, base64 (the second line of a `minisign.pub`).
    pub fn public(&self) -> String {
        self.pk.to_base64()
    }

    /// A `minisign.pub` file's text.
    pub fn public_file(&self) -> String {
        self.pk.to_box().unwrap().into_string()
    }

    /// A signature of `bytes` with `comment` as its trusted comment.
    pub fn sign(&self, bytes: &[u8], comment: &str) -> String {
        minisign::sign(Some(&self.pk), &self.sk, Cursor::new(bytes), Some(comment), None).unwrap().into_string()
    }

    /// `artifact` (a `file://` one) signed as `service`'s release `version`.
    pub fn signed(&self, artifact: &Artifact, service: &str, version: &str) -> Artifact {
        let path = artifact.url.strip_prefix("file://").expect("a file:// artifact");
        let bytes = std::fs::read(path).unwrap();
        let signature = self.sign(&bytes, &Artifact::trusted_comment(service, version));
        Artifact { signature: Some(signature), ..artifact.clone() }
    }
}

/// Makes an unencrypted key pair with the `minisign` tool (`minisign -G -W`), as an
/// operator would: returns the paths of the public and the secret key files.
pub fn minisign_keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (public, secret) = (dir.join(format!("{name}.pub")), dir.join(format!("{name}.key")));
    let mut cmd = Command::new("minisign");
    cmd.args(["-G", "-W", "-f", "-p"]).arg(&public).arg("-s").arg(&secret);
    run(cmd, "minisign -G");
    (public, secret)
}

/// Signs `file` with the `minisign` tool and `secret`, trusted comment `comment`;
/// returns the signature file's path.
pub fn minisign_sign(secret: &Path, file: &Path, comment: &str) -> PathBuf {
    let sig = file.with_extension("minisig");
    let mut cmd = Command::new("minisign");
    cmd.args(["-S", "-s"]).arg(secret).arg("-m").arg(file).arg("-x").arg(&sig).args(["-t", comment]);
    run(cmd, "minisign -S");
    sig
}

fn run(mut cmd: Command, what: &str) {
    let out = cmd.output().expect("the minisign tool (Debian package minisign; scripts/setup.sh installs it)");
    assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
}
