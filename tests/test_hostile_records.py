"""Run records planted by whoever can write the bucket: wrong types, unsafe names, bombs,
truncated or undecodable streams, names that are not run ids, dates in the future.

A bad record is skipped with one warning line and the newest good one is used instead;
naming one with --run is a one-line error, exit 2. The hostile object is planted with the
plain boto3 client, and the tool is driven through s3common and the scripts' main().
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import subprocess
import sys
import tracemalloc
import zlib
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers import PROJECT, back_up_exactly, count_calls, read_tree, restored
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

import ass3Restore
import s3common
from ass3 import history, records, timeline
from ass3.model import RecordEntry
from ass3.records import new_run_id
from s3common import Connection

UTC = timezone.utc
RUN_1 = {"a.txt": b"one", "b.txt": b"bee"}
RUN_2 = {"a.txt": b"two", "b.txt": b"bee"}
BAD = "run record"  # what every warning about a skipped record says


def etag(content: bytes) -> str:
    return hashlib.md5(content).hexdigest()


def run_id_at(moment: datetime) -> str:
    return new_run_id(moment)


def document(run_id: str, files: list[list[Any]] | None = None) -> dict[str, Any]:
    """A record as ass3 writes it, for the tests to spoil."""
    return {
        "format": 1,
        "run": run_id,
        "source": "/src/data",
        "uploaded": 2,
        "deleted": 0,
        "failed": 0,
        "versioned": True,
        "files": files
        if files is not None
        else [
            ["a.txt", 3, etag(b"one"), etag(b"one"), "v-a"],
            ["b.txt", 3, etag(b"bee"), etag(b"bee"), "v-b"],
        ],
    }


def gz(value: Any) -> bytes:
    return gzip.compress(json.dumps(value).encode("utf-8"), mtime=0)


def plant(s3: Any, bucket: str, run_id: str, body: bytes) -> None:
    s3.put_object(Bucket=bucket, Key=s3common.record_key("data", run_id), Body=body)


def spoiled(change: Callable[[dict[str, Any]], object]) -> Callable[[str], bytes]:
    """A payload maker: the record of `run_id`, changed by `change`, gzipped."""

    def make(run_id: str) -> bytes:
        value = document(run_id)
        replaced = change(value)
        return gz(value if replaced is None else replaced)

    return make


def _set(path: tuple[Any, ...], new: Any) -> Callable[[dict[str, Any]], None]:
    def change(value: dict[str, Any]) -> None:
        target: Any = value
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = new

    return change


def _drop(field: str) -> Callable[[dict[str, Any]], None]:
    return lambda value: value.pop(field) and None


def _truncated(run_id: str) -> bytes:
    whole = gz(document(run_id))
    return whole[: len(whole) // 2]


def _not_utf8(run_id: str) -> bytes:
    text = json.dumps(document(run_id)).replace("a.txt", "a\udcff.txt")
    return gzip.compress(text.encode("utf-8", "surrogateescape"), mtime=0)


# Each: (id, payload maker). Every one of them is a record the tool must not trust.
HOSTILE = [
    ("uploaded-a-string", spoiled(_set(("uploaded",), "many"))),
    ("versioned-a-string", spoiled(_set(("versioned",), "yes"))),
    ("size-a-string", spoiled(_set(("files", 0, 1), "3"))),
    ("size-negative", spoiled(_set(("files", 0, 1), -1))),
    ("size-a-float", spoiled(_set(("files", 0, 1), 3.0))),
    ("files-an-object", spoiled(_set(("files",), {"a.txt": 3}))),
    ("line-too-short", spoiled(_set(("files", 0), ["a.txt", 3, "", "e"]))),
    ("line-too-long", spoiled(_set(("files", 0), ["a.txt", 3, "", "e", None, "x"]))),
    ("md5-not-hex", spoiled(_set(("files", 0, 2), "not an md5"))),
    ("etag-with-a-quote", spoiled(_set(("files", 0, 3), 'x" y'))),
    ("missing-files", spoiled(_drop("files"))),
    ("missing-run", spoiled(_drop("run"))),
    ("missing-versioned", spoiled(_drop("versioned"))),
    ("extra-field", spoiled(_set(("comment",), "hello"))),
    ("rel-dot-dot", spoiled(_set(("files", 0, 0), "../x"))),
    ("rel-absolute", spoiled(_set(("files", 0, 0), "/etc/passwd"))),
    ("rel-control-character", spoiled(_set(("files", 0, 0), "a\x1b]0;x\x07"))),
    ("files-out-of-order", spoiled(lambda value: value["files"].reverse())),
    ("run-of-another-record", spoiled(_set(("run",), "20200101T000000.000000Z-abcdef"))),
    ("a-list", spoiled(lambda value: [value])),
    ("format-2-without-a-tree", spoiled(_set(("format",), 2))),
    ("format-3", spoiled(_set(("format",), 3))),
    ("not-json", lambda run_id: gzip.compress(b"{not json", mtime=0)),
    ("not-utf-8", _not_utf8),
    ("not-gzip", lambda run_id: json.dumps(document(run_id)).encode()),
    ("truncated-gzip", _truncated),
]
HOSTILE_IDS = [name for name, _ in HOSTILE]
PAYLOADS = [payload for _, payload in HOSTILE]
# One of each kind through S3 (every one of HOSTILE is read on literals further down).
THROUGH_S3 = [
    "size-a-string",
    "missing-files",
    "extra-field",
    "rel-dot-dot",
    "rel-absolute",
    "a-list",
    "not-utf-8",
    "truncated-gzip",
]


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelname == "WARNING" and text in record.getMessage()
    ]


# --- --runs -------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [dict(HOSTILE)[name] for name in THROUGH_S3], ids=THROUGH_S3)
def test_runs_skips_a_bad_record_with_one_warning(
    conn: Connection,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    payload: Callable[[str], bytes],
) -> None:
    """--runs lists only records a restore could use; the bad one is one warning line
    on stderr that names it, so --runs --json stays the documented shape."""
    good = back_up_exactly(conn, tmp_path / "src", bucket, RUN_1)
    bad = run_id_at(s3common.run_time(good) + timedelta(milliseconds=1))
    plant(s3, bucket, bad, payload(bad))
    lines = s3common.format_runs(conn, bucket, "data")
    assert [line.split()[0] for line in lines] == [good]
    (warning,) = warnings_about(caplog, bad)
    assert warning.startswith(f"warning: skipped {BAD} {bad}")
    assert "\n" not in warning


def test_runs_through_main_is_exit_0_and_one_warning_line(
    s3: Any, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = s3common.Connection(workers=2)
    good = back_up_exactly(conn, tmp_path / "src", bucket, RUN_1)
    bad = run_id_at(s3common.run_time(good) + timedelta(milliseconds=1))
    plant(s3, bucket, bad, gz([]))
    capsys.readouterr()
    assert ass3Restore.main(["data", "--bucket", bucket, "--runs", "--json"]) == 0
    out, err = capsys.readouterr()
    assert [run["run_id"] for run in json.loads(out)] == [good]
    (line,) = err.splitlines()
    assert line.startswith(f"warning: skipped {BAD} {bad}")
    assert "Traceback" not in err


# --- --run ID naming a bad record ---------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "when"),
    [
        (spoiled(lambda value: [value]), timedelta(milliseconds=1)),  # a list: no .get()
        (spoiled(_set(("files", 0, 0), "../x")), timedelta(milliseconds=1)),
        (_truncated, timedelta(milliseconds=1)),
        (spoiled(lambda value: None), timedelta(days=30)),  # well-formed, from the future
    ],
    ids=["a-list", "rel-dot-dot", "truncated-gzip", "future"],
)
def test_run_naming_a_bad_record_is_one_line_and_exit_2(
    s3: Any,
    bucket: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    payload: Callable[[str], bytes],
    when: timedelta,
) -> None:
    conn = s3common.Connection(workers=2)
    good = back_up_exactly(conn, tmp_path / "src", bucket, RUN_1)
    bad = run_id_at(s3common.run_time(good) + when)
    plant(s3, bucket, bad, payload(bad))
    capsys.readouterr()
    dest = tmp_path / "out"
    code = ass3Restore.main(["data", "--bucket", bucket, "--run", bad, "--dest", str(dest)])
    err = capsys.readouterr().err
    assert code == 2
    *warnings, line = err.splitlines()
    assert line.startswith(f"ass3Restore.py: error: {BAD} ")
    assert bad in line
    assert warnings == []  # an explicit --run: the error alone, not the listing's warning
    assert not (dest / "data").exists() or read_tree(dest / "data") == {}
    assert not (dest / "x").exists()


# --- names that are not run ids -----------------------------------------------------------

NOT_RUN_IDS = [
    "latest",
    "20261301T000000.000000Z-abcdef",  # month 13
    "20260230T120000.000000Z-abcdef",  # 30 February
    "20260301T250000.000000Z-abcdef",  # hour 25
    "20260301T100000.000000Z-ABCDEF",  # upper-case tag
    "20260301T100000.000000Z",  # no tag
    "\uff12\uff10\uff12\uff160301T100000.000000Z-abcdef",  # full-width digits
    "20260301T100000.000000Z-abcdef\n",
]


def test_names_that_are_not_run_ids_are_skipped_with_one_warning(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = back_up_exactly(conn, tmp_path / "src", bucket, RUN_1)
    for name in NOT_RUN_IDS:
        plant(s3, bucket, name, gz(document(good)))
    caplog.clear()
    assert s3common.list_run_ids(conn, bucket, "data") == [good]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "latest.json.gz" in warning and "20261301T000000.000000Z-abcdef" in warning
    assert "\n" not in warning  # the name with a newline is shown escaped
    # Every reader of the runs goes on as if they were not there.
    assert [line.split()[0] for line in s3common.format_runs(conn, bucket, "data")] == [good]
    now = datetime.now(UTC)
    assert restored(conn, bucket, tmp_path / "as-of", as_of=now) == RUN_1
    second = back_up_exactly(conn, tmp_path / "src", bucket, RUN_2)
    assert restored(conn, bucket, tmp_path / "second", run_id=second) == RUN_2


# --- size: a bomb, and an object too big to fetch ----------------------------------------


def test_a_gzip_bomb_is_refused_without_inflating_it(
    conn: Connection,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """64 MiB of zeros gzip to 64 KiB; with the inflation cap lowered to 1 MiB (the
    real one would make the test slow) reading it must stop past 1 MiB."""
    monkeypatch.setattr("ass3.records.MAX_RECORD_BYTES", s3common.MiB, raising=False)
    good = back_up_exactly(conn, tmp_path / "src", bucket, RUN_1)
    bad = run_id_at(s3common.run_time(good) + timedelta(milliseconds=1))
    bomb = gzip.compress(bytes(64 * s3common.MiB), compresslevel=9, mtime=0)
    assert len(bomb) < 100 * 1024
    plant(s3, bucket, bad, bomb)
    tracemalloc.start()
    try:
        lines = s3common.format_runs(conn, bucket, "data")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [line.split()[0] for line in lines] == [good]
    (warning,) = warnings_about(caplog, bad)
    assert "more than 1.0 MiB" in warning
    assert peak < 16 * s3common.MiB


def test_a_record_too_big_to_download_is_not_fetched(
    conn: Connection,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The listing gives each object's size: one over the cap is never requested."""
    good = back_up_exactly(conn, tmp_path / "src", bucket, RUN_1)
    monkeypatch.setattr("ass3.records.MAX_RECORD_DOWNLOAD", 4096, raising=False)
    bad = run_id_at(s3common.run_time(good) + timedelta(milliseconds=1))
    files = [[f"f{index:05d}", 1, "", "e", None] for index in range(2000)]
    body = gz(document(bad, files))
    assert len(body) > 4096
    plant(s3, bucket, bad, body)
    fetched: list[str] = []
    conn.client.meta.events.register(
        "before-call.s3.GetObject", lambda params, **_: fetched.append(params["url_path"])
    )
    lines = s3common.format_runs(conn, bucket, "data")
    assert [line.split()[0] for line in lines] == [good]
    assert not any(bad in path for path in fetched)
    (warning,) = warnings_about(caplog, bad)
    assert "compressed" in warning


