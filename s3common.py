"""Shared machinery behind ass3Backup.py and ass3Restore.py.

The module reads top to bottom: errors and plain data, pure planning, local file
I/O, S3 I/O, then the two orchestrations (`backup`, `restore`) and the listings.
Everything that decides *what* to transfer is a pure function of plain values;
every S3 request goes through one `Connection`, so it can be counted.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import ipaddress
import itertools
import json
import logging
import os
import re
import secrets
import sqlite3
import stat
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, BinaryIO, Generic, TypeVar

import boto3
import pathspec
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
    ResponseStreamingError,
)
from botocore.parsers import DEFAULT_TIMESTAMP_PARSER
from s3transfer.exceptions import CancelledError, RetriesExceededError, S3DownloadFailedError
from s3transfer.manager import TransferManager
from s3transfer.subscribers import BaseSubscriber
from s3transfer.utils import ChunksizeAdjuster
from tqdm import tqdm

log = logging.getLogger("ass3")
T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

MiB = 1024 * 1024
DEFAULT_WORKERS = 8
MULTIPART_THRESHOLD = 8 * MiB
MULTIPART_CHUNKSIZE = 8 * MiB
READ_CHUNK = 1 * MiB
DEFAULT_MAX_ATTEMPTS = 5
BUCKET_ENV = "ASS3_BUCKET"
MAX_KEY_BYTES = 1024
# Top-level prefix the tool keeps for its own records; never a backup name.
RESERVED_PREFIX = ".ass3"
# Metadata keys S3 stores with each object (S3 lowercases them; values must be ASCII).
META_MD5 = "md5"
META_MTIME = "mtime"
META_MODE = "mode"

# Reasons a file is transferred, shown with --verbose and in failure reports.
NEW = "new"
SIZE_CHANGED = "size changed"
CONTENT_CHANGED = "content changed"
SAME_SIZE = "same size"  # sizes match: the content must be compared before deciding
METADATA_CHANGED = "metadata changed"  # same content, new mode or mtime: object rewritten in S3
UNCHANGED = "unchanged"  # the state cache vouches for it: nothing to read or send
EXTRA = "extra"  # only the target has it: deleted with --delete, else left alone

NO_CREDENTIALS_HELP = (
    "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
    "AWS_PROFILE / --profile for a profile in ~/.aws/credentials (see `aws configure`); "
    "to try the tool without AWS, run a local S3 server and set AWS_ENDPOINT_URL "
    "(README: Try it without AWS)"
)


# What a failed request or transfer can raise: reported per file, never a traceback.
TRANSFER_ERRORS = (
    BotoCoreError,
    ClientError,
    Boto3Error,
    CancelledError,
    RetriesExceededError,
    S3DownloadFailedError,
)


class Ass3Error(Exception):
    """A problem that stops the whole run; `main()` prints it as one line."""

    exit_code = EXIT_USAGE


class FileProblem(Exception):
    """A problem with one file or object: it is reported and the run goes on."""


# ---------------------------------------------------------------------------
# Plain data
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A regular file found on disk. `rel` is its '/'-separated path below the root."""

    rel: str
    path: str
    size: int
    mtime_ns: int
    mode: int
    ctime_ns: int = 0
    inode: int = 0

    @classmethod
    def from_stat(cls, rel: str, path: str, st: os.stat_result) -> LocalFile:
        return cls(
            rel,
            path,
            st.st_size,
            st.st_mtime_ns,
            stat.S_IMODE(st.st_mode),
            st.st_ctime_ns,
            st.st_ino,
        )


@dataclass(frozen=True, slots=True)
class RemoteObject:
    """One object from a listing. `rel` is its key with the backup prefix removed."""

    rel: str
    key: str
    size: int
    etag: str
    last_modified: datetime
    # Set when a run record names the exact version and its MD5 (point-in-time restore).
    version_id: str | None = None
    md5: str | None = None

    def pin(self) -> dict[str, str]:
        """Request arguments that fetch exactly this object: its version, else its ETag."""
        if self.version_id:
            return {"VersionId": self.version_id}
        return {"IfMatch": f'"{self.etag}"'}


Entry = LocalFile | RemoteObject
Pair = tuple[str, Entry | None, Entry | None]


@dataclass(frozen=True, slots=True)
class Step:
    """One planned transfer from `source` to `target` (None when the target lacks it)."""

    rel: str
    source: LocalFile | RemoteObject | None
    target: LocalFile | RemoteObject | None
    reason: str
    known_md5: str | None = None  # for UNCHANGED: the MD5 the state cache recorded


@dataclass(frozen=True)
class FileDigest:
    """MD5 of a whole file, plus the MD5 of each multipart part when it has parts."""

    md5: str
    part_md5s: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Seen:
    """A file as it was read, with its MD5 and the ETag its object has: a cache record."""

    local: LocalFile
    md5: str
    etag: str


@dataclass
class Summary:
    """What one run did, for the closing line and the exit code."""

    action: str
    transferred: int = 0
    transferred_bytes: int = 0
    unchanged: int = 0
    skipped: int = 0
    excluded: int = 0
    deleted: int = 0
    metadata_updated: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)
    read_bytes: int = 0
    run_id: str | None = None  # the run record this run wrote
    method: str = ""  # how a restore chose its versions, said in the output
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return EXIT_FAILURES if self.failures else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        """The --json document (its schema is in the README)."""
        return {
            "action": self.action,
            "files": self.transferred,
            "bytes": self.transferred_bytes,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "excluded": self.excluded,
            "deleted": self.deleted,
            "metadata_updated": self.metadata_updated,
            "failed": len(self.failures),
            "failures": [{"path": path, "reason": reason} for path, reason in self.failures],
            "read_bytes": self.read_bytes,
            "requests": dict(sorted(self.requests.items())),
            "seconds": round(self.seconds, 3),
            "run_id": self.run_id,
            "method": self.method or None,
            "exit_code": self.exit_code,
        }

    def line(self) -> str:
        requests = sum(self.requests.values())
        return (
            f"{self.action} {plural(self.transferred, 'file')} "
            f"({human_bytes(self.transferred_bytes)}), "
            f"unchanged {self.unchanged}, skipped {self.skipped}, "
            + (f"excluded {self.excluded}, " if self.excluded else "")
            + (f"metadata updated {self.metadata_updated}, " if self.metadata_updated else "")
            + (f"deleted {self.deleted}, " if self.deleted else "")
            + f"failed {len(self.failures)} "
            f"in {self.seconds:.1f}s ({requests} requests, {human_bytes(self.read_bytes)} read)"
        )


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------
# Pure planning and validation
# ---------------------------------------------------------------------------


def key_order(rel: str) -> bytes:
    """S3 lists keys in the byte order of their UTF-8 encoding; so do the walks here."""
    return rel.encode("utf-8", "surrogateescape")


