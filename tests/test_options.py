"""The options that shape a run: filters, symlinks, storage, addressing, output, dry runs.

Each test drives the option the way a user would (a pattern list, a Connection built with
the option, the script's main() or the script itself) and checks what reached S3 or the
terminal, so a broken wire between an option and its effect fails here.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import struct
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import pytest
from conftest import TEST_PART_SIZE
from helpers import (
    PROJECT,
    Hook,
    back_up_a_broken_link,
    backup,
    count_calls,
    make_tree,
    read_tree,
    run_script,
)

import ass3Backup
import ass3Restore
import s3common
from s3common import Connection, StorageOptions

# Operations that change a bucket; a dry run must send none of them.
WRITE_PREFIXES = ("Put", "Create", "Delete", "Upload", "Complete", "Copy", "Abort", "Restore")


def keys_of(s3: Any, bucket: str, prefix: str = "data") -> dict[str, bytes]:
    """The current objects of a backup, by relative path, with their content."""
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", [])
    return {
        item["Key"][len(prefix) + 1 :]: s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        for item in listed
    }


def small_conn(**options: Any) -> Connection:
    """A Connection whose multipart threshold makes a 6 MiB file go up in parts."""
    return Connection(
        workers=2,
        multipart_threshold=TEST_PART_SIZE,
        multipart_chunksize=TEST_PART_SIZE,
        **options,
    )


# --- 1: filters, gitignore rules -------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "rel", "folder", "excluded"),
    [
        (["*.tmp"], "a.tmp", False, True),
        (["*.tmp"], "deep/er/b.tmp", False, True),
        (["*.tmp"], "a.tmp.txt", False, False),
        (["node_modules/"], "node_modules", True, True),
        (["node_modules/"], "web/node_modules", True, True),
        (["node_modules/"], "node_modules", False, False),
        (["node_modules/"], "web/node_modules", False, False),
        (["**/.cache/"], ".cache", True, True),
        (["**/.cache/"], "a/b/c/.cache", True, True),
        (["**/.cache/"], "a/.cache", False, False),
        (["/top.txt"], "top.txt", False, True),
        (["/top.txt"], "sub/top.txt", False, False),
        (["# top.txt", "", "   "], "# top.txt", False, False),
        (["# top.txt", "", "   "], "top.txt", False, False),
        (["", "   "], "anything", False, False),
        ([], "anything", True, False),
    ],
    ids=[
        "tmp-top",
        "tmp-deep",
        "tmp-not-suffix",
        "node_modules-folder",
        "node_modules-nested-folder",
        "node_modules-file-kept",
        "node_modules-nested-file-kept",
        "cache-top",
        "cache-deep",
        "cache-file-kept",
        "anchored-top",
        "anchored-not-below",
        "comment-is-no-pattern",
        "comment-excludes-nothing",
        "blank-lines",
        "no-rules",
    ],
)
def test_filter_judges_one_path(lines: list[str], rel: str, folder: bool, excluded: bool) -> None:
    assert s3common.Filters(lines).excludes(rel, folder=folder) is excluded


@pytest.mark.parametrize(
    ("lines", "rel", "excluded"),
    [
        (["node_modules/"], "web/node_modules/lib/x.js", True),
        (["node_modules/"], "web/node_modules", False),
        (["**/.cache/"], "a/b/.cache/blob", True),
        (["/build/"], "build/out.o", True),
        (["/build/"], "src/build/out.o", False),
        (["*.tmp"], "dir.tmp/inner.txt", True),
        (["*.tmp"], "dir/inner.txt", False),
    ],
)
def test_filter_excludes_a_path_below_an_excluded_folder(
    lines: list[str], rel: str, excluded: bool
) -> None:
    """excludes_path is what keeps S3 objects below an excluded folder out of --delete."""
    assert s3common.Filters(lines).excludes_path(rel) is excluded


@pytest.mark.parametrize(
    ("ignore_file", "rules", "rel", "excluded"),
    [
        (None, [("exclude", "*.log"), ("include", "keep.log")], "a.log", True),
        (None, [("exclude", "*.log"), ("include", "keep.log")], "keep.log", False),
        (None, [("exclude", "*.log"), ("include", "keep.log")], "sub/keep.log", False),
        (None, [("include", "keep.log"), ("exclude", "*.log")], "keep.log", True),
        ("*.log\n", [("include", "keep.log")], "keep.log", False),
        ("*.log\n", [("include", "keep.log")], "other.log", True),
        ("!keep.log\n", [("exclude", "*.log")], "keep.log", True),
        ("*.bak\n!important.bak\n", [], "important.bak", False),
        ("*.bak\n!important.bak\n", [], "x.bak", True),
        ("# comment\n\n   \n*.swp\n", [], "# comment", False),
        ("# comment\n\n   \n*.swp\n", [], "a.swp", True),
        ("secret/\n", [], "secret/key", True),
        ("secret/\n", [], "secret", False),
        (None, [], "anything", False),
    ],
    ids=[
        "exclude-then-include:other",
        "exclude-then-include:kept",
        "exclude-then-include:kept-below",
        "include-then-exclude:later-wins",
        "cli-include-beats-ignore-file",
        "ignore-file-still-applies",
        "cli-exclude-beats-ignore-negation",
        "ignore-negation",
        "ignore-pattern",
        "ignore-comment",
        "ignore-after-blank-lines",
        "ignore-folder",
        "ignore-folder-not-file",
        "nothing",
    ],
)
def test_ignore_file_is_read_first_and_options_override_it(
    tmp_path: Path,
    ignore_file: str | None,
    rules: list[tuple[str, str]],
    rel: str,
    excluded: bool,
) -> None:
    if ignore_file is not None:
        (tmp_path / s3common.IGNORE_FILE).write_text(ignore_file, encoding="utf-8")
    assert s3common.Filters.for_backup(str(tmp_path), rules).excludes_path(rel) is excluded


# --- 2: a backup with filters ----------------------------------------------------------------

FILTERED_TREE = {
    "keep.txt": b"keep",
    "gone.txt": b"gone soon",
    "a.tmp": b"scratch",
    "node_modules/pkg/index.js": b"js",
    "src/main.py": b"print()",
    "src/.cache/blob": b"cached",
    "sub/node_modules": b"a file of that name",
}
FILTER_RULES = [("exclude", "*.tmp"), ("exclude", "node_modules/"), ("exclude", "**/.cache/")]


def test_backup_leaves_out_excluded_files_without_walking_excluded_folders(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree(tmp_path / "src", FILTERED_TREE)
    listed: list[str] = []
    scandir = os.scandir

    def recording_scandir(path: Any = ".") -> Any:
        listed.append(os.path.relpath(path, root))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", recording_scandir)
    summary = backup(conn, root, bucket, rules=FILTER_RULES)
    monkeypatch.undo()
    assert summary.failures == []
    assert set(keys_of(s3, bucket)) == {"keep.txt", "gone.txt", "src/main.py", "sub/node_modules"}
    assert summary.excluded == 3  # a.tmp, node_modules/, src/.cache/
    assert summary.transferred == 4
    assert sorted(listed) == [".", "src", "sub"]


def test_delete_keeps_objects_that_are_now_excluded(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    """Filters apply to both sides: an excluded file is not 'gone', so its object stays."""
    root = make_tree(tmp_path / "src", FILTERED_TREE)
    assert backup(conn, root, bucket).failures == []
    before = keys_of(s3, bucket)
    assert set(before) == set(FILTERED_TREE)
    (root / "gone.txt").unlink()
    summary = backup(conn, root, bucket, rules=FILTER_RULES, delete=True)
    assert summary.failures == []
    assert summary.deleted == 1
    assert keys_of(s3, bucket) == {rel: data for rel, data in before.items() if rel != "gone.txt"}


@pytest.mark.slow
def test_cli_filters_read_ass3ignore_then_the_options(
    s3: Any, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(
        tmp_path / "data",
        {
            s3common.IGNORE_FILE: b"# build output\nbuild/\n\n*.log\n!notes.swp\n*.swp\n",
            "build/out.o": b"o",
            "a.log": b"log",
            "keep.log": b"keep me",
            "notes.swp": b"swap",
            "doc.txt": b"doc",
            "private.txt": b"secret",
        },
    )
    options = ["--include", "keep.log", "--exclude", "private.txt", "--json"]
    code = ass3Backup.main([str(root), "--bucket", bucket, *options])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    uploaded = set(keys_of(s3, bucket)) - {s3common.IGNORE_FILE}
    # keep.log: the option beats .ass3ignore's *.log; notes.swp: its later *.swp wins.
    assert uploaded == {"keep.log", "doc.txt"}
    assert report["excluded"] == 4  # build/, a.log, notes.swp, private.txt


# --- 3: --follow-symlinks --------------------------------------------------------------------


@pytest.fixture
def linked(tmp_path: Path) -> Path:
    """DIR with a link to a file outside, a link to a folder outside, and a loop."""
    outside = make_tree(tmp_path / "outside", {"target.txt": b"outside file", "dir/f": b"in dir"})
    root = make_tree(tmp_path / "data", {"own.txt": b"own", "sub/x": b"x"})
    (root / "file-link").symlink_to(outside / "target.txt")
    (root / "dir-link").symlink_to(outside / "dir")
    (root / "sub" / "loop").symlink_to(root)
    return root


@pytest.mark.slow
def test_follow_symlinks_backs_up_targets_and_skips_loops(
    conn: Connection, s3: Any, bucket: str, linked: Path
) -> None:
    summary = backup(conn, linked, bucket, follow_symlinks=True)
    assert summary.failures == []
    assert keys_of(s3, bucket) == {
        "dir-link/f": b"in dir",
        "file-link": b"outside file",
        "own.txt": b"own",
        "sub/x": b"x",
    }
    assert summary.skipped == 1
    report = s3common.ScanReport()
    list(s3common.scan_tree(str(linked), report, follow_symlinks=True))
    assert report.skipped == [("sub/loop", "symlink loop")]


@pytest.mark.slow
def test_without_follow_symlinks_links_are_recorded_not_followed(
    conn: Connection, s3: Any, bucket: str, linked: Path
) -> None:
    summary = backup(conn, linked, bucket)
    assert summary.failures == []
    assert set(keys_of(s3, bucket)) == {"own.txt", "sub/x"}
    assert summary.skipped == 0  # the three links are in the run record, as links


@pytest.mark.slow
@pytest.mark.usefixtures("s3")
@pytest.mark.parametrize(("follow", "code"), [(True, 1), (False, 0)])
def test_broken_link_is_a_problem_only_when_following(
    bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], follow: bool, code: int
) -> None:
    root = make_tree(tmp_path / "data", {"own.txt": b"own"})
    (root / "broken").symlink_to(tmp_path / "nowhere")
    options = ["--follow-symlinks"] if follow else []
    assert ass3Backup.main([str(root), "--bucket", bucket, *options]) == code
    err = capsys.readouterr().err
    assert ("failed: broken: " in err) is follow


# --- 4: storage class and encryption ---------------------------------------------------------


@pytest.mark.slow
def test_storage_class_and_sse_reach_s3_for_small_and_multipart_files(
    s3: Any, bucket: str, tmp_path: Path
) -> None:
    conn = small_conn(storage=StorageOptions(storage_class="STANDARD_IA", sse="AES256"))
    root = make_tree(tmp_path / "data", {"small": b"tiny", "big": os.urandom(6 * 1024 * 1024)})
    calls = count_calls(conn.client)
    assert backup(conn, root, bucket).failures == []
    assert calls["CreateMultipartUpload"] == 1  # the big one really went in parts
    for rel in ("small", "big"):
        head = s3.head_object(Bucket=bucket, Key=f"data/{rel}")
        assert (head.get("StorageClass"), head.get("ServerSideEncryption")) == (
            "STANDARD_IA",
            "AES256",
        ), rel


def test_cli_storage_options_reach_s3(
    s3: Any, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(tmp_path / "data", {"f": b"f"})
    options = ["--storage-class", "standard_ia", "--sse", "AES256"]
    assert ass3Backup.main([str(root), "--bucket", bucket, *options]) == 0
    head = s3.head_object(Bucket=bucket, Key="data/f")
    assert (head["StorageClass"], head["ServerSideEncryption"]) == ("STANDARD_IA", "AES256")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--storage-class", "GLACIER"], "thawed"),
        (["--storage-class", "deep_archive"], "thawed"),
        (["--storage-class", "COLD"], "one of STANDARD"),
        (["--sse-kms-key-id", "k"], "--sse-kms-key-id goes with --sse aws:kms"),
        (["--sse", "AES256", "--sse-kms-key-id", "k"], "--sse-kms-key-id goes with --sse aws:kms"),
    ],
    ids=["glacier", "deep-archive", "unknown", "kms-key-alone", "kms-key-with-aes"],
)
def test_unusable_storage_options_exit_2_saying_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as stopped:
        ass3Backup.main([str(tmp_path), "--bucket", "some-bucket", *options])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert message in err.splitlines()[-1]


def _kms_like_etags(parsed: dict[str, Any], **_: Any) -> None:
    """Make listed ETags opaque, as SSE-KMS ETags are (moto keeps plain MD5s)."""
    for item in parsed.get("Contents", []):
        etag = item["ETag"].strip('"')
        parts = "-" + etag.split("-")[1] if "-" in etag else ""
        item["ETag"] = '"' + hashlib.md5(b"kms" + etag.encode()).hexdigest() + parts + '"'


@pytest.mark.slow
@pytest.mark.parametrize("cold", ["no-cache", "checksum"])
def test_sse_kms_rerun_compares_md5_metadata_and_uploads_nothing(
    s3: Any, bucket: str, tmp_path: Path, cold: str
) -> None:
    conn = small_conn(storage=StorageOptions(sse="aws:kms"))
    root = make_tree(tmp_path / "data", {"small": b"tiny", "big": os.urandom(6 * 1024 * 1024)})
    assert backup(conn, root, bucket, cache_path=str(tmp_path / "warm.sqlite3")).failures == []
    assert s3.head_object(Bucket=bucket, Key="data/small")["ServerSideEncryption"] == "aws:kms"
    conn.client.meta.events.register("after-call.s3.ListObjectsV2", _kms_like_etags)
    calls = count_calls(conn.client)
    if cold == "checksum":
        summary = backup(
            conn, root, bucket, cache_path=str(tmp_path / "warm.sqlite3"), checksum=True
        )
    else:
        summary = backup(conn, root, bucket, cache_path=str(tmp_path / "cold.sqlite3"))
    assert summary.failures == []
    assert (summary.transferred, summary.unchanged) == (0, 2)
    assert calls["PutObject"] == 0 and calls["CreateMultipartUpload"] == 0
    # The md5 metadata, one per file; a cold cache also reads the tree digest of the
    # latest run record once (tree-metadata.md), a warm one knows it.
    assert calls["HeadObject"] == (3 if cold == "no-cache" else 2)


# --- 5: addressing style and CRC32 checksums -------------------------------------------------


def _sent(conn: Connection) -> list[tuple[str, str, dict[str, str]]]:
    """Record every request the connection sends: operation, URL, headers (lowercased)."""
    sent: list[tuple[str, str, dict[str, str]]] = []

    def record(request: Any, event_name: str, **_: Any) -> None:
        headers = {name.lower(): value for name, value in request.headers.items()}
        sent.append((event_name.rsplit(".", 1)[-1], request.url, headers))

    conn.client.meta.events.register("before-send.s3", record)
    return sent


def _put_urls(sent: list[tuple[str, str, dict[str, str]]]) -> list[urllib.parse.SplitResult]:
    return [urllib.parse.urlsplit(url) for op, url, _ in sent if op == "PutObject"]


@pytest.mark.slow
@pytest.mark.parametrize("path_style", [True, False], ids=["path-style", "virtual-hosted"])
def test_path_style_puts_the_bucket_in_the_path(
    s3: Any, bucket: str, tmp_path: Path, path_style: bool
) -> None:
    conn = small_conn(path_style=path_style)
    root = make_tree(tmp_path / "data", {"sub/f.txt": b"f"})
    sent = _sent(conn)
    assert backup(conn, root, bucket).failures == []
    # ListBuckets names no bucket: its host is the endpoint itself.
    (endpoint,) = {urllib.parse.urlsplit(url).netloc for op, url, _ in sent if op == "ListBuckets"}
    data_put = [url for url in _put_urls(sent) if url.path.endswith("/data/sub/f.txt")]
    assert len(data_put) == 1
    if path_style:
        assert (data_put[0].netloc, data_put[0].path) == (endpoint, f"/{bucket}/data/sub/f.txt")
        assert all(urllib.parse.urlsplit(url).netloc == endpoint for _, url, _ in sent)
    else:
        assert (data_put[0].netloc, data_put[0].path) == (f"{bucket}.{endpoint}", "/data/sub/f.txt")


CRC_HEADERS = ("x-amz-checksum-crc32", "x-amz-sdk-checksum-algorithm", "x-amz-checksum-algorithm")


@pytest.mark.slow
@pytest.mark.parametrize("crc32", [True, False], ids=["default", "no-crc32"])
def test_no_crc32_sends_no_checksum_headers(
    s3: Any, bucket: str, tmp_path: Path, crc32: bool
) -> None:
    conn = small_conn(crc32=crc32)
    root = make_tree(tmp_path / "data", {"small": b"tiny", "big": os.urandom(6 * 1024 * 1024)})
    sent = _sent(conn)
    assert backup(conn, root, bucket).failures == []
    uploads = [(op, headers) for op, _, headers in sent if op in ("PutObject", "UploadPart")]
    assert {op for op, _ in uploads} == {"PutObject", "UploadPart"}
    with_crc = [op for op, headers in uploads if any(name in headers for name in CRC_HEADERS)]
    if crc32:
        assert "PutObject" in with_crc and "UploadPart" in with_crc
    else:
        assert with_crc == []
        # The tool's own check is still there.
        assert all("content-md5" in h for op, h in uploads if op == "PutObject")
    assert keys_of(s3, bucket)["small"] == b"tiny"


@pytest.mark.slow
def test_cli_path_style_and_no_crc32_reach_the_client(
    s3: Any, bucket: str, tmp_path: Path, hook: Hook, capsys: pytest.CaptureFixture[str]
) -> None:
    sent: list[tuple[str, dict[str, str]]] = []

    def record(request: Any, event_name: str, **_: Any) -> None:
        if event_name.endswith(".PutObject"):
            sent.append((request.url, {k.lower(): v for k, v in request.headers.items()}))

    hook("before-send.s3", record)
    root = make_tree(tmp_path / "data", {"f": b"f"})
    assert ass3Backup.main([str(root), "--bucket", bucket, "--path-style", "--no-crc32"]) == 0
    data_put = [(url, h) for url, h in sent if url.endswith("/data/f")]
    assert len(data_put) == 1
    url, headers = data_put[0]
    assert urllib.parse.urlsplit(url).path == f"/{bucket}/data/f"
    assert not any(name in headers for name in CRC_HEADERS)


# --- 6: output modes, as a user's shell sees them --------------------------------------------

JSON_KEYS = {
    "action",
    "files",
    "bytes",
    "unchanged",
    "failed",
    "failures",
    "requests",
    "seconds",
    "exit_code",
    "bucket",
    "prefix",
    "run_id",
    "version",
}


@pytest.mark.slow
def test_json_output_is_one_document_and_nothing_else(
    script_env: dict[str, str], bucket: str, tmp_path: Path
) -> None:
    done = back_up_a_broken_link(tmp_path, bucket, "--json", env=script_env)
    assert done.returncode == 1, done.stderr
    assert done.stdout.count("\n") == 1
    report = json.loads(done.stdout)
    assert set(report) >= JSON_KEYS
    assert report["action"] == "uploaded"
    assert (report["files"], report["bytes"], report["unchanged"]) == (2, 5, 0)
    assert (report["failed"], report["exit_code"]) == (1, 1)
    (failure,) = report["failures"]
    assert set(failure) == {"path", "reason"}
    assert failure["path"] == "broken" and failure["reason"]  # relative to DIR, like uploads
    assert (report["bucket"], report["prefix"]) == (bucket, "data")
    assert isinstance(report["run_id"], str) and report["run_id"]
    assert report["requests"]["PutObject"] >= 2
    assert isinstance(report["seconds"], float | int)
    assert "broken" in done.stderr  # the failure is still reported for a person

    missing = run_script("ass3Restore.py", "nope", "--bucket", bucket, "--json", env=script_env)
    assert missing.returncode == 2
    assert missing.stdout.count("\n") == 1
    error = json.loads(missing.stdout)
    assert error["exit_code"] == 2 and "no backup named 'nope'" in error["error"]
    assert error["version"] == report["version"] == s3common.__version__


@pytest.mark.slow
def test_quiet_prints_nothing_on_success_and_still_reports_errors(
    script_env: dict[str, str], moto_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    # A bucket made without versioning: a run into it warns, and -q must hush the warning.
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=bucket)
    root = make_tree(tmp_path / "data", {"a.txt": b"aa"})
    loud = run_script("ass3Backup.py", str(root), "--bucket", bucket, env=script_env)
    assert loud.returncode == 0 and "warning: versioning is off" in loud.stderr
    (root / "b.txt").write_bytes(b"b")
    done = run_script("ass3Backup.py", str(root), "--bucket", bucket, "-q", env=script_env)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")

    (root / "broken").symlink_to(tmp_path / "nowhere")
    failed = run_script(
        "ass3Backup.py", str(root), "--bucket", bucket, "-q", "--follow-symlinks", env=script_env
    )
    assert (failed.returncode, failed.stdout) == (1, "")
    assert "failed: " in failed.stderr and "broken" in failed.stderr

    missing = run_script("ass3Restore.py", "nope", "--bucket", bucket, "-q", env=script_env)
    assert (missing.returncode, missing.stdout) == (2, "")
    assert "ass3Restore.py: error: no backup named 'nope'" in missing.stderr


@pytest.mark.slow
def test_no_progress_bar_when_stderr_is_not_a_terminal(
    script_env: dict[str, str], bucket: str, tmp_path: Path
) -> None:
    root = make_tree(tmp_path / "data", {f"f{index:03d}": b"x" for index in range(40)})
    done = run_script("ass3Backup.py", str(root), "--bucket", bucket, env=script_env)
    assert done.returncode == 0, done.stderr
    assert "files:" not in done.stderr and "\r" not in done.stderr
    assert "uploaded 40 files" in done.stdout


def _read_until_eof(fd: int, timeout: float) -> bytes:
    """All a pseudo-terminal's master side gets until every slave end is closed."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_progress_bar_on_a_terminal(
    script_env: dict[str, str], bucket: str, tmp_path: Path
) -> None:
    import fcntl
    import termios

    root = make_tree(tmp_path / "data", {f"d{i % 5}/f{i:03d}": b"x" * 10 for i in range(300)})
    options = ["--bucket", bucket, "--workers", "1"]
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    try:
        process = subprocess.Popen(
            [sys.executable, str(PROJECT / "ass3Backup.py"), str(root), *options],
            env=script_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=slave,
        )
        os.close(slave)
        slave = -1
        terminal = _read_until_eof(master, timeout=60)
        stdout, _ = process.communicate(timeout=60)
    finally:
        if slave != -1:
            os.close(slave)
        os.close(master)
    assert process.returncode == 0, terminal
    assert b"backup files:" in terminal and b"backup bytes:" in terminal and b"%|" in terminal
    assert b"/300 " in terminal  # the files' total, counted ahead
    assert b"uploaded 300 files" in stdout


