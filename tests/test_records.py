"""The pure rules of run records: which run a restore uses, which version each line of
a new record names, which versions stood at a time, and the record and spool formats.
No S3: everything is decided on literals; only the spool touches a temporary file."""

from __future__ import annotations

import gzip
import json
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ass3.model import Ass3Error, ObjectVersion, RecordEntry, RemoteObject
from ass3.plan import delete_limit, deletion_refusal, key_order
from ass3.records import RecordSpool, RunRecord, new_run_id, record_key, run_time
from ass3.timeline import (
    KnownVersions,
    choose_run,
    newest_versions_at,
    objects_of_run,
    old_run_refusal,
    parse_when,
    record_files,
    select_run,
    versions_by_content,
    versions_missing,
)

UTC = timezone.utc
PLUS_3 = timezone(timedelta(hours=3))
FIRST = "20260301T100000.000000Z-a1a1a1"
SECOND = "20260302T100000.000000Z-b2b2b2"
THIRD = "20260303T100000.000000Z-c3c3c3"
RUN_IDS = [FIRST, SECOND, THIRD]  # oldest first, as list_run_ids returns them
WHERE = ("my-bucket", "data")
T0 = datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
# Names whose UTF-8 byte order S3 lists by: "Z" < "a" < "a-b" ('-' 0x2d) < "a/b" ('/' 0x2f) < "é".
KEY_ORDERED = ["Z", "a", "a-b", "a/b", "é"]
SCRAMBLED = ["é", "a/b", "Z", "a-b", "a"]
# Names that can reach a record: valid UTF-8 without control characters (see scan.py).
names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12)


