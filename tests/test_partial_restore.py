"""Restoring part of a backup: PATH... and --include/--exclude, what they list and fetch,
and what --delete may touch."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers import a_moment_apart, back_up, fetched_keys, make_tree, read_tree, run_script

import s3common
from s3common import Ass3Error, Connection, Selection

FILES = {
    "a.txt": b"top",
    "docs/report.odt": b"the report",
    "docs/report.odt.bak": b"old report",
    "docs/sub/deep.txt": b"deep",
    "docs-2019/old.txt": b"2019",
    "notes/todo.txt": b"todo",
}


def restore(
    conn: Connection, bucket: str, dest: Path, *paths: str, **options: Any
) -> s3common.Summary:
    rules = options.pop("rules", [])
    selection = Selection.parse(list(paths), rules)
    return s3common.restore(
        conn, "data", bucket=bucket, destination=str(dest), selection=selection, **options
    )


def listings(conn: Connection) -> list[dict[str, Any]]:
    """The parameters of every listing of the backup's data the client sends from now
    on (the listing of its run records, for the tree, is left out)."""
    sent: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: object) -> None:
        if not params.get("Prefix", "").startswith(".ass3/"):
            sent.append({name: params.get(name) for name in ("Prefix", "Delimiter")})

    for operation in ("ListObjectsV2", "ListObjectVersions"):
        conn.client.meta.events.register(f"provide-client-params.s3.{operation}", record)
    return sent


@pytest.fixture
def backed_up(conn: Connection, s3: object, bucket: str, tmp_path: Path) -> Path:
    root = make_tree(tmp_path / "src", FILES)
    back_up(conn, root, bucket)
    return root


@pytest.mark.slow
def test_one_file_of_a_5000_file_backup_costs_a_constant_handful_of_requests(
    conn: Connection, s3: object, bucket: str, tmp_path: Path
) -> None:
    """With a run record: the list of runs, the record and the one object. Without one:
    one listing of that key. Never a listing of the whole backup."""
    files = {f"d{index % 10}/f{index:04d}.txt": b"x%d" % index for index in range(5000)}
    root = make_tree(tmp_path / "src", files)
    back_up(conn, root, bucket)
    keys = fetched_keys(conn)
    summary = restore(
        conn, bucket, tmp_path / "x", "d3/f0123.txt", as_of=datetime.now(timezone.utc)
    )
    assert read_tree(tmp_path / "x" / "data") == {"d3/f0123.txt": b"x123"}
    assert (summary.transferred, summary.unchanged, summary.failures) == (1, 0, [])
    assert summary.requests == {"ListObjectsV2": 1, "GetBucketVersioning": 1, "GetObject": 2}
    assert [key for key in keys if key.startswith("data/")] == ["data/d3/f0123.txt"]
    assert sum(keys.values()) == 2  # the file, and the run record

    sent = listings(conn)
    summary = restore(conn, bucket, tmp_path / "y", "d3/f0123.txt")
    assert read_tree(tmp_path / "y" / "data") == {"d3/f0123.txt": b"x123"}
    # The path's listing and the file; then the runs' listing and the newest record,
    # which holds the folders and symlinks of the path (the tree).
    assert summary.requests == {"ListObjectsV2": 2, "GetObject": 2}
    assert sent == [{"Prefix": "data/d3/f0123.txt", "Delimiter": "/"}]


@pytest.mark.slow
def test_a_file_path_lists_only_that_key_and_a_folder_path_only_that_folder(
    conn: Connection, backed_up: Path, bucket: str, tmp_path: Path
) -> None:
    sent = listings(conn)
    summary = restore(conn, bucket, tmp_path / "one", "docs/report.odt")
    assert read_tree(tmp_path / "one" / "data") == {"docs/report.odt": b"the report"}
    assert sent == [{"Prefix": "data/docs/report.odt", "Delimiter": "/"}]
    assert (summary.transferred, summary.unchanged) == (1, 0)

    sent.clear()
    restore(conn, bucket, tmp_path / "folder", "docs/")
    assert sent == [{"Prefix": "data/docs/", "Delimiter": None}]
    expected = {rel: data for rel, data in FILES.items() if rel.startswith("docs/")}
    assert read_tree(tmp_path / "folder" / "data") == expected

    sent.clear()  # no slash: the probe sees the folder (docs-2019/ is not listed)
    restore(conn, bucket, tmp_path / "either", "docs")
    assert sent == [
        {"Prefix": "data/docs", "Delimiter": "/"},
        {"Prefix": "data/docs/", "Delimiter": None},
    ]
    assert read_tree(tmp_path / "either" / "data") == expected


@pytest.mark.slow
def test_several_paths_come_back_in_key_order_with_counts_of_only_those(
    conn: Connection, backed_up: Path, bucket: str, tmp_path: Path
) -> None:
    dest = tmp_path / "out"
    make_tree(dest / "data", {"a.txt": b"top", "docs/report.odt": b"the report"})
    summary = restore(conn, bucket, dest, "docs/report.odt", "a.txt", "notes", "docs/report.odt")
    assert (summary.transferred, summary.unchanged, summary.failures) == (1, 2, [])
    assert read_tree(dest / "data") == {
        "a.txt": b"top",
        "docs/report.odt": b"the report",
        "notes/todo.txt": b"todo",
    }


@pytest.mark.slow
def test_include_and_exclude_work_on_restores_as_on_backups(
    conn: Connection, backed_up: Path, bucket: str, tmp_path: Path
) -> None:
    rules = [("exclude", "*.bak"), ("exclude", "docs/sub/"), ("include", "docs/sub/deep.txt")]
    summary = restore(conn, bucket, tmp_path / "out", "docs", rules=rules)
    assert read_tree(tmp_path / "out" / "data") == {"docs/report.odt": b"the report"}
    assert (summary.transferred, summary.excluded) == (1, 2)
    summary = restore(conn, bucket, tmp_path / "all", rules=[("exclude", "/docs*")])
    assert sorted(read_tree(tmp_path / "all" / "data")) == ["a.txt", "notes/todo.txt"]
    with pytest.raises(Ass3Error, match="leave out all 3 files"):
        restore(conn, bucket, tmp_path / "none", "docs", rules=[("exclude", "*")])
    assert not (tmp_path / "none").exists()


@pytest.mark.slow
@pytest.mark.parametrize("with_record", [True, False], ids=["record", "listing"])
def test_a_path_that_names_nothing_is_an_error_naming_it(
    conn: Connection, backed_up: Path, bucket: str, tmp_path: Path, with_record: bool
) -> None:
    options: dict[str, Any] = {"as_of": datetime.now(timezone.utc)} if with_record else {}
    for paths, shown in [
        (("docs/report",), "'docs/report'"),
        (("a.txt/",), "'a.txt/'"),
        (("a.txt", "nope", "docs/x"), "'docs/x', 'nope'"),
    ]:
        with pytest.raises(Ass3Error, match="in backup 'data' ") as caught:
            restore(conn, bucket, tmp_path / "out", *paths, **options)
        assert shown in str(caught.value)
        assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_delete_with_paths_deletes_only_inside_them(
    conn: Connection, backed_up: Path, bucket: str, tmp_path: Path
) -> None:
    """Extras beside the named file, in a folder whose name merely begins like it, at
    the top and in other folders all stay; only those inside the named paths go."""
    outside = make_tree(tmp_path / "elsewhere", {"precious": b"keep"})
    dest = tmp_path / "out"
    extras = {
        "docs/extra.txt": b"in docs",
        "docs/sub/extra.txt": b"in docs/sub",
        "docs.bak/extra.txt": b"a folder named like docs",
        "docs-2019/extra.txt": b"another folder",
        "notes/extra.txt": b"in notes",
        "top-extra.txt": b"at the top",
    }
    make_tree(dest / "data", extras)
    os.symlink(outside, dest / "data" / "docs" / "link-out")
    summary = restore(
        conn,
        bucket,
        dest,
        "docs/sub/",
        "docs/report.odt",
        "notes/todo.txt",
        delete=True,
        force=True,
    )
    assert summary.deleted == 1 and summary.failures == []
    tree = read_tree(dest / "data")
    assert "docs/sub/extra.txt" not in tree
    for rel in set(extras) - {"docs/sub/extra.txt"}:
        assert tree[rel] == extras[rel]
    assert os.path.islink(dest / "data" / "docs" / "link-out")
    assert read_tree(outside) == {"precious": b"keep"}

    summary = restore(conn, bucket, dest, "docs", delete=True, force=True)
    assert summary.deleted == 1  # docs/extra.txt; docs.bak/ and the link stay
    assert "docs/extra.txt" not in read_tree(dest / "data")
    assert read_tree(dest / "data")["docs.bak/extra.txt"] == b"a folder named like docs"
    assert os.path.islink(dest / "data" / "docs" / "link-out")


@pytest.mark.slow
def test_the_delete_guard_weighs_only_the_selected_local_files(
    conn: Connection, backed_up: Path, bucket: str, tmp_path: Path
) -> None:
    dest = tmp_path / "out"
    make_tree(dest / "data", {f"other/{index}": b"." for index in range(20)})
    make_tree(dest / "data", {"notes/x": b"x", "notes/y": b"y"})
    summary = restore(conn, bucket, dest, "notes", delete=True)
    # Both local files of notes/ would go: over half, though 2 of all 22 would not be.
    assert summary.deleted == 0
    assert summary.failures and "2 of 2 would go" in summary.failures[0][1]
    summary = restore(conn, bucket, dest, "notes", delete=True, max_delete="2")
    assert summary.deleted == 2 and summary.failures == []
    assert len(read_tree(dest / "data" / "other")) == 20


@pytest.mark.slow
def test_a_killed_restores_temporary_of_a_named_file_is_removed_and_no_other(
    conn: Connection, backed_up: Path, bucket: str, tmp_path: Path
) -> None:
    dest = tmp_path / "out"
    leftovers = {
        "docs/.ass3-report.odt.abcdefgh.part": b"half",
        "docs/.ass3-report.odt.bak.abcdefgh.part": b"half of another",
    }
    make_tree(dest / "data", leftovers)
    restore(conn, bucket, dest, "docs/report.odt")
    assert read_tree(dest / "data") == {
        "docs/report.odt": b"the report",
        "docs/.ass3-report.odt.bak.abcdefgh.part": b"half of another",
    }


@pytest.mark.slow
def test_paths_without_records_pick_versions_by_time(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    s3common.ensure_bucket(conn, bucket)
    s3.put_object(Bucket=bucket, Key="data/docs/a", Body=b"v1")
    s3.put_object(Bucket=bucket, Key="data/docs2/b", Body=b"not asked for")
    between = a_moment_apart()
    s3.put_object(Bucket=bucket, Key="data/docs/a", Body=b"v2")
    s3.put_object(Bucket=bucket, Key="data/docs/late", Body=b"added after")
    sent = listings(conn)
    summary = restore(conn, bucket, tmp_path / "then", "docs/", as_of=between)
    assert "object versions" in summary.method
    assert read_tree(tmp_path / "then" / "data") == {"docs/a": b"v1"}
    assert sent[-1] == {"Prefix": "data/docs/", "Delimiter": None}
    with pytest.raises(Ass3Error, match="no file or folder 'docs/late' in backup 'data' as of"):
        restore(conn, bucket, tmp_path / "x", "docs/late", as_of=between)


@pytest.mark.slow
def test_the_script_restores_paths_given_after_options(
    script_env: dict[str, str], tmp_path: Path
) -> None:
    bucket = f"ass3-partial-{os.getpid()}"
    root = make_tree(tmp_path / "data", FILES)
    assert (
        run_script("ass3Backup.py", str(root), "--bucket", bucket, env=script_env).returncode == 0
    )
    dest = tmp_path / "out"
    done = run_script(
        "ass3Restore.py", "data", "--bucket", bucket, "--dest", str(dest), "notes",
        "docs/report.odt", "--exclude", "*.bak", env=script_env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert read_tree(dest / "data") == {
        "docs/report.odt": b"the report",
        "notes/todo.txt": b"todo",
    }
    assert "downloaded 2 files" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/etc/passwd", "PATH '/etc/passwd' is absolute"),
        ("../x", "PATH '../x' has '..'"),
        ("nope/", "no file or folder 'nope/' in backup 'data' now"),
    ],
)
def test_a_bad_path_is_one_line_and_exit_2_before_anything_is_written(
    script_env: dict[str, str], tmp_path: Path, path: str, message: str
) -> None:
    bucket = f"ass3-badpath-{os.getpid()}"
    root = make_tree(tmp_path / "data", {"a": b"a"})
    assert (
        run_script("ass3Backup.py", str(root), "--bucket", bucket, env=script_env).returncode == 0
    )
    dest = tmp_path / "out"
    done = run_script(
        "ass3Restore.py", "data", path, "--bucket", bucket, "--dest", str(dest), env=script_env
    )
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith(f"ass3Restore.py: error: {message}")
    assert not dest.exists()
