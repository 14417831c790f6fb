"""What --check and --diff find, and the pure rules that find it: a recorded object
against a listing, downloaded bytes against the record and the ETag, a local file
against the backup. No I/O: `check` and `diff` fetch and read, these decide.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ass3.model import (
    EXIT_FAILURES,
    EXIT_OK,
    FileDigest,
    LocalFile,
    ObjectVersion,
    RemoteObject,
    Summary,
    human_bytes,
    plural,
    printable,
)
from ass3.plan import etag_matches, is_plain_md5, multipart_etag, multipart_part_count

# What a check finds wrong with a file of the backup.
MISSING = "missing"  # --check: no such object or version; --diff: not in the local folder
CHANGED = "changed"  # the listing shows another size or ETag than the record
CORRUPT = "corrupt"  # the bytes are not the ones recorded, or not those the ETag describes
# What a diff finds.
DIFFERS = "differs"  # the local file's size or content is not the backup's
EXTRA = "extra"  # only in the local folder

CHECK_KINDS = (MISSING, CHANGED, CORRUPT)
DIFF_KINDS = (DIFFERS, MISSING, EXTRA)


@dataclass(frozen=True, slots=True)
class Finding:
    """One file that is not as it should be: which, what (one of the kinds), and why."""

    rel: str
    kind: str
    detail: str

    def line(self) -> str:
        return f"{self.kind}: {printable(self.rel)} ({self.detail})"

    def to_dict(self) -> dict[str, str]:
        return {"path": self.rel, "finding": self.kind, "detail": self.detail}


@dataclass
class Report:
    """What one --check or --diff found. `summary` carries what every run reports
    (requests, warnings, files that could not be looked at, time, method)."""

    action: str  # "checked", "read" (--read-data) or "compared"
    kinds: tuple[str, ...]  # the findings this action can make, in the order told
    good: str  # what a file without a finding is: "intact", "identical"
    summary: Summary
    files: int = 0
    bytes: int = 0
    ok: int = 0
    unverified: int = 0  # only seen in a listing: nothing held a checksum to compare
    findings: list[Finding] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when every file is as it should be; 1 for any finding or failure, as for
        files that failed in a backup or restore."""
        return EXIT_FAILURES if self.findings or self.summary.failures else EXIT_OK

    def counts(self) -> dict[str, int]:
        counted = {kind: 0 for kind in self.kinds}
        for finding in self.findings:
            counted[finding.kind] += 1
        return counted

    def sorted_findings(self) -> list[Finding]:
        return sorted(self.findings, key=lambda finding: finding.rel.encode("utf-8", "replace"))

    def line(self) -> str:
        summary = self.summary
        requests = sum(summary.requests.values())
        found = ", ".join(f"{count} {kind}" for kind, count in self.counts().items())
        return (
            f"{self.action} {plural(self.files, 'file')} ({human_bytes(self.bytes)}): "
            f"{self.ok} {self.good}, {found}, "
            + (f"{self.unverified} only listed, " if self.unverified else "")
            + (f"excluded {summary.excluded}, " if summary.excluded else "")
            + (f"warned {len(summary.warnings)}, " if summary.warnings else "")
            + f"failed {len(summary.failures)} in {summary.seconds:.1f}s "
            f"({requests} requests, {human_bytes(summary.read_bytes)} read)"
        )

    def to_dict(self) -> dict[str, Any]:
        """The --json document: the words of the text output as keys."""
        summary = self.summary
        return {
            "action": self.action,
            "files": self.files,
            "bytes": self.bytes,
            self.good: self.ok,
            **self.counts(),
            "unverified": self.unverified,
            "excluded": summary.excluded,
            "findings": [finding.to_dict() for finding in self.sorted_findings()],
            "failed": len(summary.failures),
            "failures": [{"path": path, "reason": reason} for path, reason in summary.failures],
            "warnings": [{"path": path, "reason": reason} for path, reason in summary.warnings],
            "read_bytes": summary.read_bytes,
            "requests": dict(sorted(summary.requests.items())),
            "seconds": round(summary.seconds, 3),
            "method": summary.method or None,
            "exit_code": self.exit_code,
        }


# --- --check: the listing ---------------------------------------------------------------


def judge_listed(
    expected: RemoteObject, found: RemoteObject | ObjectVersion | None
) -> Finding | None:
    """A recorded object against what a listing shows of it (its version, or the
    current object when the record names no version)."""
    if found is None:
        what = (
            f"version {expected.version_id} is not in the bucket"
            if expected.version_id
            else "no object of that name in the bucket"
        )
        return Finding(expected.rel, MISSING, what)
    if found.size != expected.size:
        return Finding(expected.rel, CHANGED, f"{found.size} bytes, recorded {expected.size}")
    if found.etag != expected.etag:
        return Finding(expected.rel, CHANGED, f"ETag {found.etag}, recorded {expected.etag}")
    return None


def match_listing(
    expected: Sequence[RemoteObject], listed: Iterable[RemoteObject | ObjectVersion]
) -> Iterator[tuple[RemoteObject, Finding | None]]:
    """Each expected object with what `judge_listed` finds, from one pass over a
    listing in any order: a recorded version must be among the versions listed
    (delete markers are not versions of data), an object without a version must be
    the current one."""
    by_version = {(item.rel, item.version_id): item for item in expected if item.version_id}
    current = {item.rel for item in expected if not item.version_id}
    found_versions: dict[tuple[str, str], ObjectVersion] = {}
    found_current: dict[str, RemoteObject | ObjectVersion] = {}
    for item in listed:
        if isinstance(item, ObjectVersion):
            if item.deleted:
                continue
            if (item.rel, item.version_id) in by_version:
                found_versions[(item.rel, item.version_id)] = item
            if item.is_latest and item.rel in current:
                found_current[item.rel] = item
        elif item.rel in current:
            found_current[item.rel] = item
    for item in expected:
        if item.version_id:
            yield item, judge_listed(item, found_versions.get((item.rel, item.version_id)))
        else:
            yield item, judge_listed(item, found_current.get(item.rel))


