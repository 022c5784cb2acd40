//! The baton sidecar library: everything the `sidecar` binary does.

pub mod command;
pub mod config;
pub mod health;
pub mod hooks;
pub mod process;
