"""Installed as a package, the tool gives two commands that work like the scripts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import PROJECT, make_tree, read_tree

import s3common


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip install .` into a folder of its own, as a user would (pip fetches the build
    backend, setuptools, into an isolated build environment); the dependencies are the
    test's own."""
    target = tmp_path_factory.mktemp("installed")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(PROJECT),
        ],
        check=True,
        capture_output=True,
    )
    return target


@pytest.mark.slow
def test_the_installed_commands_back_up_and_restore(
    installed: Path, script_env: dict[str, str], bucket: str, tmp_path: Path
) -> None:
    env = {**script_env, "PYTHONPATH": str(installed)}
    root = make_tree(tmp_path / "docs", {"a.txt": b"a", "sub/b.txt": b"b"})

    def command(name: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(installed / "bin" / name), *args],
            env=env,
            cwd=tmp_path,  # not the checkout: the installed modules are the ones imported
            capture_output=True,
            text=True,
            check=False,
        )

    version = command("ass3-backup", "--version")
    assert version.stdout.strip() == f"ass3-backup {s3common.__version__}"
    backed_up = command("ass3-backup", str(root), "--bucket", bucket)
    assert backed_up.returncode == 0, backed_up.stderr
    restored = command("ass3-restore", "docs", "--bucket", bucket, "--dest", str(tmp_path / "r"))
    assert restored.returncode == 0, restored.stderr
    assert read_tree(tmp_path / "r" / "docs") == read_tree(root)
