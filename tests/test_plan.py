"""The pure core: planning, ETag arithmetic, name rules. No S3, no disk unless stated."""

from __future__ import annotations

import hashlib
import io
import posixpath
from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

import s3common
from ass3.names import restore_prefix
from s3common import FileDigest, LocalFile, RemoteObject

WHEN = datetime(2026, 1, 1, tzinfo=timezone.utc)
MD5_HI = hashlib.md5(b"hi").hexdigest()


def local(rel: str, size: int) -> LocalFile:
    return LocalFile(rel, f"/src/{rel}", size, 0, 0o644)


def remote(rel: str, size: int, etag: str = MD5_HI) -> RemoteObject:
    return RemoteObject(rel, f"p/{rel}", size, etag, WHEN)


def reasons(steps: list[s3common.Step]) -> dict[str, str]:
    return {step.rel: step.reason for step in steps}


def test_plan_backup_new_size_changed_and_same_size() -> None:
    steps = list(
        s3common.plan_transfers(
            [local("a.txt", 2), local("b.txt", 2), local("c.txt", 5)],
            [remote("a.txt", 2), remote("c.txt", 4), remote("gone.txt", 1)],
        )
    )
    assert reasons(steps) == {
        "a.txt": s3common.SAME_SIZE,
        "b.txt": s3common.NEW,
        "c.txt": s3common.SIZE_CHANGED,
        "gone.txt": s3common.EXTRA,
    }
    assert [step.rel for step in steps] == ["a.txt", "b.txt", "c.txt", "gone.txt"]


def test_plan_restore_is_the_same_function_the_other_way() -> None:
    steps = list(
        s3common.plan_transfers([remote("a", 2), remote("b", 3)], [local("a", 2), local("b", 4)])
    )
    assert reasons(steps) == {"a": s3common.SAME_SIZE, "b": s3common.SIZE_CHANGED}
    assert steps[0].target == local("a", 2)


def test_plan_of_nothing_keeps_the_targets_as_extras() -> None:
    (step,) = s3common.plan_transfers([], [remote("a", 1)])
    assert (step.rel, step.source, step.reason) == ("a", None, s3common.EXTRA)


def test_plan_trusts_the_cache_only_where_it_vouches() -> None:
    def vouched(source: s3common.Entry, target: s3common.Entry) -> str | None:
        return "d41d8cd98f00b204e9800998ecf8427e" if source.rel == "cached" else None

    steps = s3common.plan_transfers(
        [local("cached", 2), local("other", 2), local("resized", 3)],
        [remote("cached", 2), remote("other", 2), remote("resized", 2)],
        known_unchanged=vouched,
    )
    assert reasons(list(steps)) == {
        "cached": s3common.UNCHANGED,
        "other": s3common.SAME_SIZE,
        "resized": s3common.SIZE_CHANGED,
    }


def test_merge_pairs_streams_in_utf8_byte_order() -> None:
    # '-' (0x2d) sorts before '/' (0x2f): "a-b" comes before "a/b"; "z" before "é".
    left = [local(rel, 1) for rel in ["a-b", "a/b", "z", "é"]]
    right = [remote(rel, 1) for rel in ["a/b", "a/c", "é", "日"]]
    pairs = [
        (rel, a is not None, b is not None) for rel, a, b in s3common.merge_by_rel(left, right)
    ]
    assert pairs == [
        ("a-b", True, False),
        ("a/b", True, True),
        ("a/c", False, True),
        ("z", True, False),
        ("é", True, True),
        ("日", False, True),
    ]


def test_merge_refuses_a_stream_out_of_order() -> None:
    with pytest.raises(s3common.Ass3Error, match="out of key order"):
        list(s3common.merge_by_rel([local("b", 1), local("a", 1)], []))


@given(
    st.sets(st.text(min_size=1, max_size=6), max_size=20),
    st.sets(st.text(min_size=1, max_size=6), max_size=20),
)
def test_merge_is_a_full_outer_join(left_names: set[str], right_names: set[str]) -> None:
    def ordered(names: set[str]) -> list[str]:
        return sorted(names, key=s3common.key_order)

    pairs = list(
        s3common.merge_by_rel(
            [local(n, 1) for n in ordered(left_names)], [remote(n, 1) for n in ordered(right_names)]
        )
    )
    assert [rel for rel, _, _ in pairs] == ordered(left_names | right_names)
    for rel, a, b in pairs:
        assert (a is not None) == (rel in left_names) and (b is not None) == (rel in right_names)


def test_plain_etag_compares_with_md5() -> None:
    assert s3common.etag_matches(MD5_HI, FileDigest(MD5_HI)) is True
    assert s3common.etag_matches(MD5_HI, FileDigest(hashlib.md5(b"ho").hexdigest())) is False


def test_multipart_etag_compares_with_composite() -> None:
    parts = (hashlib.md5(b"a").digest(), hashlib.md5(b"b").digest())
    composite = hashlib.md5(parts[0] + parts[1]).hexdigest() + "-2"
    digest = FileDigest(hashlib.md5(b"ab").hexdigest(), parts)
    assert s3common.multipart_etag(parts) == composite
    assert s3common.etag_matches(composite, digest) is True


