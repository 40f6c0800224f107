"""Buckets are organizations: names, listing, location, versioning, CreateBucket and
DeleteBucket rights."""

import re

import s3helpers as h


def test_list_buckets_shows_the_organizations_a_key_reaches(s3, limited_s3, other_s3, research, other_bucket):
    """ListBuckets: every organization the key reaches, by alias (else id); an org-limited key sees its one."""
    names = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert research in names, names
    assert other_bucket not in names, "the admin is not a member of the other user's organization"
    assert [b["Name"] for b in limited_s3.list_buckets()["Buckets"]] == [research]
    assert {b["Name"] for b in other_s3.list_buckets()["Buckets"]} == {research, other_bucket}
    for b in s3.list_buckets()["Buckets"]:
        assert "CreationDate" in b, b


def test_an_organization_without_alias_is_listed_by_its_id(s3):
    """An org without a bucket name is listed and addressed by its 32-hex id."""
    org = h.new_org()["org"]
    assert org in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    s3.put_object(Bucket=org, Key="by-id.txt", Body=b"x")
    assert h.body_of(s3, org, "by-id.txt") == b"x"


def test_the_org_id_and_the_alias_name_the_same_bucket(s3, research, research_org, prefix):
    """A 32-hex organization id is a bucket name for the same organization as its alias."""
    s3.put_object(Bucket=research_org, Key=prefix + "via-id", Body=b"same")
    assert h.body_of(s3, research, prefix + "via-id") == b"same"
    s3.head_bucket(Bucket=research_org)


def test_unknown_and_foreign_buckets_are_no_such_bucket(s3, limited_s3, other_bucket, research):
    """Unknown, foreign and outside-an-org-limited-key buckets all answer NoSuchBucket 404."""
    for bucket in ["no-such-bucket-here", "0" * 32, other_bucket]:
        h.expect_error("NoSuchBucket", 404, s3.list_objects_v2, Bucket=bucket)
        h.expect_error("NoSuchBucket", 404, s3.get_object, Bucket=bucket, Key="k")
        h.expect_error("NoSuchBucket", 404, s3.put_object, Bucket=bucket, Key="k", Body=b"x")
        h.expect_head_status(404, s3.head_bucket, Bucket=bucket)
    # The admin belongs to the initial organization too, but this key is limited to `research`.
    org = h.new_org(h.unique("lim"))["bucket"]
    h.expect_error("NoSuchBucket", 404, limited_s3.list_objects_v2, Bucket=org)
    h.expect_error("NoSuchBucket", 404, limited_s3.put_object, Bucket=org, Key="k", Body=b"x")
    limited_s3.head_bucket(Bucket=research)


def test_get_bucket_location_is_empty_for_us_east_1(s3, research):
    """GetBucketLocation answers the region, empty for us-east-1 as AWS does."""
    assert s3.get_bucket_location(Bucket=research).get("LocationConstraint") in (None, "")
    raw = h.raw("GET", f"/{research}", h.admin_key(), query={"location": ""})
    assert raw.status == 200, (raw.status, raw.body)
    assert raw.xml().tag.endswith("LocationConstraint") and not (raw.xml().text or "").strip(), raw.body


def test_get_bucket_versioning_has_no_status(s3, research):
    """GetBucketVersioning: versioning never enabled, so no Status."""
    answer = s3.get_bucket_versioning(Bucket=research)
    assert "Status" not in answer and "MFADelete" not in answer, answer


def test_create_bucket_makes_an_organization_the_caller_administers(s3, qc_admin):
    """CreateBucket by a full server-admin key: an org named ALIAS, the caller a read/write/delete member."""
    name = h.unique("made")
    s3.create_bucket(Bucket=name)
    assert name in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    s3.head_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="f.txt", Body=b"hello")
    assert h.body_of(s3, name, "f.txt") == b"hello"
    s3.delete_object(Bucket=name, Key="f.txt")
    orgs = [o for o in h.admin("org", "list") if o.get("bucket") == name]
    assert len(orgs) == 1 and orgs[0]["name"] == name, orgs
    members = h.admin("member", "list", "--org", orgs[0]["organizationId"])
    assert [str(m["userId"]) for m in members] == [h.env("ADMIN_USER_ID")], members
    granted = set(re.split(r"[,\s]+", members[0]["permissions"]))
    assert {"read", "write", "delete", "admin"} <= granted, members
    # The QuantConnect API sees the new organization too.
    assert qc_admin.set(orgs[0]["organizationId"], "from-qc.txt", b"qc")["success"]
    assert h.body_of(s3, name, "from-qc.txt") == b"qc"


def test_create_bucket_needs_a_full_server_admin_key(readonly_s3, limited_s3, other_s3):
    """CreateBucket: a read-only key, an org-limited key and a non-server-admin's key get AccessDenied 403."""
    for c in (readonly_s3, limited_s3, other_s3):
        name = h.unique("denied")
        h.expect_error("AccessDenied", 403, c.create_bucket, Bucket=name)
    assert not [o for o in h.admin("org", "list") if (o.get("bucket") or "").startswith("denied-")]


def test_create_bucket_with_a_taken_name(s3, research, other_bucket):
    """Existing alias: BucketAlreadyOwnedByYou 409 for a member, BucketAlreadyExists 409 otherwise."""
    h.expect_error("BucketAlreadyOwnedByYou", 409, s3.create_bucket, Bucket=research)
    h.expect_error("BucketAlreadyExists", 409, s3.create_bucket, Bucket=other_bucket)


def test_create_bucket_refuses_invalid_names(s3):
    """S3 bucket-name rules: uppercase, too short, IP-shaped names are InvalidBucketName 400."""
    for name in ["Upper-Case", "ab", "10.0.0.1", "a..b", "-leading"]:
        h.expect_error("InvalidBucketName", 400, s3.create_bucket, Bucket=name)


def test_delete_bucket(s3):
    """DeleteBucket: non-empty -> BucketNotEmpty 409; empty -> 204 and gone (NoSuchBucket after)."""
    name = h.unique("del")
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="a/b.txt", Body=b"x")
    h.expect_error("BucketNotEmpty", 409, s3.delete_bucket, Bucket=name)
    s3.delete_object(Bucket=name, Key="a/b.txt")
    answer = s3.delete_bucket(Bucket=name)
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 204
    h.expect_error("NoSuchBucket", 404, s3.list_objects_v2, Bucket=name)
    assert name not in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    h.expect_error("NoSuchBucket", 404, s3.delete_bucket, Bucket=name)


def test_delete_bucket_needs_a_full_server_admin_key(s3, readonly_s3, limited_s3, other_s3):
    """DeleteBucket: read-only, org-limited and non-server-admin keys get AccessDenied 403, even as members."""
    made = h.new_org(h.unique("keep"))
    h.admin("member", "add", "--org", made["org"], "--user", h.env("OTHER_USER_ID"), "--permissions", "read,write,delete")
    for c in (readonly_s3, other_s3):
        h.expect_error("AccessDenied", 403, c.delete_bucket, Bucket=made["bucket"])
    limited_to_it = h.new_key(h.env("ADMIN_USER_ID"), org=made["org"])
    h.expect_error("AccessDenied", 403, h.client(limited_to_it).delete_bucket, Bucket=made["bucket"])
    h.expect_error("AccessDenied", 403, limited_s3.delete_bucket, Bucket="research")
    s3.head_bucket(Bucket=made["bucket"])