# --- 7: --dry-run through the scripts --------------------------------------------------------


def versions(s3: Any, bucket: str) -> list[tuple[str, str, bool]]:
    """Every object version and delete marker in the bucket: any write changes this."""
    listed = s3.list_object_versions(Bucket=bucket)
    return sorted(
        [(item["Key"], item["VersionId"], False) for item in listed.get("Versions", [])]
        + [(item["Key"], item["VersionId"], True) for item in listed.get("DeleteMarkers", [])]
    )


@pytest.mark.slow
def test_dry_run_from_the_command_line_writes_nothing_and_says_what_it_would_do(
    s3: Any, bucket: str, tmp_path: Path, hook: Hook, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(
        tmp_path / "data", {"same.txt": b"same", "edit.txt": b"1111", "gone.txt": b"gone"}
    )
    assert ass3Backup.main([str(root), "--bucket", bucket]) == 0
    (root / "gone.txt").unlink()
    (root / "edit.txt").write_bytes(b"2222")  # same size, new content
    (root / "new.txt").write_bytes(b"new")
    versions_before = versions(s3, bucket)
    capsys.readouterr()

    operations: Counter[str] = Counter()
    hook("before-send", lambda event_name, **_: operations.update([event_name.split(".")[-1]]))
    code = ass3Backup.main([str(root), "--bucket", bucket, "--delete", "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert operations and not [op for op in operations if op.startswith(WRITE_PREFIXES)]
    assert versions(s3, bucket) == versions_before
    assert "would upload new.txt (new)" in err
    assert "would upload edit.txt (content changed)" in err
    assert "would delete gone.txt (gone from the source)" in err
    assert "would upload 2 files" in out and "would delete 1," in out

    dest = tmp_path / "restored"
    make_tree(dest / "data", {"edit.txt": b"9999", "stray": b"s"})
    before = read_tree(dest)
    operations.clear()
    code = ass3Restore.main(
        ["data", "--bucket", bucket, "--dest", str(dest), "--delete", "--dry-run"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert operations and not [op for op in operations if op.startswith(WRITE_PREFIXES)]
    assert read_tree(dest) == before
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == [
        "data",
        "data/edit.txt",
        "data/stray",
    ]
    assert "would download same.txt (new)" in err and "would download gone.txt (new)" in err
    assert "would download edit.txt (content changed)" in err
    assert "would delete stray (not in the backup)" in err
    assert "would download 3 files" in out and "would delete 1," in out
