//! The per-service lifecycle of the sidecar as an explicit state machine.
//!
//! ```text
//!            ┌───────────────────── staging moved ───────────────────────┐
//!            v                                                           │
//! Booting → Idle → Downloading → Queued ──fence──> Upgrading ──ok──> Upgraded → Completing → Idle
//!   │        ^         │ (retry,                      │                  ^
//!   │        │         │  backoff)                    ├─fail─> RollingBack → Reverted ─┤
//!   │        │         │                              └─fail, on_failure = stay─> Stayed ─┘
//!   │        │         v                                                  ^
//!   └─(a marker of this service at session start)─> Recovering           │
//!                                  │  new release active ──> Verifying ──┴─ok─> Upgraded
//!                                  └─ otherwise ──> Undoing → Undone → Completing
//! ```
//!
//! [`crate::agent::Agent`] performs one transition at a time, taking the state by
//! value and returning the next. The states carry everything a transition needs;
//! nothing about the rollout is kept beside the state: what runs is the release
//! store's (on disk), what failed here is the deploy entry's `failed_hosts` (in
//! ZooKeeper), the registration is re-read per session.
//!
//! The *local* states (Upgrading, Verifying, RollingBack, Undoing) never touch
//! ZooKeeper: they run to their end whatever happens to the session, so a session
//! loss lets a step in flight finish (health, the full bake, undrain) and commit on
//! the next session.

use znode_schema::{DeployName, Policy, TicketName, Upgrading};

/// A fenced step of this host: what its local half and its commit need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The deploy entry holding the marker.
    pub entry: DeployName,
    /// The version before the step (none on a host that ran nothing).
    pub from: Option<String>,
    /// The version the step moves to.
    pub to: String,
    /// The rollout's policy (health deadline, bake, failures).
    pub policy: Policy,
    /// The ticket to delete when the step ends (gone with an expired session).
    pub ticket: Option<TicketName>,
}

