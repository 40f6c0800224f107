"""Fixtures for the interop tests: a stowage server on a fresh data directory.

STOWAGE_BIN names the binary (default: target/debug/stowage of this checkout).
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def stowage_bin():
    return os.environ.get("STOWAGE_BIN", str(ROOT / "target" / "debug" / "stowage"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running `stowage serve` with its first user's credentials."""

    def __init__(self, port):
        # Removed by stop(); a server that does not start keeps its directory and log.
        self.dir = Path(tempfile.mkdtemp(prefix="stowage-interop-"))
        self.data = self.dir / "data"
        self.port = port
        self.log = open(self.dir / "server.log", "w")
        self.process = subprocess.Popen(
            [stowage_bin(), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(self.data)],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        deadline = time.monotonic() + 30
        for line in self.process.stdout:
            if "listening on" in line:
                break
            if time.monotonic() > deadline:
                break
        else:
            self.process.kill()
            self.process.wait()
            self.log.close()
            log_path = self.dir / "server.log"
            raise RuntimeError(f"stowage did not start on 127.0.0.1:{port}; its log is kept in {log_path}:\n"
                               + log_path.read_text()[-2000:])
        creds = json.loads((self.data / "initial-credentials.json").read_text())
        self.user_id = str(creds["userId"])
        self.token = creds["apiToken"]
        self.org = creds["organizationId"]
        self.url = f"http://127.0.0.1:{port}/api/v2"

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    s = Server(free_port())
    yield s
    s.stop()


@pytest.fixture(scope="module")
def server_5612():
    """The lean CLI with QC_API=local goes to localhost:5612 and nowhere else."""
    s = Server(5612)
    yield s
    s.stop()
