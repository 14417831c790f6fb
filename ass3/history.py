"""History in S3: reading and writing run records, object versions for restores
as of a time, --runs, and retention of old versions (lifecycle rules).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from ass3.connection import Connection
from ass3.model import (
    Ass3Error,
    RecordEntry,
    RemoteObject,
    Summary,
    human_bytes,
    plural,
    printable,
)
from ass3.names import normalize_prefix
from ass3.records import (
    RUNS_PREFIX,
    BadRecord,
    RunRecord,
    is_run_id,
    new_run_id,
    read_record,
    record_key,
    record_refusal,
    screen_listing,
)
from ass3.remote import bucket_versioning, iter_versions, lifecycle_rules
from ass3.s3errors import TRANSFER_ERRORS, describe_client_error, error_code, fatal_errors
from ass3.timeline import (
    KnownVersions,
    fallback_order,
    newest_versions_at,
    record_files,
    versions_by_content,
    versions_missing,
)
from ass3.tree import META_TREE_DIGEST, Tree

if TYPE_CHECKING:
    from types_boto3_s3.type_defs import LifecycleRuleUnionTypeDef

log = logging.getLogger("ass3")


# Read a record's body this much at a time, inflating as it comes.
_READ_CHUNK = 1024 * 1024


# How many names a warning about stray objects shows.
_STRAYS_SHOWN = 10


def list_run_ids(conn: Connection, bucket: str, prefix: str, *, warn: bool = True) -> list[str]:
    """The runs recorded for a backup whose records may be read, oldest first.

    Objects that are not RUN_ID.json.gz are left out, with one warning naming them,
    and so are records dated too far ahead or too big to fetch, with one warning each
    (see `records.screen_listing`); `warn=False` leaves the warnings out, for a caller
    that names its run itself. `run_time` reads every id this returns.
    """
    listing = f"{RUNS_PREFIX}/{prefix}/"
    paginator = conn.client.get_paginator("list_objects_v2")
    found = []
    with fatal_errors("ListObjectsV2", bucket):
        for page in paginator.paginate(Bucket=bucket, Prefix=listing, **conn.owner_args()):
            for item in page.get("Contents", []):
                found.append((item["Key"][len(listing) :], item.get("Size", 0)))
    screened = screen_listing(found, datetime.now(timezone.utc))
    if not warn:
        return screened.run_ids
    if screened.strays:
        shown = ", ".join(repr(printable(name)) for name in screened.strays[:_STRAYS_SHOWN])
        more = len(screened.strays) - _STRAYS_SHOWN
        log.warning(
            "warning: ignored %s in s3://%s/%s that %s not run records: %s%s",
            plural(len(screened.strays), "object"),
            bucket,
            printable(listing),
            "is" if len(screened.strays) == 1 else "are",
            shown,
            f" and {more} more" if more > 0 else "",
        )
    for run_id, reason in screened.refused:
        _warn_skipped(prefix, run_id, reason)
    return screened.run_ids


def _warn_skipped(prefix: str, run_id: str, reason: str) -> None:
    log.warning("warning: skipped run record %s of %r: %s", run_id, prefix, reason)


def load_record(conn: Connection, bucket: str, prefix: str, run_id: str) -> RunRecord:
    """The record of run `run_id`, as --run names it. Ass3Error, one line, when there is
    no such run or its record must not be used (see `records.read_record`)."""
    if not is_run_id(run_id):
        raise Ass3Error(
            f"run record {printable(run_id)!r}: not a run id; see --runs for the runs of {prefix!r}"
        )
    try:
        return _fetch_record(conn, bucket, prefix, run_id)
    except BadRecord as error:
        key = record_key(prefix, run_id)
        raise Ass3Error(f"run record s3://{bucket}/{key} is unusable: {error}") from None


def _fetch_record(conn: Connection, bucket: str, prefix: str, run_id: str) -> RunRecord:
    """One run record, read and checked. BadRecord when it must not be used; Ass3Error
    when S3 cannot give it (missing, denied, the connection lost)."""
    key = record_key(prefix, run_id)
    try:
        response = conn.client.get_object(Bucket=bucket, Key=key, **conn.owner_args())
    except ClientError as error:
        if error_code(error) in ("NoSuchKey", "404"):
            known = ", ".join(list_run_ids(conn, bucket, prefix, warn=False)[-5:]) or "none"
            raise Ass3Error(f"no run {run_id!r} of backup {prefix!r}; latest: {known}") from error
        raise Ass3Error(describe_client_error(error, "GetObject", bucket)) from error
    except BotoCoreError as error:
        raise Ass3Error(describe_client_error(error, "GetObject", bucket)) from error
    body = response["Body"]
    try:
        size, now = response.get("ContentLength"), datetime.now(timezone.utc)
        refusal = record_refusal(run_id, size=size, now=now)  # before reading a byte of it
        if refusal:
            raise BadRecord(refusal)
        return read_record(body.iter_chunks(_READ_CHUNK), run_id)
    except (BotoCoreError, OSError) as error:  # the connection lost while reading
        raise Ass3Error(f"run record s3://{bucket}/{key} could not be read: {error}") from error
    finally:
        body.close()


def _newest_good_record(
    conn: Connection, bucket: str, prefix: str, run_ids: Iterable[str]
) -> RunRecord | None:
    """The record of the first of `run_ids` that is good; each bad one before it is
    skipped with one warning line."""
    for run_id in run_ids:
        try:
            return _fetch_record(conn, bucket, prefix, run_id)
        except BadRecord as error:
            _warn_skipped(prefix, run_id, str(error))
    return None


def record_as_of(
    conn: Connection, bucket: str, prefix: str, run_ids: Sequence[str], chosen: str
) -> RunRecord:
    """The record a restore as of a time uses, `chosen` having been picked by time
    from `run_ids`: its own, or if it is bad, the newest good one before it."""
    record = _newest_good_record(conn, bucket, prefix, fallback_order(run_ids, chosen))
    if record is None:
        raise Ass3Error(
            f"no usable run record of {prefix!r} at or before run {chosen} "
            "(each was skipped, see the warnings above)"
        )
    return record


def latest_record(conn: Connection, bucket: str, prefix: str) -> RunRecord | None:
    """The newest good run record, for a restore of the current objects: the tree it
    holds, and the totals to expect. None when there is none, or none S3 gives (said
    once: the files are restored all the same, as before records held trees)."""
    run_ids = list_run_ids(conn, bucket, prefix)
    if not run_ids:
        return None
    try:
        return record_as_of(conn, bucket, prefix, run_ids, run_ids[-1])
    except Ass3Error as error:
        log.warning("warning: folders, symlinks and owners not restored: %s", error)
        return None


def record_run(
    conn: Connection,
    bucket: str,
    prefix: str,
    source: str,
    summary: Summary,
    entries: Iterable[RecordEntry],
    tree: Tree | None = None,
    previous: PreviousRecord | None = None,
    versioning: ReadAhead[str] | None = None,
) -> None:
    """Write the run record: every file of the backup and the version holding it, and
    the tree walked (as far as it concerns those files; its digest, of the whole
    tree walked, goes into the record object's metadata for `latest_tree_digest`).

    Written last, after all the data it points to. Versions of files this run did
    not upload come from the previous record (same ETag; `previous` when the run
    has read it already, or is reading it), else from one ListObjectVersions pass.
    `versioning` is the bucket's versioning status, when the run asked for it ahead.
    """
    versioning = versioning or bucket_versioning_ahead(conn, bucket)
    versioned = _versioning_for_record(versioning.get(), bucket)
    previous = previous or PreviousRecord(conn, bucket, prefix)
    known = _previous_versions(previous) if versioned else {}
    if versioned and versions_missing(entries, known):  # a second pass over the spool
        known.update(_current_versions(conn, bucket, prefix))
    files = record_files(entries, known, versioned=versioned)
    record = RunRecord(
        new_run_id(),
        source,
        summary.transferred,
        summary.deleted,
        len(summary.failures),
        versioned,
        files,
        None if tree is None else tree.restricted_to(entry.rel for entry in files),
    )
    body = record.to_bytes()
    try:
        conn.with_fallbacks(
            lambda: conn.client.put_object(
                Bucket=bucket,
                Key=record_key(prefix, record.run_id),
                Body=body,
                ContentMD5=base64.b64encode(hashlib.md5(body).digest()).decode(),
                ContentType="application/gzip",
                Metadata={META_TREE_DIGEST: tree.digest} if tree is not None else {},
                **conn.owner_args(),
            )
        )
    except TRANSFER_ERRORS as error:
        summary.fail("run record", describe_client_error(error, "PutObject", bucket))
        return
    summary.run_id = record.run_id


def latest_tree_digest(conn: Connection, bucket: str, prefix: str) -> str | None:
    """The tree digest the newest run record of a backup carries in its metadata, or
    None (no record, one written before records held a tree, or S3 cannot say): one
    listing of the runs and one HeadObject. Only ever decides whether a run writes a
    record: a wrong answer costs a record too many, or (planted) one too few."""
    run_ids = list_run_ids(conn, bucket, prefix)
    if not run_ids:
        return None
    key = record_key(prefix, run_ids[-1])
    try:
        head = conn.client.head_object(Bucket=bucket, Key=key, **conn.owner_args())
    except TRANSFER_ERRORS:
        return None
    return head.get("Metadata", {}).get(META_TREE_DIGEST)


def _versioning_for_record(status: str, bucket: str) -> bool:
    """Whether the record can name versions; without versioning only the latest run
    restores, which the user is told."""
    versioned = status == "Enabled"
    if not versioned:
        log.warning(
            "warning: versioning is off on s3://%s: an overwritten file is gone, so only "
            "the latest run can be restored",
            bucket,
        )
    return versioned


# How many of the newest records a backup tries for the versions it did not write.
# They only spare a ListObjectVersions pass, so a run of planted bad records costs at
# most this many requests and warnings, then that pass.
_PREVIOUS_TRIED = 3


T = TypeVar("T")


class ReadAhead(Generic[T]):
    """A value a run needs once, near its end, that it may start fetching early in a
    thread of its own, so that its round trips overlap the transfers instead of
    following them. Fetched at most once; an error in the thread is dropped and met
    again, and told, by the first caller of `get`, which fetches afresh."""

    def __init__(self, fetch: Callable[[], T], name: str) -> None:
        self._fetch, self._name = fetch, name
        self._lock = threading.Lock()  # held while fetching: `get` waits for the thread
        self._fetched: tuple[T] | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Lock()

    def start(self) -> None:
        """Begin fetching in the background, unless begun or fetched already."""
        with self._started:
            if self._thread is None and self._fetched is None:
                self._thread = threading.Thread(target=self._ahead, name=self._name, daemon=True)
                self._thread.start()

    def _ahead(self) -> None:
        with suppress(Exception):
            self.get()

    def get(self) -> T:
        """The value: fetched now, or by the thread (waited for)."""
        with self._lock:
            if self._fetched is None:
                self._fetched = (self._fetch(),)
            return self._fetched[0]

    def join(self) -> None:
        """Wait for the thread, so that every request is counted before the summary."""
        with self._started:
            thread = self._thread
        if thread is not None:
            thread.join()


def bucket_versioning_ahead(conn: Connection, bucket: str) -> ReadAhead[str]:
    """The bucket's versioning status, as the run record needs it, fetched at most once."""
    return ReadAhead(lambda: bucket_versioning(conn, bucket), "ass3-versioning")


class PreviousRecord:
    """The newest good run record of a backup (bad ones skipped with a warning), read
    at most once a run: a backup with new files reads it before its transfers, for
    renames, and the same answer then gives the versions of the files it left alone."""

    def __init__(self, conn: Connection, bucket: str, prefix: str) -> None:
        self._conn, self._bucket, self._prefix = conn, bucket, prefix
        self._ahead = ReadAhead(self._newest, "ass3-previous-record")

    def get(self) -> RunRecord | None:
        """The record, or None if there is none or S3 cannot give it. Ass3Error when the
        runs cannot be listed, which is not remembered: a later call lists again."""
        return self._ahead.get()

    def _newest(self) -> RunRecord | None:
        conn, bucket, prefix = self._conn, self._bucket, self._prefix
        run_ids = list_run_ids(conn, bucket, prefix)
        try:
            newest_first = list(reversed(run_ids))[:_PREVIOUS_TRIED]
            return _newest_good_record(conn, bucket, prefix, newest_first)
        except Ass3Error:
            return None


def _previous_versions(previous: PreviousRecord) -> KnownVersions:
    """The versions the newest good run record names; none if there is none or S3
    cannot give it: ListObjectVersions fills in."""
    record = previous.get()
    return versions_by_content(record) if record else {}


def _current_versions(conn: Connection, bucket: str, prefix: str) -> KnownVersions:
    """The current version of every object of the backup, by (rel, ETag)."""
    return {
        (version.rel, version.etag): version.version_id
        for version in iter_versions(conn, bucket, prefix)
        if version.is_latest and not version.deleted
    }


def versions_as_of(
    conn: Connection, bucket: str, prefix: str, when: datetime
) -> list[RemoteObject]:
    """Without run records: each key's newest version at or before `when` (one
    ListObjectVersions pass; see `newest_versions_at`)."""
    return newest_versions_at(iter_versions(conn, bucket, prefix), when)


def runs(conn: Connection, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """What --runs shows: each recorded run of a backup, oldest first."""
    prefix = normalize_prefix(prefix)
    run_ids = list_run_ids(conn, bucket, prefix)
    if not run_ids:
        raise Ass3Error(f"backup {prefix!r} in s3://{bucket} has no run records")
    result = []
    for run_id in run_ids:
        # A bad record is left out, with a warning: what --runs shows (and --json
        # gives a script) is only runs a restore can use.
        record = _newest_good_record(conn, bucket, prefix, [run_id])
        if record is None:
            continue
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
    if not result:
        raise Ass3Error(
            f"backup {prefix!r} in s3://{bucket} has no usable run records "
            "(each was skipped, see the warnings above)"
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
        rules: list[LifecycleRuleUnionTypeDef] = [
            rule for rule in lifecycle_rules(conn, bucket) if rule.get("ID") != rule_id
        ]
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


def retention_days(conn: Connection, bucket: str) -> dict[str, int]:
    """Backup name -> days its noncurrent versions are kept, from the lifecycle rules."""
    try:
        rules = lifecycle_rules(conn, bucket)
    except (ClientError, BotoCoreError):
        return {}
    kept = {}
    for rule in rules:
        prefix = rule.get("Filter", {}).get("Prefix", "")
        days = rule.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays")
        if rule.get("Status") == "Enabled" and days and prefix.endswith("/"):
            kept[prefix[:-1]] = days
    return kept
