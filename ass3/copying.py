"""Renames and copies: a new file whose content the bucket already holds under another
key becomes a server-side copy of that object, and no bytes are sent.

The previous run record says which object holds which content (`renames` decides
from it, purely); it is read once, and only when a run has a new file of a size it
names, so a run with no new files sends no request for it. The copy carries the new
file's metadata, storage class and encryption, is made only if the source still has
the recorded ETag (`CopySourceIfMatch`, pinned to the recorded version where there is
one), and its answer's ETag must prove the file's bytes: otherwise the file is
uploaded as if no copy had been tried, over whatever the copy wrote.

On an unversioned bucket a copy names whatever its source key holds at that moment,
so those copies wait until the run's other transfers are done (`split`) and are made
only from keys the run did not write (`settle`); deletions come after both.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError
from s3transfer.manager import TransferManager

from ass3 import reading
from ass3.connection import Connection, KnownTransfer
from ass3.files import local_checksum, object_metadata
from ass3.history import PreviousRecord
from ass3.model import NEW, SIZE_CHANGED, Ass3Error, FileDigest, LocalFile, MiB, Step, printable
from ass3.plan import etag_matches
from ass3.renames import ContentIndex, copy_source
from ass3.s3errors import error_code

if TYPE_CHECKING:
    from types_boto3_s3.type_defs import CopySourceTypeDef

log = logging.getLogger("ass3")

# The largest object one CopyObject can write; above it, a multipart copy.
MAX_SINGLE_COPY = 5 * 1024 * MiB

# Refusals that say the store (or the credentials) will not copy at all: asking again
# for every file would only double the requests, so copies stop for the run.
_COPY_REFUSALS = frozenset({"AccessDenied", "403", "NotImplemented", "501", "MethodNotAllowed"})


@dataclass(frozen=True)
class Copied:
    """An object written by a server-side copy: where from, and what it is now."""

    source: str  # the relative key copied from
    etag: str
    version_id: str | None


# Given a file's digest and stat, copy it server-side if the bucket holds its content.
CopyHook = Callable[[FileDigest, os.stat_result], Copied | None]


class Copier:
    """One backup run's renames: its index of the previous record, and its copies."""

    def __init__(
        self,
        conn: Connection,
        bucket: str,
        prefix: str,
        root: str,
        previous: PreviousRecord,
    ) -> None:
        self._conn, self._bucket, self._prefix, self._root = conn, bucket, prefix, root
        self._previous = previous
        self._lock = threading.Lock()
        self._index: ContentIndex | None = None
        # The keys this run wrote that may matter to a deferred copy (all of them until
        # the index is read, then only the unpinned sources it names).
        self._written: set[str] = set()
        self._sources: frozenset[str] = frozenset()
        self._changing: frozenset[str] | None = None  # known once the deferred copies start
        # An SSE-KMS ETag is not an MD5: no copy could be proved right.
        self._off = not conn.storage.etag_is_md5

    def _loaded(self) -> ContentIndex:
        """The index, reading the previous record the first time it is needed."""
        with self._lock:
            if self._index is None:
                try:
                    record = self._previous.get()
                except Ass3Error as error:  # the run goes on with uploads
                    log.debug("no renames this run: %s", error)
                    record = None
                self._index = ContentIndex.of(record.files if record else ())
                self._sources = self._index.unpinned_rels()
                self._written &= self._sources
            return self._index

    def candidate(self, step: Step) -> bool:
        """Whether a step's file may be a copy: a new or resized file of a size the
        previous record holds (hashed first, then)."""
        local = step.source
        if self._off or step.reason not in (NEW, SIZE_CHANGED) or not isinstance(local, LocalFile):
            return False
        return local.size > 0 and self._loaded().holds_size(local.size)

    def split(self, steps: Iterable[Step], deferred: list[Step]) -> Iterator[Step]:
        """Pass the steps on, keeping aside in `deferred` the files that may only be
        copied from an unpinned source: they run after the rest (see `settle`)."""
        for step in steps:
            if self.candidate(step) and self._loaded().unpinned(_size(step)):
                deferred.append(step)
            else:
                yield step

    def wrote(self, rel: str) -> None:
        """Note that this run wrote (or may have written) the object of `rel`."""
        with self._lock:
            if self._index is None or rel in self._sources:
                self._written.add(rel)

    def settle(self, deferred: Iterable[Step]) -> None:
        """The other transfers are done: the keys written, and those of the deferred
        files, are the ones an unpinned copy must not come from."""
        with self._lock:
            self._changing = frozenset(self._written | {step.rel for step in deferred})

    def source_for(self, digest: FileDigest, size: int) -> str | None:
        """The relative key a file would be copied from (a dry run says it), or None."""
        entry = copy_source(self._loaded(), digest, size, changing=self._changing)
        return entry.rel if entry else None

    def planned(self, local: LocalFile) -> tuple[str | None, int]:
        """For a dry run: the key a file would be copied from, if any, and the bytes
        read to know (none unless the file is a candidate)."""
        with reading.open_scanned(local) as fileobj:
            size = os.fstat(fileobj.fileno()).st_size
            digest = local_checksum(fileobj, self._conn.part_size_for(size))
        return self.source_for(digest, size), size

    def still_there(self, rel: str) -> bool:
        """Whether the source's file is still in DIR: a copy then, else a rename."""
        return os.path.lexists(os.path.join(self._root, *rel.split("/")))

    def hook(self, step: Step, transfers: TransferManager) -> CopyHook | None:
        """The copy an upload tries once its file is hashed, once; None if it is no
        candidate."""
        if not self.candidate(step):
            return None
        tried: list[bool] = []

        def attempt(digest: FileDigest, st: os.stat_result) -> Copied | None:
            if tried or self._off:
                return None
            tried.append(True)
            return self._copy(step.rel, digest, st, transfers)

        return attempt

    def _copy(
        self, rel: str, digest: FileDigest, st: os.stat_result, transfers: TransferManager
    ) -> Copied | None:
        """Copy the object holding the file's content to its key; None to upload it."""
        size = st.st_size
        entry = copy_source(self._loaded(), digest, size, changing=self._changing)
        if entry is None or (size > MAX_SINGLE_COPY and self._conn.multipart_refused):
            return None
        conn, bucket, key = self._conn, self._bucket, f"{self._prefix}/{rel}"
        source: CopySourceTypeDef = {"Bucket": bucket, "Key": f"{self._prefix}/{entry.rel}"}
        if entry.version_id:
            source["VersionId"] = entry.version_id
        args: dict[str, Any] = {
            "CopySourceIfMatch": f'"{entry.etag}"',
            "MetadataDirective": "REPLACE",
            "Metadata": object_metadata(digest, st),
            **conn.storage.upload_args(),
            **conn.owner_args(),
        }
        version_id: str | None
        try:
            if size <= MAX_SINGLE_COPY:
                response = conn.client.copy_object(
                    Bucket=bucket, Key=key, CopySource=source, **args, **conn.source_owner_args()
                )
                etag = response.get("CopyObjectResult", {}).get("ETag", "").strip('"')
                version_id = response.get("VersionId")
            else:  # s3transfer copies in parts; the source is this bucket, whose owner is checked
                known = KnownTransfer(size, f'"{entry.etag}"')  # no HeadObject; parts pinned
                transfers.copy(source, bucket, key, extra_args=args, subscribers=[known]).result()
                completed, version_id = conn.completed_upload(key)
                etag = completed or ""
        except ClientError as error:
            self._refused(rel, entry.rel, error)
            return None
        except BotoCoreError as error:
            log.info("not copied %s from %s (%s); uploading it", printable(rel), entry.rel, error)
            return None
        if etag_matches(etag, digest) is not True:
            log.info(
                "not copied %s from %s: the copy's ETag %s does not prove its content; "
                "uploading it",
                printable(rel),
                printable(entry.rel),
                printable(etag),
            )
            return None
        return Copied(entry.rel, etag, version_id)

    def _refused(self, rel: str, source: str, error: ClientError) -> None:
        """A copy refused: the source is not as recorded (gone, overwritten, a version
        expired), or the store will not copy, which stops copies for the run."""
        code = error_code(error) or "no error code"
        if code in _COPY_REFUSALS:
            with self._lock:
                if self._off:
                    return
                self._off = True
            log.warning(
                "warning: the server refused a server-side copy (%s: %s); renamed and "
                "copied files are uploaded from now on",
                error.operation_name,
                code,
            )
            return
        log.info(
            "not copied %s from %s (%s: not as recorded); uploading it",
            printable(rel),
            printable(source),
            code,
        )


def _size(step: Step) -> int:
    return step.source.size if step.source is not None else 0
