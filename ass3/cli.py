"""What both scripts share on the command line: argument groups, connecting,
printing results, and `run_main`, the one place errors, bugs and stop signals become
one line and an exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType
from typing import Any

from ass3.connection import (
    ARCHIVE_CLASSES,
    BUCKET_ENV,
    DEFAULT_WORKERS,
    STORAGE_CLASSES,
    Connection,
    StorageOptions,
)
from ass3.history import format_runs, runs
from ass3.listings import format_listing, listing
from ass3.model import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_OUTPUT_CLOSED,
    Ass3Error,
    Summary,
    printable,
)
from ass3.names import validate_bucket_name
from ass3.plan import DEFAULT_MAX_DELETE
from ass3.progress import Progress
from ass3.remote import resolve_bucket

log = logging.getLogger("ass3")


def max_delete_spec(text: str) -> str:
    """argparse type for --max-delete."""
    if not re.fullmatch(r"\d+%?", text) or (text.endswith("%") and int(text[:-1]) > 100):
        raise argparse.ArgumentTypeError(f"use a count or a percentage, e.g. 100 or 25%: {text!r}")
    return text


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """The options both scripts share: where the backups live, how to reach them, output."""
    where = parser.add_argument_group("where the backups live")
    where.add_argument(
        "--bucket", help=f"bucket name (default: ${BUCKET_ENV}, else ass3backup-<account id>)"
    )
    where.add_argument("--profile", help="AWS profile from ~/.aws/config")
    where.add_argument("--region", help="AWS region (default: from the profile or AWS_REGION)")
    where.add_argument("--endpoint-url", help="S3-compatible endpoint (default: $AWS_ENDPOINT_URL)")
    where.add_argument(
        "--path-style",
        action="store_true",
        help="address buckets as ENDPOINT/BUCKET (MinIO, Ceph and other self-hosted stores)",
    )
    where.add_argument(
        "--no-crc32",
        action="store_true",
        help="do not send or check boto3's CRC32 checksums, for stores that reject them "
        "(the tool's own MD5 checks stay)",
    )
    where.add_argument(
        "--workers",
        type=positive_int,
        default=DEFAULT_WORKERS,
        help=f"files transferred in parallel (default: {DEFAULT_WORKERS})",
    )
    output_group = parser.add_argument_group("output")
    output = output_group.add_mutually_exclusive_group()
    output.add_argument(
        "-v", "--verbose", action="store_true", help="print each file acted on, with the reason"
    )
    output.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    output_group.add_argument(
        "--debug",
        action="store_true",
        help="on an internal error (a bug), print its full traceback, for a bug report",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON summary on stdout at the end, and nothing else on stdout",
    )


def add_deletion_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """--delete and its guards, and --dry-run, which both scripts take."""
    group = parser.add_argument_group("deleting")
    group.add_argument("--delete", action="store_true", help=f"delete {what}")
    group.add_argument(
        "--max-delete",
        type=max_delete_spec,
        metavar="N|N%",
        # argparse %-formats help texts: the default's "%" must be doubled.
        help="with --delete, refuse to delete more than this "
        f"(default {DEFAULT_MAX_DELETE.replace('%', '%%')})",
    )
    group.add_argument(
        "--force", action="store_true", help="with --delete, allow more than --max-delete"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be transferred or deleted and why; change nothing",
    )


def storage_class(text: str) -> str:
    """argparse type for --storage-class: classes a restore can read at once."""
    name = text.upper()
    if name in ARCHIVE_CLASSES:
        raise argparse.ArgumentTypeError(
            f"{name} objects must be thawed (RestoreObject, hours) before they can be "
            "downloaded, so a restore could not read them; use GLACIER_IR for archive pricing "
            "with immediate reads"
        )
    if name not in STORAGE_CLASSES:
        raise argparse.ArgumentTypeError(f"one of {', '.join(STORAGE_CLASSES)}: {text!r}")
    return name


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


def progress_for(args: argparse.Namespace, action: str) -> Progress:
    """Bars only for a person at a terminal: not with -q, --json, or stderr redirected."""
    enabled = sys.stderr.isatty() and not args.quiet and not args.json
    return Progress(action, enabled=enabled)


def finish(args: argparse.Namespace, summary: Summary, line: str, **details: Any) -> int:
    """Print the run's summary as the options ask, and give its exit code."""
    if args.json:
        print(json.dumps({**details, **summary.to_dict()}, ensure_ascii=False))
    elif not args.quiet:
        print(line)
    return summary.exit_code


class Interrupted(KeyboardInterrupt):
    """A stop signal other than Ctrl-C (SIGTERM, SIGHUP), raised in the main thread as
    Ctrl-C raises KeyboardInterrupt, so the same path runs: queued steps are dropped and
    the transfers in flight cancelled, which aborts their multipart uploads."""

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
    after SIGTERM) must not cut short the aborts of its multipart uploads. SIGKILL stays
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
        print(json.dumps({"error": message, "exit_code": code}, ensure_ascii=False))
    return code
