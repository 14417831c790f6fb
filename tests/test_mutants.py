"""Rules that mutation testing found unpinned: each test here fails when its rule is undone.

The reserved bucket prefixes and suffixes, the 1024-byte key limit, the room a temporary's
name leaves, the exact shape of a run id, the caps on a run record's download size and
its counts, the cache's check of the object's size, the part hashes of a multipart upload
as sent, the run record's MD5 over the object's metadata, the refusals of an unusable
restore folder, a file where a folder should be, a temporary that is private and never
opens an existing file, a symlink at a file's name, and descriptors closed on every path
through the folder-opening functions.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timezone
from io import BytesIO
from pathlib import Path

import pytest

import s3common
from ass3 import download, files, plan, reading, records, restore
from ass3.model import FileDigest, FileProblem, LocalFile, RemoteObject, Seen
from ass3.names import temporary_name, temporary_random_part, temporary_stem_of

WHEN = datetime(2026, 1, 1, tzinfo=timezone.utc)
LOCAL = LocalFile("a", "/a", 10, 111, 0o644, 222, 333)


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


needs_proc = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc/self/fd"
)


# --- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "xn--bucket",
        "sthree-bucket",
        "amzn-s3-demo-bucket",
        "bucket-s3alias",
        "bucket--ol-s3",
        "bucket.mrap",
        "bucket--x-s3",
        "bucket--table-s3",
    ],
)
def test_every_prefix_and_suffix_s3_reserves_is_refused(name: str) -> None:
    with pytest.raises(s3common.Ass3Error, match="reserves"):
        s3common.validate_bucket_name(name)


def test_a_record_name_of_more_than_1024_bytes_is_refused() -> None:
    """S3's key limit, counted in bytes of short segments (no segment rule applies)."""
    assert records._restorable_key("ab/" * 341 + "a")  # 1024 bytes
    with pytest.raises(ValueError, match="longer than 1024 bytes"):
        records._restorable_key("ab/" * 341 + "ab")


@pytest.mark.parametrize("length", [1, 234, 235, 236, 255])
def test_a_temporarys_name_always_fits_in_255_bytes(length: int) -> None:
    """Names up to the room left keep their name in the temporary's; longer ones a digest."""
    name = "n" * length
    temporary = temporary_name(name, "a" * 8)
    assert len(temporary.encode()) <= 255
    assert (temporary_stem_of(temporary) == name) is (length <= 235)


def test_a_temporarys_random_part_has_the_shape_the_next_restore_knows() -> None:
    parts = {temporary_random_part() for _ in range(200)}
    assert all(temporary_stem_of(temporary_name("f", part)) == "f" for part in parts)
    assert len(parts) == 200  # 36**8 names: a repeat here would be a broken draw
    assert {len(part) for part in parts} == {8}
    assert len(set("".join(parts))) == 36  # every character is used


# --- ETags and deletion guards ---------------------------------------------------------------


def test_a_multipart_etag_with_anything_after_its_count_has_no_part_count() -> None:
    """Only the exact shape MD5-N is a multipart ETag (else restore cuts data at parts
    S3 never had and calls the object corrupt)."""
    assert plan.multipart_part_count("0" * 32 + "-2") == 2
    assert plan.multipart_part_count("0" * 32 + "-2x") is None


def test_without_max_delete_at_most_half_may_go() -> None:
    """The default --max-delete is 50%: of 100 files, 50 may go without --force, 51 not."""

    def refusal(deletions: int) -> str | None:
        return s3common.deletion_refusal(
            deletions, 100, source_files=100, complete=True, max_delete=None, force=False
        )

    assert refusal(50) is None
    assert "more than --max-delete 50" in (refusal(51) or "")


# --- run records ------------------------------------------------------------------------------

RUN = "20260301T100000.000000Z-a1a1a1"


def test_a_run_id_with_a_longer_tag_is_not_a_run_id() -> None:
    assert records.is_run_id(RUN)
    assert not records.is_run_id(RUN + "0")


def test_a_record_of_800_mb_compressed_is_never_fetched() -> None:
    """The download cap is the inflated cap plus 1%, not some multiple of it."""
    now = datetime(2026, 3, 2, tzinfo=timezone.utc)
    assert records.record_refusal(RUN, size=800_000_000, now=now) is not None


def test_a_size_past_a_signed_64_bit_integer_is_refused() -> None:
    def valid(size: int) -> bool:
        document = {
            "format": 1,
            "run": RUN,
            "source": "/src",
            "uploaded": 1,
            "deleted": 0,
            "failed": 0,
            "versioned": True,
            "files": [["a", size, "", "etag", "v1"]],
        }
        return bool(records._validator(1).is_valid(document))

    assert valid(2**63 - 1)
    assert not valid(2**63)


# --- the state cache ---------------------------------------------------------------------------


def test_cache_does_not_vouch_for_an_object_of_another_size() -> None:
    """Same stat, same ETag recorded, but the listed object has another size: re-read."""
    remote = RemoteObject("a", "p/a", 11, "e" * 32, WHEN)
    assert s3common.cache_vouches(LOCAL, remote, Seen(LOCAL, "m", "e" * 32)) is False


# --- the parts of a multipart upload, as sent ------------------------------------------------


def test_parts_sent_that_differ_from_the_parts_hashed_are_caught() -> None:
    """Read in order, but the bytes sent are not those hashed before the upload."""
    reader = reading.PartHashingReader(BytesIO(b"0123456789"), 5)
    assert reader.read(5) + reader.read(5) == b"0123456789"
    hashed = (hashlib.md5(b"01234").digest(), hashlib.md5(b"56789").digest())
    assert reader.sent_matches(hashed)
    assert not reader.sent_matches((hashed[0], hashlib.md5(b"5678X").digest()))


