"""The objects of part of a backup, found without reading the rest of it: from a run
record (no listing at all), from a listing of only the named paths, or from their
object versions; and the state of a backup that --check and --diff compare against.

Every PATH must name something: one that names nothing is an error before any file is
read or written (`partial.unmatched_error`).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Iterator
from datetime import datetime

from ass3 import history, remote
from ass3.connection import Connection
from ass3.listings import list_backups
from ass3.model import Ass3Error, ObjectVersion, RemoteObject, Summary, plural
from ass3.names import unsafe_key_reason
from ass3.partial import RestorePath, Selection, unmatched_error
from ass3.plan import key_order
from ass3.records import RunRecord
from ass3.s3errors import fatal_errors
from ass3.timeline import choose_run, newest_versions_at, objects_of_run


def current_objects(
    conn: Connection, bucket: str, prefix: str, selection: Selection, summary: Summary
) -> Iterator[RemoteObject]:
    """The current objects the selection takes, in key order, listing only the named
    paths: a PATH given as a folder (`docs/`) lists PREFIX/docs/; any other first costs
    one ListObjectsV2 of PREFIX/PATH with Delimiter '/', which shows the file of that
    name and whether a folder of that name exists, and only then is the folder listed.
    Without paths, the whole backup is listed, as a plain restore does."""
    if not selection.paths:
        return _filtered(remote.list_remote(conn, bucket, prefix), selection, summary)
    streams: list[Iterator[RemoteObject]] = []
    unmatched = []
    for path in selection.paths:
        found = _path_listing(conn, bucket, prefix, path)
        if not found:
            unmatched.append(path)
        streams.extend(found)
    if unmatched:
        raise unmatched_error(unmatched, prefix, "now")
    merged = heapq.merge(*streams, key=lambda item: key_order(item.rel))
    return _filtered(merged, selection, summary)


def _path_listing(
    conn: Connection, bucket: str, prefix: str, path: RestorePath
) -> list[Iterator[RemoteObject]]:
    """The objects one PATH names, as streams in key order; none when it names nothing."""
    streams: list[Iterator[RemoteObject]] = []
    has_folder = path.folder_only
    if not path.folder_only:
        found, has_folder = _probe(conn, bucket, prefix, path.rel)
        if found is not None:
            streams.append(iter([found]))
    if has_folder:
        below = remote.list_remote(conn, bucket, prefix, under=path.rel + "/")
        first = next(below, None)
        if first is not None:
            streams.append(itertools.chain([first], below))
    return streams


def _probe(
    conn: Connection, bucket: str, prefix: str, rel: str
) -> tuple[RemoteObject | None, bool]:
    """The object PREFIX/REL, if there is one, and whether keys below PREFIX/REL/ exist:
    one ListObjectsV2 with Delimiter '/', in which a folder of any size is one line."""
    key = f"{prefix}/{rel}"
    paginator = conn.client.get_paginator("list_objects_v2")
    found, folder = None, False
    with fatal_errors("ListObjectsV2", bucket, prefix):
        pages = paginator.paginate(Bucket=bucket, Prefix=key, Delimiter="/", **conn.owner_args())
        for page in pages:
            for item in page.get("Contents", []):
                if item["Key"] == key:
                    found = RemoteObject(
                        rel, key, item["Size"], item["ETag"].strip('"'), item["LastModified"]
                    )
            folder = folder or any(
                common.get("Prefix") == key + "/" for common in page.get("CommonPrefixes", [])
            )
            if found is not None and folder:
                break
    return found, folder


def recorded_objects(
    prefix: str, record: RunRecord, selection: Selection, summary: Summary
) -> Iterator[RemoteObject]:
    """The objects a run record names that the selection takes: no listing at all."""
    unmatched = selection.unmatched(entry.rel for entry in record.files)
    if unmatched:
        raise unmatched_error(unmatched, prefix, f"in run {record.run_id}")
    return _filtered(objects_of_run(prefix, record), selection, summary)


def versions_as_of(
    conn: Connection,
    bucket: str,
    prefix: str,
    when: datetime,
    selection: Selection,
    summary: Summary,
) -> list[RemoteObject]:
    """Without run records: each selected key's newest version at or before `when`,
    listing the versions of PREFIX/PATH (a prefix: keys that only begin like PATH are
    listed too, then left out) for each PATH, else of the whole backup."""
    if selection.paths:
        versions: Iterable[ObjectVersion] = itertools.chain.from_iterable(
            remote.iter_versions(conn, bucket, prefix, under=str(path)) for path in selection.paths
        )
    else:
        versions = remote.iter_versions(conn, bucket, prefix)
    objects = [item for item in newest_versions_at(versions, when) if selection.named(item.rel)]
    unmatched = selection.unmatched(item.rel for item in objects)
    if unmatched:
        raise unmatched_error(unmatched, prefix, f"as of {when:%Y-%m-%d %H:%M:%S %Z}")
    return list(_filtered(objects, selection, summary))


def _filtered(
    objects: Iterable[RemoteObject], selection: Selection, summary: Summary
) -> Iterator[RemoteObject]:
    """The objects the selection takes; those the filters leave out are counted as
    excluded. If the filters leave out every one, that is an error, raised before the
    first object would have been passed on."""
    named = passed = 0
    for item in objects:
        if not selection.named(item.rel):
            continue
        named += 1
        if selection.filters.excludes_path(item.rel):
            summary.excluded += 1
            continue
        passed += 1
        yield item
    if named and not passed:
        raise Ass3Error(
            f"--include/--exclude leave out all {plural(named, 'file')} that would have been "
            "taken; nothing to do"
        )


def compared_state(
    conn: Connection,
    bucket: str,
    prefix: str,
    selection: Selection,
    summary: Summary,
    *,
    run_id: str | None,
    as_of: datetime | None,
) -> tuple[Iterator[RemoteObject], RunRecord | None]:
    """What --check and --diff compare against (at least one object, else Ass3Error),
    and its run record (None without one):
    run `run_id`, else the newest run at or before `as_of`, else the latest run; for a
    backup without run records, the current objects, or the versions as of `as_of`.

    Unlike a restore, an old run is never refused when versioning is off: what it
    lost is what a check is there to show. `summary.method` says which was taken.
    """
    if run_id is not None:
        record = history.load_record(conn, bucket, prefix, run_id)
    else:
        run_ids = history.list_run_ids(conn, bucket, prefix)
        if as_of is None and not run_ids:
            summary.method = "the current objects (the backup has no run records)"
            current = current_objects(conn, bucket, prefix, selection, summary)
            return or_explained(conn, bucket, prefix, current, ""), None
        chosen = run_ids[-1] if run_ids else None
        if as_of is not None:
            versioning = remote.bucket_versioning(conn, bucket)
            chosen = choose_run(
                run_ids, versioning, run_id=None, as_of=as_of, where=(bucket, prefix)
            )
            if chosen is None:
                summary.method = (
                    f"object versions as of {as_of:%Y-%m-%d %H:%M:%S %Z} (no run records: "
                    "chosen by LastModified, one-second resolution)"
                )
                versions = versions_as_of(conn, bucket, prefix, as_of, selection, summary)
                return or_explained(conn, bucket, prefix, iter(versions), summary.method), None
        assert chosen is not None
        record = history.record_as_of(conn, bucket, prefix, run_ids, chosen)
    summary.method = (
        f"run {record.run_id} ({record.time.astimezone():%Y-%m-%d %H:%M:%S %Z}), "
        "from its run record"
    )
    objects = recorded_objects(prefix, record, selection, summary)
    return or_explained(conn, bucket, prefix, objects, summary.method), record


def or_explained(
    conn: Connection, bucket: str, prefix: str, objects: Iterator[RemoteObject], then: str
) -> Iterator[RemoteObject]:
    """The objects unchanged, once there is at least one; else why there are none: the
    backup held no files at the time `then` names, or there is no backup of that name."""
    first = next(objects, None)
    if first is not None:
        return itertools.chain([first], objects)
    if then:
        raise Ass3Error(f"backup {prefix!r} held no files then ({then})")
    names = [info.name for info in list_backups(conn, bucket)]
    known = f"backups there: {', '.join(names)}" if names else "it holds no backups"
    raise Ass3Error(f"no backup named {prefix!r} in s3://{bucket}; {known}")


def restorable(item: RemoteObject, summary: Summary) -> bool:
    """Whether a restore would make this object a file, for --check and --diff: a
    folder marker is no file; a key no restore may write is a failure, as in a restore."""
    if item.rel.endswith("/") and item.size == 0:
        return False
    reason = unsafe_key_reason(item.rel)
    if reason:
        summary.fail(item.key, f"a restore refuses this key: {reason}")
    return reason is None
