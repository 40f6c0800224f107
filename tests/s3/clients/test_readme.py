"""The README's S3 examples (between its `<!-- examples -->` markers) run as they are, with the
AWS_* variables that scripts/s3-tests.sh sets, in a fresh folder: the shell blocks with bash
(aws-cli, rclone), the Python blocks with this interpreter (boto3, pandas). What each wrote is
then read back through boto3."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import s3helpers as h

README = Path(__file__).resolve().parents[3] / "README.md"


def examples() -> list[tuple[str, str]]:
    text = README.read_text(encoding="utf-8")
    start = text.index("<!-- examples: run verbatim by tests/s3/clients/test_readme.py -->")
    end = text.index("<!-- /examples -->", start)
    return re.findall(r"```(sh|python)\n(.*?)```", text[start:end], re.S)


def test_the_readme_s3_examples_run_verbatim(tmp_path):
    blocks = examples()
    assert [lang for lang, _ in blocks] == ["sh", "sh", "python", "python"], blocks
    for lang, code in blocks:
        command = ["bash", "-euo", "pipefail", "-c", code] if lang == "sh" else [sys.executable, "-c", code]
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=dict(os.environ))
        assert done.returncode == 0, f"README example failed ({lang}):\n{code}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    s3 = h.client(h.Key(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]))
    assert s3.get_object(Bucket="research", Key="models/model.bin")["Body"].read() == b"weights v1\n"
    assert (tmp_path / "models-copy" / "model.bin").read_bytes() == b"weights v1\n"
    assert s3.get_object(Bucket="research", Key="features/day1.csv")["Body"].read() == b"day,close\n"
    assert s3.get_object(Bucket="research", Key="params/alpha.json")["ContentType"] == "application/json"
    assert s3.head_object(Bucket="research", Key="features/prices.parquet")["ContentLength"] > 0
