"""Engine faults on the distributed configuration: 8 writers against one `stowage serve` on
PostgreSQL + SeaweedFS while PostgreSQL restarts, or while SeaweedFS is stopped for 10 s.

    python tests/crash/fault_harness.py [--fault postgres-restart|seaweedfs-stop|all] [--clients 8]
                                        [--pg-down 5] [--s3-down 10] [--timeout 20] [--seed N]
                                        [--bin target/debug/stowage]

The engines are this run's own: a throwaway PostgreSQL cluster (scripts/postgres.sh with its own
STOWAGE_PG_DIR, restarted on the same port) and a SeaweedFS instance (scripts/seaweedfs.sh with
its own STOWAGE_SEAWEEDFS_STATE, paused and resumed on the same data and ports); both are
removed at the end, whatever happened. The test run's shared engines are never touched.

For each fault the clients of the crash harness (tests/crash/crash_harness.py: its operations,
model of acknowledged writes and verification) run throughout, and a monitor polls /readyz. It
checks:

- nothing fails before the fault;
- every request that fails answers 503 with the fixed sentence of the engine that is down (no
  500, no other status, no dropped connection, no request left without an answer past the
  client's timeout), and at least one write got that 503 while the engine was down;
- /readyz answers 503 "unavailable" with the same sentence while the engine is down, and 200
  again after it returns;
- the server recovers by itself (it is never restarted): writes succeed again once the engine
  is back, and none fails after /readyz says ready again;
- afterwards every acknowledged write reads back whole (md5), usage adds up, and `stowage fsck`
  is clean (an upload whose metadata commit had an unknown outcome leaves no orphan behind).

Prints the figures (acknowledged writes, 503s during the outage, the longest request during the
outage, the recovery times) and exits non-zero when a problem was found.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

import crash_harness as crash

ROOT = crash.ROOT
SCRIPTS = ROOT / "scripts"

SENTENCES = {
    "postgres-restart": "Storage unavailable: the metadata store cannot be reached; try again later",
    "seaweedfs-stop": "Storage unavailable: the blob store cannot be reached; try again later",
}


def script(name, command, env, capture=False):
    """Runs scripts/NAME COMMAND; its messages go to our stderr, its stdout is returned."""
    result = subprocess.run([str(SCRIPTS / name), command], env=env, check=True, text=True,
                            stdout=subprocess.PIPE if capture else sys.stderr)
    return result.stdout if capture else None


class Engines:
    """This run's own PostgreSQL and SeaweedFS, bound to 127.0.0.1, removed by `remove`."""

    def __init__(self, work):
        # Directly under the temporary folder: as root, PostgreSQL runs as user `postgres`, which
        # must reach its directory (a folder inside `work`, owner-only, would not do).
        self.pg = {**os.environ, "STOWAGE_PG_DIR": tempfile.mkdtemp(prefix="stowage-fault-pg-")}
        self.s3 = {**os.environ, "STOWAGE_SEAWEEDFS_STATE": str(Path(work) / "seaweedfs-instance")}
        self.settings = {}

    def start(self):
        url = script("postgres.sh", "start", self.pg, capture=True).strip().split("=", 1)[1]
        # Restarts must come back on the same port, where the server looks for the database.
        self.pg["STOWAGE_PG_PORT"] = url.rsplit(":", 1)[1].split("/")[0]
        s3 = dict(line.split("=", 1) for line in script("seaweedfs.sh", "start", self.s3, capture=True).split())
        self.settings = {
            "STOWAGE_METADATA": url,
            "STOWAGE_BLOB_STORE": "s3",
            "STOWAGE_S3_ENDPOINT": s3["STOWAGE_TEST_S3_ENDPOINT"],
            "STOWAGE_S3_BUCKET": s3["STOWAGE_TEST_S3_BUCKET"],
            "STOWAGE_S3_ACCESS_KEY_ID": s3["STOWAGE_TEST_S3_ACCESS_KEY"],
            "STOWAGE_S3_SECRET_ACCESS_KEY": s3["STOWAGE_TEST_S3_SECRET_KEY"],
            "STOWAGE_S3_ALLOW_HTTP": "true",
        }

    def take_down(self, fault):
        if fault == "postgres-restart":
            script("postgres.sh", "stop", self.pg)  # pg_ctl stop -m fast: sessions are cut off
        else:
            script("seaweedfs.sh", "pause", self.s3)

    def bring_back(self, fault):
        """Returns once the engine answers again (same port, same data)."""
        if fault == "postgres-restart":
            script("postgres.sh", "start", self.pg, capture=True)
        else:
            script("seaweedfs.sh", "resume", self.s3)

    def remove(self):
        for name, command, env in (("seaweedfs.sh", "stop", self.s3), ("postgres.sh", "clean", self.pg)):
            try:
                script(name, command, env)
            except subprocess.CalledProcessError as e:
                print(f"fault harness: {name} {command} failed: {e}", file=sys.stderr)


