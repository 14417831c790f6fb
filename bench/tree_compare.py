#!/usr/bin/env python3
"""Compare two trees entry by entry, by lstat: is a restore the tree that was backed up?

    python bench/tree_compare.py ORIGINAL RESTORED [--content] [--xattrs] [--json]

Every entry below each root, the roots included, never following a symlink: its type,
permission and special bits, size and mtime (files and folders; symlinks' own mtime is
a kind of its own), owner and group, a symlink's target (as bytes), which files share
an inode (hard-link groups, as sets of names), with --xattrs the user.* xattrs, and
with --content the bytes of regular files. Prints the number of entries compared and
the differences found, by kind, with a few examples of each; exits 1 if any.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import stat
import sys
from collections import defaultdict
from dataclasses import dataclass, field

KINDS = (
    "missing",
    "extra",
    "type",
    "mode",
    "size",
    "mtime",
    "symlink mtime",
    "owner",
    "target",
    "hard links",
    "xattrs",
    "content",
)


@dataclass
class Comparison:
    compared: int = 0
    differences: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    @property
    def total(self) -> int:
        return sum(len(found) for found in self.differences.values())

    def to_dict(self) -> dict[str, object]:
        return {
            "compared": self.compared,
            "differences": self.total,
            "by_kind": {kind: len(found) for kind, found in sorted(self.differences.items())},
            "examples": {kind: found[:5] for kind, found in sorted(self.differences.items())},
        }


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "special"


def entries(root: str) -> dict[str, os.stat_result]:
    """Every entry below `root` (rel "" is `root` itself), lstat'ed, links not followed."""
    found = {"": os.lstat(root)}
    for folder, folders, files in os.walk(root):
        for name in folders + files:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, root).replace(os.sep, "/")] = os.lstat(path)
    return found


def _groups(root_entries: dict[str, os.stat_result]) -> dict[str, frozenset[str]]:
    """For each regular file with more than one link: the names sharing its inode."""
    by_inode: defaultdict[tuple[int, int], set[str]] = defaultdict(set)
    for rel, st in root_entries.items():
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            by_inode[(st.st_dev, st.st_ino)].add(rel)
    return {rel: frozenset(names) for names in by_inode.values() for rel in names}


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {
        name: os.getxattr(path, name, follow_symlinks=False)
        for name in names
        if name.startswith("user.")
    }


def compare(
    original: str, restored: str, *, content: bool = False, xattrs: bool = False
) -> Comparison:
    """The differences between two trees, by kind (see the module's docstring)."""
    result = Comparison()
    left, right = entries(original), entries(restored)
    left_groups, right_groups = _groups(left), _groups(right)
    result.differences["missing"].extend(sorted(set(left) - set(right)))
    result.differences["extra"].extend(sorted(set(right) - set(left)))
    for rel in sorted(set(left) & set(right)):
        result.compared += 1
        a, b = left[rel], right[rel]
        shown = rel or "."

        def differ(kind: str, what: object, other: object, shown: str = shown) -> None:
            if what != other:
                result.differences[kind].append(f"{shown}: {what!r} != {other!r}")

        kind = _kind(a.st_mode)
        if kind != _kind(b.st_mode):
            differ("type", kind, _kind(b.st_mode))
            continue
        differ("owner", (a.st_uid, a.st_gid), (b.st_uid, b.st_gid))
        if kind == "symlink":
            differ(
                "target",
                os.readlink(os.path.join(os.fsencode(original), os.fsencode(rel))),
                os.readlink(os.path.join(os.fsencode(restored), os.fsencode(rel))),
            )
            differ("symlink mtime", a.st_mtime_ns, b.st_mtime_ns)
            continue
        differ("mode", oct(stat.S_IMODE(a.st_mode)), oct(stat.S_IMODE(b.st_mode)))
        if kind in ("file", "folder"):
            differ("mtime", a.st_mtime_ns, b.st_mtime_ns)
        if xattrs:
            differ(
                "xattrs",
                _xattrs(os.path.join(original, rel)),
                _xattrs(os.path.join(restored, rel)),
            )
        if kind != "file":
            continue
        differ("size", a.st_size, b.st_size)
        differ("hard links", left_groups.get(rel, frozenset()), right_groups.get(rel, frozenset()))
        if content and a.st_size == b.st_size:
            same = filecmp.cmp(os.path.join(original, rel), os.path.join(restored, rel), False)
            differ("content", True, same)
    result.differences = defaultdict(list, {k: v for k, v in result.differences.items() if v})
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("original")
    parser.add_argument("restored")
    parser.add_argument("--content", action="store_true", help="compare file bytes too")
    parser.add_argument("--xattrs", action="store_true", help="compare user.* xattrs too")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    result = compare(args.original, args.restored, content=args.content, xattrs=args.xattrs)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(f"entries compared: {result.compared}; differences: {result.total}")
        for kind in KINDS:
            found = result.differences.get(kind, [])
            if found:
                print(f"  {kind}: {len(found)}")
                for example in found[:5]:
                    print(f"    {example}")
    return 1 if result.total else 0


if __name__ == "__main__":
    sys.exit(main())