# --- falling back to the newest good record -----------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [spoiled(lambda value: [value]), _truncated, spoiled(_set(("files", 0, 0), "../x"))],
    ids=["a-list", "truncated-gzip", "rel-dot-dot"],
)
def test_backup_takes_known_versions_from_the_newest_good_record(
    conn: Connection,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    payload: Callable[[str], bytes],
) -> None:
    """A bad newest record costs one warning: the versions of the files this run left
    alone still come from the previous good record, with no ListObjectVersions pass."""
    first = back_up_exactly(conn, tmp_path / "src", bucket, RUN_1)
    bad = run_id_at(s3common.run_time(first) + timedelta(milliseconds=1))
    plant(s3, bucket, bad, payload(bad))
    calls = count_calls(conn.client)
    second = back_up_exactly(conn, tmp_path / "src", bucket, RUN_2)
    assert restored(conn, bucket, tmp_path / "first", run_id=first) == RUN_1
    assert restored(conn, bucket, tmp_path / "second", run_id=second) == RUN_2
    assert calls["ListObjectVersions"] == 0
    assert len(warnings_about(caplog, bad)) == 1


def test_a_pile_of_bad_records_costs_a_backup_three_tries_then_a_versions_listing(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = back_up_exactly(conn, tmp_path / "src", bucket, RUN_1)
    bad = [
        run_id_at(s3common.run_time(first) + timedelta(milliseconds=index)) for index in range(1, 6)
    ]
    for run_id in bad:
        plant(s3, bucket, run_id, _truncated(run_id))
    calls = count_calls(conn.client)
    # Only a.txt is rewritten: b.txt keeps its inode and times, so however long the first
    # run took, it is never a metadata-only change whose CopyObject would bring a version.
    (tmp_path / "src" / "a.txt").write_bytes(RUN_2["a.txt"])
    summary = s3common.backup(conn, str(tmp_path / "src"), bucket=bucket, prefix="data")
    assert (summary.failures, summary.transferred, summary.metadata_updated) == ([], 1, 0)
    second = summary.run_id
    assert second and calls["GetObject"] == 3 and calls["ListObjectVersions"] == 1
    assert [bool(warnings_about(caplog, run_id)) for run_id in bad] == [False] * 2 + [True] * 3
    assert restored(conn, bucket, tmp_path / "second", run_id=second) == RUN_2


def _bogus_versions(run_id: str) -> bytes:
    """Well-formed, and naming versions that do not exist for content that does."""
    return gz(document(run_id))


@pytest.mark.parametrize(
    "payload",
    [_bogus_versions, spoiled(_set(("files", 0, 1), "3")), spoiled(lambda value: [value])],
    ids=["well-formed", "wrong-types", "a-list"],
)
def test_a_future_dated_record_poisons_neither_the_next_backup_nor_as_of(
    conn: Connection,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    payload: Callable[[str], bytes],
) -> None:
    """A record dated 30 days ahead would otherwise be the newest forever: the next
    backup would take its versions and --as-of a later time would pick it."""
    back_up_exactly(conn, tmp_path / "src", bucket, RUN_1)
    future = run_id_at(datetime.now(UTC) + timedelta(days=30))
    plant(s3, bucket, future, payload(future))
    second = back_up_exactly(conn, tmp_path / "src", bucket, RUN_2)
    assert restored(conn, bucket, tmp_path / "now", as_of=datetime.now(UTC)) == RUN_2
    later = datetime.now(UTC) + timedelta(days=60)
    assert restored(conn, bucket, tmp_path / "later", as_of=later) == RUN_2
    assert s3common.list_run_ids(conn, bucket, "data")[-1] == second
    assert warnings_about(caplog, future)


def test_a_record_within_a_day_ahead_is_a_clock_skew_not_an_attack(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another machine whose clock runs a few hours fast writes good records."""
    first = back_up_exactly(conn, tmp_path / "src", bucket, RUN_1)
    ahead = run_id_at(datetime.now(UTC) + timedelta(hours=3))
    record = s3.get_object(Bucket=bucket, Key=s3common.record_key("data", first))["Body"]
    plant(s3, bucket, ahead, gz({**json.loads(gzip.decompress(record.read())), "run": ahead}))
    assert s3common.list_run_ids(conn, bucket, "data") == [first, ahead]
    assert [line.split()[0] for line in s3common.format_runs(conn, bucket, "data")] == [
        first,
        ahead,
    ]
    assert not warnings_about(caplog, ahead)


# --- --as-of falls back past a bad record to the newest good one --------------------------


def _good_then_bad(conn: Connection, s3: Any, bucket: str, tmp_path: Path) -> tuple[str, str]:
    """A good run, then a truncated record dated just after it."""
    good = back_up_exactly(conn, tmp_path / "src", bucket, RUN_1)
    bad = run_id_at(s3common.run_time(good) + timedelta(milliseconds=1))
    plant(s3, bucket, bad, _truncated(bad))
    return good, bad


def test_record_as_of_skips_a_bad_record_for_the_newest_good_one_before_it(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good, bad = _good_then_bad(conn, s3, bucket, tmp_path)
    run_ids = s3common.list_run_ids(conn, bucket, "data")
    assert run_ids == [good, bad]
    record = history.record_as_of(conn, bucket, "data", run_ids, bad)
    assert record.run_id == good
    assert [item.rel for item in record.files] == sorted(RUN_1)
    (warning,) = warnings_about(caplog, bad)
    assert "truncated" in warning
    assert history.record_as_of(conn, bucket, "data", run_ids, good).run_id == good
    with pytest.raises(s3common.Ass3Error, match="no usable run record"):
        history.record_as_of(conn, bucket, "data", [bad], bad)


def test_restore_as_of_falls_back_to_the_newest_good_record(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    _, bad = _good_then_bad(conn, s3, bucket, tmp_path)
    when = s3common.run_time(bad) + timedelta(seconds=1)
    assert restored(conn, bucket, tmp_path / "out", as_of=when) == RUN_1


# --- the pure rules, on literals ----------------------------------------------------------

FIRST = "20260301T100000.000000Z-a1a1a1"
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
MD5 = "0" * 32


def read(body: bytes, run_id: str = FIRST) -> records.RunRecord:
    return records.read_record([body], run_id)


def test_record_schema_is_a_valid_draft_2020_12_schema() -> None:
    Draft202012Validator.check_schema(records.RECORD_SCHEMA)


def test_read_record_reads_what_to_bytes_writes() -> None:
    original = records.RunRecord(
        FIRST,
        "/home/me/Photos é",
        uploaded=2,
        deleted=1,
        failed=1,
        versioned=True,
        files=(
            RecordEntry("a.txt", 3, MD5, "e" * 32, "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrH"),
            RecordEntry("b", 0, "", "f" * 32 + "-7", "null"),
            RecordEntry("日本/b c", 10 * 1024**3, MD5, "0x8DB2C5E6F1A2B3C", None),
        ),
    )
    assert read(original.to_bytes()) == original
    empty = records.RunRecord(FIRST, "/", 0, 0, 0, False, ())
    assert read(empty.to_bytes()) == empty


@pytest.mark.parametrize("payload", PAYLOADS, ids=HOSTILE_IDS)
def test_read_record_refuses_every_hostile_record(payload: Callable[[str], bytes]) -> None:
    with pytest.raises(records.BadRecord) as raised:
        read(payload(FIRST))
    assert "\n" not in str(raised.value) and len(str(raised.value)) < 300


@pytest.mark.parametrize(
    ("rel", "reason"),
    [
        ("../x", "path segment '..'"),
        ("/etc/passwd", "absolute path"),
        ("a//b", "path segment ''"),
        ("a/./b", "path segment '.'"),
        ("", "empty name"),
        ("..\\..\\x", "backslash"),
        ("bell\x07", "control character"),
        ("x" * 256, "longer than 255 bytes"),
        (("é" * 100 + "/") * 6 + "x", "longer than 1024 bytes"),  # 606 characters
        ("a/" * 512 + "b", "fails maxLength 1024"),
        ("lone\ud800", "not valid UTF-8"),
    ],
)
def test_read_record_refuses_a_name_restore_would_refuse(rel: str, reason: str) -> None:
    body = gz(document(FIRST, [[rel, 1, MD5, MD5, None]]))
    with pytest.raises(records.BadRecord, match=re.escape(reason)):
        read(body)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set(("uploaded",), "many"), "uploaded: 'many' fails type 'integer'"),
        (_set(("files", 0, 1), 3.0), "files/0/1: 3.0 fails type 'integer'"),
        (_set(("files", 0, 1), True), "files/0/1: True fails type 'integer'"),
        (_set(("files", 0, 1), -1), "files/0/1: -1 fails minimum 0"),
        (_drop("source"), "'source' is a required property"),
        (_set(("extra",), 1), "Additional properties are not allowed ('extra' was unexpected)"),
        (_set(("files", 0, 2), "ABC"), "files/0/2: 'ABC' fails pattern"),
        (_set(("files", 0, 4), "has space"), "files/0/4: 'has space' fails pattern"),
        (_set(("files", 0, 3), MD5 + "\n"), "files/0/3:"),  # `$` would let it through
        (_set(("run",), "20260302T100000.000000Z-b2b2b2"), "names run 20260302T10"),
        (lambda value: value["files"].append(value["files"][-1]), "out of key order"),
        (_set(("format",), 3), "unknown run record format 3"),
        (_set(("format",), 2), "'tree' is a required property"),
        (_set(("format",), True), "unknown run record format True"),
    ],
)
def test_read_record_says_what_is_wrong_in_one_line(
    change: Callable[[dict[str, Any]], object], message: str
) -> None:
    with pytest.raises(records.BadRecord) as raised:
        read(spoiled(change)(FIRST))
    assert message in str(raised.value)


def test_read_record_refuses_text_that_is_not_utf_8() -> None:
    with pytest.raises(records.BadRecord, match=r"not UTF-8 \(invalid start byte at byte \d+\)"):
        read(_not_utf8(FIRST))


def test_read_record_refuses_json_nested_too_deeply() -> None:
    with pytest.raises(records.BadRecord, match="not JSON"):
        read(gzip.compress(b"[" * 100_000 + b"]" * 100_000))


def test_a_long_bad_value_is_shortened_in_the_message() -> None:
    with pytest.raises(records.BadRecord) as raised:
        read(spoiled(_set(("files",), {f"name{i}": i for i in range(10_000)}))(FIRST))
    assert len(str(raised.value)) < 300


# inflate


def test_inflate_stops_a_bomb_one_byte_past_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "MAX_RECORD_BYTES", 1000)
    bomb = gzip.compress(bytes(64 * s3common.MiB), compresslevel=9)
    tracemalloc.start()
    try:
        with pytest.raises(records.BadRecord, match="inflates to more than 1000 B"):
            records.inflate([bomb])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * s3common.MiB
    assert len(records.inflate([gzip.compress(bytes(1000))])) == 1000  # at the cap: fine


def test_inflate_counts_the_compressed_bytes_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Header fields and empty stored blocks take input and give nothing: the
    compressed cap is what stops those."""
    monkeypatch.setattr(records, "MAX_RECORD_DOWNLOAD", 100)
    header_only = gzip.compress(b"x")[:10]
    with pytest.raises(records.BadRecord, match="more than 100 B compressed"):
        records.inflate([header_only] + [b"\x00\x00\x00\xff\xff"] * 30)


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        ([gzip.compress(b"{}")[:-3]], "truncated"),
        ([gzip.compress(b"{}")[:5], b""], "truncated"),
        ([], "truncated"),
        ([gzip.compress(b"{}") + b"x"], "data after the end"),
        ([gzip.compress(b"{}"), gzip.compress(b"{}")], "data after the end"),
        ([b"{}"], "not gzip"),
        ([zlib.compress(b"{}")], "not gzip"),
        ([gzip.compress(b"{}")[:-8] + b"\x00" * 8], "not gzip"),  # wrong CRC and length
    ],
    ids=["cut", "header-only", "empty", "trailing", "two-streams", "plain", "zlib", "crc"],
)
def test_inflate_refuses_what_is_not_one_whole_gzip_stream(
    chunks: list[bytes], message: str
) -> None:
    with pytest.raises(records.BadRecord, match=message):
        records.inflate(chunks)


