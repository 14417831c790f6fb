"""Every exit code of both scripts, each with one clear line on stderr and no traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from helpers import Hook, make_tree, run_script

import ass3Backup
import ass3Restore

MAINS: dict[str, Callable[[list[str]], int]] = {
    "backup": ass3Backup.main,
    "restore": ass3Restore.main,
}
OTHER_ACCOUNT = "111111111111"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A small folder; bad.txt is the file the failure tests pick on."""
    return make_tree(tmp_path / "data", {"a.txt": b"a", "sub/b.txt": b"bb", "bad.txt": b"ccc"})


def argv(script: str, data: Path, *options: str) -> list[str]:
    """Arguments for an ordinary run: back up `data`, or restore its backup beside it."""
    if script == "backup":
        return [str(data), *options]
    return [data.name, "--dest", str(data.parent / "restored"), *options]


def error_line(stderr: str) -> str:
    """The only line on stderr: a stopped run must say why in one line, no traceback."""
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def usage_error_line(stderr: str) -> str:
    """A bad option: one line, with the prefix of every other error and a hint to --help,
    not argparse's usage block."""
    line = error_line(stderr)
    assert line.startswith(("ass3Backup.py: error: ", "ass3Restore.py: error: ")), line
    assert line.endswith(" --help)"), line
    return line


def client_error(code: str, operation: str, status: int = 403) -> ClientError:
    """The error botocore raises when S3 answers `code`, to inject without a real server."""
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )


# --- 2: usage errors, found before any request ------------------------------------------------


@pytest.mark.parametrize(
    ("is_file", "message"),
    [(False, "no such directory"), (True, "not a directory")],
    ids=["missing", "file"],
)
def test_backup_of_a_non_directory_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], is_file: bool, message: str
) -> None:
    path = tmp_path / "nothing"
    if is_file:
        path.write_bytes(b"x")
    assert ass3Backup.main([str(path), "--bucket", "some-bucket"]) == 2
    assert error_line(capsys.readouterr().err) == f"ass3Backup.py: error: {path}: {message}"


@pytest.mark.parametrize(
    ("script", "message"),
    [("backup", "DIR is required (or use --list or --try)"), ("restore", "NAME is required")],
)
def test_missing_positional_argument_exits_2(
    capsys: pytest.CaptureFixture[str], script: str, message: str
) -> None:
    with pytest.raises(SystemExit) as stopped:
        MAINS[script](["--bucket", "some-bucket"])
    assert stopped.value.code == 2
    assert message in usage_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("script", MAINS)
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--workers", "0"], "argument --workers: must be at least 1: 0"),
        (["--workers", "many"], "argument --workers: not a whole number: 'many'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--multipart-chunksize", "8XB"], "argument --multipart-chunksize: not a size"),
        (["--max-delete", "200%"], "use a count or a percentage"),
    ],
    ids=["workers-0", "workers-word", "bogus", "size", "max-delete"],
)
def test_bad_option_exits_2(
    data: Path,
    capsys: pytest.CaptureFixture[str],
    script: str,
    options: list[str],
    message: str,
) -> None:
    with pytest.raises(SystemExit) as stopped:
        MAINS[script](argv(script, data, *options))
    assert stopped.value.code == 2
    assert message in usage_error_line(capsys.readouterr().err)


@pytest.mark.usefixtures("s3")
@pytest.mark.parametrize("script", MAINS)
def test_invalid_bucket_name_exits_2_without_a_request(
    data: Path, capsys: pytest.CaptureFixture[str], hook: Hook, script: str
) -> None:
    sent: list[str] = []
    hook("before-send", lambda event_name, **_: sent.append(event_name))
    assert MAINS[script](argv(script, data, "--bucket", "Bad_Name")) == 2
    assert "invalid bucket name 'Bad_Name'" in error_line(capsys.readouterr().err)
    assert sent == []


@pytest.mark.parametrize("script", MAINS)
def test_no_credentials_exits_2(
    data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], script: str
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    # No moto here (it would supply keys): should a request slip out, it goes nowhere.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    assert MAINS[script](argv(script, data, "--bucket", "some-bucket")) == 2
    line = error_line(capsys.readouterr().err)
    assert "no AWS credentials" in line
    assert "AWS_ACCESS_KEY_ID" in line


@pytest.mark.slow
@pytest.mark.parametrize("script", ["ass3Backup.py", "ass3Restore.py"])
def test_unreachable_endpoint_exits_2_naming_the_url(
    data: Path, script_env: dict[str, str], script: str
) -> None:
    env = dict(script_env, AWS_ENDPOINT_URL="http://127.0.0.1:1", AWS_MAX_ATTEMPTS="1")
    kind = "backup" if script == "ass3Backup.py" else "restore"
    result = run_script(script, *argv(kind, data, "--bucket", "some-bucket"), env=env)
    assert result.returncode == 2
    line = error_line(result.stderr)
    assert "cannot reach" in line
    assert "http://127.0.0.1:1" in line


