"""Hostile trees and hostile destinations: a planted run record whose tree would lead a
write outside the destination, and restores over a tree that is not what the record
says. Nothing outside DEST/NAME is ever written, and no user's folder is removed."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import make_tree

import s3common
from ass3.records import new_run_id
from ass3.tree import Folder, Owner, Symlink, Tree
from s3common import Connection

pytestmark = pytest.mark.slow
RUN = new_run_id()
MD5_OF_X = "9dd4e461268c8034f5c8564e155c67a6"  # of b"x"


def plant(s3: Any, bucket: str, files: dict[str, bytes], tree: dict[str, Any]) -> None:
    """Objects of a backup `data`, and a run record naming them with `tree`."""
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    lines = []
    for rel, body in sorted(files.items()):
        response = s3.put_object(Bucket=bucket, Key=f"data/{rel}", Body=body)
        etag = response["ETag"].strip('"')
        lines.append([rel, len(body), etag, etag, response["VersionId"]])
    document = {
        "format": 2,
        "run": RUN,
        "source": "/src",
        "uploaded": len(files),
        "deleted": 0,
        "failed": 0,
        "versioned": True,
        "files": lines,
        "tree": tree,
    }
    body = gzip.compress(json.dumps(document).encode(), mtime=0)
    s3.put_object(Bucket=bucket, Key=s3common.record_key("data", RUN), Body=body)


def tree_with(**parts: Any) -> dict[str, Any]:
    return Tree((Owner(0, 0),), Folder("", 0o755, 10**18, 0), **parts).to_document()


def everything_below(root: Path) -> dict[str, object]:
    found: dict[str, object] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                found[rel] = ("folder", oct(path.stat().st_mode))
            else:
                found[rel] = path.read_bytes()
    return found


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "victim", {"passwd": b"root:x:0:0", "sub/keep": b"keep"})


@pytest.mark.parametrize("by_run", [True, False], ids=["--run", "current objects"])
def test_a_planted_symlink_never_redirects_a_file_of_the_same_record(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path, victim: Path, by_run: bool
) -> None:
    """A record with a symlink `a -> /victim` and a file `a/passwd`: files are written
    first into a real folder `a`, and the symlink then finds a folder in its way."""
    plant(
        s3,
        bucket,
        {"a/passwd": b"pwned", "b": b"x"},
        tree_with(
            symlinks=(
                Symlink("a", os.fsencode(victim), 0, 0),
                Symlink("c", os.fsencode(victim / "passwd"), 0, 0),
            )
        ),
    )
    before = everything_below(victim)
    dest = tmp_path / "dest"
    options = {"run_id": RUN} if by_run else {}
    summary = s3common.restore(conn, "data", bucket=bucket, destination=str(dest), **options)
    assert everything_below(victim) == before
    assert summary.failures == [("a", "refused: a folder is in the way")]
    assert (dest / "data" / "a" / "passwd").read_bytes() == b"pwned"
    assert os.readlink(dest / "data" / "c") == str(victim / "passwd")  # data: never followed


def test_a_symlink_made_by_one_restore_redirects_no_write_of_the_next(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path, victim: Path
) -> None:
    plant(s3, bucket, {"b": b"x"}, tree_with(symlinks=(Symlink("a", os.fsencode(victim), 0, 0),)))
    dest = tmp_path / "dest"
    s3common.restore(conn, "data", bucket=bucket, destination=str(dest))
    assert os.readlink(dest / "data" / "a") == str(victim)
    s3.put_object(Bucket=bucket, Key="data/a/passwd", Body=b"pwned")
    summary = s3common.restore(conn, "data", bucket=bucket, destination=str(dest))
    assert summary.failures == [(("a/passwd"), f"refused: {dest / 'data' / 'a'} is a symlink")]
    assert (victim / "passwd").read_bytes() == b"root:x:0:0"


@pytest.mark.parametrize(
    ("tree", "why"),
    [
        (tree_with(symlinks=(Symlink("a", b"x" * 1_000_000, 0, 0),)), "symlinks/0/1"),
        (tree_with(folders=(Folder("..", 0o755, 0, 0),)), "path segment '..'"),
        (tree_with(folders=(Folder("a", 0o77777, 0, 0),)), "fails maximum 4095"),
        (tree_with(hardlinks=(("b", "../../victim/passwd"),)), "path segment '..'"),
        (tree_with(hardlinks=(("b", "b"),)), "fails uniqueItems"),
        (
            tree_with(
                folders=(Folder("a/inner", 0o755, 0, 0),),
                symlinks=(Symlink("a", b"/tmp", 0, 0),),
            ),
            "is below the symlink 'a'",
        ),
    ],
    ids=[
        "target-1-mb",
        "folder-dot-dot",
        "mode-out-of-range",
        "link-outside",
        "link-self",
        "below",
    ],
)
def test_a_hostile_tree_is_one_line_and_writes_nothing(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path, tree: dict[str, Any], why: str
) -> None:
    plant(s3, bucket, {"b": b"x"}, tree)
    dest = tmp_path / "dest"
    with pytest.raises(s3common.Ass3Error, match=f"is unusable: .*{why}"):
        s3common.restore(conn, "data", bucket=bucket, destination=str(dest), run_id=RUN)
    assert not dest.exists()


def test_a_bad_latest_record_leaves_the_tree_out_of_a_restore_of_current_objects(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plant(s3, bucket, {"b": b"x"}, tree_with(folders=(Folder("..", 0o755, 0, 0),)))
    summary = s3common.restore(conn, "data", bucket=bucket, destination=str(tmp_path / "dest"))
    assert summary.failures == [] and summary.transferred == 1
    assert "folders, symlinks and owners not restored" in caplog.text


def test_a_hostile_mode_in_object_metadata_is_ignored(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    """Another writer of the bucket sets mode metadata of -1 (every bit, with
    --keep-special-bits) or beyond 7777: the file keeps the temporary's 0600."""
    s3.create_bucket(Bucket=bucket)
    for name, mode in [("minus", "-1"), ("big", "77777"), ("word", "rwx")]:
        s3.put_object(Bucket=bucket, Key=f"data/{name}", Body=b"x", Metadata={"mode": mode})
    options = s3common.TreeOptions(keep_special_bits=True)
    s3common.restore(
        conn, "data", bucket=bucket, destination=str(tmp_path / "dest"), tree_options=options
    )
    for name in ("minus", "big", "word"):
        assert (tmp_path / "dest" / "data" / name).stat().st_mode & 0o7777 == 0o600


