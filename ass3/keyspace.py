"""Listing a big backup in parallel, still as one stream.

A listing page holds 1000 keys, and each page names where the next one starts, so a
plain listing of a million keys is a thousand round trips one after another before
the last decision can be made. Here the first page is read as before (a backup that
fits in it costs its one request, as always). When there is more, one ListObjectsV2
with Delimiter '/' shows the folders and files at the top (going a few levels down
while there is a single folder, as in home/USER/...), and the rest is cut into
segments that threads list at once, each into a queue of a few pages, read back one
after the other in key order. Memory stays at a few pages per thread however big the
backup is.

* Up to a few dozen folders: a segment per folder, listed with that folder as its
  Prefix. Every key under the top is in exactly one folder or among the files seen
  at some level, whatever order the server lists in, so this holds on any server
  that implements Prefix and Delimiter. On a server that may not list in byte order,
  folders are listed whole (the first page's keys are not passed on twice) and no
  StartAfter is trusted. Servers that filter by prefix before sorting (moto, servers
  keeping folders as directories) also do less work per page this way.
* More folders than that, on AWS only: the folder names cut the keys after the first
  page into ranges, (START, END] in key order, each listed with StartAfter=START and
  stopped one page past END; this relies on S3's listing in UTF-8 byte order, which
  Amazon S3 guarantees. Elsewhere such a backup is listed one page after the other.

The cost is one request for the look at the folders, plus at most one per segment
(its last page, part full), on top of one per 1000 keys.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

from ass3.connection import Connection
from ass3.plan import key_order

if TYPE_CHECKING:
    from types_boto3_s3.type_defs import ListObjectsV2OutputTypeDef, ObjectTypeDef

# Threads listing segments at once (never more than the run's workers), and segments
# per thread: more segments balance uneven folders better, each costs up to one request.
LISTING_THREADS = 16
RANGES_PER_THREAD = 2
# Pages a segment may list ahead of the reader: memory is at most threads x (this + 1)
# pages, the one in hand included.
QUEUE_PAGES = 4
# How many single folders to go down through looking for several (home/USER/...).
MAX_DEPTH = 4
# Off AWS, a first page reaching this many top folders skips the look at the folders: with
# folders that small, a cut by folder pays only for a listing of a few pages (5 to 12 folders
# after it, see `pages_ahead` and `_cut`), which one page after another reads nearly as fast.
WIDE = 3
# How often a thread waiting on a full queue looks whether the reader has gone.
_POLL_SECONDS = 0.05


class ListArgs(TypedDict, total=False):
    """The optional arguments of one ListObjectsV2 pass."""

    Delimiter: str
    StartAfter: str


@dataclass(frozen=True)
class Segment:
    """The keys under `prefix`, after `after` if given, up to `end` (inclusive) if given."""

    prefix: str
    after: str | None = None
    end: str | None = None

    @property
    def first(self) -> str:
        """Where the segment starts in key order, to place it among the others."""
        return self.after if self.after is not None else self.prefix


# What the reader gets, in key order: a segment to list, or objects already listed.
Source = Segment | list["ObjectTypeDef"]
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
    for a key directly in `prefix` or not under it."""
    if not key.startswith(prefix):
        return None
    slash = key.find("/", len(prefix))
    return key[: slash + 1] if slash >= 0 else None


def in_key_order(files: Sequence[ObjectTypeDef], segments: Sequence[Segment]) -> list[Source]:
    """Files and segments merged by where each starts. A folder's keys are one unbroken
    stretch of the key order, and no file at its level or above falls inside it, so
    this is the order of every key they hold."""
    starts: list[tuple[bytes, Source]] = [(key_order(item["Key"]), [item]) for item in files]
    starts += [(key_order(segment.first), segment) for segment in segments]
    merged: list[Source] = []
    for _, source in sorted(starts, key=lambda pair: pair[0]):
        if isinstance(source, list) and merged and isinstance(merged[-1], list):
            merged[-1].extend(source)
        else:
            merged.append(source)
    return merged


def list_keys(
    conn: Connection,
    bucket: str,
    prefix: str,
    *,
    split: bool = True,
    byte_order: bool,
    delimiter: str | None = None,
) -> Iterator[ObjectTypeDef]:
    """The objects whose keys start with `prefix`; after the first page, in segments
    listed in parallel when `split` (see the module's docstring). With `byte_order`
    (AWS) the stream is in key order and StartAfter is trusted; without, it holds every
    key once, in the server's order within each segment."""
    options: ListArgs = {"Delimiter": delimiter} if delimiter else {}
    pages = _pages(conn, bucket, prefix, options)
    first = next(pages, None)
    if first is None:
        return
    contents = first.get("Contents", [])
    yield from contents
    if not first.get("IsTruncated"):
        return
    listed = [item["Key"] for item in contents]
    if not byte_order:
        # Off AWS a cut lists whole folders again: worth it for 3 pages or more only, so
        # the second page comes first (a backup of up to 2 pages costs what it always did).
        second = next(pages, None)
        more = second.get("Contents", []) if second else []
        yield from more
        if second is None or not second.get("IsTruncated"):
            return
        listed += [item["Key"] for item in more]
    sources = None
    if split and not delimiter and contents:
        sources = _cut(conn, bucket, prefix, listed, len(contents), byte_order)
    if sources is not None:
        pages.close()
        seen = set() if byte_order else set(listed)
        for item in _chained(conn, bucket, sources):
            if item["Key"] not in seen:
                yield item
        return
    for page in pages:
        yield from page.get("Contents", [])


