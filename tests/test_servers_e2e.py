"""End to end on three S3 implementations: moto's server, s3rver and SeaweedFS.

Both scripts run as subprocesses, as a user runs them. Each assertion states what that
server really does: where one lacks a feature (versioning, lifecycle rules, public-access
block, default encryption), the exact warning or error the user gets.
docs/compatibility.md is the table of these results.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from helpers import PROJECT, make_tree, read_tree, run_script
from servers import Endpoint, require_s3rver, running_s3rver, script_env_for

from s3common import run_time

pytestmark = pytest.mark.slow

SERVERS = ["moto-server", "s3rver", "seaweedfs"]
# Which of them keep replaced versions, and take lifecycle rules (--keep-days).
VERSIONED = {"moto-server", "seaweedfs"}
LIFECYCLE = {"moto-server", "seaweedfs"}

MiB = 1024 * 1024
# Listed out of S3's key order by both other servers: s3rver walks its folders, so
# "a/..." comes before "a b.txt" (in S3, space < slash); SeaweedFS, in a versioned
# bucket, lists the non-ASCII names first. The tool sorts the listing, with a warning.
FILES = {
    "top.txt": b"top level\n",
    "empty.txt": b"",
    "\u00fc space.txt": "gr\u00fc\u00dfe\n".encode(),
    "\u65e5\u672c/\u30c7\u30fc\u30bf.bin": bytes(range(256)),
    "a/b/c/deep.txt": b"deep down\n",
    "a b.txt": b"beside the folder a\n",
    "odd %41 +plus #hash.txt": b"percent, plus, hash\n",
}
# Above the scripts' 8 MiB multipart threshold: two parts.
BIG = "big/nine.bin"
MODES = {"top.txt": 0o755, "a/b/c/deep.txt": 0o600}
NOT_IMPLEMENTED = "A parameter you provided implies functionality that is not implemented"


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def endpoint(server: str, request: pytest.FixtureRequest) -> Endpoint:
    if server == "moto-server":
        return Endpoint(request.getfixturevalue("moto_endpoint"), "testing", "testing")
    endpoint: Endpoint = request.getfixturevalue(f"{server}_endpoint")
    return endpoint


@pytest.fixture
def env(endpoint: Endpoint) -> dict[str, str]:
    return script_env_for(endpoint)


@pytest.fixture
def client(endpoint: Endpoint) -> Any:
    """A client of its own, to look at what the scripts left in the bucket."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint.url,
        aws_access_key_id=endpoint.access_key,
        aws_secret_access_key=endpoint.secret_key,
        region_name="us-east-1",
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = make_tree(tmp_path / "data", {**FILES, BIG: os.urandom(9 * MiB)})
    for rel, mode in MODES.items():
        (root / rel).chmod(mode)
    return root


