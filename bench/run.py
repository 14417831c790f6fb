#!/usr/bin/env python3
"""Benchmark ass3 against `aws s3 sync` on a local S3 server, phase by phase.

Usage (from the repository root):

    pip install -r bench/requirements.txt
    python bench/run.py [--files 5000] [--big 3] [--big-mib 40] [--min-kib 1] [--max-kib 16]
                        [--seed 1] [--workers 8] [--json bench/out/results.json]

The default size (5000 files + 3 x 40 MiB) takes about two minutes on two cores; a quick
check is `--files 300 --big 1 --big-mib 10`. bench/out/ is git-ignored.

What it does, and why this way:

* Starts moto's S3 WSGI app on 127.0.0.1 (a free port) inside this process, behind a small
  middleware that counts requests by S3 operation. Counting where requests arrive treats
  both tools alike, whatever their client library reports about itself.
* Generates a seeded dataset in a temporary folder: FILES small files of MIN..MAX KiB in a
  10 x 10 folder tree (files at the third level), plus BIG files of BIG_MIB MiB under big/.
* Runs five phases, each for ass3 (`ass3Backup.py` / `ass3Restore.py`, --workers N) and, when
  `aws` is on PATH, for `aws s3 sync` into its own bucket:
    (a) first backup; (b) re-run with nothing changed;
    (c) 1% of the small files rewritten with the same size (new mtime);
    (d) another 1% rewritten with the same size and the old mtime put back (like `touch -r`),
        which a size-and-mtime comparison such as `aws s3 sync` cannot see;
    (e) full restore into an empty folder, then a byte comparison with the source tree.
* For each tool and phase: wall seconds, client CPU seconds (RUSAGE_CHILDREN delta, so the
  in-process server's CPU is not counted), requests by operation, objects transferred, and
  whether the phase's changes reached S3 (object ETags against local MD5s) or the restore
  matches byte for byte.

Fairness notes: both tools get the same environment (fake credentials, AWS_ENDPOINT_URL, an
empty AWS config file, every other AWS_* variable removed). `aws s3 sync` runs at its
defaults (max_concurrent_requests 10, 8 MiB multipart threshold and parts) with
--only-show-errors, so neither tool prints a line per file; ass3 runs with --workers N
(default 8). ass3 creates its own bucket on the first backup (counted); the bucket for
`aws` is created beforehand (not counted). Server and clients share this machine's CPUs.
Every number printed comes from this one run.
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import io
import json
import logging
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import boto3
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import WSGIRequestHandler, make_server

REPO = Path(__file__).resolve().parent.parent
BACKUP_SCRIPT = REPO / "ass3Backup.py"
RESTORE_SCRIPT = REPO / "ass3Restore.py"

KiB = 1024
MiB = 1024 * KiB
# Both tools upload files of 8 MiB or more in 8 MiB parts (ass3's and awscli's default).
PART_SIZE = 8 * MiB
PREFIX = "data"
BUCKETS = {"ass3": "bench-ass3", "aws": "bench-aws"}
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}

PHASES = {
    "a": "first backup",
    "b": "no-change re-run",
    "c": "1% of small files edited, same size, new mtime",
    "d": "1% of small files edited, same size, mtime restored",
    "e": "full restore into an empty folder",
}

# Table columns: operation groups, in print order.
COLUMNS = {
    "List": ("ListObjectsV2", "ListObjects", "ListObjectVersions"),
    "Put": ("PutObject",),
    "MPU": (
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
        "AbortMultipartUpload",
    ),
    "Get": ("GetObject",),
    "Head": ("HeadObject", "HeadBucket"),
}


# ---------------------------------------------------------------------------
# Server with per-operation request counting
# ---------------------------------------------------------------------------


@dataclass
class Traffic:
    """Requests the server saw during one tool's phase."""

    operations: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # "Op 404" -> count
    written: set[str] = field(default_factory=set)  # "bucket/key" stored by a completed upload
    read: set[str] = field(default_factory=set)  # "bucket/key" fetched by GetObject

    @property
    def total(self) -> int:
        return sum(self.operations.values())


