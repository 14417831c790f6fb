"""The connection to S3: one boto3 session and client shared by all threads, its
retry and checksum settings, the multipart settings, and the request count each
run reports.
"""

from __future__ import annotations

import email.utils
import logging
import threading
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeVar, overload

import boto3
import botocore.session
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)
from botocore.parsers import DEFAULT_TIMESTAMP_PARSER, ResponseParserError
from s3transfer.futures import TransferFuture
from s3transfer.subscribers import BaseSubscriber
from s3transfer.utils import ChunksizeAdjuster

if TYPE_CHECKING:  # the stubs are a development dependency only
    from botocore.awsrequest import AWSPreparedRequest
    from types_boto3_s3 import S3Client
    from types_boto3_s3.literals import ServerSideEncryptionType, StorageClassType
    from types_boto3_sts import STSClient

from ass3.model import Ass3Error
from ass3.pacing import Pacer
from ass3.s3errors import (
    NO_CREDENTIALS_HELP,
    describe_client_error,
    error_code,
    is_multipart_refusal,
    may_be_checksum_refusal,
)
from ass3.settings import transfer_settings

log = logging.getLogger("ass3")

T = TypeVar("T")

DEFAULT_MAX_ATTEMPTS = 5
BUCKET_ENV = "ASS3_BUCKET"


class KnownTransfer(BaseSubscriber):
    """Tells s3transfer the size (and, for a download, the ETag) already known.

    For a download this spares s3transfer's own HeadObject and pins every ranged GET
    to that ETag; for an upload from an open file it fixes the size at what was
    hashed, so a file that shrank meanwhile cannot slip from multipart (whose parts
    are checked before completion) to a single PUT. `TransferMeta.provide_*` are
    s3transfer's own hooks for this, public in name but not in its documentation;
    this is the one place the tool relies on them.
    """

    def __init__(self, size: int, etag: str | None = None) -> None:
        self._size = size
        self._etag = etag

    def on_queued(self, future: TransferFuture, **_: object) -> None:
        future.meta.provide_transfer_size(self._size)
        if self._etag is not None:
            future.meta.provide_object_etag(self._etag)


def part_size_for(size: int, *, threshold: int, chunksize: int) -> int | None:
    """The part size boto3 uses to upload a file of `size` bytes; None if single-part."""
    if size < threshold:
        return None
    return ChunksizeAdjuster().adjust_chunksize(chunksize, size)


def _parse_timestamp(value: str) -> datetime:
    """Listings carry a timestamp per object (ISO 8601) and every GetObject one in its
    Last-Modified header (an HTTP date), and botocore's default parser (dateutil, some
    40 us a call) costs more than the rest of a no-change run: the standard library
    reads those two forms, the default parser anything else."""
    try:
        return datetime.fromisoformat(value)
    except (TypeError, ValueError):
        pass
    if isinstance(value, str) and value.endswith(" GMT"):  # "Wed, 02 Dec 2026 06:11:07 GMT"
        with suppress(TypeError, ValueError):
            parsed = email.utils.parsedate_to_datetime(value)
            if parsed.tzinfo is not None:
                return parsed
    return DEFAULT_TIMESTAMP_PARSER(value)


def _send_small_bodies_at_once(request: AWSPreparedRequest, **_: object) -> None:
    """Drop botocore's `Expect: 100-continue` from PutObject (only files under the
    multipart threshold use it): waiting for the server's go-ahead costs a round
    trip per small file, and resending a small body on a rare rejection costs little.
    Content-MD5 still makes S3 check every body."""
    if "Expect" in request.headers:
        del request.headers["Expect"]


ARCHIVE_CLASSES = ("GLACIER", "DEEP_ARCHIVE")
STORAGE_CLASSES: tuple[StorageClassType, ...] = (
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "REDUCED_REDUNDANCY",
)


class UploadArgs(TypedDict, total=False):
    """Keyword arguments for how a new object is stored."""

    StorageClass: StorageClassType
    ServerSideEncryption: ServerSideEncryptionType
    SSEKMSKeyId: str


class OwnerArgs(TypedDict, total=False):
    """Keyword arguments that make S3 refuse a bucket owned by another account."""

    ExpectedBucketOwner: str


