#!/usr/bin/env python3
"""Measure the peak memory (RSS) of a no-change ass3 backup over many tiny files.

Usage (from the repository root):

    python bench/memory.py [--files 200000] [--seed 1] [--tracemalloc]

Why this way:

* The backup streams the walk and the listing, so its memory should not grow with the
  number of files. The target checked is peak RSS <= 100 MiB + 0.5 KiB per file.
* Tiny files (0-64 bytes) in a 50 x 50 folder tree make the per-file cost dominate; their
  mtimes are set to 2020 so the state cache records them (it skips files modified within
  1 s of the run).
* Uploading 200 000 files over HTTP would take many minutes, so the S3 side is a moto
  server in a separate process (its memory is not counted) that fills its own backend
  directly: every file becomes an object with ass3's metadata, as a backup would leave it.
  The listed ETags are checked against the files' MD5s before anything is measured.
  moto's listing is made to cost one page per request (`speed_up_listing`); unpatched,
  each page filters and sorts all 200 000 keys and listing alone takes minutes.
* Each `ass3Backup.py` run is the only child of a small wrapper process; `os.wait4`
  returns that child's peak RSS (ru_maxrss), and /proc/PID/status is sampled meanwhile to
  show when the peak comes. The wrapper is needed: see `wrap`.
* Run 1 has an empty state cache (reads every file, fills the cache); run 2 a warm one.
* Baselines: `ass3Backup.py --help` (Python + imports) and a no-change backup of a
  one-file folder (adds the boto3 clients and the run's fixed machinery).
* With --tracemalloc, one more warm run happens in a child process under tracemalloc and
  the allocation sites at its traced peak are listed (Python allocations only).
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peers import FAKE_CREDENTIALS, local_client

REPO = Path(__file__).resolve().parent.parent
BACKUP_SCRIPT = REPO / "ass3Backup.py"

KiB = 1024
MiB = 1024 * KiB
BUCKET = "bench-memory"
PREFIX = "data"
BASELINE_PREFIX = "baseline"
FANOUT = 50  # 50 x 50 folders, files at the third level
MAX_FILE_BYTES = 64
OLD_MTIME_NS = 1_577_836_800 * 10**9  # 2020-01-01T00:00:00Z
FIXED_MIB = 100.0
PER_FILE_KIB = 0.5
SUMMARY = re.compile(r"\((\d+) requests, ([^)]*) read\)\s*$")


# ---------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------


def file_rel(index: int) -> str:
    """Where file `index` lives: spread evenly over the FANOUT x FANOUT folders."""
    return f"d{index % FANOUT:02d}/e{index // FANOUT % FANOUT:02d}/f{index:07d}.bin"


def generate(root: Path, count: int, rng: random.Random) -> dict[str, str]:
    """Write `count` tiny files with old mtimes; return rel path -> MD5 hex."""
    for first in range(FANOUT):
        for second in range(FANOUT):
            os.makedirs(root / f"d{first:02d}" / f"e{second:02d}", exist_ok=True)
    md5s = {}
    for index in range(count):
        rel = file_rel(index)
        data = rng.randbytes(rng.randint(0, MAX_FILE_BYTES))
        path = os.path.join(root, rel)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(descriptor, data)
        finally:
            os.close(descriptor)
        mtime = OLD_MTIME_NS + index * 10**9
        os.utime(path, ns=(mtime, mtime))
        md5s[rel] = hashlib.md5(data).hexdigest()
    return md5s


# ---------------------------------------------------------------------------
# The S3 server (its own process)
# ---------------------------------------------------------------------------


def populate(roots: dict[str, Path]) -> int:
    """Put every file under each root into moto's backend as key PREFIX/rel, with metadata.

    Runs inside the server process: no HTTP, so 200 000 objects take seconds.
    """
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    backend.create_bucket(BUCKET, FAKE_CREDENTIALS["AWS_DEFAULT_REGION"])
    count = 0
    for prefix, root in roots.items():
        for folder, folders, files in os.walk(root):
            folders.sort()
            for name in sorted(files):
                path = os.path.join(folder, name)
                with open(path, "rb") as fileobj:
                    data = fileobj.read()
                    st = os.fstat(fileobj.fileno())
                rel = os.path.relpath(path, root).replace(os.sep, "/")
                key = backend.put_object(BUCKET, f"{prefix}/{rel}", data, disable_notification=True)
                key.set_metadata(
                    {
                        "x-amz-meta-md5": hashlib.md5(data).hexdigest(),
                        "x-amz-meta-mtime": str(st.st_mtime_ns),
                        "x-amz-meta-mode": format(st.st_mode & 0o777, "o"),
                    }
                )
                count += 1
    return count


def speed_up_listing() -> None:
    """Make moto's ListObjectsV2 cost one page, not the whole bucket, per request.

    moto filters and sorts every key of the bucket for each page, so listing 200 000
    objects takes minutes of server time while the client under test sits idle. Here a
    sorted list of names (rebuilt when the key count changes) and a bisect find the page;
    the objects themselves still come from the bucket, so what is listed is unchanged.
    Listings with a delimiter go to moto's own code.
    """
    from moto.s3.models import FakeDeleteMarker, S3Backend

    original = S3Backend.list_objects_v2
    names: dict[str, tuple[int, list[str]]] = {}

    def list_objects_v2(
        self: Any,
        bucket: Any,
        prefix: str | None,
        delimiter: str | None,
        continuation_token: str | None,
        start_after: str | None,
        max_keys: int,
    ) -> Any:
        if delimiter or type(bucket).__name__ != "FakeBucket":
            return original(
                self, bucket, prefix, delimiter, continuation_token, start_after, max_keys
            )
        count, ordered = names.get(bucket.name, (-1, []))
        if count != len(bucket.keys):
            ordered = sorted(bucket.keys.keys())
            names[bucket.name] = (len(bucket.keys), ordered)
        prefix = prefix or ""
        after = (
            self._pagination_tokens.get(continuation_token) if continuation_token else start_after
        )
        index = bisect.bisect_right(ordered, after) if after else 0
        index = max(index, bisect.bisect_left(ordered, prefix))
        page = []
        for name in ordered[index:]:
            if not name.startswith(prefix) or len(page) > max_keys:
                break
            key = bucket.keys.get(name)
            if key is not None and not isinstance(key, FakeDeleteMarker):
                page.append(key)
        return self._truncate_result(page, max_keys)

    S3Backend.list_objects_v2 = list_objects_v2  # type: ignore[method-assign]


def serve(roots: dict[str, Path]) -> None:
    """Fill the backend, then serve moto's S3 and STS on a free loopback port until killed.

    Prints `port N objects M` once ready, for the parent to read.
    """
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import WSGIRequestHandler, make_server

    class QuietHandler(WSGIRequestHandler):
        """No access log: one line per request would only fill a pipe."""

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            pass

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    speed_up_listing()
    count = populate(roots)
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
    print(f"port {server.server_address[1]} objects {count}", flush=True)
    server.serve_forever()


def start_server(roots: dict[str, Path], log_path: Path) -> tuple[subprocess.Popen[str], str]:
    """Start `serve` in a child process; return it and its endpoint URL once it is ready."""
    spec = ",".join(f"{prefix}={root}" for prefix, root in roots.items())
    with open(log_path, "w") as log_file:
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", spec],
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
            env=clean_env(),
        )
    assert server.stdout is not None
    ready = server.stdout.readline().split()
    if len(ready) != 4 or ready[0] != "port":
        server.kill()
        server.wait()
        raise SystemExit(f"the S3 server did not start: {log_path.read_text()[-2000:]}")
    return server, f"http://127.0.0.1:{ready[1]}"


def stop_server(server: subprocess.Popen[str]) -> None:
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def verify_etags(endpoint: str, md5s: dict[str, str]) -> tuple[int, int]:
    """List the backup prefix over HTTP: (objects whose ETag is the file's MD5, objects)."""
    client = local_client(endpoint)
    matched = listed = 0
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=BUCKET, Prefix=PREFIX + "/"):
        for item in page.get("Contents", []):
            listed += 1
            rel = item["Key"][len(PREFIX) + 1 :]
            matched += md5s.get(rel) == item["ETag"].strip('"')
    return matched, listed


