#!/usr/bin/env bash
# The baton demo: a live rollout on this machine.
#
# Starts a local ZooKeeper, an artifact server on 127.0.0.1, N sidecars (default 5)
# each running the demo service (an HTTP server that reports its version), stages
# version 1 (hosts install it), then stages version 2 and shows the rollout with
# `deployctl watch`. Ctrl-C stops everything it started.
#
#   scripts/demo.sh [--hosts N] [--non-interactive] [--keep]
#
# --non-interactive: exit 0 once the rollout of version 2 completed (CI smoke test).
# --keep: leave everything running after the rollout, until Ctrl-C (default when interactive).
set -euo pipefail
cd "$(dirname "$0")/.."

HOSTS=5
INTERACTIVE=1
while (($#)); do
  case "$1" in
    --hosts) HOSTS="$2"; shift 2 ;;
    --hosts=*) HOSTS="${1#*=}"; shift ;;
    --non-interactive|--ci) INTERACTIVE=0; shift ;;
    --keep) INTERACTIVE=1; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$HOSTS" =~ ^[0-9]+$ ]] && ((HOSTS >= 2 && HOSTS <= 50)) || { echo "demo: --hosts must be 2..50" >&2; exit 2; }

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "setting up (ZooKeeper from Debian's packages if missing) and building"
scripts/setup.sh
cargo build --workspace --bins --quiet
BIN="$PWD/target/debug"

