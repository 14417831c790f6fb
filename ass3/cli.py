"""What both scripts share on the command line: argument groups, connecting,
printing results, and `run_main`, the one place errors become one line and an exit
code.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Callable
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
from ass3.model import EXIT_INTERRUPTED, EXIT_OK, Ass3Error, Summary
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
    output = parser.add_argument_group("output").add_mutually_exclusive_group()
    output.add_argument(
        "-v", "--verbose", action="store_true", help="print each file acted on, with the reason"
    )
    output.add_argument("-q", "--quiet", action="store_true", help="print errors only")
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


def run_main(program: str, args: argparse.Namespace, body: Callable[[], int]) -> int:
    """Run a script's body: log to stderr, turn errors into one line and an exit code.

    With --json an error that stops the run is also a JSON document on stdout.
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
        return body()
    except Ass3Error as error:
        log.error("%s: error: %s", program, error)
        code, message = error.exit_code, str(error)
    except KeyboardInterrupt:
        log.error("%s: interrupted", program)
        code, message = EXIT_INTERRUPTED, "interrupted"
    finally:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]
    if args.json:
        print(json.dumps({"error": message, "exit_code": code}, ensure_ascii=False))
    return code
