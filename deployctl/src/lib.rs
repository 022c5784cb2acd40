//! The deployctl library: everything the `deployctl` binary does.
