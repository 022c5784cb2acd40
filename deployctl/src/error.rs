//! Why a command was refused, and the exit code each outcome maps to.
//!
//! | code | meaning |
//! | ---- | ------- |
//! | 0 | success (`watch`: the rollout completed; a closed stdout) |
//! | 1 | runtime error: ZooKeeper unreachable, a transaction kept conflicting, I/O |
//! | 2 | usage error or invalid input (an artifact that cannot be fetched or verified too), nothing written |
//! | 3 | refused by the state in ZooKeeper: no tree, no such service, a conflict; nothing written |
//! | 4 | `watch`: the rollout halted, or was aborted or superseded |

use znode_schema::{NameError, layout::RootError, policy::PolicyError};

/// Process exit codes (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// A runtime or ZooKeeper error.
    Runtime = 1,
    /// Usage error or invalid input; nothing was written.
    Usage = 2,
    /// Refused by the state in ZooKeeper; nothing was written.
    Refused = 3,
    /// `watch`: the rollout halted or was aborted.
    Halted = 4,
}

/// The text appended to `deployctl --help`: the one table for every command
/// (docs/deployctl.md has it too).
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success; watch: every watched rollout completed; a closed stdout (`| head`) ends quietly with 0
  1  runtime error: ZooKeeper unreachable, other writers kept winning, I/O, watch --timeout
  2  usage error or invalid input (names, flags, sha256, URL, policy, an artifact that cannot be
     fetched or does not match --sha256/--size), refused before anything was written
  3  refused by the state in ZooKeeper, nothing written: no tree (run init), no such service,
     a conflict (unfinished rollout, immutable version, nothing to resume/roll back...),
     check found problems
  4  watch: a rollout halted, or was aborted, rolled back or superseded
