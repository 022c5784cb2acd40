//! The errors of the release store.

use crate::host::download::DownloadError;
use crate::host::trust::SignatureError;
use crate::host::unpack::UnpackError;
use std::io;
use std::path::PathBuf;
use znode_schema::NameError;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation failed.
    #[error("failed to access {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `state.json` is not valid.
    #[error("failed to read {}: {source}", path.display())]
    State {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A service name or version is not valid.
    #[error("failed to use a name: {0}")]
    Name(#[from] NameError),
    /// The release to activate is not installed.
    #[error("failed to activate release {version}: it is not installed")]
    NotInstalled { version: String },
}

impl PartialEq for StoreError {
    /// Compares errors for tests; I/O and JSON errors compare by path (and I/O kind).
    fn eq(&self, other: &Self) -> bool {
        use StoreError::*;
        match (self, other) {
            (Io { path: a, source: b }, Io { path: x, source: y }) => a == x && b.kind() == y.kind(),
            (State { path: a, .. }, State { path: x, .. }) => a == x,
            (Name(a), Name(x)) => a == x,
            (NotInstalled { version: a }, NotInstalled { version: x }) => a == x,
            _ => false,
        }
    }
}

/// Why installing a release failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// Downloading or verifying the artifact failed.
    #[error("failed to download release {version}: {source}")]
    Download {
        version: String,
        #[source]
        source: DownloadError,
    },
    /// The artifact matches its sha256 but its signature is missing or refused by the
    /// trusted keys. The download is deleted; nothing is unpacked.
    #[error("refused release {version}: {source}")]
    Signature {
        version: String,
        #[source]
        source: SignatureError,
    },
    /// The artifact was verified but could not be unpacked (or was refused).
    #[error("failed to unpack release {version}: {source}")]
    Unpack {
        version: String,
        #[source]
        source: UnpackError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
