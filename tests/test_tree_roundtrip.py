"""Backup then restore gives back the tree, not only file bytes: every entry equal by
lstat (type, mode, size, mtime, owner, symlink target, hard-link groups, user xattrs),
and a second backup of the unchanged tree uploads nothing and writes no record."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import count_calls, make_tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

import s3common
from ass3.records import RunRecord
from bench.tree_compare import compare

pytestmark = pytest.mark.slow
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="chown to other users needs root")


def back_up(conn: s3common.Connection, source: Path, bucket: str, **options: Any) -> Any:
    return s3common.backup(conn, str(source), bucket=bucket, prefix="tree", **options)


def restore(conn: s3common.Connection, dest: Path, bucket: str, **options: Any) -> Any:
    return s3common.restore(conn, "tree", bucket=bucket, destination=str(dest), **options)


def differences(original: Path, restored: Path, *, xattrs: bool = False) -> dict[str, list[str]]:
    found = compare(str(original), str(restored), content=True, xattrs=xattrs).differences
    if not ROOT:
        found.pop("owner", None)
    return dict(found)


def rich_tree(root: Path) -> Path:
    """Every kind of entry the tree records, with modes, times and owners of its own."""
    make_tree(root, {"d/f": b"file", "d/sub/g": b"gg", "top": b"t" * 100, "x/y/z": b"z"})
    (root / "empty" / "nested-empty").mkdir(parents=True)
    (root / "rel").symlink_to("d/f")
    (root / "d" / "up").symlink_to("../top")
    (root / "abs").symlink_to("/etc/hostname")
    (root / "dangling").symlink_to("no/such/thing")
    (root / "folder-link").symlink_to("d/sub")
    os.symlink(b"caf\xe9-not-utf-8", bytes(root / "raw"))
    os.link(root / "top", root / "d" / "top-again")
    os.link(root / "top", root / "x" / "top-third")
    os.link(root / "d" / "sub" / "g", root / "g-link")
    os.setxattr(root / "d" / "f", "user.mime_type", b"text/plain")
    os.setxattr(root / "d", "user.comment", b"\x00\xffbytes")
    os.setxattr(root, "user.origin", b"top")
    os.chmod(root / "d" / "f", 0o640)
    os.chmod(root / "empty", 0o700)
    os.chmod(root / "x" / "y", 0o750)
    if ROOT:
        os.chown(root / "d", 1000, 1000)
        os.chown(root / "d" / "f", 1234, 5678)  # ids this system has no names for
        os.chown(root / "rel", 1000, 1000, follow_symlinks=False)
        os.chown(root / "empty" / "nested-empty", 0, 1000)
    for path, mtime in [
        (root / "abs", 1_100_000_000_123_456_789),
        (root / "d" / "f", 1_200_000_000_000_000_001),
        (root / "x" / "y", 1_300_000_000_999_999_999),
        (root / "empty" / "nested-empty", 1_400_000_000_000_000_000),
        (root / "empty", 1_500_000_000_000_000_000),
        (root / "x", 1_000_000_000),
        (root / "d" / "sub", 1_600_000_000_000_000_000),
        (root / "d", 1_700_000_000_000_000_000),
        (root, 1_750_000_000_000_000_000),
    ]:
        os.utime(path, ns=(mtime, mtime), follow_symlinks=False)
    os.chmod(root / "x", 0o555)  # read-only: restore writes into it before making it so
    return root


def test_the_whole_tree_comes_back_and_an_unchanged_tree_writes_nothing(
    conn: s3common.Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    source = rich_tree(tmp_path / "src")
    first = back_up(conn, source, bucket, xattrs=True)
    assert (first.failures, first.warnings, first.transferred) == ([], [], 7)
    assert first.run_id is not None

    calls = count_calls(conn.client)
    again = back_up(conn, source, bucket, xattrs=True)
    assert (again.transferred, again.run_id, again.failures) == (0, None, [])
    assert calls == {"ListBuckets": 1, "ListObjectsV2": 1}

    out = tmp_path / "out"
    restored = restore(conn, out, bucket, tree_options=s3common.TreeOptions(xattrs=True))
    assert (restored.failures, restored.warnings) == ([], [])
    assert restored.transferred == 4  # the other three are hard links to them
    assert differences(source, out / "tree", xattrs=True) == {}

    # The restored tree is the backed-up tree, as the backup sees it: nothing to send.
    calls.clear()
    of_restored = back_up(conn, out / "tree", bucket, xattrs=True)
    assert (of_restored.transferred, of_restored.run_id, of_restored.failures) == (0, None, [])
    assert calls["PutObject"] == calls["CopyObject"] == 0


def test_restoring_over_the_restored_tree_changes_nothing(
    conn: s3common.Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    source = rich_tree(tmp_path / "src")
    back_up(conn, source, bucket)
    out = tmp_path / "out"
    restore(conn, out, bucket)
    again = restore(conn, out, bucket)
    assert (again.failures, again.transferred) == ([], 0)
    assert differences(source, out / "tree") == {}


def test_a_restore_by_run_gives_each_runs_tree(
    conn: s3common.Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    source = make_tree(tmp_path / "src", {"f": b"1"})
    (source / "link").symlink_to("f")
    first = back_up(conn, source, bucket).run_id
    (source / "link").unlink()
    (source / "link").symlink_to("elsewhere")
    (source / "new-empty").mkdir()
    second = back_up(conn, source, bucket).run_id
    assert first and second and first != second
    restore(conn, tmp_path / "one", bucket, run_id=first)
    assert os.readlink(tmp_path / "one" / "tree" / "link") == "f"
    assert not (tmp_path / "one" / "tree" / "new-empty").exists()
    restore(conn, tmp_path / "two", bucket, run_id=second)
    assert os.readlink(tmp_path / "two" / "tree" / "link") == "elsewhere"
    assert (tmp_path / "two" / "tree" / "new-empty").is_dir()


def test_a_tree_of_only_folders_and_symlinks_is_a_backup(
    conn: s3common.Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    (source / "a" / "b").mkdir(parents=True)
    (source / "a" / "link").symlink_to("b")
    summary = back_up(conn, source, bucket)
    assert summary.run_id is not None and summary.transferred == 0
    restored = restore(conn, tmp_path / "out", bucket)
    assert restored.failures == []
    assert differences(source, tmp_path / "out" / "tree") == {}


# --- a change of the tree alone --------------------------------------------------------------


def _chmod_folder(root: Path) -> None:
    os.chmod(root / "d", 0o700)


def _new_symlink(root: Path) -> None:
    (root / "new-link").symlink_to("d/f")


def _retarget_symlink(root: Path) -> None:
    (root / "link").unlink()
    (root / "link").symlink_to("d")


def _new_empty_folder(root: Path) -> None:
    (root / "d" / "empty").mkdir()


def _chown_file(root: Path) -> None:
    if not ROOT:
        pytest.skip("chown to other users needs root")
    # A full second after the upload, always: the new ctime then always costs the one
    # HeadObject that compares the object's metadata (as on a busy machine it did at times).
    time.sleep(1.1)
    os.chown(root / "d" / "f", 4321, 4321)


def _new_hard_link(root: Path) -> None:
    os.link(root / "d" / "f", root / "f-again")


@pytest.mark.parametrize(
    "change",
    [_chmod_folder, _new_symlink, _retarget_symlink, _new_empty_folder, _chown_file],
)
def test_a_change_of_the_tree_alone_writes_a_record_without_uploading(
    conn: s3common.Connection, s3: Any, bucket: str, tmp_path: Path, change: Any
) -> None:
    source = make_tree(tmp_path / "src", {"d/f": b"1", "g": b"2"})
    (source / "link").symlink_to("g")
    old = 1_600_000_000_000_000_000
    for path in (source / "d" / "f", source / "g", source / "d", source):
        os.utime(path, ns=(old, old))  # older than the state cache's racy window
    back_up(conn, source, bucket)
    assert back_up(conn, source, bucket).run_id is None
    change(source)
    calls = count_calls(conn.client)
    summary = back_up(conn, source, bucket)
    assert summary.run_id is not None and summary.transferred == 0
    assert calls["PutObject"] == 1  # the run record, and no data
    assert calls["CopyObject"] == 0  # the metadata S3 holds (mtime, mode) is still right
    assert calls["HeadObject"] == (1 if change is _chown_file else 0)
    restore(conn, tmp_path / "out", bucket)
    assert differences(source, tmp_path / "out" / "tree") == {}
    assert back_up(conn, source, bucket).run_id is None


def test_a_new_hard_link_is_a_new_file_and_a_new_group(
    conn: s3common.Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    source = make_tree(tmp_path / "src", {"d/f": b"1"})
    back_up(conn, source, bucket)
    _new_hard_link(source)
    summary = back_up(conn, source, bucket)
    # Its content is in the bucket already: the new name's object is a server-side copy.
    assert (summary.transferred, summary.copied) == (0, 1) and summary.run_id is not None
    restored = restore(conn, tmp_path / "out", bucket)
    assert restored.transferred == 1  # the other name is a link to it
    out = tmp_path / "out" / "tree"
    assert os.stat(out / "f-again").st_ino == os.stat(out / "d" / "f").st_ino


def test_a_cold_cache_asks_the_latest_record_once(
    conn: s3common.Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    """Without the digest in the state cache: one listing of the runs and one HeadObject
    of the newest record, no new record; then the cache knows."""
    source = make_tree(tmp_path / "src", {"f": b"1"})
    (source / "link").symlink_to("f")
    back_up(conn, source, bucket)
    cold = str(tmp_path / "cold.sqlite3")
    calls = count_calls(conn.client)
    summary = back_up(conn, source, bucket, cache_path=cold)
    assert summary.run_id is None
    assert calls == {"ListBuckets": 1, "ListObjectsV2": 2, "HeadObject": 1}
    calls.clear()
    assert back_up(conn, source, bucket, cache_path=cold).run_id is None
    assert calls == {"ListBuckets": 1, "ListObjectsV2": 1}


def test_after_a_record_without_a_tree_the_next_run_records_the_tree(
    conn: s3common.Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    """A backup made before records held trees: the first run of this version records it
    once, without uploading."""
    source = make_tree(tmp_path / "src", {"f": b"1"})
    (source / "link").symlink_to("f")
    back_up(conn, source, bucket)
    runs = s3.list_objects_v2(Bucket=bucket, Prefix=".ass3/runs/tree/")["Contents"]
    key = runs[0]["Key"]
    old = RunRecord.from_bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    s3.delete_object(Bucket=bucket, Key=key)
    s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=RunRecord(*[getattr(old, f) for f in FIELDS_OF_FORMAT_1]).to_bytes(),
    )
    summary = back_up(conn, source, bucket, cache_path=str(tmp_path / "cold.sqlite3"))
    assert summary.run_id is not None and summary.transferred == 0


FIELDS_OF_FORMAT_1 = ["run_id", "source", "uploaded", "deleted", "failed", "versioned", "files"]


# --- owners, special bits, xattrs ------------------------------------------------------------


@needs_root
@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, (1000, 1000)),
        ({"same_owner": False}, (0, 0)),
        ({"numeric_owner": True}, (1000, 1000)),
    ],
)
def test_owners_are_restored_as_tar_restores_them(
    conn: s3common.Connection,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    options: dict[str, Any],
    expected: tuple[int, int],
) -> None:
    source = make_tree(tmp_path / "src", {"d/f": b"1"})
    (source / "link").symlink_to("d/f")
    for path in (source / "d", source / "d" / "f", source / "link"):
        os.chown(path, 1000, 1000, follow_symlinks=False)
    back_up(conn, source, bucket)
    restore(conn, tmp_path / "out", bucket, tree_options=s3common.TreeOptions(**options))
    out = tmp_path / "out" / "tree"
    for rel in ("d", "d/f", "link"):
        st_ = os.lstat(out / rel)
        assert (st_.st_uid, st_.st_gid) == expected, rel


@needs_root
def test_a_recorded_name_maps_to_this_systems_id_unless_numeric(
    conn: s3common.Connection, s3: Any, bucket: str, tmp_path: Path, monkeypatch: Any
) -> None:
    from ass3 import treeio

    source = make_tree(tmp_path / "src", {"f": b"1"})
    os.chown(source / "f", 1000, 1000)  # "cloudsdk" here; elsewhere another id
    back_up(conn, source, bucket)
    names = {"cloudsdk": 2000}
    monkeypatch.setattr(treeio, "_user_id", names.get)
    monkeypatch.setattr(treeio, "_group_id", names.get)
    restore(conn, tmp_path / "by-name", bucket)
    restore(conn, tmp_path / "by-id", bucket, tree_options=s3common.TreeOptions(numeric_owner=True))
    by_name = os.stat(tmp_path / "by-name" / "tree" / "f")
    by_id = os.stat(tmp_path / "by-id" / "tree" / "f")
    if os.path.exists("/etc/passwd") and "cloudsdk:x:1000" in Path("/etc/passwd").read_text():
        assert (by_name.st_uid, by_name.st_gid) == (2000, 2000)
    assert (by_id.st_uid, by_id.st_gid) == (1000, 1000)


@pytest.mark.parametrize("keep", [False, True])
def test_special_bits_only_with_keep_special_bits(
    conn: s3common.Connection, s3: Any, bucket: str, tmp_path: Path, keep: bool
) -> None:
    source = make_tree(tmp_path / "src", {"shared/prog": b"#!/bin/sh\n"})
    os.chmod(source / "shared" / "prog", 0o4755)
    os.chmod(source / "shared", 0o3775)  # setgid and sticky
    back_up(conn, source, bucket)
    options = s3common.TreeOptions(keep_special_bits=keep)
    restore(conn, tmp_path / "out", bucket, tree_options=options)
    out = tmp_path / "out" / "tree"
    assert stat.S_IMODE(os.stat(out / "shared" / "prog").st_mode) == (0o4755 if keep else 0o755)
    assert stat.S_IMODE(os.stat(out / "shared").st_mode) == (0o3775 if keep else 0o775)


@needs_root
def test_setuid_is_not_kept_for_root_when_the_owner_is_not_restored(
    conn: s3common.Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    """Root restoring with --no-same-owner would make another user's setuid program a
    setuid-root one: the bits go, even with --keep-special-bits."""
    source = make_tree(tmp_path / "src", {"prog": b"#!/bin/sh\n"})
    os.chown(source / "prog", 1000, 1000)
    os.chmod(source / "prog", 0o4755)
    back_up(conn, source, bucket)
    options = s3common.TreeOptions(keep_special_bits=True, same_owner=False)
    restore(conn, tmp_path / "out", bucket, tree_options=options)
    st_ = os.stat(tmp_path / "out" / "tree" / "prog")
    assert (st_.st_uid, stat.S_IMODE(st_.st_mode)) == (0, 0o755)


def test_xattrs_only_with_the_option_and_a_refusal_is_one_warning(
    conn: s3common.Connection, s3: Any, bucket: str, tmp_path: Path, monkeypatch: Any
) -> None:
    source = make_tree(tmp_path / "src", {"a": b"1", "b": b"2", "d/c": b"3"})
    for path in (source / "a", source / "b", source / "d"):
        os.setxattr(path, "user.tag", b"v")
    back_up(conn, source, bucket, xattrs=True)
    restore(conn, tmp_path / "without", bucket)
    assert os.listxattr(tmp_path / "without" / "tree" / "a") == []
    refused = 0

    def setxattr(*_: Any, **__: Any) -> None:
        nonlocal refused
        refused += 1
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(os, "setxattr", setxattr)
    summary = restore(
        conn, tmp_path / "refusing", bucket, tree_options=s3common.TreeOptions(xattrs=True)
    )
    assert refused == 3 and summary.failures == []
    assert summary.warnings == [
        ("a", "user xattrs not restored: Operation not supported (and 2 more entries)")
    ]
    assert (tmp_path / "refusing" / "tree" / "d" / "c").read_bytes() == b"3"


# --- any names -------------------------------------------------------------------------------

NAME_CHARS = st.sampled_from(list("abcXYZ019 -_#%+=&@!~'()[]{};,.éü日本\u0301"))
segment = st.text(NAME_CHARS, min_size=1, max_size=10).filter(lambda name: name not in (".", ".."))
kinds = st.sampled_from(["file", "folder", "symlink"])
targets = st.one_of(
    st.text(NAME_CHARS, min_size=1, max_size=20).map(os.fsencode),
    st.sampled_from([b"/etc/hostname", b"../../outside", b"caf\xe9", b"a/b/../c"]),
)
entries = st.dictionaries(
    st.lists(segment, min_size=1, max_size=3).map(tuple),
    st.tuples(kinds, targets, st.integers(0, 2 * 10**18)),
    min_size=1,
    max_size=8,
)


def build(root: Path, tree: dict[tuple[str, ...], tuple[str, bytes, int]]) -> None:
    """The entries of `tree` that fit: none below a file or a symlink."""
    root.mkdir()
    taken: dict[tuple[str, ...], str] = {}
    for parts, (kind, target, mtime) in sorted(tree.items()):
        above = [parts[:depth] for depth in range(1, len(parts))]
        if parts in taken or any(taken.get(folder, "folder") != "folder" for folder in above):
            continue
        for folder in above:
            taken[folder] = "folder"
            (root / Path(*folder)).mkdir(exist_ok=True)
        path = root / Path(*parts)
        taken[parts] = kind
        if kind == "file":
            path.write_bytes(os.fsencode("/".join(parts)))
        elif kind == "folder":
            path.mkdir()
        else:
            os.symlink(target, bytes(path))
        os.utime(path, ns=(mtime, mtime), follow_symlinks=False)
    for folder in sorted(taken, key=len, reverse=True):
        if taken[folder] == "folder":
            os.utime(root / Path(*folder), ns=(10**18, 10**18))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries)
def test_any_names_of_files_folders_and_symlinks_round_trip(
    tree: dict[tuple[str, ...], tuple[str, bytes, int]],
) -> None:
    base = Path(tempfile.mkdtemp(prefix="ass3-tree-"))
    try:
        build(base / "src", tree)
        with mock_aws():
            conn = s3common.Connection(workers=2)
            bucket = "tree-round-trip"
            cache = str(base / "state.sqlite3")
            first = back_up(conn, base / "src", bucket, cache_path=cache)
            assert first.failures == [] and first.run_id is not None
            second = back_up(conn, base / "src", bucket, cache_path=cache)
            assert (second.transferred, second.run_id) == (0, None)
            restored = restore(conn, base / "out", bucket)
            assert restored.failures == []
            assert differences(base / "src", base / "out" / "tree") == {}
    finally:
        shutil.rmtree(base)
