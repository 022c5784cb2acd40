//! The JSON payloads of every znode. Encoded by [`crate::codec`], which adds
//! `"schema": 1`; readers ignore unknown fields.

use crate::policy::Policy;
use serde::{Deserialize, Serialize};

/// `current/<service>/<host>` (ephemeral): the host runs the service, healthy, at this version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Current {
    /// The host id.
    pub host: String,
    /// The service name.
    pub service: String,
    /// The version it runs.
    pub version: String,
    /// Always `online` while the node exists.
    pub state: String,
    /// The service's process id, when the sidecar started it itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// When the service became healthy at this version.
    pub since: String,
    /// The sidecar's version.
    pub sidecar: String,
    /// The last problem the sidecar met with the staged release (download, verification),
    /// so operators see it with `zkCli.sh get`; absent when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// How an artifact is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArtifactFormat {
    /// A gzip-compressed tarball, unpacked into the release directory.
    #[serde(rename = "tar.gz")]
    TarGz,
    /// A single file, installed executable into the release directory.
    #[serde(rename = "file")]
    File,
}

impl ArtifactFormat {
    /// The format a URL's file name suggests: `.tar.gz` and `.tgz` are tarballs.
    pub fn from_url(url: &str) -> Self {
        let path = url.split(['?', '#']).next().unwrap_or(url);
        if path.ends_with(".tar.gz") || path.ends_with(".tgz") { ArtifactFormat::TarGz } else { ArtifactFormat::File }
    }
}

/// Where a release's bytes are and how to check them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// `http://`, `https://` or `file://`.
    pub url: String,
    /// 64 lowercase hex digits.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// How to install it.
    pub format: ArtifactFormat,
    /// The text of a minisign signature of the artifact's bytes (the `.minisig` file),
    /// whose trusted comment is `baton SERVICE VERSION`. Sidecars with trusted keys
    /// install only releases whose signature verifies with one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl Artifact {
    /// The trusted comment a signature of `service`'s release `version` must carry.
    pub fn trusted_comment(service: &str, version: &str) -> String {
        format!("baton {service} {version}")
    }
}

/// `staging/<service>` (persistent): the staged release and its rollout policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staging {
    /// The service name.
    pub service: String,
    /// The staged version.
    pub version: String,
    /// Its artifact.
    pub artifact: Artifact,
    /// The rollout policy.
    #[serde(default)]
    pub policy: Policy,
    /// When it was staged.
    pub staged_at: String,
    /// Who staged it (`user@host`).
    pub staged_by: String,
}

/// `releases/<service>/<version>` (persistent, immutable): a catalog entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The service name.
    pub service: String,
    /// The version.
    pub version: String,
    /// Its artifact.
    pub artifact: Artifact,
    /// When it was first staged.
    pub staged_at: String,
    /// Who first staged it.
    pub staged_by: String,
    /// The policy it was first staged with, which `deployctl rollback` uses to go back
    /// to it; absent in entries written before deployctl recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
}

/// `staging/<service>/<host>-<seq>` (ephemeral sequential): the host downloaded and
/// verified the staged release and queues for its turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// The host id.
    pub host: String,
    /// The version it downloaded.
    pub version: String,
    /// When.
    pub at: String,
}

/// The state of a deploy entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployState {
    /// Hosts take turns.
    Active,
    /// An operator paused it: no new step starts.
    Paused,
    /// Too many failures: no new step starts until an operator acts.
    Halted,
}

impl std::fmt::Display for DeployState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeployState::Active => "active",
            DeployState::Paused => "paused",
            DeployState::Halted => "halted",
        })
    }
}

/// `deploy/deploy-<seq>` (persistent sequential): one service rollout in the order queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployEntry {
    /// The service.
    pub service: String,
    /// The target version.
    pub version: String,
    /// Active, paused or halted.
    pub state: DeployState,
    /// Why it is paused or halted.
    #[serde(default)]
    pub reason: Option<String>,
    /// Host failures counted so far.
    #[serde(default)]
    pub failures: u32,
    /// Hosts whose step failed in this rollout (they went back and do not queue
    /// again for this entry); absent when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_hosts: Vec<String>,
    /// When it was created.
    pub created_at: String,
    /// Who created it.
    pub created_by: String,
}

/// `deploy/deploy-<seq>/upgrading/<host>` (persistent): a host holds an upgrade slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upgrading {
    /// The host id.
    pub host: String,
    /// The service whose step this is (a host runs several): recovery acts only on
    /// markers of its own service. Markers written before this field existed lack it;
    /// the entry they live under names the service then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The version it ran before the step (none on a host that ran nothing).
    pub from: Option<String>,
    /// The version it moves to.
    pub to: String,
    /// When the step started.
    pub since: String,
}

/// What a history event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A release was staged.
    Staged,
    /// A host finished its step at the new version.
    HostUpgraded,
    /// A host's step failed and it went back.
    HostFailed,
    /// A rollout halted.
    Halted,
    /// An operator paused a rollout.
    Paused,
    /// An operator resumed a rollout.
    Resumed,
    /// An operator aborted a rollout.
    Aborted,
    /// Every online host runs the staged version.
    Completed,
    /// An operator rolled back.
    RolledBack,
    /// An operator freed a host's slot.
    Unlocked,
    /// A host could not download or verify the staged release.
    DownloadFailed,
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_value(self).ok();
        f.write_str(s.as_ref().and_then(|v| v.as_str()).unwrap_or("?"))
    }
}

/// `history/<service>/event-<seq>` (persistent sequential): the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// When.
    pub at: String,
    /// What.
    pub event: EventKind,
    /// The service.
    pub service: String,
    /// The version concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The host concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Free text: a cause, a reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Who did it (`user@host`, or `sidecar@<host>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// How many times it happened, for a repeated failure coalesced into one event
    /// (`detail` is then the latest error); absent: once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
}
