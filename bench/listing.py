#!/usr/bin/env python3
"""Time the listing of a big backup, one page after the other against parallel ranges.

Usage (from the repository root):

    python bench/listing.py [--keys 50000] [--latency-ms 0,40] [--workers 8] [--repeat 3]

Why this way:

* The listing is the part of a no-change run that grows with round trips: the walk and
  the merge are local. So this times `keyspace.list_keys` alone, as `list_remote` calls
  it: one page after another (`split=False`), in segments trusting S3's byte order (on
  AWS), and in segments by folder only (on other servers).
* No server: a botocore `before-send` hook answers each ListObjectsV2 as S3 would, from
  a sorted list of KEYS keys in a 10 x 10 folder tree (files at the third level), after
  sleeping LATENCY ms, as a round trip on a real link would. moto, in this process or
  its own, spends most of a second per 1000-key page on this 2-core machine, and would
  measure moto. What is timed is the round trips and the client's own work: botocore
  parses every page, and the threads share the GIL as they would on a real link.
* Prints, for each latency and mode: the median wall time of REPEAT listings, the
  ListObjectsV2 requests (each counted once per attempt) and the speed-up.
"""

from __future__ import annotations

import argparse
import bisect
import math
import os
import statistics
import sys
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

from botocore.awsrequest import AWSResponse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

BUCKET = "ass3-bench-listing"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class FakeListing:
    """A before-send handler answering ListObjectsV2 from a sorted list of keys after
    `latency` seconds, as S3 would (Prefix, Delimiter, StartAfter, continuation, 1000
    keys a page). No server: what is timed is the round trips and the client's own work
    (botocore parsing each page, the threads), which is what the listing changes."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = sorted(keys)
        self.latency = 0.0

    def __call__(self, request: Any, **_: Any) -> AWSResponse:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.url).query)
        prefix = query.get("prefix", [""])[0]
        delimiter = query.get("delimiter", [""])[0]
        after = query.get("continuation-token", query.get("start-after", [""]))[0]
        index = max(bisect.bisect_right(self.keys, after), bisect.bisect_left(self.keys, prefix))
        entries: list[str] = []
        last = ""
        while index < len(self.keys) and len(entries) < 1000:
            key = self.keys[index]
            if not key.startswith(prefix):
                break
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:
                folder = key[: cut + len(delimiter)]
                entries.append(f"<CommonPrefixes><Prefix>{folder}</Prefix></CommonPrefixes>")
                last = folder + "\U0010ffff"
                index = bisect.bisect_left(self.keys, last)
                continue
            entries.append(
                f"<Contents><Key>{key}</Key><LastModified>2020-01-01T00:00:00.000Z"
                f'</LastModified><ETag>"{"0" * 32}"</ETag><Size>1</Size></Contents>'
            )
            last = key
            index += 1
        more = index < len(self.keys) and self.keys[index].startswith(prefix)
        token = f"<NextContinuationToken>{last}</NextContinuationToken>" if more else ""
        body = (
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>{BUCKET}</Name><Prefix>{prefix}</Prefix><KeyCount>{len(entries)}</KeyCount>"
            f"<MaxKeys>1000</MaxKeys><IsTruncated>{str(more).lower()}</IsTruncated>{token}"
            + "".join(entries)
            + "</ListBucketResult>"
        ).encode()
        time.sleep(self.latency)
        return AWSResponse(request.url, 200, {"Content-Type": "application/xml"}, _Body(body))


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Any:
        yield self._data

    def read(self, *_: Any, **__: Any) -> bytes:
        data, self._data = self._data, b""
        return data


def measure(keys: int, latencies: list[float], workers: int, repeat: int) -> None:
    from ass3.connection import Connection
    from ass3.keyspace import list_keys

    expected = sorted(
        f"data/d{index % 10}/e{index // 10 % 10}/f{index:07d}" for index in range(keys)
    )
    conn = Connection(endpoint_url="http://listing.invalid", workers=workers)
    fake = FakeListing(expected)
    calls: Counter[str] = Counter()

    def count(event_name: str, **_: Any) -> None:
        calls[event_name.rsplit(".", 1)[-1]] += 1

    conn.client.meta.events.register("before-send.s3", count)
    conn.client.meta.events.register("before-send.s3.ListObjectsV2", fake)
    print(f"{keys} keys, --workers {workers}, median of {repeat}")
    print(f"latency  mode        wall s  ListObjectsV2  (pages: {math.ceil(keys / 1000)})")
    # (split, byte_order): one page after another; segments trusting S3's byte order (AWS);
    # segments by folder only (other servers, whose listing is then sorted locally).
    modes = {"sequential": (False, True), "aws": (True, True), "any order": (True, False)}
    for latency in latencies:
        fake.latency = latency / 1000
        walls = {}
        for mode, (split, byte_order) in modes.items():
            times = []
            for _ in range(repeat):
                calls.clear()
                started = time.perf_counter()
                items = list_keys(conn, BUCKET, "data/", split=split, byte_order=byte_order)
                listed = [item["Key"] for item in items]
                times.append(time.perf_counter() - started)
                assert sorted(listed) == expected, "the listing differs from the keys"
            walls[mode] = statistics.median(times)
            count_ = calls["ListObjectsV2"]
            print(f"{latency:5g} ms  {mode:<10}  {walls[mode]:6.2f}  {count_:13d}", flush=True)
        for mode in ("aws", "any order"):
            speed_up = walls["sequential"] / walls[mode]
            print(f"{latency:5g} ms  speed-up, {mode}: {speed_up:.1f}x", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--latency-ms", default="0,40", help="comma-separated (default 0,40)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    latencies = [float(part) for part in args.latency_ms.split(",") if part.strip()]
    for name, value in FAKE_CREDENTIALS.items():
        os.environ[name] = value
    measure(args.keys, latencies, args.workers, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