def test_parts_read_out_of_order_are_never_vouched_for() -> None:
    """Two equal parts read second-first hash the same, but what was sent where is unknown."""
    reader = reading.PartHashingReader(BytesIO(b"a" * 10), 5)
    reader.seek(5)
    reader.read(5)
    reader.seek(0)
    reader.read(5)
    assert not reader.sent_matches((hashlib.md5(b"aaaaa").digest(),) * 2)


# --- verifying a download --------------------------------------------------------------------


def test_the_run_records_md5_wins_over_the_objects_metadata() -> None:
    """Data that matches the object's md5 metadata but not the run record is refused."""
    data = b"data"
    remote = RemoteObject("f", "data/f", 4, "0" * 32, WHEN, "v1", hashlib.md5(b"other").hexdigest())
    metadata = {"md5": hashlib.md5(data).hexdigest()}
    with pytest.raises(FileProblem, match="checksum mismatch"):
        download._verify(None, "b", remote, metadata, FileDigest(metadata["md5"]), BytesIO(data))  # type: ignore[arg-type]


# --- the restore folder ----------------------------------------------------------------------


def test_a_restore_folder_that_cannot_be_looked_at_is_a_problem(tmp_path: Path) -> None:
    """lstat failing for another reason than a missing path (here ENOTDIR) is refused."""
    (tmp_path / "file").write_bytes(b"x")
    problem = restore._root_problem(str(tmp_path / "file" / "data"))
    assert problem is not None and problem.startswith("cannot use ")


def test_a_destination_that_cannot_be_created_is_one_error(tmp_path: Path) -> None:
    """DEST below a file: one Ass3Error saying so, not an UnboundLocalError."""
    (tmp_path / "file").write_bytes(b"x")
    with (
        pytest.raises(s3common.Ass3Error, match="cannot create"),
        restore._opened_root(str(tmp_path / "file" / "dest"), "data", dry_run=False),
    ):
        pass


# --- folders and temporaries ----------------------------------------------------------------


def test_a_file_where_a_folder_should_be_is_refused_when_opened(tmp_path: Path) -> None:
    """O_DIRECTORY: a file (or a FIFO, which would block) at a folder's name is refused
    as it is opened, not used as a folder."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f").write_bytes(b"x")
    root = files.open_root(str(tmp_path), "data", create=False)
    try:
        with (
            pytest.raises(FileProblem, match="is a file, not a folder"),
            files.folder_of(root, str(tmp_path / "data"), "f/x", create=True),
        ):
            pass
    finally:
        os.close(root)


def test_a_temporary_never_opens_a_file_already_at_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """O_EXCL: a file planted at the temporary's name (a hard link elsewhere, say) is
    never opened and written; every name taken, it gives up."""
    planted = tmp_path / temporary_name("f", "a" * 8)
    planted.write_bytes(b"keep")
    monkeypatch.setattr(files, "temporary_random_part", lambda: "a" * 8)
    folder = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(FileExistsError):
            files.create_temporary(folder, "f")
    finally:
        os.close(folder)
    assert planted.read_bytes() == b"keep"


def test_a_temporary_is_private_until_its_mode_is_applied(tmp_path: Path) -> None:
    """Mode 0600 while the data arrives: other users never read a file being restored."""
    old_umask = os.umask(0)
    folder = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        descriptor, _ = files.create_temporary(folder, "f")
        assert os.fstat(descriptor).st_mode & 0o777 == 0o600
        os.close(descriptor)
    finally:
        os.close(folder)
        os.umask(old_umask)


def test_a_symlink_at_the_final_name_is_replaced_not_followed(tmp_path: Path) -> None:
    """A link to a folder at the file's name is not "a folder in the way": the link is
    replaced by the file and the folder it pointed to is left alone."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "f").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "tmp").write_bytes(b"new")
    folder = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        files.Placements().replace("tmp", "f", "f", dir_fd=folder)
    finally:
        os.close(folder)
    assert not (tmp_path / "f").is_symlink() and (tmp_path / "f").read_bytes() == b"new"
    assert list((tmp_path / "elsewhere").iterdir()) == []


# --- descriptors ------------------------------------------------------------------------------


@needs_proc
def test_a_file_refused_by_open_scanned_leaves_no_descriptor_open(tmp_path: Path) -> None:
    """The refusal closes what it opened: a run refusing many files must not run out."""
    path = tmp_path / "f"
    path.write_bytes(b"x")
    before = open_descriptors()
    scanned = LocalFile("f", str(path), 1, 0, 0o644, inode=0, device=0)
    with pytest.raises(FileProblem, match="replaced by another file"):
        reading.open_scanned(scanned)
    assert open_descriptors() == before


@needs_proc
def test_opening_folders_below_the_root_leaves_no_descriptor_open(tmp_path: Path) -> None:
    """open_root closes DEST, folder_of every folder on the way, _opened_root its root."""
    before = open_descriptors()
    root = files.open_root(str(tmp_path), "data", create=True)
    with files.folder_of(root, str(tmp_path / "data"), "a/b/c/f", create=True):
        pass
    os.close(root)
    with restore._opened_root(str(tmp_path), "data", dry_run=False):
        pass
    assert (tmp_path / "data" / "a" / "b" / "c").is_dir()
    assert open_descriptors() == before
