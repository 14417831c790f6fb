"""Reading and writing file content: checksums, the metadata kept with each object,
and the safe placement of restored files (never through a symlink, never two keys
onto one file).
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections.abc import Iterator, Mapping
from contextlib import suppress
from typing import BinaryIO

from ass3.model import META_MD5, META_MODE, META_MTIME, FileDigest, FileProblem, MiB

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


def same_file_state(before: os.stat_result, after: os.stat_result) -> bool:
    """Whether two stats of one file, before and after a read, show it unchanged
    (size and mtime)."""
    return (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns)


def object_metadata(digest: FileDigest, st: os.stat_result) -> dict[str, str]:
    """The metadata stored with each object: the MD5 a restore verifies, mtime and mode."""
    return {
        META_MD5: digest.md5,
        META_MTIME: str(st.st_mtime_ns),
        META_MODE: format(stat.S_IMODE(st.st_mode), "o"),
    }


def prepare_folder(root: str, rel: str) -> str:
    """Create the folders for `rel` below root, refusing to pass through a symlink."""
    folder = root
    for segment in rel.split("/")[:-1]:
        folder = os.path.join(folder, segment)
        try:
            st = os.lstat(folder)
        except FileNotFoundError:
            with suppress(FileExistsError):
                os.mkdir(folder, 0o755)
            st = os.lstat(folder)
        if stat.S_ISLNK(st.st_mode):
            raise FileProblem(f"refused: {folder} is a symlink")
        if not stat.S_ISDIR(st.st_mode):
            raise FileProblem(f"refused: {folder} is a file, not a folder")
    return folder


class Placements:
    """The files this restore has put in place, to catch two keys landing on one path.

    On a filesystem that folds case or Unicode normalisation, `A` and `a` (or NFC
    and NFD twins) are one file: the second would silently overwrite the first.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._placed: dict[tuple[int, int], str] = {}

    def replace(self, temporary: str, final: str, rel: str) -> None:
        """Rename the verified temporary file over `final`, unless that would overwrite a
        folder or a file this restore already placed under another name."""
        with self._lock:
            try:
                existing = os.lstat(final)
            except FileNotFoundError:
                existing = None
            if existing is not None:
                if stat.S_ISDIR(existing.st_mode):
                    raise FileProblem(f"a folder is in the way at {final}")
                other = self._placed.get((existing.st_dev, existing.st_ino))
                if other is not None and other != rel:
                    raise FileProblem(f"collides with {other!r} on this filesystem")
            os.replace(temporary, final)
            placed = os.lstat(final)
            self._placed[(placed.st_dev, placed.st_ino)] = rel


def apply_metadata(path: str, metadata: Mapping[str, str]) -> None:
    """Restore permission bits (never setuid/setgid/sticky) and mtime from the metadata."""
    with suppress(KeyError, ValueError):
        os.chmod(path, int(metadata[META_MODE], 8) & 0o777)
    with suppress(KeyError, ValueError):
        mtime_ns = int(metadata[META_MTIME])
        os.utime(path, ns=(mtime_ns, mtime_ns))