/// Where one service of this host stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lifecycle {
    /// Just started: recovering a marker if there is one, else choosing the version
    /// to run (SPEC step 9) and starting it when nothing runs.
    Booting,
    /// Running what it should; waiting for a rollout it takes part in.
    Idle,
    /// Fetching, verifying and unpacking the staged `version`.
    Downloading {
        /// The staged version.
        version: String,
        /// Failed attempts so far (for the backoff).
        attempts: u32,
        /// The last failure, shown in the registration.
        error: Option<String>,
    },
    /// Holding `ticket` in the staging queue of `version`; waiting for its turn.
    Queued {
        /// The staged version.
        version: String,
        /// This host's ticket.
        ticket: TicketName,
        /// Why it waited last time (logged at info when it changes).
        waiting: Option<String>,
        /// Since when a head entry of
        /// another service has looked vacuous: no host online, queued or stepping.
        vacuous_since: Option<(DeployName, tokio::time::Instant)>,
    },
    /// The rollout of `from` halted and rolls back (`on_halt = rollback`): this host,
    /// which stepped to `from`, waits for a slot to go back to `to`.
    Returning {
        /// The rolling-back deploy entry.
        entry: DeployName,
        /// The rollout's version, which this host runs.
        from: String,
        /// The version it goes back to.
        to: String,
    },
    /// Fenced: the local step runs (drain, stop, switch, start, health, bake, undrain).
    Upgrading(Step),
    /// The new release of an interrupted step is active: adopt or start it, check its
    /// health, bake for the full bake time, undrain.
    Verifying(Step),
    /// The step succeeded locally: one transaction registers at the new version and
    /// drops marker and ticket.
    Upgraded(Step),
    /// The step failed with `cause`: going back to `from` locally.
    RollingBack {
        /// The step.
        step: Step,
        /// Why it failed.
        cause: String,
        /// Whether the host was undrained when it failed (a failed verify hook):
        /// drain it before going back.
        drain: bool,
    },
    /// The step failed with `cause` under `on_failure = "stay"`: the host keeps the
    /// new release; one transaction counts the failure and halts the rollout.
    Stayed {
        /// The step.
        step: Step,
        /// Why it failed.
        cause: String,
    },
    /// Back on `from` after a failed step: one transaction counts the failure.
    Reverted {
        /// The step.
        step: Step,
        /// Why it failed.
        cause: String,
    },
    /// An interrupted step whose new release is not active: back to `from` locally.
    Undoing(Step),
    /// Undone locally: one transaction drops the marker, not counted as a failure.
    Undone(Step),
    /// A step of this service's rollout ended (or boot registered): deciding whether
    /// the rollout of `version` on `entry` is complete.
    Completing {
        /// The deploy entry.
        entry: DeployName,
        /// The rollout's version.
        version: String,
    },
    /// A marker of this host and service was found at session start: a step was
    /// interrupted by a crash, or its fence's reply was lost with the session.
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
            Lifecycle::Returning { .. } => "returning",
            Lifecycle::Upgrading(_) => "upgrading",
            Lifecycle::Verifying(_) => "verifying",
            Lifecycle::Upgraded(_) => "upgraded",
            Lifecycle::RollingBack { .. } => "rolling_back",
            Lifecycle::Reverted { .. } => "reverted",
            Lifecycle::Stayed { .. } => "stayed",
            Lifecycle::Undoing(_) => "undoing",
            Lifecycle::Undone(_) => "undone",
            Lifecycle::Completing { .. } => "completing",
            Lifecycle::Recovering { .. } => "recovering",
        }
    }

    /// Whether this state runs on the host alone (no ZooKeeper call): it goes on
    /// without a session.
    pub fn is_local(&self) -> bool {
        matches!(
            self,
            Lifecycle::Upgrading(_) | Lifecycle::Verifying(_) | Lifecycle::RollingBack { .. } | Lifecycle::Undoing(_)
        )
    }

    /// Whether the host is inside a fenced step that this process knows of (its
    /// registration is owned by the step; a new session does not look for markers).
    pub fn in_step(&self) -> bool {
        self.is_local()
            || matches!(
                self,
                Lifecycle::Upgraded(_)
                    | Lifecycle::Reverted { .. }
                    | Lifecycle::Stayed { .. }
                    | Lifecycle::Undone(_)
                    | Lifecycle::Recovering { .. }
            )
    }

    /// The state to resume in on a new session: what the old session held
    /// (tickets, registration) is gone, a step in flight goes on.
    pub fn on_new_session(self) -> Lifecycle {
        match self {
            Lifecycle::Queued { .. } | Lifecycle::Completing { .. } | Lifecycle::Returning { .. } => Lifecycle::Idle,
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step() -> Step {
        Step {
            entry: DeployName { seq: 1 },
            from: Some("1".into()),
            to: "2".into(),
            policy: Policy::default(),
            ticket: None,
        }
    }

    #[test]
    fn local_states_need_no_session() {
        assert!(Lifecycle::Upgrading(step()).is_local());
        assert!(Lifecycle::Verifying(step()).is_local());
        assert!(!Lifecycle::Upgraded(step()).is_local());
        assert!(Lifecycle::Upgraded(step()).in_step());
        assert!(!Lifecycle::Idle.in_step());
    }

    #[test]
    fn a_new_session_keeps_a_step_and_drops_a_ticket() {
        assert_eq!(Lifecycle::Upgraded(step()).on_new_session(), Lifecycle::Upgraded(step()));
        let q = Lifecycle::Queued {
            version: "2".into(),
            ticket: TicketName { host: "h".into(), seq: 1 },
            waiting: None,
            vacuous_since: None,
        };
        assert_eq!(q.on_new_session(), Lifecycle::Idle);
        assert_eq!(Lifecycle::Booting.on_new_session(), Lifecycle::Booting);
    }
}
