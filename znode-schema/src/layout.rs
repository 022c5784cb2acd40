//! Path builders for every znode of SPEC.md's layout, under a configurable root.
//!
//! ```text
//! <root>/current/<service>/<host>              ephemeral
//! <root>/staging/<service>                     persistent
//! <root>/staging/<service>/<host>-<seq>        ephemeral-sequential (ticket)
//! <root>/deploy/deploy-<seq>                   persistent-sequential (order queue)
//! <root>/deploy/deploy-<seq>/upgrading/<host>  persistent (slot marker)
//! <root>/releases/<service>/<version>          persistent (immutable catalog)
//! <root>/history/<service>/event-<seq>         persistent-sequential (audit trail)
//! <root>/security                              persistent (roles of a secured tree, optional)
//! ```
//!
//! Callers validate names (see [`crate::name`]) before building paths from them.

use crate::seq::{DeployName, TicketName};

/// Prefix of deploy entry names (`deploy-<seq>`).
pub const DEPLOY_PREFIX: &str = "deploy-";
/// Prefix of history event names (`event-<seq>`).
pub const EVENT_PREFIX: &str = "event-";
/// Name of the directory of upgrading markers under a deploy entry.
pub const UPGRADING: &str = "upgrading";
/// Name of the node under a deploy entry that says it rolls back (`on_halt = rollback`).
pub const ROLLBACK_MARK: &str = "rollback";
/// The name prefix of a release's source nodes under `peers/<service>/<version>`.
pub const SOURCE_PREFIX: &str = "source-";
/// The name prefix of a release's origin slots under `peers/<service>/<version>`.
pub const ORIGIN_PREFIX: &str = "origin-";
/// The default root.
pub const DEFAULT_ROOT: &str = "/dc";

/// Why a root path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid root path {root:?}: {reason}")]
pub struct RootError {
    /// The refused root.
    pub root: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// The znode layout under one root (default `/dc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The root without a trailing slash; empty when the root is `/`.
    base: String,
}

impl Default for Layout {
    fn default() -> Self {
        Layout { base: DEFAULT_ROOT.into() }
    }
}

impl Layout {
    /// A layout under `root`, an absolute ZooKeeper path such as `/dc` or `/`.
    pub fn new(root: &str) -> Result<Self, RootError> {
        let err = |reason| Err(RootError { root: root.into(), reason });
        if !root.starts_with('/') {
            return err("it must start with '/'");
        }
        if root == "/" {
            return Ok(Layout { base: String::new() });
        }
        if root.ends_with('/') {
            return err("it must not end with '/'");
        }
        for seg in root[1..].split('/') {
            if seg.is_empty() || seg == "." || seg == ".." {
                return err("it has an empty, '.' or '..' segment");
            }
            if seg.chars().any(|c| c.is_control()) {
                return err("it contains a control character");
            }
        }
        Ok(Layout { base: root.into() })
    }

    /// The root path itself (`/` when the root is `/`).
    pub fn root(&self) -> &str {
        if self.base.is_empty() { "/" } else { &self.base }
    }

    /// The five top-level directories, parents first (for `init`).
    pub fn top_dirs(&self) -> Vec<String> {
        ["current", "staging", "deploy", "releases", "history"].iter().map(|d| format!("{}/{d}", self.base)).collect()
    }

    /// `<root>/security`: the roles of a secured tree (see [`crate::acl`]); absent
    /// in an open tree.
    pub fn security(&self) -> String {
        format!("{}/security", self.base)
    }

    /// `<root>/current`
    pub fn current_dir(&self) -> String {
        format!("{}/current", self.base)
    }
    /// `<root>/current/<service>`
    pub fn current_service(&self, service: &str) -> String {
        format!("{}/current/{service}", self.base)
    }
    /// `<root>/current/<service>/<host>`
    pub fn current_host(&self, service: &str, host: &str) -> String {
        format!("{}/current/{service}/{host}", self.base)
    }

    /// `<root>/staging`
    pub fn staging_dir(&self) -> String {
        format!("{}/staging", self.base)
    }
    /// `<root>/staging/<service>`: the staged release and its policy.
    pub fn staging(&self, service: &str) -> String {
        format!("{}/staging/{service}", self.base)
    }
    /// `<root>/staging/<service>/<host>-`: the prefix for creating a ticket sequentially.
    pub fn ticket_prefix(&self, service: &str, host: &str) -> String {
        format!("{}/staging/{service}/{host}-", self.base)
    }
    /// `<root>/staging/<service>/<ticket>`
    pub fn ticket(&self, service: &str, ticket: &TicketName) -> String {
        format!("{}/staging/{service}/{ticket}", self.base)
    }

    /// `<root>/deploy`
    pub fn deploy_dir(&self) -> String {
        format!("{}/deploy", self.base)
    }
    /// `<root>/deploy/deploy-`: the prefix for creating a deploy entry sequentially.
    pub fn deploy_prefix(&self) -> String {
        format!("{}/deploy/{DEPLOY_PREFIX}", self.base)
    }
    /// `<root>/deploy/<entry>`
    pub fn deploy_entry(&self, entry: &DeployName) -> String {
        format!("{}/deploy/{entry}", self.base)
    }
    /// `<root>/deploy/<entry>/upgrading`
    pub fn upgrading_dir(&self, entry: &DeployName) -> String {
        format!("{}/deploy/{entry}/{UPGRADING}", self.base)
    }
    /// `<root>/deploy/<entry>/rollback`: created when the rollout halts and rolls back
    /// (`on_halt = rollback`), so hosts done with it learn it from an exists watch
    /// that fences never fire.
    pub fn rollback_mark(&self, entry: &DeployName) -> String {
        format!("{}/deploy/{entry}/{ROLLBACK_MARK}", self.base)
    }
    /// `<root>/deploy/<entry>/upgrading/<host>`
    pub fn upgrading(&self, entry: &DeployName, host: &str) -> String {
        format!("{}/deploy/{entry}/{UPGRADING}/{host}", self.base)
    }