The table is the same for every command. Under --json an error is one line on stderr: {\"error\": \"…\", \"exit\": 3, \"kind\": \"refused\"}.";

/// An input refused before anything was written (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    /// A service name, host id or version outside the allowed characters.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A quorum, duration or other policy value.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// `--root` is not an absolute ZooKeeper path.
    #[error(transparent)]
    Root(#[from] RootError),
    /// The sha256 is not 64 hex digits.
    #[error("invalid sha256 {0:?}: expected 64 hex digits")]
    Sha256(String),
    /// The URL has another scheme or nothing after it.
    #[error("invalid URL {0:?}: expected http://, https:// or file:// followed by a location")]
    Url(String),
    /// `--sha256` disagrees with the local copy of the artifact.
    #[error("--sha256 {given} does not match {file}, whose sha256 is {actual}")]
    FileSha256 { given: String, file: String, actual: String },
    /// `--size` disagrees with the local copy of the artifact.
    #[error("--size {given} does not match {file}, which is {actual} bytes long")]
    FileSize { given: u64, file: String, actual: u64 },
    /// The local artifact cannot be read.
    #[error("failed to read the artifact {file}: {source}")]
    File {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// Neither `--sha256` nor a local copy to compute it from.
    #[error("the artifact's sha256 is unknown: give --sha256 HEX or --file PATH")]
    NoSha256,
    /// Neither `--url` nor a local copy to point at.
    #[error("the artifact's URL is unknown: give --url URL or --file PATH")]
    NoUrl,
    /// The size is unknown (`--no-fetch` without `--size`).
    #[error(
        "the artifact's size is unknown: --no-fetch needs --size BYTES \
         (hosts verify the size as well as the sha256)"
    )]
    NoSize,
    /// The artifact could not be fetched from its URL.
    #[error(transparent)]
    Fetch(#[from] crate::fetch::FetchError),
    /// The fetched artifact's sha256 is not the one given.
    #[error("the artifact at {url} has sha256 {actual}, not the expected {expected} (--sha256); nothing was staged")]
    FetchedSha256 { url: String, expected: String, actual: String },
    /// The fetched artifact's size is not the one given.
    #[error("the artifact at {url} is {actual} bytes long, not the expected {given} (--size); nothing was staged")]
    FetchedSize { url: String, given: u64, actual: u64 },
    /// No ZooKeeper to talk to.
    #[error("no ZooKeeper given: use --zk HOST:PORT[,HOST:PORT...][/chroot] or set BATON_ZK")]
    NoZk,
    /// A numeric flag out of range.
    #[error("{0}")]
    Flag(String),
    /// The signature cannot be read, made, or is not for this release.
    #[error("{0}")]
    Signature(String),
}

/// A command refused because of the state in ZooKeeper (exit 3); nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The tree does not exist yet.
    #[error("the baton tree under {root} does not exist (missing {missing}); run `deployctl init` first")]
    NoTree { root: String, missing: String },
    /// The service already has an unfinished rollout.
    #[error(
        "{service} already has an unfinished rollout to {version} ({state}) at {path}; \
         add --replace to supersede it"
    )]
    Unfinished { service: String, version: String, state: String, path: String },
    /// The version is in the catalog with another artifact.
    #[error(
        "release {service} {version} is already in the catalog with sha256 {existing} and size {existing_size} \
         (at {path}); a version is immutable: stage a new version"
    )]
    CatalogMismatch { service: String, version: String, existing: String, existing_size: u64, path: String },
    /// No sidecar runs the service (a typo?): its rollout would have no host.
    #[error(
        "no sidecar has ever registered service {service} ({path} does not exist): is the name right? \
         add --force to stage it anyway"
    )]
    NeverRegistered { service: String, path: String },
    /// The quorum can never be met by the hosts online: nobody could ever step.
    #[error(
        "quorum {quorum} of {service} needs {required} host(s) to stay online while one steps, but {online} \
         host(s) are online (and {upgrading} upgrading): no host could ever take its step; \
         lower --quorum, or add --force to stage it anyway"
    )]
    QuorumUnreachable { service: String, quorum: String, required: u32, online: u32, upgrading: u32 },
    /// The service has no deploy entry.
    #[error("no unfinished rollout of {service}")]
    NoRollout { service: String },
    /// Promote of a rollout without a canary phase, or promoted already.
    #[error("{service}'s rollout to {version} {why}: nothing to promote")]
    NothingToPromote { service: String, version: String, why: String },
    /// Rollback of a release staged with `on_failure = stay`.
    #[error(
        "{service} {version} was staged with on_failure = stay: it cannot be undone (a schema migration?); \
         roll forward with a new release, or add --force to roll back anyway"
    )]
    CannotUndo { service: String, version: String },
    /// Resume of a rollout that waits for promotion after its canaries.
    #[error(
        "{service}'s rollout to {version} is paused after its canary phase (canaries: {canaries}): \
         promote it with `deployctl promote {service}`, or abort or roll back"
    )]
    AwaitsPromotion { service: String, version: String, canaries: String },
    /// Pause of a paused rollout.
    #[error("{service}'s rollout to {version} is already paused")]
    AlreadyPaused { service: String, version: String },
    /// Pause of a halted rollout.
    #[error("{service}'s rollout to {version} is halted ({reason}); resume, abort or roll it back instead")]
    PauseHalted { service: String, version: String, reason: String },
    /// Resume of an active rollout without failures.
    #[error("nothing to resume: {service}'s rollout to {version} is active with no failures counted")]
    NothingToResume { service: String, version: String },
    /// The deploy entry is not readable.
    #[error("the deploy entry of {service} cannot be changed safely: {error}")]
    MalformedEntry { service: String, error: String },
    /// Unlock of a host without a marker.
    #[error("host {host} holds no upgrading slot in {service}'s rollout")]
    NoMarker { service: String, host: String },
    /// Unlock of a host whose sidecar is alive.
    #[error(
        "host {host} still has a live ZooKeeper session ({evidence} exists); its sidecar will finish or undo its step; add --force to unlock anyway"
    )]
    HostAlive { host: String, evidence: String },
    /// A version that is not in the catalog.
    #[error("release {service} {version} is not in the catalog; see `deployctl releases {service}`")]
    NotInCatalog { service: String, version: String },
    /// Nothing to roll back to.
    #[error("no release of {service} to roll back to: {why}")]
    NoRollbackTarget { service: String, why: String },
    /// Rollback to what every online host already runs.
    #[error("nothing to roll back: {service} {version} is staged and every online host ({hosts}) runs it")]
    NothingToRollBack { service: String, version: String, hosts: u32 },
    /// Rollback to the release a rollout is already moving to.
    #[error("{service} is already rolling to {version} ({path}); watch it with `deployctl watch {service}`")]
    AlreadyRollingTo { service: String, version: String, path: String },
    /// A second rollback without `--to`: it would walk back one more release.
    #[error(
        "{service} was already rolled back to {version} by {by} at {at}; a second rollback would walk the fleet \
         back one more release: give --to VERSION to do that"
    )]
    AlreadyRolledBack { service: String, version: String, by: String, at: String },
    /// `watch` of a service without a rollout that is not complete either.
    #[error("no unfinished rollout of {service} to watch ({detail})")]
    NothingToWatch { service: String, detail: String },
    /// `init` with roles that do not include the identity running it.
    #[error(
        "ZooKeeper authenticated this deployctl as {who}, which is not one of the deployers ({deployers}): \
         securing the tree would lock it out; connect as a deployer (--tls-cert/--digest-file)"
    )]
    NotDeployer { who: String, deployers: String },
    /// `check` of a tree without roles.
    #[error(
        "the tree under {root} is open (no security node): anyone may change anything; secure it with `deployctl init --deployer ID --sidecar ID`"
    )]
    OpenTree { root: String },
    /// `check` found nodes with looser ACLs than the layout's.
    #[error(
        "{count} node(s) under {root} have an ACL looser than the layout's; `deployctl init` with the same roles tightens them"
    )]
    LooseAcls { root: String, count: usize },
    /// `check` found payloads the sidecars cannot read, or read otherwise than meant.
    #[error("{count} node(s) under {root} are invalid (listed above)")]
    InvalidNodes { root: String, count: usize },
    /// A service of which nothing is known.
    #[error(
        "no such service {service}: nothing under {root}/current, staging, releases or history, and no deploy entry; \
         is the name right?"
    )]
    UnknownService { service: String, root: String },
    /// `history`/`releases` of an unknown service.
    #[error("{what} of {service} not found at {path}")]
    NotFound { what: String, service: String, path: String },
}

