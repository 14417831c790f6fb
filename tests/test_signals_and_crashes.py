"""How a run ends when it does not end well: a bug, a stop signal, a kill.

A bug is one line and an exit code of its own (never "some files failed"); SIGTERM
and SIGHUP stop a run as Ctrl-C does, aborting multipart uploads in flight that have
no part yet and keeping the others for the next run to resume; and the incomplete
uploads a killed run leaves are resumed or aborted by the next run of that backup.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from helpers import PROJECT, backup, count_calls, make_tree, run_script, start_python

import ass3Backup
import ass3Restore
import s3common
from s3common import Connection

MiB = s3common.MiB
MAINS: dict[str, Callable[[list[str]], int]] = {
    "backup": ass3Backup.main,
    "restore": ass3Restore.main,
}
EXIT_INTERNAL = 70  # EX_SOFTWARE of sysexits.h


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def argv(script: str, data: Path, bucket: str, *options: str) -> list[str]:
    if script == "backup":
        return [str(data), "--bucket", bucket, *options]
    return [data.name, "--bucket", bucket, "--dest", str(data.parent / "out"), *options]


def boom(*_: Any, **__: Any) -> Any:
    raise RuntimeError("boom")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "data", {"a.txt": b"a", "sub/b.txt": b"bb"})


# --- 1: a bug is an internal error, exit 70, not "some files failed" ------------------------

# A function each script calls in its main thread, early in the run.
MAIN_THREAD_STEP = {"backup": "ass3.scan.scan_tree", "restore": "ass3.remote.list_remote"}


@pytest.mark.usefixtures("s3")
@pytest.mark.parametrize("script", MAINS)
def test_a_bug_is_one_line_and_exit_70(
    data: Path,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    script: str,
) -> None:
    monkeypatch.setattr(MAIN_THREAD_STEP[script], boom)
    assert MAINS[script](argv(script, data, bucket)) == EXIT_INTERNAL
    captured = capsys.readouterr()
    assert one_line(captured.err) == (
        f"ass3{script.title()}.py: internal error: RuntimeError: boom "
        "(run with --debug for the traceback)"
    )
    assert captured.out == ""


@pytest.mark.usefixtures("s3")
def test_debug_prints_the_traceback(
    data: Path, bucket: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(MAIN_THREAD_STEP["backup"], boom)
    assert ass3Backup.main(argv("backup", data, bucket, "--debug")) == EXIT_INTERNAL
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "ass3Backup.py: internal error: RuntimeError: boom"
    assert lines[1] == "Traceback (most recent call last):"
    assert any("in boom" in line for line in lines)
    assert lines[-1] == "RuntimeError: boom"


@pytest.mark.usefixtures("s3")
def test_a_bug_with_json_is_also_a_json_document(
    data: Path, bucket: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(MAIN_THREAD_STEP["backup"], boom)
    assert ass3Backup.main(argv("backup", data, bucket, "--json")) == EXIT_INTERNAL
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {
        "error": "internal error: RuntimeError: boom",
        "exit_code": EXIT_INTERNAL,
        "version": s3common.__version__,
    }
    assert "internal error: RuntimeError: boom" in one_line(captured.err)


@pytest.mark.usefixtures("s3")
def test_a_bug_with_a_message_of_several_lines_is_still_one_line(
    data: Path, bucket: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def bad(*_: Any, **__: Any) -> None:
        raise ValueError("first\nsecond\x1b[31m")

    monkeypatch.setattr(MAIN_THREAD_STEP["backup"], bad)
    assert ass3Backup.main(argv("backup", data, bucket)) == EXIT_INTERNAL
    line = one_line(capsys.readouterr().err)
    assert "ValueError: first second\\x1b[31m (run with --debug" in line


@pytest.mark.usefixtures("s3")
def test_a_bug_in_a_worker_thread_is_the_same_internal_error(
    data: Path, bucket: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A step raising something no handler expects stops the run like a bug anywhere:
    it reaches the main thread through the step's future, and is not counted as a file
    that failed."""
    threads: list[str] = []

    def buggy_step(*_: Any, **__: Any) -> None:
        threads.append(threading.current_thread().name)
        raise KeyError("oops")

    monkeypatch.setattr("ass3.backup.backup_step", buggy_step)
    assert ass3Backup.main(argv("backup", data, bucket)) == EXIT_INTERNAL
    captured = capsys.readouterr()
    assert one_line(captured.err) == (
        "ass3Backup.py: internal error: KeyError: 'oops' (run with --debug for the traceback)"
    )
    assert threads and all(name.startswith("ass3") for name in threads)