@contextmanager
def local_zone(zone: str) -> Iterator[None]:
    """Run with the process's local time zone set to `zone` (a POSIX TZ string)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


def entry(rel: str, etag: str = "e1", version: str | None = None, size: int = 1) -> RecordEntry:
    return RecordEntry(rel, size, f"md5-of-{rel}", etag, version)


def record(*files: RecordEntry, run_id: str = FIRST, versioned: bool = True) -> RunRecord:
    return RunRecord(run_id, "/src/data", 1, 0, 0, versioned, files)


def version(
    rel: str,
    version_id: str,
    seconds: float,
    *,
    deleted: bool = False,
    latest: bool = False,
    size: int = 1,
    etag: str = "e",
) -> ObjectVersion:
    at = T0 + timedelta(seconds=seconds)
    return ObjectVersion(rel, f"data/{rel}", version_id, at, latest, deleted, size, etag)


# choose_run


@pytest.mark.parametrize("versioning", ["Enabled", "Suspended", "Off"])
@pytest.mark.parametrize("run_ids", [[], RUN_IDS], ids=["no-records", "three-runs"])
def test_choose_run_takes_an_explicit_run_id_as_given(versioning: str, run_ids: list[str]) -> None:
    """--run names the record outright: no time rule applies, and the record's own
    loading reports an unknown id."""
    chosen = choose_run(run_ids, versioning, run_id=SECOND, as_of=T0 - US, where=WHERE)
    assert chosen == SECOND


def test_choose_run_without_records_and_versioning_off_has_no_earlier_state() -> None:
    """Without versioning an overwritten file is gone, so there is nothing to fall back on."""
    with pytest.raises(Ass3Error) as raised:
        choose_run([], "Off", run_id=None, as_of=T0, where=WHERE)
    assert str(raised.value).startswith("versioning is off on s3://my-bucket:")
    assert "no earlier state to restore" in str(raised.value)


@pytest.mark.parametrize("versioning", ["Enabled", "Suspended"])
def test_choose_run_without_records_falls_back_to_object_versions(versioning: str) -> None:
    """A bucket that has (or had) versioning keeps old versions: None says pick by LastModified."""
    assert choose_run([], versioning, run_id=None, as_of=T0, where=WHERE) is None


@pytest.mark.parametrize(
    ("as_of", "chosen"),
    [
        (run_time(FIRST), FIRST),  # exactly at a run's time includes it
        (run_time(FIRST) + US, FIRST),
        (run_time(SECOND) - US, FIRST),  # between runs: the newest at or before
        (run_time(SECOND), SECOND),
        (run_time(SECOND).astimezone(PLUS_3), SECOND),  # the same instant in another zone
        (run_time(THIRD) + timedelta(days=365), THIRD),
    ],
    ids=["at-first", "just-after-first", "just-before-second", "at-second", "zone", "later"],
)
@pytest.mark.parametrize("versioning", ["Enabled", "Off"])
def test_choose_run_as_of_picks_the_newest_run_at_or_before(
    as_of: datetime, chosen: str, versioning: str
) -> None:
    assert choose_run(RUN_IDS, versioning, run_id=None, as_of=as_of, where=WHERE) == chosen


def test_choose_run_before_the_first_run_names_the_first_run() -> None:
    """Restoring "as of" before the backup began is a mistake worth a precise message."""
    with local_zone("UTC0"), pytest.raises(Ass3Error) as raised:
        choose_run(RUN_IDS, "Enabled", run_id=None, as_of=run_time(FIRST) - US, where=WHERE)
    assert str(raised.value) == (
        "no run of 'data' at or before 2026-03-01 09:59:59 UTC; "
        "the first was 2026-03-01 10:00:00 UTC"
    )


def test_choose_run_before_the_first_run_shows_the_first_in_local_time() -> None:
    with local_zone("<+03>-3"), pytest.raises(Ass3Error, match="the first was 2026-03-01 13:00:00"):
        choose_run(RUN_IDS, "Enabled", run_id=None, as_of=T0 - US, where=WHERE)


# old_run_refusal

OLD_RUN_ROWS = [
    # (run, versioning, record versioned, restorable)
    (THIRD, "Enabled", True, True),
    (THIRD, "Enabled", False, True),
    (THIRD, "Suspended", True, True),
    (THIRD, "Suspended", False, True),
    (THIRD, "Off", True, True),
    (THIRD, "Off", False, True),
    (SECOND, "Enabled", True, True),  # the only way an older run's files all survive
    (SECOND, "Enabled", False, False),  # recorded without versions: it names none
    (SECOND, "Suspended", True, False),  # only Enabled counts, even for a versioned record
    (SECOND, "Suspended", False, False),
    (SECOND, "Off", True, False),
    (SECOND, "Off", False, False),
    (FIRST, "Enabled", True, True),
    (FIRST, "Off", True, False),
]


@pytest.mark.parametrize(("run_id", "versioning", "record_versioned", "restorable"), OLD_RUN_ROWS)
def test_old_run_refusal_allows_the_latest_run_or_a_fully_versioned_one(
    run_id: str, versioning: str, record_versioned: bool, restorable: bool
) -> None:
    refusal = old_run_refusal(
        run_id, RUN_IDS, versioning, record_versioned=record_versioned, bucket="b"
    )
    if restorable:
        assert refusal is None
    elif versioning != "Enabled":
        assert refusal == (
            f"versioning is {versioning.lower()} on s3://b: files overwritten since run "
            f"{run_id} are gone, so only the latest run can be restored"
        )
    else:
        assert refusal == (
            f"run {run_id} was recorded while versioning was off on s3://b: files "
            "overwritten since then are gone, so only the latest run can be restored"
        )


@pytest.mark.parametrize(
    ("versioning", "record_versioned", "restorable"),
    [("Enabled", True, True), ("Enabled", False, False), ("Off", False, False)],
)
def test_old_run_refusal_with_no_listed_runs_is_never_the_latest(
    versioning: str, record_versioned: bool, restorable: bool
) -> None:
    """With no runs listed no run is the latest: only full versioning lets it through."""
    refusal = old_run_refusal(FIRST, [], versioning, record_versioned=record_versioned, bucket="b")
    assert (refusal is None) == restorable


# versions_by_content and versions_missing


def test_versions_by_content_keys_each_named_version_by_rel_and_etag() -> None:
    """Lines without a version (a run without versioning) give nothing to reuse."""
    previous = record(
        entry("a", "e1", "v-a"),
        entry("b", "e2", None),
        entry("c", "e1", "v-c"),
    )
    assert versions_by_content(previous) == {("a", "e1"): "v-a", ("c", "e1"): "v-c"}
    assert versions_by_content(record()) == {}


KNOWN: KnownVersions = {("a", "e1"): "v-a", ("b", "e2"): "v-b"}


@pytest.mark.parametrize(
    ("entries", "missing"),
    [
        ([], False),
        ([entry("new", "e9", "v-own")], False),  # the run wrote it: it has its own version
        ([entry("a", "e1"), entry("b", "e2")], False),  # both known by content
        ([entry("z", "e1")], True),  # never seen
        ([entry("a", "e2")], True),  # same name, other content: the known version is stale
        ([entry("b", "e1")], True),  # same content under another name: another object
        ([entry("a", "e1"), entry("z", "e9"), entry("b", "e2")], True),  # one gap is enough
    ],
    ids=["empty", "own", "known", "unknown", "other-etag", "other-rel", "one-of-three"],
)
def test_versions_missing(entries: list[RecordEntry], missing: bool) -> None:
    """Whether record_run must pay for a ListObjectVersions pass."""
    assert versions_missing(entries, KNOWN) is missing


# record_files


@pytest.mark.parametrize(
    ("line", "versioned", "expected_version"),
    [
        (entry("a", "e1", "v-own"), True, "v-own"),  # written by this run: never replaced
        (entry("a", "e1"), True, "v-a"),  # left alone: the version holding that content
        (entry("a", "e2"), True, None),  # content changed: the known version is not it
        (entry("b", "e1"), True, None),  # known etag under another name does not count
        (entry("zzz", "e1"), True, None),  # nothing known: left for a later pass, not guessed
        (entry("a", "e1"), False, None),  # no versioning: the current object is the only one
    ],
    ids=["own", "filled", "other-etag", "other-rel", "unknown", "not-versioned"],
)
def test_record_files_names_a_version_only_where_one_is_known(
    line: RecordEntry, versioned: bool, expected_version: str | None
) -> None:
    (result,) = record_files([line], KNOWN, versioned=versioned)
    assert result.version_id == expected_version
    assert (result.rel, result.size, result.md5, result.etag) == (
        line.rel,
        line.size,
        line.md5,
        line.etag,
    )


@pytest.mark.parametrize("versioned", [True, False])
def test_record_files_sorts_lines_in_s3_key_order(versioned: bool) -> None:
    """Records are read back by merging with sorted streams: UTF-8 byte order, not case order."""
    lines = record_files([entry(rel) for rel in SCRAMBLED], {}, versioned=versioned)
    assert [line.rel for line in lines] == KEY_ORDERED
    assert isinstance(lines, tuple)


def test_record_files_reads_a_one_shot_stream() -> None:
    """The lines come from a spool read once; a generator must do."""
    lines = record_files((entry(rel) for rel in ["b", "a"]), {("a", "e1"): "v"}, versioned=True)
    assert [(line.rel, line.version_id) for line in lines] == [("a", "v"), ("b", None)]


@given(
    st.dictionaries(
        names,
        st.tuples(st.sampled_from(["e1", "e2"]), st.none() | st.just("v-own")),
        max_size=15,
    ),
    st.dictionaries(st.tuples(names, st.sampled_from(["e1", "e2"])), names, max_size=15),
    st.booleans(),
)
def test_record_files_is_a_sorted_permutation_that_only_fills_gaps(
    lines: dict[str, tuple[str, str | None]], known: KnownVersions, versioned: bool
) -> None:
    entries = [entry(rel, etag, own) for rel, (etag, own) in lines.items()]
    result = record_files(entries, known, versioned=versioned)
    assert [key_order(line.rel) for line in result] == sorted(key_order(rel) for rel in lines)
    assert Counter((e.rel, e.size, e.md5, e.etag) for e in result) == Counter(
        (e.rel, e.size, e.md5, e.etag) for e in entries
    )
    for line in result:
        etag, own = lines[line.rel]
        if versioned:
            assert line.version_id == (own or known.get((line.rel, etag)))
        elif own is None:
            assert line.version_id is None


# newest_versions_at

# One key's history, listed newest first as ListObjectVersions does.
HISTORY = [
    version("a", "v3", 30, latest=True),
    version("a", "dm", 20, deleted=True),
    version("a", "v2", 10),
    version("a", "v1", 0),
]


@pytest.mark.parametrize(
    ("versions", "seconds", "expected"),
    [
        (HISTORY, -1, []),  # before the key existed
        (HISTORY, 0, ["v1"]),  # exactly at a version's time includes it
        (HISTORY, 9.999999, ["v1"]),  # the next version is later: ignored
        (HISTORY, 10, ["v2"]),
        (HISTORY, 15, ["v2"]),  # not is_latest, yet the newest then
        (HISTORY, 20, []),  # the newest then is a delete marker: absent
        (HISTORY, 25, []),
        (HISTORY, 30, ["v3"]),  # recreated after its deletion
        (HISTORY, 10**6, ["v3"]),
        (HISTORY[::-1], 15, ["v2"]),  # listing order does not matter
        ([HISTORY[2], HISTORY[0], HISTORY[3], HISTORY[1]], 25, []),
    ],
)
def test_newest_versions_at_picks_each_keys_newest_version_then(
    versions: list[ObjectVersion], seconds: float, expected: list[str]
) -> None:
    objects = newest_versions_at(versions, T0 + timedelta(seconds=seconds))
    assert [item.version_id for item in objects] == expected


def test_newest_versions_at_keeps_the_first_listed_of_two_in_one_second() -> None:
    """LastModified has one-second resolution and S3 lists each key newest first, so
    on a tie the first listed is the later write."""
    tied = [version("a", "newer", 10, latest=True), version("a", "older", 10)]
    (chosen,) = newest_versions_at(tied, T0 + timedelta(seconds=60))
    assert chosen.version_id == "newer"


def test_newest_versions_at_returns_key_order_and_leaves_out_deleted_keys() -> None:
    versions = [version(rel, f"v-{rel}", 0) for rel in SCRAMBLED]
    versions += [version("gone", "v-gone", 0), version("gone", "dm", 1, deleted=True)]
    objects = newest_versions_at(versions, T0 + timedelta(seconds=5))
    assert [item.rel for item in objects] == KEY_ORDERED


def test_newest_versions_at_describes_the_version_it_chose() -> None:
    """The restore fetches exactly this version and checks it against size and ETag."""
    versions = [
        version("x/y.txt", "v-new", 20, latest=True, size=7, etag="new-etag"),
        version("x/y.txt", "v-old", 10, size=123, etag="0" * 32 + "-2"),
    ]
    (item,) = newest_versions_at(versions, T0 + timedelta(seconds=15))
    assert item == RemoteObject(
        "x/y.txt", "data/x/y.txt", 123, "0" * 32 + "-2", T0 + timedelta(seconds=10), "v-old"
    )
    assert item.md5 is None  # a listing of versions carries no MD5


def test_newest_versions_at_of_nothing_is_nothing() -> None:
    assert newest_versions_at([], T0) == []


@given(
    st.lists(
        st.tuples(st.sampled_from(SCRAMBLED), st.integers(0, 20), st.booleans()),
        unique_by=lambda item: (item[0], item[1]),  # one change per key per second
        max_size=40,
    ),
    st.integers(-1, 21),
)
def test_newest_versions_at_agrees_with_a_plain_reading_of_the_history(
    changes: list[tuple[str, int, bool]], seconds: int
) -> None:
    when = T0 + timedelta(seconds=seconds)
    versions = [version(rel, f"{rel}@{at}", at, deleted=deleted) for rel, at, deleted in changes]
    objects = newest_versions_at(versions, when)
    assert all(item.last_modified <= when for item in objects)
    expected = []
    for rel in KEY_ORDERED:
        then = [(at, deleted) for r, at, deleted in changes if r == rel and at <= seconds]
        if then and not max(then)[1]:
            expected.append((rel, f"{rel}@{max(then)[0]}"))
    assert [(item.rel, item.version_id) for item in objects] == expected


# select_run, run ids, parse_when


@pytest.mark.parametrize(
    ("run_ids", "when", "chosen"),
    [
        ([], T0, None),
        ([SECOND, THIRD], run_time(FIRST), None),  # every run is later
        ([FIRST, SECOND, THIRD], run_time(SECOND), SECOND),
        ([SECOND, FIRST, THIRD], run_time(THIRD) - US, SECOND),  # the newest, not the last listed
        ([FIRST], run_time(FIRST) - US, None),
    ],
)
def test_select_run(run_ids: list[str], when: datetime, chosen: str | None) -> None:
    assert select_run(run_ids, when) == chosen


def test_select_run_reads_a_one_shot_stream() -> None:
    assert select_run(iter(RUN_IDS), run_time(THIRD)) == THIRD


@pytest.mark.parametrize(
    ("now", "prefix"),
    [
        (datetime(2026, 11, 27, 12, 0, 0, 500000, tzinfo=UTC), "20261127T120000.500000Z-"),
        (
            datetime(2026, 11, 27, 13, 0, 0, 500000, tzinfo=timezone(timedelta(hours=1))),
            "20261127T120000.500000Z-",
        ),
        (datetime(2026, 1, 1, 1, 2, 3, 4, tzinfo=PLUS_3), "20251231T220203.000004Z-"),
    ],
)
def test_run_id_is_utc_to_the_microsecond_and_reads_back(now: datetime, prefix: str) -> None:
    run_id = new_run_id(now)
    assert re.fullmatch(r"\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{6}", run_id)
    assert run_id.startswith(prefix)
    assert run_time(run_id) == now
    assert run_time(run_id).tzinfo == UTC


def test_run_ids_of_one_moment_differ() -> None:
    """Two runs in one second (or microsecond) must not overwrite each other's record."""
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    assert len({new_run_id(now) for _ in range(20)}) == 20


