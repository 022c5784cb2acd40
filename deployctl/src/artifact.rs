//! Checks of a release's artifact before anything is written: URL scheme, sha256
//! digits, and the sha256 and size of a local copy.

use crate::error::Invalid;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// Checks a URL: `http://`, `https://` or `file://`, followed by something.
pub fn check_url(url: &str) -> Result<(), Invalid> {
    let rest = ["http://", "https://", "file://"].iter().find_map(|s| url.strip_prefix(s));
    match rest {
        Some(rest) if !rest.is_empty() && !url.chars().any(|c| c.is_whitespace() || c.is_control()) => Ok(()),
        _ => Err(Invalid::Url(url.into())),
    }
}

/// Checks and normalizes a sha256 to 64 lowercase hex digits.
pub fn check_sha256(hex: &str) -> Result<String, Invalid> {
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex.to_ascii_lowercase())
    } else {
        Err(Invalid::Sha256(hex.into()))
    }
}

/// The sha256 (lowercase hex) and size of a local file.
pub fn hash_file(path: &Path) -> Result<(String, u64), Invalid> {
    let err = |source| Invalid::File { file: path.display().to_string(), source };
    let mut file = std::fs::File::open(path).map_err(err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// The longest signature file read.
const MAX_SIGNATURE: u64 = 4096;

/// The signature to store for `service`'s release `version`: read from `signature`,
/// or made over `file` with the secret key `sign_key` by the `minisign` tool; its
/// trusted comment checked, and verified over `file` with one of `trust_keys` when
/// any are given.
pub fn signature(
    service: &str,
    version: &str,
    signature: Option<&Path>,
    sign_key: Option<&Path>,
    file: Option<&Path>,
    trust_keys: &[String],
) -> Result<Option<String>, Invalid> {
    let bad = Invalid::Signature;
    let expected = znode_schema::Artifact::trusted_comment(service, version);
    let made;
    let signature = match (signature, sign_key, file) {
        (Some(path), _, _) => Some(path),
        (None, Some(key), Some(file)) => {
            made = sign(key, file, &expected)?;
            Some(made.path())
        }
        _ => None,
    };
    let text = match signature {
        Some(path) => {
            let err = |e: std::io::Error| bad(format!("failed to read the signature {}: {e}", path.display()));
            let f = std::fs::File::open(path).map_err(err)?;
            let mut text = String::new();
            f.take(MAX_SIGNATURE + 1).read_to_string(&mut text).map_err(err)?;
            if text.len() as u64 > MAX_SIGNATURE {
                return Err(bad(format!("the signature {} is longer than {MAX_SIGNATURE} bytes", path.display())));
            }
            text
        }
        None if !trust_keys.is_empty() => {
            return Err(bad("--trust-key needs a signature: give --signature FILE or --sign-key FILE".into()));
        }
        None => return Ok(None),
    };
    let decoded = minisign_verify::Signature::decode(&text)
        .map_err(|e| bad(format!("the signature is not a minisign signature: {e}")))?;
    if decoded.trusted_comment() != expected {
        return Err(bad(format!(
            "the signature's trusted comment is {:?}, expected {expected:?} (sign with -t \"{expected}\")",
            decoded.trusted_comment()
        )));
    }
    if let (false, Some(file)) = (trust_keys.is_empty(), file) {
        verify(&decoded, file, trust_keys)?;
    }
    Ok(Some(text))
}

/// Verifies `signature` over `file` with one of `keys`.
fn verify(signature: &minisign_verify::Signature, file: &Path, keys: &[String]) -> Result<(), Invalid> {
    let bad = Invalid::Signature;
    let mut tried = Vec::new();
    for key in keys {
        let pk = if key.starts_with("RW") && !Path::new(key).exists() {
            minisign_verify::PublicKey::from_base64(key.trim())
        } else {
            minisign_verify::PublicKey::from_file(key)
        }
        .map_err(|e| bad(format!("--trust-key {key:?} is not a minisign public key: {e}")))?;
        let Ok(mut verifier) = pk.verify_stream(signature) else {
            tried.push(key.as_str());
            continue;
        };
        let err = |source| Invalid::File { file: file.display().to_string(), source };
        let mut input = std::fs::File::open(file).map_err(err)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = input.read(&mut buf).map_err(err)?;
            if n == 0 {
                break;
            }
            verifier.update(&buf[..n]);
        }
        return verifier.finalize().map_err(|_| {
            bad(format!("the signature does not verify over {} with --trust-key {key:?}", file.display()))
        });
    }
    Err(bad(format!("the signature was made by none of the trusted keys {tried:?}")))
}

/// Signs `file` with the `minisign` tool and the secret key `key`, trusted comment
/// `comment`; returns the signature file (removed when dropped). The tool asks for
/// the key's password on the terminal when it has one.
fn sign(key: &Path, file: &Path, comment: &str) -> Result<tempfile::NamedTempFile, Invalid> {
    let bad = Invalid::Signature;
    let out = tempfile::Builder::new()
        .prefix("deployctl-")
        .suffix(".minisig")
        .tempfile()
        .map_err(|e| bad(format!("failed to create a temporary file for the signature: {e}")))?;
    let status = std::process::Command::new("minisign")
        .args(["-S", "-s"])
        .arg(key)
        .arg("-m")
        .arg(file)
        .arg("-x")
        .arg(out.path())
        .args(["-t", comment])
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| bad(format!("failed to run minisign (Debian package minisign) to sign with --sign-key: {e}")))?;
    if !status.success() {
        return Err(bad(format!("minisign failed to sign {} with {} ({status})", file.display(), key.display())));
    }
    Ok(out)
}

/// `file://` + the absolute path of a local file.
pub fn file_url(path: &Path) -> Result<String, Invalid> {
    let abs =
        std::fs::canonicalize(path).map_err(|source| Invalid::File { file: path.display().to_string(), source })?;
    Ok(format!("file://{}", abs.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case("https://repo/api-1.4.0.tar.gz" => true; "https")]
    #[test_case("http://repo/a" => true; "http")]
    #[test_case("file:///srv/a.tar.gz" => true; "file")]
    #[test_case("ftp://repo/a" => false; "ftp")]
    #[test_case("https://" => false; "nothing after")]
    #[test_case("repo/a" => false; "no scheme")]
    #[test_case("https://repo/a b" => false; "space")]
    fn urls(url: &str) -> bool {
        check_url(url).is_ok()
    }

    #[test]
    fn sha256_digits() {
        assert_eq!(check_sha256(&"AB".repeat(32)).unwrap(), "ab".repeat(32));
        assert!(check_sha256(&"a".repeat(63)).is_err());
        assert!(check_sha256(&"g".repeat(64)).is_err());
    }
}
