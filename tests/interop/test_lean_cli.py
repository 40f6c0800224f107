"""The real `lean` CLI (PyPI package `lean`) against stowage, as users run it with QC_API=local,
or over HTTPS to its default URL (scripts/interop-tls.sh; see conftest.lean_server).

Needs the CLI in a virtual environment: LEAN_BIN names its `lean` executable (scripts/interop.sh
installs it into ./.venv-lean and applies the offline step of the spec's section 7).
"""

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import LEAN_TLS_DIR, lean_env

LEAN = os.environ.get("LEAN_BIN", "")

pytestmark = pytest.mark.skipif(not LEAN, reason="LEAN_BIN is not set (scripts/interop.sh sets it)")


@pytest.fixture(scope="module")
def lean(lean_server, tmp_path_factory):
    """Runs `lean` logged in to the server, in a project folder whose lean.json names the org."""
    home = tmp_path_factory.mktemp("home")
    work = tmp_path_factory.mktemp("project")
    env = lean_env(home)

    def run(*args, check=True):
        result = subprocess.run([LEAN, *args], cwd=work, env=env, capture_output=True, text=True, timeout=300)
        if check:
            assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    login = run("login", "-u", lean_server.user_id, "-t", lean_server.token)
    assert "Successfully logged in" in login.stdout, login.stdout
    (work / "lean.json").write_text(json.dumps({"organization-id": lean_server.org}))
    run.work = work
    return run


def md5(data):
    return hashlib.md5(data).hexdigest()


def test_login_with_a_wrong_token_fails(lean_server, tmp_path):
    env = lean_env(tmp_path)
    result = subprocess.run([LEAN, "login", "-u", lean_server.user_id, "-t", "0" * 64], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "Successfully logged in" not in result.stdout


@pytest.mark.skipif(not LEAN_TLS_DIR, reason="only over TLS (scripts/interop-tls.sh)")
def test_over_tls_the_cli_refuses_a_certificate_it_does_not_trust(lean_server, tmp_path):
    env = lean_env(tmp_path)
    del env["REQUESTS_CA_BUNDLE"]
    result = subprocess.run([LEAN, "login", "-u", lean_server.user_id, "-t", lean_server.token], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "Detected SSL error" in result.stdout + result.stderr, result.stdout + result.stderr


def test_text_file_round_trip(lean):
    source = lean.work / "hello.txt"
    source.write_bytes(b"Hello, world!")
    out = lean("cloud", "object-store", "set", "interop/hello.txt", str(source)).stdout
    assert "interop/hello.txt" in out

    props = lean("cloud", "object-store", "properties", "interop/hello.txt").stdout
    assert "13" in props and "interop/hello.txt" in props and "Hello" in props, props

    listing = lean("cloud", "object-store", "list", "interop").stdout
    assert "interop/hello.txt" in listing and "13" in listing and "False" in listing, listing

    dest = lean.work / "dl-text"
    lean("cloud", "object-store", "get", "interop/hello.txt", "--destination-folder", str(dest))
    assert (dest / "interop" / "hello.txt").read_bytes() == b"Hello, world!"
    assert not list(dest.glob("*.zip")), "the CLI removes its temporary zip"

    lean("cloud", "object-store", "delete", "interop/hello.txt")
    gone = lean("cloud", "object-store", "properties", "interop/hello.txt", check=False)
    assert gone.returncode != 0
    assert "Object not found" in gone.stdout + gone.stderr


def test_binary_file_of_a_few_megabytes(lean):
    blob = os.urandom(3 * 1024 * 1024 + 17)
    source = lean.work / "weights.bin"
    source.write_bytes(blob)
    lean("cloud", "object-store", "set", "interop-bin/weights.bin", str(source))
    props = lean("cloud", "object-store", "properties", "interop-bin/weights.bin").stdout
    assert str(len(blob)) in props, props
    dest = lean.work / "dl-bin"
    lean("cloud", "object-store", "get", "interop-bin/weights.bin", "--destination-folder", str(dest))
    assert md5((dest / "interop-bin" / "weights.bin").read_bytes()) == md5(blob)
    lean("cloud", "object-store", "delete", "interop-bin/weights.bin")


def test_nested_folder_get_and_delete(lean):
    files = {
        "interop-tree/a.json": b'{"a": 1}',
        "interop-tree/sub/b.csv": b"x,y\n1,2\n",
        "interop-tree/sub/deeper/c.bin": bytes(range(256)) * 64,
    }
    for key, data in files.items():
        path = lean.work / key.replace("/", "_")
        path.write_bytes(data)
        lean("cloud", "object-store", "set", key, str(path))

    root = lean("cloud", "object-store", "list").stdout
    assert "/interop-tree" in root and "True" in root, root
    sub = lean("cloud", "object-store", "list", "interop-tree/sub").stdout
    assert "interop-tree/sub/deeper" in sub and "interop-tree/sub/b.csv" in sub, sub

    dest = lean.work / "dl-tree"
    lean("cloud", "object-store", "get", "interop-tree", "--destination-folder", str(dest))
    for key, data in files.items():
        assert (dest / key).read_bytes() == data, key

    lean("cloud", "object-store", "delete", "interop-tree")
    after = lean("cloud", "object-store", "list").stdout
    assert "interop-tree" not in after, after
    missing = lean("cloud", "object-store", "properties", "interop-tree/sub/b.csv", check=False)
    assert missing.returncode != 0
