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
    "to try the tool without AWS: python ass3Backup.py --try"
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


# Errors that say what is wrong with the request itself, whatever checksums it carried.
_NOT_ABOUT_CHECKSUMS = frozenset(
    {
        "AccessDenied",
        "EntityTooLarge",
        "EntityTooSmall",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidBucketName",
        "InvalidEncryptionAlgorithmError",
        "InvalidPart",
        "InvalidPartOrder",
        "InvalidStorageClass",
        "KeyTooLongError",
        "MetadataTooLarge",
        "NoSuchBucket",
        "NoSuchUpload",
        "RequestTimeout",
    }
)
_UPLOAD_OPERATIONS = frozenset(
    {"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"}
)


def _status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _mentions_checksums(error: ClientError) -> bool:
    message = error.response.get("Error", {}).get("Message", "").lower()
    return any(word in message for word in ("checksum", "crc32", "trailer", "chunked"))


def may_be_checksum_refusal(error: ClientError) -> bool:
    """Whether an upload may have failed for the CRC32 checksum boto3 added to it.

    Stores that predate S3's flexible checksums answer its headers and aws-chunked
    trailers with many different errors: 400 InvalidArgument, InvalidRequest or
    BadDigest (the trailer hashed as body), 403 SignatureDoesNotMatch, 501
    NotImplemented. A wrong guess costs one retry without CRC32, which the tool's own
    MD5 checks do not need; so anything that is not plainly about something else counts.
    """
    if error.operation_name not in _UPLOAD_OPERATIONS:
        return False
    code, status = error_code(error), _status(error)
    if code in _NOT_ABOUT_CHECKSUMS:
        return False
    return status in (400, 501) or code == "SignatureDoesNotMatch"


def is_multipart_refusal(error: ClientError) -> bool:
    """Whether the server does not do multipart uploads at all (some gateways and
    minimal S3 servers): it refuses to start one, or to take a part."""
    if error.operation_name not in ("CreateMultipartUpload", "UploadPart"):
        return False
    if _mentions_checksums(error):  # e.g. "x-amz-checksum-algorithm not implemented"
        return False
    code, status = error_code(error), _status(error)
    return status in (405, 501) or code in ("NotImplemented", "MethodNotAllowed")
