"""botocore and boto3 errors, turned into one line a user can act on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from boto3.exceptions import Boto3Error
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)
from s3transfer.exceptions import CancelledError, RetriesExceededError, S3DownloadFailedError

from ass3.model import Ass3Error

NO_CREDENTIALS_HELP = (
    "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
    "AWS_PROFILE / --profile for a profile in ~/.aws/credentials (see `aws configure`); "
    "to try the tool without AWS, run a local S3 server and set AWS_ENDPOINT_URL "
    "(README: Try it without AWS)"
)


# What a failed request or transfer can raise: reported per file, never a traceback.
TRANSFER_ERRORS = (
    BotoCoreError,
    ClientError,
    Boto3Error,
    CancelledError,
    RetriesExceededError,
    S3DownloadFailedError,
)


def describe_client_error(
    error: Exception, action: str, bucket: str | None = None, prefix: str | None = None
) -> str:
    """One line a user can act on, for an error from botocore or boto3.

    It names the request and the bucket (and backup) it was for; a ClientError
    names its own operation, which is more precise than `action`.
    """
    where = f" on s3://{bucket}/{prefix + '/' if prefix else ''}" if bucket else ""
    if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
        return NO_CREDENTIALS_HELP
    if isinstance(error, EndpointConnectionError):
        url = error.kwargs.get("endpoint_url")
        return f"cannot reach the S3 endpoint {url}: is the URL right and the server up?"
    if isinstance(error, ClientError):
        action = error.operation_name or action
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", "")
        headers = error.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        region = headers.get("x-amz-bucket-region") or error.response.get("Error", {}).get("Region")
        if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled"):
            return (
                f"access denied: {action}{where} is not allowed for these credentials "
                f"(the IAM policy needs s3:{_iam_action(action)})"
            )
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidClientTokenId"):
            return f"the credentials were rejected ({code}): check the access key and secret"
        if code in ("NoSuchBucket", "404") and bucket:
            return f"bucket s3://{bucket} does not exist"
        if code in ("PermanentRedirect", "301", "AuthorizationHeaderMalformed") or (
            code == "IllegalLocationConstraintException"
        ):
            there = f"region {region}: pass --region {region}" if region else "another region"
            return f"bucket s3://{bucket} is in {there}"
        return f"{action}{where} failed: {code} {message}".rstrip()
    return f"{action}{where} failed: {error}"


def _iam_action(operation: str) -> str:
    """The IAM action behind an S3 API call, for the hint in an access-denied message."""
    return {
        "ListObjectsV2": "ListBucket",
        "ListObjectVersions": "ListBucketVersions",
        "HeadObject": "GetObject",
        "HeadBucket": "ListBucket",
        "ListBuckets": "ListAllMyBuckets",
        "CreateMultipartUpload": "PutObject",
        "UploadPart": "PutObject",
        "CompleteMultipartUpload": "PutObject",
        "DeleteObjects": "DeleteObject",
        "ListMultipartUploads": "ListBucketMultipartUploads",
    }.get(operation, operation)


@contextmanager
def fatal_errors(
    action: str, bucket: str | None = None, prefix: str | None = None
) -> Iterator[None]:
    """Turn botocore errors from a request the run cannot do without into Ass3Error."""
    try:
        yield
    except (BotoCoreError, ClientError, Boto3Error) as error:
        raise Ass3Error(describe_client_error(error, action, bucket, prefix)) from error


def error_code(error: ClientError) -> str:
    """The S3 error code of a ClientError ('NoSuchKey', '404', ...), or ''."""
    return error.response.get("Error", {}).get("Code", "")
