"""Concurrent S3 writers: overwrites are atomic, and quotas are not overshot (the QuantConnect
API's rule holds for both doors at once)."""

import hashlib
from concurrent.futures import ThreadPoolExecutor

import s3helpers as h


def test_concurrent_overwrites_leave_one_whole_version(s3, qc_admin, research, research_org, prefix):
    """8 writers overwrite one key with different 256 KiB bodies: the result is one of them, whole, and both
    doors agree on its md5."""
    key = prefix + "contended.bin"
    bodies = [bytes([n]) * (256 * 1024) for n in range(8)]

    def put(body):
        return h.client(h.admin_key()).put_object(Bucket=research, Key=key, Body=body)["ETag"]

    with ThreadPoolExecutor(8) as pool:
        etags = list(pool.map(put, bodies))
    assert etags == [f'"{hashlib.md5(b).hexdigest()}"' for b in bodies]
    final = h.body_of(s3, research, key)
    assert final in bodies
    assert qc_admin.properties(research_org, key)["metadata"]["md5"] == hashlib.md5(final).hexdigest()


def test_concurrent_writers_do_not_overshoot_the_file_quota(s3, qc_admin):
    """12 new keys at once (S3 and QC mixed) against a 5-file quota: exactly 5 stored, the rest refused."""
    made = h.new_org(h.unique("cq"), max_files=5)

    def write(n):
        if n % 3 == 0:
            return "qc-ok" if qc_admin.set(made["org"], f"qc-{n}", b"q")["success"] else "qc-refused"
        try:
            h.client(h.admin_key()).put_object(Bucket=made["bucket"], Key=f"s3-{n}", Body=b"s")
            return "s3-ok"
        except h.ClientError as error:
            assert error.response["Error"]["Code"] == "QuotaExceeded", error.response["Error"]
            return "s3-refused"

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(write, range(12)))
    assert sum(r.endswith("-ok") for r in results) == 5, results
    assert len(h.list_keys(s3, made["bucket"])) == 5


def test_concurrent_writers_do_not_overshoot_the_byte_quota(s3):
    """10 uploads of 300 KB at once against a 1 MB quota: at most 3 stored, usage within the limit."""
    made = h.new_org(h.unique("bq"), max_bytes=1_000_000)

    def write(n):
        try:
            h.client(h.admin_key()).put_object(Bucket=made["bucket"], Key=f"k{n}", Body=b"b" * 300_000)
            return True
        except h.ClientError as error:
            assert error.response["Error"]["Code"] == "QuotaExceeded", error.response["Error"]
            return False

    with ThreadPoolExecutor(10) as pool:
        stored = sum(pool.map(write, range(10)))
    assert stored == 3, stored
    used = next(o["usedBytes"] for o in h.admin("org", "list") if o["organizationId"] == made["org"])
    assert used == 900_000, used

