//! `deployctl rollback SERVICE [--to V]`: stage a catalog release as a rollout that
//! supersedes the service's current one and goes to the front of the deploy queue.
//!
//! # Target
//! `--to V`, else the version most online hosts run other than the staged one, else
//! the catalog release staged most recently before the staged one.
//!
//! # The front of the queue
//! Sequence numbers only grow, so "front" is made in one transaction: delete the
//! service's own entries (with their markers), create the rollback entry, then delete
//! and re-create every other entry that has no upgrading marker, with its payload
//! unchanged and in the same relative order (they get new, higher sequence numbers).
//! Entries of other services with hosts mid-step cannot be moved: those keep their
//! place, so the rollback entry lands right after a head whose hosts are mid-step.
//! Every moved entry is deleted at the version read, so a concurrent fence fails the
//! transaction and deployctl decides again.

use crate::Ctx;
use crate::catalog;
use crate::control::{ATTEMPTS, Outcome, commit, contention};
use crate::error::{Invalid, Refusal};
use crate::model::{Entry, Node, Queue, ServiceView, describe};
use crate::output::print_json;
use crate::zk::{Op, Txn, created_path};
use anyhow::Context;
use serde_json::json;
use znode_schema::{DeployEntry, DeployState, EventKind, Release, encode, validate_service, validate_version};

/// Picks the release to go back to.
fn target<'a>(
    service: &str,
    to: Option<&str>,
    view: &ServiceView,
    releases: &'a [Node<Release>],
) -> Result<&'a Release, Refusal> {
    let find = |v: &str| releases.iter().filter_map(|n| n.ok()).find(|r| r.version == v);
    let staged = view.staged_version();
    let version = match to {
        Some(v) => v.to_string(),
        None => match catalog::most_popular(view, releases, staged).filter(|v| find(v).is_some()) {
            Some(v) => v,
            None => previous(service, staged, releases)?,
        },
    };
    if staged == Some(version.as_str()) {
        return Err(Refusal::AlreadyStaged { service: service.into(), version });
    }
    find(&version).ok_or_else(|| Refusal::NotInCatalog { service: service.into(), version })
}

/// The catalog release staged most recently before the staged one.
fn previous(service: &str, staged: Option<&str>, releases: &[Node<Release>]) -> Result<String, Refusal> {
    let none = |why: &str| Refusal::NoRollbackTarget { service: service.into(), why: why.into() };
    let staged = staged.ok_or_else(|| none("nothing is staged and no host runs another version"))?;
    let ok: Vec<&Release> = releases.iter().filter_map(|n| n.ok()).collect();
    let at = ok.iter().find(|r| r.version == staged).map(|r| r.staged_at.clone()).unwrap_or_default();
    ok.iter()
        .filter(|r| r.version != staged && r.staged_at <= at)
        .max_by(|a, b| a.staged_at.cmp(&b.staged_at))
        .map(|r| r.version.clone())
        .ok_or_else(|| none("the catalog holds no release staged before the staged one; use --to"))
}

/// `deployctl rollback`.
pub async fn run(ctx: &Ctx, service: &str, to: Option<&str>) -> anyhow::Result<()> {
    validate_service(service).map_err(Invalid::from)?;
    if let Some(v) = to {
        validate_version(v).map_err(Invalid::from)?;
    }
    crate::model::require_tree(&ctx.zk, &ctx.layout).await?;
    let what = format!("roll back {service}");
    let now = znode_schema::time::now();
    for _ in 0..ATTEMPTS {
        let queue = Queue::read(&ctx.zk, &ctx.layout).await?;
        let view = ServiceView::read(&ctx.zk, &ctx.layout, service).await?;
        let releases = catalog::read_all(ctx, service).await?.unwrap_or_default();
        let release = target(service, to, &view, &releases)?;
        let mut staging = catalog::staging_for(ctx, release, view.staging.as_ref().and_then(|s| s.ok()));
        staging.staged_at.clone_from(&now);
        let entry = DeployEntry {
            service: service.into(),
            version: release.version.clone(),
            state: DeployState::Active,
            reason: None,
            failures: 0,
            created_at: now.clone(),
            created_by: ctx.by.clone(),
            ..DeployEntry::default()
        };
        let plan = build(ctx, &queue, &view, &staging, &entry);
        let results = match commit(ctx, service, &plan.txn, &what).await? {
            Outcome::Done(r) => r,
            Outcome::Retry => continue,
            Outcome::Unknown => {
                let raw = ctx.zk.get(&ctx.layout.staging(service)).await?.map(|(raw, _)| raw);
                if raw != Some(encode(&staging)) {
                    continue;
                }
                Vec::new()
            }
        };
        for i in std::iter::once(plan.entry_op).chain(plan.moved_ops.iter().copied()) {
            if let Some(p) = created_path(&results, i) {
                ctx.zk.ensure(&format!("{p}/{}", znode_schema::layout::UPGRADING)).await?;
            }
        }
        crate::history::prune(ctx, service).await;
        return report(ctx, service, &release.version, &plan.superseded).await;
    }
    Err(contention(&what))
}

