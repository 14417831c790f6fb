"""Servers that are not AWS: no STS, missing features, settings answered but ignored.

The other server is a moto server on 127.0.0.1 (not an AWS host name); what a
particular server does differently is played by a botocore hook that answers the
request the way that server does.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from helpers import Hook, make_tree

import ass3Backup
import s3common
from s3common import Connection


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Any:
        yield self._data

    def read(self, *_: Any) -> bytes:
        return self._data


def answer(status: int, body: bytes, content_type: str) -> Any:
    """A before-send handler answering every request it sees with `body`, which then
    never reaches moto (its URL is pointed away)."""

    def handler(request: Any, **_: Any) -> AWSResponse:
        url, request.url = request.url, "http://answered.invalid/"
        return AWSResponse(url, status, {"Content-Type": content_type}, _Body(body))

    return handler


def sent_operations(hook: Hook) -> Counter[str]:
    """Every request any client of the tool sends, by operation."""
    sent: Counter[str] = Counter()

    def count(event_name: str, **_: Any) -> None:
        sent[event_name.rsplit(".", 1)[-1]] += 1

    hook("before-send", count)
    return sent


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (404, b"404 page not found\n", "text/plain"),
        (400, b"<html><body>Bad Request</body></html>", "text/html"),
        (403, b"<Error><Code>AccessDenied</Code></Error>", "application/xml"),
    ],
    ids=["plain-text-404", "html-400", "xml-403"],
)
def test_any_sts_answer_but_an_account_means_unknown_never_a_crash(
    s3: Any, bucket: str, tmp_path: Path, hook: Hook, status: int, body: bytes, content_type: str
) -> None:
    hook("before-send.sts.GetCallerIdentity", answer(status, body, content_type))
    conn = Connection()
    assert conn.account_id() is None
    with pytest.raises(s3common.Ass3Error, match="pass --bucket NAME"):
        s3common.resolve_bucket(conn, None)
    root = make_tree(tmp_path / "src", {"a": b"a"})
    summary = s3common.backup(conn, str(root), bucket=bucket, prefix="data")
    assert (summary.failures, summary.transferred) == ([], 1)


def test_with_a_named_bucket_another_server_is_never_asked_for_sts(
    moto_endpoint: str, bucket: str, tmp_path: Path, hook: Hook
) -> None:
    sent = sent_operations(hook)
    conn = Connection(endpoint_url=moto_endpoint)
    root = make_tree(tmp_path / "src", {"a": b"a", "sub/b": b"b"})
    first = s3common.backup(conn, str(root), bucket=bucket, prefix="data")
    again = s3common.backup(conn, str(root), bucket=bucket, prefix="data")
    assert first.failures == [] and again.transferred == 0
    assert "GetCallerIdentity" not in sent
    assert again.requests == Counter(ListBuckets=1, ListObjectsV2=1)


def test_a_lifecycle_answer_without_rules_is_no_rules(
    moto_endpoint: str, bucket: str, tmp_path: Path, hook: Hook
) -> None:
    def drop_rules(parsed: dict[str, Any], **_: Any) -> None:
        parsed.pop("Rules", None)

    hook("after-call.s3.GetBucketLifecycleConfiguration", drop_rules)
    conn = Connection(endpoint_url=moto_endpoint)
    root = make_tree(tmp_path / "src", {"a": b"a"})
    summary = s3common.backup(conn, str(root), bucket=bucket, prefix="data", keep_days=30)
    assert (summary.failures, summary.warnings) == ([], [])
    assert any("backups in" in line for line in s3common.format_listing(conn, bucket, None))


def test_keep_days_on_a_server_without_lifecycle_is_a_warning_and_the_summary_stays(
    moto_endpoint: str,
    bucket: str,
    tmp_path: Path,
    hook: Hook,
    capsys: pytest.CaptureFixture[str],
) -> None:
    not_implemented = (
        b"<Error><Code>NotImplemented</Code><Message>A header you provided implies "
        b"functionality that is not implemented</Message></Error>"
    )
    hook(
        "before-send.s3.PutBucketLifecycleConfiguration",
        answer(501, not_implemented, "application/xml"),
    )
    root = make_tree(tmp_path / "src", {"a": b"a"})
    argv = [str(root), "--bucket", bucket, "--endpoint-url", moto_endpoint, "--keep-days", "9"]
    assert ass3Backup.main(argv) == 0
    out, err = capsys.readouterr()
    assert "uploaded 1 file" in out and "warned 1" in out and "expire" not in out
    assert "warning: --keep-days: versions are kept as the bucket keeps them" in err
    assert "Traceback" not in err


def test_versioning_answered_but_not_applied_is_said(
    moto_endpoint: str, bucket: str, tmp_path: Path, hook: Hook, caplog: pytest.LogCaptureFixture
) -> None:
    hook("before-send.s3.PutBucketVersioning", answer(200, b"", "application/xml"))
    conn = Connection(endpoint_url=moto_endpoint)
    assert s3common.ensure_bucket(conn, bucket) is True
    assert f"versioning is off on s3://{bucket} after asking for it" in caplog.text


def test_a_listing_out_of_key_order_is_sorted_before_anything_is_planned(
    moto_endpoint: str, bucket: str, tmp_path: Path, hook: Hook, caplog: pytest.LogCaptureFixture
) -> None:
    """A server listing in another order made existing files look new: re-uploaded
    before the merge noticed. Now nothing is re-sent and nothing is refused."""
    files = {f"f{index:03d}": bytes([index]) * index for index in range(1, 40)}
    files.update({"a-b": b"dash", "a/b": b"slash", "Z": b"upper", "\u00e9": b"accent"})
    root = make_tree(tmp_path / "src", files)
    conn = Connection(endpoint_url=moto_endpoint)
    assert s3common.backup(conn, str(root), bucket=bucket, prefix="data").failures == []

    def scramble(parsed: dict[str, Any], **_: Any) -> None:
        parsed["Contents"] = sorted(parsed.get("Contents", []), key=lambda item: item["Size"])

    hook("after-call.s3.ListObjectsV2", scramble)
    conn = Connection(endpoint_url=moto_endpoint)
    again = s3common.backup(conn, str(root), bucket=bucket, prefix="data")
    assert (again.failures, again.transferred, again.unchanged) == ([], 0, len(files))
    assert "PutObject" not in again.requests
    assert f"s3://{bucket}/data/ is listed out of UTF-8 byte order" in caplog.text
    restored = s3common.restore(conn, "data", bucket=bucket, destination=str(tmp_path / "out"))
    assert (restored.failures, restored.transferred) == ([], len(files))
