"""Part of a backup: PATH arguments and --include/--exclude on restores, tested on
literals and against brute-force references (no S3)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from helpers import make_tree
from hypothesis import given, settings
from hypothesis import strategies as st

import s3common
from ass3.partial import (
    RestorePath,
    distinct_paths,
    parse_path,
    restore_filters,
    unmatched_error,
)
from s3common import Ass3Error, Selection


def selection(*paths: str, rules: tuple[tuple[str, str], ...] = ()) -> Selection:
    return Selection.parse(list(paths), list(rules))


def chosen(sel: Selection, rels: list[str]) -> list[str]:
    return [rel for rel in rels if sel.selects(rel)]


RELS = ["docs", "docs.bak", "docs/a.odt", "docs/sub/b", "docsx/c", "notes.txt", "z/docs/d"]


# --- PATH arguments ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("docs/report.odt", RestorePath("docs/report.odt")),
        ("docs/", RestorePath("docs", folder_only=True)),
        ("./docs//report.odt", RestorePath("docs/report.odt")),
        ("docs/./sub/", RestorePath("docs/sub", folder_only=True)),
        ("-dash file", RestorePath("-dash file")),
    ],
)
def test_a_path_is_read_relative_to_the_backup(text: str, expected: RestorePath) -> None:
    assert parse_path(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("/etc/passwd", "is absolute"),
        ("../other", "has '..'"),
        ("docs/../../x", "has '..'"),
        ("docs/..", "has '..'"),
        (".", "names the whole backup"),
        ("./", "names the whole backup"),
        ("", "names the whole backup"),
        ("a\\b", "backslash"),
        ("a\x1bb", "control character"),
        ("x" * 256, "longer than 255 bytes"),
    ],
)
def test_a_path_outside_the_backup_or_unlike_a_key_is_refused(text: str, message: str) -> None:
    with pytest.raises(Ass3Error, match=message) as caught:
        parse_path(text)
    assert "\n" not in str(caught.value) and "\x1b" not in str(caught.value)


def test_paths_inside_another_are_dropped() -> None:
    paths = [parse_path(text) for text in ("a/b", "a", "a/", "ab", "c/", "c/d", "e", "e/")]
    assert distinct_paths(paths) == (
        RestorePath("a"),
        RestorePath("ab"),
        *distinct_paths(paths)[2:],
    )
    assert [str(path) for path in distinct_paths(paths)] == ["a", "ab", "c/", "e"]


# --- which keys a selection takes -----------------------------------------------------------


def test_a_file_path_takes_the_file_and_a_folder_of_that_name() -> None:
    assert chosen(selection("docs"), RELS) == ["docs", "docs/a.odt", "docs/sub/b"]


def test_a_trailing_slash_takes_only_the_folder() -> None:
    assert chosen(selection("docs/"), RELS) == ["docs/a.odt", "docs/sub/b"]


def test_a_deep_path_takes_one_file() -> None:
    assert chosen(selection("docs/a.odt"), RELS) == ["docs/a.odt"]
    assert chosen(selection("docs/a"), RELS) == []


def test_no_paths_take_everything_and_filters_apply_as_for_backup() -> None:
    assert chosen(selection(), RELS) == RELS
    assert selection().everything
    rules = (("exclude", "docs/"), ("include", "docs/a.odt"))
    # As in git: nothing inside an excluded folder can be included again.
    assert chosen(selection(rules=rules), RELS) == ["docs", "docs.bak", "docsx/c", "notes.txt"]
    rules = (("exclude", "*.*"), ("include", "*.odt"))
    assert chosen(selection(rules=rules), RELS) == [
        "docs",
        "docs/a.odt",
        "docs/sub/b",
        "docsx/c",
        "z/docs/d",
    ]
    assert chosen(selection("z", rules=(("exclude", "/docs"),)), RELS) == ["z/docs/d"]


def test_paths_that_name_nothing_are_told() -> None:
    sel = selection("docs/a.odt", "nope", "docs.bak/", "notes.txt/")
    assert [str(path) for path in sel.unmatched(RELS)] == ["docs.bak/", "nope", "notes.txt/"]
    assert str(unmatched_error(sel.unmatched(RELS)[1:2], "Documents", "now")) == (
        "no file or folder 'nope' in backup 'Documents' now"
    )


def test_a_killed_restores_temporary_goes_with_the_file_it_stands_in_for() -> None:
    sel = selection("docs/a.odt")
    assert sel.selects_local("docs/.ass3-a.odt.abcdefgh.part")
    assert not sel.selects_local("docs/.ass3-b.odt.abcdefgh.part")
    assert not sel.selects_local("docs/b.odt")
    # A lookalike of an excluded file's temporary is left alone, whatever its own name.
    sel = selection("docs", rules=(("exclude", "*.log"),))
    assert not sel.selects_local("docs/.ass3-x.log.abcdefgh.part")
    assert sel.selects_local("docs/.ass3-x.txt.abcdefgh.part")


def test_the_walk_enters_only_folders_on_the_way_to_a_path() -> None:
    sel = selection("a/b/c.txt")
    assert sel.may_hold("a") and sel.may_hold("a/b")
    assert not sel.may_hold("a/x") and not sel.may_hold("b") and not sel.may_hold("a/b/c.txt2")
    assert selection("a/b").may_hold("a/b/deep/er")
    assert not selection("a", rules=(("exclude", "a/"),)).may_hold("a")


# --- against brute-force references --------------------------------------------------------

SEGMENTS = ["a", "b", "a.tmp", "c d", "é"]
PATTERNS = ["*.tmp", "a/", "/b", "**/b/", "a/*", "b", "*", "*/", "c d", "/a/b"]

trees = st.lists(
    st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3).map("/".join),
    max_size=12,
    unique=True,
).map(lambda rels: sorted(rel for rel in rels if not any(o.startswith(rel + "/") for o in rels)))
path_texts = st.lists(
    st.tuples(st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=2), st.booleans()).map(
        lambda item: "/".join(item[0]) + ("/" if item[1] else "")
    ),
    max_size=3,
)
rule_lists = st.lists(
    st.tuples(st.sampled_from(["exclude", "include"]), st.sampled_from(PATTERNS)), max_size=4
)


def named_by_brute_force(rel: str, texts: list[str]) -> bool:
    """At or below one of the paths, by comparing segment lists."""
    if not texts:
        return True
    parts = rel.split("/")
    for text in texts:
        wanted = text.rstrip("/").split("/")
        below = parts[: len(wanted)] == wanted and len(parts) > len(wanted)
        if below or (parts == wanted and not text.endswith("/")):
            return True
    return False


def backed_up(rels: list[str], rules: list[tuple[str, str]]) -> list[str]:
    """What a backup with these rules takes of a real tree holding `rels`."""
    with tempfile.TemporaryDirectory() as folder:
        root = make_tree(Path(folder) / "t", {rel: b"" for rel in rels})
        root.mkdir(exist_ok=True)
        filters = restore_filters(rules)
        return [
            f.rel for f in s3common.scan_tree(str(root), s3common.ScanReport(), filters=filters)
        ]


@given(trees, path_texts, rule_lists)
def test_a_selection_is_the_named_keys_that_the_filters_keep(
    rels: list[str], texts: list[str], rules: list[tuple[str, str]]
) -> None:
    """Paths and filters are independent: the keys taken are those a path names
    (compared segment by segment) and the filters alone would keep."""
    kept = chosen(Selection.parse([], rules), rels)
    expected = [rel for rel in kept if named_by_brute_force(rel, texts)]
    assert chosen(Selection.parse(texts, rules), rels) == expected


@pytest.mark.slow  # hundreds of real trees
@settings(max_examples=300, deadline=None)
@given(trees, path_texts, rule_lists)
def test_a_selection_takes_what_the_backup_walk_takes_below_the_paths(
    rels: list[str], texts: list[str], rules: list[tuple[str, str]]
) -> None:
    """The keys a selection takes are exactly those that are named by a path (compared
    segment by segment) and that a backup with the same rules would walk into, on a
    real tree; the restore's own local walk takes the same files."""
    sel = Selection.parse(texts, rules)
    expected = [rel for rel in backed_up(rels, rules) if named_by_brute_force(rel, texts)]
    assert chosen(sel, rels) == expected
    with tempfile.TemporaryDirectory() as folder:
        root = make_tree(Path(folder) / "t", {rel: b"" for rel in rels})
        root.mkdir(exist_ok=True)
        walk = s3common.scan_tree(str(root), s3common.ScanReport(), filters=sel.walk_filter())
        assert [f.rel for f in walk] == sorted(expected, key=s3common.key_order)


@given(trees, path_texts)
def test_unmatched_paths_are_those_naming_no_key(rels: list[str], texts: list[str]) -> None:
    sel = Selection.parse(texts, [])
    expected = {
        str(path)
        for path in sel.paths
        if not any(named_by_brute_force(r, [str(path)]) for r in rels)
    }
    assert {str(path) for path in sel.unmatched(rels)} == expected


def test_the_walk_of_a_selection_never_follows_a_symlink(tmp_path: Path) -> None:
    outside = make_tree(tmp_path / "outside", {"secret": b"s"})
    root = make_tree(tmp_path / "root", {"docs/a": b"a"})
    os.symlink(outside, root / "docs" / "link")
    os.symlink(outside / "secret", root / "docs" / "file-link")
    walk = s3common.scan_tree(
        str(root), s3common.ScanReport(), filters=selection("docs").walk_filter()
    )
    assert [f.rel for f in walk] == ["docs/a"]
