//! The baton sidecar library: everything the `sidecar` binary does.

pub mod child;
pub mod command;
pub mod config;
pub mod health;
pub mod hooks;
pub mod logfile;
pub mod pidfile;
pub mod process;
pub mod supervisor;
