"""Point-in-time restores from run records, the fallback without them, guarded deletions."""

from __future__ import annotations

import os
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from helpers import (
    a_moment_apart,
    back_up,
    back_up_exactly,
    count_calls,
    make_tree,
    read_tree,
    restored,
    set_tree,
)

import s3common
from s3common import Ass3Error, Connection

RUN_1 = {"a.txt": b"one", "gone/later.txt": b"short-lived", "keep": b"k"}
RUN_2 = {"a.txt": b"two", "keep": b"k", "new.txt": b"fresh"}  # edit, delete, add
RUN_3 = {"a.txt": b"two", "keep": b"k", "new.txt": b"fresh", "gone/later.txt": b"back again"}


def three_runs(conn: Connection, bucket: str, root: Path) -> list[str]:
    run_ids = [
        back_up_exactly(conn, root, bucket, files, delete=True, force=True)
        for files in (RUN_1, RUN_2, RUN_3)
    ]
    assert all(run_ids) and len(set(run_ids)) == 3
    return run_ids


@pytest.mark.slow
def test_each_run_restores_exactly_by_id(conn: Connection, s3, bucket: str, tmp_path: Path) -> None:
    run_ids = three_runs(conn, bucket, tmp_path / "src")
    assert s3common.list_run_ids(conn, bucket, "data") == run_ids
    for index, (run_id, files) in enumerate(zip(run_ids, (RUN_1, RUN_2, RUN_3), strict=True)):
        assert restored(conn, bucket, tmp_path / f"out{index}", run_id=run_id) == files


@pytest.mark.slow
def test_each_run_restores_by_time(conn: Connection, s3, bucket: str, tmp_path: Path) -> None:
    run_ids = three_runs(conn, bucket, tmp_path / "src")
    for index, (run_id, files) in enumerate(zip(run_ids, (RUN_1, RUN_2, RUN_3), strict=True)):
        when = s3common.run_time(run_id) + timedelta(microseconds=1)
        assert restored(conn, bucket, tmp_path / f"t{index}", as_of=when) == files
    with pytest.raises(Ass3Error, match="no run of 'data' at or before"):
        s3common.restore(
            conn,
            "data",
            bucket=bucket,
            destination=str(tmp_path / "early"),
            as_of=s3common.run_time(run_ids[0]) - timedelta(seconds=1),
        )


