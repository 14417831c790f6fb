"""The tree through the scripts, against a moto server: the options as a user types
them, and a restore by a root that cannot override permissions (as a user restores)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import make_tree, run_script

from bench.tree_compare import compare

pytestmark = pytest.mark.slow
ROOT = os.geteuid() == 0


def succeeded(result: subprocess.CompletedProcess[str]) -> str:
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    return result.stdout


def source_tree(root: Path) -> Path:
    make_tree(root, {"bin/tool": b"#!/bin/sh\n", "docs/a.txt": b"a", "docs/b.txt": b"b"})
    (root / "cache" / "empty").mkdir(parents=True)
    (root / "docs" / "latest").symlink_to("a.txt")
    (root / "etc-link").symlink_to("/etc")
    os.link(root / "docs" / "a.txt", root / "a-again.txt")
    os.setxattr(root / "docs" / "a.txt", "user.origin", b"e2e")
    os.chmod(root / "bin" / "tool", 0o4755)
    os.chmod(root / "cache", 0o1777)
    if ROOT:
        os.chown(root / "docs", 1000, 1000)
        os.chown(root / "docs" / "b.txt", 1000, 1000)
    for path in (root / "docs", root / "cache" / "empty", root):
        os.utime(path, ns=(10**18, 10**18))
    return root


def test_the_scripts_round_trip_the_tree(
    tmp_path: Path, bucket: str, script_env: dict[str, str]
) -> None:
    source = source_tree(tmp_path / "data")
    backup = ("ass3Backup.py", "data", "--bucket", bucket, "--xattrs")
    first = succeeded(run_script(*backup, env=script_env, cwd=tmp_path))
    assert "uploaded 4 files" in first and "(run " in first
    again = succeeded(run_script(*backup, env=script_env, cwd=tmp_path))
    assert "uploaded 0 files" in again and "(run " not in again

    restore = ("ass3Restore.py", "data", "--bucket", bucket, "--dest", "out")
    options = ("--xattrs", "--keep-special-bits")
    succeeded(run_script(*restore, *options, env=script_env, cwd=tmp_path))
    found = compare(str(source), str(tmp_path / "out" / "data"), content=True, xattrs=True)
    assert dict(found.differences) == {}

    succeeded(run_script(*restore, "--dest", "plain", env=script_env, cwd=tmp_path))
    plain = compare(str(source), str(tmp_path / "plain" / "data"), xattrs=True).differences
    assert sorted(plain) == ["mode", "xattrs"]  # special bits and xattrs only when asked
    assert len(plain["mode"]) == 2


@pytest.mark.skipif(not ROOT, reason="restoring owners needs root")
def test_no_same_owner_and_numeric_owner_as_tar_spells_them(
    tmp_path: Path, bucket: str, script_env: dict[str, str]
) -> None:
    source_tree(tmp_path / "data")
    succeeded(run_script("ass3Backup.py", "data", "--bucket", bucket, env=script_env, cwd=tmp_path))
    restore = ("ass3Restore.py", "data", "--bucket", bucket)
    for option, owner in [("--no-same-owner", 0), ("--no-owner", 0), ("--numeric-owner", 1000)]:
        dest = tmp_path / option.strip("-")
        succeeded(run_script(*restore, "--dest", str(dest), option, env=script_env))
        assert os.stat(dest / "data" / "docs" / "b.txt").st_uid == owner, option
    both = run_script(*restore, "--same-owner", "--no-owner", env=script_env)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


@pytest.mark.skipif(
    ROOT and shutil.which("setpriv") is None,
    reason="as root, folder modes stop nothing unless setpriv can drop CAP_DAC_OVERRIDE",
)
def test_folders_that_forbid_writing_are_restored_by_a_user_who_obeys_them(
    tmp_path: Path, bucket: str, script_env: dict[str, str]
) -> None:
    """Files first, then folder modes deepest first: a folder of mode 000 holding a
    read-only folder holding a file comes back, restored by one who cannot override."""
    source = make_tree(tmp_path / "data", {"locked/ro/f": b"f", "open": b"o"})
    (source / "locked" / "ro").chmod(0o555)
    (source / "locked").chmod(0)
    try:
        succeeded(
            run_script("ass3Backup.py", "data", "--bucket", bucket, env=script_env, cwd=tmp_path)
        )
        prefix = []
        if ROOT:
            drop = "-dac_override,-dac_read_search"
            prefix = [str(shutil.which("setpriv")), f"--bounding-set={drop}", f"--inh-caps={drop}"]
        (tmp_path / "out").mkdir()
        result = run_script(
            "ass3Restore.py",
            "data",
            "--bucket",
            bucket,
            env=script_env,
            cwd=tmp_path / "out",
            prefix=prefix,
        )
        assert (result.returncode, result.stderr) == (0, ""), result.stderr
        out = tmp_path / "out" / "data"
        assert (out / "locked").stat().st_mode & 0o777 == 0
        (out / "locked").chmod(0o700)
        assert (out / "locked" / "ro").stat().st_mode & 0o777 == 0o555
        assert (out / "locked" / "ro" / "f").read_bytes() == b"f"
    finally:
        (source / "locked").chmod(0o755)
        if (tmp_path / "out" / "data" / "locked").exists():
            (tmp_path / "out" / "data" / "locked").chmod(0o755)
