"""What a person sees while a run goes: totals from the start, phases, errors."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest
from helpers import back_up_a_broken_link, make_tree, run_script

from ass3.model import LocalFile, Outcome, RemoteObject, Step
from ass3.progress import Progress


def remote(rel: str, size: int) -> RemoteObject:
    return RemoteObject(rel, f"data/{rel}", size, "0" * 32, datetime.now(timezone.utc))


def step(rel: str, size: int) -> Step:
    return Step(rel, remote(rel, size), None, "new")


def test_a_restore_shows_its_totals_from_the_start_and_counts_what_is_done() -> None:
    progress = Progress("restore", enabled=True)
    progress.expect(3, 300)
    assert (progress._files.total, progress._bytes.total) == (3, 300)
    for rel in ("a", "b"):
        progress.planned(step(rel, 100))
    progress.finished(Outcome("a", transferred=True, size=100))
    progress.finished(Outcome("b", transferred=False, size=100))  # unchanged: done too
    assert (progress._files.n, progress._bytes.n) == (2, 200)
    assert (progress._files.total, progress._bytes.total) == (3, 300)  # not grown by the plan
    assert "fetched 100 B" in str(progress._bytes)
    progress.close()


def test_a_listing_longer_than_the_record_said_raises_the_totals() -> None:
    progress = Progress("restore", enabled=True)
    progress.expect(1, 10)
    progress.planned(step("a", 10))
    progress.planned(step("b", 20))
    assert (progress._files.total, progress._bytes.total) == (2, 30)
    progress.close()


def test_without_totals_ahead_they_grow_with_the_plan() -> None:
    progress = Progress("restore", enabled=True)
    for index in range(4):
        progress.planned(step(f"f{index}", 5))
    assert (progress._files.total, progress._bytes.total) == (4, 20)
    progress.close()


def test_failures_and_the_phase_are_shown_beside_the_bars() -> None:
    progress = Progress("backup", enabled=True)
    progress.phase("looking up versions, writing the run record")
    failing = Step("x", LocalFile("x", "/x", 7, 0, 0, 0, 0), None, "new")
    progress.planned(failing)
    progress.failed(failing)
    shown = str(progress._files)
    assert "looking up versions" in shown and "1 failed" in shown
    assert progress._bytes.n == 7
    progress.close()


def test_a_disabled_progress_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with Progress("backup", enabled=False) as progress:
        progress.expect(1, 1)
        progress.phase("listing")
        progress.finished(Outcome("a", transferred=True, size=1))
    assert capsys.readouterr() == ("", "")


@pytest.mark.slow
def test_off_a_terminal_the_scripts_print_no_bars_and_no_control_characters(
    script_env: dict[str, str], bucket: str, tmp_path: Path
) -> None:
    root = make_tree(tmp_path / "data", {f"f{index}": b"x" * index for index in range(30)})
    for script, args in [
        ("ass3Backup.py", [str(root), "--bucket", bucket, "-v"]),
        ("ass3Restore.py", ["data", "--bucket", bucket, "--dest", str(tmp_path / "r"), "-v"]),
    ]:
        done = run_script(script, *args, env=script_env)
        assert done.returncode == 0, done.stderr
        output = done.stdout + done.stderr
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", output), output[:500]
        assert len(done.stdout.splitlines()) == 1  # the summary, unwrapped off a terminal


@pytest.mark.slow
def test_events_are_one_json_object_per_line_from_start_to_summary(
    script_env: dict[str, str], bucket: str, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    done = back_up_a_broken_link(tmp_path, bucket, "--events", env=script_env)
    assert done.returncode == 1, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[0] == {
        "event": "start",
        "action": "backup",
        "source": str(root),
        "bucket": bucket,
        "prefix": "data",
    }
    files = {e["path"]: e for e in events if e["event"] == "file"}
    assert set(files) == {"a.txt", "sub/b.txt"}
    assert files["a.txt"] == {
        "event": "file",
        "path": "a.txt",
        "action": "uploaded",
        "reason": "new",
        "bytes": 2,
    }
    assert [e["path"] for e in events if e["event"] == "failed"] == ["broken"]
    last = events[-1]
    assert last["event"] == "summary" and last["exit_code"] == 1 and last["files"] == 2

    restored = run_script(
        "ass3Restore.py",
        "data",
        "--bucket",
        bucket,
        "--dest",
        str(tmp_path / "r"),
        "--events",
        env=script_env,
    )
    events = [json.loads(line) for line in restored.stdout.splitlines()]
    assert [e["event"] for e in events] == ["start", "file", "file", "summary"]
    assert {e["action"] for e in events if e["event"] == "file"} == {"downloaded"}

    missing = run_script("ass3Restore.py", "nope", "--bucket", bucket, "--events", env=script_env)
    started, stopped = [json.loads(line) for line in missing.stdout.splitlines()]
    assert (started["event"], stopped["event"], stopped["exit_code"]) == ("start", "error", 2)
    both = run_script("ass3Backup.py", str(root), "--json", "--events", env=script_env)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
