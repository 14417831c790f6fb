"""Resumable big uploads: a run interrupted after some parts of a big file were sent
keeps its multipart upload, and the next run sends only the parts missing.

The rules (is the recorded upload still this file's, which parts to send again) are
tested on literals; the rest on moto, with runs stopped after the Nth part by a
SIGINT delivered to the main thread as a terminal's Ctrl-C is.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ConnectionClosedError
from helpers import backup, count_calls, make_tree, open_uploads
from hypothesis import given
from hypothesis import strategies as st

import s3common
from ass3.resumable import (
    ListedPart,
    PendingUpload,
    UploadJournal,
    part_count,
    parts_to_send,
    resume_refusal,
    spared_uploads,
)
from s3common import Connection

MiB = s3common.MiB
PART = 5 * MiB
SIZE = 23 * MiB  # five parts: four of 5 MiB and one of 3 MiB


# --- the rules, on literals -----------------------------------------------------------------

MD5S = (b"\x01" * 16, b"\x02" * 16, b"\x03" * 16)
RECORDED = PendingUpload("data/f", "id", 10, 25, 7, 42, "{}", MD5S, 0.0)
NOW = {
    "size": 25,
    "mtime_ns": 7,
    "inode": 42,
    "part_size": 10,
    "args": "{}",
    "part_md5s": MD5S,
}


def test_the_recorded_upload_is_resumed_only_for_the_same_file_cut_the_same_way() -> None:
    assert resume_refusal(RECORDED, **NOW) is None  # type: ignore[arg-type]
    changes: list[tuple[str, object, str]] = [
        ("size", 26, "the file changed since"),
        ("mtime_ns", 8, "the file changed since"),
        ("inode", 43, "the file changed since"),
        ("part_size", 20, "the part size changed since"),
        ("args", '{"StorageClass": "GLACIER_IR"}', "the upload options"),
        ("part_md5s", (MD5S[0], MD5S[1], b"\x09" * 16), "the file's content changed since"),
    ]
    for name, value, reason in changes:
        refusal = resume_refusal(RECORDED, **{**NOW, name: value})  # type: ignore[arg-type]
        assert refusal is not None and refusal.startswith(reason), name


def part(number: int, md5: bytes, size: int = 10) -> ListedPart:
    return ListedPart(number, f'"{md5.hex()}"', size, {})


def test_parts_whose_etag_is_the_md5_of_the_same_bytes_are_kept() -> None:
    listed = [part(1, MD5S[0]), part(3, MD5S[2], size=5)]
    assert parts_to_send(listed, MD5S, size=25, part_size=10) == [2]
    corrupt = [part(1, b"\x07" * 16), part(2, MD5S[1]), part(3, MD5S[2], size=5)]
    assert parts_to_send(corrupt, MD5S, size=25, part_size=10) == [1]
    assert parts_to_send([], MD5S, size=25, part_size=10) == [1, 2, 3]


def test_a_listing_that_cannot_be_of_this_file_is_refused() -> None:
    out_of_range = [part(4, MD5S[0])]
    assert parts_to_send(out_of_range, MD5S, size=25, part_size=10) is None
    assert parts_to_send([part(0, MD5S[0])], MD5S, size=25, part_size=10) is None
    wrong_length = [part(3, MD5S[2], size=10)]  # the last part is 5 bytes long
    assert parts_to_send(wrong_length, MD5S, size=25, part_size=10) is None
    assert parts_to_send([], MD5S, size=25, part_size=5) is None  # other parts altogether


@given(st.integers(1, 1000), st.integers(1, 100), st.data())
def test_every_part_is_either_kept_or_sent(size: int, part_size: int, data: Any) -> None:
    count = part_count(size, part_size)
    md5s = tuple(hashlib.md5(str(n).encode()).digest() for n in range(count))
    kept = data.draw(st.sets(st.integers(1, count)))
    listed = [part(n, md5s[n - 1], size=min(part_size, size - (n - 1) * part_size)) for n in kept]
    missing = parts_to_send(listed, md5s, size=size, part_size=part_size)
    assert missing is not None
    assert sorted(set(missing) | kept) == list(range(1, count + 1))
    assert not set(missing) & kept


def test_uploads_to_resume_are_spared_by_the_cleanup_for_seven_days() -> None:
    young = PendingUpload("k", "young", 1, 1, 1, 1, "", (), started=1000.0)
    old = PendingUpload("k2", "old", 1, 1, 1, 1, "", (), started=1000.0 - 7 * 86400)
    assert spared_uploads([young, old], now=1000.0 + 6.9 * 86400) == {"young"}
    assert spared_uploads([young, old], now=1000.0 + 7 * 86400) == set()


def test_the_journal_keeps_uploads_per_scope_and_machine(tmp_path: Path) -> None:
    path = str(tmp_path / "state.sqlite3")
    upload = PendingUpload("data/f", "id", 10, 25, 7, 42, "{}", MD5S, 5.0)
    with UploadJournal(path, "e|b|data", host="here") as journal:
        assert journal.save(upload)
        assert journal.find("data/f") == upload
    with UploadJournal(path, "e|other|data", host="here") as journal:
        assert journal.find("data/f") is None and journal.pending() == []
    with UploadJournal(path, "e|b|data", host="elsewhere") as journal:
        assert journal.find("data/f") is None and journal.pending() == []
    with UploadJournal(path, "e|b|data", host="here") as journal:
        assert journal.pending() == [upload]
        journal.forget("data/f", "another id")
        assert journal.pending() == [upload]
        journal.forget("data/f", "id")
        assert journal.pending() == []


def test_an_unusable_journal_records_nothing(tmp_path: Path) -> None:
    (tmp_path / "state.sqlite3").write_bytes(b"not a database" * 100)
    with UploadJournal(str(tmp_path / "state.sqlite3"), "s", host="h") as journal:
        assert not journal.usable
        assert not journal.save(RECORDED)
        assert journal.find("data/f") is None


# --- on moto: interrupted, then resumed -----------------------------------------------------


@pytest.fixture
def conn1(s3: object) -> Connection:
    """One part at a time, so that a run stopped after the Nth part sent exactly N."""
    return Connection(workers=1, multipart_threshold=PART, multipart_chunksize=PART)


class PartsSent:
    """Counts the parts S3 accepted and the bytes they held; Ctrl-C after the Nth."""

    def __init__(self, conn: Connection, *, stop_after: int | None = None) -> None:
        self.count = 0
        self.bytes = 0
        self.stop_after = stop_after
        self._lock = threading.Lock()
        conn.client.meta.events.register("before-parameter-build.s3.UploadPart", self._size)
        conn.client.meta.events.register("after-call.s3.UploadPart", self._done)

    def _size(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["test_size"] = len(params["Body"])  # bytes, or s3transfer's ReadFileChunk

    def _done(self, http_response: Any, context: dict[str, Any], **_: Any) -> None:
        if http_response.status_code != 200:
            return
        with self._lock:
            self.count += 1
            self.bytes += context["test_size"]
            stop = self.count == self.stop_after
        if stop:  # as a terminal's Ctrl-C: a real signal wakes the main thread
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
            time.sleep(0.2)


def interrupted(conn: Connection, root: Path, bucket: str, after: int) -> PartsSent:
    parts = PartsSent(conn, stop_after=after)
    with pytest.raises(KeyboardInterrupt):
        backup(conn, root, bucket)
    return parts


def run_again(
    conn: Connection, root: Path, bucket: str
) -> tuple[s3common.Summary, PartsSent, Counter[str]]:
    """The run after an interrupted one: its summary, the parts it sent, its requests."""
    calls = count_calls(conn.client)
    again = PartsSent(conn)
    return backup(conn, root, bucket), again, calls


@pytest.fixture
def big(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "src", {"big.bin": os.urandom(SIZE), "small.txt": b"small"})


def assert_backed_up(s3: Any, bucket: str, root: Path) -> None:
    content = (root / "big.bin").read_bytes()
    got = s3.get_object(Bucket=bucket, Key="data/big.bin")
    assert got["Body"].read() == content
    assert got["Metadata"]["md5"] == hashlib.md5(content).hexdigest()
    assert got["Metadata"]["mtime"] == str((root / "big.bin").stat().st_mtime_ns)
    assert open_uploads(s3, bucket) == []


@pytest.mark.usefixtures("sigint_raises")
def test_a_run_stopped_after_two_parts_is_resumed_with_the_three_others(
    conn1: Connection, s3: Any, bucket: str, big: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = interrupted(conn1, big, bucket, after=2)
    assert first.count == 2
    assert len(open_uploads(s3, bucket)) == 1  # kept for the next run

    calls = count_calls(conn1.client)
    again = PartsSent(conn1)
    with caplog.at_level(logging.INFO, logger="ass3"):
        summary = backup(conn1, big, bucket)
    assert (summary.exit_code, summary.transferred) == (0, 2)
    assert (again.count, again.bytes) == (3, SIZE - 2 * PART)
    assert calls["CreateMultipartUpload"] == 0
    assert (calls["ListParts"], calls["CompleteMultipartUpload"]) == (1, 1)
    assert calls["AbortMultipartUpload"] == 0
    assert "resuming the upload of data/big.bin: 3 of 5 parts to send" in caplog.messages
    assert_backed_up(s3, bucket, big)

    # Nothing left to resume: the next runs ask nothing about uploads.
    make_tree(big, {"other.txt": b"other"})
    calls.clear()
    assert backup(conn1, big, bucket).transferred == 1
    assert not {"ListParts", "ListMultipartUploads"} & set(calls)


def test_runs_with_nothing_to_resume_send_no_extra_request(
    conn: Connection, s3: Any, bucket: str, big: Path
) -> None:
    calls = count_calls(conn.client)
    backup(conn, big, bucket)
    (big / "big.bin").write_bytes(os.urandom(SIZE))
    backup(conn, big, bucket)
    assert calls["CreateMultipartUpload"] == 2
    assert not {"ListParts", "ListMultipartUploads", "AbortMultipartUpload"} & set(calls)


@pytest.mark.usefixtures("sigint_raises")
def test_a_file_changed_between_runs_is_sent_afresh_and_the_kept_upload_aborted(
    conn1: Connection, s3: Any, bucket: str, big: Path
) -> None:
    interrupted(conn1, big, bucket, after=2)
    (kept,) = [upload["UploadId"] for upload in open_uploads(s3, bucket)]
    (big / "big.bin").write_bytes(os.urandom(SIZE))

    summary, again, calls = run_again(conn1, big, bucket)
    assert summary.exit_code == 0
    assert again.count == 5
    assert (calls["CreateMultipartUpload"], calls["AbortMultipartUpload"]) == (1, 1)
    assert calls["ListParts"] == 0  # the file told: no need to ask
    assert_backed_up(s3, bucket, big)
    assert kept not in {upload["UploadId"] for upload in open_uploads(s3, bucket)}


@pytest.mark.usefixtures("sigint_raises")
def test_a_part_whose_etag_does_not_match_is_sent_again(
    conn1: Connection, s3: Any, bucket: str, big: Path
) -> None:
    interrupted(conn1, big, bucket, after=3)

    def corrupt(parsed: dict[str, Any], **_: Any) -> None:
        parsed["Parts"][1]["ETag"] = '"' + "0" * 32 + '"'  # part 2 holds other bytes

    conn1.client.meta.events.register("after-call.s3.ListParts", corrupt)
    summary, again, _ = run_again(conn1, big, bucket)
    assert summary.exit_code == 0
    assert again.count == 3  # parts 2, 4 and 5
    assert_backed_up(s3, bucket, big)


@pytest.mark.usefixtures("sigint_raises")
def test_a_listing_of_parts_that_are_not_of_this_file_aborts_and_starts_afresh(
    conn1: Connection, s3: Any, bucket: str, big: Path
) -> None:
    interrupted(conn1, big, bucket, after=2)

    def wrong_size(parsed: dict[str, Any], **_: Any) -> None:
        parsed["Parts"][0]["Size"] = 1

    conn1.client.meta.events.register("after-call.s3.ListParts", wrong_size)
    summary, again, calls = run_again(conn1, big, bucket)
    assert summary.exit_code == 0
    assert again.count == 5
    assert (calls["AbortMultipartUpload"], calls["CreateMultipartUpload"]) == (1, 1)
    assert_backed_up(s3, bucket, big)


@pytest.mark.usefixtures("sigint_raises")
def test_an_upload_aborted_by_someone_else_is_sent_afresh(
    conn1: Connection, s3: Any, bucket: str, big: Path
) -> None:
    interrupted(conn1, big, bucket, after=2)
    for upload in open_uploads(s3, bucket):
        s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])

    summary, again, calls = run_again(conn1, big, bucket)
    assert (summary.exit_code, again.count) == (0, 5)
    assert (calls["ListParts"], calls["CreateMultipartUpload"]) == (1, 1)
    assert_backed_up(s3, bucket, big)


@pytest.mark.usefixtures("sigint_raises")
def test_a_state_cache_of_another_machine_is_ignored(
    conn1: Connection,
    s3: Any,
    bucket: str,
    big: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    interrupted(conn1, big, bucket, after=2)
    monkeypatch.setattr("socket.gethostname", lambda: "another-machine")
    summary, again, calls = run_again(conn1, big, bucket)
    assert summary.exit_code == 0
    assert again.count == 5
    assert (calls["ListParts"], calls["CreateMultipartUpload"]) == (0, 1)
    # Not this machine's to resume: the cleanup after the unclean run aborted it
    # (moto reports every upload as started in 2010).
    assert calls["AbortMultipartUpload"] == 1
    assert_backed_up(s3, bucket, big)


@pytest.mark.usefixtures("sigint_raises")
def test_a_state_cache_of_another_bucket_is_ignored(
    conn1: Connection, s3: Any, bucket: str, big: Path
) -> None:
    interrupted(conn1, big, bucket, after=2)
    other = bucket + "-2"
    summary, again, calls = run_again(conn1, big, other)
    assert summary.exit_code == 0
    assert again.count == 5
    assert (calls["ListParts"], calls["CreateMultipartUpload"]) == (0, 1)
    assert len(open_uploads(s3, bucket)) == 1  # still there for a run to that bucket


@pytest.mark.usefixtures("sigint_raises")
def test_the_cleanup_after_an_unclean_run_spares_an_upload_to_resume_for_seven_days(
    conn1: Connection, s3: Any, bucket: str, big: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto reports every upload as started in 2010: without the state cache's word,
    the cleanup would abort it."""
    interrupted(conn1, big, bucket, after=2)
    db = sqlite3.connect(os.path.join(os.environ["XDG_CACHE_HOME"], "ass3", "state.sqlite3"))
    # Another file is what the next run uploads: the kept upload is the cleanup's alone.
    monkeypatch.setattr("ass3.upload._put_large", _refuse)
    calls = count_calls(conn1.client)
    backup(conn1, big, bucket)
    assert (calls["ListMultipartUploads"], calls["AbortMultipartUpload"]) == (1, 0)
    assert len(open_uploads(s3, bucket)) == 1

    with db:
        db.execute("UPDATE uploads SET started = started - 7 * 86400")
    calls.clear()
    backup(conn1, big, bucket)
    assert (calls["ListMultipartUploads"], calls["AbortMultipartUpload"]) == (1, 1)
    assert open_uploads(s3, bucket) == []