@pytest.mark.slow
@pytest.mark.usefixtures("s3")
@pytest.mark.parametrize("script", MAINS)
def test_access_denied_exits_2(
    data: Path, bucket: str, capsys: pytest.CaptureFixture[str], hook: Hook, script: str
) -> None:
    def deny(**_: Any) -> None:
        raise client_error("AccessDenied", "ListObjectsV2")

    hook("before-call.s3.ListObjectsV2", deny)
    assert MAINS[script](argv(script, data, "--bucket", bucket)) == 2
    line = error_line(capsys.readouterr().err)
    assert "access denied" in line
    assert f"s3://{bucket}" in line


@pytest.mark.slow
def test_bucket_of_another_account_exits_2_and_gets_nothing(
    s3: Any,
    data: Path,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MOTO_ACCOUNT_ID", OTHER_ACCOUNT)
    s3.create_bucket(Bucket=bucket)
    monkeypatch.delenv("MOTO_ACCOUNT_ID")

    assert ass3Backup.main([str(data), "--bucket", bucket]) == 2
    line = error_line(capsys.readouterr().err)
    assert bucket in line
    assert "another" in line

    monkeypatch.setenv("MOTO_ACCOUNT_ID", OTHER_ACCOUNT)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


@pytest.mark.slow
@pytest.mark.usefixtures("s3")
def test_restore_of_unknown_backup_exits_2_listing_the_backups(
    data: Path, bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("alpha", "beta"):
        assert ass3Backup.main([str(data), "--bucket", bucket, "--prefix", name]) == 0
    capsys.readouterr()

    dest = data.parent / "restored"
    assert ass3Restore.main(["gamma", "--bucket", bucket, "--dest", str(dest)]) == 2
    line = error_line(capsys.readouterr().err)
    assert "'gamma'" in line
    assert "alpha, beta" in line
    assert not dest.exists()


@pytest.mark.slow
@pytest.mark.usefixtures("s3")
@pytest.mark.parametrize("script", MAINS)
def test_list_of_unknown_backup_exits_2(
    data: Path, bucket: str, capsys: pytest.CaptureFixture[str], script: str
) -> None:
    assert ass3Backup.main([str(data), "--bucket", bucket]) == 0
    capsys.readouterr()
    assert MAINS[script](["--list", "gamma", "--bucket", bucket]) == 2
    assert "'gamma'" in error_line(capsys.readouterr().err)


@pytest.mark.slow
@pytest.mark.usefixtures("s3")
def test_restore_from_unknown_bucket_exits_2(
    data: Path, bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ass3Restore.main(argv("restore", data, "--bucket", bucket)) == 2
    assert f"s3://{bucket} does not exist" in error_line(capsys.readouterr().err)


# --- 130: interrupted -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("s3")
@pytest.mark.parametrize(
    ("script", "step"), [("backup", "ass3.scan.scan_tree"), ("restore", "ass3.remote.list_remote")]
)
def test_ctrl_c_exits_130(
    data: Path,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    script: str,
    step: str,
) -> None:
    def interrupt(*_: Any, **__: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(step, interrupt)
    assert MAINS[script](argv(script, data, "--bucket", bucket)) == 130
    assert error_line(capsys.readouterr().err) == f"ass3{script.title()}.py: interrupted"


# --- 1: some files failed, the others were transferred ----------------------------------------


@pytest.mark.slow
def test_one_failing_file_exits_1_and_the_others_are_uploaded(
    s3: Any, data: Path, bucket: str, capsys: pytest.CaptureFixture[str], hook: Hook
) -> None:
    def fail_bad_txt(params: dict[str, Any], **_: Any) -> None:
        if params["Key"].endswith("/bad.txt"):
            raise client_error("InternalError", "PutObject", status=500)

    hook("before-parameter-build.s3.PutObject", fail_bad_txt)
    assert ass3Backup.main([str(data), "--bucket", bucket]) == 1
    captured = capsys.readouterr()
    line = error_line(captured.err)
    assert line.startswith("failed: bad.txt: ")
    assert "InternalError" in line
    assert "uploaded 2 files" in captured.out
    assert "failed 1 " in captured.out
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="data/")["Contents"]
    assert sorted(item["Key"] for item in listed) == ["data/a.txt", "data/sub/b.txt"]


@pytest.mark.parametrize("script", sorted(MAINS))
def test_help_prints_and_exits_0(script: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        MAINS[script](["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ") and "--max-delete" in out and "default 50%" in out
