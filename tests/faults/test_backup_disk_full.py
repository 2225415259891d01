"""A backup that runs out of space is a one-line error and leaves nothing behind, on every engine."""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa

from tests.backup_support import backup_files, connect, error_line, run_cli

LIMIT = 256 * 1024


def _incompressible(url: str) -> None:
    """About 1 MiB that zstd cannot shrink below the limit (random hex)."""
    with connect(url) as conn:
        conn.execute(sa.text("CREATE TABLE noise (id INTEGER PRIMARY KEY, v TEXT)"))
        conn.execute(sa.text("INSERT INTO noise VALUES (:i, :v)"),
                     [{"i": i, "v": os.urandom(512).hex()} for i in range(1024)])


def test_full_disk_is_a_clear_error_and_leaves_no_file(db_url: str, tmp_path: Path) -> None:
    _incompressible(db_url)
    out = tmp_path / "backups"
    out.mkdir()
    proc = run_cli(tmp_path, "backup", "--output-dir", str(out), max_file_size=LIMIT, DBJOBS_DATABASE_URL=db_url)

    assert "File too large; nothing was kept" in error_line(proc)
    assert backup_files(out) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".dbjobs-")] == []
