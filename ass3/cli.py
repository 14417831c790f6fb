"""What both scripts share on the command line once the options are parsed (`options`):
connecting, printing results, and `run_main`, the one place errors, bugs and stop
signals become one line and an exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from types import FrameType
from typing import Any

from ass3 import __version__
from ass3.check import check
from ass3.connection import (
    Connection,
    StorageOptions,
)
from ass3.diff import diff
from ass3.history import format_runs, runs
from ass3.listings import format_listing, listing
from ass3.model import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_OUTPUT_CLOSED,
    Ass3Error,
    EventListener,
    Summary,
    printable,
)
from ass3.names import validate_bucket_name
from ass3.partial import Selection
from ass3.progress import Progress
from ass3.remote import resolve_bucket

log = logging.getLogger("ass3")


def check_or_diff(
    args: argparse.Namespace,
    conn: Connection,
    bucket: str,
    as_of: datetime | None,
    selection: Selection,
) -> int:
    """Run --check or --diff and print what it found, as lines or (--json) one JSON
    document: one line per finding, then the count line."""
    name = args.name.strip("/")
    where = f"s3://{bucket}/{name}/"
    details: dict[str, Any] = {"bucket": bucket, "prefix": name}
    with progress_for(args, "check" if args.check else "diff") as progress:
        if args.check:
            report = check(
                conn,
                name,
                bucket=bucket,
                run_id=args.run,
                as_of=as_of,
                selection=selection,
                read_data=args.read_data,
                progress=progress,
            )
            verb = "checking"
        else:
            folder = args.diff or os.path.join(args.dest or ".", name)
            report = diff(
                conn,
                name,
                bucket=bucket,
                folder=folder,
                run_id=args.run,
                as_of=as_of,
                selection=selection,
                progress=progress,
            )
            verb, where = "comparing with", f"{folder} with {where}"
            details["folder"] = folder
    if args.json:
        document = {**details, **report.to_dict(), "version": __version__}
        if args.events:
            document = {"event": "summary", **document}
        print(json.dumps(document, ensure_ascii=False))
        return report.exit_code
    if not args.quiet:
        print(f"{verb} {report.summary.method}")
    for finding in report.sorted_findings():
        print(finding.line())
    if not args.quiet:
        print(f"{where}: {report.line()}")
    return report.exit_code


def connect(args: argparse.Namespace) -> tuple[Connection, str]:
    """The connection and the validated bucket name from the shared options."""
    if args.bucket:
        validate_bucket_name(args.bucket)
    storage = StorageOptions(
        getattr(args, "storage_class", None),
        getattr(args, "sse", None),
        getattr(args, "sse_kms_key_id", None),
    )
    conn = Connection(
        profile=args.profile,
        region=args.region,
        endpoint_url=args.endpoint_url,
        workers=args.workers,
        multipart_threshold=args.multipart_threshold,
        multipart_chunksize=args.multipart_chunksize,
        storage=storage,
        path_style=args.path_style,
        crc32=not args.no_crc32,
    )
    return conn, resolve_bucket(conn, args.bucket)


def print_listing(args: argparse.Namespace, conn: Connection, bucket: str, name: str | None) -> int:
    """--list, as lines or (with --json) one JSON document."""
    if args.json:
        print(json.dumps(listing(conn, bucket, name), ensure_ascii=False))
    else:
        print("\n".join(format_listing(conn, bucket, name)))
    return EXIT_OK


def print_runs(args: argparse.Namespace, conn: Connection, bucket: str, name: str) -> int:
    """--runs, as lines or (with --json) one JSON document."""
    if args.json:
        print(json.dumps(runs(conn, bucket, name), ensure_ascii=False))
    else:
        print("\n".join(format_runs(conn, bucket, name)))
    return EXIT_OK


def listener_for(args: argparse.Namespace) -> EventListener | None:
    """With --events, one JSON line per event on stdout, whole lines even from threads."""
    if not args.events:
        return None
    lock = threading.Lock()

    def print_event(event: dict[str, Any]) -> None:
        line = json.dumps(event, ensure_ascii=False)
        with lock:
            print(line, flush=True)

    return print_event


def progress_for(args: argparse.Namespace, action: str) -> Progress:
    """Bars only for a person at a terminal: not with -q, --json, or stderr redirected."""
    enabled = sys.stderr.isatty() and not args.quiet and not args.json
    return Progress(action, enabled=enabled)


def finish(args: argparse.Namespace, summary: Summary, line: str, **details: Any) -> int:
    """Print the run's summary as the options ask, and give its exit code."""
    if args.json:
        document = {**details, **summary.to_dict(), "version": __version__}
        if args.events:
            document = {"event": "summary", **document}
        print(json.dumps(document, ensure_ascii=False))
    elif not args.quiet:
        print(fit_to_terminal(line))
    return summary.exit_code


