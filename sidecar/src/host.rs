//! The host half of the sidecar: what happens on this machine.
//!
//! The local step and its undoing, the supervised service and its process
//! plumbing (child processes, process groups, pidfiles, log files, commands),
//! health checks, hooks, and the release store with its verified downloads and
//! safe unpacking. Nothing here talks to ZooKeeper: the coordination half
//! (`crate::coord`) decides, this half does.

pub(crate) mod child;
pub(crate) mod command;
pub mod download;
pub(crate) mod health;
pub(crate) mod hooks;
pub(crate) mod logfile;
pub mod pidfile;
pub mod process;
pub mod releases;
pub mod serve;
pub mod step;
pub mod supervisor;
pub mod trust;
pub mod unpack;
