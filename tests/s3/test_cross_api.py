"""One store, two doors: what the QuantConnect API writes the S3 API reads and the reverse, with
the same md5/ETag, size, mime type and times."""

import datetime as dt

import s3helpers as h


def _parse(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_qc_set_then_s3_get(s3, qc_admin, research, research_org, prefix):
    """QC /object/set -> S3 GET/HEAD: same bytes, ETag = QC md5, Content-Type = QC mime, Last-Modified = QC modified."""
    data = b'{"model": [1, 2, 3]}'
    key = prefix + "models/m1.json"
    assert qc_admin.set(research_org, key, data)["success"]
    props = qc_admin.properties(research_org, key)["metadata"]
    got = s3.get_object(Bucket=research, Key=key)
    assert got["Body"].read() == data
    assert got["ETag"] == f'"{props["md5"]}"' == f'"{h.md5_hex(data)}"'
    assert got["ContentType"] == props["mime"] == "application/json"
    assert got["ContentLength"] == props["size"]
    assert abs((got["LastModified"] - _parse(props["modified"])).total_seconds()) < 1


def test_qc_text_and_binary_mime_read_through_s3(s3, qc_admin, research, research_org, prefix):
    for name, data, mime in [("test_key_1", b"Hello, world!", "text/plain"), ("raw", b"\x00\xff\x10", "application/octet-stream"), ("t.csv", b"a,b\n", "text/csv")]:
        assert qc_admin.set(research_org, prefix + name, data)["success"]
        head = s3.head_object(Bucket=research, Key=prefix + name)
        assert head["ContentType"] == mime, (name, head["ContentType"])


def test_s3_put_then_qc(s3, qc_admin, research, research_org, prefix):
    """S3 PUT -> QC properties, list and zip download: same md5, size, mime and bytes."""
    data = b"date,close\n2024-01-02,100\n"
    key = prefix + "prices/spy.csv"
    put = s3.put_object(Bucket=research, Key=key, Body=data, ContentType="text/csv")
    props = qc_admin.properties(research_org, key)
    assert props["success"], props
    meta = props["metadata"]
    assert put["ETag"] == f'"{meta["md5"]}"'
    assert (meta["size"], meta["mime"], meta["key"]) == (len(data), "text/csv", key)
    head = s3.head_object(Bucket=research, Key=key)
    assert abs((head["LastModified"] - _parse(meta["modified"])).total_seconds()) < 1
    listed = qc_admin.list(research_org, prefix + "prices")
    assert [o["name"] for o in listed["objects"]] == ["spy.csv"], listed
    assert qc_admin.get_zip(research_org, [key]) == {key: data}


def test_mime_agrees_between_doors(s3, qc_admin, research, research_org, prefix):
    """The type an S3 client stored is the mime the QC API reports."""
    s3.put_object(Bucket=research, Key=prefix + "odd.bin", Body=b"\x01\x02", ContentType="image/png")
    assert qc_admin.properties(research_org, prefix + "odd.bin")["metadata"]["mime"] == "image/png"
    s3.put_object(Bucket=research, Key=prefix + "plain.json", Body=b"[]")
    head = s3.head_object(Bucket=research, Key=prefix + "plain.json")
    assert qc_admin.properties(research_org, prefix + "plain.json")["metadata"]["mime"] == head["ContentType"]


def test_qc_overwrite_is_seen_by_s3(s3, qc_admin, research, research_org, prefix):
    key = prefix + "shared.txt"
    s3.put_object(Bucket=research, Key=key, Body=b"from s3")
    assert qc_admin.set(research_org, key, b"from qc")["success"]
    got = s3.get_object(Bucket=research, Key=key)
    assert got["Body"].read() == b"from qc" and got["ETag"] == f'"{h.md5_hex(b"from qc")}"'


def test_deletes_cross_doors(s3, qc_admin, research, research_org, prefix):
    """QC delete -> S3 404; S3 delete -> QC 'not found'; QC folder delete removes what S3 stored under it."""
    s3.put_object(Bucket=research, Key=prefix + "a.txt", Body=b"a")
    assert qc_admin.delete(research_org, prefix + "a.txt")["success"]
    h.expect_error("NoSuchKey", 404, s3.get_object, Bucket=research, Key=prefix + "a.txt")
    assert qc_admin.set(research_org, prefix + "b.txt", b"b")["success"]
    s3.delete_object(Bucket=research, Key=prefix + "b.txt")
    assert qc_admin.properties(research_org, prefix + "b.txt")["success"] is False
    for k in ["dir/1", "dir/sub/2"]:
        s3.put_object(Bucket=research, Key=prefix + k, Body=b"x")
    assert qc_admin.delete(research_org, prefix + "dir")["success"]
    assert h.list_keys(s3, research, prefix) == []


def test_folders_agree(s3, qc_admin, research, research_org, prefix):
    """QC list folders = S3 CommonPrefixes; a dir/ marker creates no QC folder."""
    s3.put_object(Bucket=research, Key=prefix + "f1/x", Body=b"x")
    s3.put_object(Bucket=research, Key=prefix + "empty-dir/", Body=b"")
    listed = qc_admin.list(research_org, prefix)
    assert [(o["name"], o["isFolder"]) for o in listed["objects"]] == [("f1", True)], listed
    page = s3.list_objects_v2(Bucket=research, Prefix=prefix, Delimiter="/")
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == [prefix + "f1/"]


def test_multipart_object_through_qc(s3, qc_admin, research, research_org, prefix):
    """A multipart object: S3 ETag -N, QC md5 = the content's md5, zip holds the content."""
    part1 = b"1" * (5 * 1024 * 1024)
    part2 = b"2" * 1000
    key = prefix + "mp.bin"
    upload = s3.create_multipart_upload(Bucket=research, Key=key)["UploadId"]
    parts = []
    for n, d in enumerate([part1, part2], 1):
        parts.append({"PartNumber": n, "ETag": s3.upload_part(Bucket=research, Key=key, UploadId=upload, PartNumber=n, Body=d)["ETag"]})
    done = s3.complete_multipart_upload(Bucket=research, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})
    assert done["ETag"].endswith('-2"')
    meta = qc_admin.properties(research_org, key)["metadata"]
    assert meta["md5"] == h.md5_hex(part1 + part2) and meta["size"] == len(part1) + len(part2)
    assert qc_admin.get_zip(research_org, [key]) == {key: part1 + part2}


