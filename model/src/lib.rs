//! An exhaustively checked model of baton's rollout protocol (SPEC.md's
//! "The rollout protocol", as redesigned), for the `stateright` model checker.
//!
//! The state ([`state`]) is ZooKeeper's tree (staging, tickets, registrations,
//! deploy entries with data versions, markers) plus each (host, service) agent's
//! phase and the release it runs. Each action ([`actions`], [`apply`]) is one
//! atomic ZooKeeper operation or multi, or one local step; the fence's read and its
//! commit are separate actions. Faults (session expiry, sidecar crash) and operator
//! actions are bounded by the [`Config`]. The release lifecycle's canary phase
//! (`canary`, promote, `auto_promote`) and `on_halt = rollback` are policy options
//! ([`Policy`]). [`properties`] lists what is checked; [`checks`] records the
//! invariants that are about transitions.
//!
//! See docs/guarantees.md, "The model", for what it covers and what it does not.

pub mod actions;
pub mod apply;
pub mod checks;
pub mod config;
pub mod properties;
pub mod rules;
pub mod state;

pub use config::{Bug, Config, OpKind, Policy, Service};
pub use properties::{Rollout, names};
