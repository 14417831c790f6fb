"""The pure rules for restoring a tree beyond file bytes: which mode bits, which local
owner ids, what to do with what already stands at a symlink's name, which members of
a hard-link group are linked instead of downloaded. Decided on plain values and tested
on literals; `treeio` does what they decide.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ass3.tree import ALL_MODE_BITS, Owner

PERMISSION_BITS = 0o777
SETID_BITS = 0o6000  # setuid and setgid
STICKY_BIT = 0o1000


@dataclass(frozen=True)
class TreeOptions:
    """How a restore treats what the tree records, beyond file bytes.

    `same_owner`: chown to the recorded owners (tar's --same-owner); None means as tar
    does, only when running as root. `numeric_owner`: use the recorded ids even where
    this system knows the recorded names. `keep_special_bits`: restore setuid, setgid
    and sticky bits (setuid and setgid only where the owner is restored too, or the
    restore does not run as root). `xattrs`: restore recorded user xattrs.
    """

    same_owner: bool | None = None
    numeric_owner: bool = False
    keep_special_bits: bool = False
    xattrs: bool = False

    def restores_owners(self, euid: int) -> bool:
        return self.same_owner if self.same_owner is not None else euid == 0


def parse_mode(text: str | None) -> int | None:
    """The permission bits an object's `mode` metadata holds, or None if it holds none
    that make sense (an object is as untrusted as a record)."""
    if text is None or not re.fullmatch(r"[0-7]{1,6}", text):
        return None
    mode = int(text, 8)
    return mode if mode <= ALL_MODE_BITS else None


def parse_mtime(text: str | None) -> int | None:
    """The mtime (ns) an object's `mtime` metadata holds, or None."""
    if text is None or not re.fullmatch(r"-?[0-9]{1,19}", text):
        return None
    return int(text)


def restored_mode(mode: int, *, keep_special: bool, owner_restored: bool, euid: int) -> int:
    """The mode bits a restore gives an entry recorded with `mode`.

    Without `keep_special`, never setuid, setgid or sticky. With it, sticky always, and
    setuid/setgid only where they cannot hand the recorded program to another user:
    when the recorded owner is restored too, or the restore runs without root (its
    files are its own). A setuid file of a backup restored by root with no owner
    would otherwise become a setuid-root program.
    """
    bits = mode & PERMISSION_BITS
    if keep_special:
        bits |= mode & STICKY_BIT
        if owner_restored or euid != 0:
            bits |= mode & SETID_BITS
    return bits


def local_ids(
    owner: Owner,
    *,
    numeric: bool,
    user_id: Callable[[str], int | None],
    group_id: Callable[[str], int | None],
) -> tuple[int, int]:
    """The local (uid, gid) for a recorded owner, as tar picks them: the ids this
    system gives the recorded names, where it knows them; else the recorded ids."""
    uid, gid = owner.uid, owner.gid
    if not numeric:
        if owner.user is not None:
            uid = _or(user_id(owner.user), uid)
        if owner.group is not None:
            gid = _or(group_id(owner.group), gid)
    return uid, gid


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


# What is on disk where the tree has a symlink.
ABSENT, SYMLINK, FOLDER, OTHER = "absent", "symlink", "folder", "other"
CREATE, KEEP, REPLACE = "create", "keep", "replace"


def symlink_action(found: str, *, same_target: bool, a_file_of_the_backup: bool) -> str:
    """CREATE, KEEP or REPLACE what is at a symlink's name, or why not (a failure).

    As a restore treats a file: what stands at the name is replaced (a link or file is
    renamed over, never written through), except a folder, which may hold the user's
    files and is never removed; and a file this backup also restores at that very name
    (two entries of one name) is not overwritten by the second.
    """
    if a_file_of_the_backup:
        return "refused: the backup also has a file of this name"
    if found == ABSENT:
        return CREATE
    if found == FOLDER:
        return "refused: a folder is in the way"
    if found == SYMLINK and same_target:
        return KEEP
    return REPLACE


@dataclass
class HardLinks:
    """Which members of a hard-link group to link rather than download.

    Steps arrive in key order, so the first member of a group to arrive is its anchor:
    it is downloaded. A later member whose object holds the same bytes (size and ETag)
    waits, and is linked to the anchor once that is in place; if the anchor fails,
    the members that waited are downloaded as copies. A member whose object differs
    (the listing has a newer object than the record) is downloaded: never lose bytes.
    """

    groups: Mapping[str, int]  # member -> group number
    anchors: dict[int, tuple[str, int, str]] = field(default_factory=dict)

    @classmethod
    def of(cls, hardlinks: Iterable[tuple[str, ...]]) -> HardLinks:
        return cls({rel: number for number, group in enumerate(hardlinks) for rel in group})

    def anchor_for(self, rel: str, size: int, etag: str) -> str | None:
        """The anchor to link `rel` to, or None: download it (it may be the anchor)."""
        number = self.groups.get(rel)
        if number is None:
            return None
        anchor = self.anchors.get(number)
        if anchor is None:
            self.anchors[number] = (rel, size, etag)
            return None
        anchor_rel, anchor_size, anchor_etag = anchor
        return anchor_rel if (anchor_size, anchor_etag) == (size, etag) else None
