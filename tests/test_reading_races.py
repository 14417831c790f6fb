"""Files that change between the scan and the read, or while they are read and uploaded.

Races are made deterministic at the tool's own seams: `ass3.reading.open_scanned`
(between the scan and the read) and the client's UploadPart requests (during a
multipart upload). Every test checks that no object ever holds bytes its md5
metadata does not describe, and that no good copy is deleted.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_PART_SIZE
from helpers import backup, count_calls, make_tree, open_uploads

import s3common
from ass3 import reading
from ass3.model import CHANGING, LocalFile
from s3common import Connection

BIG = TEST_PART_SIZE + 1024 * 1024  # two parts: multipart with the test connection


def objects_are_consistent(s3: Any, bucket: str) -> dict[str, bytes]:
    """Every object under data/: its bytes, after checking they are what its md5 says."""
    contents: dict[str, bytes] = {}
    for item in s3.list_objects_v2(Bucket=bucket, Prefix="data/").get("Contents", []):
        got = s3.get_object(Bucket=bucket, Key=item["Key"])
        body = got["Body"].read()
        assert got["Metadata"]["md5"] == hashlib.md5(body).hexdigest(), item["Key"]
        contents[item["Key"]] = body
    return contents


def swap_before_open(
    monkeypatch: pytest.MonkeyPatch, name: str, swap: Callable[[Path], None]
) -> None:
    """Replace file `name` just before the backup opens it, once: the window between
    the scan (which saw a regular file) and the read."""
    real = reading.open_scanned
    done: list[bool] = []

    def racing(local: LocalFile) -> Any:
        if local.rel == name and not done:
            done.append(True)
            swap(Path(local.path))
        return real(local)

    monkeypatch.setattr("ass3.reading.open_scanned", racing)


def on_upload_part(conn: Connection, act: Callable[[], None], *, times: int | None) -> None:
    """Run `act` as each UploadPart is about to be sent (the first `times` only)."""
    calls: list[int] = []

    def handler(**_: Any) -> None:
        if times is None or len(calls) < times:
            calls.append(1)
            act()

    conn.client.meta.events.register("before-parameter-build.s3.UploadPart", handler)


# --- between the scan and the read ------------------------------------------------------------


def test_a_file_swapped_for_a_symlink_is_not_followed(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "outside" / "secret"
    make_tree(secret.parent, {"secret": b"not yours"})
    root = make_tree(tmp_path / "src", {"f": b"inside", "other": b"o"})

    def to_symlink(path: Path) -> None:
        path.unlink()
        path.symlink_to(secret)

    swap_before_open(monkeypatch, "f", to_symlink)
    summary = backup(conn, root, bucket)
    assert summary.failures == [("f", "replaced by a symlink since the scan; not followed")]
    assert objects_are_consistent(s3, bucket) == {"data/other": b"o"}


def test_a_file_swapped_for_a_fifo_does_not_hang_the_backup(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree(tmp_path / "src", {"f": b"inside", "other": b"o"})

    def to_fifo(path: Path) -> None:
        path.unlink()
        os.mkfifo(path)

    swap_before_open(monkeypatch, "f", to_fifo)
    result: list[s3common.Summary] = []
    worker = threading.Thread(target=lambda: result.append(backup(conn, root, bucket)))
    worker.start()
    worker.join(timeout=60)
    if worker.is_alive():  # unblock the open so the test run can end, then fail
        with open(root / "f", "wb"):
            pass
        worker.join()
        pytest.fail("the backup blocked on a FIFO")
    (summary,) = result
    assert summary.failures == [
        ("f", "replaced by something that is not a regular file since the scan")
    ]
    assert objects_are_consistent(s3, bucket) == {"data/other": b"o"}


def test_a_file_replaced_by_another_is_not_read_in_its_place(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hard link or a rename puts another inode at the path: perhaps a file from
    outside DIR that the user running the backup may read and its owner did not mean
    to share. Only the inode the scan saw is read."""
    outside = make_tree(tmp_path / "outside", {"shadow": b"hashes"}) / "shadow"
    root = make_tree(tmp_path / "src", {"f": b"inside"})

    def to_hard_link(path: Path) -> None:
        path.unlink()
        os.link(outside, path)

    swap_before_open(monkeypatch, "f", to_hard_link)
    summary = backup(conn, root, bucket)
    assert summary.failures == [("f", "replaced by another file since the scan")]
    assert objects_are_consistent(s3, bucket) == {}


