"""Pure rules for renames and copies: which object the bucket already holds a new
file's content in, so that a server-side copy replaces an upload.

The index is the previous run record's lines by size: most new files have a size
no recorded file has, and those are never hashed for nothing. A line is trusted
only as far as S3 itself can check it: its ETag must prove the file's own bytes
(`plan.etag_matches`), because the copy is made on the condition that the source
still has that ETag, and its answer is checked against it again. No I/O here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from ass3.model import FileDigest, RecordEntry
from ass3.plan import etag_matches


@dataclass(frozen=True)
class ContentIndex:
    """The previous run record's lines that may serve as a copy source, by size.

    Empty files are left out (an empty object costs no bytes to send), and so are
    lines without an MD5 (files a run listed without reading).
    """

    by_size: Mapping[int, tuple[RecordEntry, ...]]

    @classmethod
    def of(cls, entries: Iterable[RecordEntry]) -> ContentIndex:
        by_size: dict[int, list[RecordEntry]] = {}
        for entry in entries:
            if entry.size > 0 and entry.md5:
                by_size.setdefault(entry.size, []).append(entry)
        return cls({size: tuple(lines) for size, lines in by_size.items()})

    def holds_size(self, size: int) -> bool:
        """Whether a file of `size` bytes may be a copy: only those are worth hashing first."""
        return size in self.by_size

    def unpinned(self, size: int) -> bool:
        """Whether some line of that size names no version: on an unversioned bucket a
        copy from it must wait until the run knows which keys it overwrites."""
        return any(entry.version_id is None for entry in self.by_size.get(size, ()))

    def unpinned_rels(self) -> frozenset[str]:
        """The keys (relative) a copy may only come from while this run leaves them alone."""
        return frozenset(
            entry.rel
            for lines in self.by_size.values()
            for entry in lines
            if entry.version_id is None
        )


def copy_source(
    index: ContentIndex,
    digest: FileDigest,
    size: int,
    *,
    changing: Collection[str] | None,
) -> RecordEntry | None:
    """The record line whose object a file of `size` bytes and `digest` may be copied
    from, or None: upload it.

    A line is a source when it holds the same size and MD5 and its ETag proves these
    bytes (a plain MD5 equal to the file's, or a multipart ETag made of the file's own
    part MD5s): an SSE-KMS ETag or a planted line whose ETag says otherwise is never
    trusted. A line pinned to a version can be copied whatever this run does to its
    key, even a swap of two files. A line without a version (an unversioned bucket)
    names whatever object its key holds when the copy happens, so it is a source only
    once `changing`, the keys this run writes, is known, and its key is not among
    them; None means not known yet. Pinned lines come first, then key order.
    """
    pinned: RecordEntry | None = None
    unpinned: RecordEntry | None = None
    for entry in index.by_size.get(size, ()):
        if entry.md5 != digest.md5 or etag_matches(entry.etag, digest) is not True:
            continue
        if entry.version_id:
            pinned = pinned or entry
        elif changing is not None and entry.rel not in changing:
            unpinned = unpinned or entry
    return pinned or unpinned


def copy_reason(source_rel: str, *, source_still_there: bool, dry_run: bool) -> str:
    """What -v says of a copied file: a rename when the source's file is gone, else a
    copy; a dry run names the source only."""
    if dry_run:
        return f"from {source_rel}"
    return f"{'copied' if source_still_there else 'renamed'} from {source_rel}"
