//! `auto_promote`: a rollout paused after its canary phase goes on by itself once its
//! canaries stayed healthy for the policy's duration.
//!
//! # Expected flow
//! The last canary's commit pauses the entry with reason `canary` and the time
//! (`canary_paused_at`). Hosts that watch the entry (the front hosts still queued,
//! and the designated completer) call [`auto_promote`] when it changes and when its
//! timer runs out: once the duration has passed since the pause, and every canary
//! whose step did not fail is online at the rollout's version, one version-checked
//! write makes the entry active and promoted, with a `promoted` event. A canary that
//! is not online at the version keeps the rollout paused for an operator.
//!
//! # Guarantees
//! The write checks the entry's data version: of several hosts promoting at once one
//! wins, and an operator's change in between (abort, resume, a halt) wins over them.
//! The duration is measured from the pausing host's clock to this host's: hosts'
//! clocks are assumed close (NTP), as the history's timestamps already assume.

use super::deploys::{self, Slot};
use super::history;
use super::session::Session;
use super::zk::{self, ZkError};
use std::time::{Duration, SystemTime};
use znode_schema::{Current, DeployState, EventKind, Staging};

/// What [`auto_promote`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Promotion {
    /// Not a rollout waiting for auto-promotion: nothing to do.
    NotWaiting,
    /// Too early: look again after this long.
    Wait(Duration),
    /// The canaries are not all healthy: stays paused (why).
    Unhealthy(String),
    /// Promoted (or someone else changed the entry first: re-read).
    Done,
}

/// Promotes `slot` (the rollout of `st`) if it waits for `auto_promote` and its time
/// has come (see the module docs).
pub async fn auto_promote(s: &Session, st: &Staging, slot: &Slot) -> Result<Promotion, ZkError> {
    let (Some(entry), Some(after)) = (slot.entry.as_ref(), st.policy.auto_promote) else {
        return Ok(Promotion::NotWaiting);
    };
    if !slot.is(&st.service, &st.version) || !entry.awaits_promotion() {
        return Ok(Promotion::NotWaiting);
    }
    // The pause time is written in whole seconds (truncated): count from the end of
    // that second, so the canaries had at least the full duration.
    let since = entry.canary_paused_at.as_deref().and_then(znode_schema::time::parse).unwrap_or(SystemTime::now())
        + Duration::from_secs(1);
    let waited = SystemTime::now().duration_since(since).unwrap_or_default();
    if waited < after.0 {
        return Ok(Promotion::Wait(after.0 - waited));
    }
    let mut healthy = 0;
    for host in entry.canaries_done.iter().filter(|h| !entry.failed_hosts.contains(h)) {
        let path = s.layout.current_host(&st.service, host);
        match zk::get::<Current>(&s.client, &path).await {
            Ok(Some((c, _, _))) if c.version == st.version => healthy += 1,
            Ok(Some((c, _, _))) => return Ok(Promotion::Unhealthy(format!("canary {host} runs {}", c.version))),
            Ok(None) => return Ok(Promotion::Unhealthy(format!("canary {host} is not online"))),
            Err(ZkError::Decode(err)) => return Ok(Promotion::Unhealthy(format!("canary {host}: {err}"))),
            Err(e) => return Err(e),
        }
    }
    if healthy == 0 {
        return Ok(Promotion::Unhealthy("no canary stepped successfully".into()));
    }
    let mut e = entry.clone();
    e.state = DeployState::Active;
    e.reason = None;
    e.promoted_by = Some(format!("{} (auto_promote after {after})", s.by()));
    let detail = format!("auto_promote: canaries {} healthy for {after}", entry.canaries_done.join(", "));
    let ev = history::event(s, &st.service, EventKind::Promoted, Some(&st.version), Some(detail));
    if deploys::rewrite(s, slot, &e, &ev).await? {
        tracing::info!(entry = %slot.name, service = %st.service, version = %st.version, "canaries healthy: promoted the rollout");
    }
    Ok(Promotion::Done)
}
