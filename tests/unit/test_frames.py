"""A backup cut into frames (dbjobs/frames.py): one valid zstd stream, each indexed frame readable on its own.

What must not be lost: a single byte of the dump, whichever way it is read (in one pass from the
start, as `zstd -d` and an older restore read it, or frame by frame from the index), wherever the
chunks the dump tool delivers happen to split a cut point. An index that does not fit the file,
or a frame whose bytes are not what the index says, is refused, never loaded short.
"""

from __future__ import annotations

import itertools
import os
import random
from pathlib import Path

import pytest
import zstandard

from dbjobs import frames
from dbjobs.errors import BackupInvalidError
from dbjobs.frames import FrameReader, parse_index
from dbjobs.pipeline import decompressed_chunks, write_compressed
from dbjobs.progress import no_progress

MARK = b"\x00CUT\x01"


class MarkCuts:
    """Cuts where MARK starts, as an engine's finder would report them: from the seam of two chunks too."""

    lookbehind = len(MARK) - 1

    def __init__(self) -> None:
        self.seen = b""
        self.reported: set[int] = set()

    def feed(self, chunk: bytes | memoryview) -> list[tuple[int, int]]:
        start = max(0, len(self.seen) - self.lookbehind)
        self.seen += bytes(chunk)
        found = []
        at = self.seen.find(MARK, start)
        while at >= 0:
            if at not in self.reported:
                self.reported.add(at)
                found.append((at, len(self.reported)))
            at = self.seen.find(MARK, at + 1)
        return found


def _dump(parts: int) -> tuple[bytes, list[int]]:
    rng = random.Random(parts)
    out, marks = b"head", []
    for _ in range(parts):
        marks.append(len(out))
        out += MARK + rng.randbytes(rng.randrange(100, 3000)) + b"rows " * rng.randrange(1, 400)
    return out, marks


def _write(path: Path, raw: bytes, chunk: int) -> list[list[int]]:
    def produce(sink):  # type: ignore[no-untyped-def]
        for i in range(0, len(raw), chunk):
            sink(memoryview(raw)[i:i + chunk])

    written, _ = write_compressed(path, produce, progress=no_progress, total=None, cuts=MarkCuts())
    assert written.raw_size == len(raw)
    return written.frames


@pytest.mark.parametrize("chunk", [1, 3, 509, 1 << 20])
def test_every_cut_starts_a_frame_and_each_frame_reads_alone(tmp_path: Path, chunk: int,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frames, "MIN_FRAME", 1)
    raw, marks = _dump(40)
    path = tmp_path / "x.dump.zst"
    index = _write(path, raw, chunk)
    assert [row[0] for row in index] == marks  # a cut at every mark, split across chunks or not
    assert b"".join(decompressed_chunks(path, no_progress, len(raw))) == raw  # one stream from the start
    parsed = parse_index(index, len(raw), path.stat().st_size)
    assert parsed is not None and len(parsed) == len(marks) + 1
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = FrameReader(fd, parsed, "x")
        pieces = [b"".join(reader.read(frame)) for frame in reversed(parsed)]  # any order, each on its own
    finally:
        os.close(fd)
    assert b"".join(reversed(pieces)) == raw and reader.fed == len(raw)
    assert all(piece.startswith(MARK) for piece in pieces[:-1])


def test_cuts_closer_than_min_frame_share_a_frame(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frames, "MIN_FRAME", 20_000)
    raw, marks = _dump(60)
    index = _write(tmp_path / "x.dump.zst", raw, 4096)
    starts = [row[0] for row in index]
    assert starts[0] == marks[0]  # the first cut is always taken: the header gets a frame of its own
    assert set(starts) <= set(marks) and 1 < len(starts) < len(marks) // 3
    assert all(b - a >= 20_000 for a, b in itertools.pairwise(starts))


def test_an_index_that_does_not_fit_is_not_used() -> None:
    assert parse_index(None, 100, 50) is None and parse_index([], 100, 50) is None
    assert parse_index([[10, 5, 1]], 100, 50) is not None
    for bad in ([[10, 5]], [[10, 5, "1"]], [[10, 5, True]], [[0, 5, 1]], [[10, 0, 1]], [[100, 5, 1]],
                [[10, 60, 1]], [[20, 5, 1], [10, 7, 2]], [[10, 5, 1], [20, 5, 2]], "10,5,1"):
        assert parse_index(bad, 100, 50) is None, bad


def test_a_frame_whose_bytes_are_not_what_the_index_says_is_refused(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frames, "MIN_FRAME", 1)
    raw, _ = _dump(5)
    path = tmp_path / "x.dump.zst"
    index = _write(path, raw, 509)
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        longer = [[index[0][0] - 1, *index[0][1:]], *index[1:]]  # the first frame said one byte shorter
        inside = [[index[0][0], index[0][1] + 3, index[0][2]], *index[1:]]  # a frame entered in its middle
        for wrong, match in ((longer, "decompresses to"), (inside, "cannot decompress")):
            parsed = parse_index(wrong, len(raw), size)
            assert parsed is not None
            with pytest.raises(BackupInvalidError, match=match):
                for frame in parsed:
                    b"".join(FrameReader(fd, parsed, "x").read(frame))
    finally:
        os.close(fd)
    assert zstandard.ZstdDecompressor().stream_reader(path.read_bytes(), read_across_frames=True).read() == raw
