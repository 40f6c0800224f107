"""Multipart uploads: Create/UploadPart/Complete/Abort/ListParts/ListMultipartUploads, the
`-N` ETag, part rules (order, ETags, 5 MiB minimum, 1..10000) and quota while pending."""


import pytest

import s3helpers as h

MiB = 1024 * 1024
PART1 = bytes(range(256)) * (5 * MiB // 256)  # exactly 5 MiB
PART2 = b"tail of the object" * 1000



def _upload(s3, bucket, key, parts, **create):
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key, **create)["UploadId"]
    done = []
    for n, data in enumerate(parts, start=1):
        etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=n, Body=data)["ETag"]
        assert etag == f'"{h.md5_hex(data)}"', "a part's ETag is its md5"
        done.append({"PartNumber": n, "ETag": etag})
    return upload, done


def test_multipart_upload_and_etag(s3, research, prefix, qc_admin, research_org):
    """Complete: ETag "<md5 of part md5s>-N"; the content is the parts in order; QC reports the content md5."""
    key = prefix + "big.bin"
    upload, parts = _upload(s3, research, key, [PART1, PART2], ContentType="application/x-parts", Metadata={"m": "1"})
    done = s3.complete_multipart_upload(Bucket=research, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})
    assert done["ETag"] == h.multipart_etag([PART1, PART2])
    assert done["Key"] == key and done["Bucket"] == research
    head = s3.head_object(Bucket=research, Key=key)
    assert head["ETag"] == done["ETag"] and head["ContentLength"] == len(PART1) + len(PART2)
    assert head["ContentType"] == "application/x-parts" and head["Metadata"] == {"m": "1"}
    assert h.body_of(s3, research, key) == PART1 + PART2
    props = qc_admin.properties(research_org, key)
    assert props["success"], props
    assert props["metadata"]["md5"] == h.md5_hex(PART1 + PART2)
    assert props["metadata"]["size"] == len(PART1) + len(PART2)


def test_single_part_upload(s3, research, prefix):
    """One (small) part is fine: it is the last; ETag ends in -1."""
    upload, parts = _upload(s3, research, prefix + "one", [b"only part"])
    done = s3.complete_multipart_upload(Bucket=research, Key=prefix + "one", UploadId=upload, MultipartUpload={"Parts": parts})
    assert done["ETag"] == h.multipart_etag([b"only part"])
    assert h.body_of(s3, research, prefix + "one") == b"only part"


def test_a_part_uploaded_again_replaces_it(s3, research, prefix):
    key = prefix + "again"
    upload = s3.create_multipart_upload(Bucket=research, Key=key)["UploadId"]
    s3.upload_part(Bucket=research, Key=key, UploadId=upload, PartNumber=1, Body=b"first try")
    etag = s3.upload_part(Bucket=research, Key=key, UploadId=upload, PartNumber=1, Body=b"second try")["ETag"]
    parts = s3.list_parts(Bucket=research, Key=key, UploadId=upload)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in parts] == [(1, etag, len(b"second try"))]
    s3.complete_multipart_upload(Bucket=research, Key=key, UploadId=upload, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert h.body_of(s3, research, key) == b"second try"


def test_complete_may_skip_part_numbers(s3, research, prefix):
    """Parts need not be contiguous: 1 and 3 make an object of two parts."""
    key = prefix + "gaps"
    upload = s3.create_multipart_upload(Bucket=research, Key=key)["UploadId"]
    e1 = s3.upload_part(Bucket=research, Key=key, UploadId=upload, PartNumber=1, Body=PART1)["ETag"]
    e3 = s3.upload_part(Bucket=research, Key=key, UploadId=upload, PartNumber=3, Body=b"three")["ETag"]
    done = s3.complete_multipart_upload(
        Bucket=research, Key=key, UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 3, "ETag": e3}]},
    )
    assert done["ETag"] == h.multipart_etag([PART1, b"three"])
    assert h.body_of(s3, research, key) == PART1 + b"three"


