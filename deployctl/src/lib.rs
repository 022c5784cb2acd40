//! The deployctl library: everything the `deployctl` binary does.
//!
//! - [`cli`]: the command line (clap derive; doc comments are the help text).
//! - [`error`]: typed refusals and the exit codes they map to.
//! - [`zk`]: the ZooKeeper connection, retried reads, transactions.
//! - [`model`]: reading the deploy queue and a service's nodes, malformed ones included.
//! - [`artifact`]: checks of URLs, sha256 digits and local artifact copies.
//! - [`stage`], [`status`], [`watch`], [`control`] (pause, resume, abort, unlock),
//!   [`rollback`], [`history`], [`catalog`] (releases): one module per command family.
//! - [`output`]: tables and JSON.
//! - [`security`]: `init --deployer … --sidecar …` (roles and ACLs of the tree) and `check`.

// First: its `out!`/`outln!` macros are used by the modules below.
#[macro_use]
pub mod output;

pub mod artifact;
pub mod catalog;
pub mod cli;
pub mod completion;
pub mod control;
pub mod error;
pub mod fetch;
pub mod history;
pub mod inspect;
pub mod model;
pub mod preflight;
pub mod rollback;
pub mod security;
pub mod stage;
pub mod status;
pub mod timeline;
pub mod watch;
pub mod why;
pub mod zk;

use anyhow::Context;
use cli::{Cli, Command};
use error::Invalid;
use znode_schema::Layout;

/// What every command needs: the connection, the layout, output mode and identity.
#[derive(Debug)]
pub struct Ctx {
    /// The ZooKeeper connection.
    pub zk: zk::Zk,
    /// Paths under `--root`.
    pub layout: Layout,
    /// `--json`.
    pub json: bool,
    /// Who writes: the authenticated identity (`x509:CN=…`, `digest:USER`), else
    /// `--by` (`user@host`).
    pub by: String,
    /// History events kept per service.
    pub history_keep: usize,
}

/// `$USER@hostname`, the default identity in history events.
pub fn default_identity() -> String {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "unknown".into());
    format!("{user}@{host}")
}

/// Runs one command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Completions(args) = &cli.command {
        out!("{}", completion::script(args.shell));
        return Ok(());
    }
    let layout = Layout::new(&cli.root).map_err(Invalid::from)?;
    if cli.history_keep == 0 {
        return Err(Invalid::Flag("--history-keep must be at least 1".into()).into());
    }
    let by = cli.by.clone().unwrap_or_else(default_identity);
    if by.trim().is_empty() || by.chars().any(char::is_control) {
        return Err(Invalid::Flag(format!("--by {by:?} must be a non-empty single line")).into());
    }
    // zookeeper-client's TLS and reqwest bring two crypto providers: pick one (again is harmless).
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Every input of `stage` (and `init`'s ids) is checked before connecting.
    let mut staging = match &cli.command {
        Command::Stage(args) => Some(stage::plan(args, &by, &znode_schema::time::now()).await?),
        _ => None,
    };
    if let Command::Init(args) = &cli.command {
        security::roles(args)?;
    }
    let connect = cli.zk.clone().filter(|z| !z.trim().is_empty()).ok_or(Invalid::NoZk)?;
    let creds = zk::Creds { ca: cli.tls_ca, cert: cli.tls_cert, key: cli.tls_key, digest_file: cli.digest_file };
    creds.check().map_err(|e| Invalid::Flag(e.to_string()))?;
    let mut zk = zk::Zk::connect(&connect, cli.session_timeout.0, &creds).await?;
    let who = if zk.ids().is_empty() { "an unauthenticated client".to_string() } else { zk.ids().join(", ") };
    let explain = |e: anyhow::Error| match denied(&e) {
        true => e.context(format!(
            "ZooKeeper at {connect} refused this to {who} (NoAuth): check --tls-cert/--tls-key/--digest-file \
             and the ACLs `deployctl init` set"
        )),
        false => e,
    };
    zk.learn(&layout).await.context("failed to read the roles of the tree").map_err(&explain)?;
    // An authenticated identity is who signs, whatever --by says.
    let by = zk.ids().first().cloned().unwrap_or(by);
    if let Some(st) = staging.as_mut() {
        st.staged_by = by.clone();
    }
    let mut ctx = Ctx { zk, layout, json: cli.json, by, history_keep: cli.history_keep };
    dispatch(&mut ctx, cli.command, staging).await.map_err(explain)
}

