"""Rules no other test pinned down: each test here fails when its rule is undone.

The ETag check for objects without md5 metadata, DEL as a control character, the
`--as-of` boundaries (a run exactly at the time, a bare date as the end of its day),
delete markers in the fallback without run records, a run recorded while versioning
was off, and restore's `--delete` guard counting what is really there.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from helpers import Hook, a_moment_apart, back_up_exactly, make_tree, read_tree, restored
from moto.s3.models import s3_backends

import ass3Restore
import s3common
from s3common import Ass3Error, Connection

RUN_1 = {"a.txt": b"one", "gone/later.txt": b"short-lived", "keep": b"k"}
RUN_2 = {"a.txt": b"two!", "keep": b"k", "new.txt": b"fresh"}  # edit, delete, add


def back_up(conn: Connection, root: Path, bucket: str, files: dict[str, bytes]) -> str:
    """Back up exactly `files` as backup "data", deleting what is gone; the run's id."""
    return back_up_exactly(conn, root, bucket, files, delete=True, force=True)


def restore(conn: Connection, bucket: str, dest: Path, **options: Any) -> s3common.Summary:
    return s3common.restore(conn, "data", bucket=bucket, destination=str(dest), **options)


# --- the ETag is the check when an object has no md5 metadata ------------------------------


