"""Run records: the format a backup run leaves in the bucket, run ids, and the pure
rules for which records may be trusted (`timeline` has the rules for using them).

A record lives at `.ass3/runs/NAME/RUN_ID.json.gz`; the data it points to is
written first, so a record never names a version that does not exist. Anyone who can
write to the bucket can plant one, so a record read back is checked before any of it
is used (`screen_listing`, `read_record`): a bad one is skipped, never half-trusted.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import reprlib
import secrets
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cache
from typing import Any

from ass3.model import (
    RecordEntry,
    human_bytes,
    plural,
    printable,
)
from ass3.names import MAX_KEY_BYTES, RESERVED_PREFIX, unsafe_key_reason
from ass3.plan import key_order
from ass3.tree import TREE_FORMATS, TREE_SCHEMA, Tree, tree_problem

RUNS_PREFIX = f"{RESERVED_PREFIX}/runs"
RECORD_SUFFIX = ".json.gz"
# Format 2 adds `tree`: folders, symlinks, owners, hard links (see ass3.tree). A record
# of format 1 says nothing of the tree, which a restore then leaves as it always did;
# one of format 2 says what the tree was, empty folders and all. The number changed so
# that the two cannot be confused, and an older ass3 names the format it does not know.
RECORD_FORMAT = 2
KNOWN_FORMATS = (1, 2)
_RUN_TIME_FORMAT = "%Y%m%dT%H%M%S.%fZ"

# Run records are read from a bucket that others may write to: nothing in one is trusted.
#
# How big a record may be, inflated. One file's line is about 150 bytes of JSON (a
# 50-byte name, the size, two 32-digit MD5s and a 32-character version id; 130-160
# bytes measured for typical names), so this is room for 5 million files, fewer with
# long names. Reading a record keeps every line in memory (about 1 KiB per file once
# parsed), so a much bigger one could not be used anyway; and a bomb stops here, before
# its bytes and their decoded text (twice this) reach 2 GB. Room for 10 million files
# would let one reach 1.5 GB, and 3 GB with its text.
MAX_RECORD_BYTES = 5_000_000 * 150
# Compressed: gzip never makes data more than a few bytes per 16 KiB bigger, so an
# object over this cannot hold a record under MAX_RECORD_BYTES; it is never fetched.
MAX_RECORD_DOWNLOAD = MAX_RECORD_BYTES + MAX_RECORD_BYTES // 100
# A record dated further ahead of this computer's clock is not from a real run: taken as
# the newest, it would decide every later --as-of and the next backup's versions.
MAX_CLOCK_SKEW = timedelta(days=1)  # whole days: the messages say it in days

# `\Z`, not `$`: jsonschema matches with Python's re, whose `$` also allows a final "\n".
RUN_ID_PATTERN = r"^[0-9]{8}T[0-9]{6}\.[0-9]{6}Z-[0-9a-f]{6}\Z"
_MAX_COUNT = 2**63 - 1  # sizes and counts: what a signed 64-bit integer holds
_COUNT = {"type": "integer", "minimum": 0, "maximum": _MAX_COUNT}

# A record of format 1, as `RunRecord.to_bytes` writes one without a tree, and nothing else.
RECORD_SCHEMA_1: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "ass3 run record, format 1",
    "type": "object",
    "additionalProperties": False,
    "required": ["format", "run", "source", "uploaded", "deleted", "failed", "versioned", "files"],
    "properties": {
        "format": {"const": 1},
        "run": {"type": "string", "pattern": RUN_ID_PATTERN},
        "source": {"type": "string", "maxLength": 4096},
        "uploaded": _COUNT,
        "deleted": _COUNT,
        "failed": _COUNT,
        "versioned": {"type": "boolean"},
        "files": {
            "type": "array",
            "items": {
                "type": "array",
                "minItems": 5,
                "items": False,
                "prefixItems": [
                    # rel: a key that may become a path below the restore folder
                    {"type": "string", "maxLength": MAX_KEY_BYTES, "format": "ass3-key"},
                    _COUNT,  # size
                    # md5: empty for a file the run did not read (see backup._entry_of)
                    {"type": "string", "pattern": r"^(?:[0-9a-f]{32})?\Z"},
                    # ETag: S3's are hex, with -N for multipart; S3-compatible stores
                    # differ, so any token that can sit inside If-Match's quotes
                    {"type": "string", "pattern": r"^[0-9A-Za-z+/=_.:-]{1,200}\Z"},
                    # VersionId: opaque, printable ASCII ("null" for unversioned objects)
                    {"type": ["string", "null"], "pattern": r"^[!-~]{1,1024}\Z"},
                ],
            },
        },
    },
}
# The record of the current format: format 1 and the tree.
RECORD_SCHEMA: dict[str, Any] = {
    **RECORD_SCHEMA_1,
    "title": f"ass3 run record, format {RECORD_FORMAT}",
    "required": [*RECORD_SCHEMA_1["required"], "tree"],
    "properties": {
        **RECORD_SCHEMA_1["properties"],
        "format": {"const": RECORD_FORMAT},
        "tree": TREE_SCHEMA,
    },
}


def _restorable_key(value: object) -> bool:
    """A record's name must be one restore would turn into a file (`unsafe_key_reason`)."""
    if not isinstance(value, str):
        return True  # formats judge strings only; "type" refuses the rest
    reason = unsafe_key_reason(value)
    if reason is None:
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            reason = "not valid UTF-8"
        else:
            reason = f"longer than {MAX_KEY_BYTES} bytes" if size > MAX_KEY_BYTES else None
    if reason:
        raise ValueError(reason)
    return True