/// `watch` saw the rollout halt or vanish without completing (exit 4).
#[derive(Debug, thiserror::Error)]
#[error("rollout of {service} {version} did not complete: {reason}")]
pub struct Halted {
    /// The service.
    pub service: String,
    /// The target version.
    pub version: String,
    /// Why: the halt reason, or who aborted it.
    pub reason: String,
}

impl Exit {
    /// The name of the code in JSON errors.
    pub fn kind(self) -> &'static str {
        match self {
            Exit::Ok => "ok",
            Exit::Runtime => "runtime",
            Exit::Usage => "usage",
            Exit::Refused => "refused",
            Exit::Halted => "halted",
        }
    }
}

/// Prints an error on stderr: `deployctl: <what failed>: <why>`, or under `--json`
/// one line `{"error": "<what failed>: <why>", "exit": 3, "kind": "refused"}`.
pub fn report(err: &anyhow::Error, json: bool) {
    let code = exit_code(err);
    if json {
        let v = serde_json::json!({"error": format!("{err:#}"), "exit": code as i32, "kind": code.kind()});
        eprintln!("{v}");
    } else {
        eprintln!("deployctl: {err:#}");
    }
}

/// The exit code for an error: the first typed cause found in its chain decides.
pub fn exit_code(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        if cause.is::<Invalid>() {
            return Exit::Usage;
        }
        if cause.is::<Refusal>() {
            return Exit::Refused;
        }
        if cause.is::<Halted>() {
            return Exit::Halted;
        }
    }
    Exit::Runtime
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn codes_follow_the_cause_through_context() {
        let e = Err::<(), _>(Invalid::NoSize).context("staging api").unwrap_err();
        assert_eq!(exit_code(&e), Exit::Usage);
        let e = anyhow::Error::from(Refusal::NoRollout { service: "api".into() });
        assert_eq!(exit_code(&e), Exit::Refused);
        let e = anyhow::Error::from(Halted { service: "a".into(), version: "1".into(), reason: "x".into() });
        assert_eq!(exit_code(&e), Exit::Halted);
        assert_eq!(exit_code(&anyhow::anyhow!("boom")), Exit::Runtime);
    }
}
