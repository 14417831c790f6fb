"""Fixtures shared by every test: a clean fake AWS environment, moto, and a moto server."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.retries.standard import ExponentialBackoff
from helpers import Hook
from hypothesis import HealthCheck, settings
from moto import mock_aws
from moto.server import ThreadedMotoServer
from servers import s3rver_endpoint, seaweedfs_endpoint  # noqa: F401  (fixtures: other S3 servers)

import s3common
from ass3 import connection

# The machine running the tests may be busy (CI on two shared cores): a slow example is
# not a failure. Hypothesis's 200 ms deadline would make the suite flaky there.
settings.register_profile(
    "shared-machine", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("shared-machine")

# Small enough that a test file of a few MiB goes multipart (S3's minimum part is 5 MiB).
TEST_PART_SIZE = 5 * s3common.MiB


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Fake credentials, and nothing from the developer's shell or ~/.aws can leak in.

    An AWS_ENDPOINT_URL left in a shell would otherwise send tests to a real endpoint.
    """
    for name in list(os.environ):
        if name.startswith(("AWS_", "ASS3_", "MOTO_")):
            monkeypatch.delenv(name)
    empty = tmp_path_factory.mktemp("aws-config")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty / "credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # The state cache goes to a folder of the test's own, never the developer's ~/.cache.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def s3() -> Iterator[object]:
    """An in-process moto S3 client."""
    with mock_aws():
        yield boto3.client("s3", region_name="us-east-1")


@pytest.fixture
def conn(s3: object) -> s3common.Connection:
    """A Connection on moto whose multipart threshold is small enough for tests."""
    return s3common.Connection(
        workers=4, multipart_threshold=TEST_PART_SIZE, multipart_chunksize=TEST_PART_SIZE
    )


@pytest.fixture
def bucket() -> str:
    return f"ass3-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto S3 server over real HTTP on a free loopback port, for the scripts."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def server(moto_endpoint: str) -> Any:
    """A client on the moto server, to watch and check what the scripts do there."""
    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def script_env(moto_endpoint: str) -> dict[str, str]:
    """The environment a user would have, pointed at the moto server."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "ASS3_", "MOTO_"))
    }
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.environ["AWS_CONFIG_FILE"],
        AWS_SHARED_CREDENTIALS_FILE=os.environ["AWS_SHARED_CREDENTIALS_FILE"],
        AWS_ENDPOINT_URL=moto_endpoint,
        PYTHONIOENCODING="utf-8",
    )
    return env


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch) -> Hook:
    """Register a botocore event handler first on every client the tool creates.

    main() builds its own Connection, so a handler can only be attached as each
    client is made.
    """
    handlers: list[tuple[str, Callable[..., Any]]] = []
    make_client = connection.Connection._client

    def client_with_handlers(self: connection.Connection, service: str) -> Any:
        client = make_client(self, service)
        for event, handler in handlers:
            client.meta.events.register_first(event, handler)
        return client

    monkeypatch.setattr(connection.Connection, "_client", client_with_handlers)
    return lambda event, handler: handlers.append((event, handler))


@pytest.fixture
def instant_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore retries at once, so a test of five attempts takes no seconds."""
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0)


@pytest.fixture
def sigint_raises() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt here as at a terminal, even when the test run
    started with SIGINT ignored (a background job of a non-interactive shell does)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that needs a moto backend or an S3 server is slow: setting up moto alone takes
    about half a second. `pytest -m "not slow"` then runs the rules tested on literals."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        servers = {"moto_endpoint", "s3rver_endpoint", "seaweedfs_endpoint"}
        if {"s3", "conn", "script_env", *servers} & fixtures:
            item.add_marker(pytest.mark.slow)
