"""Reading and writing file content: checksums, the metadata kept with each object,
and the safe placement and removal of restored files (never through a symlink, never
two keys onto one file).

Everything a restore writes or deletes goes through folders opened one at a time below
DESTINATION/NAME with O_NOFOLLOW (`open_root`, `folder_of`), so POSIX `dir_fd` support
is required.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import BinaryIO

from ass3.model import META_MD5, META_MODE, META_MTIME, FileDigest, FileProblem, MiB
from ass3.names import temporary_name, temporary_random_part

READ_CHUNK = 1 * MiB


def read_chunks(fileobj: BinaryIO, limit: int | None = None) -> Iterator[bytes]:
    """Yield a file's bytes in READ_CHUNK pieces (never the whole file in memory)."""
    remaining = limit
    while remaining is None or remaining > 0:
        chunk = fileobj.read(READ_CHUNK if remaining is None else min(READ_CHUNK, remaining))
        if not chunk:
            return
        if remaining is not None:
            remaining -= len(chunk)
        yield chunk


def local_checksum(fileobj: BinaryIO, part_size: int | None) -> FileDigest:
    """MD5 of a file, and of each `part_size` part when it was uploaded in parts."""
    whole = hashlib.md5()
    if part_size is None:
        for chunk in read_chunks(fileobj):
            whole.update(chunk)
        return FileDigest(whole.hexdigest())
    parts: list[bytes] = []
    while True:
        part = hashlib.md5()
        length = 0
        for chunk in read_chunks(fileobj, part_size):
            whole.update(chunk)
            part.update(chunk)
            length += len(chunk)
        if length == 0 and parts:
            break
        parts.append(part.digest())
        if length < part_size:
            break
    return FileDigest(whole.hexdigest(), tuple(parts))


def part_md5s(fileobj: BinaryIO, sizes: Iterable[int]) -> tuple[bytes, ...]:
    """The binary MD5 of each part of a file cut at the given sizes, read from the start."""
    digests = []
    for size in sizes:
        part = hashlib.md5()
        for chunk in read_chunks(fileobj, size):
            part.update(chunk)
        digests.append(part.digest())
    return tuple(digests)


def object_metadata(digest: FileDigest, st: os.stat_result) -> dict[str, str]:
    """The metadata stored with each object: the MD5 a restore verifies, mtime and mode."""
    return {
        META_MD5: digest.md5,
        META_MTIME: str(st.st_mtime_ns),
        META_MODE: format(stat.S_IMODE(st.st_mode), "o"),
    }


# Folders below DESTINATION/NAME are opened one at a time, each relative to the one
# above it and never through a symlink (O_NOFOLLOW): a folder swapped for a link after
# it was checked can redirect nothing, as with `open(..., dir_fd=...)` in borg or tar.
_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_NEW_FILE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
# What opening a folder with O_NOFOLLOW | O_DIRECTORY says when the name is a symlink
# (ELOOP; EMLINK on FreeBSD) or a file (ENOTDIR).
_NOT_A_FOLDER = {errno.ELOOP, errno.EMLINK, errno.ENOTDIR}


def open_folder(parent: int, name: str, shown: str, *, create: bool) -> int:
    """Open folder `name` of the open folder `parent`, never through a symlink.

    With `create` a missing folder is made. A symlink or a file in its place is a
    FileProblem; `shown` is the folder's path for that message. The caller closes it.
    """
    try:
        return os.open(name, _FOLDER_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as error:
        if error.errno in _NOT_A_FOLDER:
            raise FileProblem(_why_not_a_folder(parent, name, shown)) from error
        raise
    with suppress(FileExistsError):  # another worker may make it first
        os.mkdir(name, 0o755, dir_fd=parent)
    return open_folder(parent, name, shown, create=False)


def _why_not_a_folder(parent: int, name: str, shown: str) -> str:
    st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        return f"refused: {shown} is a symlink"
    return f"refused: {shown} is a file, not a folder"


def open_root(destination: str, name: str, *, create: bool) -> int:
    """DESTINATION/NAME opened as a folder (made first, with `create`), for the whole run.

    DESTINATION is the user's choice and may be, or pass through, a symlink (`/data`
    linking to a mounted disk); NAME itself must be a real folder, else FileProblem.
    """
    parent = os.open(destination, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        return open_folder(parent, name, os.path.join(destination, name), create=create)
    finally:
        os.close(parent)


@contextmanager
def folder_of(root: int, root_path: str, rel: str, *, create: bool) -> Iterator[int]:
    """The open folder that holds `rel` below the open root, reached one folder at a
    time, never through a symlink (made on the way, with `create`); closed on leaving."""
    folder = os.dup(root)
    try:
        shown = root_path
        for segment in rel.split("/")[:-1]:
            shown = os.path.join(shown, segment)
            inner = open_folder(folder, segment, shown, create=create)
            os.close(folder)
            folder = inner
        yield folder
    finally:
        os.close(folder)


def remove_below(root: int, root_path: str, rel: str) -> None:
    """Delete file `rel` below the open root. No folder on the way is a symlink followed,
    even one planted since the file was seen; a link at the name itself is removed, not
    its target."""
    with folder_of(root, root_path, rel, create=False) as folder:
        os.unlink(rel.rsplit("/", 1)[-1], dir_fd=folder)


def create_temporary(folder: int, name: str) -> tuple[int, str]:
    """A new, empty temporary file standing in for `name` in the open folder (mode 0600,
    never through a symlink): its descriptor and its name (`names.temporary_name`)."""
    for _ in range(100):
        temporary = temporary_name(name, temporary_random_part())
        with suppress(FileExistsError):
            return os.open(temporary, _NEW_FILE_FLAGS, 0o600, dir_fd=folder), temporary
    raise FileExistsError(errno.EEXIST, "no unused temporary file name")


class Placements:
    """The files this restore has put in place, to catch two keys landing on one path.

    On a filesystem that folds case or Unicode normalisation, `A` and `a` (or NFC
    and NFD twins) are one file: the second would silently overwrite the first.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._placed: dict[tuple[int, int], str] = {}

    def replace(self, temporary: str, final: str, rel: str, *, dir_fd: int | None = None) -> None:
        """Rename the verified temporary file over `final`, unless that would overwrite a
        folder or a file this restore already placed under another name. With `dir_fd`,
        both names are relative to that open folder."""
        with self._lock:
            try:
                existing = os.stat(final, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                existing = None
            if existing is not None:
                if stat.S_ISDIR(existing.st_mode):
                    raise FileProblem(f"a folder is in the way at {final}")
                other = self._placed.get((existing.st_dev, existing.st_ino))
                if other is not None and other != rel:
                    raise FileProblem(f"collides with {other!r} on this filesystem")
            os.replace(temporary, final, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            placed = os.stat(final, dir_fd=dir_fd, follow_symlinks=False)
            self._placed[(placed.st_dev, placed.st_ino)] = rel


def apply_metadata(path: str | int, metadata: Mapping[str, str]) -> None:
    """Restore permission bits (never setuid/setgid/sticky) and mtime from the metadata,
    to a path or an open file's descriptor."""
    with suppress(KeyError, ValueError):
        os.chmod(path, int(metadata[META_MODE], 8) & 0o777)
    with suppress(KeyError, ValueError):
        mtime_ns = int(metadata[META_MTIME])
        os.utime(path, ns=(mtime_ns, mtime_ns))
