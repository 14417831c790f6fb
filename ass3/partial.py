"""Part of a backup: the files and folders a restore, --check or --diff is limited to
(PATH... on the command line) and the --include/--exclude filters, with backup's rules.

Pure: a `Selection` decides on relative paths alone, for keys from a listing or a run
record and for files met on the local walk, so that both sides of a plan are limited
the same way and a restore's --delete never reaches past what was named.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ass3.model import Ass3Error, printable
from ass3.names import temporary_stem_of, unsafe_key_reason
from ass3.plan import key_order
from ass3.scan import Filters


@dataclass(frozen=True, order=True)
class RestorePath:
    """One PATH: a file or folder relative to the backup's top. `folder_only` when it
    was given with a trailing slash; otherwise it names a file, a folder, or both."""

    rel: str
    folder_only: bool = False

    def covers(self, rel: str) -> bool:
        """Whether the file `rel` is this path or below it."""
        return (rel == self.rel and not self.folder_only) or rel.startswith(self.rel + "/")

    def reaches(self, folder: str) -> bool:
        """Whether the folder `folder` is on the way to this path, is it, or is below it."""
        return (
            folder == self.rel
            or folder.startswith(self.rel + "/")
            or self.rel.startswith(folder + "/")
        )

    def __str__(self) -> str:
        return self.rel + ("/" if self.folder_only else "")


def parse_path(text: str) -> RestorePath:
    """A PATH from the command line: relative to the backup, '/'-separated; `.` and empty
    segments are dropped, a trailing '/' means a folder. Absolute paths, `..` and names
    no key can have are refused (Ass3Error), before any request is sent."""
    shown = printable(text)
    if text.startswith("/"):
        raise Ass3Error(
            f"PATH {shown!r} is absolute: give it relative to the backup's top, "
            f"e.g. {shown.lstrip('/')!r}"
        )
    segments = [segment for segment in text.split("/") if segment not in ("", ".")]
    if ".." in segments:
        raise Ass3Error(f"PATH {shown!r} has '..': a PATH names a file or folder of the backup")
    rel = "/".join(segments)
    if not rel:
        raise Ass3Error(f"PATH {shown!r} names the whole backup: leave PATH out for that")
    reason = unsafe_key_reason(rel)
    if reason:
        raise Ass3Error(f"PATH {shown!r} cannot be in a backup: {reason}")
    return RestorePath(rel, folder_only=text.endswith("/"))


def distinct_paths(paths: Iterable[RestorePath]) -> tuple[RestorePath, ...]:
    """The paths in key order, without those another one already covers (`a/b` beside
    `a`, or `a/` beside `a`), so each file is listed and counted once."""
    ordered = sorted(set(paths), key=lambda path: (key_order(path.rel), path.folder_only))
    kept: list[RestorePath] = []
    for path in ordered:
        if not any(_contains(other, path) for other in kept):
            kept = [other for other in kept if not _contains(path, other)]
            kept.append(path)
    return tuple(kept)


def _contains(outer: RestorePath, inner: RestorePath) -> bool:
    """Whether every file `inner` covers is covered by `outer`."""
    if inner.rel == outer.rel:
        return not outer.folder_only or inner.folder_only
    return inner.rel.startswith(outer.rel + "/")


def restore_filters(rules: Iterable[tuple[str, str]]) -> Filters:
    """--exclude and --include of a restore, --check or --diff, in the order given:
    backup's rules exactly (`Filters`), without a .ass3ignore."""
    return Filters(pattern if kind == "exclude" else "!" + pattern for kind, pattern in rules)


# The stem of a temporary whose file's name was too long to carry: '#' and a digest.
_HASHED_STEM = re.compile(r"#[0-9a-f]{32}")