def test_parts_out_of_order(s3, research, prefix):
    """Complete with descending part numbers: InvalidPartOrder 400; the upload stays completable."""
    key = prefix + "order"
    upload, parts = _upload(s3, research, key, [PART1, PART2])
    h.expect_error(
        "InvalidPartOrder", 400, s3.complete_multipart_upload, Bucket=research, Key=key, UploadId=upload,
        MultipartUpload={"Parts": list(reversed(parts))},
    )
    assert not h.exists(s3, research, key)
    s3.complete_multipart_upload(Bucket=research, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})


def test_wrong_part_etag(s3, research, prefix):
    """Complete naming an ETag that is not the part's, or a part never uploaded: InvalidPart 400."""
    key = prefix + "etag"
    upload, parts = _upload(s3, research, key, [PART1, PART2])
    wrong = [parts[0], {"PartNumber": 2, "ETag": '"00000000000000000000000000000000"'}]
    h.expect_error("InvalidPart", 400, s3.complete_multipart_upload, Bucket=research, Key=key, UploadId=upload, MultipartUpload={"Parts": wrong})
    missing = parts + [{"PartNumber": 3, "ETag": parts[1]["ETag"]}]
    h.expect_error("InvalidPart", 400, s3.complete_multipart_upload, Bucket=research, Key=key, UploadId=upload, MultipartUpload={"Parts": missing})
    assert not h.exists(s3, research, key)


def test_a_small_part_that_is_not_the_last(s3, research, prefix):
    """A part under 5 MiB that is not the last: EntityTooSmall 400 at Complete."""
    key = prefix + "small"
    upload, parts = _upload(s3, research, key, [b"tiny", b"tiny too"])
    h.expect_error("EntityTooSmall", 400, s3.complete_multipart_upload, Bucket=research, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})
    assert not h.exists(s3, research, key)


@pytest.mark.parametrize("number", [0, 10001])
def test_part_numbers_are_1_to_10000(s3, research, prefix, number):
    """Part number 0 or 10001: InvalidArgument 400; 10000 is fine."""
    key = prefix + "numbers"
    upload = s3.create_multipart_upload(Bucket=research, Key=key)["UploadId"]
    h.expect_error("InvalidArgument", 400, s3.upload_part, Bucket=research, Key=key, UploadId=upload, PartNumber=number, Body=b"x")
    s3.upload_part(Bucket=research, Key=key, UploadId=upload, PartNumber=10000, Body=b"x")
    s3.abort_multipart_upload(Bucket=research, Key=key, UploadId=upload)


def test_abort(s3, research, prefix):
    """Abort: 204; then ListParts, UploadPart and Complete answer NoSuchUpload 404."""
    key = prefix + "aborted"
    upload, parts = _upload(s3, research, key, [b"part"])
    answer = s3.abort_multipart_upload(Bucket=research, Key=key, UploadId=upload)
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 204
    h.expect_error("NoSuchUpload", 404, s3.list_parts, Bucket=research, Key=key, UploadId=upload)
    h.expect_error("NoSuchUpload", 404, s3.upload_part, Bucket=research, Key=key, UploadId=upload, PartNumber=2, Body=b"x")
    h.expect_error("NoSuchUpload", 404, s3.complete_multipart_upload, Bucket=research, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})
    assert not h.exists(s3, research, key)


def test_unknown_upload_id(s3, research, prefix):
    for call, extra in [
        (s3.upload_part, {"PartNumber": 1, "Body": b"x"}),
        (s3.list_parts, {}),
        (s3.abort_multipart_upload, {}),
        (s3.complete_multipart_upload, {"MultipartUpload": {"Parts": [{"PartNumber": 1, "ETag": '"x"'}]}}),
    ]:
        h.expect_error("NoSuchUpload", 404, call, Bucket=research, Key=prefix + "k", UploadId="no-such-upload", **extra)


