"""Error messages a user can act on: what failed, where, and what to do about it."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

import ass3Backup
import s3common


def client_error(code: str, operation: str, headers: dict[str, str] | None = None) -> ClientError:
    response: dict[str, Any] = {
        "Error": {"Code": code, "Message": "message from S3"},
        "ResponseMetadata": {"HTTPHeaders": headers or {}},
    }
    return ClientError(response, operation)  # type: ignore[arg-type]


def test_access_denied_names_the_request_the_place_and_the_permission() -> None:
    message = s3common.describe_client_error(
        client_error("AccessDenied", "ListObjectsV2"), "listing", "my-bucket", "photos"
    )
    assert message == (
        "access denied: ListObjectsV2 on s3://my-bucket/photos/ is not allowed for these "
        "credentials (the IAM policy needs s3:ListBucket)"
    )


def test_region_mismatch_names_the_buckets_region() -> None:
    error = client_error("PermanentRedirect", "ListObjectsV2", {"x-amz-bucket-region": "eu-west-2"})
    message = s3common.describe_client_error(error, "listing", "my-bucket")
    assert message == "bucket s3://my-bucket is in region eu-west-2: pass --region eu-west-2"


def test_no_credentials_says_how_to_configure_them() -> None:
    message = s3common.describe_client_error(NoCredentialsError(), "ListBuckets")
    for hint in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "--profile", "ass3Backup.py --try"):
        assert hint in message


def test_unreachable_endpoint_names_the_url() -> None:
    error = EndpointConnectionError(endpoint_url="http://minio.local:9000/bucket")
    message = s3common.describe_client_error(error, "ListObjectsV2", "bucket")
    assert "http://minio.local:9000/bucket" in message


def test_region_mismatch_from_the_cli_is_one_line_and_exit_2(
    s3: Any, tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f").write_bytes(b"x")
    original = s3common.Connection._client

    def wrong_region(self: s3common.Connection, service: str) -> Any:
        client = original(self, service)

        def redirect(**_: Any) -> None:
            raise client_error(
                "PermanentRedirect", "ListObjectsV2", {"x-amz-bucket-region": "ap-south-1"}
            )

        client.meta.events.register_first("before-call.s3.ListObjectsV2", redirect)
        return client

    monkeypatch.setattr("ass3.connection.Connection._client", wrong_region)
    code = ass3Backup.main([str(tmp_path / "data"), "--bucket", "some-bucket"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [
        "ass3Backup.py: error: bucket s3://some-bucket is in region ap-south-1: "
        "pass --region ap-south-1"
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--endpoint-url", "notaurl"], "cannot set up the S3 client"),
        (["--region", "bad region!"], "cannot set up the S3 client"),
        (["--exclude", "!"], "invalid filter pattern"),
    ],
    ids=["endpoint", "region", "pattern"],
)
def test_malformed_settings_are_one_line_and_exit_2(
    s3: Any,
    tmp_path: Any,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    message: str,
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f").write_bytes(b"x")
    code = ass3Backup.main([str(tmp_path / "data"), "--bucket", "some-bucket", *options])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]