class Selection:
    """Which files of a backup a run works on: those at or below one of `paths` (all
    when there are none) that the filters do not leave out, judged as backup judges
    them (`Filters.excludes_path`: a file below an excluded folder is out too)."""

    def __init__(self, paths: Iterable[RestorePath] = (), filters: Filters | None = None) -> None:
        self.paths = distinct_paths(paths)
        self.filters = filters or Filters(())

    @classmethod
    def parse(
        cls, texts: Sequence[str], rules: Iterable[tuple[str, str]], filters: Filters | None = None
    ) -> Selection:
        """From the command line: PATH arguments and (kind, pattern) rules, or `filters`
        already made (--diff adds the folder's .ass3ignore)."""
        return cls((parse_path(text) for text in texts), filters or restore_filters(rules))

    @property
    def everything(self) -> bool:
        return not self.paths and not self.filters.lines

    def named(self, rel: str) -> bool:
        """Whether `rel` is at or below one of the paths, filters aside."""
        return not self.paths or any(path.covers(rel) for path in self.paths)

    def selects(self, rel: str) -> bool:
        """Whether the file `rel` (a key below the backup's top) is selected."""
        return self.named(rel) and not self.filters.excludes_path(rel)

    def selects_local(self, rel: str) -> bool:
        """Whether a local file takes part: as `selects`, except that a restore's
        temporary (`.ass3-NAME.RANDOM.part`) goes with the file NAME it stands in for,
        so a killed restore's leftover of a selected file is cleaned up, and nothing
        beside an unselected one is touched."""
        folder, _, name = rel.rpartition("/")
        stem = temporary_stem_of(name)
        if stem is None:
            return self.selects(rel)
        stands_for = f"{folder}/{stem}" if folder else stem
        if _HASHED_STEM.fullmatch(stem):  # the name it stands for cannot be told
            return self.selects(stands_for) or self.selects(rel)
        return self.selects(stands_for)

    def may_hold(self, folder: str) -> bool:
        """Whether the local walk must enter `folder`: it leads to, is, or is below a
        path, and the filters do not leave it out."""
        reached = not self.paths or any(path.reaches(folder) for path in self.paths)
        return reached and not self.filters.excludes(folder, folder=True)

    def walk_filter(self) -> Filters | None:
        """The selection as the local walk's filter (`scan.scan_tree`): it enters only
        the folders that may hold selected files and yields only selected files; None
        when it takes everything."""
        return None if self.everything else _WalkFilter(self)

    def unmatched(self, rels: Iterable[str]) -> list[RestorePath]:
        """The paths that name none of `rels` (filters aside): each is an error."""
        left = list(self.paths)
        for rel in rels:
            if not left:
                break
            left = [path for path in left if not path.covers(rel)]
        return left

    def listing_scopes(self, rels: Iterable[str]) -> list[tuple[str, str | None]]:
        """Where to list, below the backup's top, to see every one of `rels` (selected
        files a run record names): (prefix, delimiter) pairs. Everything without paths;
        for each path its folder, both the file and the folder of that name when there
        are both, or the one key (with delimiter '/', so that a folder whose name only
        begins like it is not listed) when the record has just the file."""
        if not self.paths:
            return [("", None)]
        files, folders = set(), set()
        for rel in rels:
            for path in self.paths:
                if rel == path.rel:
                    files.add(path)
                elif rel.startswith(path.rel + "/"):
                    folders.add(path)
        scopes: list[tuple[str, str | None]] = []
        for path in self.paths:
            if path in folders:
                scopes.append((path.rel if path in files else path.rel + "/", None))
            elif path in files:
                scopes.append((path.rel, "/"))
        return scopes


def unmatched_error(unmatched: Sequence[RestorePath], prefix: str, when: str) -> Ass3Error:
    """The one-line error for PATHs that name nothing in the backup `when` ("now", "in
    run ID", "as of TIME")."""
    shown = ", ".join(repr(printable(str(path))) for path in unmatched)
    noun = "no file or folder" if len(unmatched) == 1 else "no files or folders"
    return Ass3Error(f"{noun} {shown} in backup {prefix!r} {when}")


class _WalkFilter(Filters):
    """A `Selection` in the shape `scan_tree` asks its filters in."""

    def __init__(self, selection: Selection) -> None:
        super().__init__(())
        self._selection = selection

    def excludes(self, rel: str, *, folder: bool = False) -> bool:
        if folder:
            return not self._selection.may_hold(rel)
        return not self._selection.selects_local(rel)
