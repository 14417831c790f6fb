"""Restore against hostile or odd buckets: nothing is written where it must not be."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from helpers import make_tree, read_tree, tree_state

import s3common
from ass3.files import Placements
from s3common import Connection

HOSTILE_KEYS = {
    "data//etc/passwd": "absolute path",
    "data/../escaped": "path segment '..'",
    "data/a/../../escaped": "path segment '..'",
    "data/./dot": "path segment '.'",
    "data/a//b": "path segment ''",
    "data/..\\..\\windows": "backslash in name",
    "data/bell\x07": "control character in name",
    "data/esc\x1b]0;title\x07": "control character in name",
    "data/new\nline": "control character in name",
    "data/tab\there": "control character in name",
    "data/" + "x" * 256: "path segment longer than 255 bytes",
    "data/" + "é" * 128: "path segment longer than 255 bytes",
}


@pytest.mark.slow
def test_every_hostile_key_is_refused(
    conn: Connection, s3, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s3.create_bucket(Bucket=bucket)
    for key in HOSTILE_KEYS:
        s3.put_object(Bucket=bucket, Key=key, Body=b"planted")
    s3.put_object(Bucket=bucket, Key="data/good", Body=b"fine")
    s3.put_object(Bucket=bucket, Key="data/folder/", Body=b"")  # a console-made folder
    before = tree_state(tmp_path)

    summary = s3common.restore(conn, "data", bucket=bucket, destination=str(tmp_path / "dest"))

    assert dict(summary.failures) == {
        key: f"refused key: {reason}" for key, reason in HOSTILE_KEYS.items()
    }
    assert summary.transferred == 1 and summary.exit_code == s3common.EXIT_FAILURES
    after = tree_state(tmp_path)
    assert {rel: value for rel, value in after.items() if rel not in before} == {
        "dest": "dir",
        "dest/data": "dir",
        "dest/data/good": b"fine",
    }
    assert "\x1b" not in capsys.readouterr().err


@pytest.mark.slow
def test_symlink_planted_as_parent_is_never_followed(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="data/etc/cron.d/job", Body=b"evil")
    s3.put_object(Bucket=bucket, Key="data/fine", Body=b"ok")
    target = tmp_path / "victim"
    target.mkdir()
    root = tmp_path / "dest" / "data"
    root.mkdir(parents=True)
    (root / "etc").symlink_to(target)
    summary = s3common.restore(conn, "data", bucket=bucket, destination=str(tmp_path / "dest"))
    assert [key for key, _ in summary.failures] == ["etc/cron.d/job"]
    assert "symlink" in summary.failures[0][1]
    assert list(target.iterdir()) == []
    assert (root / "fine").read_bytes() == b"ok"


def test_symlink_at_the_file_name_is_replaced_not_written_through(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="data/passwd", Body=b"restored")
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    root = tmp_path / "dest" / "data"
    root.mkdir(parents=True)
    (root / "passwd").symlink_to(victim)
    summary = s3common.restore(conn, "data", bucket=bucket, destination=str(tmp_path / "dest"))
    assert summary.failures == []
    assert victim.read_bytes() == b"precious"
    assert not (root / "passwd").is_symlink()
    assert (root / "passwd").read_bytes() == b"restored"


@pytest.mark.slow
def test_file_and_folder_of_one_name_is_reported_not_a_crash(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="data/a", Body=b"file")
    s3.put_object(Bucket=bucket, Key="data/a/b", Body=b"inside")
    summary = s3common.restore(conn, "data", bucket=bucket, destination=str(tmp_path))
    assert summary.transferred == 1 and len(summary.failures) == 1
    assert summary.failures[0][0] in ("a", "a/b")
    restored = read_tree(tmp_path)
    assert restored in ({"data/a": b"file"}, {"data/a/b": b"inside"})
    assert not [name for name in os.listdir(tmp_path / "data") if name.startswith(".ass3-")]


def test_two_keys_folding_to_one_file_are_reported(tmp_path: Path) -> None:
    """On a case- or Unicode-folding filesystem `A` and `a` open the same file.

    Linux test machines do not fold, so a hard link stands in for the folded name.
    """
    placements = Placements()
    first, second = tmp_path / "t1", tmp_path / "t2"
    first.write_bytes(b"upper")
    second.write_bytes(b"lower")
    placements.replace(str(first), str(tmp_path / "A"), "A")
    os.link(tmp_path / "A", tmp_path / "a")
    with pytest.raises(s3common.FileProblem, match="collides with 'A'"):
        placements.replace(str(second), str(tmp_path / "a"), "a")
    assert (tmp_path / "A").read_bytes() == b"upper"


def test_setuid_and_setgid_bits_are_never_restored(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    s3.create_bucket(Bucket=bucket)
    body = b"#!/bin/sh\n"
    metadata = {"md5": hashlib.md5(body).hexdigest(), "mode": "6755", "mtime": "1"}
    s3.put_object(Bucket=bucket, Key="data/tool", Body=body, Metadata=metadata)
    s3common.restore(conn, "data", bucket=bucket, destination=str(tmp_path))
    assert os.stat(tmp_path / "data" / "tool").st_mode & 0o7777 == 0o755


@pytest.mark.slow
def test_backup_reports_names_restore_would_refuse(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    root = make_tree(tmp_path / "src", {"fine": b"1", "back\\slash": b"2", "bell\x07": b"3"})
    summary = s3common.backup(conn, str(root), bucket=bucket, prefix="data")
    assert summary.transferred == 1
    assert sorted(reason for _, reason in summary.failures) == [
        "cannot be restored safely: backslash in name",
        "cannot be restored safely: control character in name",
    ]


@pytest.mark.slow
def test_stale_temporary_files_of_a_killed_restore_are_removed(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="data/sub/a", Body=b"a")
    make_tree(tmp_path / "data", {"sub/.ass3-a.x1y2z3w4.part": b"half", "sub/.ass3-notes": b"mine"})
    s3common.restore(conn, "data", bucket=bucket, destination=str(tmp_path))
    assert read_tree(tmp_path) == {"data/sub/a": b"a", "data/sub/.ass3-notes": b"mine"}


@pytest.mark.slow
def test_every_request_names_the_expected_owner(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    """With the account known, S3 itself refuses a bucket that changed hands."""
    seen: list[tuple[str, str | None]] = []

    def record(request: object, event_name: str, **_: object) -> None:
        header = request.headers.get("x-amz-expected-bucket-owner")  # type: ignore[attr-defined]
        owner = header.decode() if isinstance(header, bytes) else header
        seen.append((event_name.rsplit(".", 1)[-1], owner))

    conn.client.meta.events.register("before-send.s3", record)
    root = make_tree(tmp_path / "src", {"small": b"1", "big": os.urandom(11 * s3common.MiB)})
    s3common.backup(conn, str(root), bucket=bucket, prefix="data")
    (root / "small").write_bytes(b"2")
    s3common.backup(conn, str(root), bucket=bucket, prefix="data")
    s3common.restore(conn, "data", bucket=bucket, destination=str(tmp_path / "out"))
    operations = {operation for operation, _ in seen}
    assert {"PutObject", "UploadPart", "GetObject", "HeadObject", "ListObjectsV2"} <= operations
    without = {op for op, owner in seen if owner != "123456789012"}
    assert without == {"ListBuckets", "CreateBucket"}
