//! `deployctl rollback SERVICE [--to V]`: stage a catalog release as a rollout that
//! supersedes the service's current one and goes to the front of the deploy queue.
//!
//! # Target
//! `--to V`, else the version most online hosts run other than the release being
//! left, else the catalog release staged most recently before it. The release being
//! left is the staged one, or after an `abort` (which re-stages what most hosts run)
//! the aborted one. The target is staged with its own policy from the catalog.
//!
//! # Refusals (exit 3, nothing written)
//! - no catalog, or nothing to go back to;
//! - a second rollback without `--to` (the newest staging change is a rollback to
//!   what is staged): it would walk the fleet back one more release silently;
//! - the target is staged and a rollout to it is in progress, or every online host
//!   already runs it.
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
use crate::model::{Entry, Node, Queue, ServiceView, describe, queue_item};
use crate::output::print_json;
use crate::zk::{Op, Txn, created_path};
use anyhow::Context;
use serde_json::json;
use znode_schema::{
    DeployEntry, DeployState, EventKind, HistoryEvent, Release, encode, validate_service, validate_version,
};

/// What the target is chosen from.
struct Facts<'a> {
    view: &'a ServiceView,
    queue: &'a Queue,
    releases: &'a [Node<Release>],
    /// The newest `staged`, `rolled_back` or `aborted` event of the service.
    last: Option<HistoryEvent>,
}

/// Picks the release to go back to, or refuses.
fn target<'a>(service: &str, to: Option<&str>, f: &Facts<'a>) -> Result<&'a Release, Refusal> {
    let find = |v: &str| f.releases.iter().filter_map(|n| n.ok()).find(|r| r.version == v);
    let staged = f.view.staged_version();
    let last = f.last.as_ref();
    if let (None, Some(e)) = (to, last.filter(|e| e.event == EventKind::RolledBack)) {
        if e.version.as_deref() == staged {
            return Err(Refusal::AlreadyRolledBack {
                service: service.into(),
                version: staged.unwrap_or_default().into(),
                by: e.by.clone().unwrap_or_else(|| "someone".into()),
                at: e.at.clone(),
            });
        }
    }
    // The release being left: the aborted one after an abort (abort re-staged what
    // most hosts run), else the staged one.
    let left = match last.filter(|e| e.event == EventKind::Aborted) {
        Some(e) => e.version.as_deref(),
        None => staged,
    };
    let version = match to {
        Some(v) => v.to_string(),
        None => match catalog::most_popular(f.view, f.releases, left).filter(|v| find(v).is_some()) {
            Some(v) => v,
            None => previous(service, left, f.releases)?,
        },
    };
    let release =
        find(&version).ok_or_else(|| Refusal::NotInCatalog { service: service.into(), version: version.clone() })?;
    if staged == Some(version.as_str()) {
        if let Some((_, e)) =
            f.queue.first_of(service).filter(|(_, e)| e.node.ok().is_some_and(|d| d.version == version))
        {
            return Err(Refusal::AlreadyRollingTo { service: service.into(), version, path: e.node.path.clone() });
        }
        if f.view.host_versions().all(|(_, v)| v == version) {
            return Err(Refusal::NothingToRollBack {
                service: service.into(),
                version,
                hosts: f.view.hosts.len() as u32,
            });
        }
    }
    Ok(release)
}

/// The catalog release staged most recently before `left`.
fn previous(service: &str, left: Option<&str>, releases: &[Node<Release>]) -> Result<String, Refusal> {
    let none = |why: &str| Refusal::NoRollbackTarget { service: service.into(), why: why.into() };
    let left = left.ok_or_else(|| none("nothing is staged and no host runs another version"))?;
    let ok: Vec<&Release> = releases.iter().filter_map(|n| n.ok()).collect();
    let at = ok.iter().find(|r| r.version == left).map(|r| r.staged_at.clone()).unwrap_or_default();
    ok.iter()
        .filter(|r| r.version != left && r.staged_at <= at)
        .max_by(|a, b| a.staged_at.cmp(&b.staged_at))
        .map(|r| r.version.clone())
        .ok_or_else(|| none(&format!("the catalog holds no release of {service} staged before {left}; use --to")))
}

/// The newest event that changed what is staged.
async fn last_change(ctx: &Ctx, service: &str) -> anyhow::Result<Option<HistoryEvent>> {
    let events = crate::history::newest(ctx, service, crate::history::DEFAULT_KEEP).await?.unwrap_or_default();
    let changes = [EventKind::Staged, EventKind::RolledBack, EventKind::Aborted];
    Ok(events.into_iter().filter_map(|n| n.value.ok()).find(|e| changes.contains(&e.event)))
}

/// `deployctl rollback`.
pub async fn run(ctx: &Ctx, service: &str, to: Option<&str>, force: bool) -> anyhow::Result<()> {
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
        let Some(releases) = catalog::read_all(ctx, service).await? else {
            let path = ctx.layout.releases(service);
            return Err(Refusal::NotFound { what: "release catalog".into(), service: service.into(), path }.into());
        };
        let facts = Facts { view: &view, queue: &queue, releases: &releases, last: last_change(ctx, service).await? };
        let release = target(service, to, &facts)?;
        if let Some(st) = view.staging.as_ref().and_then(|s| s.ok()) {
            if st.policy.on_failure == znode_schema::OnFailure::Stay && !force {
                return Err(Refusal::CannotUndo { service: service.into(), version: st.version.clone() }.into());
            }
        }
        let mut staging = catalog::staging_for(ctx, release);
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
        let from = view.staged_version().map(String::from);
        let done = Done { from: from.as_deref(), release, staging: &staging, superseded: &plan.superseded };
        return report(ctx, service, done).await;
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

/// What a committed rollback did.
struct Done<'a> {
    from: Option<&'a str>,
    release: &'a Release,
    staging: &'a znode_schema::Staging,
    superseded: &'a [String],
}

async fn report(ctx: &Ctx, service: &str, done: Done<'_>) -> anyhow::Result<()> {
    let Done { from, release, staging, superseded } = done;
    let version = &release.version;
    let queue = Queue::read(&ctx.zk, &ctx.layout).await.context("failed to read the queue after the rollback")?;
    let position = queue.of_service(service).next().map(|(i, e)| (i, e.node.path.clone()));
    let source = catalog::policy_source(release);
    if ctx.json {
        let listing: Vec<_> = queue.entries.iter().enumerate().map(|(i, e)| queue_item(i, e)).collect();
        print_json(&json!({"service": service, "version": version, "from": from, "superseded": superseded,
            "policy": staging.policy, "policy_source": source,
            "deploy": position.as_ref().map(|(i, p)| json!({"path": p, "position": i + 1,
                                                           "queue_length": queue.entries.len()})),
            "queue": listing}));
        return Ok(());
    }
    outln!("rolled back {service} to {version} (staged before: {})", from.unwrap_or("nothing"));
    outln!("policy: {} ({source})", catalog::policy_line(&staging.policy));
    for s in superseded {
        outln!("superseded {s}");
    }
    match position {
        Some((i, p)) => outln!("deploy entry {p}: queue position {} of {}", i + 1, queue.entries.len()),
        None => outln!("the rollout already left the queue (completed)"),
    }
    for (i, e) in queue.entries.iter().enumerate() {
        outln!("  {}. {}", i + 1, describe(e));
    }
    Ok(())
}
