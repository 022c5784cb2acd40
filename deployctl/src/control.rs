//! `pause`, `resume`, `abort` and `unlock`: operator changes to a service's rollout,
//! each one transaction with its history event.
//!
//! # Conflicts and ConnectionLoss
//! Sidecars rewrite the deploy entry at every fence, so every write here expects
//! the version it read: on a conflict deployctl re-reads and decides again (a few
//! times). After a lost reply it syncs and re-reads to learn whether its write
//! landed instead of writing twice.

use crate::Ctx;
use crate::catalog;
use crate::error::{Invalid, Refusal};
use crate::model::{Entry, Queue, ServiceView};
use crate::output::print_json;
use crate::zk::{MultiWriteResult, Op, Txn, TxnFailure, classify};
use anyhow::Context;
use serde_json::json;
use znode_schema::{DeployEntry, DeployState, EventKind, HistoryEvent, encode, validate_host, validate_service};

/// Transactions tried before giving up when sidecars keep moving.
pub const ATTEMPTS: usize = 8;

/// What became of one transaction.
#[derive(Debug)]
pub enum Outcome {
    /// Committed, with its results.
    Done(Vec<MultiWriteResult>),
    /// Nothing written, someone moved: read and decide again.
    Retry,
    /// The reply was lost: find out whether it landed.
    Unknown,
}

/// Commits `txn` and sorts the result into an [`Outcome`].
/// `history/<service>` is created first (idempotent), so refusals before it write nothing.
pub async fn commit(ctx: &Ctx, service: &str, txn: &Txn, what: &str) -> anyhow::Result<Outcome> {
    ctx.zk.ensure(&ctx.layout.history(service)).await?;
    match ctx.zk.commit(txn).await {
        Ok(r) => Ok(Outcome::Done(r)),
        Err(e) => match classify(&e) {
            TxnFailure::Conflict => Ok(Outcome::Retry),
            TxnFailure::Unknown => {
                ctx.zk.sync(ctx.layout.root()).await?;
                Ok(Outcome::Unknown)
            }
            TxnFailure::Other => Err(anyhow::Error::from(e)).context(format!("failed to {what}")),
        },
    }
}

/// The error after [`ATTEMPTS`] conflicts.
pub fn contention(what: &str) -> anyhow::Error {
    anyhow::anyhow!("failed to {what}: the deploy entry kept changing ({ATTEMPTS} attempts); try again")
}

/// The service's first deploy entry, or a refusal.
pub fn entry_of<'a>(queue: &'a Queue, service: &str) -> Result<(&'a Entry, &'a DeployEntry), Refusal> {
    let (_, e) = queue.first_of(service).ok_or_else(|| Refusal::NoRollout { service: service.into() })?;
    Ok((e, e.node.ok().expect("first_of yields decoded entries")))
}

/// A new entry payload for pause or resume, or why not.
fn pause_or_resume(by: &str, d: &DeployEntry, pause: bool, reason: Option<&str>) -> Result<DeployEntry, Refusal> {
    let (service, version) = (d.service.clone(), d.version.clone());
    let mut new = d.clone();
    match (pause, d.state) {
        (true, DeployState::Paused) => return Err(Refusal::AlreadyPaused { service, version }),
        (true, DeployState::Halted) => {
            let reason = d.reason.clone().unwrap_or_default();
            return Err(Refusal::PauseHalted { service, version, reason });
        }
        (true, DeployState::Active) => {
            new.state = DeployState::Paused;
            new.reason = Some(reason.map(String::from).unwrap_or_else(|| format!("paused by {by}")));
        }
        (false, DeployState::Paused) if d.awaits_promotion() => {
            return Err(Refusal::AwaitsPromotion { service, version, canaries: d.canaries_done.join(", ") });
        }
        // Paused by an operator while its canary phase ended: back to the canary pause.
        (false, DeployState::Paused) if d.canary_ended() => {
            new.reason = Some(znode_schema::CANARY_REASON.into());
        }
        (false, DeployState::Active) if d.failures == 0 => return Err(Refusal::NothingToResume { service, version }),
        (false, _) => {
            new.state = DeployState::Active;
            new.reason = None;
            new.failures = 0;
            // A canary whose step failed steps again: its canary step is not done, nor
            // is the phase. A phase that ended stays ended: back to its canary pause.
            new.canaries_done.retain(|h| !d.failed_hosts.contains(h));
            if new.canaries_done.len() < d.canaries_done.len() {
                new.canary_paused_at = None;
            } else if new.canary_ended() {
                new.state = DeployState::Paused;
                new.reason = Some(znode_schema::CANARY_REASON.into());
            }
            new.failed_hosts.clear();
        }
    }
    Ok(new)
}

