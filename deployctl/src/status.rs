//! `deployctl status`: one summary per service (or one line per host with `--hosts`),
//! built from the queue and each service's nodes. Malformed znodes are listed as
//! problems with their path.

use crate::Ctx;
use crate::model::{Entry, Malformed, Queue, ServiceView, service_names};
use crate::output::{Table, ago, print_json};
use crate::why::Why;
use serde_json::{Value, json};

/// One service with its rollout, if any, and why it is not moving.
struct Row<'a> {
    view: ServiceView,
    entry: Option<(usize, &'a Entry)>,
    why: Vec<Why>,
}

/// `deployctl status [SERVICE] [--hosts]`.
pub async fn run(ctx: &Ctx, service: Option<&str>, per_host: bool) -> anyhow::Result<()> {
    if let Some(s) = service {
        znode_schema::validate_service(s).map_err(crate::error::Invalid::from)?;
    }
    let queue = Queue::read(&ctx.zk, &ctx.layout).await?;
    let names = match service {
        Some(s) => vec![s.to_string()],
        None => service_names(&ctx.zk, &ctx.layout, &queue).await?,
    };
    let live = crate::model::live_hosts(&ctx.zk, &ctx.layout).await?;
    let mut rows = Vec::new();
    for name in names {
        let view = ServiceView::read(&ctx.zk, &ctx.layout, &name).await?;
        let why = reasons(ctx, &queue, &view, &live).await?;
        rows.push(Row { entry: queue.first_of(&name), view, why });
    }
    if ctx.json {
        print_json(&to_json(&queue, &rows));
    } else if per_host {
        out!("{}", hosts_table(&rows).render(""));
        for r in &rows {
            for w in r.why.iter().filter(|w| host_of(w).is_none()) {
                outln!("{}: {w}", r.view.name);
            }
        }
    } else {
        print_summary(&queue, &rows, service.is_none());
    }
    Ok(())
}

/// Why `view`'s rollout is not moving ([`crate::why::explain`]).
pub async fn reasons(
    ctx: &Ctx,
    queue: &Queue,
    view: &ServiceView,
    live: &std::collections::BTreeSet<String>,
) -> anyhow::Result<Vec<Why>> {
    let Some((_, entry)) = queue.first_of(&view.name) else { return Ok(Vec::new()) };
    // The history is read only when a reason may come from it (who paused; a host
    // behind with no ticket or marker may be failing to download), so `watch`'s polls
    // stay a few reads each.
    let d = entry.node.ok().expect("first_of yields decoded entries");
    let quiet_host = view.host_versions().any(|(h, v)| {
        v != d.version && !view.tickets.iter().any(|(t, _)| t.host == h) && !entry.markers.iter().any(|(m, _)| m == h)
    });
    let events = match d.state == znode_schema::DeployState::Paused || quiet_host {
        true => crate::history::newest(ctx, &view.name, 50).await?.unwrap_or_default(),
        false => Vec::new(),
    };
    let events: Vec<_> = events.into_iter().filter_map(|n| n.value.ok()).collect();
    Ok(crate::why::explain(&crate::why::Facts { view, queue, live, events: &events }))
}

/// Reasons as JSON: each a tagged object with its line as `text`.
pub fn why_json(why: &[Why]) -> Vec<Value> {
    why.iter()
        .map(|w| {
            let mut v = serde_json::to_value(w).unwrap_or_default();
            v["text"] = json!(w.to_string());
            v
        })
        .collect()
}

