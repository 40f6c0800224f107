"""The protocol around the operations: x-amz-request-id everywhere, NotImplemented for the rest,
XML body limits."""

import hashlib
import os
import socket
from urllib.parse import urlsplit

import pytest

import s3helpers as h



def test_every_response_carries_a_request_id(research, prefix):
    """x-amz-request-id on successes, errors, HEAD 404 and unauthenticated refusals."""
    key = h.admin_key()
    answers = [
        h.raw("PUT", f"/{research}/{prefix}r", key, body=b"r"),
        h.raw("GET", f"/{research}/{prefix}r", key),
        h.raw("HEAD", f"/{research}/{prefix}missing", key),
        h.raw("GET", f"/{research}/{prefix}missing", key),
        h.raw("GET", "/", key),
        h.raw("GET", "/no-such-bucket-x", key),
        h.raw("GET", f"/{research}/{prefix}r", None),
        h.raw("PUT", f"/{research}", key, query={"policy": ""}, body=b"{}"),
    ]
    for a in answers:
        assert a.headers.get("x-amz-request-id"), (a.status, a.code, dict(a.headers))
    ids = [a.headers.get("x-amz-request-id") for a in answers]
    assert len(set(ids)) == len(ids), ids


def test_errors_are_s3_xml(research, prefix):
    """An error body is S3's <Error> XML with Code, Message (and RequestId matching the header)."""
    answer = h.raw("GET", f"/{research}/{prefix}missing", h.admin_key())
    assert answer.status == 404 and answer.xml().tag == "Error", answer.body
    assert answer.code == "NoSuchKey" and answer.message
    assert answer.headers.get("content-type", "").startswith("application/xml"), answer.headers
    request_id = answer.xml().findtext("RequestId")
    assert request_id is None or request_id == answer.headers.get("x-amz-request-id")


@pytest.mark.parametrize(
    "operation,kwargs",
    [
        ("put_bucket_policy", {"Policy": '{"Version": "2012-10-17", "Statement": []}'}),
        ("get_bucket_policy", {}),
        (
            "put_bucket_lifecycle_configuration",
            {"LifecycleConfiguration": {"Rules": [{"ID": "r", "Status": "Enabled", "Filter": {"Prefix": "tmp/"}, "Expiration": {"Days": 1}}]}},
        ),
        ("put_bucket_versioning", {"VersioningConfiguration": {"Status": "Enabled"}}),
        ("put_bucket_tagging", {"Tagging": {"TagSet": []}}),
        ("put_bucket_cors", {"CORSConfiguration": {"CORSRules": [{"AllowedMethods": ["GET"], "AllowedOrigins": ["*"]}]}}),
        ("put_bucket_acl", {"ACL": "public-read"}),
    ],
)
def test_bucket_operations_outside_the_contract_are_not_implemented(s3, research, operation, kwargs):
    """Operations outside the contract: NotImplemented 501."""
    h.expect_error("NotImplemented", 501, getattr(s3, operation), Bucket=research, **kwargs)


def test_object_operations_outside_the_contract_are_not_implemented(s3, research, prefix):
    s3.put_object(Bucket=research, Key=prefix + "o", Body=b"o")
    h.expect_error("NotImplemented", 501, s3.put_object_tagging, Bucket=research, Key=prefix + "o", Tagging={"TagSet": []})
    h.expect_error("NotImplemented", 501, s3.put_object_acl, Bucket=research, Key=prefix + "o", ACL="public-read")
    h.expect_error("NotImplemented", 501, s3.put_object_retention, Bucket=research, Key=prefix + "o", Retention={"Mode": "GOVERNANCE"})


