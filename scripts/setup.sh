#!/usr/bin/env bash
# Installs what a fresh machine lacks to build and test baton. Idempotent: a
# machine that has everything is left alone. Needs root for apt-get.
set -euo pipefail

need_apt=()
if [[ ! -f /usr/share/java/zookeeper.jar && -z "${ZOOKEEPER_HOME:-}" ]]; then
  need_apt+=(zookeeper)
fi
if ! command -v java >/dev/null 2>&1; then
  need_apt+=(default-jre-headless)
fi
if ! command -v curl >/dev/null 2>&1; then
  need_apt+=(curl)
fi
# The signing tool operators use; the tests of signed releases make keys with it.
if ! command -v minisign >/dev/null 2>&1; then
  need_apt+=(minisign)
fi
# The TLS tests: Netty's jars on ZooKeeper's classpath (Debian's zookeeper.jar lacks
# them) and openssl to make a CA and certificates per run.
if [[ ! -f /usr/share/java/netty-codec.jar && -z "${ZOOKEEPER_HOME:-}" ]]; then
  need_apt+=(libnetty-java)
fi
if ! command -v openssl >/dev/null 2>&1; then
  need_apt+=(openssl)
fi

# The network-fault tests put hosts and ZooKeeper members in namespaces (`ip netns`).
if ! command -v ip >/dev/null 2>&1; then
  need_apt+=(iproute2)
fi

if ((${#need_apt[@]})); then
  echo "setup: installing ${need_apt[*]} from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install a Rust toolchain (https://rustup.rs)" >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest" >&2
  cargo install --locked cargo-nextest >/dev/null
fi
# The Debian package (scripts/deb.sh, scripts/deb-test.sh); the version CI was checked with.
if ! cargo deb --version >/dev/null 2>&1; then
  echo "setup: installing cargo-deb" >&2
  cargo install cargo-deb --version 3.8.0 --locked >/dev/null
fi
echo "setup: ok (java: $(command -v java), zookeeper: ${ZOOKEEPER_HOME:-/usr/share/java/zookeeper.jar})" >&2