def test_inflate_takes_the_stream_in_any_chunks() -> None:
    content = json.dumps(document(FIRST)).encode() * 50
    whole = gzip.compress(content)
    pieces = [whole[index : index + 7] for index in range(0, len(whole), 7)]
    assert records.inflate(pieces) == content


# run ids and the listing


@pytest.mark.parametrize("name", [*NOT_RUN_IDS, "", "../x", FIRST + ".json.gz", " " + FIRST])
def test_is_run_id_refuses_anything_but_the_exact_shape_and_a_real_date(name: str) -> None:
    assert not records.is_run_id(name)


@pytest.mark.parametrize(
    "run_id", [FIRST, "20240229T235959.999999Z-000000", records.new_run_id(NOW)]
)
def test_is_run_id_takes_what_new_run_id_makes(run_id: str) -> None:
    assert records.is_run_id(run_id)


@pytest.mark.parametrize(
    ("run_id", "size", "refused"),
    [
        (FIRST, 100, None),
        (FIRST, None, None),  # size not known: only the date counts
        (records.new_run_id(NOW + timedelta(hours=23)), 100, None),  # a fast clock
        (records.new_run_id(NOW + records.MAX_CLOCK_SKEW), 100, None),
        (
            records.new_run_id(NOW + records.MAX_CLOCK_SKEW + timedelta(microseconds=1)),
            100,
            "more than 1 day ahead of this computer's clock",
        ),
        (records.new_run_id(NOW + timedelta(days=3650)), None, "2036-03-07 12:00:00 UTC"),
        (FIRST, records.MAX_RECORD_DOWNLOAD, None),
        (FIRST, records.MAX_RECORD_DOWNLOAD + 1, "compressed, more than the"),
    ],
)
def test_record_refusal(run_id: str, size: int | None, refused: str | None) -> None:
    reason = records.record_refusal(run_id, size=size, now=NOW)
    if refused is None:
        assert reason is None
    else:
        assert reason is not None and refused in reason


