"""The one module ass3Backup.py and ass3Restore.py import: the map of the system.

The machinery lives in the `ass3` package, one module per stage, in the order data
flows through a run. Lower modules never import higher ones.

    model        plain data and errors: LocalFile, RemoteObject, Step, Summary, exit codes
    names        bucket names, backup names, which keys may become local paths,
                 the names of a restore's temporary files
    plan         pure decisions: merge two sorted streams, plan transfers, ETag
                 arithmetic, deletion guards, a killed restore's leftovers (no I/O;
                 tested on literals)
    records      run records: format, ids, the spool a run writes them through, and
                 the pure rules for which records to trust
    timeline     pure rules for using them: which run or versions stood at a time,
                 whether a restore may use them, what a new record names
    renames      pure: which recorded object a new file may be copied from instead
                 of uploaded (a rename or a copy inside the tree)
    settings     transfer settings: options over the profile's aws s3 settings
    partial      pure: part of a backup (PATH..., --include/--exclude) for a
                 restore, --check or --diff, judged on relative paths
    scan         the local side: os.walk-like traversal in key order, filters
    reading      opening a file to back up safely, and knowing it changed while read
    files        checksums, object metadata, folders opened without following links,
                 safe placement and removal of restored files
    cache        local state: the state cache (SQLite) that spares re-reading files,
                 and the markers of runs under way
    s3errors     botocore errors turned into one line a user can act on, and which
                 refusals mean a server lacks a feature
    connection   the boto3 session and client, request counting, dropping features
                 a server refuses (multipart, CRC32)
    remote       bucket setup and checks, listings of objects and versions,
                 versioning and lifecycle reads, checksums held in S3;
                 keyspace: a long listing read in parallel ranges, in key order
    history      run records and object versions in S3, retention
    listings     --list: buckets, backups and their objects
    tree         the tree beyond file bytes (folders, symlinks, owners, hard links,
                 xattrs) as a run record holds it, and when to trust it;
                 treeplan: the pure rules for restoring it
    treescan     the backup's side: what the walk sees of the tree
    treeio       the restore's side: owners, modes, links, folders, put on disk
    selected     the objects of part of a backup, listing only the named paths;
                 the state --check and --diff compare against
    progress     progress bars on a terminal
    executor     the thread pool that runs planned steps and tallies outcomes
    copying      renames and copies as server-side copies: the previous record read
                 once, copies made and checked, deferred where a bucket is unversioned
    upload       one file of a backup;  backup    the whole backup run
    resumable    big uploads the state cache records, and the pure rules for resuming
                 one; resume: keeping an interrupted upload, finishing it next run
    download     one file of a restore; restore   the whole restore run
    verdicts     pure: what --check and --diff find (missing, changed, corrupt;
                 differs, extra), judged on listings, digests and sizes
    check        --check (and --read-data): a backup still as recorded, unrestored
    diff         --diff: a local folder against a backup, without downloading
    options      the options both scripts share, their types, the one-line-error parser
    cli          connect, output, run_main (errors -> exit codes)

The functions the original design named, and where each job lives now:

    makeBucket()        remote.ensure_bucket (and remote.resolve_bucket for its name)
    printAllBuckets()   listings.format_listing (--list)
    readFile()          files.read_chunks (never the whole file in memory)
    getLocalChecksum()  files.local_checksum (MD5, and per-part MD5s for multipart)
    getS3Checksum()     remote.s3_checksum (the md5 metadata), remote.content_matches
    Backup()            backup.backup, walking with scan.scan_tree
    checkObjExists()    remote.list_remote + plan.plan_transfers: one listing, no
                        HeadObject per file
    Restore()           restore.restore, writing with download.restore_step
"""

from __future__ import annotations

