"""`ass3Backup.py --try`: the one command a new user runs first."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_tree, run_script


def clean_env(script_env: dict[str, str]) -> dict[str, str]:
    """A user's shell: no endpoint or credentials set; the trial brings its own."""
    return {key: value for key, value in script_env.items() if not key.startswith("AWS_")}


@pytest.mark.slow
def test_the_trial_backs_up_a_sample_restores_and_compares_quietly(
    script_env: dict[str, str],
) -> None:
    done = run_script("ass3Backup.py", "--try", env=clean_env(script_env))
    assert done.returncode == 0, done.stderr
    assert "the restored tree is identical" in done.stdout
    assert "4 files compared byte for byte" in done.stdout
    assert "uploaded 0 files" in done.stdout  # the second backup sent nothing
    # No access log from the server between the scripts' lines, no warning, no traceback.
    assert "HTTP/1.1" not in done.stdout + done.stderr
    assert done.stderr == ""


@pytest.mark.slow
def test_the_trial_of_a_named_folder_and_of_a_missing_one(
    script_env: dict[str, str], tmp_path: Path
) -> None:
    root = make_tree(tmp_path / "mine", {"a.txt": b"a", "sub/b.txt": b"b"})
    done = run_script("ass3Backup.py", str(root), "--try", env=clean_env(script_env))
    assert done.returncode == 0, done.stderr
    assert f"identical to {root}: 2 files" in done.stdout
    missing = run_script("ass3Backup.py", str(tmp_path / "nope"), "--try", env=script_env)
    assert missing.returncode == 2
    assert "no such directory" in missing.stderr and "Traceback" not in missing.stderr
