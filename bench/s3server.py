"""moto's S3 server on 127.0.0.1 behind a middleware that counts what arrives.

Counting where requests arrive treats every tool alike, whatever its client library
reports about itself: requests by S3 operation, errors, which objects were written or
read, and the request-body bytes the server took in (after HTTP chunked decoding).
"""

from __future__ import annotations

import io
import logging
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import WSGIRequestHandler, make_server

KiB = 1024


@dataclass
class Traffic:
    """Requests the server saw during one tool's phase."""

    operations: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # "Op 404" -> count
    written: set[str] = field(default_factory=set)  # "bucket/key" stored by a completed upload
    read: set[str] = field(default_factory=set)  # "bucket/key" fetched by GetObject
    bytes_sent: int = 0  # request bodies as the server read them

    @property
    def total(self) -> int:
        return sum(self.operations.values())


_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/,\s]+/([^/,\s]+)/aws4_request")
# Bucket subresources whose AWS operation name is not "<Verb>Bucket<Name>".
_SUBRESOURCE_OPERATIONS = {
    ("PUT", "publicAccessBlock"): "PutPublicAccessBlock",
    ("GET", "publicAccessBlock"): "GetPublicAccessBlock",
    ("DELETE", "publicAccessBlock"): "DeletePublicAccessBlock",
    ("PUT", "lifecycle"): "PutBucketLifecycleConfiguration",
    ("GET", "lifecycle"): "GetBucketLifecycleConfiguration",
    ("GET", "versions"): "ListObjectVersions",
    ("GET", "uploads"): "ListMultipartUploads",
    ("POST", "delete"): "DeleteObjects",
}
_BUCKET_SUBRESOURCES = (
    "publicAccessBlock",
    "lifecycle",
    "versions",
    "uploads",
    "delete",
    "versioning",
    "encryption",
    "location",
    "policy",
    "acl",
    "tagging",
    "cors",
    "ownershipControls",
    "notification",
    "logging",
    "website",
    "object-lock",
    "replication",
    "accelerate",
    "requestPayment",
)


def _bucket_and_key(environ: dict[str, Any]) -> tuple[str, str]:
    """Bucket and key from a path-style URL, or from a virtual-host style Host header."""
    path = environ.get("PATH_INFO", "/").lstrip("/")
    host = environ.get("HTTP_HOST", "").rsplit(":", 1)[0]
    virtual = host not in ("", "localhost") and not re.fullmatch(r"[\d.]+|\[[\d:a-fA-F]+\]", host)
    if virtual and "." in host:
        return host.split(".", 1)[0], path
    bucket, _, key = path.partition("/")
    return bucket, key


def _peek_body(environ: dict[str, Any], limit: int = 64 * KiB) -> bytes:
    """Read a small request body and put it back, for unsigned form POSTs."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return b""
    if not 0 < length <= limit:
        return b""
    body = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)
    return body


def classify(environ: dict[str, Any]) -> tuple[str, str, str]:
    """The S3 operation a request performs, from method, path and query: (op, bucket, key)."""
    method = environ.get("REQUEST_METHOD", "GET").upper()
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    scope = _CREDENTIAL_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    if scope and scope.group(1) != "s3":
        return ("STS" if scope.group(1) == "sts" else f"other ({scope.group(1)})"), "", ""
    bucket, key = _bucket_and_key(environ)
    if not bucket:
        if method == "GET":
            return "ListBuckets", "", ""
        if method == "POST" and b"Action=" in _peek_body(environ):
            return "STS", "", ""
        return "other", "", ""
    if not key:
        subresource = next((name for name in _BUCKET_SUBRESOURCES if name in query), None)
        if subresource:
            named = _SUBRESOURCE_OPERATIONS.get((method, subresource))
            verb = method.title()
            return named or f"{verb}Bucket{subresource[0].upper()}{subresource[1:]}", bucket, ""
        if method == "GET" and query.get("list-type") == ["2"]:
            return "ListObjectsV2", bucket, ""
        simple = {
            "GET": "ListObjects",
            "HEAD": "HeadBucket",
            "PUT": "CreateBucket",
            "DELETE": "DeleteBucket",
        }
        return simple.get(method, "other"), bucket, ""
    copy = "HTTP_X_AMZ_COPY_SOURCE" in environ
    if method == "PUT":
        if "partNumber" in query and "uploadId" in query:
            operation = "UploadPartCopy" if copy else "UploadPart"
        elif "tagging" in query or "acl" in query:
            operation = "PutObjectTagging" if "tagging" in query else "PutObjectAcl"
        else:
            operation = "CopyObject" if copy else "PutObject"
    elif method == "POST":
        if "uploads" in query:
            operation = "CreateMultipartUpload"
        elif "uploadId" in query:
            operation = "CompleteMultipartUpload"
        else:
            operation = "other"
    elif method == "DELETE":
        operation = "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    elif method == "GET":
        operation = "ListParts" if "uploadId" in query else "GetObject"
    elif method == "HEAD":
        operation = "HeadObject"
    else:
        operation = "other"
    return operation, bucket, key


class CountingApp:
    """WSGI middleware counting requests by S3 operation, and which objects were written/read."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._traffic = Traffic()

    def reset(self) -> Traffic:
        """Start a new count; return what was counted since the last reset."""
        with self._lock:
            traffic, self._traffic = self._traffic, Traffic()
        return traffic

    def bytes_sent(self) -> int:
        """Request-body bytes read since the last reset, while requests are still arriving."""
        with self._lock:
            return self._traffic.bytes_sent

    def _count_bytes(self, count: int) -> None:
        with self._lock:
            self._traffic.bytes_sent += count

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        operation, bucket, key = classify(environ)
        environ["wsgi.input"] = CountingInput(environ["wsgi.input"], self._count_bytes)
        with self._lock:
            self._traffic.operations[operation] += 1

        def recording_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            code = int(status.split(" ", 1)[0])
            with self._lock:
                if code >= 400:
                    self._traffic.errors[f"{operation} {code}"] += 1
                elif operation in ("PutObject", "CompleteMultipartUpload", "CopyObject"):
                    self._traffic.written.add(f"{bucket}/{key}")
                elif operation == "GetObject":
                    self._traffic.read.add(f"{bucket}/{key}")
            return start_response(status, headers, exc_info)

        return self.app(environ, recording_start_response)


class CountingInput:
    """A request's input stream that reports each read's size as it happens."""

    def __init__(self, stream: Any, count: Callable[[int], None]) -> None:
        self._stream = stream
        self._count = count

    def read(self, *args: Any) -> bytes:
        data = self._stream.read(*args)
        self._count(len(data))
        return data

    def readline(self, *args: Any) -> bytes:
        data = self._stream.readline(*args)
        self._count(len(data))
        return data

    def readinto(self, buffer: Any) -> int | None:
        size = self._stream.readinto(buffer)
        self._count(size or 0)
        return size

    def __iter__(self) -> Iterator[bytes]:
        for line in self._stream:
            self._count(len(line))
            yield line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class QuietHandler(WSGIRequestHandler):
    """No access log: tens of thousands of lines would bury the results."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@contextmanager
def s3_server() -> Iterator[tuple[str, CountingApp]]:
    """moto's S3 (and STS) on a free loopback port, in a thread of this process."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = CountingApp(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="moto", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", app
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
