"""Throttling slows the whole run, not one request.

S3 answers 503 SlowDown when a prefix gets more requests than it takes, and other
stores answer 503 or 429. botocore retries such a request after a backoff, but each
thread on its own: the other threads go on at full rate and keep getting throttled.
Here every request of a connection takes a place among a shared number in flight
(the window) just before it is sent, and gives it back when its answer comes. A
throttled answer halves the window (or what was in flight, when that was less);
every other answer grows it by about one place per window's worth of answers
(additive increase, multiplicative decrease, as TCP's congestion control), up to the
connection's pool. botocore still does the retries.

A window is halved at most once per round: an answer to a request sent before the
last halving says nothing of the smaller window, so it does not halve it again
(otherwise a burst of throttled answers to requests already in flight would bring
the window to one at once).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from botocore.hooks import BaseEventHooks

log = logging.getLogger("ass3")

THROTTLED_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "TooManyRequests",
        "TooManyRequestsException",
    }
)
THROTTLED_STATUSES = frozenset({429, 503})


def is_throttled(status: int | None, code: str | None) -> bool:
    """Whether an answer asks the client to slow down."""
    return status in THROTTLED_STATUSES or code in THROTTLED_CODES


class Window:
    """How many requests may be in flight: the pure arithmetic, without threads."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling = max(ceiling, 1)
        self.size = float(self.ceiling)
        self.round = 0  # how many times the window has been halved
        self.throttled = 0  # throttled answers seen

    @property
    def places(self) -> int:
        return max(int(self.size), 1)

    def answered(self, sent_in_round: int, *, throttled: bool, in_flight: int) -> None:
        """Adjust to the answer to a request sent in round `sent_in_round`, while
        `in_flight` requests (this one included) were under way: a throttled one halves
        what was really in flight, which may be less than the window allows."""
        if throttled:
            self.throttled += 1
            if sent_in_round == self.round:
                self.size = max(min(self.size, in_flight) / 2, 1.0)
                self.round += 1
        else:
            self.size = min(self.size + 1 / self.size, float(self.ceiling))


class Pacer:
    """A connection's window, shared by its threads through botocore's events."""

    def __init__(self, ceiling: int) -> None:
        self.window = Window(ceiling)
        self.in_flight = 0
        self._changed = threading.Condition()
        self._mine = threading.local()  # the round in which this thread's request was sent

    def attach(self, events: BaseEventHooks) -> None:
        """Pace every request of a client: a place is taken before each attempt is sent
        and given back when botocore decides whether to retry it. botocore calls the
        handlers of `before-send.s3.*` before those of `before-send.s3.PutObject` and
        `before-send`, so the place is taken before any handler that answers instead
        of the server (moto's, a test's) or stands for the network."""
        events.register_first("before-send.s3.*", self._before_send)
        events.register_first("needs-retry.s3.*", self._after_attempt)

    def _before_send(self, **_: Any) -> None:
        if getattr(self._mine, "round", None) is not None:
            return  # an attempt that never got an answer left its place to this thread
        with self._changed:
            while self.in_flight >= self.window.places:
                self._changed.wait()
            self.in_flight += 1
            self._mine.round = self.window.round

    def _after_attempt(
        self, response: tuple[Any, Mapping[str, Any]] | None = None, **_: Any
    ) -> None:
        sent_in_round = getattr(self._mine, "round", None)
        if sent_in_round is None:
            return
        self._mine.round = None
        status, code = None, None
        if response is not None:
            http, parsed = response
            status = getattr(http, "status_code", None)
            code = parsed.get("Error", {}).get("Code")
        throttled = is_throttled(status, code)
        with self._changed:
            before = self.window.places
            self.window.answered(sent_in_round, throttled=throttled, in_flight=self.in_flight)
            self.in_flight -= 1
            if throttled and self.window.places < before:
                log.info(
                    "the server asks to slow down (%s): at most %d requests at once now",
                    code or status,
                    self.window.places,
                )
            self._changed.notify_all()