def merge_by_rel(left: Iterable[Entry], right: Iterable[Entry]) -> Iterator[Pair]:
    """Pair up two streams sorted in key order: (rel, left entry or None, right or None).

    Streams keep memory flat however many files there are (aws-cli's comparator
    does the same). A stream out of order would make a file look missing, so it
    is an error rather than a guess.
    """
    left_items, right_items = _in_key_order(left), _in_key_order(right)
    a, b = next(left_items, None), next(right_items, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            yield a[1].rel, a[1], None
            a = next(left_items, None)
        elif a is None or b[0] < a[0]:
            yield b[1].rel, None, b[1]
            b = next(right_items, None)
        else:
            yield a[1].rel, a[1], b[1]
            a, b = next(left_items, None), next(right_items, None)


def _in_key_order(entries: Iterable[Entry]) -> Iterator[tuple[bytes, Entry]]:
    previous = None
    for entry in entries:
        order = key_order(entry.rel)
        if previous is not None and order <= previous:
            raise Ass3Error(
                f"entries out of key order ({entry.rel!r} after {previous.decode()!r}): "
                "this S3-compatible store does not list keys in UTF-8 byte order"
            )
        previous = order
        yield order, entry


def plan_transfers(
    sources: Iterable[Entry],
    targets: Iterable[Entry],
    *,
    known_unchanged: Callable[[Entry, Entry], str | None] | None = None,
) -> Iterator[Step]:
    """Decide what to copy from sources to targets, from names and sizes alone.

    Both are streams in key order. Used both ways: a backup plans local files onto
    the listing, a restore plans the listing onto local files. SAME_SIZE steps still
    need their content compared (`etag_matches`) unless `known_unchanged` (the state
    cache) vouches for them with an MD5: those come out as UNCHANGED and need no
    work at all. What only the targets hold comes out as EXTRA.
    """
    for rel, source, target in merge_by_rel(sources, targets):
        known_md5 = None
        if source is None:
            reason = EXTRA
        elif target is None:
            reason = NEW
        elif target.size != source.size:
            reason = SIZE_CHANGED
        elif known_unchanged is not None and (known_md5 := known_unchanged(source, target)):
            reason = UNCHANGED
        else:
            reason = SAME_SIZE
        yield Step(rel, source, target, reason, known_md5)


def cache_vouches(local: LocalFile, remote: RemoteObject, record: Seen | None) -> bool:
    """Whether a cache record proves the file equals its object without reading it.

    Like restic's change check: size, mtime, ctime and inode all as recorded. The
    object's ETag must also be the one recorded, so an object rewritten behind the
    tool's back (or a cache from another bucket or machine) is never trusted.
    """
    if record is None:
        return False
    seen = record.local
    return (
        (seen.size, seen.mtime_ns, seen.ctime_ns, seen.inode)
        == (local.size, local.mtime_ns, local.ctime_ns, local.inode)
        and record.etag == remote.etag
        and remote.size == local.size
    )


_PLAIN_MD5 = re.compile(r"^[0-9a-f]{32}$")
_MULTIPART_ETAG = re.compile(r"^[0-9a-f]{32}-(\d+)$")


def is_plain_md5(etag: str) -> bool:
    return bool(_PLAIN_MD5.match(etag))


def multipart_etag(part_md5s: Iterable[bytes]) -> str:
    """The ETag S3 gives a multipart upload: MD5 of the parts' binary MD5s, then -count."""
    parts = list(part_md5s)
    return f"{hashlib.md5(b''.join(parts)).hexdigest()}-{len(parts)}"


def etag_matches(etag: str, digest: FileDigest) -> bool | None:
    """Whether a listed ETag proves the content equals `digest`.

    True or False when the ETag can be compared; None when it cannot (a multipart
    upload with another part size, or an ETag that is not an MD5, as with SSE-KMS).
    """
    if is_plain_md5(etag):
        return etag == digest.md5
    multipart = _MULTIPART_ETAG.match(etag)
    if multipart and digest.part_md5s and int(multipart.group(1)) == len(digest.part_md5s):
        return etag == multipart_etag(digest.part_md5s) or None
    return None


def part_size_for(size: int, *, threshold: int, chunksize: int) -> int | None:
    """The part size boto3 uses to upload a file of `size` bytes; None if single-part."""
    if size < threshold:
        return None
    return ChunksizeAdjuster().adjust_chunksize(chunksize, size)


_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_BUCKET_BAD_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_BAD_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def validate_bucket_name(name: str) -> str:
    """Apply S3's general-purpose bucket naming rules before any request is made."""
    problem = None
    if not _BUCKET_NAME.match(name):
        problem = (
            "3-63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter or digit"
        )
    elif ".." in name or ".-" in name or "-." in name:
        problem = "no '..', '.-' or '-.'"
    elif name.startswith(_BUCKET_BAD_PREFIXES) or name.endswith(_BUCKET_BAD_SUFFIXES):
        problem = "a prefix or suffix that S3 reserves"
    else:
        try:
            ipaddress.ip_address(name)
            problem = "not formatted as an IP address"
        except ValueError:
            pass
    if problem:
        raise Ass3Error(f"invalid bucket name {name!r}: a bucket name needs {problem}")
    return name


_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def unsafe_key_reason(rel: str) -> str | None:
    """Why a key (relative to the backup prefix) must not become a local path, or None.

    A key is plain text chosen by whoever wrote the bucket; only keys made of
    ordinary path segments are turned into files below the destination.
    """
    if not rel:
        return "empty name"
    if rel.startswith("/"):
        return "absolute path"
    if "\\" in rel:
        return "backslash in name"
    if _CONTROL_CHARS.search(rel):
        return "control character in name"
    for segment in rel.split("/"):
        if segment in ("", ".", ".."):
            return f"path segment {segment!r}"
        if len(segment.encode("utf-8", "surrogatepass")) > 255:
            return "path segment longer than 255 bytes"
    return None


def normalize_prefix(prefix: str) -> str:
    """A backup name: one safe path segment (the top folder in the bucket), not the
    reserved one. Nested names would overlap: backup `a` would list, restore and
    delete the files of backup `a/b`."""
    cleaned = prefix.strip("/")
    reason = unsafe_key_reason(cleaned)
    if reason:
        raise Ass3Error(f"invalid backup name {prefix!r}: {reason}")
    if "/" in cleaned:
        raise Ass3Error(
            f"invalid backup name {prefix!r}: use one name without '/', "
            f"e.g. {cleaned.replace('/', '-')!r}"
        )
    if cleaned == RESERVED_PREFIX:
        raise Ass3Error(f"invalid backup name {prefix!r}: {RESERVED_PREFIX} is reserved")
    return cleaned


def default_prefix(directory: str) -> str:
    """The backup name for DIR: its basename (`/data/photos/` -> `photos`)."""
    name = os.path.basename(os.path.abspath(directory))
    if not name:
        raise Ass3Error(f"cannot name a backup of {directory!r}; pass --prefix NAME")
    return normalize_prefix(name)


# ---------------------------------------------------------------------------
# Local files
# ---------------------------------------------------------------------------


@dataclass
class ScanReport:
    """What a walk skipped on purpose, what it left out by filter, what it could not read
    (paths relative to the root, as in every other report of the run)."""

    skipped: list[tuple[str, str]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    excluded: int = 0
    unreadable: bool = False  # a folder or file could not be read: deletions are unsafe


IGNORE_FILE = ".ass3ignore"


class Filters:
    """--exclude / --include patterns and .ass3ignore, with gitignore's rules (pathspec).

    Patterns match the path relative to DIR with '/' separators: `*.tmp` anywhere,
    `/top.txt` only at the top, `node_modules/` folders only, `**/.cache/` at any
    depth. Later rules win: .ass3ignore first, then the options in the order given;
    an --include is a `!pattern`. As in git, nothing inside an excluded folder can be
    included again, because an excluded folder is never walked.
    """

    def __init__(self, lines: Iterable[str]) -> None:
        self.lines = [line for line in lines if line.strip()]
        try:
            self._spec = pathspec.GitIgnoreSpec.from_lines(self.lines) if self.lines else None
        except ValueError as error:  # e.g. a lone "!"
            raise Ass3Error(f"invalid filter pattern: {error}") from error

    @classmethod
    def for_backup(cls, root: str, rules: Iterable[tuple[str, str]]) -> Filters:
        """The rules of DIR/.ass3ignore (if any), then ("exclude" | "include", pattern)s."""
        lines: list[str] = []
        try:
            with open(os.path.join(root, IGNORE_FILE), encoding="utf-8") as ignore:
                lines.extend(line.rstrip("\n") for line in ignore)
        except FileNotFoundError:
            pass
        except (OSError, UnicodeDecodeError) as error:
            raise Ass3Error(f"cannot read {os.path.join(root, IGNORE_FILE)}: {error}") from error
        for kind, pattern in rules:
            lines.append(pattern if kind == "exclude" else "!" + pattern)
        return cls(lines)

    def excludes(self, rel: str, *, folder: bool = False) -> bool:
        """Whether this file (or folder) is left out, judged on its own path."""
        if self._spec is None:
            return False
        return self._spec.match_file(rel + "/" if folder else rel)

    def excludes_path(self, rel: str) -> bool:
        """Whether a file is left out, by itself or because a folder above it is."""
        if self._spec is None:
            return False
        parts = rel.split("/")
        folders = ("/".join(parts[:depth]) for depth in range(1, len(parts)))
        return any(self.excludes(folder, folder=True) for folder in folders) or self.excludes(rel)


def check_directory(directory: str) -> str:
    """The absolute path of DIR, or a clear error if it cannot be backed up."""
    path = os.path.abspath(directory)
    if not os.path.exists(path):
        raise Ass3Error(f"{directory}: no such directory")
    if not os.path.isdir(path):
        raise Ass3Error(f"{directory}: not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise Ass3Error(f"{directory}: permission denied")
    return path


def scan_tree(
    root: str,
    report: ScanReport,
    *,
    filters: Filters | None = None,
    follow_symlinks: bool = False,
) -> Iterator[LocalFile]:
    """Walk `root` like os.walk, yielding regular files in S3 key order.

    Each folder's entries are sorted as their keys will sort (a folder `d` as `d/`),
    so the walk merges with a listing without holding either in memory. Filtered
    folders are not entered. Symlinks are skipped unless `follow_symlinks`, which
    backs up what they point to and refuses a link back to a folder above it (a
    loop). Special files are skipped; unreadable folders, names that are not valid
    UTF-8 (S3 keys must be) and names a restore would refuse (control characters,
    backslashes) are problems, reported without stopping.
    """
    top = os.stat(root)
    walker = _Walker(report, filters, follow_symlinks)
    stack = [(iter(walker.entries(root, "")), frozenset({(top.st_dev, top.st_ino)}))]
    while stack:
        entries, ancestors = stack[-1]
        item = next(entries, None)
        if item is None:
            stack.pop()
            continue
        entry, rel, st = item
        if stat.S_ISDIR(st.st_mode):
            identity = (st.st_dev, st.st_ino)
            if identity in ancestors:
                report.skipped.append((rel, "symlink loop"))
                continue
            stack.append((iter(walker.entries(entry.path, rel + "/")), ancestors | {identity}))
            continue
        local = walker.regular_file(entry, rel, st)
        if local is not None:
            yield local


@dataclass
class _Walker:
    """The per-folder work of `scan_tree`: list, filter, stat, sort, classify."""

    report: ScanReport
    filters: Filters | None
    follow_symlinks: bool

    def entries(
        self, folder: str, rel_prefix: str
    ) -> list[tuple[os.DirEntry[str], str, os.stat_result]]:
        try:
            with os.scandir(folder) as listing:
                found = list(listing)
        except OSError as error:
            self.report.unreadable = True
            self.report.problems.append(
                (rel_prefix.rstrip("/") or ".", error.strerror or str(error))
            )
            return []
        items = []
        for entry in found:
            rel = rel_prefix + entry.name
            try:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode) and self.follow_symlinks:
                    st = entry.stat(follow_symlinks=True)
            except OSError as error:
                self.report.unreadable = True
                self.report.problems.append((rel, error.strerror or str(error)))
                continue
            is_folder = stat.S_ISDIR(st.st_mode)
            if self.filters is not None and self.filters.excludes(rel, folder=is_folder):
                self.report.excluded += 1
                continue
            items.append((entry, rel, st))
        items.sort(
            key=lambda item: key_order(item[1] + "/" if stat.S_ISDIR(item[2].st_mode) else item[1])
        )
        return items

    def regular_file(
        self, entry: os.DirEntry[str], rel: str, st: os.stat_result
    ) -> LocalFile | None:
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:
            self.report.problems.append((rel, "name is not valid UTF-8"))
            return None
        unsafe = unsafe_key_reason(rel)
        if unsafe:
            # Restore refuses such keys, so uploading would be a backup that cannot return.
            self.report.problems.append((rel, f"cannot be restored safely: {unsafe}"))
            return None
        if stat.S_ISLNK(st.st_mode):
            self.report.skipped.append((rel, "symlink"))
        elif not stat.S_ISREG(st.st_mode):
            self.report.skipped.append((rel, "special file"))
        else:
            return LocalFile.from_stat(rel, entry.path, st)
        return None


def read_chunks(fileobj: Any, limit: int | None = None) -> Iterator[bytes]:
    """Yield a file's bytes in READ_CHUNK pieces (never the whole file in memory)."""
    remaining = limit
    while remaining is None or remaining > 0:
        chunk = fileobj.read(READ_CHUNK if remaining is None else min(READ_CHUNK, remaining))
        if not chunk:
            return
        if remaining is not None:
            remaining -= len(chunk)
        yield chunk


def local_checksum(fileobj: Any, part_size: int | None) -> FileDigest:
    """MD5 of a file, and of each `part_size` part when it was uploaded in parts."""
    whole = hashlib.md5()
    if part_size is None:
        for chunk in read_chunks(fileobj):
            whole.update(chunk)
        return FileDigest(whole.hexdigest())
    parts = []
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


def _same_file_state(before: os.stat_result, after: os.stat_result) -> bool:
    return (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns)


# ---------------------------------------------------------------------------
# State cache
# ---------------------------------------------------------------------------

# A file modified this close to the run's start may change again within one
# timestamp tick without its mtime moving (git's "racily clean" entries): not cached.
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


# ---------------------------------------------------------------------------
# S3 connection, errors and bucket
# ---------------------------------------------------------------------------


def describe_client_error(
    error: Exception, action: str, bucket: str | None = None, prefix: str | None = None
) -> str:
    """One line a user can act on, for an error from botocore or boto3.

    It names the request and the bucket (and backup) it was for; a ClientError
    names its own operation, which is more precise than `action`.
    """
    where = f" on s3://{bucket}/{prefix + '/' if prefix else ''}" if bucket else ""
    if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
        return NO_CREDENTIALS_HELP
    if isinstance(error, EndpointConnectionError):
        url = error.kwargs.get("endpoint_url")
        return f"cannot reach the S3 endpoint {url}: is the URL right and the server up?"
    if isinstance(error, ClientError):
        action = error.operation_name or action
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", "")
        headers = error.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        region = headers.get("x-amz-bucket-region") or error.response.get("Error", {}).get("Region")
        if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled"):
            return (
                f"access denied: {action}{where} is not allowed for these credentials "
                f"(the IAM policy needs s3:{_iam_action(action)})"
            )
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidClientTokenId"):
            return f"the credentials were rejected ({code}): check the access key and secret"
        if code in ("NoSuchBucket", "404") and bucket:
            return f"bucket s3://{bucket} does not exist"
        if code in ("PermanentRedirect", "301", "AuthorizationHeaderMalformed") or (
            code == "IllegalLocationConstraintException"
        ):
            there = f"region {region}: pass --region {region}" if region else "another region"
            return f"bucket s3://{bucket} is in {there}"
        return f"{action}{where} failed: {code} {message}".rstrip()
    return f"{action}{where} failed: {error}"


def _iam_action(operation: str) -> str:
    """The IAM action behind an S3 API call, for the hint in an access-denied message."""
    return {
        "ListObjectsV2": "ListBucket",
        "ListObjectVersions": "ListBucketVersions",
        "HeadObject": "GetObject",
        "HeadBucket": "ListBucket",
        "ListBuckets": "ListAllMyBuckets",
        "CreateMultipartUpload": "PutObject",
        "UploadPart": "PutObject",
        "CompleteMultipartUpload": "PutObject",
        "DeleteObjects": "DeleteObject",
    }.get(operation, operation)


@contextmanager
def fatal_errors(
    action: str, bucket: str | None = None, prefix: str | None = None
) -> Iterator[None]:
    """Turn botocore errors from a request the run cannot do without into Ass3Error."""
    try:
        yield
    except (BotoCoreError, ClientError, Boto3Error) as error:
        raise Ass3Error(describe_client_error(error, action, bucket, prefix)) from error


def _error_code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def _parse_timestamp(value: str) -> datetime:
    """Listings carry a timestamp per object, and botocore's default parser (dateutil)
    costs more than the rest of a no-change run: ISO 8601 first, the default otherwise."""
    try:
        return datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return DEFAULT_TIMESTAMP_PARSER(value)


def _send_small_bodies_at_once(request: Any, **_: Any) -> None:
    """Drop botocore's `Expect: 100-continue` from PutObject (only files under the
    multipart threshold use it): waiting for the server's go-ahead costs a round
    trip per small file, and resending a small body on a rare rejection costs little.
    Content-MD5 still makes S3 check every body."""
    if "Expect" in request.headers:
        del request.headers["Expect"]


ARCHIVE_CLASSES = ("GLACIER", "DEEP_ARCHIVE")
STORAGE_CLASSES = (
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "REDUCED_REDUNDANCY",
)


@dataclass(frozen=True)
class StorageOptions:
    """How new objects are stored: storage class and server-side encryption."""

    storage_class: str | None = None
    sse: str | None = None
    sse_kms_key_id: str | None = None

    def upload_args(self) -> dict[str, str]:
        args = {}
        if self.storage_class:
            args["StorageClass"] = self.storage_class
        if self.sse:
            args["ServerSideEncryption"] = self.sse
        if self.sse_kms_key_id:
            args["SSEKMSKeyId"] = self.sse_kms_key_id
        return args

    @property
    def etag_is_md5(self) -> bool:
        """SSE-KMS objects have ETags that are not the MD5 of their bytes."""
        return self.sse != "aws:kms"


class Connection:
    """One boto3 session and S3 client, shared by all worker threads, with a request count."""

    def __init__(
        self,
        *,
        profile: str | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        workers: int = DEFAULT_WORKERS,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        multipart_chunksize: int = MULTIPART_CHUNKSIZE,
        storage: StorageOptions | None = None,
        path_style: bool = False,
        crc32: bool = True,
    ) -> None:
        try:
            self.session = boto3.Session(profile_name=profile, region_name=region)
        except ProfileNotFound as error:
            raise Ass3Error(f"AWS profile {profile!r} not found in ~/.aws/config") from error
        if self.session.get_credentials() is None:
            raise Ass3Error(NO_CREDENTIALS_HELP)
        self.session._session.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=_parse_timestamp
        )
        self.region = self.session.region_name or "us-east-1"
        self.endpoint_url = endpoint_url
        self.workers = workers
        self.multipart_threshold = multipart_threshold
        self.multipart_chunksize = multipart_chunksize
        self.storage = storage or StorageOptions()
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._completed: dict[str, tuple[str | None, str | None]] = {}
        max_attempts = self.session._session.get_config_variable("max_attempts")
        self.config = Config(
            region_name=self.region,
            # Workers send small files themselves; big files' parts use as many more.
            max_pool_connections=workers * 2,
            retries={
                "mode": "standard",
                "total_max_attempts": max_attempts or DEFAULT_MAX_ATTEMPTS,
            },
            user_agent_extra="ass3",
            s3={"addressing_style": "path"} if path_style else None,
            # Some S3-compatible stores reject boto3's default CRC32 checksums or store
            # them into the body; the tool's own MD5 checks do not depend on them.
            request_checksum_calculation="when_supported" if crc32 else "when_required",
            response_checksum_validation="when_supported" if crc32 else "when_required",
        )
        try:
            self.client = self._client("s3")
        except (ValueError, BotoCoreError) as error:  # a malformed endpoint URL or region
            raise Ass3Error(f"cannot set up the S3 client: {error}") from error
        self.transfer_config = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=workers,
            preferred_transfer_client="classic",
        )
        self._account_id: str | None = None
        self._account_looked_up = False

    def _client(self, service: str) -> Any:
        client = self.session.client(service, endpoint_url=self.endpoint_url, config=self.config)
        client.meta.events.register("before-send", self._count)
        client.meta.events.register("before-sign.s3.PutObject", _send_small_bodies_at_once)
        client.meta.events.register(
            "after-call.s3.CompleteMultipartUpload", self._note_completed_upload
        )
        return client

    def _note_completed_upload(self, parsed: Mapping[str, Any], **_: Any) -> None:
        """s3transfer drops CompleteMultipartUpload's answer; the run record needs it."""
        if "Key" in parsed:
            with self._lock:
                self._completed[parsed["Key"]] = (
                    parsed.get("ETag", "").strip('"') or None,
                    parsed.get("VersionId"),
                )

    def completed_upload(self, key: str) -> tuple[str | None, str | None]:
        """ETag and VersionId of the multipart upload of `key` that just completed."""
        with self._lock:
            return self._completed.pop(key, (None, None))

    def _count(self, event_name: str, **_: Any) -> None:
        with self._lock:
            self.requests[event_name.rsplit(".", 1)[-1]] += 1

    def account_id(self) -> str | None:
        """The caller's account from STS, or None where the endpoint has no STS."""
        if not self._account_looked_up:
            self._account_looked_up = True
            try:
                self._account_id = self._client("sts").get_caller_identity()["Account"]
            except ClientError as error:
                log.debug("no account id from STS: %s", error)
            except (NoCredentialsError, PartialCredentialsError, EndpointConnectionError) as error:
                raise Ass3Error(describe_client_error(error, "GetCallerIdentity")) from error
            except BotoCoreError as error:
                log.debug("no account id from STS: %s", error)
        return self._account_id

    def owner_args(self) -> dict[str, str]:
        """ExpectedBucketOwner for every request, so a bucket of another account is refused."""
        account = self.account_id()
        return {"ExpectedBucketOwner": account} if account else {}

    def part_size_for(self, size: int) -> int | None:
        return part_size_for(
            size, threshold=self.multipart_threshold, chunksize=self.multipart_chunksize
        )


