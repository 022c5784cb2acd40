//! Command-line arguments. The doc comments are the `--help` text.

use crate::error::EXIT_CODES_HELP;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use znode_schema::{HumanDuration, Quorum};

/// The help heading of the options every command takes.
const GLOBAL: &str = "Global options";

/// deployctl: stage releases and watch and steer rollouts coordinated by ZooKeeper.
///
/// Every command reads or writes the znodes documented in docs/znode-schema.md; every
/// write leaves a history event signed `user@host`.
#[derive(Debug, Parser)]
#[command(name = "deployctl", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// ZooKeeper connect string: HOST:PORT[,HOST:PORT...][/chroot].
    #[arg(long, env = "BATON_ZK", global = true, help_heading = GLOBAL)]
    pub zk: Option<String>,
    /// Root of baton's tree in ZooKeeper.
    #[arg(long, env = "BATON_ROOT", default_value = znode_schema::layout::DEFAULT_ROOT, global = true, help_heading = GLOBAL)]
    pub root: String,
    /// Print JSON instead of tables (shapes documented in docs/deployctl.md).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,
    /// Who you are in history events and payloads [default: $USER@hostname].
    #[arg(long, env = "BATON_BY", global = true, help_heading = GLOBAL)]
    pub by: Option<String>,
    /// History events kept per service; older ones are pruned after each write.
    #[arg(long, default_value_t = crate::history::DEFAULT_KEEP, global = true, help_heading = GLOBAL)]
    pub history_keep: usize,
    /// ZooKeeper session timeout (the server clamps it to 2..20 ticks).
    #[arg(long, default_value = "10s", global = true, help_heading = GLOBAL)]
    pub session_timeout: HumanDuration,
    /// Connect over TLS, trusting the servers' certificates signed by this CA (PEM).
    #[arg(long, env = "BATON_ZK_TLS_CA", global = true, help_heading = GLOBAL)]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for TLS: an x509 identity such as CN=deployer.
    #[arg(long, env = "BATON_ZK_TLS_CERT", global = true, help_heading = GLOBAL)]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "BATON_ZK_TLS_KEY", global = true, help_heading = GLOBAL)]
    pub tls_key: Option<PathBuf>,
    /// Log in with a digest identity: a file holding user:password (use it over TLS).
    #[arg(long, env = "BATON_ZK_DIGEST_FILE", global = true, help_heading = GLOBAL)]
    pub digest_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create baton's tree under the root (idempotent); with --deployer and --sidecar,
    /// secure it: record the roles and set every node's ACL (an open tree is upgraded in place).
    #[command(after_help = "Examples:\n  deployctl --zk zk1:2181 init\n  \
        deployctl --zk zk1:2281 --tls-ca ca.pem --tls-cert deployer.pem --tls-key deployer.key init \\\n    \
        --deployer x509:CN=deployer,O=baton --sidecar x509:CN=sidecar,O=baton --reader world")]
    Init(InitArgs),
    /// Validate every node under the root as the sidecars read it (payloads, policy keys, staged
    /// releases without a deploy entry) and report every ACL looser than the layout's (exit 3 on
    /// any problem, or if the tree is open).
    #[command(
        after_help = "Example:\n  deployctl --zk zk1:2281 --tls-ca ca.pem --tls-cert deployer.pem --tls-key deployer.key check"
    )]
    Check,
    /// Stage a release: catalog it, make it the staged release of SERVICE and queue its rollout.
    #[command(after_help = "Examples:\n  \
        deployctl stage api --version 1.4.0 --url https://repo/api-1.4.0.tar.gz --sha256 <64 hex>\n  \
        deployctl stage api --version 1.4.0 --url https://far/api.tar.gz --sha256 <64 hex> --size 12345 --no-fetch\n  \
        deployctl stage api --version 1.4.0 --url https://repo/api-1.4.0.tar.gz --sha256 <64 hex> --dry-run\n  \
        deployctl stage api --version 1.4.0 --file ./api-1.4.0.tar.gz --url https://repo/api-1.4.0.tar.gz \\\n    \
        --quorum 60% --max-parallel 2 --bake 30s")]
    Stage(Box<StageArgs>),
    /// Show services: staged release, rollout state, hosts by version, upgrading hosts, tickets.
    #[command(after_help = "Examples:\n  deployctl status\n  deployctl status api --hosts\n  deployctl status --json")]
    Status(StatusArgs),
    /// Follow rollouts until they complete (exit 0) or halt (exit 4).
    #[command(after_help = "Examples:\n  deployctl watch api\n  deployctl watch --timeout 30m")]
    Watch(WatchArgs),
    /// Pause SERVICE's rollout: no new host starts its step.
    #[command(after_help = "Example:\n  deployctl pause api --reason 'error rate up'")]
    Pause(PauseArgs),
    /// Resume a paused or halted rollout of SERVICE and reset its failure count.
    #[command(after_help = "Example:\n  deployctl resume api")]
    Resume(ServiceArg),
    /// Promote SERVICE's rollout past its canary phase: every other host steps now.
    #[command(after_help = "Example:\n  deployctl promote api")]
    Promote(ServiceArg),
    /// Abort SERVICE's rollout: hosts keep what they run; the staged release goes back
    /// to the release most online hosts run.
    #[command(after_help = "Example:\n  deployctl abort api")]
    Abort(ServiceArg),
    /// Roll SERVICE back to a catalog release, at the front of the deploy queue.
    #[command(after_help = "Examples:\n  deployctl rollback api\n  deployctl rollback api --to 1.3.0")]
    Rollback(RollbackArgs),
    /// Free the upgrading slot of HOST, whose sidecar is gone, in SERVICE's rollout.
    #[command(after_help = "Example:\n  deployctl unlock api web-03")]
    Unlock(UnlockArgs),
    /// Show SERVICE's history, newest first.
    #[command(after_help = "Examples:\n  deployctl history api --limit 50\n  deployctl history api --timeline api.svg")]
    History(HistoryArgs),
    /// Show SERVICE's release catalog, newest first.
    #[command(after_help = "Example:\n  deployctl releases api --json")]
    Releases(ServiceArg),
    /// Print the names of services, or of a service's hosts or versions (for the completions).
    #[command(hide = true)]
    Complete(CompleteArgs),
    /// Print a shell completion script (bash also completes service, host and version names
    /// from ZooKeeper).
    #[command(after_help = "Example:\n  deployctl completions bash > /etc/bash_completion.d/deployctl")]
    Completions(CompletionsArgs),
}

