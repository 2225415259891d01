"""A zstd backup cut into frames where its engine says a unit of work starts, and the index to read them apart.

A zstd stream of one frame can only be decompressed from its start. A restore that loads several
tables at once then needs the whole dump decompressed in one pass and the bytes of every table
but the one being loaded parked somewhere (a work file as large as the dump) until a loader gets
to them. A backup written as several frames, each beginning where a table's data begins, with
the (raw offset, stored offset) of each frame recorded in the manifest, lets every loader
decompress its own tables straight from the backup file, in parallel, with nothing parked.

The file stays one valid zstd stream (frames simply follow each other: `zstd -d` and any
sequential reader see the same bytes), so a restore without the index reads it as before.
The engine supplies the cut points (`Cuts`: PostgreSQL's block starts, pg_archive.BlockCuts); a
cut is only taken `MIN_FRAME` bytes after the previous one, so the index stays short for a
database of thousands of small tables. Only an unencrypted backup records an index: age's
ciphertext cannot be entered in its middle by this code.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import zstandard

from dbjobs.errors import BackupInvalidError

MIN_FRAME = 16 << 20  # raw bytes between two cuts at least (but for the first, which ends the header's frame)
READ = 1 << 20


class Cuts(Protocol):
    """Where new frames should start, told chunk by chunk as the raw dump passes."""

    lookbehind: int  # how many bytes before the start of the chunk just fed a reported cut may lie

    def feed(self, chunk: bytes | memoryview) -> list[tuple[int, int]]:
        """(raw offset, tag) of the cut points found so far and not yet reported; `tag` names what starts there."""


class FramedWriter:
    """Writes raw chunks into a zstd stream writer, ending the frame at every cut the `Cuts` report.

    The last `lookbehind` bytes of each chunk are held back until the next one arrives, so a cut
    found across the seam of two chunks still lies in bytes not yet compressed.
    """

    def __init__(self, zst: zstandard.ZstdCompressionWriter, cuts: Cuts, stored: Callable[[], int]) -> None:
        self.zst, self.cuts, self.stored = zst, cuts, stored
        self.index: list[list[int]] = []  # [raw offset, stored offset, tag] of every frame but the first
        self._held = b""  # raw bytes [self._done, self._end) not compressed yet
        self._done = self._end = 0
        self._last_cut = 0

    def write(self, chunk: bytes | memoryview) -> None:
        view = memoryview(chunk)
        start = self._end
        self._end += len(view)
        for offset, tag in self.cuts.feed(view):
            if offset < self._done or offset == 0 or (self.index and offset - self._last_cut < MIN_FRAME):
                continue
            self._emit(view, start, offset)
            self.zst.flush(zstandard.FLUSH_FRAME)
            self.index.append([offset, self.stored(), tag])
            self._last_cut = offset
        self._emit(view, start, max(self._done, self._end - self.cuts.lookbehind))
        self._held = bytes(view[self._done - start:]) if self._done >= start else self._held + bytes(view)

    def _emit(self, view: memoryview, start: int, upto: int) -> None:
        """Compress raw bytes [done, upto): first what was held back, then from `view` (which starts at `start`)."""
        if upto <= self._done:
            return
        if self._done < start:
            take = min(upto, start) - self._done
            self.zst.write(self._held[:take])
            self._held = self._held[take:]
            self._done += take
        if upto > self._done:
            self.zst.write(view[self._done - start:upto - start])
            self._done = upto

    def close(self) -> None:
        """Compress what is still held back (the stream writer itself is closed by its owner)."""
        if self._held:
            self.zst.write(self._held)
            self._done, self._held = self._end, b""


@dataclass(frozen=True)
class Frame:
    """One frame: its raw bytes [raw, raw_end) are stored at [stored, stored_end) of the file."""

    number: int
    raw: int
    raw_end: int
    stored: int
    stored_end: int
    tag: int | None  # what starts the frame (None: the first frame, which starts the dump)

    @property
    def raw_size(self) -> int:
        return self.raw_end - self.raw


def parse_index(index: object, raw_size: int, size: int) -> list[Frame] | None:
    """The frames a manifest's `extra.frames` describes, or None when it holds none or does not fit the file."""
    if not isinstance(index, list) or not index:
        return None
    rows = [(0, 0, None)]
    for row in index:
        if not (isinstance(row, list) and len(row) == 3 and all(type(v) is int for v in row)):
            return None
        rows.append((row[0], row[1], row[2]))
    rows.append((raw_size, size, None))
    for (raw, stored, _), (raw_next, stored_next, _) in itertools.pairwise(rows):
        if not (raw < raw_next and stored < stored_next):
            return None
    return [Frame(i, raw, rows[i + 1][0], stored, rows[i + 1][1], tag)
            for i, (raw, stored, tag) in enumerate(rows[:-1])]


class _Range:
    """A file-like read of bytes [start, end) of `fd`, by position: threads share the descriptor."""

    def __init__(self, fd: int, start: int, end: int) -> None:
        self.fd, self.pos, self.end = fd, start, end

    def read(self, n: int = -1) -> bytes:
        n = self.end - self.pos if n < 0 else min(n, self.end - self.pos)
        data = os.pread(self.fd, n, self.pos) if n > 0 else b""
        self.pos += len(data)
        return data


class FrameReader:
    """Decompresses single frames of a verified backup file, from several threads at once, counting the bytes
    they yield (the restore's progress) and checking each frame's length against the index."""

    def __init__(self, fd: int, frames: list[Frame], name: str) -> None:
        self.fd, self.frames, self.name = fd, frames, name
        self.fed = 0
        self._lock = threading.Lock()

    def read(self, frame: Frame) -> Iterator[bytes]:
        """The raw bytes of `frame`, in pieces."""
        source = _Range(self.fd, frame.stored, frame.stored_end)
        reader = zstandard.ZstdDecompressor().stream_reader(source, read_size=READ, read_across_frames=True)
        got = 0
        try:
            while got <= frame.raw_size and (piece := reader.read(READ)):
                got += len(piece)
                if got <= frame.raw_size:
                    with self._lock:
                        self.fed += len(piece)
                    yield piece
        except zstandard.ZstdError as exc:
            raise BackupInvalidError(f"{self.name}: cannot decompress frame {frame.number} ({exc}); "
                                     "refused, nothing was changed") from None
        if got != frame.raw_size:
            more = " or more" if got > frame.raw_size else ""
            raise BackupInvalidError(f"{self.name}: frame {frame.number} decompresses to {got} bytes{more}, its "
                                     f"index says {frame.raw_size}; refused, nothing was changed")
