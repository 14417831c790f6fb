"""The scheduling recipes of docs/scheduling.md, run as written (paths substituted)."""

from __future__ import annotations

import fcntl
import re
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from helpers import PROJECT, make_tree

RECIPES = (PROJECT / "docs" / "scheduling.md").read_text()


def fenced(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", RECIPES, re.S)


def as_here(text: str, root: Path, bucket: str, lock: Path) -> str:
    """The recipe with this checkout, this test's folder, bucket and lock file."""
    return (
        text.replace("/opt/ass3/.venv/bin/python", sys.executable)
        .replace("/opt/ass3/", f"{PROJECT}/")
        .replace("/home/me", str(root))
        .replace("my-backups", bucket)
        .replace("/tmp/ass3-home.lock", str(lock))
    )


@pytest.fixture
def cron_env(moto_endpoint: str, tmp_path: Path) -> dict[str, str]:
    """What cron gives a job: a bare environment, plus the crontab's own variables; the
    profile they name holds the credentials and the endpoint."""
    config = tmp_path / "aws-config"
    config.write_text(
        "[profile backup]\n"
        "aws_access_key_id = testing\n"
        "aws_secret_access_key = testing\n"
        "region = us-east-1\n"
        f"endpoint_url = {moto_endpoint}\n"
    )
    (crontab,) = fenced("cron")
    variables = dict(re.findall(r"^(\w+)=(\S+)$", crontab, re.M))
    assert variables == {"AWS_PROFILE": "backup"}
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "SHELL": "/bin/sh",
        "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        **variables,
    }


def cron_command(root: Path, bucket: str, lock: Path) -> str:
    (crontab,) = fenced("cron")
    (entry,) = [line for line in crontab.splitlines() if re.match(r"\d", line)]
    return as_here(entry.split(maxsplit=5)[5], root, bucket, lock)


@pytest.mark.slow
def test_the_cron_line_is_silent_when_all_is_well_and_one_line_when_not(
    cron_env: dict[str, str], moto_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    root = make_tree(tmp_path / "me", {"notes.txt": b"n", "src/a.py": b"a"})
    lock = tmp_path / "ass3.lock"
    command = cron_command(root, bucket, lock)

    def cron(line: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/sh", "-c", line], env=cron_env, capture_output=True, text=True, check=False
        )

    first = cron(command)
    assert (first.returncode, first.stdout, first.stderr) == (0, "", "")  # cron mails nothing
    s3 = boto3.client(
        "s3", endpoint_url=moto_endpoint, aws_access_key_id="t", aws_secret_access_key="t"
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="me/")["Contents"]]
    assert keys == ["me/notes.txt", "me/src/a.py"]

    with open(lock, "w") as held:  # the previous night's run is still going
        fcntl.flock(held, fcntl.LOCK_EX)
        overlapping = cron(command)
    assert overlapping.returncode == 1 and overlapping.stdout == ""

    gone = cron(command.replace(str(root), str(tmp_path / "unmounted")))
    assert gone.returncode == 2 and gone.stdout == ""
    (line,) = gone.stderr.splitlines()
    assert "no such directory" in line


@pytest.mark.slow
def test_the_systemd_units_verify_and_the_service_runs_quietly(
    cron_env: dict[str, str], bucket: str, tmp_path: Path
) -> None:
    root = make_tree(tmp_path / "me", {"a": b"a"})
    units = {}
    for block in fenced("ini"):
        name = re.match(r"# (\S+)\n", block)
        assert name, block
        units[name.group(1)] = as_here(block, root, bucket, tmp_path / "lock")
    assert set(units) == {"ass3-backup.service", "ass3-backup.timer"}
    exec_start = re.search(r"^ExecStart=(.*)$", units["ass3-backup.service"], re.M)
    assert exec_start
    environment = dict(re.findall(r"^Environment=(\w+)=(\S+)$", units["ass3-backup.service"], re.M))
    run = subprocess.run(
        exec_start.group(1).split(),
        env={**cron_env, **environment},
        capture_output=True,
        text=True,
        check=False,
    )
    assert (run.returncode, run.stdout, run.stderr) == (0, "", "")

    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    for name, text in units.items():
        (tmp_path / name).write_text(text.replace("User=me", "User=root"))
    verified = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(tmp_path / n) for n in units)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert verified.returncode == 0, verified.stderr
