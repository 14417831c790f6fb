#!/usr/bin/env python3
"""Time the listing of a big backup, one page after the other against parallel ranges.

Usage (from the repository root):

    python bench/listing.py [--keys 50000] [--latency-ms 0,40] [--workers 8] [--repeat 3]

Why this way:

* The listing is the part of a no-change run that grows with round trips: the walk and
  the merge are local. So this times `keyspace.list_keys` alone, as `list_remote` calls
  it on AWS, with `split=False` (the plain paginated pass) and `split=True`.
* moto runs in this process (`mock_aws`), its backend filled directly with KEYS objects
  in a 10 x 10 folder tree (files at the third level), and its listing made to cost one
  page per request (`memory.speed_up_listing`).
* Latency is a sleep in a botocore `before-send` hook: every request, the listing's
  included, waits LATENCY ms before it goes out, as a round trip on a real link would.
  The sleep releases the GIL, so threads overlap their waits as they would their network.
* Prints, for each latency and mode: the median wall time of REPEAT listings, the
  ListObjectsV2 requests (each counted once per attempt) and the speed-up.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

BUCKET = "ass3-bench-listing"


def fill(keys: int) -> list[str]:
    """KEYS objects DATA/dA/eB/fN in moto's backend, spread over 100 folders."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    backend.create_bucket(BUCKET, "us-east-1")
    names = [f"data/d{index % 10}/e{index // 10 % 10}/f{index:07d}" for index in range(keys)]
    for name in names:
        backend.put_object(BUCKET, name, b"x", disable_notification=True)
    return sorted(names)


def measure(keys: int, latencies: list[float], workers: int, repeat: int) -> None:
    from memory import speed_up_listing
    from moto import mock_aws

    from ass3.connection import Connection
    from ass3.keyspace import list_keys

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ[name] = value
    speed_up_listing()
    with mock_aws():
        expected = fill(keys)
        conn = Connection(workers=workers)
        delay = {"seconds": 0.0}
        calls: Counter[str] = Counter()

        def late(event_name: str, **_: Any) -> None:
            calls[event_name.rsplit(".", 1)[-1]] += 1
            time.sleep(delay["seconds"])

        conn.client.meta.events.register("before-send.s3", late)
        print(f"{keys} keys, --workers {workers}, median of {repeat}; pages of 1000")
        print(f"latency  mode        wall s  ListObjectsV2  (pages: {math.ceil(keys / 1000)})")
        for latency in latencies:
            delay["seconds"] = latency / 1000
            walls = {}
            for split in (False, True):
                times = []
                for _ in range(repeat):
                    calls.clear()
                    started = time.perf_counter()
                    listed = [item["Key"] for item in list_keys(conn, BUCKET, "data/", split=split)]
                    times.append(time.perf_counter() - started)
                    assert listed == expected, "the listing differs from the keys put"
                walls[split] = statistics.median(times)
                mode = "parallel" if split else "sequential"
                count = calls["ListObjectsV2"]
                print(f"{latency:5g} ms  {mode:<10}  {walls[split]:6.2f}  {count:13d}")
            print(f"{latency:5g} ms  speed-up    {walls[False] / walls[True]:6.1f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--latency-ms", default="0,40", help="comma-separated (default 0,40)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    latencies = [float(part) for part in args.latency_ms.split(",") if part.strip()]
    measure(args.keys, latencies, args.workers, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
