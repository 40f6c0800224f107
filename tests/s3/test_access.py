"""Permissions and quotas, refused alike through the S3 API and the QuantConnect API: membership
flags, read-only and org-limited keys, QuotaExceeded with its numbers."""

import re

import pytest

import s3helpers as h


@pytest.fixture
def limited_member():
    """An org and a user who is a member with `perms`, with a key and a QC client."""

    def make(perms: str):
        made = h.new_org(h.unique("perm"))
        user = h.new_user(h.unique("u"))
        h.admin("member", "add", "--org", made["org"], "--user", str(user["userId"]), "--permissions", perms)
        key = h.new_key(user["userId"])
        return made, h.client(key), h.QC(str(user["userId"]), user["apiToken"])

    return make


def test_a_reader_cannot_write_or_delete(s3, limited_member):
    """Read-only membership: GET works; PUT -> AccessDenied naming write; DELETE -> AccessDenied naming delete.
    The QuantConnect API refuses the same user the same things."""
    made, c, qc = limited_member("read")
    s3.put_object(Bucket=made["bucket"], Key="r.txt", Body=b"r")
    assert h.body_of(c, made["bucket"], "r.txt") == b"r"
    denied = h.expect_error("AccessDenied", 403, c.put_object, Bucket=made["bucket"], Key="w.txt", Body=b"w")
    assert "write" in denied["Error"]["Message"], denied["Error"]
    denied = h.expect_error("AccessDenied", 403, c.delete_object, Bucket=made["bucket"], Key="r.txt")
    assert "delete" in denied["Error"]["Message"], denied["Error"]
    assert h.exists(s3, made["bucket"], "r.txt") and not h.exists(s3, made["bucket"], "w.txt")
    qc_set = qc.set(made["org"], "w.txt", b"w")
    assert qc_set["success"] is False and "write" in " ".join(qc_set["errors"]), qc_set
    qc_delete = qc.delete(made["org"], "r.txt")
    assert qc_delete["success"] is False and "delete" in " ".join(qc_delete["errors"]), qc_delete
    assert qc.properties(made["org"], "r.txt")["success"]


def test_a_writer_without_delete(s3, limited_member):
    """read,write: PUT and overwrite work; DeleteObject and DeleteObjects are refused (AccessDenied), nothing deleted."""
    made, c, qc = limited_member("read,write")
    c.put_object(Bucket=made["bucket"], Key="a.txt", Body=b"a")
    c.put_object(Bucket=made["bucket"], Key="a.txt", Body=b"a2")
    denied = h.expect_error("AccessDenied", 403, c.delete_object, Bucket=made["bucket"], Key="a.txt")
    assert "delete" in denied["Error"]["Message"], denied["Error"]
    try:
        answer = c.delete_objects(Bucket=made["bucket"], Delete={"Objects": [{"Key": "a.txt"}]})
    except h.ClientError as error:
        assert error.response["Error"]["Code"] == "AccessDenied", error.response["Error"]
    else:
        assert [e["Code"] for e in answer.get("Errors", [])] == ["AccessDenied"], answer
    assert h.body_of(s3, made["bucket"], "a.txt") == b"a2"
    assert qc.delete(made["org"], "a.txt")["success"] is False


def test_a_writer_without_read(s3, limited_member):
    """write only: GET/HEAD/List -> AccessDenied naming read."""
    made, c, qc = limited_member("write")
    c.put_object(Bucket=made["bucket"], Key="blind.txt", Body=b"b")
    denied = h.expect_error("AccessDenied", 403, c.get_object, Bucket=made["bucket"], Key="blind.txt")
    assert "read" in denied["Error"]["Message"], denied["Error"]
    h.expect_head_status(403, c.head_object, Bucket=made["bucket"], Key="blind.txt")
    h.expect_error("AccessDenied", 403, c.list_objects_v2, Bucket=made["bucket"])
    props = qc.properties(made["org"], "blind.txt")
    assert props["success"] is False and "read" in " ".join(props["errors"]), props


def test_read_only_key_of_a_full_member(s3, readonly_s3, research, prefix):
    """A read-only key reads, and is refused every write and delete with AccessDenied 403."""
    s3.put_object(Bucket=research, Key=prefix + "ro.txt", Body=b"ro")
    assert h.body_of(readonly_s3, research, prefix + "ro.txt") == b"ro"
    assert readonly_s3.list_objects_v2(Bucket=research, Prefix=prefix)["KeyCount"] == 1
    calls = [
        (readonly_s3.put_object, {"Key": prefix + "w", "Body": b"w"}),
        (readonly_s3.delete_object, {"Key": prefix + "ro.txt"}),
        (readonly_s3.copy_object, {"Key": prefix + "c", "CopySource": f"{research}/{prefix}ro.txt"}),
        (readonly_s3.create_multipart_upload, {"Key": prefix + "m"}),
    ]
    for call, kwargs in calls:
        h.expect_error("AccessDenied", 403, call, Bucket=research, **kwargs)
    try:
        answer = readonly_s3.delete_objects(Bucket=research, Delete={"Objects": [{"Key": prefix + "ro.txt"}]})
    except h.ClientError as error:
        assert error.response["Error"]["Code"] == "AccessDenied", error.response["Error"]
    else:
        assert [e["Code"] for e in answer.get("Errors", [])] == ["AccessDenied"], answer
    assert h.list_keys(s3, research, prefix) == [prefix + "ro.txt"]