def _refuse(*_: Any, **__: Any) -> Any:
    raise s3common.FileProblem("not this run")


@pytest.mark.usefixtures("sigint_raises")
def test_an_upload_stopped_before_any_part_was_sent_is_aborted(
    conn1: Connection, s3: Any, bucket: str, big: Path
) -> None:
    def stop(**_: Any) -> None:
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        time.sleep(0.2)
        raise ConnectionError("the part never made it")

    conn1.client.meta.events.register_first("before-send.s3.UploadPart", stop)
    with pytest.raises(KeyboardInterrupt):
        backup(conn1, big, bucket)
    assert open_uploads(s3, bucket) == []
    conn1.client.meta.events.unregister("before-send.s3.UploadPart", stop)
    calls = count_calls(conn1.client)
    backup(conn1, big, bucket)
    assert calls["ListParts"] == 0  # nothing recorded to resume


@pytest.mark.usefixtures("instant_backoff")
def test_a_connection_lost_after_two_parts_keeps_the_upload_for_the_next_run(
    conn1: Connection, s3: Any, bucket: str, big: Path
) -> None:
    """The network goes after two parts: the file fails (exit 1), its upload stays, and
    the next run sends the three other parts."""
    let_through = [2]

    def drop(request: Any, **_: Any) -> None:
        if let_through[0]:
            let_through[0] -= 1
            return
        raise ConnectionClosedError(endpoint_url=request.url)

    conn1.client.meta.events.register_first("before-send.s3.UploadPart", drop)
    summary = backup(conn1, big, bucket)
    assert [name for name, _ in summary.failures] == ["big.bin"]
    assert len(open_uploads(s3, bucket)) == 1
    conn1.client.meta.events.unregister("before-send.s3.UploadPart", drop)

    summary, again, _ = run_again(conn1, big, bucket)
    assert (summary.exit_code, again.count) == (0, 3)
    assert_backed_up(s3, bucket, big)