from ass3 import __version__
from ass3.backup import backup
from ass3.cache import StateCache, default_cache_path
from ass3.check import check
from ass3.cli import (
    check_or_diff,
    connect,
    finish,
    listener_for,
    print_listing,
    print_runs,
    progress_for,
    run_main,
)
from ass3.connection import (
    DEFAULT_MAX_ATTEMPTS,
    STORAGE_CLASSES,
    Connection,
    StorageOptions,
    part_size_for,
)
from ass3.diff import diff
from ass3.files import local_checksum, read_chunks
from ass3.history import (
    format_runs,
    list_run_ids,
    retention_days,
    set_retention,
    versions_as_of,
)
from ass3.listings import format_listing, list_backups
from ass3.model import (
    CHANGING,
    EXIT_FAILURES,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    EXTRA,
    NEW,
    SAME_SIZE,
    SIZE_CHANGED,
    UNCHANGED,
    Ass3Error,
    Entry,
    FileDigest,
    FileProblem,
    LocalFile,
    MiB,
    RemoteObject,
    Seen,
    Step,
    Summary,
)
from ass3.names import default_prefix, normalize_prefix, unsafe_key_reason, validate_bucket_name
from ass3.options import (
    Parser,
    add_check_arguments,
    add_connection_arguments,
    add_deletion_arguments,
    add_filter_arguments,
    add_selection_arguments,
    check_arguments_problem,
    parse_intermixed,
    positive_int,
    storage_class,
)
from ass3.partial import Selection
from ass3.plan import (
    cache_vouches,
    deletion_refusal,
    etag_matches,
    key_order,
    merge_by_rel,
    multipart_etag,
    plan_transfers,
)
from ass3.records import record_key, run_time
from ass3.remote import ensure_bucket, list_remote, resolve_bucket, s3_checksum
from ass3.restore import restore
from ass3.s3errors import describe_client_error
from ass3.scan import IGNORE_FILE, Filters, ScanReport, check_directory, scan_tree
from ass3.timeline import parse_when
from ass3.treeplan import TreeOptions
from ass3.trial import run_trial

__all__ = [
    "CHANGING",
    "DEFAULT_MAX_ATTEMPTS",
    "EXIT_FAILURES",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "EXTRA",
    "IGNORE_FILE",
    "NEW",
    "SAME_SIZE",
    "SIZE_CHANGED",
    "STORAGE_CLASSES",
    "UNCHANGED",
    "Ass3Error",
    "Connection",
    "Entry",
    "FileDigest",
    "FileProblem",
    "Filters",
    "LocalFile",
    "MiB",
    "Parser",
    "RemoteObject",
    "ScanReport",
    "Seen",
    "Selection",
    "StateCache",
    "Step",
    "StorageOptions",
    "Summary",
    "TreeOptions",
    "__version__",
    "add_check_arguments",
    "add_connection_arguments",
    "add_deletion_arguments",
    "add_filter_arguments",
    "add_selection_arguments",
    "backup",
    "cache_vouches",
    "check",
    "check_arguments_problem",
    "check_directory",
    "check_or_diff",
    "connect",
    "default_cache_path",
    "default_prefix",
    "deletion_refusal",
    "describe_client_error",
    "diff",
    "ensure_bucket",
    "etag_matches",
    "finish",
    "format_listing",
    "format_runs",
    "key_order",
    "list_backups",
    "list_remote",
    "list_run_ids",
    "listener_for",
    "local_checksum",
    "merge_by_rel",
    "multipart_etag",
    "normalize_prefix",
    "parse_intermixed",
    "parse_when",
    "part_size_for",
    "plan_transfers",
    "positive_int",
    "print_listing",
    "print_runs",
    "progress_for",
    "read_chunks",
    "record_key",
    "resolve_bucket",
    "restore",
    "retention_days",
    "run_main",
    "run_time",
    "run_trial",
    "s3_checksum",
    "scan_tree",
    "set_retention",
    "storage_class",
    "unsafe_key_reason",
    "validate_bucket_name",
    "versions_as_of",
]
