"""Throttling slows the whole run: the window's arithmetic on literals, and on moto that a
burst of SlowDown answers brings the requests in flight down while every file still
gets there, and that without throttling nothing is held back."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import make_tree
from test_faults import slow_down

import s3common
from ass3.connection import Connection
from ass3.pacing import Window, is_throttled

# botocore retries at once, so a burst of retries takes no seconds.
pytestmark = pytest.mark.usefixtures("instant_backoff")

# --- the window, pure ------------------------------------------------------------------------


def test_a_throttled_answer_halves_the_window_down_to_one() -> None:
    window = Window(16)
    assert window.places == 16
    sizes = []
    for _ in range(6):
        window.answered(window.round, throttled=True, in_flight=16)
        sizes.append(window.places)
    assert sizes == [8, 4, 2, 1, 1, 1]
    assert window.throttled == 6


def test_answers_to_requests_sent_before_a_halving_do_not_halve_again() -> None:
    window = Window(16)
    sent_in = window.round
    for _ in range(10):  # ten requests in flight, all throttled
        window.answered(sent_in, throttled=True, in_flight=10)
    assert window.places == 5  # half of the ten in flight, not of the window's 16


def test_other_answers_grow_the_window_by_one_place_per_window_up_to_the_ceiling() -> None:
    window = Window(8)
    for _ in range(3):
        window.answered(window.round, throttled=True, in_flight=16)
    assert window.places == 1
    window.answered(window.round, throttled=False, in_flight=1)
    assert window.places == 2
    for _ in range(2):  # 2 + 1/2 + 1/2.5: not yet a third place
        window.answered(window.round, throttled=False, in_flight=1)
    assert window.places == 2
    window.answered(window.round, throttled=False, in_flight=1)
    assert window.places == 3
    for _ in range(200):
        window.answered(window.round, throttled=False, in_flight=1)
    assert window.size == 8.0


@pytest.mark.parametrize(
    ("status", "code", "throttled"),
    [
        (503, "SlowDown", True),
        (503, None, True),  # a bare 503 from a proxy or another store
        (429, None, True),
        (400, "Throttling", True),
        (500, "InternalError", False),
        (403, "AccessDenied", False),
        (200, None, False),
        (None, None, False),  # no answer at all (a dropped connection)
    ],
)
def test_which_answers_are_throttling(
    status: int | None, code: str | None, throttled: bool
) -> None:
    assert is_throttled(status, code) is throttled


# --- on moto ---------------------------------------------------------------------------------

WORKERS = 8
FILES = 90
THROTTLED = range(30, 60)  # the files whose first PutObject is answered SlowDown


class InFlight:
    """A before-send handler holding each PutObject 50 ms, the way a round trip would, and
    noting how many were under way at once, with how many SlowDowns had been answered."""

    def __init__(self) -> None:
        self.now = 0
        self.slowdowns = 0
        self.seen: list[tuple[int, int]] = []  # (SlowDowns answered so far, in flight)
        self._lock = threading.Lock()

    def __call__(self, **_: Any) -> None:
        with self._lock:
            self.now += 1
            self.seen.append((self.slowdowns, self.now))
        time.sleep(0.05)
        with self._lock:
            self.now -= 1

    def most(self, low: int = 0, high: int | None = None) -> int:
        return max(
            count for slowdowns, count in self.seen if low <= slowdowns < (high or FILES * 10)
        )


def _burst(in_flight: InFlight) -> Any:
    """Answer SlowDown to the first PutObject of each file in THROTTLED."""
    answered: set[str] = set()
    lock = threading.Lock()

    def maybe_slow_down(request: Any, **_: Any) -> Any:
        name = request.url.split("?", 1)[0].rsplit("/", 1)[-1]
        with lock:
            if not name.startswith("f") or int(name[1:]) not in THROTTLED or name in answered:
                return None
            answered.add(name)
            in_flight.slowdowns += 1
        return slow_down(request)

    return maybe_slow_down


def _run(tmp_path: Path, bucket: str, *, throttle: bool) -> tuple[InFlight, Any, Connection]:
    root = make_tree(tmp_path / "src", {f"f{index:03d}": b"x" * index for index in range(FILES)})
    conn = Connection(workers=WORKERS)
    in_flight = InFlight()
    conn.client.meta.events.register("before-send.s3.PutObject", in_flight)
    if throttle:
        conn.client.meta.events.register("before-send.s3.PutObject", _burst(in_flight))
    summary = s3common.backup(conn, str(root), bucket=bucket, prefix="data")
    return in_flight, summary, conn


@pytest.mark.slow
def test_a_burst_of_slowdowns_slows_the_whole_run_and_every_file_gets_there(
    s3: Any, bucket: str, tmp_path: Path
) -> None:
    in_flight, summary, conn = _run(tmp_path, bucket, throttle=True)
    assert (summary.failures, summary.transferred) == ([], FILES)
    assert in_flight.slowdowns == len(THROTTLED)
    assert summary.requests["PutObject"] == FILES + len(THROTTLED) + 1  # + the run record
    listed = conn.client.list_objects_v2(Bucket=bucket, Prefix="data/")
    assert len(listed["Contents"]) == FILES
    assert in_flight.most(0, 1) == WORKERS  # full speed before the burst
    # Held back in the burst's second half. How far depends on the threads' timing on a
    # busy machine (4 on a quiet one, 6 seen under load); full speed would be WORKERS.
    assert in_flight.most(len(THROTTLED) // 2, len(THROTTLED)) < WORKERS
    assert conn.pacer.window.round >= 1
    assert conn.pacer.window.throttled == len(THROTTLED)


@pytest.mark.slow
def test_without_throttling_nothing_is_held_back(s3: Any, bucket: str, tmp_path: Path) -> None:
    in_flight, summary, conn = _run(tmp_path, bucket, throttle=False)
    assert (summary.failures, summary.transferred) == ([], FILES)
    assert in_flight.most() == WORKERS
    assert conn.pacer.window.places == WORKERS * 2
