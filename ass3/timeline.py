"""The pure rules of a backup's history: which run or which object versions stood at a
given time, whether a restore may use them, and which version each line of a new run
record names. No I/O: `history` reads and writes, these decide.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime

from ass3.model import Ass3Error, ObjectVersion, RecordEntry, RemoteObject
from ass3.plan import key_order
from ass3.records import RunRecord, run_time


def fallback_order(run_ids: Sequence[str], chosen: str) -> list[str]:
    """The runs to try, in turn, for run `chosen` picked by time: it, then each earlier
    one, newest first. A bad record is skipped for the newest good one before it."""
    return sorted((run_id for run_id in run_ids if run_id <= chosen), reverse=True)


_BARE_DATE = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})")


def parse_when(text: str) -> datetime:
    """An ISO 8601 date or date-time; local time unless it names a zone.

    A bare date means the end of that day: "as of Tuesday" includes Tuesday's runs.
    """
    try:
        bare_date = _BARE_DATE.fullmatch(text)
        if bare_date:  # 2026-11-20 or 20261120 (which Python 3.11 reads as midnight)
            year, month, day_of_month = (int(part) for part in bare_date.groups())
            day = datetime(year, month, day_of_month)
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
    run_id: str,
    run_ids: Sequence[str],
    versioning: str,
    *,
    record_versioned: bool,
    bucket: str,
) -> str | None:
    """Why run `run_id` cannot be restored, or None. Only the latest run's files are
    all still current when versioning was off, then or now: older versions are gone."""
    latest = bool(run_ids) and run_id == run_ids[-1]
    if latest or (versioning == "Enabled" and record_versioned):
        return None
    if versioning != "Enabled":
        return (
            f"versioning is {versioning.lower()} on s3://{bucket}: files overwritten since "
            f"run {run_id} are gone, so only the latest run can be restored"
        )
    return (
        f"run {run_id} was recorded while versioning was off on s3://{bucket}: files "
        "overwritten since then are gone, so only the latest run can be restored"
    )


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
