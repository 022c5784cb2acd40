//! Why a rollout is not moving, derived from what ZooKeeper holds now. One function,
//! [`explain`], decides for `status` (plain, `--hosts`, `--json`) and `watch`, so
//! they always agree. It reads the deploy entry (paused, halted, its place in the
//! queue), the staging policy with the online hosts and markers (the quorum
//! arithmetic of SPEC "Turn"), markers whose host has no live session, the hosts'
//! `current` payloads (`last_error`) and the history's `download_failed` events.
//! Richer host reports in the `current` payloads will be read here too.

use crate::model::{Entry, Queue, ServiceView};
use crate::output::ago;
use serde::Serialize;
use std::collections::BTreeSet;
use znode_schema::{DeployState, EventKind, HistoryEvent};

/// One reason a rollout is not moving (or a host is behind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Why {
    /// An operator paused it.
    Paused { by: Option<String>, reason: String },
    /// It halted (too many failures).
    Halted { reason: String },
    /// Another service's rollout heads the queue.
    Behind { service: String, version: String, state: String },
    /// The head entry does not decode: it blocks the queue until deleted.
    BehindMalformed { path: String },
    /// Too few hosts online for anyone to step.
    Quorum { quorum: String, required: u32, online: u32 },
    /// A host holds a slot but has no live session: nobody will finish its step.
    Stuck { host: String, since: String, for_: String, unlock: String },
    /// A host cannot download or verify the staged release.
    DownloadFailing { host: String, error: String, count: u32 },
    /// Hosts behind the target with no ticket, marker or error: still downloading.
    Downloading { hosts: Vec<String> },
    /// Hosts that report their download in progress (bytes so far of the size).
    DownloadProgress { host: String, bytes: u64, size: u64 },
    /// The canaries stepped: the rollout waits for `deployctl promote` (or auto_promote).
    AwaitsPromotion { canaries: Vec<String>, auto_promote: Option<String>, promote: String },
    /// The canary phase is full: only the canaries step until it is promoted.
    CanaryPhase { canaries: Vec<String>, of: u32 },
    /// The rollout halted and rolls back on its own (`on_halt = rollback`).
    RollingBack { to: String, reason: String },
    /// What the front host says it waits for (its report), when nothing above explains it.
    HostWaits { host: String, waiting_for: String },
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Paused { reason, .. } if reason.starts_with("paused by ") => f.write_str(reason),
            Why::Paused { by: Some(by), reason } => write!(f, "paused by {by}: {reason}"),
            Why::Paused { by: None, reason } => write!(f, "paused: {reason}"),
            Why::Halted { reason } => write!(f, "halted: {reason}"),
            Why::Behind { service, version, state } => {
                write!(f, "behind {service} {version} at the head ({state})")
            }
            Why::BehindMalformed { path } => write!(f, "behind a malformed deploy entry at the head: {path}"),
            Why::Quorum { quorum, required, online } => {
                write!(f, "blocked: quorum {quorum} needs {required} online, {online} online")
            }
            Why::Stuck { host, for_, unlock, .. } => {
                write!(f, "{host} stepping for {for_} with no session — `{unlock}`")
            }
            Why::DownloadFailing { host, error, count } if *count > 1 => {
                write!(f, "{host} fails to download ({count} times): {error}")
            }
            Why::DownloadFailing { host, error, .. } => write!(f, "{host} fails to download: {error}"),
            Why::Downloading { hosts } => write!(f, "downloading (no ticket yet): {}", hosts.join(", ")),
            Why::DownloadProgress { host, bytes, size } => {
                write!(f, "{host} downloading: {} of {}", crate::output::bytes(*bytes), crate::output::bytes(*size))
            }
            Why::AwaitsPromotion { canaries, auto_promote, promote } => {
                write!(f, "paused after the canary phase (canaries: {}): `{promote}`", canaries.join(", "))?;
                match auto_promote {
                    Some(d) => write!(f, ", or auto_promote after {d} healthy"),
                    None => Ok(()),
                }
            }
            Why::CanaryPhase { canaries, of } => {
                write!(
                    f,
                    "canary phase: {} of {of} canaries ({}); the other hosts wait",
                    canaries.len(),
                    canaries.join(", ")
                )
            }
            Why::RollingBack { to, reason } => write!(f, "rolling back to {to} (on_halt = rollback): {reason}"),
            Why::HostWaits { host, waiting_for } => write!(f, "{host} waits: {waiting_for}"),
        }
    }
}