# --- --check: metadata and data ---------------------------------------------------------


def judge_metadata(
    item: RemoteObject, metadata_md5: str | None, *, etag_is_md5: bool
) -> Finding | None:
    """Without a run record: a single-part object's md5 metadata (the MD5 of the file
    the tool read) against its ETag (the MD5 of the bytes S3 holds)."""
    if etag_is_md5 and metadata_md5 and is_plain_md5(item.etag) and metadata_md5 != item.etag:
        return Finding(
            item.rel,
            CORRUPT,
            f"md5 metadata {metadata_md5}, but the MD5 of its bytes (its ETag) is {item.etag}",
        )
    return None


def metadata_checkable(item: RemoteObject) -> bool:
    """Whether `judge_metadata` can say anything of this object: a single-part one."""
    return is_plain_md5(item.etag)


def uniform_parts(size: int, part_size: int | None, count: int) -> list[int] | None:
    """The part sizes of an upload of `size` bytes in `part_size` parts, if that makes
    `count` parts; None when it does not (another tool's part size)."""
    if part_size is None or size <= 0 or -(-size // part_size) != count:
        return None
    return [part_size] * (count - 1) + [size - part_size * (count - 1)]


def digest_of(chunks: Iterable[bytes], part_sizes: Sequence[int]) -> tuple[FileDigest, int]:
    """The MD5 of a stream of bytes, the MD5 of each part cut at `part_sizes` (none for
    a single-part object), and how many bytes there were. Nothing is kept."""
    whole, part = hashlib.md5(), hashlib.md5()
    parts: list[bytes] = []
    left = list(part_sizes)
    size = 0
    for chunk in chunks:
        whole.update(chunk)
        size += len(chunk)
        view = memoryview(chunk)
        while left and view:
            take = min(left[0], len(view))
            part.update(view[:take])
            view = view[take:]
            left[0] -= take
            if left[0] == 0:
                parts.append(part.digest())
                part = hashlib.md5()
                left.pop(0)
    return FileDigest(whole.hexdigest(), tuple(parts)), size


@dataclass(frozen=True)
class DataVerdict:
    """What reading an object's bytes showed: a finding, or a warning when nothing
    could vouch for them (no MD5 anywhere, an ETag that is not an MD5)."""

    finding: Finding | None = None
    warning: str | None = None


def judge_data(
    item: RemoteObject,
    digest: FileDigest,
    size: int,
    metadata_md5: str | None,
    *,
    etag_is_md5: bool,
) -> DataVerdict:
    """Downloaded bytes against the record's MD5 (else the md5 metadata) and against
    the ETag: a single-part one is their MD5, a multipart one the MD5 of the parts'
    MD5s (`digest.part_md5s`, cut at the sizes it was uploaded in)."""
    if size != item.size:
        return DataVerdict(Finding(item.rel, CORRUPT, f"{size} bytes read, {item.size} listed"))
    expected, source = (item.md5, "recorded") if item.md5 else (metadata_md5, "md5 metadata")
    if expected and expected != digest.md5:
        return DataVerdict(Finding(item.rel, CORRUPT, f"MD5 {digest.md5}, {source} {expected}"))
    vouched = bool(expected)
    if etag_is_md5 and multipart_part_count(item.etag):
        computed = multipart_etag(digest.part_md5s)
        if computed != item.etag:
            detail = f"ETag {item.etag}, but the data's parts give {computed}"
            return DataVerdict(Finding(item.rel, CORRUPT, detail))
        vouched = True
    elif etag_is_md5 and is_plain_md5(item.etag):
        if item.etag != digest.md5:
            detail = f"ETag {item.etag}, but the MD5 of the data is {digest.md5}"
            return DataVerdict(Finding(item.rel, CORRUPT, detail))
        vouched = True
    if not vouched:
        return DataVerdict(
            warning="no MD5 recorded or in its metadata, and an ETag that is not "
            "an MD5: read, but nothing to verify it against"
        )
    return DataVerdict()


# --- --diff -------------------------------------------------------------------------------


def same_content(item: RemoteObject, digest: FileDigest, *, etag_is_md5: bool) -> bool | None:
    """Whether a local file with `digest` holds the object's bytes: by the recorded MD5,
    else by the ETag; None when neither can tell (the md5 metadata must)."""
    if item.md5:
        return item.md5 == digest.md5
    return etag_matches(item.etag, digest) if etag_is_md5 else None


def judge_local(
    rel: str,
    backup: RemoteObject | None,
    local: LocalFile | None,
    same: bool | None = None,
) -> Finding | None:
    """A file of the backup against the local folder: only on one side, another size,
    or (`same` is False, the contents compared) other bytes of the same size."""
    if backup is None:
        return Finding(rel, EXTRA, "not in the backup")
    if local is None:
        return Finding(rel, MISSING, "in the backup, not in the folder")
    if local.size != backup.size:
        return Finding(rel, DIFFERS, f"{local.size} bytes, backup {backup.size}")
    if same is False:
        return Finding(rel, DIFFERS, "same size, other content")
    return None