def resolve_bucket(conn: Connection, bucket: str | None) -> str:
    """--bucket, else $ASS3_BUCKET, else `ass3backup-<account id>`."""
    name = bucket or os.environ.get(BUCKET_ENV)
    if not name:
        account = conn.account_id()
        if not account:
            raise Ass3Error(
                "cannot find the account id (this endpoint has no STS): "
                f"pass --bucket NAME or set {BUCKET_ENV}"
            )
        name = f"ass3backup-{account}"
    return validate_bucket_name(name)


def _owns_bucket(conn: Connection, bucket: str) -> bool | None:
    """Whether the bucket exists and is ours; None if we may not list our buckets."""
    try:
        with fatal_errors("ListBuckets"):
            response = conn.client.list_buckets(Prefix=bucket)
    except Ass3Error as error:
        cause = error.__cause__
        if isinstance(cause, ClientError) and _error_code(cause) in ("AccessDenied", "403"):
            return None
        raise
    return any(entry["Name"] == bucket for entry in response.get("Buckets", []))


def ensure_bucket(conn: Connection, bucket: str) -> bool:
    """Create the bucket unless this account already owns it; True if it was created.

    ListBuckets tells whether the account owns it in one request (where that is
    denied, HeadBucket with ExpectedBucketOwner does). A name taken by another
    account is an error: nothing must be uploaded into someone else's bucket.
    """
    owned = _owns_bucket(conn, bucket)
    if owned is None:
        owned = _bucket_exists(conn, bucket)
    if owned:
        return False
    arguments: dict[str, Any] = {"Bucket": bucket}
    if conn.region != "us-east-1":
        arguments["CreateBucketConfiguration"] = {"LocationConstraint": conn.region}
    try:
        conn.client.create_bucket(**arguments)
    except ClientError as error:
        code = _error_code(error)
        if code == "BucketAlreadyOwnedByYou":
            return False
        if code == "BucketAlreadyExists":
            raise Ass3Error(
                f"bucket name {bucket!r} is taken by another AWS account; "
                "choose another with --bucket"
            ) from error
        raise Ass3Error(describe_client_error(error, "CreateBucket", bucket)) from error
    except BotoCoreError as error:
        raise Ass3Error(describe_client_error(error, "CreateBucket", bucket)) from error
    _configure_new_bucket(conn, bucket)
    return True


def _configure_new_bucket(conn: Connection, bucket: str) -> None:
    """Safe defaults for a bucket the tool made; a store lacking a call only gets a warning."""
    owner = conn.owner_args()
    settings: list[tuple[str, Callable[..., Any], dict[str, Any]]] = [
        (
            "block public access",
            conn.client.put_public_access_block,
            {
                "PublicAccessBlockConfiguration": {
                    "BlockPublicAcls": True,
                    "IgnorePublicAcls": True,
                    "BlockPublicPolicy": True,
                    "RestrictPublicBuckets": True,
                }
            },
        ),
        (
            "versioning",
            conn.client.put_bucket_versioning,
            {"VersioningConfiguration": {"Status": "Enabled"}},
        ),
        (
            "default encryption",
            conn.client.put_bucket_encryption,
            {
                "ServerSideEncryptionConfiguration": {
                    "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
                }
            },
        ),
        (
            "abort incomplete multipart uploads after 7 days",
            conn.client.put_bucket_lifecycle_configuration,
            {
                "LifecycleConfiguration": {
                    "Rules": [
                        {
                            "ID": "ass3-abort-incomplete-multipart",
                            "Status": "Enabled",
                            "Filter": {"Prefix": ""},
                            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
                        }
                    ]
                }
            },
        ),
    ]
    for what, call, arguments in settings:
        try:
            call(Bucket=bucket, **arguments, **owner)
        except (ClientError, BotoCoreError) as error:
            log.warning("warning: could not set %s on s3://%s: %s", what, bucket, error)


def list_remote(
    conn: Connection, bucket: str, prefix: str, *, missing_ok: bool = False
) -> Iterator[RemoteObject]:
    """Every object under PREFIX/, streamed from one paginated ListObjectsV2 pass.

    One request per 1000 keys, in key order; never a HeadObject per file. With
    `missing_ok` a bucket that does not exist yet lists as empty (a dry run).
    """
    paginator = conn.client.get_paginator("list_objects_v2")
    if missing_ok and not _bucket_exists(conn, bucket):
        return
    with fatal_errors("ListObjectsV2", bucket, prefix):
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix + "/", **conn.owner_args()):
            for item in page.get("Contents", []):
                yield RemoteObject(
                    item["Key"][len(prefix) + 1 :],
                    item["Key"],
                    item["Size"],
                    item["ETag"].strip('"'),
                    item["LastModified"],
                )


