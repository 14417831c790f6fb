"""The restore's side of the tree: owners, modes and xattrs put on what a restore
writes, hard links, symlinks, empty folders and folder attributes.

Everything is done relative to DESTINATION/NAME held open for the run, one folder at a
time with O_NOFOLLOW (`files.folder_of`), like every other write of a restore: a symlink
is created, never followed, so one this restore made (or a record planted) can
redirect no later write. The order is restic's and tar's: file contents first, then
hard links, then folders and symlinks, then each folder's mode, owner and mtime,
deepest first (writing into a folder moves its mtime; a read-only mode would stop the
writes), the restored folder itself last. `treeplan` decides; this module does.
"""

from __future__ import annotations

import errno
import grp
import logging
import os
import pwd
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress

from ass3.files import folder_of, open_folder
from ass3.model import (
    META_MODE,
    META_MTIME,
    FileProblem,
    Outcome,
    RemoteObject,
    Step,
    Summary,
    plural,
)
from ass3.model import printable as shown
from ass3.names import temporary_name, temporary_random_part
from ass3.plan import key_order
from ass3.tree import Folder, Symlink, Tree, Xattrs
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

log = logging.getLogger("ass3")


def _user_id(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def _group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


class _Problems:
    """What could not be restored of owners and xattrs: counted, said once per kind at
    the end (a file system without xattrs would otherwise give one line per file)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._found: dict[str, list[tuple[str, str]]] = {}

    def add(self, what: str, path: str, error: OSError) -> None:
        with self._lock:
            self._found.setdefault(what, []).append((path, error.strerror or str(error)))

    def report(self, summary: Summary) -> None:
        for what, found in self._found.items():
            path, reason = min(found, key=lambda item: key_order(item[0]))  # not thread order
            more = f" (and {len(found) - 1} more entries)" if len(found) > 1 else ""
            summary.warn(path, f"{what} not restored: {reason}{more}")


class Attributes:
    """Owner, mode bits, xattrs and mtime, put on a restored entry through its open
    descriptor: the owner before the mode (chown clears setuid and setgid), the mtime
    last. Used from the download threads for files (`file`), and for folders."""

    def __init__(self, tree: Tree | None, options: TreeOptions, *, euid: int) -> None:
        self._options = options
        self._euid = euid
        self.problems = _Problems()
        self._ids: list[tuple[int, int]] = []
        if tree is not None and options.restores_owners(euid):
            self._ids = [
                local_ids(
                    owner, numeric=options.numeric_owner, user_id=_user_id, group_id=_group_id
                )
                for owner in tree.owners
            ]
        self._default_owner = tree.root.owner if tree is not None else 0
        self._file_owners = dict(tree.file_owners) if tree is not None else {}
        recorded = tree.xattrs if tree is not None and options.xattrs else None
        self._xattrs: dict[str, Xattrs] = dict(recorded or ())

    def file(self, descriptor: int, rel: str, metadata: Mapping[str, str]) -> None:
        """A downloaded file, still under its temporary name: its metadata, as recorded."""
        self.apply(
            descriptor,
            rel,
            owner=self._file_owners.get(rel, self._default_owner),
            mode=parse_mode(metadata.get(META_MODE)),
            mtime_ns=parse_mtime(metadata.get(META_MTIME)),
        )

    def apply(
        self, descriptor: int, rel: str, *, owner: int, mode: int | None, mtime_ns: int | None
    ) -> None:
        owner_restored = False
        if self._ids:
            try:
                os.fchown(descriptor, *self._ids[owner])
                owner_restored = True
            except OSError as error:
                self.problems.add("owner", rel or ".", error)
        if mode is not None:
            special = self._options.keep_special_bits
            os.fchmod(
                descriptor,
                restored_mode(
                    mode, keep_special=special, owner_restored=owner_restored, euid=self._euid
                ),
            )
        for name, value in self._xattrs.get(rel, ()):  # never set on a symlink
            try:
                os.setxattr(descriptor, name, value)
            except OSError as error:
                self.problems.add("user xattrs", rel or ".", error)
        if mtime_ns is not None:
            with suppress(OverflowError, ValueError):  # a time this system cannot hold
                os.utime(descriptor, ns=(mtime_ns, mtime_ns))

    def symlink(self, folder: int, name: str, link: Symlink) -> None:
        """The owner and mtime of symlink `name` in the open folder, the link itself
        (a symlink has no mode of its own on Linux)."""
        if self._ids:
            try:
                os.chown(name, *self._ids[link.owner], dir_fd=folder, follow_symlinks=False)
            except OSError as error:
                self.problems.add("owner", link.rel, error)
        with suppress(OverflowError, ValueError):
            os.utime(name, ns=(link.mtime_ns, link.mtime_ns), dir_fd=folder, follow_symlinks=False)


@contextmanager
def _opened(root: int, root_path: str, rel: str, *, create: bool) -> Iterator[int]:
    """Folder `rel` below the open root, opened (made, with `create`) never through a
    symlink; rel "" is the root itself."""
    if not rel:
        descriptor = os.dup(root)
    else:
        with folder_of(root, root_path, rel, create=create) as parent:
            name = rel.rsplit("/", 1)[-1]
            descriptor = open_folder(parent, name, os.path.join(root_path, rel), create=create)
    try:
        yield descriptor
    finally:
        os.close(descriptor)


def _kind(folder: int, name: str) -> tuple[str, os.stat_result | None]:
    try:
        st = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return ABSENT, None
    if stat.S_ISLNK(st.st_mode):
        return SYMLINK, st
    return (FOLDER if stat.S_ISDIR(st.st_mode) else OTHER), st


def _free_name(folder: int, name: str, make: Callable[[str], None]) -> str:
    """Make a new entry under a temporary name beside `name` (the name a restore's
    temporaries have, so a killed run's leftover is known as one); that name."""
    for _ in range(100):
        temporary = temporary_name(name, temporary_random_part())
        with suppress(FileExistsError):
            make(temporary)
            return temporary
    raise FileExistsError(errno.EEXIST, "no unused temporary name")


class TreeRestore:
    """One restore's work on the tree beyond file bytes (see the module's docstring).

    Without a tree (a backup made before records held one, or restored from object
    versions) only the file attributes apply, as before: modes without the special
    bits unless asked, mtimes.
    """

    def __init__(
        self,
        tree: Tree | None,
        options: TreeOptions,
        *,
        root: str,
        root_fd: int | None,
        summary: Summary,
        euid: int | None = None,
    ) -> None:
        self.tree = tree
        self.root = root
        self.root_fd = root_fd  # None: a dry run
        self.summary = summary
        self.attributes = Attributes(tree, options, euid=os.geteuid() if euid is None else euid)
        self._links = HardLinks.of(tree.hardlinks if tree else ())
        self._waiting: list[tuple[Step, str]] = []
        self._restored: set[str] = set()  # hard-link members in place
        self._symlink_names = {link.rel for link in tree.symlinks} if tree else set()
        self._also_files: set[str] = set()  # symlink names the backup also has files at
        self._blocked: set[str] = set()  # folders that could not be made
        self._done = {"folders": 0, "symlinks": 0, "hard links": 0}

    def steps(self, steps: Iterable[Step]) -> Iterator[Step]:
        """The planned steps, less the hard-link members that wait to be linked."""
        for step in steps:
            if step.rel in self._symlink_names:
                self._also_files.add(step.rel)
            remote = step.source
            assert isinstance(remote, RemoteObject)
            anchor = self._links.anchor_for(step.rel, remote.size, remote.etag)
            if anchor is not None and self.root_fd is not None:
                self._waiting.append((step, anchor))
            else:
                yield step

    def outcome(self, then: Callable[[Outcome], None] | None) -> Callable[[Outcome], None]:
        """An outcome hook noting which hard-link members are in place, then `then`."""

        def note(outcome: Outcome) -> None:
            if outcome.rel in self._links.groups:
                self._restored.add(outcome.rel)
            if then is not None:
                then(outcome)

        return note

    def link(self, download: Callable[[list[Step]], None]) -> None:
        """Link each waiting member to its anchor; `download` those whose anchor failed."""
        copies = []
        for step, anchor in self._waiting:
            if anchor not in self._restored:
                copies.append(step)
                continue
            try:
                linked = self._link(anchor, step.rel)
            except (FileProblem, OSError) as error:
                self.summary.fail(step.rel, _reason(error))
            else:
                self._done["hard links"] += linked
        self._waiting = []
        if copies:
            download(copies)

    def _link(self, anchor: str, rel: str) -> bool:
        """Link `rel` to `anchor`, unless it is linked already (False)."""
        assert self.root_fd is not None
        name = rel.rsplit("/", 1)[-1]
        with (
            folder_of(self.root_fd, self.root, anchor, create=False) as source,
            folder_of(self.root_fd, self.root, rel, create=True) as folder,
        ):
            anchor_name = anchor.rsplit("/", 1)[-1]
            target = os.stat(anchor_name, dir_fd=source, follow_symlinks=False)
            if not stat.S_ISREG(target.st_mode):
                raise FileProblem(f"{shown(anchor)} to link to is not a regular file")
            found, st = _kind(folder, name)
            if st is not None and (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                return False
            if found == FOLDER:
                raise FileProblem(f"a folder is in the way at {shown(rel)}")
            temporary = _free_name(
                folder,
                name,
                lambda temp: os.link(
                    anchor_name,
                    temp,
                    src_dir_fd=source,
                    dst_dir_fd=folder,
                    follow_symlinks=False,
                ),
            )
            linked = os.stat(temporary, dir_fd=folder, follow_symlinks=False)
            if (linked.st_dev, linked.st_ino) != (target.st_dev, target.st_ino):
                os.unlink(temporary, dir_fd=folder)  # the anchor was swapped meanwhile
                raise FileProblem(f"{shown(anchor)} changed while being linked to")
            os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
        log.info("%s (hard link to %s)", shown(rel), shown(anchor))
        return True

    def finish(self) -> None:
        """Folders and symlinks, then folder attributes deepest first, then the root's;
        what could not be restored of owners and xattrs is said once per kind."""
        tree = self.tree
        if tree is not None and self.root_fd is None:
            log.info(
                "would restore %d folders and %d symlinks", len(tree.folders), len(tree.symlinks)
            )
        elif tree is not None:
            for folder in tree.folders:
                self._make_folder(folder)
            for link in tree.symlinks:
                self._make_symlink(link)
            for folder in (*reversed(tree.folders), tree.root):
                self._set_folder(folder)
            log.info(
                "tree: %s, %s made or replaced, %s made",
                plural(self._done["folders"], "folder"),
                plural(self._done["symlinks"], "symlink"),
                plural(self._done["hard links"], "hard link"),
            )
        self.attributes.problems.report(self.summary)

    def _below_blocked(self, rel: str) -> bool:
        parts = rel.split("/")
        return any("/".join(parts[:depth]) in self._blocked for depth in range(1, len(parts)))

    def _make_folder(self, folder: Folder) -> None:
        assert self.root_fd is not None
        if self._below_blocked(folder.rel):
            self._blocked.add(folder.rel)
            return
        try:
            with _opened(self.root_fd, self.root, folder.rel, create=True):
                pass
        except (FileProblem, OSError) as error:
            self._blocked.add(folder.rel)
            self.summary.fail(folder.rel, _reason(error))
        else:
            self._done["folders"] += 1

    def _make_symlink(self, link: Symlink) -> None:
        assert self.root_fd is not None
        if self._below_blocked(link.rel):
            return
        name = link.rel.rsplit("/", 1)[-1]
        target = os.fsdecode(link.target)
        try:
            with folder_of(self.root_fd, self.root, link.rel, create=True) as folder:
                found, _ = _kind(folder, name)
                same = found == SYMLINK and os.readlink(name, dir_fd=folder) == target
                action = symlink_action(
                    found, same_target=same, a_file_of_the_backup=link.rel in self._also_files
                )
                if action == KEEP:
                    self.attributes.symlink(folder, name, link)
                    return
                if action == CREATE:
                    os.symlink(target, name, dir_fd=folder)
                elif action == REPLACE:
                    temporary = _free_name(
                        folder, name, lambda temp: os.symlink(target, temp, dir_fd=folder)
                    )
                    os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
                else:
                    raise FileProblem(action)
                self.attributes.symlink(folder, name, link)
        except (FileProblem, OSError) as error:
            self.summary.fail(link.rel, _reason(error))
            return
        self._done["symlinks"] += 1
        log.info("%s -> %s (symlink)", shown(link.rel), shown(target))

    def _set_folder(self, folder: Folder) -> None:
        assert self.root_fd is not None
        if folder.rel in self._blocked or self._below_blocked(folder.rel):
            return
        try:
            with _opened(self.root_fd, self.root, folder.rel, create=False) as descriptor:
                self.attributes.apply(
                    descriptor,
                    folder.rel,
                    owner=folder.owner,
                    mode=folder.mode,
                    mtime_ns=folder.mtime_ns,
                )
        except (FileProblem, OSError) as error:
            self.summary.fail(folder.rel or ".", _reason(error))


def _reason(error: FileProblem | OSError) -> str:
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return str(error)
