//! `deployctl stage`: step 1 of the rollout protocol.
//!
//! # Expected flow
//! 1. Every input is checked before connecting (exit 2 on a bad one).
//! 2. `releases/<service>` and `history/<service>` are created if missing (empty,
//!    harmless directories).
//! 3. One transaction writes staging/<service> (set at the version read, or created),
//!    releases/<service>/<version> when new, a `deploy-` entry (state active) and a
//!    `staged` history event; with `--replace` it also deletes the service's
//!    unfinished entries with their markers.
//! 4. The entry's `upgrading` directory is created right after (sidecars create it
//!    too when missing).
//!
//! # Guarantees
//! A concurrent stager of the same service makes one of the two transactions fail
//! (the staging node's version, or its creation): the loser re-reads and decides
//! again, so it is refused or supersedes knowingly.
//!
//! # ConnectionLoss
//! The transaction is not blindly retried: after a lost reply deployctl syncs and
//! re-reads staging/<service>; if it holds exactly the bytes written, the transaction
//! landed and its entry is found by `created_at` and `created_by`.

use crate::Ctx;
use crate::artifact::{check_sha256, check_url, file_url, hash_file, signature};
use crate::cli::StageArgs;
use crate::error::{Invalid, Refusal};
use crate::model::{Node, Queue, ServiceView, describe, queue_item, read, require_tree};
use crate::output::print_json;
use crate::preflight::Preflight;
use crate::zk::{Op, Txn, TxnFailure, classify, created_path};
use anyhow::Context;
use serde_json::json;
use znode_schema::{
    Artifact, ArtifactFormat, DeployEntry, DeployState, EventKind, Policy, Release, Staging, encode, validate_service,
    validate_version,
};

/// Transactions tried before giving up when other writers keep winning.
const ATTEMPTS: usize = 5;

/// Checks every input and builds the staging payload, before anything is written.
/// Without `--file` or `--no-fetch` the artifact is streamed once from its URL and
/// must have the given sha256 (and `--size`, when given).
pub async fn plan(args: &StageArgs, by: &str, now: &str) -> Result<Staging, Invalid> {
    validate_service(&args.service)?;
    validate_version(&args.version)?;
    let given_sha = args.sha256.as_deref().map(check_sha256).transpose()?;
    let url = match (&args.url, &args.file) {
        (Some(url), _) => url.clone(),
        (None, Some(file)) => file_url(file)?,
        (None, None) => return Err(Invalid::NoUrl),
    };
    check_url(&url)?;
    let policy = policy(args)?;
    let (sha256, size) = match &args.file {
        Some(file) => local(file, given_sha, args.size)?,
        None => {
            let expected = given_sha.ok_or(Invalid::NoSha256)?;
            match (args.no_fetch, args.size) {
                (true, Some(size)) => (expected, size),
                (true, None) => return Err(Invalid::NoSize),
                (false, given) => fetched(&url, expected, given).await?,
            }
        }
    };
    let signature = signature(
        &args.service,
        &args.version,
        args.signature.as_deref(),
        args.sign_key.as_deref(),
        args.file.as_deref(),
        &args.trust_key,
    )?;
    let format = match args.format.as_deref() {
        Some("tar.gz") => ArtifactFormat::TarGz,
        Some(_) => ArtifactFormat::File,
        None => ArtifactFormat::from_url(&url),
    };
    Ok(Staging {
        service: args.service.clone(),
        version: args.version.clone(),
        artifact: Artifact { url, sha256, size, format, signature },
        policy,
        staged_at: now.into(),
        staged_by: by.into(),
    })
}

/// The policy from the flags, defaults for the rest, validated.
fn policy(args: &StageArgs) -> Result<Policy, Invalid> {
    let defaults = Policy::default();
    let policy = Policy {
        quorum: args.quorum.unwrap_or(defaults.quorum),
        max_parallel: args.max_parallel.unwrap_or(defaults.max_parallel),
        bake: args.bake.unwrap_or(defaults.bake),
        health_deadline: args.health_deadline.unwrap_or(defaults.health_deadline),
        max_failures: args.max_failures.unwrap_or(defaults.max_failures),
        canary: args.canary.unwrap_or(defaults.canary),
        auto_promote: args.auto_promote.or(defaults.auto_promote),
        on_failure: args.on_failure.unwrap_or(defaults.on_failure),
        progress_deadline: args.progress_deadline,
        on_halt: if args.auto_rollback { znode_schema::OnHalt::Rollback } else { defaults.on_halt },
    };
    policy.validate()?;
    Ok(policy)
}