# --- 2: SIGTERM and SIGHUP stop a run as Ctrl-C does ----------------------------------------


class NotHandled(Exception):
    """Raised by the test's own handler: the signal reached no handler of the tool."""


def options(**overrides: bool) -> argparse.Namespace:
    values = {"quiet": False, "verbose": False, "dry_run": False, "json": False, "debug": False}
    values.update(overrides)
    return argparse.Namespace(**values)


@pytest.fixture
def fallback_handlers() -> Iterator[Callable[..., None]]:
    """Handlers of the test's own for SIGTERM and SIGHUP: a signal the tool does not
    handle fails the test instead of killing the test run."""

    def not_handled(signum: int, _frame: object) -> None:
        raise NotHandled(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, not_handled) for sig in (signal.SIGTERM, signal.SIGHUP)}
    yield not_handled
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def signalled_body(sig: signal.Signals) -> Callable[[], int]:
    """A run that receives `sig` in its main thread while it waits."""

    def body() -> int:
        os.kill(os.getpid(), sig)
        time.sleep(30)
        return 0

    return body


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_stop_signal_is_an_interruption_with_its_own_code(
    fallback_handlers: Callable[..., None],
    capsys: pytest.CaptureFixture[str],
    sig: signal.Signals,
    code: int,
) -> None:
    assert s3common.run_main("ass3Backup.py", options(), signalled_body(sig)) == code
    assert one_line(capsys.readouterr().err) == f"ass3Backup.py: interrupted ({sig.name})"
    # The handlers the caller had are back.
    assert signal.getsignal(signal.SIGTERM) is fallback_handlers
    assert signal.getsignal(signal.SIGHUP) is fallback_handlers


@pytest.mark.usefixtures("fallback_handlers")
def test_a_stop_signal_with_json_is_a_json_document(capsys: pytest.CaptureFixture[str]) -> None:
    body = signalled_body(signal.SIGTERM)
    assert s3common.run_main("ass3Restore.py", options(json=True), body) == 143
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {
        "error": "interrupted (SIGTERM)",
        "exit_code": 143,
        "version": s3common.__version__,
    }
    assert one_line(captured.err) == "ass3Restore.py: interrupted (SIGTERM)"


def test_sighup_ignored_by_nohup_stays_ignored(capsys: pytest.CaptureFixture[str]) -> None:
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        assert s3common.run_main("ass3Backup.py", options(), signalled_body_short()) == 0
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert capsys.readouterr().err == ""


def signalled_body_short() -> Callable[[], int]:
    def body() -> int:
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0.05)  # a handler would run here, in the main thread
        return 0

    return body


def test_run_main_outside_the_main_thread_leaves_signals_alone() -> None:
    """signal.signal works in the main thread only: elsewhere run_main must not try."""
    results: list[int | BaseException] = []

    def run() -> None:
        try:
            results.append(s3common.run_main("ass3Backup.py", options(), lambda: 0))
        except BaseException as error:
            results.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert results == [0]


# The script, with every UploadPart but the first {let_through} held until the run cancels
# its transfers: the signal (or kill) always lands while the multipart upload is open, and
# no fixed sleep is needed.
HOLD_PARTS = """
import runpy, sys, threading
sys.path.insert(0, {project!r})
from s3transfer.manager import TransferCoordinatorController
import s3common

cancelled = threading.Event()
cancel = TransferCoordinatorController.cancel
let_through = [{let_through}]


def cancel_then_release(self, *args, **kwargs):
    cancel(self, *args, **kwargs)
    cancelled.set()


def hold_part(**_):
    if let_through[0] > 0:
        let_through[0] -= 1
        return
    open("holding", "w").close()  # for the test: the upload is open and recorded
    cancelled.wait(60)


make_client = s3common.Connection._client


def client(self, service):
    made = make_client(self, service)
    made.meta.events.register_first("before-send.s3.UploadPart", hold_part)
    return made


TransferCoordinatorController.cancel = cancel_then_release
s3common.Connection._client = client
sys.argv = [{script!r}, *sys.argv[1:]]
runpy.run_path({script!r}, run_name="__main__")
"""


def open_uploads(client: Any, bucket: str) -> list[dict[str, Any]]:
    try:
        return client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    except ClientError:
        return []  # the script has not created the bucket yet


def start_held_backup(
    tmp_path: Path, *args: str, env: dict[str, str], let_through: int = 0
) -> subprocess.Popen[str]:
    """ass3Backup.py with its parts held, with the signals a terminal would leave default
    (a test run started in the background or under nohup inherits some ignored)."""
    driver = textwrap.dedent(HOLD_PARTS).format(
        project=str(PROJECT), script=str(PROJECT / "ass3Backup.py"), let_through=let_through
    )
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    return start_python("-c", driver, *args, env=env, cwd=tmp_path, default_signals=stops)


