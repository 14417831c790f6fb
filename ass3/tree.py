"""The tree beyond file bytes: folders, symlinks, owners, hard links and user xattrs,
as a run record holds them, and the pure rules for trusting and restoring them.

A backup records the tree it walked (`Tree`) in its run record, next to the list of
files; regular files stay plain objects whose mode and mtime are object metadata. A
record is read from a bucket anyone with write access could have planted, so the
tree part is checked twice: by a JSON schema (`TREE_SCHEMA`, types and caps) and by
`tree_problem` (what a schema cannot say: owners that exist, names in order, hard
links only between files of the record). `treeplan` has the rules for restoring it;
`treescan` and `treeio` do the I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ass3.names import MAX_KEY_BYTES, unsafe_key_reason
from ass3.plan import key_order

# The run record object's metadata key holding `Tree.digest()` of the tree its run
# walked, so a backup can tell whether the tree changed with one HeadObject.
META_TREE_DIGEST = "tree-sha256"

ALL_MODE_BITS = 0o7777  # permissions, setuid, setgid, sticky
# A symlink target is at most PATH_MAX - 1 bytes on Linux (4095 on macOS too).
MAX_LINK_TARGET_BYTES = 4095
MAX_XATTR_NAME_BYTES = 255  # XATTR_NAME_MAX
MAX_XATTR_VALUE_BYTES = 65536  # XATTR_SIZE_MAX
MAX_XATTRS_PER_ENTRY = 1000
MAX_OWNERS = 65536
MAX_ID = 2**32 - 2  # uid_t and gid_t; 2**32 - 1 means "leave unchanged" to chown
MAX_OWNER_NAME = 256
XATTR_NAMESPACE = "user."
_MIN_NS, _MAX_NS = -(2**63), 2**63 - 1


@dataclass(frozen=True, slots=True)
class Owner:
    """Numeric ids, and the names this system gave them at backup time (None: no name)."""

    uid: int
    gid: int
    user: str | None = None
    group: str | None = None


@dataclass(frozen=True, slots=True)
class Folder:
    """A folder of the tree; rel "" is the backed-up folder itself."""

    rel: str
    mode: int
    mtime_ns: int
    owner: int  # index into Tree.owners


@dataclass(frozen=True, slots=True)
class Symlink:
    """A symlink, never followed: its target is data, kept as the bytes readlink gave."""

    rel: str
    target: bytes
    mtime_ns: int
    owner: int


Xattrs = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class Tree:
    """What a run walked beyond file bytes. Lists are in key order.

    Every regular file is owned by the root folder's owner unless `file_owners` says
    otherwise (most trees have one owner, so the record stays small). `hardlinks`
    are groups of files sharing one inode; `xattrs` is None when not recorded.
    """

    owners: tuple[Owner, ...]
    root: Folder
    folders: tuple[Folder, ...] = ()
    symlinks: tuple[Symlink, ...] = ()
    file_owners: tuple[tuple[str, int], ...] = ()
    hardlinks: tuple[tuple[str, ...], ...] = ()
    xattrs: tuple[tuple[str, Xattrs], ...] | None = None

    def to_document(self) -> dict[str, Any]:
        """The JSON form a run record holds (see TREE_SCHEMA)."""
        document: dict[str, Any] = {
            "owners": [[o.uid, o.gid, o.user, o.group] for o in self.owners],
            "root": [self.root.mode, self.root.mtime_ns, self.root.owner],
            "folders": [[f.rel, f.mode, f.mtime_ns, f.owner] for f in self.folders],
            "symlinks": [
                [s.rel, encode_target(s.target), s.mtime_ns, s.owner] for s in self.symlinks
            ],
            "file_owners": [[rel, owner] for rel, owner in self.file_owners],
            "hardlinks": [list(group) for group in self.hardlinks],
        }
        if self.xattrs is not None:
            document["xattrs"] = [
                [rel, [[name, base64.b64encode(value).decode()] for name, value in pairs]]
                for rel, pairs in self.xattrs
            ]
        return document

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> Tree:
        """The inverse of `to_document`, for a document TREE_SCHEMA accepted."""
        xattrs = document.get("xattrs")
        return cls(
            tuple(Owner(*owner) for owner in document["owners"]),
            Folder("", *document["root"]),
            tuple(Folder(*folder) for folder in document["folders"]),
            tuple(
                Symlink(rel, decode_target(target), mtime_ns, owner)
                for rel, target, mtime_ns, owner in document["symlinks"]
            ),
            tuple((rel, owner) for rel, owner in document["file_owners"]),
            tuple(tuple(group) for group in document["hardlinks"]),
            None
            if xattrs is None
            else tuple(
                (rel, tuple((name, base64.b64decode(value)) for name, value in pairs))
                for rel, pairs in xattrs
            ),
        )

    @cached_property
    def digest(self) -> str:
        """SHA-256 of the canonical JSON of the tree: equal digests, equal trees."""
        text = json.dumps(self.to_document(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("ascii")).hexdigest()

    def only(self, selects: Callable[[str], bool]) -> Tree:
        """The part of the tree a partial restore gives back: the folders, symlinks,
        owners, hard links and xattrs of the entries `selects` takes (a hard link whose
        other members are not taken becomes a plain file)."""
        groups = (tuple(rel for rel in group if selects(rel)) for group in self.hardlinks)
        return Tree(
            self.owners,
            self.root,
            tuple(folder for folder in self.folders if selects(folder.rel)),
            tuple(link for link in self.symlinks if selects(link.rel)),
            tuple(item for item in self.file_owners if selects(item[0])),
            tuple(group for group in groups if len(group) > 1),
            None if self.xattrs is None else tuple(i for i in self.xattrs if selects(i[0])),
        )

    def restricted_to(self, files: Iterable[str]) -> Tree:
        """The tree as a record holding only `files` may name it: owners, hard links and
        xattrs of files the record lacks (an upload that failed) are left out."""
        folders = {folder.rel for folder in self.folders}
        wanted = {rel for rel, _ in self.file_owners}
        wanted.update(rel for group in self.hardlinks for rel in group)
        wanted.update(rel for rel, _ in self.xattrs or () if rel and rel not in folders)
        present = {rel for rel in files if rel in wanted}
        groups = (tuple(rel for rel in group if rel in present) for group in self.hardlinks)
        return Tree(
            self.owners,
            self.root,
            self.folders,
            self.symlinks,
            tuple(item for item in self.file_owners if item[0] in present),
            tuple(group for group in groups if len(group) > 1),
            None
            if self.xattrs is None
            else tuple(
                item
                for item in self.xattrs
                if not item[0] or item[0] in folders or item[0] in present
            ),
        )


def encode_target(target: bytes) -> str | dict[str, str]:
    """A symlink target for JSON: its text when it is UTF-8, else its bytes in base64."""
    try:
        return target.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(target).decode()}


def decode_target(target: str | Mapping[str, str]) -> bytes:
    if isinstance(target, str):
        return target.encode("utf-8")
    return base64.b64decode(target["base64"], validate=True)


# --- trusting a record's tree ------------------------------------------------------------

_KEY = {"type": "string", "maxLength": MAX_KEY_BYTES, "format": "ass3-key"}
_INDEX = {"type": "integer", "minimum": 0, "maximum": MAX_OWNERS - 1}
_NS = {"type": "integer", "minimum": _MIN_NS, "maximum": _MAX_NS}
_MODE = {"type": "integer", "minimum": 0, "maximum": ALL_MODE_BITS}
_ID = {"type": "integer", "minimum": 0, "maximum": MAX_ID}
_NAME = {"type": ["string", "null"], "pattern": r"^[^\x00-\x1f\x7f:/]{1,256}\Z"}
_BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?\Z"


def _row(*items: dict[str, Any]) -> dict[str, Any]:
    """A JSON array of exactly these items."""
    return {"type": "array", "prefixItems": list(items), "minItems": len(items), "items": False}


def _list(item: dict[str, Any], *, max_items: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "array", "items": item}
    if max_items is not None:
        schema["maxItems"] = max_items
    return schema


# A symlink target: its text, or {"base64": its bytes} when they are not UTF-8. By
# if/then/else rather than oneOf, so a refusal says which rule of which form it broke.
_TARGET = {
    "if": {"type": "string"},
    "then": {
        "minLength": 1,
        "maxLength": MAX_LINK_TARGET_BYTES,
        "format": "ass3-link-target",
    },
    "else": {
        "type": "object",
        "additionalProperties": False,
        "required": ["base64"],
        "properties": {
            "base64": {
                "type": "string",
                "maxLength": (MAX_LINK_TARGET_BYTES + 2) // 3 * 4,
                "pattern": _BASE64,
                "format": "ass3-link-target-base64",
            }
        },
    },
}
_XATTR = _row(
    {"type": "string", "format": "ass3-xattr-name"},
    {"type": "string", "maxLength": MAX_XATTR_VALUE_BYTES // 3 * 4 + 4, "pattern": _BASE64},
)

# The `tree` member of a run record of format 2, and nothing else.
TREE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["owners", "root", "folders", "symlinks", "file_owners", "hardlinks"],
    "properties": {
        "owners": _list(_row(_ID, _ID, _NAME, _NAME), max_items=MAX_OWNERS) | {"minItems": 1},
        "root": _row(_MODE, _NS, _INDEX),
        "folders": _list(_row(_KEY, _MODE, _NS, _INDEX)),
        "symlinks": _list(_row(_KEY, _TARGET, _NS, _INDEX)),
        "file_owners": _list(_row(_KEY, _INDEX)),
        "hardlinks": _list({"type": "array", "items": _KEY, "minItems": 2, "uniqueItems": True}),
        "xattrs": _list(
            _row(
                {"anyOf": [{"const": ""}, _KEY]},
                _list(_XATTR, max_items=MAX_XATTRS_PER_ENTRY) | {"minItems": 1},
            )
        ),
    },
}


def _link_target(value: object) -> bool:
    if isinstance(value, str):
        try:
            _check_target(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError("not valid UTF-8") from None
    return True


def _link_target_base64(value: object) -> bool:
    if isinstance(value, str):
        try:
            _check_target(base64.b64decode(value, validate=True))
        except binascii.Error as error:
            raise ValueError(f"not base64 ({error})") from None
    return True


def _check_target(target: bytes) -> None:
    if not target:
        raise ValueError("an empty symlink target")
    if len(target) > MAX_LINK_TARGET_BYTES:
        raise ValueError(f"a symlink target longer than {MAX_LINK_TARGET_BYTES} bytes")
    if b"\0" in target:
        raise ValueError("a NUL byte in a symlink target")


def _xattr_name(value: object) -> bool:
    if isinstance(value, str):
        reason = xattr_name_problem(value)
        if reason:
            raise ValueError(reason)
    return True


def xattr_name_problem(name: str) -> str | None:
    """Why `name` is not an xattr a backup keeps, or None: only the user namespace."""
    if not name.startswith(XATTR_NAMESPACE) or len(name) == len(XATTR_NAMESPACE):
        return f"not a {XATTR_NAMESPACE} attribute"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "not valid UTF-8"
    if size > MAX_XATTR_NAME_BYTES:
        return f"longer than {MAX_XATTR_NAME_BYTES} bytes"
    if "\0" in name:
        return "a NUL in its name"
    return None


# Formats TREE_SCHEMA names, beyond "ass3-key": each raises ValueError saying why not.
TREE_FORMATS: dict[str, Callable[[object], bool]] = {
    "ass3-link-target": _link_target,
    "ass3-link-target-base64": _link_target_base64,
    "ass3-xattr-name": _xattr_name,
}


def tree_problem(document: Mapping[str, Any], files: Iterable[str]) -> str | None:
    """What is wrong with a tree TREE_SCHEMA accepted, or None. `files` are the names
    of the record's files. A backup never writes any of these; a planted record may.

    Owner indexes must exist; names come in key order, once; no symlink has entries
    below it; a hard link joins files of the record only, each in one group; owners and
    xattrs of files name files of the record.
    """
    owners = len(document["owners"])
    rows = [document["root"], *document["folders"], *document["symlinks"]]
    owned = [row[-1] for row in rows] + [owner for _, owner in document["file_owners"]]
    missing = next((index for index in owned if index >= owners), None)
    if missing is not None:
        return f"tree: owner {missing} is not one of its {owners} owners"
    for part in ("folders", "symlinks", "file_owners", "xattrs"):
        problem = _order_problem(part, [row[0] for row in document.get(part) or ()])
        if problem:
            return problem
    folders = {row[0] for row in document["folders"]}
    symlinks = {row[0] for row in document["symlinks"]}
    both = folders & symlinks
    if both:
        return f"tree: {_shown(min(both))} is both a folder and a symlink"
    for rel in sorted(folders | symlinks):
        above = _ancestors(rel) & symlinks
        if above:
            return f"tree: {_shown(rel)} is below the symlink {_shown(min(above))}"
    groups: dict[str, int] = {}
    for index, group in enumerate(document["hardlinks"]):
        for rel in group:
            if rel in groups:
                return f"tree: {_shown(rel)} is in two hard-link groups"
            groups[rel] = index
    named = set(groups) | {rel for rel, _ in document["file_owners"]}
    file_xattrs = {row[0] for row in document.get("xattrs") or ()} - folders - {""}
    named |= file_xattrs
    present = {rel for rel in files if rel in named}
    absent = sorted(named - present, key=key_order)
    if absent:
        return f"tree: {_shown(absent[0])} names no file of the record"
    return None


def _order_problem(part: str, names: list[str]) -> str | None:
    previous: bytes | None = None
    for index, rel in enumerate(names):
        order = key_order(rel)
        if previous is not None and order <= previous:
            return f"tree/{part}/{index}: {_shown(rel)} is out of key order"
        previous = order
    return None


def _ancestors(rel: str) -> set[str]:
    parts = rel.split("/")
    return {"/".join(parts[:depth]) for depth in range(1, len(parts))}


def _shown(rel: str) -> str:
    return repr(rel if len(rel) <= 60 else rel[:57] + "...")


def name_problem(rel: str) -> str | None:
    """Why an entry of the walked tree cannot be recorded, as `scan` judges file names."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "name is not valid UTF-8"
    unsafe = unsafe_key_reason(rel)
    return f"cannot be restored safely: {unsafe}" if unsafe else None