def fit_to_terminal(text: str) -> str:
    """On a terminal, each line wrapped at its width between words, continued indented;
    elsewhere (a log, a pipe, cron) one line each, for grep."""
    if not sys.stdout.isatty():
        return text
    width = shutil.get_terminal_size().columns
    return "\n".join(
        textwrap.fill(line, width, subsequent_indent="  ", break_long_words=False)
        for line in text.splitlines()
    )


class Interrupted(KeyboardInterrupt):
    """A stop signal other than Ctrl-C (SIGTERM, SIGHUP), raised in the main thread as
    Ctrl-C raises KeyboardInterrupt, so the same path runs: queued steps are dropped and
    the transfers in flight cancelled, which aborts their multipart uploads that have no
    part yet and keeps the others for the next run to resume."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


# SIGTERM: systemd stopping a service, `docker stop`, `timeout`, a plain `kill`.
# SIGHUP: the terminal or SSH session went away. (Windows has neither of the second.)
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


@contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP interrupt it as Ctrl-C does; the
    handlers the caller had are put back after.

    Only the main thread may set handlers: elsewhere this does nothing. A signal the
    caller ignores stays ignored (`nohup` ignores SIGHUP). Only the first signal
    interrupts: another one while the run cleans up (systemd can send SIGHUP right
    after SIGTERM) must not cut short the clean-up of its multipart uploads. SIGKILL stays
    the way to stop at once, and a second Ctrl-C still interrupts as it always did.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping: list[int] = []

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        if not stopping:
            stopping.append(signum)
            raise Interrupted(signum)

    previous: dict[int, Any] = {}
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) != signal.SIG_IGN:
            previous[signum] = signal.signal(signum, interrupt)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            # None: a handler set outside Python, which cannot be put back; the default.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def run_main(program: str, args: argparse.Namespace, body: Callable[[], int]) -> int:
    """Run a script's body: log to stderr, turn errors into one line and an exit code.

    Ass3Error: its message and code (2). Ctrl-C: 130; SIGTERM or SIGHUP: 128 + the
    signal's number, after the same clean-up as Ctrl-C. Stdout closed by its reader
    (`| head`): EXIT_OUTPUT_CLOSED and nothing more. Any other exception is a bug:
    one line and EXIT_INTERNAL, never 1, which means "some files failed" (a bug in a
    worker thread reaches here too, through the step's future); --debug adds the
    traceback. With --json an error that stops the run is also a JSON document on stdout.
    """
    if getattr(args, "events", False):
        args.json = True  # every JSON document the run prints ends the stream of events
    else:
        args.events = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    if args.quiet:
        handler.setLevel(logging.ERROR)
    elif args.verbose or args.dry_run:
        handler.setLevel(logging.INFO)
    else:
        handler.setLevel(logging.WARNING)
    log.addHandler(handler)
    saved = log.level, log.propagate
    log.setLevel(handler.level)
    log.propagate = False
    try:
        with stop_signals_interrupt():
            return body()
    except Ass3Error as error:
        log.error("%s: error: %s", program, error)
        code, message = error.exit_code, str(error)
    except KeyboardInterrupt as interruption:
        if isinstance(interruption, Interrupted):
            code, message = 128 + interruption.signum, f"interrupted ({interruption.name})"
        else:
            code, message = EXIT_INTERRUPTED, "interrupted"
        log.error("%s: %s", program, message)
    except BrokenPipeError:
        # What the reader wanted it has; what is left to print, and Python's own flush
        # of stdout at exit, go nowhere instead of failing again.
        with suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        return EXIT_OUTPUT_CLOSED
    except Exception as error:
        text = printable(" ".join(str(error).splitlines()))
        message = f"internal error: {type(error).__name__}: {text}".rstrip(": ")
        if getattr(args, "debug", False):
            log.error("%s: %s", program, message, exc_info=error)
        else:
            log.error("%s: %s (run with --debug for the traceback)", program, message)
        code = EXIT_INTERNAL
    finally:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]
    if args.json:
        document = {"error": message, "exit_code": code, "version": __version__}
        if args.events:
            document = {"event": "error", **document}
        print(json.dumps(document, ensure_ascii=False))
    return code
