"""PutObject / GetObject / HeadObject / DeleteObject: ETags, types, metadata, digests and
checksums, If-None-Match, stowage's key rules and the zero-byte `dir/` marker."""

import base64
import datetime as dt
import hashlib
import zlib

import pytest

import s3helpers as h


def test_put_get_head_round_trip(s3, research, prefix):
    """PutObject then GetObject/HeadObject: body, ETag = quoted content md5, length, Last-Modified."""
    data = b"Hello, world!"
    put = s3.put_object(Bucket=research, Key=prefix + "hello.txt", Body=data)
    assert put["ETag"] == f'"{h.md5_hex(data)}"'
    got = s3.get_object(Bucket=research, Key=prefix + "hello.txt")
    assert got["Body"].read() == data
    assert got["ETag"] == put["ETag"] and got["ContentLength"] == len(data)
    head = s3.head_object(Bucket=research, Key=prefix + "hello.txt")
    assert head["ETag"] == put["ETag"] and head["ContentLength"] == len(data)
    now = dt.datetime.now(dt.timezone.utc)
    assert abs((head["LastModified"] - now).total_seconds()) < 120, head["LastModified"]
    assert head["LastModified"] == got["LastModified"]


def test_overwrite_replaces_content_and_etag(s3, research, prefix):
    key = prefix + "over.bin"
    s3.put_object(Bucket=research, Key=key, Body=b"first")
    put = s3.put_object(Bucket=research, Key=key, Body=b"second version")
    assert h.body_of(s3, research, key) == b"second version"
    assert s3.head_object(Bucket=research, Key=key)["ETag"] == put["ETag"] == f'"{h.md5_hex(b"second version")}"'


