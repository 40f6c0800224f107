#!/usr/bin/env bash
# Runs the shared conformance suite against a freshly started stowage server.
#
#   scripts/conformance.sh [path/to/stowage]
#
# Starts the server on a free port with a fresh data directory, creates the identities that the
# suite's conftest.py lists with `stowage admin`, runs the suite, and stops the server.
#
# The suite is found at $STOWAGE_CONFORMANCE_DIR (an error when that holds no suite), else at
# ../shared/conformance beside the repository; where that does not exist either, this says so in
# one line and exits 0 (CI always has it).
# A failed run keeps its server log and prints where it is; a passed run removes everything it
# made (the data directory, and on PostgreSQL its database).
# Over HTTPS when STOWAGE_TLS_CERT, STOWAGE_TLS_KEY and STOWAGE_TLS_CA are set (tests/tls.rs does).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$here/target/debug/stowage}
python=${STOWAGE_PYTHON:-$here/.venv/bin/python}

if [ -n "${STOWAGE_CONFORMANCE_DIR:-}" ]; then
  suite=$STOWAGE_CONFORMANCE_DIR
  if [ ! -f "$suite/conftest.py" ]; then
    echo "conformance: STOWAGE_CONFORMANCE_DIR=$suite holds no conftest.py; point it at the shared suite's folder" >&2
    exit 1
  fi
else
  suite=$here/../shared/conformance
  if [ ! -f "$suite/conftest.py" ]; then
    echo "conformance: skipped: no shared suite at ../shared/conformance (set STOWAGE_CONFORMANCE_DIR to run it)"
    exit 0
  fi
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/stowage-conformance.XXXXXX")
server_pid=
db=
status=1
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  if [ -n "$db" ]; then psql "$STOWAGE_TEST_POSTGRES_URL" -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; fi
  if [ "$status" -eq 0 ]; then
    rm -rf "$work"
  else
    echo "conformance: failed; the server's log is kept in $work/server.err" >&2
  fi
}
trap cleanup EXIT

port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
data="$work/data"

# STOWAGE_TEST_BACKEND=postgres-s3: PostgreSQL (a fresh database) and an S3-compatible store (a
# fresh prefix), as scripts/postgres.sh and scripts/seaweedfs.sh started them.
backend=${STOWAGE_TEST_BACKEND:-embedded}
# shellcheck source=scripts/test-backend.sh
. "$here/scripts/test-backend.sh"
use_backend conformance stowage_conformance
"$bin" serve --listen "127.0.0.1:$port" --s3-api-listen 127.0.0.1:0 --data-dir "$data" >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
for _ in $(seq 1 100); do
  grep -q "listening on" "$work/server.out" 2>/dev/null && break
  if ! kill -0 "$server_pid" 2>/dev/null; then cat "$work/server.err" >&2; exit 1; fi
  sleep 0.1
done
grep -q "listening on" "$work/server.out" || { echo "conformance: server did not start" >&2; cat "$work/server.err" >&2; exit 1; }

admin() { "$bin" admin --data-dir "$data" --json "$@"; }
field() { "$python" -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

creds="$data/initial-credentials.json"
# HTTPS: with STOWAGE_TLS_CERT and STOWAGE_TLS_KEY set (the server reads them), the suite goes
# over TLS and trusts the CA in STOWAGE_TLS_CA (requests reads REQUESTS_CA_BUNDLE).
scheme=http
if [ -n "${STOWAGE_TLS_CERT:-}" ]; then
  scheme=https
  export REQUESTS_CA_BUNDLE="${STOWAGE_TLS_CA:?STOWAGE_TLS_CA names the CA that signed STOWAGE_TLS_CERT}"
fi
export STOWAGE_URL="$scheme://127.0.0.1:$port/api/v2"
export STOWAGE_USER_ID=$(field userId <"$creds")
export STOWAGE_API_TOKEN=$(field apiToken <"$creds")
export STOWAGE_ORG_ID=$(field organizationId <"$creds")

other=$(admin user create --name other)
export STOWAGE_OTHER_USER_ID=$(echo "$other" | field userId)
export STOWAGE_OTHER_TOKEN=$(echo "$other" | field apiToken)
export STOWAGE_OTHER_ORG_ID=$(admin org create --name other-org | field organizationId)
admin member add --org "$STOWAGE_OTHER_ORG_ID" --user "$STOWAGE_OTHER_USER_ID" --permissions read,write,delete >/dev/null

reader=$(admin user create --name reader)
export STOWAGE_READER_USER_ID=$(echo "$reader" | field userId)
export STOWAGE_READER_TOKEN=$(echo "$reader" | field apiToken)
admin member add --org "$STOWAGE_ORG_ID" --user "$STOWAGE_READER_USER_ID" --permissions read >/dev/null

export STOWAGE_SMALL_ORG_ID=$(admin org create --name small --max-bytes 1000000 --max-files 5 | field organizationId)
admin member add --org "$STOWAGE_SMALL_ORG_ID" --user "$STOWAGE_USER_ID" --permissions read,write,delete >/dev/null

echo "conformance: suite $suite against $STOWAGE_URL ($backend storage)"
status=0
"$python" -m pytest -q -p no:cacheprovider "$suite" "${@:2}" || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- server log (last 50 lines) ---" >&2
  tail -50 "$work/server.err" >&2
fi
exit "$status"
