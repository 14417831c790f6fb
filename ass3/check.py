"""--check: is a backup still restorable, without restoring it.

With a run record, every object it names must be in the bucket with its recorded
version, size and ETag: one listing pass (ListObjectVersions where the record names
versions, else ListObjectsV2) of only the selected part, no HeadObject per file, no
download. `--read-data` then downloads each of them and verifies every byte against
the recorded MD5 and the ETag, writing nothing to disk (restic's `check --read-data`).
Without a run record only what the bucket itself holds can be compared: a single-part
object's md5 metadata against its ETag (one HeadObject each).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

from ass3 import selected
from ass3.connection import Connection
from ass3.executor import in_parallel
from ass3.files import READ_CHUNK
from ass3.model import (
    META_MD5,
    ObjectVersion,
    Outcome,
    RemoteObject,
    Step,
    Summary,
    VersionArgs,
)
from ass3.names import normalize_prefix
from ass3.partial import Selection
from ass3.plan import multipart_part_count
from ass3.progress import Progress
from ass3.remote import iter_versions, list_remote
from ass3.s3errors import TRANSFER_ERRORS, describe_client_error
from ass3.verdicts import (
    CHECK_KINDS,
    DataVerdict,
    Finding,
    Report,
    digest_of,
    judge_data,
    judge_metadata,
    match_listing,
    metadata_checkable,
    uniform_parts,
)

# Server-side encryption under which an ETag is not the MD5 of the data.
_KMS = ("aws:kms", "aws:kms:dsse")

WITHOUT_RECORD = (
    "without a run record only this can be checked: each object is listed, and a "
    "single-part object's md5 metadata is compared with its ETag (multipart objects "
    "are only listed); --read-data reads every byte"
)


def check(
    conn: Connection,
    name: str,
    *,
    bucket: str,
    run_id: str | None = None,
    as_of: datetime | None = None,
    selection: Selection | None = None,
    read_data: bool = False,
    progress: Progress | None = None,
) -> Report:
    """Check backup NAME as of the latest run (or run `run_id`, or the run at `as_of`),
    or the part of it `selection` takes; with `read_data`, download and verify every
    byte. Nothing is written, in S3 or on disk."""
    started = time.monotonic()
    prefix = normalize_prefix(name)
    selection = selection or Selection()
    summary = Summary("read" if read_data else "checked")
    report = Report(summary.action, CHECK_KINDS, "intact", summary)
    with conn.counting(summary.requests):
        objects, record = selected.compared_state(
            conn, bucket, prefix, selection, summary, run_id=run_id, as_of=as_of
        )
        if record is None and not read_data:
            summary.method += f"; {WITHOUT_RECORD}"
        wanted = _counted((item for item in objects if selected.restorable(item, summary)), report)
        present: Iterable[RemoteObject] = wanted  # without a record: listed just now
        if record is not None:  # the record says what must be there: one listing shows it
            present = _listed(conn, bucket, prefix, selection, list(wanted), report)
        if read_data:
            _read_all(conn, bucket, present, report, progress)
        elif record is None:
            _compare_metadata(conn, bucket, present, report)
        else:
            report.ok += sum(1 for _ in present)
    summary.seconds = time.monotonic() - started
    return report


def _counted(objects: Iterable[RemoteObject], report: Report) -> Iterator[RemoteObject]:
    """The objects passed on, each counted in the report's files and bytes."""
    for item in objects:
        report.files += 1
        report.bytes += item.size
        yield item


def _listed(
    conn: Connection,
    bucket: str,
    prefix: str,
    selection: Selection,
    wanted: Sequence[RemoteObject],
    report: Report,
) -> list[RemoteObject]:
    """The recorded objects the bucket still holds as recorded; a finding for each of
    the others. One paginated pass over the selected part of the backup."""
    versioned = any(item.version_id for item in wanted)
    listing: list[Iterable[RemoteObject | ObjectVersion]] = []
    for under, delimiter in selection.listing_scopes(item.rel for item in wanted):
        if versioned:
            listing.append(iter_versions(conn, bucket, prefix, under=under, delimiter=delimiter))
        else:
            listing.append(list_remote(conn, bucket, prefix, under=under, delimiter=delimiter))
    present = []
    for item, finding in match_listing(wanted, (entry for part in listing for entry in part)):
        if finding is None:
            present.append(item)
        else:
            report.findings.append(finding)
    return present


