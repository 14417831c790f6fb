"""The bucket side: naming and creating the bucket with safe settings, checking it
is ours, listing a backup's objects (a page at a time, or in parallel segments:
`keyspace`), reading the checksums S3 holds, aborting the incomplete uploads a killed
run left.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypedDict

from botocore.exceptions import BotoCoreError, ClientError

from ass3.connection import BUCKET_ENV, Connection
from ass3.keyspace import list_keys
from ass3.model import (
    META_MD5,
    Ass3Error,
    FileDigest,
    ObjectVersion,
    RemoteObject,
    VersionArgs,
    printable,
)
from ass3.names import validate_bucket_name
from ass3.plan import etag_matches, key_order
from ass3.s3errors import TRANSFER_ERRORS, describe_client_error, error_code, fatal_errors

if TYPE_CHECKING:
    from types_boto3_s3.type_defs import LifecycleRuleOutputTypeDef

log = logging.getLogger("ass3")


def resolve_bucket(conn: Connection, bucket: str | None) -> str:
    """--bucket, else $ASS3_BUCKET, else `ass3backup-<account id>`."""
    name = bucket or os.environ.get(BUCKET_ENV)
    if not name:
        account = conn.account_id()
        if not account:
            raise Ass3Error(
                "cannot find the account id (this endpoint has no STS): "
                f"pass --bucket NAME or set {BUCKET_ENV}"
            )
        name = f"ass3backup-{account}"
    return validate_bucket_name(name)


class DelimiterArgs(TypedDict, total=False):
    """Keyword arguments of a listing that stops at a delimiter (none: list everything)."""

    Delimiter: str


def _owns_bucket(conn: Connection, bucket: str) -> bool | None:
    """Whether the bucket exists and is ours; None if we may not list our buckets."""
    try:
        with fatal_errors("ListBuckets"):
            response = conn.client.list_buckets(Prefix=bucket)
    except Ass3Error as error:
        cause = error.__cause__
        if isinstance(cause, ClientError) and error_code(cause) in ("AccessDenied", "403"):
            return None
        raise
    return any(entry["Name"] == bucket for entry in response.get("Buckets", []))


def ensure_bucket(conn: Connection, bucket: str) -> bool:
    """Create the bucket unless this account already owns it; True if it was created.

    ListBuckets tells whether the account owns it in one request (where that is
    denied, HeadBucket with ExpectedBucketOwner does). A name taken by another
    account is an error: nothing must be uploaded into someone else's bucket.
    """
    owned = _owns_bucket(conn, bucket)
    if owned is None:
        owned = _bucket_exists(conn, bucket)
    if owned:
        return False
    # Untyped on purpose: the stubs allow only AWS's region names as LocationConstraint,
    # and S3-compatible stores take their own.
    arguments: dict[str, Any] = {"Bucket": bucket}
    if conn.region != "us-east-1":
        arguments["CreateBucketConfiguration"] = {"LocationConstraint": conn.region}
    try:
        conn.client.create_bucket(**arguments)
    except ClientError as error:
        code = error_code(error)
        if code == "BucketAlreadyOwnedByYou":
            return False
        if code == "BucketAlreadyExists":
            raise Ass3Error(
                f"bucket name {bucket!r} is taken by another AWS account; "
                "choose another with --bucket"
            ) from error
        raise Ass3Error(describe_client_error(error, "CreateBucket", bucket)) from error
    except BotoCoreError as error:
        raise Ass3Error(describe_client_error(error, "CreateBucket", bucket)) from error
    _configure_new_bucket(conn, bucket)
    return True


def _configure_new_bucket(conn: Connection, bucket: str) -> None:
    """Safe defaults for a bucket the tool made; a store lacking a call only gets a warning."""
    client, owner = conn.client, conn.owner_args()
    settings: list[tuple[str, Callable[[], object]]] = [
        (
            "block public access",
            lambda: client.put_public_access_block(
                Bucket=bucket,
                PublicAccessBlockConfiguration={
                    "BlockPublicAcls": True,
                    "IgnorePublicAcls": True,
                    "BlockPublicPolicy": True,
                    "RestrictPublicBuckets": True,
                },
                **owner,
            ),
        ),
        (
            "versioning",
            lambda: client.put_bucket_versioning(
                Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}, **owner
            ),
        ),
        (
            "default encryption",
            lambda: client.put_bucket_encryption(
                Bucket=bucket,
                ServerSideEncryptionConfiguration={
                    "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
                },
                **owner,
            ),
        ),
        (
            "abort incomplete multipart uploads after 7 days",
            lambda: client.put_bucket_lifecycle_configuration(
                Bucket=bucket,
                LifecycleConfiguration={
                    "Rules": [
                        {
                            "ID": "ass3-abort-incomplete-multipart",
                            "Status": "Enabled",
                            "Filter": {"Prefix": ""},
                            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
                        }
                    ]
                },
                **owner,
            ),
        ),
    ]
    for what, apply in settings:
        try:
            apply()
        except (ClientError, BotoCoreError) as error:
            log.warning("warning: could not set %s on s3://%s: %s", what, bucket, error)
    status: str | None
    try:  # some servers answer 200 to PutBucketVersioning and change nothing
        status = client.get_bucket_versioning(Bucket=bucket, **owner).get("Status")
    except (ClientError, BotoCoreError) as error:
        status = f"unknown ({error})"
    if status != "Enabled":
        log.warning(
            "warning: versioning is %s on s3://%s after asking for it: an overwritten file "
            "is gone, so only the latest run can be restored",
            (status or "off").lower(),
            bucket,
        )


def list_remote(
    conn: Connection,
    bucket: str,
    prefix: str,
    *,
    missing_ok: bool = False,
    under: str = "",
    delimiter: str | None = None,
) -> Iterator[RemoteObject]:
    """Every object under PREFIX/, from ListObjectsV2 pages, in key order.

    One request per 1000 keys, and a few more when a long listing is read in parallel
    segments (`keyspace`); never a HeadObject per file. AWS lists in UTF-8 byte
    order, so there the listing streams straight into the plan. Another server may
    list in another order, and a plan made from it would take existing files for new
    ones: there the whole listing is read and put in order first (`_sorted_by_key`),
    before anything acts on it. With `missing_ok` a bucket that does not exist yet
    lists as empty (a dry run). `under` lists only the keys PREFIX/UNDER... (part of
    a backup); `delimiter` leaves out the keys below the next one after that.
    """
    if missing_ok and not _bucket_exists(conn, bucket):
        return
    listing = _listing(conn, bucket, prefix, under, delimiter)
    where = f"s3://{bucket}/{prefix}/{under}"
    yield from listing if conn.on_aws else _sorted_by_key(listing, where)


def _listing(
    conn: Connection, bucket: str, prefix: str, under: str = "", delimiter: str | None = None
) -> Iterator[RemoteObject]:
    """The objects under PREFIX/UNDER, each once; a listing longer than a page is read
    in parallel segments (`keyspace`), in key order on AWS."""
    with fatal_errors("ListObjectsV2", bucket, prefix):
        items = list_keys(
            conn, bucket, f"{prefix}/{under}", byte_order=conn.on_aws, delimiter=delimiter
        )
        for item in items:
            yield RemoteObject(
                item["Key"][len(prefix) + 1 :],
                item["Key"],
                item["Size"],
                item["ETag"].strip('"'),
                item["LastModified"],
            )


def _sorted_by_key(objects: Iterable[RemoteObject], where: str) -> Iterator[RemoteObject]:
    """`objects` in S3 key order (UTF-8 bytes), whatever order they came in.

    They go through a temporary SQLite table, whose BLOB keys sort by their bytes on
    disk, so memory stays flat for any number of objects; the cost is one local write
    and read of the listing. Out of order is said once, in a warning.
    """
    with tempfile.TemporaryDirectory(prefix="ass3-listing-") as folder:
        db = sqlite3.connect(os.path.join(folder, "listing.sqlite3"))
        try:
            db.execute(
                "CREATE TABLE objects (k BLOB PRIMARY KEY, rel TEXT, key TEXT, size INTEGER, "
                "etag TEXT, modified TEXT) WITHOUT ROWID"
            )
            previous, in_order = b"", True
            rows = []
            for item in objects:
                order = key_order(item.rel)
                in_order = in_order and order > previous
                previous = order
                modified = item.last_modified.isoformat()
                rows.append((order, item.rel, item.key, item.size, item.etag, modified))
                if len(rows) >= 1000:
                    db.executemany("INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?, ?)", rows)
                    rows.clear()
            db.executemany("INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?, ?)", rows)
            if not in_order:
                log.warning(
                    "warning: %s is listed out of UTF-8 byte order by this server; "
                    "sorted it before planning",
                    where,
                )
            query = "SELECT rel, key, size, etag, modified FROM objects ORDER BY k"
            for rel, key, size, etag, modified in db.execute(query):
                yield RemoteObject(rel, key, size, etag, datetime.fromisoformat(modified))
        finally:
            db.close()


def _bucket_exists(conn: Connection, bucket: str) -> bool:
    """HeadBucket with ExpectedBucketOwner: a bucket this account may use, or none."""
    try:
        conn.client.head_bucket(Bucket=bucket, **conn.owner_args())
    except ClientError as error:
        if error_code(error) in ("404", "NoSuchBucket"):
            return False
        raise Ass3Error(
            f"bucket s3://{bucket} exists but is not accessible: it may belong to another "
            "account; choose another name with --bucket"
        ) from error
    except BotoCoreError as error:
        raise Ass3Error(describe_client_error(error, "HeadBucket", bucket)) from error
    return True


def s3_checksum(conn: Connection, bucket: str, remote: RemoteObject) -> str | None:
    """The MD5 the tool stored as metadata on this object (one HeadObject): on the
    recorded version when there is one, else on the current object."""
    version: VersionArgs = {"VersionId": remote.version_id} if remote.version_id else {}
    head = conn.client.head_object(Bucket=bucket, Key=remote.key, **version, **conn.owner_args())
    return head.get("Metadata", {}).get(META_MD5)


def content_matches(
    conn: Connection, bucket: str, remote: RemoteObject, digest: FileDigest
) -> bool:
    """Compare with the recorded MD5, else by ETag when comparable, else the md5 metadata."""
    if remote.md5:
        return remote.md5 == digest.md5
    verdict = etag_matches(remote.etag, digest) if conn.storage.etag_is_md5 else None
    if verdict is None:
        verdict = s3_checksum(conn, bucket, remote) == digest.md5
    return verdict


def bucket_versioning(conn: Connection, bucket: str) -> str:
    """'Enabled', 'Suspended', or 'Off'."""
    with fatal_errors("GetBucketVersioning", bucket):
        status = conn.client.get_bucket_versioning(Bucket=bucket, **conn.owner_args())
    return status.get("Status") or "Off"


def iter_versions(
    conn: Connection, bucket: str, prefix: str, *, under: str = "", delimiter: str | None = None
) -> Iterator[ObjectVersion]:
    """Every version and delete marker under PREFIX/ (ListObjectVersions pages); with
    `under` and `delimiter`, of part of the backup, as in `list_remote`."""
    paginator = conn.client.get_paginator("list_object_versions")
    start = len(prefix) + 1
    options: DelimiterArgs = {"Delimiter": delimiter} if delimiter else {}
    with fatal_errors("ListObjectVersions", bucket):
        pages = paginator.paginate(
            Bucket=bucket, Prefix=f"{prefix}/{under}", **options, **conn.owner_args()
        )
        for page in pages:
            for item in page.get("Versions", []):
                yield ObjectVersion(
                    item["Key"][start:],
                    item["Key"],
                    item["VersionId"],
                    item["LastModified"],
                    item.get("IsLatest", False),
                    deleted=False,
                    size=item.get("Size", 0),
                    etag=item.get("ETag", "").strip('"'),
                )
            for marker in page.get("DeleteMarkers", []):
                yield ObjectVersion(
                    marker["Key"][start:],
                    marker["Key"],
                    marker["VersionId"],
                    marker["LastModified"],
                    marker.get("IsLatest", False),
                    deleted=True,
                )


def lifecycle_rules(conn: Connection, bucket: str) -> list[LifecycleRuleOutputTypeDef]:
    """The bucket's lifecycle rules; none when it has no configuration."""
    try:
        response = conn.client.get_bucket_lifecycle_configuration(
            Bucket=bucket, **conn.owner_args()
        )
    except ClientError as error:
        if error_code(error) == "NoSuchLifecycleConfiguration":
            return []
        raise
    return response.get("Rules", [])  # a server that ignores ?lifecycle answers without