def test_a_followed_symlink_retargeted_after_the_scan_is_refused(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    targets = make_tree(tmp_path / "targets", {"meant": b"meant", "secret": b"secret"})
    root = tmp_path / "src"
    root.mkdir()
    (root / "link").symlink_to(targets / "meant")

    def retarget(path: Path) -> None:
        path.unlink()
        path.symlink_to(targets / "secret")

    swap_before_open(monkeypatch, "link", retarget)
    summary = backup(conn, root, bucket, follow_symlinks=True)
    assert summary.failures == [("link", "replaced by another file since the scan")]
    assert objects_are_consistent(s3, bucket) == {}


# --- while a multipart upload goes ------------------------------------------------------------


def unversioned_bucket(s3: Any, bucket: str, status: str | None) -> None:
    """A bucket the tool did not make: versioning never enabled, or suspended."""
    s3.create_bucket(Bucket=bucket)
    if status:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": status})


@pytest.mark.parametrize("status", [None, "Suspended"], ids=["never-versioned", "suspended"])
def test_a_big_file_changing_once_during_upload_deletes_nothing_and_goes_up_on_retry(
    conn: Connection,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    status: str | None,
) -> None:
    unversioned_bucket(s3, bucket, status)
    root = make_tree(tmp_path / "src", {"big": os.urandom(BIG)})
    backup(conn, root, bucket)
    newer, newest = os.urandom(BIG), os.urandom(BIG)
    (root / "big").write_bytes(newer)
    on_upload_part(conn, lambda: (root / "big").write_bytes(newest), times=1)
    calls = count_calls(conn.client)
    summary = backup(conn, root, bucket)
    assert (summary.failures, summary.warnings) == ([], [])
    assert objects_are_consistent(s3, bucket) == {"data/big": newest}
    assert "DeleteObject" not in calls and "DeleteObjects" not in calls
    assert calls["CompleteMultipartUpload"] == 1  # the first upload was never completed
    assert calls["AbortMultipartUpload"] == 1
    assert open_uploads(s3, bucket) == []


@pytest.mark.parametrize("status", [None, "Suspended", "Enabled"])
def test_a_big_file_that_never_stops_changing_goes_up_as_read_and_nothing_is_deleted(
    conn: Connection,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    status: str | None,
) -> None:
    unversioned_bucket(s3, bucket, status)
    good = os.urandom(BIG)
    root = make_tree(tmp_path / "src", {"big": good})
    backup(conn, root, bucket)
    path = root / "big"
    path.write_bytes(os.urandom(BIG))
    on_upload_part(conn, lambda: path.write_bytes(os.urandom(BIG)), times=None)
    calls = count_calls(conn.client)
    summary = backup(conn, root, bucket)
    assert summary.failures == []
    assert summary.warnings == [("big", CHANGING)]
    assert "DeleteObject" not in calls and "DeleteObjects" not in calls
    assert calls["CompleteMultipartUpload"] == 1  # only the upload of the bytes as read
    assert open_uploads(s3, bucket) == []
    stored = objects_are_consistent(s3, bucket)["data/big"]
    assert len(stored) == BIG and stored != good
    versions = s3.list_object_versions(Bucket=bucket, Prefix="data/big")
    assert "DeleteMarkers" not in versions
    if status == "Enabled":  # the previous good version is still there
        bodies = [
            s3.get_object(Bucket=bucket, Key="data/big", VersionId=v["VersionId"])["Body"].read()
            for v in versions["Versions"]
        ]
        assert good in bodies
    restored = s3common.restore(conn, "data", bucket=bucket, destination=str(tmp_path / "out"))
    assert restored.failures == []
    assert (tmp_path / "out" / "data" / "big").read_bytes() == stored


def test_an_rsync_style_replace_during_upload_is_never_a_false_success(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    """rsync writes a new file and renames it over the old one, mtime put back: same
    size, same mtime, new inode. The object must never get bytes its md5 does not
    describe; the file is reported and its previous copy stays."""
    good = os.urandom(BIG)
    root = make_tree(tmp_path / "src", {"big": good})
    backup(conn, root, bucket)
    path = root / "big"
    path.write_bytes(os.urandom(BIG))
    mtime = path.stat().st_mtime_ns

    def rsync_replace() -> None:
        fresh = root / ".big.rsync-tmp"
        fresh.write_bytes(os.urandom(BIG))
        os.utime(fresh, ns=(mtime, mtime))
        os.rename(fresh, path)

    on_upload_part(conn, rsync_replace, times=1)
    summary = backup(conn, root, bucket)
    assert summary.failures == [("big", "replaced by another file since the scan")]
    assert summary.exit_code == s3common.EXIT_FAILURES
    assert objects_are_consistent(s3, bucket) == {"data/big": good}
    assert open_uploads(s3, bucket) == []


# --- a small file that never stops changing ---------------------------------------------------


def test_a_log_that_is_always_appended_to_is_backed_up_as_read(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree(tmp_path / "src", {"app.log": b"line 0\n", "calm": b"c"})
    log_path = root / "app.log"
    real_unchanged = reading.unchanged

    def appending(fileobj: Any, before: os.stat_result) -> bool:
        """The logging program writes a line between every read and its check."""
        with open(log_path, "ab") as writer:
            writer.write(b"another line\n")
        return real_unchanged(fileobj, before)

    monkeypatch.setattr("ass3.reading.unchanged", appending)
    summary = backup(conn, root, bucket)
    assert summary.failures == []
    assert summary.warnings == [("app.log", CHANGING)]
    assert summary.transferred == 2 and summary.exit_code == 0
    stored = objects_are_consistent(s3, bucket)["data/app.log"]
    assert log_path.read_bytes().startswith(stored) and stored.startswith(b"line 0\n")
    monkeypatch.undo()
    again = backup(conn, root, bucket)  # not vouched for by the cache: read and sent again
    assert again.transferred == 1 and again.warnings == []
    assert objects_are_consistent(s3, bucket)["data/app.log"] == log_path.read_bytes()