/// Whether ZooKeeper refused an operation for lack of rights.
fn denied(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        matches!(c.downcast_ref::<zk::ZkErr>(), Some(zk::ZkErr::NoAuth))
            || matches!(
                c.downcast_ref::<zk::MultiWriteError>(),
                Some(zk::MultiWriteError::OperationFailed { source: zk::ZkErr::NoAuth, .. })
                    | Some(zk::MultiWriteError::RequestFailed { source: zk::ZkErr::NoAuth })
            )
    })
}

/// The service a command names, when it must exist (every command but `stage`).
fn named_service(command: &Command) -> Option<&str> {
    match command {
        Command::Status(a) => a.service.as_deref(),
        Command::Watch(a) => a.service.as_deref(),
        Command::Pause(a) => Some(&a.service),
        Command::Resume(a) | Command::Abort(a) | Command::Releases(a) => Some(&a.service),
        Command::Rollback(a) => Some(&a.service),
        Command::Unlock(a) => Some(&a.service),
        Command::History(a) => Some(&a.service),
        _ => None,
    }
}

async fn dispatch(ctx: &mut Ctx, command: Command, staging: Option<znode_schema::Staging>) -> anyhow::Result<()> {
    // One order of refusals for every command: a bad name (2), no tree (3), no such service (3).
    if !matches!(command, Command::Init(_) | Command::Check | Command::Completions(_) | Command::Complete(_)) {
        if let Some(s) = named_service(&command) {
            znode_schema::validate_service(s).map_err(Invalid::from)?;
        }
        model::require_tree(&ctx.zk, &ctx.layout).await?;
        if let Some(s) = named_service(&command) {
            model::require_service(&ctx.zk, &ctx.layout, s).await?;
        }
    }
    match command {
        Command::Init(a) => {
            init(ctx).await?;
            match security::roles(&a)? {
                Some(roles) => security::secure(ctx, roles).await,
                None => Ok(()),
            }
        }
        Command::Check => security::check(ctx).await,
        Command::Stage(a) => {
            let staging = staging.context("the stage plan is built before connecting")?;
            stage::run(ctx, &a, staging).await.with_context(|| format!("failed to stage {} {}", a.service, a.version))
        }
        Command::Status(a) => status::run(ctx, a.service.as_deref(), a.hosts).await,
        Command::Watch(a) => watch::run(ctx, a.service.as_deref(), a.interval.0, a.timeout.map(|t| t.0)).await,
        Command::Pause(a) => control::set_state(ctx, &a.service, true, a.reason.as_deref()).await,
        Command::Resume(a) => control::set_state(ctx, &a.service, false, None).await,
        Command::Abort(a) => control::abort(ctx, &a.service).await,
        Command::Promote(a) => control::promote(ctx, &a.service).await,
        Command::Rollback(a) => rollback::run(ctx, &a.service, a.to.as_deref(), a.force).await,
        Command::Unlock(a) => control::unlock(ctx, &a.service, &a.host, a.force).await,
        Command::History(a) => {
            if a.limit == 0 {
                return Err(Invalid::Flag("--limit must be at least 1".into()).into());
            }
            znode_schema::validate_service(&a.service).map_err(Invalid::from)?;
            match &a.timeline {
                Some(file) => history::timeline(ctx, &a.service, file).await,
                None => history::show(ctx, &a.service, a.limit).await,
            }
        }
        Command::Releases(a) => {
            znode_schema::validate_service(&a.service).map_err(Invalid::from)?;
            catalog::show(ctx, &a.service).await
        }
        Command::Completions(_) => Ok(()),
        Command::Complete(a) => completion::names(ctx, a.what, a.service.as_deref()).await,
    }
}

/// `deployctl init`: the root (and its parents) and the five top directories.
async fn init(ctx: &Ctx) -> anyhow::Result<()> {
    let root = ctx.layout.root();
    let mut paths = Vec::new();
    if root != "/" {
        let mut prefix = String::new();
        for seg in root[1..].split('/') {
            prefix = format!("{prefix}/{seg}");
            paths.push(prefix.clone());
        }
    }
    paths.extend(ctx.layout.top_dirs());
    // Not a top dir (trees made before peers stay valid), but sidecars with [peers]
    // need it, and cannot create it under a secured root.
    paths.push(ctx.layout.peers_dir());
    let mut created = Vec::new();
    for p in &paths {
        if ctx.zk.ensure(p).await.with_context(|| format!("failed to create {p}"))? {
            created.push(p.clone());
        }
    }
    if ctx.json {
        output::print_json(
            &serde_json::json!({"root": root, "created": created, "existing": paths.len() - created.len()}),
        );
    } else if created.is_empty() {
        outln!("the tree under {root} already exists");
    } else {
        for p in &created {
            outln!("created {p}");
        }
    }
    Ok(())
}
