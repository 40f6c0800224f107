"""The web console in a real headless Chromium (Debian's `chromium`, driven by Playwright with
`executable_path`), against a freshly started stowage server. Run by scripts/browser.sh, which
installs both and passes STOWAGE_BIN and CHROMIUM; with STOWAGE_SCREENSHOTS set to a folder the
tests save the README's screenshots there (folder view, upload in progress, members page).

Covers the issue's "How it is shown": sign in; open a folder; upload three files (one of 20 MiB)
and see them listed with the right sizes, cross-checked through the QuantConnect API's md5;
download one and compare its bytes; a text file's properties show its preview; delete a folder
after the confirmation; a hostile object name renders as text and runs nothing; a folder of 2,500
objects pages; a read-only member sees no upload or delete controls and a forged upload from that
member is refused; sign out, and the old cookie no longer works; a member's page stops working
once the member is removed.
"""

import base64
import concurrent.futures
import hashlib
import json
import os
import re
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect, sync_playwright

BIN = os.environ.get("STOWAGE_BIN", "target/debug/stowage")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SHOTS = os.environ.get("STOWAGE_SCREENSHOTS")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
HOSTILE = "<img src=x onerror=alert(1)>.txt"


class Server:
    def __init__(self):
        self.work = tempfile.TemporaryDirectory(prefix="stowage-browser-")
        self.data = Path(self.work.name) / "data"
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.root = f"http://127.0.0.1:{self.port}"
        self.log = open(Path(self.work.name) / "server.log", "w")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", f"127.0.0.1:{self.port}", "--s3-api-listen", "127.0.0.1:0", "--data-dir", str(self.data)],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        for line in self.proc.stdout:
            if "listening on" in line:
                break
        else:
            raise RuntimeError("stowage did not start; see its log")
        creds = json.loads((self.data / "initial-credentials.json").read_text())
        self.user, self.token, self.org = str(creds["userId"]), creds["apiToken"], creds["organizationId"]

    def admin(self, *args):
        out = subprocess.run([BIN, "admin", "--data-dir", str(self.data), "--json", *args],
                             check=True, capture_output=True, text=True).stdout
        return json.loads(out)

    def new_user(self, name, permissions):
        created = self.admin("user", "create", "--name", name)
        user, token = str(created["userId"]), created["apiToken"]
        self.admin("member", "add", "--org", self.org, "--user", user, "--permissions", permissions)
        return user, token

    def api(self, endpoint, user=None, token=None, **fields):
        user, token = user or self.user, token or self.token
        stamp = str(int(time.time()))
        digest = hashlib.sha256(f"{token}:{stamp}".encode()).hexdigest()
        auth = base64.b64encode(f"{user}:{digest}".encode()).decode()
        headers = {"Authorization": f"Basic {auth}", "Timestamp": stamp}
        if endpoint == "object/set":
            files = {"objectData": ("blob", fields.pop("data"))}
            reply = requests.post(f"{self.root}/api/v2/{endpoint}", headers=headers,
                                  data={"organizationId": self.org, **fields}, files=files)
        else:
            reply = requests.post(f"{self.root}/api/v2/{endpoint}", headers=headers,
                                  json={"organizationId": self.org, **fields})
        return reply.json()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()
        self.work.cleanup()


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def shot(page, name):
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / name), full_page=True)


