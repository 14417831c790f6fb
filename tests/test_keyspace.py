"""A long listing read in parallel segments: the cuts (pure, on literals), on moto that
the stream is every key once, in key order, with few requests and bounded memory, and
on a server listing in its own order that no key is lost or passed on twice."""

from __future__ import annotations

import math
import threading
import time
import urllib.parse
import uuid
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from helpers import canned_response, count_calls
from hypothesis import HealthCheck, example, given, settings
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


def test_pages_ahead_are_guessed_from_the_folders_the_first_page_reached() -> None:
    """50,000 keys in 10 folders: the first page is all in the first folder, so many pages
    follow and the listing is cut. 2,000 keys in 11 folders: the first page reached 6 of
    them, so about one page follows, and one page after another costs least."""
    tops = [f"P/d{number}/" for number in range(10)]
    first = [f"P/d0/f{number:04d}" for number in range(1000)]
    assert keyspace.pages_ahead(first, "P/", tops, 1000) == pytest.approx(19)
    eleven = ["P/big/", *tops]
    first = ["P/big/a", "P/big/b"] + [
        f"P/d{number // 182}/f{number:04d}" for number in range(998)
    ]  # big/, d0/ to d4/ whole, d5/ begun
    assert keyspace.pages_ahead(first, "P/", eleven, 1000) < 2


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
@given(
    rels=st.sets(RELS, max_size=45),
    under=st.sampled_from(["", "a", "a/", "b-"]),
    on_aws=st.booleans(),
)
def test_parallel_listing_is_every_key_once_in_key_order(
    conn: Connection, small_pages: int, rels: set[str], under: str, on_aws: bool
) -> None:
    conn.on_aws = on_aws  # off AWS: segments by folder only, then put in order locally
    bucket = f"ass3-test-{uuid.uuid4().hex[:12]}"
    neighbours = ["data-x/a", "datb", "dat", ".ass3/runs/data/1.json.gz", "data"]
    _fill_bucket(conn, bucket, [f"data/{rel}" for rel in rels] + neighbours)
    calls = count_calls(conn.client)
    listed = [item.rel for item in list_remote(conn, bucket, "data", under=under)]
    expected = _in_key_order([rel for rel in rels if rel.startswith(under)])
    assert listed == expected
    pages = max(1, math.ceil(len(expected) / small_pages))
    ranges = conn.workers * keyspace.RANGES_PER_THREAD
    # Off AWS the first page's keys may be listed again with their folders: one more.
    assert calls["ListObjectsV2"] <= pages + keyspace.MAX_DEPTH + ranges + (not on_aws)
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


# --- on a server that does not list in byte order --------------------------------------------


class OwnOrderServer:
    """A before-send handler answering ListObjectsV2 as a server that lists keys in its
    own `order` instead of S3's byte order, and continues (StartAfter or token) after
    a name in that order, as s3rver does; `page` names a page, names URL-encoded as
    botocore asks. Every request's query is kept in `queries`."""

    def __init__(self, keys: list[str], order: Any, page: int, folder_page: int) -> None:
        self.keys = keys
        self.order = order
        self.page = page
        self.folder_page = folder_page
        self.queries: list[dict[str, str]] = []

    def __call__(self, request: Any, **_: Any) -> AWSResponse:
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(request.url).query))
        self.queries.append(query)
        prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
        after = query.get("continuation-token", query.get("start-after"))
        names: set[tuple[str, bool]] = set()
        for key in self.keys:
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            if key.startswith(prefix):
                names.add((key[: cut + 1], True) if cut >= 0 else (key, False))
        ordered = sorted(names, key=lambda name: self.order(name[0]))
        if after is not None:
            ordered = [name for name in ordered if self.order(name[0]) > self.order(after)]
        page = self.folder_page if delimiter else self.page
        shown, more = ordered[:page], len(ordered) > page
        quote = urllib.parse.quote
        body = "".join(
            f"<CommonPrefixes><Prefix>{quote(name)}</Prefix></CommonPrefixes>"
            if folder
            else f"<Contents><Key>{quote(name)}</Key><LastModified>2020-01-01T00:00:00.000Z"
            f'</LastModified><ETag>"{"0" * 32}"</ETag><Size>0</Size></Contents>'
            for name, folder in shown
        )
        token = f"<NextContinuationToken>{shown[-1][0]}</NextContinuationToken>" if more else ""
        xml = (
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>b</Name><Prefix>{quote(prefix)}</Prefix><EncodingType>url</EncodingType>"
            f"<KeyCount>{len(shown)}</KeyCount><MaxKeys>1000</MaxKeys>"
            f"<IsTruncated>{str(more).lower()}</IsTruncated>{token}{body}"
            "</ListBucketResult>"
        )
        return canned_response(request.url, 200, xml.encode(), "application/xml")


