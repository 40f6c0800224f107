"""Fixtures of the S3 suite. scripts/s3-tests.sh starts the server and creates, with `stowage
admin`, the identities below; it passes them as AWS_* (the server admin's full key) and
STOWAGE_S3_SUITE_* variables:

  BIN, DATA_DIR              the stowage binary and the server's data directory (for `stowage admin`)
  QC_URL                     the QuantConnect API's base URL (http://127.0.0.1:P/api/v2)
  ADMIN_USER_ID, ADMIN_TOKEN the first user (server admin) and its API token
  RESEARCH_ORG               an organization with bucket name `research`; every user below belongs to it
  READONLY_KEY/_SECRET       the server admin's read-only key
  LIMITED_KEY/_SECRET        the server admin's key limited to `research`
  OTHER_USER_ID/_TOKEN, OTHER_KEY/_SECRET, OTHER_ORG, OTHER_BUCKET
                             a second user (not a server admin): read/write/delete on `research` and on
                             its own organization (bucket OTHER_BUCKET) that the admin does not belong to
  READER_USER_ID/_TOKEN, READER_KEY/_SECRET
                             a user with only read permission on `research`
  REPORT                     optional: failures are appended there as JSON lines (test, request, answer)

Tests that need more (quotas, a disabled user, a revoked key, a second server) make it themselves
with `stowage admin` or their own server.
"""

from __future__ import annotations

import json
import os
import re

import pytest

import s3helpers as h


@pytest.fixture(autouse=True)
def _fresh_exchanges():
    h.EXCHANGES.clear()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    path = os.environ.get(h.ENV_PREFIX + "REPORT")
    if not path or not report.failed:
        return
    text = str(report.longrepr)
    lines = [line[2:] for line in text.splitlines() if line.startswith("E ")]
    message = " ".join(line.strip() for line in lines[:6]) or text.splitlines()[-1:]
    with open(path, "a", encoding="utf-8") as out:
        out.write(
            json.dumps(
                {
                    "test": item.nodeid,
                    "phase": report.when,
                    "doc": (item.function.__doc__ or "").strip() if hasattr(item, "function") else "",
                    "message": message if isinstance(message, str) else " ".join(message),
                    "exchanges": list(h.EXCHANGES),
                }
            )
            + "\n"
        )


def _key(name: str) -> h.Key:
    return h.Key(h.env(f"{name}_KEY"), h.env(f"{name}_SECRET"))


@pytest.fixture(scope="session")
def admin_key() -> h.Key:
    return h.Key(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])


@pytest.fixture(scope="session")
def s3(admin_key):
    """The server admin's full key."""
    return h.client(admin_key)


@pytest.fixture(scope="session")
def readonly_key() -> h.Key:
    return _key("READONLY")


@pytest.fixture(scope="session")
def readonly_s3(readonly_key):
    return h.client(readonly_key)


@pytest.fixture(scope="session")
def limited_key() -> h.Key:
    return _key("LIMITED")


@pytest.fixture(scope="session")
def limited_s3(limited_key):
    return h.client(limited_key)


@pytest.fixture(scope="session")
def other_key() -> h.Key:
    return _key("OTHER")


@pytest.fixture(scope="session")
def other_s3(other_key):
    return h.client(other_key)


@pytest.fixture(scope="session")
def reader_s3():
    return h.client(_key("READER"))


@pytest.fixture(scope="session")
def research() -> str:
    return "research"


@pytest.fixture(scope="session")
def research_org() -> str:
    return h.env("RESEARCH_ORG")


@pytest.fixture(scope="session")
def other_bucket() -> str:
    return h.env("OTHER_BUCKET")


@pytest.fixture(scope="session")
def qc_admin() -> h.QC:
    return h.QC(h.env("ADMIN_USER_ID"), h.env("ADMIN_TOKEN"))


@pytest.fixture(scope="session")
def qc_other() -> h.QC:
    return h.QC(h.env("OTHER_USER_ID"), h.env("OTHER_TOKEN"))


@pytest.fixture(scope="session")
def qc_reader() -> h.QC:
    return h.QC(h.env("READER_USER_ID"), h.env("READER_TOKEN"))


@pytest.fixture
def prefix(request) -> str:
    """A folder of `research` of this test's own."""
    name = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:40].strip("-")
    return f"{h.unique(name)}/"


@pytest.fixture
def bucket() -> str:
    """A new, empty organization with a bucket name, the server admin a full member."""
    return h.new_org(h.unique("b"))["bucket"]


@pytest.fixture
def own_server():
    """Starts servers of the test's own (h.OwnServer) with given settings; stops them after."""
    servers = []

    def start(**settings):
        servers.append(h.OwnServer(**settings))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()
