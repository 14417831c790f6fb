"""The tree beyond file bytes, without S3: its record format and digest, the checks a
record's tree must pass, the restore rules (modes, owners, what stands at a symlink's
name, hard links), and what the walk records of a real temporary folder."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import make_tree
from hypothesis import given
from hypothesis import strategies as st

from ass3 import records, scan
from ass3.model import RecordEntry
from ass3.tree import Folder, Owner, Symlink, Tree, tree_problem
from ass3.treeplan import (
    ABSENT,
    CREATE,
    FOLDER,
    KEEP,
    OTHER,
    REPLACE,
    SYMLINK,
    HardLinks,
    TreeOptions,
    local_ids,
    parse_mode,
    parse_mtime,
    restored_mode,
    symlink_action,
)
from ass3.treescan import TreeRecorder

RUN = "20260301T100000.000000Z-a1a1a1"
ROOT = Owner(0, 0, "root", "root")
USER = Owner(1000, 1000, "alice", None)
TREE = Tree(
    (ROOT, USER),
    Folder("", 0o755, 10**18, 1),
    (Folder("d", 0o700, 5, 1), Folder("d/empty", 0o555, -7, 0)),
    (Symlink("d/abs", b"/etc/passwd", 9, 0), Symlink("raw", b"caf\xe9", 1, 1)),
    (("a", 0),),
    (("a", "d/b"),),
    (("", (("user.note", b"\x00\xff"),)), ("d", (("user.x", b""),))),
)
FILES = ["a", "d/b", "d/c"]


def record_bytes(tree: dict[str, Any] | None, files: list[str] = FILES) -> bytes:
    document: dict[str, Any] = {
        "format": 2,
        "run": RUN,
        "source": "/src",
        "uploaded": 0,
        "deleted": 0,
        "failed": 0,
        "versioned": True,
        "files": [[rel, 1, "", "e", None] for rel in files],
        "tree": tree,
    }
    return gzip.compress(json.dumps(document).encode(), mtime=0)


def read(tree: dict[str, Any], files: list[str] = FILES) -> records.RunRecord:
    return records.read_record([record_bytes(tree, files)], RUN)


# --- the record format ----------------------------------------------------------------------


def test_a_tree_round_trips_through_a_run_record() -> None:
    record = records.RunRecord(
        RUN, "/src", 0, 0, 0, True, tuple(RecordEntry(rel, 1, "", "e", None) for rel in FILES), TREE
    )
    assert records.read_record([record.to_bytes()], RUN) == record
    document = json.loads(gzip.decompress(record.to_bytes()))
    assert document["format"] == 2
    assert document["tree"]["symlinks"][1] == ["raw", {"base64": "Y2Fm6Q=="}, 1, 1]


def test_a_record_without_a_tree_is_still_format_1() -> None:
    """What older versions wrote, and what a record made without a walk still is."""
    record = records.RunRecord(RUN, "/src", 0, 0, 0, True, ())
    assert json.loads(gzip.decompress(record.to_bytes()))["format"] == 1
    assert records.read_record([record.to_bytes()], RUN).tree is None


def test_the_digest_is_stable_and_moves_with_any_change() -> None:
    assert TREE.digest == Tree.from_document(TREE.to_document()).digest
    changed = [
        Tree(TREE.owners, Folder("", 0o750, 10**18, 1), TREE.folders, TREE.symlinks),
        Tree(TREE.owners, TREE.root, TREE.folders[:1], TREE.symlinks),
        Tree(TREE.owners, TREE.root, TREE.folders, TREE.symlinks[:1]),
        Tree(TREE.owners, TREE.root, TREE.folders, TREE.symlinks, TREE.file_owners),
    ]
    base = Tree(TREE.owners, TREE.root, TREE.folders, TREE.symlinks)
    digests = {tree.digest for tree in [base, *changed]}
    assert len(digests) == 5
    assert (
        base.digest != Tree(base.owners, base.root, base.folders, base.symlinks, xattrs=()).digest
    )


def test_a_record_names_only_the_files_it_holds() -> None:
    """A file whose upload failed is not in the record: neither are its owner or links."""
    restricted = TREE.restricted_to(["d/b", "d/c"])
    assert restricted.file_owners == ()
    assert restricted.hardlinks == ()
    assert restricted.xattrs == TREE.xattrs  # the root's and a folder's stay
    assert restricted.folders == TREE.folders and restricted.symlinks == TREE.symlinks


# --- what a record's tree must pass ------------------------------------------------------------


def good() -> dict[str, Any]:
    return TREE.to_document()


def spoil(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    document = good()
    target: Any = document
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return document


HOSTILE_TREES = {
    "folder-dot-dot": (spoil(("folders", 0, 0), ".."), "path segment '..'"),
    "folder-escaping": (spoil(("folders", 0, 0), "d/../../etc"), "path segment '..'"),
    "folder-absolute": (spoil(("folders", 0, 0), "/etc"), "absolute path"),
    "mode-over-7777": (spoil(("folders", 0, 1), 0o10000), "fails maximum 4095"),
    "mode-negative": (spoil(("root", 0), -1), "fails minimum 0"),
    "mode-a-string": (spoil(("folders", 0, 1), "755"), "fails type 'integer'"),
    "mode-a-float": (spoil(("folders", 0, 1), 493.0), "fails type 'integer'"),
    "target-of-1-mb": (spoil(("symlinks", 0, 1), "x" * 1_000_000), "symlink"),
    "target-base64-of-1-mb": (
        spoil(("symlinks", 0, 1), {"base64": "eHh4" * 350_000}),
        "symlink",
    ),
    "target-of-4096-bytes": (spoil(("symlinks", 0, 1), "é" * 2048), "longer than 4095 bytes"),
    "target-with-nul": (spoil(("symlinks", 0, 1), "a\x00b"), "NUL"),
    "target-empty": (spoil(("symlinks", 0, 1), ""), "symlinks/0/1"),
    "target-not-base64": (spoil(("symlinks", 0, 1), {"base64": "!!"}), "symlinks/0/1"),
    "hard-link-outside-the-tree": (spoil(("hardlinks", 0), ["a", "../etc/passwd"]), "'..'"),
    "hard-link-absolute": (spoil(("hardlinks", 0), ["a", "/etc/shadow"]), "absolute path"),
    "hard-link-to-itself": (spoil(("hardlinks", 0), ["a", "a"]), "fails uniqueItems"),
    "hard-link-alone": (spoil(("hardlinks", 0), ["a"]), "hardlinks/0"),
    "hard-link-to-no-file": (spoil(("hardlinks", 0), ["a", "nope"]), "'nope' names no file"),
    "hard-link-to-a-symlink": (spoil(("hardlinks", 0), ["a", "raw"]), "'raw' names no file"),
    "file-in-two-groups": (
        spoil(("hardlinks",), [["a", "d/b"], ["a", "d/c"]]),
        "'a' is in two hard-link groups",
    ),
    "owner-missing": (spoil(("folders", 0, 3), 2), "owner 2 is not one of its 2 owners"),
    "uid-too-big": (spoil(("owners", 0, 0), 2**32 - 1), "fails maximum"),
    "owner-name-with-a-colon": (spoil(("owners", 0, 2), "root:x"), "fails pattern"),
    "no-owners": (spoil(("owners",), []), "fails minItems 1"),
    "xattr-of-another-namespace": (
        spoil(("xattrs", 0, 1, 0, 0), "security.capability"),
        "not a user. attribute",
    ),
    "xattr-of-no-entry": (spoil(("xattrs", 1, 0), "zz"), "'zz' names no file"),
    "xattr-value-not-base64": (spoil(("xattrs", 0, 1, 0, 1), "*"), "fails pattern"),
    "folder-and-symlink": (
        spoil(("symlinks",), [["d", "x", 0, 0], ["raw", "y", 0, 0]]),
        "'d' is both a folder and a symlink",
    ),
    "folder-below-a-symlink": (
        spoil(("folders",), [["d", 0o700, 5, 1], ["raw/x", 0o700, 5, 1]]),
        "'raw/x' is below the symlink 'raw'",
    ),
    "folders-out-of-order": (
        spoil(("folders",), [["d/empty", 0o700, 5, 1], ["d", 0o700, 5, 1]]),
        "out of key order",
    ),
    "folder-twice": (
        spoil(("folders",), [["d", 0o700, 5, 1], ["d", 0o700, 5, 1]]),
        "out of key order",
    ),
    "extra-field": (spoil(("comment",), "hi"), "Additional properties"),
    "missing-root": (
        {key: value for key, value in good().items() if key != "root"},
        "'root' is a required property",
    ),
}


def test_the_good_tree_is_read() -> None:
    assert read(good()).tree == TREE


@pytest.mark.parametrize(("tree", "message"), HOSTILE_TREES.values(), ids=HOSTILE_TREES.keys())
def test_every_hostile_tree_is_refused_in_one_line(tree: dict[str, Any], message: str) -> None:
    with pytest.raises(records.BadRecord) as raised:
        read(tree)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value) and len(str(raised.value)) < 300


def test_a_tree_of_format_1_is_refused() -> None:
    body = json.loads(gzip.decompress(record_bytes(good())))
    body["format"] = 1
    with pytest.raises(records.BadRecord, match="Additional properties"):
        records.read_record([gzip.compress(json.dumps(body).encode())], RUN)


def test_tree_problem_accepts_what_a_walk_can_give() -> None:
    assert tree_problem(good(), FILES) is None


# --- restore rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "keep", "owner_restored", "euid", "expected"),
    [
        (0o4755, False, True, 0, 0o755),
        (0o2755, False, True, 1000, 0o755),
        (0o1777, False, True, 0, 0o777),
        (0o7777, True, True, 0, 0o7777),
        # root restoring without the recorded owner: no setuid program of root's
        (0o6755, True, False, 0, 0o755),
        (0o7755, True, False, 0, 0o1755),
        # without root the files are the restoring user's own
        (0o6755, True, False, 1000, 0o6755),
        (0o640, True, True, 0, 0o640),
    ],
)
def test_special_bits_only_when_asked_and_safe(
    mode: int, keep: bool, owner_restored: bool, euid: int, expected: int
) -> None:
    assert (
        restored_mode(mode, keep_special=keep, owner_restored=owner_restored, euid=euid) == expected
    )


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ("644", 0o644),
        ("4755", 0o4755),
        ("7777", 0o7777),
        ("10000", None),
        ("-1", None),
        ("0x1ff", None),
        ("", None),
        (None, None),
        ("7" * 7, None),
        ("८", None),
    ],
)
def test_an_objects_mode_metadata_is_read_strictly(text: str | None, mode: int | None) -> None:
    assert parse_mode(text) == mode


@pytest.mark.parametrize(
    ("text", "mtime"),
    [("123", 123), ("-5", -5), ("1e9", None), ("", None), (None, None), ("9" * 20, None)],
)
def test_an_objects_mtime_metadata_is_read_strictly(text: str | None, mtime: int | None) -> None:
    assert parse_mtime(text) == mtime


def test_owners_map_names_to_local_ids_as_tar_does() -> None:
    users = {"alice": 501}.get
    groups = {"staff": 20}.get
    owner = Owner(1000, 1000, "alice", "staff")
    assert local_ids(owner, numeric=False, user_id=users, group_id=groups) == (501, 20)
    assert local_ids(owner, numeric=True, user_id=users, group_id=groups) == (1000, 1000)
    unknown = Owner(1234, 5678, "bob", None)
    assert local_ids(unknown, numeric=False, user_id=users, group_id=groups) == (1234, 5678)


def test_owners_are_restored_by_root_unless_told_otherwise() -> None:
    assert TreeOptions().restores_owners(0)
    assert not TreeOptions().restores_owners(1000)
    assert not TreeOptions(same_owner=False).restores_owners(0)
    assert TreeOptions(same_owner=True).restores_owners(1000)


@pytest.mark.parametrize(
    ("found", "same", "also_a_file", "action"),
    [
        (ABSENT, False, False, CREATE),
        (SYMLINK, True, False, KEEP),
        (SYMLINK, False, False, REPLACE),
        (OTHER, False, False, REPLACE),  # a file at the name: replaced, as restore does
        (FOLDER, False, False, "refused: a folder is in the way"),  # may hold the user's files
        (ABSENT, False, True, "refused: the backup also has a file of this name"),
    ],
)
def test_what_stands_at_a_symlinks_name(
    found: str, same: bool, also_a_file: bool, action: str
) -> None:
    assert symlink_action(found, same_target=same, a_file_of_the_backup=also_a_file) == action


def test_hard_links_wait_for_the_first_member_with_the_same_bytes() -> None:
    links = HardLinks.of([("a", "b", "c"), ("x", "y")])
    assert links.anchor_for("a", 3, "e1") is None  # the anchor: downloaded
    assert links.anchor_for("b", 3, "e1") == "a"
    assert links.anchor_for("c", 3, "e2") is None  # other bytes: downloaded, never linked
    assert links.anchor_for("lone", 3, "e1") is None
    assert links.anchor_for("y", 1, "e") is None  # "x" is not restored: "y" anchors
    assert links.anchor_for("x", 1, "e") == "y"


# --- what the walk records -------------------------------------------------------------------


def walk(root: Path, **options: Any) -> tuple[Tree, scan.ScanReport, list[str]]:
    recorder = TreeRecorder(**options)
    report = scan.ScanReport()
    files = [local.rel for local in scan.scan_tree(str(root), report, tree=recorder)]
    return recorder.tree(), report, files


def test_the_walk_records_folders_symlinks_and_hard_links(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", {"d/f": b"1", "g": b"2", "z-b/x": b"3"})
    (root / "empty" / "deeper").mkdir(parents=True)
    (root / "rel").symlink_to("d/f")
    (root / "dangling").symlink_to("nowhere")
    (root / "dirlink").symlink_to(root / "d")
    os.symlink(b"caf\xe9", bytes(root / "raw"))
    os.link(root / "g", root / "d" / "g2")
    os.chmod(root / "empty", 0o710)
    tree, report, files = walk(root)
    assert files == ["d/f", "d/g2", "g", "z-b/x"] and report.skipped == []
    assert [folder.rel for folder in tree.folders] == ["d", "empty", "empty/deeper", "z-b"]
    assert tree.folders[1].mode == 0o710
    assert [(link.rel, link.target) for link in tree.symlinks] == [
        ("dangling", b"nowhere"),
        ("dirlink", os.fsencode(root / "d")),
        ("raw", b"caf\xe9"),
        ("rel", b"d/f"),
    ]
    assert tree.hardlinks == (("d/g2", "g"),)
    assert tree.xattrs is None and tree.file_owners == ()


def test_the_same_tree_walked_twice_gives_the_same_digest(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", {"a-b/x": b"1", "a/y": b"2", "a/z/w": b"3"})
    (root / "l").symlink_to("a")
    before = walk(root)[0].digest
    assert walk(root)[0].digest == before
    os.chmod(root / "a" / "z", 0o750)
    assert walk(root)[0].digest != before


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to other users needs root")
def test_owners_other_than_the_roots_are_recorded(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", {"mine": b"1", "theirs": b"2"})
    os.chown(root / "theirs", 1234, 5678)
    (root / "link").symlink_to("mine")
    os.chown(root / "link", 1000, 1000, follow_symlinks=False)
    tree, _, _ = walk(root)
    owners = {(owner.uid, owner.gid) for owner in tree.owners}
    assert owners == {(0, 0), (1000, 1000), (1234, 5678)}
    assert [(rel, tree.owners[index].uid) for rel, index in tree.file_owners] == [("theirs", 1234)]
    assert tree.owners[tree.symlinks[0].owner].uid == 1000
    assert tree.owners[[o.uid for o in tree.owners].index(1234)].user is None


def test_user_xattrs_are_recorded_only_when_asked(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", {"f": b"1"})
    os.setxattr(root / "f", "user.mime", b"text/plain")
    os.setxattr(root, "user.top", b"\xff")
    assert walk(root)[0].xattrs is None
    tree, _, _ = walk(root, xattrs=True)
    assert tree.xattrs == (("", (("user.top", b"\xff"),)), ("f", (("user.mime", b"text/plain"),)))


def test_a_folder_whose_name_restore_would_refuse_is_a_problem_and_not_entered(
    tmp_path: Path,
) -> None:
    root = make_tree(tmp_path / "src", {"ok": b"1", "bad\x07/f": b"2", "bad\x07/g": b"3"})
    (root / "empty\\slash").mkdir()
    tree, report, files = walk(root)
    assert files == ["ok"]
    assert sorted(report.problems) == [
        ("bad\x07", "cannot be restored safely: control character in name"),
        ("empty\\slash", "cannot be restored safely: backslash in name"),
    ]
    assert tree.folders == ()


@given(st.binary(min_size=1, max_size=300).filter(lambda target: b"\0" not in target))
def test_any_symlink_target_survives_a_record(target: bytes) -> None:
    tree = Tree((ROOT,), Folder("", 0o755, 0, 0), symlinks=(Symlink("l", target, 0, 0),))
    assert read(tree.to_document(), []).tree == tree


# --- the comparison the round trips and the measurement rely on -------------------------------


def test_the_tree_comparison_sees_every_kind_of_difference(tmp_path: Path) -> None:
    from bench.tree_compare import compare

    def tree(root: Path, *, other: bool) -> Path:
        make_tree(root, {"f": b"12" if other else b"1", "same": b"s", "g": b"g", "c": b"ab"})
        (root / "d").mkdir()
        (root / "l").symlink_to("g" if other else "f")
        (root / ("extra" if other else "missing")).mkdir()
        if other:
            os.link(root / "g", root / "h")
            os.chmod(root / "same", 0o600)
            os.setxattr(root / "c", "user.x", b"1")
            (root / "c").write_bytes(b"ba")
        else:
            (root / "h").write_bytes(b"g")
        os.utime(root / "d", ns=(1, 2 if other else 3))
        os.utime(root / "l", ns=(1, 2 if other else 3), follow_symlinks=False)
        return root

    result = compare(
        str(tree(tmp_path / "a", other=False)),
        str(tree(tmp_path / "b", other=True)),
        content=True,
        xattrs=True,
    )
    assert sorted(result.differences) == [
        "content",
        "extra",
        "hard links",
        "missing",
        "mode",
        "mtime",
        "size",
        "symlink mtime",
        "target",
        "xattrs",
    ]
    assert result.compared == 8  # the root, c, d, f, g, h, l and same
