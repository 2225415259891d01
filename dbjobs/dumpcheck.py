"""What a dump must look like before a restore may act on it: its engine's header and trailer, its size.

A manifest only proves that a file is the one it describes; a file that was empty, a stray
`SELECT 1;` or a zstd bomb of NUL bytes can carry a perfectly consistent manifest. So the
decompressed bytes are checked as they stream: the first bytes must be the engine's own header
(`PGDMP` for a pg_dump archive, mariadb-dump's or mysqldump's `-- ... dump` banner, SQLite's
`SQLite format 3`), the stream is stopped the moment it passes the manifest's raw size (so a
bomb never fills a disk), and at its end it must be exactly that size and end with the engine's
trailer (mariadb-dump's `-- Dump completed`). Connectors load into a shadow or a staged image,
so a check that fails late still fails before the live database is touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from dbjobs.errors import BackupInvalidError

HEADERS: dict[str, tuple[bytes, ...]] = {
    "postgresql": (b"PGDMP",),
    # MariaDB 10.5.25+/10.11.8+ put a sandbox-mode comment before the banner
    "mysql": (b"-- MariaDB dump", b"-- MySQL dump", b"/*M!999999\\- enable the sandbox mode */"),
    "sqlite": (b"SQLite format 3\x00",),
}
TRAILERS: dict[str, bytes] = {"mysql": b"-- Dump completed"}
TAIL = 256  # the trailer is the dump's last line: mariadb-dump ends with it (and a date unless --skip-dump-date)
REFUSED = "refused, nothing was changed"


def _refuse(backup_id: str, why: str) -> BackupInvalidError:
    return BackupInvalidError(f"{backup_id}: {why}; {REFUSED}")


def checked_dump(chunks: Iterable[bytes], engine: str, raw_size: int, backup_id: str) -> Iterator[bytes]:
    """Pass `chunks` through while checking them; raise BackupInvalidError at the first violation.

    Nothing is passed on before the header is known good; a stream longer than `raw_size` is
    stopped before the excess is passed on; the length and trailer are checked after the last
    byte, before the generator returns (so a consumer loading a shadow finds out before it swaps).
    """
    header = HEADERS[engine]
    need = max(map(len, header))
    held: list[bytes] = []  # kept back until the header is known good
    checked = False
    total = 0
    tail = b""
    for chunk in chunks:
        total += len(chunk)
        if total > raw_size:
            raise _refuse(backup_id, f"the dump is longer than the {raw_size} bytes its manifest says (stopped)")
        tail = (tail + bytes(chunk[-TAIL:]))[-TAIL:]
        if checked:
            yield chunk
            continue
        held.append(bytes(chunk))
        if total >= need:
            _check_header(b"".join(held)[:need], engine, backup_id)
            checked = True
            yield from held
            held = []
    if not checked:
        _check_header(b"".join(held), engine, backup_id)
        yield from held
    if total != raw_size:
        raise _refuse(backup_id, f"the dump has {total} bytes, its manifest says {raw_size} (cut short?)")
    trailer = TRAILERS.get(engine)
    if trailer is not None and trailer not in tail.rstrip()[-len(trailer) - 64:]:
        raise _refuse(backup_id, f"the dump does not end with {trailer.decode()!r} (cut short?)")


def check_header(chunks: Iterator[bytes], engine: str, raw_size: int, backup_id: str) -> None:
    """Check only the dump's first bytes, before anything is done (a safety backup, a drop): cheap refusals.

    `chunks` is a fresh stream of the dump; only its first pieces are read and it is closed after.
    """
    head = b""
    need = max(map(len, HEADERS[engine]))
    try:
        for chunk in chunks:
            head += bytes(chunk[:need])
            if len(head) >= need or len(head) >= raw_size:
                break
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    _check_header(head[:need], engine, backup_id)


def _check_header(head: bytes, engine: str, backup_id: str) -> None:
    if not head:
        raise _refuse(backup_id, f"the dump is empty (not a {engine} dump)")
    expected = HEADERS[engine]
    if not head.startswith(expected):
        raise _refuse(backup_id, f"the dump does not start with the {engine} header "
                                 f"({_shown(head)} is not {' or '.join(map(_shown, expected))})")


def _shown(data: bytes) -> str:
    return repr(data[:16])[1:]


def count_mismatch(expected: dict[str, int], actual: dict[str, int], *, exact: bool = True) -> str | None:
    """Why loaded row counts do not match the manifest's, or None when they do (pure)."""
    missing = sorted(expected.keys() - actual.keys())
    extra = sorted(actual.keys() - expected.keys())
    if missing or extra:
        parts = ([f"missing {', '.join(missing[:5])}"] if missing else []) + (
            [f"unexpected {', '.join(extra[:5])}"] if extra else [])
        return f"tables differ from the manifest ({'; '.join(parts)})"
    if exact:
        wrong = [f"table {t} has {actual[t]} rows, the manifest says {expected[t]}" for t in sorted(expected)
                 if expected[t] != actual[t]]
        if wrong:
            return f"row counts differ from the manifest ({'; '.join(wrong[:3])})"
    return None
