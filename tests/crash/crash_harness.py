"""Crash harness: concurrent writers, SIGKILL at a random moment, restart, verify; many rounds.

    python tests/crash/crash_harness.py [--rounds 20] [--clients 8] [--seed N] [--bin target/debug/stowage]

Each client owns its keys (files `cN/kI` and a folder `cN/dir/kI`) and runs one operation at a
time: sets of random sizes (0 B to 4 MiB; overwrites of a small set of keys), file deletes and
folder deletes. The model keeps, per key, the last acknowledged state and the outcome of the one
operation that was in flight when the server died (it may or may not have happened). After each
restart it checks:

- every key is in its acknowledged state, or in the in-flight operation's outcome;
- every stored body is whole: a download of everything returns exactly the bytes whose md5 the
  metadata holds (no object holds content that was never acknowledged whole);
- usage (bytes and files) equals the sum over the objects;
- once collection has run, `stowage fsck` finds no orphan blob and no other difference.

Prints the totals and exits non-zero when a problem was found.
"""

import argparse
import base64
import hashlib
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
DELETED = "deleted"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, binary, data, log):
        self.binary, self.data, self.log = binary, data, log
        self.process = None
        self.url = None

    def start(self):
        port = free_port()
        env = {**os.environ, "STOWAGE_GC_INTERVAL_SECS": "1", "STOWAGE_LOG": "stowage=warn"}
        self.process = subprocess.Popen([self.binary, "serve", "--listen", f"127.0.0.1:{port}", "--s3-api-listen", "127.0.0.1:0", "--data-dir",
                                         str(self.data)], stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        for line in self.process.stdout:
            if "listening on" in line:
                break
        else:
            raise RuntimeError("stowage did not start")
        threading.Thread(target=self.process.stdout.read, daemon=True).start()
        self.url = f"http://127.0.0.1:{port}/api/v2"

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


class Api:
    def __init__(self, server, creds):
        self.server = server
        self.user, self.token, self.org = str(creds["userId"]), creds["apiToken"], creds["organizationId"]
        self.http = requests.Session()

    def headers(self):
        ts = str(int(time.time()))
        digest = hashlib.sha256(f"{self.token}:{ts}".encode()).hexdigest()
        return {"Timestamp": ts, "Authorization": "Basic " + base64.b64encode(f"{self.user}:{digest}".encode()).decode()}

    def post(self, endpoint, timeout=60, **kwargs):
        response = self.http.post(f"{self.server.url}/{endpoint}", headers=self.headers(), timeout=timeout, **kwargs)
        response.raise_for_status()
        return response.json()

    def set(self, key, data):
        return self.post("object/set", data={"organizationId": self.org, "key": key}, files={"objectData": data})

    def call(self, endpoint, **fields):
        return self.post(endpoint, json={"organizationId": self.org, **fields})


class Model:
    """Per key: the acknowledged state (md5 or DELETED) and the possible outcomes of operations
    that got no answer (a killed server, or a failure whose outcome is unknown)."""

    def __init__(self):
        self.acked = {}
        self.in_flight = {}
        self.sizes = {}
        self.lock = threading.Lock()
        self.acked_writes = 0

    def begin(self, keys, outcome):
        with self.lock:
            for key in keys:
                self.in_flight.setdefault(key, set()).add(outcome)

    def settle(self, keys, outcome, applied):
        with self.lock:
            for key in keys:
                self.in_flight.pop(key, None)
                if applied:
                    self.acked[key] = outcome
            if applied and outcome != DELETED:
                self.acked_writes += 1


def random_size(rng):
    roll = rng.random()
    if roll < 0.5:
        return rng.randint(0, 4096)
    if roll < 0.9:
        return rng.randint(4096, 256 * 1024)
    return rng.randint(256 * 1024, 4 * 1024 * 1024)


def operation(index, api, model, rng):
    """One operation of client `index` on its own keys: a set (70%), a file delete or a folder
    delete; returns which ("set", "delete", "delete-folder"). Raises what the request raised; the
    operation then stays in flight in the model."""
    files = [f"c{index}/k{i}" for i in range(4)]
    folder = f"c{index}/dir"
    nested = [f"{folder}/k{i}" for i in range(3)]
    roll = rng.random()
    if roll < 0.7:
        key = rng.choice(files + nested)
        body = rng.randbytes(random_size(rng))
        digest = hashlib.md5(body).hexdigest()
        with model.lock:
            model.sizes[digest] = len(body)  # every body sent, whole
        model.begin([key], digest)
        answer = api.set(key, body)
        model.settle([key], digest, answer["success"])
        return "set"
    if roll < 0.85:
        key = rng.choice(files + nested)
        model.begin([key], DELETED)
        answer = api.call("object/delete", key=key)
        model.settle([key], DELETED, answer["success"])
        return "delete"
    model.begin(nested, DELETED)
    answer = api.call("object/delete", key=folder)
    model.settle(nested, DELETED, answer["success"])
    return "delete-folder"


def client_loop(index, api, model, stop, rng):
    while not stop.is_set():
        try:
            operation(index, api, model, rng)
        except (requests.ConnectionError, requests.Timeout, requests.HTTPError):
            return  # the server died mid-request: the operation stays in flight


def all_keys(clients):
    """Every key the clients of `operation` may hold."""
    return [f"c{c}/k{i}" for c in range(clients) for i in range(4)] + \
        [f"c{c}/dir/k{i}" for c in range(clients) for i in range(3)]


def download_all(api, keys):
    if not keys:
        return {}
    job = api.call("object/get", keys=keys)
    url = job["url"]
    while not url:
        time.sleep(0.5)
        url = api.call("object/get", jobId=job["jobId"])["url"]
    archive = zipfile.ZipFile(io.BytesIO(requests.get(url, timeout=300).content))
    return {name: hashlib.md5(archive.read(name)).hexdigest() for name in archive.namelist()}


def verify(api, model, all_keys, binary, data, problems, fsck_wait=20):
    stored = {}
    for key in all_keys:
        answer = api.call("object/properties", key=key)
        actual = answer["metadata"]["md5"] if answer["success"] else DELETED
        if answer["success"]:
            stored[key] = answer["metadata"]
        with model.lock:
            allowed = {model.acked.get(key, DELETED)}
            if key in model.in_flight:
                allowed |= model.in_flight.pop(key)
            if actual not in allowed:
                problems.append(f"{key}: holds {actual}, expected one of {sorted(allowed)}")
            model.acked[key] = actual

    bodies = download_all(api, sorted(stored))
    for key, meta in stored.items():
        if bodies.get(key) != meta["md5"]:
            problems.append(f"{key}: body md5 {bodies.get(key)} differs from metadata {meta['md5']}")
        with model.lock:
            if model.sizes.get(meta["md5"]) != meta["size"]:
                problems.append(f"{key}: content {meta['md5']} ({meta['size']} bytes) is no body a client sent")

    listing = api.call("object/list")
    expected_bytes = sum(m["size"] for m in stored.values())
    if listing["objectStorageUsed"] != expected_bytes:
        problems.append(f"usage {listing['objectStorageUsed']} bytes, objects hold {expected_bytes}")
    orgs = json.loads(subprocess.run([binary, "admin", "--json", "org", "list", "--data-dir", str(data)],
                                     capture_output=True, text=True, check=True).stdout)
    used_files = next(o["usedFiles"] for o in orgs if o["organizationId"] == api.org)
    if used_files != len(stored):
        problems.append(f"usage {used_files} files, {len(stored)} stored")

    # Collection removes replaced bodies and the startup sweep removes orphans of the crash.
    deadline = time.monotonic() + fsck_wait
    while True:
        result = subprocess.run([binary, "fsck", "--json", "--data-dir", str(data)], capture_output=True, text=True)
        report = json.loads(result.stdout)
        if result.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for problem in report["problems"]:
        problems.append(f"fsck: {json.dumps(problem)}")
    return len(stored)


def report(name, summary, work, problems):
    """Prints the totals and every problem, with the end of the server log in `work` when there are
    any; returns whether the run passed."""
    print(f"{name}: {summary}, {len(problems)} problem(s) found")
    for problem in problems:
        print("  " + problem)
    if problems:
        print("server log:", (Path(work) / "server.log").read_text()[-3000:])
    return not problems


def keep_or_remove(name, work, passed):
    """Removes `work` after a clean run; a failed run keeps it and says where it is."""
    if passed:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"{name}: failed; the data directory and server log are kept in {work}", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--bin", default=str(ROOT / "target" / "debug" / "stowage"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    print(f"crash harness: {args.rounds} rounds, {args.clients} clients, seed {args.seed}", flush=True)

    # Removed after a clean run; a failed run (problems found, or an exception) keeps the data
    # directory and the server log, and says where.
    work = tempfile.mkdtemp(prefix="stowage-crash-")
    passed = False
    try:
        data = Path(work) / "data"
        log = open(Path(work) / "server.log", "w")
        server = Server(args.bin, data, log)
        server.start()
        creds = json.loads((data / "initial-credentials.json").read_text())
        model = Model()
        keys = all_keys(args.clients)
        problems, checked = [], 0
        for round_no in range(1, args.rounds + 1):
            stop = threading.Event()
            threads = [threading.Thread(target=client_loop,
                                        args=(c, Api(server, creds), model, stop, random.Random(rng.random())))
                       for c in range(args.clients)]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.3, 2.0))
            server.kill()
            stop.set()
            for t in threads:
                t.join()
            in_flight = len(model.in_flight)
            server.start()
            before = len(problems)
            stored = verify(Api(server, creds), model, keys, args.bin, data, problems)
            checked = model.acked_writes
            print(f"round {round_no:2}: killed with {in_flight} operation(s) in flight; {stored} objects verified; "
                  f"{len(problems) - before} problem(s)", flush=True)
        server.stop()
        log.close()
        passed = report("crash harness", f"{args.rounds} rounds, {checked} acknowledged writes checked", work,
                        problems)
    finally:
        keep_or_remove("crash harness", work, passed)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
