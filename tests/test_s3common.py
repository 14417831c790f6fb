"""s3common against in-process moto: buckets, change detection, transfers, restore, listings."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from helpers import count_calls, make_tree, read_tree

import s3common
from s3common import Ass3Error, Connection

MiB = s3common.MiB


def backup(conn: Connection, root: Path, bucket: str, prefix: str = "data") -> s3common.Summary:
    return s3common.backup(conn, str(root), bucket=bucket, prefix=prefix)


def restore(conn: Connection, dest: Path, bucket: str, name: str = "data") -> s3common.Summary:
    return s3common.restore(conn, name, bucket=bucket, destination=str(dest))


# --- makeBucket ---------------------------------------------------------------------------


def test_new_bucket_gets_safe_defaults(conn: Connection, s3, bucket: str) -> None:
    assert s3common.ensure_bucket(conn, bucket) is True
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values())
    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    lifecycle = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert lifecycle[0]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    assert "LocationConstraint" not in s3.get_bucket_location(Bucket=bucket) or (
        s3.get_bucket_location(Bucket=bucket)["LocationConstraint"] in (None, "")
    )


@pytest.mark.slow
def test_existing_own_bucket_is_reused_without_create(conn: Connection, s3, bucket: str) -> None:
    s3.create_bucket(Bucket=bucket)
    calls = count_calls(conn.client)
    assert s3common.ensure_bucket(conn, bucket) is False
    assert calls == {"ListBuckets": 1}


def test_bucket_in_another_region(s3, bucket: str) -> None:
    conn = Connection(region="eu-west-1")
    assert s3common.ensure_bucket(conn, bucket) is True
    location = boto3.client("s3", region_name="eu-west-1").get_bucket_location(Bucket=bucket)
    assert location["LocationConstraint"] == "eu-west-1"
    assert s3common.ensure_bucket(conn, bucket) is False


@pytest.mark.slow
def test_bucket_of_another_account_is_refused(
    conn: Connection, s3, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOTO_ACCOUNT_ID", "111111111111")
    boto3.client("s3").create_bucket(Bucket=bucket)
    monkeypatch.delenv("MOTO_ACCOUNT_ID")
    with pytest.raises(Ass3Error, match="taken by another AWS account"):
        s3common.ensure_bucket(conn, bucket)


@pytest.mark.slow
def test_without_list_buckets_permission_head_bucket_decides(
    conn: Connection, s3, bucket: str
) -> None:
    def deny(**_: object) -> None:
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "ListBuckets")

    conn.client.meta.events.register_first("before-call.s3.ListBuckets", deny)
    calls = count_calls(conn.client)
    assert s3common.ensure_bucket(conn, bucket) is True
    assert calls["HeadBucket"] == 1 and calls["CreateBucket"] == 1
    assert s3common.ensure_bucket(conn, bucket) is False


@pytest.mark.slow
def test_store_without_bucket_settings_warns_and_goes_on(
    conn: Connection, s3, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    def not_implemented(**_: object) -> None:
        raise ClientError({"Error": {"Code": "NotImplemented", "Message": "no"}}, "PutBucketX")

    conn.client.meta.events.register_first("before-call.s3.PutBucketEncryption", not_implemented)
    assert s3common.ensure_bucket(conn, bucket) is True
    assert "could not set default encryption" in caplog.text
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"


@pytest.mark.slow
def test_default_bucket_name_uses_the_account(conn: Connection) -> None:
    assert s3common.resolve_bucket(conn, None) == "ass3backup-123456789012"
    assert s3common.resolve_bucket(conn, "given-name") == "given-name"


def test_bucket_from_environment(conn: Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASS3_BUCKET", "from-env")
    assert s3common.resolve_bucket(conn, None) == "from-env"


# --- Backup and change detection -------------------------------------------------------------


@pytest.mark.slow
def test_backup_uploads_with_metadata(conn: Connection, s3, bucket: str, tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", {"a.txt": b"hello", "sub/b.txt": b"", "sub/c d/é": b"x"})
    os.chmod(root / "a.txt", 0o640)
    summary = backup(conn, root, bucket)
    assert (summary.transferred, summary.unchanged, summary.failures) == (3, 0, [])
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix="data/")["Contents"]}
    assert keys == {"data/a.txt", "data/sub/b.txt", "data/sub/c d/é"}
    head = s3.head_object(Bucket=bucket, Key="data/a.txt")
    assert head["Metadata"] == {
        "md5": hashlib.md5(b"hello").hexdigest(),
        "mtime": str(os.stat(root / "a.txt").st_mtime_ns),
        "mode": "640",
    }


@pytest.mark.slow
def test_no_change_run_lists_once_and_nothing_else(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    root = make_tree(tmp_path / "src", {f"d{i % 3}/f{i}": b"x" * i for i in range(20)})
    backup(conn, root, bucket)
    calls = count_calls(conn.client)
    summary = backup(conn, root, bucket)
    assert (summary.transferred, summary.unchanged) == (0, 20)
    assert calls == {"ListBuckets": 1, "ListObjectsV2": 1}


@pytest.mark.slow
def test_listing_is_paginated(
    conn: Connection, s3, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOTO_S3_DEFAULT_MAX_KEYS", "5")
    root = make_tree(tmp_path / "src", {f"f{i:02}": b"%d" % i for i in range(12)})
    assert backup(conn, root, bucket).transferred == 12
    calls = count_calls(conn.client)
    summary = backup(conn, root, bucket)
    assert summary.unchanged == 12
    assert calls["ListObjectsV2"] == 3
    assert set(calls) == {"ListBuckets", "ListObjectsV2"}


@pytest.mark.slow
def test_same_size_edit_is_caught_even_with_old_mtime(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    root = make_tree(tmp_path / "src", {"a": b"one", "b": b"two"})
    backup(conn, root, bucket)
    before = os.stat(root / "a")
    (root / "a").write_bytes(b"ONE")
    os.utime(root / "a", ns=(before.st_atime_ns, before.st_mtime_ns))
    calls = count_calls(conn.client)
    summary = backup(conn, root, bucket)
    assert summary.transferred == 1 and summary.unchanged == 1
    assert calls["PutObject"] == 2 and calls["HeadObject"] == 0  # the file and the run record
    assert s3.get_object(Bucket=bucket, Key="data/a")["Body"].read() == b"ONE"


@pytest.mark.slow
def test_multipart_file_round_trip_without_head(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    big = os.urandom(11 * MiB)
    root = make_tree(tmp_path / "src", {"big.bin": big})
    assert backup(conn, root, bucket).transferred == 1
    etag = s3.head_object(Bucket=bucket, Key="data/big.bin")["ETag"]
    assert etag.endswith('-3"')
    calls = count_calls(conn.client)
    assert backup(conn, root, bucket).unchanged == 1
    assert calls["HeadObject"] == 0 and calls["UploadPart"] == 0
    # Same size, new content: caught through the composite ETag.
    (root / "big.bin").write_bytes(big[:-1] + bytes([big[-1] ^ 1]))
    assert backup(conn, root, bucket).transferred == 1
    summary = restore(conn, tmp_path / "out", bucket)
    assert summary.transferred == 1 and summary.failures == []
    assert (tmp_path / "out/data/big.bin").read_bytes() == (root / "big.bin").read_bytes()


@pytest.mark.slow
def test_multipart_object_with_other_part_size_reads_md5_metadata_once(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(12 * MiB)
    root = make_tree(tmp_path / "src", {"big.bin": data})
    backup(conn, root, bucket)
    # Another tool rewrote it with 6 MiB parts, keeping our metadata.
    head = s3.head_object(Bucket=bucket, Key="data/big.bin")
    config = boto3.s3.transfer.TransferConfig(multipart_threshold=MiB, multipart_chunksize=6 * MiB)
    s3.upload_file(
        str(root / "big.bin"),
        bucket,
        "data/big.bin",
        ExtraArgs={"Metadata": head["Metadata"]},
        Config=config,
    )
    assert s3.head_object(Bucket=bucket, Key="data/big.bin")["ETag"].endswith('-2"')
    calls = count_calls(conn.client)
    assert backup(conn, root, bucket).unchanged == 1
    assert calls["HeadObject"] == 1 and calls["UploadPart"] == 0


@pytest.mark.slow
def test_symlinks_are_not_followed_and_special_files_are_skipped(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    root = make_tree(tmp_path / "src", {"a": b"1", "dir/b": b"2"})
    (root / "link").symlink_to(root / "a")
    (root / "dirlink").symlink_to(root / "dir")
    os.mkfifo(root / "fifo")
    summary = backup(conn, root, bucket)
    assert summary.transferred == 2 and summary.skipped == 1  # the links are in the record
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix="data/")["Contents"]}
    assert keys == {"data/a", "data/dir/b"}


def test_file_changing_during_read_is_retried_then_backed_up_as_read(
    conn: Connection, s3, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree(tmp_path / "src", {"busy": b"a" * 100, "calm": b"b"})
    real_fstat = os.fstat
    seen: dict[int, int] = {}

    def growing_fstat(fd: int) -> os.stat_result:
        """Every second fstat of 'busy' reports a new mtime, as if it was being written."""
        result = real_fstat(fd)
        if os.readlink(f"/proc/self/fd/{fd}").endswith("busy"):
            seen[fd] = seen.get(fd, 0) + 1
            if seen[fd] % 2 == 0:
                values = list(result)
                values[8] += 1  # st_mtime
                return os.stat_result(values)
        return result

    monkeypatch.setattr(os, "fstat", growing_fstat)
    summary = backup(conn, root, bucket)
    assert summary.transferred == 2 and summary.failures == []
    assert summary.warnings == [("busy", s3common.CHANGING)]
    stored = s3.get_object(Bucket=bucket, Key="data/busy")
    assert stored["Body"].read() == b"a" * 100
    assert stored["Metadata"]["md5"] == hashlib.md5(b"a" * 100).hexdigest()


# --- Restore -------------------------------------------------------------------------------


@pytest.mark.slow
def test_restore_recreates_tree_mtimes_and_modes(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    files = {"a.txt": b"alpha", "empty": b"", "deep/er/c": b"gamma", "ü space": b"u"}
    root = make_tree(tmp_path / "src", files)
    os.chmod(root / "a.txt", 0o600)
    os.utime(root / "deep/er/c", ns=(1, 1_234_567_891_234_567_891))
    backup(conn, root, bucket)
    summary = restore(conn, tmp_path / "out", bucket)
    out = tmp_path / "out" / "data"
    assert summary.transferred == 4 and summary.failures == []
    assert read_tree(out) == files
    for rel in files:
        assert os.stat(out / rel).st_mtime_ns == os.stat(root / rel).st_mtime_ns
        assert os.stat(out / rel).st_mode == os.stat(root / rel).st_mode
    assert not list(out.rglob(".ass3-*"))
    calls = count_calls(conn.client)
    again = restore(conn, tmp_path / "out", bucket)
    assert (again.transferred, again.unchanged) == (0, 4)
    # The objects, then the runs and the latest run record, for the tree it holds.
    assert calls == {"ListObjectsV2": 2, "GetObject": 1}


def test_restore_replaces_a_changed_local_file(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    backup(conn, make_tree(tmp_path / "src", {"a": b"good"}), bucket)
    make_tree(tmp_path / "out" / "data", {"a": b"evil"})
    assert restore(conn, tmp_path / "out", bucket).transferred == 1
    assert (tmp_path / "out/data/a").read_bytes() == b"good"


@pytest.mark.slow
def test_corrupt_object_is_refused_and_good_file_kept(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    backup(conn, make_tree(tmp_path / "src", {"a": b"good", "b": b"fine"}), bucket)
    head = s3.head_object(Bucket=bucket, Key="data/a")
    s3.put_object(Bucket=bucket, Key="data/a", Body=b"bad!", Metadata=head["Metadata"])
    make_tree(tmp_path / "out" / "data", {"a": b"old"})
    summary = restore(conn, tmp_path / "out", bucket)
    assert summary.exit_code == s3common.EXIT_FAILURES
    assert summary.failures[0][0] == "a" and "checksum mismatch" in summary.failures[0][1]
    assert read_tree(tmp_path / "out") == {"data/a": b"old", "data/b": b"fine"}


@pytest.mark.slow
def test_hostile_keys_are_refused_and_nothing_escapes(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    s3.create_bucket(Bucket=bucket)
    for key in ("data/ok", "data/../escaped", "data/a/../../escaped2", "data//x", "data/d/"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"" if key.endswith("/") else b"payload")
    dest = tmp_path / "dest"
    summary = restore(conn, dest, bucket)
    assert summary.transferred == 1
    assert {key for key, _ in summary.failures} == {
        "data//x",
        "data/../escaped",
        "data/a/../../escaped2",
    }
    assert read_tree(tmp_path) == {"dest/data/ok": b"payload"}


@pytest.mark.slow
def test_restore_refuses_to_write_through_a_symlinked_folder(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    backup(conn, make_tree(tmp_path / "src", {"sub/a": b"1", "b": b"2"}), bucket)
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "out" / "data").mkdir(parents=True)
    (tmp_path / "out" / "data" / "sub").symlink_to(outside)
    summary = restore(conn, tmp_path / "out", bucket)
    assert summary.failures and "symlink" in summary.failures[0][1]
    assert list(outside.iterdir()) == []
    assert (tmp_path / "out/data/b").read_bytes() == b"2"


@pytest.mark.slow
def test_unknown_backup_lists_existing_ones(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    backup(conn, make_tree(tmp_path / "src", {"a": b"1"}), bucket, prefix="photos")
    with pytest.raises(Ass3Error, match=r"no backup named 'nope'.*backups there: photos"):
        restore(conn, tmp_path / "out", bucket, name="nope")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_restore_from_missing_bucket(conn: Connection, s3, tmp_path: Path) -> None:
    with pytest.raises(Ass3Error, match="does not exist"):
        restore(conn, tmp_path / "out", "no-such-bucket-here")


# --- Listings --------------------------------------------------------------------------------


def test_listing_of_buckets_and_backups(conn: Connection, s3, bucket: str, tmp_path: Path) -> None:
    backup(conn, make_tree(tmp_path / "a", {"x": b"12", "y/z": b"345"}), bucket, prefix="alpha")
    backup(conn, make_tree(tmp_path / "b", {"x": b"1"}), bucket, prefix="beta")
    lines = s3common.format_listing(conn, bucket, None)
    assert f"  {bucket}" in lines
    alpha = next(line for line in lines if line.strip().startswith("alpha"))
    assert "2 objects" in alpha and "5 B" in alpha
    assert any(line.strip().startswith("beta") and "1 object " in line for line in lines)
    objects = s3common.format_listing(conn, bucket, "alpha")
    assert [line.split()[-1] for line in objects] == ["x", "y/z"]
    with pytest.raises(Ass3Error, match="no backup named"):
        s3common.format_listing(conn, bucket, "gamma")


@pytest.mark.slow
def test_small_puts_skip_the_100_continue_round_trip(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    """A small file goes in one round trip; multipart parts keep Expect: 100-continue."""
    expect: dict[str, set[str | None]] = {}

    def record(request: object, event_name: str, **_: object) -> None:
        value = request.headers.get("Expect")  # type: ignore[attr-defined]
        value = value.decode() if isinstance(value, bytes) else value
        expect.setdefault(event_name.rsplit(".", 1)[-1], set()).add(value)

    conn.client.meta.events.register("before-send.s3", record)
    root = make_tree(tmp_path / "src", {"small": b"x" * 1000, "big": os.urandom(11 * MiB)})
    assert backup(conn, root, bucket).transferred == 2
    assert expect["PutObject"] == {None}
    assert expect["UploadPart"] == {"100-continue"}


@pytest.mark.slow
def test_a_chmod_or_touch_alone_updates_the_objects_metadata_without_upload(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    """Same content, new mode or mtime: a server-side copy rewrites the metadata."""
    root = make_tree(tmp_path / "src", {"script.sh": b"#!/bin/sh\n", "data": b"1234", "x": b"y"})
    conn.storage = s3common.StorageOptions(storage_class="STANDARD_IA")
    backup(conn, root, bucket)
    conn.storage = s3common.StorageOptions()
    time.sleep(1.1)  # LastModified has one-second resolution
    os.chmod(root / "script.sh", 0o755)
    os.utime(root / "data", ns=(10**18, 10**18))
    calls = count_calls(conn.client)
    summary = backup(conn, root, bucket)
    assert (summary.transferred, summary.metadata_updated, summary.unchanged) == (0, 2, 1)
    assert calls["PutObject"] == 1 and calls["CopyObject"] == 2  # 1 Put: the run record
    assert calls["HeadObject"] == 2  # only the two changed files, never the untouched one
    head = s3.head_object(Bucket=bucket, Key="data/script.sh")
    assert head["Metadata"]["mode"] == "755" and head["StorageClass"] == "STANDARD_IA"
    restore(conn, tmp_path / "out", bucket)
    assert os.stat(tmp_path / "out/data/script.sh").st_mode & 0o777 == 0o755
    assert os.stat(tmp_path / "out/data/data").st_mtime_ns == 10**18
    again = backup(conn, root, bucket)
    assert (again.metadata_updated, again.unchanged) == (0, 3)
