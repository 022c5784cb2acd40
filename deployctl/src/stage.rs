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
use crate::model::{Node, Queue, ServiceView, describe, read, require_tree};
use crate::output::print_json;
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
pub fn plan(args: &StageArgs, by: &str, now: &str) -> Result<Staging, Invalid> {
    validate_service(&args.service)?;
    validate_version(&args.version)?;
    let local = args.file.as_deref().map(hash_file).transpose()?;
    let file_name = || args.file.as_deref().map(|p| p.display().to_string()).unwrap_or_default();
    let sha256 = match (&args.sha256, &local) {
        (Some(given), Some((actual, _))) => {
            let given = check_sha256(given)?;
            if &given != actual {
                return Err(Invalid::FileSha256 { given, file: file_name(), actual: actual.clone() });
            }
            given
        }
        (Some(given), None) => check_sha256(given)?,
        (None, Some((actual, _))) => actual.clone(),
        (None, None) => return Err(Invalid::NoSha256),
    };
    let size = match (args.size, &local) {
        (Some(given), Some((_, actual))) if given != *actual => {
            return Err(Invalid::FileSize { given, file: file_name(), actual: *actual });
        }
        (Some(given), _) => given,
        (None, Some((_, actual))) => *actual,
        (None, None) => return Err(Invalid::NoSize),
    };
    let url = match (&args.url, &args.file) {
        (Some(url), _) => url.clone(),
        (None, Some(file)) => file_url(file)?,
        (None, None) => return Err(Invalid::NoUrl),
    };
    check_url(&url)?;
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
    Ok(Staging {
        service: args.service.clone(),
        version: args.version.clone(),
        artifact: Artifact { url, sha256, size, format, signature },
        policy,
        staged_at: now.into(),
        staged_by: by.into(),
    })
}

/// What was read before the transaction.
struct Before {
    /// Whether `current/<service>` exists: a sidecar that runs the service creates it.
    registered: bool,
    staging: Option<Node<Staging>>,
    release: Option<Node<Release>>,
    queue: Queue,
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
        let (txn, deploy_op, replaced) = build(ctx, args, &staging, &entry, &before)?;
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
        return report(ctx, &staging, &entry, &path, before.release.is_none(), &replaced).await;
    }
    anyhow::bail!("failed to stage {service}: other writers kept changing it ({ATTEMPTS} attempts); try again")
}

async fn read_before(ctx: &Ctx, staging: &Staging) -> anyhow::Result<Before> {
    let l = &ctx.layout;
    Ok(Before {
        registered: ctx.zk.children(&l.current_service(&staging.service)).await?.is_some(),
        staging: read(&ctx.zk, &l.staging(&staging.service)).await?,
        release: read(&ctx.zk, &l.release(&staging.service, &staging.version)).await?,
        queue: Queue::read(&ctx.zk, l).await?,
    })
}

