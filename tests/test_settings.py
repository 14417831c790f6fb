"""Transfer settings: sizes as the AWS CLI spells them, and options over the profile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from helpers import run_script
from hypothesis import given
from hypothesis import strategies as st

import s3common
from ass3.s3errors import is_multipart_refusal, may_be_checksum_refusal
from ass3.settings import (
    DEFAULT_WORKERS,
    MULTIPART_CHUNKSIZE,
    MULTIPART_THRESHOLD,
    TransferSettings,
    parse_size,
    transfer_settings,
)

MiB = 1024 * 1024


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("8388608", 8 * MiB),
        ("0", 0),
        ("8MB", 8 * MiB),
        ("8mb", 8 * MiB),
        ("8MiB", 8 * MiB),
        (" 16 MB ", 16 * MiB),
        ("1KB", 1024),
        ("1kib", 1024),
        ("2GB", 2 * 1024 * MiB),
        ("1TiB", 1024**4),
        ("512b", 512),
    ],
)
def test_sizes_read_as_aws_s3_reads_them(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MB", "8 M B", "8XB", "-1", "1.5MB", "8MBs", "0x10"])
def test_what_is_not_a_size_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


@given(st.integers(min_value=0, max_value=2**40), st.sampled_from(["", "KB", "MiB", "gb"]))
def test_a_size_is_its_number_times_its_unit(number: int, unit: str) -> None:
    factor = {"": 1, "KB": 1024, "MiB": MiB, "gb": 1024 * MiB}[unit]
    assert parse_size(f"{number}{unit}") == number * factor


def test_without_options_or_profile_the_defaults_hold() -> None:
    assert transfer_settings(None) == TransferSettings(
        DEFAULT_WORKERS, MULTIPART_THRESHOLD, MULTIPART_CHUNKSIZE
    )


def test_the_profile_is_read_and_options_win_over_it() -> None:
    profile = {
        "multipart_threshold": "64MB",
        "multipart_chunksize": "16MiB",
        "max_concurrent_requests": "20",
        "max_bandwidth": "50MB/s",  # an aws s3 setting the tool does not use: ignored
    }
    assert transfer_settings(profile) == TransferSettings(20, 64 * MiB, 16 * MiB)
    assert transfer_settings(
        profile, workers=3, multipart_threshold=10 * MiB, multipart_chunksize=5 * MiB
    ) == TransferSettings(3, 10 * MiB, 5 * MiB)


def test_a_profile_s3_value_that_is_not_a_section_is_ignored() -> None:
    # `s3 = something` on one line is a plain string, not the nested section.
    assert transfer_settings("path") == TransferSettings()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("profile", "options", "message"),
    [
        ({"multipart_chunksize": "1MB"}, {}, "s3.multipart_chunksize in the AWS profile: .*5 MiB"),
        ({"multipart_chunksize": "6GB"}, {}, "multipart chunk size must be 5 MiB to 5 GiB"),
        ({"multipart_threshold": "lots"}, {}, "s3.multipart_threshold in the AWS profile: not a"),
        ({"multipart_threshold": "6GB"}, {}, "threshold must be 1 byte to 5 GiB"),
        ({"max_concurrent_requests": "ten"}, {}, "s3.max_concurrent_requests in the AWS profile"),
        ({"max_concurrent_requests": "0"}, {}, "workers must be 1 to 256, not 0"),
        ({}, {"workers": 1000}, "--workers: workers must be 1 to 256"),
        ({}, {"multipart_chunksize": MiB}, "--multipart-chunksize: the multipart chunk size"),
        ({}, {"multipart_threshold": 0}, "--multipart-threshold: the multipart threshold"),
    ],
)
def test_a_bad_value_names_the_setting_and_where_it_came_from(
    profile: dict[str, str], options: dict[str, int], message: str
) -> None:
    with pytest.raises(s3common.Ass3Error, match=message):
        transfer_settings(profile, **options)


def test_the_connection_takes_the_aws_cli_settings_from_the_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config"
    config.write_text(
        "[profile tuned]\n"
        "region = eu-west-1\n"
        "aws_access_key_id = testing\n"
        "aws_secret_access_key = testing\n"
        "s3 =\n"
        "  multipart_threshold = 32MB\n"
        "  multipart_chunksize = 6MB\n"
        "  max_concurrent_requests = 3\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    conn = s3common.Connection(profile="tuned")
    assert (conn.workers, conn.multipart_threshold, conn.multipart_chunksize) == (
        3,
        32 * MiB,
        6 * MiB,
    )
    assert conn.transfer_config.max_request_concurrency == 3
    assert conn.transfer_config.multipart_chunksize == 6 * MiB
    assert conn.part_size_for(32 * MiB - 1) is None
    assert conn.part_size_for(32 * MiB) == 6 * MiB
    assert s3common.Connection(profile="tuned", workers=5).workers == 5


def test_botocore_checksum_settings_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    assert s3common.Connection().sends_crc32
    assert not s3common.Connection(crc32=False).sends_crc32
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    assert not s3common.Connection().sends_crc32


def test_the_options_reach_the_upload_and_bad_ones_are_one_line(
    script_env: dict[str, str], moto_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    root = tmp_path / "src"
    root.mkdir()
    (root / "big").write_bytes(b"\x05" * (6 * MiB))
    ok = run_script(
        "ass3Backup.py",
        str(root),
        "--bucket",
        bucket,
        "--multipart-threshold",
        "5MB",
        "--multipart-chunksize",
        "5MiB",
        env=script_env,
    )
    assert ok.returncode == 0, ok.stderr
    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    assert s3.head_object(Bucket=bucket, Key="src/big")["ETag"].endswith('-2"')
    for flag, value, message in [
        ("--multipart-chunksize", "1MB", "must be 5 MiB to 5 GiB"),
        ("--multipart-threshold", "8XB", "not a size"),
        ("--workers", "0", "must be at least 1"),
    ]:
        bad = run_script("ass3Backup.py", str(root), flag, value, env=script_env)
        lines = bad.stderr.strip().splitlines()
        assert bad.returncode == 2 and message in lines[-1] and "Traceback" not in bad.stderr


def refusal(operation: str, status: int, code: str, message: str = "") -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, operation)


@pytest.mark.parametrize(
    ("error", "checksums", "multipart"),
    [
        (refusal("PutObject", 400, "InvalidArgument", "Unsupported header"), True, False),
        (refusal("PutObject", 400, "BadDigest"), True, False),
        (refusal("UploadPart", 501, "NotImplemented"), True, True),
        (refusal("PutObject", 403, "SignatureDoesNotMatch"), True, False),
        (refusal("PutObject", 403, "AccessDenied"), False, False),
        (refusal("PutObject", 400, "InvalidStorageClass"), False, False),
        (refusal("PutObject", 404, "NoSuchBucket"), False, False),
        (refusal("PutObject", 503, "SlowDown"), False, False),
        (refusal("GetObject", 400, "InvalidArgument"), False, False),
        (refusal("CreateMultipartUpload", 501, "NotImplemented"), True, True),
        (refusal("CreateMultipartUpload", 405, "MethodNotAllowed"), False, True),
        (refusal("CreateMultipartUpload", 400, "InvalidRequest"), True, False),
        (
            refusal("CreateMultipartUpload", 501, "NotImplemented", "x-amz-checksum-algorithm"),
            True,
            False,
        ),
        (refusal("CompleteMultipartUpload", 400, "InvalidPart"), False, False),
    ],
)
def test_which_refusals_mean_a_server_lacks_a_feature(
    error: ClientError, checksums: bool, multipart: bool
) -> None:
    assert may_be_checksum_refusal(error) is checksums
    assert is_multipart_refusal(error) is multipart


class _Refusing:
    """An upload that the server refuses while the features in `refused` are on."""

    def __init__(self, conn: s3common.Connection, refused: set[str]) -> None:
        self.conn, self.refused, self.tries = conn, refused, 0

    def __call__(self) -> str:
        self.tries += 1
        if "crc32" in self.refused and self.conn.sends_crc32:
            raise refusal("PutObject", 400, "InvalidArgument", "x-amz-checksum-crc32")
        if "multipart" in self.refused and not self.conn.multipart_refused:
            raise refusal("CreateMultipartUpload", 501, "NotImplemented")
        if "always" in self.refused:
            raise refusal("PutObject", 400, "InvalidRequest")
        return "sent"


@pytest.mark.parametrize(
    ("refused", "tries", "crc32_after", "multipart_after"),
    [
        (set(), 1, True, True),
        ({"crc32"}, 2, False, True),
        ({"multipart"}, 2, True, False),
        ({"crc32", "multipart"}, 3, False, False),
    ],
)
def test_each_retry_turns_one_feature_off(
    refused: set[str], tries: int, crc32_after: bool, multipart_after: bool
) -> None:
    conn = s3common.Connection()
    upload = _Refusing(conn, refused)
    assert conn.with_fallbacks(upload) == "sent"
    assert (upload.tries, conn.sends_crc32, not conn.multipart_refused) == (
        tries,
        crc32_after,
        multipart_after,
    )
    again = _Refusing(conn, refused)
    assert conn.with_fallbacks(again) == "sent" and again.tries == 1


def test_a_refusal_that_outlives_the_fallbacks_is_raised() -> None:
    conn = s3common.Connection()
    upload = _Refusing(conn, {"always"})
    with pytest.raises(ClientError, match="InvalidRequest"):
        conn.with_fallbacks(upload)
    assert upload.tries == 2 and not conn.sends_crc32  # CRC32 was the one suspect
    with pytest.raises(ClientError):
        conn.with_fallbacks(upload)
    assert upload.tries == 3
