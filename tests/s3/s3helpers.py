"""Helpers of the S3 suite: the environment scripts/s3-tests.sh hands over, boto3 clients, a
hand-made SigV4 signer (for requests boto3 will not send: skewed clocks, unsigned or streaming
bodies, malformed XML), the QuantConnect API's auth recipe, and `stowage admin`.

Every HTTP exchange of the running test is kept (method, URL, status, error code and message)
so that a failure report names the request and the server's answer.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import secrets
import subprocess
import time
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

# --- the environment --------------------------------------------------------------------------

ENV_PREFIX = "STOWAGE_S3_SUITE_"


def env(name: str) -> str:
    value = os.environ.get(ENV_PREFIX + name)
    if not value:
        pytest.exit(
            f"{ENV_PREFIX}{name} is not set: run the suite through scripts/s3-tests.sh, which starts a "
            "server and creates the identities the suite uses",
            returncode=2,
        )
    return value


def endpoint() -> str:
    return os.environ["AWS_ENDPOINT_URL"]


REGION = "us-east-1"

# --- the exchanges of the running test ----------------------------------------------------------

EXCHANGES: list[dict] = []


def record(method: str, url: str, status: int | None, code: str | None = None, message: str | None = None, note=""):
    EXCHANGES.append(
        {"method": method, "url": url, "status": status, "code": code, "message": message, "note": note}
    )
    del EXCHANGES[:-6]


def _error_of(body: bytes) -> tuple[str | None, str | None]:
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None, None
    return root.findtext("Code"), root.findtext("Message")


def _before_send(request, **_):
    EXCHANGES.append({"method": request.method, "url": request.url, "status": None, "code": None, "message": None})
    del EXCHANGES[:-6]


def _after_call(http_response, parsed, **_):
    if EXCHANGES and EXCHANGES[-1]["status"] is None:
        error = parsed.get("Error", {}) if isinstance(parsed, dict) else {}
        EXCHANGES[-1].update(
            status=http_response.status_code, code=error.get("Code"), message=error.get("Message")
        )


# --- boto3 --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    access: str
    secret: str


def admin_key() -> Key:
    """The server admin's full key (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY of scripts/s3-tests.sh)."""
    return Key(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])


def client(key: Key, **config) -> "boto3.client":
    """A boto3 S3 client for a key: path style, SigV4, no retries (an error is the answer)."""
    options = {
        "signature_version": "s3v4",
        "s3": {"addressing_style": "path"},
        "retries": {"total_max_attempts": 1, "mode": "standard"},
        "connect_timeout": 10,
        "read_timeout": 120,
    }
    options.update(config)
    c = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint(),
        aws_access_key_id=key.access,
        aws_secret_access_key=key.secret,
        region_name=REGION,
        config=Config(**options),
    )
    c.meta.events.register("before-send.s3", _before_send)
    c.meta.events.register("after-call.s3", _after_call)
    return c


def s3_error(call, *args, **kwargs) -> dict:
    """Runs a boto3 call that must fail; returns its error response."""
    with pytest.raises(ClientError) as caught:
        call(*args, **kwargs)
    return caught.value.response


def expect_error(code: str, status: int, call, *args, **kwargs) -> dict:
    """Runs a boto3 call that must fail with exactly this S3 error code and HTTP status."""
    response = s3_error(call, *args, **kwargs)
    got = (response.get("Error", {}).get("Code"), response["ResponseMetadata"]["HTTPStatusCode"])
    message = response.get("Error", {}).get("Message")
    assert got == (code, status), f"expected {code} {status}, the server answered {got[0]} {got[1]}: {message!r}"
    return response


def expect_head_status(status: int, call, *args, **kwargs) -> dict:
    """HEAD errors carry no body: only the status is known (boto3 names the code by it)."""
    response = s3_error(call, *args, **kwargs)
    got = response["ResponseMetadata"]["HTTPStatusCode"]
    assert got == status, f"expected HTTP {status}, the server answered {got}: {response.get('Error')}"
    return response


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def multipart_etag(parts: list[bytes]) -> str:
    digest = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    return f'"{digest}-{len(parts)}"'