# --- restoring over a tree that is not what the record says ------------------------------------


@pytest.fixture
def backed_up(conn: Connection, s3: Any, bucket: str, tmp_path: Path) -> Path:
    """A backup `data` with a folder `d` holding a file, and a symlink `s -> d`."""
    source = make_tree(tmp_path / "data", {"d/f": b"from the backup"})
    (source / "s").symlink_to("d")
    s3common.backup(conn, str(source), bucket=bucket, prefix="data")
    return source


def test_a_symlink_where_a_users_folder_stands_is_refused_and_the_folder_kept(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path, backed_up: Path
) -> None:
    dest = make_tree(tmp_path / "dest", {"data/s/mine.txt": b"the user's file"})
    summary = s3common.restore(conn, "data", bucket=bucket, destination=str(dest))
    assert summary.failures == [("s", "refused: a folder is in the way")]
    assert (dest / "data" / "s" / "mine.txt").read_bytes() == b"the user's file"
    assert (dest / "data" / "d" / "f").read_bytes() == b"from the backup"


def test_a_folder_where_a_symlink_stands_is_refused_and_nothing_written_through(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path, backed_up: Path, victim: Path
) -> None:
    dest = tmp_path / "dest"
    (dest / "data").mkdir(parents=True)
    (dest / "data" / "d").symlink_to(victim)
    before = everything_below(victim)
    summary = s3common.restore(conn, "data", bucket=bucket, destination=str(dest))
    refused = f"refused: {dest / 'data' / 'd'} is a symlink"
    assert sorted(summary.failures) == [("d", refused), ("d/f", refused)]
    assert everything_below(victim) == before
    assert os.readlink(dest / "data" / "d") == str(victim)