def _pages(
    conn: Connection, bucket: str, prefix: str, options: ListArgs
) -> Generator[ListObjectsV2OutputTypeDef, None, None]:
    paginator = conn.client.get_paginator("list_objects_v2")
    yield from paginator.paginate(Bucket=bucket, Prefix=prefix, **options, **conn.owner_args())


def pages_ahead(first: Sequence[str], level: str, folders: Sequence[str], page: int) -> float:
    """A guess at how many pages of `page` keys follow the keys listed so far (`first`)
    under `level`, whose folders are `folders`: as many keys per folder still to come as
    were listed per folder reached (the last one counted half, as it goes on)."""
    under = [key for key in first if key.startswith(level)]
    reached = {folder_of(key, level) for key in under} - {None}
    per_folder = len(under) / max(len(reached) - 0.5, 0.5)
    after = [name for name in folders if key_order(name) > key_order(first[-1])]
    return (len(after) + 0.5) * per_folder / page


def _cut(
    conn: Connection,
    bucket: str,
    prefix: str,
    first: Sequence[str],
    page_keys: int,
    byte_order: bool,
) -> list[Source] | None:
    """The keys after those listed so far (`first`, pages of `page_keys` keys) as sources in
    key order; None when no cut helps and the plain listing should go on: when about a
    page is left, or there are more folders than twice the pages left (off AWS)."""
    last = first[-1]
    if not byte_order and len({folder_of(key, prefix) for key in first} - {None}) >= WIDE:
        return None  # the look at the folders would cost a round trip and find no cut
    most = min(conn.workers, LISTING_THREADS) * RANGES_PER_THREAD
    files: list[ObjectTypeDef] = []
    level = prefix
    for _ in range(MAX_DEPTH):
        options: ListArgs = {"Delimiter": "/"}
        if byte_order:
            options["StartAfter"] = last
        page = _one_page(conn, bucket, level, options)
        contents = page.get("Contents", [])
        folders = [entry["Prefix"] for entry in page.get("CommonPrefixes", [])]
        holding = folder_of(last, level) if byte_order else None
        if holding is not None and holding not in folders:
            folders.insert(0, holding)  # S3 may leave out the folder the first page ended in
        if page.get("IsTruncated"):
            if not byte_order:
                return None
            if not folders and contents:  # flat: this page is the plain listing's next one
                return in_key_order(
                    [*files, *contents], [Segment(level, after=contents[-1]["Key"])]
                )
            return _ranges(prefix, last, folders, most)
        files += contents
        if len(folders) != 1:
            break
        level = folders[0]
    ahead = pages_ahead(first, level, folders, page_keys)
    if folders and ahead < 2:  # a page or so left: one after the other costs least
        return None
    if len(folders) > min(most, 2 * ahead + 2):
        return _ranges(prefix, last, folders, min(most, max(2, int(ahead)))) if byte_order else None
    segments = [
        Segment(folder, after=last if byte_order and last.startswith(folder) else None)
        for folder in folders
    ]
    return in_key_order(files, segments)


def _ranges(prefix: str, last: str, folders: Sequence[str], most: int) -> list[Source] | None:
    """Every key under `prefix` after `last` as ranges cut at folder names; None when
    there is no folder to cut at."""
    points = split_points(folders, last, most)
    if not points:
        return None
    return [Segment(prefix, after=start, end=end) for start, end in ranges_between(last, points)]


def _one_page(
    conn: Connection, bucket: str, prefix: str, options: ListArgs
) -> ListObjectsV2OutputTypeDef:
    return conn.client.list_objects_v2(Bucket=bucket, Prefix=prefix, **options, **conn.owner_args())


class _Done:
    """The end of one segment's pages in its queue."""


_DONE = _Done()
Batch = list["ObjectTypeDef"] | _Done | Exception


def _chained(conn: Connection, bucket: str, sources: Sequence[Source]) -> Iterator[ObjectTypeDef]:
    """Each segment listed by a thread of a pool into its own bounded queue; the
    sources read in their order.

    Segments start in their order on a first-in, first-out pool, so the one being read
    has always started, and a thread waiting for room in a later segment's queue never
    holds up the one being read. An error in a thread (access denied, a dropped
    connection after the retries) is raised here, in the reader. When the reader stops
    early, the threads see `stop` and end after at most the request they are in.
    """
    threads = min(conn.workers, LISTING_THREADS)
    stop = threading.Event()
    queues: list[queue.Queue[Batch] | list[ObjectTypeDef]] = []
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ass3-list")
    try:
        for source in sources:
            if isinstance(source, Segment):
                pages: queue.Queue[Batch] = queue.Queue(maxsize=QUEUE_PAGES)
                pool.submit(_fill, conn, bucket, source, pages, stop)
                queues.append(pages)
            else:
                queues.append(source)
        for listed in queues:
            if isinstance(listed, list):
                yield from listed
                continue
            while not isinstance(batch := listed.get(), _Done):
                if isinstance(batch, Exception):
                    raise batch
                yield from batch
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)


def _fill(
    conn: Connection,
    bucket: str,
    segment: Segment,
    pages: queue.Queue[Batch],
    stop: threading.Event,
) -> None:
    """List one segment into `pages`, a page at a time."""
    options: ListArgs = {} if segment.after is None else {"StartAfter": segment.after}
    try:
        for page in _pages(conn, bucket, segment.prefix, options):
            if stop.is_set():
                return
            contents = page.get("Contents", [])
            inside = [item for item in contents if in_range(item["Key"], segment.end)]
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
