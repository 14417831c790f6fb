"""Big uploads that can be resumed: what the state cache records of each one while it is
open, and the pure rules that decide whether, and how, a later run finishes it.

A multipart upload this tool starts for a file is recorded (endpoint, bucket and
prefix as the scope, the key, its UploadId, the part size, the file's size, mtime
and inode, the arguments the upload was created with, and the MD5 of each part as
hashed) in a table of the state cache's SQLite file, beside what earlier runs saw of
each file. The record is removed when the upload completes or is aborted. A run
interrupted after some parts were sent leaves it, and the next run that uploads the
same key resumes the upload if the record still describes the file: see
`ass3.resume` for the requests, and docs/resume.md.
"""

from __future__ import annotations

import logging
import socket
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass

log = logging.getLogger("ass3")

# An upload older than this is left to the cleanup after an unclean run, even if the
# state cache says it would be resumed: the lifecycle rule of the buckets the tool
# creates aborts incomplete uploads after 7 days anyway.
RESUME_DAYS = 7


@dataclass(frozen=True)
class PendingUpload:
    """A multipart upload of one file, as recorded when it was created."""

    key: str
    upload_id: str
    part_size: int
    size: int
    mtime_ns: int
    inode: int
    args: str  # the upload's arguments (metadata, storage, checksum), as a canonical string
    part_md5s: tuple[bytes, ...]
    started: float  # seconds since the epoch, this machine's clock


@dataclass(frozen=True)
class ListedPart:
    """One part S3 holds for an upload, as ListParts shows it."""

    number: int
    etag: str
    size: int
    checksums: Mapping[str, str]  # ChecksumCRC32 etc., which CompleteMultipartUpload needs


