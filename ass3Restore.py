#!/usr/bin/env python3
"""Restore a backup made by ass3Backup.py from S3, verifying every file."""

from __future__ import annotations

import argparse
import os
import sys

import s3common


def build_parser() -> argparse.ArgumentParser:
    parser = s3common.Parser(
        script="ass3Restore.py",
        command="ass3-restore",
        description="Download backup NAME from S3 into DEST/NAME, verifying each file's MD5.",
        examples="""\
  # restore into /tmp/r/Documents/
  %(prog)s Documents --dest /tmp/r
  # the runs there are to go back to
  %(prog)s Documents --runs
  # the tree as it was at the end of that day
  %(prog)s Documents --as-of 2026-11-30
  # show what would be downloaded, and why
  %(prog)s Documents --dry-run -v
""",
    )
    parser.add_argument("name", metavar="NAME", nargs="?", help="the backup to restore")
    parser.add_argument("--dest", help="folder to restore into (default: current)")
    parser.add_argument(
        "--list",
        nargs="?",
        const="",
        metavar="NAME",
        help="list buckets and backups, or the objects of backup NAME, then exit",
    )
    history = parser.add_argument_group("history").add_mutually_exclusive_group()
    history.add_argument(
        "--as-of",
        metavar="WHEN",
        help="restore the tree of the newest run at or before WHEN (ISO 8601 date or "
        "date-time, local time unless a zone is given)",
    )
    history.add_argument("--run", metavar="ID", help="restore the tree of run ID (see --runs)")
    history.add_argument("--runs", action="store_true", help="list the runs of backup NAME")
    tree = parser.add_argument_group("the tree beyond file bytes (see docs/tree-metadata.md)")
    owners = tree.add_mutually_exclusive_group()
    owners.add_argument(
        "--same-owner",
        action="store_true",
        default=None,
        help="give entries their recorded owners (the default when run as root)",
    )
    owners.add_argument(
        "--no-same-owner",
        "--no-owner",
        dest="same_owner",
        action="store_false",
        default=None,
        help="leave entries owned by the user running the restore (the default otherwise)",
    )
    tree.add_argument(
        "--numeric-owner",
        action="store_true",
        help="use the recorded uid and gid even where this system knows the recorded names",
    )
    tree.add_argument(
        "--keep-special-bits",
        action="store_true",
        help="restore setuid, setgid and sticky bits (never restored otherwise)",
    )
    tree.add_argument(
        "--xattrs", action="store_true", help="restore recorded user.* extended attributes"
    )
    s3common.add_selection_arguments(parser)
    s3common.add_check_arguments(parser)
    s3common.add_deletion_arguments(parser, "local files under DEST/NAME not in the backup")
    s3common.add_connection_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = s3common.parse_intermixed(parser, argv)
    if args.list is None and not args.name:
        parser.error("NAME is required (or use --list)")
    if (args.paths or args.rules) and (args.list is not None or args.runs):
        parser.error("PATH, --include and --exclude go with a restore, --check or --diff")
    problem = s3common.check_arguments_problem(args)
    if problem:
        parser.error(problem)

    def run() -> int:
        as_of = s3common.parse_when(args.as_of) if args.as_of else None
        selection = s3common.Selection.parse(args.paths, args.rules)
        conn, bucket = s3common.connect(args)
        if args.list is not None:
            return s3common.print_listing(args, conn, bucket, args.list or args.name)
        if args.runs:
            return s3common.print_runs(args, conn, bucket, args.name)
        if args.check or args.diff is not None:
            return s3common.check_or_diff(args, conn, bucket, as_of, selection)
        destination = args.dest or "."
        with s3common.progress_for(args, "restore") as progress:
            summary = s3common.restore(
                conn,
                args.name,
                bucket=bucket,
                destination=destination,
                run_id=args.run,
                as_of=as_of,
                delete=args.delete,
                max_delete=args.max_delete,
                force=args.force,
                dry_run=args.dry_run,
                tree_options=s3common.TreeOptions(
                    same_owner=args.same_owner,
                    numeric_owner=args.numeric_owner,
                    keep_special_bits=args.keep_special_bits,
                    xattrs=args.xattrs,
                ),
                progress=progress,
                listener=s3common.listener_for(args),
                selection=selection,
            )
        name = args.name.strip("/")
        method = f"restoring {summary.method}\n" if summary.method else ""
        target = os.path.join(destination, name, "")
        line = f"{method}s3://{bucket}/{name}/ -> {target}: {summary.line()}"
        return s3common.finish(args, summary, line, bucket=bucket, prefix=name)

    return s3common.run_main(parser.prog, args, run)


if __name__ == "__main__":
    sys.exit(main())