def _bucket_exists(conn: Connection, bucket: str) -> bool:
    """HeadBucket with ExpectedBucketOwner: a bucket this account may use, or none."""
    try:
        conn.client.head_bucket(Bucket=bucket, **conn.owner_args())
    except ClientError as error:
        if _error_code(error) in ("404", "NoSuchBucket"):
            return False
        raise Ass3Error(
            f"bucket s3://{bucket} exists but is not accessible: it may belong to another "
            "account; choose another name with --bucket"
        ) from error
    except BotoCoreError as error:
        raise Ass3Error(describe_client_error(error, "HeadBucket", bucket)) from error
    return True


def s3_checksum(conn: Connection, bucket: str, remote: RemoteObject) -> str | None:
    """The MD5 the tool stored as metadata on this object (one HeadObject): on the
    recorded version when there is one, else on the current object."""
    version = {"VersionId": remote.version_id} if remote.version_id else {}
    head = conn.client.head_object(Bucket=bucket, Key=remote.key, **version, **conn.owner_args())
    return head.get("Metadata", {}).get(META_MD5)


def content_matches(
    conn: Connection, bucket: str, remote: RemoteObject, digest: FileDigest
) -> bool:
    """Compare with the recorded MD5, else by ETag when comparable, else the md5 metadata."""
    if remote.md5:
        return remote.md5 == digest.md5
    verdict = etag_matches(remote.etag, digest) if conn.storage.etag_is_md5 else None
    if verdict is None:
        verdict = s3_checksum(conn, bucket, remote) == digest.md5
    return verdict