/// What [`explain`] reasons from.
#[derive(Debug)]
pub struct Facts<'a> {
    /// The service's nodes.
    pub view: &'a ServiceView,
    /// The queue.
    pub queue: &'a Queue,
    /// Hosts with a live `current` node of any service (a live sidecar registers
    /// `baton-sidecar` at least).
    pub live: &'a BTreeSet<String>,
    /// The service's newest history events, newest first.
    pub events: &'a [HistoryEvent],
}

/// Why the service's rollout is not moving, most important first; empty when it
/// moves (or there is none).
pub fn explain(f: &Facts<'_>) -> Vec<Why> {
    let service = f.view.name.as_str();
    let Some((pos, entry)) = f.queue.first_of(service) else { return Vec::new() };
    let Some(d) = entry.node.ok() else { return Vec::new() };
    let mut out = Vec::new();
    let policy = f.view.staging.as_ref().and_then(|s| s.ok()).filter(|s| s.version == d.version).map(|s| &s.policy);
    let canary = policy.map_or(0, |p| p.canary);
    let auto = policy.and_then(|p| p.auto_promote).map(|d| d.to_string());
    match d.state {
        DeployState::Paused if d.awaits_promotion() => out.push(Why::AwaitsPromotion {
            canaries: d.canaries_done.clone(),
            auto_promote: auto,
            promote: format!("deployctl promote {service}"),
        }),
        DeployState::Active if d.rolling_back_to.is_some() => {
            out.push(Why::RollingBack { to: d.target().to_string(), reason: d.reason.clone().unwrap_or_default() })
        }
        DeployState::Active if d.canary_phase(canary) && d.canaries.len() as u32 >= canary => {
            out.push(Why::CanaryPhase { canaries: d.canaries.clone(), of: canary })
        }
        DeployState::Paused => {
            let by = newest(f.events, EventKind::Paused, &d.version).and_then(|e| e.by.clone());
            out.push(Why::Paused { by, reason: d.reason.clone().unwrap_or_default() });
        }
        DeployState::Halted => out.push(Why::Halted { reason: d.reason.clone().unwrap_or_else(|| "no reason".into()) }),
        DeployState::Active => {}
    }
    if pos > 0 {
        let head = &f.queue.entries[0];
        out.push(match head.node.ok() {
            Some(h) => {
                Why::Behind { service: h.service.clone(), version: h.version.clone(), state: h.state.to_string() }
            }
            None => Why::BehindMalformed { path: head.node.path.clone() },
        });
    }
    stuck(f, entry, &mut out);
    quorum(f, entry, &d.version, &mut out);
    downloads(f, entry, &d.version, &d.created_at, &mut out);
    if out.is_empty() {
        // The hosts' own reports (SPEC "What a host reports"): the front host's wait.
        for (host, node) in &f.view.hosts {
            let Some(r) = node.ok().and_then(|c| c.report.as_ref()) else { continue };
            if r.version == d.version && r.activity == znode_schema::Activity::Waiting {
                if let Some(w) = &r.waiting_for {
                    out.push(Why::HostWaits { host: host.clone(), waiting_for: w.clone() });
                }
            }
        }
    }
    out
}

/// The newest event of `kind` for `version`.
fn newest<'e>(events: &'e [HistoryEvent], kind: EventKind, version: &str) -> Option<&'e HistoryEvent> {
    events.iter().find(|e| e.event == kind && e.version.as_deref() == Some(version))
}

