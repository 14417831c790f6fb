#!/usr/bin/env python3
"""Benchmark ass3 against `aws s3 sync` and `rclone sync` on a local S3 server, phase by phase,
at full loopback speed or through a proxy that adds a round-trip time to every exchange.

Usage (from the repository root):

    pip install -r bench/requirements.txt        # and rclone from the system's packages
    python bench/run.py [--files 500] [--big 1] [--big-mib 16] [--min-kib 1] [--max-kib 16]
                        [--latency-ms 0,40] [--repeat 3] [--phases abcdefg] [--resume-mib 64]
                        [--sweep 8,16,32,64] [--workers N] [--seed 1]
                        [--json bench/out/results.json] [--markdown bench/out/tables.md]

With no flags it takes under a minute on a quiet two-core machine. bench/out/ is git-ignored.

What it does, and why this way:

* Starts moto's S3 on 127.0.0.1 in this process, behind a middleware that counts requests
  by S3 operation and the request-body bytes it reads (s3server.py).
* With --latency-ms N > 0, every tool talks to latency_proxy.py instead, which adds N ms
  to each request/response exchange (and N to each new connection's first request).
* Generates a seeded dataset: FILES small files of MIN..MAX KiB in a 10 x 10 folder tree,
  plus BIG files of BIG_MIB MiB under big/ (dataset.py).
* Runs the phases for each tool (peers.py), each into its own bucket:
    (a) first backup; (b) re-run with nothing changed;
    (c) 1% of the small files rewritten with the same size (new mtime);
    (d) another 1% rewritten with the same size and the old mtime put back (like `touch -r`),
        which a size-and-mtime comparison such as `aws s3 sync` cannot see;
    (e) full restore into an empty folder, then a byte comparison with the source tree;
    (f) the folder d3/ (a tenth of the small files) renamed, then a backup that deletes;
    (g) a backup of one RESUME_MIB file killed (SIGKILL) once half its bytes reached the
        server, then run again: how much it sends again.
  Phase (a) always runs: left out of --phases, it is set-up at full speed, not measured.
* With --sweep W1,W2,..., ass3 uploads and restores the dataset again at each --workers W,
  each into a fresh bucket, compared with the peers' (a) and (e) of the same repeat.
* --repeat N runs it all N times, each on a fresh server state and dataset; the tables give
  medians of the per-repeat ratios. With --phases b alone, one set-up serves the N no-change
  runs, which change nothing.

For each tool and phase: wall and client CPU seconds (RUSAGE_CHILDREN, so neither the
in-process server nor the proxy is counted), requests by operation, bytes sent, objects
transferred, and whether the phase's changes reached S3 (ETags against local MD5s) or the
restore matches byte for byte. ass3 creates its own bucket on the first backup (counted);
the peers' buckets are created beforehand (not counted). Server, proxy and clients share
this machine's CPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dataset import (
    Dataset,
    compare_trees,
    generate,
    local_etags,
    rename_folder,
    rewrite_same_size,
    write_big,
)
from latency_proxy import LatencyProxy
from peers import (
    BUCKETS,
    Job,
    available_tools,
    command_for,
    is_run_record,
    judge_backup,
    local_client,
    rclone_version,
    remote_etags,
    run,
    tool_env,
)
from report import PHASES, Result, machine, markdown, print_phase
from s3server import CountingApp, s3_server

MiB = 1024 * 1024
PREFIX = "data"
RENAMED = ("d3", "d3-renamed")


@dataclass
class Bench:
    """What every phase of one repeat needs."""

    tools: list[str]
    data: Dataset
    scratch: Path
    env: dict[str, str]
    app: CountingApp
    client: Any
    workers: int | None
    latency_ms: float
    repeat: int
    proxy: LatencyProxy | None


def run_tool(
    bench: Bench,
    job: Job,
    phase: str,
    local: dict[str, frozenset[str]],
    edited: list[str],
    source: Path | None = None,
) -> Result:
    """Run one tool for one phase, with the server's count reset around it, then judge it."""
    bench.app.reset()
    ran = run(command_for(job), bench.env, bench.scratch)
    traffic = bench.app.reset()  # before the checks below, which make requests of their own
    if not job.up:
        problems, kept = compare_trees(source or bench.data.root, job.restored)
        caught = not problems
        detail = "match" if caught else f"MISMATCH {len(problems)}, e.g. {problems[0]}"
        detail += f"; mtimes kept {kept}"
        objects = len({key for key in traffic.read if not is_run_record(key)})
    else:
        remote = remote_etags(bench.client, job.bucket, job.prefix)
        # ass3's run records (.ass3/runs/...) are history, not copies of dataset files.
        data_keys = {key for key in traffic.written if not is_run_record(key)}
        written = {key.split("/", 2)[2] for key in data_keys}
        caught, detail = judge_backup(phase, local, remote, edited, written)
        objects = len(data_keys)
    return Result(
        tool=job.tool,
        phase=phase,
        latency_ms=bench.latency_ms,
        repeat=bench.repeat,
        workers=job.workers,
        wall_s=ran.wall_s,
        cpu_s=ran.cpu_s,
        returncode=ran.returncode,
        requests=traffic.total,
        operations=dict(traffic.operations),
        errors=dict(traffic.errors),
        objects=objects,
        bytes_sent=traffic.bytes_sent,
        caught=caught and ran.returncode == 0,
        detail=detail,
        stdout=ran.stdout,
        stderr=ran.stderr,
    )


