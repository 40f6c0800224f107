"""The example scripts in examples/ run unchanged against a live server."""

import os
import subprocess
import sys

from conftest import ROOT


def test_quickstart_example(server):
    env = {**os.environ, "STOWAGE_URL": server.url, "STOWAGE_USER_ID": server.user_id,
           "STOWAGE_API_TOKEN": server.token, "STOWAGE_ORGANIZATION_ID": server.org}
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    assert lines[0] == f"authenticated as user {server.user_id}"
    assert "listed: ['quickstart/params.json'] usage: 25 B" in lines
    assert "downloaded: ['quickstart/params.json']" in lines
    assert lines[-1] == "deleted quickstart/"
