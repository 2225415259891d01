"""Make a streamed `pg_dump -Fc` archive seekable for `pg_restore -j`, by filling in its data offsets.

A custom-format archive written to a pipe cannot go back to record where each table's data
starts, so its table of contents says "offset not set" for every data entry. `pg_restore -j`
then has every worker scan the archive for its table (measured in bench/bench_restore.py: barely
faster than one job). Writing to a file instead (or a directory archive, or `pg_dump -Ft`, which
stages every table in a temporary file) would cost the backup its single streamed pass.

So backups stay one pass (`pg_dump -Fc -Z0` -> zstd -> SHA-256), and the restore, while it
decompresses the archive into a file anyway (`pg_restore -j` needs a file), finds each data
block and writes its offset into the table of contents, as pg_dump does when it can seek. The
blocks are written in table-of-contents order and each starts with a fixed header (block type,
dump id) right after the previous block's end marker (a zero-length chunk), so each is found with
one `bytes.find` of that exact header: no walk over the per-row chunks in Python. An entry not
found (an archive laid out otherwise) keeps "not set", which `pg_restore` handles itself, only
slower. The format is pg_dump's (src/bin/pg_dump/pg_backup_archiver.c, pg_backup_custom.c),
archive versions 1.14 and 1.15 (pg_dump 12 to 16); other versions are restored unchanged. A
wrong offset cannot go unnoticed: pg_restore checks the block header it seeks to against the
entry's dump id and stops (the shadow is then dropped, the target untouched).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from dbjobs.errors import BackupInvalidError

MAGIC = b"PGDMP"
BLK_DATA, BLK_BLOBS = 1, 3
OFFSET_NOT_SET, OFFSET_SET, OFFSET_NO_DATA = 1, 2, 3
END_MARKER = b"\x00" * 5  # WriteInt(0): the zero-length chunk that ends a data block


class _Short(Exception):
    """The buffer ends before the table of contents does: read more."""


@dataclass
class Toc:
    """Where the table of contents ends, and where each data entry's offset field sits."""

    end: int = 0
    # (dump id, position of the entry's offset flag byte, block type), in table-of-contents order
    unset: list[tuple[int, int, int]] = field(default_factory=list)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise _Short
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def integer(self) -> int:
        sign = self.byte()
        value = int.from_bytes(self.take(4), "little")
        return -value if sign else value

    def string(self) -> str | None:
        n = self.integer()
        return None if n < 0 else self.take(n).decode("utf-8", "replace")


def parse_toc(data: bytes) -> Toc | None:
    """The table of contents of a custom archive starting `data`, or None for a layout this does not know.

    Raises _Short when `data` ends before the table of contents does.
    """
    if not data.startswith(MAGIC) and len(data) >= len(MAGIC):
        return None
    r = _Reader(data)
    r.take(len(MAGIC))
    version = tuple(r.take(3))
    int_size, off_size, fmt = r.take(3)
    if not (1, 14) <= version[:2] <= (1, 15) or int_size != 4 or off_size != 8 or fmt != 1:
        return None
    if version[:2] >= (1, 15):
        r.byte()  # compression algorithm
    else:
        r.integer()  # compression level
    for _ in range(7):  # creation time: sec, min, hour, mday, mon, year, isdst
        r.integer()
    for _ in range(3):  # database name, server version, pg_dump version
        r.string()
    toc = Toc()
    for _ in range(r.integer()):
        dump_id = r.integer()
        r.integer()  # has a data dumper
        for _ in range(3):  # table oid, oid, tag
            r.string()
        kind = BLK_BLOBS if r.string() == "BLOBS" else BLK_DATA  # the description
        r.integer()  # section
        for _ in range(5):  # definition, drop statement, copy statement, namespace, tablespace
            r.string()
        r.string()  # table access method
        r.string()  # owner
        r.string()  # "with oids"
        while r.string() is not None:  # dependencies
            pass
        flag_at = r.pos
        flag = r.byte()
        r.take(off_size)
        if flag not in (OFFSET_NOT_SET, OFFSET_SET, OFFSET_NO_DATA):
            return None  # not the layout this parser knows: leave the archive as it is
        if flag == OFFSET_NOT_SET:
            toc.unset.append((dump_id, flag_at, kind))
    toc.end = r.pos
    return toc


def block_header(kind: int, dump_id: int) -> bytes:
    """A data block's header: its type byte and WriteInt(dump id)."""
    return bytes([kind, 0]) + dump_id.to_bytes(4, "little")


def write_seekable(chunks: Iterable[bytes], out: BinaryIO, name: str) -> int:
    """Write the archive in `chunks` to `out` with every data offset filled in; return how many were filled.

    Memory holds the table of contents and one chunk, never the data.
    """
    it = iter(chunks)
    head = b""
    toc: Toc | None = None
    while True:
        chunk = next(it, b"")
        head += bytes(chunk)
        if not head.startswith(MAGIC[: len(head)]):
            raise BackupInvalidError(f"{name}: not a pg_dump custom-format archive; nothing was changed")
        try:
            toc = parse_toc(head)
            break
        except _Short:
            if not chunk:
                raise BackupInvalidError(f"{name}: the archive ends inside its table of contents") from None
    offsets = _copy_finding_blocks(head, it, out, toc)
    if toc is not None:
        for dump_id, flag_at, _ in toc.unset:
            if dump_id in offsets:
                out.seek(flag_at)
                out.write(bytes([OFFSET_SET]) + struct.pack("<Q", offsets[dump_id]))
        out.seek(0, 2)
    return len(offsets)


def _copy_finding_blocks(head: bytes, rest: Iterable[bytes], out: BinaryIO, toc: Toc | None) -> dict[int, int]:
    """Copy everything to `out`, recording the file offset of each expected data block header, in order.

    Each block is searched as the previous block's end marker followed by the block type byte
    (a needle ending in a byte that is rare in COPY data, so the search skips fast), and the dump
    id after it is checked. A header split across two chunks is found in the seam between them.
    """
    wanted = list(toc.unset) if toc else []
    found: dict[int, int] = {}
    i = 0
    seam = len(END_MARKER) + 6 - 1  # bytes of the previous chunk a split header can start in
    tail, pos = b"", 0  # the end of the previous chunk, and the file offset of the current chunk

    def scan(data: bytes, data_at: int, start: int, limit: int) -> int:
        """Record the wanted headers starting in data[start:limit]; return where the search stopped."""
        nonlocal i
        while i < len(wanted):
            dump_id, _, kind = wanted[i]
            needle, after = END_MARKER + bytes([kind]), block_header(kind, dump_id)[1:]
            at = data.find(needle, start, limit + len(needle) + len(after) - 1)
            if at < 0:
                return max(start, limit)
            if data[at + len(needle):at + len(needle) + len(after)] == after:
                found[dump_id] = data_at + at + len(END_MARKER)
                i += 1
            start = at + 1
        return limit

    for n, chunk in enumerate(itertools.chain([head], rest)):
        out.write(chunk)
        start = 0
        if n == 0 and toc is not None and wanted:  # the first block follows the table of contents directly
            dump_id, _, kind = wanted[0]
            if chunk[toc.end:toc.end + 6] == block_header(kind, dump_id):
                found[dump_id] = toc.end
                i, start = 1, toc.end + 6
        if tail and i < len(wanted):
            joined = tail + chunk[:seam + 6]
            scan(joined, pos - len(tail), 0, len(tail))
        scan(chunk, pos, start, len(chunk))
        tail = chunk[-seam:] if len(chunk) >= seam else (tail + chunk)[-seam:]
        pos += len(chunk)
    return found
