"""One file of a backup: compare it with its object, upload it, or refresh its metadata.

A file below the multipart threshold is read once into memory, hashed and sent with
its Content-MD5, so S3 checks the body. A bigger one is hashed part by part, then
uploaded by s3transfer, which reads it again by path; a stat before and after tells
whether it changed in between.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, BinaryIO, cast

from s3transfer.manager import TransferManager

from ass3 import reading
from ass3.connection import Connection, KnownTransfer, UploadArgs
from ass3.copying import Copied, Copier, CopyHook
from ass3.files import READ_CHUNK, local_checksum, object_metadata
from ass3.model import (
    CHANGING,
    CONTENT_CHANGED,
    META_MD5,
    META_MODE,
    META_MTIME,
    METADATA_CHANGED,
    SAME_SIZE,
    UNCHANGED,
    FileDigest,
    FileProblem,
    LocalFile,
    MiB,
    Outcome,
    RecordEntry,
    RemoteObject,
    Seen,
    Step,
)
from ass3.names import MAX_KEY_BYTES
from ass3.plan import etag_matches, metadata_may_have_changed, multipart_etag
from ass3.remote import content_matches
from ass3.renames import copy_reason
from ass3.resume import Resumption, upload_args
from ass3.settings import MAX_SINGLE_PUT

if TYPE_CHECKING:
    from types_boto3_s3.type_defs import HeadObjectOutputTypeDef

log = logging.getLogger("ass3")


@dataclass(frozen=True)
class _Sent:
    """An object this run wrote: what it holds, and what reading the file cost."""

    snapshot: LocalFile  # the file as opened
    md5: str
    etag: str
    version_id: str | None
    size: int
    read_bytes: int
    clean: bool  # False: the file changed while read; the object holds the bytes read
    copied_from: str | None = None  # a server-side copy of this object (relative key)

    @classmethod
    def copied(cls, snapshot: LocalFile, md5: str, size: int, copy: Copied) -> _Sent:
        """A copy of the file's content already in the bucket: read once, to hash it."""
        return cls(snapshot, md5, copy.etag, copy.version_id, size, size, True, copy.source)


def _upload(
    conn: Connection,
    transfers: TransferManager,
    bucket: str,
    key: str,
    local: LocalFile,
    *,
    as_read: bool,
    instead: CopyHook | None = None,
    resumption: Resumption | None = None,
) -> _Sent:
    """Upload the file the scan found, reading it through one descriptor.

    FileChanged if it changed while being read, and nothing is written then: a
    multipart upload is stopped before it completes. With `as_read` the bytes read
    are uploaded whatever happened meanwhile, under their own checksum. `instead`
    may copy the content server-side once it is hashed, and nothing is sent then.
    """
    with reading.open_scanned(local) as fileobj:
        before = os.fstat(fileobj.fileno())
        snapshot = LocalFile.from_stat(local.rel, local.path, before, followed=local.followed)
        part_size = conn.part_size_for(before.st_size)
        if part_size is None:
            return _put_small(
                conn, bucket, key, fileobj, before, snapshot, as_read=as_read, instead=instead
            )
        if conn.multipart_refused and before.st_size > MAX_SINGLE_PUT:
            raise FileProblem("over 5 GiB, and the server refuses multipart uploads")
        if not as_read:
            if conn.multipart_refused:
                return _put_whole(conn, transfers, bucket, key, fileobj, before, snapshot, instead)
            return _put_large(
                conn, transfers, bucket, key, fileobj, before, snapshot, instead, resumption
            )
        put = _put_whole if conn.multipart_refused else _put_large
        with tempfile.TemporaryFile() as copy:  # a snapshot that cannot change under us
            shutil.copyfileobj(fileobj, copy, READ_CHUNK)
            copy.flush()
            frozen = os.fstat(copy.fileno())
            copy.seek(0)
            sent = put(conn, transfers, bucket, key, copy, frozen, snapshot)
            return replace(sent, read_bytes=sent.read_bytes + before.st_size, clean=False)


