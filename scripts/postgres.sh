#!/usr/bin/env bash
# A throwaway PostgreSQL server for the metadata tests, listening on 127.0.0.1 only, on a free port.
#
#   scripts/postgres.sh start    start it, or find it running; prints on stdout
#                                STOWAGE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:PORT/postgres
#   scripts/postgres.sh stop     stop it (the data directory is kept for the next start)
#   scripts/postgres.sh url      print that line again (fails when it is not running)
#   scripts/postgres.sh status   say whether it runs
#   scripts/postgres.sh clean    stop it and remove its directory
#
# Every command is idempotent. Messages go to stderr, so `export "$(scripts/postgres.sh start)"`
# works. Installs Debian's `postgresql` package when no server binaries are found (needs root).
#
# Environment:
#   STOWAGE_PG_DIR    where the cluster lives: data/, the socket directory and the log
#                     (default ${TMPDIR:-/tmp}/stowage-postgres)
#   STOWAGE_PG_PORT   a fixed port instead of a free one
#   STOWAGE_PG_FSYNC  on | off (default off: a test cluster trades crash safety for speed)
#
# The cluster trusts every connection (initdb -A trust) and listens on 127.0.0.1 only: it is for
# tests, never for data. PostgreSQL refuses to run as root, so as root it runs as user `postgres`.
set -euo pipefail

base=${STOWAGE_PG_DIR:-${TMPDIR:-/tmp}/stowage-postgres}
data=$base/data
sock=$base/sock
log=$base/postgres.log

say() { printf 'postgres.sh: %s\n' "$*" >&2; }
die() {
  say "$*"
  exit 1
}

# The server binaries: PostgreSQL 15 (Debian 12's) first, else the newest installed.
find_bin() {
  local dir
  for dir in /usr/lib/postgresql/15/bin $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ]; then
      echo "$dir"
      return 0
    fi
  done
  return 1
}

install_server() {
  [ "$(id -u)" = 0 ] || die "no PostgreSQL server binaries found; install Debian's 'postgresql' package (as root: apt-get install -y postgresql)"
  say "installing PostgreSQL (apt-get install -y postgresql)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y postgresql >&2; then
    apt-get update >&2
    apt-get install -y postgresql >&2
  fi
}

# Runs a command as the user that owns the cluster.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    if command -v runuser >/dev/null 2>&1; then
      runuser -u postgres -- "$@"
    else
      su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
    fi
  else
    "$@"
  fi
}

running() {
  [ -f "$data/PG_VERSION" ] && as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1
}

print_url() {
  local port
  port=$(sed -n 4p "$data/postmaster.pid" 2>/dev/null || true)
  [ -n "$port" ] || die "the server runs but its port is unknown ($data/postmaster.pid)"
  echo "STOWAGE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$port/postgres"
}

# A port nothing listens on, outside the ephemeral range that outgoing connections use.
free_port() {
  local start=$((20000 + RANDOM % 10000)) i port
  for i in $(seq 0 199); do
    port=$((start + i))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  return 1
}

prepare() {
  mkdir -p "$base" "$sock"
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die "there is no 'postgres' user to run the server as"
    chown postgres: "$base" "$sock"
    [ -d "$data" ] && chown -R postgres: "$data"
  fi
  as_owner test -w "$base" || die "$base is not writable by the server's user; set STOWAGE_PG_DIR elsewhere"
  local version
  version=$(basename "$(dirname "$bin")")
  if [ -d "$data" ] && [ "$(cat "$data/PG_VERSION" 2>/dev/null || true)" != "$version" ]; then
    # Half made, or made by another major version: it only ever held test databases.
    say "re-creating $data for PostgreSQL $version"
    rm -rf "$data"
  fi
  if [ ! -d "$data" ]; then
    as_owner "$bin/initdb" -D "$data" -A trust -U postgres -E UTF8 --locale=C --no-sync >"$base/initdb.log" 2>&1 ||
      {
        cat "$base/initdb.log" >&2
        rm -rf "$data"
        die "initdb failed"
      }
  fi
}

start() {
  if running; then
    print_url
    return 0
  fi
  prepare
  local fsync=${STOWAGE_PG_FSYNC:-off} attempt port
  for attempt in 1 2 3; do
    port=${STOWAGE_PG_PORT:-$(free_port)} || die "no free port found"
    if as_owner "$bin/pg_ctl" -D "$data" -l "$log" -w -t 60 \
      -o "-p $port -k '$sock' -c listen_addresses=127.0.0.1 -c fsync=$fsync -c max_connections=200" \
      start >&2; then
      say "PostgreSQL runs on 127.0.0.1:$port ($data)"
      print_url
      return 0
    fi
    [ -z "${STOWAGE_PG_PORT:-}" ] || break
    say "start on port $port failed (attempt $attempt)"
  done
  tail -n 30 "$log" >&2 || true
  die "the server did not start; see $log"
}

stop() {
  if running; then
    as_owner "$bin/pg_ctl" -D "$data" -m fast -w -t 60 stop >&2
  else
    say "not running"
  fi
}

command=${1:-}
case "$command" in
  start | stop | url | status | clean) ;;
  *) die "usage: $0 start|stop|url|status|clean" ;;
esac

if ! bin=$(find_bin); then
  case "$command" in
    start)
      install_server
      bin=$(find_bin) || die "PostgreSQL was installed but its binaries are not under /usr/lib/postgresql/*/bin"
      ;;
    url) die "PostgreSQL is not installed" ;;
    *)
      say "PostgreSQL is not installed: nothing runs"
      [ "$command" != clean ] || rm -rf "$base"
      exit 0
      ;;
  esac
fi

case "$command" in
  start) start ;;
  stop) stop ;;
  url) if running; then print_url; else die "not running"; fi ;;
  status) if running; then say "running: $(print_url)"; else say "not running"; fi ;;
  clean)
    stop
    rm -rf "$base"
    ;;
esac
