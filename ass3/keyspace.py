"""Listing a big backup in parallel, still as one stream in key order.

A listing page holds 1000 keys, and each page names where the next one starts, so a
plain listing of a million keys is a thousand round trips one after another before
the last decision can be made. Here the first page is read as before (a backup that
fits in it costs its one request, as always). When there is more, one ListObjectsV2
with Delimiter '/' over the rest shows the folders that follow, in which a folder of
any size is one line (going a few levels down when there is one folder only, as in
home/USER/...). Their names cut the rest of the key space into ranges, (START, END]
in key order; a few threads list one range each (StartAfter=START, stopping past END)
into a queue of a few pages, and the ranges are read back one after the other, so the
caller still sees one stream in key order, and memory stays at a few pages per thread
however big the backup is. A range ends by reading one page past its END, so the cost
is at most one request more per range, on top of one per 1000 keys.

The ranges rely on the server listing and starting after keys in UTF-8 byte order,
which Amazon S3 does; `remote.list_remote` uses this only there.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypedDict

from ass3.connection import Connection
from ass3.plan import key_order

if TYPE_CHECKING:
    from types_boto3_s3.type_defs import ListObjectsV2OutputTypeDef, ObjectTypeDef

# Threads listing ranges at once (never more than the run's workers), and ranges per
# thread: more ranges balance uneven folders better, each costs up to one request.
LISTING_THREADS = 16
RANGES_PER_THREAD = 2
# Pages a range may list ahead of the reader: memory is at most threads x (this + 1)
# pages, the one in hand included.
QUEUE_PAGES = 4
# How many single folders to go down through looking for several (home/USER/...).
MAX_DEPTH = 4
# How often a thread waiting on a full queue looks whether the reader has gone.
_POLL_SECONDS = 0.05


class ListArgs(TypedDict, total=False):
    """The optional arguments of one ListObjectsV2 pass."""

    Delimiter: str
    StartAfter: str


Range = tuple[str, str | None]  # (START, END]: keys after START up to END; None: to the end


def split_points(folders: Sequence[str], after: str, ranges: int) -> list[str]:
    """Where to cut the keys after `after` into at most `ranges` ranges: the folder
    names (CommonPrefixes) after it, in key order, thinned out evenly."""
    points = sorted({name for name in folders if key_order(name) > key_order(after)}, key=key_order)
    cuts = max(ranges - 1, 0)
    if len(points) > cuts:
        step = len(points) / cuts if cuts else 0
        points = [points[int(index * step)] for index in range(cuts)]
    return points


def ranges_between(after: str, points: Sequence[str]) -> list[Range]:
    """(after, p1], (p1, p2], ..., (pN, end): consecutive, so together they hold every
    key after `after` exactly once."""
    starts = [after, *points]
    ends: list[str | None] = [*points, None]
    return list(zip(starts, ends, strict=True))


def in_range(key: str, end: str | None) -> bool:
    """Whether a key listed after a range's START is still inside it."""
    return end is None or key_order(key) <= key_order(end)


def folder_of(key: str, prefix: str) -> str | None:
    """The folder directly below `prefix` that holds `key` ('P/a/' for 'P/a/b/c'); None
    for a key directly in `prefix`."""
    slash = key.find("/", len(prefix))
    return key[: slash + 1] if slash >= 0 else None


def list_keys(
    conn: Connection, bucket: str, prefix: str, *, split: bool, delimiter: str | None = None
) -> Iterator[ObjectTypeDef]:
    """The objects whose keys start with `prefix`, in the order the server lists them;
    in parallel ranges after the first page when `split` (see the module's docstring)."""
    options: ListArgs = {"Delimiter": delimiter} if delimiter else {}
    pages = _pages(conn, bucket, prefix, options)
    first = next(pages, None)
    if first is None:
        return
    contents = first.get("Contents", [])
    yield from contents
    if not first.get("IsTruncated"):
        return
    if not split or delimiter or not contents:
        for page in pages:
            yield from page.get("Contents", [])
        return
    pages.close()
    yield from _after_first_page(conn, bucket, prefix, contents[-1]["Key"])


