//! baton's ZooKeeper contract in one place.
//!
//! Every znode path and every payload that baton reads or writes is defined here
//! (see `docs/znode-schema.md` for the operator's view). No other crate builds a
//! path by hand or defines a payload: serialized types are a compatibility promise.
//!
//! - [`name`]: validation of service names, host ids and versions.
//! - [`layout`]: path builders under a configurable root.
//! - [`payload`]: the JSON payloads, each carrying `"schema": 1`.
//! - [`policy`]: rollout policy values (quorum, human durations).
//! - [`codec`]: encoding and decoding with errors that name the path and field.
//! - [`seq`]: sequential node names (tickets, deploy entries) and their order.
//! - [`acl`]: the roles of a secured tree and the ACL of every node.

pub mod acl;
pub mod codec;
pub mod layout;
pub mod name;
pub mod payload;
pub mod policy;
pub mod seq;
pub mod time;

pub use acl::Security;
pub use codec::{DecodeError, decode, encode};
pub use layout::Layout;
pub use name::{NameError, SIDECAR_SERVICE, validate_host, validate_service, validate_version};
pub use payload::*;
pub use policy::{HumanDuration, OnFailure, OnHalt, Policy, Quorum};
pub use seq::{DeployName, SeqName, TicketName};

/// The schema number written into every payload by this version of baton.
pub const SCHEMA: u32 = 1;

/// History events older than this are pruned by whoever prunes (the sidecar and
/// deployctl), whatever their count.
pub const HISTORY_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// Whether a history event created at `ctime_ms` (a znode's ctime, ms since the
/// epoch) is older than [`HISTORY_MAX_AGE`] now.
pub fn history_expired(ctime_ms: i64) -> bool {
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    now_ms - ctime_ms > HISTORY_MAX_AGE.as_millis() as i64
}
