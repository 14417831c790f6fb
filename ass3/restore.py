"""The restore: choose what to restore (current objects, a run's record, or
versions as of a time), plan it against what is on disk, download, remove the
leftovers of a killed restore, delete extras, then give back the tree the run record
holds (folders, symlinks, hard links, owners: `treeio`).

Nothing is written or deleted through a symlink from DESTINATION/NAME down: that
folder is checked, then held open for the run, and every file below it is reached
from it one folder at a time (`files.folder_of`).
"""

from __future__ import annotations

import itertools
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime

from ass3 import history, selected
from ass3.connection import Connection
from ass3.download import restore_step
from ass3.executor import Counted, execute
from ass3.files import Placements, open_root, remove_below
from ass3.listings import list_backups
from ass3.model import (
    Ass3Error,
    EventListener,
    FileProblem,
    LocalFile,
    Outcome,
    RemoteObject,
    Step,
    Summary,
    plural,
    printable,
)
from ass3.names import (
    restore_prefix,
    unsafe_key_reason,
)
from ass3.partial import Selection
from ass3.plan import deletion_refusal, plan_transfers, sort_local_only
from ass3.progress import Progress
from ass3.records import RunRecord
from ass3.remote import bucket_versioning
from ass3.scan import ScanReport, scan_tree
from ass3.timeline import choose_run, old_run_refusal
from ass3.tree import Tree
from ass3.treeio import TreeRestore
from ass3.treeplan import TreeOptions

log = logging.getLogger("ass3")


def _local_files(root: str, selection: Selection) -> Iterator[LocalFile]:
    """What already stands below the restore root, temporaries included (see
    `sort_local_only`); symlinks are skipped, never followed. Only what the selection
    takes is walked, so nothing else can be planned, let alone deleted."""
    if not os.path.isdir(root):  # a dry run into a folder that is not there yet
        return
    yield from scan_tree(root, ScanReport(), filters=selection.walk_filter())


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
    selection: Selection,
) -> tuple[Iterator[RemoteObject], RunRecord | None]:
    """The objects to restore: the current ones, a recorded run's, or those as of a
    time, of them those the selection takes (`selected`: only the named paths are
    listed); and the record that goes with them, for its tree and its totals: the
    newest one, the run's, or none."""
    if run_id is None and as_of is None:
        objects = selected.current_objects(conn, bucket, prefix, selection, summary)
        return objects, history.latest_record(conn, bucket, prefix)
    # --run names its record itself: a bad one is its own one-line error, not a warning.
    run_ids = history.list_run_ids(conn, bucket, prefix, warn=run_id is None)
    versioning = bucket_versioning(conn, bucket)
    chosen = choose_run(run_ids, versioning, run_id=run_id, as_of=as_of, where=(bucket, prefix))
    if chosen is None:
        assert as_of is not None
        summary.method = (
            f"object versions as of {as_of:%Y-%m-%d %H:%M:%S %Z} (no run records: "
            "chosen by LastModified, one-second resolution)"
        )
        return iter(selected.versions_as_of(conn, bucket, prefix, as_of, selection, summary)), None
    if run_id is None:  # chosen by time: a bad record gives way to the newest good one before
        record = history.record_as_of(conn, bucket, prefix, run_ids, chosen)
        chosen = record.run_id
    else:
        record = history.load_record(conn, bucket, prefix, chosen)
    refusal = old_run_refusal(
        chosen, run_ids, versioning, record_versioned=record.versioned, bucket=bucket
    )
    if refusal:
        raise Ass3Error(refusal)
    summary.method = (
        f"run {chosen} ({record.time.astimezone():%Y-%m-%d %H:%M:%S %Z}), from its run record"
    )
    return selected.recorded_objects(prefix, record, selection, summary), record


