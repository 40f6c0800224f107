"""Real S3 clients against stowage: aws-cli, rclone, s5cmd, pyarrow (its own S3 filesystem) and
pandas (through s3fs), each used as a person would, with the results checked through boto3 and
the QuantConnect API. scripts/s3-tests.sh MODE clients runs these with the clients installed in
.venv (from scripts/requirements-s3.txt) and AWS_* pointing at the server's S3 API."""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import s3helpers as h

MiB = 1024 * 1024


@pytest.fixture
def work(tmp_path):
    return tmp_path


def run(command: list[str], *, env: dict | None = None, check: bool = True, cwd=None) -> subprocess.CompletedProcess:
    """Runs a client; a failure names the command and shows what it printed."""
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600, cwd=cwd)
    h.record("CLI", " ".join(command), done.returncode, None, (done.stderr or done.stdout)[-400:], note="client")
    if check:
        assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "readme.txt": b"a small text file\n",
        "data/prices.csv": b"date,close\n" + b"2024-01-02,100\n" * 2000,
        "data/deep/nested/model.json": json.dumps({"w": list(range(100))}).encode(),
        "data/deep/blob.bin": os.urandom(3 * MiB + 17),
        "unicode/données é.txt": "é à ü 日本".encode(),
        "space dir/with space.txt": b"spaces",
        "empty.txt": b"",
    }
    # Modified a minute ago: aws-cli's sync re-uploads a file whose modification time is newer
    # than the object's Last-Modified (whole seconds), which a file written in the same second is.
    past = time.time() - 60
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
        os.utime(root / name, (past, past))
    return files


# --- aws-cli ----------------------------------------------------------------------------------


@pytest.fixture
def aws(work):
    config = work / "aws-config"
    config.write_text("[default]\nregion = us-east-1\ns3 =\n  addressing_style = path\n")

    def call(*args, check=True):
        return run(["aws", *args], env={"AWS_CONFIG_FILE": str(config)}, check=check)

    return call


def test_aws_cp_multipart_and_head_object(aws, work, research, prefix, s3, qc_admin, research_org):
    """`aws s3 cp` of a 20 MiB file (multipart), head-object, and a download of identical bytes."""
    data = os.urandom(20 * MiB)
    (work / "big.bin").write_bytes(data)
    aws("s3", "cp", str(work / "big.bin"), f"s3://{research}/{prefix}big.bin")
    head = json.loads(aws("s3api", "head-object", "--bucket", research, "--key", f"{prefix}big.bin").stdout)
    assert head["ContentLength"] == len(data)
    assert head["ETag"].endswith('-3"'), head  # aws-cli's 8 MiB parts
    assert "LastModified" in head
    assert qc_admin.properties(research_org, prefix + "big.bin")["metadata"]["md5"] == hashlib.md5(data).hexdigest()
    aws("s3", "cp", f"s3://{research}/{prefix}big.bin", str(work / "back.bin"))
    assert (work / "back.bin").read_bytes() == data


def test_aws_sync_up_and_down(aws, work, research, prefix, s3):
    """`aws s3 sync` up, a second sync uploads nothing, sync down gives identical content, ls and rm --recursive."""
    up = work / "up"
    files = make_tree(up)
    aws("s3", "sync", str(up), f"s3://{research}/{prefix}sync/")
    assert sorted(h.list_keys(s3, research, prefix + "sync/")) == sorted(f"{prefix}sync/{k}" for k in files)
    again = aws("s3", "sync", str(up), f"s3://{research}/{prefix}sync/")
    assert "upload:" not in again.stdout, again.stdout
    down = work / "down"
    aws("s3", "sync", f"s3://{research}/{prefix}sync/", str(down))
    assert tree(down) == files
    listing = aws("s3", "ls", f"s3://{research}/{prefix}sync/").stdout
    assert "PRE data/" in listing and "readme.txt" in listing, listing
    recursive = aws("s3", "ls", "--recursive", f"s3://{research}/{prefix}sync/").stdout
    assert sum(1 for line in recursive.splitlines() if line.strip()) == len(files), recursive
    buckets = aws("s3", "ls").stdout
    assert research in buckets.split(), buckets
    aws("s3", "rm", "--recursive", f"s3://{research}/{prefix}sync/")
    assert h.list_keys(s3, research, prefix + "sync/") == []