_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/,\s]+/([^/,\s]+)/aws4_request")
# Bucket subresources whose AWS operation name is not "<Verb>Bucket<Name>".
_SUBRESOURCE_OPERATIONS = {
    ("PUT", "publicAccessBlock"): "PutPublicAccessBlock",
    ("GET", "publicAccessBlock"): "GetPublicAccessBlock",
    ("DELETE", "publicAccessBlock"): "DeletePublicAccessBlock",
    ("PUT", "lifecycle"): "PutBucketLifecycleConfiguration",
    ("GET", "lifecycle"): "GetBucketLifecycleConfiguration",
    ("GET", "versions"): "ListObjectVersions",
    ("GET", "uploads"): "ListMultipartUploads",
    ("POST", "delete"): "DeleteObjects",
}
_BUCKET_SUBRESOURCES = (
    "publicAccessBlock",
    "lifecycle",
    "versions",
    "uploads",
    "delete",
    "versioning",
    "encryption",
    "location",
    "policy",
    "acl",
    "tagging",
    "cors",
    "ownershipControls",
    "notification",
    "logging",
    "website",
    "object-lock",
    "replication",
    "accelerate",
    "requestPayment",
)


def _bucket_and_key(environ: dict[str, Any]) -> tuple[str, str]:
    """Bucket and key from a path-style URL, or from a virtual-host style Host header."""
    path = environ.get("PATH_INFO", "/").lstrip("/")
    host = environ.get("HTTP_HOST", "").rsplit(":", 1)[0]
    virtual = host not in ("", "localhost") and not re.fullmatch(r"[\d.]+|\[[\d:a-fA-F]+\]", host)
    if virtual and "." in host:
        return host.split(".", 1)[0], path
    bucket, _, key = path.partition("/")
    return bucket, key


def _peek_body(environ: dict[str, Any], limit: int = 64 * KiB) -> bytes:
    """Read a small request body and put it back, for unsigned form POSTs."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return b""
    if not 0 < length <= limit:
        return b""
    body = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)
    return body


def classify(environ: dict[str, Any]) -> tuple[str, str, str]:
    """The S3 operation a request performs, from method, path and query: (op, bucket, key)."""
    method = environ.get("REQUEST_METHOD", "GET").upper()
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    scope = _CREDENTIAL_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    if scope and scope.group(1) != "s3":
        return ("STS" if scope.group(1) == "sts" else f"other ({scope.group(1)})"), "", ""
    bucket, key = _bucket_and_key(environ)
    if not bucket:
        if method == "GET":
            return "ListBuckets", "", ""
        if method == "POST" and b"Action=" in _peek_body(environ):
            return "STS", "", ""
        return "other", "", ""
    if not key:
        subresource = next((name for name in _BUCKET_SUBRESOURCES if name in query), None)
        if subresource:
            named = _SUBRESOURCE_OPERATIONS.get((method, subresource))
            verb = method.title()
            return named or f"{verb}Bucket{subresource[0].upper()}{subresource[1:]}", bucket, ""
        if method == "GET" and query.get("list-type") == ["2"]:
            return "ListObjectsV2", bucket, ""
        simple = {
            "GET": "ListObjects",
            "HEAD": "HeadBucket",
            "PUT": "CreateBucket",
            "DELETE": "DeleteBucket",
        }
        return simple.get(method, "other"), bucket, ""
    copy = "HTTP_X_AMZ_COPY_SOURCE" in environ
    if method == "PUT":
        if "partNumber" in query and "uploadId" in query:
            operation = "UploadPartCopy" if copy else "UploadPart"
        elif "tagging" in query or "acl" in query:
            operation = "PutObjectTagging" if "tagging" in query else "PutObjectAcl"
        else:
            operation = "CopyObject" if copy else "PutObject"
    elif method == "POST":
        if "uploads" in query:
            operation = "CreateMultipartUpload"
        elif "uploadId" in query:
            operation = "CompleteMultipartUpload"
        else:
            operation = "other"
    elif method == "DELETE":
        operation = "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    elif method == "GET":
        operation = "ListParts" if "uploadId" in query else "GetObject"
    elif method == "HEAD":
        operation = "HeadObject"
    else:
        operation = "other"
    return operation, bucket, key


class CountingApp:
    """WSGI middleware counting requests by S3 operation, and which objects were written/read."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._traffic = Traffic()

    def reset(self) -> Traffic:
        """Start a new count; return what was counted since the last reset."""
        with self._lock:
            traffic, self._traffic = self._traffic, Traffic()
        return traffic

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        operation, bucket, key = classify(environ)
        with self._lock:
            self._traffic.operations[operation] += 1

        def recording_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            code = int(status.split(" ", 1)[0])
            with self._lock:
                if code >= 400:
                    self._traffic.errors[f"{operation} {code}"] += 1
                elif operation in ("PutObject", "CompleteMultipartUpload"):
                    self._traffic.written.add(f"{bucket}/{key}")
                elif operation == "GetObject":
                    self._traffic.read.add(f"{bucket}/{key}")
            return start_response(status, headers, exc_info)

        return self.app(environ, recording_start_response)