@contextmanager
def held_backup(
    tmp_path: Path, bucket: str, env: dict[str, str], let_through: int = 0
) -> Iterator[tuple[subprocess.Popen[str], tuple[str, ...]]]:
    """`ass3Backup.py data` in tmp_path on one worker, its parts held (see start_held_backup),
    and its arguments; killed on the way out if it is still running."""
    args = ("data", "--bucket", bucket, "--workers", "1")
    proc = start_held_backup(tmp_path, *args, env=env, let_through=let_through)
    try:
        yield proc, args
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def wait_for(proc: subprocess.Popen[str], ready: Callable[[], bool], what: str) -> None:
    """Poll until `ready()`, for a minute at the most; the script must still be running."""
    deadline = time.monotonic() + 60
    while not ready():
        assert proc.poll() is None, f"finished before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def big_tree(tmp_path: Path) -> None:
    # 12 MiB: over the scripts' 8 MiB multipart threshold, two parts.
    make_tree(tmp_path / "data", {"big.bin": os.urandom(12 * MiB), "small.txt": b"small"})


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_stop_signal_before_any_part_was_sent_exits_128_plus_n_and_aborts_the_upload(
    tmp_path: Path,
    bucket: str,
    script_env: dict[str, str],
    server: Any,
    sig: signal.Signals,
    code: int,
) -> None:
    big_tree(tmp_path)
    with held_backup(tmp_path, bucket, script_env) as (proc, _):
        # The upload is open once listed, and stays open while its parts are held.
        wait_for(proc, lambda: bool(open_uploads(server, bucket)), "the upload")
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert stderr.splitlines() == [f"ass3Backup.py: interrupted ({sig.name})"]
    assert stdout == ""
    assert open_uploads(server, bucket) == []
    listed = server.list_objects_v2(Bucket=bucket, Prefix="data/big")
    assert listed.get("KeyCount", 0) == 0


# --- 3: the next run aborts the incomplete uploads a killed run left --------------------------


def upload_ids(client: Any, bucket: str) -> set[str]:
    return {upload["UploadId"] for upload in open_uploads(client, bucket)}


class Clock:
    """The time the tool reads (ass3.remote.utc_now), moved forward by the test."""

    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, hours: float) -> None:
        self.now += timedelta(hours=hours)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr("ass3.remote.utc_now", clock)
    return clock


class Uploads:
    """Multipart uploads started by the test, with the start time S3 would report
    (moto reports one fixed time for all): an after-call hook on the tool's client
    puts each upload's own time into its ListMultipartUploads answers."""

    def __init__(self, s3: Any, conn: Connection, bucket: str, clock: Clock) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.clock = clock
        self.initiated: dict[str, datetime] = {}
        conn.client.meta.events.register("after-call.s3.ListMultipartUploads", self._times)

    def start(self, key: str) -> str:
        upload_id: str = self.s3.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        self.initiated[upload_id] = self.clock()
        return upload_id

    def _times(self, parsed: dict[str, Any], **_: Any) -> None:
        for upload in parsed.get("Uploads", []):
            upload["Initiated"] = self.initiated.get(upload["UploadId"], upload["Initiated"])