def _put_small(
    conn: Connection,
    bucket: str,
    key: str,
    fileobj: BinaryIO,
    before: os.stat_result,
    snapshot: LocalFile,
    *,
    as_read: bool,
    instead: CopyHook | None = None,
) -> _Sent:
    """One PutObject of the bytes read: the bytes hashed are the bytes sent, and S3
    checks them against Content-MD5."""
    data = fileobj.read()
    clean = reading.unchanged(fileobj, before) and len(data) == before.st_size
    if not (clean or as_read):
        raise reading.FileChanged("changed while being read")
    digest = FileDigest(hashlib.md5(data).hexdigest())
    if clean and instead is not None and (copy := instead(digest, before)):
        return _Sent.copied(snapshot, digest.md5, len(data), copy)
    response = conn.client.put_object(
        Bucket=bucket,
        Key=key,
        Body=data,
        ContentMD5=base64.b64encode(bytes.fromhex(digest.md5)).decode(),
        Metadata=object_metadata(digest, before),
        **conn.storage.upload_args(),
        **conn.owner_args(),
    )
    etag = response["ETag"].strip('"')
    version_id = response.get("VersionId")
    return _Sent(snapshot, digest.md5, etag, version_id, len(data), len(data), clean)


def _hashed_first(fileobj: BinaryIO, before: os.stat_result, part_size: int | None) -> FileDigest:
    """The digest of a file about to be streamed, rewound for the upload to read it again."""
    digest = local_checksum(fileobj, part_size)
    if not reading.unchanged(fileobj, before):
        raise reading.FileChanged("changed while being read")
    fileobj.seek(0)
    return digest


def _put_large(
    conn: Connection,
    transfers: TransferManager,
    bucket: str,
    key: str,
    fileobj: BinaryIO,
    before: os.stat_result,
    snapshot: LocalFile,
    instead: CopyHook | None = None,
    resumption: Resumption | None = None,
) -> _Sent:
    """Hash the file part by part, then finish the upload of it an earlier run left, or
    upload it in parts through s3transfer from the same descriptor; the parts sent are
    checked against the parts hashed before the upload is completed, so a file that
    changed meanwhile leaves no object behind. With `resumption`, an upload interrupted
    after a part was sent is kept for the next run (see `ass3.resume`)."""
    part_size = conn.part_size_for(before.st_size)
    assert part_size is not None
    digest = _hashed_first(fileobj, before, part_size)
    if instead is not None and (copy := instead(digest, before)):
        return _Sent.copied(snapshot, digest.md5, before.st_size, copy)
    size = before.st_size
    extra_args = {
        "Metadata": object_metadata(digest, before),
        **conn.storage.upload_args(),
        **conn.owner_args(),
    }
    args = upload_args(conn, extra_args)
    if resumption is not None:
        resumed = resumption.resume(bucket, key, fileobj, before, part_size, args, digest)
        if resumed is not None:
            whole, version, read = resumed
            return _Sent(snapshot, digest.md5, whole, version, size, size + read, clean=True)
        fileobj.seek(0)
    sent = reading.PartHashingReader(fileobj, part_size)
    checked: list[bool] = []
    watched = (
        resumption.fresh(resumption.new_upload(key, before, part_size, args, digest))
        if resumption is not None and resumption.enabled
        else nullcontext(None)
    )

    with watched as opened:

        def sent_as_hashed() -> None:
            if not (sent.sent_matches(digest.part_md5s) and reading.unchanged(fileobj, before)):
                if opened is not None:
                    opened.mismatch = True  # parts not of this file: aborted, never kept
                raise reading.FileChanged("changed while being uploaded")
            checked.append(True)

        source = cast("BinaryIO", sent)  # s3transfer needs only read, seek and tell
        with conn.completion_checked(key, sent_as_hashed):
            future = transfers.upload(
                source, bucket, key, extra_args=extra_args, subscribers=[KnownTransfer(size)]
            )
            future.result()
    etag, version_id = conn.completed_upload(key)
    if not checked:  # cannot happen while s3transfer completes every upload of this size
        raise FileProblem("uploaded without its parts being checked; run again")
    etag = etag or multipart_etag(digest.part_md5s)
    return _Sent(snapshot, digest.md5, etag, version_id, size, 2 * size, clean=True)