/// `init` arguments.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// ZooKeeper ACL id of the deployers (repeat for several): digest:USER:HASH, x509:CN=….
    #[arg(long, value_name = "ID")]
    pub deployer: Vec<String>,
    /// ACL id of the sidecars: one shared id, or repeat it once per host (x509:CN=<host>,…).
    #[arg(long, value_name = "ID")]
    pub sidecar: Vec<String>,
    /// Who else may read everything: an ACL id, or `world` for anyone [default: nobody].
    #[arg(long, value_name = "ID|world")]
    pub reader: Vec<String>,
}

/// A service name.
#[derive(Debug, Args)]
pub struct ServiceArg {
    /// The service.
    pub service: String,
}

/// `stage` arguments.
#[derive(Debug, Args)]
pub struct StageArgs {
    /// The service.
    pub service: String,
    /// The release's version.
    #[arg(long)]
    pub version: String,
    /// Where hosts download the artifact: http://, https:// or file:// [default with --file: file://<its path>].
    #[arg(long)]
    pub url: Option<String>,
    /// The artifact's sha256, 64 hex digits [default with --file: computed].
    #[arg(long)]
    pub sha256: Option<String>,
    /// The artifact's size in bytes [default: measured by fetching the artifact, or --file's size];
    /// checked against the fetched artifact unless --no-fetch.
    #[arg(long)]
    pub size: Option<u64>,
    /// Do not fetch the artifact to check it (for an artifact this machine cannot reach):
    /// --sha256 and --size are then taken as given.
    #[arg(long, requires = "sha256", conflicts_with = "file")]
    pub no_fetch: bool,
    /// Print the plan (hosts online, quorum arithmetic, batches, queue position,
    /// warnings, refusals) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// A local copy of the artifact: its sha256 and size are computed (and checked against
    /// --sha256 and --size when given).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// How hosts install it [default: tar.gz for .tar.gz/.tgz URLs, else file].
    #[arg(long, value_parser = ["tar.gz", "file"])]
    pub format: Option<String>,
    /// Online hosts that must stay up while hosts upgrade: N or P% [default: 1].
    #[arg(long)]
    pub quorum: Option<Quorum>,
    /// Hosts upgrading at once [default: 1].
    #[arg(long)]
    pub max_parallel: Option<u32>,
    /// How long a host must stay healthy before it counts as upgraded [default: 0s].
    #[arg(long)]
    pub bake: Option<HumanDuration>,
    /// How long a started release may take to pass its health check [default: 60s].
    #[arg(long)]
    pub health_deadline: Option<HumanDuration>,
    /// Host failures tolerated before the rollout halts [default: 0].
    #[arg(long)]
    pub max_failures: Option<u32>,
    /// The first N hosts step, then the rollout pauses (reason `canary`) until
    /// `deployctl promote` [default: 0, no canary phase].
    #[arg(long, value_name = "N")]
    pub canary: Option<u32>,
    /// With --canary: promote on its own once the canaries stayed healthy this long.
    #[arg(long, value_name = "DURATION", requires = "canary")]
    pub auto_promote: Option<HumanDuration>,
    /// What a failed step does to its host: `rollback` (go back) or `stay` (keep the
    /// new release, for releases that cannot be undone; the rollout halts) [default: rollback].
    #[arg(long, value_name = "rollback|stay")]
    pub on_failure: Option<znode_schema::OnFailure>,
    /// Halt the rollout when no host moves (no step starts or ends) for this long
    /// while nobody steps; downloading is not progress [default: none].
    #[arg(long, value_name = "DURATION")]
    pub progress_deadline: Option<HumanDuration>,
    /// When the rollout halts, move the hosts that already stepped back to the
    /// release they ran before, fenced as any step (policy `on_halt = rollback`).
    #[arg(long)]
    pub auto_rollback: bool,
    /// Supersede the service's unfinished rollout (its deploy entry is deleted).
    #[arg(long)]
    pub replace: bool,
    /// Stage anyway when no sidecar has ever registered the service (nothing under
    /// `current/<service>`, no catalog, no history), or when the quorum can never be met
    /// by the hosts online: refused otherwise, since such a rollout never moves.
    #[arg(long)]
    pub force: bool,
    /// A minisign signature of the artifact (`minisign -S -m ARTIFACT -t "baton SERVICE
    /// VERSION"`): stored as `artifact.signature`; its trusted comment must be exactly
    /// `baton SERVICE VERSION`.
    #[arg(long, value_name = "FILE", conflicts_with = "sign_key")]
    pub signature: Option<PathBuf>,
    /// Sign the artifact (given with --file) with this minisign secret key, by
    /// running the `minisign` tool (it asks for the key's password, if any).
    #[arg(long, value_name = "FILE", requires = "file")]
    pub sign_key: Option<PathBuf>,
    /// A minisign public key (base64, or a minisign.pub file) the signature must
    /// verify with over the local --file before anything is written; repeatable.
    #[arg(long, value_name = "KEY", requires = "file")]
    pub trust_key: Vec<String>,
}

