//! The audit trail: events added in the same transaction as the change they record,
//! pruning to the newest N per service, and `deployctl history`.

use crate::Ctx;
use crate::model::{Node, read};
use crate::output::{Table, print_json};
use crate::zk::{Op, Txn};
use anyhow::Context;
use serde_json::json;
use znode_schema::{EventKind, HistoryEvent, SeqName, encode, layout::EVENT_PREFIX};

/// The default number of events kept per service.
pub const DEFAULT_KEEP: usize = 200;

/// A new event stamped now and signed by the operator.
pub fn event(ctx: &Ctx, kind: EventKind, service: &str, version: Option<&str>, detail: Option<String>) -> HistoryEvent {
    HistoryEvent {
        at: znode_schema::time::now(),
        event: kind,
        service: service.into(),
        version: version.map(String::from),
        host: None,
        detail,
        by: Some(ctx.by.clone()),
        count: None,
    }
}

/// Adds the creation of `ev` to `txn`. `history/<service>` must exist.
pub fn add(ctx: &Ctx, txn: &mut Txn, ev: &HistoryEvent) -> usize {
    txn.push(Op::CreateSeq { prefix: ctx.layout.history_prefix(&ev.service), data: encode(ev) })
}

/// Event names under `history/<service>`, oldest first.
async fn sorted_events(ctx: &Ctx, service: &str) -> anyhow::Result<Option<Vec<(u64, String)>>> {
    let Some(names) = ctx.zk.children(&ctx.layout.history(service)).await? else { return Ok(None) };
    let mut events: Vec<_> =
        names.into_iter().filter_map(|n| SeqName::parse(&n, EVENT_PREFIX).map(|s| (s.seq, n))).collect();
    events.sort();
    Ok(Some(events))
}

/// Deletes the oldest events of `service` beyond the newest `ctx.history_keep`.
/// A failure is a warning on stderr: the change itself is already committed.
pub async fn prune(ctx: &Ctx, service: &str) {
    if let Err(err) = try_prune(ctx, service).await {
        eprintln!("warning: failed to prune the history of {service}: {err:#}");
    }
}

async fn try_prune(ctx: &Ctx, service: &str) -> anyhow::Result<()> {
    let events = sorted_events(ctx, service).await?.unwrap_or_default();
    let excess = events.len().saturating_sub(ctx.history_keep);
    for (_, name) in &events[..excess] {
        ctx.zk.delete(&ctx.layout.history_event(service, name), None).await?;
    }
    // Then by age, oldest first, up to the first event young enough to keep.
    for (_, name) in &events[excess..] {
        let path = ctx.layout.history_event(service, name);
        match ctx.zk.stat(&path).await? {
            Some(stat) if znode_schema::history_expired(stat.ctime) => {
                ctx.zk.delete(&path, None).await?;
            }
            Some(_) => break,
            None => {}
        }
    }
    Ok(())
}

/// The newest `limit` events of `service`, newest first.
pub async fn newest(ctx: &Ctx, service: &str, limit: usize) -> anyhow::Result<Option<Vec<Node<HistoryEvent>>>> {
    let Some(events) = sorted_events(ctx, service).await? else { return Ok(None) };
    let mut out = Vec::new();
    for (_, name) in events.into_iter().rev() {
        if out.len() >= limit {
            break;
        }
        if let Some(node) = read::<HistoryEvent>(&ctx.zk, &ctx.layout.history_event(service, &name)).await? {
            out.push(node);
        }
    }
    Ok(Some(out))
}

/// `deployctl history SERVICE [--limit N]`.
pub async fn show(ctx: &Ctx, service: &str, limit: usize) -> anyhow::Result<()> {
    let events = newest(ctx, service, limit).await?.unwrap_or_default();
    if ctx.json {
        let rows: Vec<_> = events.iter().map(event_json).collect();
        print_json(&json!({ "service": service, "events": rows }));
        return Ok(());
    }
    let mut t = Table::new(&["AT", "EVENT", "VERSION", "HOST", "BY", "DETAIL"]);
    for node in &events {
        match &node.value {
            Ok(e) => t.row(vec![
                e.at.clone(),
                e.event.to_string(),
                e.version.clone().unwrap_or_else(|| "-".into()),
                e.host.clone().unwrap_or_else(|| "-".into()),
                e.by.clone().unwrap_or_else(|| "-".into()),
                match e.count {
                    Some(n) if n > 1 => format!("(x{n}) {}", e.detail.as_deref().unwrap_or_default()),
                    _ => e.detail.clone().unwrap_or_default(),
                },
            ]),
            Err(m) => t.row(vec!["?".into(), "MALFORMED".into(), "-".into(), "-".into(), "-".into(), m.to_string()]),
        }
    }
    if t.is_empty() {
        outln!("no history for {service}");
    } else {
        out!("{}", t.render(""));
    }
    Ok(())
}

/// One event as JSON: the payload plus its `path`, or `{path, error}`.
fn event_json(node: &Node<HistoryEvent>) -> serde_json::Value {
    match &node.value {
        Ok(e) => {
            let mut v = serde_json::to_value(e).unwrap_or_default();
            v["path"] = json!(node.path);
            v
        }
        Err(m) => json!(m),
    }
}

/// `deployctl history SERVICE --timeline FILE.svg`: the newest rollout drawn (see
/// [`crate::timeline`]).
pub async fn timeline(ctx: &Ctx, service: &str, file: &std::path::Path) -> anyhow::Result<()> {
    let nodes = newest(ctx, service, ctx.history_keep.max(DEFAULT_KEEP)).await?.unwrap_or_default();
    let mut events = Vec::new();
    for n in nodes.into_iter().rev() {
        let Ok(e) = n.value else { continue };
        let ctime = ctx
            .zk
            .stat(&n.path)
            .await?
            .map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_millis(s.ctime as u64));
        if let Some(t) = ctime.or_else(|| znode_schema::time::parse(&e.at)) {
            events.push((e, t));
        }
    }
    let queue = crate::model::Queue::read(&ctx.zk, &ctx.layout).await?;
    let view = crate::model::ServiceView::read(&ctx.zk, &ctx.layout, service).await?;
    let version = events.iter().rev().find(|(e, _)| matches!(e.event, EventKind::Staged | EventKind::RolledBack));
    let version = version.and_then(|(e, _)| e.version.clone()).unwrap_or_default();
    let release = read::<znode_schema::Release>(&ctx.zk, &ctx.layout.release(service, &version)).await?;
    let policy = release.as_ref().and_then(|r| r.ok()).and_then(|r| r.policy.clone()).or_else(|| {
        view.staging.as_ref().and_then(|s| s.ok()).filter(|s| s.version == version).map(|s| s.policy.clone())
    });
    let Some(picture) = crate::timeline::picture(service, &events, policy.as_ref(), &view, &queue) else {
        return Err(crate::error::Refusal::NotFound {
            what: "a staged release in the history".into(),
            service: service.into(),
            path: ctx.layout.history(service),
        }
        .into());
    };
    std::fs::write(file, picture.svg()).with_context(|| format!("failed to write {}", file.display()))?;
    if ctx.json {
        print_json(
            &json!({"service": service, "version": version, "file": file.display().to_string(), "hosts": picture.hosts()}),
        );
    } else {
        outln!("wrote {}: {service} {version}, {} host(s)", file.display(), picture.hosts());
    }
    Ok(())
}
