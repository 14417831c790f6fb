"""One file of a restore: fetch its object into a temporary file, verify, put in place.

A file already at the destination is only ever replaced by a complete, verified one:
the bytes go to a temporary file beside it (`.ass3-NAME.RANDOM.part`, named for the
file so that only the tool's own leftovers are ever taken for one), are checked against
the run record's MD5 (or the object's md5 metadata, or its ETag), and only then renamed
over it. Every step is made relative to the file's folder, opened without following a
symlink (`files.folder_of`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import BinaryIO

from botocore.exceptions import ReadTimeoutError, ResponseStreamingError
from s3transfer.manager import TransferManager

from ass3 import reading
from ass3.connection import Connection, KnownTransfer
from ass3.files import (
    READ_CHUNK,
    Placements,
    apply_metadata,
    create_temporary,
    folder_of,
    local_checksum,
    part_md5s,
)
from ass3.model import (
    CONTENT_CHANGED,
    META_MD5,
    SAME_SIZE,
    FileDigest,
    FileProblem,
    LocalFile,
    Outcome,
    RemoteObject,
    Step,
    VersionArgs,
)
from ass3.plan import etag_matches, multipart_etag, multipart_part_count
from ass3.remote import content_matches

log = logging.getLogger("ass3")

# Puts a restored file's attributes on it, still under its temporary name: (its open
# descriptor, its name in the backup, its object's metadata); see treeio.Attributes.
SetAttributes = Callable[[int, str, Mapping[str, str]], None]


def _write_verified(
    conn: Connection,
    transfers: TransferManager,
    bucket: str,
    remote: RemoteObject,
    folder: int,
    name: str,
    placements: Placements,
    set_attributes: SetAttributes | None,
) -> str | None:
    """Download into a temporary file beside `name` in the open `folder`; rename it into
    place once verified, with its attributes (`set_attributes`, else the mode bits and
    mtime of its metadata). A warning when the object could not be verified at all.

    A good file already at `name` is replaced only by a complete, verified one. Every
    step is relative to `folder`, so a symlink planted on the path meanwhile is never
    followed.
    """
    descriptor, temporary = create_temporary(folder, name)
    try:
        with os.fdopen(descriptor, "w+b") as out:
            part_size = conn.part_size_for(remote.size)
            if part_size is None:
                metadata, digest = _get_small(conn, bucket, remote, out)
            else:
                metadata, digest = _get_large(conn, transfers, bucket, remote, out, part_size)
            out.flush()
            os.fsync(out.fileno())
            warning = _verify(conn, bucket, remote, metadata, digest, out)
            if set_attributes is None:
                apply_metadata(out.fileno(), metadata)
            else:
                set_attributes(out.fileno(), remote.rel, metadata)
        placements.replace(temporary, name, remote.rel, dir_fd=folder)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=folder)
        raise
    return warning


def _get_small(
    conn: Connection, bucket: str, remote: RemoteObject, out: BinaryIO
) -> tuple[dict[str, str], FileDigest]:
    """One GetObject, pinned to the version or listed ETag, streamed to disk while hashing."""
    response = conn.client.get_object(
        Bucket=bucket, Key=remote.key, **remote.pin(), **conn.owner_args()
    )
    md5 = hashlib.md5()
    for chunk in response["Body"].iter_chunks(READ_CHUNK):
        md5.update(chunk)
        out.write(chunk)
    return response.get("Metadata", {}), FileDigest(md5.hexdigest())


def _get_large(
    conn: Connection,
    transfers: TransferManager,
    bucket: str,
    remote: RemoteObject,
    out: BinaryIO,
    part_size: int,
) -> tuple[dict[str, str], FileDigest]:
    """Parallel ranged GETs through s3transfer into `out`, then hashed from disk.

    One HeadObject reads the metadata; s3transfer does not verify ranged downloads,
    so the file is hashed after it lands.
    """
    owner = conn.owner_args()
    head = conn.client.head_object(Bucket=bucket, Key=remote.key, **remote.pin(), **owner)
    pinned = {"VersionId": head["VersionId"]} if head.get("VersionId") else {}
    known = KnownTransfer(head["ContentLength"], head["ETag"])
    transfers.download(
        bucket, remote.key, out, extra_args={**pinned, **owner}, subscribers=[known]
    ).result()
    out.flush()
    out.seek(0)
    return head.get("Metadata", {}), local_checksum(out, part_size)


def _verify(
    conn: Connection,
    bucket: str,
    remote: RemoteObject,
    metadata: Mapping[str, str],
    digest: FileDigest,
    out: BinaryIO,
) -> str | None:
    """Check the data against the run record's MD5 or the md5 metadata, else the ETag.

    An object written by another tool has no md5 metadata; a multipart ETag of its
    own part sizes is then checked against the data cut at those sizes (one
    HeadObject per part). FileProblem on a mismatch; a warning when the ETag is not
    an MD5 at all (SSE-KMS), so nothing can vouch for the data.
    """
    expected = remote.md5 or metadata.get(META_MD5)
    if expected:
        if expected != digest.md5:
            raise FileProblem(f"checksum mismatch: expected MD5 {expected}, got {digest.md5}")
        return None
    verdict = etag_matches(remote.etag, digest)
    parts = multipart_part_count(remote.etag)
    if verdict is None and parts:
        sizes = _part_sizes(conn, bucket, remote, parts)
        out.seek(0)
        verdict = sum(sizes) == remote.size and multipart_etag(part_md5s(out, sizes)) == (
            remote.etag
        )
    if verdict is False:
        raise FileProblem(f"checksum mismatch: ETag {remote.etag} does not match the data")
    if verdict is None:
        return "no md5 metadata and an ETag that is not an MD5: restored unverified"
    return None


def _part_sizes(conn: Connection, bucket: str, remote: RemoteObject, parts: int) -> list[int]:
    """The size of each part the object was uploaded in, as S3 tells it by part number.

    Not pinned by IfMatch (some servers refuse it with PartNumber): if the object was
    replaced meanwhile, the sizes cannot cut the data into the listed ETag's parts.
    """
    version: VersionArgs = {"VersionId": remote.version_id} if remote.version_id else {}
    return [
        conn.client.head_object(
            Bucket=bucket, Key=remote.key, PartNumber=number, **version, **conn.owner_args()
        )["ContentLength"]
        for number in range(1, parts + 1)
    ]


def restore_step(
    conn: Connection,
    transfers: TransferManager,
    bucket: str,
    root: str,
    root_fd: int | None,
    step: Step,
    placements: Placements,
    *,
    dry_run: bool,
    set_attributes: SetAttributes | None = None,
) -> Outcome:
    """Restore one planned file: compare a same-size local file by content first, then
    download, verify and put the object in place (a broken-off body is tried once more).

    `root_fd` is DESTINATION/NAME held open for the run (None in a dry run, which may
    have no folder); the file's folder is reached from it, never through a symlink.
    """
    remote = step.source
    assert isinstance(remote, RemoteObject)
    reason = step.reason
    read_bytes = 0
    if reason == SAME_SIZE:
        assert isinstance(step.target, LocalFile)
        try:  # the file the walk saw, never a FIFO or a link swapped in since (no hang)
            with reading.open_scanned(step.target) as fileobj:
                digest = local_checksum(fileobj, conn.part_size_for(remote.size))
        except FileProblem:
            digest = None  # replaced since the walk: the download puts the object in its place
        read_bytes = remote.size
        if digest is not None and content_matches(conn, bucket, remote, digest):
            return Outcome(step.rel, transferred=False, size=remote.size, read_bytes=read_bytes)
        reason = CONTENT_CHANGED
    if dry_run:
        return Outcome(
            step.rel, transferred=True, size=remote.size, reason=reason, read_bytes=read_bytes
        )
    assert root_fd is not None
    name = step.rel.rsplit("/", 1)[-1]
    with folder_of(root_fd, root, step.rel, create=True) as folder:
        try:
            warning = _write_verified(
                conn, transfers, bucket, remote, folder, name, placements, set_attributes
            )
        except (ResponseStreamingError, ReadTimeoutError):
            # The response broke off mid-body, which botocore does not retry: once more.
            warning = _write_verified(
                conn, transfers, bucket, remote, folder, name, placements, set_attributes
            )
    return Outcome(
        step.rel,
        transferred=True,
        size=remote.size,
        reason=reason,
        read_bytes=read_bytes,
        warning=warning,
    )