class QuietHandler(WSGIRequestHandler):
    """No access log: tens of thousands of lines would bury the results."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@contextmanager
def s3_server() -> Iterator[tuple[str, CountingApp]]:
    """moto's S3 (and STS) on a free loopback port, in a thread of this process."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = CountingApp(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="moto", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", app
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


# ---------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------


@dataclass
class Dataset:
    """The generated tree: '/'-separated paths below `root`."""

    root: Path
    small: list[str]
    big: list[str]
    size: int

    @property
    def files(self) -> list[str]:
        return self.small + self.big


def generate(root: Path, args: argparse.Namespace, rng: random.Random) -> Dataset:
    """Seeded random files: small ones spread over 10 x 10 folders, big ones under big/,
    all last modified an hour ago."""
    small, big, total = [], [], 0
    for index in range(args.files):
        rel = f"d{index % 10}/e{index // 10 % 10}/f{index:06d}.bin"
        size = rng.randint(args.min_kib * KiB, args.max_kib * KiB)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
        small.append(rel)
        total += size
    for index in range(args.big):
        rel = f"big/big{index}.bin"
        (root / "big").mkdir(exist_ok=True)
        with open(root / rel, "wb") as out:
            for _ in range(args.big_mib):
                out.write(rng.randbytes(MiB))
        big.append(rel)
        total += args.big_mib * MiB
    # As for a nightly backup, the files last changed a while ago (an hour), not during
    # the first run: ass3 does not cache files modified within a second of a run.
    hour_ago = time.time_ns() - 3600 * 10**9
    for rel in small + big:
        os.utime(root / rel, ns=(hour_ago, hour_ago))
    return Dataset(root, small, big, total)


def rewrite_same_size(
    root: Path, rels: Iterable[str], rng: random.Random, *, keep_mtime: bool
) -> None:
    """New random bytes of the same length; optionally put the old mtime back (`touch -r`)."""
    for rel in rels:
        path = root / rel
        before = path.stat()
        path.write_bytes(rng.randbytes(before.st_size))
        if keep_mtime:
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def local_etag(path: Path) -> str:
    """The ETag S3 gives this file as either tool uploads it (plain MD5, or multipart MD5)."""
    whole, parts = hashlib.md5(), []
    with open(path, "rb") as fileobj:
        while chunk := fileobj.read(PART_SIZE):
            whole.update(chunk)
            parts.append(hashlib.md5(chunk).digest())
    if path.stat().st_size < PART_SIZE:
        return whole.hexdigest()
    return f"{hashlib.md5(b''.join(parts)).hexdigest()}-{len(parts)}"