ORDERS = {
    "bytes": key_order,
    "utf-16": lambda name: name.encode("utf-16-be", "surrogatepass"),
    "reversed": lambda name: bytes(255 - byte for byte in key_order(name)) + b"\xff",
    "case-folded": lambda name: (name.casefold(), name),
}


@settings(max_examples=60, deadline=None)
@given(
    rels=st.sets(RELS, max_size=40),
    order=st.sampled_from(sorted(ORDERS)),
    page=st.integers(min_value=2, max_value=5),
    folder_page=st.sampled_from([2, 1000]),
)
# The first page ends inside a folder that holds more: on AWS it goes on after that key.
@example(rels={"a/0", "a/1", "a/2", "a/3", "b/0", "b/1"}, order="bytes", page=3, folder_page=1000)
def test_a_server_listing_in_its_own_order_still_gives_every_key_once(
    rels: set[str], order: str, page: int, folder_page: int
) -> None:
    """Off AWS, nothing depends on the server's order: folders are listed by Prefix and
    continued by token, never by StartAfter; the first page is not passed on twice.
    On a server in byte order, trusting it (as on AWS) gives the keys in that order."""
    keys = [f"data/{rel}" for rel in rels] + ["datb", "data-x/a"]
    expected = _in_key_order([f"data/{rel}" for rel in rels])
    for byte_order in (False, True) if order == "bytes" else (False,):
        server = OwnOrderServer(keys, ORDERS[order], page, folder_page)
        conn = Connection(endpoint_url="http://own-order.invalid", workers=4)
        conn.client.meta.events.register("before-send.s3.ListObjectsV2", server)
        items = keyspace.list_keys(conn, "b", "data/", byte_order=byte_order)
        listed = [item["Key"] for item in items]
        if byte_order:
            assert listed == expected
        else:
            assert sorted(listed, key=key_order) == expected
            assert not [query for query in server.queries if "start-after" in query]


def test_off_aws_a_first_page_across_many_folders_goes_on_page_by_page() -> None:
    """Folders of a page or less: no look at the folders, one request per page."""
    keys = [f"data/d{folder:02d}/f{file}" for folder in range(12) for file in range(2)]
    server = OwnOrderServer(keys, key_order, page=6, folder_page=1000)
    conn = Connection(endpoint_url="http://own-order.invalid", workers=4)
    conn.client.meta.events.register("before-send.s3.ListObjectsV2", server)
    listed = [item["Key"] for item in keyspace.list_keys(conn, "b", "data/", byte_order=False)]
    assert listed == keys
    assert [query.get("delimiter") for query in server.queries] == [None] * 4


@pytest.mark.slow
def test_off_aws_each_folder_is_its_own_prefix_listed_at_once(
    conn: Connection, bucket: str, small_pages: int
) -> None:
    keys = [*_tree(2, 8), "data/zz"]  # the look at the folders fits on one small page
    _fill_bucket(conn, bucket, keys)
    conn.on_aws = False
    prefixes: list[str] = []
    conn.client.meta.events.register(
        "before-parameter-build.s3.ListObjectsV2",
        lambda params, **_: prefixes.append(params["Prefix"] + params.get("Delimiter", "")),
    )
    calls = count_calls(conn.client)
    at_once = _most_at_once(conn)
    assert [item.key for item in list_remote(conn, bucket, "data")] == _in_key_order(keys)
    assert at_once["most"] >= 2
    # Two pages (a shorter listing is not cut), the look at the folders, three pages for
    # each folder of eight.
    folders = [*["data/d00/"] * 3, *["data/d01/"] * 3]
    assert sorted(prefixes) == ["data/", "data/", "data//", *folders]
    assert calls["ListObjectsV2"] == 2 + 1 + 3 * 2


def test_off_aws_a_listing_of_two_pages_costs_its_two_requests() -> None:
    """1,500 keys in one folder: no look at the folders, whose answer could not help."""
    keys = [f"data/sub/f{number:02d}" for number in range(5)]
    server = OwnOrderServer(keys, key_order, page=3, folder_page=1000)
    conn = Connection(endpoint_url="http://own-order.invalid", workers=4)
    conn.client.meta.events.register("before-send.s3.ListObjectsV2", server)
    listed = [item["Key"] for item in keyspace.list_keys(conn, "b", "data/", byte_order=False)]
    assert listed == keys
    assert len(server.queries) == 2
