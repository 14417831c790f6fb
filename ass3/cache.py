"""Local state kept between runs, in the state folder: the state cache (what earlier
backups saw of each file, so unchanged files need not be read again: restic's and
git's idea, size, mtime, ctime and inode as recorded means unchanged), and the
markers of runs under way (which tell a run that an earlier one did not end cleanly).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import sqlite3
import sys
import time
import urllib.parse
from contextlib import suppress
from typing import IO, Any

from ass3.model import Entry, LocalFile, RemoteObject, Seen
from ass3.plan import cache_vouches

if sys.platform != "win32":
    import fcntl

log = logging.getLogger("ass3")

RACY_WINDOW_NS = 1_000_000_000


def default_cache_path() -> str:
    """$XDG_CACHE_HOME/ass3/state.sqlite3, else ~/.cache/ass3/state.sqlite3."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ass3", "state.sqlite3")


def cache_scope(endpoint_url: str, bucket: str, prefix: str) -> str:
    """What the state cache and the run markers of one backup are keyed by."""
    return f"{endpoint_url}|{bucket}|{prefix}"


class StateCache:
    """What earlier backups saw of each file (stat identity, MD5, ETag), in local SQLite.

    Keyed by endpoint, bucket and prefix. Missing, stale, corrupt, from another
    machine or shared by two runs at once, it costs speed and never correctness:
    a record only counts through `cache_vouches`, and an unreadable cache is none.
    """

    FLUSH_EVERY = 1000
    _SCHEMA = """
        CREATE TABLE IF NOT EXISTS files (
            scope TEXT NOT NULL, rel TEXT NOT NULL,
            size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
            inode INTEGER NOT NULL, md5 TEXT NOT NULL, etag TEXT NOT NULL,
            PRIMARY KEY (scope, rel)
        ) WITHOUT ROWID"""
    # The digest of the tree (see tree.Tree.digest) the last run record written from
    # here holds, so a run can tell a change of the tree alone without a request.
    _TREE_SCHEMA = """
        CREATE TABLE IF NOT EXISTS trees (
            scope TEXT NOT NULL PRIMARY KEY, digest TEXT NOT NULL
        ) WITHOUT ROWID"""

    def __init__(self, path: str, scope: str, *, read_only: bool = False) -> None:
        self.path = path
        self._scope = scope
        self._read_only = read_only
        self._pending: list[tuple[Any, ...]] = []
        self._started_ns = time.time_ns()
        self._db = self._connect()

    def __enter__(self) -> StateCache:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _connect(self) -> sqlite3.Connection | None:
        if self._read_only:  # a dry run reads an existing cache and creates nothing
            try:
                uri = f"file:{urllib.parse.quote(self.path)}?mode=ro"
                db = sqlite3.connect(uri, uri=True, timeout=30)
                db.execute("SELECT count(*) FROM (SELECT 1 FROM files LIMIT 1)").fetchone()
                return db
            except sqlite3.Error:
                return None
        corrupt_seen = False
        for _ in range(100):
            try:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                return self._open_writable()
            except sqlite3.OperationalError as error:
                if "locked" in str(error):  # another run is setting it up: wait a little
                    time.sleep(0.05)
                    continue
                log.warning(  # read-only, no space, ...
                    "warning: state cache %s unusable (%s); reading files", self.path, error
                )
                return None
            except sqlite3.DatabaseError as error:  # not a database, malformed
                if corrupt_seen:
                    break
                corrupt_seen = True
                log.warning(
                    "warning: state cache %s is corrupt (%s); starting afresh", self.path, error
                )
                for suffix in ("", "-wal", "-shm"):
                    with suppress(FileNotFoundError):
                        os.unlink(self.path + suffix)
            except OSError as error:
                log.warning("warning: no state cache at %s (%s); reading files", self.path, error)
                return None
        return None

    def _open_writable(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            # WAL lets one run read while another writes; switching takes a moment's lock.
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            db.execute(self._SCHEMA)
            db.execute(self._TREE_SCHEMA)
            db.execute("SELECT count(*) FROM (SELECT 1 FROM files LIMIT 1)").fetchone()
        except BaseException:
            db.close()
            raise
        return db

    def _disable(self, error: Exception) -> None:
        log.warning("warning: state cache %s failed (%s); reading files", self.path, error)
        if self._db is not None:
            with suppress(sqlite3.Error):
                self._db.close()
        self._db = None

    def cached_md5(self, local: Entry, remote: Entry) -> str | None:
        """The file's MD5 if it is known to equal its object without reading it."""
        if self._db is None:
            return None
        assert isinstance(local, LocalFile) and isinstance(remote, RemoteObject)
        try:
            row = self._db.execute(
                "SELECT size, mtime_ns, ctime_ns, inode, md5, etag FROM files "
                "WHERE scope = ? AND rel = ?",
                (self._scope, local.rel),
            ).fetchone()
        except sqlite3.Error as error:
            self._disable(error)
            return None
        if row is None:
            return None
        size, mtime_ns, ctime_ns, inode, md5, etag = row
        seen = LocalFile(local.rel, local.path, size, mtime_ns, 0, ctime_ns, inode)
        return md5 if cache_vouches(local, remote, Seen(seen, md5, etag)) else None

    def remember(self, seen: Seen) -> None:
        """Record a file as read; written in batches, and at close."""
        if self._read_only or self._db is None:
            return
        if seen.local.mtime_ns >= self._started_ns - RACY_WINDOW_NS:
            return
        local = seen.local
        row = (local.size, local.mtime_ns, local.ctime_ns, local.inode, seen.md5, seen.etag)
        self._pending.append((self._scope, local.rel, *row))
        if len(self._pending) >= self.FLUSH_EVERY:
            self._flush()

    def _flush(self) -> None:
        if self._db is None or not self._pending:
            return
        try:
            with self._db:  # one transaction: all of the batch or none of it
                self._db.executemany(
                    "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)", self._pending
                )
        except sqlite3.Error as error:
            self._disable(error)
        self._pending.clear()

    def tree_digest(self) -> str | None:
        """The digest of the tree last recorded for this scope, if known."""
        if self._db is None:
            return None
        try:
            row = self._db.execute(
                "SELECT digest FROM trees WHERE scope = ?", (self._scope,)
            ).fetchone()
        except sqlite3.Error:  # a read-only cache of an older version has no such table
            return None
        return None if row is None else str(row[0])

    def remember_tree(self, digest: str) -> None:
        """Note the digest of the tree the bucket's latest run record now holds."""
        if self._read_only or self._db is None:
            return
        try:
            with self._db:
                self._db.execute(
                    "INSERT OR REPLACE INTO trees VALUES (?, ?)", (self._scope, digest)
                )
        except sqlite3.Error as error:
            self._disable(error)

    def close(self) -> None:
        self._flush()
        if self._db is not None:
            self._db.close()
            self._db = None


class RunMarkers:
    """Which backup runs of one scope (endpoint, bucket, prefix) are under way on this
    machine: one small file each in the state folder, beside the state cache.

    A run writes its marker at the start and holds a lock on it (flock) while it runs;
    it removes the marker only when it ends having left no multipart upload behind
    (no exception, no failed big file). A marker whose lock is free at the start of a
    run is a run that was killed, crashed, was interrupted or lost its connection: only
    then does the run list the backup's incomplete uploads (one request) and abort the
    stale ones. So a run after runs that ended cleanly costs no request more, and a
    live run of the same backup (its marker locked) starts no check. A killed run's
    marker is removed only by a check that left nothing to do later (no upload too
    young to abort yet, no abort that failed). Without flock (Windows) every other
    marker counts as a killed run's. Without a writable state folder there are no
    markers and no checks.
    """

    FOLDER = "runs-under-way"

    def __init__(self, folder: str, scope: str, *, enabled: bool = True) -> None:
        self.folder = os.path.join(folder, self.FOLDER)
        self._stem = hashlib.sha256(scope.encode("utf-8")).hexdigest()[:32]
        self._scope = scope
        self._enabled = enabled
        self._own: tuple[str, IO[str]] | None = None
        self._unfinished: list[tuple[str, IO[str]]] = []
        self._clean = False

    @property
    def unfinished(self) -> bool:
        """Whether an earlier run of this backup did not end cleanly."""
        return bool(self._unfinished)

    def __enter__(self) -> RunMarkers:
        if not self._enabled:
            return self
        try:
            os.makedirs(self.folder, exist_ok=True)
            for name in sorted(os.listdir(self.folder)):
                path = os.path.join(self.folder, name)
                if name.startswith(self._stem + "."):
                    handle = _if_abandoned(path)
                    if handle is not None:
                        self._unfinished.append((path, handle))
                elif name.startswith(f"new-{self._stem}."):
                    handle = _if_abandoned(path)
                    if handle is not None:  # killed before it began: nothing to check
                        _remove(path, handle)
            name = f"{self._stem}.{os.getpid()}.{secrets.token_hex(4)}"
            path = os.path.join(self.folder, name)
            # Locked under a name no run looks at, then renamed (the lock goes with the
            # file): a run starting meanwhile never finds this marker unlocked.
            writing = os.path.join(self.folder, f"new-{name}")
            handle = open(writing, "w", encoding="utf-8")
            self._own = writing, handle
            _lock(handle)
            handle.write(f"{self._scope}\n")
            handle.flush()
            os.replace(writing, path)
            self._own = path, handle
        except OSError as error:
            log.debug("no run marker in %s: %s", self.folder, error)
        return self

    def settled(self) -> None:
        """The runs that did not finish left nothing more to clean: forget them."""
        for path, handle in self._unfinished:
            _remove(path, handle)
        self._unfinished = []

    def finished(self, *, uploads_left: bool) -> None:
        """The run got to its end; `uploads_left`: a multipart upload may have stayed."""
        self._clean = not uploads_left

    def __exit__(self, *_: object) -> None:
        for _path, handle in self._unfinished:  # not settled: the next run checks again
            handle.close()
        self._unfinished = []
        if self._own is not None:
            path, handle = self._own
            if self._clean:
                _remove(path, handle)
            else:
                handle.close()
            self._own = None


def _if_abandoned(path: str) -> IO[str] | None:
    """The marker, opened and locked, if no live run holds it; else None."""
    try:
        handle = open(path, encoding="utf-8")  # noqa: SIM115 (kept open, locked)
    except OSError:
        return None
    if _lock(handle):
        return handle
    handle.close()
    return None


def _remove(path: str, handle: IO[str]) -> None:
    handle.close()  # first: Windows cannot remove an open file
    with suppress(OSError):
        os.unlink(path)


def _lock(handle: IO[str]) -> bool:
    """Take the lock on a marker without waiting; False if a live run holds it."""
    if sys.platform == "win32":
        return True
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True