def _compare_metadata(
    conn: Connection, bucket: str, objects: Iterable[RemoteObject], report: Report
) -> None:
    """Without a record: each single-part object's md5 metadata against its ETag, one
    HeadObject each; multipart objects can only be listed."""

    def checkable() -> Iterator[RemoteObject]:
        for item in objects:
            if metadata_checkable(item):
                yield item
            else:
                report.unverified += 1

    def handle(item: RemoteObject, result: Finding | str | None) -> None:
        if isinstance(result, str):
            report.summary.fail(item.rel, result)
        elif result is None:
            report.ok += 1
        else:
            report.findings.append(result)

    in_parallel(conn.workers, checkable(), lambda item: _head(conn, bucket, item), handle)


def _head(conn: Connection, bucket: str, item: RemoteObject) -> Finding | str | None:
    """`judge_metadata` of one object, or why it could not be asked."""
    try:
        head = conn.client.head_object(
            Bucket=bucket, Key=item.key, **item.pin(), **conn.owner_args()
        )
    except TRANSFER_ERRORS as error:
        return describe_client_error(error, "HeadObject", bucket)
    etag_is_md5 = head.get("ServerSideEncryption") not in _KMS
    return judge_metadata(item, head.get("Metadata", {}).get(META_MD5), etag_is_md5=etag_is_md5)


def _read_all(
    conn: Connection,
    bucket: str,
    objects: Iterable[RemoteObject],
    report: Report,
    progress: Progress | None,
) -> None:
    """--read-data: every object downloaded, on `conn.workers` threads, and verified."""
    summary = report.summary

    def planned() -> Iterator[RemoteObject]:
        for item in objects:
            if progress:
                progress.planned(Step(item.rel, item, None, "read"))
            yield item

    def handle(item: RemoteObject, result: tuple[DataVerdict, int] | str) -> None:
        if progress:
            progress.finished(Outcome(item.rel, transferred=True, size=item.size))
        if isinstance(result, str):
            summary.fail(item.rel, result)
            return
        verdict, read = result
        summary.read_bytes += read
        if verdict.warning:
            summary.warn(item.rel, verdict.warning)
        if verdict.finding:
            report.findings.append(verdict.finding)
        else:
            report.ok += 1

    stop = threading.Event()
    in_parallel(conn.workers, planned(), lambda item: _read(conn, bucket, item, stop), handle, stop)


def _read(
    conn: Connection, bucket: str, item: RemoteObject, stop: threading.Event
) -> tuple[DataVerdict, int] | str:
    """Download one object (its recorded version, else the listed ETag) and judge its
    bytes, keeping none of them; or why it could not be read. Gives up between two
    chunks once `stop` is set (the run was interrupted: nobody waits for the answer)."""
    try:
        sizes = _part_sizes(conn, bucket, item)
        response = conn.client.get_object(
            Bucket=bucket, Key=item.key, **item.pin(), **conn.owner_args()
        )
        body = response["Body"]
        try:
            chunks = itertools.takewhile(lambda _: not stop.is_set(), body.iter_chunks(READ_CHUNK))
            digest, size = digest_of(chunks, sizes)
        finally:
            body.close()
    except TRANSFER_ERRORS as error:
        return describe_client_error(error, "GetObject", bucket)
    etag_is_md5 = response.get("ServerSideEncryption") not in _KMS
    metadata_md5 = response.get("Metadata", {}).get(META_MD5)
    return judge_data(item, digest, size, metadata_md5, etag_is_md5=etag_is_md5), size


def _part_sizes(conn: Connection, bucket: str, item: RemoteObject) -> list[int]:
    """The sizes of the parts a multipart object was uploaded in (none for a single
    part): the tool's own part size for an object it recorded, else as S3 tells them
    by part number (one HeadObject each, for another tool's objects)."""
    count = multipart_part_count(item.etag)
    if not count:
        return []
    own = uniform_parts(item.size, conn.part_size_for(item.size), count) if item.md5 else None
    if own is not None:
        return own
    version: VersionArgs = {"VersionId": item.version_id} if item.version_id else {}
    return [
        conn.client.head_object(
            Bucket=bucket, Key=item.key, PartNumber=number, **version, **conn.owner_args()
        )["ContentLength"]
        for number in range(1, count + 1)
    ]
