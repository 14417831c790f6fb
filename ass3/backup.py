"""The backup: walk DIR, list the backup's objects, plan, upload, delete, record the run.

`backup()` reads as the sequence of its stages; `_BackupRun` holds what they share
(the summary, the run record being spooled, the scan report), so each stage is a
method of a few lines instead of a closure over the whole run. `RunMarkers` notes
in the state folder which runs are under way, so that the run after one that was
killed aborts the multipart uploads it left, but those it resumes (`ass3.resume`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from s3transfer.manager import TransferManager

from ass3 import history, scan
from ass3.cache import RunMarkers, StateCache, cache_scope, default_cache_path
from ass3.connection import Connection
from ass3.copying import Copier
from ass3.executor import Counted, execute
from ass3.model import (
    Ass3Error,
    EventListener,
    LocalFile,
    Outcome,
    RecordEntry,
    RemoteObject,
    Step,
    Summary,
    plural,
    printable,
)
from ass3.plan import deletion_refusal, plan_transfers, split_extras
from ass3.progress import Progress
from ass3.records import RecordSpool
from ass3.remote import abort_stale_uploads, ensure_bucket, list_remote
from ass3.resumable import UploadJournal, spared_uploads
from ass3.resume import Resumption
from ass3.s3errors import TRANSFER_ERRORS, describe_client_error
from ass3.tree import Tree
from ass3.treescan import TreeRecorder
from ass3.upload import backup_step

log = logging.getLogger("ass3")


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
    xattrs: bool = False,
    keep_days: int | None = None,
    cache_path: str | None = None,
    progress: Progress | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    listener: EventListener | None = None,
) -> Summary:
    """Upload every new or changed regular file under `directory` to s3://bucket/prefix/.

    The state cache spares reading files it can vouch for; `checksum` re-reads all.
    With `delete`, objects whose files are gone are deleted, within the guards of
    `deletion_refusal`. A run that changed anything, files or the tree (folders,
    symlinks, owners, hard links; user xattrs with `xattrs`), ends by writing its run
    record, which holds the tree too. `dry_run` reports what would happen and writes
    nothing, in S3 or on disk. `rules` are ("exclude" | "include", pattern) pairs
    (see `Filters`); objects they leave out are neither compared nor deleted.
    `keep_days` sets how long replaced and deleted versions of this backup are kept
    (a lifecycle rule), after the run.
    After a run of this backup that did not end cleanly, the run first aborts the
    incomplete multipart uploads left under PREFIX/ (see `RunMarkers`), but those it
    will resume (see `ass3.resume`): a big upload interrupted after a part was sent is
    kept, and the next run sends only the parts missing.
    """
    started = time.monotonic()
    root = scan.check_directory(directory)
    filters = scan.Filters.for_backup(root, rules)
    run = _BackupRun(conn, root, bucket, prefix, filters, dry_run=dry_run, on_outcome=on_outcome)
    run.summary.listener = listener
    run.summary.emit("start", action="backup", source=root, bucket=bucket, prefix=prefix)
    cache_file = cache_path or default_cache_path()
    with conn.counting(run.summary.requests), run.record:
        if not dry_run:
            ensure_bucket(conn, bucket)
        markers = RunMarkers(os.path.dirname(cache_file), run.scope, enabled=not dry_run)
        with markers:
            with (
                StateCache(cache_file, run.scope, read_only=dry_run) as cache,
                run.resumable(cache_file),
            ):
                if markers.unfinished:
                    run.abort_left_uploads(markers)
                extras = run.transfer(
                    cache,
                    checksum=checksum,
                    recorder=TreeRecorder(xattrs=xattrs, hardlinks=not follow_symlinks),
                    follow_symlinks=follow_symlinks,
                    progress=progress,
                )
                run.report_scan()
                if delete and extras and progress:
                    progress.phase("deleting")
                if delete and extras:
                    run.read_ahead()
                deleted = (
                    run.delete(extras, max_delete=max_delete, force=force) if delete else set()
                )
                run.keep_in_record(extras, deleted)
                if run.changed_anything or run.tree_changed(cache):
                    if progress:  # may list every version of the backup: minutes for many
                        progress.phase("looking up versions, writing the run record")
                    history.record_run(
                        conn,
                        bucket,
                        prefix,
                        root,
                        run.summary,
                        run.record,
                        run.tree,
                        run.previous,
                        run.versioning,
                    )
                    if run.summary.run_id and run.tree is not None:
                        cache.remember_tree(run.tree.digest)
                run.settle(markers)
                run.join_read_ahead()
            if keep_days and not dry_run:
                if progress:
                    progress.phase("setting the retention rule")
                _keep_versions(conn, bucket, prefix, keep_days, run.summary)
            markers.finished(uploads_left=run.uploads_may_be_left)
    run.summary.seconds = time.monotonic() - started
    return run.summary


def _keep_versions(conn: Connection, bucket: str, prefix: str, days: int, summary: Summary) -> None:
    """--keep-days, after the data: a store that cannot keep the rule gets a warning,
    which never turns a good backup into a failed one."""
    try:
        history.set_retention(conn, bucket, prefix, days)
    except Ass3Error as error:
        summary.warn("--keep-days", f"versions are kept as the bucket keeps them: {error}")


class _BackupRun:
    """The state one backup run shares between its stages."""

    def __init__(
        self,
        conn: Connection,
        root: str,
        bucket: str,
        prefix: str,
        filters: scan.Filters,
        *,
        dry_run: bool,
        on_outcome: Callable[[Outcome], None] | None,
    ) -> None:
        self.conn = conn
        self.root = root
        self.bucket = bucket
        self.prefix = prefix
        self.filters = filters
        self.dry_run = dry_run
        self.on_outcome = on_outcome
        self.summary = Summary("would upload" if dry_run else "uploaded")
        self.scope = cache_scope(conn.client.meta.endpoint_url, bucket, prefix)
        self.report = scan.ScanReport()
        self.record = RecordSpool()  # the run record's lines as outcomes arrive; sorted later
        self.cache: StateCache | None = None
        self.local_files: Counted[LocalFile] = Counted(())
        self.remote: Counted[RemoteObject] = Counted(())
        self.recorder: TreeRecorder | None = None
        self._tree: Tree | None = None
        self.previous = history.PreviousRecord(conn, bucket, prefix)  # read once, if needed
        self.versioning = history.bucket_versioning_ahead(conn, bucket)  # for the record
        self._record_inputs = history.ReadAhead(self._versions_known, "ass3-record-inputs")
        self.copier = Copier(conn, bucket, prefix, root, self.previous)
        # A big file failed: s3transfer aborts its upload, but that request may have
        # failed too (a lost connection fails both), so the next run looks.
        self.uploads_may_be_left = False
        self.stop = threading.Event()  # set when the run is interrupted
        self.resumption: Resumption | None = None
        # Set when the cleanup left nothing but uploads to resume: settled once they are.
        self.settle_after_resuming: frozenset[str] = frozenset()

    @contextmanager
    def resumable(self, cache_file: str) -> Iterator[None]:
        """Inside the block, big uploads are recorded in the state cache's file, kept
        when interrupted after a part was sent, and resumed (never in a dry run)."""
        if self.dry_run:
            yield
            return
        journal = UploadJournal(cache_file, self.scope)
        with journal, Resumption(self.conn, journal, self.stop) as resumption:
            self.resumption = resumption
            try:
                yield
            finally:
                self.resumption = None

    def abort_left_uploads(self, markers: RunMarkers) -> None:
        """An earlier run did not end cleanly: abort the multipart uploads it left, but
        those this machine will resume, unless older than RESUME_DAYS."""
        pending = self.resumption.journal.pending() if self.resumption else []
        spare = frozenset(spared_uploads(pending, now=time.time()))
        cleanup = abort_stale_uploads(self.conn, self.bucket, self.prefix, spare=spare)
        if cleanup.aborted:
            log.info(
                "aborted %s left under %s/ by an interrupted run",
                plural(cleanup.aborted, "incomplete upload"),
                printable(self.prefix),
            )
        if not cleanup.unsettled:
            self.settle_after_resuming = cleanup.spared
            if not cleanup.spared:
                markers.settled()

    def settle(self, markers: RunMarkers) -> None:
        """The uploads the cleanup spared were resumed (or aborted) by this run: the
        unclean run that left them needs no more checks."""
        spared = self.settle_after_resuming
        pending = self.resumption.journal.pending() if self.resumption else []
        if spared and not spared & {upload.upload_id for upload in pending}:
            markers.settled()

    def transfer(
        self,
        cache: StateCache,
        *,
        checksum: bool,
        recorder: TreeRecorder,
        follow_symlinks: bool,
        progress: Progress | None,
    ) -> list[Step]:
        """Plan the walk against the listing and carry the plan out; the steps left
        over are the objects whose files are gone. The walk tells `recorder` the tree."""
        self.cache = cache
        self.recorder = recorder
        walk = scan.scan_tree(
            self.root,
            self.report,
            filters=self.filters,
            follow_symlinks=follow_symlinks,
            tree=recorder,
        )
        self.local_files = Counted(walk)
        self.remote = Counted(self._remote_objects())
        if progress:
            progress.phase(f"to s3://{self.bucket}/{self.prefix}/")
            progress.count_ahead(
                scan.scan_tree(
                    self.root,
                    scan.ScanReport(),
                    filters=self.filters,
                    follow_symlinks=follow_symlinks,
                )
            )
        steps = plan_transfers(
            self.local_files, self.remote, known_unchanged=None if checksum else cache.cached_md5
        )
        extras: list[Step] = []
        deferred: list[Step] = []  # copies that must wait for the rest (see `Copier.split`)
        self._execute(self.copier.split(split_extras(steps, extras), deferred), progress)
        if deferred:
            self.copier.settle(deferred)
            self._execute(deferred, progress)
        return extras

    def _execute(self, steps: Iterable[Step], progress: Progress | None) -> None:
        execute(
            self.conn,
            steps,
            self._step,
            self.summary,
            self._finished,
            self._failed,
            progress,
            self.stop,
        )

    def _remote_objects(self) -> Iterator[RemoteObject]:
        """The backup's objects; those the filters leave out stay, untouched, in the record."""
        listing = list_remote(self.conn, self.bucket, self.prefix, missing_ok=self.dry_run)
        for item in listing:
            if self.filters.excludes_path(item.rel):
                self.record.append(_entry_of(item))
            else:
                yield item

    def read_ahead(self) -> None:
        """This run will write a record: start asking for what it needs while the
        transfers go on, so that its round trips do not follow them."""
        if not self.dry_run:
            self._record_inputs.start()

    def _versions_known(self) -> None:
        """The bucket's versioning, then, if versioned, the previous record, which names
        the versions of the files this run leaves alone (as `history.record_run` asks)."""
        if self.versioning.get() == "Enabled":
            self.previous.get()

    def join_read_ahead(self) -> None:
        """Wait for what was asked ahead: its requests count in this run's summary."""
        self._record_inputs.join()

    def _step(self, step: Step, transfers: TransferManager) -> Outcome:
        return backup_step(
            self.conn,
            transfers,
            self.bucket,
            self.prefix,
            step,
            dry_run=self.dry_run,
            copier=self.copier,
            resumption=self.resumption,
            on_write=self.read_ahead,
        )

    def _finished(self, outcome: Outcome) -> None:
        if outcome.transferred or outcome.copied_from is not None or outcome.metadata_updated:
            self.read_ahead()
            self.copier.wrote(outcome.rel)
        if outcome.seen is not None and self.cache is not None:
            self.cache.remember(outcome.seen)
        if outcome.entry is not None:
            self.record.append(outcome.entry)
        if self.on_outcome:
            self.on_outcome(outcome)

    def _failed(self, step: Step) -> None:
        """A file that failed keeps its previous object, which the record names."""
        self.copier.wrote(step.rel)  # perhaps written: no unpinned copy comes from it
        if isinstance(step.target, RemoteObject):
            self.record.append(_entry_of(step.target))
        if isinstance(step.source, LocalFile) and self.conn.part_size_for(step.source.size):
            self.uploads_may_be_left = True

    def report_scan(self) -> None:
        """What the walk skipped or could not read goes into the summary."""
        self.summary.skipped = len(self.report.skipped)
        self.summary.excluded = self.report.excluded
        for path, reason in self.report.skipped:
            log.info("skipped %s (%s)", printable(path), reason)
        for path, reason in self.report.problems:
            self.summary.fail(path, reason)
        problems = self.recorder.xattr_problems if self.recorder else []
        if problems:
            path, reason = problems[0]
            more = f" (and {len(problems) - 1} more entries)" if len(problems) > 1 else ""
            self.summary.warn(path, f"user xattrs not recorded: {reason}{more}")

    def delete(self, extras: list[Step], *, max_delete: str | None, force: bool) -> set[str]:
        """Delete the objects whose files are gone, unless a guard refuses; the keys deleted."""
        refusal = deletion_refusal(
            len(extras),
            self.remote.count,
            source_files=self.local_files.count,
            complete=not self.report.unreadable,
            max_delete=max_delete,
            force=force,
        )
        if self.summary.refuse_deletions(len(extras), "objects", refusal):
            return set()
        keys = [step.target.key for step in extras if isinstance(step.target, RemoteObject)]
        if self.dry_run:
            deleted = set(keys)
        else:
            deleted = _delete_objects(self.conn, self.bucket, keys, self.summary)
        verb = "would delete" if self.dry_run else "deleted"
        for step in extras:
            if isinstance(step.target, RemoteObject) and step.target.key in deleted:
                log.info("%s %s (gone from the source)", verb, printable(step.rel))
                self.summary.emit("file", path=step.rel, action=verb, reason="gone from the source")
        self.summary.deleted = len(deleted)
        return set() if self.dry_run else deleted

    def keep_in_record(self, extras: list[Step], deleted: set[str]) -> None:
        """Objects whose files are gone but that were not deleted are still in the backup."""
        for step in extras:
            if isinstance(step.target, RemoteObject) and step.target.key not in deleted:
                self.record.append(_entry_of(step.target))

    @property
    def tree(self) -> Tree | None:
        """The tree the walk saw, once it is done."""
        if self._tree is None and self.recorder is not None:
            self._tree = self.recorder.tree()
        return self._tree

    def tree_changed(self, cache: StateCache) -> bool:
        """Whether the tree differs from the one the latest run record holds: from the
        digest the state cache keeps, else (a cold cache) the record's own metadata,
        which costs a listing of the runs and a HeadObject once."""
        tree = self.tree
        if self.dry_run or tree is None:
            return False
        known = cache.tree_digest()
        if known is None:
            known = history.latest_tree_digest(self.conn, self.bucket, self.prefix)
            if known == tree.digest:
                cache.remember_tree(known)
        if known == tree.digest:
            return False
        log.info("the tree changed since the last run record (folders, symlinks or owners)")
        return True

    @property
    def changed_anything(self) -> bool:
        """Whether this run needs a run record of its own: a dry run never does."""
        summary = self.summary
        return not self.dry_run and bool(
            summary.transferred or summary.copied or summary.deleted or summary.metadata_updated
        )


def _entry_of(remote: RemoteObject) -> RecordEntry:
    """A record line for an object the run did not read. Its MD5 comes from the previous
    record when written; the ETag is not trusted to be one (SSE-KMS), and where it stays
    unknown a restore checks the object's md5 metadata instead."""
    return RecordEntry(remote.rel, remote.size, "", remote.etag, None)


def _delete_objects(conn: Connection, bucket: str, keys: list[str], summary: Summary) -> set[str]:
    """DeleteObjects in batches of 1000 (the most one request takes); the keys deleted."""
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
                summary.fail(key, describe_client_error(error, "DeleteObjects", bucket))
            continue
        failed = {item["Key"]: item.get("Message", "") for item in response.get("Errors", [])}
        for key, message in failed.items():
            summary.fail(key, f"not deleted: {message}")
        deleted.update(key for key in batch if key not in failed)
    return deleted