def body_of(c, bucket: str, key: str, **kwargs) -> bytes:
    return c.get_object(Bucket=bucket, Key=key, **kwargs)["Body"].read()


def exists(c, bucket: str, key: str) -> bool:
    try:
        c.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as error:
        if error.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
            return False
        raise


def list_keys(c, bucket: str, prefix: str = "") -> list[str]:
    keys = []
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


# --- a hand-made SigV4 signer -------------------------------------------------------------------

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signing_key(secret: str, date: str) -> bytes:
    k = _hmac(("AWS4" + secret).encode(), date)
    k = _hmac(k, REGION)
    k = _hmac(k, "s3")
    return _hmac(k, "aws4_request")


def uri_encode(text: str, slash: bool = False) -> str:
    return quote(text, safe="-_.~" + ("/" if slash else ""))


@dataclass
class Raw:
    """A raw answer: status, headers, body, and the XML error's code and message if any."""

    status: int
    headers: requests.structures.CaseInsensitiveDict
    body: bytes

    @property
    def code(self) -> str | None:
        return _error_of(self.body)[0]

    @property
    def message(self) -> str | None:
        return _error_of(self.body)[1]

    def xml(self) -> ET.Element:
        return ET.fromstring(self.body)


def sign(
    method: str,
    path: str,
    key: Key,
    *,
    query: dict | None = None,
    body: bytes = b"",
    headers: dict | None = None,
    when: dt.datetime | None = None,
    payload_hash: str | None = None,
    secret: str | None = None,
    base: str | None = None,
    host: str | None = None,
) -> tuple[str, str, dict]:
    """SigV4 header auth for one request: (url, request target, headers including Authorization)."""
    split = urlsplit(base or endpoint())
    canonical_uri = uri_encode(path, slash=True)
    canonical_query = "&".join(
        f"{uri_encode(k)}={uri_encode(str(v))}" for k, v in sorted((query or {}).items(), key=lambda kv: kv[0])
    )
    target = canonical_uri + (f"?{canonical_query}" if canonical_query else "")
    sent = {k.lower(): str(v) for k, v in (headers or {}).items()}
    when = when or dt.datetime.now(dt.timezone.utc)
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    payload = payload_hash or hashlib.sha256(body).hexdigest()
    sent["host"] = host or split.netloc
    sent["x-amz-date"] = amz_date
    sent["x-amz-content-sha256"] = payload
    signed = sorted(sent)
    canonical_headers = "".join(f"{h}:{sent[h].strip()}\n" for h in signed)
    canonical_request = "\n".join([method, canonical_uri, canonical_query, canonical_headers, ";".join(signed), payload])
    scope = f"{date}/{REGION}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()])
    signature = hmac.new(signing_key(secret or key.secret, date), to_sign.encode(), hashlib.sha256).hexdigest()
    sent["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={key.access}/{scope}, SignedHeaders={';'.join(signed)}, Signature={signature}"
    )
    return f"{split.scheme}://{split.netloc}{target}", target, sent