def test_an_upload_id_belongs_to_its_key(s3, research, prefix):
    upload = s3.create_multipart_upload(Bucket=research, Key=prefix + "mine")["UploadId"]
    h.expect_error("NoSuchUpload", 404, s3.upload_part, Bucket=research, Key=prefix + "other", UploadId=upload, PartNumber=1, Body=b"x")
    s3.abort_multipart_upload(Bucket=research, Key=prefix + "mine", UploadId=upload)


def test_list_parts(s3, research, prefix):
    """ListParts: the parts in order with number, ETag and size; max-parts pages them."""
    key = prefix + "parts"
    upload = s3.create_multipart_upload(Bucket=research, Key=key)["UploadId"]
    datas = {3: b"ccc", 1: b"a", 2: b"bb"}
    for n, d in datas.items():
        s3.upload_part(Bucket=research, Key=key, UploadId=upload, PartNumber=n, Body=d)
    listed = s3.list_parts(Bucket=research, Key=key, UploadId=upload)
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed["Parts"]] == [
        (n, f'"{h.md5_hex(datas[n])}"', len(datas[n])) for n in (1, 2, 3)
    ]
    assert listed["UploadId"] == upload and listed["Key"] == key
    first = s3.list_parts(Bucket=research, Key=key, UploadId=upload, MaxParts=2)
    assert [p["PartNumber"] for p in first["Parts"]] == [1, 2] and first["IsTruncated"] is True
    rest = s3.list_parts(Bucket=research, Key=key, UploadId=upload, PartNumberMarker=first["NextPartNumberMarker"])
    assert [p["PartNumber"] for p in rest["Parts"]] == [3] and rest["IsTruncated"] is False
    s3.abort_multipart_upload(Bucket=research, Key=key, UploadId=upload)


def test_list_multipart_uploads(s3, bucket):
    """ListMultipartUploads shows pending uploads (key, id), filtered by prefix; not after Complete/Abort."""
    a = s3.create_multipart_upload(Bucket=bucket, Key="x/a")["UploadId"]
    b = s3.create_multipart_upload(Bucket=bucket, Key="y/b")["UploadId"]
    listed = s3.list_multipart_uploads(Bucket=bucket)
    assert [(u["Key"], u["UploadId"]) for u in listed.get("Uploads", [])] == [("x/a", a), ("y/b", b)]
    assert all("Initiated" in u for u in listed["Uploads"])
    only = s3.list_multipart_uploads(Bucket=bucket, Prefix="y/")
    assert [u["UploadId"] for u in only.get("Uploads", [])] == [b]
    s3.abort_multipart_upload(Bucket=bucket, Key="x/a", UploadId=a)
    etag = s3.upload_part(Bucket=bucket, Key="y/b", UploadId=b, PartNumber=1, Body=b"b")["ETag"]
    s3.complete_multipart_upload(Bucket=bucket, Key="y/b", UploadId=b, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_complete_with_no_parts_is_malformed(s3, research, prefix):
    upload = s3.create_multipart_upload(Bucket=research, Key=prefix + "none")["UploadId"]
    h.expect_error("MalformedXML", 400, s3.complete_multipart_upload, Bucket=research, Key=prefix + "none", UploadId=upload, MultipartUpload={"Parts": []})
    s3.abort_multipart_upload(Bucket=research, Key=prefix + "none", UploadId=upload)


def test_complete_with_malformed_xml(research, prefix, s3):
    upload = s3.create_multipart_upload(Bucket=research, Key=prefix + "bad")["UploadId"]
    answer = h.raw(
        "POST", f"/{research}/{prefix}bad", h.admin_key(), query={"uploadId": upload},
        body=b"<CompleteMultipartUpload><Part><PartNumber>one</PartNumber>",
    )
    assert (answer.status, answer.code) == (400, "MalformedXML"), (answer.status, answer.code, answer.message)
    s3.abort_multipart_upload(Bucket=research, Key=prefix + "bad", UploadId=upload)


def test_multipart_key_rules(s3, research, prefix):
    """CreateMultipartUpload refuses keys stowage forbids: InvalidArgument 400."""
    h.expect_error("InvalidArgument", 400, s3.create_multipart_upload, Bucket=research, Key=prefix + "a//b")
    h.expect_error("InvalidArgument", 400, s3.create_multipart_upload, Bucket=research, Key=prefix + "x/../y")


def test_multipart_needs_write(readonly_s3, reader_s3, research, prefix):
    for c in (readonly_s3, reader_s3):
        h.expect_error("AccessDenied", 403, c.create_multipart_upload, Bucket=research, Key=prefix + "denied")


def test_pending_parts_count_against_the_byte_quota(s3, qc_admin):
    """Parts count against the byte quota while pending: other writes are refused (both doors), abort frees them."""
    made = h.new_org(h.unique("mpq"), max_bytes=8 * MiB)
    bucket, org = made["bucket"], made["org"]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="big", UploadId=upload, PartNumber=1, Body=PART1)
    four = b"4" * (4 * MiB)
    answer = h.expect_error("QuotaExceeded", 403, s3.put_object, Bucket=bucket, Key="four", Body=four)
    assert "byte" in answer["Error"]["Message"].lower() or "storage" in answer["Error"]["Message"].lower(), answer["Error"]
    refused = qc_admin.set(org, "four-qc", four)
    assert refused["success"] is False, refused
    h.expect_error("QuotaExceeded", 403, s3.upload_part, Bucket=bucket, Key="big", UploadId=upload, PartNumber=2, Body=four)
    s3.abort_multipart_upload(Bucket=bucket, Key="big", UploadId=upload)
    s3.put_object(Bucket=bucket, Key="four", Body=four)
    assert qc_admin.set(org, "four-qc", four)["success"]


