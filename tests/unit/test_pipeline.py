"""The streaming pipeline: round trip, atomic names, private files, nothing left behind on failure."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from dbjobs.errors import BackupInvalidError
from dbjobs.pipeline import decompressed_chunks, estimate, verify_file, write_atomic, write_compressed
from dbjobs.progress import Progress, no_progress

DATA = [os.urandom(300_000), b"compressible " * 100_000, b"", b"tail"]


def _write(path: Path, chunks: list[bytes]):  # type: ignore[no-untyped-def]
    return write_compressed(path, lambda sink: [sink(c) for c in chunks] and "produced",
                            progress=no_progress, total=None)


def test_round_trip_with_checksum_and_private_mode(tmp_path: Path) -> None:
    path = tmp_path / "x.dump.zst"
    reports: list[Progress] = []

    written, produced = write_compressed(path, lambda sink: [sink(c) for c in DATA] and 42,
                                         progress=reports.append, total=None)

    assert produced == 42
    assert written.size == path.stat().st_size and written.raw_size == sum(map(len, DATA))
    assert written.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert written.size < written.raw_size
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert reports[-1] == Progress("dump", written.raw_size, written.raw_size)
    verify_file(path, written.size, written.sha256, no_progress)
    assert b"".join(decompressed_chunks(path, no_progress, written.size)) == b"".join(DATA)
    assert os.listdir(tmp_path) == ["x.dump.zst"]


def test_file_has_its_final_name_only_when_complete(tmp_path: Path) -> None:
    path = tmp_path / "x.dump.zst"
    seen: list[list[str]] = []

    def produce(sink):  # type: ignore[no-untyped-def]
        sink(b"first")
        seen.append(sorted(os.listdir(tmp_path)))

    write_compressed(path, produce, progress=no_progress, total=None)

    assert seen == [[".x.dump.zst.partial"]]
    assert os.listdir(tmp_path) == ["x.dump.zst"]


def test_a_dead_writers_partial_file_is_taken_over(tmp_path: Path) -> None:
    """A job redelivered after kill -9 within the same second writes the same partial name: the
    leftover (no process holds its flock) must not stop the new backup."""
    path = tmp_path / "x.dump.zst"
    (tmp_path / ".x.dump.zst.partial").write_bytes(b"half a dump from a killed worker" * 1000)

    written, _ = _write(path, [b"complete"])

    assert b"".join(decompressed_chunks(path, no_progress, written.size)) == b"complete"
    assert os.listdir(tmp_path) == ["x.dump.zst"]


def test_a_live_writers_partial_file_is_refused_and_kept(tmp_path: Path) -> None:
    """Two live writers of one name would interleave: the second is refused, the first's bytes stay."""
    path = tmp_path / "x.dump.zst"

    def produce(sink):  # type: ignore[no-untyped-def]
        sink(b"first writer")
        with pytest.raises(FileExistsError, match="another live process"):
            _write(path, [b"second writer"])
        assert os.listdir(tmp_path) == [".x.dump.zst.partial"]

    written, _ = write_compressed(path, produce, progress=no_progress, total=None)

    assert b"".join(decompressed_chunks(path, no_progress, written.size)) == b"first writer"


@pytest.mark.parametrize("failure", [RuntimeError("dump failed"), KeyboardInterrupt()])
def test_failure_leaves_nothing(tmp_path: Path, failure: BaseException) -> None:
    def produce(sink):  # type: ignore[no-untyped-def]
        sink(b"x" * 5_000_000)
        raise failure

    with pytest.raises(type(failure)):
        write_compressed(tmp_path / "x.dump.zst", produce, progress=no_progress, total=None)

    assert os.listdir(tmp_path) == []


def test_verify_refuses_size_and_checksum_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "x.dump.zst"
    written, _ = _write(path, DATA)

    with pytest.raises(BackupInvalidError, match="truncated"):
        verify_file(path, written.size + 1, written.sha256, no_progress)
    with pytest.raises(BackupInvalidError, match="SHA-256 does not match"):
        verify_file(path, written.size, "0" * 64, no_progress)


def test_undecodable_data_is_a_backup_error(tmp_path: Path) -> None:
    path = tmp_path / "x.dump.zst"
    path.write_bytes(b"\x28\xb5\x2f\xfd" + b"garbage" * 100)

    with pytest.raises(BackupInvalidError, match="cannot decompress"):
        b"".join(decompressed_chunks(path, no_progress, path.stat().st_size))


def test_write_atomic_replaces_whole_files_privately(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    write_atomic(path, b"one")
    write_atomic(path, b"two")
    assert path.read_bytes() == b"two" and os.listdir(tmp_path) == ["m.json"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_estimate_that_is_too_small_slows_the_bar_instead_of_passing_100_percent() -> None:
    assert estimate(10, 100) == 100 and estimate(10, None) is None
    shown = [n / estimate(n, 100) for n in range(90, 400, 7)]  # type: ignore[operator]
    assert all(0.9 <= f < 0.96 for f in shown), shown