def corrupt_in_store(bucket: str, key: str) -> None:
    """Flip one byte of a stored object in moto's backend, keeping its length and ETag.

    The stored CRC32 goes too, so botocore has nothing to check: only the tool's
    comparison of the data with the listed ETag stands between the bytes and the disk.
    """
    stored = s3_backends["123456789012"]["aws"].buckets[bucket].keys[key]
    etag = stored.etag
    value = bytearray(stored.value)
    value[len(value) // 2] ^= 0xFF
    stored.value = bytes(value)
    assert stored.etag == etag and stored.size == len(value)
    stored.checksum_value = stored.checksum_algorithm = None


@pytest.mark.slow
def test_corrupt_object_without_md5_metadata_is_refused_by_its_etag(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    """Objects written by other tools carry no md5 metadata: the listed ETag decides."""
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="data/notes.txt", Body=b"written by another tool\n" * 50)
    s3.put_object(Bucket=bucket, Key="data/good.txt", Body=b"intact")
    assert "md5" not in s3.head_object(Bucket=bucket, Key="data/notes.txt")["Metadata"]
    etag = s3.head_object(Bucket=bucket, Key="data/notes.txt")["ETag"].strip('"')
    corrupt_in_store(bucket, "data/notes.txt")
    out = make_tree(tmp_path / "out" / "data", {"notes.txt": b"an older version"})
    before = (out / "notes.txt").stat()

    summary = restore(conn, bucket, tmp_path / "out")

    assert summary.failures == [
        ("notes.txt", f"checksum mismatch: ETag {etag} does not match the data")
    ]
    assert summary.transferred == 1
    assert read_tree(out) == {"notes.txt": b"an older version", "good.txt": b"intact"}
    assert (out / "notes.txt").stat().st_mtime_ns == before.st_mtime_ns
    assert sorted(out.rglob(".ass3-*")) == []


@pytest.mark.slow
def test_corrupt_multipart_object_without_md5_metadata_keeps_the_good_local_file(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    """Uploaded by another tool in parts of the size the tool itself uses."""
    s3.create_bucket(Bucket=bucket)
    (tmp_path / "big.bin").write_bytes(os.urandom(11 * s3common.MiB))
    parts = TransferConfig(
        multipart_threshold=conn.multipart_threshold, multipart_chunksize=conn.multipart_chunksize
    )
    s3.upload_file(str(tmp_path / "big.bin"), bucket, "data/big.bin", Config=parts)
    head = s3.head_object(Bucket=bucket, Key="data/big.bin")
    assert head["ETag"].endswith('-3"') and "md5" not in head["Metadata"]
    corrupt_in_store(bucket, "data/big.bin")
    out = make_tree(tmp_path / "out" / "data", {"big.bin": b"an older version"})

    summary = restore(conn, bucket, tmp_path / "out")

    assert [name for name, _ in summary.failures] == ["big.bin"]
    assert read_tree(out) == {"big.bin": b"an older version"}
    assert sorted(out.rglob(".ass3-*")) == []


@pytest.mark.slow
def test_an_intact_multipart_object_of_uneven_parts_without_md5_is_verified_exactly(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    """Another tool's parts need not be the tool's own size: S3 tells each part's size."""
    s3.create_bucket(Bucket=bucket)
    first, second = os.urandom(5 * s3common.MiB), os.urandom(6 * s3common.MiB + 7)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="data/big.bin")
    etags = [
        s3.upload_part(
            Bucket=bucket,
            Key="data/big.bin",
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=body,
        )["ETag"]
        for number, body in ((1, first), (2, second))
    ]
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="data/big.bin",
        UploadId=upload["UploadId"],
        MultipartUpload={
            "Parts": [{"ETag": etag, "PartNumber": n} for n, etag in enumerate(etags, 1)]
        },
    )
    summary = restore(conn, bucket, tmp_path / "out")
    assert (summary.failures, summary.warnings) == ([], [])
    assert read_tree(tmp_path / "out" / "data") == {"big.bin": first + second}


def test_an_etag_that_is_not_an_md5_is_a_counted_warning_not_a_silent_pass() -> None:
    from io import BytesIO

    from ass3 import download
    from ass3.model import FileDigest, RemoteObject

    remote = RemoteObject("f", "data/f", 4, "kms-style-etag", datetime.now(timezone.utc))
    warning = download._verify(None, "b", remote, {}, FileDigest("0" * 32), BytesIO(b"data"))  # type: ignore[arg-type]
    assert warning == "no md5 metadata and an ETag that is not an MD5: restored unverified"


# --- DEL (0x7f) is a control character --------------------------------------------------------


@pytest.mark.slow
def test_a_key_with_the_del_character_is_refused(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="data/rub\x7fout", Body=b"planted")
    s3.put_object(Bucket=bucket, Key="data/fine", Body=b"ok")
    summary = restore(conn, bucket, tmp_path / "out")
    assert summary.failures == [("data/rub\x7fout", "refused key: control character in name")]
    assert read_tree(tmp_path / "out") == {"data/fine": b"ok"}


@pytest.mark.slow
def test_a_file_named_with_the_del_character_is_reported_at_backup(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    root = make_tree(tmp_path / "src", {"fine": b"1", "rub\x7fout": b"2"})
    summary = s3common.backup(conn, str(root), bucket=bucket, prefix="data")
    assert summary.failures == [
        ("rub\x7fout", "cannot be restored safely: control character in name")
    ]
    assert summary.transferred == 1
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="data/")["Contents"]
    assert [item["Key"] for item in listed] == ["data/fine"]


# --- --as-of: the boundaries ------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_exactly_at_the_as_of_time_is_included(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    """Run ids carry microseconds, so "at or before" can be met exactly."""
    first = back_up(conn, tmp_path / "src", bucket, RUN_1)
    second = back_up(conn, tmp_path / "src", bucket, RUN_2)
    for index, (run_id, files) in enumerate(((first, RUN_1), (second, RUN_2))):
        when = s3common.run_time(run_id)
        summary = restore(conn, bucket, tmp_path / f"out{index}", as_of=when)
        assert summary.failures == [], summary.failures
        assert summary.method.startswith(f"run {run_id} ")
        assert read_tree(tmp_path / f"out{index}" / "data") == files


@pytest.fixture
def utc_plus_3(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone is UTC+3, so local and UTC days differ."""
    with monkeypatch.context() as zone:
        zone.setenv("TZ", "<+03>-3")
        time.tzset()
        yield
    time.tzset()


@pytest.mark.slow
@pytest.mark.usefixtures("utc_plus_3")
def test_a_bare_date_as_of_includes_the_runs_of_that_whole_day(
    conn: Connection,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--as-of 2026-11-20` means the end of that day in local time: its late run counts,
    the next day's first does not (at UTC+3 that one still ran on the 20th in UTC)."""
    days = {
        datetime(2026, 11, 19, 12, 0).astimezone(): {"f": b"the day before"},
        datetime(2026, 11, 20, 23, 59, 30).astimezone(): {"f": b"late that day"},
        datetime(2026, 11, 21, 0, 0, 30).astimezone(): {"f": b"the day after"},
    }
    clock: dict[str, datetime] = {}

    class FrozenClock(datetime):
        @classmethod
        def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
            return clock["now"]

    with monkeypatch.context() as frozen:
        frozen.setattr("ass3.records.datetime", FrozenClock)
        for moment, files in days.items():
            clock["now"] = moment
            back_up(conn, tmp_path / "src", bucket, files)

    for day, expected in (("2026-11-19", b"the day before"), ("2026-11-20", b"late that day")):
        dest = tmp_path / day
        argv = ["data", "--bucket", bucket, "--dest", str(dest), "--as-of", day, "-q"]
        assert ass3Restore.main(argv) == 0, capsys.readouterr().err
        assert read_tree(dest / "data") == {"f": expected}


def test_a_bare_date_in_the_basic_form_means_the_same_as_in_the_extended_form() -> None:
    try:
        parsed = s3common.parse_when("20261120")
    except Ass3Error:
        return  # refused, as Python 3.10 does: never a different moment
    assert parsed == s3common.parse_when("2026-11-20")


# --- without run records: versions by LastModified, delete markers meaning absent ------------


@pytest.mark.slow
def test_without_records_a_file_deleted_before_as_of_stays_deleted(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    """A delete marker before the time hides the file; one after it does not."""
    s3common.ensure_bucket(conn, bucket)  # versioned, and no backup run: no records
    for name in ("kept", "deleted-before", "deleted-after"):
        s3.put_object(Bucket=bucket, Key=f"data/{name}", Body=name.encode())
    time.sleep(1.1)  # LastModified has one-second resolution
    s3.delete_object(Bucket=bucket, Key="data/deleted-before")
    between = a_moment_apart()
    s3.delete_object(Bucket=bucket, Key="data/deleted-after")
    markers = s3.list_object_versions(Bucket=bucket, Prefix="data/")["DeleteMarkers"]
    assert len(markers) == 2
    assert s3common.list_run_ids(conn, bucket, "data") == []

    summary = restore(conn, bucket, tmp_path / "then", as_of=between)
    assert summary.failures == [], summary.failures
    assert "object versions" in summary.method
    assert read_tree(tmp_path / "then" / "data") == {
        "kept": b"kept",
        "deleted-after": b"deleted-after",
    }


# --- a run recorded while versioning was off --------------------------------------------------


@pytest.mark.slow
def test_a_run_recorded_without_versioning_is_refused_after_versioning_is_turned_on(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    """Its overwritten files were never kept as versions: turning versioning on later
    cannot bring them back, so only the latest such run restores."""
    s3.create_bucket(Bucket=bucket)  # made by someone else: versioning off
    first = back_up(conn, tmp_path / "src", bucket, RUN_1)
    second = back_up(conn, tmp_path / "src", bucket, RUN_2)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

    refused = r"run .* was recorded while versioning was off on s3://.*: files overwritten"
    for options in ({"run_id": first}, {"as_of": s3common.run_time(first)}):
        with pytest.raises(Ass3Error, match=refused):
            restore(conn, bucket, tmp_path / "old", **options)
    assert not (tmp_path / "old").exists()
    assert restored(conn, bucket, tmp_path / "latest", run_id=second) == RUN_2

    third = back_up(conn, tmp_path / "src", bucket, RUN_1)  # recorded with versioning on
    with pytest.raises(Ass3Error, match=refused):
        restore(conn, bucket, tmp_path / "old", run_id=second)
    assert restored(conn, bucket, tmp_path / "third", run_id=third) == RUN_1


# --- restore --delete: the guard counts the local files and the restored tree ---------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("in_backup", "extras", "options", "refusal"),
    [
        (4, 6, {}, "6 of 10 would go, more than --max-delete 5; add --force"),
        (4, 6, {"force": True}, None),
        (4, 6, {"max_delete": "60%"}, None),
        (6, 4, {}, None),
    ],
    ids=["6-of-10", "6-of-10-force", "6-of-10-max-60%", "4-of-10"],
)
def test_restore_delete_guard_weighs_extras_against_the_local_files(
    conn: Connection,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    in_backup: int,
    extras: int,
    options: dict[str, Any],
    refusal: str | None,
) -> None:
    backed_up = {f"k{index}": b"backed up %d" % index for index in range(in_backup)}
    back_up(conn, tmp_path / "src", bucket, backed_up)
    strays = {f"stray{index}": b"local only" for index in range(extras)}
    out = make_tree(tmp_path / "out" / "data", {**backed_up, **strays})

    summary = restore(conn, bucket, tmp_path / "out", delete=True, **options)

    assert summary.unchanged == in_backup
    if refusal is None:
        assert (summary.failures, summary.deleted) == ([], extras)
        assert read_tree(out) == backed_up
    else:
        assert summary.failures == [("--delete", f"refused to delete {extras} files: {refusal}")]
        assert summary.deleted == 0
        assert read_tree(out) == {**backed_up, **strays}


@pytest.mark.slow
def test_restore_delete_deletes_nothing_when_a_download_failed(
    conn: Connection,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    hook: Hook,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """1 of 10 is well within --max-delete: only the failed download holds it back."""
    backed_up = {f"k{index}": b"backed up %d" % index for index in range(9)}
    back_up(conn, tmp_path / "src", bucket, backed_up)
    out = make_tree(tmp_path / "out" / "data", {**backed_up, "k0": b"older", "stray": b"s"})
    failing = [True]

    def deny_k0(params: dict[str, Any], **_: Any) -> None:
        if failing[0] and params["Key"] == "data/k0":
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetObject")

    hook("before-parameter-build.s3.GetObject", deny_k0)
    argv = ["data", "--bucket", bucket, "--dest", str(tmp_path / "out"), "--delete", "-q"]
    assert ass3Restore.main(argv) == s3common.EXIT_FAILURES
    err = capsys.readouterr().err
    assert "failed: k0: access denied" in err
    assert "part of the source could not be read" in err
    assert read_tree(out) == {**backed_up, "k0": b"older", "stray": b"s"}

    failing[0] = False
    assert ass3Restore.main(argv) == s3common.EXIT_OK, capsys.readouterr().err
    assert read_tree(out) == backed_up