def _job(bench: Bench, tool: str, phase: str) -> Job:
    if phase == "e":
        folder = bench.scratch / f"restore-{tool}"
        return Job(tool, BUCKETS[tool], PREFIX, folder, up=False, workers=bench.workers)
    folder = bench.data.root
    return Job(tool, BUCKETS[tool], PREFIX, folder, delete=phase == "f", workers=bench.workers)


def _title(bench: Bench, phase: str, note: str) -> str:
    where = f"{bench.latency_ms:g} ms, repeat {bench.repeat + 1}"
    return f"({phase}) {PHASES[phase]}: {note} [{where}]"


def run_phases(bench: Bench, rng: random.Random, phases: str, rounds: int = 1) -> list[Result]:
    """Make each phase's edits, run every tool on it `rounds` times, print what it did.

    More than one round only for phases that change nothing (b): each round is a repeat.
    """
    data = bench.data
    count = max(1, len(data.small) // 100)
    picked = rng.sample(data.small, min(2 * count, len(data.small)))
    edits = {"c": picked[:count], "d": picked[count:]}
    results = []
    for phase in "abcdef":
        if phase not in phases and phase != "a":
            continue
        setup = phase not in phases
        edited = edits.get(phase, [])
        rewrite_same_size(data.root, edited, rng, keep_mtime=phase == "d")
        if phase == "f":
            before = set(data.small)
            data.small = rename_folder(data.root, data.small, *RENAMED)
            edited = sorted(set(data.small) - before)
        note = {
            "a": f"{len(data.files)} files, {data.size / MiB:.1f} MiB",
            "b": "nothing changed",
            "c": f"{len(edited)} files rewritten",
            "d": f"{len(edited)} files rewritten, old mtime put back",
            "e": "then compared byte for byte with the source",
            "f": f"{len(edited)} files moved from {RENAMED[0]}/ to {RENAMED[1]}/",
        }[phase]
        local = {rel: local_etags(data.root / rel) for rel in data.files} if phase != "e" else {}
        if setup and bench.proxy:
            bench.proxy.set_latency(0)
        for round_ in range(1 if setup else rounds):
            bench.repeat += round_ > 0
            done = [
                run_tool(bench, _job(bench, tool, phase), phase, local, edited)
                for tool in bench.tools
            ]
            for result in done:
                result.kind = "setup" if setup else "phase"
            title = ("set-up, not measured: " if setup else "") + _title(bench, phase, note)
            print_phase(title, done)
            results += done
        if setup and bench.proxy:
            bench.proxy.set_latency(bench.latency_ms)
    return results


def resume_phase(bench: Bench, mib: int, rng: random.Random) -> list[Result]:
    """Kill each tool's backup of one big file halfway, run it again, count what it resends."""
    folder = bench.scratch / "resume"
    write_big(folder / "big.bin", mib, rng)
    size = mib * MiB
    local = {"big.bin": local_etags(folder / "big.bin")}
    results = []
    for tool in bench.tools:
        job = Job(tool, BUCKETS[tool], "resume", folder, workers=bench.workers)
        bench.app.reset()
        first = run(
            command_for(job),
            bench.env,
            bench.scratch,
            kill_when=lambda: bench.app.bytes_sent() >= size // 2,
        )
        _settle(bench.app, bench.latency_ms)
        killed = bench.app.reset()
        result = run_tool(bench, job, "g", local, ["big.bin"])
        result.extra = {
            "file_bytes": size,
            "sent_before_kill": killed.bytes_sent,
            "killed": first.returncode < 0,
            "killed_run_operations": dict(killed.operations),
        }
        if not result.extra["killed"]:
            result.detail += "; the first run ended before it could be killed"
        results.append(result)
    note = f"one {mib} MiB file; killed after half was sent"
    print_phase(_title(bench, "g", note), results)
    for result in results:
        sent = result.extra["sent_before_kill"] / MiB
        again = result.bytes_sent / MiB
        print(f"  {result.tool}: {sent:.1f} MiB sent before the kill, then {again:.1f}")
    return results


def _settle(app: CountingApp, latency_ms: float) -> None:
    """Wait until bytes a killed run left in flight (sockets, the proxy) stop arriving, so
    they count for that run and not the next."""
    quiet = max(0.3, 3 * latency_ms / 1000)
    last, since = app.bytes_sent(), time.perf_counter()
    while time.perf_counter() - since < quiet:
        time.sleep(0.02)
        if (now := app.bytes_sent()) != last:
            last, since = now, time.perf_counter()


def sweep(bench: Bench, workers: list[int]) -> list[Result]:
    """ass3's upload and restore of the whole dataset at each --workers, into fresh buckets."""
    local = {rel: local_etags(bench.data.root / rel) for rel in bench.data.files}
    results = []
    for count in workers:
        bucket = f"{BUCKETS['ass3']}-w{count}"
        up = Job("ass3", bucket, PREFIX, bench.data.root, workers=count)
        down = Job(
            "ass3", bucket, PREFIX, bench.scratch / f"sweep-{count}", up=False, workers=count
        )
        done = [run_tool(bench, up, "a", local, []), run_tool(bench, down, "e", {}, [])]
        for result in done:
            result.kind = "sweep"
        print_phase(f"ass3 --workers {count}: upload, restore [{bench.latency_ms:g} ms]", done)
        results += done
    return results


def reset_server(endpoint: str) -> None:
    """Forget every bucket: moto's state outlives a server, so each repeat starts clean."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request) as response:
        response.read()


def run_repeat(
    args: argparse.Namespace,
    tools: list[str],
    latency_ms: float,
    repeat: int,
    server: Any,
    rounds: int = 1,
) -> list[Result]:
    """Every phase once (`rounds` times for a no-change run), on a fresh server state,
    dataset and cache."""
    endpoint, app = server
    reset_server(endpoint)
    rng = random.Random(args.seed)
    proxy = LatencyProxy(endpoint.removeprefix("http://"), latency_ms) if latency_ms else None
    try:
        with tempfile.TemporaryDirectory(prefix="ass3-bench-") as tmp:
            scratch = Path(tmp)
            data = generate(scratch / "src", args, rng)
            client = local_client(endpoint)
            for tool in tools:
                if tool != "ass3":  # ass3 makes its own, counted
                    client.create_bucket(Bucket=BUCKETS[tool])
            env = tool_env(proxy.endpoint if proxy else endpoint, scratch)
            bench = Bench(
                tools, data, scratch, env, app, client, args.workers, latency_ms, repeat, proxy
            )
            results = run_phases(bench, rng, args.phases, rounds)
            if "g" in args.phases:
                results += resume_phase(bench, args.resume_mib, rng)
            if args.sweep:
                results += sweep(bench, args.sweep)
    finally:
        if proxy:
            proxy.close()
    return results


def _numbers(kind: type, text: str) -> list[Any]:
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text}") from None
    if any(value < 0 for value in values):
        raise argparse.ArgumentTypeError(f"negative number in {text}")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--files", type=int, default=500, help="small files (default 500)")
    parser.add_argument("--big", type=int, default=1, help="big files (default 1)")
    parser.add_argument("--big-mib", type=int, default=16, help="size of each big file in MiB")
    parser.add_argument("--min-kib", type=int, default=1, help="smallest small file in KiB")
    parser.add_argument("--max-kib", type=int, default=16, help="largest small file in KiB")
    parser.add_argument("--seed", type=int, default=1, help="dataset and edit seed")
    parser.add_argument("--workers", type=int, help="ass3 --workers (default: ass3's own)")
    parser.add_argument(
        "--latency-ms",
        type=lambda text: _numbers(float, text),
        default=[0.0],
        help="round trips to add, comma-separated, each a table of its own (default 0)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs to take medians of")
    parser.add_argument(
        "--phases", default="abcdefg", help="phase letters to measure (default abcdefg)"
    )
    parser.add_argument(
        "--resume-mib", type=int, default=64, help="size of phase g's file (default 64)"
    )
    parser.add_argument(
        "--sweep",
        type=lambda text: _numbers(int, text),
        default=[],
        help="ass3 --workers values to try for upload and restore, comma-separated",
    )
    parser.add_argument("--tools", help="comma-separated subset of ass3,aws,rclone")
    parser.add_argument("--json", type=Path, help="also write every result to this JSON file")
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    args = parser.parse_args(argv)
    if not 0 <= args.min_kib <= args.max_kib or args.files < 1 or args.big < 0:
        parser.error("need --files >= 1, --big >= 0 and 0 <= --min-kib <= --max-kib")
    if args.repeat < 1 or (args.workers or 1) < 1 or args.resume_mib < 1 or 0 in args.sweep:
        parser.error("--repeat, --workers, --resume-mib and --sweep values must be 1 or more")
    if set(args.phases) - set(PHASES):
        parser.error(f"--phases takes letters of {''.join(PHASES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tools = available = available_tools()
    if args.tools:
        wanted = args.tools.split(",")
        if set(wanted) - set(tools) or "ass3" not in wanted:
            print(f"--tools: need ass3 and only tools installed here ({','.join(tools)})")
            return 2
        tools = [tool for tool in tools if tool in wanted]
    info = machine({"rclone": rclone_version()})
    print(
        f"date {info['date']}; nproc {info['nproc']}; load {info['load']}; Python {info['python']}"
    )
    print(f"platform {info['platform']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    workers = f"--workers {args.workers}" if args.workers else "its default --workers"
    print(f"tools: {', '.join(tools)}; ass3 at {workers}")
    for peer, install in (("aws", "pip install awscli"), ("rclone", "apt-get install rclone")):
        if peer not in available:
            print(f"{peer} is not installed ({install}): left out")
    started = time.perf_counter()
    results: list[Result] = []
    with s3_server() as server:
        for latency_ms in args.latency_ms:
            if args.phases == "b":  # the no-change run changes nothing: one set-up serves all
                results += run_repeat(args, tools, latency_ms, 0, server, args.repeat)
                continue
            for repeat in range(args.repeat):
                results += run_repeat(args, tools, latency_ms, repeat, server)
    total = time.perf_counter() - started
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    started_load = " ".join(f"{value:.2f}" for value in info["load"])
    tables = f"{info['date']}, load average {started_load} at the start, {load} at the end\n\n"
    tables += "\n".join(markdown(results, tools, latency) for latency in args.latency_ms)
    print(f"\ntotal benchmark time {total:.0f}s\n\n{tables}")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(tables)
    if args.json:
        report = {
            "machine": info,
            "args": vars(args) | {"json": str(args.json), "markdown": str(args.markdown)},
            "tools": tools,
            "results": [asdict(r) | {"cpu_ms_per_object": r.cpu_ms_per_object} for r in results],
            "tables": tables,
            "total_s": total,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
