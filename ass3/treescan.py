"""The backup's side of the tree: what the walk sees beyond file bytes, collected into
a `Tree` for the run record.

`scan.scan_tree` tells a `TreeRecorder` of every folder, symlink and regular file it
walks (already lstat'ed: nothing is stat'ed twice, and no symlink is followed). The
recorder keeps only what is not the common case, so memory grows with the folders,
symlinks and exceptions, not with the files: a file owned by the root folder's owner,
with one link and no xattrs, costs nothing here.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import re
import stat
from collections import defaultdict
from functools import cache

from ass3.model import LocalFile
from ass3.plan import key_order
from ass3.tree import (
    MAX_XATTR_VALUE_BYTES,
    MAX_XATTRS_PER_ENTRY,
    Folder,
    Owner,
    Symlink,
    Tree,
    Xattrs,
    xattr_name_problem,
)

# What a file system says when it has no xattrs at all: nothing to record, nothing to say.
_NO_XATTRS = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA}
# An owner name a record may hold (see tree.TREE_SCHEMA); another is recorded as no name.
_OWNER_NAME = re.compile(r"[^\x00-\x1f\x7f:/]{1,256}")


@cache
def _user_name(uid: int) -> str | None:
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return None
    return name if _OWNER_NAME.fullmatch(name) else None


@cache
def _group_name(gid: int) -> str | None:
    try:
        name = grp.getgrgid(gid).gr_name
    except KeyError:
        return None
    return name if _OWNER_NAME.fullmatch(name) else None


class TreeRecorder:
    """Collects the walked tree (a `scan.TreeObserver`); `tree()` gives the result.

    Hard links are the files of more than one link sharing a (device, inode) inside
    the tree; with `hardlinks=False` (--follow-symlinks, where one file can be reached
    twice through links) none are recorded. With `xattrs`, the user xattrs of files
    and folders; those that cannot be read are in `xattr_problems`.
    """

    def __init__(self, *, xattrs: bool = False, hardlinks: bool = True) -> None:
        self._read_xattrs = xattrs
        self._hardlinks = hardlinks
        self._owners: dict[tuple[int, int], int] = {}
        self._root: Folder | None = None
        self._folders: list[Folder] = []
        self._symlinks: list[Symlink] = []
        self._file_owners: list[tuple[str, int]] = []
        self._inodes: defaultdict[tuple[int, int], list[str]] = defaultdict(list)
        self._xattrs: list[tuple[str, Xattrs]] = []
        self.xattr_problems: list[tuple[str, str]] = []

    def _owner(self, st: os.stat_result) -> int:
        return self._owners.setdefault((st.st_uid, st.st_gid), len(self._owners))

    def folder(self, rel: str, path: str, st: os.stat_result) -> None:
        """A folder entered by the walk; rel "" is the backed-up folder itself."""
        entry = Folder(rel, stat.S_IMODE(st.st_mode), st.st_mtime_ns, self._owner(st))
        if rel:
            self._folders.append(entry)
        else:
            self._root = entry
        self._note_xattrs(rel, path)

    def symlink(self, rel: str, path: str, st: os.stat_result) -> None:
        """A symlink, not followed: its target as bytes. OSError if it is gone."""
        target = os.fsencode(os.readlink(path))
        self._symlinks.append(Symlink(rel, target, st.st_mtime_ns, self._owner(st)))

    def file(self, local: LocalFile, st: os.stat_result) -> None:
        """A regular file the backup uploads or keeps."""
        assert self._root is not None, "the walk tells of the root folder first"
        owner = self._owner(st)
        if owner != self._root.owner:
            self._file_owners.append((local.rel, owner))
        if self._hardlinks and st.st_nlink > 1 and not local.followed:
            self._inodes[(st.st_dev, st.st_ino)].append(local.rel)
        self._note_xattrs(local.rel, local.path)

    def _note_xattrs(self, rel: str, path: str) -> None:
        if not self._read_xattrs:
            return
        try:
            pairs = _user_xattrs(path)
        except OSError as error:
            if error.errno not in _NO_XATTRS:
                self.xattr_problems.append((rel or ".", error.strerror or str(error)))
            return
        except ValueError as error:
            self.xattr_problems.append((rel or ".", str(error)))
            return
        if pairs:
            self._xattrs.append((rel, pairs))

    def tree(self) -> Tree:
        """The tree walked, every list in key order and the owners by (uid, gid), so the
        same tree always gives the same record and the same digest."""
        assert self._root is not None, "the walk tells of the root folder first"
        ordered = sorted(self._owners)
        number = {self._owners[ids]: index for index, ids in enumerate(ordered)}

        def by_key(item: Folder | Symlink | tuple[str, object]) -> bytes:
            return key_order(item[0] if isinstance(item, tuple) else item.rel)

        groups = sorted(
            (sorted(rels, key=key_order) for rels in self._inodes.values() if len(rels) > 1),
            key=lambda group: key_order(group[0]),
        )
        root = self._root
        return Tree(
            tuple(Owner(uid, gid, _user_name(uid), _group_name(gid)) for uid, gid in ordered),
            Folder("", root.mode, root.mtime_ns, number[root.owner]),
            tuple(
                Folder(f.rel, f.mode, f.mtime_ns, number[f.owner])
                for f in sorted(self._folders, key=by_key)
            ),
            tuple(
                Symlink(s.rel, s.target, s.mtime_ns, number[s.owner])
                for s in sorted(self._symlinks, key=by_key)
            ),
            tuple((rel, number[owner]) for rel, owner in sorted(self._file_owners, key=by_key)),
            tuple(tuple(group) for group in groups),
            tuple(sorted(self._xattrs, key=by_key)) if self._read_xattrs else None,
        )


def _user_xattrs(path: str) -> Xattrs:
    """The user-namespace xattrs of the entry at `path` (never through a symlink),
    sorted by name. ValueError for one a record cannot hold."""
    pairs = []
    for name in os.listxattr(path, follow_symlinks=False):
        if not name.startswith("user."):
            continue  # security., system., trusted.: not the user's data to carry
        problem = xattr_name_problem(name)
        if problem:
            raise ValueError(f"xattr {name!r}: {problem}")
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError as error:
            if error.errno == errno.ENODATA:  # removed since it was listed
                continue
            raise
        if len(value) > MAX_XATTR_VALUE_BYTES:
            raise ValueError(f"xattr {name!r}: more than {MAX_XATTR_VALUE_BYTES} bytes")
        pairs.append((name, value))
    if len(pairs) > MAX_XATTRS_PER_ENTRY:
        raise ValueError(f"more than {MAX_XATTRS_PER_ENTRY} xattrs")
    return tuple(sorted(pairs))
