"""Servers that are not AWS: no STS, missing features, settings answered but ignored.

The other server is a moto server on 127.0.0.1 (not an AWS host name); what a
particular server does differently is played by a botocore hook that answers the
request the way that server does.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from helpers import Hook, canned_response, make_tree

import ass3Backup
import s3common
from s3common import Connection


def answer(status: int, body: bytes, content_type: str) -> Any:
    """A before-send handler answering every request it sees with `body`, which then
    never reaches moto (its URL is pointed away)."""

    def handler(request: Any, **_: Any) -> AWSResponse:
        url, request.url = request.url, "http://answered.invalid/"
        return canned_response(url, status, body, content_type)

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


NOT_IMPLEMENTED = (
    b"<Error><Code>NotImplemented</Code><Message>A header you provided implies "
    b"functionality that is not implemented</Message></Error>"
)
UNSUPPORTED_HEADER = (
    b"<Error><Code>InvalidArgument</Code><Message>Unsupported header "
    b"x-amz-checksum-crc32 received for this API call.</Message></Error>"
)


def carries_crc32(request: Any) -> bool:
    """A header or an aws-chunked trailer with boto3's CRC32 (over HTTPS it is a trailer)."""
    headers = {name.lower(): value for name, value in request.headers.items()}
    return "x-amz-checksum-crc32" in headers or "crc32" in str(headers.get("x-amz-trailer", ""))


def big_and_small_tree(root: Path) -> dict[str, bytes]:
    files = {
        "big1": bytes(range(256)) * (24 * 1024),  # 6 MiB: two parts of 5 MiB
        "big2": b"\x07" * (11 * 1024 * 1024),
        "small": b"small",
    }
    make_tree(root, files)
    return files


