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
    /// What the host is doing about the staged release, when it has been at it for a
    /// while (SPEC "What a host reports"); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<HostReport>,
}

/// What a host is doing about a service's staged release. Published only once an
/// activity has lasted a couple of seconds, and rewritten at most every few seconds,
/// so a quick rollout costs no extra writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostReport {
    /// The staged version it is about.
    pub version: String,
    /// What it does.
    pub activity: Activity,
    /// Since when (RFC 3339).
    pub since: String,
    /// `downloading`: bytes so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// `downloading`: the artifact's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// `queued`, `waiting`: the place of its ticket in the queue (1 is the front).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
    /// `queued`, `waiting`: what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// `failed`: why the release could not be downloaded or verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A host's activity about a staged release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activity {
    /// Fetching the artifact.
    Downloading,
    /// Verified, its ticket behind others in the queue.
    Queued,
    /// At the front of the queue, waiting (quorum, slots, another rollout at the
    /// head, paused, halted, canary phase).
    Waiting,
    /// The release could not be downloaded or verified (retried with backoff).
    Failed,
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

/// `peers/<service>/<version>/source-<host>` (ephemeral): the host serves the artifact
/// of this release to other hosts (verified, or while downloading it), over plain HTTP at
/// `http://<address>/v1/<service>/<version>`. Untrusted: a downloader checks the
/// address' form, and verifies whatever it receives as it would the origin's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSource {
    /// The host id.
    pub host: String,
    /// Where other hosts reach its peer server: `IP:PORT` or `NAME:PORT`.
    pub address: String,
    /// The artifact's size, bytes (as verified by the host).
    pub size: u64,
    /// The artifact's sha256 (as the release says; verified by the host once complete).
    pub sha256: String,
    /// When it started serving it.
    pub since: String,
    /// Whether the host holds the whole artifact verified; `false` while it relays
    /// the bytes it is still downloading (never verified yet: the downloader's whole
    /// artifact check is what protects it). Absent: `true`.
    #[serde(default = "complete_default")]
    pub complete: bool,
}

fn complete_default() -> bool {
    true
}

impl PeerSource {
    /// Checks [`PeerSource::address`]: `IP:PORT`, `[IPv6]:PORT` or `NAME:PORT` (a DNS
    /// name of letters, digits, `-` and `.`), the port 1–65535. What a peer node says
    /// is untrusted: nothing else is ever put in a URL.
    pub fn check_address(address: &str) -> Result<(), String> {
        if address.parse::<std::net::SocketAddr>().is_ok_and(|a| a.port() != 0) {
            return Ok(());
        }
        let bad = || format!("{address:?} is not HOST:PORT (an IP address or a DNS name, and a port 1-65535)");
        let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
        let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
        let name_ok = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if port_ok && name_ok { Ok(()) } else { Err(bad()) }
    }
}

/// `peers/<service>/<version>/origin-<slot>` (ephemeral): a host downloading this
/// release from its artifact URL; at most `origin_fetches` slots are used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginFetch {
    /// The host id.
    pub host: String,
    /// When it took the slot.
    pub since: String,
}

/// The state of a deploy entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployState {
    /// Hosts take turns.
    #[default]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The hosts fenced during the canary phase (at most the policy's `canary`);
    /// absent when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub canaries: Vec<String>,
    /// The canaries whose step ended (upgraded or failed); when all `canary` of them
    /// did, the rollout pauses with reason `canary`. Absent when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub canaries_done: Vec<String>,
    /// When the canary phase ended and the rollout paused for promotion (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_paused_at: Option<String>,
    /// `on_halt = rollback`: the rollout halted and its hosts that stepped go back to
    /// this version (the one the halting host ran before); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_back_to: Option<String>,
    /// Who promoted the rollout past its canary phase (`user@host`, or
    /// `sidecar@<host> (auto_promote)`); absent while it is not promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_by: Option<String>,
    /// When it was created.
    pub created_at: String,
    /// Who created it.
    pub created_by: String,
}

/// The reason of a rollout paused after its canary phase.
pub const CANARY_REASON: &str = "canary";

impl DeployEntry {
    /// Whether the rollout is in its canary phase under a policy's `canary`: it has
    /// one and nobody promoted it yet.
    pub fn canary_phase(&self, canary: u32) -> bool {
        canary > 0 && self.promoted_by.is_none()
    }

    /// The version hosts move to: the rollout's, or the one it rolls back to.
    pub fn target(&self) -> &str {
        self.rolling_back_to.as_deref().unwrap_or(&self.version)
    }

    /// Whether its canary phase ended (every canary's step did) and nobody promoted it.
    pub fn canary_ended(&self) -> bool {
        self.canary_paused_at.is_some() && self.promoted_by.is_none() && self.rolling_back_to.is_none()
    }

    /// Whether it is paused because its canaries stepped, waiting for promotion (and
    /// not paused by an operator).
    pub fn awaits_promotion(&self) -> bool {
        self.canary_ended() && self.state == DeployState::Paused && self.reason.as_deref() == Some(CANARY_REASON)
    }
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
    /// The canaries stepped: the rollout paused for promotion.
    CanaryPaused,
    /// A rollout was promoted past its canary phase (by an operator or `auto_promote`).
    Promoted,
    /// A rollout halted and rolls back on its own (`on_halt = rollback`).
    RollingBack,
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

#[cfg(test)]
mod tests {
    use super::PeerSource;
    use test_case::test_case;

    #[test_case("10.0.0.5:7070" => true)]
    #[test_case("[::1]:7070" => true)]
    #[test_case("web-01.dc.example:7070" => true)]
    #[test_case("localhost:1" => true)]
    #[test_case("10.0.0.5:0" => false)]
    #[test_case("10.0.0.5" => false)]
    #[test_case(":7070" => false)]
    #[test_case("a b:7070" => false)]
    #[test_case("evil/x:80" => false)]
    #[test_case("user@host:80" => false)]
    #[test_case("-a:80" => false)]
    #[test_case("host:99999" => false)]
    fn addresses(a: &str) -> bool {
        PeerSource::check_address(a).is_ok()
    }
}
