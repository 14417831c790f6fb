"""Resuming big uploads: keep an interrupted multipart upload, and finish it next run.

s3transfer sends a fresh upload and aborts it when it cannot finish (Ctrl-C, SIGTERM,
a lost connection). `Resumption` watches the tool's client while a run uploads: it
records each multipart upload the run creates in the state cache (`UploadJournal`),
counts the parts S3 accepted, and turns s3transfer's AbortMultipartUpload of an
upload that has at least one part into nothing, so that the parts stay. An upload
with no part yet, or whose parts did not match the file, is aborted as before.

s3transfer cannot resume, so the next run does it here with plain requests: ListParts,
UploadPart for the parts missing or whose ETag is not the MD5 of the same bytes of
the file now, and CompleteMultipartUpload after the same check the fresh path makes.
Anything unexpected aborts the upload, and the file is sent afresh.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, TypedDict

from botocore.exceptions import ClientError

from ass3 import reading
from ass3.connection import Connection
from ass3.model import FileDigest, FileProblem, printable
from ass3.plan import multipart_etag
from ass3.resumable import (
    ListedPart,
    PendingUpload,
    UploadJournal,
    part_length,
    parts_to_send,
    resume_refusal,
)
from ass3.s3errors import TRANSFER_ERRORS, describe_client_error, error_code

if TYPE_CHECKING:
    from types_boto3_s3.type_defs import CompletedPartTypeDef

log = logging.getLogger("ass3")

_CHECKSUMS = ("ChecksumCRC32", "ChecksumCRC32C", "ChecksumSHA1", "ChecksumSHA256")


class UploadPartArgs(TypedDict, total=False):
    """The checksum an upload created with one needs on each part."""

    ChecksumAlgorithm: Literal["CRC32"]


class KeptForResume(Exception):
    """Raised instead of aborting an upload that has parts: s3transfer, cleaning up an
    upload it could not finish, logs it and goes on, and the upload stays."""


@dataclass
class _Open:
    """A fresh upload of this run, while s3transfer sends it."""

    pending: PendingUpload  # upload_id empty until CreateMultipartUpload answers
    recorded: bool = False
    parts: int = 0
    mismatch: bool = False
    kept: bool = False


def upload_args(conn: Connection, extra_args: Mapping[str, Any]) -> str:
    """What an upload is created with, as one string: a recorded upload is resumed only
    with the same (metadata, storage class, encryption, CRC32 or not)."""
    return json.dumps({**extra_args, "crc32": conn.sends_crc32}, sort_keys=True)


class Resumption:
    """This run's big uploads, with what the state cache records of them."""

    def __init__(self, conn: Connection, journal: UploadJournal, stop: threading.Event) -> None:
        self.conn = conn
        self.journal = journal
        self.stop = stop
        self._lock = threading.Lock()
        self._open: dict[str, _Open] = {}
        self._hooks = (
            ("before-parameter-build.s3.CreateMultipartUpload", self._note_key),
            ("after-call.s3.CreateMultipartUpload", self._created),
            ("before-parameter-build.s3.UploadPart", self._note_key),
            ("after-call.s3.UploadPart", self._part_done),
            ("before-parameter-build.s3.AbortMultipartUpload", self._abort_or_keep),
        )

    @property
    def enabled(self) -> bool:
        """SSE-KMS parts have ETags that are not MD5s: such uploads are never resumed."""
        return self.journal.usable and self.conn.storage.etag_is_md5

    def __enter__(self) -> Resumption:
        for event, handler in self._hooks:
            self.conn.client.meta.events.register(event, handler)
        return self

    def __exit__(self, *_: object) -> None:
        for event, handler in self._hooks:
            self.conn.client.meta.events.unregister(event, handler)

    # --- the fresh upload, sent by s3transfer ---------------------------------------------

    @contextmanager
    def fresh(self, pending: PendingUpload) -> Iterator[_Open]:
        """Watch s3transfer's upload of `pending.key` inside the block: recorded when
        created, forgotten when completed or aborted, kept if aborted after a part."""
        opened = _Open(pending)
        with self._lock:
            self._open[pending.key] = opened
        try:
            yield opened
        finally:
            with self._lock:
                self._open.pop(pending.key, None)
            if opened.recorded and not opened.kept:
                self.journal.forget(pending.key, opened.pending.upload_id)

    def _watched(self, key: object, upload_id: object = None) -> _Open | None:
        if not isinstance(key, str):
            return None
        with self._lock:
            opened = self._open.get(key)
        if opened is None or (upload_id is not None and opened.pending.upload_id != upload_id):
            return None
        return opened

    def _note_key(self, params: Mapping[str, Any], context: dict[str, Any], **_: Any) -> None:
        """Answers need not repeat the key (some servers' do not): the request's is kept."""
        context["ass3_upload"] = (params.get("Key"), params.get("UploadId"))

    def _created(self, parsed: Mapping[str, Any], context: Mapping[str, Any], **_: Any) -> None:
        key, _upload_id = context.get("ass3_upload", (None, None))
        opened = self._watched(key)
        if opened is not None and "UploadId" in parsed:
            opened.pending = replace(opened.pending, upload_id=parsed["UploadId"])
            opened.recorded = self.journal.save(opened.pending)

    def _part_done(self, http_response: Any, context: Mapping[str, Any], **_: Any) -> None:
        opened = self._watched(*context.get("ass3_upload", (None, None)))
        if opened is not None and 200 <= http_response.status_code < 300:
            with self._lock:
                opened.parts += 1

    def _abort_or_keep(self, params: Mapping[str, Any], **_: object) -> None:
        opened = self._watched(params.get("Key"), params.get("UploadId"))
        if opened is not None and opened.recorded and opened.parts and not opened.mismatch:
            opened.kept = True
            log.info(
                "kept the incomplete upload of %s (%d parts sent) for the next run to resume",
                printable(opened.pending.key),
                opened.parts,
            )
            raise KeptForResume(opened.pending.key)

    # --- the resumed upload, sent here ----------------------------------------------------

    def resume(
        self,
        bucket: str,
        key: str,
        fileobj: BinaryIO,
        before: os.stat_result,
        part_size: int,
        args: str,
        digest: FileDigest,
    ) -> tuple[str, str | None, int] | None:
        """Finish this machine's recorded upload of this file: ETag, VersionId and bytes
        read. None when there is none, or it cannot be finished (it is then aborted, and
        the file is to be sent afresh)."""
        pending = self.journal.find(key) if self.enabled else None
        if pending is None:
            return None
        refusal = resume_refusal(
            pending,
            size=before.st_size,
            mtime_ns=before.st_mtime_ns,
            inode=before.st_ino,
            part_size=part_size,
            args=args,
            part_md5s=digest.part_md5s,
        )
        listed: dict[int, ListedPart] | None = None
        if refusal is None:
            listed, refusal = self._list_parts(bucket, key, pending.upload_id)
        missing = None
        if listed is not None:
            size = before.st_size
            missing = parts_to_send(
                listed.values(), digest.part_md5s, size=size, part_size=part_size
            )
            if missing is None:
                refusal = "its parts are not of this file"
        if listed is None or missing is None:
            self._abandon(bucket, pending, refusal)
            return None
        log.info(
            "resuming the upload of %s: %d of %d parts to send",
            printable(key),
            len(missing),
            len(digest.part_md5s),
        )
        parts = {**listed, **self._send_parts(bucket, pending, fileobj, missing, digest)}
        expected = [md5.hex() for md5 in digest.part_md5s]
        got = [parts[n].etag.strip('"').lower() for n in range(1, len(expected) + 1)]
        if got != expected or not reading.unchanged(fileobj, before):
            # The same check as the fresh path makes before CompleteMultipartUpload.
            raise reading.FileChanged("changed while being uploaded")
        completed: list[CompletedPartTypeDef] = [
            {"PartNumber": n, "ETag": f'"{parts[n].etag.strip(chr(34))}"', **parts[n].checksums}  # type: ignore[typeddict-item]
            for n in sorted(parts)
        ]
        response = self.conn.client.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=pending.upload_id,
            MultipartUpload={"Parts": completed},
            **self.conn.owner_args(),
        )
        self.conn.completed_upload(key)  # the connection's note of it is not needed here
        self.journal.forget(key, pending.upload_id)
        whole = multipart_etag(digest.part_md5s)
        etag = response.get("ETag", "").strip('"') or whole
        if etag != whole:
            raise FileProblem(f"the server answered ETag {etag} for the parts it was sent")
        read = sum(part_length(n, before.st_size, part_size) for n in missing)
        return etag, response.get("VersionId"), read

    def _list_parts(
        self, bucket: str, key: str, upload_id: str
    ) -> tuple[dict[int, ListedPart] | None, str | None]:
        """The parts S3 holds for the upload, else None and why (None: it is gone)."""
        parts: dict[int, ListedPart] = {}
        try:
            paginator = self.conn.client.get_paginator("list_parts")
            pages = paginator.paginate(
                Bucket=bucket, Key=key, UploadId=upload_id, **self.conn.owner_args()
            )
            for page in pages:
                for part in page.get("Parts", []):
                    number = part["PartNumber"]
                    parts[number] = ListedPart(number, part["ETag"], part["Size"], _checksums(part))
        except ClientError as error:
            if error_code(error) == "NoSuchUpload":
                log.info("not resuming the upload of %s: it is gone", printable(key))
                return None, None
            return None, describe_client_error(error, "ListParts", bucket, key)
        return parts, None

    def _send_parts(
        self,
        bucket: str,
        pending: PendingUpload,
        fileobj: BinaryIO,
        numbers: list[int],
        digest: FileDigest,
    ) -> dict[int, ListedPart]:
        """UploadPart for each of `numbers`, on the connection's workers, each part read
        at its offset and sent only if its bytes are the bytes hashed."""
        descriptor = fileobj.fileno()
        size = os.fstat(descriptor).st_size
        checksum: UploadPartArgs = (
            {"ChecksumAlgorithm": "CRC32"} if json.loads(pending.args).get("crc32") else {}
        )

        def send(number: int) -> ListedPart:
            if self.stop.is_set():
                raise FileProblem("interrupted; the upload is kept for the next run")
            length = part_length(number, size, pending.part_size)
            data = os.pread(descriptor, length, (number - 1) * pending.part_size)
            md5 = hashlib.md5(data).digest()
            if md5 != digest.part_md5s[number - 1]:
                raise reading.FileChanged("changed while being uploaded")
            response = self.conn.client.upload_part(
                Bucket=bucket,
                Key=pending.key,
                UploadId=pending.upload_id,
                PartNumber=number,
                Body=data,
                ContentMD5=base64.b64encode(md5).decode(),
                **checksum,
                **self.conn.owner_args(),
            )
            return ListedPart(number, response["ETag"], length, _checksums(response))

        with ThreadPoolExecutor(max_workers=self.conn.workers) as pool:
            return {part.number: part for part in pool.map(send, numbers)}

    def _abandon(self, bucket: str, pending: PendingUpload, reason: str | None) -> None:
        """Abort the recorded upload (if it still exists) and forget it."""
        if reason is not None:
            log.info("not resuming the upload of %s: %s", printable(pending.key), reason)
            try:
                self.conn.client.abort_multipart_upload(
                    Bucket=bucket,
                    Key=pending.key,
                    UploadId=pending.upload_id,
                    **self.conn.owner_args(),
                )
            except TRANSFER_ERRORS as error:
                if not (isinstance(error, ClientError) and error_code(error) == "NoSuchUpload"):
                    log.warning(
                        "warning: %s",
                        describe_client_error(error, "AbortMultipartUpload", bucket),
                    )
        self.journal.forget(pending.key, pending.upload_id)

    def new_upload(
        self, key: str, before: os.stat_result, part_size: int, args: str, digest: FileDigest
    ) -> PendingUpload:
        """What is recorded of a fresh upload of the file as opened, once created."""
        return PendingUpload(
            key,
            "",
            part_size,
            before.st_size,
            before.st_mtime_ns,
            before.st_ino,
            args,
            digest.part_md5s,
            time.time(),
        )


def _checksums(part: Mapping[str, Any]) -> dict[str, str]:
    """The checksums of a part that CompleteMultipartUpload must repeat."""
    return {name: str(part[name]) for name in _CHECKSUMS if part.get(name)}