class Recorder:
    """Every request the clients and the monitor made: when it started and ended, and its outcome
    ("ok" with the operation's kind, or the HTTP status and the first error sentence, or the
    exception's name and text)."""

    def __init__(self):
        self.ops = []
        self.probes = []
        self.lock = threading.Lock()

    def add(self, kind, started, ended, outcome, message=""):
        with self.lock:
            (self.ops if kind == "op" else self.probes).append((started, ended, outcome, message))


def failure_of(response):
    try:
        body = response.json()
    except ValueError:
        return response.status_code, response.text[:200]
    errors = body.get("errors") or [body.get("reason", "")]
    return response.status_code, errors[0] if errors else ""


def writer(index, api, model, rng, stop, record):
    while not stop.is_set():
        started = time.monotonic()
        try:
            kind = crash.operation(index, api, model, rng)
            record.add("op", started, time.monotonic(), "ok", kind)
        except requests.HTTPError as e:
            status, message = failure_of(e.response)
            record.add("op", started, time.monotonic(), status, message)
        except (requests.ConnectionError, requests.Timeout) as e:
            record.add("op", started, time.monotonic(), type(e).__name__, str(e)[:200])
            time.sleep(0.2)


def monitor(server, stop, record, timeout):
    """Polls /readyz every 0.2 s."""
    url = server.url.removesuffix("/api/v2") + "/readyz"
    while not stop.is_set():
        started = time.monotonic()
        try:
            response = requests.get(url, timeout=timeout)
            if response.status_code == 200:
                record.add("probe", started, time.monotonic(), "ok")
            else:
                status, message = failure_of(response)
                body = response.json() if status == 503 else {}
                state = body.get("status", "")
                record.add("probe", started, time.monotonic(), status, f"{state}: {message}")
        except (requests.ConnectionError, requests.Timeout) as e:
            record.add("probe", started, time.monotonic(), type(e).__name__, str(e)[:200])
        stop.wait(0.2)


def run_fault(fault, args, engines, server, creds, model, rng, problems):
    """Writers and the monitor through one outage of `fault`; returns the figures."""
    sentence = SENTENCES[fault]
    down_for = args.pg_down if fault == "postgres-restart" else args.s3_down
    record, stop = Recorder(), threading.Event()
    acked_before = model.acked_writes
    threads = []
    for c in range(args.clients):
        api = crash.Api(server, creds)
        api.post = with_timeout(api.post, args.timeout)
        threads.append(threading.Thread(target=writer, args=(c, api, model, random.Random(rng.random()), stop, record)))
    threads.append(threading.Thread(target=monitor, args=(server, stop, record, args.timeout)))
    for t in threads:
        t.start()

    time.sleep(3)
    t_fault = time.monotonic()
    engines.take_down(fault)
    t_down = time.monotonic()
    time.sleep(down_for)
    engines.bring_back(fault)
    t_back = time.monotonic()

    # Recovered: a set that started after the engine came back succeeded (deletes need no blob
    # store), and /readyz said ready.
    deadline = t_back + 60
    recovered = ready = None
    while time.monotonic() < deadline and (recovered is None or ready is None):
        time.sleep(0.1)
        with record.lock:
            recovered = min((e for s, e, o, m in record.ops if s >= t_back and o == "ok" and m == "set"),
                            default=None)
            ready = min((e for s, e, o, _ in record.probes if s >= t_back and o == "ok"), default=None)
    time.sleep(3)  # writes go on after the recovery
    stop.set()
    for t in threads:
        t.join()

    def say(problem):
        problems.append(f"{fault}: {problem}")

    if recovered is None:
        say("no set succeeded within 60 s after the engine came back")
    if ready is None:
        say("/readyz did not answer 200 within 60 s after the engine came back")
    outage_503 = 0
    for started, ended, outcome, message in record.ops:
        if outcome == "ok":
            continue
        if ended < t_fault:
            say(f"a request failed before the fault: {outcome} {message!r}")
        elif outcome != 503 or message != sentence:
            say(f"a request failed with {outcome} {message!r} after {ended - started:.1f} s "
                f"(expected 503 {sentence!r})")
        elif ready is not None and started > ready:
            say(f"a request failed after /readyz said ready again: 503 {message!r}")
        if outcome == 503 and started < t_back and ended > t_down:
            outage_503 += 1
    if outage_503 == 0:
        say("no request got a 503 while the engine was down: the outage was not observed")
    during = [(e - s) for s, e, _, _ in record.ops if s < t_back and e > t_fault]
    longest = max(during, default=0.0)

    not_ready = 0
    for started, ended, outcome, message in record.probes:
        if outcome == "ok":
            continue
        # A probe under way when the engine went down may fail too.
        if outcome == 503 and message == f"unavailable: {sentence}" and ended >= t_fault:
            if started < t_back:
                not_ready += 1
        else:
            say(f"/readyz answered {outcome} {message!r}")
    if not_ready == 0:
        say("/readyz never answered 503 while the engine was down")

    acked = model.acked_writes - acked_before
    return {
        "requests": len(record.ops),
        "acked": acked,
        "outage_503": outage_503,
        "longest": longest,
        "not_ready": not_ready,
        "outage": t_back - t_down,
        "recovery": None if recovered is None else recovered - t_back,
        "ready": None if ready is None else ready - t_back,
    }