/// Applies the refusals and builds the transaction; returns it, the index of the
/// deploy entry's creation, and the paths of the entries it replaces.
fn build(
    ctx: &Ctx,
    args: &StageArgs,
    staging: &Staging,
    entry: &DeployEntry,
    before: &Before,
) -> anyhow::Result<(Txn, usize, Vec<String>)> {
    let (l, service) = (&ctx.layout, &staging.service);
    for m in before.queue.malformed() {
        eprintln!("warning: ignoring a malformed deploy entry: {m}");
    }
    if !before.registered && !args.force {
        // A typo'd service would head the queue with nobody to move it.
        return Err(Refusal::NeverRegistered { service: service.clone(), path: l.current_service(service) }.into());
    }
    if let Some(release) = &before.release {
        check_catalog(release, staging)?;
    }
    let mine: Vec<_> = before.queue.of_service(service).map(|(_, e)| e).collect();
    if let (Some(first), false) = (mine.first(), args.replace) {
        let d = first.node.ok().expect("of_service only yields decoded entries");
        let (version, state, path) = (d.version.clone(), d.state.to_string(), first.node.path.clone());
        return Err(Refusal::Unfinished { service: service.clone(), version, state, path }.into());
    }
    let mut txn = Txn::default();
    let data = encode(staging);
    match &before.staging {
        Some(node) => txn.push(Op::Set { path: node.path.clone(), data, version: node.version }),
        None => txn.push(Op::Create { path: l.staging(service), data }),
    };
    if before.release.is_none() {
        let release = Release {
            service: service.clone(),
            version: staging.version.clone(),
            artifact: staging.artifact.clone(),
            staged_at: staging.staged_at.clone(),
            staged_by: staging.staged_by.clone(),
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
    Ok((txn, deploy_op, replaced))
}

/// Refuses a version already cataloged with another artifact (a malformed catalog
/// entry is refused too: it cannot be compared).
fn check_catalog(release: &Node<Release>, staging: &Staging) -> Result<(), Refusal> {
    let (existing, existing_size) = match &release.value {
        Ok(r) => (r.artifact.sha256.clone(), r.artifact.size),
        Err(m) => (format!("<unreadable: {}>", m.error), 0),
    };
    if existing.eq_ignore_ascii_case(&staging.artifact.sha256) && existing_size == staging.artifact.size {
        return Ok(());
    }
    Err(Refusal::CatalogMismatch {
        service: staging.service.clone(),
        version: staging.version.clone(),
        existing,
        existing_size,
        path: release.path.clone(),
    })
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

/// Prints the entry and its place in the queue, and warns about an unreachable quorum.
async fn report(
    ctx: &Ctx,
    staging: &Staging,
    entry: &DeployEntry,
    path: &str,
    new_release: bool,
    replaced: &[String],
) -> anyhow::Result<()> {
    let queue = Queue::read(&ctx.zk, &ctx.layout).await?;
    let position = queue.entries.iter().position(|e| e.node.path == path);
    let ahead: Vec<String> = queue.entries.iter().take(position.unwrap_or(0)).map(describe).collect();
    let view = ServiceView::read(&ctx.zk, &ctx.layout, &staging.service).await?;
    let warning = quorum_warning(staging, view.hosts.len() as u32);
    if let Some(w) = &warning {
        eprintln!("warning: {w}");
    }
    if ctx.json {
        print_json(&json!({
            "service": staging.service, "version": staging.version, "staging": staging,
            "deploy": { "path": path, "entry": entry, "position": position.map(|p| p + 1),
                        "queue_length": queue.entries.len(), "ahead": ahead },
            "release_created": new_release, "replaced": replaced, "warnings": warning.into_iter().collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    let a = &staging.artifact;
    println!("staged {} {} ({} bytes, sha256 {}, {})", staging.service, staging.version, a.size, a.sha256, a.url);
    if !new_release {
        println!("release {} {} was already in the catalog", staging.service, staging.version);
    }
    for r in replaced {
        println!("replaced the unfinished rollout at {r}");
    }
    println!("deploy entry {path}: {}", String::from_utf8_lossy(&encode(entry)));
    match position {
        Some(0) => println!("queue position 1 of {}: at the head, hosts may start", queue.entries.len()),
        Some(p) => println!("queue position {} of {}, behind: {}", p + 1, queue.entries.len(), ahead.join(", ")),
        None => println!("the entry already left the queue (the rollout completed or was superseded)"),
    }
    Ok(())
}

/// A warning when no host could ever take its step with the hosts online now.
pub fn quorum_warning(staging: &Staging, online: u32) -> Option<String> {
    let q = staging.policy.quorum;
    let required = q.required(online);
    if online == 0 {
        return Some(format!("no host of {} is online now; no host will step until hosts register", staging.service));
    }
    (required > online - 1).then(|| {
        format!(
            "quorum {q} needs {required} host(s) of {} to stay online but only {online} are online now: \
             no host can take its step until more hosts register",
            staging.service
        )
    })
}
