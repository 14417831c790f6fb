"""The benchmark's seeded dataset, the edits each phase makes to it, and the checks."""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import os
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

KiB = 1024
MiB = 1024 * KiB
# ass3 and awscli upload files of 8 MiB or more in 8 MiB parts; rclone sends files below
# 200 MiB in one PUT and bigger ones in 5 MiB parts. A multipart ETag depends on the part size.
PART_SIZES = (8 * MiB, 5 * MiB)


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
        write_big(root / rel, args.big_mib, rng)
        big.append(rel)
        total += args.big_mib * MiB
    for rel in small:
        _hour_ago(root / rel)
    return Dataset(root, small, big, total)


def write_big(path: Path, mib: int, rng: random.Random) -> None:
    """MIB MiB of seeded random bytes, last modified an hour ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        for _ in range(mib):
            out.write(rng.randbytes(MiB))
    _hour_ago(path)


def _hour_ago(path: Path) -> None:
    """As for a nightly backup, the file last changed a while ago, not during the first run:
    ass3 does not cache files modified within a second of a run."""
    hour_ago = time.time_ns() - 3600 * 10**9
    os.utime(path, ns=(hour_ago, hour_ago))


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


def local_etags(path: Path) -> frozenset[str]:
    """The ETags S3 may give this file as the tools upload it: its plain MD5, or the MD5 of
    its parts' MD5s for each part size in use."""
    whole = hashlib.md5()
    parts: dict[int, list[bytes]] = {size: [] for size in PART_SIZES}
    partial = {size: hashlib.md5() for size in PART_SIZES}
    filled = dict.fromkeys(PART_SIZES, 0)
    step = 1 * MiB  # divides every part size
    with open(path, "rb") as fileobj:
        while chunk := fileobj.read(step):
            whole.update(chunk)
            for size in PART_SIZES:
                partial[size].update(chunk)
                filled[size] += len(chunk)
                if filled[size] == size:
                    parts[size].append(partial[size].digest())
                    partial[size], filled[size] = hashlib.md5(), 0
    etags = {whole.hexdigest()}
    for size in PART_SIZES:
        if filled[size]:
            parts[size].append(partial[size].digest())
        if path.stat().st_size >= size:
            etags.add(f"{hashlib.md5(b''.join(parts[size])).hexdigest()}-{len(parts[size])}")
    return frozenset(etags)


def rename_folder(root: Path, rels: list[str], old: str, new: str) -> list[str]:
    """Rename the folder `old` to `new`; the dataset's paths after it, in the same order."""
    os.rename(root / old, root / new)
    prefix = old.rstrip("/") + "/"
    return [new + "/" + rel[len(prefix) :] if rel.startswith(prefix) else rel for rel in rels]


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
