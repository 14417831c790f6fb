"""The command-line options both scripts share, their argparse types, and the parser
whose usage errors are one line like every other error."""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import NoReturn

from ass3 import __version__
from ass3.connection import ARCHIVE_CLASSES, BUCKET_ENV, STORAGE_CLASSES
from ass3.plan import DEFAULT_MAX_DELETE
from ass3.settings import DEFAULT_WORKERS, MULTIPART_CHUNKSIZE, MULTIPART_THRESHOLD, parse_size


class Parser(argparse.ArgumentParser):
    """argparse with the tool's manners: a usage error is one line with the same prefix
    as every other error, and a hint to --help instead of the whole usage block."""

    def __init__(self, *, script: str, command: str, description: str, examples: str) -> None:
        # How the user called it: `ass3Backup.py` from a checkout, `ass3-backup` installed.
        called = os.path.basename(sys.argv[0])
        super().__init__(
            prog=called if called == command else script,
            description=description,
            epilog=f"examples:\n{examples}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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


def size(text: str) -> int:
    """argparse type for sizes, spelled as the AWS CLI spells them: 8MB, 64MiB, 1GB."""
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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
    transfers = parser.add_argument_group(
        "transfers", "defaults come from the profile's s3 section in ~/.aws/config, as for aws s3"
    )
    transfers.add_argument(
        "--workers",
        type=positive_int,
        help="files transferred in parallel (default: s3.max_concurrent_requests, "
        f"else {DEFAULT_WORKERS})",
    )
    transfers.add_argument(
        "--multipart-threshold",
        type=size,
        metavar="SIZE",
        help="files this big or bigger go in parts (default: s3.multipart_threshold, "
        f"else {MULTIPART_THRESHOLD // 2**20}MB)",
    )
    transfers.add_argument(
        "--multipart-chunksize",
        type=size,
        metavar="SIZE",
        help="the size of each part (default: s3.multipart_chunksize, "
        f"else {MULTIPART_CHUNKSIZE // 2**20}MB)",
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
    machine = parser.add_mutually_exclusive_group()
    machine.add_argument(
        "--json",
        action="store_true",
        help="print a JSON summary on stdout at the end, and nothing else on stdout",
    )
    machine.add_argument(
        "--events",
        action="store_true",
        help="print one JSON object per line on stdout as the run goes (start, file, "
        "failed, warning), then the --json summary as the last one (docs/usage.md)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


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


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    """PATH... and --include/--exclude of ass3Restore.py: part of a backup, for a
    restore, --check or --diff (see `partial.Selection`)."""
    parser.add_argument(
        "paths",
        metavar="PATH",
        nargs="*",
        help="only these files or folders of the backup (relative to its top; a folder "
        "means everything below it, a trailing / means only a folder)",
    )
    add_filter_arguments(
        parser.add_argument_group("part of the backup"), "gitignore rules, as for a backup"
    )


def add_filter_arguments(group: argparse._ArgumentGroup, rules: str) -> None:
    """--exclude and --include, in the order given, as (kind, pattern) in `args.rules`."""
    group.add_argument(
        "--exclude",
        dest="rules",
        action="append",
        default=[],
        metavar="PATTERN",
        type=lambda pattern: ("exclude", pattern),
        help=f"leave out paths matching PATTERN ({rules}); repeatable",
    )
    group.add_argument(
        "--include",
        dest="rules",
        action="append",
        metavar="PATTERN",
        type=lambda pattern: ("include", pattern),
        help="take back paths an earlier --exclude left out; later patterns win",
    )


def parse_intermixed(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse with options and positionals in any order (`NAME --dest DIR PATH...`).

    argparse's intermixed parsing %-formats the usage it generates once more, which
    breaks on the '%' of --max-delete's N|N%; the usage is set beforehand, escaped.
    """
    if parser.usage is None:
        parser.usage = parser.format_usage().removeprefix("usage: ").strip().replace("%", "%%")
    return parser.parse_intermixed_args(argv)


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    """--check, --read-data and --diff of ass3Restore.py: look at a backup without
    restoring it."""
    group = parser.add_argument_group("checking without restoring")
    modes = group.add_mutually_exclusive_group()
    modes.add_argument(
        "--check",
        action="store_true",
        help="check that every object the latest run (or --run, --as-of) recorded is in the "
        "bucket with its version, size and ETag: one listing, no download",
    )
    modes.add_argument(
        "--diff",
        nargs="?",
        const="",
        metavar="FOLDER",
        help="list the files of FOLDER (default: DEST/NAME) that differ from the backup, are "
        "missing or are extra, by size and MD5, without downloading",
    )
    group.add_argument(
        "--read-data",
        action="store_true",
        help="with --check, download every object and verify every byte (MD5 and ETag); "
        "nothing is written to disk",
    )


def check_arguments_problem(args: argparse.Namespace) -> str | None:
    """Why the options of ass3Restore.py do not go together, or None."""
    looking = "--check" if args.check else "--diff" if args.diff is not None else None
    if args.read_data and not args.check:
        return "--read-data goes with --check"
    if looking is None:
        return None
    for given, option in [
        (args.delete, "--delete"),
        (args.dry_run, "--dry-run"),
        (args.force, "--force"),
        (args.max_delete, "--max-delete"),
        (args.runs, "--runs"),
        (args.list is not None, "--list"),
    ]:
        if given:
            return f"{looking} changes nothing, so {option} does not go with it"
    if args.dest is not None and (args.check or args.diff):
        where = "FOLDER" if args.diff else "nothing local"
        return f"{looking} compares {where}: --dest does not go with it"
    return None


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
