"""Pure planning: what to transfer, decided from names, sizes and checksums alone.

Like aws-cli's comparator, two streams sorted in S3 key order are merged and each
pair becomes a `Step`; nothing here touches S3 or the disk, so every rule is tested
on literals. Also the ETag arithmetic (is this ETag the MD5 of these bytes?) and the
deletion guards.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator

from ass3.model import (
    EXTRA,
    NEW,
    SAME_SIZE,
    SIZE_CHANGED,
    UNCHANGED,
    Ass3Error,
    Entry,
    FileDigest,
    LocalFile,
    Pair,
    RemoteObject,
    Seen,
    Step,
)
from ass3.names import temporary_stem, temporary_stem_of


def key_order(rel: str) -> bytes:
    """S3 lists keys in the byte order of their UTF-8 encoding; so do the walks here."""
    return rel.encode("utf-8", "surrogateescape")


def merge_by_rel(left: Iterable[Entry], right: Iterable[Entry]) -> Iterator[Pair]:
    """Pair up two streams sorted in key order: (rel, left entry or None, right or None).

    Streams keep memory flat however many files there are (aws-cli's comparator
    does the same). A stream out of order would make a file look missing, so it
    is an error rather than a guess.
    """
    left_items, right_items = _in_key_order(left), _in_key_order(right)
    a, b = next(left_items, None), next(right_items, None)
    while a is not None or b is not None:
        if a is not None and (b is None or a[0] < b[0]):
            yield a[1].rel, a[1], None
            a = next(left_items, None)
        elif b is not None and (a is None or b[0] < a[0]):
            yield b[1].rel, None, b[1]
            b = next(right_items, None)
        else:
            assert a is not None and b is not None
            yield a[1].rel, a[1], b[1]
            a, b = next(left_items, None), next(right_items, None)


def _in_key_order(entries: Iterable[Entry]) -> Iterator[tuple[bytes, Entry]]:
    previous = None
    for entry in entries:
        order = key_order(entry.rel)
        if previous is not None and order <= previous:
            raise Ass3Error(
                f"entries out of key order ({entry.rel!r} after {previous.decode()!r}): "
                "this S3-compatible store does not list keys in UTF-8 byte order"
            )
        previous = order
        yield order, entry


def plan_transfers(
    sources: Iterable[Entry],
    targets: Iterable[Entry],
    *,
    known_unchanged: Callable[[Entry, Entry], str | None] | None = None,
) -> Iterator[Step]:
    """Decide what to copy from sources to targets, from names and sizes alone.

    Both are streams in key order. Used both ways: a backup plans local files onto
    the listing, a restore plans the listing onto local files. SAME_SIZE steps still
    need their content compared (`etag_matches`) unless `known_unchanged` (the state
    cache) vouches for them with an MD5: those come out as UNCHANGED and need no
    work at all. What only the targets hold comes out as EXTRA.
    """
    for rel, source, target in merge_by_rel(sources, targets):
        known_md5 = None
        if source is None:
            reason = EXTRA
        elif target is None:
            reason = NEW
        elif target.size != source.size:
            reason = SIZE_CHANGED
        elif known_unchanged is not None and (known_md5 := known_unchanged(source, target)):
            reason = UNCHANGED
        else:
            reason = SAME_SIZE
        yield Step(rel, source, target, reason, known_md5)


def cache_vouches(local: LocalFile, remote: RemoteObject, record: Seen | None) -> bool:
    """Whether a cache record proves the file equals its object without reading it.

    Like restic's change check: size, mtime, ctime and inode all as recorded. The
    object's ETag must also be the one recorded, so an object rewritten behind the
    tool's back (or a cache from another bucket or machine) is never trusted.
    """
    if record is None:
        return False
    seen = record.local
    return (
        (seen.size, seen.mtime_ns, seen.ctime_ns, seen.inode)
        == (local.size, local.mtime_ns, local.ctime_ns, local.inode)
        and record.etag == remote.etag
        and remote.size == local.size
    )


_PLAIN_MD5 = re.compile(r"^[0-9a-f]{32}$")
_MULTIPART_ETAG = re.compile(r"^[0-9a-f]{32}-(\d+)$")


def is_plain_md5(etag: str) -> bool:
    return bool(_PLAIN_MD5.match(etag))


def multipart_etag(part_md5s: Iterable[bytes]) -> str:
    """The ETag S3 gives a multipart upload: MD5 of the parts' binary MD5s, then -count."""
    parts = list(part_md5s)
    return f"{hashlib.md5(b''.join(parts)).hexdigest()}-{len(parts)}"