@cache
def _validator(record_format: int = RECORD_FORMAT) -> Any:
    """The validator of a record format's schema. Built on first use: importing
    jsonschema takes about 80 ms, which a run that reads no record (a no-change
    backup) never pays."""
    # No stubs are installed for jsonschema: its names are typed Any here.
    from jsonschema import (  # type: ignore[import-untyped]
        Draft202012Validator,
        FormatChecker,
        validators,
    )

    formats = FormatChecker(formats=())
    formats.checks("ass3-key", raises=ValueError)(_restorable_key)
    for name, check in TREE_FORMATS.items():
        formats.checks(name, raises=ValueError)(check)
    # JSON Schema counts 3.0 as an integer; a record never holds one.
    types = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
    )
    strict = validators.extend(Draft202012Validator, type_checker=types)
    schema = RECORD_SCHEMA if record_format == RECORD_FORMAT else RECORD_SCHEMA_1
    return strict(schema, format_checker=formats)


_RUN_ID = re.compile(RUN_ID_PATTERN)


# Short reprs of what a record holds, however big (a message never copies a whole list).
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 5, 5, 60, 60


class BadRecord(ValueError):
    """A run record that must not be used; the message says why, in a few words."""


@dataclass(frozen=True)
class RunRecord:
    """What one backup run left in the bucket. Written after all its data, so it only
    ever points at versions that exist; an interrupted run leaves none."""

    run_id: str
    source: str
    uploaded: int
    deleted: int
    failed: int
    versioned: bool
    files: tuple[RecordEntry, ...]
    tree: Tree | None = None  # None: a record of format 1, which says nothing of the tree

    @property
    def time(self) -> datetime:
        return run_time(self.run_id)

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.files)

    def to_bytes(self) -> bytes:
        document: dict[str, Any] = {
            "format": 1 if self.tree is None else RECORD_FORMAT,
            "run": self.run_id,
            "source": self.source,
            "uploaded": self.uploaded,
            "deleted": self.deleted,
            "failed": self.failed,
            "versioned": self.versioned,
            "files": [
                [entry.rel, entry.size, entry.md5, entry.etag, entry.version_id]
                for entry in self.files
            ],
        }
        if self.tree is not None:
            document["tree"] = self.tree.to_document()
        return gzip.compress(json.dumps(document, ensure_ascii=False).encode("utf-8"), mtime=0)

    @classmethod
    def from_bytes(cls, data: bytes) -> RunRecord:
        """The inverse of `to_bytes`, checking only the format: for bytes this program
        made. A record read from a bucket goes through `read_record`, which checks all."""
        return cls._from_document(_parse(inflate([data])))

    @classmethod
    def _from_document(cls, document: Any) -> RunRecord:
        return cls(
            document["run"],
            document["source"],
            document["uploaded"],
            document["deleted"],
            document["failed"],
            document["versioned"],
            tuple(RecordEntry(*entry) for entry in document["files"]),
            Tree.from_document(document["tree"]) if "tree" in document else None,
        )