# ---------------------------------------------------------------------------
# Measuring one child
# ---------------------------------------------------------------------------


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without AWS_/ASS3_/MOTO_ variables, plus `extra`."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "ASS3_", "MOTO_"))
    }
    env.update(extra or {})
    return env


def tool_env(endpoint: str, scratch: Path) -> dict[str, str]:
    """Fake credentials, the local endpoint, no ~/.aws files, a cache inside scratch."""
    return clean_env(
        {
            **FAKE_CREDENTIALS,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_CONFIG_FILE": str(scratch / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(scratch / "aws-credentials"),
            "XDG_CACHE_HOME": str(scratch / "cache"),
        }
    )


@dataclass
class Run:
    """One measured child process."""

    label: str
    files: int
    wall_s: float
    peak_kib: int
    returncode: int
    stdout: str
    stderr: str
    samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds, RSS KiB)

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / KiB

    @property
    def summary(self) -> str:
        lines = self.stdout.strip().splitlines()
        return lines[-1] if lines else ""

    @property
    def requests(self) -> str:
        found = SUMMARY.search(self.summary)
        return found.group(1) if found else "-"


def _rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def wrap(result_path: str, command: list[str]) -> None:
    """Run `command` as this small process's only child; write its wall time and peak RSS.

    Linux keeps the pre-exec memory's high-water mark in the exec'd child's ru_maxrss, so a
    child forked straight from the benchmark (which holds the dataset's MD5s and boto3)
    would report the benchmark's RSS when that is larger. Forked from this process, which
    imports only the standard library, the figure is the tool's own.
    """
    started = time.perf_counter()
    process = subprocess.Popen(command)
    samples = []
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        rss = _rss_kib(process.pid)
        if rss is not None:
            samples.append((round(time.perf_counter() - started, 2), rss))
        time.sleep(0.05)
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    result = {
        "wall_s": time.perf_counter() - started,
        "peak_kib": usage.ru_maxrss,
        "returncode": process.returncode,
        "samples": samples,
    }
    Path(result_path).write_text(json.dumps(result))