def part_count(size: int, part_size: int) -> int:
    """How many parts a file of `size` bytes has in parts of `part_size` (at least one)."""
    return max(1, -(-size // part_size))


def part_length(number: int, size: int, part_size: int) -> int:
    """The length of part `number` (from 1) of a file of `size` bytes."""
    return min(part_size, size - (number - 1) * part_size)


def resume_refusal(
    pending: PendingUpload,
    *,
    size: int,
    mtime_ns: int,
    inode: int,
    part_size: int,
    args: str,
    part_md5s: tuple[bytes, ...],
) -> str | None:
    """Why the recorded upload cannot be finished with the file as it is now; None if it
    can. The file must be the one recorded (same size, mtime and inode, the same bytes
    hashed part by part), cut in the same parts, uploaded with the same arguments."""
    if (pending.size, pending.mtime_ns, pending.inode) != (size, mtime_ns, inode):
        return "the file changed since"
    if pending.part_size != part_size:
        return "the part size changed since"
    if pending.args != args:
        return "the upload options or the file's mode changed since"
    if pending.part_md5s != part_md5s:
        return "the file's content changed since"
    return None


def parts_to_send(
    listed: Iterable[ListedPart], part_md5s: tuple[bytes, ...], *, size: int, part_size: int
) -> list[int] | None:
    """The numbers of the parts to upload again: missing, or whose ETag is not the MD5 of
    the same bytes of the file now. None when the listing cannot be of this file cut this
    way (a part number out of range, a part of the wrong length): the upload is then
    aborted and the file sent afresh, never completed from parts that do not match."""
    count = len(part_md5s)
    if count != part_count(size, part_size):
        return None
    good: set[int] = set()
    for part in listed:
        if not 1 <= part.number <= count:
            return None
        if part.size != part_length(part.number, size, part_size):
            return None
        if part.etag.strip('"').lower() == part_md5s[part.number - 1].hex():
            good.add(part.number)
    return [number for number in range(1, count + 1) if number not in good]


def spared_uploads(
    pending: Iterable[PendingUpload], *, now: float, days: int = RESUME_DAYS
) -> set[str]:
    """The UploadIds the cleanup after an unclean run leaves alone: those this machine's
    state cache will resume, unless older than `days`."""
    return {item.upload_id for item in pending if now - item.started < days * 86400}


class UploadJournal:
    """The records of open multipart uploads of one scope, in the state cache's file.

    Used from the worker threads that upload (one SQLite connection, behind a lock).
    Records of another machine (a state folder copied or shared) are never used: each
    row names the host that wrote it. Unusable, the journal is empty and records
    nothing, and big uploads are not kept when a run is interrupted.
    """

    _SCHEMA = """
        CREATE TABLE IF NOT EXISTS uploads (
            scope TEXT NOT NULL, key TEXT NOT NULL, host TEXT NOT NULL,
            upload_id TEXT NOT NULL, part_size INTEGER NOT NULL, size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, args TEXT NOT NULL,
            part_md5s BLOB NOT NULL, started REAL NOT NULL,
            PRIMARY KEY (scope, key)
        ) WITHOUT ROWID"""

    def __init__(self, path: str, scope: str, *, host: str | None = None) -> None:
        self._scope = scope
        self._host = host or socket.gethostname()
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(path, timeout=30, check_same_thread=False)
        except sqlite3.Error as error:
            log.debug("no record of resumable uploads in %s: %s", path, error)
            return
        try:
            db.execute(self._SCHEMA)
            db.commit()
        except sqlite3.Error as error:
            log.debug("no record of resumable uploads in %s: %s", path, error)
            db.close()
            return
        self._db = db

    def __enter__(self) -> UploadJournal:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def usable(self) -> bool:
        return self._db is not None

    def _run(self, sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]] | None:
        with self._lock:
            if self._db is None:
                return None
            try:
                with self._db:
                    return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as error:
                log.warning("warning: state cache failed (%s); big uploads not resumable", error)
                with suppress(sqlite3.Error):
                    self._db.close()
                self._db = None
                return None

    def pending(self) -> list[PendingUpload]:
        """The uploads of this scope this machine recorded and has not finished."""
        rows = self._run(
            "SELECT key, upload_id, part_size, size, mtime_ns, inode, args, part_md5s, started "
            "FROM uploads WHERE scope = ? AND host = ?",
            (self._scope, self._host),
        )
        return [_pending(row) for row in rows or []]

    def find(self, key: str) -> PendingUpload | None:
        """The recorded upload of `key`, if this machine has one."""
        rows = self._run(
            "SELECT key, upload_id, part_size, size, mtime_ns, inode, args, part_md5s, started "
            "FROM uploads WHERE scope = ? AND key = ? AND host = ?",
            (self._scope, key, self._host),
        )
        return _pending(rows[0]) if rows else None

    def save(self, upload: PendingUpload) -> bool:
        """Record an upload just created; whether it was recorded."""
        row = (
            self._scope,
            upload.key,
            self._host,
            upload.upload_id,
            upload.part_size,
            upload.size,
            upload.mtime_ns,
            upload.inode,
            upload.args,
            b"".join(upload.part_md5s),
            upload.started,
        )
        marks = ", ".join("?" * len(row))
        return self._run(f"INSERT OR REPLACE INTO uploads VALUES ({marks})", row) is not None

    def forget(self, key: str, upload_id: str) -> None:
        """The upload completed or was aborted: nothing to resume."""
        self._run(
            "DELETE FROM uploads WHERE scope = ? AND key = ? AND upload_id = ?",
            (self._scope, key, upload_id),
        )

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _pending(row: tuple[object, ...]) -> PendingUpload:
    key, upload_id, part_size, size, mtime_ns, inode, args, md5s, started = row
    assert isinstance(md5s, bytes)
    digests = tuple(md5s[at : at + 16] for at in range(0, len(md5s), 16))
    return PendingUpload(
        str(key),
        str(upload_id),
        int(str(part_size)),
        int(str(size)),
        int(str(mtime_ns)),
        int(str(inode)),
        str(args),
        digests,
        float(str(started)),
    )
