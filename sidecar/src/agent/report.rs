//! What a host reports about the staged release (SPEC "What a host reports"), in
//! its registration's `report`, rate-limited so a rollout stays a small constant
//! number of writes per host.
//!
//! An activity (downloading, queued, waiting, failed) is published only once it has
//! lasted [`SHOW_AFTER`], and the report is rewritten at most every [`MIN_GAP`]: a
//! host that downloads, queues and steps within a couple of seconds writes nothing
//! more than before; a host stuck somewhere says so within a few seconds. Ending an
//! activity clears a published report with the next registration write.

use std::sync::Mutex;

use tokio::time::{Duration, Instant};
use znode_schema::{Activity, HostReport, time};

/// How long an activity lasts before it is published.
pub const SHOW_AFTER: Duration = Duration::from_secs(2);
/// The shortest time between two report writes.
pub const MIN_GAP: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct Inner {
    /// What the registration carries.
    published: Option<HostReport>,
    /// What the host does now, and since when (this process's clock).
    now: Option<(HostReport, Instant)>,
    /// When a report was last published.
    last_write: Option<Instant>,
}

/// One service's report.
#[derive(Debug, Default)]
pub struct Reporter(Mutex<Inner>);

/// A report of `activity` about `version`, the other fields empty.
pub fn report(version: &str, activity: Activity) -> HostReport {
    HostReport {
        version: version.into(),
        activity,
        since: time::now(),
        bytes: None,
        size: None,
        position: None,
        waiting_for: None,
        error: None,
    }
}

impl Reporter {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the registration carries now.
    pub fn published(&self) -> Option<HostReport> {
        self.inner().published.clone()
    }

    /// The host now does `r` (`None`: nothing worth reporting). An activity that
    /// goes on keeps its `since`. A published report that no longer holds is cleared
    /// at once (it rides on the next registration write).
    pub fn set(&self, r: Option<HostReport>) {
        let mut i = self.inner();
        let Some(mut r) = r else {
            i.now = None;
            i.published = None;
            return;
        };
        let same = |a: &HostReport, b: &HostReport| a.activity == b.activity && a.version == b.version;
        let first = match &i.now {
            Some((prev, at)) if same(prev, &r) => {
                r.since.clone_from(&prev.since);
                *at
            }
            _ => Instant::now(),
        };
        i.now = Some((r, first));
    }

    /// When the current activity is due to be published; `None` when it is published
    /// already (or there is none).
    pub fn due(&self) -> Option<Instant> {
        let i = self.inner();
        let (r, first) = i.now.as_ref()?;
        if i.published.as_ref() == Some(r) {
            return None;
        }
        let shown = *first + SHOW_AFTER;
        Some(i.last_write.map_or(shown, |w| shown.max(w + MIN_GAP)))
    }

    /// Publishes the current activity if it is due; whether the registration changed.
    pub fn publish_if_due(&self) -> bool {
        if self.due().is_none_or(|d| d > Instant::now()) {
            return false;
        }
        let mut i = self.inner();
        i.published = i.now.as_ref().map(|(r, _)| r.clone());
        i.last_write = Some(Instant::now());
        true
    }
}

/// The size of the partial download at `path` (bytes so far), if any.
pub fn partial_size(path: &std::path::Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_activity_is_published_after_it_lasted_and_rewritten_at_most_every_gap() {
        let r = Reporter::default();
        r.set(Some(report("2", Activity::Queued)));
        assert!(!r.publish_if_due(), "not at once");
        tokio::time::advance(SHOW_AFTER).await;
        assert!(r.publish_if_due());
        assert_eq!(r.published().map(|p| p.activity), Some(Activity::Queued));
        let mut w = report("2", Activity::Waiting);
        w.waiting_for = Some("quorum".into());
        r.set(Some(w));
        tokio::time::advance(SHOW_AFTER).await;
        assert!(!r.publish_if_due(), "within the gap");
        tokio::time::advance(MIN_GAP).await;
        assert!(r.publish_if_due());
        assert!(r.due().is_none(), "published");
        r.set(None);
        assert_eq!(r.published(), None, "cleared at once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_quick_activity_is_never_published() {
        let r = Reporter::default();
        r.set(Some(report("2", Activity::Downloading)));
        tokio::time::advance(Duration::from_millis(500)).await;
        r.set(None);
        assert!(!r.publish_if_due());
        assert_eq!(r.published(), None);
    }
}
