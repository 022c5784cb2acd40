//! `deployctl watch`: follow rollouts until they complete (exit 0) or halt (exit 4).
//!
//! # How
//! Polling, every `--interval` (250ms by default): each poll re-reads the queue and
//! the watched services, so there is no watch state to lose around a reconnect.
//! A rollout is identified by its payload (service, version, `created_at`,
//! `created_by`), not its path, because `rollback` re-creates queued entries.
//!
//! # Outcomes
//! - entry state `halted`: exit 4 with its reason;
//! - entry gone and every online host runs the staged target (or a `completed`
//!   event for it): done; exit 0 once every watched rollout is done;
//! - entry gone otherwise (abort, rollback, `stage --replace`): exit 4 naming the
//!   event that removed it. An entry must be missing from two polls in a row.
//!
//! # Disconnects
//! A failed poll is reported once and retried; when the session expired a new
//! session is opened. Nothing is concluded from a failed poll.

use crate::Ctx;
use crate::error::{Halted, Refusal};
use crate::model::{Queue, ServiceView};
use crate::output::short;
use crate::why::Why;
use crate::zk::ZkError;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant, SystemTime};
use znode_schema::{DeployEntry, DeployState, EventKind};

/// One watched rollout.
#[derive(Debug)]
struct Target {
    entry: DeployEntry,
    missing: u32,
    first: Option<(Instant, usize)>,
    last_line: String,
    bar: Option<ProgressBar>,
}

/// What one poll saw of a rollout.
enum Seen {
    Running { at_target: usize, total: usize, state: DeployState, steps: Vec<(String, String)>, why: Vec<Why> },
    Done,
    Failed(String),
    Pending,
}