def raw(
    method: str,
    path: str,
    key: Key | None = None,
    *,
    query: dict | None = None,
    body: bytes = b"",
    headers: dict | None = None,
    when: dt.datetime | None = None,
    payload_hash: str | None = None,
    secret: str | None = None,
    base: str | None = None,
    host: str | None = None,
    transfer_chunked: bool = False,
) -> Raw:
    """Sends one request, SigV4-signed by `key` (unsigned when None). `path` is the unencoded
    path (`/bucket/key`); `when` signs at another time; `payload_hash` overrides the signed
    x-amz-content-sha256; `secret` signs with another secret than the key's; `base` is another
    server's URL; `host` another Host header (virtual-host style); `transfer_chunked` sends the
    body with Transfer-Encoding: chunked and no Content-Length (as boto3 streams over HTTPS)."""
    if key is not None:
        url, _, sent = sign(
            method, path, key, query=query, body=body, headers=headers, when=when,
            payload_hash=payload_hash, secret=secret, base=base, host=host,
        )
    else:
        split = urlsplit(base or endpoint())
        canonical_query = "&".join(f"{uri_encode(k)}={uri_encode(str(v))}" for k, v in sorted((query or {}).items()))
        url = f"{split.scheme}://{split.netloc}{uri_encode(path, slash=True)}" + (f"?{canonical_query}" if canonical_query else "")
        sent = {k.lower(): str(v) for k, v in (headers or {}).items()}
        if host:
            sent["host"] = host
    data = iter([body]) if transfer_chunked else body
    response = requests.request(method, url, data=data, headers=sent, timeout=120)
    answer = Raw(response.status_code, response.headers, response.content)
    note = ("hand-signed" if key else "unsigned") + (f", Host: {host}" if host else "")
    note += ", Transfer-Encoding: chunked" if transfer_chunked else ""
    record(method, url, answer.status, answer.code, answer.message, note=note)
    return answer


def raw_request_bytes(method: str, path: str, key: Key, **kwargs) -> bytes:
    """One signed HTTP/1.1 request as bytes (headers only), for tests that drive a socket."""
    _, target, headers = sign(method, path, key, **kwargs)
    return (f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()


def streaming_put(
    path: str, key: Key, data: bytes, chunk: int = 64 * 1024, *, corrupt_chunk: bool = False
) -> Raw:
    """PutObject with a signed aws-chunked body (STREAMING-AWS4-HMAC-SHA256-PAYLOAD), as SDKs send
    streams. `corrupt_chunk` sends a wrong signature on the first chunk."""
    split = urlsplit(endpoint())
    canonical_uri = uri_encode(path, slash=True)
    now = dt.datetime.now(dt.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    scope = f"{date}/{REGION}/s3/aws4_request"
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] + [b""]
    encoded_length = sum(len(f"{len(p):x};chunk-signature=".encode()) + 64 + 2 + len(p) + 2 for p in pieces)
    sent = {
        "host": split.netloc,
        "x-amz-date": amz_date,
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(data)),
        "content-length": str(encoded_length),
    }
    signed = sorted(sent)
    canonical_request = "\n".join(
        [
            "PUT",
            canonical_uri,
            "",
            "".join(f"{h}:{sent[h]}\n" for h in signed),
            ";".join(signed),
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        ]
    )
    skey = signing_key(key.secret, date)
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()])
    previous = hmac.new(skey, to_sign.encode(), hashlib.sha256).hexdigest()
    sent["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={key.access}/{scope}, SignedHeaders={';'.join(signed)}, Signature={previous}"
    )
    body = b""
    for n, piece in enumerate(pieces):
        chunk_to_sign = "\n".join(
            ["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous, EMPTY_SHA256, hashlib.sha256(piece).hexdigest()]
        )
        previous = hmac.new(skey, chunk_to_sign.encode(), hashlib.sha256).hexdigest()
        signature = ("0" * 64) if (corrupt_chunk and n == 0) else previous
        body += f"{len(piece):x};chunk-signature={signature}\r\n".encode() + piece + b"\r\n"
    assert len(body) == encoded_length
    url = f"{split.scheme}://{split.netloc}{canonical_uri}"
    response = requests.put(url, data=body, headers=sent, timeout=120)
    answer = Raw(response.status_code, response.headers, response.content)
    record("PUT", url, answer.status, answer.code, answer.message, note="aws-chunked signed")
    return answer


def unsigned_trailer_put(
    path: str, key: Key, data: bytes, *, checksum: bytes | None = None, chunk=64 * 1024, transfer_chunked: bool = False
) -> Raw:
    """PutObject with STREAMING-UNSIGNED-PAYLOAD-TRAILER and an x-amz-checksum-crc32 trailer (how
    current SDKs stream uploads); `checksum` overrides the trailer's (big-endian crc32) bytes;
    `transfer_chunked` leaves out Content-Length (boto3 over HTTPS)."""
    crc = checksum if checksum is not None else zlib.crc32(data).to_bytes(4, "big")
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    body = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces)
    body += b"0\r\n" + f"x-amz-checksum-crc32:{base64.b64encode(crc).decode()}\r\n\r\n".encode()
    return raw(
        "PUT",
        path,
        key,
        body=body,
        payload_hash="STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        headers={
            "content-encoding": "aws-chunked",
            "x-amz-decoded-content-length": str(len(data)),
            "x-amz-trailer": "x-amz-checksum-crc32",
        },
        transfer_chunked=transfer_chunked,
    )