fn stuck(f: &Facts<'_>, entry: &Entry, out: &mut Vec<Why>) {
    let ticketed: BTreeSet<&str> = f.view.tickets.iter().map(|(t, _)| t.host.as_str()).collect();
    for (host, m) in &entry.markers {
        if f.live.contains(host) || ticketed.contains(host.as_str()) {
            continue;
        }
        let since = m.ok().map(|u| u.since.clone()).unwrap_or_default();
        out.push(Why::Stuck {
            host: host.clone(),
            for_: ago(&since),
            since,
            unlock: format!("deployctl unlock {} {host}", f.view.name),
        });
    }
}

fn quorum(f: &Facts<'_>, entry: &Entry, version: &str, out: &mut Vec<Why>) {
    let Some(staging) = f.view.staging.as_ref().and_then(|s| s.ok()) else { return };
    let online = f.view.hosts.len() as u32;
    let upgrading = entry.markers.iter().filter(|(h, _)| !f.view.hosts.iter().any(|(o, _)| o == h)).count() as u32;
    let behind = f.view.host_versions().any(|(_, v)| v != version);
    let required = staging.policy.quorum.required(online + upgrading);
    if behind && upgrading == 0 && online.saturating_sub(1) < required {
        out.push(Why::Quorum { quorum: staging.policy.quorum.to_string(), required, online });
    }
}

fn downloads(f: &Facts<'_>, entry: &Entry, version: &str, since: &str, out: &mut Vec<Why>) {
    let ticketed: BTreeSet<&str> = f.view.tickets.iter().map(|(t, _)| t.host.as_str()).collect();
    let marked: BTreeSet<&str> = entry.markers.iter().map(|(h, _)| h.as_str()).collect();
    let failed: BTreeSet<&str> =
        entry.node.ok().map(|d| d.failed_hosts.iter().map(String::as_str).collect()).unwrap_or_default();
    let mut quiet = Vec::new();
    for (host, node) in &f.view.hosts {
        let Some(c) = node.ok() else { continue };
        if c.version == version
            || ticketed.contains(host.as_str())
            || marked.contains(host.as_str())
            || failed.contains(host.as_str())
        {
            continue;
        }
        let event = f.events.iter().find(|e| {
            e.event == EventKind::DownloadFailed
                && e.host.as_deref() == Some(host)
                && e.version.as_deref() == Some(version)
                && e.at.as_str() >= since
        });
        let progress = c
            .report
            .as_ref()
            .filter(|r| r.version == version && r.activity == znode_schema::Activity::Downloading && r.bytes.is_some());
        if let (Some(r), None) = (progress, c.last_error.as_ref()) {
            out.push(Why::DownloadProgress {
                host: host.clone(),
                bytes: r.bytes.unwrap_or(0),
                size: r.size.unwrap_or(0),
            });
            continue;
        }
        match (c.last_error.as_ref(), event) {
            (Some(err), ev) => out.push(Why::DownloadFailing {
                host: host.clone(),
                error: err.clone(),
                count: ev.and_then(|e| e.count).unwrap_or(1),
            }),
            (None, Some(ev)) => out.push(Why::DownloadFailing {
                host: host.clone(),
                error: ev.detail.clone().unwrap_or_else(|| "no detail".into()),
                count: ev.count.unwrap_or(1),
            }),
            (None, None) => quiet.push(host.clone()),
        }
    }
    if !quiet.is_empty() {
        out.push(Why::Downloading { hosts: quiet });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_as_documented() {
        let q = Why::Quorum { quorum: "3".into(), required: 3, online: 2 };
        assert_eq!(q.to_string(), "blocked: quorum 3 needs 3 online, 2 online");
        let s = Why::Stuck {
            host: "web-03".into(),
            since: "t".into(),
            for_: "4m00s".into(),
            unlock: "deployctl unlock api web-03".into(),
        };
        assert_eq!(s.to_string(), "web-03 stepping for 4m00s with no session — `deployctl unlock api web-03`");
        let p = Why::Paused { by: Some("ops@h".into()), reason: "error rate".into() };
        assert_eq!(p.to_string(), "paused by ops@h: error rate");
        let p = Why::Paused { by: Some("ops@h".into()), reason: "paused by ops@h".into() };
        assert_eq!(p.to_string(), "paused by ops@h");
    }
}
