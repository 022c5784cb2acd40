#!/usr/bin/env bash
# CI: builds the Debian package and installs it on this machine with dpkg -i, checks
# what it installed (binaries, unit, sample config, man pages, completions), runs
# `sidecar check` on the sample config, then removes it again (dpkg --purge). The
# package enables and starts nothing, so installing it disturbs no running service.
# Without root it unpacks the package with dpkg -x and checks it there instead.
#   scripts/deb-test.sh [--profile dev|release]   (default dev: the debug builds)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${2:-dev}
start=$SECONDS
deb=$(scripts/deb.sh --profile "$profile")
echo "deb-test: built $deb in $((SECONDS - start))s" >&2
want=(/usr/bin/sidecar /usr/bin/deployctl /lib/systemd/system/baton-sidecar.service /etc/baton/sidecar.toml
      /usr/share/man/man1/deployctl.1.gz /usr/share/man/man1/deployctl-stage.1.gz /usr/share/man/man1/sidecar.1.gz
      /usr/share/bash-completion/completions/deployctl /usr/share/bash-completion/completions/sidecar
      /usr/share/zsh/vendor-completions/_deployctl /usr/share/fish/vendor_completions.d/deployctl.fish)
contents=$(dpkg --contents "$deb")
for f in "${want[@]}"; do
  grep -q " \.$f\( \|$\)" <<<"$contents" || { echo "deb-test: $deb lacks $f" >&2; echo "$contents" >&2; exit 1; }
done
grep -q /etc/baton/sidecar.toml < <(dpkg-deb -I "$deb" conffiles) || { echo "deb-test: the sample config is no conffile" >&2; exit 1; }
if [[ $(id -u) -ne 0 ]]; then
  root=$(mktemp -d); trap 'rm -rf "$root"' EXIT
  dpkg -x "$deb" "$root"
  "$root/usr/bin/sidecar" check --config "$root/etc/baton/sidecar.toml"
  echo "deb-test: ok without root (dpkg -x) in $((SECONDS - start))s" >&2
  exit 0
fi
if dpkg -s baton >/dev/null 2>&1; then
  echo "deb-test: a baton package is already installed here; not touching it" >&2
  exit 1
fi
trap 'dpkg --purge baton >/dev/null 2>&1 || true' EXIT
dpkg -i "$deb" >&2
sidecar check --config /etc/baton/sidecar.toml
deployctl --version
grep -q '^ExecStart=/usr/bin/sidecar --config /etc/baton/sidecar.toml$' /lib/systemd/system/baton-sidecar.service
man -w deployctl >/dev/null && man -w sidecar-check >/dev/null
dpkg --purge baton >&2
trap - EXIT
[[ ! -e /usr/bin/sidecar && ! -e /etc/baton/sidecar.toml ]] || { echo "deb-test: files left after dpkg --purge" >&2; exit 1; }
echo "deb-test: ok: installed, checked and purged in $((SECONDS - start))s" >&2
