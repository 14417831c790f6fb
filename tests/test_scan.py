"""The local walk: key order, what is skipped, what is reported. Real temporary folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import make_tree

import s3common


def walk(root: Path) -> tuple[list[str], s3common.ScanReport]:
    report = s3common.ScanReport()
    return [entry.rel for entry in s3common.scan_tree(str(root), report)], report


def test_walk_yields_keys_in_s3_listing_order(tmp_path: Path) -> None:
    names = ["a-b", "a/b", "a/c/d", "a.txt", "a0", "B", "z", "é", "e\u0301", "日/x", "~"]
    root = make_tree(tmp_path, {name: b"" for name in names})
    rels, report = walk(root)
    assert rels == sorted(names, key=s3common.key_order)
    assert report.problems == [] and report.skipped == []


def test_walk_records_stat_identity(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"f": b"data"})
    (entry,) = s3common.scan_tree(str(root), s3common.ScanReport())
    st = os.stat(root / "f")
    assert (entry.size, entry.mtime_ns, entry.ctime_ns, entry.inode) == (
        4,
        st.st_mtime_ns,
        st.st_ctime_ns,
        st.st_ino,
    )


def test_walk_skips_links_and_special_files(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", {"real/f": b"1"})
    (root / "file-link").symlink_to(root / "real" / "f")
    (root / "dir-link").symlink_to(root / "real")
    (root / "loop").symlink_to(root)
    os.mkfifo(root / "fifo")
    rels, report = walk(root)
    assert rels == ["real/f"]
    assert sorted(reason for _, reason in report.skipped) == [
        "special file",
        "symlink",
        "symlink",
        "symlink",
    ]


@pytest.mark.slow
def test_walk_of_a_deep_tree_does_not_recurse(tmp_path: Path) -> None:
    """Folders are walked with an explicit stack: depth is bounded by PATH_MAX, not Python."""
    folder = str(tmp_path)
    for _ in range(1200):  # deeper than Python's recursion limit
        folder = os.path.join(folder, "d")
        os.mkdir(folder)
    Path(folder, "leaf").write_bytes(b"x")
    try:
        rels, _ = walk(tmp_path)
        assert rels == ["/".join(["d"] * 1200) + "/leaf"]
    finally:  # shutil.rmtree recurses too (Python 3.11): remove bottom-up by hand
        os.unlink(os.path.join(folder, "leaf"))
        while folder != str(tmp_path):
            os.rmdir(folder)
            folder = os.path.dirname(folder)
