"""Results of the benchmark: what one run of a tool measured, and the tables made of them.

The tables give ratios of wall times between tools measured in the same repeat (the median
over repeats, with the range when there are several), request counts and client CPU per
object; never an absolute time on its own, which says more about the machine than the tool.
"""

from __future__ import annotations

import os
import platform
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any

MiB = 1024 * 1024

PHASES = {
    "a": "first backup",
    "b": "no-change re-run",
    "c": "1% of small files edited, same size, new mtime",
    "d": "1% of small files edited, same size, mtime restored",
    "e": "full restore into an empty folder",
    "f": "a folder of ~10% of the files renamed, backed up with deletion",
    "g": "a big file's backup killed halfway, then run again",
}

# Console columns: operation groups, in print order.
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
    "Copy": ("CopyObject", "UploadPartCopy"),
    "Delete": ("DeleteObject", "DeleteObjects"),
}


@dataclass
class Result:
    """One tool's run of one phase (kind "phase"), or of the --workers sweep ("sweep")."""

    tool: str
    phase: str
    latency_ms: float
    repeat: int
    workers: int | None
    wall_s: float
    cpu_s: float
    returncode: int
    requests: int
    operations: dict[str, int]
    errors: dict[str, int]
    objects: int  # objects uploaded (completed writes) or downloaded (distinct keys fetched)
    bytes_sent: int  # request bodies the server read
    caught: bool
    detail: str
    stdout: str
    stderr: str
    kind: str = "phase"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_ms_per_object(self) -> float | None:
        return self.cpu_s * 1000 / self.objects if self.objects else None


def machine(extra_versions: dict[str, str | None]) -> dict[str, Any]:
    """Where and with what the numbers were taken."""
    versions: dict[str, str | None] = {}
    for package in ("boto3", "botocore", "s3transfer", "moto", "werkzeug", "awscli"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)),
        "load": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions | extra_versions,
    }


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_phase(title: str, results: list[Result]) -> None:
    """The console's view of one phase: every tool's numbers and its verdict."""
    print(f"\n{title}")
    header = ["tool", "wall s", "CPU s", "CPU ms/obj", "objects", "requests", *COLUMNS, "other"]
    rows = []
    for result in results:
        grouped = [sum(result.operations.get(op, 0) for op in ops) for ops in COLUMNS.values()]
        rows.append(
            [
                result.tool,
                f"{result.wall_s:.2f}",
                f"{result.cpu_s:.2f}",
                _fmt(result.cpu_ms_per_object, 1),
                str(result.objects),
                str(result.requests),
                *map(str, grouped),
                str(result.requests - sum(grouped)),
            ]
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            f"{cell:<{width}}" if i == 0 else f"{cell:>{width}}"
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(header) + "  caught?")
    for result, row in zip(results, rows, strict=True):
        verdict = "yes" if result.caught else "NO"
        rc = "" if result.returncode == 0 else f" [exit {result.returncode}]"
        print(f"{line(row)}  {verdict}: {result.detail}{rc}")
    for result in results:
        ops = ", ".join(f"{op} {n}" for op, n in sorted(result.operations.items()))
        errors = ", ".join(f"{op} x{n}" for op, n in sorted(result.errors.items()))
        sent = f"; {result.bytes_sent / MiB:.1f} MiB sent"
        print(f"  {result.tool}: {ops}{sent}" + (f"; errors: {errors}" if errors else ""))
        if result.returncode != 0 or result.stderr.strip():
            print(f"  {result.tool} stderr: {result.stderr.strip()[-500:]}")


# ---------------------------------------------------------------------------
# Markdown tables: medians over repeats
# ---------------------------------------------------------------------------


def _median_range(values: list[float], digits: int = 2, suffix: str = "×") -> str:  # noqa: RUF001
    if not values:
        return "-"
    middle = f"{statistics.median(values):.{digits}f}{suffix}"
    if len(values) == 1:
        return middle
    return f"{middle} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def _by_repeat(results: Iterable[Result]) -> dict[int, dict[str, Result]]:
    table: dict[int, dict[str, Result]] = defaultdict(dict)
    for result in results:
        table[result.repeat][result.tool] = result
    return table


def _ratios(
    results: Iterable[Result], ours: str, theirs: str, of: Callable[[Result], float]
) -> list[float]:
    """Per repeat: ours / theirs of the measure `of`."""
    ratios = []
    for tools in _by_repeat(results).values():
        if ours in tools and theirs in tools and of(tools[theirs]):
            ratios.append(of(tools[ours]) / of(tools[theirs]))
    return ratios


def _median_of(
    results: list[Result], tool: str, of: Callable[[Result], float | None], digits: int = 1
) -> str:
    values = [v for r in results if r.tool == tool and (v := of(r)) is not None]
    return "-" if not values else f"{statistics.median(values):.{digits}f}"


