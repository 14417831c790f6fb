"""What --check and --diff find, decided on literals: listings, digests, sizes (no S3)."""

from __future__ import annotations

import hashlib
import io
import threading
from collections import Counter
from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

import s3common
from ass3.executor import in_parallel
from ass3.model import ObjectVersion
from ass3.verdicts import (
    CHANGED,
    CHECK_KINDS,
    CORRUPT,
    DIFF_KINDS,
    DIFFERS,
    EXTRA,
    MISSING,
    Finding,
    Report,
    digest_of,
    judge_data,
    judge_listed,
    judge_local,
    judge_metadata,
    match_listing,
    metadata_checkable,
    same_content,
    uniform_parts,
)
from s3common import FileDigest, LocalFile, RemoteObject, Selection

WHEN = datetime(2026, 1, 1, tzinfo=timezone.utc)
DATA = b"hello world"
MD5 = hashlib.md5(DATA).hexdigest()
OTHER = hashlib.md5(b"other").hexdigest()


def recorded(
    rel: str, *, version: str | None = "v1", etag: str = MD5, md5: str = MD5
) -> RemoteObject:
    return RemoteObject(rel, f"p/{rel}", len(DATA), etag, WHEN, version, md5)


def version(
    rel: str, version_id: str, *, latest: bool = True, deleted: bool = False, etag: str = MD5
) -> ObjectVersion:
    return ObjectVersion(rel, f"p/{rel}", version_id, WHEN, latest, deleted, len(DATA), etag)


def listed(rel: str, *, size: int = len(DATA), etag: str = MD5) -> RemoteObject:
    return RemoteObject(rel, f"p/{rel}", size, etag, WHEN)


# --- --check: the listing ---------------------------------------------------------------


def test_a_recorded_object_is_judged_by_its_size_and_etag() -> None:
    assert judge_listed(recorded("a"), version("a", "v1")) is None
    assert judge_listed(recorded("a"), None) == Finding(
        "a", MISSING, "version v1 is not in the bucket"
    )
    assert judge_listed(recorded("a", version=None), None) == Finding(
        "a", MISSING, "no object of that name in the bucket"
    )
    assert judge_listed(recorded("a", version=None), listed("a", size=3)) == Finding(
        "a", CHANGED, "3 bytes, recorded 11"
    )
    assert judge_listed(recorded("a", version=None), listed("a", etag=OTHER)) == Finding(
        "a", CHANGED, f"ETag {OTHER}, recorded {MD5}"
    )


def test_one_pass_over_versions_finds_each_recorded_version() -> None:
    expected = [recorded("a"), recorded("b", version="vb"), recorded("c", version="vc")]
    listing = [
        version("c", "vc-newer", etag=OTHER),  # a newer version does not hide the recorded one
        version("c", "vc", latest=False),
        version("b", "vb-marker", deleted=True),  # deleted now: the version is still there
        version("b", "vb", latest=False),
        version("a", "v2", etag=OTHER),  # overwritten since, and the recorded one gone
    ]
    assert [finding for _, finding in match_listing(expected, listing)] == [
        Finding("a", MISSING, "version v1 is not in the bucket"),
        None,
        None,
    ]


def test_a_record_without_versions_is_judged_by_the_current_object() -> None:
    expected = [
        recorded("a", version=None),
        recorded("b", version=None),
        recorded("gone", version=None),
    ]
    listing = [listed("b", etag=OTHER), listed("a"), listed("unrecorded")]
    assert [finding for _, finding in match_listing(expected, listing)] == [
        None,
        Finding("b", CHANGED, f"ETag {OTHER}, recorded {MD5}"),
        Finding("gone", MISSING, "no object of that name in the bucket"),
    ]
    # In a versioned listing, only the latest version is the current object.
    versions = [version("a", "old", latest=False), version("a", "new", latest=True, etag=OTHER)]
    [(_, finding)] = match_listing([recorded("a", version=None)], versions)
    assert finding == Finding("a", CHANGED, f"ETag {OTHER}, recorded {MD5}")
    marker = [version("a", "old", latest=False), version("a", "m", deleted=True)]
    [(_, finding)] = match_listing([recorded("a", version=None)], marker)
    assert finding is not None and finding.kind == MISSING


# --- --check: metadata and data ---------------------------------------------------------


