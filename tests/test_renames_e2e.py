"""End to end: a renamed folder, through the scripts, against a moto server over HTTP."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import boto3
import pytest
from helpers import make_tree, read_tree, run_script

pytestmark = pytest.mark.slow

MiB = 1024 * 1024


def test_a_renamed_folder_is_copied_not_sent_and_both_runs_restore(
    tmp_path: Path, bucket: str, script_env: dict[str, str], moto_endpoint: str
) -> None:
    # The 9 MiB file went up in parts (the scripts' threshold is 8 MiB); one CopyObject
    # copies it whole.
    files = {f"album/{index}.jpg": os.urandom(2000 + index) for index in range(5)}
    files["album/video.mp4"] = os.urandom(9 * MiB)
    files["keep.txt"] = b"stays where it is"
    root = make_tree(tmp_path / "data", files)
    backup = ("ass3Backup.py", "data", "--bucket", bucket)
    first = run_script(*backup, "--json", env=script_env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    first_run = json.loads(first.stdout)["run_id"]

    os.rename(root / "album", root / "album-2026")
    dry = run_script(*backup, "--delete", "--force", "--dry-run", env=script_env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "would copy album-2026/video.mp4 (from album/video.mp4)" in dry.stderr
    assert "would copy 6," in dry.stdout

    verbose = run_script(*backup, "--delete", "--force", "-v", env=script_env, cwd=tmp_path)
    assert verbose.returncode == 0, verbose.stderr
    assert "copied album-2026/video.mp4 (renamed from album/video.mp4)" in verbose.stderr
    assert "uploaded 0 files (0 B), copied 6," in verbose.stdout

    os.rename(root / "album-2026", root / "album-2027")
    again = run_script(*backup, "--delete", "--force", "--json", env=script_env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert (summary["copied"], summary["files"], summary["bytes"], summary["deleted"]) == (
        6,
        0,
        0,
        6,
    )
    assert summary["requests"]["CopyObject"] == 6
    assert summary["requests"]["PutObject"] == 1  # the run record
    server: Any = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    head = server.head_object(Bucket=bucket, Key="data/album-2027/video.mp4")
    assert head["ContentLength"] == 9 * MiB

    restore = ("ass3Restore.py", "data", "--bucket", bucket)
    now = run_script(*restore, "--dest", "now", env=script_env, cwd=tmp_path)
    assert now.returncode == 0, now.stderr
    assert read_tree(tmp_path / "now" / "data") == read_tree(root)
    then = run_script(*restore, "--run", first_run, "--dest", "then", env=script_env, cwd=tmp_path)
    assert then.returncode == 0, then.stderr
    assert read_tree(tmp_path / "then" / "data") == files
