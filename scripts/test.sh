#!/usr/bin/env bash
# The whole test suite, from a fresh clone: formatting and lints, unit and integration tests,
# then the shared conformance suite and the S3 API's tests against the built binary. Installs what the tests need
# (Python packages into ./.venv) on the way.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

step() { printf '\n== %s ==\n' "$*"; }

# Every step uses free ports chosen at run time, except the interop step: the lean CLI with
# QC_API=local only ever talks to localhost:5612. Check that one first, and name what holds it.
step "ports"
if ! python3 -c 'import socket, sys; s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1])))' 5612 2>/dev/null; then
  holder=$( (command -v ss >/dev/null && ss -Hltnp 'sport = :5612' 2>/dev/null | grep -o 'users:(([^)]*))' | head -1) || true)
  echo "port 5612 on 127.0.0.1 is in use${holder:+ by $holder}; the interop step needs it (the lean CLI talks to localhost:5612 only)." >&2
  echo "Stop that program (a \`stowage serve\` from the quick start?) and run scripts/test.sh again." >&2
  exit 1
fi
echo "127.0.0.1:5612 is free (the other steps pick free ports themselves)"

step "python environment (.venv)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings

step "cargo build"
cargo build --locked

step "systemd unit: systemd-analyze verify packaging/stowage.service"
scripts/systemd-verify.sh target/debug/stowage

step "PostgreSQL and SeaweedFS on 127.0.0.1 (for the distributed configuration)"
trap 'scripts/seaweedfs.sh stop >/dev/null 2>&1 || true; scripts/postgres.sh stop >/dev/null 2>&1 || true' EXIT
pg_url_line=$(scripts/postgres.sh start)   # a plain assignment, so that set -e sees a failed start
export "$pg_url_line"
s3_env=$(scripts/seaweedfs.sh start)
set -a; eval "$s3_env"; set +a

step "cargo test: unit tests (both backends) and integration tests (embedded storage)"
cargo test --locked

step "cargo test: integration tests against PostgreSQL + S3 (SeaweedFS)"
STOWAGE_TEST_BACKEND=postgres-s3 cargo test --locked --test '*'

step "conformance suite (embedded storage)"
scripts/conformance.sh target/debug/stowage

step "conformance suite (PostgreSQL + S3)"
STOWAGE_TEST_BACKEND=postgres-s3 scripts/conformance.sh target/debug/stowage

step "S3 API: boto3 suite (embedded)"
scripts/s3-tests.sh target/debug/stowage suite

step "S3 API: boto3 suite (PostgreSQL + S3)"
STOWAGE_TEST_BACKEND=postgres-s3 scripts/s3-tests.sh target/debug/stowage suite

step "S3 API: boto3 suite over HTTPS (embedded; a throwaway CA)"
STOWAGE_TEST_TLS=1 scripts/s3-tests.sh target/debug/stowage suite

step "S3 API: real clients (aws-cli, rclone, s5cmd, pyarrow, pandas)"
scripts/s3-tests.sh target/debug/stowage clients

step "S3 API: s3s-e2e (built once into .tools/s3s-e2e)"
scripts/s3-tests.sh target/debug/stowage e2e

step "web console in a real headless Chromium (Debian's chromium + Playwright)"
scripts/browser.sh target/debug/stowage

step "crash harness: SIGKILL under concurrent load, restart, verify (20 rounds)"
.venv/bin/python tests/crash/crash_harness.py --rounds 20 --clients 8 --bin target/debug/stowage

step "engine faults: PostgreSQL restarted, SeaweedFS stopped 10 s, under 8 writers (the step's own instances)"
.venv/bin/python tests/crash/fault_harness.py --clients 8 --bin target/debug/stowage

step "interop: the real lean CLI and the example scripts"
scripts/interop.sh target/debug/stowage

step "interop over TLS: the lean CLI to its default https URL, in a private network namespace"
scripts/interop-tls.sh target/debug/stowage

printf '\nall tests passed\n'