def test_xml_body_over_1_mib_is_refused(research):
    """An XML body over 1 MiB: MalformedXML or MaxMessageLengthExceeded 400."""
    entry = b"<Object><Key>" + b"k" * 1000 + b"</Key></Object>"
    body = b"<Delete>" + entry * 1100 + b"</Delete>"
    assert len(body) > 1024 * 1024
    answer = h.raw(
        "POST", f"/{research}", h.admin_key(), query={"delete": ""}, body=body,
        headers={"content-md5": h.md5_b64(body)},
    )
    assert answer.status == 400 and answer.code in {"MalformedXML", "MaxMessageLengthExceeded"}, (
        answer.status, answer.code, answer.message,
    )


def test_path_style_bucket_and_key_with_encoded_characters(s3, research, prefix, admin_key):
    """A key with a space, sent percent-encoded in the path, is decoded once."""
    s3.put_object(Bucket=research, Key=prefix + "x y/z", Body=b"z")
    got = h.raw("GET", f"/{research}/{prefix}x y/z", admin_key)
    assert (got.status, got.body) == (200, b"z")


def test_virtual_host_style_when_a_domain_is_set(own_server):
    """With s3_api_domain set, BUCKET.DOMAIN in Host names the bucket; path style keeps working."""
    server = own_server(s3_api_domain="s3.example.test")
    host = f"own.s3.example.test:{urlsplit(server.url).port}"
    put = h.raw("PUT", "/vh/file.txt", server.key, body=b"virtual", base=server.url, host=host)
    assert put.status == 200, (put.status, put.code, put.message)
    got = h.raw("GET", "/own/vh/file.txt", server.key, base=server.url)
    assert (got.status, got.body) == (200, b"virtual"), (got.status, got.code, got.message)
    listed = h.raw("GET", "/", server.key, base=server.url, host=host, query={"list-type": "2"})
    assert listed.status == 200, (listed.status, listed.code, listed.message)
    assert b"<Key>vh/file.txt</Key>" in listed.body, listed.body
    got = h.raw("GET", "/vh/file.txt", server.key, base=server.url, host=host)
    assert (got.status, got.body) == (200, b"virtual"), (got.status, got.code, got.message)


def test_path_style_only_without_a_domain(research, prefix, s3, admin_key):
    """Without s3_api_domain a Host naming a bucket is not virtual-host style: the path names the bucket."""
    s3.put_object(Bucket=research, Key=prefix + "p", Body=b"p")
    split = urlsplit(h.endpoint())
    got = h.raw("GET", f"/{research}/{prefix}p", admin_key, host=f"{research}.localhost:{split.port}")
    assert (got.status, got.body) == (200, b"p"), (got.status, got.code, got.message)


