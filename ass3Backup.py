#!/usr/bin/env python3
"""Back up a directory tree to S3, uploading only new and changed files."""

from __future__ import annotations

import argparse
import sys

import s3common


def build_parser() -> argparse.ArgumentParser:
    parser = s3common.Parser(
        script="ass3Backup.py",
        command="ass3-backup",
        description="Upload every new or changed file under DIR to s3://BUCKET/PREFIX/.",
        examples="""\
  # back up to s3://ass3backup-<account>/Documents/
  %(prog)s ~/Documents
  # show what would be uploaded, and why
  %(prog)s ~/Documents --dry-run -v
  # mirror deletions too (older runs keep them)
  %(prog)s /srv/www --prefix www --delete
  # leave out build output (gitignore patterns; DIR/.ass3ignore is read too)
  %(prog)s ~/src --exclude node_modules/ --exclude '*.o'
  # the buckets and backups there are
  %(prog)s --list
""",
    )
    parser.add_argument("directory", metavar="DIR", nargs="?", help="the folder to back up")
    parser.add_argument("--prefix", help="backup name in the bucket (default: basename of DIR)")
    parser.add_argument(
        "--try",
        dest="trial",
        action="store_true",
        help="try the tool on a throwaway local S3 server (moto): back up DIR, or a sample "
        "folder, restore it, compare, stop the server",
    )
    parser.add_argument(
        "--list",
        nargs="?",
        const="",
        metavar="NAME",
        help="list buckets and backups, or the objects of backup NAME, then exit",
    )
    what = parser.add_argument_group("what to back up")
    s3common.add_filter_arguments(
        what, "gitignore rules: *.tmp, node_modules/, **/.cache/; DIR/.ass3ignore is read too"
    )
    what.add_argument(
        "--follow-symlinks",
        action="store_true",
        help="back up what symlinks point to (links back to a folder above are skipped)",
    )
    what.add_argument(
        "--xattrs",
        action="store_true",
        help="record the user.* extended attributes of files and folders too",
    )
    what.add_argument(
        "--checksum",
        action="store_true",
        help="re-read every file whose size matches, ignoring the local state cache",
    )
    storage = parser.add_argument_group("how objects are stored")
    storage.add_argument(
        "--storage-class",
        type=s3common.storage_class,
        help=f"one of {', '.join(s3common.STORAGE_CLASSES)} (default: the bucket's)",
    )
    storage.add_argument("--sse", choices=["AES256", "aws:kms"], help="server-side encryption")
    storage.add_argument("--sse-kms-key-id", metavar="KEY", help="KMS key for --sse aws:kms")
    storage.add_argument(
        "--keep-days",
        type=s3common.positive_int,
        metavar="N",
        help="keep replaced and deleted versions of this backup for N days, then expire them",
    )
    s3common.add_deletion_arguments(parser, "objects whose files are gone from DIR")
    s3common.add_connection_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.trial:
        return s3common.run_main(parser.prog, args, lambda: s3common.run_trial(args.directory))
    if args.list is None and not args.directory:
        parser.error("DIR is required (or use --list or --try)")
    if args.sse_kms_key_id and args.sse != "aws:kms":
        parser.error("--sse-kms-key-id goes with --sse aws:kms")

    def run() -> int:
        if args.list is not None:
            conn, bucket = s3common.connect(args)
            return s3common.print_listing(args, conn, bucket, args.list or None)
        root = s3common.check_directory(args.directory)
        prefix = (
            s3common.normalize_prefix(args.prefix) if args.prefix else s3common.default_prefix(root)
        )
        conn, bucket = s3common.connect(args)
        with s3common.progress_for(args, "backup") as progress:
            summary = s3common.backup(
                conn,
                root,
                bucket=bucket,
                prefix=prefix,
                checksum=args.checksum,
                delete=args.delete,
                max_delete=args.max_delete,
                force=args.force,
                dry_run=args.dry_run,
                rules=args.rules,
                follow_symlinks=args.follow_symlinks,
                xattrs=args.xattrs,
                keep_days=args.keep_days,
                progress=progress,
                listener=s3common.listener_for(args),
            )
        kept = not any(name == "--keep-days" for name, _ in summary.warnings)
        if args.keep_days and kept and not (args.dry_run or args.quiet or args.json):
            print(f"versions of {prefix}/ expire {args.keep_days} days after replacement")
        run = f" (run {summary.run_id})" if summary.run_id else ""
        line = f"{args.directory} -> s3://{bucket}/{prefix}/{run}: {summary.line()}"
        return s3common.finish(args, summary, line, bucket=bucket, prefix=prefix)

    return s3common.run_main(parser.prog, args, run)


if __name__ == "__main__":
    sys.exit(main())