def sign_in(browser, server, user=None, token=None):
    context = browser.new_context(viewport={"width": 1100, "height": 760}, accept_downloads=True)
    page = context.new_page()
    alerts = []
    page.on("dialog", lambda d: (alerts.append(d.message), d.dismiss()))
    page.alerts = alerts
    page.goto(f"{server.root}/console/")
    expect(page).to_have_url(re.compile(r"/console/sign-in"))
    page.get_by_label("User ID").fill(user or server.user)
    page.get_by_label("API token").fill(token or server.token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Organizations")).to_be_visible()
    return context, page


def folder_url(server, path=""):
    return f"{server.root}/console/o/{server.org}/" + (f"?path={requests.utils.quote(path, safe='')}" if path else "")


def test_upload_list_download_preview_and_delete(browser, server):
    context, page = sign_in(browser, server)
    page.get_by_role("link", name="default", exact=True).click()
    expect(page.get_by_text("Storage:")).to_be_visible()
    server.api("object/set", key="reports/readme.txt", data=b"hello from the console\n")
    page.goto(folder_url(server, "reports"))
    expect(page.get_by_text("readme.txt")).to_be_visible()

    big = bytes(range(256)) * (20 * 1024 * 1024 // 256)
    files = [
        {"name": "big.bin", "mimeType": "application/octet-stream", "buffer": big},
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"three small lines\nof text\nhere\n"},
        {"name": "data.csv", "mimeType": "text/csv", "buffer": b"a,b\n1,2\n"},
    ]
    # Slow the upload down so that the progress bars can be seen (and photographed) mid-way.
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 8 * 1024 * 1024})
    page.get_by_label("Upload files").set_input_files(files)
    expect(page.locator("#progress li")).to_have_count(3)
    shot(page, "console-upload.png")
    expect(page.locator("#progress li.done")).to_have_count(3, timeout=120_000)
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    # The listing refreshed itself with the right sizes.
    expect(page.locator("tr", has_text="big.bin")).to_contain_text("20.97 MB")
    expect(page.locator("tr", has_text="notes.txt")).to_contain_text("31 B")
    expect(page.locator("tr", has_text="data.csv")).to_contain_text("8 B")
    for f in files:
        props = server.api("object/properties", key=f"reports/{f['name']}")
        assert props["success"], props
        assert props["metadata"]["md5"] == hashlib.md5(f["buffer"]).hexdigest()
        assert props["metadata"]["size"] == len(f["buffer"])
    shot(page, "console-folder.png")

    # Download one file and compare its bytes.
    with page.expect_download() as download:
        page.locator("tr", has_text="notes.txt").get_by_role("link", name="download").click()
    assert download.value.suggested_filename == "notes.txt"
    assert Path(download.value.path()).read_bytes() == files[1]["buffer"]

    # Properties of a text file show its preview.
    page.get_by_role("link", name="readme.txt").click()
    expect(page.locator("pre.preview")).to_have_text("hello from the console\n")

    # Delete the folder after the confirmation, which says how many files and bytes go.
    page.goto(folder_url(server, "reports"))
    page.get_by_role("link", name="Delete this folder").click()
    expect(page.get_by_role("alert")).to_contain_text("4 files")
    page.get_by_role("button", name="Delete").click()
    expect(page).to_have_url(folder_url(server))
    listed = server.api("object/list", path="reports")
    assert not listed["success"] or not listed["objects"], listed
    assert page.alerts == []
    context.close()


def test_hostile_name_renders_as_text_and_runs_nothing(browser, server):
    server.api("object/set", key=f"hostile/{HOSTILE}", data=b"<script>alert(2)</script>")
    context, page = sign_in(browser, server)
    page.goto(folder_url(server, "hostile"))
    expect(page.get_by_role("link", name=HOSTILE)).to_be_visible()
    assert page.locator("img").count() == 0
    page.get_by_role("link", name=HOSTILE).click()
    expect(page.locator("pre.preview")).to_have_text("<script>alert(2)</script>")
    page.wait_for_timeout(300)
    assert page.alerts == [], page.alerts
    context.close()


def test_a_folder_of_2500_objects_pages(browser, server):
    def put(i):
        return server.api("object/set", key=f"many/item-{i:05d}", data=b"x")["success"]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert all(pool.map(put, range(2500)))
    context, page = sign_in(browser, server)
    page.goto(folder_url(server, "many"))
    expect(page.get_by_text("page 1 of 3")).to_be_visible()
    assert page.locator("tbody tr").count() == 1000
    page.get_by_role("link", name="Next page").click()
    expect(page.get_by_text("page 2 of 3")).to_be_visible()
    expect(page.get_by_role("link", name="item-01000")).to_be_visible()
    page.get_by_role("link", name="Next page").click()
    expect(page.get_by_text("page 3 of 3")).to_be_visible()
    assert page.locator("tbody tr").count() == 500
    expect(page.get_by_role("link", name="Next page")).to_have_count(0)
    context.close()