# --- the QuantConnect API -----------------------------------------------------------------------


class QC:
    """The QuantConnect Object Store API as a user: Basic base64(userId:sha256(token:timestamp))."""

    def __init__(self, user_id: str, token: str):
        self.base = env("QC_URL").rstrip("/")
        self.user_id = str(user_id)
        self.token = token

    def _headers(self) -> dict:
        stamp = str(int(time.time()))
        digest = hashlib.sha256(f"{self.token}:{stamp}".encode()).hexdigest()
        auth = base64.b64encode(f"{self.user_id}:{digest}".encode()).decode()
        return {"Authorization": f"Basic {auth}", "Timestamp": stamp}

    def post(self, path: str, **kwargs) -> dict:
        url = f"{self.base}/{path}"
        response = requests.post(url, headers=self._headers(), timeout=60, **kwargs)
        try:
            answer = response.json()
        except ValueError:
            answer = {"success": False, "errors": [response.text[:300]]}
        record("POST", url, response.status_code, None, "; ".join(answer.get("errors") or []), note="QC API")
        assert response.status_code == 200, f"QC API {path}: HTTP {response.status_code}: {answer}"
        return answer

    def set(self, org: str, key: str, data: bytes) -> dict:
        return self.post(
            "object/set",
            data={"organizationId": org, "key": key},
            files={"objectData": ("blob", data)},
        )

    def properties(self, org: str, key: str) -> dict:
        return self.post("object/properties", json={"organizationId": org, "key": key})

    def list(self, org: str, path: str = "/") -> dict:
        return self.post("object/list", json={"organizationId": org, "path": path})

    def delete(self, org: str, key: str) -> dict:
        return self.post("object/delete", json={"organizationId": org, "key": key})

    def get_zip(self, org: str, keys: list[str]) -> dict[str, bytes]:
        import io
        import zipfile

        answer = self.post("object/get", json={"organizationId": org, "keys": keys})
        assert answer["success"], answer
        deadline = time.time() + 60
        while not answer.get("url"):
            assert time.time() < deadline, "the zip job did not finish in 60 s"
            time.sleep(0.5)
            answer = self.post("object/get", json={"organizationId": org, "jobId": answer["jobId"]})
            assert answer["success"], answer
        content = requests.get(answer["url"], timeout=60)
        assert content.status_code == 200, content.status_code
        with zipfile.ZipFile(io.BytesIO(content.content)) as z:
            return {name: z.read(name) for name in z.namelist()}


# --- stowage admin ------------------------------------------------------------------------------


def admin(*args: str) -> dict | list:
    """`stowage admin --data-dir D --json ARGS`, parsed; fails the test with stowage's message."""
    command = [env("BIN"), "admin", "--data-dir", env("DATA_DIR"), "--json", *args]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    done = subprocess.run(command, capture_output=True, text=True, env=clean, timeout=60)
    assert done.returncode == 0, f"stowage admin {' '.join(args)}: {done.stderr.strip()}"
    return json.loads(done.stdout)


