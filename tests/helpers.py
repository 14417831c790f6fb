"""Helpers for the tests: building trees, counting API calls, running the scripts."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from botocore.awsrequest import AWSResponse

import s3common
from s3common import Connection

PROJECT = Path(__file__).resolve().parent.parent
# Registers a botocore handler (event name, handler) on every client the tool creates.
Hook = Callable[[str, Callable[..., Any]], None]


def count_calls(client: object) -> Counter[str]:
    """Count the API calls a client makes (each retry attempt counts), by operation name."""
    calls: Counter[str] = Counter()

    def record(event_name: str, **_: object) -> None:
        calls[event_name.rsplit(".", 1)[-1]] += 1

    client.meta.events.register("before-send.s3", record)  # type: ignore[attr-defined]
    return calls


def fetched_keys(conn: Connection) -> Counter[str]:
    """How many GetObject requests each key gets from now on."""
    keys: Counter[str] = Counter()

    def record(params: dict[str, Any], **_: object) -> None:
        keys[params["Key"]] += 1

    conn.client.meta.events.register("provide-client-params.s3.GetObject", record)
    return keys


def open_uploads(client: Any, bucket: str) -> list[dict[str, Any]]:
    """Multipart uploads still open: parts S3 would keep (and bill) forever."""
    uploads: list[dict[str, Any]] = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return uploads


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    """Write `files` (relative '/'-separated path -> content) below root."""
    for rel, content in files.items():
        path = root.joinpath(*rel.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def set_tree(root: Path, files: dict[str, bytes]) -> None:
    """Make root hold exactly `files`."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    make_tree(root, files)


def read_tree(root: Path) -> dict[str, bytes]:
    """Every regular file below root, keyed by its '/'-separated relative path."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def tree_state(root: Path) -> dict[str, object]:
    """Every entry below root, never following a symlink: bytes, link targets, folders."""
    state: dict[str, object] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                state[rel] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                state[rel] = "dir"
            else:
                with open(path, "rb") as handle:
                    state[rel] = handle.read()
    return state


def backup(conn: Connection, root: Path, bucket: str, **options: Any) -> s3common.Summary:
    """One backup of root as "data"; the caller checks failures when it expects some."""
    return s3common.backup(conn, str(root), bucket=bucket, prefix="data", **options)


def back_up(conn: Connection, root: Path, bucket: str, **options: Any) -> s3common.Summary:
    """One backup of root as "data", which must not fail for any file."""
    summary = backup(conn, root, bucket, **options)
    assert summary.failures == [], summary.failures
    return summary


def back_up_exactly(
    conn: Connection, root: Path, bucket: str, files: dict[str, bytes], **options: Any
) -> str:
    """Make root hold exactly `files` and back it up as "data"; the id of the run it recorded."""
    set_tree(root, files)
    summary = backup(conn, root, bucket, **options)
    assert summary.failures == [] and summary.run_id, summary.failures
    return summary.run_id


def restored(conn: Connection, bucket: str, dest: Path, **options: Any) -> dict[str, bytes]:
    """Restore backup "data" into dest, which must not fail for any file; what it holds then."""
    summary = s3common.restore(conn, "data", bucket=bucket, destination=str(dest), **options)
    assert summary.failures == [], summary.failures
    return read_tree(dest / "data")


def a_moment_apart() -> datetime:
    """A time strictly between what was written before the call and what is written after,
    as S3 tells them apart: LastModified has one-second resolution."""
    time.sleep(1.1)
    between = datetime.now(timezone.utc)
    time.sleep(1.1)
    return between


def run_python(
    *args: str,
    env: dict[str, str],
    cwd: Path | None = None,
    timeout: float = 120,
    prefix: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Run this Python with `args` (behind `prefix`, a command that runs it), to the end."""
    return subprocess.run(
        [*prefix, sys.executable, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_script(
    script: str,
    *args: str,
    env: dict[str, str],
    cwd: Path | None = None,
    timeout: float = 120,
    prefix: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ass3Backup.py or ass3Restore.py exactly as a user would."""
    return run_python(
        str(PROJECT / script), *args, env=env, cwd=cwd, timeout=timeout, prefix=prefix
    )


def back_up_a_broken_link(
    tmp_path: Path, bucket: str, *options: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """`ass3Backup.py --follow-symlinks` of tmp_path/data, two files and a symlink `broken`
    that leads nowhere: the link is the one file that fails."""
    root = make_tree(tmp_path / "data", {"a.txt": b"aa", "sub/b.txt": b"bbb"})
    (root / "broken").symlink_to(tmp_path / "nowhere")
    return run_script(
        "ass3Backup.py", str(root), "--bucket", bucket, "--follow-symlinks", *options, env=env
    )


def start_python(
    *args: str,
    env: dict[str, str],
    cwd: Path,
    default_signals: Sequence[signal.Signals] = (signal.SIGINT,),
) -> subprocess.Popen[str]:
    """Start this Python with `args` as a user's terminal would: with `default_signals` at
    their default action, even when this test run was started as a background job or
    under nohup, which inherit some of them ignored."""

    def restore_defaults() -> None:
        for sig in default_signals:
            signal.signal(sig, signal.SIG_DFL)

    return subprocess.Popen(
        [sys.executable, *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=restore_defaults,
    )


class _CannedBody:
    """The raw body of a canned response: what botocore reads from a real one."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Any:
        yield self._data

    def read(self, *_: Any, **__: Any) -> bytes:
        data, self._data = self._data, b""
        return data


def canned_response(url: str, status: int, body: bytes, content_type: str) -> AWSResponse:
    """An answer a before-send handler gives in place of the server's."""
    return AWSResponse(url, status, {"Content-Type": content_type}, _CannedBody(body))  # type: ignore[arg-type]