# ---------------------------------------------------------------------------
# Backup
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What happened to one planned step.

    `seen` is what the state cache should remember; `entry` is the file's line in
    the run record (its object's version is filled in when the record is written).
    """

    rel: str
    transferred: bool
    size: int = 0
    reason: str = ""
    read_bytes: int = 0
    seen: Seen | None = None
    entry: RecordEntry | None = None
    metadata_updated: bool = False


def _metadata(digest: FileDigest, st: os.stat_result) -> dict[str, str]:
    return {
        META_MD5: digest.md5,
        META_MTIME: str(st.st_mtime_ns),
        META_MODE: format(stat.S_IMODE(st.st_mode), "o"),
    }


def _upload_once(
    conn: Connection, transfers: TransferManager, bucket: str, key: str, rel: str, path: str
) -> tuple[Seen, str | None]:
    """Upload the file as it is now: what was read, and the new object's version.

    FileProblem if the file changed while being read.
    """
    with open(path, "rb") as fileobj:
        before = os.fstat(fileobj.fileno())
        snapshot = LocalFile.from_stat(rel, path, before)
        part_size = conn.part_size_for(before.st_size)
        if part_size is None:
            # Small file: the bytes hashed are the bytes sent, and S3 checks Content-MD5.
            data = fileobj.read()
            digest = FileDigest(hashlib.md5(data).hexdigest())
            after = os.fstat(fileobj.fileno())
            if not _same_file_state(before, after) or len(data) != before.st_size:
                raise FileProblem("changed while being read")
            response = conn.client.put_object(
                Bucket=bucket,
                Key=key,
                Body=data,
                ContentMD5=base64.b64encode(bytes.fromhex(digest.md5)).decode(),
                Metadata=_metadata(digest, before),
                **conn.storage.upload_args(),
                **conn.owner_args(),
            )
            seen = Seen(snapshot, digest.md5, response["ETag"].strip('"'))
            return seen, response.get("VersionId")
        digest = local_checksum(fileobj, part_size)
    extra_args = {
        "Metadata": _metadata(digest, before),
        **conn.storage.upload_args(),
        **conn.owner_args(),
    }
    transfers.upload(path, bucket, key, extra_args=extra_args).result()
    etag, version_id = conn.completed_upload(key)
    if not _same_file_state(before, os.stat(path)):
        # The object may not match the md5 recorded with it: take that version back out
        # (only it, so the previous good version is current again).
        pinned = {"VersionId": version_id} if version_id else {}
        conn.client.delete_object(Bucket=bucket, Key=key, **pinned, **conn.owner_args())
        raise FileProblem("changed while being uploaded")
    return Seen(snapshot, digest.md5, etag or multipart_etag(digest.part_md5s)), version_id


def _matched(
    conn: Connection,
    bucket: str,
    remote: RemoteObject,
    snapshot: LocalFile,
    digest: FileDigest,
    *,
    dry_run: bool,
) -> Outcome:
    """The file's content is its object's: rewrite the object's metadata if the file's
    mode or mtime moved, else nothing to do."""
    if not dry_run and metadata_may_have_changed(snapshot, remote):
        updated = _refresh_metadata(conn, bucket, remote, snapshot, digest)
        if updated is not None:
            return Outcome(
                snapshot.rel,
                transferred=False,
                size=snapshot.size,
                reason=METADATA_CHANGED,
                read_bytes=snapshot.size,
                entry=updated,
                metadata_updated=True,
            )
    return Outcome(
        snapshot.rel,
        transferred=False,
        size=snapshot.size,
        read_bytes=snapshot.size,
        seen=Seen(snapshot, digest.md5, remote.etag),
        entry=RecordEntry(snapshot.rel, remote.size, digest.md5, remote.etag, None),
    )


def _backup_step(
    conn: Connection,
    transfers: TransferManager,
    bucket: str,
    prefix: str,
    step: Step,
    *,
    dry_run: bool,
) -> Outcome:
    local = step.source
    assert isinstance(local, LocalFile)
    remote = step.target
    reason = step.reason
    if reason == UNCHANGED:
        assert isinstance(remote, RemoteObject) and step.known_md5
        entry = RecordEntry(step.rel, remote.size, step.known_md5, remote.etag, None)
        return Outcome(step.rel, transferred=False, size=local.size, entry=entry)
    read_bytes = 0
    if reason == SAME_SIZE:
        assert isinstance(remote, RemoteObject)
        with open(local.path, "rb") as fileobj:
            snapshot = LocalFile.from_stat(local.rel, local.path, os.fstat(fileobj.fileno()))
            digest = local_checksum(fileobj, conn.part_size_for(local.size))
        read_bytes = snapshot.size
        if content_matches(conn, bucket, remote, digest):
            return _matched(conn, bucket, remote, snapshot, digest, dry_run=dry_run)
        reason = CONTENT_CHANGED
    key = f"{prefix}/{local.rel}"
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise FileProblem(f"the S3 key would be longer than {MAX_KEY_BYTES} bytes")
    if dry_run:
        return Outcome(
            step.rel, transferred=True, size=local.size, reason=reason, read_bytes=read_bytes
        )
    try:
        seen, version_id = _upload_once(conn, transfers, bucket, key, local.rel, local.path)
    except FileProblem:  # changed while being read: once more, then report
        seen, version_id = _upload_once(conn, transfers, bucket, key, local.rel, local.path)
    size = seen.local.size
    read_bytes += size * 2 if conn.part_size_for(size) else size
    entry = RecordEntry(step.rel, size, seen.md5, seen.etag, version_id)
    return Outcome(
        step.rel,
        transferred=True,
        size=size,
        reason=reason,
        read_bytes=read_bytes,
        seen=seen,
        entry=entry,
    )


MAX_COPY_BYTES = 5 * 1024 * MiB  # the largest object one CopyObject can rewrite


def metadata_may_have_changed(local: LocalFile, remote: RemoteObject) -> bool:
    """Whether the file's inode changed after its object was written (chmod, touch).

    ctime moves with any change of mode or mtime. LastModified has one-second
    resolution, so only a ctime a full second past it counts: a chmod within the
    second of the upload, or hidden by a clock ahead of S3's, is not seen.
    """
    written_ns = int(remote.last_modified.timestamp()) * 1_000_000_000
    return local.ctime_ns >= written_ns + 1_000_000_000


def _refresh_metadata(
    conn: Connection,
    bucket: str,
    remote: RemoteObject,
    snapshot: LocalFile,
    digest: FileDigest,
) -> RecordEntry | None:
    """Bring the object's mtime and mode metadata up to the file's, by a server-side copy
    onto itself (no data sent); the record line of the result, or None if already current.

    The storage class and encryption the object has are kept, unless options set them.
    """
    owner = conn.owner_args()
    head = conn.client.head_object(Bucket=bucket, Key=remote.key, **owner)
    metadata = head.get("Metadata", {})
    wanted = {
        META_MD5: digest.md5,
        META_MTIME: str(snapshot.mtime_ns),
        META_MODE: format(snapshot.mode, "o"),
    }
    if all(metadata.get(name) == value for name, value in wanted.items()):
        return None
    if remote.size > MAX_COPY_BYTES:
        log.warning("warning: %s: mode/mtime changed, not updated (over 5 GiB)", remote.key)
        return None
    kept = {
        name: head[name]
        for name in ("StorageClass", "ServerSideEncryption", "SSEKMSKeyId")
        if head.get(name)
    }
    source_owner = {"ExpectedSourceBucketOwner": owner["ExpectedBucketOwner"]} if owner else {}
    response = conn.client.copy_object(
        Bucket=bucket,
        Key=remote.key,
        CopySource={"Bucket": bucket, "Key": remote.key},
        CopySourceIfMatch=head["ETag"],
        MetadataDirective="REPLACE",
        Metadata={**metadata, **wanted},
        **{**kept, **conn.storage.upload_args()},
        **owner,
        **source_owner,
    )
    etag = response.get("CopyObjectResult", {}).get("ETag", head["ETag"]).strip('"')
    return RecordEntry(remote.rel, remote.size, digest.md5, etag, response.get("VersionId"))


def deletion_refusal(
    deletions: int,
    total: int,
    *,
    source_files: int,
    complete: bool,
    max_delete: str | None,
    force: bool,
) -> str | None:
    """Why the deletions a plan asks for must not happen, or None when they may.

    An empty source (an unmounted disk looks like one) or a partly unreadable one
    is never trusted to delete; a share above --max-delete (default: half of what
    is there) needs --force, as a rename of a big folder would.
    """
    if not deletions:
        return None
    if not source_files:
        return "the source has no files at all (is it empty or unmounted?)"
    if not complete:
        return "part of the source could not be read"
    limit = delete_limit(max_delete or DEFAULT_MAX_DELETE, total)
    if deletions > limit and not force:
        return f"{deletions} of {total} would go, more than --max-delete {limit}; add --force"
    return None


DEFAULT_MAX_DELETE = "50%"


def delete_limit(spec: str, total: int) -> int:
    """How many deletions --max-delete allows: a count ("100") or a share ("50%")."""
    if spec.endswith("%"):
        return total * int(spec[:-1]) // 100
    return int(spec)


def max_delete_spec(text: str) -> str:
    """argparse type for --max-delete."""
    if not re.fullmatch(r"\d+%?", text) or (text.endswith("%") and int(text[:-1]) > 100):
        raise argparse.ArgumentTypeError(f"use a count or a percentage, e.g. 100 or 25%: {text!r}")
    return text


class Counted(Generic[T]):
    """A stream passed on unchanged, counting its items: the deletion guards need the
    sizes of both sides, which are only known once the streams have been read."""

    def __init__(self, items: Iterable[T]) -> None:
        self._items = items
        self.count = 0

    def __iter__(self) -> Iterator[T]:
        for item in self._items:
            self.count += 1
            yield item


def _split_extras(steps: Iterable[Step], extras: list[Step]) -> Iterator[Step]:
    """Pass on the steps to transfer; keep the targets' extra entries aside."""
    for step in steps:
        if step.reason == EXTRA:
            extras.append(step)
        else:
            yield step


def backup(
    conn: Connection,
    directory: str,
    *,
    bucket: str,
    prefix: str,
    checksum: bool = False,
    delete: bool = False,
    max_delete: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    rules: Iterable[tuple[str, str]] = (),
    follow_symlinks: bool = False,
    cache_path: str | None = None,
    progress: Progress | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> Summary:
    """Upload every new or changed regular file under `directory` to s3://bucket/prefix/.

    The state cache spares reading files it can vouch for; `checksum` re-reads all.
    With `delete`, objects whose files are gone are deleted, within the guards of
    `deletion_refusal`. A run that changed anything ends by writing its run record.
    `dry_run` reports what would happen and writes nothing, in S3 or on disk. `rules`
    are ("exclude" | "include", pattern) pairs (see `Filters`); objects they leave
    out are neither compared nor deleted.
    """
    started = time.monotonic()
    root = check_directory(directory)
    filters = Filters.for_backup(root, rules)
    summary = Summary("would upload" if dry_run else "uploaded", requests=conn.requests)
    if not dry_run:
        ensure_bucket(conn, bucket)
    report = ScanReport()
    scope = f"{conn.client.meta.endpoint_url}|{bucket}|{prefix}"
    entries = RecordSpool()
    extras: list[Step] = []

    def remote_objects() -> Iterator[RemoteObject]:
        for item in list_remote(conn, bucket, prefix, missing_ok=dry_run):
            if filters.excludes_path(item.rel):
                entries.append(_entry_of(item))  # left alone, so still part of the backup
            else:
                yield item

    local_files = Counted(scan_tree(root, report, filters=filters, follow_symlinks=follow_symlinks))
    remote = Counted(remote_objects())

    try:
        with StateCache(cache_path or default_cache_path(), scope, read_only=dry_run) as cache:

            def remember(outcome: Outcome) -> None:
                if outcome.seen is not None:
                    cache.remember(outcome.seen)
                if outcome.entry is not None:
                    entries.append(outcome.entry)
                if on_outcome:
                    on_outcome(outcome)

            def keep_previous(step: Step) -> None:
                """A file that failed keeps its previous object, which the record names."""
                if isinstance(step.target, RemoteObject):
                    entries.append(_entry_of(step.target))

            if progress:
                progress.count_ahead(
                    scan_tree(root, ScanReport(), filters=filters, follow_symlinks=follow_symlinks)
                )
            steps = plan_transfers(
                local_files,
                remote,
                known_unchanged=None if checksum else cache.cached_md5,
            )
            _execute(
                conn,
                _split_extras(steps, extras),
                lambda step, transfers: _backup_step(
                    conn, transfers, bucket, prefix, step, dry_run=dry_run
                ),
                summary,
                remember,
                keep_previous,
                progress,
            )
        summary.skipped = len(report.skipped)
        summary.excluded = report.excluded
        for path, reason in report.skipped:
            log.info("skipped %s (%s)", printable(path), reason)
        for path, reason in report.problems:
            _record_failure(summary, path, reason)
        deleted: set[str] = set()
        if delete:
            refusal = deletion_refusal(
                len(extras),
                remote.count,
                source_files=local_files.count,
                complete=not report.unreadable,
                max_delete=max_delete,
                force=force,
            )
            deleted = _delete_extras(conn, bucket, summary, extras, refusal, dry_run)
        for step in extras:
            if isinstance(step.target, RemoteObject) and step.target.key not in deleted:
                entries.append(_entry_of(step.target))  # still in the bucket
        if not dry_run and (summary.transferred or summary.deleted or summary.metadata_updated):
            record_run(conn, bucket, prefix, root, summary, entries)
    finally:
        entries.close()
    summary.seconds = time.monotonic() - started
    return summary


def _entry_of(remote: RemoteObject) -> RecordEntry:
    """A record line for an object the run did not read. Its MD5 comes from the previous
    record when written; the ETag is not trusted to be one (SSE-KMS), and where it stays
    unknown a restore checks the object's md5 metadata instead."""
    return RecordEntry(remote.rel, remote.size, "", remote.etag, None)


def _refuse_deletions(summary: Summary, count: int, what: str, refusal: str | None) -> bool:
    """Report a guard's refusal (the run then ends non-zero); True if refused."""
    if refusal:
        _record_failure(summary, "--delete", f"refused to delete {count} {what}: {refusal}")
    return refusal is not None


def _delete_extras(
    conn: Connection,
    bucket: str,
    summary: Summary,
    extras: list[Step],
    refusal: str | None,
    dry_run: bool,
) -> set[str]:
    """Delete the objects whose files are gone, in batches of 1000; the keys deleted."""
    if _refuse_deletions(summary, len(extras), "objects", refusal):
        return set()
    keys = [step.target.key for step in extras if isinstance(step.target, RemoteObject)]
    for step in extras:
        log.info("%s %s (deleted locally)", "would delete" if dry_run else "delete", step.rel)
    if dry_run:
        summary.deleted = len(keys)
        return set()
    deleted: set[str] = set()
    for start in range(0, len(keys), 1000):
        batch = keys[start : start + 1000]
        try:
            response = conn.client.delete_objects(
                Bucket=bucket,
                Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                **conn.owner_args(),
            )
        except TRANSFER_ERRORS as error:
            for key in batch:
                _record_failure(summary, key, describe_client_error(error, "DeleteObjects", bucket))
            continue
        failed = {item["Key"]: item.get("Message", "") for item in response.get("Errors", [])}
        for key, message in failed.items():
            _record_failure(summary, key, f"not deleted: {message}")
        deleted.update(key for key in batch if key not in failed)
    summary.deleted = len(deleted)
    return deleted


def printable(name: str) -> str:
    """A path or key safe to print: control characters and undecodable bytes escaped.

    A hostile key such as "\x1b]0;..." must not drive the user's terminal.
    """
    escaped = _CONTROL_CHARS.sub(lambda match: f"\\x{ord(match.group()):02x}", name)
    return escaped.encode("utf-8", "backslashreplace").decode("utf-8")


def _record_failure(summary: Summary, name: str, reason: str) -> None:
    log.error("failed: %s: %s", printable(name), reason)
    summary.failures.append((name, reason))


def _execute(
    conn: Connection,
    steps: Iterable[Step],
    run_step: Callable[[Step, TransferManager], Outcome],
    summary: Summary,
    on_outcome: Callable[[Outcome], None] | None,
    on_failure: Callable[[Step], None] | None = None,
    progress: Progress | None = None,
) -> None:
    """Run steps on `conn.workers` threads; a failed step is recorded, the rest go on.

    Steps are consumed as they are planned, with a bounded number queued, so memory
    stays flat. Big files go through one shared s3transfer manager. On Ctrl-C the
    queued steps are dropped and the manager cancels the transfers in flight, which
    aborts their multipart uploads, so an interrupted run leaves no parts behind.
    """

    def guarded(step: Step) -> Outcome | tuple[Step, str]:
        try:
            return run_step(step, transfers)
        except FileProblem as error:
            return step, str(error)
        except OSError as error:
            return step, error.strerror or str(error)
        except TRANSFER_ERRORS as error:
            return step, describe_client_error(error, "transfer")

    def collect(futures: Iterable[Future[Outcome | tuple[Step, str]]]) -> None:
        for future in futures:
            _record(summary, future.result(), on_outcome, on_failure, progress)

    executor = ThreadPoolExecutor(max_workers=conn.workers, thread_name_prefix="ass3")
    try:
        with create_transfer_manager(conn.client, conn.transfer_config) as transfers:
            try:
                pending: set[Future[Outcome | tuple[Step, str]]] = set()
                for step in steps:
                    if progress:
                        progress.planned(step)
                    if step.reason == UNCHANGED:  # nothing to read or send: no thread needed
                        _record(
                            summary, run_step(step, transfers), on_outcome, on_failure, progress
                        )
                        continue
                    pending.add(executor.submit(guarded, step))
                    if len(pending) >= conn.workers * 4:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        collect(done)
                collect(as_completed(pending))
            except BaseException:
                executor.shutdown(wait=False, cancel_futures=True)
                raise
    finally:
        executor.shutdown(wait=True)


def _record(
    summary: Summary,
    result: Outcome | tuple[Step, str],
    on_outcome: Callable[[Outcome], None] | None,
    on_failure: Callable[[Step], None] | None,
    progress: Progress | None,
) -> None:
    if isinstance(result, tuple):
        step, reason = result
        _record_failure(summary, step.rel, reason)
        if on_failure:
            on_failure(step)
        if progress:
            progress.failed(step)
        return
    if progress:
        progress.finished(result)
    summary.read_bytes += result.read_bytes
    if result.transferred:
        summary.transferred += 1
        summary.transferred_bytes += result.size
        would = f"{summary.action} " if summary.action.startswith("would") else ""
        log.info("%s%s (%s)", would, printable(result.rel), result.reason)
    elif result.metadata_updated:
        summary.metadata_updated += 1
        log.info("%s (%s)", printable(result.rel), result.reason)
    else:
        summary.unchanged += 1
    if on_outcome:
        on_outcome(result)


class Progress:
    """Progress bars on stderr while a run goes: files with rate and ETA, bytes with rate.

    Disabled (no output at all) unless stderr is a terminal, so cron mails and pipes
    get only the summary. The plan is streamed, so a backup counts the files ahead
    in a thread of its own (`count_ahead`) to give the bar its total; without that
    (a restore) the total grows as the listing goes.
    """

    def __init__(self, action: str, *, enabled: bool) -> None:
        self.enabled = enabled
        self._lock = threading.Lock()
        self._counted_ahead = False
        self._closed = False
        options: dict[str, Any] = {"disable": not enabled, "leave": False, "file": sys.stderr}
        self._files = tqdm(desc=f"{action}: files", unit=" files", total=0, position=0, **options)
        self._bytes = tqdm(
            desc=f"{action}: bytes",
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            position=1,
            **options,
        )

    def count_ahead(self, files: Iterable[LocalFile]) -> None:
        """Count `files` (a second, cheap walk) in the background for the bar's total."""
        if not self.enabled:
            return
        self._counted_ahead = True

        def count() -> None:
            counted = 0
            for _ in files:
                if self._closed:
                    return
                counted += 1
                if counted % 256 == 0:
                    self._set_total(counted)
            self._set_total(counted)

        threading.Thread(target=count, name="ass3-count", daemon=True).start()

    def _set_total(self, total: int) -> None:
        with self._lock:
            if self._closed:
                return
            self._files.total = max(total, self._files.n)
            self._files.refresh()

    def planned(self, step: Step) -> None:
        if not self._counted_ahead:
            with self._lock:
                self._files.total += 1
                self._files.refresh()

    def finished(self, outcome: Outcome) -> None:
        with self._lock:
            self._files.update(1)
            if outcome.transferred:
                self._bytes.update(outcome.size)

    def failed(self, step: Step) -> None:
        with self._lock:
            self._files.update(1)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._bytes.close()
            self._files.close()


# ---------------------------------------------------------------------------
# Restore
# ---------------------------------------------------------------------------


TEMP_PREFIX = ".ass3-"
TEMP_SUFFIX = ".part"


def is_temporary_name(name: str) -> bool:
    """A download in progress; one left by a killed restore is removed by the next."""
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


def _prepare_folder(root: str, rel: str) -> str:
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


class _Placements:
    """The files this restore has put in place, to catch two keys landing on one path.

    On a filesystem that folds case or Unicode normalisation, `A` and `a` (or NFC
    and NFD twins) are one file: the second would silently overwrite the first.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._placed: dict[tuple[int, int], str] = {}

    def replace(self, temporary: str, final: str, rel: str) -> None:
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


def _write_verified(
    conn: Connection,
    transfers: TransferManager,
    bucket: str,
    remote: RemoteObject,
    final: str,
    placements: _Placements,
) -> None:
    """Download into a temporary file beside `final`; rename it into place once verified.

    A good file already at `final` is replaced only by a complete, verified one.
    """
    descriptor, temporary = tempfile.mkstemp(
        dir=os.path.dirname(final), prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX
    )
    try:
        with os.fdopen(descriptor, "w+b") as out:
            part_size = conn.part_size_for(remote.size)
            if part_size is None:
                metadata, digest = _get_small(conn, bucket, remote, out)
            else:
                metadata, digest = _get_large(conn, transfers, bucket, remote, out, part_size)
            out.flush()
            os.fsync(out.fileno())
        _verify(remote, metadata, digest)
        _apply_metadata(temporary, metadata)
        placements.replace(temporary, final, remote.rel)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _get_small(
    conn: Connection, bucket: str, remote: RemoteObject, out: BinaryIO
) -> tuple[dict[str, str], FileDigest]:
    """One GetObject, pinned to the version or listed ETag, streamed to disk while hashing."""
    response = conn.client.get_object(
        Bucket=bucket, Key=remote.key, **remote.pin(), **conn.owner_args()
    )
    md5 = hashlib.md5()
    for chunk in response["Body"].iter_chunks(READ_CHUNK):
        md5.update(chunk)
        out.write(chunk)
    return response.get("Metadata", {}), FileDigest(md5.hexdigest())


class _KnownObject(BaseSubscriber):
    """Hands s3transfer the size and ETag we already know, sparing its own HeadObject
    and pinning every ranged GET to that ETag."""

    def __init__(self, size: int, etag: str) -> None:
        self._size = size
        self._etag = etag

    def on_queued(self, future: Any, **_: Any) -> None:
        future.meta.provide_transfer_size(self._size)
        future.meta.provide_object_etag(self._etag)


def _get_large(
    conn: Connection,
    transfers: TransferManager,
    bucket: str,
    remote: RemoteObject,
    out: BinaryIO,
    part_size: int,
) -> tuple[dict[str, str], FileDigest]:
    """Parallel ranged GETs through s3transfer into `out`, then hashed from disk.

    One HeadObject reads the metadata; s3transfer does not verify ranged downloads,
    so the file is hashed after it lands.
    """
    owner = conn.owner_args()
    head = conn.client.head_object(Bucket=bucket, Key=remote.key, **remote.pin(), **owner)
    pinned = {"VersionId": head["VersionId"]} if head.get("VersionId") else {}
    known = _KnownObject(head["ContentLength"], head["ETag"])
    transfers.download(
        bucket, remote.key, out, extra_args={**pinned, **owner}, subscribers=[known]
    ).result()
    out.flush()
    out.seek(0)
    return head.get("Metadata", {}), local_checksum(out, part_size)


def _verify(remote: RemoteObject, metadata: Mapping[str, str], digest: FileDigest) -> None:
    """Check the data against the run record's MD5 or the md5 metadata, else the ETag."""
    expected = remote.md5 or metadata.get(META_MD5)
    if expected:
        if expected != digest.md5:
            raise FileProblem(f"checksum mismatch: expected MD5 {expected}, got {digest.md5}")
        return
    verdict = etag_matches(remote.etag, digest)
    if verdict is False:
        raise FileProblem(f"checksum mismatch: ETag {remote.etag} does not match the data")
    if verdict is None:
        log.warning("warning: %s has no md5 metadata; restored unverified", remote.key)


def _apply_metadata(path: str, metadata: Mapping[str, str]) -> None:
    """Restore permission bits (never setuid/setgid/sticky) and mtime from the metadata."""
    with suppress(KeyError, ValueError):
        os.chmod(path, int(metadata[META_MODE], 8) & 0o777)
    with suppress(KeyError, ValueError):
        mtime_ns = int(metadata[META_MTIME])
        os.utime(path, ns=(mtime_ns, mtime_ns))


def _restore_step(
    conn: Connection,
    transfers: TransferManager,
    bucket: str,
    root: str,
    step: Step,
    placements: _Placements,
    *,
    dry_run: bool,
) -> Outcome:
    remote = step.source
    assert isinstance(remote, RemoteObject)
    reason = step.reason
    read_bytes = 0
    if reason == SAME_SIZE:
        assert isinstance(step.target, LocalFile)
        with open(step.target.path, "rb") as fileobj:
            digest = local_checksum(fileobj, conn.part_size_for(remote.size))
        read_bytes = remote.size
        if content_matches(conn, bucket, remote, digest):
            return Outcome(step.rel, transferred=False, size=remote.size, read_bytes=read_bytes)
        reason = CONTENT_CHANGED
    if dry_run:
        return Outcome(
            step.rel, transferred=True, size=remote.size, reason=reason, read_bytes=read_bytes
        )
    folder = _prepare_folder(root, step.rel)
    final = os.path.join(folder, step.rel.rsplit("/", 1)[-1])
    try:
        _write_verified(conn, transfers, bucket, remote, final, placements)
    except (ResponseStreamingError, ReadTimeoutError):
        # The response broke off mid-body, which botocore does not retry: once more.
        _write_verified(conn, transfers, bucket, remote, final, placements)
    return Outcome(
        step.rel, transferred=True, size=remote.size, reason=reason, read_bytes=read_bytes
    )


def _local_files(root: str, *, tidy: bool) -> Iterator[LocalFile]:
    """What already stands below the restore root; with `tidy`, leftovers of a killed
    restore are removed."""
    if not os.path.isdir(root):  # a dry run into a folder that is not there yet
        return
    for entry in scan_tree(root, ScanReport()):
        if not is_temporary_name(entry.rel.rsplit("/", 1)[-1]):
            yield entry
        elif tidy:
            with suppress(FileNotFoundError):
                os.unlink(entry.path)
            log.info("removed %s (left by an interrupted restore)", printable(entry.path))


def _restorable(objects: Iterable[RemoteObject], summary: Summary) -> Iterator[RemoteObject]:
    """The objects that may become files: hostile keys are refused, folder markers skipped."""
    for item in objects:
        if item.rel.endswith("/") and item.size == 0:
            continue  # a folder marker written by another tool
        reason = unsafe_key_reason(item.rel)
        if reason:
            _record_failure(summary, item.key, f"refused key: {reason}")
        else:
            yield item


def _restore_source(
    conn: Connection,
    bucket: str,
    prefix: str,
    run_id: str | None,
    as_of: datetime | None,
    summary: Summary,
) -> Iterator[RemoteObject]:
    """The objects to restore: the current ones, a recorded run's, or those as of a time."""
    if run_id is None and as_of is None:
        return list_remote(conn, bucket, prefix)
    run_ids = list_run_ids(conn, bucket, prefix)
    versioning = bucket_versioning(conn, bucket)
    if run_id is None:
        assert as_of is not None
        if not run_ids:
            if versioning == "Off":
                raise Ass3Error(
                    f"versioning is off on s3://{bucket}: an overwritten file is gone, so "
                    "there is no earlier state to restore"
                )
            summary.method = (
                f"object versions as of {as_of:%Y-%m-%d %H:%M:%S %Z} (no run records: "
                "chosen by LastModified, one-second resolution)"
            )
            return iter(versions_as_of(conn, bucket, prefix, as_of))
        run_id = select_run(run_ids, as_of)
        if run_id is None:
            first = run_time(run_ids[0]).astimezone()
            raise Ass3Error(
                f"no run of {prefix!r} at or before {as_of:%Y-%m-%d %H:%M:%S %Z}; "
                f"the first was {first:%Y-%m-%d %H:%M:%S %Z}"
            )
    record = load_record(conn, bucket, prefix, run_id)
    latest = bool(run_ids) and run_id == run_ids[-1]
    if not latest and (versioning != "Enabled" or not record.versioned):
        raise Ass3Error(
            f"versioning is {versioning.lower()} on s3://{bucket}: files overwritten since "
            f"run {run_id} are gone, so only the latest run can be restored"
        )
    summary.method = (
        f"run {run_id} ({record.time.astimezone():%Y-%m-%d %H:%M:%S %Z}), from its run record"
    )
    return _objects_of_run(prefix, record)


def _delete_local_extras(
    summary: Summary, extras: list[Step], refusal: str | None, dry_run: bool
) -> None:
    """Remove local files the restored tree does not have, unless a guard refused."""
    if _refuse_deletions(summary, len(extras), "files", refusal):
        return
    for step in extras:
        assert isinstance(step.target, LocalFile)
        log.info("%s %s (not in the backup)", "would delete" if dry_run else "delete", step.rel)
        if dry_run:
            summary.deleted += 1
            continue
        try:
            os.unlink(step.target.path)
            summary.deleted += 1
        except OSError as error:
            _record_failure(summary, step.target.path, error.strerror or str(error))


def restore(
    conn: Connection,
    name: str,
    *,
    bucket: str,
    destination: str,
    run_id: str | None = None,
    as_of: datetime | None = None,
    delete: bool = False,
    max_delete: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> Summary:
    """Download backup NAME into DESTINATION/NAME, verifying every file.

    By default the current objects; `run_id` or `as_of` restore the tree as a
    recorded run saw it, each file fetched by its version. With `delete`, local
    files the tree does not have are removed (guarded like backup's deletions).
    `dry_run` reports what would happen and writes nothing.
    """
    started = time.monotonic()
    prefix = normalize_prefix(name)
    destination = os.path.abspath(destination)
    if os.path.exists(destination) and not os.path.isdir(destination):
        raise Ass3Error(f"{destination}: not a directory")
    summary = Summary("would download" if dry_run else "downloaded", requests=conn.requests)
    objects = _restore_source(conn, bucket, prefix, run_id, as_of, summary)
    first = next(objects, None)
    if first is None and summary.method:
        raise Ass3Error(f"backup {prefix!r} held no files then ({summary.method})")
    if first is None:
        names = [info.name for info in list_backups(conn, bucket)]
        known = f"backups there: {', '.join(names)}" if names else "it holds no backups"
        raise Ass3Error(f"no backup named {prefix!r} in s3://{bucket}; {known}")
    root = os.path.join(destination, *prefix.split("/"))
    if not dry_run:
        try:
            os.makedirs(root, exist_ok=True)
        except OSError as error:
            raise Ass3Error(f"cannot create {root}: {error.strerror}") from error
    extras: list[Step] = []
    local_files = Counted(_local_files(root, tidy=not dry_run))
    restorable = Counted(_restorable(itertools.chain([first], objects), summary))
    placements = _Placements()
    steps = plan_transfers(restorable, local_files)
    _execute(
        conn,
        _split_extras(steps, extras),
        lambda step, transfers: _restore_step(
            conn, transfers, bucket, root, step, placements, dry_run=dry_run
        ),
        summary,
        on_outcome,
        progress=progress,
    )
    if delete:
        refusal = deletion_refusal(
            len(extras),
            local_files.count,
            source_files=restorable.count,
            complete=not summary.failures,
            max_delete=max_delete,
            force=force,
        )
        _delete_local_extras(summary, extras, refusal, dry_run)
    summary.seconds = time.monotonic() - started
    return summary


# ---------------------------------------------------------------------------
# History: run records and point-in-time restores
# ---------------------------------------------------------------------------

RUNS_PREFIX = f"{RESERVED_PREFIX}/runs"
RECORD_SUFFIX = ".json.gz"
RECORD_FORMAT = 1
_RUN_TIME_FORMAT = "%Y%m%dT%H%M%S.%fZ"


@dataclass(frozen=True, slots=True)
class RecordEntry:
    """One file of a run: the object version that holds exactly these bytes."""

    rel: str
    size: int
    md5: str
    etag: str
    version_id: str | None


@dataclass(frozen=True)
class RunRecord:
    """What one backup run left in the bucket. Written after all its data, so it only
    ever points at versions that exist; an interrupted run leaves none."""

    run_id: str
    source: str
    uploaded: int
    deleted: int
    failed: int
    versioned: bool
    files: tuple[RecordEntry, ...]

    @property
    def time(self) -> datetime:
        return run_time(self.run_id)

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.files)

    def to_bytes(self) -> bytes:
        document = {
            "format": RECORD_FORMAT,
            "run": self.run_id,
            "source": self.source,
            "uploaded": self.uploaded,
            "deleted": self.deleted,
            "failed": self.failed,
            "versioned": self.versioned,
            "files": [
                [entry.rel, entry.size, entry.md5, entry.etag, entry.version_id]
                for entry in self.files
            ],
        }
        return gzip.compress(json.dumps(document, ensure_ascii=False).encode("utf-8"), mtime=0)

    @classmethod
    def from_bytes(cls, data: bytes) -> RunRecord:
        document = json.loads(gzip.decompress(data))
        if document.get("format") != RECORD_FORMAT:
            raise ValueError(f"unknown run record format {document.get('format')!r}")
        return cls(
            document["run"],
            document["source"],
            document["uploaded"],
            document["deleted"],
            document["failed"],
            document["versioned"],
            tuple(RecordEntry(*entry) for entry in document["files"]),
        )


class RecordSpool:
    """The run record's lines, kept in a temporary file while the run goes, so memory
    stays flat however many files there are. Fields are tab-separated: names with
    control characters never get this far (see `unsafe_key_reason`)."""

    def __init__(self) -> None:
        # Lives as long as the run, not a block: closed by close(), or with the process.
        self._file = tempfile.TemporaryFile("w+", encoding="utf-8", newline="\n")  # noqa: SIM115

    def append(self, entry: RecordEntry) -> None:
        version = entry.version_id or ""
        self._file.write(f"{entry.rel}\t{entry.size}\t{entry.md5}\t{entry.etag}\t{version}\n")

    def __iter__(self) -> Iterator[RecordEntry]:
        self._file.flush()
        self._file.seek(0)
        for line in self._file:
            rel, size, md5, etag, version = line.rstrip("\n").split("\t")
            yield RecordEntry(rel, int(size), md5, etag, version or None)
        self._file.seek(0, os.SEEK_END)

    def close(self) -> None:
        self._file.close()


def new_run_id(now: datetime | None = None) -> str:
    """UTC time to the microsecond plus a random tag: sortable, and unique even for
    two runs in one second (S3's LastModified has one-second resolution)."""
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"{moment.strftime(_RUN_TIME_FORMAT)}-{secrets.token_hex(3)}"


def run_time(run_id: str) -> datetime:
    return datetime.strptime(run_id.split("-", 1)[0], _RUN_TIME_FORMAT).replace(tzinfo=timezone.utc)


def record_key(prefix: str, run_id: str) -> str:
    return f"{RUNS_PREFIX}/{prefix}/{run_id}{RECORD_SUFFIX}"


def parse_when(text: str) -> datetime:
    """An ISO 8601 date or date-time; local time unless it names a zone.

    A bare date means the end of that day: "as of Tuesday" includes Tuesday's runs.
    """
    try:
        if len(text) == 10:
            day = datetime.fromisoformat(text)
            moment = day.replace(hour=23, minute=59, second=59, microsecond=999999)
        else:  # Python 3.10's fromisoformat does not read a trailing "Z"
            moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise Ass3Error(
            f"cannot read {text!r} as a date or time: use ISO 8601, "
            "e.g. 2026-11-20 or 2026-11-20T18:30 or 2026-11-20T18:30:00+01:00"
        ) from None
    return moment if moment.tzinfo else moment.astimezone()


def select_run(run_ids: Iterable[str], when: datetime) -> str | None:
    """The newest run at or before `when`."""
    eligible = [run_id for run_id in run_ids if run_time(run_id) <= when]
    return max(eligible) if eligible else None


def list_run_ids(conn: Connection, bucket: str, prefix: str) -> list[str]:
    """The runs recorded for a backup, oldest first."""
    listing = f"{RUNS_PREFIX}/{prefix}/"
    paginator = conn.client.get_paginator("list_objects_v2")
    run_ids = []
    with fatal_errors("ListObjectsV2", bucket):
        for page in paginator.paginate(Bucket=bucket, Prefix=listing, **conn.owner_args()):
            for item in page.get("Contents", []):
                name = item["Key"][len(listing) :]
                if name.endswith(RECORD_SUFFIX) and "/" not in name:
                    run_ids.append(name[: -len(RECORD_SUFFIX)])
    return sorted(run_ids)


def load_record(conn: Connection, bucket: str, prefix: str, run_id: str) -> RunRecord:
    key = record_key(prefix, run_id)
    try:
        body = conn.client.get_object(Bucket=bucket, Key=key, **conn.owner_args())["Body"].read()
        return RunRecord.from_bytes(body)
    except ClientError as error:
        if _error_code(error) in ("NoSuchKey", "404"):
            known = ", ".join(list_run_ids(conn, bucket, prefix)[-5:]) or "none"
            raise Ass3Error(f"no run {run_id!r} of backup {prefix!r}; latest: {known}") from error
        raise Ass3Error(describe_client_error(error, "GetObject", bucket)) from error
    except (BotoCoreError, OSError, ValueError, KeyError, TypeError) as error:
        raise Ass3Error(f"run record s3://{bucket}/{key} is unreadable: {error}") from error


def bucket_versioning(conn: Connection, bucket: str) -> str:
    """'Enabled', 'Suspended', or 'Off'."""
    with fatal_errors("GetBucketVersioning", bucket):
        status = conn.client.get_bucket_versioning(Bucket=bucket, **conn.owner_args())
    return status.get("Status") or "Off"


def _iter_versions(conn: Connection, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    """Every version and delete marker under PREFIX/ (ListObjectVersions pages)."""
    paginator = conn.client.get_paginator("list_object_versions")
    with fatal_errors("ListObjectVersions", bucket):
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix + "/", **conn.owner_args()):
            for item in page.get("Versions", []):
                yield {**item, "Deleted": False}
            for item in page.get("DeleteMarkers", []):
                yield {**item, "Deleted": True}


def record_run(
    conn: Connection,
    bucket: str,
    prefix: str,
    source: str,
    summary: Summary,
    entries: Iterable[RecordEntry],
) -> None:
    """Write the run record: every file of the backup and the version holding it.

    Versions of files this run did not upload come from the previous record (same
    ETag), else from one ListObjectVersions pass.
    """
    versioned = bucket_versioning(conn, bucket) == "Enabled"
    if not versioned:
        log.warning(
            "warning: versioning is off on s3://%s: an overwritten file is gone, so only "
            "the latest run can be restored",
            bucket,
        )
    known: dict[tuple[str, str], str] = {}
    run_ids = list_run_ids(conn, bucket, prefix)
    if run_ids and versioned:
        with suppress(Ass3Error):
            for entry in load_record(conn, bucket, prefix, run_ids[-1]).files:
                if entry.version_id:
                    known[(entry.rel, entry.etag)] = entry.version_id
    if versioned and any(
        entry.version_id is None and (entry.rel, entry.etag) not in known for entry in entries
    ):  # a second pass over the spool, only when something is still unknown
        for item in _iter_versions(conn, bucket, prefix):
            if item.get("IsLatest") and not item["Deleted"]:
                rel = item["Key"][len(prefix) + 1 :]
                known[(rel, item["ETag"].strip('"'))] = item["VersionId"]
    files = tuple(
        sorted(
            (
                entry
                if entry.version_id or not versioned
                else RecordEntry(
                    entry.rel,
                    entry.size,
                    entry.md5,
                    entry.etag,
                    known.get((entry.rel, entry.etag)),
                )
                for entry in entries
            ),
            key=lambda entry: key_order(entry.rel),
        )
    )
    record = RunRecord(
        new_run_id(),
        source,
        summary.transferred,
        summary.deleted,
        len(summary.failures),
        versioned,
        files,
    )
    body = record.to_bytes()
    try:
        conn.client.put_object(
            Bucket=bucket,
            Key=record_key(prefix, record.run_id),
            Body=body,
            ContentMD5=base64.b64encode(hashlib.md5(body).digest()).decode(),
            ContentType="application/gzip",
            **conn.owner_args(),
        )
    except TRANSFER_ERRORS as error:
        _record_failure(summary, "run record", describe_client_error(error, "PutObject", bucket))
        return
    summary.run_id = record.run_id


def _objects_of_run(prefix: str, record: RunRecord) -> Iterator[RemoteObject]:
    for entry in record.files:
        yield RemoteObject(
            entry.rel,
            f"{prefix}/{entry.rel}",
            entry.size,
            entry.etag,
            record.time,
            entry.version_id,
            entry.md5,
        )


def versions_as_of(
    conn: Connection, bucket: str, prefix: str, when: datetime
) -> list[RemoteObject]:
    """Without run records: each key's newest version at or before `when`.

    A delete marker there means the file was absent. LastModified has one-second
    resolution, so two changes within a second cannot be told apart this way.
    """
    best: dict[str, dict[str, Any]] = {}
    for item in _iter_versions(conn, bucket, prefix):
        if item["LastModified"] > when:
            continue
        current = best.get(item["Key"])
        if current is None or item["LastModified"] > current["LastModified"]:
            best[item["Key"]] = item
    objects = [
        RemoteObject(
            key[len(prefix) + 1 :],
            key,
            item["Size"],
            item["ETag"].strip('"'),
            item["LastModified"],
            item["VersionId"],
        )
        for key, item in best.items()
        if not item["Deleted"]
    ]
    return sorted(objects, key=lambda item: key_order(item.rel))


def runs(conn: Connection, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """What --runs shows: each recorded run of a backup, oldest first."""
    prefix = normalize_prefix(prefix)
    run_ids = list_run_ids(conn, bucket, prefix)
    if not run_ids:
        raise Ass3Error(f"backup {prefix!r} in s3://{bucket} has no run records")
    result = []
    for run_id in run_ids:
        record = load_record(conn, bucket, prefix, run_id)
        result.append(
            {
                "run_id": run_id,
                "time": record.time.isoformat(),
                "source": record.source,
                "files": len(record.files),
                "bytes": record.total_bytes,
                "uploaded": record.uploaded,
                "deleted": record.deleted,
                "failed": record.failed,
                "versioned": record.versioned,
            }
        )
    return result


def format_runs(conn: Connection, bucket: str, prefix: str) -> list[str]:
    """--runs as lines for a person, times in local time."""
    lines = []
    for run in runs(conn, bucket, prefix):
        local_time = datetime.fromisoformat(run["time"]).astimezone()
        lines.append(
            f"{run['run_id']}  {local_time:%Y-%m-%d %H:%M:%S %Z}  {plural(run['files'], 'file')}"
            f"  {human_bytes(run['bytes'])}  uploaded {run['uploaded']}"
            f"  deleted {run['deleted']}"
            + (f"  failed {run['failed']}" if run["failed"] else "")
            + ("" if run["versioned"] else "  (versioning off)")
        )
    return lines


def set_retention(conn: Connection, bucket: str, prefix: str, days: int) -> None:
    """Expire versions of PREFIX/ that have been noncurrent for `days` days.

    Other lifecycle rules of the bucket are kept; this backup's rule is replaced.
    """
    rule_id = f"ass3-keep-{prefix}"[:255]
    with fatal_errors("GetBucketLifecycleConfiguration", bucket):
        rules = [rule for rule in _lifecycle_rules(conn, bucket) if rule.get("ID") != rule_id]
    rules.append(
        {
            "ID": rule_id,
            "Status": "Enabled",
            "Filter": {"Prefix": prefix + "/"},
            "NoncurrentVersionExpiration": {"NoncurrentDays": days},
        }
    )
    with fatal_errors("PutBucketLifecycleConfiguration", bucket):
        conn.client.put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration={"Rules": rules}, **conn.owner_args()
        )


def _lifecycle_rules(conn: Connection, bucket: str) -> list[dict[str, Any]]:
    """The bucket's lifecycle rules; none when it has no configuration."""
    try:
        response = conn.client.get_bucket_lifecycle_configuration(
            Bucket=bucket, **conn.owner_args()
        )
    except ClientError as error:
        if _error_code(error) == "NoSuchLifecycleConfiguration":
            return []
        raise
    return response["Rules"]


def retention_days(conn: Connection, bucket: str) -> dict[str, int]:
    """Backup name -> days its noncurrent versions are kept, from the lifecycle rules."""
    try:
        rules = _lifecycle_rules(conn, bucket)
    except (ClientError, BotoCoreError):
        return {}
    kept = {}
    for rule in rules:
        prefix = rule.get("Filter", {}).get("Prefix", "")
        days = rule.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays")
        if rule.get("Status") == "Enabled" and days and prefix.endswith("/"):
            kept[prefix[:-1]] = days
    return kept


# ---------------------------------------------------------------------------
# Listings (printAllBuckets)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupInfo:
    """One backup (a top-level prefix) in the bucket."""

    name: str
    objects: int
    size: int
    newest: datetime | None


def list_bucket_names(conn: Connection) -> list[str]:
    """The buckets these credentials own."""
    with fatal_errors("ListBuckets"):
        return [entry["Name"] for entry in conn.client.list_buckets().get("Buckets", [])]


def list_backups(conn: Connection, bucket: str) -> list[BackupInfo]:
    """Each backup in the bucket with its object count, total size and newest object."""
    totals: dict[str, list[Any]] = {}
    paginator = conn.client.get_paginator("list_objects_v2")
    with fatal_errors("ListObjectsV2", bucket):
        for page in paginator.paginate(Bucket=bucket, **conn.owner_args()):
            for item in page.get("Contents", []):
                name = item["Key"].split("/", 1)[0]
                if name == RESERVED_PREFIX or "/" not in item["Key"]:
                    continue
                entry = totals.setdefault(name, [0, 0, None])
                entry[0] += 1
                entry[1] += item["Size"]
                if entry[2] is None or item["LastModified"] > entry[2]:
                    entry[2] = item["LastModified"]
    return [BackupInfo(name, *values) for name, values in sorted(totals.items())]


def listing(conn: Connection, bucket: str, name: str | None) -> dict[str, Any]:
    """What --list shows: all buckets and the backups in ours, or one backup's objects."""
    if name:
        prefix = normalize_prefix(name)
        objects = [
            {"path": item.rel, "size": item.size, "modified": item.last_modified.isoformat()}
            for item in list_remote(conn, bucket, prefix)
        ]
        if not objects:
            raise Ass3Error(f"no backup named {prefix!r} in s3://{bucket}")
        return {"bucket": bucket, "backup": prefix, "objects": objects}
    result: dict[str, Any] = {"buckets": list_bucket_names(conn), "bucket": bucket}
    try:
        backups = list_backups(conn, bucket)
    except Ass3Error as error:
        return {**result, "backups": [], "problem": str(error)}
    kept = retention_days(conn, bucket)
    result["backups"] = [
        {
            "name": info.name,
            "objects": info.objects,
            "bytes": info.size,
            "newest": info.newest.isoformat() if info.newest else None,
            "keep_days": kept.get(info.name),
        }
        for info in backups
    ]
    return result


def format_listing(conn: Connection, bucket: str, name: str | None) -> list[str]:
    """--list as lines for a person."""
    data = listing(conn, bucket, name)
    if "objects" in data:
        return [
            f"{item['modified'][:19].replace('T', ' ')}  {item['size']:>12}  "
            f"{printable(item['path'])}"
            for item in data["objects"]
        ]
    lines = ["buckets:"] + [f"  {bucket_name}" for bucket_name in data["buckets"]]
    if "problem" in data:
        return [*lines, f"backups in s3://{bucket}: none ({data['problem']})"]
    lines.append(f"backups in s3://{bucket}:")
    for info in data["backups"]:
        newest = info["newest"][:19].replace("T", " ") if info["newest"] else "-"
        kept = f"  old versions kept {info['keep_days']} days" if info["keep_days"] else ""
        lines.append(
            f"  {info['name']:<30} {plural(info['objects'], 'object'):>16} "
            f"{human_bytes(info['bytes']):>10}  newest {newest}{kept}"
        )
    if not data["backups"]:
        lines.append("  (none)")
    return lines


# ---------------------------------------------------------------------------
# Command-line plumbing shared by both scripts
# ---------------------------------------------------------------------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """The options both scripts share: where the backups live, how to reach them, output."""
    where = parser.add_argument_group("where the backups live")
    where.add_argument(
        "--bucket", help=f"bucket name (default: ${BUCKET_ENV}, else ass3backup-<account id>)"
    )
    where.add_argument("--profile", help="AWS profile from ~/.aws/config")
    where.add_argument("--region", help="AWS region (default: from the profile or AWS_REGION)")
    where.add_argument("--endpoint-url", help="S3-compatible endpoint (default: $AWS_ENDPOINT_URL)")
    where.add_argument(
        "--path-style",
        action="store_true",
        help="address buckets as ENDPOINT/BUCKET (MinIO, Ceph and other self-hosted stores)",
    )
    where.add_argument(
        "--no-crc32",
        action="store_true",
        help="do not send or check boto3's CRC32 checksums, for stores that reject them "
        "(the tool's own MD5 checks stay)",
    )
    where.add_argument(
        "--workers",
        type=positive_int,
        default=DEFAULT_WORKERS,
        help=f"files transferred in parallel (default: {DEFAULT_WORKERS})",
    )
    output = parser.add_argument_group("output").add_mutually_exclusive_group()
    output.add_argument(
        "-v", "--verbose", action="store_true", help="print each file acted on, with the reason"
    )
    output.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON summary on stdout at the end, and nothing else on stdout",
    )


def add_deletion_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """--delete and its guards, and --dry-run, which both scripts take."""
    group = parser.add_argument_group("deleting")
    group.add_argument("--delete", action="store_true", help=f"delete {what}")
    group.add_argument(
        "--max-delete",
        type=max_delete_spec,
        metavar="N|N%",
        # argparse %-formats help texts: the default's "%" must be doubled.
        help="with --delete, refuse to delete more than this "
        f"(default {DEFAULT_MAX_DELETE.replace('%', '%%')})",
    )
    group.add_argument(
        "--force", action="store_true", help="with --delete, allow more than --max-delete"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be transferred or deleted and why; change nothing",
    )


def storage_class(text: str) -> str:
    """argparse type for --storage-class: classes a restore can read at once."""
    name = text.upper()
    if name in ARCHIVE_CLASSES:
        raise argparse.ArgumentTypeError(
            f"{name} objects must be thawed (RestoreObject, hours) before they can be "
            "downloaded, so a restore could not read them; use GLACIER_IR for archive pricing "
            "with immediate reads"
        )
    if name not in STORAGE_CLASSES:
        raise argparse.ArgumentTypeError(f"one of {', '.join(STORAGE_CLASSES)}: {text!r}")
    return name


def connect(args: argparse.Namespace) -> tuple[Connection, str]:
    """The connection and the validated bucket name from the shared options."""
    if args.bucket:
        validate_bucket_name(args.bucket)
    storage = StorageOptions(
        getattr(args, "storage_class", None),
        getattr(args, "sse", None),
        getattr(args, "sse_kms_key_id", None),
    )
    conn = Connection(
        profile=args.profile,
        region=args.region,
        endpoint_url=args.endpoint_url,
        workers=args.workers,
        storage=storage,
        path_style=args.path_style,
        crc32=not args.no_crc32,
    )
    return conn, resolve_bucket(conn, args.bucket)


def print_listing(args: argparse.Namespace, conn: Connection, bucket: str, name: str | None) -> int:
    """--list, as lines or (with --json) one JSON document."""
    if args.json:
        print(json.dumps(listing(conn, bucket, name), ensure_ascii=False))
    else:
        print("\n".join(format_listing(conn, bucket, name)))
    return EXIT_OK


def print_runs(args: argparse.Namespace, conn: Connection, bucket: str, name: str) -> int:
    """--runs, as lines or (with --json) one JSON document."""
    if args.json:
        print(json.dumps(runs(conn, bucket, name), ensure_ascii=False))
    else:
        print("\n".join(format_runs(conn, bucket, name)))
    return EXIT_OK


def progress_for(args: argparse.Namespace, action: str) -> Progress:
    """Bars only for a person at a terminal: not with -q, --json, or stderr redirected."""
    enabled = sys.stderr.isatty() and not args.quiet and not args.json
    return Progress(action, enabled=enabled)


def finish(args: argparse.Namespace, summary: Summary, line: str, **details: Any) -> int:
    """Print the run's summary as the options ask, and give its exit code."""
    if args.json:
        print(json.dumps({**details, **summary.to_dict()}, ensure_ascii=False))
    elif not args.quiet:
        print(line)
    return summary.exit_code


def run_main(program: str, args: argparse.Namespace, body: Callable[[], int]) -> int:
    """Run a script's body: log to stderr, turn errors into one line and an exit code.

    With --json an error that stops the run is also a JSON document on stdout.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    if args.quiet:
        handler.setLevel(logging.ERROR)
    elif args.verbose or args.dry_run:
        handler.setLevel(logging.INFO)
    else:
        handler.setLevel(logging.WARNING)
    log.addHandler(handler)
    saved = log.level, log.propagate
    log.setLevel(handler.level)
    log.propagate = False
    try:
        return body()
    except Ass3Error as error:
        log.error("%s: error: %s", program, error)
        code, message = error.exit_code, str(error)
    except KeyboardInterrupt:
        log.error("%s: interrupted", program)
        code, message = EXIT_INTERRUPTED, "interrupted"
    finally:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]
    if args.json:
        print(json.dumps({"error": message, "exit_code": code}, ensure_ascii=False))
    return code