@pytest.mark.parametrize("what", ["file", "other link"])
def test_a_file_or_another_link_at_a_symlinks_name_is_replaced(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path, backed_up: Path, what: str
) -> None:
    """As a restore replaces a local file with the backup's: renamed over, never
    written through (the other link points at a file outside, which stays)."""
    outside = make_tree(tmp_path / "outside", {"f": b"outside"})
    dest = tmp_path / "dest"
    (dest / "data").mkdir(parents=True)
    if what == "file":
        (dest / "data" / "s").write_bytes(b"local")
    else:
        (dest / "data" / "s").symlink_to(outside / "f")
    summary = s3common.restore(conn, "data", bucket=bucket, destination=str(dest))
    assert summary.failures == []
    assert os.readlink(dest / "data" / "s") == "d"
    assert (outside / "f").read_bytes() == b"outside"
    assert [name for name in os.listdir(dest / "data") if name.startswith(".ass3-")] == []


def test_a_hard_link_member_whose_anchor_failed_is_downloaded_as_a_copy(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    source = make_tree(tmp_path / "data", {"a": b"same", "b": b"same"})
    os.unlink(source / "b")
    os.link(source / "a", source / "b")
    s3common.backup(conn, str(source), bucket=bucket, prefix="data")
    dest = tmp_path / "dest"
    (dest / "data" / "a").mkdir(parents=True)  # the anchor cannot be placed
    (dest / "data" / "a" / "mine").write_bytes(b"mine")
    summary = s3common.restore(conn, "data", bucket=bucket, destination=str(dest))
    assert [rel for rel, _ in summary.failures] == ["a"]
    assert (dest / "data" / "b").read_bytes() == b"same"
    assert (dest / "data" / "a" / "mine").read_bytes() == b"mine"


def test_a_member_whose_object_changed_since_the_record_is_not_linked(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    """The newest record says a and b are one file; the current object of b differs
    (written after it): restoring the current objects must not lose b's bytes."""
    source = make_tree(tmp_path / "data", {"a": b"same"})
    os.link(source / "a", source / "b")
    s3common.backup(conn, str(source), bucket=bucket, prefix="data")
    s3.put_object(Bucket=bucket, Key="data/b", Body=b"newer")
    dest = tmp_path / "dest"
    summary = s3common.restore(conn, "data", bucket=bucket, destination=str(dest))
    assert summary.failures == []
    assert (dest / "data" / "a").read_bytes() == b"same"
    assert (dest / "data" / "b").read_bytes() == b"newer"
    assert os.stat(dest / "data" / "a").st_ino != os.stat(dest / "data" / "b").st_ino


def test_a_backup_without_a_tree_restores_as_before(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    """Objects with no run record, and a record of format 1: files only, no failure."""
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="data/sub/f", Body=b"x", Metadata={"mode": "640"})
    summary = s3common.restore(conn, "data", bucket=bucket, destination=str(tmp_path / "a"))
    assert (summary.failures, summary.transferred) == ([], 1)
    assert ((tmp_path / "a" / "data" / "sub" / "f").stat().st_mode & 0o777) == 0o640
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    version = s3.put_object(Bucket=bucket, Key="data/sub/f", Body=b"x")["VersionId"]
    document = {
        "format": 1,
        "run": RUN,
        "source": "/src",
        "uploaded": 1,
        "deleted": 0,
        "failed": 0,
        "versioned": True,
        "files": [["sub/f", 1, MD5_OF_X, MD5_OF_X, version]],
    }
    s3.put_object(
        Bucket=bucket,
        Key=s3common.record_key("data", RUN),
        Body=gzip.compress(json.dumps(document).encode()),
    )
    for options in ({}, {"run_id": RUN}):
        dest = tmp_path / f"b{len(options)}"
        summary = s3common.restore(conn, "data", bucket=bucket, destination=str(dest), **options)
        assert (summary.failures, summary.transferred) == ([], 1)
        assert (dest / "data" / "sub" / "f").read_bytes() == b"x"
