"""Progress bars on stderr for a person at a terminal; silent otherwise."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

from ass3.model import LocalFile, Outcome, Step


class Progress:
    """Progress bars on stderr while a run goes: files with rate and ETA, bytes with rate.

    Disabled (no output at all) unless stderr is a terminal, so cron mails and pipes
    get only the summary. The plan is streamed, so a backup counts the files ahead
    in a thread of its own (`count_ahead`) to give the bar its total; without that
    (a restore) the total grows as the listing goes.
    """

    def __init__(self, action: str, *, enabled: bool) -> None:
        self.enabled = enabled
        self._lock = threading.Lock()
        self._counted_ahead = False
        self._closed = False
        options: dict[str, Any] = {"disable": not enabled, "leave": False, "file": sys.stderr}
        self._files = tqdm(desc=f"{action}: files", unit=" files", total=0, position=0, **options)
        self._bytes = tqdm(
            desc=f"{action}: bytes",
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            position=1,
            **options,
        )

    def count_ahead(self, files: Iterable[LocalFile]) -> None:
        """Count `files` (a second, cheap walk) in the background for the bar's total."""
        if not self.enabled:
            return
        self._counted_ahead = True

        def count() -> None:
            counted = 0
            for _ in files:
                if self._closed:
                    return
                counted += 1
                if counted % 256 == 0:
                    self._set_total(counted)
            self._set_total(counted)

        threading.Thread(target=count, name="ass3-count", daemon=True).start()

    def _set_total(self, total: int) -> None:
        with self._lock:
            if self._closed:
                return
            self._files.total = max(total, self._files.n)
            self._files.refresh()

    def planned(self, step: Step) -> None:
        if not self._counted_ahead:
            with self._lock:
                self._files.total += 1
                self._files.refresh()

    def finished(self, outcome: Outcome) -> None:
        with self._lock:
            self._files.update(1)
            if outcome.transferred:
                self._bytes.update(outcome.size)

    def failed(self, step: Step) -> None:
        with self._lock:
            self._files.update(1)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._bytes.close()
            self._files.close()
