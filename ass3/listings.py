"""--list: the buckets, the backups in ours, or the objects of one backup."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ass3.connection import Connection
from ass3.history import retention_days
from ass3.model import Ass3Error, human_bytes, plural, printable
from ass3.names import RESERVED_PREFIX, normalize_prefix
from ass3.remote import list_remote
from ass3.s3errors import fatal_errors


@dataclass(frozen=True)
class BackupInfo:
    """One backup (a top-level prefix) in the bucket."""

    name: str
    objects: int
    size: int
    newest: datetime | None


def list_bucket_names(conn: Connection) -> list[str]:
    """The buckets these credentials own."""
    with fatal_errors("ListBuckets"):
        return [entry["Name"] for entry in conn.client.list_buckets().get("Buckets", [])]


def list_backups(conn: Connection, bucket: str) -> list[BackupInfo]:
    """Each backup in the bucket with its object count, total size and newest object."""
    totals: dict[str, list[Any]] = {}
    paginator = conn.client.get_paginator("list_objects_v2")
    with fatal_errors("ListObjectsV2", bucket):
        for page in paginator.paginate(Bucket=bucket, **conn.owner_args()):
            for item in page.get("Contents", []):
                name = item["Key"].split("/", 1)[0]
                if name == RESERVED_PREFIX or "/" not in item["Key"]:
                    continue
                entry = totals.setdefault(name, [0, 0, None])
                entry[0] += 1
                entry[1] += item["Size"]
                if entry[2] is None or item["LastModified"] > entry[2]:
                    entry[2] = item["LastModified"]
    return [BackupInfo(name, *values) for name, values in sorted(totals.items())]


def listing(conn: Connection, bucket: str, name: str | None) -> dict[str, Any]:
    """What --list shows: all buckets and the backups in ours, or one backup's objects."""
    if name:
        prefix = normalize_prefix(name)
        objects = [
            {"path": item.rel, "size": item.size, "modified": item.last_modified.isoformat()}
            for item in list_remote(conn, bucket, prefix)
        ]
        if not objects:
            raise Ass3Error(f"no backup named {prefix!r} in s3://{bucket}")
        return {"bucket": bucket, "backup": prefix, "objects": objects}
    result: dict[str, Any] = {"buckets": list_bucket_names(conn), "bucket": bucket}
    try:
        backups = list_backups(conn, bucket)
    except Ass3Error as error:
        return {**result, "backups": [], "problem": str(error)}
    kept = retention_days(conn, bucket)
    result["backups"] = [
        {
            "name": info.name,
            "objects": info.objects,
            "bytes": info.size,
            "newest": info.newest.isoformat() if info.newest else None,
            "keep_days": kept.get(info.name),
        }
        for info in backups
    ]
    return result


def format_listing(conn: Connection, bucket: str, name: str | None) -> list[str]:
    """--list as lines for a person."""
    data = listing(conn, bucket, name)
    if "objects" in data:
        return [
            f"{item['modified'][:19].replace('T', ' ')}  {item['size']:>12}  "
            f"{printable(item['path'])}"
            for item in data["objects"]
        ]
    lines = ["buckets:"] + [f"  {bucket_name}" for bucket_name in data["buckets"]]
    if "problem" in data:
        return [*lines, f"backups in s3://{bucket}: none ({data['problem']})"]
    lines.append(f"backups in s3://{bucket}:")
    for info in data["backups"]:
        newest = info["newest"][:19].replace("T", " ") if info["newest"] else "-"
        kept = f"  old versions kept {info['keep_days']} days" if info["keep_days"] else ""
        lines.append(
            f"  {info['name']:<30} {plural(info['objects'], 'object'):>16} "
            f"{human_bytes(info['bytes']):>10}  newest {newest}{kept}"
        )
    if not data["backups"]:
        lines.append("  (none)")
    return lines