def test_empty_object(s3, research, prefix):
    """A zero-byte object (not a dir/ marker) is stored."""
    put = s3.put_object(Bucket=research, Key=prefix + "empty", Body=b"")
    assert put["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"'
    head = s3.head_object(Bucket=research, Key=prefix + "empty")
    assert head["ContentLength"] == 0
    assert h.body_of(s3, research, prefix + "empty") == b""


def test_binary_and_larger_body(s3, research, prefix):
    data = bytes(range(256)) * 8192  # 2 MiB with every byte value
    s3.put_object(Bucket=research, Key=prefix + "blob.bin", Body=data)
    assert h.body_of(s3, research, prefix + "blob.bin") == data


def test_content_type_is_stored(s3, research, prefix):
    """Content-Type from PutObject comes back on GET and HEAD."""
    s3.put_object(Bucket=research, Key=prefix + "x.dat", Body=b"{}", ContentType="application/vnd.custom+json")
    assert s3.head_object(Bucket=research, Key=prefix + "x.dat")["ContentType"] == "application/vnd.custom+json"
    assert s3.get_object(Bucket=research, Key=prefix + "x.dat")["ContentType"] == "application/vnd.custom+json"


def test_content_type_defaults_to_stowage_mime_rules(research, prefix, admin_key):
    """Without Content-Type: stowage's mime rules (extension, else text/plain or octet-stream)."""
    for name, data, mime in [
        ("m.json", b'{"a": 1}', "application/json"),
        ("t.csv", b"a,b\n1,2\n", "text/csv"),
        ("test_key_1", b"Hello, world!", "text/plain"),
        ("bin", b"\x00\x01\x02\xff", "application/octet-stream"),
    ]:
        answer = h.raw("PUT", f"/{research}/{prefix}{name}", admin_key, body=data)
        assert answer.status == 200, (answer.status, answer.code, answer.message)
        head = h.raw("HEAD", f"/{research}/{prefix}{name}", admin_key)
        assert head.headers.get("content-type", "").split(";")[0] == mime, (name, head.headers)


def test_user_metadata_is_stored_lowercased(s3, research, prefix):
    """x-amz-meta-* come back (names lowercased) on GET and HEAD."""
    s3.put_object(
        Bucket=research, Key=prefix + "meta.txt", Body=b"m", Metadata={"Color": "Blue", "run-id": "42"}
    )
    assert s3.head_object(Bucket=research, Key=prefix + "meta.txt")["Metadata"] == {"color": "Blue", "run-id": "42"}
    assert s3.get_object(Bucket=research, Key=prefix + "meta.txt")["Metadata"] == {"color": "Blue", "run-id": "42"}


def test_missing_object(s3, research, prefix):
    """GetObject of a missing key: NoSuchKey 404; HeadObject: 404 without body."""
    h.expect_error("NoSuchKey", 404, s3.get_object, Bucket=research, Key=prefix + "nothing")
    h.expect_head_status(404, s3.head_object, Bucket=research, Key=prefix + "nothing")
    raw = h.raw("HEAD", f"/{research}/{prefix}nothing", h.admin_key())
    assert raw.status == 404 and raw.body == b""


def test_delete_object(s3, research, prefix):
    """DeleteObject: 204, then gone; a missing key is 204 too."""
    s3.put_object(Bucket=research, Key=prefix + "d.txt", Body=b"x")
    assert s3.delete_object(Bucket=research, Key=prefix + "d.txt")["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert not h.exists(s3, research, prefix + "d.txt")
    assert s3.delete_object(Bucket=research, Key=prefix + "d.txt")["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert s3.delete_object(Bucket=research, Key=prefix + "never")["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_delete_of_the_last_file_removes_its_folder(s3, research, prefix):
    s3.put_object(Bucket=research, Key=prefix + "f/only.txt", Body=b"x")
    s3.delete_object(Bucket=research, Key=prefix + "f/only.txt")
    listed = s3.list_objects_v2(Bucket=research, Prefix=prefix, Delimiter="/")
    assert "CommonPrefixes" not in listed and "Contents" not in listed, listed


# --- Content-MD5 and checksums ------------------------------------------------------------------


def test_content_md5_is_verified(s3, research, prefix):
    """Content-MD5: right -> stored; wrong -> BadDigest 400, nothing stored; malformed -> InvalidDigest 400."""
    data = b"checked content"
    s3.put_object(Bucket=research, Key=prefix + "ok", Body=data, ContentMD5=h.md5_b64(data))
    assert h.body_of(s3, research, prefix + "ok") == data
    h.expect_error("BadDigest", 400, s3.put_object, Bucket=research, Key=prefix + "bad", Body=data, ContentMD5=h.md5_b64(b"other"))
    assert not h.exists(s3, research, prefix + "bad")
    h.expect_error("InvalidDigest", 400, s3.put_object, Bucket=research, Key=prefix + "bad", Body=data, ContentMD5="not-base64!!")
    assert not h.exists(s3, research, prefix + "bad")


def test_bad_digest_keeps_the_previous_version(s3, research, prefix):
    """A refused overwrite leaves the old content."""
    s3.put_object(Bucket=research, Key=prefix + "keep", Body=b"old")
    h.expect_error("BadDigest", 400, s3.put_object, Bucket=research, Key=prefix + "keep", Body=b"new", ContentMD5=h.md5_b64(b"x"))
    assert h.body_of(s3, research, prefix + "keep") == b"old"


@pytest.mark.parametrize(
    "algorithm,digest",
    [
        ("CRC32", lambda d: base64.b64encode(zlib.crc32(d).to_bytes(4, "big")).decode()),
        ("SHA1", lambda d: base64.b64encode(hashlib.sha1(d).digest()).decode()),
        ("SHA256", lambda d: base64.b64encode(hashlib.sha256(d).digest()).decode()),
    ],
)
def test_checksums_are_verified(s3, research, prefix, algorithm, digest):
    """x-amz-checksum-*: right -> stored; wrong -> BadDigest 400 and nothing stored."""
    data = b"checksummed " + algorithm.encode()
    s3.put_object(Bucket=research, Key=prefix + "ok", Body=data, **{f"Checksum{algorithm}": digest(data)})
    assert h.body_of(s3, research, prefix + "ok") == data
    h.expect_error(
        "BadDigest", 400, s3.put_object, Bucket=research, Key=prefix + "bad", Body=data,
        **{f"Checksum{algorithm}": digest(b"something else")},
    )
    assert not h.exists(s3, research, prefix + "bad")


def test_crc32c_checksum_is_verified(research, prefix, admin_key):
    """x-amz-checksum-crc32c (hand-computed: boto3 needs awscrt for it)."""
    data = b"crc32c content"
    good = base64.b64encode(_crc32c(data).to_bytes(4, "big")).decode()
    bad = base64.b64encode(_crc32c(b"other").to_bytes(4, "big")).decode()
    ok = h.raw("PUT", f"/{research}/{prefix}ok", admin_key, body=data, headers={"x-amz-checksum-crc32c": good})
    assert ok.status == 200, (ok.status, ok.code, ok.message)
    refused = h.raw("PUT", f"/{research}/{prefix}bad", admin_key, body=data, headers={"x-amz-checksum-crc32c": bad})
    assert (refused.status, refused.code) == (400, "BadDigest"), (refused.status, refused.code, refused.message)
    assert h.raw("HEAD", f"/{research}/{prefix}bad", admin_key).status == 404


def test_crc64nvme_checksum_is_verified(research, prefix, admin_key):
    """x-amz-checksum-crc64nvme (hand-computed): right -> stored and echoed; wrong -> BadDigest 400, nothing stored."""
    data = b"crc64nvme content"
    good = base64.b64encode(_crc64nvme(data).to_bytes(8, "big")).decode()
    bad = base64.b64encode(_crc64nvme(b"other").to_bytes(8, "big")).decode()
    ok = h.raw("PUT", f"/{research}/{prefix}ok", admin_key, body=data, headers={"x-amz-checksum-crc64nvme": good})
    assert ok.status == 200, (ok.status, ok.code, ok.message)
    assert ok.headers.get("x-amz-checksum-crc64nvme") == good, dict(ok.headers)
    refused = h.raw("PUT", f"/{research}/{prefix}bad", admin_key, body=data, headers={"x-amz-checksum-crc64nvme": bad})
    assert (refused.status, refused.code) == (400, "BadDigest"), (refused.status, refused.code, refused.message)
    assert h.raw("HEAD", f"/{research}/{prefix}bad", admin_key).status == 404


def test_checksums_are_echoed_and_returned_on_request(s3, research, prefix):
    """A PutObject checksum is echoed, and GET/HEAD with x-amz-checksum-mode ENABLED return it (not without)."""
    data = b"keep my checksum"
    sha = base64.b64encode(hashlib.sha256(data).digest()).decode()
    put = s3.put_object(Bucket=research, Key=prefix + "c", Body=data, ChecksumSHA256=sha)
    assert put.get("ChecksumSHA256") == sha, put
    assert s3.get_object(Bucket=research, Key=prefix + "c", ChecksumMode="ENABLED").get("ChecksumSHA256") == sha
    assert s3.head_object(Bucket=research, Key=prefix + "c", ChecksumMode="ENABLED").get("ChecksumSHA256") == sha
    assert "ChecksumSHA256" not in s3.head_object(Bucket=research, Key=prefix + "c")


def test_signed_payload_hash_mismatch_stores_nothing(research, prefix, admin_key):
    """x-amz-content-sha256 that does not match the body: XAmzContentSHA256Mismatch 400 (as AWS), nothing stored."""
    answer = h.raw(
        "PUT", f"/{research}/{prefix}lie", admin_key, body=b"actual body",
        payload_hash=hashlib.sha256(b"another body").hexdigest(),
    )
    assert (answer.status, answer.code) == (400, "XAmzContentSHA256Mismatch"), (answer.status, answer.code, answer.message)
    assert h.raw("HEAD", f"/{research}/{prefix}lie", admin_key).status == 404


def test_if_none_match_star_creates_only_when_absent(s3, research, prefix):
    """PutObject If-None-Match: * -> created when absent; present -> 412 PreconditionFailed, content kept."""
    s3.put_object(Bucket=research, Key=prefix + "once", Body=b"first", IfNoneMatch="*")
    h.expect_error("PreconditionFailed", 412, s3.put_object, Bucket=research, Key=prefix + "once", Body=b"second", IfNoneMatch="*")
    assert h.body_of(s3, research, prefix + "once") == b"first"


# --- streaming uploads ----------------------------------------------------------------------


def test_aws_chunked_signed_upload(s3, research, prefix, admin_key):
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD (signed chunks) stores the decoded body."""
    data = bytes(range(256)) * 1000
    answer = h.streaming_put(f"/{research}/{prefix}chunked.bin", admin_key, data)
    assert answer.status == 200, (answer.status, answer.code, answer.message)
    assert answer.headers.get("etag") == f'"{h.md5_hex(data)}"'
    assert h.body_of(s3, research, prefix + "chunked.bin") == data


def test_aws_chunked_bad_chunk_signature_stores_nothing(s3, research, prefix, admin_key):
    """A wrong chunk signature: SignatureDoesNotMatch 403, nothing stored."""
    answer = h.streaming_put(f"/{research}/{prefix}forged.bin", admin_key, b"z" * 200_000, corrupt_chunk=True)
    assert (answer.status, answer.code) == (403, "SignatureDoesNotMatch"), (answer.status, answer.code, answer.message)
    assert not h.exists(s3, research, prefix + "forged.bin")


def test_unsigned_payload_with_trailing_checksum(s3, research, prefix, admin_key):
    """STREAMING-UNSIGNED-PAYLOAD-TRAILER with x-amz-checksum-crc32: stored; a wrong trailer: BadDigest, nothing stored."""
    data = b"trailer " * 30000
    answer = h.unsigned_trailer_put(f"/{research}/{prefix}trailer.bin", admin_key, data)
    assert answer.status == 200, (answer.status, answer.code, answer.message)
    assert h.body_of(s3, research, prefix + "trailer.bin") == data
    bad = h.unsigned_trailer_put(f"/{research}/{prefix}bad.bin", admin_key, data, checksum=b"\0\0\0\0")
    assert (bad.status, bad.code) == (400, "BadDigest"), (bad.status, bad.code, bad.message)
    assert not h.exists(s3, research, prefix + "bad.bin")


def test_unsigned_payload(s3, research, prefix, admin_key):
    """x-amz-content-sha256: UNSIGNED-PAYLOAD (signed headers, body not hashed) is accepted."""
    answer = h.raw("PUT", f"/{research}/{prefix}unsigned", admin_key, body=b"body", payload_hash="UNSIGNED-PAYLOAD")
    assert answer.status == 200, (answer.status, answer.code, answer.message)
    assert h.body_of(s3, research, prefix + "unsigned") == b"body"


# --- key rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["a//b", "a/./b", "a/../b", "./a", "../a", "a/..", "a/.", "x/" + "s/" * 100 + "end", "a\\b", "tab\there", "ctl\x01x", "del\x7fx"],
    ids=[
        "double-slash", "dot-segment", "dotdot-segment", "leading-dot", "leading-dotdot", "trailing-dotdot",
        "trailing-dot", "101-segments", "backslash", "tab", "control-U+0001", "control-U+007F",
    ],
)
def test_keys_stowage_forbids_are_invalid_argument(s3, research, prefix, key):
    """`//`, `.`/`..` segments, more than 100 segments, `\\`, control characters: InvalidArgument 400 with a
    message, nothing stored."""
    answer = h.expect_error("InvalidArgument", 400, s3.put_object, Bucket=research, Key=prefix + key, Body=b"x")
    assert answer["Error"].get("Message"), "the refusal says what is wrong"
    assert h.list_keys(s3, research, prefix) == []


def test_leading_slash_key_is_invalid_argument(s3, research):
    """A key with a leading `/` (stowage would store it without): InvalidArgument 400 naming the key to use."""
    answer = h.expect_error("InvalidArgument", 400, s3.put_object, Bucket=research, Key="/lead-slash", Body=b"x")
    assert "lead-slash" in answer["Error"]["Message"], answer["Error"]
    assert not h.exists(s3, research, "lead-slash")


def test_dots_inside_names_are_ordinary(s3, research, prefix):
    """Only whole `.`/`..` segments are refused: `..a`, `a..`, `.hidden`, ` space` are keys like any other."""
    keys = [prefix + k for k in ["..a", "a..", "x/.hidden", " space", "a/ /b"]]
    for k in keys:
        s3.put_object(Bucket=research, Key=k, Body=b"v")
    assert sorted(h.list_keys(s3, research, prefix), key=str.encode) == sorted(keys, key=str.encode)


def test_key_under_a_file_and_key_over_a_folder(s3, research, prefix):
    """A key whose ancestor is a file, or a key that is a folder: InvalidArgument 400."""
    s3.put_object(Bucket=research, Key=prefix + "a", Body=b"file")
    h.expect_error("InvalidArgument", 400, s3.put_object, Bucket=research, Key=prefix + "a/b", Body=b"x")
    s3.put_object(Bucket=research, Key=prefix + "d/inner.txt", Body=b"x")
    h.expect_error("InvalidArgument", 400, s3.put_object, Bucket=research, Key=prefix + "d", Body=b"x")
    assert sorted(h.list_keys(s3, research, prefix)) == [prefix + "a", prefix + "d/inner.txt"]


def test_trailing_slash_with_a_body_is_invalid(s3, research, prefix):
    """A key ending in `/` with a body: InvalidArgument 400, nothing stored."""
    h.expect_error("InvalidArgument", 400, s3.put_object, Bucket=research, Key=prefix + "folder/", Body=b"content")
    assert h.list_keys(s3, research, prefix) == []


def test_trailing_slash_with_a_streamed_body_is_invalid(s3, research, prefix, admin_key):
    """The same through aws-chunked bodies (how boto3 uploads over HTTPS: no plain Content-Length, the size in
    x-amz-decoded-content-length): InvalidArgument 400, never a silently emptied `dir/` marker."""
    answer = h.unsigned_trailer_put(f"/{research}/{prefix}trailer-folder/", admin_key, b"content")
    assert (answer.status, answer.code) == (400, "InvalidArgument"), (answer.status, answer.code, answer.message, answer.headers.get("etag"))
    answer = h.streaming_put(f"/{research}/{prefix}signed-folder/", admin_key, b"content")
    assert (answer.status, answer.code) == (400, "InvalidArgument"), (answer.status, answer.code, answer.message, answer.headers.get("etag"))
    answer = h.unsigned_trailer_put(f"/{research}/{prefix}te-folder/", admin_key, b"content", transfer_chunked=True)
    assert (answer.status, answer.code) == (400, "InvalidArgument"), (answer.status, answer.code, answer.message, answer.headers.get("etag"))
    assert h.list_keys(s3, research, prefix) == []


def test_streamed_upload_without_content_length(s3, research, prefix, admin_key):
    """aws-chunked with Transfer-Encoding: chunked and no Content-Length (boto3's PutObject over HTTPS) stores
    the whole body, and a wrong trailer checksum stores nothing."""
    data = b"streamed without a length " * 5000
    answer = h.unsigned_trailer_put(f"/{research}/{prefix}te.bin", admin_key, data, transfer_chunked=True)
    assert answer.status == 200, (answer.status, answer.code, answer.message)
    assert h.body_of(s3, research, prefix + "te.bin") == data
    bad = h.unsigned_trailer_put(f"/{research}/{prefix}te-bad.bin", admin_key, data, checksum=b"\0\0\0\0", transfer_chunked=True)
    assert (bad.status, bad.code) == (400, "BadDigest"), (bad.status, bad.code, bad.message)
    assert not h.exists(s3, research, prefix + "te-bad.bin")


def test_a_streamed_zero_byte_dir_marker(s3, research, prefix, admin_key):
    """A `dir/` marker sent aws-chunked with no data is the same marker: 200, the empty ETag, not stored."""
    answer = h.unsigned_trailer_put(f"/{research}/{prefix}streamed-dir/", admin_key, b"")
    assert answer.status == 200 and answer.headers.get("etag") == '"d41d8cd98f00b204e9800998ecf8427e"', (
        answer.status, answer.code, answer.message,
    )
    assert h.list_keys(s3, research, prefix) == []


def test_over_long_key(s3, research):
    """A key over 1024 bytes: KeyTooLongError 400."""
    h.expect_error("KeyTooLongError", 400, s3.put_object, Bucket=research, Key="k" * 1025, Body=b"x")
    h.expect_error("KeyTooLongError", 400, s3.put_object, Bucket=research, Key="é" * 513, Body=b"x")


def test_unicode_and_special_characters_in_keys(s3, research, prefix):
    """Any other Unicode, spaces, +, %, ?, #, & and = are ordinary key characters."""
    keys = [prefix + k for k in ["space key.txt", "plus+sign", "per%20cent", "q?mark", "hash#tag", "amp&eq=1", "日本語/ファイル.txt", "emoji-😀"]]
    for k in keys:
        s3.put_object(Bucket=research, Key=k, Body=k.encode())
    for k in keys:
        assert h.body_of(s3, research, k) == k.encode(), k
    assert sorted(h.list_keys(s3, research, prefix), key=str.encode) == sorted(keys, key=str.encode)


# --- the dir/ marker ------------------------------------------------------------------------


def test_zero_byte_dir_marker_is_answered_but_not_stored(s3, research, prefix):
    """PUT `dir/` with no body: 200 with the empty ETag, not stored: HEAD/GET 404, not listed."""
    put = s3.put_object(Bucket=research, Key=prefix + "dir/", Body=b"")
    assert put["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"'
    h.expect_head_status(404, s3.head_object, Bucket=research, Key=prefix + "dir/")
    h.expect_error("NoSuchKey", 404, s3.get_object, Bucket=research, Key=prefix + "dir/")
    listed = s3.list_objects_v2(Bucket=research, Prefix=prefix, Delimiter="/")
    assert "Contents" not in listed and "CommonPrefixes" not in listed, listed
    assert h.list_keys(s3, research, prefix) == []


def test_folder_shows_while_it_holds_files(s3, research, prefix):
    """A folder is a CommonPrefix while it holds files; a dir/ marker beside it changes nothing."""
    s3.put_object(Bucket=research, Key=prefix + "dir/file.txt", Body=b"x")
    s3.put_object(Bucket=research, Key=prefix + "dir/", Body=b"")
    listed = s3.list_objects_v2(Bucket=research, Prefix=prefix, Delimiter="/")
    assert [p["Prefix"] for p in listed.get("CommonPrefixes", [])] == [prefix + "dir/"]
    assert "Contents" not in listed
    assert h.list_keys(s3, research, prefix) == [prefix + "dir/file.txt"]
    s3.delete_object(Bucket=research, Key=prefix + "dir/")  # a missing key: 204, the folder stays
    assert h.list_keys(s3, research, prefix) == [prefix + "dir/file.txt"]


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _crc64nvme(data: bytes) -> int:
    """CRC-64/NVME: reflected polynomial 0x9A6C9329AC4BC9B5, initial value and final xor all ones."""
    crc = 0xFFFFFFFFFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x9A6C9329AC4BC9B5 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFFFFFFFFFF



def test_a_folder_is_not_an_object(s3, research, prefix):
    """HEAD/GET of a folder's name (with or without `/`) while it holds files: 404 NoSuchKey."""
    s3.put_object(Bucket=research, Key=prefix + "dir/file.txt", Body=b"x")
    for name in ["dir", "dir/"]:
        h.expect_head_status(404, s3.head_object, Bucket=research, Key=prefix + name)
        h.expect_error("NoSuchKey", 404, s3.get_object, Bucket=research, Key=prefix + name)


def test_deleting_a_folder_name_deletes_nothing_under_it(s3, research, prefix):
    """S3 DeleteObject/DeleteObjects of `dir` or `dir/` is a missing key (204 / Deleted): the files under it stay
    (unlike the QuantConnect API's folder delete)."""
    s3.put_object(Bucket=research, Key=prefix + "dir/a.txt", Body=b"a")
    s3.put_object(Bucket=research, Key=prefix + "dir/sub/b.txt", Body=b"b")
    for name in ["dir", "dir/"]:
        assert s3.delete_object(Bucket=research, Key=prefix + name)["ResponseMetadata"]["HTTPStatusCode"] == 204
    answer = s3.delete_objects(Bucket=research, Delete={"Objects": [{"Key": prefix + "dir"}, {"Key": prefix + "dir/"}]})
    assert "Errors" not in answer, answer
    assert sorted(h.list_keys(s3, research, prefix)) == [prefix + "dir/a.txt", prefix + "dir/sub/b.txt"]
