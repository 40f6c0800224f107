"""Fixtures for the interop tests: a stowage server on a fresh data directory.

STOWAGE_BIN names the binary (default: target/debug/stowage of this checkout).
STOWAGE_LEAN_TLS_DIR (set by scripts/interop-tls.sh inside its private network namespace) names a
folder with cert.pem, key.pem (for www.quantconnect.com) and ca.pem: the lean CLI's server then
listens with TLS on 127.0.0.1:443, where the CLI's default https URL leads in that namespace.
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

    def __init__(self, port, tls_dir=None):
        # Removed by stop(); a server that does not start keeps its directory and log.
        self.dir = Path(tempfile.mkdtemp(prefix="stowage-interop-"))
        self.data = self.dir / "data"
        self.port = port
        self.log = open(self.dir / "server.log", "w")
        env = dict(os.environ)
        if tls_dir:
            env["STOWAGE_TLS_CERT"] = str(Path(tls_dir) / "cert.pem")
            env["STOWAGE_TLS_KEY"] = str(Path(tls_dir) / "key.pem")
        self.process = subprocess.Popen(
            [stowage_bin(), "serve", "--listen", f"127.0.0.1:{port}", "--s3-api-listen", "127.0.0.1:0", "--data-dir", str(self.data)],
            stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
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
        self.url = f"{'https' if tls_dir else 'http'}://127.0.0.1:{port}/api/v2"

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


LEAN_TLS_DIR = os.environ.get("STOWAGE_LEAN_TLS_DIR", "")


@pytest.fixture(scope="module")
def lean_server():
    """The server the lean CLI reaches on its own: with QC_API=local it goes to localhost:5612 and
    nowhere else; over TLS (STOWAGE_LEAN_TLS_DIR) to https://www.quantconnect.com, which the
    namespace's hosts file points at 127.0.0.1:443."""
    s = Server(443, LEAN_TLS_DIR) if LEAN_TLS_DIR else Server(5612)
    yield s
    s.stop()


def lean_env(home):
    """The environment the lean CLI runs in: QC_API=local over plain HTTP, or its default https URL
    with the test CA trusted through REQUESTS_CA_BUNDLE."""
    env = {**os.environ, "HOME": str(home), "PYTHONIOENCODING": "utf-8", "COLUMNS": "200"}
    if LEAN_TLS_DIR:
        env.pop("QC_API", None)
        env["REQUESTS_CA_BUNDLE"] = str(Path(LEAN_TLS_DIR) / "ca.pem")
    else:
        env["QC_API"] = "local"
    return env