# How old an incomplete multipart upload under a backup's prefix must be before a run
# aborts it. The age S3 reports is from CreateMultipartUpload, and a run still feeding an
# upload (another copy of the tool backing up the same folder, here or on another
# machine) loses that file if it is aborted. One upload is one file: 24 hours is a file of
# about 1 TB at 100 Mbit/s, more than a backup that its user would wait for, while one
# hour would already be passed by a 50 GB file at that speed. Parts left a day longer than
# necessary cost little; an aborted live upload costs a failed file.
STALE_UPLOAD_AGE = timedelta(hours=24)


def utc_now() -> datetime:
    """The time now, in UTC (a function of its own so that tests can move it)."""
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class UploadCleanup:
    """What `abort_stale_uploads` did: uploads aborted, whether some may still be left
    to abort later (too young to tell from a live run's, or not aborted now), and the
    uploads it spared (to be resumed)."""

    aborted: int
    unsettled: bool
    spared: frozenset[str] = frozenset()


def abort_stale_uploads(
    conn: Connection,
    bucket: str,
    prefix: str,
    *,
    max_age: timedelta = STALE_UPLOAD_AGE,
    spare: frozenset[str] = frozenset(),
) -> UploadCleanup:
    """Abort the incomplete multipart uploads under PREFIX/ started over `max_age` ago,
    but those whose UploadId is in `spare` (kept for a later run to resume).

    Any upload under a backup's prefix is taken for the tool's own: the prefix belongs
    to the tool (a listing cannot say more: it shows no metadata, and the initiator may
    be any of the credentials that back up this folder). Other backups' prefixes and the
    run records under .ass3/ are never touched. One ListMultipartUploads page per 1000
    uploads. Nothing here stops the backup: a refusal is a warning.
    """
    cutoff = utc_now() - max_age
    stale: list[tuple[str, str, datetime]] = []
    spared: set[str] = set()
    unsettled = False
    try:
        paginator = conn.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix + "/", **conn.owner_args()):
            for upload in page.get("Uploads", []):
                if upload["UploadId"] in spare:
                    spared.add(upload["UploadId"])
                elif upload["Initiated"] <= cutoff:
                    stale.append((upload["Key"], upload["UploadId"], upload["Initiated"]))
                else:
                    unsettled = True
    except (ClientError, BotoCoreError) as error:
        log.warning(
            "warning: could not look for incomplete uploads an interrupted run left: %s",
            describe_client_error(error, "ListMultipartUploads", bucket, prefix),
        )
        # The store answered no (access denied, not implemented): asking again at every
        # run would only repeat the warning. No answer at all: try again next run.
        return UploadCleanup(0, unsettled=not isinstance(error, ClientError))
    aborted = 0
    for key, upload_id, initiated in stale:
        try:
            conn.client.abort_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, **conn.owner_args()
            )
        except TRANSFER_ERRORS as error:
            if isinstance(error, ClientError) and error_code(error) == "NoSuchUpload":
                continue  # completed or aborted meanwhile
            log.warning("warning: %s", describe_client_error(error, "AbortMultipartUpload", bucket))
            unsettled = True
            continue
        hours = (utc_now() - initiated) / timedelta(hours=1)
        log.info(
            "aborted the incomplete upload of %s, started %.0f hours ago", printable(key), hours
        )
        aborted += 1
    return UploadCleanup(aborted, unsettled, frozenset(spared))
