//! One ZooKeeper session of the sidecar, and what every module needs with it.
//!
//! A session lives until it expires (or the sidecar shuts down). The service keeps
//! running across sessions; the daemon opens a new session and every agent
//! re-registers, re-creates its ticket and re-evaluates (SPEC step 10).

use crate::coord::identity::{Acl, Identity};
use crate::coord::zk::{self, ZkError};
use std::time::Duration;
use znode_schema::Layout;
use zookeeper_client as zkc;

/// A live session and the names it acts under.
#[derive(Debug, Clone)]
pub struct Session {
    /// The client; cheap to clone.
    pub client: zkc::Client,
    /// The znode layout under the configured root.
    pub layout: Layout,
    /// This host's id.
    pub host: String,
    /// The negotiated session timeout.
    pub timeout: Duration,
    /// The sessions this host used before this one (its earlier runs', recorded in
    /// the data dir, and this run's earlier sessions): ephemeral nodes of this host id
    /// owned by one of them are this host's own, taken over at once.
    pub previous: std::sync::Arc<[i64]>,
    /// Who the session is to ZooKeeper, and the roles of the tree (ACLs of new nodes).
    pub identity: std::sync::Arc<Identity>,
}

impl Session {
    /// This session's id.
    pub fn id(&self) -> i64 {
        self.client.session_id().0
    }

    /// Whether `owner` is one of this host's earlier sessions (not this one).
    pub fn is_earlier(&self, owner: i64) -> bool {
        owner != 0 && owner != self.id() && self.previous.contains(&owner)
    }

    /// Whether the session can no longer be used (expired, closed).
    pub fn is_terminated(&self) -> bool {
        self.client.state().is_terminated()
    }

    /// The ACL of a node this session creates at `path`.
    pub fn acl(&self, path: &str) -> Acl {
        self.identity.acl(&self.layout, path)
    }

    /// `by` in this session's history events.
    pub fn by(&self) -> String {
        self.identity.by(&self.host)
    }

    /// Creates the top-level tree and the per-service directories, idempotently.
    /// In a secured tree `releases/<service>` is deployctl's to create.
    pub async fn ensure_tree(&self, services: &[String]) -> Result<(), ZkError> {
        for dir in self.layout.top_dirs() {
            zk::mkdir_p(self, &dir).await?;
        }
        for s in services {
            zk::mkdir_p(self, &self.layout.current_service(s)).await?;
            zk::mkdir_p(self, &self.layout.history(s)).await?;
            if self.identity.security.is_none() {
                zk::mkdir_p(self, &self.layout.releases(s)).await?;
            }
        }
        Ok(())
    }
}
