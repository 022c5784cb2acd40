//! The baton sidecar library: everything the `sidecar` binary does.

pub mod download;
pub mod releases;
pub mod unpack;
