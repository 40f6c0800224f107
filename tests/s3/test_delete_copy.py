"""DeleteObjects (per-key results, Quiet, 1000 keys) and CopyObject (within and across buckets,
COPY and REPLACE metadata, onto itself)."""


import s3helpers as h



def test_delete_objects_reports_each_key(s3, research, prefix):
    """DeleteObjects: every key, present or missing, is reported Deleted; the present ones are gone."""
    for k in ["a", "b", "sub/c"]:
        s3.put_object(Bucket=research, Key=prefix + k, Body=b"x")
    keys = [prefix + k for k in ["a", "b", "sub/c", "missing"]]
    answer = s3.delete_objects(Bucket=research, Delete={"Objects": [{"Key": k} for k in keys]})
    assert sorted(d["Key"] for d in answer.get("Deleted", [])) == sorted(keys), answer
    assert "Errors" not in answer, answer
    assert h.list_keys(s3, research, prefix) == []


def test_delete_objects_quiet(s3, research, prefix):
    """Quiet mode reports only errors."""
    s3.put_object(Bucket=research, Key=prefix + "q", Body=b"x")
    answer = s3.delete_objects(Bucket=research, Delete={"Objects": [{"Key": prefix + "q"}], "Quiet": True})
    assert "Deleted" not in answer and "Errors" not in answer, answer
    assert not h.exists(s3, research, prefix + "q")


def test_delete_objects_more_than_1000_keys_is_malformed(s3, research, prefix):
    s3.put_object(Bucket=research, Key=prefix + "stay", Body=b"x")
    objects = [{"Key": prefix + "stay"}] + [{"Key": f"{prefix}k{i}"} for i in range(1000)]
    h.expect_error("MalformedXML", 400, s3.delete_objects, Bucket=research, Delete={"Objects": objects})
    assert h.exists(s3, research, prefix + "stay")


def test_delete_objects_1000_keys_is_fine(s3, research, prefix):
    objects = [{"Key": f"{prefix}k{i}"} for i in range(1000)]
    answer = s3.delete_objects(Bucket=research, Delete={"Objects": objects, "Quiet": True})
    assert "Errors" not in answer, answer


def test_delete_objects_malformed_xml(research):
    """A DeleteObjects body that is not the XML it should be: MalformedXML 400."""
    for body in [b"<Delete><Object><Key>a</Key></Object>", b"not xml at all", b"<Wrong/>"]:
        answer = h.raw(
            "POST", f"/{research}", h.admin_key(), query={"delete": ""}, body=body,
            headers={"content-md5": h.md5_b64(body), "content-type": "application/xml"},
        )
        assert (answer.status, answer.code) == (400, "MalformedXML"), (body, answer.status, answer.code, answer.message)


def test_delete_objects_with_an_invalid_key_reports_it(s3, research, prefix):
    """A key breaking stowage's rules is reported per key (Errors) without stopping the others."""
    s3.put_object(Bucket=research, Key=prefix + "fine", Body=b"x")
    answer = s3.delete_objects(
        Bucket=research, Delete={"Objects": [{"Key": prefix + "fine"}, {"Key": prefix + "bad//key"}]}
    )
    deleted = [d["Key"] for d in answer.get("Deleted", [])]
    errors = {e["Key"]: e["Code"] for e in answer.get("Errors", [])}
    assert prefix + "fine" in deleted and not h.exists(s3, research, prefix + "fine"), answer
    assert errors.get(prefix + "bad//key") == "InvalidArgument" or prefix + "bad//key" in deleted, answer


# --- CopyObject -----------------------------------------------------------------------------


def test_copy_within_a_bucket_keeps_metadata(s3, research, prefix):
    """CopyObject (COPY directive by default): content, ETag, Content-Type and x-amz-meta-* copied."""
    data = b"copy me"
    s3.put_object(Bucket=research, Key=prefix + "src.txt", Body=data, ContentType="text/x-src", Metadata={"k": "v"})
    answer = s3.copy_object(Bucket=research, Key=prefix + "dst.txt", CopySource={"Bucket": research, "Key": prefix + "src.txt"})
    assert answer["CopyObjectResult"]["ETag"] == f'"{h.md5_hex(data)}"'
    head = s3.head_object(Bucket=research, Key=prefix + "dst.txt")
    assert (head["ContentType"], head["Metadata"], head["ContentLength"]) == ("text/x-src", {"k": "v"}, len(data))
    assert h.body_of(s3, research, prefix + "dst.txt") == data
    assert h.body_of(s3, research, prefix + "src.txt") == data


def test_copy_with_replace(s3, research, prefix):
    """x-amz-metadata-directive REPLACE takes the request's Content-Type and metadata."""
    s3.put_object(Bucket=research, Key=prefix + "src", Body=b"r", ContentType="text/plain", Metadata={"old": "1"})
    s3.copy_object(
        Bucket=research, Key=prefix + "dst", CopySource=f"{research}/{prefix}src",
        MetadataDirective="REPLACE", ContentType="application/x-new", Metadata={"new": "2"},
    )
    head = s3.head_object(Bucket=research, Key=prefix + "dst")
    assert (head["ContentType"], head["Metadata"]) == ("application/x-new", {"new": "2"})