/// The sha256 and size of a local copy, checked against the ones given.
fn local(file: &std::path::Path, sha256: Option<String>, size: Option<u64>) -> Result<(String, u64), Invalid> {
    let (actual, actual_size) = hash_file(file)?;
    let name = file.display().to_string();
    if let Some(given) = sha256.filter(|g| *g != actual) {
        return Err(Invalid::FileSha256 { given, file: name, actual });
    }
    if let Some(given) = size.filter(|g| *g != actual_size) {
        return Err(Invalid::FileSize { given, file: name, actual: actual_size });
    }
    Ok((actual, actual_size))
}

/// Streams the artifact at `url` once and checks it is what the operator said.
async fn fetched(url: &str, expected: String, size: Option<u64>) -> Result<(String, u64), Invalid> {
    let got = crate::fetch::fetch(url).await?;
    if got.sha256 != expected {
        return Err(Invalid::FetchedSha256 { url: url.into(), expected, actual: got.sha256 });
    }
    if let Some(given) = size.filter(|g| *g != got.size) {
        return Err(Invalid::FetchedSize { url: url.into(), given, actual: got.size });
    }
    Ok((expected, got.size))
}

/// What was read before the transaction.
#[derive(Debug)]
pub struct Before {
    /// Evidence that a host ever ran the service.
    pub registered: bool,
    /// The service: staging node, online hosts, tickets.
    pub view: ServiceView,
    /// `releases/<service>/<version>`.
    pub release: Option<Node<Release>>,
    /// The deploy queue.
    pub queue: Queue,
}

/// `deployctl stage`, with the payload [`plan`] built before connecting.
pub async fn run(ctx: &Ctx, args: &StageArgs, staging: Staging) -> anyhow::Result<()> {
    let now = staging.staged_at.clone();
    let service = staging.service.clone();
    require_tree(&ctx.zk, &ctx.layout).await?;
    let entry = DeployEntry {
        service: service.clone(),
        version: staging.version.clone(),
        state: DeployState::Active,
        reason: None,
        failures: 0,
        created_at: now.clone(),
        created_by: ctx.by.clone(),
        ..DeployEntry::default()
    };
    for _ in 0..ATTEMPTS {
        let before = read_before(ctx, &staging).await?;
        let built = build(ctx, args, &staging, &entry, &before);
        if args.dry_run {
            let pre = Preflight::assess(&staging, &before);
            pre.print(ctx, &staging, !args.no_fetch && args.file.is_none(), built.as_ref().err(), &before);
            return built.map(|_| ());
        }
        let Built { txn, deploy_op, replaced, old_url } = built?;
        ctx.zk.ensure(&ctx.layout.releases(&service)).await?;
        ctx.zk.ensure(&ctx.layout.history(&service)).await?;
        let path = match ctx.zk.commit(&txn).await {
            Ok(results) => created_path(&results, deploy_op),
            Err(e) => match classify(&e) {
                TxnFailure::Conflict => continue,
                TxnFailure::Unknown => match landed(ctx, &staging, &entry).await? {
                    Some(path) => Some(path),
                    None => continue,
                },
                TxnFailure::Other => return Err(e).context(format!("failed to stage {service} {}", staging.version)),
            },
        };
        let path = path.context("the transaction did not report the deploy entry it created")?;
        ctx.zk.ensure(&format!("{path}/{}", znode_schema::layout::UPGRADING)).await?;
        crate::history::prune(ctx, &service).await;
        let mut warnings = Preflight::assess(&staging, &before).warnings;
        if let Some(old) = old_url {
            warnings.push(format!(
                "release {service} {} was catalogued at {old}; the catalog now records {} (same sha256)",
                staging.version, staging.artifact.url
            ));
        }
        let done = Staged { entry: &entry, path: &path, new_release: before.release.is_none(), replaced: &replaced };
        return report(ctx, &staging, done, &warnings).await;
    }
    anyhow::bail!("failed to stage {service}: other writers kept changing it ({ATTEMPTS} attempts); try again")
}

