"""Reading a file to back up: the file the scan saw, opened once, read from one descriptor.

Between the scan and the read a file can be replaced: by a symlink to a file outside
DIR, by a FIFO that would block the run forever, by another file renamed over it
(rsync does that), or rewritten in place. `open_scanned` opens without following a
link and without blocking, and checks with fstat that the descriptor is the regular
file the scan saw (device and inode); everything after reads from that descriptor,
so what is hashed and what is sent come from the same file. `unchanged` tells
whether the file changed while it was read.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from typing import BinaryIO

from ass3.model import FileProblem, LocalFile

# O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever.
# It changes nothing for a regular file. O_NOCTTY: a terminal device never becomes ours.
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class FileChanged(FileProblem):
    """The file changed while it was read: what was read is not one state of it."""


def open_scanned(local: LocalFile) -> BinaryIO:
    """Open the file the scan found, refusing anything that replaced it since.

    A symlink is followed only when the scan followed one to this file; either way
    the file opened must be the very inode the scan saw.
    """
    flags = _READ_FLAGS if local.followed else _READ_FLAGS | os.O_NOFOLLOW
    try:
        descriptor = os.open(local.path, flags)
    except OSError as error:
        if error.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
            raise FileProblem("replaced by a symlink since the scan; not followed") from error
        raise
    try:
        st = os.fstat(descriptor)
        if not stat.S_ISREG(st.st_mode):
            raise FileProblem("replaced by something that is not a regular file since the scan")
        if (st.st_dev, st.st_ino) != (local.device, local.inode):
            raise FileProblem("replaced by another file since the scan")
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def file_state(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """What stays the same while nobody writes to a file: size, mtime, ctime, inode and
    device. ctime moves even when a writer puts the old mtime back (`touch -r`)."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def unchanged(fileobj: BinaryIO, before: os.stat_result) -> bool:
    """Whether the open file is as it was when `before` was taken."""
    return file_state(os.fstat(fileobj.fileno())) == file_state(before)


class PartHashingReader:
    """The open file as s3transfer reads it for a multipart upload, hashing each part.

    s3transfer reads a seekable source part after part, in order, into memory; the MD5
    of each part read is what was sent. Compared with the MD5s hashed before the
    upload began, they tell whether the bytes sent are the bytes the object's md5
    metadata describes, before CompleteMultipartUpload makes the object exist.
    """

    def __init__(self, fileobj: BinaryIO, part_size: int) -> None:
        self._file = fileobj
        self._part_size = part_size
        self._offset = 0
        self._parts: list[hashlib._Hash] = []
        self._in_order = True

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        if self._file.tell() - len(data) != self._offset:
            self._in_order = False  # a read out of order: the parts can't be vouched for
        view = memoryview(data)
        while view:
            index, within = divmod(self._offset, self._part_size)
            if index == len(self._parts):
                self._parts.append(hashlib.md5())
            take = min(len(view), self._part_size - within)
            self._parts[index].update(view[:take])
            view = view[take:]
            self._offset += take
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def sent_matches(self, part_md5s: tuple[bytes, ...]) -> bool:
        """Whether the parts read for the upload are exactly the parts hashed before."""
        return self._in_order and tuple(part.digest() for part in self._parts) == part_md5s


class WholeHashingReader:
    """The open file as botocore reads it for one PutObject, hashing what it reads.

    botocore may read a body more than once (to compute a CRC32 header before
    sending, again for a retry), seeking back to the start each time: each reading
    from the start begins a new hash, so the last one is what was sent.
    """

    def __init__(self, fileobj: BinaryIO) -> None:
        self._file = fileobj
        self._restart()

    def _restart(self) -> None:
        self._md5 = hashlib.md5()
        self._offset = 0
        self._in_order = True

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        if self._file.tell() - len(data) != self._offset:
            self._in_order = False
        self._md5.update(data)
        self._offset += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        position = self._file.seek(offset, whence)
        if position == 0:
            self._restart()
        return position

    def tell(self) -> int:
        return self._file.tell()

    def sent_md5(self) -> str | None:
        """The MD5 of the last reading from the start, if it was read in order."""
        return self._md5.hexdigest() if self._in_order else None
