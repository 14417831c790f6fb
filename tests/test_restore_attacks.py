"""Restore into a hostile destination: nothing outside DEST/NAME is written or deleted.

An attacker who can write below DEST (but not choose DEST) plants symlinks at DEST/NAME,
below it, or swaps them in while the run is going; the swaps happen at deterministic
seams (a function of the tool's own, wrapped), never by sleeping. And a user's own file
that merely looks like one of the tool's temporaries is never taken for one.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import make_tree, read_tree, tree_state

import ass3Restore
import s3common
from ass3 import download, restore
from s3common import Connection

BACKUP = {"a": b"restored a", "sub/x": b"restored x"}


def upload(s3: Any, bucket: str, files: dict[str, bytes]) -> None:
    s3.create_bucket(Bucket=bucket)
    for rel, body in files.items():
        s3.put_object(Bucket=bucket, Key=f"data/{rel}", Body=body)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """Someone else's folder outside the destination, with names the backup also has."""
    return make_tree(
        tmp_path / "victim",
        {"a": b"victim a", "old": b"victim old", "own": b"victim own", "x": b"victim x"},
    )


def run_restore(conn: Connection, bucket: str, dest: Path, **options: Any) -> s3common.Summary:
    return s3common.restore(conn, "data", bucket=bucket, destination=str(dest), **options)


def swap_for_link(real: Path, target: Path) -> None:
    """Move the real folder aside (it stays inside the destination) and link its name away."""
    real.rename(real.with_name(real.name + ".real"))
    real.symlink_to(target, target_is_directory=True)


def wrap_once(
    monkeypatch: pytest.MonkeyPatch, owner: object, name: str, before: Callable[[], None]
) -> list[bool]:
    """Replace owner.name by a wrapper that runs `before` once, then the original."""
    original = getattr(owner, name)
    done: list[bool] = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not done:
            done.append(True)
            before()
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return done


# --- 1. DEST/NAME itself -------------------------------------------------------------------


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_symlink_at_dest_name_is_refused_before_anything_is_written(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path, victim: Path, dry_run: bool
) -> None:
    upload(s3, bucket, BACKUP)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "data").symlink_to(victim, target_is_directory=True)
    before = tree_state(tmp_path)
    with pytest.raises(s3common.Ass3Error, match="symlink") as refused:
        run_restore(conn, bucket, dest, delete=True, force=True, dry_run=dry_run)
    assert "\n" not in str(refused.value)
    assert str(dest / "data") in str(refused.value)
    assert tree_state(tmp_path) == before


