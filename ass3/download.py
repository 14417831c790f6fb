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
from collections.abc import Mapping
from contextlib import suppress
from typing import BinaryIO

from botocore.exceptions import ReadTimeoutError, ResponseStreamingError
from s3transfer.futures import TransferFuture
from s3transfer.manager import TransferManager
from s3transfer.subscribers import BaseSubscriber

from ass3.connection import Connection
from ass3.files import (
    READ_CHUNK,
    Placements,
    apply_metadata,
    create_temporary,
    folder_of,
    local_checksum,
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
)
from ass3.plan import etag_matches
from ass3.remote import content_matches

log = logging.getLogger("ass3")


def _write_verified(
    conn: Connection,
    transfers: TransferManager,
    bucket: str,
    remote: RemoteObject,
    folder: int,
    name: str,
    placements: Placements,
) -> None:
    """Download into a temporary file beside `name` in the open `folder`; rename it into
    place once verified.

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
            _verify(remote, metadata, digest)
            apply_metadata(out.fileno(), metadata)
        placements.replace(temporary, name, remote.rel, dir_fd=folder)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=folder)
        raise


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


class _KnownObject(BaseSubscriber):
    """Hands s3transfer the size and ETag we already know, sparing its own HeadObject
    and pinning every ranged GET to that ETag.

    `TransferMeta.provide_*` are s3transfer's own hooks for this (its upload path uses
    provide_transfer_size), public in name but not in its documentation; boto3's
    download_file offers no other way to skip the HeadObject. This is the one place
    the tool relies on them.
    """

    def __init__(self, size: int, etag: str) -> None:
        self._size = size
        self._etag = etag

    def on_queued(self, future: TransferFuture, **_: object) -> None:
        future.meta.provide_transfer_size(self._size)
        future.meta.provide_object_etag(self._etag)


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
    known = _KnownObject(head["ContentLength"], head["ETag"])
    transfers.download(
        bucket, remote.key, out, extra_args={**pinned, **owner}, subscribers=[known]
    ).result()
    out.flush()
    out.seek(0)
    return head.get("Metadata", {}), local_checksum(out, part_size)


def _verify(remote: RemoteObject, metadata: Mapping[str, str], digest: FileDigest) -> None:
    """Check the data against the run record's MD5 or the md5 metadata, else the ETag."""
    expected = remote.md5 or metadata.get(META_MD5)
    if expected:
        if expected != digest.md5:
            raise FileProblem(f"checksum mismatch: expected MD5 {expected}, got {digest.md5}")
        return
    verdict = etag_matches(remote.etag, digest)
    if verdict is False:
        raise FileProblem(f"checksum mismatch: ETag {remote.etag} does not match the data")
    if verdict is None:
        log.warning("warning: %s has no md5 metadata; restored unverified", remote.key)


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
        with open(step.target.path, "rb") as fileobj:
            digest = local_checksum(fileobj, conn.part_size_for(remote.size))
        read_bytes = remote.size
        if content_matches(conn, bucket, remote, digest):
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
            _write_verified(conn, transfers, bucket, remote, folder, name, placements)
        except (ResponseStreamingError, ReadTimeoutError):
            # The response broke off mid-body, which botocore does not retry: once more.
            _write_verified(conn, transfers, bucket, remote, folder, name, placements)
    return Outcome(
        step.rel, transferred=True, size=remote.size, reason=reason, read_bytes=read_bytes
    )