def _put_whole(
    conn: Connection,
    _transfers: TransferManager,
    bucket: str,
    key: str,
    fileobj: BinaryIO,
    before: os.stat_result,
    snapshot: LocalFile,
    instead: CopyHook | None = None,
) -> _Sent:
    """One streamed PutObject of a file too big to hold in memory, for a server that
    refuses multipart uploads: hashed first, then sent with that Content-MD5, which
    makes S3 (and most servers) refuse bytes that changed meanwhile. On a server that
    ignores Content-MD5, the bytes hashed as sent tell: the file is then sent again, as
    any file that changed while read, over the object that did not match its metadata,
    before the run records anything. An ETag that is not the MD5 sent is reported."""
    digest = _hashed_first(fileobj, before, None)
    if instead is not None and (copy := instead(digest, before)):
        return _Sent.copied(snapshot, digest.md5, before.st_size, copy)
    sent = reading.WholeHashingReader(fileobj)
    response = conn.client.put_object(
        Bucket=bucket,
        Key=key,
        Body=cast("BinaryIO", sent),  # botocore needs only read, seek and tell
        ContentLength=before.st_size,
        ContentMD5=base64.b64encode(bytes.fromhex(digest.md5)).decode(),
        Metadata=object_metadata(digest, before),
        **conn.storage.upload_args(),
        **conn.owner_args(),
    )
    etag = response["ETag"].strip('"')
    if not (sent.sent_md5() == digest.md5 and reading.unchanged(fileobj, before)):
        # The object holds bytes its md5 metadata does not describe: sent again at once.
        raise reading.FileChanged("changed while being uploaded")
    if conn.storage.etag_is_md5 and etag_matches(etag, digest) is False:
        # The server kept other bytes than it was sent; its ETag tells the next run so.
        raise FileProblem(f"the server answered ETag {etag}, not the MD5 of the bytes sent")
    size = before.st_size
    return _Sent(snapshot, digest.md5, etag, response.get("VersionId"), size, 2 * size, True)


def _matched(
    conn: Connection,
    bucket: str,
    remote: RemoteObject,
    snapshot: LocalFile,
    digest: FileDigest,
    *,
    dry_run: bool,
) -> Outcome:
    """The file's content is its object's: rewrite the object's metadata if the file's
    mode or mtime moved, else nothing to do."""
    if not dry_run and metadata_may_have_changed(snapshot, remote):
        updated = _refresh_metadata(conn, bucket, remote, snapshot, digest)
        if updated is not None:
            return Outcome(
                snapshot.rel,
                transferred=False,
                size=snapshot.size,
                reason=METADATA_CHANGED,
                read_bytes=snapshot.size,
                entry=updated,
                metadata_updated=True,
            )
    return Outcome(
        snapshot.rel,
        transferred=False,
        size=snapshot.size,
        read_bytes=snapshot.size,
        seen=Seen(snapshot, digest.md5, remote.etag),
        entry=RecordEntry(snapshot.rel, remote.size, digest.md5, remote.etag, None),
    )


