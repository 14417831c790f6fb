#!/usr/bin/env python3
"""Restore a backup made by ass3Backup.py from S3, verifying every file."""

from __future__ import annotations

import argparse
import sys

import s3common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ass3Restore.py",
        description="Download backup NAME from S3 into DEST/NAME, verifying each file's MD5.",
    )
    parser.add_argument("name", metavar="NAME", nargs="?", help="the backup to restore")
    parser.add_argument("--dest", default=".", help="folder to restore into (default: current)")
    parser.add_argument(
        "--list",
        nargs="?",
        const="",
        metavar="NAME",
        help="list buckets and backups, or the objects of backup NAME, then exit",
    )
    s3common.add_connection_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list is None and not args.name:
        parser.error("NAME is required (or use --list)")

    def run() -> int:
        conn, bucket = s3common.connect(args)
        if args.list is not None:
            print("\n".join(s3common.format_listing(conn, bucket, args.list or args.name)))
            return s3common.EXIT_OK
        summary = s3common.restore(conn, args.name, bucket=bucket, destination=args.dest)
        print(f"s3://{bucket}/{args.name.strip('/')}/ -> {args.dest}: {summary.line()}")
        return summary.exit_code

    return s3common.run_main("ass3Restore", args.verbose, run)


if __name__ == "__main__":
    sys.exit(main())