def test_run_id_without_a_time_is_now() -> None:
    before = datetime.now(UTC)
    run_id = new_run_id()
    assert before <= run_time(run_id) <= datetime.now(UTC)


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(9000, 1, 1), timezones=st.just(UTC)
    ),
    st.timedeltas(min_value=US, max_value=timedelta(days=3650)),
)
def test_run_ids_sort_as_their_times(earlier: datetime, gap: timedelta) -> None:
    """list_run_ids sorts names; select_run takes max(): both rely on this."""
    assert new_run_id(earlier) < new_run_id(earlier + gap)
    assert run_time(new_run_id(earlier)) == earlier


def test_record_key_lives_under_the_reserved_prefix() -> None:
    assert record_key("data", FIRST) == f".ass3/runs/data/{FIRST}.json.gz"


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2026-11-20", datetime(2026, 11, 20, 23, 59, 59, 999999, tzinfo=PLUS_3)),  # end of day
        ("2026-11-20T18:30", datetime(2026, 11, 20, 18, 30, tzinfo=PLUS_3)),  # local time
        ("2026-11-20 18:30:15", datetime(2026, 11, 20, 18, 30, 15, tzinfo=PLUS_3)),
        ("2026-11-20T18:30:00Z", datetime(2026, 11, 20, 18, 30, tzinfo=UTC)),
        (
            "2026-11-20T18:30:00+01:00",
            datetime(2026, 11, 20, 18, 30, tzinfo=timezone(timedelta(hours=1))),
        ),
    ],
)
def test_parse_when(text: str, moment: datetime) -> None:
    with local_zone("<+03>-3"):
        parsed = parse_when(text)
    assert parsed == moment
    assert parsed.utcoffset() == moment.utcoffset()


