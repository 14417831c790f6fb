"""Helpers for the tests: building trees, counting API calls, running the scripts."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    """Write `files` (relative '/'-separated path -> content) below root."""
    for rel, content in files.items():
        path = root.joinpath(*rel.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def read_tree(root: Path) -> dict[str, bytes]:
    """Every regular file below root, keyed by its '/'-separated relative path."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def run_script(
    script: str, *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ass3Backup.py or ass3Restore.py exactly as a user would."""
    return subprocess.run(
        [sys.executable, str(PROJECT / script), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