def test_a_symlink_at_dest_name_is_one_line_and_exit_2_from_the_script(
    s3: Any, bucket: str, tmp_path: Path, victim: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    upload(s3, bucket, BACKUP)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "data").symlink_to(victim, target_is_directory=True)
    before = tree_state(tmp_path)
    code = ass3Restore.main(["data", "--bucket", bucket, "--dest", str(dest), "--delete"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "symlink" in err
    assert tree_state(tmp_path) == before


def test_a_file_at_dest_name_is_refused(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    upload(s3, bucket, BACKUP)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "data").write_bytes(b"a file of the user's")
    before = tree_state(tmp_path)
    with pytest.raises(s3common.Ass3Error, match="not a folder"):
        run_restore(conn, bucket, dest, delete=True, force=True)
    assert tree_state(tmp_path) == before


def test_dest_itself_may_be_a_symlink(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    """`--dest /data` where /data links to a mounted disk is the user's choice."""
    upload(s3, bucket, BACKUP)
    disk = tmp_path / "disk"
    disk.mkdir()
    (tmp_path / "link").symlink_to(disk, target_is_directory=True)
    summary = run_restore(conn, bucket, tmp_path / "link")
    assert summary.failures == []
    assert read_tree(disk / "data") == BACKUP


# --- 2. Below DEST/NAME --------------------------------------------------------------------


def test_a_symlinked_folder_below_dest_name_is_neither_written_nor_emptied(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path, victim: Path
) -> None:
    upload(s3, bucket, BACKUP)
    root = tmp_path / "dest" / "data"
    root.mkdir(parents=True)
    (root / "sub").symlink_to(victim, target_is_directory=True)
    before = tree_state(victim)
    summary = run_restore(conn, bucket, tmp_path / "dest", delete=True, force=True)
    assert [rel for rel, _ in summary.failures] == ["sub/x"]
    assert "symlink" in summary.failures[0][1]
    assert tree_state(victim) == before
    assert (root / "a").read_bytes() == BACKUP["a"]


@pytest.mark.parametrize("planted_at", ["sub", "."])
def test_a_folder_swapped_for_a_symlink_between_plan_and_delete_deletes_nothing_outside(
    conn: Connection,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    victim: Path,
    monkeypatch: pytest.MonkeyPatch,
    planted_at: str,
) -> None:
    """The scan saw real folders; before the extras go, one becomes a link to the victim.

    The deletion guard runs between the scan and the deletions: it is the seam.
    """
    upload(s3, bucket, BACKUP)
    root = make_tree(tmp_path / "dest" / "data", {"sub/old": b"extra", "old": b"extra"})
    swapped = root if planted_at == "." else root / "sub"
    (victim / "sub").symlink_to(victim, target_is_directory=True)  # victim/sub/old exists too
    before = tree_state(victim)
    ran = wrap_once(
        monkeypatch, restore, "deletion_refusal", lambda: swap_for_link(swapped, victim)
    )
    run_restore(conn, bucket, tmp_path / "dest", delete=True, force=True)
    assert ran
    assert tree_state(victim) == before


@pytest.mark.parametrize("planted_at", ["sub", "."])
def test_a_folder_swapped_for_a_symlink_during_a_download_gets_nothing_written_through_it(
    conn: Connection,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    victim: Path,
    monkeypatch: pytest.MonkeyPatch,
    planted_at: str,
) -> None:
    """The folder was checked; before the temporary file is made, it becomes a link."""
    upload(s3, bucket, {"sub/x": BACKUP["sub/x"]})
    root = tmp_path / "dest" / "data"
    (root / "sub").mkdir(parents=True)
    swapped = root if planted_at == "." else root / "sub"
    (victim / "sub").symlink_to(victim, target_is_directory=True)
    before = tree_state(victim)
    ran = wrap_once(
        monkeypatch, download, "_write_verified", lambda: swap_for_link(swapped, victim)
    )
    run_restore(conn, bucket, tmp_path / "dest")
    assert ran
    assert tree_state(victim) == before
    moved = swapped.with_name(swapped.name + ".real")
    assert read_tree(moved) == (
        {"x": BACKUP["sub/x"]} if planted_at == "sub" else {"sub/x": BACKUP["sub/x"]}
    )


def test_symlinks_to_files_outside_are_neither_written_through_nor_deleted_through(
    conn: Connection,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    victim: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A link at a restored file's name, a link that is an extra, and an extra file that
    becomes a link to the victim's file between the plan and the deletions."""
    upload(s3, bucket, BACKUP)
    root = make_tree(tmp_path / "dest" / "data", {"old": b"extra", "sub/x": b"other x"})
    (root / "a").symlink_to(victim / "a")
    (root / "link").symlink_to(victim / "own")

    def plant() -> None:
        (root / "old").unlink()
        (root / "old").symlink_to(victim / "old")

    before = tree_state(victim)
    ran = wrap_once(monkeypatch, restore, "deletion_refusal", plant)
    summary = run_restore(conn, bucket, tmp_path / "dest", delete=True, force=True)
    assert ran and summary.failures == []
    assert tree_state(victim) == before
    assert read_tree(root) == BACKUP


# --- 3. Files that look like the tool's temporaries ----------------------------------------

LOOKALIKES = {
    "sub/.ass3-x1y2.part": b"mine",  # the old temporary pattern
    "sub/.ass3-notes.part": b"mine",
    "sub/.ass3-zz.k3j4h5g6.part": b"mine",  # the new pattern, for no file of the backup
    "sub/.ass3-.ass3-x.k3j4h5g6.part.part": b"mine",
}


def test_a_users_files_named_like_temporaries_survive_a_restore(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    upload(s3, bucket, BACKUP)
    make_tree(tmp_path / "dest" / "data", LOOKALIKES)
    summary = run_restore(conn, bucket, tmp_path / "dest")
    assert summary.failures == [] and summary.deleted == 0
    assert read_tree(tmp_path / "dest" / "data") == {**BACKUP, **LOOKALIKES}


def test_with_delete_they_are_ordinary_extras_under_the_guards(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    upload(s3, bucket, BACKUP)
    root = make_tree(tmp_path / "dest" / "data", LOOKALIKES)

    refused = run_restore(conn, bucket, tmp_path / "dest", delete=True, max_delete="0")
    assert read_tree(root) == {**BACKUP, **LOOKALIKES}
    count = len(LOOKALIKES)
    reason = f"{count} of {count} would go, more than --max-delete 0; add --force"
    assert refused.failures == [("--delete", f"refused to delete {count} files: {reason}")]

    caplog.set_level(logging.INFO, logger="ass3")
    allowed = run_restore(conn, bucket, tmp_path / "dest", delete=True, force=True)
    assert allowed.failures == [] and allowed.deleted == len(LOOKALIKES)
    assert read_tree(root) == BACKUP
    deleted = {r.getMessage() for r in caplog.records if "not in the backup" in r.getMessage()}
    assert deleted == {f"deleted {rel} (not in the backup)" for rel in LOOKALIKES}


def test_leftovers_of_a_killed_restore_are_removed_and_said(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Temporaries named for a file of the backup in their folder are the tool's own."""
    upload(s3, bucket, {**BACKUP, "sub/same": b"same"})
    leftovers = {"sub/.ass3-x.k3j4h5g6.part": b"half", ".ass3-a.0a1b2c3d.part": b"half"}
    root = make_tree(tmp_path / "dest" / "data", {**leftovers, "sub/same": b"same"})
    (root / "sub" / ".ass3-same.zzzzzzzz.part").write_bytes(b"half")  # its file is unchanged
    caplog.set_level(logging.INFO, logger="ass3")
    summary = run_restore(conn, bucket, tmp_path / "dest")
    assert summary.failures == [] and summary.deleted == 0
    assert read_tree(root) == {**BACKUP, "sub/same": b"same"}
    said = [r.getMessage() for r in caplog.records if "interrupted restore" in r.getMessage()]
    assert len(said) == 3


def test_a_temporary_the_tool_made_is_recognised_by_the_next_restore(
    conn: Connection,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The temporary is kept as the tool named it (a link made while it is verified), as a
    killed run would leave it; the next restore removes it and nothing else."""
    upload(s3, bucket, BACKUP)
    root = tmp_path / "dest" / "data"
    kept = tmp_path / "kept"
    kept.mkdir()

    def keep() -> None:
        for name in os.listdir(root / "sub"):
            os.link(root / "sub" / name, kept / name)

    original = download._verify

    def verify(conn: Connection, bucket: str, remote: Any, *args: Any) -> str | None:
        if remote.rel == "sub/x":
            keep()
        return original(conn, bucket, remote, *args)

    monkeypatch.setattr(download, "_verify", verify)
    run_restore(conn, bucket, tmp_path / "dest")
    monkeypatch.setattr(download, "_verify", original)
    [name] = os.listdir(kept)
    assert name.startswith(".ass3-x.") and name.endswith(".part")
    os.link(kept / name, root / "sub" / name)
    (root / "sub" / "x").unlink()
    summary = run_restore(conn, bucket, tmp_path / "dest")
    assert summary.failures == []
    assert read_tree(root) == BACKUP


def test_long_names_restore_and_their_leftovers_are_recognised(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    """A name near 255 bytes leaves no room for a marker: its temporary carries a digest."""
    from ass3.names import temporary_stem

    long = "é" * 127  # 254 bytes
    upload(s3, bucket, {long: b"long"})
    root = tmp_path / "dest" / "data"
    root.mkdir(parents=True)
    leftover = f".ass3-{temporary_stem(long)}.abcdefgh.part"
    (root / leftover).write_bytes(b"half")
    summary = run_restore(conn, bucket, tmp_path / "dest")
    assert summary.failures == []
    assert read_tree(root) == {long: b"long"}


# --- The rules, on literals ----------------------------------------------------------------


def test_temporary_names_say_which_file_they_stand_in_for() -> None:
    from ass3.names import temporary_stem, temporary_stem_of

    assert temporary_stem("a.txt") == "a.txt"
    assert temporary_stem_of(".ass3-a.txt.k3j4h5g6.part") == "a.txt"
    assert temporary_stem_of(".ass3-.ass3-x.k3j4h5g6.part.k3j4h5g6.part") == ".ass3-x.k3j4h5g6.part"
    for name in (
        ".ass3-x1y2.part",
        ".ass3-notes.part",
        ".ass3-.k3j4h5g6.part",
        ".ass3-a.K3J4H5G6.part",
        ".ass3-a.k3j4h5g.part",
        ".ass3-a.k3j4h5g6.part.x",
        "a.ass3-b.k3j4h5g6.part",
        "a.txt",
    ):
        assert temporary_stem_of(name) is None, name
    long = "x" * 250
    assert temporary_stem(long) != long
    assert len((".ass3-" + temporary_stem(long) + ".k3j4h5g6.part").encode()) <= 255
    assert temporary_stem_of(f".ass3-{temporary_stem(long)}.k3j4h5g6.part") == temporary_stem(long)
    biggest = "y" * (255 - len(".ass3-.k3j4h5g6.part"))
    assert temporary_stem(biggest) == biggest


def test_local_only_files_are_sorted_into_leftovers_and_extras() -> None:
    from datetime import datetime, timezone

    from ass3.model import EXTRA, NEW, UNCHANGED, LocalFile, RemoteObject, Step
    from ass3.plan import sort_local_only

    def local(rel: str) -> LocalFile:
        return LocalFile(rel, "/dest/data/" + rel, 1, 0, 0o644)

    def remote(rel: str) -> RemoteObject:
        return RemoteObject(
            rel, "data/" + rel, 1, "etag", datetime(2024, 1, 1, tzinfo=timezone.utc)
        )

    steps = [
        Step("!b", remote("!b"), None, NEW),
        Step(".ass3-!b.aaaaaaaa.part", None, local(".ass3-!b.aaaaaaaa.part"), EXTRA),
        Step(".ass3-c.aaaaaaaa.part", None, local(".ass3-c.aaaaaaaa.part"), EXTRA),
        Step(".ass3-gone.aaaaaaaa.part", None, local(".ass3-gone.aaaaaaaa.part"), EXTRA),
        Step(".ass3-x1y2.part", None, local(".ass3-x1y2.part"), EXTRA),
        Step("c", remote("c"), local("c"), UNCHANGED),
        Step("d/.ass3-c.aaaaaaaa.part", None, local("d/.ass3-c.aaaaaaaa.part"), EXTRA),
        Step("d/e/.ass3-f.aaaaaaaa.part", None, local("d/e/.ass3-f.aaaaaaaa.part"), EXTRA),
        Step("d/e/f", remote("d/e/f"), None, NEW),
        Step("d/extra", None, local("d/extra"), EXTRA),
        Step("d/g/.ass3-h.aaaaaaaa.part", remote("d/g/.ass3-h.aaaaaaaa.part"), None, NEW),
        Step("d/g/h", remote("d/g/h"), None, NEW),
        Step("dd/.ass3-x.aaaaaaaa.part", None, local("dd/.ass3-x.aaaaaaaa.part"), EXTRA),
        Step("e/x", remote("e/x"), None, NEW),
    ]
    extras: list[Step] = []
    leftovers: list[Step] = []
    passed = list(sort_local_only(iter(steps), extras, leftovers))
    assert [step.rel for step in passed] == [
        "!b",
        "c",
        "d/e/f",
        "d/g/.ass3-h.aaaaaaaa.part",
        "d/g/h",
        "e/x",
    ]
    assert sorted(step.rel for step in leftovers) == [
        ".ass3-!b.aaaaaaaa.part",
        ".ass3-c.aaaaaaaa.part",
        "d/e/.ass3-f.aaaaaaaa.part",
    ]
    assert sorted(step.rel for step in extras) == [
        ".ass3-gone.aaaaaaaa.part",
        ".ass3-x1y2.part",
        "d/.ass3-c.aaaaaaaa.part",
        "d/extra",
        "dd/.ass3-x.aaaaaaaa.part",
    ]


def test_a_same_size_file_swapped_for_a_fifo_does_not_hang_the_restore(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Restore compares a local file of the object's size by its MD5; a FIFO put in its
    place after the walk would block that read forever. The object takes its place."""
    upload(s3, bucket, {"f": b"remote"})
    dest = tmp_path / "dest"
    make_tree(dest / "data", {"f": b"local!"})  # same size, other content
    real = restore.restore_step

    def fifo_first(*args: Any, **kwargs: Any) -> Any:  # after the walk, before the compare
        path = dest / "data" / "f"
        if path.is_file():
            path.unlink()
            os.mkfifo(path)
        return real(*args, **kwargs)

    monkeypatch.setattr(restore, "restore_step", fifo_first)
    result: list[s3common.Summary] = []
    worker = threading.Thread(target=lambda: result.append(run_restore(conn, bucket, dest)))
    worker.start()
    worker.join(timeout=60)
    if worker.is_alive():  # unblock the read so the test run can end, then fail
        with open(dest / "data" / "f", "wb"):
            pass
        worker.join()
        pytest.fail("the restore blocked on a FIFO")
    (summary,) = result
    assert (summary.failures, summary.transferred) == ([], 1)
    assert read_tree(dest / "data") == {"f": b"remote"}


def test_files_the_newest_record_lists_but_the_listing_lacks_are_said(
    conn: Connection, s3: Any, bucket: str, tmp_path: Path
) -> None:
    """A server whose listing skips keys (s3rver loses some at page boundaries) or an
    object deleted behind the tool's back: the restore of the current objects says how
    many files the newest run record has that the listing did not show."""
    root = make_tree(tmp_path / "src", {"a": b"a", "b": b"b", "c": b"c"})
    first = s3common.backup(conn, str(root), bucket=bucket, prefix="data")
    assert first.failures == [] and first.run_id
    s3.delete_object(Bucket=bucket, Key="data/b")
    summary = run_restore(conn, bucket, tmp_path / "dest")
    assert summary.failures == [] and summary.transferred == 2
    assert summary.warnings == [
        (
            "data",
            "the newest run record lists 1 more file than the bucket listed now; deleted "
            "since, or not listed by the server",
        )
    ]
    whole = run_restore(conn, bucket, tmp_path / "dest2", run_id=first.run_id)
    assert whole.warnings == [] and read_tree(tmp_path / "dest2" / "data")["b"] == b"b"
