"""Progress bars on stderr for a person at a terminal; silent otherwise."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

from ass3.model import LocalFile, Outcome, RemoteObject, Step, human_bytes


def _size_of(step: Step) -> int:
    source = step.source
    return source.size if isinstance(source, (LocalFile, RemoteObject)) else 0


class Progress:
    """Two bars on stderr while a run goes: files, and bytes, each against a total known
    from the start where the run can know it, with rate and ETA; the phase the run is
    in and the errors so far beside them.

    Bytes count every file the run is done with, sent or found unchanged, so the bar
    and its ETA follow the work rather than only the transfers; what was actually
    sent is said beside it, in the units of the summary line. The totals come from a
    second, cheap walk in a thread of its own (`count_ahead`, a backup) or from the
    run record (`expect`, a restore); without either, they grow as the plan goes.

    Disabled (no output at all) unless stderr is a terminal, so cron mails and pipes
    get only the summary.
    """

    def __init__(self, action: str, *, enabled: bool) -> None:
        self.enabled = enabled
        self._lock = threading.Lock()
        self._known_ahead = False
        self._closed = False
        self._phase = ""
        self._errors = 0
        self._sent = 0
        self._planned = (0, 0)  # files and bytes planned so far
        self._moved = "fetched" if action == "restore" else "sent"
        options: dict[str, Any] = {"disable": not enabled, "leave": False, "file": sys.stderr}
        self._files = tqdm(desc=f"{action} files", unit=" files", total=0, position=0, **options)
        self._bytes = tqdm(
            desc=f"{action} bytes",
            unit="iB",  # powers of 1024 as in the summary: MiB, GiB
            unit_scale=True,
            unit_divisor=1024,
            total=0,
            position=1,
            bar_format="{l_bar}{bar}| {n_fmt}iB/{total_fmt}iB "
            "[{elapsed}<{remaining}, {rate_fmt}{postfix}]",
            **options,
        )

    def expect(self, files: int, size: int) -> None:
        """The run knows its totals ahead (a restore from a run record)."""
        with self._lock:
            self._known_ahead = True
            self._set_totals(files, size)

    def count_ahead(self, files: Iterable[LocalFile]) -> None:
        """Count `files` (a second, cheap walk) in the background for the totals."""
        if not self.enabled:
            return
        self._known_ahead = True

        def count() -> None:
            counted = size = 0
            for local in files:
                if self._closed:
                    return
                counted += 1
                size += local.size
                if counted % 256 == 0:
                    with self._lock:
                        self._set_totals(counted, size)
            with self._lock:
                self._set_totals(counted, size)

        threading.Thread(target=count, name="ass3-count", daemon=True).start()

    def _set_totals(self, files: int, size: int, *, now: bool = True) -> None:
        """New totals, redrawn `now` or at the bars' next refresh."""
        if self._closed:
            return
        self._files.total = max(files, self._files.n)
        self._bytes.total = max(size, self._bytes.n)
        if now:
            self._files.refresh()
            self._bytes.refresh()

    def phase(self, text: str) -> None:
        """Say what the run is doing now: listing, hashing, writing the run record..."""
        with self._lock:
            self._phase = text
            self._show_status()

    def _show_status(self, *, now: bool = True) -> None:
        """Put the phase, the errors and the bytes moved beside the bars; redrawn `now`,
        or at the bars' next refresh (tqdm's, at most ten a second)."""
        errors = f"{self._errors} failed" if self._errors else ""
        status = ", ".join(part for part in (self._phase, errors) if part)
        self._files.set_postfix_str(status, refresh=now)
        moved = f"{self._moved} {human_bytes(self._sent)}" if self._sent else ""
        self._bytes.set_postfix_str(moved, refresh=now)

    def planned(self, step: Step) -> None:
        """A step is planned: the totals grow with them when not known ahead, and
        never stay below what was planned (a listing longer than the record said)."""
        with self._lock:
            files, size = self._planned
            self._planned = files, size = files + 1, size + _size_of(step)
            if not self._known_ahead or files > self._files.total:
                self._set_totals(
                    max(files, self._files.total), max(size, self._bytes.total), now=False
                )

    def finished(self, outcome: Outcome) -> None:
        with self._lock:
            self._files.update(1)
            self._bytes.update(outcome.size)
            if outcome.transferred:
                self._sent += outcome.size
                # Not redrawn for each file: two redraws a file cost 70 us of CPU.
                self._show_status(now=False)

    def failed(self, step: Step) -> None:
        with self._lock:
            self._files.update(1)
            self._bytes.update(_size_of(step))
            self._errors += 1
            self._show_status()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._bytes.close()
            self._files.close()