def _operations(results: list[Result], tool: str) -> str:
    """The median count of each operation over the repeats."""
    mine = [r for r in results if r.tool == tool]
    names = sorted({name for r in mine for name in r.operations})
    counts = {name: statistics.median(r.operations.get(name, 0) for r in mine) for name in names}
    return ", ".join(f"{name} {count:g}" for name, count in counts.items() if count)


def phase_table(results: list[Result], tools: list[str]) -> str:
    """One row per phase: wall ratios, requests and CPU per object by tool, verdicts."""
    peers = [tool for tool in tools if tool != "ass3"]
    slash = " / ".join(tools)
    header = ["phase", *[f"wall ass3/{peer}" for peer in peers]]
    header += [f"requests {slash}", f"CPU ms/object {slash}", "changes caught"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for phase, title in PHASES.items():
        rows = [r for r in results if r.phase == phase and r.kind == "phase"]
        if not rows:
            continue
        cells = [f"({phase}) {title}"]
        cells += [_median_range(_ratios(rows, "ass3", peer, lambda r: r.wall_s)) for peer in peers]
        cells.append(" / ".join(_median_of(rows, tool, lambda r: r.requests, 0) for tool in tools))
        # Per object only where there are many: a few objects' CPU is the start-up's.
        cpu = [_median_of(rows, tool, lambda r: r.cpu_ms_per_object) for tool in tools]
        cells.append(" / ".join(cpu) if phase in ("a", "e") else "-")
        missed = sorted({f"{r.tool}: {r.detail}" for r in rows if not r.caught})
        cells.append("all" if not missed else "; ".join(missed))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rename_table(results: list[Result], tools: list[str]) -> str:
    rows = [r for r in results if r.phase == "f" and r.kind == "phase"]
    if not rows:
        return ""
    lines = ["| tool | requests by operation | MiB sent |", "| --- | --- | --- |"]
    for tool in tools:
        sent = _median_of(rows, tool, lambda r: r.bytes_sent / MiB)
        lines.append(f"| {tool} | {_operations(rows, tool)} | {sent} |")
    return "\n".join(lines)


def resume_table(results: list[Result], tools: list[str]) -> str:
    rows = [r for r in results if r.phase == "g" and r.kind == "phase"]
    if not rows:
        return ""
    lines = [
        "| tool | sent before the kill | sent again by the second run | second run's requests |",
        "| --- | --- | --- | --- |",
    ]
    for tool in tools:
        mine = [r for r in rows if r.tool == tool]
        if not mine:
            continue
        size = mine[0].extra["file_bytes"]
        before = _median_range([r.extra["sent_before_kill"] / size * 100 for r in mine], 0, "%")
        again = _median_range([r.bytes_sent / size * 100 for r in mine], 0, "%")
        lines.append(f"| {tool} | {before} | {again} | {_operations(mine, tool)} |")
    return "\n".join(lines)


def sweep_table(results: list[Result], tools: list[str]) -> str:
    """ass3 at each --workers against the peers' upload (a) and restore (e) in the same repeat."""
    sweep = [r for r in results if r.kind == "sweep"]
    if not sweep:
        return ""
    peers = [tool for tool in tools if tool != "ass3"]
    header = ["ass3 --workers"]
    header += [f"{phase} wall / {peer}" for phase in ("upload", "restore") for peer in peers]
    header += ["CPU ms/object upload / restore"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for workers in sorted({r.workers for r in sweep}):
        cells = [str(workers)]
        cpu = []
        for phase in ("a", "e"):
            mine = [r for r in sweep if r.workers == workers and r.phase == phase]
            cpu.append(_median_of(mine, "ass3", lambda r: r.cpu_ms_per_object))
            for peer in peers:
                theirs = [r for r in results if r.kind == "phase" and r.phase == phase]
                pairs = [r for r in theirs if r.tool == peer] + mine
                cells.append(_median_range(_ratios(pairs, "ass3", peer, lambda r: r.wall_s)))
        cells.append(" / ".join(cpu))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(results: list[Result], tools: list[str], latency_ms: float) -> str:
    """Every table for one latency, with a heading each."""
    mine = [r for r in results if r.latency_ms == latency_ms]
    repeats = len({r.repeat for r in mine})
    parts = [f"### Round trip {latency_ms:g} ms (median of {repeats}, range in brackets)\n"]
    parts.append(phase_table(mine, tools))
    for heading, table in (
        ("Rename (f): requests and bytes", rename_table(mine, tools)),
        ("Resume (g): bytes of the big file sent", resume_table(mine, tools)),
        ("ass3 --workers sweep", sweep_table(mine, tools)),
    ):
        if table:
            parts.append(f"\n{heading}:\n\n{table}")
    return "\n".join(parts) + "\n"
