//! History events written by the sidecar, always inside the transaction that makes
//! the change they record.

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
    }
}

/// The path prefix and bytes to add an event as a persistent-sequential create.
pub fn create_op(layout: &Layout, ev: &HistoryEvent) -> (String, Vec<u8>) {
    (layout.history_prefix(&ev.service), encode(ev))
}

/// How many events each service keeps; older ones are pruned on completion.
pub const KEEP: usize = 200;
