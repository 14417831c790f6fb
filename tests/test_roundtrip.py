"""Round-trip property: whatever the tree, backup then restore gives it back exactly."""

from __future__ import annotations

import os
import shutil
import tempfile
import unicodedata
from pathlib import Path

import pytest
from helpers import make_tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

import s3common

# Many hypothesis examples, each a full backup and restore on moto.
pytestmark = pytest.mark.slow

# Names people really have: spaces, URL-special characters, leading dashes, accents in both
# Unicode normal forms, CJK, and long names (255 bytes is the Linux limit).
NAME_CHARS = st.sampled_from(list("abcXYZ019 -_#%+=&@!~'()[]{};,.éü日本\u0301"))
segment = st.one_of(
    st.text(NAME_CHARS, min_size=1, max_size=12),
    st.sampled_from(["-leading", "#hash", "100%", "a+b", "é", "e\u0301", "x" * 255]),
).filter(lambda name: name not in (".", "..") and len(name.encode()) <= 255)
relpath = st.lists(segment, min_size=1, max_size=3).map("/".join)
entry = st.tuples(
    st.binary(max_size=64),
    st.sampled_from([0o644, 0o600, 0o755, 0o400, 0o640]),
    st.integers(min_value=0, max_value=4_000_000_000 * 10**9),
)


def without_conflicts(files: dict[str, object]) -> bool:
    """No path is both a file and a folder."""
    folders = {rel.rsplit("/", 1)[0] for rel in files if "/" in rel}
    prefixes = {"/".join(f.split("/")[:i]) for f in folders for i in range(1, f.count("/") + 2)}
    return not prefixes & set(files)


trees = st.dictionaries(relpath, entry, min_size=1, max_size=8).filter(without_conflicts)


def snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Bytes, permission bits and mtime (ns) of every file below root."""
    result = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            st_ = os.stat(path)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            with open(path, "rb") as handle:
                result[rel] = (handle.read(), st_.st_mode & 0o7777, st_.st_mtime_ns)
    return result


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees)
def test_backup_restore_round_trip(tree: dict[str, tuple[bytes, int, int]]) -> None:
    base = Path(tempfile.mkdtemp(prefix="ass3-roundtrip-"))
    source = make_tree(base / "src", {rel: content for rel, (content, _, _) in tree.items()})
    for rel, (_, mode, mtime_ns) in tree.items():
        os.chmod(source / rel, mode)
        os.utime(source / rel, ns=(mtime_ns, mtime_ns))
    with mock_aws():
        conn = s3common.Connection(workers=4)
        bucket = "round-trip-bucket"
        first = s3common.backup(conn, str(source), bucket=bucket, prefix="tree")
        assert first.failures == [] and first.transferred == len(tree)
        second = s3common.backup(conn, str(source), bucket=bucket, prefix="tree")
        assert (second.transferred, second.unchanged) == (0, len(tree))

        restored = s3common.restore(conn, "tree", bucket=bucket, destination=str(base / "out"))
        assert restored.failures == [] and restored.transferred == len(tree)
        assert snapshot(base / "out" / "tree") == snapshot(source)
        again = s3common.backup(conn, str(base / "out" / "tree"), bucket=bucket, prefix="tree")
        assert (again.transferred, again.unchanged) == (0, len(tree))
    shutil.rmtree(base)


def test_nfc_and_nfd_twins_are_two_files() -> None:
    """On Linux both spellings of 'é' are distinct names; both must survive."""
    assert unicodedata.normalize("NFC", "e\u0301") == "é"
    test_backup_restore_round_trip.hypothesis.inner_test(  # type: ignore[attr-defined]
        {"é": (b"nfc", 0o644, 10**18), "e\u0301": (b"nfd", 0o644, 10**18)}
    )