def object_bytes(s3: Any, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def test_a_server_that_refuses_multipart_gets_big_files_in_one_put(
    s3: Any, bucket: str, tmp_path: Path, hook: Hook, caplog: pytest.LogCaptureFixture
) -> None:
    creates: list[str] = []

    def refuse(request: Any, **_: Any) -> AWSResponse:
        creates.append(request.url)
        return answer(501, NOT_IMPLEMENTED, "application/xml")(request)

    hook("before-send.s3.CreateMultipartUpload", refuse)
    sent = sent_operations(hook)
    conn = Connection(workers=1, multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20)
    files = big_and_small_tree(tmp_path / "src")
    summary = s3common.backup(conn, str(tmp_path / "src"), bucket=bucket, prefix="data")
    assert (summary.failures, summary.transferred) == ([], 3)
    assert len(creates) == 1  # refused once; the run stopped asking
    assert sent["UploadPart"] == 0 and conn.multipart_refused and conn.sends_crc32
    for rel, content in files.items():
        assert object_bytes(s3, bucket, f"data/{rel}") == content
        head = s3.head_object(Bucket=bucket, Key=f"data/{rel}")
        assert head["Metadata"]["md5"] == hashlib.md5(content).hexdigest()
    warnings = [r.getMessage() for r in caplog.records if "multipart" in r.getMessage()]
    assert len(warnings) == 1 and "NotImplemented" in warnings[0]
    again = s3common.backup(conn, str(tmp_path / "src"), bucket=bucket, prefix="data")
    assert (again.failures, again.transferred) == ([], 0)


def test_without_multipart_a_file_over_five_gib_is_reported_not_attempted(
    s3: Any, bucket: str, tmp_path: Path, hook: Hook
) -> None:
    hook("before-send.s3.CreateMultipartUpload", answer(501, NOT_IMPLEMENTED, "application/xml"))
    root = tmp_path / "src"
    make_tree(root, {"first": b"\x01" * (6 * 2**20)})
    with open(root / "huge", "wb") as sparse:
        sparse.truncate(5 * 2**30 + 1)
    sent = sent_operations(hook)
    conn = Connection(workers=1, multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20)
    summary = s3common.backup(conn, str(root), bucket=bucket, prefix="data")
    assert [(rel, "5 GiB" in why) for rel, why in summary.failures] == [("huge", True)]
    assert summary.transferred == 1 and sent["PutObject"] == 2  # "first", and the record


def test_a_server_that_refuses_crc32_gets_each_upload_once_more_without_it(
    s3: Any, bucket: str, tmp_path: Path, hook: Hook, caplog: pytest.LogCaptureFixture
) -> None:
    refused: Counter[str] = Counter()

    def reject_crc32(request: Any, event_name: str, **_: Any) -> AWSResponse | None:
        if not carries_crc32(request):
            return None  # on to moto
        refused[event_name.rsplit(".", 1)[-1]] += 1
        return answer(400, UNSUPPORTED_HEADER, "application/xml")(request)

    for operation in ("PutObject", "UploadPart", "CreateMultipartUpload"):
        hook(f"before-send.s3.{operation}", reject_crc32)
    conn = Connection(workers=1, multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20)
    assert conn.sends_crc32
    files = big_and_small_tree(tmp_path / "src")
    summary = s3common.backup(conn, str(tmp_path / "src"), bucket=bucket, prefix="data")
    assert (summary.failures, summary.transferred) == ([], 3)
    assert sum(refused.values()) == 1 and not conn.sends_crc32 and not conn.multipart_refused
    for rel, content in files.items():
        assert object_bytes(s3, bucket, f"data/{rel}") == content
    warnings = [r.getMessage() for r in caplog.records if "CRC32" in r.getMessage()]
    assert len(warnings) == 1 and "--no-crc32" in warnings[0]
    assert summary.run_id is not None  # the run record went up too


def test_a_refusal_that_is_not_about_crc32_fails_the_file_after_one_retry(
    s3: Any, bucket: str, tmp_path: Path, hook: Hook
) -> None:
    tries: list[bool] = []

    def reject_everything(request: Any, **_: Any) -> AWSResponse:
        tries.append(carries_crc32(request))
        return answer(400, b"<Error><Code>InvalidRequest</Code></Error>", "application/xml")(
            request
        )

    hook("before-send.s3.PutObject", reject_everything)
    conn = Connection(workers=1)
    make_tree(tmp_path / "src", {"a": b"a", "b": b"b"})
    summary = s3common.backup(conn, str(tmp_path / "src"), bucket=bucket, prefix="data")
    # The first run of a tree writes a record even with no upload: it holds the tree.
    assert sorted(rel for rel, _ in summary.failures) == ["a", "b", "run record"]
    assert all("InvalidRequest" in why for _, why in summary.failures)
    # The first file: with CRC32, then once without; after that, one try each.
    assert tries == [True, False, False, False]


def test_with_no_crc32_a_refusal_is_never_retried(
    s3: Any, bucket: str, tmp_path: Path, hook: Hook
) -> None:
    tries: list[bool] = []

    def reject(request: Any, **_: Any) -> AWSResponse:
        tries.append(carries_crc32(request))
        return answer(400, UNSUPPORTED_HEADER, "application/xml")(request)

    hook("before-send.s3.PutObject", reject)
    conn = Connection(workers=1, crc32=False)
    make_tree(tmp_path / "src", {"a": b"a"})
    summary = s3common.backup(conn, str(tmp_path / "src"), bucket=bucket, prefix="data")
    assert [rel for rel, _ in summary.failures] == ["a", "run record"]
    assert tries == [False, False]


def test_one_put_of_a_file_that_changes_on_a_server_ignoring_content_md5_is_sent_again(
    s3: Any, bucket: str, tmp_path: Path, hook: Hook
) -> None:
    """The single-PUT fallback streams a big file from disk after hashing it; a writer
    in between, on a server that does not check Content-MD5, must not leave an object
    whose md5 metadata describes other bytes."""
    hook("before-send.s3.CreateMultipartUpload", answer(501, NOT_IMPLEMENTED, "application/xml"))
    root = tmp_path / "src"
    make_tree(root, {"big": b"\x01" * (6 * 2**20)})
    puts: list[str] = []

    def write_while_sent(request: Any, **_: Any) -> None:
        puts.append(request.url)
        request.headers.pop("Content-MD5", None)  # a server that ignores it
        if len(puts) == 1:
            with open(root / "big", "r+b") as racing_writer:
                racing_writer.write(b"\x02" * 4096)

    hook("before-send.s3.PutObject", write_while_sent)
    conn = Connection(workers=1, multipart_threshold=5 * 2**20, crc32=False)
    summary = s3common.backup(conn, str(root), bucket=bucket, prefix="data")
    assert summary.failures == []
    now = (root / "big").read_bytes()
    assert object_bytes(s3, bucket, "data/big") == now
    head = s3.head_object(Bucket=bucket, Key="data/big")
    assert head["Metadata"]["md5"] == hashlib.md5(now).hexdigest()
    assert len(puts) == 3  # the big file twice, then the run record


def test_one_put_whose_etag_is_not_the_md5_sent_is_reported(
    s3: Any, bucket: str, tmp_path: Path, hook: Hook
) -> None:
    """A server that kept other bytes than it was sent (aws-chunked framing stored as
    data, say) answers another ETag: the file is reported, not recorded as backed up."""
    hook("before-send.s3.CreateMultipartUpload", answer(501, NOT_IMPLEMENTED, "application/xml"))

    def other_etag(parsed: dict[str, Any], **_: Any) -> None:
        parsed["ETag"] = '"' + "0" * 32 + '"'

    hook("after-call.s3.PutObject", other_etag)
    make_tree(tmp_path / "src", {"big": b"\x01" * (6 * 2**20)})
    conn = Connection(workers=1, multipart_threshold=5 * 2**20, crc32=False)
    summary = s3common.backup(conn, str(tmp_path / "src"), bucket=bucket, prefix="data")
    assert [rel for rel, _ in summary.failures] == ["big"]
    assert "ETag 00000000000000000000000000000000" in summary.failures[0][1]


def test_one_put_over_plain_http_with_crc32_hashes_what_was_sent(
    moto_endpoint: str, bucket: str, tmp_path: Path, hook: Hook
) -> None:
    """Over HTTP botocore reads the body once for the CRC32 header, rewinds, then
    sends it: the hash of what was sent must start again at the rewind."""
    hook("before-send.s3.CreateMultipartUpload", answer(501, NOT_IMPLEMENTED, "application/xml"))
    content = bytes(range(256)) * (24 * 1024)
    make_tree(tmp_path / "src", {"big": content})
    conn = Connection(
        endpoint_url=moto_endpoint, workers=1, multipart_threshold=5 * 2**20, crc32=True
    )
    summary = s3common.backup(conn, str(tmp_path / "src"), bucket=bucket, prefix="data")
    assert (summary.failures, summary.warnings, summary.transferred) == ([], [], 1)
    got = conn.client.get_object(Bucket=bucket, Key="data/big")["Body"].read()
    assert got == content and conn.sends_crc32