def test_a_bare_date_includes_that_days_runs() -> None:
    """A bare date ("as of Tuesday") restores that day's last run, however late it ran."""
    late = "20261120T205959.999999Z-abcdef"  # 23:59:59.999999 at UTC+3
    with local_zone("<+03>-3"):
        assert (
            choose_run(
                [FIRST, late], "Off", run_id=None, as_of=parse_when("2026-11-20"), where=WHERE
            )
            == late
        )
        assert select_run([late], parse_when("2026-11-19")) is None


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01", "20-11-2026", "2026-11-20T25:00"])
def test_parse_when_refuses_what_is_not_iso_8601(text: str) -> None:
    with pytest.raises(Ass3Error, match=r"cannot read .* as a date or time: use ISO 8601"):
        parse_when(text)


# RunRecord


FULL_RECORD = RunRecord(
    FIRST,
    "/home/me/Photos é",
    uploaded=2,
    deleted=1,
    failed=1,
    versioned=True,
    files=(
        RecordEntry("a.txt", 3, "m" * 32, "e" * 32, "v-1"),
        RecordEntry("日本/b c", 10 * 1024**3, "m" * 32, "e" * 32 + "-7", None),
    ),
)


@pytest.mark.parametrize(
    "original",
    [FULL_RECORD, RunRecord(THIRD, "/src", 0, 0, 0, False, ())],
    ids=["full", "empty"],
)
def test_run_record_round_trips(original: RunRecord) -> None:
    assert RunRecord.from_bytes(original.to_bytes()) == original