def _pages(
    conn: Connection, bucket: str, prefix: str, options: ListArgs
) -> Generator[ListObjectsV2OutputTypeDef, None, None]:
    paginator = conn.client.get_paginator("list_objects_v2")
    yield from paginator.paginate(Bucket=bucket, Prefix=prefix, **options, **conn.owner_args())


def _after_first_page(
    conn: Connection, bucket: str, prefix: str, last: str
) -> Iterator[ObjectTypeDef]:
    """Every key after `last`: through ranges listed in parallel when the folders after
    it allow a cut, else one page after the other."""
    threads = min(conn.workers, LISTING_THREADS)
    points: list[str] = []
    level = prefix
    for _ in range(MAX_DEPTH):
        page = _one_page(conn, bucket, level, {"Delimiter": "/", "StartAfter": last})
        folders = [entry["Prefix"] for entry in page.get("CommonPrefixes", [])]
        if level == prefix and not folders and folder_of(last, prefix) is None:
            # One flat folder: this page is the plain listing's next page; go on from it.
            contents = page.get("Contents", [])
            yield from contents
            if page.get("IsTruncated") and contents:
                yield from _sequential(conn, bucket, prefix, contents[-1]["Key"])
            return
        points = split_points([*points, *folders], last, threads * RANGES_PER_THREAD)
        if len(points) >= 2 or page.get("IsTruncated"):
            break
        below = points[-1] if points else folder_of(last, level)
        if below is None or below == level:
            break
        level = below
    if not points:
        yield from _sequential(conn, bucket, prefix, last)
        return
    yield from _chained(conn, bucket, prefix, ranges_between(last, points), threads)


def _one_page(
    conn: Connection, bucket: str, prefix: str, options: ListArgs
) -> ListObjectsV2OutputTypeDef:
    return conn.client.list_objects_v2(Bucket=bucket, Prefix=prefix, **options, **conn.owner_args())


def _sequential(conn: Connection, bucket: str, prefix: str, after: str) -> Iterator[ObjectTypeDef]:
    for page in _pages(conn, bucket, prefix, {"StartAfter": after}):
        yield from page.get("Contents", [])


class _Done:
    """The end of one range's pages in its queue."""


_DONE = _Done()
Batch = list["ObjectTypeDef"] | _Done | Exception


def _chained(
    conn: Connection, bucket: str, prefix: str, ranges: Sequence[Range], threads: int
) -> Iterator[ObjectTypeDef]:
    """Each range listed by a thread of a pool into its own bounded queue; the queues
    read in the ranges' order.

    Ranges start in their order on a first-in, first-out pool, so the range being read
    has always started, and a thread waiting for room in a later range's queue never
    holds up the one being read. An error in a thread (access denied, a dropped
    connection after the retries) is raised here, in the reader. When the reader stops
    early, the threads see `stop` and end after at most the request they are in.
    """
    stop = threading.Event()
    queues: list[queue.Queue[Batch]] = [queue.Queue(maxsize=QUEUE_PAGES) for _ in ranges]
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ass3-list")
    try:
        for (start, end), pages in zip(ranges, queues, strict=True):
            pool.submit(_fill, conn, bucket, prefix, start, end, pages, stop)
        for pages in queues:
            while not isinstance(batch := pages.get(), _Done):
                if isinstance(batch, Exception):
                    raise batch
                yield from batch
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)


def _fill(
    conn: Connection,
    bucket: str,
    prefix: str,
    start: str,
    end: str | None,
    pages: queue.Queue[Batch],
    stop: threading.Event,
) -> None:
    """List the keys after `start` up to `end` into `pages`, a page at a time."""
    try:
        for page in _pages(conn, bucket, prefix, {"StartAfter": start}):
            if stop.is_set():
                return
            contents = page.get("Contents", [])
            inside = [item for item in contents if in_range(item["Key"], end)]
            if inside:
                _put(pages, inside, stop)
            if len(inside) < len(contents):
                break
        _put(pages, _DONE, stop)
    except Exception as error:  # raised again in the reader, which knows what to make of it
        _put(pages, error, stop)


def _put(pages: queue.Queue[Batch], batch: Batch, stop: threading.Event) -> None:
    """Wait for room in the queue, unless the reader has gone."""
    while not stop.is_set():
        try:
            pages.put(batch, timeout=_POLL_SECONDS)
            return
        except queue.Full:
            continue
