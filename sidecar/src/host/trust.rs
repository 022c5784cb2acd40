//! Signed releases: minisign signatures checked against the keys of `[trust]`.
//!
//! The sha256 in `staging/<service>` proves the bytes are the ones ZooKeeper names,
//! not who released them: whoever can write ZooKeeper can name any bytes. With
//! trusted keys configured, a release is installed only when its artifact carries a
//! minisign signature (prehashed, as `minisign -S` makes by default) that verifies
//! with one of the keys and whose trusted comment is exactly `baton SERVICE VERSION`
//! ([`Artifact::trusted_comment`]), so a release signed for one service or version
//! cannot be staged as another. The trusted comment is covered by the signature.
//!
//! Without keys nothing is checked (open mode, the default for a local try); a
//! signature present in the artifact is then ignored.

use minisign_verify::{PublicKey, Signature};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use znode_schema::Artifact;

/// The longest signature text accepted (a minisign signature is about 300 bytes).
pub const MAX_SIGNATURE_LEN: usize = 4096;

/// The keys a sidecar trusts; empty: signatures are not required.
#[derive(Clone, Default)]
pub struct Trust {
    keys: Vec<(String, PublicKey)>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust").field("keys", &self.keys.iter().map(|(k, _)| k).collect::<Vec<_>>()).finish()
    }
}

/// Why a key of `[trust] minisign_keys` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid minisign public key {key:?}: expected the base64 line of a minisign.pub file (RW…)")]
pub struct BadKey {
    /// The key as given.
    pub key: String,
}

/// Why a release's signature was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// Trusted keys are configured and the artifact carries no signature.
    #[error("the release is not signed, and this host installs only releases signed by a trusted key")]
    Unsigned,
    /// The signature text is not a minisign signature.
    #[error("the release's signature is not a minisign signature: {reason}")]
    Malformed { reason: String },
    /// The signature was made for another service or version (or without the comment).
    #[error("the release's signature is for {found:?}, expected trusted comment {expected:?}")]
    WrongComment { expected: String, found: String },
    /// No trusted key has the signature's key id.
    #[error("the release is signed by key {key_id}, which is not among this host's {trusted} trusted keys")]
    UnknownKey { key_id: String, trusted: usize },
    /// The key matches but the signature does not verify: the bytes or the comment
    /// were changed after signing.
    #[error(
        "the release's signature does not verify with trusted key {key}: the artifact or its signature was altered"
    )]
    Invalid { key: String },
    /// Reading the downloaded artifact failed.
    #[error("failed to read {} to check its signature: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Trust {
    /// Trust for `keys` (base64 public keys, the second line of a `minisign.pub`).
    pub fn from_keys(keys: &[String]) -> Result<Trust, BadKey> {
        let keys = keys
            .iter()
            .map(|k| {
                let key = k.trim();
                PublicKey::from_base64(key).map(|pk| (key.to_string(), pk)).map_err(|_| BadKey { key: k.clone() })
            })
            .collect::<Result<_, _>>()?;
        Ok(Trust { keys })
    }

    /// Whether releases must be signed.
    pub fn is_enforced(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Checks `artifact`'s signature over the bytes of `file` (its verified download)
    /// for `service`'s release `version`. Reads the whole file: call it off the runtime.
    pub fn check_file(
        &self,
        file: &Path,
        artifact: &Artifact,
        service: &str,
        version: &str,
    ) -> Result<(), SignatureError> {
        if !self.is_enforced() {
            return Ok(());
        }
        let input = std::fs::File::open(file).map_err(|source| SignatureError::Io { path: file.into(), source })?;
        self.check_reader(input, file, artifact, service, version)
    }

    /// Checks `bytes` (a whole artifact in memory).
    pub fn check_bytes(
        &self,
        bytes: &[u8],
        artifact: &Artifact,
        service: &str,
        version: &str,
    ) -> Result<(), SignatureError> {
        self.check_reader(bytes, Path::new("<memory>"), artifact, service, version)
    }

    /// Checks the signature over everything `input` (named `path` in errors) holds.
    fn check_reader(
        &self,
        mut input: impl Read,
        path: &Path,
        artifact: &Artifact,
        service: &str,
        version: &str,
    ) -> Result<(), SignatureError> {
        if !self.is_enforced() {
            return Ok(());
        }
        let (key, signature) = self.signature_for(artifact, service, version)?;
        let mut verifier =
            key.1.verify_stream(&signature).map_err(|e| SignatureError::Malformed { reason: e.to_string() })?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = input.read(&mut buf).map_err(|source| SignatureError::Io { path: path.into(), source })?;
            if n == 0 {
                break;
            }
            verifier.update(&buf[..n]);
        }
        verifier.finalize().map_err(|_| SignatureError::Invalid { key: key.0.clone() })
    }

    /// The decoded signature, its comment checked, and the trusted key it names.
    fn signature_for(
        &self,
        artifact: &Artifact,
        service: &str,
        version: &str,
    ) -> Result<(&(String, PublicKey), Signature), SignatureError> {
        let text = artifact.signature.as_deref().ok_or(SignatureError::Unsigned)?;
        let signature = decode(text)?;
        let expected = Artifact::trusted_comment(service, version);
        if signature.trusted_comment() != expected {
            let found = signature.trusted_comment().chars().take(200).collect();
            return Err(SignatureError::WrongComment { expected, found });
        }
        let key_id = key_id(text);
        // verify_stream checks the key id first: the key whose id matches, if any.
        let key = self
            .keys
            .iter()
            .find(|(_, pk)| !matches!(pk.verify_stream(&signature), Err(minisign_verify::Error::UnexpectedKeyId)))
            .ok_or(SignatureError::UnknownKey { key_id, trusted: self.keys.len() })?;
        Ok((key, signature))
    }
}

