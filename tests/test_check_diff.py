"""--check (with and without --read-data) against a hand-edited bucket, and --diff of a
local folder against a backup: what each finds, what it costs, what it exits with."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import a_moment_apart, back_up, fetched_keys, make_tree, run_script
from moto.s3.models import s3_backends

import s3common
from ass3.model import RecordEntry
from ass3.records import RunRecord, new_run_id
from s3common import Ass3Error, Connection, Selection

MiB = 1024 * 1024
FILES = {
    "a.txt": b"alpha",
    "docs/report.odt": b"the report",
    "docs/sub/deep.txt": b"deep",
    "notes.txt": b"notes",
}


def check(conn: Connection, bucket: str, *paths: str, **options: Any) -> s3common.Summary:
    rules = options.pop("rules", [])
    return s3common.check(
        conn, "data", bucket=bucket, selection=Selection.parse(list(paths), rules), **options
    )


def findings(report: Any) -> list[str]:
    return [finding.line() for finding in report.sorted_findings()]


def corrupt(bucket: str, key: str) -> None:
    """Flip one stored byte in moto's backend, keeping the length, ETag and metadata
    (and no stored CRC32 that botocore could check instead of the tool)."""
    stored = s3_backends["123456789012"]["aws"].buckets[bucket].keys[key]
    value = bytearray(stored.value)
    value[len(value) // 2] ^= 0xFF
    stored.value = bytes(value)
    stored.checksum_value = stored.checksum_algorithm = None


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "src", FILES)


@pytest.fixture
def versioned(conn: Connection, s3: Any, bucket: str, source: Path) -> str:
    """A backup in a bucket the tool made (versioning on): its one run id."""
    run_id = back_up(conn, source, bucket).run_id
    assert run_id
    return run_id


@pytest.fixture
def unversioned(conn: Connection, s3: Any, bucket: str, source: Path) -> str:
    """A backup in a bucket someone else made, without versioning."""
    s3.create_bucket(Bucket=bucket)
    run_id = back_up(conn, source, bucket).run_id
    assert run_id
    return run_id


# --- --check ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_good_backup_passes_with_one_listing_and_no_download(
    conn: Connection, bucket: str, versioned: str
) -> None:
    keys = fetched_keys(conn)
    report = check(conn, bucket)
    assert (report.exit_code, report.files, report.ok, report.findings) == (0, 4, 4, [])
    assert report.summary.requests == {
        "ListObjectsV2": 1,  # the runs
        "GetObject": 1,  # the run record
        "ListObjectVersions": 1,  # the one listing of the backup
    }
    assert list(keys) == [s3common.record_key("data", versioned)]  # no data downloaded
    assert report.summary.read_bytes == 0
    assert report.summary.method.startswith(f"run {versioned} (")


@pytest.mark.slow
def test_an_object_deleted_from_an_unversioned_bucket_is_missing(
    conn: Connection, s3: Any, bucket: str, unversioned: str
) -> None:
    s3.delete_object(Bucket=bucket, Key="data/docs/report.odt")
    report = check(conn, bucket)
    assert report.exit_code == 1
    assert findings(report) == ["missing: docs/report.odt (no object of that name in the bucket)"]
    assert report.summary.requests["ListObjectsV2"] == 2  # the runs, then the backup
    assert "ListObjectVersions" not in report.summary.requests


@pytest.mark.slow
def test_an_object_overwritten_with_other_bytes_of_the_same_size_is_changed(
    conn: Connection, s3: Any, bucket: str, unversioned: str
) -> None:
    old = s3.head_object(Bucket=bucket, Key="data/a.txt")["ETag"].strip('"')
    s3.put_object(Bucket=bucket, Key="data/a.txt", Body=b"ALPHA")  # 5 bytes, as before
    new = s3.head_object(Bucket=bucket, Key="data/a.txt")["ETag"].strip('"')
    report = check(conn, bucket)
    assert report.exit_code == 1
    assert findings(report) == [f"changed: a.txt (ETag {new}, recorded {old})"]


@pytest.mark.slow
def test_overwriting_in_a_versioned_bucket_keeps_the_recorded_version_intact(
    conn: Connection, s3: Any, bucket: str, versioned: str
) -> None:
    s3.put_object(Bucket=bucket, Key="data/a.txt", Body=b"ALPHA")
    s3.delete_object(Bucket=bucket, Key="data/notes.txt")  # a delete marker
    for read_data in (False, True):
        report = check(conn, bucket, read_data=read_data)
        assert (report.exit_code, report.findings, report.ok) == (0, [], 4)


@pytest.mark.slow
def test_a_deleted_version_is_missing(
    conn: Connection, s3: Any, bucket: str, versioned: str
) -> None:
    [version] = s3.list_object_versions(Bucket=bucket, Prefix="data/notes.txt")["Versions"]
    s3.delete_object(Bucket=bucket, Key="data/notes.txt", VersionId=version["VersionId"])
    report = check(conn, bucket)
    assert report.exit_code == 1
    assert findings(report) == [
        f"missing: notes.txt (version {version['VersionId']} is not in the bucket)"
    ]


@pytest.mark.slow
def test_a_record_naming_a_key_that_does_not_exist_is_missing(
    conn: Connection, s3: Any, bucket: str, versioned: str
) -> None:
    record = RunRecord.from_bytes(
        s3.get_object(Bucket=bucket, Key=s3common.record_key("data", versioned))["Body"].read()
    )
    ghost = RecordEntry("b-ghost.txt", 5, "0" * 32, "0" * 32, "ghost-version")
    files = tuple(sorted([*record.files, ghost], key=lambda entry: entry.rel))
    edited = RunRecord(new_run_id(), record.source, 1, 0, 0, True, files)
    s3.put_object(
        Bucket=bucket, Key=s3common.record_key("data", edited.run_id), Body=edited.to_bytes()
    )
    report = check(conn, bucket)
    assert report.summary.method.startswith(f"run {edited.run_id}")
    assert findings(report) == ["missing: b-ghost.txt (version ghost-version is not in the bucket)"]
    assert (report.exit_code, report.ok) == (1, 4)
    assert check(conn, bucket, run_id=versioned).exit_code == 0  # the older run is whole


@pytest.mark.slow
@pytest.mark.parametrize("multipart", [False, True], ids=["single-part", "multipart"])
def test_bad_bytes_behind_a_good_listing_are_found_only_by_reading_them(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path, multipart: bool
) -> None:
    files = {**FILES, "big.bin": os.urandom(11 * MiB)}
    back_up(conn, make_tree(tmp_path / "big-src", files), bucket)
    name = "big.bin" if multipart else "docs/report.odt"
    corrupt(bucket, f"data/{name}")
    assert check(conn, bucket).exit_code == 0  # the listing cannot tell
    keys = fetched_keys(conn)
    report = check(conn, bucket, read_data=True)
    assert report.exit_code == 1
    [line] = findings(report)
    assert line.startswith(f"corrupt: {name} (MD5 ") and ", recorded " in line
    assert report.ok == 4 and report.summary.read_bytes == sum(map(len, files.values()))
    assert sum(count for key, count in keys.items() if key.startswith("data/")) == 5
    assert report.summary.requests.get("HeadObject", 0) == 0  # the tool's own part sizes


@pytest.mark.slow
def test_without_a_record_md5_metadata_is_compared_with_the_etag_and_it_says_so(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    files = {**FILES, "big.bin": os.urandom(11 * MiB)}
    back_up(conn, make_tree(tmp_path / "src2", files), bucket)
    for item in s3.list_objects_v2(Bucket=bucket, Prefix=".ass3/")["Contents"]:
        s3.delete_object(Bucket=bucket, Key=item["Key"])
    # Other bytes of the same size, the tool's md5 metadata copied: the ETag gives it away.
    head = s3.head_object(Bucket=bucket, Key="data/a.txt")
    s3.put_object(Bucket=bucket, Key="data/a.txt", Body=b"ALPHA", Metadata=head["Metadata"])
    report = check(conn, bucket)
    assert "without a run record only this can be checked" in report.summary.method
    assert report.exit_code == 1
    assert findings(report) == [
        f"corrupt: a.txt (md5 metadata {head['Metadata']['md5']}, but the MD5 of its bytes "
        f"(its ETag) is {s3.head_object(Bucket=bucket, Key='data/a.txt')['ETag'].strip(chr(34))})"
    ]
    assert (report.ok, report.unverified) == (3, 1)  # big.bin is multipart: only listed
    assert report.summary.requests == {"ListObjectsV2": 2, "HeadObject": 4}
    assert "1 only listed" in report.line()
    read = check(conn, bucket, read_data=True)
    assert [finding.rel for finding in read.findings] == ["a.txt"] and read.ok == 4


@pytest.mark.slow
def test_without_records_a_check_as_of_a_time_heads_the_versions_of_then(
    conn: Connection, s3: Any, bucket: str
) -> None:
    s3common.ensure_bucket(conn, bucket)
    s3.put_object(Bucket=bucket, Key="data/a", Body=b"one", Metadata={"md5": "0" * 32})
    between = a_moment_apart()
    s3.put_object(Bucket=bucket, Key="data/a", Body=b"two")
    versions: list[Any] = []
    conn.client.meta.events.register(
        "provide-client-params.s3.HeadObject",
        lambda params, **_: versions.append(params.get("VersionId")),
    )
    report = check(conn, bucket, as_of=between)
    assert report.summary.method.startswith("object versions as of")
    assert [finding.kind for finding in report.findings] == ["corrupt"]
    [old] = [v for v in s3.list_object_versions(Bucket=bucket)["Versions"] if not v["IsLatest"]]
    assert versions == [old["VersionId"]]
    assert check(conn, bucket).exit_code == 0  # now: a file without md5 metadata


@pytest.mark.slow
def test_a_check_of_one_path_lists_and_counts_only_it(
    conn: Connection, bucket: str, versioned: str
) -> None:
    sent: list[dict[str, Any]] = []
    conn.client.meta.events.register(
        "provide-client-params.s3.ListObjectVersions",
        lambda params, **_: sent.append({key: params.get(key) for key in ("Prefix", "Delimiter")}),
    )
    report = check(conn, bucket, "docs/report.odt")
    assert (report.files, report.ok) == (1, 1)
    assert sent == [{"Prefix": "data/docs/report.odt", "Delimiter": "/"}]
    sent.clear()
    report = check(conn, bucket, "docs", rules=[("exclude", "deep.txt")])
    assert (report.files, report.ok, report.summary.excluded) == (1, 1, 1)
    assert sent == [{"Prefix": "data/docs/", "Delimiter": None}]
    with pytest.raises(
        Ass3Error, match=f"no file or folder 'nope' in backup 'data' in run {versioned}"
    ):
        check(conn, bucket, "nope")


# --- --diff ----------------------------------------------------------------------------------


def diff(conn: Connection, bucket: str, folder: Path, *paths: str, **options: Any) -> Any:
    rules = options.pop("rules", [])
    return s3common.diff(
        conn,
        "data",
        bucket=bucket,
        folder=str(folder),
        selection=Selection.parse(list(paths), rules),
        **options,
    )


@pytest.mark.slow
def test_diff_of_an_unchanged_folder_is_identical_and_exits_0(
    conn: Connection, bucket: str, versioned: str, source: Path
) -> None:
    report = diff(conn, bucket, source)
    assert (report.exit_code, report.files, report.ok, report.findings) == (0, 4, 4, [])
    assert "GetObject" in report.summary.requests  # the run record, nothing else
    assert report.summary.requests["GetObject"] == 1


@pytest.mark.slow
def test_diff_names_each_difference_with_its_verb_reading_only_same_size_files(
    conn: Connection, bucket: str, versioned: str, source: Path
) -> None:
    (source / "a.txt").write_bytes(b"ALPHA")  # same size, other bytes
    (source / "notes.txt").write_bytes(b"longer notes")  # another size: never read
    (source / "docs" / "sub" / "deep.txt").unlink()
    (source / "new.txt").write_bytes(b"new")
    report = diff(conn, bucket, source)
    assert report.exit_code == 1
    assert findings(report) == [
        "differs: a.txt (same size, other content)",
        "missing: docs/sub/deep.txt (in the backup, not in the folder)",
        "extra: new.txt (not in the backup)",
        "differs: notes.txt (12 bytes, backup 5)",
    ]
    assert (report.files, report.ok) == (5, 1)
    assert report.summary.read_bytes == len(b"ALPHA") + len(b"the report")
    assert "HeadObject" not in report.summary.requests


@pytest.mark.slow
def test_diff_trusts_the_state_cache_and_honours_the_folders_ass3ignore(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    root = make_tree(tmp_path / "cached", {**FILES, ".ass3ignore": b"*.tmp\n"})
    past = time.time() - 60  # outside the racy window: the backup records every file
    for path in root.rglob("*"):
        os.utime(path, (past, past))
    back_up(conn, root, bucket)
    (root / "scratch.tmp").write_bytes(b"never backed up")
    report = diff(conn, bucket, root)
    assert (report.exit_code, report.ok, report.summary.read_bytes) == (0, 5, 0)


@pytest.mark.slow
def test_diff_of_part_of_the_backup_and_without_records(
    conn: Connection, s3: Any, bucket: str, versioned: str, source: Path
) -> None:
    (source / "a.txt").write_bytes(b"ALPHA")
    report = diff(conn, bucket, source, "docs")
    assert (report.exit_code, report.files) == (0, 2)
    for item in s3.list_objects_v2(Bucket=bucket, Prefix=".ass3/")["Contents"]:
        s3.delete_object(Bucket=bucket, Key=item["Key"])
    report = diff(conn, bucket, source)  # by the listed ETags
    assert findings(report) == ["differs: a.txt (same size, other content)"]
    assert report.summary.method == "the current objects (the backup has no run records)"


# --- the script ------------------------------------------------------------------------------


@pytest.fixture
def scripted(script_env: dict[str, str], tmp_path: Path) -> tuple[str, Path]:
    """A backup named data made by the script; its bucket and source folder."""
    bucket = f"ass3-check-{os.getpid()}-{time.monotonic_ns() % 10**8}"
    root = make_tree(tmp_path / "data", FILES)
    done = run_script("ass3Backup.py", str(root), "--bucket", bucket, env=script_env)
    assert done.returncode == 0, done.stderr
    return bucket, root


@pytest.mark.slow
def test_the_script_checks_and_diffs_with_documented_exit_codes(
    script_env: dict[str, str], scripted: tuple[str, Path], tmp_path: Path, moto_endpoint: str
) -> None:
    import boto3

    bucket, root = scripted
    cwd = make_tree(tmp_path / "cwd", {})
    cwd.mkdir(exist_ok=True)

    def restore(*args: str) -> Any:
        return run_script(
            "ass3Restore.py", "data", "--bucket", bucket, *args, env=script_env, cwd=cwd
        )

    good = restore("--check", "--read-data")
    assert (good.returncode, good.stderr) == (0, "")
    lines = good.stdout.splitlines()
    assert lines[0].startswith("checking run ") and len(lines) == 2
    assert lines[1].startswith(f"s3://{bucket}/data/: read 4 files (24 B): 4 intact, 0 missing")
    assert list(cwd.iterdir()) == []  # --read-data writes nothing

    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    [version] = client.list_object_versions(Bucket=bucket, Prefix="data/a.txt")["Versions"]
    client.delete_object(Bucket=bucket, Key="data/a.txt", VersionId=version["VersionId"])
    bad = restore("--check")
    assert bad.returncode == 1 and bad.stderr == ""
    assert bad.stdout.splitlines()[1:] == [
        f"missing: a.txt (version {version['VersionId']} is not in the bucket)",
        bad.stdout.splitlines()[-1],
    ]
    assert ": checked 4 files (24 B): 3 intact, 1 missing, 0 changed, 0 corrupt" in bad.stdout

    document = json.loads(restore("--check", "--json").stdout)
    assert (document["exit_code"], document["missing"], document["intact"]) == (1, 1, 3)
    assert document["findings"] == [
        {
            "path": "a.txt",
            "finding": "missing",
            "detail": f"version {version['VersionId']} is not in the bucket",
        }
    ]

    (root / "notes.txt").write_bytes(b"NOTES")
    differs = restore("--diff", str(root))
    assert differs.returncode == 1, differs.stderr
    assert "differs: notes.txt (same size, other content)" in differs.stdout.splitlines()
    same = restore("--diff", str(root), "docs", "--json")
    document = json.loads(same.stdout)
    assert (same.returncode, document["identical"], document["folder"]) == (0, 2, str(root))

    quiet = restore("--diff", str(root), "-q")
    assert (quiet.returncode, quiet.stdout) == (
        1,
        "differs: notes.txt (same size, other content)\n",
    )

    # --diff alone compares DEST/NAME, where a restore with that --dest writes. The
    # restore took the current objects, which lack a.txt; the run record has it.
    assert restore("--dest", str(tmp_path / "out")).returncode == 0
    restored = restore("--diff", "--dest", str(tmp_path / "out"))
    assert restored.returncode == 1
    assert restored.stdout.splitlines()[1:] == [
        "missing: a.txt (in the backup, not in the folder)",
        f"{tmp_path / 'out' / 'data'} with s3://{bucket}/data/: compared 4 files (24 B): "
        + restored.stdout.splitlines()[-1].split(": compared 4 files (24 B): ")[1],
    ]
    assert "3 identical, 0 differs, 1 missing, 0 extra" in restored.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--read-data"], "--read-data goes with --check"),
        (["--check", "--delete"], "--check changes nothing, so --delete does not go with it"),
        (["--diff", "x", "--dry-run"], "--diff changes nothing, so --dry-run does not go with it"),
        (["--diff", "x", "--dest", "y"], "--diff compares FOLDER: --dest does not go with it"),
        (["--check", "--dest", "y"], "--check compares nothing local: --dest does not go with it"),
        (["--check", "--diff"], "not allowed with argument"),
    ],
)
def test_options_that_do_not_go_together_are_a_usage_error(
    script_env: dict[str, str], options: list[str], message: str
) -> None:
    done = run_script("ass3Restore.py", "data", *options, env=script_env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert message in done.stderr.splitlines()[-1]


@pytest.mark.slow
def test_diff_of_a_folder_that_is_not_there_is_one_line_and_exit_2(
    script_env: dict[str, str], scripted: tuple[str, Path], tmp_path: Path
) -> None:
    bucket, _ = scripted
    done = run_script(
        "ass3Restore.py", "data", "--bucket", bucket, "--diff", str(tmp_path / "nope"),
        env=script_env,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == f"ass3Restore.py: error: {tmp_path / 'nope'}: no such directory\n"
    missing = run_script("ass3Restore.py", "nope", "--bucket", bucket, "--check", env=script_env)
    assert missing.returncode == 2
    assert missing.stderr.startswith("ass3Restore.py: error: no backup named 'nope'")
