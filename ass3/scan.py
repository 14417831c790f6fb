"""The local side of a backup: the walk of DIR in S3 key order, and the filters."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import pathspec

from ass3.model import Ass3Error, LocalFile
from ass3.plan import key_order
from ass3.tree import name_problem


@dataclass
class ScanReport:
    """What a walk skipped on purpose, what it left out by filter, what it could not read
    (paths relative to the root, as in every other report of the run)."""

    skipped: list[tuple[str, str]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    excluded: int = 0
    unreadable: bool = False  # a folder or file could not be read: deletions are unsafe


IGNORE_FILE = ".ass3ignore"


class TreeObserver(Protocol):
    """What a backup records of the walked tree beyond file bytes (`treescan`): told
    of the root (rel ""), each folder entered, each symlink not followed, each file."""

    def folder(self, rel: str, path: str, st: os.stat_result) -> None: ...

    def symlink(self, rel: str, path: str, st: os.stat_result) -> None: ...

    def file(self, local: LocalFile, st: os.stat_result) -> None: ...


class Filters:
    """--exclude / --include patterns and .ass3ignore, with gitignore's rules (pathspec).

    Patterns match the path relative to DIR with '/' separators: `*.tmp` anywhere,
    `/top.txt` only at the top, `node_modules/` folders only, `**/.cache/` at any
    depth. Later rules win: .ass3ignore first, then the options in the order given;
    an --include is a `!pattern`. As in git, nothing inside an excluded folder can be
    included again, because an excluded folder is never walked.
    """

    def __init__(self, lines: Iterable[str]) -> None:
        self.lines = [line for line in lines if line.strip()]
        try:
            self._spec = pathspec.GitIgnoreSpec.from_lines(self.lines) if self.lines else None
        except ValueError as error:  # e.g. a lone "!"
            raise Ass3Error(f"invalid filter pattern: {error}") from error

    @classmethod
    def for_backup(cls, root: str, rules: Iterable[tuple[str, str]]) -> Filters:
        """The rules of DIR/.ass3ignore (if any), then ("exclude" | "include", pattern)s."""
        lines: list[str] = []
        try:
            with open(os.path.join(root, IGNORE_FILE), encoding="utf-8") as ignore:
                lines.extend(line.rstrip("\n") for line in ignore)
        except FileNotFoundError:
            pass
        except (OSError, UnicodeDecodeError) as error:
            raise Ass3Error(f"cannot read {os.path.join(root, IGNORE_FILE)}: {error}") from error
        for kind, pattern in rules:
            lines.append(pattern if kind == "exclude" else "!" + pattern)
        return cls(lines)

    def excludes(self, rel: str, *, folder: bool = False) -> bool:
        """Whether this file (or folder) is left out, judged on its own path."""
        if self._spec is None:
            return False
        return self._spec.match_file(rel + "/" if folder else rel)

    def excludes_path(self, rel: str) -> bool:
        """Whether a file is left out, by itself or because a folder above it is."""
        if self._spec is None:
            return False
        parts = rel.split("/")
        folders = ("/".join(parts[:depth]) for depth in range(1, len(parts)))
        return any(self.excludes(folder, folder=True) for folder in folders) or self.excludes(rel)


def check_directory(directory: str) -> str:
    """The absolute path of DIR, or a clear error if it cannot be backed up."""
    path = os.path.abspath(directory)
    if not os.path.exists(path):
        raise Ass3Error(f"{directory}: no such directory")
    if not os.path.isdir(path):
        raise Ass3Error(f"{directory}: not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise Ass3Error(f"{directory}: permission denied")
    return path


def scan_tree(
    root: str,
    report: ScanReport,
    *,
    filters: Filters | None = None,
    follow_symlinks: bool = False,
    tree: TreeObserver | None = None,
) -> Iterator[LocalFile]:
    """Walk `root` like os.walk, yielding regular files in S3 key order.

    Each folder's entries are sorted as their keys will sort (a folder `d` as `d/`),
    so the walk merges with a listing without holding either in memory. Filtered
    folders are not entered. Symlinks are skipped unless `follow_symlinks`, which
    backs up what they point to and refuses a link back to a folder above it (a
    loop). Special files are skipped; unreadable folders, names that are not valid
    UTF-8 (S3 keys must be) and names a restore would refuse (control characters,
    backslashes) are problems, reported without stopping.

    With `tree`, the root, folders, symlinks (then recorded, not skipped) and files
    are told to it as they are walked; a folder whose name a restore would refuse is
    then a problem of its own, and not entered.
    """
    top = os.stat(root)
    if tree is not None:
        tree.folder("", root, top)
    walker = _Walker(report, filters, follow_symlinks, tree)
    stack = [(iter(walker.entries(root, "")), frozenset({(top.st_dev, top.st_ino)}))]
    while stack:
        entries, ancestors = stack[-1]
        item = next(entries, None)
        if item is None:
            stack.pop()
            continue
        entry, rel, st = item
        if stat.S_ISDIR(st.st_mode):
            identity = (st.st_dev, st.st_ino)
            if identity in ancestors:
                report.skipped.append((rel, "symlink loop"))
                continue
            if not walker.recorded_folder(entry, rel, st):
                continue
            stack.append((iter(walker.entries(entry.path, rel + "/")), ancestors | {identity}))
            continue
        local = walker.regular_file(entry, rel, st)
        if local is not None:
            yield local


@dataclass
class _Walker:
    """The per-folder work of `scan_tree`: list, filter, stat, sort, classify."""

    report: ScanReport
    filters: Filters | None
    follow_symlinks: bool
    tree: TreeObserver | None = None

    def entries(
        self, folder: str, rel_prefix: str
    ) -> list[tuple[os.DirEntry[str], str, os.stat_result]]:
        try:
            with os.scandir(folder) as listing:
                found = list(listing)
        except OSError as error:
            self.report.unreadable = True
            self.report.problems.append(
                (rel_prefix.rstrip("/") or ".", error.strerror or str(error))
            )
            return []
        items = []
        for entry in found:
            rel = rel_prefix + entry.name
            try:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode) and self.follow_symlinks:
                    st = entry.stat(follow_symlinks=True)
            except OSError as error:
                self.report.unreadable = True
                self.report.problems.append((rel, error.strerror or str(error)))
                continue
            is_folder = stat.S_ISDIR(st.st_mode)
            if self.filters is not None and self.filters.excludes(rel, folder=is_folder):
                self.report.excluded += 1
                continue
            items.append((entry, rel, st))
        items.sort(
            key=lambda item: key_order(item[1] + "/" if stat.S_ISDIR(item[2].st_mode) else item[1])
        )
        return items

    def recorded_folder(self, entry: os.DirEntry[str], rel: str, st: os.stat_result) -> bool:
        """Tell the tree of a folder about to be entered; False: a problem, not entered."""
        if self.tree is None:
            return True
        problem = name_problem(rel)
        if problem:
            self.report.problems.append((rel, problem))
            return False
        self.tree.folder(rel, entry.path, st)
        return True

    def regular_file(
        self, entry: os.DirEntry[str], rel: str, st: os.stat_result
    ) -> LocalFile | None:
        problem = name_problem(rel)
        if problem:
            # Restore refuses such keys, so uploading would be a backup that cannot return.
            self.report.problems.append((rel, problem))
            return None
        if stat.S_ISLNK(st.st_mode) and self.tree is not None:
            try:
                self.tree.symlink(rel, entry.path, st)
            except OSError as error:  # gone, or replaced, since it was listed
                self.report.problems.append((rel, error.strerror or str(error)))
        elif stat.S_ISLNK(st.st_mode):
            self.report.skipped.append((rel, "symlink"))
        elif not stat.S_ISREG(st.st_mode):
            self.report.skipped.append((rel, "special file"))
        else:
            local = LocalFile.from_stat(rel, entry.path, st, followed=entry.is_symlink())
            if self.tree is not None:
                self.tree.file(local, st)
            return local
        return None