def test_aws_dir_marker(aws, research, prefix, s3):
    """`aws s3api put-object --key dir/` answers with the empty ETag; the marker is not stored."""
    put = json.loads(aws("s3api", "put-object", "--bucket", research, "--key", f"{prefix}dir/").stdout)
    assert put["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"', put
    missing = aws("s3api", "head-object", "--bucket", research, "--key", f"{prefix}dir/", check=False)
    assert missing.returncode != 0 and "404" in missing.stderr, missing.stderr
    assert h.list_keys(s3, research, prefix) == []


def test_aws_error_shows_the_code(aws, research, prefix):
    """aws-cli reports the server's code: a missing key is a 404 on head-object, NoSuchKey on get."""
    got = aws("s3api", "get-object", "--bucket", research, "--key", f"{prefix}nothing", "/dev/null", check=False)
    assert got.returncode != 0 and "NoSuchKey" in got.stderr, got.stderr


# --- rclone -----------------------------------------------------------------------------------


@pytest.fixture
def rclone(work):
    config = work / "rclone.conf"
    config.write_text("")
    env = {
        "RCLONE_CONFIG": str(config),
        "RCLONE_CONFIG_STW_TYPE": "s3",
        "RCLONE_CONFIG_STW_PROVIDER": "Other",
        "RCLONE_CONFIG_STW_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
        "RCLONE_CONFIG_STW_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
        "RCLONE_CONFIG_STW_ENDPOINT": os.environ["AWS_ENDPOINT_URL"],
        "RCLONE_CONFIG_STW_REGION": "us-east-1",
        "RCLONE_CONFIG_STW_FORCE_PATH_STYLE": "true",
    }

    def call(*args, check=True):
        return run(["rclone", *args], env=env, check=check)

    return call


def test_rclone_sync_check_and_back(rclone, work, research, prefix, s3):
    """rclone (provider Other, path style): sync up, check identical, a second sync transfers nothing, sync down."""
    up = work / "up"
    files = make_tree(up)
    remote = f"stw:{research}/{prefix}tree"
    rclone("sync", str(up), remote, "-v")
    assert sorted(h.list_keys(s3, research, prefix + "tree/")) == sorted(f"{prefix}tree/{k}" for k in files)
    rclone("check", str(up), remote)
    again = rclone("sync", str(up), remote, "-v", "--stats-log-level", "NOTICE", "--stats", "0")
    assert "Copied" not in again.stderr, again.stderr
    transferred = [line for line in again.stderr.splitlines() if line.strip().startswith("Transferred:")]
    assert all(line.split()[1] == "0" for line in transferred), again.stderr
    down = work / "down"
    rclone("sync", remote, str(down))
    assert tree(down) == files
    # A change is noticed and only it is sent.
    (up / "readme.txt").write_bytes(b"changed\n")
    changed = rclone("sync", str(up), remote, "-v")
    copied = [line for line in changed.stderr.splitlines() if "Copied" in line]
    assert len(copied) == 1 and "readme.txt" in copied[0], changed.stderr
    assert h.body_of(s3, research, f"{prefix}tree/readme.txt") == b"changed\n"
    rclone("purge", remote)
    assert h.list_keys(s3, research, prefix + "tree/") == []


def test_rclone_mkdir(rclone, research, prefix, s3):
    """rclone mkdir (no marker by default on S3) succeeds and stores nothing; an empty folder is not listed."""
    rclone("mkdir", f"stw:{research}/{prefix}made")
    assert h.list_keys(s3, research, prefix) == []
    listed = rclone("lsf", f"stw:{research}/{prefix}").stdout
    assert listed.strip() == "", listed


def test_rclone_directory_markers_are_unsupported(rclone, research, prefix, s3):
    """rclone's --s3-directory-markers is documented as unsupported (README, S3 section): rclone PUTs a zero-byte
    `dir/` marker, stowage answers 200 without storing it (folders exist while they hold files), rclone HEADs the
    marker, gets 404 and reports the mkdir as failed. Nothing is stored. (If this starts to work, update the README.)"""
    done = rclone("mkdir", "--s3-directory-markers", "--retries", "1", f"stw:{research}/{prefix}made", check=False)
    assert done.returncode != 0 and "object not found" in done.stderr, done.stderr
    assert h.list_keys(s3, research, prefix) == []


def test_rclone_lists_with_v1_and_v2(rclone, research, prefix, s3):
    for k in ["a/1.txt", "a/2.txt", "b.txt", "é/3.txt"]:
        s3.put_object(Bucket=research, Key=prefix + k, Body=k.encode())
    for version in ("1", "2"):
        listed = rclone("lsf", "-R", "--s3-list-version", version, f"stw:{research}/{prefix}").stdout.split()
        assert sorted(listed) == sorted(["a/", "a/1.txt", "a/2.txt", "b.txt", "é/", "é/3.txt"]), (version, listed)


# --- s5cmd ------------------------------------------------------------------------------------


@pytest.fixture
def s5cmd():
    def call(*args, check=True):
        return run(["s5cmd", "--endpoint-url", os.environ["AWS_ENDPOINT_URL"], *args], check=check)

    return call


def test_s5cmd_cp_ls_rm(s5cmd, work, research, prefix, s3):
    """s5cmd cp (up, down, wildcard), ls, rm."""
    up = work / "up"
    files = make_tree(up)
    s5cmd("cp", str(up / "readme.txt"), f"s3://{research}/{prefix}s5/readme.txt")
    s5cmd("cp", f"{up}/*", f"s3://{research}/{prefix}s5/all/")
    assert sorted(h.list_keys(s3, research, prefix + "s5/all/")) == sorted(f"{prefix}s5/all/{k}" for k in files)
    listed = s5cmd("ls", f"s3://{research}/{prefix}s5/*").stdout
    assert "readme.txt" in listed and "all/data/prices.csv" in listed, listed
    top = s5cmd("ls", f"s3://{research}/{prefix}s5/").stdout
    assert "DIR  all/" in top or "DIR all/" in " ".join(top.split()), top
    down = work / "down"
    s5cmd("cp", f"s3://{research}/{prefix}s5/all/*", f"{down}/")
    assert tree(down) == files
    s5cmd("rm", f"s3://{research}/{prefix}s5/*")
    assert h.list_keys(s3, research, prefix + "s5/") == []


def test_s5cmd_large_multipart(s5cmd, work, research, prefix, s3):
    data = os.urandom(12 * MiB + 5)
    (work / "big").write_bytes(data)
    s5cmd("cp", "--part-size", "5", str(work / "big"), f"s3://{research}/{prefix}big")
    assert h.body_of(s3, research, prefix + "big") == data
    head = s3.head_object(Bucket=research, Key=prefix + "big")
    assert head["ETag"].endswith('-3"'), head["ETag"]


# --- pyarrow and pandas -----------------------------------------------------------------------


def _table():
    import pyarrow as pa

    return pa.table(
        {
            "symbol": ["SPY", "QQQ", "IWM", "SPY", "QQQ"],
            "day": ["2024-01-02", "2024-01-02", "2024-01-02", "2024-01-03", "2024-01-03"],
            "close": [472.65, 408.96, 198.31, 468.79, 402.56],
            "volume": [123, 456, 789, 1011, 1213],
        }
    )


def _arrow_fs():
    from urllib.parse import urlsplit

    from pyarrow import fs

    url = urlsplit(os.environ["AWS_ENDPOINT_URL"])
    return fs.S3FileSystem(
        access_key=os.environ["AWS_ACCESS_KEY_ID"],
        secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        endpoint_override=url.netloc,
        scheme=url.scheme,
        region="us-east-1",
        force_virtual_addressing=False,
    )


def test_pyarrow_parquet_round_trip(research, prefix, s3):
    """pyarrow's S3 filesystem writes a Parquet file to s3://research/... and reads it back."""
    import pyarrow.parquet as pq

    table = _table()
    arrow = _arrow_fs()
    pq.write_table(table, f"{research}/{prefix}prices.parquet", filesystem=arrow)
    assert pq.read_table(f"{research}/{prefix}prices.parquet", filesystem=arrow).equals(table)
    info = arrow.get_file_info(f"{research}/{prefix}prices.parquet")
    assert info.size == s3.head_object(Bucket=research, Key=prefix + "prices.parquet")["ContentLength"]


def test_pyarrow_partitioned_dataset(research, prefix):
    """A hive-partitioned dataset (folders per value) is written and read back through folders."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    table = _table()
    arrow = _arrow_fs()
    pq.write_to_dataset(table, f"{research}/{prefix}ds", partition_cols=["symbol"], filesystem=arrow)
    back = ds.dataset(f"{research}/{prefix}ds", filesystem=arrow, format="parquet", partitioning="hive").to_table()
    assert sorted(back.column("volume").to_pylist()) == sorted(table.column("volume").to_pylist())
    from pyarrow import fs

    selector = fs.FileSelector(f"{research}/{prefix}ds", recursive=False)
    assert sorted(i.base_name for i in arrow.get_file_info(selector)) == ["symbol=IWM", "symbol=QQQ", "symbol=SPY"]


def test_pandas_parquet_through_s3fs(research, prefix, s3):
    """pandas to_parquet/read_parquet at s3://research/... through s3fs."""
    import pandas as pd

    frame = _table().to_pandas()
    options = {
        "key": os.environ["AWS_ACCESS_KEY_ID"],
        "secret": os.environ["AWS_SECRET_ACCESS_KEY"],
        "client_kwargs": {"endpoint_url": os.environ["AWS_ENDPOINT_URL"], "region_name": "us-east-1"},
        "config_kwargs": {"s3": {"addressing_style": "path"}},
    }
    url = f"s3://{research}/{prefix}frame.parquet"
    frame.to_parquet(url, storage_options=options, index=False)
    back = pd.read_parquet(url, storage_options=options)
    pd.testing.assert_frame_equal(back, frame)
    frame.to_csv(f"s3://{research}/{prefix}frame.csv", storage_options=options, index=False)
    assert h.body_of(s3, research, prefix + "frame.csv").startswith(b"symbol,day,close,volume\n")
    pd.testing.assert_frame_equal(pd.read_csv(f"s3://{research}/{prefix}frame.csv", storage_options=options), frame)


def test_downloaded_trees_match_with_filecmp(aws, rclone, work, research, prefix):
    """What aws-cli uploaded, rclone downloads byte for byte (one store, any client)."""
    up = work / "src"
    make_tree(up)
    aws("s3", "sync", str(up), f"s3://{research}/{prefix}mixed/")
    rclone("copy", f"stw:{research}/{prefix}mixed", str(work / "via-rclone"))
    comparison = filecmp.dircmp(up, work / "via-rclone")
    assert not comparison.left_only and not comparison.right_only and not comparison.diff_files
    shutil.rmtree(work / "via-rclone")


def test_aws_presign(aws, research, prefix, s3):
    """`aws s3 presign` gives a URL that a plain HTTP client can GET."""
    import requests

    s3.put_object(Bucket=research, Key=prefix + "shared report.csv", Body=b"a,b\n1,2\n")
    url = aws("s3", "presign", f"s3://{research}/{prefix}shared report.csv", "--expires-in", "300").stdout.strip()
    got = requests.get(url, timeout=30)
    assert (got.status_code, got.content) == (200, b"a,b\n1,2\n"), (got.status_code, got.text[:300])


def test_boto3_transfer_manager(work, research, prefix, s3):
    """boto3's transfer manager: concurrent multipart upload_file and concurrent ranged download_file."""
    from boto3.s3.transfer import TransferConfig

    data = os.urandom(17 * MiB + 3)
    (work / "up.bin").write_bytes(data)
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=4)
    s3.upload_file(str(work / "up.bin"), research, prefix + "tm.bin", Config=config)
    assert s3.head_object(Bucket=research, Key=prefix + "tm.bin")["ETag"].endswith('-4"')
    s3.download_file(research, prefix + "tm.bin", str(work / "down.bin"), Config=config)
    assert (work / "down.bin").read_bytes() == data


def test_rclone_multipart_upload(rclone, work, research, prefix, s3):
    """rclone's multipart upload (cutoff and chunks lowered to 5 MiB), its checks, and a download."""
    data = os.urandom(12 * MiB + 1)
    (work / "up").mkdir()
    (work / "up" / "big.bin").write_bytes(data)
    remote = f"stw:{research}/{prefix}mp"
    rclone("copy", str(work / "up"), remote, "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M", "-v")
    assert s3.head_object(Bucket=research, Key=prefix + "mp/big.bin")["ETag"].endswith('-3"')
    rclone("check", str(work / "up"), remote)
    rclone("copy", remote, str(work / "down"))
    assert (work / "down" / "big.bin").read_bytes() == data