def new_org(bucket: str | None = None, *, max_bytes: int | None = None, max_files: int | None = None) -> dict:
    """An organization (with a bucket name when given) that the server admin belongs to with all
    permissions. Returns {"org": id, "bucket": name (alias or id)}."""
    args = ["org", "create", "--name", bucket or unique("org")]
    if bucket:
        args += ["--bucket", bucket]
    if max_bytes is not None:
        args += ["--max-bytes", str(max_bytes)]
    if max_files is not None:
        args += ["--max-files", str(max_files)]
    org = admin(*args)["organizationId"]
    admin("member", "add", "--org", org, "--user", env("ADMIN_USER_ID"), "--permissions", "read,write,delete")
    return {"org": org, "bucket": bucket or org}


def new_user(name: str, *, server_admin: bool = False) -> dict:
    args = ["user", "create", "--name", name] + (["--server-admin"] if server_admin else [])
    return admin(*args)


def new_key(user_id, *, org: str | None = None, read_only: bool = False) -> Key:
    args = ["s3-key", "create", "--user", str(user_id)]
    if org:
        args += ["--org", org]
    if read_only:
        args.append("--read-only")
    created = admin(*args)
    return Key(created["accessKeyId"], created["secretAccessKey"])


# --- a server of the test's own -----------------------------------------------------------------


class OwnServer:
    """An embedded-storage server with the given settings (as STOWAGE_* variables), its first
    user's full S3 key, and its first organization named `own` as a bucket."""

    def __init__(self, **settings):
        import tempfile

        self.dir = tempfile.mkdtemp(prefix="stowage-s3-own-")
        self.data = os.path.join(self.dir, "data")
        env = {k: v for k, v in os.environ.items() if not k.startswith("STOWAGE_")}
        env.update({f"STOWAGE_{k.upper()}": str(v) for k, v in settings.items()})
        self.env = env
        self.out = open(os.path.join(self.dir, "server.out"), "w+")
        self.err = open(os.path.join(self.dir, "server.err"), "w+")
        self.process = subprocess.Popen(
            [env_bin(), "serve", "--listen", "127.0.0.1:0", "--s3-api-listen", "127.0.0.1:0", "--data-dir", self.data],
            stdout=self.out, stderr=self.err, env=env,
        )
        try:
            self._ready()
        except BaseException:
            self.stop()
            raise

    def _ready(self):
        deadline = time.time() + 20
        self.url = None
        while time.time() < deadline and self.url is None:
            assert self.process.poll() is None, open(self.err.name).read()
            match = re.search(r"S3 API listening on (\S+)", open(self.out.name).read())
            self.url = match.group(1) if match else None
            time.sleep(0.1)
        assert self.url, "the server did not print its S3 address: " + open(self.err.name).read()
        creds = json.load(open(os.path.join(self.data, "initial-credentials.json")))
        made = json.loads(self.admin("s3-key", "create", "--user", str(creds["userId"])))
        self.key = Key(made["accessKeyId"], made["secretAccessKey"])
        self.admin("org", "set-bucket", "--org", creds["organizationId"], "--bucket", "own")

    def admin(self, *args) -> str:
        done = subprocess.run(
            [env_bin(), "admin", "--data-dir", self.data, "--json", *args], capture_output=True, text=True, env=self.env
        )
        assert done.returncode == 0, f"stowage admin {' '.join(args)}: {done.stderr.strip()}"
        return done.stdout

    def stop(self):
        import shutil

        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.out.close()
        self.err.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def env_bin() -> str:
    return env("BIN")


def client_at(url: str, key: Key, **config):
    """A boto3 client of another server (OwnServer)."""
    saved = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = url
    try:
        return client(key, **config)
    finally:
        if saved is None:
            os.environ.pop("AWS_ENDPOINT_URL", None)
        else:
            os.environ["AWS_ENDPOINT_URL"] = saved
