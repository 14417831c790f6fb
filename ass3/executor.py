"""The executor: runs planned steps on a bounded thread pool and tallies outcomes."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

from boto3.s3.transfer import create_transfer_manager
from s3transfer.manager import TransferManager

from ass3.connection import Connection
from ass3.model import UNCHANGED, FileProblem, Outcome, Step, Summary, printable
from ass3.progress import Progress
from ass3.s3errors import TRANSFER_ERRORS, describe_client_error

log = logging.getLogger("ass3")
T = TypeVar("T")
R = TypeVar("R")


class _Finishing(Generic[T, R]):
    """Work in flight, handed back in the order it finishes.

    Each future puts itself, with its tag, in one queue when it is done, so waiting
    for the next costs the same however much is in flight. (`concurrent.futures.wait`
    and `as_completed` lock and unlock every pending future on each call: with 128
    files queued that was half of what the main thread spent on a run of small files.)
    """

    def __init__(self) -> None:
        self._done: queue.SimpleQueue[tuple[T, Future[R]]] = queue.SimpleQueue()
        self.pending = 0

    def add(self, tag: T, future: Future[R]) -> None:
        self.pending += 1
        future.add_done_callback(lambda done: self._done.put((tag, done)))

    def finished(self) -> list[tuple[T, Future[R]]]:
        """Wait until something finishes; then all that has finished by now."""
        ready = [self._done.get()]
        while True:
            try:
                ready.append(self._done.get_nowait())
            except queue.Empty:
                break
        self.pending -= len(ready)
        return ready

    def all(self) -> Iterator[tuple[T, Future[R]]]:
        """Everything still in flight, as it finishes."""
        while self.pending:
            yield from self.finished()


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


def execute(
    conn: Connection,
    steps: Iterable[Step],
    run_step: Callable[[Step, TransferManager], Outcome],
    summary: Summary,
    on_outcome: Callable[[Outcome], None] | None,
    on_failure: Callable[[Step], None] | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Run steps on `conn.workers` threads; a failed step is recorded, the rest go on.

    Steps are consumed as they are planned, with a bounded number queued, so memory
    stays flat. Big files go through one shared s3transfer manager. On Ctrl-C the
    queued steps are dropped and the manager cancels the transfers in flight, which
    aborts their multipart uploads (or keeps them for the next run to resume: see
    `ass3.resume`), and `stop` is set for the work s3transfer does not do to give up.
    An exception `guarded` does not expect (a bug) is not one file's failure: it
    reaches this thread through the step's future and stops the run the same way,
    for `run_main` to report as an internal error.
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

    def collect(finished: Iterable[tuple[None, Future[Outcome | tuple[Step, str]]]]) -> None:
        for _, future in finished:
            _record(summary, future.result(), on_outcome, on_failure, progress)

    executor = ThreadPoolExecutor(max_workers=conn.workers, thread_name_prefix="ass3")
    try:
        with create_transfer_manager(conn.client, conn.transfer_config) as transfers:
            try:
                pending: _Finishing[None, Outcome | tuple[Step, str]] = _Finishing()
                for step in steps:
                    if progress:
                        progress.planned(step)
                    if step.reason == UNCHANGED:  # nothing to read or send: no thread needed
                        _record(
                            summary, run_step(step, transfers), on_outcome, on_failure, progress
                        )
                        continue
                    pending.add(None, executor.submit(guarded, step))
                    if pending.pending >= conn.workers * 4:
                        collect(pending.finished())
                collect(pending.all())
            except BaseException:
                if stop is not None:
                    stop.set()
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
        summary.fail(step.rel, reason)
        if on_failure:
            on_failure(step)
        if progress:
            progress.failed(step)
        return
    if progress:
        progress.finished(result)
    summary.read_bytes += result.read_bytes
    if result.warning:
        summary.warn(result.rel, result.warning)
    if result.copied_from is not None:
        summary.copied += 1
        log.info("%s %s (%s)", summary.copied_verb, printable(result.rel), result.reason)
        done = summary.copied_verb
    elif result.transferred:
        summary.transferred += 1
        summary.transferred_bytes += result.size
        log.info("%s %s (%s)", summary.action, printable(result.rel), result.reason)
        done = summary.action
    elif result.metadata_updated:
        summary.metadata_updated += 1
        log.info("updated the metadata of %s (%s)", printable(result.rel), result.reason)
        done = "updated the metadata of"
    else:
        summary.unchanged += 1
        done = "unchanged"
    summary.emit("file", path=result.rel, action=done, reason=result.reason, bytes=result.size)
    if on_outcome:
        on_outcome(result)


def in_parallel(
    workers: int,
    items: Iterable[T],
    work: Callable[[T], R],
    handle: Callable[[T, R], None],
    stop: threading.Event | None = None,
) -> None:
    """Run `work` on each of `items` on `workers` threads, and `handle` each result in
    this thread as it is ready.

    For work that only reads (a check, a diff): items are taken as results come in,
    with a bounded number queued, so memory stays flat. On Ctrl-C (or any exception,
    `handle`'s included) queued work is dropped and `stop` is set, for long work to
    give up early. `work` turns the errors it expects into results: any other
    exception is a bug and reaches the caller.
    """
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ass3")
    try:
        pending: _Finishing[T, R] = _Finishing()
        for item in items:
            pending.add(item, executor.submit(work, item))
            if pending.pending >= workers * 4:
                for done, future in pending.finished():
                    handle(done, future.result())
        for done, future in pending.all():
            handle(done, future.result())
    except BaseException:
        if stop is not None:
            stop.set()
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        executor.shutdown(wait=True)
