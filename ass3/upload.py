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
from typing import TYPE_CHECKING

from s3transfer.manager import TransferManager

from ass3 import files
from ass3.connection import Connection, UploadArgs
from ass3.files import local_checksum, object_metadata
from ass3.model import (
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
    VersionArgs,
)
from ass3.names import MAX_KEY_BYTES
from ass3.plan import metadata_may_have_changed, multipart_etag
from ass3.remote import content_matches

if TYPE_CHECKING:
    from types_boto3_s3.type_defs import HeadObjectOutputTypeDef

log = logging.getLogger("ass3")


def _upload_once(
    conn: Connection, transfers: TransferManager, bucket: str, key: str, rel: str, path: str
) -> tuple[Seen, str | None]:
    """Upload the file as it is now: what was read, and the new object's version.

    FileProblem if the file changed while being read.
    """
    with open(path, "rb") as fileobj:
        before = os.fstat(fileobj.fileno())
        snapshot = LocalFile.from_stat(rel, path, before)
        part_size = conn.part_size_for(before.st_size)
        if part_size is None:
            # Small file: the bytes hashed are the bytes sent, and S3 checks Content-MD5.
            data = fileobj.read()
            digest = FileDigest(hashlib.md5(data).hexdigest())
            after = os.fstat(fileobj.fileno())
            if not files.same_file_state(before, after) or len(data) != before.st_size:
                raise FileProblem("changed while being read")
            response = conn.client.put_object(
                Bucket=bucket,
                Key=key,
                Body=data,
                ContentMD5=base64.b64encode(bytes.fromhex(digest.md5)).decode(),
                Metadata=object_metadata(digest, before),
                **conn.storage.upload_args(),
                **conn.owner_args(),
            )
            seen = Seen(snapshot, digest.md5, response["ETag"].strip('"'))
            return seen, response.get("VersionId")
        digest = local_checksum(fileobj, part_size)
    extra_args = {
        "Metadata": object_metadata(digest, before),
        **conn.storage.upload_args(),
        **conn.owner_args(),
    }
    transfers.upload(path, bucket, key, extra_args=extra_args).result()
    etag, version_id = conn.completed_upload(key)
    if not files.same_file_state(before, os.stat(path)):
        # The object may not match the md5 recorded with it: take that version back out
        # (only it, so the previous good version is current again).
        pinned: VersionArgs = {"VersionId": version_id} if version_id else {}
        conn.client.delete_object(Bucket=bucket, Key=key, **pinned, **conn.owner_args())
        raise FileProblem("changed while being uploaded")
    return Seen(snapshot, digest.md5, etag or multipart_etag(digest.part_md5s)), version_id


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
) -> Outcome:
    """Back up one planned file: trust the cache, else compare a same-size file by content,
    then upload it (once more if it changed while being read) or refresh its metadata."""
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
        with open(local.path, "rb") as fileobj:
            snapshot = LocalFile.from_stat(local.rel, local.path, os.fstat(fileobj.fileno()))
            digest = local_checksum(fileobj, conn.part_size_for(local.size))
        read_bytes = snapshot.size
        if content_matches(conn, bucket, remote, digest):
            return _matched(conn, bucket, remote, snapshot, digest, dry_run=dry_run)
        reason = CONTENT_CHANGED
    key = f"{prefix}/{local.rel}"
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise FileProblem(f"the S3 key would be longer than {MAX_KEY_BYTES} bytes")
    if dry_run:
        return Outcome(
            step.rel, transferred=True, size=local.size, reason=reason, read_bytes=read_bytes
        )
    try:
        seen, version_id = _upload_once(conn, transfers, bucket, key, local.rel, local.path)
    except FileProblem:  # changed while being read: once more, then report
        seen, version_id = _upload_once(conn, transfers, bucket, key, local.rel, local.path)
    size = seen.local.size
    read_bytes += size * 2 if conn.part_size_for(size) else size
    entry = RecordEntry(step.rel, size, seen.md5, seen.etag, version_id)
    return Outcome(
        step.rel,
        transferred=True,
        size=size,
        reason=reason,
        read_bytes=read_bytes,
        seen=seen,
        entry=entry,
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
