//! The integration test harness: a real Apache ZooKeeper (standalone or a 3-node
//! ensemble) on free loopback ports, child processes tied to the test binary's life,
//! and bounded waiting for asynchronous facts.
//!
//! - [`zk`]: start, stop, kill and restart ZooKeeper servers; find the leader.
//! - [`bin`]: paths of the workspace binaries.
//! - [`chaos`]: shared steps of the chaos suite.
//! - [`ctl`]: runs deployctl, snapshots subtrees, writes znodes as a sidecar would.
//! - [`delay`]: a delaying TCP proxy (latency without netem).
//! - [`monitor`]: records the fewest online hosts and the most markers seen.
//! - [`fleet`]: real sidecar processes, demo releases, staging by hand.
//! - [`multi`]: hosts running several services: releases, identities, hooks, log queries.
//! - [`netns`]: a network the test owns (a namespace per node on a bridge), cut and healed.
//! - [`netbed`]: ZooKeeper members and sidecar hosts each in their own namespace.
//! - [`process`]: spawn children that die with the test binary, even after a panic.
//! - [`secure`]: a ZooKeeper with TLS client certificates and digest logins, a per-run CA.
//! - [`txnlog`]: ZooKeeper's transaction logs read back: the exact history of a test.
//! - [`invariants`]: replays that history and checks baton's guarantees.
//! - [`wait`]: `eventually`, waiting for a fact with a bounded patience.

pub mod artifact_server;
pub mod bin;
pub mod chaos;
pub mod ctl;
pub mod delay;
pub mod fleet;
pub mod invariants;
pub mod monitor;
pub mod multi;
pub mod netbed;
pub mod netns;
pub mod process;
pub mod secure;
pub mod signing;
pub mod staging;
pub mod txnlog;
pub mod wait;
pub mod zk;

pub use wait::{eventually, eventually_async};
pub use zk::{ZkCluster, shared_server, unique_root};
