"""Authentication: unsigned, wrong secret, unknown and revoked keys, disabled users, clock skew,
presigned GET/PUT, the failure limiter (SlowDown), and the body size limit (EntityTooLarge).
The last two start a server of their own with small limits."""

import datetime as dt
import time

import pytest
import requests

import s3helpers as h



def test_hand_signed_requests_work(research, prefix):
    """The suite's own signer (used for the refusals below) is accepted when right."""
    put = h.raw("PUT", f"/{research}/{prefix}signed.txt", h.admin_key(), body=b"signed")
    assert put.status == 200, (put.status, put.code, put.message)
    got = h.raw("GET", f"/{research}/{prefix}signed.txt", h.admin_key())
    assert (got.status, got.body) == (200, b"signed")


def test_unsigned_requests_are_access_denied(research, prefix, s3):
    """No credentials: AccessDenied 403 (GET object, PUT object, ListBuckets, ListObjects)."""
    s3.put_object(Bucket=research, Key=prefix + "private", Body=b"p")
    for method, path, body in [
        ("GET", f"/{research}/{prefix}private", b""),
        ("PUT", f"/{research}/{prefix}anon", b"anon"),
        ("GET", "/", b""),
        ("GET", f"/{research}", b""),
    ]:
        answer = h.raw(method, path, None, body=body)
        assert (answer.status, answer.code) == (403, "AccessDenied"), (method, path, answer.status, answer.code, answer.message)
    assert not h.exists(s3, research, prefix + "anon")


def test_wrong_secret_is_signature_does_not_match(research, admin_key):
    c = h.client(h.Key(admin_key.access, "x" * 40))
    h.expect_error("SignatureDoesNotMatch", 403, c.list_objects_v2, Bucket=research)
    h.expect_error("SignatureDoesNotMatch", 403, c.put_object, Bucket=research, Key="nope", Body=b"x")


def test_unknown_key_is_invalid_access_key_id(research):
    c = h.client(h.Key("STWNOSUCHKEY00000000", "y" * 40))
    h.expect_error("InvalidAccessKeyId", 403, c.list_objects_v2, Bucket=research)
    h.expect_error("InvalidAccessKeyId", 403, c.list_buckets)


def test_revoked_key_is_refused_at_once(research, prefix):
    """Revoking (stowage admin s3-key revoke) takes effect on the very next request: InvalidAccessKeyId 403."""
    key = h.new_key(h.env("ADMIN_USER_ID"))
    c = h.client(key)
    c.put_object(Bucket=research, Key=prefix + "before", Body=b"x")
    h.admin("s3-key", "revoke", "--key", key.access)
    h.expect_error("InvalidAccessKeyId", 403, c.put_object, Bucket=research, Key=prefix + "after", Body=b"x")
    h.expect_error("InvalidAccessKeyId", 403, c.get_object, Bucket=research, Key=prefix + "before")


def test_disabled_user_is_refused_and_enabled_again(research, prefix):
    """A disabled user's keys are refused at once (403); enabling the user makes them work again."""
    user = h.new_user(h.unique("dis"))
    h.admin("member", "add", "--org", h.env("RESEARCH_ORG"), "--user", str(user["userId"]), "--permissions", "read,write")
    c = h.client(h.new_key(user["userId"]))
    c.put_object(Bucket=research, Key=prefix + "x", Body=b"x")
    h.admin("user", "disable", "--user", str(user["userId"]))
    refused = h.s3_error(c.get_object, Bucket=research, Key=prefix + "x")
    got = (refused["Error"]["Code"], refused["ResponseMetadata"]["HTTPStatusCode"])
    assert got in {("InvalidAccessKeyId", 403), ("AccessDenied", 403)}, got
    h.admin("user", "enable", "--user", str(user["userId"]))
    assert h.body_of(c, research, prefix + "x") == b"x"


@pytest.mark.parametrize("minutes", [16, -16, 60 * 24])
def test_clock_skew_over_15_minutes(research, minutes):
    """A request signed more than 15 minutes off the server's clock: RequestTimeTooSkewed 403."""
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=minutes)
    answer = h.raw("GET", f"/{research}", h.admin_key(), when=when, query={"list-type": "2"})
    assert (answer.status, answer.code) == (403, "RequestTimeTooSkewed"), (answer.status, answer.code, answer.message)


def test_clock_skew_within_15_minutes(research):
    when = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=13)
    answer = h.raw("GET", f"/{research}", h.admin_key(), when=when, query={"list-type": "2"})
    assert answer.status == 200, (answer.status, answer.code, answer.message)


def test_signature_over_other_headers_fails(research, admin_key):
    """A signature made with another secret over a correct request: SignatureDoesNotMatch."""
    answer = h.raw("GET", f"/{research}", admin_key, query={"list-type": "2"}, secret="z" * 40)
    assert (answer.status, answer.code) == (403, "SignatureDoesNotMatch"), (answer.status, answer.code, answer.message)


# --- presigned URLs -----------------------------------------------------------------------------


