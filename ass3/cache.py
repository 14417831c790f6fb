"""The state cache: what earlier backups saw of each file, so unchanged files need
not be read again (restic's and git's idea: size, mtime, ctime and inode as
recorded means unchanged).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
import urllib.parse
from contextlib import suppress
from typing import Any

from ass3.model import Entry, LocalFile, RemoteObject, Seen
from ass3.plan import cache_vouches

log = logging.getLogger("ass3")

RACY_WINDOW_NS = 1_000_000_000


def default_cache_path() -> str:
    """$XDG_CACHE_HOME/ass3/state.sqlite3, else ~/.cache/ass3/state.sqlite3."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ass3", "state.sqlite3")


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

    def close(self) -> None:
        self._flush()
        if self._db is not None:
            self._db.close()
            self._db = None
