"""Plain data and errors that every stage shares.

Frozen dataclasses for what a run sees (`LocalFile`, `RemoteObject`, `ObjectVersion`)
and decides (`Step`, `Outcome`), the `Summary` a run reports, the exit codes, and the
two exceptions: `Ass3Error` stops the run, `FileProblem` fails one file.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict

log = logging.getLogger("ass3")

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_USAGE = 2
# A bug: an exception nothing expected. EX_SOFTWARE of sysexits.h ("internal software
# error"), so a script can tell a crash from files that failed (1) or a bad setting (2);
# it is below 126, where shells and signals (128 + n) have their own meanings.
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130  # Ctrl-C; SIGTERM and SIGHUP give 128 + their number as well
# The reader of stdout went away (`| head`): 128 + SIGPIPE, what a shell reports for a
# command that signal stopped, and not a bug.
EXIT_OUTPUT_CLOSED = 141

MiB = 1024 * 1024
GiB = 1024 * MiB


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
# A file that kept changing while it was read, backed up as read.
CHANGING = "changed while being read; backed up as read, which may mix old and new content"


class Ass3Error(Exception):
    """A problem that stops the whole run; `main()` prints it as one line."""

    exit_code = EXIT_USAGE


class FileProblem(Exception):
    """A problem with one file or object: it is reported and the run goes on."""


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
    device: int = 0
    followed: bool = False  # reached through a symlink (--follow-symlinks)

    @classmethod
    def from_stat(
        cls, rel: str, path: str, st: os.stat_result, *, followed: bool = False
    ) -> LocalFile:
        return cls(
            rel,
            path,
            st.st_size,
            st.st_mtime_ns,
            stat.S_IMODE(st.st_mode),
            st.st_ctime_ns,
            st.st_ino,
            st.st_dev,
            followed,
        )


class VersionArgs(TypedDict, total=False):
    """Keyword arguments that address one version of an object (none: the current one)."""

    VersionId: str


class PinArgs(VersionArgs, total=False):
    """Keyword arguments that fetch exactly one object: its version, else its ETag."""

    IfMatch: str


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

    def pin(self) -> PinArgs:
        """Request arguments that fetch exactly this object: its version, else its ETag."""
        if self.version_id:
            return {"VersionId": self.version_id}
        return {"IfMatch": f'"{self.etag}"'}


@dataclass(frozen=True, slots=True)
class ObjectVersion:
    """One version of an object, or a delete marker, from ListObjectVersions."""

    rel: str
    key: str
    version_id: str
    last_modified: datetime
    is_latest: bool
    deleted: bool  # a delete marker: the file was absent from then on
    size: int = 0
    etag: str = ""


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


# Told each event of a run as it happens (--events): {"event": "file", "path": ...}.
EventListener = Callable[[dict[str, Any]], None]


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
    copied: int = 0  # files whose content the bucket held: a server-side copy, no bytes sent
    failures: list[tuple[str, str]] = field(default_factory=list)
    # Done, but not as asked: e.g. a file that kept changing, backed up as it was read.
    warnings: list[tuple[str, str]] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)
    read_bytes: int = 0
    run_id: str | None = None  # the run record this run wrote
    method: str = ""  # how a restore chose its versions, said in the output
    seconds: float = 0.0
    listener: EventListener | None = field(default=None, repr=False)

    def emit(self, event: str, **fields: Any) -> None:
        """Tell the listener, if any, what just happened (--events)."""
        if self.listener:
            self.listener({"event": event, **fields})

    @property
    def deleted_verb(self) -> str:
        """A dry run says what it would have done, in the same words."""
        return "would delete" if self.action.startswith("would") else "deleted"

    @property
    def copied_verb(self) -> str:
        return "would copy" if self.action.startswith("would") else "copied"

    @property
    def exit_code(self) -> int:
        return EXIT_FAILURES if self.failures else EXIT_OK

    def fail(self, name: str, reason: str) -> None:
        """Count a file or object that failed and say so at once; the run goes on."""
        log.error("failed: %s: %s", printable(name), reason)
        self.failures.append((name, reason))
        self.emit("failed", path=name, reason=reason)

    def warn(self, name: str, reason: str) -> None:
        """Count a file that was handled, but not cleanly, and say so at once."""
        log.warning("warning: %s: %s", printable(name), reason)
        self.warnings.append((name, reason))
        self.emit("warning", path=name, reason=reason)

    def refuse_deletions(self, count: int, what: str, refusal: str | None) -> bool:
        """Report a deletion guard's refusal (the run then ends non-zero); True if refused."""
        if refusal:
            self.fail("--delete", f"refused to delete {count} {what}: {refusal}")
        return refusal is not None

    def to_dict(self) -> dict[str, Any]:
        """The --json document (its fields are described in docs/usage.md)."""
        return {
            "action": self.action,
            "files": self.transferred,
            "bytes": self.transferred_bytes,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "excluded": self.excluded,
            "deleted": self.deleted,
            "metadata_updated": self.metadata_updated,
            "copied": self.copied,
            "failed": len(self.failures),
            "failures": [{"path": path, "reason": reason} for path, reason in self.failures],
            "warnings": [{"path": path, "reason": reason} for path, reason in self.warnings],
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
            + (f"{self.copied_verb} {self.copied}, " if self.copied else "")
            + f"unchanged {self.unchanged}, skipped {self.skipped}, "
            + (f"excluded {self.excluded}, " if self.excluded else "")
            + (f"metadata updated {self.metadata_updated}, " if self.metadata_updated else "")
            + (f"{self.deleted_verb} {self.deleted}, " if self.deleted else "")
            + (f"warned {len(self.warnings)}, " if self.warnings else "")
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


CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def printable(name: str) -> str:
    """A path or key safe to print: control characters and undecodable bytes escaped.

    A hostile key such as "\x1b]0;..." must not drive the user's terminal.
    """
    escaped = CONTROL_CHARS.sub(lambda match: f"\\x{ord(match.group()):02x}", name)
    return escaped.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True, slots=True)
class RecordEntry:
    """One file of a run: the object version that holds exactly these bytes."""

    rel: str
    size: int
    md5: str
    etag: str
    version_id: str | None


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
    warning: str | None = None  # done, but not cleanly: said in the summary
    copied_from: str | None = None  # a server-side copy of this object (relative key)
