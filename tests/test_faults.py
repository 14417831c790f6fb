"""Faults lose nothing: throttling, dropped connections, corruption, full disks and kills.

Faults are injected into botocore's real request path (a `before-send` handler that
answers or raises in place of the HTTP send), so botocore's own retry logic runs;
kills and Ctrl-C hit real script processes talking to the moto server over HTTP.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import re
import signal
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError, ConnectionClosedError
from helpers import (
    PROJECT,
    backup,
    canned_response,
    count_calls,
    make_tree,
    open_uploads,
    read_tree,
    run_python,
    run_script,
    start_python,
)
from moto.moto_server.werkzeug_app import MotoRequestHandler
from moto.s3.models import s3_backends
from s3transfer.futures import TransferCoordinator
from urllib3.exceptions import ProtocolError
from werkzeug.serving import ThreadedWSGIServer

import ass3Backup
import s3common
from s3common import Connection

# Many tests here kill or interrupt script processes; the rest retry big transfers.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("instant_backoff")]

MiB = s3common.MiB
BIG = 11 * MiB  # three 5 MiB parts with the test Connection
TEMP_GLOB = ".ass3-*"  # the tool's temporary names, and anything derived from them


# --- Injecting faults -----------------------------------------------------------------------


def slow_down(request: Any) -> AWSResponse:
    """A 503 SlowDown answer, which the request never gets past.

    The request's URL is pointed away, so moto's stubber (the next before-send
    handler) does not perform the operation behind the answer's back.
    """
    url = request.url
    request.url = "http://fault.invalid/"
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
        b"<Message>Please reduce your request rate.</Message></Error>"
    )
    return canned_response(url, 503, body, "application/xml")


def drop_connection(request: Any) -> None:
    """The connection closes before any answer (nothing reaches the backend)."""
    raise ConnectionClosedError(endpoint_url=request.url)


class Fault:
    """A before-send handler failing the first `times` matching requests (None: all)."""

    def __init__(
        self,
        fail: Callable[[Any], Any],
        *,
        times: int | None = None,
        key: str | None = None,
        ranged: bool | None = None,
    ) -> None:
        self.fail = fail
        self.times = times
        self.key = key
        self.ranged = ranged
        self.hits = 0
        self._lock = threading.Lock()

    def matches(self, request: Any) -> bool:
        path = request.url.split("?", 1)[0]
        if self.key is not None and not path.endswith("/" + self.key):
            return False
        return self.ranged is None or ("Range" in request.headers) == self.ranged

    def __call__(self, request: Any, **_: Any) -> Any:
        if not self.matches(request):
            return None
        with self._lock:
            if self.times is not None and self.hits >= self.times:
                return None
            self.hits += 1
        return self.fail(request)


def inject(conn: Connection, operation: str, fault: Fault) -> Fault:
    """Run `fault` before every other before-send handler (moto's stubber included)."""
    conn.client.meta.events.register_first(f"before-send.s3.{operation}", fault)
    return fault


def remove(conn: Connection, operation: str, fault: Fault) -> None:
    conn.client.meta.events.unregister(f"before-send.s3.{operation}", fault)


class _BreakingStream:
    """A response stream that breaks off after `good` bytes, as a reset connection does."""

    def __init__(self, raw: Any, good: int) -> None:
        self._raw = raw
        self._left = good

    def read(self, amt: int | None = None) -> bytes:
        if self._left <= 0:
            raise ProtocolError("Connection broken: IncompleteRead")
        chunk = self._raw.read(self._left if amt is None else min(amt, self._left))
        self._left -= len(chunk)
        return chunk

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class BodyBreaker:
    """An after-call handler cutting GetObject bodies of `key` off after `good` bytes.

    botocore turns the urllib3 error into ResponseStreamingError, which it does not
    retry itself: the tool (or s3transfer, for ranged GETs) must.
    """

    def __init__(self, *, key: str, times: int | None, good: int = 1000) -> None:
        self.key = key
        self.times = times
        self.good = good
        self.hits = 0
        self._lock = threading.Lock()

    def __call__(self, parsed: dict[str, Any], http_response: Any, **_: Any) -> None:
        if "Body" not in parsed or not http_response.url.split("?")[0].endswith("/" + self.key):
            return
        with self._lock:
            if self.times is not None and self.hits >= self.times:
                return
            self.hits += 1
        parsed["Body"]._raw_stream = _BreakingStream(parsed["Body"]._raw_stream, self.good)


def break_bodies(conn: Connection, breaker: BodyBreaker) -> BodyBreaker:
    conn.client.meta.events.register_first("after-call.s3.GetObject", breaker)
    return breaker


# --- Small helpers ------------------------------------------------------------------------


def restore(conn: Connection, dest: Path, bucket: str) -> s3common.Summary:
    return s3common.restore(conn, "data", bucket=bucket, destination=str(dest))


def stored(client: Any, bucket: str) -> dict[str, bytes]:
    """Every data object in the bucket (not the run records) with its bytes."""
    paginator = client.get_paginator("list_objects_v2")
    return {
        item["Key"]: client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        for page in paginator.paginate(Bucket=bucket)
        for item in page.get("Contents", [])
        if not item["Key"].startswith(".ass3/")
    }


def temporaries(root: Path) -> list[Path]:
    """Files a transfer left behind below root (none must survive a finished run)."""
    return sorted(root.rglob(TEMP_GLOB))


# --- 1, 2: throttling ------------------------------------------------------------------------


def test_slow_down_twice_then_success(conn: Connection, s3, bucket: str, tmp_path: Path) -> None:
    """Two 503s are retried by botocore: the run succeeds with the right bytes."""
    root = make_tree(tmp_path / "src", {"a.txt": b"alpha"})
    fault = inject(conn, "PutObject", Fault(slow_down, times=2))
    summary = backup(conn, root, bucket)
    assert (summary.exit_code, summary.transferred, summary.failures) == (0, 1, [])
    assert fault.hits == 2
    assert stored(s3, bucket) == {"data/a.txt": b"alpha"}


def test_slow_down_forever_fails_one_file_and_a_rerun_sends_only_it(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    """A key that never gets through is reported after every attempt; nothing else suffers."""
    files = {"a": b"one", "bad": b"two", "c/d": b"three"}
    root = make_tree(tmp_path / "src", files)
    fault = inject(conn, "PutObject", Fault(slow_down, key="data/bad"))
    summary = backup(conn, root, bucket)
    assert summary.exit_code == s3common.EXIT_FAILURES
    assert [name for name, _ in summary.failures] == ["bad"]
    assert "SlowDown" in summary.failures[0][1]
    assert fault.hits == s3common.DEFAULT_MAX_ATTEMPTS
    assert stored(s3, bucket) == {"data/a": b"one", "data/c/d": b"three"}

    remove(conn, "PutObject", fault)
    calls = count_calls(conn.client)
    again = backup(conn, root, bucket)
    assert (again.exit_code, again.transferred, again.unchanged) == (0, 1, 2)
    assert calls["PutObject"] == 2  # the one file, then the run record
    assert stored(s3, bucket) == {f"data/{rel}": data for rel, data in files.items()}


# --- 3: dropped connections during a multipart upload ----------------------------------------


def test_upload_part_dropped_once_is_retried(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    """One part's connection drops: botocore resends that part, and the object is whole."""
    data = os.urandom(BIG)
    root = make_tree(tmp_path / "src", {"big.bin": data})
    fault = inject(conn, "UploadPart", Fault(drop_connection, times=1))
    summary = backup(conn, root, bucket)
    assert (summary.exit_code, summary.transferred, summary.failures) == (0, 1, [])
    assert fault.hits == 1
    assert restore(conn, tmp_path / "out", bucket).failures == []
    assert (tmp_path / "out/data/big.bin").read_bytes() == data
    assert open_uploads(s3, bucket) == []


def test_upload_part_dropped_forever_fails_and_aborts_the_upload(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    """The failed file is reported and its multipart upload aborted, not left to bill."""
    root = make_tree(tmp_path / "src", {"big.bin": os.urandom(BIG), "small": b"s"})
    inject(conn, "UploadPart", Fault(drop_connection))
    summary = backup(conn, root, bucket)
    assert summary.exit_code == s3common.EXIT_FAILURES
    assert [name for name, _ in summary.failures] == ["big.bin"]
    assert stored(s3, bucket) == {"data/small": b"s"}
    assert open_uploads(s3, bucket) == []


# --- 4: dropped connections and broken bodies during a restore --------------------------------


@pytest.fixture
def backed_up(conn: Connection, s3, bucket: str, tmp_path: Path) -> dict[str, bytes]:
    """A small and a multipart file, backed up (no faults yet)."""
    files = {"small.txt": b"small file\n" * 100, "big.bin": os.urandom(BIG)}
    assert backup(conn, make_tree(tmp_path / "src", files), bucket).failures == []
    return files


@pytest.mark.parametrize("name", ["small.txt", "big.bin"])
def test_get_object_dropped_once_is_retried(
    conn: Connection, bucket: str, tmp_path: Path, backed_up: dict[str, bytes], name: str
) -> None:
    """A dropped GET (small: the one GET; big: its first ranged GET) is simply resent."""
    fault = inject(conn, "GetObject", Fault(drop_connection, times=1, key=f"data/{name}"))
    summary = restore(conn, tmp_path / "out", bucket)
    assert (summary.exit_code, summary.transferred, summary.failures) == (0, 2, [])
    assert fault.hits == 1
    assert read_tree(tmp_path / "out/data") == backed_up
    assert temporaries(tmp_path / "out") == []


@pytest.mark.parametrize("name", ["small.txt", "big.bin"])
def test_get_object_dropped_forever_is_reported_leaving_nothing(
    conn: Connection, bucket: str, tmp_path: Path, backed_up: dict[str, bytes], name: str
) -> None:
    """A download that never succeeds leaves neither a temporary nor a partial file."""
    inject(conn, "GetObject", Fault(drop_connection, key=f"data/{name}"))
    summary = restore(conn, tmp_path / "out", bucket)
    assert summary.exit_code == s3common.EXIT_FAILURES
    assert [failed for failed, _ in summary.failures] == [name]
    others = {rel: data for rel, data in backed_up.items() if rel != name}
    assert read_tree(tmp_path / "out/data") == others
    assert temporaries(tmp_path / "out") == []


@pytest.mark.parametrize("name", ["small.txt", "big.bin"])
def test_body_breaking_off_once_is_retried(
    conn: Connection, bucket: str, tmp_path: Path, backed_up: dict[str, bytes], name: str
) -> None:
    """A GetObject body cut off mid-stream (ResponseStreamingError) is fetched again."""
    breaker = break_bodies(conn, BodyBreaker(key=f"data/{name}", times=1))
    summary = restore(conn, tmp_path / "out", bucket)
    assert (summary.exit_code, summary.transferred, summary.failures) == (0, 2, [])
    assert breaker.hits == 1
    assert read_tree(tmp_path / "out/data") == backed_up
    assert temporaries(tmp_path / "out") == []


@pytest.mark.parametrize("name", ["small.txt", "big.bin"])
def test_body_breaking_off_always_is_reported_leaving_nothing(
    conn: Connection, bucket: str, tmp_path: Path, backed_up: dict[str, bytes], name: str
) -> None:
    """When every attempt breaks off, the file is reported and the run goes on normally."""
    break_bodies(conn, BodyBreaker(key=f"data/{name}", times=None))
    summary = restore(conn, tmp_path / "out", bucket)
    assert summary.exit_code == s3common.EXIT_FAILURES
    assert [failed for failed, _ in summary.failures] == [name]
    others = {rel: data for rel, data in backed_up.items() if rel != name}
    assert read_tree(tmp_path / "out/data") == others
    assert temporaries(tmp_path / "out") == []


def test_object_replaced_during_a_ranged_download_is_reported_not_fatal(
    conn: Connection, s3, bucket: str, tmp_path: Path
) -> None:
    """Another backup replaces an object between the restore's listing and its ranged GETs.

    Without versioning nothing pins the version, and s3transfer's If-Match turns the
    change into S3DownloadFailedError: one file reported (or restored with the new,
    verified bytes), never a crashed run.
    """
    s3.create_bucket(Bucket=bucket)  # made by someone else: no versioning
    files = {"big.bin": os.urandom(BIG), "small.txt": b"small"}
    backup(conn, make_tree(tmp_path / "src", files), bucket)
    replacement = os.urandom(BIG)

    def replace_object(request: Any) -> None:
        s3.put_object(
            Bucket=bucket,
            Key="data/big.bin",
            Body=replacement,
            Metadata={"md5": hashlib.md5(replacement).hexdigest()},
        )

    fault = inject(conn, "GetObject", Fault(replace_object, times=1, ranged=True))
    summary = restore(conn, tmp_path / "out", bucket)
    assert fault.hits == 1
    out = read_tree(tmp_path / "out" / "data")
    assert out.get("small.txt") == b"small"
    if summary.failures:
        assert [name for name, _ in summary.failures] == ["big.bin"]
        assert "big.bin" not in out
    else:
        assert out["big.bin"] == replacement
    assert temporaries(tmp_path / "out") == []


# --- 5: an object corrupted in the store -----------------------------------------------------


def corrupt(bucket: str, key: str, offset: int, *, keep_crc: bool) -> None:
    """Flip one stored byte in moto's backend, keeping the length, ETag and metadata.

    Without `keep_crc` the stored CRC32 goes too (as on a store without flexible
    checksums), so only the tool's own MD5 check stands between the bytes and the disk.
    """
    stored_key = s3_backends["123456789012"]["aws"].buckets[bucket].keys[key]
    etag = stored_key.etag
    value = bytearray(stored_key.value)
    value[offset] ^= 0xFF
    stored_key.value = bytes(value)
    assert stored_key.etag == etag and stored_key.size == len(value)
    if not keep_crc:
        stored_key.checksum_value = stored_key.checksum_algorithm = None


@pytest.mark.parametrize(
    ("name", "keep_crc"),
    [("small.txt", True), ("small.txt", False), ("big.bin", True)],
    ids=["small", "small-md5-only", "big"],
)
def test_corrupt_object_is_refused_and_the_old_local_file_kept(
    conn: Connection,
    s3,
    bucket: str,
    tmp_path: Path,
    backed_up: dict[str, bytes],
    name: str,
    keep_crc: bool,
) -> None:
    """Bad bytes (small: one GET; big: ranged GETs) never replace a file on disk."""
    head = s3.head_object(Bucket=bucket, Key=f"data/{name}")
    corrupt(bucket, f"data/{name}", len(backed_up[name]) // 2 + 1, keep_crc=keep_crc)
    assert s3.head_object(Bucket=bucket, Key=f"data/{name}")["ETag"] == head["ETag"]
    out = make_tree(tmp_path / "out" / "data", {name: b"an older version"})
    before = os.stat(out / name)

    summary = restore(conn, tmp_path / "out", bucket)
    assert summary.exit_code == s3common.EXIT_FAILURES
    [(failed, reason)] = summary.failures
    assert failed == name and "checksum" in reason.lower(), reason
    if not keep_crc or name == "big.bin":  # no CRC for botocore to check: the tool's MD5
        assert reason.startswith("checksum mismatch: expected MD5"), reason
    assert (out / name).read_bytes() == b"an older version"
    assert os.stat(out / name).st_mtime_ns == before.st_mtime_ns
    others = {rel: data for rel, data in backed_up.items() if rel != name}
    assert read_tree(out) == {**others, name: b"an older version"}
    assert temporaries(tmp_path / "out") == []


# --- 6: the disk fills up -------------------------------------------------------------------


def test_disk_full_on_one_folder_fails_its_files_only(
    conn: Connection, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC (as fsync reports a full disk) fails those files; the rest are restored."""
    files = {
        "full/small.txt": b"no room",
        "full/big.bin": os.urandom(BIG),
        "ok/a.txt": b"a",
        "ok/b.txt": b"b",
    }
    backup(conn, make_tree(tmp_path / "src", files), bucket)
    real_fsync = os.fsync
    refused: list[str] = []

    def fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if f"{os.sep}full{os.sep}" in path:
            refused.append(path)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    summary = restore(conn, tmp_path / "out", bucket)
    assert len(refused) == 2
    assert summary.exit_code == s3common.EXIT_FAILURES
    assert sorted(summary.failures) == [
        ("full/big.bin", os.strerror(errno.ENOSPC)),
        ("full/small.txt", os.strerror(errno.ENOSPC)),
    ]
    assert read_tree(tmp_path / "out" / "data") == {"ok/a.txt": b"a", "ok/b.txt": b"b"}
    assert temporaries(tmp_path / "out") == []


# --- 7: Ctrl-C in the middle of a multipart upload --------------------------------------------


@pytest.fixture
def ctrl_c(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], None]:
    """A fault delivering SIGINT to the main thread at the first part, as a terminal's
    Ctrl-C does, then holding every part until the run has cancelled its transfers,
    after which s3transfer reads no more of a part's body: the race of a real Ctrl-C,
    decided the same way on a busy machine as on an idle one (no part accepted). A real
    signal (not _thread.interrupt_main) wakes the main thread from its wait."""
    cancelled, signalled = threading.Event(), threading.Lock()
    cancel = TransferCoordinator.cancel

    def noting(self: TransferCoordinator, *args: Any, **kwargs: Any) -> None:
        cancel(self, *args, **kwargs)
        cancelled.set()

    monkeypatch.setattr(TransferCoordinator, "cancel", noting)

    def fault(request: Any) -> None:
        if signalled.acquire(blocking=False):  # once: the other parts only wait
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        assert cancelled.wait(timeout=60), "the run did not cancel its transfers"

    return fault


@pytest.mark.usefixtures("sigint_raises")
def test_ctrl_c_during_multipart_upload_aborts_it(
    conn: Connection, s3, bucket: str, tmp_path: Path, ctrl_c: Callable[[Any], None]
) -> None:
    """Ctrl-C as the first part goes: s3transfer stops reading it, no part is accepted,
    and an upload with nothing in it is aborted, not kept to resume."""
    root = make_tree(tmp_path / "src", {"big.bin": os.urandom(BIG)})
    fault = inject(conn, "UploadPart", Fault(ctrl_c))
    with pytest.raises(KeyboardInterrupt):
        backup(conn, root, bucket)
    assert fault.hits >= 1
    assert open_uploads(s3, bucket) == []
    assert object_count(s3, bucket) == 0


@pytest.mark.usefixtures("sigint_raises")
def test_ctrl_c_in_the_script_exits_130_with_one_line(
    conn: Connection,
    s3,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    ctrl_c: Callable[[Any], None],
) -> None:
    root = make_tree(tmp_path / "src", {"big.bin": os.urandom(BIG)})
    inject(conn, "UploadPart", Fault(ctrl_c))
    monkeypatch.setattr("ass3.cli.Connection", lambda **_: conn)
    assert ass3Backup.main([str(root), "--bucket", bucket]) == s3common.EXIT_INTERRUPTED
    captured = capsys.readouterr()
    assert captured.err.splitlines() == ["ass3Backup.py: interrupted"]
    assert captured.out == ""
    assert open_uploads(s3, bucket) == []


# --- 8-10: kill -9 and Ctrl-C of the real scripts -------------------------------------------

MANY = 300  # small files, one at a time with --workers 1: slow enough to kill half way


def start_script(script: str, *args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    """Start a script as a user's terminal would: with Ctrl-C (SIGINT) not ignored, even
    when this test run was started as a background job, which inherits SIGINT ignored."""
    return start_python(str(PROJECT / script), *args, env=env, cwd=cwd)


def wait_until(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 60) -> None:
    """Poll until `ready()`; the process must still be running then, or the test is moot."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"finished before the fault: {proc.communicate()}"
        assert time.monotonic() < deadline, "timed out waiting for the process"
        time.sleep(0.01)
    assert proc.poll() is None, f"finished before the fault: {proc.communicate()}"


class ToolConnections:
    """The moto server's connections that may carry the tool's requests, seen from the
    server's side: each counts from its accept until the server is done with it, unless
    its first request comes from another client (the tool's User-Agent names ass3)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._open: set[Any] = set()
        self._lock = threading.Lock()
        process_request = ThreadedWSGIServer.process_request
        finish_request = ThreadedWSGIServer.finish_request
        run_wsgi = MotoRequestHandler.run_wsgi

        def accepted(server: Any, request: Any, client_address: Any) -> None:
            with self._lock:  # in the accepting thread, before the handler's starts
                self._open.add(request)
            process_request(server, request, client_address)

        def handled(server: Any, request: Any, client_address: Any) -> None:
            try:
                finish_request(server, request, client_address)
            finally:
                self._forget(request)

        def identified(handler: Any) -> None:
            if "ass3" not in (handler.headers.get("User-Agent") or ""):
                self._forget(handler.request)
            run_wsgi(handler)

        monkeypatch.setattr(ThreadedWSGIServer, "process_request", accepted)
        monkeypatch.setattr(ThreadedWSGIServer, "finish_request", handled)
        monkeypatch.setattr(MotoRequestHandler, "run_wsgi", identified)

    def _forget(self, request: Any) -> None:
        with self._lock:
            self._open.discard(request)

    def wait_closed(self, endpoint: str, timeout: float = 30) -> None:
        """Wait until the server is done with every connection of a killed script, so a
        request it was still handling has landed (or been dropped) for good.

        A request on a new connection goes first: the server accepts connections in
        order, so once it is answered, any the script opened have been accepted.
        """
        probe = http.client.HTTPConnection(endpoint.split("://", 1)[1], timeout=timeout)
        try:
            probe.request("GET", "/")
            probe.getresponse().read()
        finally:
            probe.close()
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if not self._open:
                    return
            assert time.monotonic() < deadline, "the server kept a connection of the script open"
            time.sleep(0.01)


@pytest.fixture
def tool_connections(monkeypatch: pytest.MonkeyPatch) -> ToolConnections:
    return ToolConnections(monkeypatch)


def object_count(client: Any, bucket: str) -> int:
    try:
        return client.list_objects_v2(Bucket=bucket, Prefix="data/").get("KeyCount", 0)
    except ClientError:
        return 0  # the script has not created the bucket yet


def transferred(summary: str, verb: str) -> int:
    match = re.search(rf"{verb} (\d+) files?\b", summary)
    assert match, summary
    return int(match.group(1))


def many_files() -> dict[str, bytes]:
    return {f"d{i % 7}/f{i:03}": os.urandom(300 + i) for i in range(MANY)}


def test_kill_9_during_backup_then_rerun_sends_exactly_the_rest(
    tmp_path: Path,
    bucket: str,
    script_env: dict[str, str],
    server: Any,
    tool_connections: ToolConnections,
) -> None:
    files = many_files()
    make_tree(tmp_path / "data", files)
    args = ("data", "--bucket", bucket)
    proc = start_script("ass3Backup.py", *args, "--workers", "1", env=script_env, cwd=tmp_path)
    try:
        wait_until(proc, lambda: object_count(server, bucket) >= 30)
    finally:
        proc.kill()
        proc.communicate()
    tool_connections.wait_closed(server.meta.endpoint_url)  # a request in flight lands first
    partial = stored(server, bucket)
    assert 30 <= len(partial) < MANY
    # Whatever made it is whole: S3 writes objects all or nothing.
    assert all(data == files[key.removeprefix("data/")] for key, data in partial.items())

    result = run_script("ass3Backup.py", *args, env=script_env, cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert transferred(result.stdout, "uploaded") == MANY - len(partial)
    assert f"unchanged {len(partial)}," in result.stdout
    assert stored(server, bucket) == {f"data/{rel}": data for rel, data in files.items()}


def only_leftovers_removed(stderr: str) -> bool:
    """A re-run after a kill says which temporaries it removed, and nothing else."""
    return all(
        line.startswith("removed ") and line.endswith(" (left by an interrupted restore)")
        for line in stderr.splitlines()
    )


def test_kill_9_during_restore_leaves_only_whole_files_then_rerun_completes(
    tmp_path: Path, bucket: str, script_env: dict[str, str]
) -> None:
    files = many_files()
    make_tree(tmp_path / "data", files)
    done = run_script("ass3Backup.py", "data", "--bucket", bucket, env=script_env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    args = ("data", "--bucket", bucket, "--dest", "out")
    out = tmp_path / "out" / "data"

    def restored() -> dict[str, bytes]:
        """Files under their final names (a killed run may leave temporaries beside them)."""
        return {rel: data for rel, data in read_tree(out).items() if ".ass3-" not in rel}

    proc = start_script("ass3Restore.py", *args, "--workers", "1", env=script_env, cwd=tmp_path)
    try:
        wait_until(proc, lambda: out.is_dir() and sum(1 for _ in out.rglob("f*")) >= 30)
    finally:
        proc.kill()
        proc.communicate()
    partial = restored()
    assert 30 <= len(partial) < MANY
    assert all(data == files[rel] for rel, data in partial.items())

    result = run_script("ass3Restore.py", *args, env=script_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert only_leftovers_removed(result.stderr)
    assert transferred(result.stdout, "downloaded") == MANY - len(partial)
    assert read_tree(out) == files
    assert temporaries(tmp_path / "out") == []


KILL_MID_DOWNLOAD = """
import os, signal, sys, time
sys.path.insert(0, {project!r})
import ass3Restore, s3common

dest = {dest!r}
make_client = s3common.Connection._client
ranged = []


def landed() -> int:
    return sum(
        os.path.getsize(os.path.join(folder, name))
        for folder, _, names in os.walk(dest) for name in names
    )


def kill_on_second_range(request, **_):
    if "Range" in request.headers:
        ranged.append(request.headers["Range"])
        if len(ranged) == 2:
            deadline = time.monotonic() + 10
            while not landed() and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGKILL)


def client(self, service):
    made = make_client(self, service)
    made.meta.events.register_first("before-send.s3.GetObject", kill_on_second_range)
    return made


s3common.Connection._client = client
sys.exit(ass3Restore.main(sys.argv[1:]))
"""


def test_kill_9_during_a_multipart_download_leaves_no_litter(
    tmp_path: Path, bucket: str, script_env: dict[str, str]
) -> None:
    """Killed once the first of two ranged GETs has landed: the next restore cleans up.

    The kill is deterministic: the script itself SIGKILLs before its second ranged GET.
    """
    files = {"big.bin": os.urandom(12 * MiB), "small.txt": b"small"}
    make_tree(tmp_path / "data", files)
    done = run_script("ass3Backup.py", "data", "--bucket", bucket, env=script_env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    args = ["data", "--bucket", bucket, "--dest", "out", "--workers", "1"]
    driver = textwrap.dedent(KILL_MID_DOWNLOAD).format(
        project=str(PROJECT), dest=str(tmp_path / "out")
    )
    killed = run_python("-c", driver, *args, env=script_env, cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "out/data/big.bin").exists()

    result = run_script("ass3Restore.py", *args, env=script_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert only_leftovers_removed(result.stderr)
    assert temporaries(tmp_path / "out") == []
    assert read_tree(tmp_path / "out" / "data") == files


def test_sigint_during_a_big_upload_exits_130_and_keeps_or_aborts_it(
    tmp_path: Path, bucket: str, script_env: dict[str, str], server: Any
) -> None:
    """Ctrl-C lands before or after the first part is sent: an upload with no part is
    aborted, one with parts kept for the next run, which then sends only the others."""
    with open(tmp_path / "big.bin", "wb") as out:
        for _ in range(60):
            out.write(os.urandom(MiB))
    (tmp_path / "data").mkdir()
    os.replace(tmp_path / "big.bin", tmp_path / "data" / "big.bin")

    def uploading() -> bool:
        try:
            return bool(open_uploads(server, bucket))
        except ClientError:
            return False

    args = ("data", "--bucket", bucket, "--workers", "1")
    proc = start_script("ass3Backup.py", *args, env=script_env, cwd=tmp_path)
    try:
        wait_until(proc, uploading)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == s3common.EXIT_INTERRUPTED, stderr
    assert "Traceback" not in stderr
    assert stderr.splitlines() == ["ass3Backup.py: interrupted"]
    assert stdout == ""
    assert object_count(server, bucket) == 0
    left = open_uploads(server, bucket)
    sent = 0
    for upload in left:
        parts = server.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        sent = len(parts.get("Parts", []))
        assert sent >= 1  # never an upload kept with nothing in it
    assert len(left) <= 1

    result = run_script("ass3Backup.py", *args, "--json", env=script_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    requests = json.loads(result.stdout)["requests"]
    # 60 MiB in parts of 8 MiB; every attempt counts, so a retry would add one.
    assert requests["UploadPart"] >= 8 - sent
    assert requests.get("CreateMultipartUpload", 0) == (0 if sent else 1)
    assert requests.get("ListParts", 0) == (1 if sent else 0)
    assert open_uploads(server, bucket) == []
    assert object_count(server, bucket) == 1