def test_copy_onto_itself(s3, research, prefix):
    """Copying onto itself without REPLACE: InvalidRequest 400; with REPLACE: metadata replaced."""
    s3.put_object(Bucket=research, Key=prefix + "self", Body=b"s", Metadata={"a": "1"})
    h.expect_error(
        "InvalidRequest", 400, s3.copy_object, Bucket=research, Key=prefix + "self", CopySource=f"{research}/{prefix}self"
    )
    s3.copy_object(
        Bucket=research, Key=prefix + "self", CopySource=f"{research}/{prefix}self",
        MetadataDirective="REPLACE", Metadata={"a": "2"},
    )
    head = s3.head_object(Bucket=research, Key=prefix + "self")
    assert head["Metadata"] == {"a": "2"} and h.body_of(s3, research, prefix + "self") == b"s"


def test_copy_across_buckets(s3, research, bucket, prefix):
    """CopyObject from one organization's bucket to another's (the key reads one, writes the other)."""
    s3.put_object(Bucket=research, Key=prefix + "x.bin", Body=b"across")
    s3.copy_object(Bucket=bucket, Key="copied/x.bin", CopySource={"Bucket": research, "Key": prefix + "x.bin"})
    assert h.body_of(s3, bucket, "copied/x.bin") == b"across"


def test_copy_of_a_missing_source(s3, research, prefix):
    h.expect_error("NoSuchKey", 404, s3.copy_object, Bucket=research, Key=prefix + "d", CopySource=f"{research}/{prefix}none")


def test_copy_from_or_to_a_foreign_bucket(s3, other_s3, research, other_bucket, prefix):
    """A source or destination bucket the key cannot reach: NoSuchBucket 404."""
    other_s3.put_object(Bucket=other_bucket, Key="secret.txt", Body=b"theirs")
    h.expect_error("NoSuchBucket", 404, s3.copy_object, Bucket=research, Key=prefix + "stolen", CopySource=f"{other_bucket}/secret.txt")
    s3.put_object(Bucket=research, Key=prefix + "mine", Body=b"m")
    h.expect_error("NoSuchBucket", 404, s3.copy_object, Bucket=other_bucket, Key="pushed", CopySource=f"{research}/{prefix}mine")
    assert not h.exists(s3, research, prefix + "stolen")


def test_copy_needs_write_on_the_destination(s3, reader_s3, research, prefix):
    """A reader of the destination gets AccessDenied 403."""
    s3.put_object(Bucket=research, Key=prefix + "src", Body=b"x")
    h.expect_error("AccessDenied", 403, reader_s3.copy_object, Bucket=research, Key=prefix + "dst", CopySource=f"{research}/{prefix}src")
    assert not h.exists(s3, research, prefix + "dst")


def test_copy_to_a_key_stowage_forbids(s3, research, prefix):
    s3.put_object(Bucket=research, Key=prefix + "file", Body=b"x")
    h.expect_error("InvalidArgument", 400, s3.copy_object, Bucket=research, Key=prefix + "file/under", CopySource=f"{research}/{prefix}file")
    h.expect_error("InvalidArgument", 400, s3.copy_object, Bucket=research, Key=prefix + "a//b", CopySource=f"{research}/{prefix}file")


def test_copy_with_non_ascii_source_key(s3, research, prefix):
    src = prefix + "données é/日本 file+1.txt"
    s3.put_object(Bucket=research, Key=src, Body=b"unicode")
    s3.copy_object(Bucket=research, Key=prefix + "copy", CopySource={"Bucket": research, "Key": src})
    assert h.body_of(s3, research, prefix + "copy") == b"unicode"



def test_copy_source_conditions(s3, research, prefix):
    """x-amz-copy-source-if-match / -if-none-match: a failed condition is 412 PreconditionFailed, nothing copied."""
    put = s3.put_object(Bucket=research, Key=prefix + "src", Body=b"x")
    h.expect_error(
        "PreconditionFailed", 412, s3.copy_object, Bucket=research, Key=prefix + "dst",
        CopySource=f"{research}/{prefix}src", CopySourceIfMatch='"0000"',
    )
    h.expect_error(
        "PreconditionFailed", 412, s3.copy_object, Bucket=research, Key=prefix + "dst",
        CopySource=f"{research}/{prefix}src", CopySourceIfNoneMatch=put["ETag"],
    )
    assert not h.exists(s3, research, prefix + "dst")
    s3.copy_object(Bucket=research, Key=prefix + "dst", CopySource=f"{research}/{prefix}src", CopySourceIfMatch=put["ETag"])
    assert h.body_of(s3, research, prefix + "dst") == b"x"