def test_without_a_record_md5_metadata_is_compared_with_a_single_part_etag() -> None:
    item = listed("a")
    assert metadata_checkable(item)
    assert judge_metadata(item, MD5, etag_is_md5=True) is None
    assert judge_metadata(item, None, etag_is_md5=True) is None  # another tool's object
    assert judge_metadata(item, OTHER, etag_is_md5=False) is None  # SSE-KMS: ETag no MD5
    finding = judge_metadata(item, OTHER, etag_is_md5=True)
    assert finding == Finding(
        "a", CORRUPT, f"md5 metadata {OTHER}, but the MD5 of its bytes (its ETag) is {MD5}"
    )
    assert not metadata_checkable(listed("big", etag=f"{MD5}-3"))


def test_uniform_parts_are_the_tools_own_part_sizes() -> None:
    assert uniform_parts(25, 10, 3) == [10, 10, 5]
    assert uniform_parts(30, 10, 3) == [10, 10, 10]
    assert uniform_parts(25, 10, 2) is None  # another tool's part size
    assert uniform_parts(25, None, 3) is None
    assert uniform_parts(0, 10, 1) is None


@given(st.binary(max_size=300), st.integers(1, 64), st.lists(st.integers(1, 50), max_size=8))
def test_a_streamed_digest_is_the_md5_of_the_bytes_and_of_each_part(
    data: bytes, part_size: int, cuts: list[int]
) -> None:
    """However the stream is cut into chunks, the whole MD5 and the parts' MD5s are
    those of the bytes; with uniform parts they are what `local_checksum` gives."""
    chunks, position = [], 0
    for cut in [*cuts, len(data)]:
        chunks.append(data[position : position + cut])
        position += cut
    chunks.append(data[position:])
    sizes = uniform_parts(len(data), part_size, -(-len(data) // part_size)) or []
    digest, size = digest_of(chunks, sizes)
    assert size == len(data) and digest.md5 == hashlib.md5(data).hexdigest()
    starts = [sum(sizes[:index]) for index in range(len(sizes))]
    assert digest.part_md5s == tuple(
        hashlib.md5(data[start : start + length]).digest()
        for start, length in zip(starts, sizes, strict=True)
    )
    if sizes and len(sizes) > 1:
        assert digest == s3common.local_checksum(io.BytesIO(data), part_size)


def test_downloaded_bytes_are_judged_by_md5_and_etag() -> None:
    good = FileDigest(MD5)
    assert judge_data(recorded("a"), good, 11, None, etag_is_md5=True).finding is None
    short = judge_data(recorded("a"), good, 10, None, etag_is_md5=True).finding
    assert short == Finding("a", CORRUPT, "10 bytes read, 11 listed")
    bad = judge_data(recorded("a"), FileDigest(OTHER), 11, None, etag_is_md5=True).finding
    assert bad == Finding("a", CORRUPT, f"MD5 {OTHER}, recorded {MD5}")
    # No record: the md5 metadata, then the ETag.
    item = listed("a")
    by_metadata = judge_data(item, FileDigest(OTHER), 11, MD5, etag_is_md5=False).finding
    assert by_metadata == Finding("a", CORRUPT, f"MD5 {OTHER}, md5 metadata {MD5}")
    by_etag = judge_data(item, FileDigest(OTHER), 11, OTHER, etag_is_md5=True).finding
    assert by_etag == Finding("a", CORRUPT, f"ETag {MD5}, but the MD5 of the data is {OTHER}")
    unvouched = judge_data(item, FileDigest(OTHER), 11, None, etag_is_md5=False)
    assert (
        unvouched.finding is None and unvouched.warning and "nothing to verify" in unvouched.warning
    )


def test_a_multipart_etag_is_checked_against_the_parts() -> None:
    parts = (hashlib.md5(b"ab").digest(), hashlib.md5(b"c").digest())
    etag = s3common.multipart_etag(parts)
    item = RemoteObject("big", "p/big", 3, etag, WHEN, "v", hashlib.md5(b"abc").hexdigest())
    good = FileDigest(hashlib.md5(b"abc").hexdigest(), parts)
    assert judge_data(item, good, 3, None, etag_is_md5=True) == judge_data(
        item, good, 3, None, etag_is_md5=False
    )
    assert judge_data(item, good, 3, None, etag_is_md5=True).finding is None
    swapped = FileDigest(good.md5, parts[::-1])
    finding = judge_data(item, swapped, 3, None, etag_is_md5=True).finding
    assert finding is not None and finding.kind == CORRUPT and f"ETag {etag}" in finding.detail


# --- --diff -------------------------------------------------------------------------------


def test_a_local_file_is_judged_by_size_first_then_content() -> None:
    backup = recorded("a")
    same = LocalFile("a", "/x/a", 11, 0, 0o644)
    bigger = LocalFile("a", "/x/a", 12, 0, 0o644)
    assert judge_local("a", backup, same, True) is None
    assert judge_local("a", backup, same, False) == Finding(
        "a", DIFFERS, "same size, other content"
    )
    assert judge_local("a", backup, bigger) == Finding("a", DIFFERS, "12 bytes, backup 11")
    assert judge_local("a", backup, None) == Finding(
        "a", MISSING, "in the backup, not in the folder"
    )
    assert judge_local("a", None, same) == Finding("a", EXTRA, "not in the backup")


def test_content_is_compared_with_the_record_else_the_etag() -> None:
    assert same_content(recorded("a"), FileDigest(MD5), etag_is_md5=True) is True
    assert (
        same_content(recorded("a", etag="not-md5"), FileDigest(OTHER), etag_is_md5=False) is False
    )
    assert same_content(listed("a"), FileDigest(MD5), etag_is_md5=True) is True
    assert same_content(listed("a"), FileDigest(OTHER), etag_is_md5=True) is False
    assert same_content(listed("a"), FileDigest(MD5), etag_is_md5=False) is None
    assert same_content(listed("a", etag=f"{MD5}-2"), FileDigest(MD5), etag_is_md5=True) is None


# --- the report -----------------------------------------------------------------------------


def test_a_report_counts_each_kind_and_exits_1_on_any_finding_or_failure() -> None:
    summary = s3common.Summary("checked", requests=Counter({"ListObjectVersions": 1}))
    report = Report("checked", CHECK_KINDS, "intact", summary, files=3, bytes=2048, ok=2)
    assert report.exit_code == 0
    assert report.line() == (
        "checked 3 files (2.0 KiB): 2 intact, 0 missing, 0 changed, 0 corrupt, failed 0 "
        "in 0.0s (1 requests, 0 B read)"
    )
    report.findings.append(Finding("z", MISSING, "version v is not in the bucket"))
    report.findings.append(Finding("b", CORRUPT, "MD5 x, recorded y"))
    assert report.exit_code == 1
    document = report.to_dict()
    assert (document["intact"], document["missing"], document["corrupt"]) == (2, 1, 1)
    assert [item["path"] for item in document["findings"]] == ["b", "z"]
    assert document["findings"][0] == {
        "path": "b",
        "finding": "corrupt",
        "detail": "MD5 x, recorded y",
    }
    assert document["exit_code"] == 1
    failed = Report("compared", DIFF_KINDS, "identical", s3common.Summary("compared"))
    failed.summary.failures.append(("a", "Permission denied"))
    assert failed.exit_code == 1 and "0 differs, 0 missing, 0 extra, failed 1" in failed.line()


@pytest.mark.parametrize(
    ("paths", "rels", "scopes"),
    [
        ([], ["a", "b/c"], [("", None)]),
        (["docs/r.odt"], ["docs/r.odt"], [("docs/r.odt", "/")]),
        (["docs"], ["docs/r.odt", "docs/s/t"], [("docs/", None)]),
        (["docs"], ["docs", "docs/r.odt"], [("docs", None)]),
        (["a", "b/"], ["a", "b/x"], [("a", "/"), ("b/", None)]),
    ],
)
def test_a_check_lists_only_where_the_recorded_files_are(
    paths: list[str], rels: list[str], scopes: list[tuple[str, str | None]]
) -> None:
    assert Selection.parse(paths, []).listing_scopes(rels) == scopes


# --- reading in parallel ------------------------------------------------------------------


def test_reading_in_parallel_handles_every_result_in_the_callers_thread() -> None:
    seen: list[tuple[int, int, str]] = []
    in_parallel(
        3,
        range(50),
        lambda number: number * number,
        lambda number, square: seen.append((number, square, threading.current_thread().name)),
    )
    assert sorted((number, square) for number, square, _ in seen) == [
        (number, number * number) for number in range(50)
    ]
    assert {name for _, _, name in seen} == {threading.current_thread().name}


def test_an_interruption_drops_queued_reads_and_tells_running_ones_to_stop() -> None:
    stop = threading.Event()
    started: list[int] = []

    def work(number: int) -> int:
        started.append(number)
        if number:  # a long read that gives up once told to
            stop.wait(60)
        return number

    def interrupted(_number: int, _result: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        in_parallel(2, range(1000), work, interrupted, stop)
    assert stop.is_set()
    assert len(started) <= 3  # the first, and what the two threads had begun
