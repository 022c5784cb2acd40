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
