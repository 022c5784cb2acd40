//! `progress_deadline`: a rollout that moves no host for that long halts with a
//! reason, as Kubernetes' `progressDeadlineSeconds` and Nomad's `progress_deadline`.
//!
//! # What counts as progress
//! A write of the deploy entry: its creation (staging), every fence, and, under this
//! policy, every step's end (the success commit rewrites the entry too), as well as an
//! operator's pause and resume. The entry's `mtime` is then the last progress. A step
//! in flight (a marker exists) is progress under way: its own health deadline and
//! bake govern it. Downloading is not progress: a rollout whose hosts all fail to
//! download halts once the deadline passes.
//!
//! # Who checks
//! The hosts that wait on the rollout and would see it stuck: a host whose download
//! keeps failing, a front host waiting for the quorum or the canaries, the designated
//! idle host. The halt is one version-checked write with a `halted` event: of hosts
//! checking at once one wins, and any progress in between (a fence bumps the
//! version) wins over them. The server's `mtime` is compared with this host's clock
//! (hosts' clocks are assumed close, as elsewhere).

use super::deploys::{self, Slot};
use super::history;
use super::session::Session;
use super::zk::{self, ZkError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use znode_schema::{DeployState, EventKind, Policy};

/// What [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// No deadline, not an active rollout, or a host is stepping: nothing to watch.
    NotWatched,
    /// Within the deadline: look again after this long.
    Within(Duration),
    /// The deadline passed: the rollout is halted (or someone changed it first).
    Halted,
}

/// Halts `slot` (a rollout of `service` under `policy`) when it has not moved for
/// `policy.progress_deadline`; `why` says what this host sees (it joins the reason).
pub async fn check(s: &Session, service: &str, policy: &Policy, slot: &Slot, why: &str) -> Result<Progress, ZkError> {
    let (Some(deadline), Some(entry)) = (policy.progress_deadline, slot.entry.as_ref()) else {
        return Ok(Progress::NotWatched);
    };
    if entry.service != service || entry.state != DeployState::Active {
        return Ok(Progress::NotWatched);
    }
    if !zk::children(&s.client, &s.layout.upgrading_dir(&slot.name)).await.unwrap_or_default().is_empty() {
        return Ok(Progress::NotWatched);
    }
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let idle = Duration::from_millis(now_ms.saturating_sub(slot.mtime).max(0) as u64);
    if idle < deadline.0 {
        return Ok(Progress::Within(deadline.0 - idle));
    }
    let mut e = entry.clone();
    e.state = DeployState::Halted;
    let reason = format!("no host moved for {deadline} (progress_deadline); {}: {why}", s.host);
    e.reason = Some(reason.clone());
    let ev = history::event(s, service, EventKind::Halted, Some(&e.version), Some(reason));
    if deploys::rewrite(s, slot, &e, &ev).await? {
        tracing::warn!(entry = %slot.name, %service, "no progress within the progress deadline: halted the rollout");
    }
    Ok(Progress::Halted)
}