def test_upload_part_copy_is_not_implemented_or_works(s3, research, prefix):
    """UploadPartCopy: NotImplemented 501 unless implemented; when implemented the copied part is right."""
    s3.put_object(Bucket=research, Key=prefix + "src", Body=b"source bytes")
    upload = s3.create_multipart_upload(Bucket=research, Key=prefix + "dst")["UploadId"]
    try:
        etag = s3.upload_part_copy(
            Bucket=research, Key=prefix + "dst", UploadId=upload, PartNumber=1, CopySource=f"{research}/{prefix}src"
        )["CopyPartResult"]["ETag"]
    except h.ClientError as error:
        got = (error.response["Error"]["Code"], error.response["ResponseMetadata"]["HTTPStatusCode"])
        assert got == ("NotImplemented", 501), got
    else:
        s3.complete_multipart_upload(
            Bucket=research, Key=prefix + "dst", UploadId=upload, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]}
        )
        assert h.body_of(s3, research, prefix + "dst") == b"source bytes"


def test_abandoned_uploads_expire(own_server):
    """s3_api_multipart_expiry_secs: a pending upload older than it is gone (NoSuchUpload, not listed) and its
    parts no longer count against the quota."""
    import time

    server = own_server(s3_api_multipart_expiry_secs=1, gc_interval_secs=1)
    server.admin("org", "set-quota", "--org", _own_org(server), "--max-bytes", str(6 * MiB))
    c = h.client_at(server.url, server.key)
    upload = c.create_multipart_upload(Bucket="own", Key="left")["UploadId"]
    c.upload_part(Bucket="own", Key="left", UploadId=upload, PartNumber=1, Body=PART1)
    h.expect_error("QuotaExceeded", 403, c.put_object, Bucket="own", Key="other", Body=b"x" * (2 * MiB))
    deadline = time.time() + 15
    while c.list_multipart_uploads(Bucket="own").get("Uploads") and time.time() < deadline:
        time.sleep(0.5)
    assert c.list_multipart_uploads(Bucket="own").get("Uploads", []) == []
    h.expect_error("NoSuchUpload", 404, c.upload_part, Bucket="own", Key="left", UploadId=upload, PartNumber=2, Body=b"x")
    c.put_object(Bucket="own", Key="other", Body=b"x" * (2 * MiB))


def _own_org(server) -> str:
    import json

    orgs = json.loads(server.admin("org", "list"))
    return next(o["organizationId"] for o in orgs if o.get("bucket") == "own")