/// Decodes a signature's text, bounded.
pub fn decode(text: &str) -> Result<Signature, SignatureError> {
    if text.len() > MAX_SIGNATURE_LEN {
        return Err(SignatureError::Malformed { reason: format!("{} bytes, at most {MAX_SIGNATURE_LEN}", text.len()) });
    }
    Signature::decode(text).map_err(|e| SignatureError::Malformed { reason: e.to_string() })
}

/// The key id a signature names, in minisign's hex form (for messages); `?` when the
/// text cannot be read.
fn key_id(text: &str) -> String {
    use base64::Engine;
    use std::fmt::Write;
    let line = text.lines().nth(1).unwrap_or_default().trim();
    let bytes = base64::engine::general_purpose::STANDARD.decode(line).unwrap_or_default();
    if bytes.len() < 10 {
        return "?".into();
    }
    // minisign prints the 8 key-id bytes little-endian as one hex number.
    bytes[2..10].iter().rev().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02X}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use znode_schema::ArtifactFormat;

    struct Signer {
        pk: minisign::PublicKey,
        sk: minisign::SecretKey,
    }

    impl Signer {
        fn new() -> Signer {
            let minisign::KeyPair { pk, sk } = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
            Signer { pk, sk }
        }

        fn public(&self) -> String {
            self.pk.to_base64()
        }

        fn sign(&self, bytes: &[u8], comment: &str) -> String {
            let sig = minisign::sign(Some(&self.pk), &self.sk, io::Cursor::new(bytes), Some(comment), None).unwrap();
            sig.into_string()
        }
    }

    fn artifact(signature: Option<String>) -> Artifact {
        Artifact { url: "file:///x".into(), sha256: "0".repeat(64), size: 3, format: ArtifactFormat::File, signature }
    }

    #[test]
    fn a_release_signed_by_a_trusted_key_for_its_service_and_version_passes() {
        let signer = Signer::new();
        let trust = Trust::from_keys(&[signer.public()]).unwrap();
        let a = artifact(Some(signer.sign(b"abc", "baton api 1.0")));
        trust.check_bytes(b"abc", &a, "api", "1.0").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"abc").unwrap();
        trust.check_file(&dir.path().join("f"), &a, "api", "1.0").unwrap();
    }

    #[test]
    fn every_other_release_is_refused_with_its_reason() {
        let (signer, stranger) = (Signer::new(), Signer::new());
        let trust = Trust::from_keys(&[signer.public()]).unwrap();
        let check = |a: &Artifact, bytes: &[u8]| trust.check_bytes(bytes, a, "api", "1.0").unwrap_err();
        assert!(matches!(check(&artifact(None), b"abc"), SignatureError::Unsigned));
        let other_version = artifact(Some(signer.sign(b"abc", "baton api 2.0")));
        assert!(
            matches!(check(&other_version, b"abc"), SignatureError::WrongComment { found, .. } if found == "baton api 2.0")
        );
        let other_service = artifact(Some(signer.sign(b"abc", "baton web 1.0")));
        assert!(matches!(check(&other_service, b"abc"), SignatureError::WrongComment { .. }));
        let unknown = artifact(Some(stranger.sign(b"abc", "baton api 1.0")));
        assert!(matches!(check(&unknown, b"abc"), SignatureError::UnknownKey { trusted: 1, .. }));
        let good = artifact(Some(signer.sign(b"abc", "baton api 1.0")));
        assert!(matches!(check(&good, b"abd"), SignatureError::Invalid { .. }), "tampered bytes");
        let garbage = artifact(Some("not a signature".into()));
        assert!(matches!(check(&garbage, b"abc"), SignatureError::Malformed { .. }));
        let huge = artifact(Some("x".repeat(MAX_SIGNATURE_LEN + 1)));
        assert!(matches!(check(&huge, b"abc"), SignatureError::Malformed { .. }));
    }

    #[test]
    fn a_forged_trusted_comment_does_not_verify() {
        let signer = Signer::new();
        let trust = Trust::from_keys(&[signer.public()]).unwrap();
        let text = signer.sign(b"abc", "baton api 2.0").replace("baton api 2.0", "baton api 1.0");
        let err = trust.check_bytes(b"abc", &artifact(Some(text)), "api", "1.0").unwrap_err();
        assert!(matches!(err, SignatureError::Invalid { .. }), "{err}");
    }

    #[test]
    fn without_keys_nothing_is_required_and_bad_keys_are_named() {
        assert!(!Trust::default().is_enforced());
        Trust::default().check_bytes(b"abc", &artifact(None), "api", "1.0").unwrap();
        let err = Trust::from_keys(&["RWnope".into()]).unwrap_err();
        assert_eq!(err.key, "RWnope");
    }

    #[test]
    fn the_key_id_is_printed_as_minisign_does() {
        let signer = Signer::new();
        let text = signer.sign(b"abc", "c");
        let id = key_id(&text);
        assert_eq!(id.len(), 16);
        let pub_text = signer.pk.to_box().unwrap().into_string();
        assert!(pub_text.contains(&id), "{pub_text} names key id {id}");
    }
}