def test_presigned_get(s3, research, prefix):
    """A presigned GET URL works with a plain HTTP client, and keeps the key's rights."""
    s3.put_object(Bucket=research, Key=prefix + "p ré+sign.txt", Body=b"presigned")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": research, "Key": prefix + "p ré+sign.txt"}, ExpiresIn=300)
    got = requests.get(url, timeout=30)
    h.record("GET", url, got.status_code, note="presigned")
    assert (got.status_code, got.content) == (200, b"presigned")
    assert got.headers.get("etag") == f'"{h.md5_hex(b"presigned")}"'


def test_presigned_put(s3, research, prefix):
    url = s3.generate_presigned_url("put_object", Params={"Bucket": research, "Key": prefix + "up.txt"}, ExpiresIn=300)
    put = requests.put(url, data=b"uploaded through a presigned URL", timeout=30)
    h.record("PUT", url, put.status_code, note="presigned")
    assert put.status_code == 200, (put.status_code, put.text)
    assert h.body_of(s3, research, prefix + "up.txt") == b"uploaded through a presigned URL"


def test_presigned_url_expires(s3, research, prefix):
    """An expired presigned URL: AccessDenied 403 (as AWS: "Request has expired")."""
    s3.put_object(Bucket=research, Key=prefix + "soon", Body=b"x")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": research, "Key": prefix + "soon"}, ExpiresIn=1)
    time.sleep(2.5)
    got = requests.get(url, timeout=30)
    answer = h.Raw(got.status_code, got.headers, got.content)
    h.record("GET", url, answer.status, answer.code, answer.message, note="presigned, expired")
    assert (answer.status, answer.code) == (403, "AccessDenied"), (answer.status, answer.code, answer.message)


def test_presigned_url_tampered(s3, research, prefix):
    """A presigned URL whose key was changed: SignatureDoesNotMatch 403."""
    s3.put_object(Bucket=research, Key=prefix + "one", Body=b"1")
    s3.put_object(Bucket=research, Key=prefix + "two", Body=b"2")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": research, "Key": prefix + "one"}, ExpiresIn=300)
    got = requests.get(url.replace(prefix + "one", prefix + "two"), timeout=30)
    answer = h.Raw(got.status_code, got.headers, got.content)
    h.record("GET", url, answer.status, answer.code, answer.message, note="presigned, tampered")
    assert (answer.status, answer.code) == (403, "SignatureDoesNotMatch"), (answer.status, answer.code, answer.message)


def test_presigned_put_by_a_read_only_key_is_denied(readonly_s3, research, prefix, s3):
    url = readonly_s3.generate_presigned_url("put_object", Params={"Bucket": research, "Key": prefix + "ro"}, ExpiresIn=300)
    put = requests.put(url, data=b"x", timeout=30)
    answer = h.Raw(put.status_code, put.headers, put.content)
    assert (answer.status, answer.code) == (403, "AccessDenied"), (answer.status, answer.code, answer.message)
    assert not h.exists(s3, research, prefix + "ro")


def test_repeated_failures_from_one_address_slow_down(own_server):
    """Past auth_failure_limit failures from one address: 503 SlowDown (the QC API's limiter)."""
    server = own_server(auth_failure_limit=3, auth_failure_window_secs=60)
    bad = h.client_at(server.url, h.Key(server.key.access, "w" * 40))
    codes = []
    for _ in range(6):
        error = h.s3_error(bad.list_buckets)
        codes.append((error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]))
    assert codes[0] == ("SignatureDoesNotMatch", 403), codes
    assert codes[-1] == ("SlowDown", 503), codes


def test_object_over_max_object_size_is_entity_too_large(own_server):
    """PutObject larger than max_object_size: EntityTooLarge 400, nothing stored; multipart over it too."""
    server = own_server(max_object_size=6 * 1024 * 1024)
    c = h.client_at(server.url, server.key)
    c.put_object(Bucket="own", Key="fits", Body=b"f" * (6 * 1024 * 1024))
    h.expect_error("EntityTooLarge", 400, c.put_object, Bucket="own", Key="big", Body=b"b" * (6 * 1024 * 1024 + 1))
    assert c.list_objects_v2(Bucket="own", Prefix="big")["KeyCount"] == 0
    upload = c.create_multipart_upload(Bucket="own", Key="mp")["UploadId"]
    part = b"p" * (5 * 1024 * 1024)
    e1 = c.upload_part(Bucket="own", Key="mp", UploadId=upload, PartNumber=1, Body=part)["ETag"]
    try:
        e2 = c.upload_part(Bucket="own", Key="mp", UploadId=upload, PartNumber=2, Body=part)["ETag"]
    except h.ClientError as error:
        got = (error.response["Error"]["Code"], error.response["ResponseMetadata"]["HTTPStatusCode"])
        assert got == ("EntityTooLarge", 400), got
    else:
        h.expect_error(
            "EntityTooLarge", 400, c.complete_multipart_upload, Bucket="own", Key="mp", UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
        )
    assert c.list_objects_v2(Bucket="own", Prefix="mp")["KeyCount"] == 0