/// Rewrites `service`'s first deploy entry as `decide` says (the new payload and its
/// history event, or a refusal), at the data version read, in one transaction;
/// re-reads and decides again when a sidecar moved meanwhile, and after a lost reply
/// learns whether the write landed. Returns the entry's path and what was written.
async fn rewrite_entry(
    ctx: &Ctx,
    service: &str,
    what: &str,
    mut decide: impl FnMut(&DeployEntry) -> anyhow::Result<(DeployEntry, HistoryEvent)>,
) -> anyhow::Result<(String, DeployEntry)> {
    for _ in 0..ATTEMPTS {
        let queue = Queue::read(&ctx.zk, &ctx.layout).await?;
        let (entry, d) = entry_of(&queue, service)?;
        let (new, ev) = decide(d)?;
        let data = encode(&new);
        let mut txn = Txn::default();
        txn.push(Op::Set { path: entry.node.path.clone(), data: data.clone(), version: entry.node.version });
        crate::history::add(ctx, &mut txn, &ev);
        match commit(ctx, service, &txn, what).await? {
            Outcome::Done(_) => {}
            Outcome::Retry => continue,
            Outcome::Unknown => {
                let now = ctx.zk.get(&entry.node.path).await?;
                if now.map(|(raw, _)| raw) != Some(data) {
                    continue;
                }
            }
        }
        crate::history::prune(ctx, service).await;
        if ctx.json {
            print_json(&json!({"service": service, "path": entry.node.path, "entry": new}));
        }
        return Ok((entry.node.path.clone(), new));
    }
    Err(contention(what))
}

/// `deployctl pause SERVICE` (`pause = true`) and `deployctl resume SERVICE`.
pub async fn set_state(ctx: &Ctx, service: &str, pause: bool, reason: Option<&str>) -> anyhow::Result<()> {
    validate_service(service).map_err(Invalid::from)?;
    let what = if pause { format!("pause {service}") } else { format!("resume {service}") };
    let (path, new) = rewrite_entry(ctx, service, &what, |d| {
        let new = pause_or_resume(&ctx.by, d, pause, reason)?;
        let (kind, detail) = if pause {
            (EventKind::Paused, new.reason.clone())
        } else {
            (
                EventKind::Resumed,
                Some(format!(
                    "was {} with {} failure(s){}",
                    d.state,
                    d.failures,
                    d.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
                )),
            )
        };
        Ok((new, crate::history::event(ctx, kind, service, Some(&d.version), detail)))
    })
    .await?;
    if !ctx.json {
        let verb = if pause { "paused" } else { "resumed" };
        outln!("{verb} {service}'s rollout to {} ({path})", new.version);
    }
    Ok(())
}

/// `deployctl promote SERVICE`: ends the canary phase. A rollout paused after its
/// canaries goes on at once; one whose canaries still step lets every host step.
pub async fn promote(ctx: &Ctx, service: &str) -> anyhow::Result<()> {
    validate_service(service).map_err(Invalid::from)?;
    let what = format!("promote {service}");
    let view = ServiceView::read(&ctx.zk, &ctx.layout, service).await?;
    let staging = view.staging.as_ref().and_then(|s| s.ok());
    let (path, new) = rewrite_entry(ctx, service, &what, |d| {
        let canary = staging.filter(|s| s.version == d.version).map_or(0, |s| s.policy.canary);
        let refuse = |why: &str| Refusal::NothingToPromote {
            service: service.into(),
            version: d.version.clone(),
            why: why.into(),
        };
        if canary == 0 {
            return Err(refuse("has no canary phase").into());
        }
        if let Some(by) = &d.promoted_by {
            return Err(refuse(&format!("was promoted by {by}")).into());
        }
        let mut new = d.clone();
        new.promoted_by = Some(ctx.by.clone());
        if d.canary_ended() && d.state == DeployState::Paused {
            new.state = DeployState::Active;
            new.reason = None;
        }
        let detail = format!(
            "canaries {}{}",
            if d.canaries.is_empty() { "none yet".to_string() } else { d.canaries.join(", ") },
            if d.canary_ended() { "" } else { " (promoted before the canary phase ended)" }
        );
        Ok((new, crate::history::event(ctx, EventKind::Promoted, service, Some(&d.version), Some(detail))))
    })
    .await?;
    if !ctx.json {
        let state = if new.state == DeployState::Active { String::new() } else { format!(" (still {})", new.state) };
        outln!("promoted {service}'s rollout to {}: every host steps now{state} ({path})", new.version);
    }
    Ok(())
}