def compare_trees(source: Path, restored: Path) -> tuple[list[str], int]:
    """Paths that differ (missing, extra or other bytes), and how many kept their mtime."""
    problems, mtimes_kept = [], 0
    seen = set()
    for folder, _, names in os.walk(source):
        for name in names:
            original = Path(folder, name)
            rel = original.relative_to(source).as_posix()
            seen.add(rel)
            copy = restored / rel
            if not copy.is_file():
                problems.append(f"missing {rel}")
            elif not filecmp.cmp(original, copy, shallow=False):
                problems.append(f"differs {rel}")
            elif original.stat().st_mtime_ns == copy.stat().st_mtime_ns:
                mtimes_kept += 1
    for folder, _, names in os.walk(restored):
        for name in names:
            rel = Path(folder, name).relative_to(restored).as_posix()
            if rel not in seen:
                problems.append(f"extra {rel}")
    return sorted(problems), mtimes_kept


# ---------------------------------------------------------------------------
# Running the tools
# ---------------------------------------------------------------------------


@dataclass
class Result:
    """One tool's run of one phase."""

    tool: str
    phase: str
    wall_s: float
    cpu_s: float
    returncode: int
    requests: int
    operations: dict[str, int]
    errors: dict[str, int]
    objects: int  # objects uploaded (completed PUTs) or downloaded (distinct keys fetched)
    caught: bool
    detail: str
    stdout: str
    stderr: str

    @property
    def cpu_ms_per_object(self) -> float | None:
        return self.cpu_s * 1000 / self.objects if self.objects else None


def tool_env(endpoint: str, scratch: Path) -> dict[str, str]:
    """The same environment for both tools: fake credentials and nothing from ~/.aws."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "ASS3_", "MOTO_"))
    }
    env.update(FAKE_CREDENTIALS)
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_CONFIG_FILE=str(scratch / "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(scratch / "aws-credentials"),
        # ass3's state cache starts cold in every benchmark and never touches ~/.cache.
        XDG_CACHE_HOME=str(scratch / "cache"),
    )
    return env


def timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, Any]:
    """Run a command to completion: wall seconds, its CPU seconds, the finished process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, process


def command_for(tool: str, phase: str, source: Path, target: Path, workers: int) -> list[str]:
    bucket = BUCKETS[tool]
    if tool == "ass3":
        common = ["--bucket", bucket, "--workers", str(workers)]
        if phase == "e":
            return [sys.executable, str(RESTORE_SCRIPT), PREFIX, "--dest", str(target), *common]
        return [sys.executable, str(BACKUP_SCRIPT), str(source), "--prefix", PREFIX, *common]
    url = f"s3://{bucket}/{PREFIX}"
    pair = [url, str(target)] if phase == "e" else [str(source), url]
    return ["aws", "s3", "sync", *pair, "--only-show-errors"]


def _is_run_record(bucket_and_key: str) -> bool:
    return bucket_and_key.split("/", 1)[1].startswith(".ass3/")


def remote_etags(client: Any, bucket: str) -> dict[str, str]:
    """rel path -> ETag of every object under the backup prefix."""
    etags = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=PREFIX):
        for item in page.get("Contents", []):
            etags[item["Key"][len(PREFIX) + 1 :]] = item["ETag"].strip('"')
    return etags


