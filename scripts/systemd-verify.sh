#!/usr/bin/env bash
# Checks packaging/stowage.service with `systemd-analyze verify` (works without systemd running).
# verify wants ExecStart's binary to exist, so a temporary copy of the unit points at the built
# one. Installs Debian's `systemd` package for systemd-analyze when it is missing (as root).
#
#   scripts/systemd-verify.sh [path/to/stowage]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${1:-$here/target/debug/stowage}")
if ! command -v systemd-analyze >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || { echo "systemd-verify: systemd-analyze is missing; as root: apt-get install -y systemd" >&2; exit 1; }
  echo "systemd-verify: installing systemd-analyze (apt-get install -y systemd)" >&2
  apt-get install -y --no-install-recommends systemd >&2 || { apt-get update >&2 && apt-get install -y --no-install-recommends systemd >&2; }
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed "s|^ExecStart=/usr/local/bin/stowage |ExecStart=$bin |" "$here/packaging/stowage.service" >"$work/stowage.service"
grep -q "^ExecStart=$bin " "$work/stowage.service" || { echo "systemd-verify: ExecStart not found in the unit" >&2; exit 1; }
# verify exits 0 on warnings too: any output is a finding.
findings=$(systemd-analyze verify "$work/stowage.service" 2>&1) || { echo "$findings" >&2; exit 1; }
if [ -n "$findings" ]; then echo "$findings" >&2; exit 1; fi
echo "systemd-verify: packaging/stowage.service is clean"
