"""A host as the CLI sees it: a SQLite database with a table, a backup directory, a clean environment."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

CLEARED = ("DBJOBS_BROKER_URL", "DBJOBS_DATABASES", "SUPABASE_URL", "SUPABASE_KEY", "SUPABASE_BUCKET",
           "BACKUP_INTERVAL_HOURS", "BACKUP_KEEP_DAYS", "BACKUP_MIN_KEEP")


def configure_host(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Set up `root` as the working directory of a host with no broker and no Supabase; return its variables.

    The application has started once, so the schema history holds its initial snapshot (as in `status`
    of a real deployment: without one, status warns).
    """
    from dbjobs.dburl import parse_url
    from dbjobs.schema.history import ensure_initial_snapshot

    db = root / "app.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    conn.close()
    monkeypatch.chdir(root)
    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    values = {"DBJOBS_DATABASE_URL": f"sqlite:///{db}", "DBJOBS_BACKUP_DIR": str(root / "backups")}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    ensure_initial_snapshot(parse_url("default", values["DBJOBS_DATABASE_URL"]), root / "migrations")
    return values
