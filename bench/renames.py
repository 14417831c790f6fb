#!/usr/bin/env python3
"""Measure what renaming a folder costs the next backup: requests by operation, bytes sent.

Usage (from the root of any checkout of ass3, to compare versions):

    python bench/renames.py [--files 2000] [--share 10] [--seed 1] [--unversioned]

A tree of FILES files (1-64 KiB each, random bytes) is backed up to an in-process moto
S3; then the folder holding SHARE percent of them is renamed and the tree backed up again
with --delete --force. The second run's requests and bytes sent are printed, as JSON too.
With --unversioned the bucket is made without versioning first.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from moto import mock_aws

sys.path.insert(0, str(Path.cwd()))
import s3common  # the checkout being measured


def build(root: Path, files: int, share: int, seed: int) -> None:
    rng = random.Random(seed)
    moved = files * share // 100
    for index in range(files):
        folder = "photos/2026" if index < moved else f"other/{index % 20:02d}"
        path = root / folder / f"file{index:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randint(1024, 64 * 1024)))
    old = time.time() - 60  # old enough for the state cache to vouch for every file
    for path in root.rglob("*"):
        os.utime(path, (old, old))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--share", type=int, default=10, help="percent of files in the folder")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--unversioned", action="store_true")
    args = parser.parse_args()
    for name, value in (("AWS_ACCESS_KEY_ID", "x"), ("AWS_SECRET_ACCESS_KEY", "x")):
        os.environ.setdefault(name, value)
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    with tempfile.TemporaryDirectory() as work, mock_aws():
        os.environ["XDG_CACHE_HOME"] = str(Path(work) / "cache")
        root = Path(work) / "tree"
        build(root, args.files, args.share, args.seed)
        conn = s3common.Connection(workers=8)
        bucket = "ass3-bench-renames"
        if args.unversioned:
            conn.client.create_bucket(Bucket=bucket)
        first = s3common.backup(conn, str(root), bucket=bucket, prefix="tree")
        os.rename(root / "photos" / "2026", root / "photos" / "2026-summer")
        second = s3common.backup(
            conn, str(root), bucket=bucket, prefix="tree", delete=True, force=True
        )
    result = {
        "files": args.files,
        "renamed": args.files * args.share // 100,
        "versioned": not args.unversioned,
        "first_run_bytes_sent": first.transferred_bytes,
        "uploaded": second.transferred,
        "copied": getattr(second, "copied", 0),
        "bytes_sent": second.transferred_bytes,
        "bytes_read": second.read_bytes,
        "deleted": second.deleted,
        "requests": dict(sorted(second.requests.items())),
        "failed": len(second.failures),
    }
    print(second.line())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