def test_run_record_bytes_are_reproducible() -> None:
    """gzip stamps the time unless told not to: the same record must give the same bytes."""
    data = FULL_RECORD.to_bytes()
    assert data[4:8] == bytes(4)  # gzip header MTIME
    assert data == FULL_RECORD.to_bytes()


def test_run_record_time_and_size() -> None:
    assert FULL_RECORD.time == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert FULL_RECORD.total_bytes == 3 + 10 * 1024**3


@pytest.mark.parametrize("document", [{"format": 3}, {}], ids=["newer", "none"])
def test_run_record_of_an_unknown_format_is_refused(document: dict[str, object]) -> None:
    """A record from a newer ass3 is not guessed at."""
    document.update(
        run=FIRST, source="/", uploaded=0, deleted=0, failed=0, versioned=True, files=[]
    )
    with pytest.raises(ValueError, match="unknown run record format"):
        RunRecord.from_bytes(gzip.compress(json.dumps(document).encode()))


@given(
    st.lists(
        st.tuples(
            names, st.integers(0, 2**50), st.none() | st.text("0123456789abcdef.", min_size=1)
        ),
        max_size=10,
    ),
    names,
    st.booleans(),
)
def test_run_record_round_trips_any_names(
    files: list[tuple[str, int, str | None]], source: str, versioned: bool
) -> None:
    original = RunRecord(
        SECOND,
        source,
        1,
        2,
        3,
        versioned,
        tuple(RecordEntry(rel, size, "m", "e", vid) for rel, size, vid in files),
    )
    assert RunRecord.from_bytes(original.to_bytes()) == original