def measure(label: str, files: int, command: list[str], env: dict[str, str], cwd: Path) -> Run:
    """Run one command through `wrap`, in a fresh process, and collect what it measured."""
    with (
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
        tempfile.NamedTemporaryFile("r", suffix=".json") as result,
    ):
        wrapper = [sys.executable, __file__, "--wrap", result.name, *command]
        returncode = subprocess.run(wrapper, env=env, cwd=cwd, stdout=out, stderr=err).returncode
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
        if returncode != 0:
            raise SystemExit(f"measuring {label} failed (exit {returncode}): {stderr[-2000:]}")
        found = json.load(result)
    return Run(
        label,
        files,
        found["wall_s"],
        found["peak_kib"],
        found["returncode"],
        stdout,
        stderr,
        [tuple(sample) for sample in found["samples"]],
    )


def backup_command(directory: Path, prefix: str) -> list[str]:
    return [
        sys.executable,
        str(BACKUP_SCRIPT),
        str(directory),
        "--bucket",
        BUCKET,
        "--prefix",
        prefix,
    ]


# ---------------------------------------------------------------------------
# tracemalloc look (its own process)
# ---------------------------------------------------------------------------


def trace(directory: Path, top: int = 15) -> None:
    """Run one backup in this process under tracemalloc; print the sites at the traced peak.

    A thread snapshots every half second and keeps the biggest snapshot, so the sites
    shown are those holding memory when the most was held, not at the end.
    """
    sys.path.insert(0, str(REPO))
    import s3common

    tracemalloc.start(1)
    best: list[Any] = [None, 0]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.5):
            current = tracemalloc.get_traced_memory()[0]
            if current > best[1]:
                best[:] = [tracemalloc.take_snapshot(), current]

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    conn = s3common.Connection(endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    summary = s3common.backup(conn, str(directory), bucket=BUCKET, prefix=PREFIX)
    done.set()
    watcher.join()
    current, peak = tracemalloc.get_traced_memory()
    print(f"in-process run: {summary.line()}")
    print(f"traced now {current / MiB:.1f} MiB, traced peak {peak / MiB:.1f} MiB")
    snapshot = best[0] or tracemalloc.take_snapshot()
    stats = snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)]).statistics(
        "lineno"
    )
    print(f"top {top} sites in the biggest snapshot ({best[1] / MiB:.1f} MiB traced):")
    for stat in stats[:top]:
        frame = stat.traceback[0]
        where = re.sub(r"^.*/(site-packages|python3\.\d+)/", "", frame.filename)
        print(f"  {stat.size / KiB:9.1f} KiB {stat.count:8d} blocks  {where}:{frame.lineno}")


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def target_mib(files: int) -> float:
    return FIXED_MIB + files * PER_FILE_KIB / KiB


def curve(run: Run, points: int = 8) -> str:
    """RSS at evenly spaced moments of the run, to show growth or a flat line."""
    if not run.samples:
        return "-"
    picks = [run.samples[round(i * (len(run.samples) - 1) / (points - 1))] for i in range(points)]
    return " ".join(f"{seconds:.0f}s:{rss / KiB:.0f}" for seconds, rss in picks)