/// `deployctl watch [SERVICE]`.
pub async fn run(
    ctx: &mut Ctx,
    service: Option<&str>,
    interval: Duration,
    timeout: Option<Duration>,
) -> anyhow::Result<()> {
    if let Some(s) = service {
        znode_schema::validate_service(s).map_err(crate::error::Invalid::from)?;
    }
    let queue = Queue::read(&ctx.zk, &ctx.layout).await?;
    let entries: Vec<DeployEntry> = match service {
        Some(s) => queue.first_of(s).and_then(|(_, e)| e.node.ok().cloned()).into_iter().collect(),
        None => queue.entries.iter().filter_map(|e| e.node.ok().cloned()).collect(),
    };
    if entries.is_empty() {
        return nothing_to_watch(ctx, service).await;
    }
    let tty = std::io::stdout().is_terminal() && !ctx.json;
    let multi =
        MultiProgress::with_draw_target(if tty { ProgressDrawTarget::stdout() } else { ProgressDrawTarget::hidden() });
    let mut targets: Vec<Target> = entries
        .into_iter()
        .map(|entry| {
            let bar = tty.then(|| new_bar(&multi, &entry));
            Target { entry, missing: 0, first: None, last_line: String::new(), bar }
        })
        .collect();
    let start = Instant::now();
    let mut trouble: Option<String> = None;
    loop {
        if let Some(t) = timeout.filter(|t| start.elapsed() > *t) {
            anyhow::bail!("gave up watching after {}", short(t));
        }
        match poll(ctx, &mut targets).await {
            Ok(seen) => {
                if trouble.take().is_some() {
                    say(&multi, "ZooKeeper: connected again");
                    targets.iter_mut().for_each(|t| t.last_line.clear());
                }
                if let Some(done) = show(&multi, &mut targets, seen, ctx.json) {
                    return done;
                }
            }
            Err(err) => {
                let msg = format!("{err:#}");
                if trouble.is_none() {
                    stale(&mut targets, ctx.json, &msg);
                }
                if trouble.as_deref() != Some(msg.as_str()) {
                    say(&multi, &format!("ZooKeeper: {msg}; retrying"));
                    trouble = Some(msg);
                }
                let ended = err.chain().any(|c| c.downcast_ref::<ZkError>().is_some_and(ZkError::session_ended));
                if ended && let Ok(zk) = ctx.zk.reconnect().await {
                    ctx.zk = zk;
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Marks every watched rollout's progress as stale: ZooKeeper cannot be read.
fn stale(targets: &mut [Target], json: bool, error: &str) {
    let at = znode_schema::time::now();
    for t in targets.iter_mut().filter(|t| t.last_line != "done") {
        let line = format!("stale since {at}: ZooKeeper unreachable, the progress shown is the last seen");
        if let Some(bar) = &t.bar {
            bar.set_message(line);
        } else if json {
            let v = serde_json::json!({"service": t.entry.service, "version": t.entry.version, "event": "stale",
                                       "since": at, "error": error});
            outln!("{v}");
        } else {
            outln!("{} {}: {line}", t.entry.service, t.entry.version);
        }
        t.last_line = "stale".into();
    }
}

fn new_bar(multi: &MultiProgress, e: &DeployEntry) -> ProgressBar {
    let style = ProgressStyle::with_template("{prefix:.bold} [{bar:30.green/blue}] {pos}/{len} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    multi.add(ProgressBar::new(0).with_style(style).with_prefix(format!("{} {}", e.service, e.version)))
}

fn say(multi: &MultiProgress, line: &str) {
    if multi.is_hidden() {
        eprintln!("{line}");
    } else {
        let _ = multi.println(line);
    }
}

/// Without a rollout in the queue: fine when every online host of the service (of
/// every staged service, without SERVICE) runs its staged release, else refused.
/// `watch` and `watch SERVICE` give the same verdict on the same fleet.
async fn nothing_to_watch(ctx: &Ctx, service: Option<&str>) -> anyhow::Result<()> {
    let names = match service {
        Some(s) => vec![s.to_string()],
        None => crate::model::service_names(&ctx.zk, &ctx.layout, &Queue::default()).await?,
    };
    let mut behind = Vec::new();
    for s in &names {
        let view = ServiceView::read(&ctx.zk, &ctx.layout, s).await?;
        let staged = view.staged_version().map(String::from);
        let at = view.host_versions().filter(|(_, v)| Some(*v) == staged.as_deref()).count();
        match staged {
            Some(v) if at == view.hosts.len() => {
                outln!("{s} {v}: no rollout in progress; all {at} online host(s) run the staged release");
            }
            Some(v) => {
                behind.push((s.clone(), format!("{at} of {} online host(s) run the staged {v}", view.hosts.len())))
            }
            None if service.is_some() => behind.push((s.clone(), "nothing is staged".into())),
            None => {}
        }
    }
    if behind.is_empty() {
        if service.is_none() {
            outln!("no rollout in progress");
        }
        return Ok(());
    }
    let service = behind.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>().join(", ");
    let detail = behind.iter().map(|(s, d)| format!("{s}: {d}")).collect::<Vec<_>>().join("; ");
    Err(Refusal::NothingToWatch { service, detail }.into())
}

fn same(a: &DeployEntry, b: &DeployEntry) -> bool {
    a.service == b.service && a.version == b.version && a.created_at == b.created_at && a.created_by == b.created_by
}

async fn poll(ctx: &Ctx, targets: &mut [Target]) -> anyhow::Result<Vec<Seen>> {
    let queue = Queue::read(&ctx.zk, &ctx.layout).await?;
    let live = crate::model::live_hosts(&ctx.zk, &ctx.layout).await?;
    let mut out = Vec::new();
    for t in targets.iter_mut() {
        let view = ServiceView::read(&ctx.zk, &ctx.layout, &t.entry.service).await?;
        let found = queue.entries.iter().find(|e| e.node.ok().is_some_and(|d| same(d, &t.entry)));
        let seen = match found {
            Some(e) => {
                t.missing = 0;
                let d = e.node.ok().expect("matched a decoded entry");
                let at_target = view.host_versions().filter(|(_, v)| *v == t.entry.version).count();
                let upgrading = e.markers.iter().filter(|(h, _)| !view.hosts.iter().any(|(o, _)| o == h)).count();
                let steps =
                    e.markers.iter().map(|(h, m)| (h.clone(), m.ok().map(|u| u.since.clone()).unwrap_or_default()));
                if d.state == DeployState::Halted {
                    Seen::Failed(format!("halted: {}", d.reason.as_deref().unwrap_or("no reason given")))
                } else {
                    let total = view.hosts.len() + upgrading;
                    let why = crate::status::reasons(ctx, &queue, &view, &live).await?;
                    Seen::Running { at_target, total, state: d.state, steps: steps.collect(), why }
                }
            }
            None => {
                t.missing += 1;
                match (gone(ctx, &t.entry, &view).await?, t.missing) {
                    (Seen::Done, _) => Seen::Done,
                    (_, 1) => Seen::Pending,
                    (other, _) => other,
                }
            }
        };
        out.push(seen);
    }
    Ok(out)
}

/// Why a rollout's entry left the queue: completion, or the event that removed it.
async fn gone(ctx: &Ctx, entry: &DeployEntry, view: &ServiceView) -> anyhow::Result<Seen> {
    let all_at = view.host_versions().all(|(_, v)| v == entry.version);
    if view.staged_version() == Some(entry.version.as_str()) && all_at {
        return Ok(Seen::Done);
    }
    let events = crate::history::newest(ctx, &entry.service, 50).await?.unwrap_or_default();
    for e in events.iter().filter_map(|n| n.ok()).filter(|e| e.at >= entry.created_at) {
        let by = e.by.as_deref().unwrap_or("someone");
        let v = e.version.as_deref().unwrap_or("?");
        let reason = match e.event {
            EventKind::Completed if v == entry.version => return Ok(Seen::Done),
            EventKind::Aborted if v == entry.version => format!("aborted by {by}"),
            EventKind::RolledBack => format!("rolled back to {v} by {by}"),
            EventKind::Staged if v != entry.version || e.at > entry.created_at => {
                format!("superseded by {v} staged by {by}")
            }
            _ => continue,
        };
        return Ok(Seen::Failed(reason));
    }
    Ok(Seen::Failed(format!("the deploy entry vanished before every online host ran {}", entry.version)))
}

/// Updates bars or prints lines; `Some` when watching is over.
fn show(multi: &MultiProgress, targets: &mut [Target], seen: Vec<Seen>, json: bool) -> Option<anyhow::Result<()>> {
    let line = |t: &Target, fields: serde_json::Value| {
        let mut v = serde_json::json!({"service": t.entry.service, "version": t.entry.version});
        if let (Some(v), Some(f)) = (v.as_object_mut(), fields.as_object()) {
            v.extend(f.clone());
        }
        outln!("{v}");
    };
    for (t, s) in targets.iter_mut().zip(seen) {
        let name = format!("{} {}", t.entry.service, t.entry.version);
        let elapsed = znode_schema::time::parse(&t.entry.created_at)
            .and_then(|c| SystemTime::now().duration_since(c).ok())
            .unwrap_or_default();
        match s {
            Seen::Running { at_target, total, state, steps, why } => {
                let (first_at, first_n) = *t.first.get_or_insert((Instant::now(), at_target));
                let eta = match state {
                    DeployState::Active => {
                        eta(first_at.elapsed(), at_target.saturating_sub(first_n), total.saturating_sub(at_target))
                    }
                    _ => "paused".into(),
                };
                let step: Vec<String> =
                    steps.iter().map(|(h, since)| format!("{h} stepping {}", crate::output::ago(since))).collect();
                let why_text: Vec<String> = why.iter().map(ToString::to_string).collect();
                let key = format!(
                    "{at_target}/{total} hosts at {}; {state}; {}; {}",
                    t.entry.version,
                    steps.iter().map(|s| s.0.as_str()).collect::<Vec<_>>().join(", "),
                    why.iter()
                        .map(|w| format!("{w:?}"))
                        .filter(|w| !w.starts_with("Stuck"))
                        .collect::<Vec<_>>()
                        .join("; ")
                );
                let mut msg = format!(
                    "{state}; {}; elapsed {}; eta {eta}",
                    if step.is_empty() { "no host stepping".into() } else { step.join(", ") },
                    short(elapsed)
                );
                if !why_text.is_empty() {
                    msg.push_str(&format!("; why: {}", why_text.join("; ")));
                }
                if let Some(bar) = &t.bar {
                    bar.set_length(total as u64);
                    bar.set_position(at_target as u64);
                    bar.set_message(msg);
                } else if key != t.last_line && json {
                    let stepping: Vec<_> =
                        steps.iter().map(|(h, s)| serde_json::json!({"host": h, "since": s})).collect();
                    line(
                        t,
                        serde_json::json!({"event": "progress", "state": state, "at_target": at_target,
                        "total": total, "stepping": stepping, "elapsed_s": elapsed.as_secs(), "eta": eta,
                        "why": crate::status::why_json(&why)}),
                    );
                    t.last_line = key;
                } else if key != t.last_line {
                    outln!("{name}: {at_target}/{total} hosts at target; {msg}");
                    t.last_line = key;
                }
            }
            Seen::Pending => {}
            Seen::Done => {
                if let Some(bar) = t.bar.take() {
                    bar.finish_with_message(format!("completed in {}", short(elapsed)));
                } else if t.last_line != "done" && json {
                    line(t, serde_json::json!({"event": "completed", "elapsed_s": elapsed.as_secs()}));
                } else if t.last_line != "done" {
                    outln!("{name}: completed in {}", short(elapsed));
                }
                t.last_line = "done".into();
            }
            Seen::Failed(reason) => {
                if let Some(bar) = t.bar.take() {
                    bar.abandon_with_message(reason.clone());
                }
                let _ = multi.clear();
                if json {
                    line(t, serde_json::json!({"event": "failed", "reason": reason}));
                } else {
                    outln!("{name}: {reason}");
                }
                let (service, version) = (t.entry.service.clone(), t.entry.version.clone());
                return Some(Err(Halted { service, version, reason }.into()));
            }
        }
    }
    targets.iter().all(|t| t.last_line == "done").then_some(Ok(()))
}

/// The time left at the rate seen so far, `?` before the first host finished.
fn eta(watched: Duration, done_since: usize, remaining: usize) -> String {
    if remaining == 0 {
        return "0s".into();
    }
    if done_since == 0 || watched.is_zero() {
        return "?".into();
    }
    short(watched.mul_f64(remaining as f64 / done_since as f64))
}
