"""`ass3Backup.py --try [DIR]`: the whole tool on a throwaway S3 server, in one command.

It starts moto's S3 server on a free port of 127.0.0.1 with its access log off, runs
the two scripts against it exactly as a user would (a backup, the same backup again,
a restore, --list), checks that the restored tree is the one backed up, and stops
the server. Nothing is left behind but what the scripts print.
"""

from __future__ import annotations

import filecmp
import importlib.util
import logging
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from ass3.model import Ass3Error

TRIAL_BUCKET = "ass3-trial"

# A small tree with what a backup meets: nested folders, an empty file, a name with
# spaces and accents, and a file big enough to go up in parts.
SAMPLE_FILES = {
    "notes/todo.txt": b"buy milk\nback up the laptop\n",
    "notes/caf\u00e9 menu.txt": b"espresso 2.00\n",
    "photos/2026/beach.raw": bytes(range(256)) * (40 * 1024),  # 10 MiB
    "empty.txt": b"",
}


@contextmanager
def _local_s3_server() -> Iterator[str]:
    """moto's S3 server on a free loopback port, quiet; its endpoint URL."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as error:
        raise Ass3Error(
            "the trial runs a local S3 server from moto, which is not installed: "
            "pip install 'moto[server]' (or pip install -r requirements-dev.txt)"
        ) from error
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def _script(module: str) -> str:
    """The path of ass3Backup.py or ass3Restore.py, from a checkout or installed."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise Ass3Error(f"cannot find {module}.py to run")
    return spec.origin


def _write_sample(root: str) -> None:
    for rel, content in SAMPLE_FILES.items():
        path = os.path.join(root, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as out:
            out.write(content)


def _same_trees(left: str, right: str) -> tuple[int, list[str]]:
    """How many files the two trees share byte for byte, and which ones differ."""
    same, different = 0, []
    for folder, _, files in os.walk(left):
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            rel = os.path.relpath(path, left)
            other = os.path.join(right, rel)
            if os.path.isfile(other) and filecmp.cmp(path, other, shallow=False):
                same += 1
            else:
                different.append(rel)
    return same, different


def run_trial(directory: str | None) -> int:
    """Back up DIR (or a sample tree) to a throwaway server, restore it, compare."""
    with tempfile.TemporaryDirectory(prefix="ass3-trial-") as scratch, _local_s3_server() as url:
        if directory is None:
            directory = os.path.join(scratch, "sample")
            _write_sample(directory)
        source = os.path.abspath(directory)
        name = os.path.basename(source.rstrip(os.sep))
        restored = os.path.join(scratch, "restored")
        env = {
            **{key: value for key, value in os.environ.items() if not key.startswith("AWS_")},
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": "trial",
            "AWS_SECRET_ACCESS_KEY": "trial",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.path.join(scratch, "no-config"),
            "AWS_SHARED_CREDENTIALS_FILE": os.path.join(scratch, "no-credentials"),
            "XDG_CACHE_HOME": os.path.join(scratch, "cache"),
        }
        print(f"a local S3 server from moto is listening on {url} (stopped at the end)\n")
        backup, restore = _script("ass3Backup"), _script("ass3Restore")
        bucket = ["--bucket", TRIAL_BUCKET]
        steps = [
            ("back up", [backup, source, *bucket]),
            ("back up again: nothing changed, nothing is sent", [backup, source, *bucket]),
            ("restore", [restore, name, *bucket, "--dest", restored]),
            ("what the bucket holds", [restore, "--list", *bucket]),
        ]
        for title, (script, *options) in steps:
            print(f"# {title}\n$ {shlex.join([os.path.basename(script), *options])}", flush=True)
            done = subprocess.run([sys.executable, script, *options], env=env, check=False)
            print(flush=True)
            if done.returncode not in (0, 1):
                return done.returncode
        same, different = _same_trees(source, os.path.join(restored, name))
        if different:
            print(f"the restore differs from {source} in {len(different)} files: {different[:5]}")
            return 1
        print(f"the restored tree is identical to {source}: {same} files compared byte for byte")
        print("to use the tool for real, see the README: Back up and restore")
    return 0