def test_screen_listing_sorts_out_strays_refusals_and_runs() -> None:
    second = "20260302T100000.000000Z-b2b2b2"
    future = records.new_run_id(NOW + timedelta(days=30))
    listed = [
        (second + ".json.gz", 10),
        ("notes.txt", 1),
        (FIRST + ".json.gz", 10),
        ("sub/" + FIRST + ".json.gz", 10),
        (future + ".json.gz", 10),
        ("20261301T000000.000000Z-abcdef.json.gz", 10),
        ("20260303T100000.000000Z-c3c3c3.json.gz", records.MAX_RECORD_DOWNLOAD + 1),
    ]
    screened = records.screen_listing(listed, NOW)
    assert screened.run_ids == [FIRST, second]
    assert screened.strays == [
        "20261301T000000.000000Z-abcdef.json.gz",
        "notes.txt",
        "sub/" + FIRST + ".json.gz",
    ]
    assert [run_id for run_id, _ in screened.refused] == [
        "20260303T100000.000000Z-c3c3c3",
        future,
    ]


@given(st.lists(st.tuples(st.text(max_size=40), st.integers(0, 10**12)), max_size=20))
def test_run_time_reads_every_id_screen_listing_keeps(listed: list[tuple[str, int]]) -> None:
    names = listed + [(name + ".json.gz", size) for name, size in listed]
    for run_id in records.screen_listing(names, NOW).run_ids:
        assert records.run_time(run_id) <= NOW + records.MAX_CLOCK_SKEW


@pytest.mark.parametrize(
    ("chosen", "order"),
    [
        ("c", ["c", "b", "a"]),
        ("b", ["b", "a"]),
        ("a", ["a"]),
    ],
)
def test_fallback_order_is_the_chosen_run_then_each_earlier_newest_first(
    chosen: str, order: list[str]
) -> None:
    assert timeline.fallback_order(["a", "b", "c"], chosen) == order


def test_a_run_that_reads_no_record_does_not_import_jsonschema() -> None:
    """Importing it costs about 80 ms: a no-change backup never reads a record."""
    code = "import sys, s3common; print('jsonschema' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