def _remove_leftovers(
    summary: Summary, leftovers: list[Step], root: str, root_fd: int | None
) -> None:
    """Remove the temporaries a killed restore left beside files of this backup."""
    for step in leftovers:
        assert isinstance(step.target, LocalFile)
        if root_fd is not None:
            try:
                remove_below(root_fd, root, step.rel)
            except FileNotFoundError:
                continue
            except FileProblem as error:
                summary.warn(step.target.path, str(error))
                continue
            except OSError as error:
                summary.warn(step.target.path, error.strerror or str(error))
                continue
        verb = "would remove" if root_fd is None else "removed"
        # Said without -v: the tool deleted a file, and the user should know which.
        log.warning("%s %s (left by an interrupted restore)", verb, printable(step.target.path))


def _delete_local_extras(
    summary: Summary,
    extras: list[Step],
    refusal: str | None,
    root: str,
    root_fd: int | None,
) -> None:
    """Remove local files the restored tree does not have, unless a guard refused.

    Each is removed relative to DESTINATION/NAME held open since the start, one folder
    at a time and never through a symlink, even one planted after the scan. No
    `root_fd` means a dry run: only said.
    """
    if summary.refuse_deletions(len(extras), "files", refusal):
        return
    for step in extras:
        assert isinstance(step.target, LocalFile)
        try:
            if root_fd is not None:
                remove_below(root_fd, root, step.rel)
        except FileProblem as error:
            summary.fail(step.target.path, str(error))
        except OSError as error:
            summary.fail(step.target.path, error.strerror or str(error))
        else:
            verb = "would delete" if root_fd is None else "deleted"
            log.info("%s %s (not in the backup)", verb, printable(step.rel))
            summary.emit("file", path=step.rel, action=verb, reason="not in the backup")
            summary.deleted += 1


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
    tree_options: TreeOptions | None = None,
    progress: Progress | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    listener: EventListener | None = None,
    selection: Selection | None = None,
) -> Summary:
    """Download backup NAME into DESTINATION/NAME, verifying every file, and the tree
    its run record holds: folders, symlinks, hard links, owners (see `TreeRestore`).

    By default the current objects; `run_id` or `as_of` restore the tree as a
    recorded run saw it, each file fetched by its version. With `delete`, local
    files the tree does not have are removed (guarded like backup's deletions).
    `dry_run` reports what would happen and writes nothing. A `selection` (PATH...,
    --include, --exclude) limits all of it, --delete included, to part of the backup.

    DESTINATION is the user's choice and may be, or pass through, a symlink (`--dest
    /data` where /data links to a mounted disk). DESTINATION/NAME must be a real
    folder: a symlink or a file there stops the run before anything is written or
    deleted, and nothing below it is ever written or deleted through a symlink.
    Temporaries a killed restore left beside files of this backup are removed; files
    that merely look like them are the user's (see `sort_local_only`).
    """
    started = time.monotonic()
    prefix = restore_prefix(name)
    destination = os.path.abspath(destination)
    if os.path.exists(destination) and not os.path.isdir(destination):
        raise Ass3Error(f"{destination}: not a directory")
    root = os.path.join(destination, prefix)
    _refuse_unsafe_root(root)  # at once, before any request
    summary = Summary("would download" if dry_run else "downloaded", listener=listener)
    summary.emit("start", action="restore", bucket=bucket, prefix=prefix, destination=root)
    selection = selection or Selection()
    with conn.counting(summary.requests):
        if progress:
            progress.phase("reading the backup's run records")
        source, record = _restore_source(conn, bucket, prefix, run_id, as_of, summary, selection)
        tree = record.tree if record else None
        if tree is not None and not selection.everything:
            tree = tree.only(selection.selects)
        recorded = (
            [entry for entry in record.files if selection.selects(entry.rel)] if record else []
        )
        if progress:
            progress.phase("")
            if record:  # the totals, from the first second (the listing may add a few)
                progress.expect(len(recorded), sum(entry.size for entry in recorded))
        objects = _first_or_explain(conn, bucket, prefix, source, summary.method, tree)
        with _opened_root(destination, prefix, dry_run=dry_run) as root_fd:
            extras: list[Step] = []
            leftovers: list[Step] = []
            local_files = Counted(_local_files(root, selection))
            restorable = Counted(_restorable(objects, summary))
            placements = Placements()
            work = TreeRestore(
                tree, tree_options or TreeOptions(), root=root, root_fd=root_fd, summary=summary
            )

            def download(steps: Iterable[Step]) -> None:
                execute(
                    conn,
                    steps,
                    lambda step, transfers: restore_step(
                        conn,
                        transfers,
                        bucket,
                        root,
                        root_fd,
                        step,
                        placements,
                        dry_run=dry_run,
                        set_attributes=work.attributes.file,
                    ),
                    summary,
                    work.outcome(on_outcome),
                    progress=progress,
                )

            steps = plan_transfers(restorable, local_files)
            download(work.steps(sort_local_only(steps, extras, leftovers)))
            if progress:
                progress.phase("linking, and setting folders, owners and times")
            work.link(download)
            if record and run_id is None and as_of is None and restorable.count < len(recorded):
                # Files the newest run left that the listing did not show: deleted since by
                # another tool, or lost by a server whose listing skips keys (s3rver does).
                missing = len(recorded) - restorable.count
                summary.warn(
                    prefix,
                    f"the newest run record lists {plural(missing, 'more file')} than the "
                    "bucket listed now; deleted since, or not listed by the server",
                )
            _remove_leftovers(summary, leftovers, root, root_fd)
            if delete:
                refusal = deletion_refusal(
                    len(extras),
                    local_files.count - len(leftovers),
                    source_files=restorable.count,
                    complete=not summary.failures,
                    max_delete=max_delete,
                    force=force,
                )
                _delete_local_extras(summary, extras, refusal, root, root_fd)
            work.finish()  # last: deleting a file moves its folder's mtime
    summary.seconds = time.monotonic() - started
    return summary


