#!/usr/bin/env bash
# Writes a one-file demo release: DIR/VERSION/demo, a script that runs the demo
# service (at BIN, default /usr/local/bin/baton-demo-service, as in the Docker image).
#   scripts/make-demo-artifact.sh VERSION DIR [BIN]
set -euo pipefail
version="${1:?usage: make-demo-artifact.sh VERSION DIR [BIN]}"
dir="${2:?usage: make-demo-artifact.sh VERSION DIR [BIN]}"
bin="${3:-/usr/local/bin/baton-demo-service}"
mkdir -p "$dir/$version"
printf '#!/bin/sh\nexec %s --version %s\n' "$bin" "$version" > "$dir/$version/demo"
chmod +x "$dir/$version/demo"
echo "$dir/$version/demo"
