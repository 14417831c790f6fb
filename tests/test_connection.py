"""The connection: each run's summary counts that run's requests, and no later run's."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from botocore.parsers import DEFAULT_TIMESTAMP_PARSER
from helpers import count_calls, make_tree

import s3common
from ass3.connection import _parse_timestamp
from s3common import Connection


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-02T06:11:07.000Z",  # a listing's LastModified
        "2026-12-02T06:11:07+00:00",
        "Wed, 02 Dec 2026 06:11:07 GMT",  # a Last-Modified header
        "Thu, 01 Jan 1970 00:00:00 GMT",
        "1764655867",  # epoch seconds: left to botocore's parser
        "Wed, 02 Dec 2026 06:11:07 +0200",
    ],
)
def test_timestamps_read_as_botocore_reads_them(text: str) -> None:
    parsed = _parse_timestamp(text)
    assert parsed == DEFAULT_TIMESTAMP_PARSER(text)
    assert parsed.utcoffset() == DEFAULT_TIMESTAMP_PARSER(text).utcoffset()


def test_two_runs_on_one_connection_count_their_own_requests(
    conn: Connection, s3: object, bucket: str, tmp_path: Path
) -> None:
    root = make_tree(tmp_path / "src", {"a.txt": b"a", "sub/b.txt": b"b"})
    first = s3common.backup(conn, str(root), bucket=bucket, prefix="data")
    assert first.requests["PutObject"] >= 2
    calls = count_calls(conn.client)
    second = s3common.backup(conn, str(root), bucket=bucket, prefix="data")
    assert second.transferred == 0
    assert second.requests == calls  # exactly what the client sent during the second run
    assert "PutObject" not in second.requests
    frozen = dict(first.requests)
    s3common.restore(conn, "data", bucket=bucket, destination=str(tmp_path / "out"))
    assert dict(first.requests) == frozen  # a finished run's count no longer moves


def test_requests_before_any_run_are_charged_to_the_next_run(
    conn: Connection, s3: object, bucket: str, tmp_path: Path
) -> None:
    root = make_tree(tmp_path / "src", {"a.txt": b"a"})
    s3common.backup(conn, str(root), bucket=bucket, prefix="data")
    conn.client.list_buckets()  # between runs, e.g. while resolving the next bucket name
    calls = count_calls(conn.client)
    summary = s3common.backup(conn, str(root), bucket=bucket, prefix="data")
    assert summary.requests == calls + Counter(ListBuckets=1)


def test_keep_days_requests_are_part_of_the_backups_count(
    conn: Connection, s3: object, bucket: str, tmp_path: Path
) -> None:
    root = make_tree(tmp_path / "src", {"a.txt": b"a"})
    summary = s3common.backup(conn, str(root), bucket=bucket, prefix="data", keep_days=30)
    assert summary.requests["GetBucketLifecycleConfiguration"] == 1
    assert summary.requests["PutBucketLifecycleConfiguration"] == 2  # bucket setup, then rule
    assert s3common.retention_days(conn, bucket) == {"data": 30}


def test_nested_runs_with_equal_counts_each_keep_their_own(conn: Connection, s3: object) -> None:
    outer: Counter[str] = Counter()
    inner: Counter[str] = Counter()
    with conn.counting(outer):
        with conn.counting(inner):
            conn.client.list_buckets()  # the two counts are now equal
        conn.client.list_buckets()
    assert (outer, inner) == (Counter(ListBuckets=2), Counter(ListBuckets=1))


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("AWS_MAX_ATTEMPTS", "abc", "invalid max_attempts setting"),
        ("AWS_PROFILE", "nosuch", "AWS profile 'nosuch' not found"),
    ],
)
def test_bad_settings_are_one_line_errors(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(s3common.Ass3Error, match=message):
        Connection()