def interrupted_backup(
    conn: Connection, root: Path, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run stopped part way (as by Ctrl-C, a kill, a crash): it did not end cleanly."""

    def stop(*_: Any, **__: Any) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr("ass3.scan.scan_tree", stop)
        with pytest.raises(KeyboardInterrupt):
            backup(conn, root, bucket)


def test_after_an_interrupted_run_stale_uploads_of_the_backup_are_aborted(
    conn: Connection,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    clock: Clock,
) -> None:
    root = make_tree(tmp_path / "src", {"a.txt": b"a"})
    backup(conn, root, bucket)
    uploads = Uploads(s3, conn, bucket, clock)
    interrupted_backup(conn, root, bucket, monkeypatch)
    stale = uploads.start("data/big.bin")  # what the killed run left
    other_backup = uploads.start("data2/big.bin")  # another backup's: not this run's business
    clock.advance(hours=25)
    fresh = uploads.start("data/big.bin")  # a concurrent run of this backup, still uploading

    calls = count_calls(conn.client)
    with caplog.at_level(logging.INFO, logger="ass3"):
        summary = backup(conn, root, bucket)
    assert summary.exit_code == 0
    assert calls["ListMultipartUploads"] == 1
    assert calls["AbortMultipartUpload"] == 1
    assert upload_ids(s3, bucket) == {fresh, other_backup}
    assert summary.requests["AbortMultipartUpload"] == 1
    aborted = [record.getMessage() for record in caplog.records if "aborted" in record.message]
    assert len(aborted) == 2, aborted
    assert "data/big.bin" in aborted[0] and "25" in aborted[0]
    assert aborted[1] == "aborted 1 incomplete upload left under data/ by an interrupted run"
    assert stale not in upload_ids(s3, bucket)


def test_young_uploads_are_checked_again_until_old_enough_then_runs_stop_checking(
    conn: Connection,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clock: Clock,
) -> None:
    root = make_tree(tmp_path / "src", {"a.txt": b"a"})
    backup(conn, root, bucket)
    uploads = Uploads(s3, conn, bucket, clock)
    interrupted_backup(conn, root, bucket, monkeypatch)
    left = uploads.start("data/big.bin")  # too young to tell from a live run's

    clock.advance(hours=23)
    calls = count_calls(conn.client)
    backup(conn, root, bucket)
    assert (calls["ListMultipartUploads"], calls["AbortMultipartUpload"]) == (1, 0)
    assert upload_ids(s3, bucket) == {left}

    clock.advance(hours=2)
    calls.clear()
    backup(conn, root, bucket)
    assert (calls["ListMultipartUploads"], calls["AbortMultipartUpload"]) == (1, 1)
    assert upload_ids(s3, bucket) == set()

    calls.clear()
    backup(conn, root, bucket)
    assert set(calls) == {"ListBuckets", "ListObjectsV2"}


def test_runs_that_ended_cleanly_never_list_uploads(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    """The check costs a request only after a run that did not end cleanly: a stray upload
    that no run of this machine left is for the bucket's lifecycle rule."""
    root = make_tree(tmp_path / "src", {"a.txt": b"a"})
    backup(conn, root, bucket)
    s3.create_multipart_upload(Bucket=bucket, Key="data/stray.bin")
    calls = count_calls(conn.client)
    backup(conn, root, bucket)
    make_tree(root, {"b.txt": b"b"})
    backup(conn, root, bucket)
    assert "ListMultipartUploads" not in calls
    assert len(open_uploads(s3, bucket)) == 1


def test_a_failed_big_upload_whose_abort_failed_is_aborted_by_the_next_run(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    root = make_tree(tmp_path / "src", {"big.bin": os.urandom(6 * MiB)})

    def refuse(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "InternalError", "Message": "down"}}, "x")

    for operation in ("UploadPart", "AbortMultipartUpload"):
        conn.client.meta.events.register_first(f"before-call.s3.{operation}", refuse)
    assert backup(conn, root, bucket).exit_code == 1
    assert len(open_uploads(s3, bucket)) == 1  # left behind, as a lost connection would

    for operation in ("UploadPart", "AbortMultipartUpload"):
        conn.client.meta.events.unregister(f"before-call.s3.{operation}", refuse)
    calls = count_calls(conn.client)
    summary = backup(conn, root, bucket)  # moto reports every upload as years old
    assert (summary.exit_code, summary.transferred) == (0, 1)
    assert calls["AbortMultipartUpload"] == 1
    assert open_uploads(s3, bucket) == []