def multipart_part_count(etag: str) -> int | None:
    """How many parts a multipart upload's ETag says it had; None for any other ETag."""
    multipart = _MULTIPART_ETAG.match(etag)
    return int(multipart.group(1)) if multipart else None


def etag_matches(etag: str, digest: FileDigest) -> bool | None:
    """Whether a listed ETag proves the content equals `digest`.

    True or False when the ETag can be compared; None when it cannot (a multipart
    upload with another part size, or an ETag that is not an MD5, as with SSE-KMS).
    """
    if is_plain_md5(etag):
        return etag == digest.md5
    multipart = _MULTIPART_ETAG.match(etag)
    if multipart and digest.part_md5s and int(multipart.group(1)) == len(digest.part_md5s):
        return etag == multipart_etag(digest.part_md5s) or None
    return None


def metadata_may_have_changed(local: LocalFile, remote: RemoteObject) -> bool:
    """Whether the file's inode changed after its object was written (chmod, touch).

    ctime moves with any change of mode or mtime. LastModified has one-second
    resolution, so only a ctime a full second past it counts: a chmod within the
    second of the upload, or hidden by a clock ahead of S3's, is not seen.
    """
    written_ns = int(remote.last_modified.timestamp()) * 1_000_000_000
    return local.ctime_ns >= written_ns + 1_000_000_000


def deletion_refusal(
    deletions: int,
    total: int,
    *,
    source_files: int,
    complete: bool,
    max_delete: str | None,
    force: bool,
) -> str | None:
    """Why the deletions a plan asks for must not happen, or None when they may.

    An empty source (an unmounted disk looks like one) or a partly unreadable one
    is never trusted to delete; a share above --max-delete (default: half of what
    is there) needs --force, as a rename of a big folder would.
    """
    if not deletions:
        return None
    if not source_files:
        return "the source has no files at all (is it empty or unmounted?)"
    if not complete:
        return "part of the source could not be read"
    limit = delete_limit(max_delete or DEFAULT_MAX_DELETE, total)
    if deletions > limit and not force:
        return f"{deletions} of {total} would go, more than --max-delete {limit}; add --force"
    return None


DEFAULT_MAX_DELETE = "50%"


def delete_limit(spec: str, total: int) -> int:
    """How many deletions --max-delete allows: a count ("100") or a share ("50%")."""
    if spec.endswith("%"):
        return total * int(spec[:-1]) // 100
    return int(spec)


def split_extras(steps: Iterable[Step], extras: list[Step]) -> Iterator[Step]:
    """Pass on the steps to transfer; keep the targets' extra entries aside."""
    for step in steps:
        if step.reason == EXTRA:
            extras.append(step)
        else:
            yield step


def sort_local_only(
    steps: Iterable[Step], extras: list[Step], leftovers: list[Step]
) -> Iterator[Step]:
    """Pass on the steps to transfer; set aside the files only the local side has.

    A local-only file is a leftover of a killed restore when its name has the exact
    shape of the tool's temporaries (`names.temporary_stem_of`) and the file it stands
    in for is a file of this backup in the same folder; every other one, lookalikes
    included, is an ordinary extra (deleted only with --delete, under its guards).

    Steps come in key order, where everything below a folder is one contiguous run, so
    only the file names of the folders on the current path are held, not the tree's.
    """
    # One frame per folder on the current path: its prefix, the temporary stems of the
    # backup's files in it, and its local-only files named like temporaries.
    path: list[tuple[str, set[str], list[tuple[Step, str]]]] = []

    def leave() -> None:
        _, stems, candidates = path.pop()
        for step, stem in candidates:
            (leftovers if stem in stems else extras).append(step)

    for step in steps:
        folder, _, name = step.rel.rpartition("/")
        prefix = folder + "/" if folder else ""
        while path and not prefix.startswith(path[-1][0]):
            leave()
        if not path or path[-1][0] != prefix:
            path.append((prefix, set(), []))
        _, stems, candidates = path[-1]
        if step.reason != EXTRA:
            stems.add(temporary_stem(name))
            yield step
        elif (stem := temporary_stem_of(name)) is not None:
            candidates.append((step, stem))
        else:
            extras.append(step)
    while path:
        leave()
