//! Paths of the workspace's binaries (`sidecar`, `deployctl`, ...) for tests that run
//! them as real processes. `cargo nextest run --workspace` and `cargo build
//! --workspace` build them next to the test binaries' `deps/` directory.

use std::path::PathBuf;

/// The path of workspace binary `name` in the same target profile as this test.
pub fn path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile> directory");
    let bin = profile_dir.join(name);
    assert!(bin.is_file(), "binary {} not found; build the workspace first (`cargo build --workspace`)", bin.display());
    bin
}