def print_table(runs: list[Run], baseline: Run) -> bool:
    """The results; True if every measured run meets the target."""
    header = ["files", "run", "wall s", "peak RSS MiB", "KiB/file over base", "target MiB", "met?"]
    rows = []
    met_all = True
    for run in runs:
        target = target_mib(run.files)
        met = run.peak_mib <= target
        measured = run.files > 1  # the rest are baselines
        if measured:
            met_all &= met and run.returncode == 0
        per_file = f"{(run.peak_kib - baseline.peak_kib) / run.files:.3f}" if run.files > 1 else "-"
        rows.append(
            [
                str(run.files),
                run.label + ("" if run.returncode == 0 else f" [exit {run.returncode}]"),
                f"{run.wall_s:.1f}",
                f"{run.peak_mib:.1f}",
                per_file,
                f"{target:.1f}",
                ("yes" if met else "NO") if measured else "-",
            ]
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
    return met_all


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--files", type=int, default=200_000, help="tiny files (default 200000)")
    parser.add_argument("--seed", type=int, default=1, help="dataset seed (default 1)")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="also list allocation sites of a warm run"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # internal: the server process
    parser.add_argument("--trace", help=argparse.SUPPRESS)  # internal: the tracemalloc run
    args = parser.parse_args(argv)
    if args.files < 1:
        parser.error("--files must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--wrap"]:  # internal: the measuring wrapper, see `wrap`
        wrap(argv[1], argv[2:])
        return 0
    args = parse_args(argv)
    if args.serve:
        serve({p: Path(r) for p, r in (item.split("=", 1) for item in args.serve.split(","))})
        return 0
    if args.trace:
        trace(Path(args.trace))
        return 0
    scratch = Path(tempfile.mkdtemp(prefix="ass3-memory-"))
    server = None
    try:
        started = time.perf_counter()
        source = scratch / "src"
        md5s = generate(source, args.files, random.Random(args.seed))
        single = scratch / "one"
        single.mkdir()
        (single / "only.txt").write_bytes(b"baseline\n")
        os.utime(single / "only.txt", ns=(OLD_MTIME_NS, OLD_MTIME_NS))
        generated = time.perf_counter() - started
        server, endpoint = start_server(
            {PREFIX: source, BASELINE_PREFIX: single}, scratch / "server.log"
        )
        ready = time.perf_counter() - started - generated
        matched, listed = verify_etags(endpoint, md5s)
        print(
            f"{args.files} files of 0-{MAX_FILE_BYTES} B generated in {generated:.1f}s; "
            f"server filled in {ready:.1f}s; {matched}/{listed} listed ETags equal the "
            f"files' MD5s ({args.files} files)"
        )
        if matched != args.files or listed != args.files:
            print("the server does not hold the files as a backup would: not measuring")
            return 1
        env = tool_env(endpoint, scratch)
        runs = [
            measure("--help", 0, [sys.executable, str(BACKUP_SCRIPT), "--help"], env, scratch),
            measure("1 file, cold", 1, backup_command(single, BASELINE_PREFIX), env, scratch),
            measure("1 file, warm", 1, backup_command(single, BASELINE_PREFIX), env, scratch),
            measure("cold cache", args.files, backup_command(source, PREFIX), env, scratch),
            measure("warm cache", args.files, backup_command(source, PREFIX), env, scratch),
        ]
        baseline = runs[2]
        print(
            "\npeak RSS of one child each (ru_maxrss via os.wait4 in a small wrapper); "
            f"baseline = {baseline.label}; target = {FIXED_MIB:.0f} MiB + {PER_FILE_KIB} KiB/file"
        )
        met = print_table(runs, baseline)
        print()
        for run in runs[1:]:
            print(f"{run.label}: {run.summary or '(no summary)'}")
            if run.files > 1:
                print(f"  RSS MiB over time: {curve(run)}")
            if run.returncode != 0 or run.stderr.strip():
                print(f"  stderr: {run.stderr.strip()[-1000:]}")
        print(f"\ntarget met: {'yes' if met else 'NO'}")
        if args.tracemalloc:
            print("\ntracemalloc, warm cache, in one process:")
            sys.stdout.flush()
            subprocess.run(
                [sys.executable, __file__, "--trace", str(source)],
                env=env,
                cwd=scratch,
                check=False,
            )
        print(f"\ntotal {time.perf_counter() - started:.1f}s")
        return 0 if met else 1
    finally:
        if server is not None:
            stop_server(server)
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