def test_a_dry_run_neither_checks_nor_leaves_a_mark(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree(tmp_path / "src", {"a.txt": b"a"})
    backup(conn, root, bucket)
    interrupted_backup(conn, root, bucket, monkeypatch)
    s3.create_multipart_upload(Bucket=bucket, Key="data/big.bin")
    calls = count_calls(conn.client)
    s3common.backup(conn, str(root), bucket=bucket, prefix="data", dry_run=True)
    assert "ListMultipartUploads" not in calls
    backup(conn, root, bucket)
    assert calls["AbortMultipartUpload"] == 1


@pytest.mark.skipif(sys.platform == "win32", reason="live runs are told by a POSIX lock")
def test_a_live_concurrent_run_does_not_trigger_the_check(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run of the same backup still going (its marker locked) is not a killed one."""
    root = make_tree(tmp_path / "src", {"a.txt": b"a"})
    backup(conn, root, bucket)
    s3.create_multipart_upload(Bucket=bucket, Key="data/big.bin")
    checked: list[int] = []

    def concurrent(*args: Any, **kwargs: Any) -> Any:
        # The outer run is mid-way (its marker written) when this one starts and ends.
        if not checked:
            calls = count_calls(conn.client)
            checked.append(0)
            inner = backup(conn, root, bucket)
            checked[0] = calls["ListMultipartUploads"]
            assert inner.exit_code == 0
        return scan_tree(*args, **kwargs)

    from ass3 import scan

    scan_tree = scan.scan_tree
    monkeypatch.setattr("ass3.scan.scan_tree", concurrent)
    backup(conn, root, bucket)
    assert checked == [0]
    assert len(open_uploads(s3, bucket)) == 1


def parts_on_server(server: Any, bucket: str) -> int:
    uploads = open_uploads(server, bucket)
    if not uploads:
        return 0
    upload = uploads[0]
    listed = server.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    return len(listed.get("Parts", []))


def five_part_tree(tmp_path: Path) -> bytes:
    # 40 MiB: five parts of the scripts' 8 MiB.
    content = os.urandom(40 * MiB)
    make_tree(tmp_path / "data", {"big.bin": content, "small.txt": b"small"})
    return content


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_big_upload_stopped_after_two_parts_is_resumed_by_the_next_run(
    tmp_path: Path, bucket: str, script_env: dict[str, str], server: Any, sig: signal.Signals
) -> None:
    """Killed, or stopped by SIGTERM after two parts were sent: the upload stays, and
    the next run sends the three other parts only, and completes it."""
    content = five_part_tree(tmp_path)
    with held_backup(tmp_path, bucket, script_env, let_through=2) as (proc, args):
        wait_for(proc, lambda: parts_on_server(server, bucket) >= 2, "the parts")
        proc.send_signal(sig)
        proc.communicate(timeout=60)
    sent = parts_on_server(server, bucket)
    assert sent >= 2  # after SIGTERM the held part may go too, as the run cancels
    assert len(open_uploads(server, bucket)) == 1

    result = run_script("ass3Backup.py", *args, "-v", "--json", env=script_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    requests = json.loads(result.stdout)["requests"]
    assert f"resuming the upload of data/big.bin: {5 - sent} of 5 parts to send" in result.stderr
    # Every attempt counts: a retry (a busy machine) adds one, never the parts S3 holds.
    assert 5 - sent <= requests["UploadPart"] < 5, result.stderr
    assert (requests["ListParts"], requests.get("CreateMultipartUpload", 0)) == (1, 0)
    assert "aborted" not in result.stderr
    assert open_uploads(server, bucket) == []
    stored = server.get_object(Bucket=bucket, Key="data/big.bin")
    assert stored["Body"].read() == content
    assert stored["Metadata"]["md5"] == hashlib.md5(content).hexdigest()


@pytest.mark.slow
def test_kill_9_before_any_part_then_the_next_run_resumes_from_nothing(
    tmp_path: Path, bucket: str, script_env: dict[str, str], server: Any
) -> None:
    """Killed before a part was sent: the upload is recorded all the same (a kill gives
    no time to abort it); the next run finds it by its UploadId and sends every part."""
    big_tree(tmp_path)
    with held_backup(tmp_path, bucket, script_env) as (proc, args):
        # Held at the first part: past CreateMultipartUpload, whose answer is recorded.
        wait_for(proc, (tmp_path / "holding").exists, "the part")
        proc.kill()
        proc.communicate()
    assert len(open_uploads(server, bucket)) == 1

    # The moto server reports every upload as started in 2010: only the state cache's
    # word spares it from the cleanup after the killed run.
    result = run_script("ass3Backup.py", *args, "-v", env=script_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "resuming the upload of data/big.bin: 2 of 2 parts to send" in result.stderr
    assert "aborted" not in result.stderr
    assert open_uploads(server, bucket) == []
    assert "uploaded 2 files" in result.stdout


@pytest.mark.slow
def test_kill_9_then_a_run_without_the_state_cache_aborts_the_upload(
    tmp_path: Path, bucket: str, script_env: dict[str, str], server: Any
) -> None:
    big_tree(tmp_path)
    with held_backup(tmp_path, bucket, script_env, let_through=1) as (proc, args):
        wait_for(proc, lambda: parts_on_server(server, bucket) >= 1, "the part")
        proc.kill()
        proc.communicate()
    state = Path(script_env["XDG_CACHE_HOME"]) / "ass3"
    for name in ("state.sqlite3", "state.sqlite3-wal", "state.sqlite3-shm"):
        (state / name).unlink(missing_ok=True)  # the state cache is lost; the markers stay

    result = run_script("ass3Backup.py", *args, "-v", env=script_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "aborted 1 incomplete upload left under data/ by an interrupted run" in result.stderr
    assert open_uploads(server, bucket) == []
    assert "uploaded 2 files" in result.stdout