def judge_backup(
    phase: str,
    local: dict[str, str],
    remote: dict[str, str],
    edited: list[str],
    written: set[str],
) -> tuple[bool, str]:
    """Did the phase's changes reach S3, with nothing else uploaded?"""
    stale = [rel for rel, etag in local.items() if remote.get(rel) != etag]
    in_sync = f"{len(local) - len(stale)}/{len(local)} in sync"
    if phase == "a":
        return not stale, in_sync
    if phase == "b":
        return not stale and not written, f"{len(written)} uploads, {in_sync}"
    caught = sum(remote.get(rel) == local[rel] for rel in edited)
    extra = len(written - set(edited))
    ok = caught == len(edited) and extra == 0 and not stale
    return ok, f"{caught}/{len(edited)} edits in S3, {extra} extra uploads, {in_sync}"


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """Where and with what the numbers were taken."""
    versions = {}
    for package in ("boto3", "botocore", "moto", "werkzeug", "awscli"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_phase(phase: str, note: str, results: list[Result]) -> None:
    print(f"\n({phase}) {PHASES[phase]}: {note}")
    header = ["tool", "wall s", "CPU s", "CPU ms/obj", "objects", "requests", *COLUMNS, "other"]
    rows = []
    for result in results:
        grouped = [sum(result.operations.get(op, 0) for op in ops) for ops in COLUMNS.values()]
        other = result.requests - sum(grouped)
        rows.append(
            [
                result.tool,
                f"{result.wall_s:.2f}",
                f"{result.cpu_s:.2f}",
                _fmt(result.cpu_ms_per_object, 1),
                str(result.objects),
                str(result.requests),
                *map(str, grouped),
                str(other),
            ]
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    line = "  ".join(
        f"{cell:<{width}}" if i == 0 else f"{cell:>{width}}"
        for i, (cell, width) in enumerate(zip(header, widths, strict=True))
    )
    print(line + "  caught?")
    for result, row in zip(results, rows, strict=True):
        cells = "  ".join(
            f"{cell:<{width}}" if i == 0 else f"{cell:>{width}}"
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        verdict = "yes" if result.caught else "NO"
        rc = "" if result.returncode == 0 else f" [exit {result.returncode}]"
        print(f"{cells}  {verdict}: {result.detail}{rc}")
    for result in results:
        ops = ", ".join(f"{op} {n}" for op, n in sorted(result.operations.items()))
        errors = ", ".join(f"{op} x{n}" for op, n in sorted(result.errors.items()))
        print(f"  {result.tool}: {ops}" + (f"; errors: {errors}" if errors else ""))
    by_tool = {result.tool: result for result in results}
    if "ass3" in by_tool and "aws" in by_tool:
        ours, theirs = by_tool["ass3"], by_tool["aws"]
        wall = ours.wall_s / theirs.wall_s if theirs.wall_s else None
        requests = ours.requests / theirs.requests if theirs.requests else None
        print(f"  ass3/aws: wall {_fmt(wall, 2)}x, requests {_fmt(requests, 2)}x")


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--files", type=int, default=5000, help="small files (default 5000)")
    parser.add_argument("--big", type=int, default=3, help="big files (default 3)")
    parser.add_argument("--big-mib", type=int, default=40, help="size of each big file in MiB")
    parser.add_argument("--min-kib", type=int, default=1, help="smallest small file in KiB")
    parser.add_argument("--max-kib", type=int, default=16, help="largest small file in KiB")
    parser.add_argument("--seed", type=int, default=1, help="dataset and edit seed")
    parser.add_argument("--workers", type=int, default=8, help="ass3 --workers (default 8)")
    parser.add_argument("--json", type=Path, help="also write every result to this JSON file")
    args = parser.parse_args(argv)
    if not 0 <= args.min_kib <= args.max_kib or args.files < 1 or args.big < 0:
        parser.error("need --files >= 1, --big >= 0 and 0 <= --min-kib <= --max-kib")
    return args


@dataclass
class Bench:
    """What every phase needs: the tools, the dataset, the server and a client to check S3."""

    tools: list[str]
    data: Dataset
    scratch: Path
    env: dict[str, str]
    app: CountingApp
    client: Any
    workers: int


def run_tool(
    bench: Bench, tool: str, phase: str, local: dict[str, str], edited: list[str]
) -> Result:
    """Run one tool for one phase, with the server's count reset around it, then judge it."""
    target = bench.scratch / f"restore-{tool}"
    command = command_for(tool, phase, bench.data.root, target, bench.workers)
    bench.app.reset()
    wall, cpu, process = timed(command, bench.env, bench.scratch)
    traffic = bench.app.reset()  # before the checks below, which make requests of their own
    if phase == "e":
        problems, kept = compare_trees(
            bench.data.root, target / PREFIX if tool == "ass3" else target
        )
        caught = not problems
        detail = "match" if caught else f"MISMATCH {len(problems)}: {', '.join(problems[:3])}"
        detail += f"; mtimes kept {kept}/{len(bench.data.files)}"
        objects = len(traffic.read)
    else:
        remote = remote_etags(bench.client, BUCKETS[tool])
        # ass3's run records (.ass3/runs/...) are history, not copies of dataset files.
        data_keys = {key for key in traffic.written if not _is_run_record(key)}
        written = {key.split("/", 2)[2] for key in data_keys}
        caught, detail = judge_backup(phase, local, remote, edited, written)
        records = len(traffic.written) - len(data_keys)
        if records:
            detail += f", {records} run record"
        objects = len(data_keys)
    return Result(
        tool=tool,
        phase=phase,
        wall_s=wall,
        cpu_s=cpu,
        returncode=process.returncode,
        requests=traffic.total,
        operations=dict(traffic.operations),
        errors=dict(traffic.errors),
        objects=objects,
        caught=caught,
        detail=detail,
        stdout=process.stdout[-2000:],
        stderr=process.stderr[-2000:],
    )


def run_phases(bench: Bench, rng: random.Random) -> list[dict[str, Any]]:
    """Make each phase's edits, run every tool on it, print its table."""
    data = bench.data
    count = max(1, len(data.small) // 100)
    picked = rng.sample(data.small, min(2 * count, len(data.small)))
    edits = {"c": picked[:count], "d": picked[count:]}
    notes = {
        "a": f"{len(data.files)} files, {data.size / MiB:.1f} MiB",
        "b": "nothing changed",
        "c": f"{len(edits['c'])} files rewritten",
        "d": f"{len(edits['d'])} files rewritten, old mtime put back",
        "e": "then compared byte for byte with the source",
    }
    phases = []
    for phase in PHASES:
        edited = edits.get(phase, [])
        rewrite_same_size(data.root, edited, rng, keep_mtime=phase == "d")
        local = {rel: local_etag(data.root / rel) for rel in data.files} if phase != "e" else {}
        results = [run_tool(bench, tool, phase, local, edited) for tool in bench.tools]
        print_phase(phase, notes[phase], results)
        for result in results:
            if result.tool == "ass3" and result.stdout.strip():
                print(f"  ass3 says: {result.stdout.strip().splitlines()[-1]}")
            if result.returncode != 0 or result.stderr.strip():
                print(f"  {result.tool} stderr: {result.stderr.strip()[-500:]}")
        phases.append(
            {
                "phase": phase,
                "title": PHASES[phase],
                "note": notes[phase],
                "edited": edited,
                "results": [
                    asdict(result) | {"cpu_ms_per_object": result.cpu_ms_per_object}
                    for result in results
                ],
            }
        )
    return phases


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine()
    tools = ["ass3"] + (["aws"] if shutil.which("aws") else [])
    print(f"date {info['date']}; nproc {info['nproc']}; Python {info['python']}")
    print(f"platform {info['platform']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    if "aws" not in tools:
        print("aws (awscli) is not on PATH: ass3 only")
    rng = random.Random(args.seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ass3-bench-") as tmp, s3_server() as (endpoint, app):
        scratch = Path(tmp)
        data = generate(scratch / "src", args, rng)
        print(
            f"dataset: {len(data.small)} files of {args.min_kib}-{args.max_kib} KiB + "
            f"{len(data.big)} x {args.big_mib} MiB = {data.size / MiB:.1f} MiB "
            f"(generated in {time.perf_counter() - started:.1f}s); "
            f"ass3 --workers {args.workers}"
            + ("; aws s3 sync at its defaults" if "aws" in tools else "")
        )
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=FAKE_CREDENTIALS["AWS_DEFAULT_REGION"],
            aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
        if "aws" in tools:
            client.create_bucket(Bucket=BUCKETS["aws"])  # ass3 makes its own, counted
        bench = Bench(tools, data, scratch, tool_env(endpoint, scratch), app, client, args.workers)
        phases = run_phases(bench, rng)
    total = time.perf_counter() - started
    print(f"\ntotal benchmark time {total:.1f}s")
    if args.json:
        report = {
            "machine": info,
            "args": vars(args) | {"json": str(args.json)},
            "phases": phases,
            "total_s": total,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