class SourceOwnerArgs(TypedDict, total=False):
    """The same, for the source bucket of a CopyObject."""

    ExpectedSourceBucketOwner: str


@dataclass(frozen=True)
class StorageOptions:
    """How new objects are stored: storage class and server-side encryption."""

    storage_class: StorageClassType | None = None
    sse: ServerSideEncryptionType | None = None
    sse_kms_key_id: str | None = None

    def upload_args(self) -> UploadArgs:
        """The arguments PutObject, CreateMultipartUpload and CopyObject take for them."""
        args: UploadArgs = {}
        if self.storage_class:
            args["StorageClass"] = self.storage_class
        if self.sse:
            args["ServerSideEncryption"] = self.sse
        if self.sse_kms_key_id:
            args["SSEKMSKeyId"] = self.sse_kms_key_id
        return args

    @property
    def etag_is_md5(self) -> bool:
        """SSE-KMS objects have ETags that are not the MD5 of their bytes."""
        return self.sse != "aws:kms"


class Connection:
    """One boto3 session and S3 client, shared by all worker threads, with a request count."""

    def __init__(
        self,
        *,
        profile: str | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        workers: int | None = None,
        multipart_threshold: int | None = None,
        multipart_chunksize: int | None = None,
        storage: StorageOptions | None = None,
        path_style: bool = False,
        crc32: bool = True,
    ) -> None:
        # The botocore session is made here, not by boto3, so its settings are reachable
        # through public calls: the listing timestamp parser and the profile's max_attempts.
        core = botocore.session.get_session()
        core.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=_parse_timestamp
        )
        try:
            self.session = boto3.Session(
                botocore_session=core, profile_name=profile, region_name=region
            )
        except ProfileNotFound as error:
            name = error.kwargs.get("profile", profile)
            raise Ass3Error(f"AWS profile {name!r} not found in ~/.aws/config") from error
        if self.session.get_credentials() is None:
            raise Ass3Error(NO_CREDENTIALS_HELP)
        try:
            max_attempts = core.get_config_variable("max_attempts")
        except ValueError as error:  # e.g. AWS_MAX_ATTEMPTS=abc
            raise Ass3Error(f"invalid max_attempts setting: {error}") from error
        self.region = self.session.region_name or "us-east-1"
        self.endpoint_url = endpoint_url
        settings = transfer_settings(
            core.get_scoped_config().get("s3"),
            workers=workers,
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
        )
        self.workers = settings.workers
        self.multipart_threshold = settings.multipart_threshold
        self.multipart_chunksize = settings.multipart_chunksize
        # Set once a server has refused multipart uploads: bigger files go in one PUT.
        self.multipart_refused = False
        self.storage = storage or StorageOptions()
        self._run_counters: list[Counter[str]] = []
        self._unclaimed: Counter[str] = Counter()  # sent while no run was counting
        self._lock = threading.Lock()
        self._completed: dict[str, tuple[str | None, str | None]] = {}
        self._completion_checks: dict[str, Callable[[], None]] = {}
        # Throttling shrinks the requests in flight for the whole run, up to the pool.
        self.pacer = Pacer(ceiling=self.workers * 2)
        self.config = Config(
            region_name=self.region,
            # Workers send small files themselves; big files' parts use as many more.
            max_pool_connections=self.workers * 2,
            retries={
                "mode": "standard",
                "total_max_attempts": max_attempts or DEFAULT_MAX_ATTEMPTS,
            },
            user_agent_extra="ass3",
            s3={"addressing_style": "path"} if path_style else None,
            # botocore checks each request's parameters against the API model before
            # sending (names, types, required members, lengths): 2-4% of the CPU of a
            # small file's request. The tool builds every parameter itself from typed values,
            # and mypy checks each call against the boto3 stubs in CI; what comes from
            # outside is checked before it gets here (bucket names by `names`, keys by
            # their length and `unsafe_key_reason`, run records by their schema), and
            # botocore's own bucket-name check is a handler of its own that stays on.
            parameter_validation=False,
            # With crc32, botocore's own setting decides (AWS_REQUEST_CHECKSUM_CALCULATION,
            # request_checksum_calculation in the profile; CRC32 by default).
            **({} if crc32 else _WITHOUT_CRC32),
        )
        try:
            self.client: S3Client = self._client("s3")
        except (ValueError, BotoCoreError) as error:  # a malformed endpoint URL or region
            raise Ass3Error(f"cannot set up the S3 client: {error}") from error
        # Amazon's own S3, where accounts and STS exist and keys are listed in byte order.
        host = urllib.parse.urlsplit(self.client.meta.endpoint_url).hostname or ""
        self.on_aws = host.endswith((".amazonaws.com", ".amazonaws.com.cn"))
        self.transfer_config = TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.multipart_chunksize,
            max_concurrency=self.workers,
            preferred_transfer_client="classic",
        )
        self._account_id: str | None = None
        self._account_looked_up = False

    @overload
    def _client(self, service: Literal["s3"]) -> S3Client: ...

    @overload
    def _client(self, service: Literal["sts"]) -> STSClient: ...

    def _client(self, service: Literal["s3", "sts"]) -> S3Client | STSClient:
        """A client with the connection's settings whose every request is counted."""
        endpoint, config = self.endpoint_url, self.config
        client: S3Client | STSClient = (
            self.session.client("s3", endpoint_url=endpoint, config=config)
            if service == "s3"
            else self.session.client("sts", endpoint_url=endpoint, config=config)
        )
        client.meta.events.register("before-send", self._count)
        if service == "s3":
            self.pacer.attach(client.meta.events)
        client.meta.events.register("before-sign.s3.PutObject", _send_small_bodies_at_once)
        client.meta.events.register(
            "before-parameter-build.s3.CompleteMultipartUpload", self._check_completion
        )
        client.meta.events.register(
            "after-call.s3.CompleteMultipartUpload", self._note_completed_upload
        )
        return client

    def _note_completed_upload(self, parsed: Mapping[str, Any], **_: object) -> None:
        """s3transfer drops CompleteMultipartUpload's answer; the run record needs it."""
        if "Key" in parsed:
            with self._lock:
                self._completed[parsed["Key"]] = (
                    parsed.get("ETag", "").strip('"') or None,
                    parsed.get("VersionId"),
                )

    @contextmanager
    def completion_checked(self, key: str, check: Callable[[], None]) -> Iterator[None]:
        """Run `check` just before the multipart upload of `key` is completed, inside the
        block. An exception from it stops CompleteMultipartUpload; s3transfer then aborts
        the upload, so no object (and no new version) ever holds those bytes."""
        with self._lock:
            self._completion_checks[key] = check
        try:
            yield
        finally:
            with self._lock:
                self._completion_checks.pop(key, None)

    def _check_completion(self, params: Mapping[str, Any], **_: object) -> None:
        with self._lock:
            check = self._completion_checks.get(params.get("Key", ""))
        if check is not None:
            check()

    def completed_upload(self, key: str) -> tuple[str | None, str | None]:
        """ETag and VersionId of the multipart upload of `key` that just completed."""
        with self._lock:
            return self._completed.pop(key, (None, None))

    def _count(self, event_name: str, **_: object) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        with self._lock:
            for counter in self._run_counters or [self._unclaimed]:
                counter[operation] += 1

    @contextmanager
    def counting(self, counter: Counter[str]) -> Iterator[Counter[str]]:
        """Count the requests sent inside the block into `counter` (one run's summary),
        so a later run on the same connection starts from zero. Requests sent while no
        run was counting (finding the account for the default bucket name) go to the
        next run, so a script's summary counts every request the script sent."""
        with self._lock:
            counter.update(self._unclaimed)
            self._unclaimed.clear()
            self._run_counters.append(counter)
        try:
            yield counter
        finally:
            with self._lock:  # by identity: two runs' counters may be equal
                self._run_counters = [kept for kept in self._run_counters if kept is not counter]

    def account_id(self) -> str | None:
        """The caller's account from STS, or None when it cannot be learned.

        The account is an optimisation (the default bucket name, ExpectedBucketOwner),
        and a server without STS may answer anything: an XML error, a plain-text 404,
        an HTML page. So any answer but an account means unknown, never a crash; only
        missing credentials or an unreachable endpoint stop the run, as they would
        stop every request after.
        """
        if not self._account_looked_up:
            self._account_looked_up = True
            try:
                self._account_id = self._client("sts").get_caller_identity()["Account"]
            except (NoCredentialsError, PartialCredentialsError, EndpointConnectionError) as error:
                raise Ass3Error(describe_client_error(error, "GetCallerIdentity")) from error
            except (BotoCoreError, ClientError, ResponseParserError, KeyError) as error:
                log.debug("no account id from STS: %s", error)
        return self._account_id

    def owner_args(self) -> OwnerArgs:
        """ExpectedBucketOwner for every request, so a bucket of another account is refused.

        Only on AWS: another server has no STS to ask, or accounts of its own that
        ExpectedBucketOwner does not name, so a run there never depends on the lookup
        (unless the account was learned anyway, for the default bucket name).
        """
        if not (self.on_aws or self._account_looked_up):
            return {}
        account = self.account_id()
        return {"ExpectedBucketOwner": account} if account else {}

    def source_owner_args(self) -> SourceOwnerArgs:
        """ExpectedSourceBucketOwner, for a copy whose source is the tool's own bucket;
        like `owner_args`, never a reason to ask STS of another server."""
        if not (self.on_aws or self._account_looked_up):
            return {}
        account = self.account_id()
        return {"ExpectedSourceBucketOwner": account} if account else {}

    def part_size_for(self, size: int) -> int | None:
        return part_size_for(
            size, threshold=self.multipart_threshold, chunksize=self.multipart_chunksize
        )

    @property
    def sends_crc32(self) -> bool:
        """Whether uploads carry boto3's CRC32 checksums (botocore and s3transfer both
        read the client's config on every request, so this is the one switch)."""
        setting = getattr(self.client.meta.config, "request_checksum_calculation", None)
        return setting == "when_supported"

    def with_fallbacks(self, upload: Callable[[], T]) -> T:
        """Run `upload`; if the server refused it for a feature it lacks, turn that
        feature off for the rest of the run, say so once, and run it again.

        Multipart uploads, when the server says it does not implement them (bigger
        files then go in one PUT); CRC32 checksums, which older S3-compatible stores
        reject in many ways. Each retry turns one more feature off, so there are at
        most two, and only for the first uploads that meet the refusal.
        """
        while True:
            sent_crc32, sent_multipart = self.sends_crc32, not self.multipart_refused
            try:
                return upload()
            except ClientError as error:
                if sent_multipart and is_multipart_refusal(error):
                    self._refuse_multipart(error)
                elif sent_crc32 and may_be_checksum_refusal(error):
                    self._drop_crc32(error)
                else:
                    raise

    def _drop_crc32(self, error: ClientError) -> None:
        with self._lock:
            if not self.sends_crc32:
                return  # another upload met the refusal first and said so
            for setting, value in _WITHOUT_CRC32.items():
                setattr(self.client.meta.config, setting, value)
        log.warning(
            "warning: the server refused an upload (%s: %s), perhaps for boto3's CRC32 "
            "checksum, which older S3-compatible stores reject; uploading without it from "
            "now on, as --no-crc32 does (the tool's MD5 checks stay)",
            error.operation_name,
            error_code(error) or "no error code",
        )

    def _refuse_multipart(self, error: ClientError) -> None:
        with self._lock:
            if self.multipart_refused:
                return
            self.multipart_refused = True
        log.warning(
            "warning: the server does not take multipart uploads (%s: %s); files are sent "
            "in one PUT each, which S3 allows up to 5 GiB",
            error.operation_name,
            error_code(error) or "no error code",
        )


class _ChecksumSettings(TypedDict, total=False):
    request_checksum_calculation: Literal["when_supported", "when_required"]
    response_checksum_validation: Literal["when_supported", "when_required"]


# botocore's "when_required": only where S3 itself requires a checksum.
_WITHOUT_CRC32: _ChecksumSettings = {
    "request_checksum_calculation": "when_required",
    "response_checksum_validation": "when_required",
}