def test_objects_of_run_pin_each_file_to_its_recorded_version() -> None:
    objects = list(objects_of_run("data", FULL_RECORD))
    assert objects == [
        RemoteObject("a.txt", "data/a.txt", 3, "e" * 32, FULL_RECORD.time, "v-1", "m" * 32),
        RemoteObject(
            "日本/b c",
            "data/日本/b c",
            10 * 1024**3,
            "e" * 32 + "-7",
            FULL_RECORD.time,
            None,
            "m" * 32,
        ),
    ]


# RecordSpool


SPOOLED = [
    RecordEntry("a.txt", 0, "m" * 32, "e" * 32, "v-1"),
    RecordEntry("dir/é 日本.txt", 12345, "", "e" * 32 + "-3", None),
    RecordEntry("z", 1, "m", "e", "null"),
]


def test_spool_gives_back_what_was_appended_in_order() -> None:
    with RecordSpool() as spool:
        for line in SPOOLED:
            spool.append(line)
        assert list(spool) == SPOOLED


def test_spool_reads_again_and_appends_after_a_reading() -> None:
    """record_run reads the spool twice (versions_missing, then record_files)."""
    with RecordSpool() as spool:
        spool.append(SPOOLED[0])
        assert list(spool) == SPOOLED[:1]
        spool.append(SPOOLED[1])
        spool.append(SPOOLED[2])
        assert list(spool) == SPOOLED
        assert list(spool) == SPOOLED


