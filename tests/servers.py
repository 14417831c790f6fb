"""S3 servers other than moto for the end-to-end tests: s3rver, an independent implementation.

s3rver (npm, pinned in .ci/s3rver/package.json) is installed with
`npm ci --prefix .ci/s3rver`. Without it its tests skip, unless ASS3_REQUIRE_S3RVER=1
(set by .ci/run), which turns the skip into a failure so CI never skips them silently.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import PROJECT

S3RVER = PROJECT / ".ci" / "s3rver" / "node_modules" / ".bin" / "s3rver"
# Read once at import: the autouse aws_env fixture clears ASS3_* variables for each test.
S3RVER_REQUIRED = os.environ.get("ASS3_REQUIRE_S3RVER") == "1"
S3RVER_CREDENTIALS = ("S3RVER", "S3RVER")
_START_TIMEOUT = 20.0


@dataclass(frozen=True)
class Endpoint:
    """A running S3 server the scripts can be pointed at."""

    url: str
    access_key: str
    secret_key: str


def free_port() -> int:
    """A loopback port nothing listens on right now (another process may still take it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _answers_as(url: str, marker: str) -> bool:
    """Whether the server at `url` lists the bucket `marker`: it is ours, and it is up."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return marker in response.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def running_s3rver(data_dir: Path) -> Iterator[Endpoint]:
    """s3rver on a free loopback port, storing its buckets in `data_dir`; stopped after.

    It is known to be up, and to be ours rather than another server that took the port
    first, when its ListBuckets names a bucket folder made beforehand for that purpose.
    A start that loses the port to another process is tried again on another port.
    NODE_OPTIONS: s3rver 3.7.1 makes continuation tokens with DES, which Node 17+ only
    offers through OpenSSL's legacy provider; without it any listing of more than 1000
    keys answers 500.
    """
    marker = f"started-{uuid.uuid4().hex[:16]}"
    (data_dir / marker).mkdir(parents=True)
    log_path = data_dir.parent / f"{data_dir.name}.log"
    env = dict(os.environ, NODE_OPTIONS="--openssl-legacy-provider")
    for _attempt in range(3):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [str(S3RVER), "-d", str(data_dir), "-a", "127.0.0.1", "-p", str(port), "--silent"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            if _answers_as(url, marker):
                break
            time.sleep(0.1)
        if process.poll() is None and _answers_as(url, marker):
            (data_dir / marker).rmdir()
            try:
                yield Endpoint(url, *S3RVER_CREDENTIALS)
            finally:
                _stop(process)
            return
        _stop(process)
    raise RuntimeError(f"s3rver did not start; its output:\n{log_path.read_text()}")


def require_s3rver() -> None:
    """Skip (or, when CI requires s3rver, fail) the test if s3rver is not installed."""
    if not S3RVER.exists():
        message = f"s3rver is not installed ({S3RVER}): run `npm ci --prefix .ci/s3rver`"
        if S3RVER_REQUIRED:
            pytest.fail(message + " (ASS3_REQUIRE_S3RVER=1)", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def s3rver_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    """One s3rver for the whole session, in a temporary data folder."""
    require_s3rver()
    with running_s3rver(tmp_path_factory.mktemp("s3rver") / "data") as endpoint:
        yield endpoint


def script_env_for(endpoint: Endpoint) -> dict[str, str]:
    """The environment a user would have, pointed at `endpoint` with its credentials.

    Called inside a test, so os.environ is already the one the aws_env fixture cleaned.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "ASS3_", "MOTO_"))
    }
    env.update(
        AWS_ACCESS_KEY_ID=endpoint.access_key,
        AWS_SECRET_ACCESS_KEY=endpoint.secret_key,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.environ["AWS_CONFIG_FILE"],
        AWS_SHARED_CREDENTIALS_FILE=os.environ["AWS_SHARED_CREDENTIALS_FILE"],
        AWS_ENDPOINT_URL=endpoint.url,
        PYTHONIOENCODING="utf-8",
    )
    return env