def inflate(chunks: Iterable[bytes]) -> bytearray:
    """The content of one gzip stream arriving in `chunks`, refused (BadRecord) past
    MAX_RECORD_DOWNLOAD bytes read or MAX_RECORD_BYTES inflated: memory stays within
    the cap however far the stream would inflate."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip, header and trailer checked
    content = bytearray()
    taken = 0
    for chunk in chunks:
        taken += len(chunk)
        if taken > MAX_RECORD_DOWNLOAD:
            raise BadRecord(f"more than {human_bytes(MAX_RECORD_DOWNLOAD)} compressed")
        if inflater.eof:
            if chunk:
                raise BadRecord("data after the end of its gzip stream")
            continue
        try:
            # At most one byte past the cap: enough to know it is over.
            content += inflater.decompress(chunk, MAX_RECORD_BYTES + 1 - len(content))
        except zlib.error as error:
            raise BadRecord(f"not gzip ({error})") from None
        if len(content) > MAX_RECORD_BYTES:
            raise BadRecord(f"inflates to more than {human_bytes(MAX_RECORD_BYTES)}")
        if inflater.unused_data:
            raise BadRecord("data after the end of its gzip stream")
    if not inflater.eof:
        raise BadRecord("truncated: its gzip stream ends early")
    return content


def _parse(content: bytearray) -> Any:
    """The JSON document of a record of a format this program knows."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadRecord(f"not UTF-8 ({error.reason} at byte {error.start})") from None
    del content[:]  # the text is all that is needed from here on
    try:
        document = json.loads(text)
    except ValueError as error:  # JSONDecodeError, or an integer of over 4300 digits
        raise BadRecord(f"not JSON ({_shorten(str(error))})") from None
    except RecursionError:
        raise BadRecord("not JSON this program reads (nested too deeply)") from None
    if not isinstance(document, dict):
        raise BadRecord(f"not a JSON object but {_shorten(_REPR.repr(document))}")
    found = document.get("format")
    if type(found) is not int or found not in KNOWN_FORMATS:
        raise BadRecord(f"unknown run record format {_shorten(repr(found))}")
    return document


def read_record(chunks: Iterable[bytes], run_id: str) -> RunRecord:
    """The record of run `run_id` from the gzip stream in `chunks`, trusting nothing:
    the size caps of `inflate`, UTF-8 JSON matching its format's schema (every name
    one a restore may write), the run it names being `run_id`, lines in key order as
    the restore's merge needs them, a tree `tree_problem` finds nothing wrong with.
    BadRecord says what is wrong."""
    document = _parse(inflate(chunks))
    error = next(_validator(document["format"]).iter_errors(document), None)
    if error is not None:
        raise BadRecord(_describe(error))
    if document["run"] != run_id:
        raise BadRecord(f"it names run {document['run']}, not {run_id}")
    previous = None
    for index, entry in enumerate(document["files"]):
        order = key_order(entry[0])
        if previous is not None and order <= previous:
            raise BadRecord(f"files/{index}: {printable(entry[0])!r} is out of key order")
        previous = order
    if "tree" in document:
        problem = tree_problem(document["tree"], (entry[0] for entry in document["files"]))
        if problem:
            raise BadRecord(problem)
    return RunRecord._from_document(document)


def _describe(error: Any) -> str:
    """One short line for a schema violation (a jsonschema ValidationError): where,
    and what."""
    where = "/".join(str(step) for step in error.absolute_path) or "the record"
    found = _shorten(_REPR.repr(error.instance))
    if error.validator == "format" and error.cause is not None:
        return f"{where}: {found} refused: {error.cause}"
    if error.validator in ("additionalProperties", "required", "const", "items"):
        return f"{where}: {_shorten(error.message)}"
    wanted = _shorten(_REPR.repr(error.validator_value), 40)
    return f"{where}: {found} fails {error.validator} {wanted}"


