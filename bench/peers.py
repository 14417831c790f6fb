"""The tools under test, how each is called, and how a run of one is timed and judged.

Fairness: every tool gets the same environment (fake credentials, the endpoint, an empty
AWS config file, every other AWS_* variable removed) and runs at its defaults but for the
options that make it do the same job: `aws s3 sync --only-show-errors` (10 concurrent
requests, 8 MiB parts), `rclone sync --checksum --fast-list` (4 transfers, 8 checkers, one
PUT below 200 MiB) and ass3 at its default --workers unless told. `--delete` where a phase
deletes.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BACKUP_SCRIPT = REPO / "ass3Backup.py"
RESTORE_SCRIPT = REPO / "ass3Restore.py"

TOOLS = ("ass3", "aws", "rclone")
BUCKETS = {"ass3": "bench-ass3", "aws": "bench-aws", "rclone": "bench-rclone"}
RCLONE_REMOTE = "BENCH"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def local_client(endpoint: str) -> Any:
    """A boto3 S3 client of the benchmark's own (set-up, checks), on the local server."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=FAKE_CREDENTIALS["AWS_DEFAULT_REGION"],
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def aws_command() -> str | None:
    """The `aws` installed beside this Python (the venv's, whose version is reported),
    else the first on PATH."""
    beside = Path(sys.executable).parent / "aws"
    return str(beside) if beside.is_file() else shutil.which("aws")


def rclone_version() -> str | None:
    """`rclone version`'s first line, or None when rclone is not installed."""
    if not shutil.which("rclone"):
        return None
    done = subprocess.run(["rclone", "version"], capture_output=True, text=True)
    return done.stdout.split("\n", 1)[0].removeprefix("rclone ").strip() or None


def available_tools() -> list[str]:
    """ass3, and each peer that is installed here."""
    return ["ass3"] + (["aws"] if aws_command() else []) + (["rclone"] if rclone_version() else [])


def tool_env(endpoint: str, scratch: Path) -> dict[str, str]:
    """The same environment for every tool: fake credentials and nothing from ~/.aws."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "ASS3_", "MOTO_", "RCLONE_"))
    }
    env.update(FAKE_CREDENTIALS)
    (scratch / "rclone.conf").touch()
    prefix = f"RCLONE_CONFIG_{RCLONE_REMOTE}_"
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_CONFIG_FILE=str(scratch / "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(scratch / "aws-credentials"),
        # ass3's state cache starts cold in every benchmark and never touches ~/.cache.
        XDG_CACHE_HOME=str(scratch / "cache"),
        RCLONE_CONFIG=str(scratch / "rclone.conf"),
        **{
            prefix + "TYPE": "s3",
            prefix + "PROVIDER": "Other",
            prefix + "ENDPOINT": endpoint,
            prefix + "ACCESS_KEY_ID": FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            prefix + "SECRET_ACCESS_KEY": FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            prefix + "REGION": FAKE_CREDENTIALS["AWS_DEFAULT_REGION"],
        },
    )
    return env


@dataclass(frozen=True)
class Job:
    """One transfer for one tool: up (folder -> bucket/prefix) or down (-> folder)."""

    tool: str
    bucket: str
    prefix: str
    folder: Path
    up: bool = True
    delete: bool = False
    workers: int | None = None  # ass3's --workers; None leaves its default

    @property
    def restored(self) -> Path:
        """Where a download's files land: ass3 restores into DEST/NAME/."""
        return self.folder / self.prefix if self.tool == "ass3" else self.folder


def command_for(job: Job) -> list[str]:
    if job.tool == "ass3":
        common = ["--bucket", job.bucket]
        common += ["--workers", str(job.workers)] if job.workers else []
        common += ["--delete"] if job.delete else []
        if not job.up:
            script = [sys.executable, str(RESTORE_SCRIPT), job.prefix, "--dest", str(job.folder)]
            return [*script, *common]
        script = [sys.executable, str(BACKUP_SCRIPT), str(job.folder), "--prefix", job.prefix]
        return [*script, *common]
    if job.tool == "aws":
        url = f"s3://{job.bucket}/{job.prefix}"
        pair = [str(job.folder), url] if job.up else [url, str(job.folder)]
        flags = ["--delete"] if job.delete else []
        return [aws_command() or "aws", "s3", "sync", *pair, "--only-show-errors", *flags]
    remote = f"{RCLONE_REMOTE}:{job.bucket}/{job.prefix}"
    pair = [str(job.folder), remote] if job.up else [remote, str(job.folder)]
    return ["rclone", "sync", *pair, "--checksum", "--fast-list"]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Ran:
    """A finished (or killed) run: wall and CPU seconds, exit code, its output's tail."""

    wall_s: float
    cpu_s: float
    returncode: int
    stdout: str
    stderr: str


def run(
    command: list[str],
    env: dict[str, str],
    cwd: Path,
    kill_when: Callable[[], bool] | None = None,
) -> Ran:
    """Run a command to completion, or SIGKILL its process group once `kill_when()` holds.

    CPU is RUSAGE_CHILDREN's growth: the tool and its children, reaped, and nothing of
    the S3 server or the proxy (a thread, and a child reaped only at the very end).
    """
    out, err = cwd / ".stdout", cwd / ".stderr"
    before = _children_cpu()
    started = time.perf_counter()
    with open(out, "w") as stdout, open(err, "w") as stderr:
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=stdout, stderr=stderr, start_new_session=True
        )
        while kill_when is not None and process.poll() is None:
            if kill_when():
                os.killpg(process.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        process.wait()
    wall = time.perf_counter() - started
    cpu = _children_cpu() - before
    return Ran(wall, cpu, process.returncode, out.read_text()[-2000:], err.read_text()[-2000:])


def remote_etags(client: Any, bucket: str, prefix: str) -> dict[str, str]:
    """rel path -> ETag of every object under the backup prefix."""
    etags = {}
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix + "/"):
        for item in page.get("Contents", []):
            etags[item["Key"][len(prefix) + 1 :]] = item["ETag"].strip('"')
    return etags


def is_run_record(bucket_and_key: str) -> bool:
    return bucket_and_key.split("/", 1)[1].startswith(".ass3/")


def judge_backup(
    phase: str,
    local: dict[str, frozenset[str]],
    remote: dict[str, str],
    edited: list[str],
    written: set[str],
) -> tuple[bool, str]:
    """Did the phase's changes reach S3, with nothing else uploaded and nothing left over?"""
    stale = [rel for rel, etags in local.items() if remote.get(rel) not in etags]
    extra_remote = len(remote.keys() - local.keys())
    in_sync = f"{len(local) - len(stale)}/{len(local)} in sync"
    if extra_remote:
        in_sync += f", {extra_remote} objects of gone files"
    if phase in ("a", "g"):
        return not stale, in_sync
    if phase == "b":
        return not stale and not written, f"{len(written)} uploads, {in_sync}"
    if phase == "f":
        # Judged on the renamed files alone: a file missed by an earlier phase stays stale.
        moved = sum(remote.get(rel) in local[rel] for rel in edited)
        extra = len(written - set(edited))
        ok = moved == len(edited) and not extra_remote and extra == 0
        detail = f"{moved}/{len(edited)} renamed files in S3, {extra} other uploads"
        return ok, f"{detail}, {in_sync}"
    caught = sum(remote.get(rel) in local[rel] for rel in edited)
    extra = len(written - set(edited))
    ok = caught == len(edited) and extra == 0 and not stale
    return ok, f"{caught}/{len(edited)} edits in S3, {extra} extra uploads, {in_sync}"
