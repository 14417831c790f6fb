"""History in S3: reading and writing run records, object versions for restores
as of a time, --runs, and retention of old versions (lifecycle rules).
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from ass3.connection import Connection
from ass3.model import Ass3Error, RecordEntry, RemoteObject, Summary, human_bytes, plural
from ass3.names import normalize_prefix
from ass3.records import (
    RECORD_SUFFIX,
    RUNS_PREFIX,
    KnownVersions,
    RunRecord,
    new_run_id,
    newest_versions_at,
    record_files,
    record_key,
    versions_by_content,
    versions_missing,
)
from ass3.remote import bucket_versioning, iter_versions, lifecycle_rules
from ass3.s3errors import TRANSFER_ERRORS, describe_client_error, error_code, fatal_errors

if TYPE_CHECKING:
    from types_boto3_s3.type_defs import LifecycleRuleUnionTypeDef

log = logging.getLogger("ass3")


def list_run_ids(conn: Connection, bucket: str, prefix: str) -> list[str]:
    """The runs recorded for a backup, oldest first."""
    listing = f"{RUNS_PREFIX}/{prefix}/"
    paginator = conn.client.get_paginator("list_objects_v2")
    run_ids = []
    with fatal_errors("ListObjectsV2", bucket):
        for page in paginator.paginate(Bucket=bucket, Prefix=listing, **conn.owner_args()):
            for item in page.get("Contents", []):
                name = item["Key"][len(listing) :]
                if name.endswith(RECORD_SUFFIX) and "/" not in name:
                    run_ids.append(name[: -len(RECORD_SUFFIX)])
    return sorted(run_ids)


def load_record(conn: Connection, bucket: str, prefix: str, run_id: str) -> RunRecord:
    """One run record, read and parsed; Ass3Error naming the latest runs if it is missing."""
    key = record_key(prefix, run_id)
    try:
        body = conn.client.get_object(Bucket=bucket, Key=key, **conn.owner_args())["Body"].read()
        return RunRecord.from_bytes(body)
    except ClientError as error:
        if error_code(error) in ("NoSuchKey", "404"):
            known = ", ".join(list_run_ids(conn, bucket, prefix)[-5:]) or "none"
            raise Ass3Error(f"no run {run_id!r} of backup {prefix!r}; latest: {known}") from error
        raise Ass3Error(describe_client_error(error, "GetObject", bucket)) from error
    except (BotoCoreError, OSError, ValueError, KeyError, TypeError) as error:
        raise Ass3Error(f"run record s3://{bucket}/{key} is unreadable: {error}") from error


def record_run(
    conn: Connection,
    bucket: str,
    prefix: str,
    source: str,
    summary: Summary,
    entries: Iterable[RecordEntry],
) -> None:
    """Write the run record: every file of the backup and the version holding it.

    Written last, after all the data it points to. Versions of files this run did
    not upload come from the previous record (same ETag), else from one
    ListObjectVersions pass.
    """
    versioned = _versioning_for_record(conn, bucket)
    known = _previous_versions(conn, bucket, prefix) if versioned else {}
    if versioned and versions_missing(entries, known):  # a second pass over the spool
        known.update(_current_versions(conn, bucket, prefix))
    record = RunRecord(
        new_run_id(),
        source,
        summary.transferred,
        summary.deleted,
        len(summary.failures),
        versioned,
        record_files(entries, known, versioned=versioned),
    )
    body = record.to_bytes()
    try:
        conn.client.put_object(
            Bucket=bucket,
            Key=record_key(prefix, record.run_id),
            Body=body,
            ContentMD5=base64.b64encode(hashlib.md5(body).digest()).decode(),
            ContentType="application/gzip",
            **conn.owner_args(),
        )
    except TRANSFER_ERRORS as error:
        summary.fail("run record", describe_client_error(error, "PutObject", bucket))
        return
    summary.run_id = record.run_id


def _versioning_for_record(conn: Connection, bucket: str) -> bool:
    """Whether the record can name versions; without versioning only the latest run
    restores, which the user is told."""
    versioned = bucket_versioning(conn, bucket) == "Enabled"
    if not versioned:
        log.warning(
            "warning: versioning is off on s3://%s: an overwritten file is gone, so only "
            "the latest run can be restored",
            bucket,
        )
    return versioned


def _previous_versions(conn: Connection, bucket: str, prefix: str) -> KnownVersions:
    """The versions the latest run record names; none if there is none or it is unreadable."""
    run_ids = list_run_ids(conn, bucket, prefix)
    if not run_ids:
        return {}
    try:
        return versions_by_content(load_record(conn, bucket, prefix, run_ids[-1]))
    except Ass3Error:
        return {}


def _current_versions(conn: Connection, bucket: str, prefix: str) -> KnownVersions:
    """The current version of every object of the backup, by (rel, ETag)."""
    return {
        (version.rel, version.etag): version.version_id
        for version in iter_versions(conn, bucket, prefix)
        if version.is_latest and not version.deleted
    }


def versions_as_of(
    conn: Connection, bucket: str, prefix: str, when: datetime
) -> list[RemoteObject]:
    """Without run records: each key's newest version at or before `when` (one
    ListObjectVersions pass; see `newest_versions_at`)."""
    return newest_versions_at(iter_versions(conn, bucket, prefix), when)


def runs(conn: Connection, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """What --runs shows: each recorded run of a backup, oldest first."""
    prefix = normalize_prefix(prefix)
    run_ids = list_run_ids(conn, bucket, prefix)
    if not run_ids:
        raise Ass3Error(f"backup {prefix!r} in s3://{bucket} has no run records")
    result = []
    for run_id in run_ids:
        record = load_record(conn, bucket, prefix, run_id)
        result.append(
            {
                "run_id": run_id,
                "time": record.time.isoformat(),
                "source": record.source,
                "files": len(record.files),
                "bytes": record.total_bytes,
                "uploaded": record.uploaded,
                "deleted": record.deleted,
                "failed": record.failed,
                "versioned": record.versioned,
            }
        )
    return result


def format_runs(conn: Connection, bucket: str, prefix: str) -> list[str]:
    """--runs as lines for a person, times in local time."""
    lines = []
    for run in runs(conn, bucket, prefix):
        local_time = datetime.fromisoformat(run["time"]).astimezone()
        lines.append(
            f"{run['run_id']}  {local_time:%Y-%m-%d %H:%M:%S %Z}  {plural(run['files'], 'file')}"
            f"  {human_bytes(run['bytes'])}  uploaded {run['uploaded']}"
            f"  deleted {run['deleted']}"
            + (f"  failed {run['failed']}" if run["failed"] else "")
            + ("" if run["versioned"] else "  (versioning off)")
        )
    return lines


def set_retention(conn: Connection, bucket: str, prefix: str, days: int) -> None:
    """Expire versions of PREFIX/ that have been noncurrent for `days` days.

    Other lifecycle rules of the bucket are kept; this backup's rule is replaced.
    """
    rule_id = f"ass3-keep-{prefix}"[:255]
    with fatal_errors("GetBucketLifecycleConfiguration", bucket):
        rules: list[LifecycleRuleUnionTypeDef] = [
            rule for rule in lifecycle_rules(conn, bucket) if rule.get("ID") != rule_id
        ]
    rules.append(
        {
            "ID": rule_id,
            "Status": "Enabled",
            "Filter": {"Prefix": prefix + "/"},
            "NoncurrentVersionExpiration": {"NoncurrentDays": days},
        }
    )
    with fatal_errors("PutBucketLifecycleConfiguration", bucket):
        conn.client.put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration={"Rules": rules}, **conn.owner_args()
        )


def retention_days(conn: Connection, bucket: str) -> dict[str, int]:
    """Backup name -> days its noncurrent versions are kept, from the lifecycle rules."""
    try:
        rules = lifecycle_rules(conn, bucket)
    except (ClientError, BotoCoreError):
        return {}
    kept = {}
    for rule in rules:
        prefix = rule.get("Filter", {}).get("Prefix", "")
        days = rule.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays")
        if rule.get("Status") == "Enabled" and days and prefix.endswith("/"):
            kept[prefix[:-1]] = days
    return kept