def _shorten(text: str, limit: int = 80) -> str:
    """Text from a record, safe and short enough for one line of a message."""
    text = printable(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RecordSpool:
    """The run record's lines, kept in a temporary file while the run goes, so memory
    stays flat however many files there are. Fields are tab-separated: names with
    control characters never get this far (see `unsafe_key_reason`)."""

    def __init__(self) -> None:
        # Lives as long as the run, not a block: closed by close(), or with the process.
        self._file = tempfile.TemporaryFile("w+", encoding="utf-8", newline="\n")  # noqa: SIM115
        self._read_since_append = False

    def append(self, entry: RecordEntry) -> None:
        """Add a line at the end, wherever a reading of the spool left off."""
        version = entry.version_id or ""
        if self._read_since_append:  # seeking flushes: only after a read moved the position
            self._file.seek(0, os.SEEK_END)
            self._read_since_append = False
        self._file.write(f"{entry.rel}\t{entry.size}\t{entry.md5}\t{entry.etag}\t{version}\n")

    def __iter__(self) -> Iterator[RecordEntry]:
        self._file.flush()
        self._file.seek(0)
        self._read_since_append = True
        for line in self._file:
            rel, size, md5, etag, version = line.rstrip("\n").split("\t")
            yield RecordEntry(rel, int(size), md5, etag, version or None)

    def __enter__(self) -> RecordSpool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()


def new_run_id(now: datetime | None = None) -> str:
    """UTC time to the microsecond plus a random tag: sortable, and unique even for
    two runs in one second (S3's LastModified has one-second resolution)."""
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"{moment.strftime(_RUN_TIME_FORMAT)}-{secrets.token_hex(3)}"


def run_time(run_id: str) -> datetime:
    """When a run was recorded, from its id (taken as the run writes its record).
    ValueError unless `is_run_id(run_id)`."""
    return datetime.strptime(run_id.split("-", 1)[0], _RUN_TIME_FORMAT).replace(tzinfo=timezone.utc)


def is_run_id(name: str) -> bool:
    """Whether `name` is a run id `new_run_id` could have made: its exact shape, and a
    real date and time."""
    if not _RUN_ID.match(name):
        return False
    try:
        run_time(name)
    except ValueError:  # 30 February, hour 25
        return False
    return True


def record_refusal(run_id: str, *, size: int | None, now: datetime) -> str | None:
    """Why the record of run `run_id` (`size` bytes as stored, if known) is not even
    to be fetched, or None: dated too far ahead of `now`, or too big."""
    if size is not None and size > MAX_RECORD_DOWNLOAD:
        return (
            f"{human_bytes(size)} compressed, more than the "
            f"{human_bytes(MAX_RECORD_DOWNLOAD)} a run record may be"
        )
    if run_time(run_id) > now + MAX_CLOCK_SKEW:
        return (
            f"dated {run_time(run_id):%Y-%m-%d %H:%M:%S} UTC, more than "
            f"{plural(MAX_CLOCK_SKEW.days, 'day')} ahead of this computer's clock"
        )
    return None


@dataclass(frozen=True)
class RunListing:
    """What a listing of a backup's run records holds, sorted out."""

    run_ids: list[str]  # records worth reading, oldest first
    strays: list[str]  # names that are not RUN_ID.json.gz: never read
    refused: list[tuple[str, str]]  # (run id, why): records never fetched


def screen_listing(objects: Iterable[tuple[str, int]], now: datetime) -> RunListing:
    """Sort out `objects`, (name below the backup's runs folder, size) pairs from a
    listing: which are run records that may be read (`record_refusal`), oldest first."""
    run_ids, strays, refused = [], [], []
    for name, size in objects:
        run_id = name[: -len(RECORD_SUFFIX)] if name.endswith(RECORD_SUFFIX) else ""
        if not is_run_id(run_id):
            strays.append(name)
            continue
        reason = record_refusal(run_id, size=size, now=now)
        if reason:
            refused.append((run_id, reason))
        else:
            run_ids.append(run_id)
    return RunListing(sorted(run_ids), sorted(strays), sorted(refused))


def record_key(prefix: str, run_id: str) -> str:
    """Where the record of run `run_id` of backup `prefix` lives in the bucket."""
    return f"{RUNS_PREFIX}/{prefix}/{run_id}{RECORD_SUFFIX}"
