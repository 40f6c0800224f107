#!/usr/bin/env bash
# Interop tests with real clients: QuantConnect's `lean` CLI, the requests-only example script,
# run against freshly started stowage servers.
#
# Installs the lean CLI into ./.venv-lean (git-ignored, reused between runs) and applies the
# offline step of the spec's section 7 (an empty modules-1.14.json beside the CLI's main.py).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
LEAN_VERSION=${LEAN_VERSION:-1.0.230}

if [ ! -x .venv-lean/bin/lean ] || ! .venv-lean/bin/python -m pip show lean 2>/dev/null | grep -q "^Version: $LEAN_VERSION$"; then
  python3 -m venv .venv-lean
  .venv-lean/bin/python -m pip install --quiet --disable-pip-version-check "lean==$LEAN_VERSION"
fi
lean_dir=$(.venv-lean/bin/python -c 'import lean, os; print(os.path.dirname(lean.__file__))')
[ -f "$lean_dir/modules-1.14.json" ] || echo '{"modules": []}' >"$lean_dir/modules-1.14.json"

export LEAN_BIN="$here/.venv-lean/bin/lean"
export STOWAGE_BIN=${1:-$here/target/debug/stowage}
.venv/bin/python -m pytest -q -p no:cacheprovider tests/interop "${@:2}"
