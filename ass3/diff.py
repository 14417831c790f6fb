"""--diff: which files of a local folder differ from a backup, without transferring data.

The backup's side is a run record (the latest, or --run / --as-of), else a listing;
the folder is walked as a backup walks it (its .ass3ignore and --include/--exclude,
symlinks not followed). Sizes are compared first; a file of the same size is hashed
and its MD5 compared with the recorded one (else the ETag, else the md5 metadata by
one HeadObject), unless the state cache of the backup vouches for it unread.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

from ass3 import selected
from ass3.cache import StateCache, cache_scope, default_cache_path
from ass3.connection import Connection
from ass3.executor import in_parallel
from ass3.files import local_checksum
from ass3.model import (
    SAME_SIZE,
    UNCHANGED,
    FileProblem,
    LocalFile,
    Outcome,
    RemoteObject,
    Step,
    Summary,
)
from ass3.names import normalize_prefix
from ass3.partial import Selection
from ass3.plan import plan_transfers
from ass3.progress import Progress
from ass3.reading import open_scanned
from ass3.remote import s3_checksum
from ass3.s3errors import TRANSFER_ERRORS, describe_client_error
from ass3.scan import Filters, ScanReport, check_directory, scan_tree
from ass3.verdicts import DIFF_KINDS, Report, judge_local, same_content


def diff(
    conn: Connection,
    name: str,
    *,
    bucket: str,
    folder: str,
    run_id: str | None = None,
    as_of: datetime | None = None,
    selection: Selection | None = None,
    cache_path: str | None = None,
    progress: Progress | None = None,
) -> Report:
    """Compare `folder` with backup NAME (the latest run, run `run_id`, or the run at
    `as_of`), or the part of it `selection` takes. Reads the folder and the bucket's
    listings and records; writes nothing."""
    started = time.monotonic()
    prefix = normalize_prefix(name)
    root = check_directory(folder)
    selection = selection or Selection()
    # The folder's .ass3ignore first, as a backup of it reads it, then the options.
    ignored = Filters.for_backup(root, ())
    selection = Selection(selection.paths, Filters([*ignored.lines, *selection.filters.lines]))
    summary = Summary("compared")
    report = Report(summary.action, DIFF_KINDS, "identical", summary)
    scope = cache_scope(conn.client.meta.endpoint_url, bucket, prefix)
    walk = ScanReport()
    with (
        conn.counting(summary.requests),
        StateCache(cache_path or default_cache_path(), scope, read_only=True) as cache,
    ):
        objects, _ = selected.compared_state(
            conn, bucket, prefix, selection, summary, run_id=run_id, as_of=as_of
        )
        backup = (item for item in objects if selected.restorable(item, summary))
        local = scan_tree(root, walk, filters=selection.walk_filter())
        # The backup is planned onto the folder, as a restore would be: the cache is
        # asked the other way round from a backup's plan.
        steps = plan_transfers(
            backup, local, known_unchanged=lambda item, file: cache.cached_md5(file, item)
        )

        def same_size() -> Iterator[Step]:
            """The steps whose contents must be compared; the rest judged on the way."""
            for step in steps:
                report.files += 1
                report.bytes += _size(step)
                if step.reason == SAME_SIZE:
                    if progress:
                        progress.planned(step)
                    yield step
                    continue
                _judge(step, None, report)

        def handle(step: Step, result: tuple[bool | None, int] | str) -> None:
            if progress:
                progress.finished(Outcome(step.rel, transferred=True, size=_size(step)))
            if isinstance(result, str):
                summary.fail(step.rel, result)
                return
            same, read = result
            summary.read_bytes += read
            if same is None:
                summary.warn(
                    step.rel, "cannot be compared: no MD5 recorded, in its metadata or as its ETag"
                )
                return
            _judge(step, same, report)

        in_parallel(conn.workers, same_size(), lambda step: _compare(conn, bucket, step), handle)
    for rel, reason in walk.problems:
        summary.fail(rel, reason)
    summary.seconds = time.monotonic() - started
    return report


def _size(step: Step) -> int:
    entry = step.source or step.target
    assert entry is not None
    return entry.size


def _judge(step: Step, same: bool | None, report: Report) -> None:
    backup = step.source if isinstance(step.source, RemoteObject) else None
    local = step.target if isinstance(step.target, LocalFile) else None
    finding = None if step.reason == UNCHANGED else judge_local(step.rel, backup, local, same)
    if finding is None:
        report.ok += 1
    else:
        report.findings.append(finding)


def _compare(conn: Connection, bucket: str, step: Step) -> tuple[bool | None, int] | str:
    """Hash one local file of the backup's size and compare: whether it holds the
    object's bytes (None: nothing to tell by), and the bytes read; or why not."""
    backup, local = step.source, step.target
    assert isinstance(backup, RemoteObject) and isinstance(local, LocalFile)
    try:  # the very file the walk saw: never a link or a FIFO swapped in since
        with open_scanned(local) as fileobj:
            digest = local_checksum(fileobj, conn.part_size_for(backup.size))
    except FileProblem as error:
        return str(error)
    except OSError as error:
        return error.strerror or str(error)
    same = same_content(backup, digest, etag_is_md5=conn.storage.etag_is_md5)
    if same is None:
        try:
            recorded = s3_checksum(conn, bucket, backup)
        except TRANSFER_ERRORS as error:
            return describe_client_error(error, "HeadObject", bucket)
        same = None if recorded is None else recorded == digest.md5
    return same, local.size
