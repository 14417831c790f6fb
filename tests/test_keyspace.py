"""A long listing read in parallel ranges: the cuts (pure, on literals), and on moto that
the stream is every key once, in key order, with few requests and bounded memory."""

from __future__ import annotations

import math
import threading
import time
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError
from helpers import count_calls
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ass3 import keyspace
from ass3.connection import Connection
from ass3.keyspace import folder_of, in_range, ranges_between, split_points
from ass3.model import Ass3Error
from ass3.plan import key_order
from ass3.remote import list_remote

# --- the cuts, pure --------------------------------------------------------------------------


def test_split_points_are_the_folders_after_the_first_page_in_key_order() -> None:
    folders = ["P/b/", "P/a/", "P/c/", "P/a-b/"]
    # '-' (0x2d) sorts before '/' (0x2f): the folder a-b/ comes before a/.
    assert split_points(folders, "P/a", 10) == ["P/a-b/", "P/a/", "P/b/", "P/c/"]
    assert split_points(folders, "P/a-b/x", 10) == ["P/a/", "P/b/", "P/c/"]
    assert split_points(folders, "P/a/x", 10) == ["P/b/", "P/c/"]
    assert split_points(folders, "P/c/z", 10) == []


def test_split_points_are_thinned_evenly_to_the_number_of_ranges() -> None:
    folders = [f"P/{index:02d}/" for index in range(40)]
    points = split_points(folders, "P/", 5)
    assert points == ["P/00/", "P/10/", "P/20/", "P/30/"]
    assert split_points(folders, "P/", 1) == []


def test_ranges_cover_everything_after_the_start_once() -> None:
    assert ranges_between("P/a/x", ["P/b/", "P/c/"]) == [
        ("P/a/x", "P/b/"),
        ("P/b/", "P/c/"),
        ("P/c/", None),
    ]
    assert ranges_between("P/a", []) == [("P/a", None)]


def test_a_range_holds_its_end_and_stops_after_it() -> None:
    assert in_range("P/b/", "P/b/")  # a key named like the folder: in the range before it
    assert in_range("P/b-c", "P/b/")
    assert not in_range("P/b/x", "P/b/")
    assert in_range("P/\u00e9", None)
    assert not in_range("P/\u00e9", "P/z")  # UTF-8 bytes: 0xc3 > 'z'


def test_folder_of_a_key() -> None:
    assert folder_of("P/a/b/c", "P/") == "P/a/"
    assert folder_of("P/a/b/c", "P/a/") == "P/a/b/"
    assert folder_of("P/a", "P/") is None


# --- on moto ---------------------------------------------------------------------------------

PAGE = 3  # moto's page size in these tests, so that a few dozen keys make many pages


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("MOTO_S3_DEFAULT_MAX_KEYS", str(PAGE))
    return PAGE


def _fill_bucket(conn: Connection, bucket: str, keys: list[str]) -> None:
    conn.client.create_bucket(Bucket=bucket)
    for key in keys:
        conn.client.put_object(Bucket=bucket, Key=key, Body=b"")


def _in_key_order(keys: list[str]) -> list[str]:
    return sorted(keys, key=key_order)


def _most_at_once(conn: Connection, delay: float = 0.02) -> dict[str, int]:
    """The most ListObjectsV2 requests under way at once, each held `delay` seconds."""
    seen = {"now": 0, "most": 0}
    lock = threading.Lock()

    def held(**_: Any) -> None:
        with lock:
            seen["now"] += 1
            seen["most"] = max(seen["most"], seen["now"])
        time.sleep(delay)
        with lock:
            seen["now"] -= 1

    conn.client.meta.events.register("before-send.s3.ListObjectsV2", held)
    return seen


SEGMENT = st.text(alphabet="ab-./_Z\u00e9\U0001f600", min_size=1, max_size=3)
RELS = st.lists(SEGMENT, min_size=1, max_size=3).map("/".join)