def test_org_limited_key(s3, limited_s3, research, prefix):
    """An org-limited key works in its bucket, sees only it, and gets NoSuchBucket elsewhere."""
    limited_s3.put_object(Bucket=research, Key=prefix + "l.txt", Body=b"l")
    assert h.body_of(limited_s3, research, prefix + "l.txt") == b"l"
    elsewhere = h.new_org(h.unique("else"))["bucket"]
    s3.put_object(Bucket=elsewhere, Key="x", Body=b"x")
    h.expect_error("NoSuchBucket", 404, limited_s3.get_object, Bucket=elsewhere, Key="x")
    h.expect_error("NoSuchBucket", 404, limited_s3.copy_object, Bucket=research, Key=prefix + "c", CopySource=f"{elsewhere}/x")
    h.expect_error("NoSuchBucket", 404, limited_s3.copy_object, Bucket=elsewhere, Key="c", CopySource=f"{research}/{prefix}l.txt")


def test_non_member_is_refused_alike_by_both_doors(other_s3, qc_other):
    """A bucket of an org the user is not in: NoSuchBucket through S3, 'not found or access denied' through QC."""
    made = h.new_org(h.unique("priv"))
    h.expect_error("NoSuchBucket", 404, other_s3.put_object, Bucket=made["bucket"], Key="k", Body=b"x")
    h.expect_error("NoSuchBucket", 404, other_s3.get_object, Bucket=made["bucket"], Key="k")
    h.expect_error("NoSuchBucket", 404, other_s3.get_object, Bucket=made["org"], Key="k")
    answer = qc_other.set(made["org"], "k", b"x")
    assert answer["success"] is False, answer


def test_membership_changes_take_effect_at_once(s3, limited_member):
    made, c, _ = limited_member("read")
    user = [m for m in h.admin("member", "list", "--org", made["org"]) if str(m["userId"]) != h.env("ADMIN_USER_ID")][0]
    h.expect_error("AccessDenied", 403, c.put_object, Bucket=made["bucket"], Key="k", Body=b"x")
    h.admin("member", "set", "--org", made["org"], "--user", str(user["userId"]), "--permissions", "read,write")
    c.put_object(Bucket=made["bucket"], Key="k", Body=b"x")
    h.admin("member", "remove", "--org", made["org"], "--user", str(user["userId"]))
    h.expect_error("NoSuchBucket", 404, c.get_object, Bucket=made["bucket"], Key="k")


# --- quotas -------------------------------------------------------------------------------------


def test_file_quota(s3, qc_admin):
    """Files quota: the next new file is QuotaExceeded 403 naming files, limit and usage; overwrite is fine; QC refuses too."""
    made = h.new_org(h.unique("fq"), max_files=2)
    s3.put_object(Bucket=made["bucket"], Key="1", Body=b"1")
    qc_admin.set(made["org"], "2", b"2")
    denied = h.expect_error("QuotaExceeded", 403, s3.put_object, Bucket=made["bucket"], Key="3", Body=b"3")
    message = denied["Error"]["Message"]
    assert "file" in message.lower() and re.search(r"\b2\b", message), message
    assert not h.exists(s3, made["bucket"], "3")
    refused = qc_admin.set(made["org"], "3", b"3")
    assert refused["success"] is False, refused
    s3.put_object(Bucket=made["bucket"], Key="1", Body=b"overwrite")
    h.expect_error("QuotaExceeded", 403, s3.copy_object, Bucket=made["bucket"], Key="4", CopySource=f"{made['bucket']}/1")
    s3.delete_object(Bucket=made["bucket"], Key="2")
    s3.put_object(Bucket=made["bucket"], Key="3", Body=b"3")


def test_byte_quota(s3, qc_admin):
    """Bytes quota: exceeding -> QuotaExceeded 403 naming bytes, the limit and the usage; reaching it exactly is fine."""
    made = h.new_org(h.unique("bq"), max_bytes=1000)
    s3.put_object(Bucket=made["bucket"], Key="600", Body=b"x" * 600)
    denied = h.expect_error("QuotaExceeded", 403, s3.put_object, Bucket=made["bucket"], Key="500", Body=b"y" * 500)
    message = denied["Error"]["Message"]
    assert re.search(r"\b1[,.]?000\b|\b1(\.0+)? ?KB\b", message) and re.search(r"\b600\b", message), message
    assert not h.exists(s3, made["bucket"], "500")
    refused = qc_admin.set(made["org"], "500", b"y" * 500)
    assert refused["success"] is False, refused
    s3.put_object(Bucket=made["bucket"], Key="400", Body=b"z" * 400)  # exactly the limit
    h.expect_error("QuotaExceeded", 403, s3.put_object, Bucket=made["bucket"], Key="1", Body=b"1")
    s3.put_object(Bucket=made["bucket"], Key="600", Body=b"x" * 100)  # an overwrite counts its net change
    s3.put_object(Bucket=made["bucket"], Key="1", Body=b"1")


def test_quota_changes_take_effect(s3):
    made = h.new_org(h.unique("qc"), max_files=1)
    s3.put_object(Bucket=made["bucket"], Key="a", Body=b"a")
    h.expect_error("QuotaExceeded", 403, s3.put_object, Bucket=made["bucket"], Key="b", Body=b"b")
    h.admin("org", "set-quota", "--org", made["org"], "--max-files", "2")
    s3.put_object(Bucket=made["bucket"], Key="b", Body=b"b")
