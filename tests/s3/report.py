"""Turns the failure records of the S3 suite (JSON lines, STOWAGE_S3_SUITE_REPORT) into Markdown:
per failed test, what it checks, the requests it sent last, the server's answers and the
assertion that failed.

    python tests/s3/report.py failures.jsonl [more.jsonl ...] > failures.md
"""

import json
import sys


def main() -> None:
    records = []
    for path in sys.argv[1:]:
        with open(path, encoding="utf-8") as f:
            records += [json.loads(line) for line in f if line.strip()]
    print(f"{len(records)} failed\n")
    for r in records:
        print(f"### {r['test']}" + ("" if r["phase"] == "call" else f" ({r['phase']})"))
        if r.get("doc"):
            print(f"\nChecks: {r['doc']}")
        print(f"\nAssertion: {r['message']}\n")
        if r["exchanges"]:
            print("Last requests (oldest first):\n")
            for x in r["exchanges"]:
                note = f" [{x['note']}]" if x.get("note") else ""
                answer = x["status"] if x["status"] is not None else "no answer"
                detail = " ".join(str(v) for v in (x.get("code"), x.get("message")) if v)
                print(f"- `{x['method']} {x['url']}`{note} -> {answer} {detail}".rstrip())
        print()


if __name__ == "__main__":
    main()
