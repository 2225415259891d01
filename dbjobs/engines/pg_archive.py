"""The PostgreSQL archive layout dbjobs stores, and the seekable form `pg_restore -j` needs.

Backups are `pg_dump -Ft` streamed through zstd: a tar whose members are a directory-format
archive (`toc.dat` first, then one `<id>.dat` per table, largest first), so the backup stays
one streamed pass with flat memory. `pg_restore -j` cannot read a stream, so a parallel restore
first unpacks the tar into a directory (sequential writes, no seeks) and loads that. Measured
against the alternatives in bench/bench_restore.py: `pg_dump -Fc -Z0` written to a pipe has no
data offsets in its table of contents, and `pg_restore -j` on such a file rescans the archive
for every table (slower than one job); a directory dump is not a stream at all.

Backups taken before this layout are custom-format (`PGDMP`) streams; they still restore, with
one job, straight from the stream.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from dbjobs.errors import BackupInvalidError

TAR, CUSTOM = "tar", "custom"
_PEEK = 512  # a tar header block: its magic sits at offset 257


class ChunkReader(io.RawIOBase):
    """A readable file over an iterator of chunks, whose first bytes can be looked at first."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def peek(self, n: int) -> bytes:
        """At least `n` bytes from the start (fewer only at the end), without consuming them."""
        while len(self._buf) < n:
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            self._buf += bytes(chunk)
        return self._buf[:n]

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._buf:
            self._buf = bytes(next(self._chunks, b""))
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def archive_format(head: bytes, name: str) -> str:
    """TAR or CUSTOM from an archive's first bytes; anything else is not a PostgreSQL backup."""
    if head.startswith(b"PGDMP"):
        return CUSTOM
    if head[257:262] == b"ustar":
        return TAR
    raise BackupInvalidError(f"{name}: not a pg_dump archive (neither tar nor custom format)")


def unpack(reader: ChunkReader, directory: Path, name: str) -> None:
    """Unpack a tar archive stream into `directory` (regular files only: the `data` filter refuses the rest)."""
    try:
        with tarfile.open(fileobj=reader, mode="r|", bufsize=1 << 20) as tar:
            tar.extractall(directory, filter="data")
    except (tarfile.TarError, EOFError) as exc:
        raise BackupInvalidError(f"{name}: the archive cannot be unpacked ({exc}); nothing was changed") from None
    if not (directory / "toc.dat").is_file():
        raise BackupInvalidError(f"{name}: the archive has no table of contents (toc.dat); nothing was changed")
