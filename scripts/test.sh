#!/usr/bin/env bash
# The test command: installs what is missing, then runs every test of the
# workspace against real ZooKeeper servers the harness starts itself.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all --check
cargo build --workspace --all-targets --locked
exec cargo nextest run --workspace --locked --profile ci "$@"