async fn read_before(ctx: &Ctx, staging: &Staging) -> anyhow::Result<Before> {
    let (l, service) = (&ctx.layout, &staging.service);
    // A sidecar creates current/<service> at session start; a catalog or a history
    // means the service was staged and run before.
    let mut registered = ctx.zk.children(&l.current_service(service)).await?.is_some();
    for dir in [l.releases(service), l.history(service)] {
        registered |= !ctx.zk.children(&dir).await?.unwrap_or_default().is_empty();
    }
    Ok(Before {
        registered,
        view: ServiceView::read(&ctx.zk, l, service).await?,
        release: read(&ctx.zk, &l.release(service, &staging.version)).await?,
        queue: Queue::read(&ctx.zk, l).await?,
    })
}

/// A stage transaction and what it does.
struct Built {
    txn: Txn,
    /// The index of the deploy entry's creation.
    deploy_op: usize,
    /// The entries it replaces.
    replaced: Vec<String>,
    /// The catalog's URL it replaces (same sha256, another URL).
    old_url: Option<String>,
}

/// Applies the refusals and builds the transaction.
fn build(
    ctx: &Ctx,
    args: &StageArgs,
    staging: &Staging,
    entry: &DeployEntry,
    before: &Before,
) -> anyhow::Result<Built> {
    let (l, service) = (&ctx.layout, &staging.service);
    for m in before.queue.malformed() {
        eprintln!("warning: ignoring a malformed deploy entry: {m}");
    }
    if !before.registered && !args.force {
        // A typo'd service would head the queue with nobody to move it.
        return Err(Refusal::NeverRegistered { service: service.clone(), path: l.current_service(service) }.into());
    }
    if let Some(refusal) = Preflight::assess(staging, before).refusal.filter(|_| !args.force) {
        return Err(refusal.into());
    }
    let new_url = match &before.release {
        Some(release) => check_catalog(release, staging)?,
        None => None,
    };
    let mine: Vec<_> = before.queue.of_service(service).map(|(_, e)| e).collect();
    if let (Some(first), false) = (mine.first(), args.replace) {
        let d = first.node.ok().expect("of_service only yields decoded entries");
        let (version, state, path) = (d.version.clone(), d.state.to_string(), first.node.path.clone());
        return Err(Refusal::Unfinished { service: service.clone(), version, state, path }.into());
    }
    let mut txn = Txn::default();
    let data = encode(staging);
    match &before.view.staging {
        Some(node) => txn.push(Op::Set { path: node.path.clone(), data, version: node.version }),
        None => txn.push(Op::Create { path: l.staging(service), data }),
    };
    let old_url = new_url.as_ref().and(before.release.as_ref()).and_then(|n| n.ok()).map(|r| r.artifact.url.clone());
    if let (Some(node), Some(release)) = (&before.release, new_url) {
        // The same bytes at another URL: the catalog records where they are now.
        txn.push(Op::Set { path: node.path.clone(), data: encode(&release), version: node.version });
    }
    if before.release.is_none() {
        let release = Release {
            service: service.clone(),
            version: staging.version.clone(),
            artifact: staging.artifact.clone(),
            staged_at: staging.staged_at.clone(),
            staged_by: staging.staged_by.clone(),
            policy: Some(staging.policy.clone()),
        };
        txn.push(Op::Create { path: l.release(service, &staging.version), data: encode(&release) });
    }
    for e in &mine {
        e.remove_into(l, &mut txn);
    }
    let deploy_op = txn.push(Op::CreateSeq { prefix: l.deploy_prefix(), data: encode(entry) });
    let replaced: Vec<String> = mine.iter().map(|e| e.node.path.clone()).collect();
    let detail = if replaced.is_empty() {
        format!("sha256 {}", staging.artifact.sha256)
    } else {
        format!(
            "sha256 {}; replaces {}",
            staging.artifact.sha256,
            mine.iter().map(|e| describe(e)).collect::<Vec<_>>().join(", ")
        )
    };
    let ev = crate::history::event(ctx, EventKind::Staged, service, Some(&staging.version), Some(detail));
    crate::history::add(ctx, &mut txn, &ev);
    Ok(Built { txn, deploy_op, replaced, old_url })
}

