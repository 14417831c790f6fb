"""Names: which buckets S3 accepts, what a backup may be called, which keys may
become local paths, what a restore's temporary files are called. Pure; every rule is
applied before a request is made or a file is written.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import secrets

from ass3.model import CONTROL_CHARS, Ass3Error

MAX_KEY_BYTES = 1024
# Top-level prefix the tool keeps for its own records; never a backup name.
RESERVED_PREFIX = ".ass3"


_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_BUCKET_BAD_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_BAD_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def validate_bucket_name(name: str) -> str:
    """Apply S3's general-purpose bucket naming rules before any request is made."""
    problem = None
    if not _BUCKET_NAME.match(name):
        problem = (
            "3-63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter or digit"
        )
    elif ".." in name or ".-" in name or "-." in name:
        problem = "no '..', '.-' or '-.'"
    elif name.startswith(_BUCKET_BAD_PREFIXES) or name.endswith(_BUCKET_BAD_SUFFIXES):
        problem = "a prefix or suffix that S3 reserves"
    else:
        try:
            ipaddress.ip_address(name)
            problem = "not formatted as an IP address"
        except ValueError:
            pass
    if problem:
        raise Ass3Error(f"invalid bucket name {name!r}: a bucket name needs {problem}")
    return name


def unsafe_key_reason(rel: str) -> str | None:
    """Why a key (relative to the backup prefix) must not become a local path, or None.

    A key is plain text chosen by whoever wrote the bucket; only keys made of
    ordinary path segments are turned into files below the destination.
    """
    if not rel:
        return "empty name"
    if rel.startswith("/"):
        return "absolute path"
    if "\\" in rel:
        return "backslash in name"
    if CONTROL_CHARS.search(rel):
        return "control character in name"
    for segment in rel.split("/"):
        if segment in ("", ".", ".."):
            return f"path segment {segment!r}"
        if len(segment.encode("utf-8", "surrogatepass")) > 255:
            return "path segment longer than 255 bytes"
    return None


def normalize_prefix(prefix: str) -> str:
    """A backup name: one safe path segment (the top folder in the bucket), not the
    reserved one. Nested names would overlap: backup `a` would list, restore and
    delete the files of backup `a/b`."""
    cleaned = prefix.strip("/")
    reason = unsafe_key_reason(cleaned)
    if reason:
        raise Ass3Error(f"invalid backup name {prefix!r}: {reason}")
    if "/" in cleaned:
        raise Ass3Error(
            f"invalid backup name {prefix!r}: use one name without '/', "
            f"e.g. {cleaned.replace('/', '-')!r}"
        )
    if cleaned == RESERVED_PREFIX:
        raise Ass3Error(f"invalid backup name {prefix!r}: {RESERVED_PREFIX} is reserved")
    return cleaned


def restore_prefix(name: str) -> str:
    """The backup NAME given to a restore. A path there (`/home/me/src3`) is most likely
    the folder that was backed up, whose backup bears its last name (`src3`)."""
    if "/" in name.strip("/"):
        folder = os.path.basename(name.rstrip("/"))
        raise Ass3Error(
            f"invalid backup name {name!r}: a backup is named after the folder alone, so the "
            f"backup of {name} is {folder!r} unless it was given --prefix (--list shows them)"
        )
    return normalize_prefix(name)


def default_prefix(directory: str) -> str:
    """The backup name for DIR: its basename (`/data/photos/` -> `photos`)."""
    name = os.path.basename(os.path.abspath(directory))
    if not name:
        raise Ass3Error(f"cannot name a backup of {directory!r}; pass --prefix NAME")
    return normalize_prefix(name)


# A restore writes each file to a temporary beside it, named for the file it stands in
# for: `.ass3-NAME.RANDOM.part`. The next restore removes one only when the name has
# exactly this shape AND that folder's NAME is a file of the backup being restored: the
# leftover of a killed run for that very file. Anything else is a user's file.
TEMP_MARK = ".ass3-"
TEMP_SUFFIX = ".part"
TEMP_RANDOM_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
TEMP_RANDOM_LENGTH = 8
MAX_NAME_BYTES = 255  # of one path segment, on every common filesystem
_TEMP_ROOM = MAX_NAME_BYTES - len(TEMP_MARK) - 1 - TEMP_RANDOM_LENGTH - len(TEMP_SUFFIX)
_TEMPORARY = re.compile(
    rf"{re.escape(TEMP_MARK)}(.+)\.[a-z0-9]{{{TEMP_RANDOM_LENGTH}}}{re.escape(TEMP_SUFFIX)}",
    re.DOTALL,
)


def temporary_stem(name: str) -> str:
    """What the temporary standing in for file `name` carries of its name: the name
    itself, or (when that would not fit in 255 bytes) '#' and a digest of it."""
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) <= _TEMP_ROOM:
        return name
    return "#" + hashlib.sha256(encoded).hexdigest()[:32]


def temporary_random_part() -> str:
    """The random part of a new temporary's name: TEMP_RANDOM_LENGTH characters of
    TEMP_RANDOM_CHARS, every string equally likely, from one draw of the system's
    randomness (a `secrets.choice` per character made about 15 system calls a file)."""
    base = len(TEMP_RANDOM_CHARS)
    number = secrets.randbelow(base**TEMP_RANDOM_LENGTH)
    chars = []
    for _ in range(TEMP_RANDOM_LENGTH):
        number, digit = divmod(number, base)
        chars.append(TEMP_RANDOM_CHARS[digit])
    return "".join(chars)


def temporary_name(name: str, random_part: str) -> str:
    """The name of a temporary standing in for file `name` in the same folder."""
    return f"{TEMP_MARK}{temporary_stem(name)}.{random_part}{TEMP_SUFFIX}"


def temporary_stem_of(name: str) -> str | None:
    """The stem of a name `temporary_name` could have made, else None.

    Only that exact shape counts (`.ass3-x1y2.part`, the shape of earlier versions, does
    not). The shape alone proves nothing: a restore takes a file for its own leftover
    only when the stem is that of a file of the backup in the same folder.
    """
    match = _TEMPORARY.fullmatch(name)
    return match.group(1) if match else None