def test_read_only_member_sees_no_controls_and_a_forged_upload_is_refused(browser, server):
    server.api("object/set", key="shared/report.txt", data=b"numbers")
    user, token = server.new_user("reader", "read")
    context, page = sign_in(browser, server, user, token)
    page.goto(folder_url(server, "shared"))
    expect(page.get_by_text("report.txt")).to_be_visible()
    expect(page.get_by_label("Upload files")).to_have_count(0)
    expect(page.get_by_role("link", name="delete")).to_have_count(0)
    expect(page.get_by_role("link", name="Delete this folder")).to_have_count(0)
    forged = page.evaluate("""async (org) => {
        const csrf = document.querySelector('input[name=csrf]').value;
        const r = await fetch('/console/o/' + org + '/upload?key=shared/forged.txt',
            {method: 'PUT', headers: {'X-CSRF-Token': csrf}, body: 'forged'});
        return [r.status, await r.json()];
    }""", server.org)
    assert forged[0] == 403, forged
    assert "does not have permission to write" in forged[1]["error"]
    assert not server.api("object/properties", key="shared/forged.txt")["success"]
    context.close()


def test_sign_out_and_the_old_cookie_no_longer_works(browser, server):
    context, page = sign_in(browser, server)
    page.goto(folder_url(server))
    old = context.cookies()
    assert any(c["name"] == "stowage_session" and c["httpOnly"] and c["sameSite"] == "Strict" for c in old)
    # No API token anywhere in the page or in its storage.
    assert server.token not in page.content()
    assert server.token not in json.dumps(page.evaluate("() => [Object.entries(localStorage), Object.entries(sessionStorage), document.cookie]"))
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/console/sign-in"))
    replay = browser.new_context()
    replay.add_cookies(old)
    again = replay.new_page()
    again.goto(folder_url(server))
    expect(again).to_have_url(re.compile(r"/console/sign-in"))
    replay.close()
    context.close()


def test_members_page_and_a_removed_members_page_stops_working(browser, server):
    user, token = server.new_user("leaving", "read,write")
    member_context, member_page = sign_in(browser, server, user, token)
    member_page.goto(folder_url(server))
    expect(member_page.get_by_text("Files:")).to_be_visible()

    context, page = sign_in(browser, server)
    page.goto(f"{server.root}/console/o/{server.org}/members")
    row = page.locator("tr", has_text="leaving")
    expect(row).to_be_visible()
    shot(page, "console-members.png")
    row.get_by_role("button", name="Remove").click()
    expect(page.get_by_role("status")).to_contain_text(f"User {user} is no longer a member")

    member_page.reload()
    expect(member_page.get_by_role("alert")).to_contain_text("Organization not found or access denied")
    member_context.close()
    context.close()


def test_reading_works_without_javascript_and_fits_a_phone(browser, server):
    server.api("object/set", key="phone/a-rather-long-file-name-that-must-wrap-on-a-narrow-screen.txt", data=b"small text")
    context = browser.new_context(viewport={"width": 390, "height": 844}, java_script_enabled=False)
    page = context.new_page()
    page.goto(f"{server.root}/console/sign-in")
    page.get_by_label("User ID").fill(server.user)
    page.get_by_label("API token").fill(server.token)
    page.get_by_role("button", name="Sign in").click()
    page.goto(folder_url(server, "phone"))
    expect(page.get_by_role("link", name=re.compile("a-rather-long-file-name"))).to_be_visible()
    page.get_by_role("link", name=re.compile("a-rather-long-file-name")).click()
    expect(page.locator("pre.preview")).to_have_text("small text")
    # Nothing wider than the screen: no sideways scrolling of the page.
    width = context.pages[0].evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, width
    page.goto(folder_url(server, "phone"))
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, width
    context.close()
