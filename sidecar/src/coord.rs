//! The coordination half of the sidecar: everything that talks to ZooKeeper.
//!
//! A live session and its error classes, this host's registrations and tickets,
//! the one reader of the deploy queue, eligibility as a pure decision, the fence,
//! the transactions that end a step and the one decider of completion, boot's
//! version choice, history events, and who the session is (credentials, ACLs). Nothing here runs a process or touches the
//! local disk beyond the recorded session id; the host half (`crate::host`) never
//! talks to ZooKeeper.

pub mod boot;
pub mod commit;
pub mod deploys;
pub mod fence;
pub mod history;
pub mod identity;
pub mod progress;
pub mod promote;
pub mod queue;
pub mod register;
pub mod session;
pub mod sources;
pub mod turn;
pub mod zk;