/// `status` arguments.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this service.
    pub service: Option<String>,
    /// One line per host instead of a summary per service.
    #[arg(long)]
    pub hosts: bool,
}

/// `watch` arguments.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Only this service [default: every rollout in the queue now].
    pub service: Option<String>,
    /// How often to poll ZooKeeper.
    #[arg(long, default_value = "250ms")]
    pub interval: HumanDuration,
    /// Give up (exit 1) after this long [default: never].
    #[arg(long)]
    pub timeout: Option<HumanDuration>,
}

/// `pause` arguments.
#[derive(Debug, Args)]
pub struct PauseArgs {
    /// The service.
    pub service: String,
    /// Why (shown by status and kept in the history) [default: paused by <you>].
    #[arg(long)]
    pub reason: Option<String>,
}

/// `rollback` arguments.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The service.
    pub service: String,
    /// The catalog version to go back to [default: the version most online hosts run other
    /// than the staged one, else the release staged just before it].
    #[arg(long)]
    pub to: Option<String>,
    /// Roll back a release staged with `--on-failure stay` (one that cannot be undone,
    /// such as a schema migration): refused otherwise.
    #[arg(long)]
    pub force: bool,
}

/// `unlock` arguments.
#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// The service.
    pub service: String,
    /// The host whose slot is freed.
    pub host: String,
    /// Unlock even though the host's session looks alive.
    #[arg(long)]
    pub force: bool,
}

/// `history` arguments.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The service.
    pub service: String,
    /// How many events to show.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Instead of the table, draw the newest rollout (hosts against time: download and
    /// queue, step, bake, failures) as an SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub timeline: Option<PathBuf>,
}

/// `completions` arguments.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

/// What `complete` lists.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CompleteWhat {
    /// Every service.
    Services,
    /// The hosts of SERVICE (online, queued, stepping).
    Hosts,
    /// The catalog versions of SERVICE.
    Versions,
}

/// `complete` arguments.
#[derive(Debug, Args)]
pub struct CompleteArgs {
    /// What to list.
    pub what: CompleteWhat,
    /// The service, for hosts and versions.
    pub service: Option<String>,
}