/// A rollback transaction and where its results are.
struct Plan {
    txn: Txn,
    entry_op: usize,
    moved_ops: Vec<usize>,
    superseded: Vec<String>,
}

fn build(ctx: &Ctx, queue: &Queue, view: &ServiceView, staging: &znode_schema::Staging, entry: &DeployEntry) -> Plan {
    let (l, service) = (&ctx.layout, entry.service.as_str());
    let mut txn = Txn::default();
    let own: Vec<&Entry> = queue.of_service(service).map(|(_, e)| e).collect();
    for e in &own {
        e.remove_into(l, &mut txn);
    }
    let others = queue.entries.iter().filter(|e| e.service() != Some(service));
    let movable: Vec<&Entry> = others.skip_while(|e| !e.markers.is_empty()).filter(|e| e.markers.is_empty()).collect();
    for e in &movable {
        e.remove_into(l, &mut txn);
    }
    let data = encode(staging);
    match &view.staging {
        Some(n) => txn.push(Op::Set { path: n.path.clone(), data, version: n.version }),
        None => txn.push(Op::Create { path: l.staging(service), data }),
    };
    let entry_op = txn.push(Op::CreateSeq { prefix: l.deploy_prefix(), data: encode(entry) });
    let moved_ops = movable
        .iter()
        .map(|e| txn.push(Op::CreateSeq { prefix: l.deploy_prefix(), data: e.node.raw.clone() }))
        .collect();
    let from = view.staged_version().unwrap_or("nothing");
    let mut detail = format!("from {from}");
    if !own.is_empty() {
        detail.push_str(&format!("; superseded {}", own.iter().map(|e| describe(e)).collect::<Vec<_>>().join(", ")));
    }
    if !movable.is_empty() {
        detail.push_str(&format!("; ahead of {} queued rollout(s)", movable.len()));
    }
    let ev = crate::history::event(ctx, EventKind::RolledBack, service, Some(&entry.version), Some(detail));
    crate::history::add(ctx, &mut txn, &ev);
    Plan { txn, entry_op, moved_ops, superseded: own.iter().map(|e| e.node.path.clone()).collect() }
}

async fn report(ctx: &Ctx, service: &str, version: &str, superseded: &[String]) -> anyhow::Result<()> {
    let queue = Queue::read(&ctx.zk, &ctx.layout).await.context("failed to read the queue after the rollback")?;
    let position = queue.of_service(service).next().map(|(i, e)| (i, e.node.path.clone()));
    let listing: Vec<String> = queue.entries.iter().map(describe).collect();
    if ctx.json {
        print_json(&json!({"service": service, "version": version, "superseded": superseded,
            "deploy": position.as_ref().map(|(i, p)| json!({"path": p, "position": i + 1,
                                                           "queue_length": queue.entries.len()})),
            "queue": listing}));
        return Ok(());
    }
    println!("rolled back {service} to {version}");
    for s in superseded {
        println!("superseded {s}");
    }
    match position {
        Some((i, p)) => println!("deploy entry {p}: queue position {} of {}", i + 1, queue.entries.len()),
        None => println!("the rollout already left the queue (completed)"),
    }
    for (i, l) in listing.iter().enumerate() {
        println!("  {}. {l}", i + 1);
    }
    Ok(())
}