def orphans_now(binary, data):
    """Orphan bodies `stowage fsck` finds at this moment."""
    result = subprocess.run([binary, "fsck", "--json", "--data-dir", str(data)], capture_output=True, text=True)
    return sum(1 for p in json.loads(result.stdout)["problems"] if p["kind"] == "orphanBlob")


def with_timeout(post, timeout):
    """The client's timeout on every request."""
    return lambda endpoint, **kwargs: post(endpoint, **{"timeout": timeout, **kwargs})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fault", choices=["postgres-restart", "seaweedfs-stop", "all"], default="all")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--pg-down", type=float, default=5, help="seconds PostgreSQL stays stopped")
    parser.add_argument("--s3-down", type=float, default=10, help="seconds SeaweedFS stays stopped")
    parser.add_argument("--timeout", type=float, default=20, help="the clients' timeout per request, in seconds")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--bin", default=str(ROOT / "target" / "debug" / "stowage"))
    args = parser.parse_args()
    faults = ["postgres-restart", "seaweedfs-stop"] if args.fault == "all" else [args.fault]
    rng = random.Random(args.seed)
    print(f"fault harness: {', '.join(faults)}; {args.clients} clients, seed {args.seed}", flush=True)

    # Removed after a clean run; a failed run keeps the server's data directory and log.
    work = tempfile.mkdtemp(prefix="stowage-fault-")
    engines = Engines(work)
    passed, server = False, None
    try:
        engines.start()
        os.environ.update(engines.settings)  # for the server, and for `stowage admin` and `fsck`
        data = Path(work) / "data"
        log = open(Path(work) / "server.log", "w")
        server = crash.Server(args.bin, data, log)
        server.start()
        creds = json.loads((data / "initial-credentials.json").read_text())
        model, problems = crash.Model(), []
        keys = crash.all_keys(args.clients)
        for fault in faults:
            before = len(problems)
            figures = run_fault(fault, args, engines, server, creds, model, rng, problems)
            orphans, settled = orphans_now(args.bin, data), time.monotonic()
            # Uploads cut off by the outage leave bodies whose commit had an unknown outcome; the
            # server deletes those nothing names 30 s after the failure (service/unsettled.rs).
            stored = crash.verify(crash.Api(server, creds), model, keys, args.bin, data, problems, fsck_wait=60)
            settled = time.monotonic() - settled
            recovery = "never" if figures["recovery"] is None else f"{figures['recovery']:.1f} s"
            ready = "never" if figures["ready"] is None else f"{figures['ready']:.1f} s"
            print(f"{fault}: engine down {figures['outage']:.1f} s; {figures['requests']} requests, "
                  f"{figures['acked']} writes acknowledged; {figures['outage_503']} requests answered 503 during the outage; "
                  f"longest request during the outage {figures['longest']:.1f} s; /readyz not ready "
                  f"{figures['not_ready']} times; first set after the engine returned in {recovery}, "
                  f"/readyz ready in {ready}; {orphans} orphan bodies right after (uploads cut off mid-commit), "
                  f"fsck clean {settled:.0f} s later; {stored} objects verified; {len(problems) - before} problem(s)",
                  flush=True)
        server.stop()
        log.close()
        passed = crash.report("fault harness", f"{model.acked_writes} acknowledged writes checked", work, problems)
    finally:
        if server is not None and server.process.poll() is None:
            server.stop()
        engines.remove()
        crash.keep_or_remove("fault harness", work, passed)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