def _read_response(sock) -> tuple[int, dict, bytes] | None:
    """One HTTP/1.1 response from a socket; None when the server closed the connection."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return int(lines[0].split()[1]), headers, body
    except (ConnectionResetError, BrokenPipeError, OSError):
        return None


def _connect(split):
    """A socket to the S3 API, TLS-wrapped when it is https (trusting REQUESTS_CA_BUNDLE)."""
    sock = socket.create_connection((split.hostname, split.port), timeout=10)
    if split.scheme != "https":
        return sock
    import ssl

    context = ssl.create_default_context(cafile=os.environ.get("REQUESTS_CA_BUNDLE"))
    return context.wrap_socket(sock, server_hostname=split.hostname)


def test_a_refused_upload_does_not_swallow_the_next_request(research, prefix, admin_key):
    """An upload refused before its body was read (Expect: 100-continue, so the client never sends it)
    must leave the keep-alive connection either closed (`Connection: close`) or clean: the next
    request on it is answered as itself, not read as the missing body (then its method turns from
    GET into ET and it fails as SignatureDoesNotMatch, as boto3 saw)."""
    split = urlsplit(h.endpoint())
    for _ in range(60):
        with _connect(split) as sock:
            sock.sendall(
                h.raw_request_bytes(
                    "PUT", f"/{research}/{prefix}a//b", admin_key, payload_hash=hashlib.sha256(b"x").hexdigest(),
                    headers={"content-length": "1", "expect": "100-continue"},
                )
            )
            first = _read_response(sock)
            assert first is not None and first[0] == 400, first
            if first[1].get("connection", "").lower() == "close":
                continue
            try:
                sock.sendall(h.raw_request_bytes("GET", f"/{research}", admin_key, query={"list-type": "2", "prefix": prefix}))
            except (ConnectionResetError, BrokenPipeError, OSError):
                continue
            second = _read_response(sock)
            if second is None:
                continue
            code = h.Raw(second[0], second[1], second[2]).code
            assert second[0] == 200, (
                f"the request after a refused upload was answered {second[0]} {code}: the server read it as the "
                "refused upload's body (answer with Connection: close, or close before reading on)"
            )


def test_s3_api_listen_off_starts_no_s3_listener(tmp_path):
    """`--s3-api-listen off`: the server starts (QuantConnect API only) and prints no S3 address."""
    import subprocess
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith("STOWAGE_")}
    out = tmp_path / "out"
    with open(out, "w") as sink:
        process = subprocess.Popen(
            [h.env("BIN"), "serve", "--listen", "127.0.0.1:0", "--s3-api-listen", "off", "--data-dir", str(tmp_path / "d")],
            stdout=sink, stderr=subprocess.STDOUT, env=env,
        )
    try:
        deadline = time.time() + 20
        while "listening on" not in out.read_text() and time.time() < deadline:
            assert process.poll() is None, out.read_text()
            time.sleep(0.1)
        time.sleep(0.5)
        text = out.read_text()
        assert "listening on" in text and "S3 API listening" not in text, text
    finally:
        process.terminate()
        process.wait(10)


def test_s3_api_region_setting(own_server):
    """s3_api_region: GetBucketLocation names it; clients sign for it."""
    import boto3
    from botocore.config import Config

    server = own_server(s3_api_region="eu-west-1")
    c = boto3.session.Session().client(
        "s3", endpoint_url=server.url, aws_access_key_id=server.key.access, aws_secret_access_key=server.key.secret,
        region_name="eu-west-1", config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}),
    )
    assert c.get_bucket_location(Bucket="own")["LocationConstraint"] == "eu-west-1"
    c.put_object(Bucket="own", Key="k", Body=b"eu")
    assert c.get_object(Bucket="own", Key="k")["Body"].read() == b"eu"


def test_metrics_count_s3_requests_by_operation_and_status(own_server):
    """/metrics counts stowage_s3_requests_total{operation, status}."""
    import re

    import requests

    server = own_server(metrics_listen="127.0.0.1:0")
    c = h.client_at(server.url, server.key)
    c.put_object(Bucket="own", Key="m", Body=b"m")
    c.get_object(Bucket="own", Key="m")
    h.expect_error("NoSuchKey", 404, c.get_object, Bucket="own", Key="missing")
    url = re.search(r"serving metrics on (\S+)", open(server.out.name).read()).group(1)
    text = requests.get(url, timeout=10).text
    for line in [
        'stowage_s3_requests_total{operation="PutObject",status="200"} 1',
        'stowage_s3_requests_total{operation="GetObject",status="200"} 1',
        'stowage_s3_requests_total{operation="GetObject",status="404"} 1',
    ]:
        assert line in text.splitlines(), f"{line} not in:\n" + "\n".join(l for l in text.splitlines() if "s3" in l)


def test_browser_form_uploads_are_not_implemented(s3, research, prefix):
    """POST object (a browser form with a signed policy) is refused, and stores nothing."""
    import requests

    key = prefix + "form.txt"
    post = s3.generate_presigned_post(Bucket=research, Key=key)
    answer = requests.post(post["url"], data=post["fields"], files={"file": ("form.txt", b"from a form")}, timeout=30)
    assert answer.status_code == 501, answer.text
    assert "<Code>NotImplemented</Code>" in answer.text, answer.text
    h.expect_head_status(404, s3.head_object, Bucket=research, Key=key)
