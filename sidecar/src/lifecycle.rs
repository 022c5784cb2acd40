//! The per-service lifecycle of the sidecar as an explicit state machine.
//!
//! ```text
//!            ┌──────────── staging moved / failed here ─────────────┐
//!            v                                                      │
//! Booting → Idle → Downloading → Queued ──fence──> Upgrading ──ok──> Upgraded → Idle
//!            ^         │  (retry with                 │
//!            │         │   backoff)                   └─fail─> RollingBack → Reverted → Idle
//!            │         v
//!            └─── (session lost: Recovering finishes or undoes a fenced step)
//! ```
//! [`crate::agent::Agent::transition`] performs exactly one transition; the states
//! carry what the next transition needs and nothing is kept elsewhere except what
//! survives sessions (the supervisor, the release store, the failure memory).

use znode_schema::{DeployName, Staging, TicketName, Upgrading};

/// Where one service of this host stands.
#[derive(Debug, Clone)]
pub enum Lifecycle {
    /// Choosing the version to run at start-up (SPEC step 9) and starting it.
    Booting,
    /// Running what it should; waiting for a staged release it does not run.
    Idle,
    /// Fetching, verifying and unpacking the staged `version`.
    Downloading {
        /// The staged version.
        version: String,
    },
    /// Holding `ticket` in the staging queue of `version`; waiting for its turn.
    Queued {
        /// The staged version.
        version: String,
        /// This host's ticket.
        ticket: TicketName,
    },
    /// Fenced on `entry`: the step from `from` to the staged version runs.
    Upgrading {
        /// The deploy entry the fence rewrote.
        entry: DeployName,
        /// The version before the step (none on a host that ran nothing).
        from: Option<String>,
        /// The release being rolled out, with its policy.
        staging: Box<Staging>,
        /// The ticket to delete when the step ends.
        ticket: TicketName,
    },
    /// The step succeeded locally; committing it (registration at the new version,
    /// marker and ticket removed) and completing the rollout if it is done.
    Upgraded {
        /// The deploy entry.
        entry: DeployName,
        /// The release now running.
        staging: Box<Staging>,
        /// The ticket to delete.
        ticket: TicketName,
    },
    /// The step failed with `cause`: going back to `from`, then counting the failure.
    RollingBack {
        /// The deploy entry.
        entry: DeployName,
        /// The version to go back to.
        from: Option<String>,
        /// The release that failed.
        staging: Box<Staging>,
        /// The ticket to delete.
        ticket: TicketName,
        /// Why the step failed.
        cause: String,
    },
    /// Back on `from` locally after a failed step; committing the failure.
    Reverted {
        /// The deploy entry.
        entry: DeployName,
        /// The version running again.
        from: Option<String>,
        /// The release that failed.
        staging: Box<Staging>,
        /// The ticket to delete.
        ticket: TicketName,
        /// Why the step failed.
        cause: String,
    },
    /// A marker of this host was found at session start: a step was interrupted by
    /// a crash or a session loss. It is finished when the new release runs healthy,
    /// undone otherwise.
    Recovering {
        /// The deploy entry holding the marker.
        entry: DeployName,
        /// The marker.
        marker: Upgrading,
    },
}

impl Lifecycle {
    /// A short name for logs and status.
    pub fn name(&self) -> &'static str {
        match self {
            Lifecycle::Booting => "booting",
            Lifecycle::Idle => "idle",
            Lifecycle::Downloading { .. } => "downloading",
            Lifecycle::Queued { .. } => "queued",
            Lifecycle::Upgrading { .. } => "upgrading",
            Lifecycle::Upgraded { .. } => "upgraded",
            Lifecycle::RollingBack { .. } => "rolling_back",
            Lifecycle::Reverted { .. } => "reverted",
            Lifecycle::Recovering { .. } => "recovering",
        }
    }

    /// Whether the host is inside a fenced step (its registration is owned by the step).
    pub fn in_step(&self) -> bool {
        matches!(
            self,
            Lifecycle::Upgrading { .. }
                | Lifecycle::Upgraded { .. }
                | Lifecycle::RollingBack { .. }
                | Lifecycle::Reverted { .. }
                | Lifecycle::Recovering { .. }
        )
    }
}
