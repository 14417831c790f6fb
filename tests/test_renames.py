"""The pure rule of renames: which recorded object a new file may be copied from."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from ass3.model import FileDigest, RecordEntry
from ass3.plan import multipart_etag
from ass3.renames import ContentIndex, copy_reason, copy_source


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


A, B = md5(b"a" * 10), md5(b"b" * 10)
KMS_ETAG = "0123456789abcdef0123456789abcdef"


def line(
    rel: str, md5_: str, *, size: int = 10, etag: str | None = None, version: str | None = "v1"
) -> RecordEntry:
    return RecordEntry(rel, size, md5_, md5_ if etag is None else etag, version)


def test_a_new_file_is_copied_from_the_recorded_version_holding_its_content() -> None:
    index = ContentIndex.of([line("old/a", A), line("old/b", B)])
    assert copy_source(index, FileDigest(A), 10, changing=None) == line("old/a", A)
    assert copy_source(index, FileDigest(B), 10, changing=None) == line("old/b", B)


def test_only_the_same_size_and_md5_is_a_source() -> None:
    index = ContentIndex.of([line("old/a", A)])
    assert copy_source(index, FileDigest(B), 10, changing=None) is None
    assert copy_source(index, FileDigest(A), 11, changing=None) is None


def test_sizes_the_record_does_not_hold_are_not_worth_hashing() -> None:
    index = ContentIndex.of([line("a", A), line("empty", md5(b""), size=0), line("unread", "")])
    assert index.holds_size(10)
    assert not index.holds_size(0)  # an empty object costs nothing to send
    assert not index.holds_size(11)
    assert copy_source(index, FileDigest(""), 10, changing=None) is None  # no MD5: never read


def test_an_etag_that_does_not_prove_the_md5_is_never_trusted() -> None:
    # An SSE-KMS ETag, or a planted line whose ETag is another object's.
    index = ContentIndex.of([line("kms", A, etag=KMS_ETAG), line("lie", A, etag=B)])
    assert copy_source(index, FileDigest(A), 10, changing=frozenset()) is None


def test_a_multipart_etag_is_trusted_only_when_made_of_the_files_own_parts() -> None:
    parts = (hashlib.md5(b"p1").digest(), hashlib.md5(b"p2").digest())
    whole = md5(b"p1p2")
    index = ContentIndex.of([line("big", whole, etag=multipart_etag(parts))])
    assert copy_source(index, FileDigest(whole, parts), 10, changing=None) is not None
    other_parts = (hashlib.md5(b"p").digest(), hashlib.md5(b"1p2").digest())
    assert copy_source(index, FileDigest(whole, other_parts), 10, changing=None) is None
    assert copy_source(index, FileDigest(whole), 10, changing=None) is None  # parts unknown


def test_an_unpinned_source_waits_until_the_keys_the_run_writes_are_known() -> None:
    index = ContentIndex.of([line("a", A, version=None)])
    assert index.unpinned(10)
    assert index.unpinned_rels() == {"a"}
    assert copy_source(index, FileDigest(A), 10, changing=None) is None
    assert copy_source(index, FileDigest(A), 10, changing=frozenset({"x"})) == line(
        "a", A, version=None
    )
    assert copy_source(index, FileDigest(A), 10, changing=frozenset({"a"})) is None


def test_a_swap_copies_by_version_but_not_without_one() -> None:
    pinned = ContentIndex.of([line("a", A), line("b", B)])
    writes = frozenset({"a", "b"})  # each is the other's new content
    assert copy_source(pinned, FileDigest(B), 10, changing=writes) == line("b", B)
    assert copy_source(pinned, FileDigest(A), 10, changing=writes) == line("a", A)
    unpinned = ContentIndex.of([line("a", A, version=None), line("b", B, version=None)])
    assert copy_source(unpinned, FileDigest(B), 10, changing=writes) is None
    assert copy_source(unpinned, FileDigest(A), 10, changing=writes) is None


def test_a_pinned_source_comes_before_an_unpinned_one_then_key_order() -> None:
    index = ContentIndex.of([line("a", A, version=None), line("b", A), line("c", A)])
    assert copy_source(index, FileDigest(A), 10, changing=frozenset()) == line("b", A)
    assert not index.unpinned(11)


def test_the_reason_says_renamed_copied_or_from() -> None:
    assert copy_reason("old/a", source_still_there=False, dry_run=False) == "renamed from old/a"
    assert copy_reason("old/a", source_still_there=True, dry_run=False) == "copied from old/a"
    assert copy_reason("old/a", source_still_there=False, dry_run=True) == "from old/a"


contents = st.binary(min_size=1, max_size=4)
records = st.lists(
    st.tuples(
        st.text("abc", min_size=1, max_size=3),
        contents,
        st.booleans(),  # pinned to a version
        st.booleans(),  # ETag honest
    ),
    max_size=8,
    unique_by=lambda item: item[0],
)


@given(records, contents, st.frozensets(st.text("abc", min_size=1, max_size=3)) | st.none())
def test_a_source_always_holds_the_files_bytes_provably_and_safely(
    lines: list[tuple[str, bytes, bool, bool]], data: bytes, changing: frozenset[str] | None
) -> None:
    entries = [
        RecordEntry(
            rel, len(body), md5(body), md5(body) if honest else KMS_ETAG, "v" if pinned else None
        )
        for rel, body, pinned, honest in sorted(lines)
    ]
    chosen = copy_source(
        ContentIndex.of(entries), FileDigest(md5(data)), len(data), changing=changing
    )
    trusted = [
        entry
        for entry in entries
        if entry.md5 == md5(data)
        and entry.etag == md5(data)
        and (entry.version_id or (changing is not None and entry.rel not in changing))
    ]
    if chosen is None:
        assert not trusted
    else:
        assert chosen in trusted
        assert (chosen.size, chosen.etag) == (len(data), md5(data))
        assert chosen.version_id or not any(entry.version_id for entry in trusted)