fn to_json(queue: &Queue, rows: &[Row<'_>]) -> Value {
    let queue_json: Vec<Value> =
        queue.entries.iter().enumerate().map(|(i, e)| crate::model::queue_item(i, e)).collect();
    let services: Vec<Value> = rows.iter().map(|r| service_json(queue, r)).collect();
    json!({"queue": queue_json, "services": services, "problems": queue.malformed()})
}

fn service_json(queue: &Queue, r: &Row<'_>) -> Value {
    let v = &r.view;
    let staging = v.staging.as_ref().and_then(|s| s.ok());
    let deploy = r.entry.map(|(pos, e)| {
        let d = e.node.ok().expect("first_of yields decoded entries");
        json!({"path": e.node.path, "position": pos + 1, "queue_length": queue.entries.len(), "version": d.version,
               "state": d.state, "reason": d.reason, "failures": d.failures, "failed_hosts": d.failed_hosts,
               "max_failures": staging.map(|s| s.policy.max_failures), "created_at": d.created_at,
               "created_by": d.created_by})
    });
    let by_version: Vec<Value> =
        v.by_version().into_iter().map(|(ver, hosts)| json!({"version": ver, "hosts": hosts})).collect();
    let hosts: Vec<Value> = v
        .hosts
        .iter()
        .filter_map(|(h, n)| {
            n.ok().map(|c| {
                json!({"host": h, "version": c.version, "since": c.since, "state": c.state,
                                                     "pid": c.pid, "last_error": c.last_error})
            })
        })
        .collect();
    let upgrading: Vec<Value> = r
        .entry
        .map(|(_, e)| {
            e.markers
                .iter()
                .filter_map(|(h, m)| {
                    m.ok().map(|u| {
                        json!({"host": h, "from": u.from, "to": u.to, "since": u.since,
                                                            "path": m.path})
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let tickets: Vec<Value> = v
        .tickets
        .iter()
        .filter_map(|(t, n)| {
            n.ok().map(|k| {
                json!({"host": t.host, "seq": t.seq, "version": k.version, "at": k.at,
                                                    "path": n.path})
            })
        })
        .collect();
    json!({"service": v.name, "staging": staging, "staged_version": v.staged_version(), "deploy": deploy,
           "hosts_by_version": by_version, "hosts": hosts, "upgrading": upgrading, "tickets": tickets,
           "why": why_json(&r.why), "problems": problems(r)})
}

fn problems(r: &Row<'_>) -> Vec<Malformed> {
    let mut out = r.view.malformed();
    if let Some((_, e)) = r.entry {
        out.extend(e.markers.iter().filter_map(|(_, m)| m.value.as_ref().err().cloned()));
    }
    out
}

fn print_summary(queue: &Queue, rows: &[Row<'_>], show_queue: bool) {
    if show_queue {
        if queue.entries.is_empty() {
            outln!("deploy queue: empty");
        } else {
            outln!("deploy queue:");
            for (i, e) in queue.entries.iter().enumerate() {
                outln!("  {}. {}", i + 1, crate::model::describe(e));
            }
        }
        if rows.is_empty() {
            outln!("no services");
        }
    }
    for r in rows {
        outln!();
        out!("{}", summary(queue, r));
    }
}

fn summary(queue: &Queue, r: &Row<'_>) -> String {
    let v = &r.view;
    let mut t = Table::default();
    let staged = match v.staging.as_ref().map(|s| &s.value) {
        None => "nothing staged".to_string(),
        Some(Err(m)) => format!("MALFORMED {m}"),
        Some(Ok(s)) => format!(
            "{} by {} at {} (quorum {}, max_parallel {}, bake {}, health_deadline {}, max_failures {})",
            s.version,
            s.staged_by,
            s.staged_at,
            s.policy.quorum,
            s.policy.max_parallel,
            s.policy.bake,
            s.policy.health_deadline,
            s.policy.max_failures
        ),
    };
    t.row(vec!["staged".into(), staged]);
    let rollout = match r.entry {
        None => "none".to_string(),
        Some((pos, e)) => {
            let d = e.node.ok().expect("first_of yields decoded entries");
            let max = v.staging.as_ref().and_then(|s| s.ok()).map(|s| s.policy.max_failures.to_string());
            let reason = d.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
            format!(
                "{} to {}: {}{reason}, queue position {} of {}, failures {}/{}",
                e.name,
                d.version,
                d.state,
                pos + 1,
                queue.entries.len(),
                d.failures,
                max.as_deref().unwrap_or("?")
            )
        }
    };
    t.row(vec!["rollout".into(), rollout]);
    let by_version: Vec<String> =
        v.by_version().into_iter().map(|(ver, hosts)| format!("{ver}: {}", hosts.join(", "))).collect();
    let hosts = if by_version.is_empty() { "none online".into() } else { by_version.join(" | ") };
    t.row(vec!["hosts".into(), format!("{hosts} ({} online)", v.hosts.len())]);
    if let Some((_, e)) = r.entry {
        for (h, m) in &e.markers {
            if let Some(u) = m.ok() {
                let from = u.from.as_deref().unwrap_or("nothing");
                t.row(vec![
                    "upgrading".into(),
                    format!("{h} {from} -> {} since {} ({})", u.to, u.since, ago(&u.since)),
                ]);
            }
        }
    }
    if !v.tickets.is_empty() {
        let tickets: Vec<String> = v.tickets.iter().map(|(t, _)| t.host.clone()).collect();
        t.row(vec!["tickets".into(), tickets.join(", ")]);
    }
    if let Some(d) = r.entry.and_then(|(_, e)| e.node.ok()).filter(|d| !d.failed_hosts.is_empty()) {
        t.row(vec!["failed".into(), d.failed_hosts.join(", ")]);
    }
    for w in &r.why {
        t.row(vec!["why".into(), w.to_string()]);
    }
    for p in problems(r) {
        t.row(vec!["problem".into(), format!("MALFORMED {p}")]);
    }
    format!("{}\n{}", v.name, t.render("  "))
}

/// The host a reason is about, when it is about one host.
fn host_of(w: &Why) -> Option<&str> {
    match w {
        Why::Stuck { host, .. } | Why::DownloadFailing { host, .. } => Some(host),
        _ => None,
    }
}

fn hosts_table(rows: &[Row<'_>]) -> Table {
    let mut t = Table::new(&["SERVICE", "HOST", "STATE", "VERSION", "SINCE", "TICKET", "WHY"]);
    for r in rows {
        let v = &r.view;
        let note = |host: &str| {
            let notes: Vec<String> =
                r.why.iter().filter(|w| host_of(w) == Some(host)).map(ToString::to_string).collect();
            notes.join("; ")
        };
        let ticket = |host: &str| {
            v.tickets.iter().position(|(t, _)| t.host == host).map(|i| format!("#{}", i + 1)).unwrap_or("-".into())
        };
        let mut seen = std::collections::BTreeSet::new();
        for (h, n) in &v.hosts {
            seen.insert(h.clone());
            match &n.value {
                Ok(c) => t.row(vec![
                    v.name.clone(),
                    h.clone(),
                    "online".into(),
                    c.version.clone(),
                    since(&c.since),
                    ticket(h),
                    note(h),
                ]),
                Err(m) => t.row(vec![v.name.clone(), h.clone(), "MALFORMED".into(), m.error.clone()]),
            }
        }
        for (h, m) in r.entry.map(|(_, e)| e.markers.as_slice()).unwrap_or_default() {
            seen.insert(h.clone());
            let (ver, at) = match m.ok() {
                Some(u) => (format!("{} -> {}", u.from.as_deref().unwrap_or("nothing"), u.to), since(&u.since)),
                None => ("MALFORMED".into(), "-".into()),
            };
            t.row(vec![v.name.clone(), h.clone(), "upgrading".into(), ver, at, ticket(h), note(h)]);
        }
        for (tk, n) in &v.tickets {
            if seen.insert(tk.host.clone()) {
                let ver = n.ok().map(|k| k.version.clone()).unwrap_or_else(|| "?".into());
                t.row(vec![v.name.clone(), tk.host.clone(), "queued".into(), ver, "-".into(), ticket(&tk.host)]);
            }
        }
    }
    t
}

fn since(at: &str) -> String {
    format!("{at} ({} ago)", ago(at))
}