def _first_or_explain(
    conn: Connection,
    bucket: str,
    prefix: str,
    objects: Iterator[RemoteObject],
    method: str,
    tree: Tree | None,
) -> Iterator[RemoteObject]:
    """The objects unchanged, once there is at least one (or a tree, which may hold
    only folders and symlinks); else why there are none."""
    first = next(objects, None)
    if first is not None:
        return itertools.chain([first], objects)
    if tree is not None:
        return iter(())
    if method:
        raise Ass3Error(f"backup {prefix!r} held no files then ({method})")
    names = [info.name for info in list_backups(conn, bucket)]
    known = f"backups there: {', '.join(names)}" if names else "it holds no backups"
    raise Ass3Error(f"no backup named {prefix!r} in s3://{bucket}; {known}")


def _root_problem(root: str) -> str | None:
    """Why DESTINATION/NAME cannot be restored into, or None (a real folder, or nothing)."""
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        return None
    except OSError as error:
        return f"cannot use {root}: {error.strerror}"
    if stat.S_ISLNK(st.st_mode):
        return (
            f"{root} is a symlink; restore writes only into a real folder, never through "
            "a link (remove the link, or pass the folder it points to as --dest)"
        )
    if not stat.S_ISDIR(st.st_mode):
        return f"{root} is not a folder; move it away or restore with another --dest"
    return None


def _refuse_unsafe_root(root: str) -> None:
    problem = _root_problem(root)
    if problem:
        raise Ass3Error(problem)


@contextmanager
def _opened_root(destination: str, prefix: str, *, dry_run: bool) -> Iterator[int | None]:
    """DESTINATION/NAME, created and held open for the run; None in a dry run.

    Held open, it stays the folder that was checked: every write and deletion is made
    relative to it, so a link swapped in at DESTINATION/NAME later redirects nothing.
    """
    if dry_run:
        yield None
        return
    root = os.path.join(destination, prefix)
    try:
        os.makedirs(destination, exist_ok=True)
        root_fd = open_root(destination, prefix, create=True)
    except FileProblem as error:  # became a link or a file since the first check
        raise Ass3Error(_root_problem(root) or str(error)) from error
    except OSError as error:
        raise Ass3Error(f"cannot create {root}: {error.strerror}") from error
    try:
        yield root_fd
    finally:
        os.close(root_fd)