def backup_step(
    conn: Connection,
    transfers: TransferManager,
    bucket: str,
    prefix: str,
    step: Step,
    *,
    dry_run: bool,
    copier: Copier | None = None,
    resumption: Resumption | None = None,
    on_write: Callable[[], None] | None = None,
) -> Outcome:
    """Back up one planned file: trust the cache, else compare a same-size file by content,
    then upload it (once more if it changed while being read) or refresh its metadata.
    With `copier`, a file whose content the bucket holds under another key is copied.
    `on_write` is told just before an upload or copy is sent."""
    local = step.source
    assert isinstance(local, LocalFile)
    remote = step.target
    reason = step.reason
    if reason == UNCHANGED:
        assert isinstance(remote, RemoteObject) and step.known_md5
        entry = RecordEntry(step.rel, remote.size, step.known_md5, remote.etag, None)
        return Outcome(step.rel, transferred=False, size=local.size, entry=entry)
    read_bytes = 0
    if reason == SAME_SIZE:
        assert isinstance(remote, RemoteObject)
        with reading.open_scanned(local) as fileobj:
            st = os.fstat(fileobj.fileno())
            snapshot = LocalFile.from_stat(local.rel, local.path, st, followed=local.followed)
            digest = local_checksum(fileobj, conn.part_size_for(local.size))
        read_bytes = snapshot.size
        if content_matches(conn, bucket, remote, digest):
            return _matched(conn, bucket, remote, snapshot, digest, dry_run=dry_run)
        reason = CONTENT_CHANGED
    key = f"{prefix}/{local.rel}"
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise FileProblem(f"the S3 key would be longer than {MAX_KEY_BYTES} bytes")
    if dry_run:
        if copier is not None and copier.candidate(step):
            source, read = copier.planned(local)
            if source is not None:
                return Outcome(
                    step.rel,
                    transferred=False,
                    size=local.size,
                    reason=copy_reason(source, source_still_there=True, dry_run=True),
                    read_bytes=read,
                    copied_from=source,
                )
            read_bytes += read
        return Outcome(
            step.rel, transferred=True, size=local.size, reason=reason, read_bytes=read_bytes
        )
    if on_write is not None:
        on_write()
    instead = copier.hook(step, transfers) if copier is not None else None

    def send(*, as_read: bool) -> _Sent:
        """A server that refuses CRC32 checksums or multipart gets the file again without."""
        return conn.with_fallbacks(
            lambda: _upload(
                conn,
                transfers,
                bucket,
                key,
                local,
                as_read=as_read,
                instead=None if as_read else instead,
                resumption=resumption,
            )
        )

    try:
        sent = send(as_read=False)
    except reading.FileChanged:  # once more; a file that never stops changing goes up as read
        try:
            sent = send(as_read=False)
        except reading.FileChanged:
            sent = send(as_read=True)
    entry = RecordEntry(step.rel, sent.size, sent.md5, sent.etag, sent.version_id)
    if sent.copied_from is not None and copier is not None:
        still_there = copier.still_there(sent.copied_from)
        return Outcome(
            step.rel,
            transferred=False,
            size=sent.size,
            reason=copy_reason(sent.copied_from, source_still_there=still_there, dry_run=False),
            read_bytes=read_bytes + sent.read_bytes,
            seen=Seen(sent.snapshot, sent.md5, sent.etag),
            entry=entry,
            copied_from=sent.copied_from,
        )
    return Outcome(
        step.rel,
        transferred=True,
        size=sent.size,
        reason=reason,
        read_bytes=read_bytes + sent.read_bytes,
        # A file caught changing is not cached: the next run reads it again.
        seen=Seen(sent.snapshot, sent.md5, sent.etag) if sent.clean else None,
        entry=entry,
        warning=None if sent.clean else CHANGING,
    )


MAX_COPY_BYTES = 5 * 1024 * MiB  # the largest object one CopyObject can rewrite


def _refresh_metadata(
    conn: Connection,
    bucket: str,
    remote: RemoteObject,
    snapshot: LocalFile,
    digest: FileDigest,
) -> RecordEntry | None:
    """Bring the object's mtime and mode metadata up to the file's, by a server-side copy
    onto itself (no data sent); the record line of the result, or None if already current.

    The storage class and encryption the object has are kept, unless options set them.
    """
    owner = conn.owner_args()
    head = conn.client.head_object(Bucket=bucket, Key=remote.key, **owner)
    metadata = head.get("Metadata", {})
    wanted = {
        META_MD5: digest.md5,
        META_MTIME: str(snapshot.mtime_ns),
        META_MODE: format(snapshot.mode, "o"),
    }
    if all(metadata.get(name) == value for name, value in wanted.items()):
        return None
    if remote.size > MAX_COPY_BYTES:
        log.warning("warning: %s: mode/mtime changed, not updated (over 5 GiB)", remote.key)
        return None
    storage: UploadArgs = {**_storage_of(head), **conn.storage.upload_args()}
    response = conn.client.copy_object(
        Bucket=bucket,
        Key=remote.key,
        CopySource={"Bucket": bucket, "Key": remote.key},
        CopySourceIfMatch=head["ETag"],
        MetadataDirective="REPLACE",
        Metadata={**metadata, **wanted},
        **storage,
        **owner,
        **conn.source_owner_args(),
    )
    etag = response.get("CopyObjectResult", {}).get("ETag", head["ETag"]).strip('"')
    return RecordEntry(remote.rel, remote.size, digest.md5, etag, response.get("VersionId"))


def _storage_of(head: HeadObjectOutputTypeDef) -> UploadArgs:
    """How an object is stored, so that a copy onto itself keeps it that way."""
    storage: UploadArgs = {}
    if head.get("StorageClass"):
        storage["StorageClass"] = head["StorageClass"]
    if head.get("ServerSideEncryption"):
        storage["ServerSideEncryption"] = head["ServerSideEncryption"]
    if head.get("SSEKMSKeyId"):
        storage["SSEKMSKeyId"] = head["SSEKMSKeyId"]
    return storage