    /// `<root>/releases`
    pub fn releases_dir(&self) -> String {
        format!("{}/releases", self.base)
    }
    /// `<root>/releases/<service>`
    pub fn releases(&self, service: &str) -> String {
        format!("{}/releases/{service}", self.base)
    }
    /// `<root>/releases/<service>/<version>`
    pub fn release(&self, service: &str, version: &str) -> String {
        format!("{}/releases/{service}/{version}", self.base)
    }

    /// `<root>/history`
    pub fn history_dir(&self) -> String {
        format!("{}/history", self.base)
    }
    /// `<root>/history/<service>`
    pub fn history(&self, service: &str) -> String {
        format!("{}/history/{service}", self.base)
    }
    /// `<root>/history/<service>/event-`: the prefix for creating an event sequentially.
    pub fn history_prefix(&self, service: &str) -> String {
        format!("{}/history/{service}/{EVENT_PREFIX}", self.base)
    }
    /// `<root>/history/<service>/<event>`
    pub fn history_event(&self, service: &str, event: &str) -> String {
        format!("{}/history/{service}/{event}", self.base)
    }

    /// `<root>/peers`: where hosts record the releases they serve to other hosts.
    /// Not one of [`Layout::top_dirs`]: a tree made before peers existed stays valid;
    /// `deployctl init` creates it, sidecars with `[peers]` create it in an open tree.
    pub fn peers_dir(&self) -> String {
        format!("{}/peers", self.base)
    }
    /// `<root>/peers/<service>`
    pub fn peers_service(&self, service: &str) -> String {
        format!("{}/peers/{service}", self.base)
    }
    /// `<root>/peers/<service>/<version>`: the sources of one release and its origin
    /// slots, in one directory so that one read shows a downloader both.
    pub fn peers_release(&self, service: &str, version: &str) -> String {
        format!("{}/peers/{service}/{version}", self.base)
    }
    /// `<root>/peers/<service>/<version>/source-<host>` (ephemeral, [`crate::PeerSource`]):
    /// `host` serves the verified artifact of that release.
    pub fn peer_source(&self, service: &str, version: &str, host: &str) -> String {
        format!("{}/peers/{service}/{version}/{SOURCE_PREFIX}{host}", self.base)
    }
    /// `<root>/peers/<service>/<version>/origin-<slot>` (ephemeral, [`crate::OriginFetch`]):
    /// one of the `origin_fetches` slots of hosts downloading from the artifact URL.
    pub fn origin_slot(&self, service: &str, version: &str, slot: u32) -> String {
        format!("{}/peers/{service}/{version}/{ORIGIN_PREFIX}{slot}", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case("/dc" => true; "default")]
    #[test_case("/" => true; "slash")]
    #[test_case("/a/b" => true; "nested")]
    #[test_case("" => false; "empty")]
    #[test_case("dc" => false; "relative")]
    #[test_case("/dc/" => false; "trailing slash")]
    #[test_case("/a//b" => false; "double slash")]
    #[test_case("/a/../b" => false; "dot dot")]
    fn roots(root: &str) -> bool {
        Layout::new(root).is_ok()
    }

    #[test]
    fn paths_under_default_root() {
        let l = Layout::default();
        let entry = DeployName { seq: 7 };
        let ticket = TicketName { host: "web-01".into(), seq: 3 };
        assert_eq!(l.current_host("api", "web-01"), "/dc/current/api/web-01");
        assert_eq!(l.staging("api"), "/dc/staging/api");
        assert_eq!(l.ticket_prefix("api", "web-01"), "/dc/staging/api/web-01-");
        assert_eq!(l.ticket("api", &ticket), "/dc/staging/api/web-01-0000000003");
        assert_eq!(l.deploy_prefix(), "/dc/deploy/deploy-");
        assert_eq!(l.deploy_entry(&entry), "/dc/deploy/deploy-0000000007");
        assert_eq!(l.upgrading(&entry, "web-01"), "/dc/deploy/deploy-0000000007/upgrading/web-01");
        assert_eq!(l.release("api", "1.4.0"), "/dc/releases/api/1.4.0");
        assert_eq!(l.history_prefix("api"), "/dc/history/api/event-");
        assert_eq!(l.peer_source("api", "1.4.0", "web-01"), "/dc/peers/api/1.4.0/source-web-01");
        assert_eq!(l.origin_slot("api", "1.4.0", 2), "/dc/peers/api/1.4.0/origin-2");
    }

    #[test]
    fn slash_root_has_no_double_slash() {
        let l = Layout::new("/").unwrap();
        assert_eq!(l.root(), "/");
        assert_eq!(l.staging("api"), "/staging/api");
        assert_eq!(l.top_dirs()[0], "/current");
    }
}
