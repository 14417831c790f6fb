"""Transfer settings: how many requests run at once and when a file goes multipart.

A user of `aws s3` may already have tuned these for their network or their server in
the profile's `s3` section of ~/.aws/config, which the AWS CLI reads:

    [profile minio]
    s3 =
      multipart_threshold = 64MB
      multipart_chunksize = 16MB
      max_concurrent_requests = 20

The tool honours the same three settings, with the same size syntax; its options
(--multipart-threshold, --multipart-chunksize, --workers) win over them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ass3.model import Ass3Error, GiB, MiB

# Small files are one round trip each, so over a link of 40 ms 32 workers moved 1000 of
# them 1.6-1.9x faster than 8, with no measurable cost at no added latency, and 64 gained
# nothing more (docs/concurrency.md). Memory: a worker holds at most one file below the
# multipart threshold, so 32 x 8 MiB at worst; throttling shrinks the requests in flight
# (pacing.py).
DEFAULT_WORKERS = 32
MULTIPART_THRESHOLD = 8 * MiB
MULTIPART_CHUNKSIZE = 8 * MiB

# S3's limits on a part (the last part may be smaller) and on a single PUT.
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * GiB
MAX_SINGLE_PUT = 5 * GiB
# More threads than this only add contention on 2-8 cores; s5cmd's 256 is for hosts
# with many cores and a fat pipe.
MAX_WORKERS = 256

# As the AWS CLI spells sizes: a number of bytes, or with a suffix, all powers of 1024.
_SIZE = re.compile(r"\s*(\d+)\s*(|b|kb|kib|mb|mib|gb|gib|tb|tib)\s*", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str) -> int:
    """A size as `aws s3` reads it from the config: '8388608', '8MB', '8MiB', '1gb'.

    Like the AWS CLI, KB, MB and GB mean KiB, MiB and GiB."""
    match = _SIZE.fullmatch(text)
    if not match:
        raise ValueError(f"not a size (use bytes or a suffix such as 8MB, 1GB): {text!r}")
    number, unit = match.groups()
    return int(number) * _UNITS[unit[:1].lower()]


@dataclass(frozen=True)
class TransferSettings:
    """What the transfers use, once options, profile and defaults are weighed."""

    workers: int = DEFAULT_WORKERS
    multipart_threshold: int = MULTIPART_THRESHOLD
    multipart_chunksize: int = MULTIPART_CHUNKSIZE


def transfer_settings(
    profile_s3: Mapping[str, object] | None,
    *,
    workers: int | None = None,
    multipart_threshold: int | None = None,
    multipart_chunksize: int | None = None,
) -> TransferSettings:
    """Options first, then the profile's `s3` section, then the tool's defaults.

    Ass3Error names the setting and where it came from when a value is out of range,
    so a typo in ~/.aws/config is not silently replaced by a default."""
    profile = profile_s3 if isinstance(profile_s3, Mapping) else {}

    def pick(option: int | None, flag: str, name: str, default: int) -> tuple[int, str]:
        if option is not None:
            return option, flag
        where = f"s3.{name} in the AWS profile"
        raw = profile.get(name)
        if raw is None:
            return default, "the default"
        try:
            return (int(str(raw)) if flag == "--workers" else parse_size(str(raw))), where
        except ValueError as error:
            raise Ass3Error(f"{where}: {error}") from None

    count, count_from = pick(workers, "--workers", "max_concurrent_requests", DEFAULT_WORKERS)
    threshold, threshold_from = pick(
        multipart_threshold, "--multipart-threshold", "multipart_threshold", MULTIPART_THRESHOLD
    )
    chunksize, chunksize_from = pick(
        multipart_chunksize, "--multipart-chunksize", "multipart_chunksize", MULTIPART_CHUNKSIZE
    )
    if not 1 <= count <= MAX_WORKERS:
        raise Ass3Error(f"{count_from}: workers must be 1 to {MAX_WORKERS}, not {count}")
    if not 1 <= threshold <= MAX_SINGLE_PUT:
        raise Ass3Error(
            f"{threshold_from}: the multipart threshold must be 1 byte to 5 GiB "
            f"(S3's largest single PUT), not {threshold}"
        )
    if not MIN_PART_SIZE <= chunksize <= MAX_PART_SIZE:
        raise Ass3Error(
            f"{chunksize_from}: the multipart chunk size must be 5 MiB to 5 GiB "
            f"(S3's limits on a part), not {chunksize}"
        )
    return TransferSettings(count, threshold, chunksize)
