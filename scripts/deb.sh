#!/usr/bin/env bash
# Builds the Debian package with cargo-deb: both binaries, the systemd unit, a
# commented sample config (/etc/baton/sidecar.toml, a conffile), man pages and
# completions generated from the clap definitions (baton-gen).
#
#   scripts/deb.sh                 # release build: target/debian/baton_<version>_<arch>.deb
#   scripts/deb.sh --profile dev   # from the debug builds the tests use (CI: seconds, not minutes)
#
# Prints the path of the .deb on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
if [[ ${1:-} == --profile ]]; then profile=${2:?--profile needs a name}; fi
target=${CARGO_TARGET_DIR:-$PWD/target}
case $profile in dev) dir=$target/debug ;; *) dir=$target/$profile ;; esac
if ! cargo deb --version >/dev/null 2>&1; then
  echo "deb: cargo-deb is missing: run scripts/setup.sh (cargo install cargo-deb --locked)" >&2
  exit 1
fi
cargo build --locked --profile "$profile" -p baton-sidecar -p baton-deployctl -p baton-dist >&2
rm -rf "$dir/baton-dist"
"$dir/baton-gen" "$dir/baton-dist"
gzip -9n "$dir"/baton-dist/man/*.1   # Debian policy: compressed man pages
mkdir -p "$target/debian"
# Stripped binaries (the release profile keeps line tables); dev builds (the CI
# test): fast compression too (a larger .deb, seconds instead of a minute).
extra=(--strip); [[ $profile == dev ]] && extra+=(--fast)
cargo deb -p baton-dist --no-build --profile "$profile" "${extra[@]}" --output "$target/debian/" | tail -1
