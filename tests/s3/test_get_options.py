"""GetObject/HeadObject options: ranges and 416, conditional headers, response-content-*."""

import datetime as dt

import pytest

import s3helpers as h

DATA = b"0123456789abcdefghij"  # 20 bytes


@pytest.fixture
def obj(s3, research, prefix):
    key = prefix + "range.txt"
    put = s3.put_object(Bucket=research, Key=key, Body=DATA)
    return key, put["ETag"]


@pytest.mark.parametrize(
    "spec,start,end",
    [("bytes=0-4", 0, 4), ("bytes=5-", 5, 19), ("bytes=-3", 17, 19), ("bytes=15-999", 15, 19), ("bytes=19-19", 19, 19)],
)
def test_single_range_is_206_with_content_range(s3, research, obj, spec, start, end):
    """A single satisfiable range: 206, Content-Range bytes S-E/N, the slice."""
    got = s3.get_object(Bucket=research, Key=obj[0], Range=spec)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["ContentRange"] == f"bytes {start}-{end}/{len(DATA)}"
    assert got["ContentLength"] == end - start + 1
    assert got["Body"].read() == DATA[start : end + 1]
    assert got["ETag"] == obj[1]


def test_head_with_a_range_is_206(s3, research, obj):
    head = s3.head_object(Bucket=research, Key=obj[0], Range="bytes=2-5")
    assert head["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert head["ContentRange"] == f"bytes 2-5/{len(DATA)}" and head["ContentLength"] == 4


@pytest.mark.parametrize("spec", ["bytes=20-", "bytes=25-30"])
def test_unsatisfiable_range_is_416_invalid_range(s3, research, obj, spec):
    """A range starting at or past the end: 416 InvalidRange."""
    h.expect_error("InvalidRange", 416, s3.get_object, Bucket=research, Key=obj[0], Range=spec)


def test_range_on_an_empty_object_is_416(s3, research, prefix):
    s3.put_object(Bucket=research, Key=prefix + "empty", Body=b"")
    h.expect_error("InvalidRange", 416, s3.get_object, Bucket=research, Key=prefix + "empty", Range="bytes=0-0")


def test_multiple_ranges_are_refused(s3, research, obj):
    """Several ranges: 400 InvalidArgument. (The contract first said "the whole object with 200, as AWS";
    the coordinator changed it at 06:15: s3s parses Range before stowage sees it and refuses a list.)"""
    h.expect_error("InvalidArgument", 400, s3.get_object, Bucket=research, Key=obj[0], Range="bytes=0-1,4-5")


def test_if_match(s3, research, obj):
    """If-Match: the ETag -> 200; another -> 412 PreconditionFailed (GET and HEAD)."""
    key, etag = obj
    assert s3.get_object(Bucket=research, Key=key, IfMatch=etag)["Body"].read() == DATA
    h.expect_error("PreconditionFailed", 412, s3.get_object, Bucket=research, Key=key, IfMatch='"0123"')
    h.expect_head_status(412, s3.head_object, Bucket=research, Key=key, IfMatch='"0123"')


def test_if_none_match(s3, research, obj):
    """If-None-Match: the ETag -> 304; another -> 200."""
    key, etag = obj
    h.expect_head_status(304, s3.get_object, Bucket=research, Key=key, IfNoneMatch=etag)
    h.expect_head_status(304, s3.head_object, Bucket=research, Key=key, IfNoneMatch=etag)
    assert s3.get_object(Bucket=research, Key=key, IfNoneMatch='"0123"')["Body"].read() == DATA


def test_if_modified_since(s3, research, obj):
    """If-Modified-Since: not modified since -> 304; modified since -> 200."""
    key, _ = obj
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    earlier = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    h.expect_head_status(304, s3.get_object, Bucket=research, Key=key, IfModifiedSince=later)
    assert s3.get_object(Bucket=research, Key=key, IfModifiedSince=earlier)["Body"].read() == DATA


def test_if_unmodified_since(s3, research, obj):
    """If-Unmodified-Since: modified after -> 412 PreconditionFailed; not modified -> 200."""
    key, _ = obj
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    earlier = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    h.expect_error("PreconditionFailed", 412, s3.get_object, Bucket=research, Key=key, IfUnmodifiedSince=earlier)
    assert s3.get_object(Bucket=research, Key=key, IfUnmodifiedSince=later)["Body"].read() == DATA


def test_if_match_wins_over_if_unmodified_since(s3, research, obj):
    """RFC 7232 / AWS: If-Match true and If-Unmodified-Since false -> 200."""
    key, etag = obj
    earlier = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    assert s3.get_object(Bucket=research, Key=key, IfMatch=etag, IfUnmodifiedSince=earlier)["Body"].read() == DATA


def test_response_content_overrides(s3, research, obj):
    """response-content-type|language|expires|cache-control|disposition|encoding set those headers on GET."""
    expires = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    got = s3.get_object(
        Bucket=research,
        Key=obj[0],
        ResponseContentType="application/x-test",
        ResponseContentLanguage="de-CH",
        ResponseExpires=expires,
        ResponseCacheControl="no-cache",
        ResponseContentDisposition='attachment; filename="r.txt"',
        ResponseContentEncoding="identity",
    )
    headers = got["ResponseMetadata"]["HTTPHeaders"]
    assert got["ContentType"] == "application/x-test"
    assert got["ContentLanguage"] == "de-CH"
    assert got["CacheControl"] == "no-cache"
    assert got["ContentDisposition"] == 'attachment; filename="r.txt"'
    assert got["ContentEncoding"] == "identity"
    assert headers.get("expires") == "Wed, 02 Jan 2030 03:04:05 GMT", headers
    assert got["Body"].read() == DATA
