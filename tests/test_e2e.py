"""End to end: both scripts run as a user runs them, against a moto server over HTTP."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import make_tree, read_tree, run_script

# Every test here runs the scripts as subprocesses: deselect with -m 'not slow'.
pytestmark = pytest.mark.slow

MiB = 1024 * 1024
# Changes keep each file's size, so only the content comparison can notice them.
SMALL_FILES = {
    "top.txt": b"top level\n",
    "empty.txt": b"",
    "\u00fc space.txt": "gr\u00fc\u00dfe aus M\u00fcnchen\n".encode(),
    "\u65e5\u672c/\u30c7\u30fc\u30bf.bin": bytes(range(256)),
    "a/b/c/deep.txt": b"deep down\n",
    "a/b/sibling with spaces.md": b"# notes\n",
}
# The scripts' multipart threshold is 8 MiB: the 6 MiB file goes in one PUT, the 9 MiB in parts.
BIG_FILES = {"big/six.bin": 6 * MiB, "big/nine.bin": 9 * MiB}
MODES = {"top.txt": 0o755, "a/b/c/deep.txt": 0o600}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """tmp_path/data: nested folders, an empty file, non-ASCII names, odd modes, big files."""
    files = dict(SMALL_FILES)
    files.update({rel: os.urandom(size) for rel, size in BIG_FILES.items()})
    root = make_tree(tmp_path / "data", files)
    for rel, mode in MODES.items():
        (root / rel).chmod(mode)
    return root


def keys(client: Any, bucket: str) -> set[str]:
    """The bucket's data keys (not the run records), read directly, not through the tool."""
    listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {item["Key"] for item in listed if not item["Key"].startswith(".ass3/")}


def succeeded(result: subprocess.CompletedProcess[str]) -> str:
    """The summary on stdout of a run that must exit 0 with nothing on stderr."""
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    return result.stdout


def request_count(summary: str) -> int:
    """The '(N requests)' figure of a summary line: the cost of a run, as the user sees it."""
    match = re.search(r"\((\d+) requests", summary)
    assert match, summary
    return int(match.group(1))


def backup(tmp_path: Path, bucket: str, env: dict[str, str]) -> str:
    """Back up tmp_path/data as `cd tmp_path; ass3Backup.py data --bucket BUCKET`."""
    return succeeded(run_script("ass3Backup.py", "data", "--bucket", bucket, env=env, cwd=tmp_path))


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["new-mtime", "old-mtime"])
def test_backup_uploads_only_what_changed(
    tree: Path,
    tmp_path: Path,
    bucket: str,
    script_env: dict[str, str],
    server: Any,
    keep_mtime: bool,
) -> None:
    count = len(SMALL_FILES) + len(BIG_FILES)
    assert f"uploaded {count} files" in backup(tmp_path, bucket, script_env)
    assert keys(server, bucket) == {f"data/{rel}" for rel in read_tree(tree)}

    again = backup(tmp_path, bucket, script_env)
    assert "uploaded 0 files" in again
    assert f"unchanged {count}," in again
    # ListBuckets, GetCallerIdentity and one ListObjectsV2 page: no request per file.
    assert request_count(again) <= 3

    edited = tree / "\u00fc space.txt"
    before = edited.stat()
    new_content = edited.read_bytes().upper()
    assert len(new_content) == before.st_size
    edited.write_bytes(new_content)
    if keep_mtime:
        os.utime(edited, ns=(before.st_atime_ns, before.st_mtime_ns))
    changed = backup(tmp_path, bucket, script_env)
    assert "uploaded 1 file " in changed
    assert f"unchanged {count - 1}," in changed
    stored = server.get_object(Bucket=bucket, Key="data/\u00fc space.txt")
    assert stored["Body"].read() == new_content


def test_restore_round_trip(
    tree: Path, tmp_path: Path, bucket: str, script_env: dict[str, str]
) -> None:
    backup(tmp_path, bucket, script_env)
    restore = ("ass3Restore.py", "data", "--bucket", bucket, "--dest", "restored")

    count = len(SMALL_FILES) + len(BIG_FILES)
    assert f"downloaded {count} files" in succeeded(
        run_script(*restore, env=script_env, cwd=tmp_path)
    )
    restored = tmp_path / "restored" / "data"
    assert read_tree(restored) == read_tree(tree)
    for rel in read_tree(tree):
        original, copy = (root.joinpath(*rel.split("/")).stat() for root in (tree, restored))
        assert copy.st_mtime_ns == original.st_mtime_ns, rel
        assert stat.S_IMODE(copy.st_mode) == stat.S_IMODE(original.st_mode), rel

    again = succeeded(run_script(*restore, env=script_env, cwd=tmp_path))
    assert "downloaded 0 files" in again
    assert f"unchanged {count}," in again


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_symlink_is_recorded_not_followed(
    tmp_path: Path, bucket: str, script_env: dict[str, str], server: Any, kind: str
) -> None:
    outside = make_tree(tmp_path / "outside", {"secret.txt": b"not part of the backup"})
    data = make_tree(tmp_path / "data", {"real.txt": b"real"})
    target = outside / "secret.txt" if kind == "file" else outside
    (data / "link").symlink_to(target, target_is_directory=kind == "folder")

    summary = backup(tmp_path, bucket, script_env)
    assert "uploaded 1 file " in summary
    assert "skipped 0," in summary
    assert keys(server, bucket) == {"data/real.txt"}


