"""Run records: the format a backup run leaves in the bucket, run ids, and the pure
rules around them: which run a restore uses, which version each line of a new
record names, which object versions stood at a given time.

A record lives at `.ass3/runs/NAME/RUN_ID.json.gz`; the data it points to is
written first, so a record never names a version that does not exist.
"""

from __future__ import annotations

import gzip
import json
import os
import secrets
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from ass3.model import Ass3Error, ObjectVersion, RecordEntry, RemoteObject
from ass3.names import RESERVED_PREFIX
from ass3.plan import key_order

RUNS_PREFIX = f"{RESERVED_PREFIX}/runs"
RECORD_SUFFIX = ".json.gz"
RECORD_FORMAT = 1
_RUN_TIME_FORMAT = "%Y%m%dT%H%M%S.%fZ"


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
        self._read_since_append = False

    def append(self, entry: RecordEntry) -> None:
        """Add a line at the end, wherever a reading of the spool left off."""
        version = entry.version_id or ""
        if self._read_since_append:  # seeking flushes: only after a read moved the position
            self._file.seek(0, os.SEEK_END)
            self._read_since_append = False
        self._file.write(f"{entry.rel}\t{entry.size}\t{entry.md5}\t{entry.etag}\t{version}\n")

    def __iter__(self) -> Iterator[RecordEntry]:
        self._file.flush()
        self._file.seek(0)
        self._read_since_append = True
        for line in self._file:
            rel, size, md5, etag, version = line.rstrip("\n").split("\t")
            yield RecordEntry(rel, int(size), md5, etag, version or None)

    def __enter__(self) -> RecordSpool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()


def new_run_id(now: datetime | None = None) -> str:
    """UTC time to the microsecond plus a random tag: sortable, and unique even for
    two runs in one second (S3's LastModified has one-second resolution)."""
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"{moment.strftime(_RUN_TIME_FORMAT)}-{secrets.token_hex(3)}"


def run_time(run_id: str) -> datetime:
    """When a run was recorded, from its id (taken as the run writes its record)."""
    return datetime.strptime(run_id.split("-", 1)[0], _RUN_TIME_FORMAT).replace(tzinfo=timezone.utc)


def record_key(prefix: str, run_id: str) -> str:
    """Where the record of run `run_id` of backup `prefix` lives in the bucket."""
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


def objects_of_run(prefix: str, record: RunRecord) -> Iterator[RemoteObject]:
    """The objects a run record names, each pinned to its version and MD5."""
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


def choose_run(
    run_ids: Sequence[str],
    versioning: str,
    *,
    run_id: str | None,
    as_of: datetime | None,
    where: tuple[str, str],
) -> str | None:
    """The run whose record a restore uses: `run_id`, else the newest at or before
    `as_of`; None when the backup has no records and object versions must be chosen
    by their LastModified instead. Ass3Error when no earlier state exists.

    `run_ids` are oldest first; `versioning` is the bucket's status ('Enabled',
    'Suspended' or 'Off'); `where` is (bucket, backup name), for the messages.
    """
    if run_id is not None:
        return run_id
    assert as_of is not None
    bucket, prefix = where
    if not run_ids:
        if versioning == "Off":
            raise Ass3Error(
                f"versioning is off on s3://{bucket}: an overwritten file is gone, so "
                "there is no earlier state to restore"
            )
        return None
    chosen = select_run(run_ids, as_of)
    if chosen is None:
        first = run_time(run_ids[0]).astimezone()
        raise Ass3Error(
            f"no run of {prefix!r} at or before {as_of:%Y-%m-%d %H:%M:%S %Z}; "
            f"the first was {first:%Y-%m-%d %H:%M:%S %Z}"
        )
    return chosen


def old_run_refusal(
    run_id: str, run_ids: Sequence[str], versioning: str, *, record_versioned: bool
) -> str | None:
    """Why run `run_id` cannot be restored, or None. Only the latest run's files are
    all still current when versioning was off, then or now: older versions are gone."""
    latest = bool(run_ids) and run_id == run_ids[-1]
    if latest or (versioning == "Enabled" and record_versioned):
        return None
    return f"files overwritten since run {run_id} are gone, so only the latest run can be restored"


# (rel, ETag) -> the VersionId holding exactly those bytes.
KnownVersions = dict[tuple[str, str], str]


def versions_by_content(record: RunRecord) -> KnownVersions:
    """The versions a run record names, by the content they hold."""
    return {(entry.rel, entry.etag): entry.version_id for entry in record.files if entry.version_id}


def versions_missing(entries: Iterable[RecordEntry], known: KnownVersions) -> bool:
    """Whether some line of a new record still lacks its version."""
    return any(
        entry.version_id is None and (entry.rel, entry.etag) not in known for entry in entries
    )


def record_files(
    entries: Iterable[RecordEntry], known: KnownVersions, *, versioned: bool
) -> tuple[RecordEntry, ...]:
    """The lines of a new run record, in key order, each naming its version where known.

    A line the run wrote carries its own version; one it left alone takes the
    version `known` gives its content. Without versioning nothing is filled in: the
    current object is the only one there is.
    """
    lines = (
        entry
        if entry.version_id or not versioned
        else replace(entry, version_id=known.get((entry.rel, entry.etag)))
        for entry in entries
    )
    return tuple(sorted(lines, key=lambda entry: key_order(entry.rel)))


def newest_versions_at(versions: Iterable[ObjectVersion], when: datetime) -> list[RemoteObject]:
    """Each key's newest version at or before `when`, in key order; a key whose newest
    is a delete marker was absent then and is left out.

    LastModified has one-second resolution, so two changes within a second cannot
    be told apart this way: run records are the precise history.
    """
    best: dict[str, ObjectVersion] = {}
    for version in versions:
        if version.last_modified > when:
            continue
        current = best.get(version.key)
        if current is None or version.last_modified > current.last_modified:
            best[version.key] = version
    objects = [
        RemoteObject(
            version.rel,
            version.key,
            version.size,
            version.etag,
            version.last_modified,
            version.version_id,
        )
        for version in best.values()
        if not version.deleted
    ]
    return sorted(objects, key=lambda item: key_order(item.rel))