def test_copy_is_seen_by_qc(s3, qc_admin, research, research_org, prefix):
    assert qc_admin.set(research_org, prefix + "src.json", b"{}")["success"]
    s3.copy_object(Bucket=research, Key=prefix + "dst.json", CopySource=f"{research}/{prefix}src.json")
    meta = qc_admin.properties(research_org, prefix + "dst.json")["metadata"]
    assert (meta["md5"], meta["size"]) == (h.md5_hex(b"{}"), 2)


def test_usage_is_shared(s3, qc_admin):
    """Bytes written through S3 count in the QC API's objectStorageUsed."""
    made = h.new_org(h.unique("use"))
    s3.put_object(Bucket=made["bucket"], Key="a", Body=b"x" * 1234)
    assert qc_admin.set(made["org"], "b", b"y" * 766)["success"]
    assert qc_admin.list(made["org"])["objectStorageUsed"] == 2000
    s3.delete_object(Bucket=made["bucket"], Key="a")
    assert qc_admin.list(made["org"])["objectStorageUsed"] == 766


def test_an_s3_overwrite_keeps_the_creation_time(s3, qc_admin, research, research_org, prefix):
    """QC `created` keeps the first creation time across S3 overwrites; `modified` moves."""
    import time

    key = prefix + "kept.txt"
    s3.put_object(Bucket=research, Key=key, Body=b"one")
    first = qc_admin.properties(research_org, key)["metadata"]
    time.sleep(1.1)
    s3.put_object(Bucket=research, Key=key, Body=b"two")
    second = qc_admin.properties(research_org, key)["metadata"]
    assert second["created"] == first["created"], (first, second)
    assert _parse(second["modified"]) > _parse(first["modified"]), (first, second)