WORK="$(mktemp -d /tmp/baton-demo.XXXXXX)"
PIDS=()
cleanup() {
  set +e
  echo
  echo "demo: stopping everything it started (logs kept in $WORK)"
  # After the sidecar upgrade the sidecars run as new images, named in their lock files.
  for lock in "$WORK"/web-*/data/sidecar.lock; do
    [[ -f "$lock" ]] && PIDS+=("$(cat "$lock")")
  done
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill -TERM "${PIDS[i]}" 2>/dev/null; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

say "starting ZooKeeper"
ZK_PORT=$(free_port)
mkdir -p "$WORK/zk/data"
cat > "$WORK/zk/zoo.cfg" <<CFG
tickTime=500
dataDir=$WORK/zk/data
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=*
CFG
if [[ -n "${ZOOKEEPER_HOME:-}" ]]; then CP="$ZOOKEEPER_HOME/conf:$ZOOKEEPER_HOME/lib/*"; else CP="/etc/zookeeper/conf:/usr/share/java/*"; fi
java -Xmx256m -cp "$CP" org.apache.zookeeper.server.quorum.QuorumPeerMain "$WORK/zk/zoo.cfg" > "$WORK/zk/zk.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 300); do
  if (exec 3<>/dev/tcp/127.0.0.1/$ZK_PORT && printf ruok >&3 && grep -q imok <&3) 2>/dev/null; then break; fi
  sleep 0.1
done
export BATON_ZK="127.0.0.1:$ZK_PORT"
echo "ZooKeeper serves on $BATON_ZK"

say "writing the demo releases and starting the artifact server"
mkdir -p "$WORK/artifacts"
for v in 1 2 3-broken; do
  mkdir -p "$WORK/artifacts/$v"
  flags=""; [[ "$v" == *broken ]] && flags="--health-fail"
  printf '#!/bin/sh\nexec %s --version %s %s\n' "$BIN/baton-demo-service" "$v" "$flags" > "$WORK/artifacts/$v/demo"
done
HTTP_PORT=$(free_port)
python3 -m http.server "$HTTP_PORT" --bind 127.0.0.1 --directory "$WORK/artifacts" > "$WORK/http.log" 2>&1 &
PIDS+=($!)
URL="http://127.0.0.1:$HTTP_PORT"
echo "artifacts at $URL/"

say "starting $HOSTS sidecars"
PORTS=()
"$BIN/deployctl" init > /dev/null
for i in $(seq "$HOSTS"); do
  port=$(free_port)
  PORTS+=("$port")
  mkdir -p "$WORK/web-$i"
  cat > "$WORK/web-$i/sidecar.toml" <<CFG
[zookeeper]
connect = "$BATON_ZK"
session_timeout = "4s"

[host]
id = "web-$i"
data_dir = "$WORK/web-$i/data"

[[service]]
name = "demo"
run = ["./demo"]
env = { PORT = "$port" }
health = { http = "http://127.0.0.1:$port/health", interval = "200ms" }
on_shutdown = "stop"
CFG
  RUST_LOG=info "$BIN/sidecar" --config "$WORK/web-$i/sidecar.toml" > "$WORK/web-$i/sidecar.log" 2>&1 &
  PIDS+=($!)
  echo "web-$i: service on http://127.0.0.1:$port/, log $WORK/web-$i/sidecar.log"
done

say "staging version 1: every host installs it"
# --force: the sidecars may still be connecting (they register the service then).
"$BIN/deployctl" stage demo --version 1 --file "$WORK/artifacts/1/demo" --url "$URL/1/demo" --quorum 0 --max-parallel "$HOSTS" --force 2>/dev/null >/dev/null
online_at() { # online_at VERSION: hosts online at VERSION
  "$BIN/deployctl" status demo --json 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(sum(len(g["hosts"]) for s in d["services"] for g in s.get("hosts_by_version", []) if g["version"] == sys.argv[1]))' "$1" || echo 0
}
for _ in $(seq 600); do
  n=$(online_at 1); printf '\r%s of %s hosts online at version 1' "$n" "$HOSTS"
  ((n == HOSTS)) && break
  sleep 0.2
done
echo
((n == HOSTS)) || { echo "demo: hosts did not come online; see $WORK/web-*/sidecar.log" >&2; exit 1; }

say "staging version 2: a rolling upgrade, at least 60% of hosts online, one host at a time, 1s bake"
"$BIN/deployctl" stage demo --version 2 --file "$WORK/artifacts/2/demo" --url "$URL/2/demo" --quorum 60% --bake 1s
"$BIN/deployctl" watch demo --timeout 300s

say "deployctl status demo"
"$BIN/deployctl" status demo --hosts

# The sidecar upgrades itself through the same rollout: a copy of the built binary
# under a new version is a real upgrade for the protocol. Every host's demo service
# is asked for its version all along; none may miss an answer.
SC_VERSION="$("$BIN/sidecar" --version | awk '{print $2}')+demo.2"
mkdir -p "$WORK/artifacts/sidecar-2"
cp "$BIN/sidecar" "$WORK/artifacts/sidecar-2/sidecar"
say "staging sidecar $SC_VERSION: the sidecars upgrade themselves, one host at a time, while the demo service answers"
: > "$WORK/answers"
(
  while [[ ! -e "$WORK/answers.stop" ]]; do
    for port in "${PORTS[@]}"; do
      if curl -fsS -m 1 "http://127.0.0.1:$port/version" > /dev/null 2>&1; then echo ok; else echo "missed $port"; fi
    done >> "$WORK/answers"
    sleep 0.1
  done
) &
ASKER=$!
"$BIN/deployctl" stage baton-sidecar --version "$SC_VERSION" --file "$WORK/artifacts/sidecar-2/sidecar" \
  --url "$URL/sidecar-2/sidecar" --quorum 60% --bake 1s
"$BIN/deployctl" watch baton-sidecar --timeout 300s
touch "$WORK/answers.stop"; wait "$ASKER"
asked=$(wc -l < "$WORK/answers"); missed=$(grep -c missed "$WORK/answers" || true)
echo "the demo service answered $((asked - missed)) of $asked requests during the sidecar upgrade"
"$BIN/deployctl" status baton-sidecar --hosts
((missed == 0)) || { echo "demo: the demo service missed $missed answers during the sidecar upgrade" >&2; exit 1; }

say "what zkCli.sh shows"
ZKCLI=/usr/share/zookeeper/bin/zkCli.sh
[[ -n "${ZOOKEEPER_HOME:-}" ]] && ZKCLI="$ZOOKEEPER_HOME/bin/zkCli.sh"
for cmd in "ls -R /dc" "get /dc/staging/demo" "get /dc/current/demo/web-1"; do
  echo "\$ zkCli.sh -server $BATON_ZK $cmd"
  "$ZKCLI" -server "$BATON_ZK" $cmd 2>/dev/null | grep -v -E '^(Connecting|WATCHER|WatchedEvent|$|log4j|SLF4J|JLine)' || true
done

if ((INTERACTIVE == 0)); then
  say "the rollout completed"
  exit 0
fi

cat <<NEXT

== try next (in another terminal)
  export BATON_ZK=$BATON_ZK PATH=$BIN:\$PATH
  curl http://127.0.0.1:<port>/version                 # a host's version (ports above)
  deployctl status demo --hosts
  deployctl history demo
  # a broken release: its health check fails, the rollout halts after one host
  deployctl stage demo --version 3-broken --file $WORK/artifacts/3-broken/demo --url $URL/3-broken/demo --health-deadline 3s
  deployctl watch demo                                  # exits non-zero: halted, with the reason
  deployctl rollback demo                               # back to the version most hosts run
  # kill a host mid-rollout: its slot is kept until it comes back
  pkill -9 -f web-2/sidecar.toml
  $ZKCLI -server $BATON_ZK ls /dc/current/demo

Everything keeps running until Ctrl-C.
NEXT
while true; do sleep 3600; done
