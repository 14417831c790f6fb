"""The state cache: fast when it can vouch, never wrong when it is missing, stale or broken."""

from __future__ import annotations

import os
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest
from helpers import count_calls, make_tree

import s3common
from s3common import Connection, LocalFile, RemoteObject, Seen

OLD_NS = 1_600_000_000 * 10**9  # files last changed long before the run: safe to cache


def aged_tree(root: Path, files: dict[str, bytes]) -> Path:
    make_tree(root, files)
    for rel in files:
        os.utime(root / rel, ns=(OLD_NS, OLD_NS))
    return root


def run(conn: Connection, root: Path, bucket: str, **options: object) -> s3common.Summary:
    options.setdefault("prefix", "data")
    return s3common.backup(conn, str(root), bucket=bucket, **options)  # type: ignore[arg-type]


def cache_file() -> Path:
    return Path(s3common.default_cache_path())


# --- the rule ------------------------------------------------------------------------------

LOCAL = LocalFile("a", "/a", 10, 111, 0o644, 222, 333)
REMOTE = RemoteObject("a", "p/a", 10, "e" * 32, datetime(2026, 1, 1, tzinfo=timezone.utc))


@pytest.mark.parametrize(
    ("recorded", "expected"),
    [
        (Seen(LOCAL, "m", "e" * 32), True),
        (None, False),
        (Seen(LocalFile("a", "/a", 11, 111, 0o644, 222, 333), "m", "e" * 32), False),
        (Seen(LocalFile("a", "/a", 10, 112, 0o644, 222, 333), "m", "e" * 32), False),
        (Seen(LocalFile("a", "/a", 10, 111, 0o644, 223, 333), "m", "e" * 32), False),
        (Seen(LocalFile("a", "/a", 10, 111, 0o644, 222, 334), "m", "e" * 32), False),
        (Seen(LOCAL, "m", "f" * 32), False),
        # Permission bits are not content: a chmod alone changes ctime, so it is re-read once.
        (Seen(LocalFile("a", "/a", 10, 111, 0o600, 222, 333), "m", "e" * 32), True),
    ],
)
def test_cache_vouches_only_for_an_identical_stat_and_etag(
    recorded: Seen | None, expected: bool
) -> None:
    assert s3common.cache_vouches(LOCAL, REMOTE, recorded) is expected


# --- with S3 -------------------------------------------------------------------------------


@pytest.mark.slow
def test_warm_cache_reads_nothing_and_lists_once(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    files = {f"d{i % 4}/f{i}": os.urandom(100 + i) for i in range(30)}
    files["big"] = os.urandom(11 * s3common.MiB)
    root = aged_tree(tmp_path / "src", files)
    first = run(conn, root, bucket)
    assert first.transferred == 31
    calls = count_calls(conn.client)
    second = run(conn, root, bucket)
    assert (second.transferred, second.unchanged, second.read_bytes) == (0, 31, 0)
    assert calls == {"ListBuckets": 1, "ListObjectsV2": 1}


@pytest.mark.slow
def test_checksum_flag_rereads_everything(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    root = aged_tree(tmp_path / "src", {"a": b"12345", "b": b"678"})
    run(conn, root, bucket)
    summary = run(conn, root, bucket, checksum=True)
    assert (summary.unchanged, summary.read_bytes) == (2, 8)


@pytest.mark.slow
def test_same_size_edit_with_mtime_put_back_is_caught_through_ctime(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    root = aged_tree(tmp_path / "src", {"a": b"before", "b": b"steady"})
    run(conn, root, bucket)
    (root / "a").write_bytes(b"after!")
    os.utime(root / "a", ns=(OLD_NS, OLD_NS))
    summary = run(conn, root, bucket)
    assert summary.transferred == 1
    assert s3.get_object(Bucket=bucket, Key="data/a")["Body"].read() == b"after!"


def test_object_changed_behind_the_tools_back_is_noticed(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    root = aged_tree(tmp_path / "src", {"a": b"mine", "b": b"also"})
    run(conn, root, bucket)
    s3.put_object(Bucket=bucket, Key="data/a", Body=b"THEM")
    summary = run(conn, root, bucket)
    assert (summary.transferred, summary.unchanged) == (1, 1)
    assert s3.get_object(Bucket=bucket, Key="data/a")["Body"].read() == b"mine"


def test_missing_cache_costs_reading_only(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    root = aged_tree(tmp_path / "src", {"a": b"1234", "b": b"5678"})
    run(conn, root, bucket)
    cache_file().unlink()
    summary = run(conn, root, bucket)
    assert (summary.transferred, summary.unchanged, summary.read_bytes) == (0, 2, 8)
    assert run(conn, root, bucket).read_bytes == 0


@pytest.mark.slow
def test_corrupt_cache_is_replaced_with_a_warning(
    conn: Connection, s3, bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = aged_tree(tmp_path / "src", {"a": b"1234", "b": b"5678"})
    run(conn, root, bucket)
    for suffix in ("-wal", "-shm"):
        Path(str(cache_file()) + suffix).unlink(missing_ok=True)
    cache_file().write_bytes(b"this is not a database" * 100)
    summary = run(conn, root, bucket)
    assert "corrupt" in caplog.text
    assert (summary.transferred, summary.unchanged, summary.read_bytes) == (0, 2, 8)
    assert run(conn, root, bucket).read_bytes == 0


@pytest.mark.slow
def test_cache_from_another_machine_is_not_trusted(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    """Same paths, sizes and mtimes, but other inodes: every file is read again."""
    root = aged_tree(tmp_path / "src", {"a": b"1234", "b": b"5678"})
    run(conn, root, bucket)
    with sqlite3.connect(cache_file()) as db:
        db.execute("UPDATE files SET inode = inode + 1")
    assert run(conn, root, bucket).read_bytes == 8


@pytest.mark.slow
def test_two_prefixes_of_one_bucket_keep_separate_records(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    root = aged_tree(tmp_path / "src", {"a": b"same"})
    run(conn, root, bucket, prefix="one")
    run(conn, root, bucket, prefix="two")
    s3.put_object(Bucket=bucket, Key="two/a", Body=b"gone")
    assert run(conn, root, bucket, prefix="one").read_bytes == 0
    fixed = run(conn, root, bucket, prefix="two")
    assert fixed.transferred == 1
    assert s3.get_object(Bucket=bucket, Key="two/a")["Body"].read() == b"same"


@pytest.mark.slow
def test_recently_modified_files_are_not_cached(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    """A file written just now could change again within one mtime tick unnoticed."""
    root = make_tree(tmp_path / "src", {"fresh": b"1234"})
    run(conn, root, bucket)
    assert run(conn, root, bucket).read_bytes == 4


@pytest.mark.slow
def test_two_runs_at_once_share_the_cache_safely(s3, bucket: str, tmp_path: Path) -> None:
    roots = [
        aged_tree(tmp_path / name, {f"f{i}": os.urandom(50) for i in range(200)})
        for name in ("x", "y")
    ]
    s3common.ensure_bucket(Connection(), bucket)
    results: dict[str, s3common.Summary] = {}

    def back_up(root: Path) -> None:
        results[root.name] = run(Connection(workers=2), root, bucket, prefix=root.name)

    threads = [threading.Thread(target=back_up, args=(root,)) for root in roots]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(summary.failures == [] for summary in results.values())
    with sqlite3.connect(cache_file()) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT count(*) FROM files").fetchone() == (400,)
    assert all(run(Connection(), root, bucket, prefix=root.name).read_bytes == 0 for root in roots)