def test_multipart_etag_that_cannot_be_compared_is_undecided() -> None:
    parts = (hashlib.md5(b"a").digest(), hashlib.md5(b"b").digest())
    digest = FileDigest(hashlib.md5(b"ab").hexdigest(), parts)
    other_count = "0" * 32 + "-3"
    other_part_size = "0" * 32 + "-2"
    assert s3common.etag_matches(other_count, digest) is None
    assert s3common.etag_matches(other_part_size, digest) is None
    assert s3common.etag_matches("not-an-md5", digest) is None
    assert s3common.etag_matches(other_count, FileDigest(digest.md5)) is None


def test_part_size_follows_boto3() -> None:
    mib = s3common.MiB
    assert s3common.part_size_for(8 * mib - 1, threshold=8 * mib, chunksize=8 * mib) is None
    assert s3common.part_size_for(8 * mib, threshold=8 * mib, chunksize=8 * mib) == 8 * mib
    # 10 000 parts at most: boto3 doubles the part size for huge files.
    huge = 100_000 * mib
    assert s3common.part_size_for(huge, threshold=8 * mib, chunksize=8 * mib) == 16 * mib
    # S3's minimum part is 5 MiB whatever is asked for.
    assert s3common.part_size_for(6 * mib, threshold=mib, chunksize=mib) == 5 * mib


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 3000, 4096])
def test_local_checksum_parts_match_s3_arithmetic(
    size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    monkeypatch.setattr("ass3.files.READ_CHUNK", 100)  # part boundaries fall inside chunks
    digest = s3common.local_checksum(io.BytesIO(data), 1024)
    parts = [data[i : i + 1024] for i in range(0, len(data), 1024)] or [b""]
    assert digest.md5 == hashlib.md5(data).hexdigest()
    assert digest.part_md5s == tuple(hashlib.md5(part).digest() for part in parts)


def test_local_checksum_single_part() -> None:
    assert s3common.local_checksum(io.BytesIO(b"hi"), None) == FileDigest(MD5_HI)


@pytest.mark.parametrize(
    "name",
    ["abc", "ass3backup-123456789012", "my.bucket.name", "a" * 63, "0-9"],
)
def test_valid_bucket_names(name: str) -> None:
    assert s3common.validate_bucket_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "ab",
        "a" * 64,
        "Upper",
        "under_score",
        "-start",
        "end-",
        "two..dots",
        "dot.-dash",
        "192.168.1.1",
        "xn--punycode",
        "sthree-bucket",
        "bucket-s3alias",
        "bucket--ol-s3",
        "",
    ],
)
def test_invalid_bucket_names(name: str) -> None:
    with pytest.raises(s3common.Ass3Error, match="invalid bucket name"):
        s3common.validate_bucket_name(name)


@pytest.mark.parametrize(
    "rel",
    ["a", "a/b/c.txt", "ü space.txt", "#%+.txt", "-leading", "..hidden", "x..y", "a" * 255],
)
def test_safe_keys(rel: str) -> None:
    assert s3common.unsafe_key_reason(rel) is None


@pytest.mark.parametrize(
    "rel",
    [
        "",
        "/etc/passwd",
        "../escape",
        "a/../../escape",
        "a/./b",
        "a//b",
        "dir/",
        "a\\..\\b",
        "nul\x00byte",
        "new\nline",
        "a" * 256,
        "é" * 128,
    ],
)
def test_unsafe_keys(rel: str) -> None:
    assert s3common.unsafe_key_reason(rel) is not None


@given(st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=5))
def test_a_safe_key_never_leaves_the_destination(segments: list[str]) -> None:
    """Whatever the key, a key judged safe joins to a path strictly below the root."""
    rel = "/".join(segments)
    if s3common.unsafe_key_reason(rel) is None:
        joined = posixpath.normpath(posixpath.join("/dest", rel))
        assert joined.startswith("/dest/")
        assert joined == posixpath.join("/dest", rel)


def test_backup_name_rules() -> None:
    assert s3common.normalize_prefix("photos/") == "photos"
    with pytest.raises(s3common.Ass3Error, match="one name without '/'"):
        s3common.normalize_prefix("hosts/web1")  # it would overlap a backup named "hosts"
    assert s3common.default_prefix("/data/testingObjects/") == "testingObjects"
    for bad in ("..", ".ass3", ".ass3/runs", "a/../b", ""):
        with pytest.raises(s3common.Ass3Error):
            s3common.normalize_prefix(bad)
    with pytest.raises(s3common.Ass3Error, match="--prefix"):
        s3common.default_prefix("/")


def test_a_path_given_to_a_restore_is_answered_with_the_name_its_backup_has() -> None:
    assert restore_prefix("src3/") == "src3"
    for path in ("/home/me/src3", "home/me/src3/", "./src3/x/../src3"):
        with pytest.raises(s3common.Ass3Error, match=r"the backup of .* is 'src3' unless"):
            restore_prefix(path)
    with pytest.raises(s3common.Ass3Error, match="reserved"):
        restore_prefix(".ass3")


def test_a_dry_run_says_would_delete() -> None:
    done = s3common.Summary("uploaded", deleted=2)
    assert "deleted 2," in done.line() and "would" not in done.line()
    dry = s3common.Summary("would upload", deleted=2)
    assert "would delete 2," in dry.line()


def test_summary_line_and_exit_code() -> None:
    summary = s3common.Summary("uploaded", transferred=1, transferred_bytes=2048, unchanged=3)
    assert summary.line().startswith("uploaded 1 file (2.0 KiB), unchanged 3, skipped 0, failed 0")
    assert summary.exit_code == s3common.EXIT_OK
    summary.failures.append(("x", "boom"))
    assert summary.exit_code == s3common.EXIT_FAILURES
