"""The restore: choose what to restore (current objects, a run's record, or
versions as of a time), plan it against what is on disk, download, delete extras.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from datetime import datetime

from ass3 import history, remote
from ass3.connection import Connection
from ass3.download import restore_step
from ass3.executor import Counted, execute
from ass3.files import Placements
from ass3.listings import list_backups
from ass3.model import (
    Ass3Error,
    LocalFile,
    Outcome,
    RemoteObject,
    Step,
    Summary,
    printable,
)
from ass3.names import (
    is_temporary_name,
    normalize_prefix,
    unsafe_key_reason,
)
from ass3.plan import deletion_refusal, plan_transfers, split_extras
from ass3.progress import Progress
from ass3.records import choose_run, objects_of_run, old_run_refusal
from ass3.remote import bucket_versioning
from ass3.scan import ScanReport, scan_tree

log = logging.getLogger("ass3")


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
            summary.fail(item.key, f"refused key: {reason}")
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
        return remote.list_remote(conn, bucket, prefix)
    run_ids = history.list_run_ids(conn, bucket, prefix)
    versioning = bucket_versioning(conn, bucket)
    chosen = choose_run(run_ids, versioning, run_id=run_id, as_of=as_of, where=(bucket, prefix))
    if chosen is None:
        assert as_of is not None
        summary.method = (
            f"object versions as of {as_of:%Y-%m-%d %H:%M:%S %Z} (no run records: "
            "chosen by LastModified, one-second resolution)"
        )
        return iter(history.versions_as_of(conn, bucket, prefix, as_of))
    record = history.load_record(conn, bucket, prefix, chosen)
    refusal = old_run_refusal(chosen, run_ids, versioning, record_versioned=record.versioned)
    if refusal:
        raise Ass3Error(f"versioning is {versioning.lower()} on s3://{bucket}: {refusal}")
    summary.method = (
        f"run {chosen} ({record.time.astimezone():%Y-%m-%d %H:%M:%S %Z}), from its run record"
    )
    return objects_of_run(prefix, record)


def _delete_local_extras(
    summary: Summary, extras: list[Step], refusal: str | None, dry_run: bool
) -> None:
    """Remove local files the restored tree does not have, unless a guard refused."""
    if summary.refuse_deletions(len(extras), "files", refusal):
        return
    for step in extras:
        assert isinstance(step.target, LocalFile)
        verb = "would delete" if dry_run else "delete"
        log.info("%s %s (not in the backup)", verb, printable(step.rel))
        if dry_run:
            summary.deleted += 1
            continue
        try:
            os.unlink(step.target.path)
            summary.deleted += 1
        except OSError as error:
            summary.fail(step.target.path, error.strerror or str(error))


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
    summary = Summary("would download" if dry_run else "downloaded")
    with conn.counting(summary.requests):
        source = _restore_source(conn, bucket, prefix, run_id, as_of, summary)
        objects = _first_or_explain(conn, bucket, prefix, source, summary.method)
        root = _restore_root(destination, prefix, dry_run=dry_run)
        extras: list[Step] = []
        local_files = Counted(_local_files(root, tidy=not dry_run))
        restorable = Counted(_restorable(objects, summary))
        placements = Placements()
        steps = plan_transfers(restorable, local_files)
        execute(
            conn,
            split_extras(steps, extras),
            lambda step, transfers: restore_step(
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


def _first_or_explain(
    conn: Connection, bucket: str, prefix: str, objects: Iterator[RemoteObject], method: str
) -> Iterator[RemoteObject]:
    """The objects unchanged, once there is at least one; else why there are none."""
    first = next(objects, None)
    if first is not None:
        return itertools.chain([first], objects)
    if method:
        raise Ass3Error(f"backup {prefix!r} held no files then ({method})")
    names = [info.name for info in list_backups(conn, bucket)]
    known = f"backups there: {', '.join(names)}" if names else "it holds no backups"
    raise Ass3Error(f"no backup named {prefix!r} in s3://{bucket}; {known}")


def _restore_root(destination: str, prefix: str, *, dry_run: bool) -> str:
    """DESTINATION/NAME, created unless this is a dry run."""
    root = os.path.join(destination, prefix)
    if not dry_run:
        try:
            os.makedirs(root, exist_ok=True)
        except OSError as error:
            raise Ass3Error(f"cannot create {root}: {error.strerror}") from error
    return root