@pytest.mark.slow
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rels=st.sets(RELS, max_size=45), under=st.sampled_from(["", "a", "a/", "b-"]))
def test_parallel_listing_is_every_key_once_in_key_order(
    conn: Connection, small_pages: int, rels: set[str], under: str
) -> None:
    bucket = f"ass3-test-{uuid.uuid4().hex[:12]}"
    neighbours = ["data-x/a", "datb", "dat", ".ass3/runs/data/1.json.gz", "data"]
    _fill_bucket(conn, bucket, [f"data/{rel}" for rel in rels] + neighbours)
    calls = count_calls(conn.client)
    listed = [item.rel for item in list_remote(conn, bucket, "data", under=under)]
    expected = _in_key_order([rel for rel in rels if rel.startswith(under)])
    assert listed == expected
    pages = max(1, math.ceil(len(expected) / small_pages))
    ranges = conn.workers * keyspace.RANGES_PER_THREAD
    assert calls["ListObjectsV2"] <= pages + keyspace.MAX_DEPTH + ranges
    if len(expected) <= small_pages:
        assert calls["ListObjectsV2"] == 1


def _tree(folders: int, files: int) -> list[str]:
    return [f"data/d{folder:02d}/f{file:02d}" for folder in range(folders) for file in range(files)]


@pytest.mark.slow
def test_a_long_listing_is_read_in_parallel_with_few_more_requests(
    conn: Connection, bucket: str, small_pages: int
) -> None:
    keys = [*_tree(12, 5), "data/top-a", "data/zz"]
    _fill_bucket(conn, bucket, keys)
    calls = count_calls(conn.client)
    at_once = _most_at_once(conn)
    listed = [item.key for item in list_remote(conn, bucket, "data")]
    assert listed == _in_key_order(keys)
    assert at_once["most"] >= 2
    # The first page, one look at the folders, then each range ends one page late at most.
    ranges = conn.workers * keyspace.RANGES_PER_THREAD
    assert calls["ListObjectsV2"] <= math.ceil(len(keys) / small_pages) + 1 + ranges


@pytest.mark.slow
def test_one_folder_with_folders_inside_is_gone_into(
    conn: Connection, bucket: str, small_pages: int
) -> None:
    """home/USER/... : the top level has one folder; the cuts are found below it."""
    keys = [f"data/home/user/{key[5:]}" for key in _tree(8, 4)]
    _fill_bucket(conn, bucket, keys)
    at_once = _most_at_once(conn)
    assert [item.key for item in list_remote(conn, bucket, "data")] == keys
    assert at_once["most"] >= 2


@pytest.mark.slow
def test_memory_stays_at_a_few_pages_per_thread(
    conn: Connection, bucket: str, small_pages: int
) -> None:
    keys = _tree(16, 8)
    _fill_bucket(conn, bucket, keys)
    fetched = {"items": 0}

    def count_items(parsed: dict[str, Any], **_: Any) -> None:
        if "Delimiter" not in parsed:
            fetched["items"] += len(parsed.get("Contents", []))

    conn.client.meta.events.register("after-call.s3.ListObjectsV2", count_items)
    threads = min(conn.workers, keyspace.LISTING_THREADS)
    ranges = threads * keyspace.RANGES_PER_THREAD
    # Held in queues and threads, plus the page past each range's end (read, then dropped).
    bound = (threads * (keyspace.QUEUE_PAGES + 1) + ranges + 1) * small_pages
    most_ahead = 0
    for consumed, _item in enumerate(list_remote(conn, bucket, "data"), start=1):
        time.sleep(0.005)  # a slow reader: unbounded queues would fill with the whole listing
        most_ahead = max(most_ahead, fetched["items"] - consumed)
    assert consumed == len(keys)
    assert most_ahead <= bound < len(keys)


@pytest.mark.slow
def test_a_reader_that_stops_early_stops_the_listing_threads(
    conn: Connection, bucket: str, small_pages: int
) -> None:
    _fill_bucket(conn, bucket, _tree(10, 6))
    listing = list_remote(conn, bucket, "data")
    first = [next(listing) for _ in range(2 * small_pages)]
    assert first[0].rel == "d00/f00"
    assert _listing_threads()
    listing.close()
    assert not _listing_threads()


def _listing_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("ass3-list")]


@pytest.mark.slow
def test_an_error_in_a_range_reaches_the_reader_as_one_line(
    conn: Connection, bucket: str, small_pages: int
) -> None:
    _fill_bucket(conn, bucket, _tree(6, 4))

    def deny_ranges(params: dict[str, Any], **_: Any) -> None:
        if "StartAfter" in params and "Delimiter" not in params:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "ListObjectsV2")

    conn.client.meta.events.register("before-parameter-build.s3.ListObjectsV2", deny_ranges)
    with pytest.raises(Ass3Error, match="access denied: ListObjectsV2"):
        list(list_remote(conn, bucket, "data"))
    assert not _listing_threads()