/// Refuses a version already cataloged with another artifact (a malformed catalog
/// entry is refused too: it cannot be compared). The same sha256 and size at another
/// URL is accepted: returns the catalog entry with the new URL, to be written.
fn check_catalog(release: &Node<Release>, staging: &Staging) -> Result<Option<Release>, Refusal> {
    let (existing, existing_size) = match &release.value {
        Ok(r) => (r.artifact.sha256.clone(), r.artifact.size),
        Err(m) => (format!("<unreadable: {}>", m.error), 0),
    };
    if !existing.eq_ignore_ascii_case(&staging.artifact.sha256) || existing_size != staging.artifact.size {
        return Err(Refusal::CatalogMismatch {
            service: staging.service.clone(),
            version: staging.version.clone(),
            existing,
            existing_size,
            path: release.path.clone(),
        });
    }
    let Some(old) = release.ok().filter(|r| r.artifact.url != staging.artifact.url) else { return Ok(None) };
    let mut new = old.clone();
    new.artifact.url.clone_from(&staging.artifact.url);
    Ok(Some(new))
}

/// After a lost reply: the transaction landed when staging/<service> holds exactly
/// our bytes; then the entry is the one with our `created_at` and `created_by`.
async fn landed(ctx: &Ctx, staging: &Staging, entry: &DeployEntry) -> anyhow::Result<Option<String>> {
    let path = ctx.layout.staging(&staging.service);
    ctx.zk.sync(&path).await?;
    let Some((raw, _)) = ctx.zk.get(&path).await? else { return Ok(None) };
    if raw != encode(staging) {
        return Ok(None);
    }
    let queue = Queue::read(&ctx.zk, &ctx.layout).await?;
    let found = queue
        .of_service(&staging.service)
        .filter(|(_, e)| {
            e.node.ok().is_some_and(|d| d.created_at == entry.created_at && d.created_by == entry.created_by)
        })
        .last()
        .map(|(_, e)| e.node.path.clone());
    Ok(found)
}

/// What a committed stage did.
struct Staged<'a> {
    entry: &'a DeployEntry,
    path: &'a str,
    new_release: bool,
    replaced: &'a [String],
}

/// Prints the entry, its place in the queue and the warnings.
async fn report(ctx: &Ctx, staging: &Staging, done: Staged<'_>, warnings: &[String]) -> anyhow::Result<()> {
    let Staged { entry, path, new_release, replaced } = done;
    let queue = Queue::read(&ctx.zk, &ctx.layout).await?;
    let position = queue.entries.iter().position(|e| e.node.path == path);
    let ahead = &queue.entries[..position.unwrap_or(0)];
    for w in warnings {
        eprintln!("warning: {w}");
    }
    if ctx.json {
        let ahead_json: Vec<_> = ahead.iter().enumerate().map(|(i, e)| queue_item(i, e)).collect();
        print_json(&json!({
            "service": staging.service, "version": staging.version, "staging": staging,
            "deploy": { "path": path, "entry": entry, "position": position.map(|p| p + 1),
                        "queue_length": queue.entries.len(), "ahead": ahead_json },
            "release_created": new_release, "replaced": replaced, "warnings": warnings,
        }));
        return Ok(());
    }
    let a = &staging.artifact;
    outln!("staged {} {} ({} bytes, sha256 {}, {})", staging.service, staging.version, a.size, a.sha256, a.url);
    if !new_release {
        outln!("release {} {} was already in the catalog", staging.service, staging.version);
    }
    for r in replaced {
        outln!("replaced the unfinished rollout at {r}");
    }
    outln!("deploy entry {path}: {}", String::from_utf8_lossy(&encode(entry)));
    let ahead: Vec<String> = ahead.iter().map(describe).collect();
    match position {
        Some(0) => outln!("queue position 1 of {}: at the head, hosts may start", queue.entries.len()),
        Some(p) => outln!("queue position {} of {}, behind: {}", p + 1, queue.entries.len(), ahead.join(", ")),
        None => outln!("the entry already left the queue (the rollout completed or was superseded)"),
    }
    Ok(())
}