@pytest.mark.slow
def test_restoring_an_old_run_over_a_newer_tree_fetches_only_differences(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    run_ids = three_runs(conn, bucket, tmp_path / "src")
    dest = tmp_path / "out"
    assert restored(conn, bucket, dest) == RUN_3
    calls = count_calls(conn.client)
    summary = s3common.restore(
        conn, "data", bucket=bucket, destination=str(dest), run_id=run_ids[0], delete=True
    )
    assert read_tree(dest / "data") == RUN_1
    assert (summary.transferred, summary.unchanged, summary.deleted) == (2, 1, 1)
    assert calls["GetObject"] == 3  # the run record and the two files that differ
    assert calls["HeadObject"] == 0


@pytest.mark.slow
def test_two_runs_in_the_same_second_are_told_apart(
    conn: Connection, s3, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen = datetime(2026, 11, 27, 12, 0, 0, 500000, tzinfo=timezone.utc)

    class FrozenClock(datetime):
        @classmethod
        def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
            return frozen

    monkeypatch.setattr("ass3.records.datetime", FrozenClock)
    root = tmp_path / "src"
    set_tree(root, {"f": b"first"})
    first = back_up(conn, root, bucket).run_id
    set_tree(root, {"f": b"second"})
    second = back_up(conn, root, bucket).run_id
    assert first and second and first != second
    assert s3common.run_time(first) == s3common.run_time(second) == frozen
    monkeypatch.undo()
    ids = s3common.list_run_ids(conn, bucket, "data")
    assert set(ids) == {first, second}
    assert restored(conn, bucket, tmp_path / "a", run_id=first) == {"f": b"first"}
    assert restored(conn, bucket, tmp_path / "b", run_id=second) == {"f": b"second"}


@pytest.mark.slow
def test_an_interrupted_run_leaves_no_record_and_the_last_run_restorable(
    conn: Connection, s3, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "src"
    set_tree(root, RUN_1)
    first = back_up(conn, root, bucket).run_id

    def killed(*_: object, **__: object) -> None:
        raise KeyboardInterrupt  # between the last upload and the record

    monkeypatch.setattr("ass3.history.record_run", killed)
    set_tree(root, RUN_2)
    with pytest.raises(KeyboardInterrupt):
        s3common.backup(conn, str(root), bucket=bucket, prefix="data")
    monkeypatch.undo()
    assert s3common.list_run_ids(conn, bucket, "data") == [first]
    assert restored(conn, bucket, tmp_path / "out", run_id=first) == RUN_1


@pytest.mark.slow
def test_no_change_run_writes_no_record_and_costs_no_extra_request(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    root = tmp_path / "src"
    set_tree(root, RUN_1)
    back_up(conn, root, bucket)
    calls = count_calls(conn.client)
    assert back_up(conn, root, bucket).run_id is None
    assert set(calls) == {"ListBuckets", "ListObjectsV2"}
    assert len(s3common.list_run_ids(conn, bucket, "data")) == 1


def test_run_records_are_not_backups(conn: Connection, s3, bucket: str, tmp_path: Path) -> None:
    three_runs(conn, bucket, tmp_path / "src")
    assert [info.name for info in s3common.list_backups(conn, bucket)] == ["data"]
    lines = s3common.format_runs(conn, bucket, "data")
    assert len(lines) == 3
    assert "uploaded 3  deleted 0" in lines[0] and "deleted 1" in lines[1]


@pytest.mark.slow
def test_unversioned_bucket_refuses_old_runs_and_warns(
    conn: Connection, s3, bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s3.create_bucket(Bucket=bucket)  # made by someone else: versioning never enabled
    root = tmp_path / "src"
    set_tree(root, RUN_1)
    first = back_up(conn, root, bucket).run_id
    assert "versioning is off" in caplog.text
    set_tree(root, RUN_2)
    latest = back_up(conn, root, bucket, delete=True, force=True).run_id
    with pytest.raises(Ass3Error, match=r"versioning is off .* only the latest run"):
        restored(conn, bucket, tmp_path / "old", run_id=first)
    assert restored(conn, bucket, tmp_path / "new", run_id=latest) == RUN_2
    with pytest.raises(Ass3Error, match="versioning is off"):
        s3.delete_object(Bucket=bucket, Key=s3common.record_key("data", first))
        s3.delete_object(Bucket=bucket, Key=s3common.record_key("data", latest))
        restored(conn, bucket, tmp_path / "t", as_of=datetime.now(timezone.utc))


@pytest.mark.slow
def test_without_records_as_of_falls_back_to_object_versions(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    """Objects written by another tool: versions are chosen by LastModified."""
    s3common.ensure_bucket(conn, bucket)
    s3.put_object(Bucket=bucket, Key="data/a", Body=b"v1")
    s3.put_object(Bucket=bucket, Key="data/b", Body=b"only then")
    between = a_moment_apart()
    s3.put_object(Bucket=bucket, Key="data/a", Body=b"v2")
    s3.delete_object(Bucket=bucket, Key="data/b")
    s3.put_object(Bucket=bucket, Key="data/c", Body=b"later")
    summary = s3common.restore(
        conn, "data", bucket=bucket, destination=str(tmp_path / "then"), as_of=between
    )
    assert "object versions" in summary.method
    assert read_tree(tmp_path / "then" / "data") == {"a": b"v1", "b": b"only then"}
    assert restored(conn, bucket, tmp_path / "now") == {"a": b"v2", "c": b"later"}


# --- deletions, guarded -------------------------------------------------------------------


@pytest.mark.slow
def test_delete_removes_objects_of_deleted_files_as_delete_markers(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    root = tmp_path / "src"
    set_tree(root, {"a": b"1", "b": b"2", "c": b"3"})
    back_up(conn, root, bucket)
    (root / "c").unlink()
    summary = back_up(conn, root, bucket, delete=True)
    assert summary.deleted == 1
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="data/")["Contents"]
    assert [item["Key"] for item in listed] == ["data/a", "data/b"]
    markers = s3.list_object_versions(Bucket=bucket, Prefix="data/c")["DeleteMarkers"]
    assert len(markers) == 1


@pytest.mark.slow
def test_without_delete_nothing_is_deleted(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    root = tmp_path / "src"
    set_tree(root, {"a": b"1", "b": b"2"})
    back_up(conn, root, bucket)
    (root / "b").unlink()
    assert back_up(conn, root, bucket).deleted == 0
    assert s3.list_objects_v2(Bucket=bucket, Prefix="data/")["KeyCount"] == 2


@pytest.mark.parametrize(
    ("deletions", "total", "source_files", "complete", "max_delete", "force", "refused"),
    [
        (0, 0, 0, False, None, False, None),
        (1, 4, 3, True, None, False, None),
        (2, 4, 2, True, None, False, None),
        (3, 4, 1, True, None, False, "more than --max-delete 2"),
        (3, 4, 1, True, None, True, None),
        (3, 4, 1, True, "75%", False, None),
        (3, 4, 1, True, "2", False, "more than --max-delete 2"),
        (1, 4, 3, False, None, True, "could not be read"),
        (4, 4, 0, True, None, True, "no files at all"),
        (4, 4, 4, True, None, False, "more than --max-delete 2"),
        (4, 4, 4, True, None, True, None),  # every file renamed: allowed when forced
    ],
)
def test_deletion_guards(
    deletions: int,
    total: int,
    source_files: int,
    complete: bool,
    max_delete: str | None,
    force: bool,
    refused: str | None,
) -> None:
    reason = s3common.deletion_refusal(
        deletions,
        total,
        source_files=source_files,
        complete=complete,
        max_delete=max_delete,
        force=force,
    )
    assert (reason is None) if refused is None else (refused in (reason or ""))


@pytest.mark.slow
def test_empty_source_deletes_nothing(conn: Connection, s3, bucket: str, tmp_path: Path) -> None:
    root = tmp_path / "src"
    set_tree(root, {"a": b"1", "b": b"2"})
    back_up(conn, root, bucket)
    set_tree(root, {})
    summary = s3common.backup(
        conn, str(root), bucket=bucket, prefix="data", delete=True, force=True
    )
    assert summary.deleted == 0 and summary.exit_code == s3common.EXIT_FAILURES
    assert "no files at all" in summary.failures[0][1]
    assert s3.list_objects_v2(Bucket=bucket, Prefix="data/")["KeyCount"] == 2


@pytest.mark.slow
def test_unreadable_part_of_the_source_deletes_nothing(
    conn: Connection, s3, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "src"
    set_tree(root, {"a": b"1", "locked/b": b"2", "locked/c": b"3", "d": b"4"})
    back_up(conn, root, bucket)
    real_scandir = os.scandir

    def denied(path: str) -> object:
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", denied)
    summary = s3common.backup(conn, str(root), bucket=bucket, prefix="data", delete=True)
    assert summary.deleted == 0
    assert any("could not be read" in reason for _, reason in summary.failures)
    assert s3.list_objects_v2(Bucket=bucket, Prefix="data/")["KeyCount"] == 4


@pytest.mark.slow
def test_dry_run_sends_no_write_request_and_writes_nothing_locally(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    root = tmp_path / "src"
    set_tree(root, {"a": b"1", "b": b"2", "c": b"3"})
    back_up(conn, root, bucket)
    set_tree(root, {"a": b"1", "b": b"X", "new": b"n"})
    cache = Path(s3common.default_cache_path())
    cache_before = cache.read_bytes()
    calls = count_calls(conn.client)
    summary = s3common.backup(
        conn, str(root), bucket=bucket, prefix="data", delete=True, dry_run=True
    )
    assert (summary.transferred, summary.deleted) == (2, 1)
    assert set(calls) <= {"ListObjectsV2", "HeadBucket", "HeadObject", "GetObject"}
    assert cache.read_bytes() == cache_before
    assert (
        s3common.list_run_ids(conn, bucket, "data")
        and len(s3common.list_run_ids(conn, bucket, "data")) == 1
    )

    dest = tmp_path / "out"
    make_tree(dest / "data", {"a": b"1", "stray": b"s"})
    before = read_tree(dest)
    summary = s3common.restore(
        conn, "data", bucket=bucket, destination=str(dest), delete=True, dry_run=True
    )
    assert (summary.transferred, summary.unchanged, summary.deleted) == (2, 1, 1)
    assert read_tree(dest) == before


def test_dry_run_into_a_bucket_that_does_not_exist_creates_nothing(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    root = tmp_path / "src"
    set_tree(root, {"a": b"1"})
    summary = s3common.backup(conn, str(root), bucket=bucket, prefix="data", dry_run=True)
    assert summary.transferred == 1
    assert bucket not in [entry["Name"] for entry in s3.list_buckets()["Buckets"]]


@pytest.mark.slow
def test_restore_delete_keeps_files_when_the_restore_failed(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    root = tmp_path / "src"
    set_tree(root, {"a": b"1", "b": b"2"})
    back_up(conn, root, bucket)
    head = s3.head_object(Bucket=bucket, Key="data/b")
    s3.put_object(Bucket=bucket, Key="data/b", Body=b"X", Metadata=head["Metadata"])  # corrupt
    dest = tmp_path / "out"
    make_tree(dest / "data", {"stray": b"s"})
    summary = s3common.restore(conn, "data", bucket=bucket, destination=str(dest), delete=True)
    assert summary.deleted == 0
    assert (dest / "data" / "stray").exists()


# --- retention ----------------------------------------------------------------------------


@pytest.mark.slow
def test_keep_days_sets_a_rule_for_this_backup_only(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    root = tmp_path / "src"
    set_tree(root, {"a": b"1"})
    back_up(conn, root, bucket)
    s3common.set_retention(conn, bucket, "data", 30)
    s3common.set_retention(conn, bucket, "data", 45)  # replaces, does not add
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    ids = sorted(rule["ID"] for rule in rules)
    assert ids == ["ass3-abort-incomplete-multipart", "ass3-keep-data"]
    assert s3common.retention_days(conn, bucket) == {"data": 45}
    listing = s3common.format_listing(conn, bucket, None)
    assert any("old versions kept 45 days" in line for line in listing)


@pytest.mark.slow
def test_a_file_that_failed_keeps_its_previous_version_in_the_record(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    root = tmp_path / "src"
    set_tree(root, {"a": b"one", "b": b"bee"})
    back_up(conn, root, bucket)
    set_tree(root, {"a": b"two", "b": b"BEE"})

    def refuse_b(params: dict[str, object], **_: object) -> None:
        if str(params["Key"]).endswith("/b"):
            raise ClientError({"Error": {"Code": "InternalError"}}, "PutObject")

    conn.client.meta.events.register_first("before-parameter-build.s3.PutObject", refuse_b)
    summary = s3common.backup(conn, str(root), bucket=bucket, prefix="data")
    assert [rel for rel, _ in summary.failures] == ["b"] and summary.run_id
    conn.client.meta.events.unregister("before-parameter-build.s3.PutObject", refuse_b)
    assert restored(conn, bucket, tmp_path / "out", run_id=summary.run_id) == {
        "a": b"two",
        "b": b"bee",
    }


@pytest.mark.slow
def test_runs_and_list_as_json(
    s3, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    import ass3Backup
    import ass3Restore

    root = tmp_path / "data"
    set_tree(root, RUN_1)
    assert ass3Backup.main([str(root), "--bucket", bucket, "-q"]) == 0
    capsys.readouterr()
    assert ass3Restore.main(["data", "--bucket", bucket, "--runs", "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)
    assert (run["files"], run["uploaded"], run["deleted"]) == (3, 3, 0)
    assert ass3Backup.main(["--list", "--bucket", bucket, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert bucket in listed["buckets"]
    assert [(b["name"], b["objects"]) for b in listed["backups"]] == [("data", 3)]
    assert ass3Restore.main(["--list", "data", "--bucket", bucket, "--json"]) == 0
    objects = json.loads(capsys.readouterr().out)["objects"]
    assert sorted(item["path"] for item in objects) == sorted(RUN_1)


# --- found in review ----------------------------------------------------------------------


@pytest.mark.slow
def test_as_of_without_records_replaces_a_newer_same_size_multipart_file(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    """The md5 compared must be the old version's, not the current object's."""
    old, new = os.urandom(6 * s3common.MiB), os.urandom(6 * s3common.MiB)
    root = tmp_path / "src"
    set_tree(root, {"big": old})
    back_up(conn, root, bucket)
    between = a_moment_apart()
    set_tree(root, {"big": new})
    back_up(conn, root, bucket)
    for run_id in s3common.list_run_ids(conn, bucket, "data"):
        s3.delete_object(Bucket=bucket, Key=s3common.record_key("data", run_id))
    dest = tmp_path / "out"
    make_tree(dest / "data", {"big": new})
    assert restored(conn, bucket, dest, as_of=between) == {"big": old}


@pytest.mark.slow
def test_the_record_keeps_objects_the_run_did_not_look_at(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    root = tmp_path / "src"
    set_tree(root, {"keep.txt": b"v1", "big/photo.raw": b"raw", "old.txt": b"old"})
    back_up(conn, root, bucket)
    set_tree(root, {"keep.txt": b"v2", "big/photo.raw": b"raw"})  # old.txt gone, no --delete
    run_id = back_up(conn, root, bucket, rules=[("exclude", "big/")]).run_id
    assert restored(conn, bucket, tmp_path / "out", run_id=run_id) == {
        "keep.txt": b"v2",
        "big/photo.raw": b"raw",
        "old.txt": b"old",
    }


@pytest.mark.slow
def test_restore_dry_run_into_a_new_folder_creates_nothing(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    root = tmp_path / "src"
    set_tree(root, {"a": b"1"})
    back_up(conn, root, bucket)
    summary = s3common.restore(
        conn, "data", bucket=bucket, destination=str(tmp_path / "new"), dry_run=True
    )
    assert summary.transferred == 1
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_renaming_every_file_is_allowed_with_force(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    root = tmp_path / "src"
    set_tree(root, {"old/a": b"1", "old/b": b"2"})
    back_up(conn, root, bucket)
    set_tree(root, {"new/a": b"1", "new/b": b"2"})
    refused = s3common.backup(conn, str(root), bucket=bucket, prefix="data", delete=True)
    assert refused.deleted == 0 and "--max-delete" in refused.failures[0][1]
    forced = back_up(conn, root, bucket, delete=True, force=True)
    assert forced.deleted == 2
    assert restored(conn, bucket, tmp_path / "out") == {"new/a": b"1", "new/b": b"2"}


def test_what_the_record_needs_is_asked_for_while_the_files_go_up(
    conn: Connection, bucket: str, tmp_path: Path
) -> None:
    """The bucket's versioning and the previous record (the versions of the files left
    alone) are asked for as soon as a file is to be sent, in a thread of their own: their
    round trips overlap the uploads instead of following them. Held: the upload of the
    edited file waits until the previous record has been asked for; without the read
    ahead it would wait in vain. Every request is still made once, and counted."""
    root = make_tree(tmp_path / "src", {"a.txt": b"one", "b.txt": b"b"})
    back_up(conn, root, bucket)
    (root / "a.txt").write_bytes(b"two")
    record_asked = threading.Event()
    held: list[bool] = []

    def on_get(request: Any, **_: Any) -> None:
        if "/.ass3/runs/" in request.url:
            record_asked.set()

    def on_put(request: Any, **_: Any) -> None:
        if request.url.split("?", 1)[0].endswith("/data/a.txt"):
            held.append(record_asked.wait(timeout=30))

    conn.client.meta.events.register_first("before-send.s3.GetObject", on_get)
    conn.client.meta.events.register_first("before-send.s3.PutObject", on_put)
    calls = count_calls(conn.client)
    summary = back_up(conn, root, bucket)
    assert held == [True]
    assert summary.run_id
    assert dict(calls) == {
        "ListBuckets": 1,
        "ListObjectsV2": 2,  # the backup, the runs
        "GetBucketVersioning": 1,
        "GetObject": 1,  # the previous record
        "PutObject": 2,  # a.txt, the new record
    }
    assert summary.requests == calls


def test_a_run_that_sends_nothing_asks_nothing_ahead(
    conn: Connection, bucket: str, tmp_path: Path
) -> None:
    root = make_tree(tmp_path / "src", {"a.txt": b"one"})
    back_up(conn, root, bucket)
    calls = count_calls(conn.client)
    back_up(conn, root, bucket)
    assert dict(calls) == {"ListBuckets": 1, "ListObjectsV2": 1}
