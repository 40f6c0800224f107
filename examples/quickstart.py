"""A complete round trip through the Object Store API with nothing but `requests`.

Authenticate, upload, list, read properties, download through a job (a zip), delete.
Works against stowage and against QuantConnect's own API.

    STOWAGE_URL=http://127.0.0.1:5612/api/v2 STOWAGE_USER_ID=1 STOWAGE_API_TOKEN=... \
    STOWAGE_ORGANIZATION_ID=... python examples/quickstart.py
"""

import base64
import hashlib
import io
import os
import sys
import time
import zipfile

import requests

BASE = os.environ.get("STOWAGE_URL", "http://127.0.0.1:5612/api/v2").rstrip("/")
USER_ID = os.environ["STOWAGE_USER_ID"]
TOKEN = os.environ["STOWAGE_API_TOKEN"]
ORG = os.environ["STOWAGE_ORGANIZATION_ID"]


def headers():
    """The auth recipe: Basic base64(userId:sha256hex(token:timestamp)) plus the Timestamp header."""
    timestamp = str(int(time.time()))
    digest = hashlib.sha256(f"{TOKEN}:{timestamp}".encode()).hexdigest()
    basic = base64.b64encode(f"{USER_ID}:{digest}".encode()).decode()
    return {"Authorization": f"Basic {basic}", "Timestamp": timestamp}


def call(endpoint, **kwargs):
    response = requests.post(f"{BASE}/{endpoint}", headers=headers(), timeout=60, **kwargs)
    response.raise_for_status()
    body = response.json()
    if not body["success"]:
        sys.exit(f"{endpoint} failed: {body['errors']}")
    return body


def main():
    call("authenticate")
    print("authenticated as user", USER_ID)

    content = b'{"alpha": 0.1, "beta": 2}'
    call("object/set", data={"organizationId": ORG, "key": "quickstart/params.json"},
         files={"objectData": content})
    print("uploaded quickstart/params.json")

    listing = call("object/list", json={"organizationId": ORG, "path": "quickstart"})
    print("listed:", [o["key"] for o in listing["objects"]], "usage:", listing["objectStorageUsedHuman"])

    meta = call("object/properties", json={"organizationId": ORG, "key": "quickstart/params.json"})["metadata"]
    assert meta["md5"] == hashlib.md5(content).hexdigest()
    print("properties: size", meta["size"], "md5", meta["md5"], "mime", meta["mime"])

    job = call("object/get", json={"organizationId": ORG, "keys": ["quickstart"]})
    url, deadline = job["url"], time.monotonic() + 300
    while not url and time.monotonic() < deadline:  # the job may need a moment: poll it
        time.sleep(3)
        url = call("object/get", json={"organizationId": ORG, "jobId": job["jobId"]})["url"]
    archive = zipfile.ZipFile(io.BytesIO(requests.get(url, timeout=300).content))
    assert archive.read("quickstart/params.json") == content
    print("downloaded:", archive.namelist())

    call("object/delete", json={"organizationId": ORG, "key": "quickstart"})
    print("deleted quickstart/")


if __name__ == "__main__":
    main()
