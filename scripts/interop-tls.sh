#!/usr/bin/env bash
# The real lean CLI over HTTPS, unpatched, to its own default URL https://www.quantconnect.com/api/v2/:
# in a private network and mount namespace, a hosts file bind-mounted over /etc/hosts sends
# www.quantconnect.com to 127.0.0.1, where stowage listens on 443 with a certificate for that
# name signed by a throwaway CA, which the CLI trusts through REQUESTS_CA_BUNDLE. Runs
# tests/interop/test_lean_cli.py there (login, set/list/properties/get/delete, bytes round-trip).
#
#   scripts/interop-tls.sh [path/to/stowage]     (after scripts/interop.sh installed the CLI)
#
# Needs root for `unshare --net --mount`; without it, says so and skips. Nothing outlives the run:
# the namespace ends with its processes, and the certificates live in a temporary folder.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bin=${1:-$here/target/debug/stowage}

if [ "$(id -u)" != 0 ] || ! unshare --net --mount true 2>/dev/null; then
  echo "interop over TLS: skipped (needs root to run unshare --net --mount for a private network namespace)"
  exit 0
fi
[ -x .venv-lean/bin/lean ] || { echo "interop over TLS: the lean CLI is missing; run scripts/interop.sh first" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(
  cd "$work"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -keyout ca.key -out ca.pem -subj "/CN=stowage interop test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout key.pem -out cert.csr -subj "/CN=www.quantconnect.com" 2>/dev/null
  printf '%s\n' "subjectAltName=DNS:www.quantconnect.com" "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" \
    "authorityKeyIdentifier=keyid" "subjectKeyIdentifier=hash" >cert.ext
  openssl x509 -req -in cert.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
    -extfile cert.ext -out cert.pem 2>/dev/null
  printf '127.0.0.1 localhost\n127.0.0.1 www.quantconnect.com\n' >hosts
)

# Inside the namespace: loopback up, the hosts file in place, then the lean tests in TLS mode.
unshare --net --mount --fork -- bash -euc '
  ip link set lo up
  mount --bind "$1/hosts" /etc/hosts
  shift
  exec "$@"
' _ "$work" env STOWAGE_LEAN_TLS_DIR="$work" LEAN_BIN="$here/.venv-lean/bin/lean" STOWAGE_BIN="$bin" \
  .venv/bin/python -m pytest -q -p no:cacheprovider --basetemp="$work/pytest" tests/interop/test_lean_cli.py "${@:2}"