def run(
    script: str, *args: str, env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """Run a script; whatever happens, never a traceback."""
    result = run_script(script, *args, env=env, cwd=cwd)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def summary(result: subprocess.CompletedProcess[str], exit_code: int = 0) -> dict[str, Any]:
    """The --json summary of a run that ended with `exit_code`."""
    assert result.returncode == exit_code, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    assert document["exit_code"] == exit_code
    return document


def keys(client: Any, bucket: str) -> set[str]:
    listed = client.list_objects_v2(Bucket=bucket, Prefix="data/").get("Contents", [])
    return {item["Key"] for item in listed}


def setup_warnings(server: str, bucket: str) -> list[str]:
    """What a server answers to the settings the tool gives a bucket it creates, and to
    the run record of the first run."""

    def refused(what: str, operation: str, code: str, message: str) -> str:
        return (
            f"warning: could not set {what} on s3://{bucket}: An error occurred ({code}) "
            f"when calling the {operation} operation: {message}"
        )

    if server == "seaweedfs":
        header_message = NOT_IMPLEMENTED.replace("parameter", "header")
        return [
            refused("block public access", "PutPublicAccessBlock", "NotImplemented", header_message)
        ]
    if server == "moto-server":
        return []
    return [
        refused("block public access", "PutPublicAccessBlock", "NotImplemented", NOT_IMPLEMENTED),
        # s3rver answers PutBucketVersioning as if it were CreateBucket.
        refused(
            "versioning",
            "PutBucketVersioning",
            "BucketAlreadyExists",
            "The requested bucket already exists",
        ),
        refused("default encryption", "PutBucketEncryption", "NotImplemented", NOT_IMPLEMENTED),
        refused(
            "abort incomplete multipart uploads after 7 days",
            "PutBucketLifecycleConfiguration",
            "NotImplemented",
            NOT_IMPLEMENTED,
        ),
        f"warning: versioning is off on s3://{bucket} after asking for it: an overwritten "
        "file is gone, so only the latest run can be restored",
        unversioned_run_warning(bucket),
    ]


def unversioned_run_warning(bucket: str) -> str:
    return (
        f"warning: versioning is off on s3://{bucket}: an overwritten file is gone, so only "
        "the latest run can be restored"
    )


def out_of_order_warnings(server: str, bucket: str) -> list[str]:
    """Moto lists in S3's key order; the others warn, then sort the listing themselves."""
    if server == "moto-server":
        return []
    return [
        f"warning: s3://{bucket}/data/ is listed out of UTF-8 byte order by this server; "
        "sorted it before planning"
    ]


def test_backup_no_change_edit_and_restore(
    tree: Path, tmp_path: Path, bucket: str, env: dict[str, str], server: str
) -> None:
    backup = ("ass3Backup.py", "data", "--bucket", bucket, "--json")
    count = len(FILES) + 1

    first = run(*backup, env=env, cwd=tmp_path)
    done = summary(first)
    assert (done["files"], done["failed"]) == (count, 0)
    assert (done["requests"]["CreateMultipartUpload"], done["requests"]["UploadPart"]) == (1, 2)
    assert first.stderr.splitlines() == setup_warnings(server, bucket)

    # Nothing changed: one ListBuckets and one listing page, nothing sent, on both servers.
    again = run(*backup, env=env, cwd=tmp_path)
    unchanged = summary(again)
    assert (unchanged["files"], unchanged["unchanged"], unchanged["run_id"]) == (0, count, None)
    assert unchanged["requests"] == {"ListBuckets": 1, "ListObjectsV2": 1}
    sorted_warning = out_of_order_warnings(server, bucket)
    assert again.stderr.splitlines() == sorted_warning

    edited = tree / "\u00fc space.txt"
    edited.write_bytes(edited.read_bytes().upper())
    changed = summary(run(*backup, env=env, cwd=tmp_path))
    assert (changed["files"], changed["unchanged"]) == (1, count - 1)

    restore = ("ass3Restore.py", "data", "--bucket", bucket, "--dest", "restored", "--json")
    restored = run(*restore, env=env, cwd=tmp_path)
    assert (summary(restored)["files"], restored.stderr.splitlines()) == (count, sorted_warning)
    copy = tmp_path / "restored" / "data"
    assert read_tree(copy) == read_tree(tree)
    for rel in read_tree(tree):
        original, restored_file = (root.joinpath(*rel.split("/")).stat() for root in (tree, copy))
        assert restored_file.st_mtime_ns == original.st_mtime_ns, rel
        assert stat.S_IMODE(restored_file.st_mode) == stat.S_IMODE(original.st_mode), rel
    assert summary(run(*restore, env=env, cwd=tmp_path))["unchanged"] == count


def test_history_of_an_overwritten_file(
    tmp_path: Path, bucket: str, env: dict[str, str], server: str
) -> None:
    """With versioning an older run restores exactly; without it (s3rver) asking for one
    is a one-line error, and the latest run still restores."""
    data = make_tree(tmp_path / "data", {"notes.txt": b"first draft\n", "keep.txt": b"keep\n"})
    first_tree = read_tree(data)
    backup = ("ass3Backup.py", "data", "--bucket", bucket, "--json")
    first = summary(run(*backup, env=env, cwd=tmp_path))["run_id"]
    (data / "notes.txt").write_bytes(b"second draft, longer\n")
    second = summary(run(*backup, env=env, cwd=tmp_path))["run_id"]

    runs = run("ass3Restore.py", "data", "--bucket", bucket, "--runs", env=env, cwd=tmp_path)
    assert runs.returncode == 0, runs.stderr
    lines = runs.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [first, second]
    unversioned = server not in VERSIONED
    assert all(line.endswith("(versioning off)") == unversioned for line in lines), lines

    restore = ("ass3Restore.py", "data", "--bucket", bucket, "--json")
    older = {"by-id": ("--run", first), "by-time": ("--as-of", run_time(first).isoformat())}
    for dest, choice in older.items():
        result = run(*restore, *choice, "--dest", dest, env=env, cwd=tmp_path)
        if unversioned:
            assert (result.returncode, result.stderr) == (
                2,
                f"ass3Restore.py: error: versioning is off on s3://{bucket}: files overwritten "
                f"since run {first} are gone, so only the latest run can be restored\n",
            )
            assert json.loads(result.stdout)["exit_code"] == 2
            assert not (tmp_path / dest).exists()
        else:
            assert summary(result)["method"].startswith(f"run {first} ")
            assert read_tree(tmp_path / dest / "data") == first_tree

    as_of_latest = ("--as-of", run_time(second).isoformat(), "--dest", "latest")
    latest = summary(run(*restore, *as_of_latest, env=env, cwd=tmp_path))
    assert latest["method"].startswith(f"run {second} ")
    assert read_tree(tmp_path / "latest" / "data") == read_tree(data)


def test_delete_keep_days_list_and_dry_runs(
    tmp_path: Path, bucket: str, env: dict[str, str], client: Any, server: str
) -> None:
    data = make_tree(tmp_path / "data", {"a.txt": b"a", "b.txt": b"b", "sub/c.txt": b"c"})
    backup = ("ass3Backup.py", "data", "--bucket", bucket, "--json")

    kept = summary(run(*backup, "--keep-days", "30", env=env, cwd=tmp_path))
    if server not in LIFECYCLE:  # a warning, and the run still succeeds
        assert kept["warnings"] == [
            {
                "path": "--keep-days",
                "reason": "versions are kept as the bucket keeps them: "
                f"GetBucketLifecycleConfiguration on s3://{bucket}/ failed: NotImplemented "
                f"{NOT_IMPLEMENTED}",
            }
        ]
    else:
        assert kept["warnings"] == []
    listing = run("ass3Backup.py", "--list", "--bucket", bucket, env=env, cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    [line] = [line for line in listing.stdout.splitlines() if line.split()[:1] == ["data"]]
    assert line.split()[1:3] == ["3", "objects"]
    assert line.endswith("old versions kept 30 days") == (server in LIFECYCLE), line

    (data / "b.txt").unlink()
    would = summary(run(*backup, "--delete", "--dry-run", env=env, cwd=tmp_path))
    assert (would["action"], would["deleted"]) == ("would upload", 1)
    assert would["requests"] == {"HeadBucket": 1, "ListObjectsV2": 1}  # reads only
    assert "data/b.txt" in keys(client, bucket)
    deleted = summary(run(*backup, "--delete", env=env, cwd=tmp_path))
    assert deleted["deleted"] == 1
    assert keys(client, bucket) == {"data/a.txt", "data/sub/c.txt"}

    restore = ("ass3Restore.py", "data", "--bucket", bucket, "--dest", "out", "--json")
    dry = summary(run(*restore, "--dry-run", env=env, cwd=tmp_path))
    assert (dry["action"], dry["files"]) == ("would download", 2)
    assert not (tmp_path / "out").exists()
    make_tree(tmp_path / "out" / "data", {"extra.txt": b"not in the backup"})
    restored = summary(run(*restore, "--delete", "--force", env=env, cwd=tmp_path))
    assert (restored["files"], restored["deleted"]) == (2, 1)
    assert read_tree(tmp_path / "out" / "data") == read_tree(data)

    unknown = run("ass3Restore.py", "nope", "--bucket", bucket, env=env, cwd=tmp_path)
    assert (unknown.returncode, unknown.stdout, unknown.stderr) == (
        2,
        "",
        f"ass3Restore.py: error: no backup named 'nope' in s3://{bucket}; backups there: data\n",
    )


@pytest.mark.parametrize("server", ["s3rver", "seaweedfs"], indirect=True)
def test_storage_class_glacier_ir(
    tmp_path: Path, bucket: str, env: dict[str, str], server: str
) -> None:
    """s3rver knows fewer storage classes than S3: each file fails with the server's
    reason, exit 1. SeaweedFS accepts it."""
    make_tree(tmp_path / "data", {"a.txt": b"a"})
    args = ("data", "--bucket", bucket, "--storage-class", "GLACIER_IR", "--json")
    result = run("ass3Backup.py", *args, env=env, cwd=tmp_path)
    if server == "s3rver":
        assert summary(result, exit_code=1)["failures"] == [
            {
                "path": "a.txt",
                "reason": "PutObject failed: InvalidStorageClass The storage class you "
                "specified is not valid",
            }
        ]
    else:
        assert summary(result)["files"] == 1


@pytest.mark.parametrize(
    "server",
    [
        "seaweedfs",
        pytest.param(
            "s3rver",
            marks=pytest.mark.xfail(
                strict=True,
                reason="s3rver 3.7.1 continues a listing after the last key it sent, in its "
                "own folder-walk order: a key that sorts before that one but is walked after "
                "it ('x/a b' after 'x/a/f999') is never listed. The tool lists each top "
                "folder on its own, which finds 'a b' beside a full 'a/' at the top, but "
                "not one level down, inside a folder listed page by page: such a file is "
                "uploaded again on every run and left out of restores.",
            ),
        ),
    ],
    indirect=True,
)
def test_more_than_one_listing_page(tmp_path: Path, bucket: str, env: dict[str, str]) -> None:
    """1000 keys under x/a/ fill the first page; 'x/a b' must still be seen after it.

    Both servers list 'x/a b' after 'x/a/...' (out of S3's order, which the tool puts
    right); SeaweedFS still sends every key once. Moto lists in S3's order: no case here.
    The folder y/ makes the top level a place to cut the listing (`keyspace`), so x/ is
    listed on its own, page by page.
    """
    files = {f"x/a/f{number:03}": b"" for number in range(1000)}
    make_tree(tmp_path / "data", {**files, "x/a b": b"beside the folder a\n", "y/z": b"z\n"})
    backup = ("ass3Backup.py", "data", "--bucket", bucket, "--json")
    assert summary(run(*backup, env=env, cwd=tmp_path))["files"] == 1002

    again = summary(run(*backup, env=env, cwd=tmp_path))
    assert (again["files"], again["unchanged"]) == (0, 1002)
    restore = ("ass3Restore.py", "data", "--bucket", bucket, "--dest", "out", "--dry-run", "--json")
    assert summary(run(*restore, env=env, cwd=tmp_path))["files"] == 1002


def test_a_server_that_dies_during_a_backup(tmp_path: Path, bucket: str) -> None:
    """s3rver exits (ENAMETOOLONG, unhandled) on a file name over 240 bytes, as it adds a
    suffix of its own to each name. The files that could not be sent are named, one line
    each, and the run ends non-zero on one more line naming the endpoint. Which request
    meets the dead server last depends on when it died: the bucket's versioning, asked
    for ahead as soon as a_first.txt went up, may have been answered already; then the
    run record fails (exit 1, a_first.txt is backed up), else the versioning request
    does (exit 2, one-line error)."""
    require_s3rver()
    long_name = "long_" + "n" * 245
    make_tree(tmp_path / "data", {"a_first.txt": b"a", long_name: b"l", "z_after.txt": b"z"})
    with running_s3rver(tmp_path / "s3rver") as endpoint:
        env = script_env_for(endpoint)
        args = ("data", "--bucket", bucket, "--workers", "1")
        result = run("ass3Backup.py", *args, env=env, cwd=tmp_path)
    unreachable = f"cannot reach the S3 endpoint {endpoint.url}"
    lines = result.stderr.splitlines()
    files_failed = [line for line in lines if line.startswith(("failed: long_", "failed: z_"))]
    assert files_failed == [
        f"failed: {long_name}: {unreachable}/{bucket}/data/{long_name}: is the URL right and "
        "the server up?",
        f"failed: z_after.txt: {unreachable}/{bucket}/data/z_after.txt: is the URL right and "
        "the server up?",
    ]
    last = {
        1: rf"failed: run record: {re.escape(unreachable)}/{bucket}/\.ass3/runs/data/"
        r"[0-9TZ.]+-[0-9a-f]+\.json\.gz: is the URL right and the server up\?",
        2: rf"ass3Backup\.py: error: {re.escape(unreachable)}/{bucket}\?versioning: is the URL "
        r"right and the server up\?",
    }
    summary = {  # the summary, when the run got as far as it
        1: rf"data -> s3://{bucket}/data/: uploaded 1 file \(1 B\), unchanged 0, skipped 0, "
        r"failed 3 in .*\n",
        2: "",
    }
    assert result.returncode in last, result.stderr
    assert re.fullmatch(last[result.returncode], lines[-1]), lines[-1]
    assert re.fullmatch(summary[result.returncode], result.stdout), result.stdout


def test_output_closed_by_its_reader_is_not_a_crash(
    tmp_path: Path, bucket: str, s3rver_endpoint: Endpoint
) -> None:
    """`ass3Restore.py NAME --runs | head -1`: the reader may be gone before the tool
    writes. That is exit 141 (128 + SIGPIPE) and nothing on stderr, never an
    'internal error' (70); a backup whose summary cannot be printed is still done."""
    env = script_env_for(s3rver_endpoint)
    make_tree(tmp_path / "data", {"a.txt": b"a", "sub/b.txt": b"b"})
    backup = ("ass3Backup.py", "data", "--bucket", bucket, "-q")
    assert run(*backup, env=env, cwd=tmp_path).returncode == 0

    def into_closed_pipe(script: str, *args: str) -> subprocess.CompletedProcess[str]:
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            return subprocess.run(
                [sys.executable, str(PROJECT / script), *args],
                stdout=write_end,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=tmp_path,
                timeout=120,
                check=False,
            )
        finally:
            os.close(write_end)

    (tmp_path / "data" / "a.txt").write_bytes(b"A")
    outcomes = [
        into_closed_pipe("ass3Restore.py", "data", "--bucket", bucket, "--runs"),
        into_closed_pipe("ass3Restore.py", "--list", "data", "--bucket", bucket),
        into_closed_pipe("ass3Backup.py", "--list", "--bucket", bucket, "--json"),
        into_closed_pipe("ass3Backup.py", "data", "--bucket", bucket, "--json"),
    ]
    assert [(result.returncode, result.stderr) for result in outcomes] == [
        (141, ""),
        (141, ""),
        (141, ""),
        (141, unversioned_run_warning(bucket) + "\n"),
    ]
    assert read_tree(tmp_path / "data") == {"a.txt": b"A", "sub/b.txt": b"b"}
    restore = ("ass3Restore.py", "data", "--bucket", bucket, "--dest", "out", "-q")
    assert run(*restore, env=env, cwd=tmp_path).returncode == 0
    assert read_tree(tmp_path / "out" / "data") == read_tree(tmp_path / "data")


def test_a_chmod_alone_is_a_server_side_copy_without_asking_sts(
    tmp_path: Path, bucket: str, s3rver_endpoint: Endpoint
) -> None:
    """A new mode with the same content rewrites the object's metadata by CopyObject.
    The copy names its source's owner only on AWS: another server is never sent an STS
    GetCallerIdentity to learn it."""
    env = script_env_for(s3rver_endpoint)
    data = make_tree(tmp_path / "data", {"script.sh": b"#!/bin/sh\n", "notes.txt": b"1234"})
    backup = ("ass3Backup.py", "data", "--bucket", bucket, "--json")
    summary(run(*backup, env=env, cwd=tmp_path))
    time.sleep(1.1)  # a change is looked at once its ctime is a second past LastModified
    (data / "script.sh").chmod(0o755)

    changed = summary(run(*backup, env=env, cwd=tmp_path))
    assert (changed["files"], changed["metadata_updated"]) == (0, 1)
    assert changed["requests"] == {
        "ListBuckets": 1,
        "ListObjectsV2": 1,
        "HeadObject": 1,  # the changed file's metadata, compared
        "CopyObject": 1,
        "GetBucketVersioning": 1,  # the run record
        "PutObject": 1,
    }
    restore = ("ass3Restore.py", "data", "--bucket", bucket, "--dest", "out", "-q")
    assert run(*restore, env=env, cwd=tmp_path).returncode == 0
    assert stat.S_IMODE((tmp_path / "out" / "data" / "script.sh").stat().st_mode) == 0o755
