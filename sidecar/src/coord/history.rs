//! History events written by the sidecar, inside the transaction that makes the
//! change they record; and download failures, which change nothing else, on their own,
//! coalesced: one event per host and release, its count and latest error updated.

use crate::coord::session::Session;
use znode_schema::{EventKind, HistoryEvent, Layout, encode, time};

/// A history event about `service` by this host's sidecar, signed with the
/// session's authenticated identity when it has one.
pub fn event(
    s: &Session,
    service: &str,
    kind: EventKind,
    version: Option<&str>,
    detail: Option<String>,
) -> HistoryEvent {
    HistoryEvent {
        at: time::now(),
        event: kind,
        service: service.into(),
        version: version.map(str::to_string),
        host: Some(s.host.clone()),
        detail,
        by: Some(s.by()),
        count: None,
    }
}

/// The path prefix and bytes to add an event as a persistent-sequential create.
pub fn create_op(layout: &Layout, ev: &HistoryEvent) -> (String, Vec<u8>) {
    (layout.history_prefix(&ev.service), encode(ev))
}

/// How many events each service keeps; older ones are pruned on completion, and
/// by the sidecar whose event's sequence number is a multiple of [`PRUNE_EVERY`].
pub const KEEP: usize = 200;

/// See [`KEEP`].
pub const PRUNE_EVERY: i64 = 50;

/// A failure event of this host, to count the next failures of the same release in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coalesced {
    /// The release that fails.
    pub version: String,
    /// The event's node name.
    pub name: String,
    /// Failures counted so far.
    pub count: u32,
}

/// Records a failure to download `version` of `service`: the first as a new
/// `download_failed` event, the next ones of the same release by updating that event
/// (count and latest error), so a long outage adds one event per host, not one per
/// retry. Returns what to pass next time; best effort (a failure is logged).
pub async fn record_failure(
    s: &Session,
    service: &str,
    version: &str,
    detail: &str,
    last: Option<Coalesced>,
) -> Option<Coalesced> {
    let mut ev = event(s, service, EventKind::DownloadFailed, Some(version), Some(detail.into()));
    if let Some(mut last) = last.filter(|l| l.version == version) {
        last.count += 1;
        ev.count = Some(last.count);
        let path = s.layout.history_event(service, &last.name);
        match s.client.set_data(&path, &encode(&ev), None).await {
            Ok(_) => return Some(last),
            Err(zookeeper_client::Error::NoNode) => {} // pruned meanwhile: a new one
            Err(err) => {
                tracing::warn!(error = %err, "failed to update the download failure in history");
                return Some(last);
            }
        }
        ev.count = None;
    }
    let (prefix, data) = create_op(&s.layout, &ev);
    let acl = s.acl(&prefix);
    match s.client.create(&prefix, &data, &acl.options(zookeeper_client::CreateMode::PersistentSequential)).await {
        Ok((_, seq)) => {
            let name = format!("{}{seq}", znode_schema::layout::EVENT_PREFIX);
            if seq.into_i64() % PRUNE_EVERY == 0 {
                crate::coord::commit::prune_history(s, service).await;
            }
            Some(Coalesced { version: version.into(), name, count: 1 })
        }
        Err(err) => {
            tracing::warn!(error = %err, "failed to record the download failure in history");
            None
        }
    }
}
