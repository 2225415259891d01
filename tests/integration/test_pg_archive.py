"""Reading a streamed pg_dump archive as it passes: every data block is found where it starts.

Real `pg_dump -Fc -Z0` output of the sample (tables, a view, large objects), fed in chunks of
every size down to a few bytes so block headers split across chunks are found too. The load
built on it is tested in test_pg_load (and through the restores in test_backup_round_trip and
test_pg_swap).
"""

from __future__ import annotations

import os
import subprocess

import pytest
import sqlalchemy as sa

from dbjobs.engines.pg_archive import BLK_BLOBS, BLK_DATA, BlockFinder, block_header, read_toc
from dbjobs.errors import BackupInvalidError
from tests.backup_support import build_sample, connect, db

pytestmark = pytest.mark.postgres


def _dump(url: str) -> bytes:
    parsed = db(url)
    env = {**os.environ, "PGHOST": parsed.url.host or "", "PGPORT": str(parsed.url.port or 5432),
           "PGUSER": parsed.url.username or "", "PGDATABASE": parsed.database}
    return subprocess.run(["pg_dump", "-Fc", "-Z0"], env=env, capture_output=True, check=True).stdout  # a pipe


@pytest.mark.parametrize("chunk", [7, 4096, 1 << 20])
def test_every_data_block_is_found_where_it_starts(pg_url: str, chunk: int) -> None:
    build_sample(pg_url)
    with connect(pg_url) as conn:
        conn.execute(sa.text("CREATE TABLE docs (id integer PRIMARY KEY, body oid)"))
        conn.execute(sa.text("INSERT INTO docs SELECT i, lo_from_bytea(0, decode(repeat('00', 4000) || "
                             "'0100', 'hex')) FROM generate_series(1, 3) i"))  # blob bytes that look like markers
        # rows of 300 bytes: every row's chunk length (2c 01 00 00) holds the data block type byte (01), so the
        # search for that byte misses on every row and must fall back to the whole header
        conn.execute(sa.text("CREATE TABLE wide (v text)"))
        conn.execute(sa.text("INSERT INTO wide SELECT repeat('x', 299) FROM generate_series(1, 5000)"))
    raw = _dump(pg_url)
    head, toc, rest = read_toc((raw[i:i + chunk] for i in range(0, len(raw), chunk)), "sample")
    assert toc is not None and len(toc.unset) >= 3

    finder = BlockFinder(toc)
    for part in [head, *rest]:
        finder.feed(part)

    assert list(finder.found) == [dump_id for dump_id, _, _ in toc.unset]  # all of them, in archive order
    kinds = {dump_id: kind for dump_id, _, kind in toc.unset}
    assert BLK_BLOBS in kinds.values()
    for dump_id, offset in finder.found.items():
        assert raw[offset:offset + 6] == block_header(kinds[dump_id], dump_id) and kinds[dump_id] in (BLK_DATA,
                                                                                                      BLK_BLOBS)


def test_an_archive_that_is_not_pg_dump_custom_format_is_refused() -> None:
    with pytest.raises(BackupInvalidError, match="not a pg_dump custom-format archive"):
        read_toc([b"-- a plain SQL dump\n"], "x")
    with pytest.raises(BackupInvalidError, match="ends inside its table of contents"):
        read_toc([b"PGDMP\x01\x0e\x00\x04\x08\x01"], "x")