/// `deployctl abort SERVICE`.
pub async fn abort(ctx: &Ctx, service: &str) -> anyhow::Result<()> {
    validate_service(service).map_err(Invalid::from)?;
    let what = format!("abort {service}'s rollout");
    for _ in 0..ATTEMPTS {
        let queue = Queue::read(&ctx.zk, &ctx.layout).await?;
        let (first, d) = entry_of(&queue, service)?;
        let view = ServiceView::read(&ctx.zk, &ctx.layout, service).await?;
        let releases = catalog::read_all(ctx, service).await?.unwrap_or_default();
        let mut txn = Txn::default();
        let entries: Vec<&Entry> = queue.of_service(service).map(|(_, e)| e).collect();
        for e in &entries {
            e.remove_into(&ctx.layout, &mut txn);
        }
        let back_to = restage_majority(ctx, &view, &releases, &mut txn);
        let in_flight: Vec<&str> = entries.iter().flat_map(|e| e.markers.iter().map(|(h, _)| h.as_str())).collect();
        let mut detail = match &back_to {
            Some(v) => format!("staged release back to {v}"),
            None => "staged release left as is".to_string(),
        };
        if !in_flight.is_empty() {
            detail.push_str(&format!("; hosts mid-step: {}", in_flight.join(", ")));
        }
        let ev = crate::history::event(ctx, EventKind::Aborted, service, Some(&d.version), Some(detail.clone()));
        crate::history::add(ctx, &mut txn, &ev);
        match commit(ctx, service, &txn, &what).await? {
            Outcome::Done(_) => {}
            Outcome::Retry => continue,
            Outcome::Unknown => {
                if ctx.zk.stat(&first.node.path).await?.is_some() {
                    continue;
                }
            }
        }
        crate::history::prune(ctx, service).await;
        let paths: Vec<&str> = entries.iter().map(|e| e.node.path.as_str()).collect();
        if ctx.json {
            print_json(&json!({"service": service, "version": d.version, "removed": paths, "staged_version": back_to
                .clone().or_else(|| view.staged_version().map(String::from)), "hosts_mid_step": in_flight}));
        } else {
            outln!("aborted {service}'s rollout to {} (removed {})", d.version, paths.join(", "));
            outln!("{detail}");
        }
        return Ok(());
    }
    Err(contention(&what))
}

/// Adds to `txn` the rewrite of staging/<service> to the release most online hosts
/// run (ties: the most recently staged); returns that version, or `None` when
/// staging stays (no host online, already staged, not in the catalog).
fn restage_majority(
    ctx: &Ctx,
    view: &ServiceView,
    releases: &[crate::model::Node<znode_schema::Release>],
    txn: &mut Txn,
) -> Option<String> {
    let target = catalog::most_popular(view, releases, None)?;
    let staging = view.staging.as_ref()?;
    if view.staged_version() == Some(target.as_str()) {
        return None;
    }
    let Some(release) = releases.iter().filter_map(|n| n.ok()).find(|r| r.version == target) else {
        eprintln!("warning: {} {target}, which most hosts run, is not in the catalog: staging left as is", view.name);
        return None;
    };
    let new = catalog::staging_for(ctx, release);
    txn.push(Op::Set { path: staging.path.clone(), data: encode(&new), version: staging.version });
    Some(target)
}

/// `deployctl unlock SERVICE HOST [--force]`.
pub async fn unlock(ctx: &Ctx, service: &str, host: &str, force: bool) -> anyhow::Result<()> {
    validate_service(service).map_err(Invalid::from)?;
    validate_host(host).map_err(Invalid::from)?;
    let what = format!("unlock {host} in {service}'s rollout");
    for _ in 0..ATTEMPTS {
        let queue = Queue::read(&ctx.zk, &ctx.layout).await?;
        let (_, d) = entry_of(&queue, service)?;
        let marker = queue.of_service(service).find_map(|(_, e)| e.markers.iter().find(|(h, _)| h == host));
        let Some((_, marker)) = marker else {
            return Err(Refusal::NoMarker { service: service.into(), host: host.into() }.into());
        };
        if !force && let Some(evidence) = live_session(ctx, service, host).await? {
            return Err(Refusal::HostAlive { host: host.into(), evidence }.into());
        }
        let mut txn = Txn::default();
        txn.push(Op::Delete { path: marker.path.clone(), version: Some(marker.version) });
        let detail = format!("slot freed{}", if force { " (forced)" } else { "" });
        let mut ev = crate::history::event(ctx, EventKind::Unlocked, service, Some(&d.version), Some(detail));
        ev.host = Some(host.into());
        crate::history::add(ctx, &mut txn, &ev);
        match commit(ctx, service, &txn, &what).await? {
            Outcome::Done(_) => {}
            Outcome::Retry => continue,
            Outcome::Unknown => {
                if ctx.zk.stat(&marker.path).await?.is_some() {
                    continue;
                }
            }
        }
        crate::history::prune(ctx, service).await;
        if ctx.json {
            print_json(&json!({"service": service, "host": host, "removed": marker.path, "forced": force}));
        } else {
            outln!("unlocked {host} in {service}'s rollout to {} (removed {})", d.version, marker.path);
        }
        return Ok(());
    }
    Err(contention(&what))
}

/// A node that only a live session of `host` keeps: its `current` node or a ticket.
async fn live_session(ctx: &Ctx, service: &str, host: &str) -> anyhow::Result<Option<String>> {
    let current = ctx.layout.current_host(service, host);
    if ctx.zk.stat(&current).await?.is_some() {
        return Ok(Some(current));
    }
    let names = ctx.zk.children(&ctx.layout.staging(service)).await?.unwrap_or_default();
    let ticket = znode_schema::seq::sorted_tickets(&names).into_iter().find(|t| t.host == host);
    Ok(ticket.map(|t| ctx.layout.ticket(service, &t)))
}