def test_spool_of_nothing_is_empty() -> None:
    with RecordSpool() as spool:
        assert list(spool) == []


def test_spool_is_closed_on_leaving_the_block() -> None:
    with RecordSpool() as spool:
        spool.append(SPOOLED[0])
    with pytest.raises(ValueError, match="closed file"):
        list(spool)


def test_spool_appends_at_the_end_after_a_reading_stopped_early() -> None:
    many = [
        RecordEntry(f"file-{index:05d}", index, "m" * 32, "e" * 32, None) for index in range(500)
    ]
    with RecordSpool() as spool:
        for line in many:
            spool.append(line)
        assert any(line.rel == "file-00001" for line in spool)
        spool.append(SPOOLED[0])
        assert list(spool) == [*many, SPOOLED[0]]


@given(
    st.lists(
        st.builds(
            RecordEntry,
            names,
            st.integers(0, 2**50),
            st.text("0123456789abcdef", max_size=32),
            st.text("0123456789abcdef-", min_size=1, max_size=36),
            st.none() | st.text("0123456789abcdefABCDEF._", min_size=1, max_size=32),
        ),
        max_size=10,
    )
)
def test_spool_round_trips_any_name_a_scan_lets_through(lines: list[RecordEntry]) -> None:
    """Tabs and newlines never reach it; any other character (U+2028, U+0085) must survive."""
    with RecordSpool() as spool:
        for line in lines:
            spool.append(line)
        assert list(spool) == lines


# Deletion guards: what tests/test_history.py::test_deletion_guards does not already pin.


@pytest.mark.parametrize(
    ("spec", "total", "limit"),
    [
        ("50%", 4, 2),
        ("50%", 7, 3),  # a share rounds down
        ("50%", 1, 0),
        ("50%", 0, 0),
        ("0%", 10, 0),
        ("100%", 3, 3),
        ("33%", 10, 3),
        ("10", 3, 10),  # a count is a count, whatever is there
        ("0", 5, 0),
    ],
)
def test_delete_limit(spec: str, total: int, limit: int) -> None:
    assert delete_limit(spec, total) == limit


@pytest.mark.parametrize(
    ("deletions", "total", "source_files", "complete", "max_delete", "force", "refused"),
    [
        (3, 7, 4, True, None, False, None),  # 3 of 7: at the rounded-down limit
        (4, 7, 3, True, None, False, "4 of 7 would go, more than --max-delete 3; add --force"),
        (1, 5, 4, True, "0", False, "1 of 5 would go, more than --max-delete 0; add --force"),
        (1, 5, 4, True, "0%", False, "1 of 5 would go, more than --max-delete 0"),
        (5, 5, 5, True, "100%", False, None),
        (2, 2, 0, False, "100%", True, "the source has no files at all"),  # checked first
        (1, 4, 3, False, "100%", False, "part of the source could not be read"),
    ],
)
def test_deletion_refusal_limits_and_precedence(
    deletions: int,
    total: int,
    source_files: int,
    complete: bool,
    max_delete: str | None,
    force: bool,
    refused: str | None,
) -> None:
    reason = deletion_refusal(
        deletions,
        total,
        source_files=source_files,
        complete=complete,
        max_delete=max_delete,
        force=force,
    )
    if refused is None:
        assert reason is None
    else:
        assert reason is not None and reason.startswith(refused)
