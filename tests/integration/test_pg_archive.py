"""A streamed pg_dump archive made seekable: every data offset filled in, pointing at its own block.

Real `pg_dump -Fc -Z0` output of the sample (tables, a view, large objects), fed in chunks of
every size down to a few bytes so block headers split across chunks are found too. What must
not be lost: the bytes of the archive (only offset fields change) and pg_restore's ability to
restore it (tested through the restores in test_backup_round_trip and test_pg_swap).
"""

from __future__ import annotations

import io
import os
import struct
import subprocess

import pytest
import sqlalchemy as sa

from dbjobs.engines.pg_archive import BLK_BLOBS, BLK_DATA, block_header, parse_toc, write_seekable
from tests.backup_support import build_sample, connect, db

pytestmark = pytest.mark.postgres


def _dump(url: str) -> bytes:
    parsed = db(url)
    env = {**os.environ, "PGHOST": parsed.url.host or "", "PGPORT": str(parsed.url.port or 5432),
           "PGUSER": parsed.url.username or "", "PGDATABASE": parsed.database}
    return subprocess.run(["pg_dump", "-Fc", "-Z0"], env=env, capture_output=True, check=True).stdout  # a pipe


@pytest.mark.parametrize("chunk", [7, 4096, 1 << 20])
def test_every_data_offset_is_filled_in_and_points_at_its_block(pg_url: str, chunk: int) -> None:
    build_sample(pg_url)
    with connect(pg_url) as conn:
        conn.execute(sa.text("CREATE TABLE docs (id integer PRIMARY KEY, body oid)"))
        conn.execute(sa.text("INSERT INTO docs SELECT i, lo_from_bytea(0, decode(repeat('00', 4000) || "
                             "'0100', 'hex')) FROM generate_series(1, 3) i"))  # blob bytes that look like markers
    raw = _dump(pg_url)
    toc = parse_toc(raw)
    assert toc is not None and len(toc.unset) >= 3

    out = io.BytesIO()
    filled = write_seekable((raw[i:i + chunk] for i in range(0, len(raw), chunk)), out, "sample")

    data = out.getvalue()
    assert filled == len(toc.unset) and len(data) == len(raw)
    changed = [i for i in range(len(raw)) if raw[i] != data[i]] if chunk == 1 << 20 else []
    for dump_id, flag_at, _ in toc.unset:
        assert data[flag_at] == 2  # K_OFFSET_POS_SET
        offset = struct.unpack("<Q", data[flag_at + 1:flag_at + 9])[0]
        assert data[offset:offset + 6] in (block_header(BLK_DATA, dump_id), block_header(BLK_BLOBS, dump_id))
    assert all(any(f <= i < f + 9 for _, f, _ in toc.unset) for i in changed)  # nothing but offset fields changed


def test_an_archive_that_is_not_pg_dump_custom_format_is_refused() -> None:
    from dbjobs.errors import BackupInvalidError

    with pytest.raises(BackupInvalidError, match="not a pg_dump custom-format archive"):
        write_seekable([b"-- a plain SQL dump\n"], io.BytesIO(), "x")
    with pytest.raises(BackupInvalidError, match="ends inside its table of contents"):
        write_seekable([b"PGDMP\x01\x0e\x00\x04\x08\x01"], io.BytesIO(), "x")