def test_list_shows_backups_and_their_objects(
    tmp_path: Path, bucket: str, script_env: dict[str, str]
) -> None:
    make_tree(tmp_path / "data", SMALL_FILES)
    make_tree(tmp_path / "other", {"one.txt": b"1", "two.txt": b"22"})
    backup(tmp_path, bucket, script_env)
    succeeded(
        run_script("ass3Backup.py", "other", "--bucket", bucket, env=script_env, cwd=tmp_path)
    )

    for script in ("ass3Backup.py", "ass3Restore.py"):
        listing = succeeded(run_script(script, "--list", "--bucket", bucket, env=script_env))
        assert re.search(rf"^\s+{bucket}$", listing, re.MULTILINE), listing
        assert re.search(rf"^\s+data\s+{len(SMALL_FILES)} objects\b", listing, re.MULTILINE)
        assert re.search(r"^\s+other\s+2 objects\b", listing, re.MULTILINE), listing

        objects = succeeded(
            run_script(script, "--list", "data", "--bucket", bucket, env=script_env)
        )
        assert sorted(line.split("  ")[-1] for line in objects.splitlines()) == sorted(SMALL_FILES)


@pytest.fixture(scope="module")
def unprivileged(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A command prefix under which mode 000 really stops reading, or skip.

    Root reads anything through CAP_DAC_OVERRIDE; setpriv drops it (and
    CAP_DAC_READ_SEARCH) for the script alone, so the test also runs as root.
    """
    prefix = []
    if os.geteuid() == 0:
        drop = "-dac_override,-dac_read_search"
        prefix = [str(shutil.which("setpriv")), f"--bounding-set={drop}", f"--inh-caps={drop}"]
    probe = tmp_path_factory.mktemp("probe") / "locked"
    probe.write_bytes(b"x")
    probe.chmod(0)
    probed = subprocess.run([*prefix, "cat", str(probe)], capture_output=True, check=False)
    if probed.returncode == 0:
        pytest.skip("mode 000 does not stop reading here")
    return prefix


@pytest.mark.skipif(
    os.geteuid() == 0 and shutil.which("setpriv") is None,
    reason="as root, mode 000 is ignored unless setpriv can drop CAP_DAC_OVERRIDE",
)
@pytest.mark.parametrize("locked", ["locked.txt", "locked"], ids=["file", "folder"])
def test_unreadable_entry_is_reported_and_the_rest_uploaded(
    tmp_path: Path,
    bucket: str,
    script_env: dict[str, str],
    server: Any,
    unprivileged: list[str],
    locked: str,
) -> None:
    data = make_tree(tmp_path / "data", {"a.txt": b"a", "sub/b.txt": b"b", "locked/in.txt": b"c"})
    if locked == "locked.txt":
        (data / "locked.txt").write_bytes(b"secret")
    (data / locked).chmod(0)
    try:
        result = run_script(
            "ass3Backup.py",
            "data",
            "--bucket",
            bucket,
            env=script_env,
            cwd=tmp_path,
            prefix=unprivileged,
        )
    finally:
        (data / locked).chmod(0o755)

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    # A file is named by its path in the backup, an unreadable folder by its full path.
    assert re.search(rf"\b{re.escape(locked)}: Permission denied$", line), line
    assert "failed 1 " in result.stdout
    expected = {"data/a.txt", "data/sub/b.txt"}
    if locked == "locked.txt":
        expected.add("data/locked/in.txt")
    assert keys(server, bucket) == expected


def test_credentials_never_reach_the_output(
    tree: Path, tmp_path: Path, bucket: str, script_env: dict[str, str]
) -> None:
    """Even with -v, on success and on failure, neither key appears on stdout or stderr."""
    env = dict(script_env, AWS_ACCESS_KEY_ID="AKIAEXAMPLEKEYID0001", AWS_SECRET_ACCESS_KEY="s3cr3t")
    runs = [
        run_script("ass3Backup.py", str(tree), "--bucket", bucket, "-v", env=env),
        run_script("ass3Restore.py", "data", "--bucket", bucket, "-v", env=env, cwd=tmp_path),
        run_script("ass3Restore.py", "nope", "--bucket", bucket, "-v", env=env),
        run_script(
            "ass3Backup.py",
            str(tree),
            "-v",
            env=dict(env, AWS_ENDPOINT_URL="http://127.0.0.1:1", AWS_MAX_ATTEMPTS="1"),
        ),
    ]
    assert [run.returncode for run in runs] == [0, 0, 2, 2]
    for run in runs:
        assert "AKIAEXAMPLEKEYID0001" not in run.stdout + run.stderr
        assert "s3cr3t" not in run.stdout + run.stderr
