"""A restore that fails after it started changing the database leaves it exactly as it was.

The backups here pass their checksum (each gets a valid manifest for a doctored dump), so the
failure happens inside the engine's load, after the user schemas or tables were already dropped.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from dbjobs.catalog import find_backup
from dbjobs.errors import BackupInvalidError, DbjobsError, RestoreError
from dbjobs.jobs import run_job
from dbjobs.progress import Progress
from dbjobs.storage.local import LocalStorage
from tests.backup_support import build_sample, connect, doctor, mutate, settings_for, side_databases, snapshot


def _backup_then_mutate(url: str, directory: Path):  # type: ignore[no-untyped-def]
    build_sample(url)
    settings = settings_for(directory, main=url)
    result = run_job("dbjobs.backup", settings, {"database": "main"})
    mutate(url)
    return settings, find_backup([LocalStorage(directory)], result["id"])


def pg_leftovers(url: str) -> list[str]:
    """Shadow or pre-restore databases of the test database (a failed restore must leave none)."""
    name = url.rsplit("/", 1)[1]
    with connect(url) as conn:
        return list(conn.execute(sa.text("SELECT datname FROM pg_database WHERE starts_with(datname, :p)"),
                                 {"p": name + "__"}).scalars())


@pytest.mark.parametrize("strategy", ["swap", "in-place"])
def test_postgres_archive_failing_midway_changes_nothing(pg_url: str, tmp_path: Path, strategy: str) -> None:
    settings, backup = _backup_then_mutate(pg_url, tmp_path)
    doctor(backup, lambda raw: raw[: len(raw) // 2])  # cut inside a table's data
    current = snapshot(pg_url)

    with pytest.raises(DbjobsError) as failed:
        run_job("dbjobs.restore", settings, {"backup": backup.manifest.id, "confirmed": True, "strategy": strategy})

    message = str(failed.value)
    assert " exit " in message
    assert "the database is unchanged" in message or "nothing was changed" in message
    assert snapshot(pg_url) == current and pg_leftovers(pg_url) == []


@pytest.mark.parametrize("strategy", ["swap", "in-place"])
def test_postgres_statement_failing_midway_changes_nothing(pg_url: str, tmp_path: Path, strategy: str) -> None:
    """A table owned by a role that no longer exists: ALTER ... OWNER fails after the schemas were dropped."""
    role = f"dbjobs_gone_{uuid.uuid4().hex[:8]}"
    build_sample(pg_url)
    with connect(pg_url) as conn:
        conn.execute(sa.text(f"CREATE ROLE {role}"))
        conn.execute(sa.text(f"ALTER TABLE orders OWNER TO {role}"))
    try:
        settings = settings_for(tmp_path, main=pg_url)
        result = run_job("dbjobs.backup", settings, {"database": "main"})
        with connect(pg_url) as conn:
            conn.execute(sa.text(f"REASSIGN OWNED BY {role} TO CURRENT_USER"))
            conn.execute(sa.text(f"DROP ROLE {role}"))
        mutate(pg_url)
        current = snapshot(pg_url)

        with pytest.raises(RestoreError) as failed:
            run_job("dbjobs.restore", settings, {"backup": result["id"], "confirmed": True, "strategy": strategy})

        assert f'role "{role}" does not exist' in str(failed.value)
        assert "the database is unchanged" in str(failed.value)
        assert snapshot(pg_url) == current and pg_leftovers(pg_url) == []
    finally:
        with connect(pg_url) as conn:
            conn.execute(sa.text(f"DROP OWNED BY {role}; DROP ROLE IF EXISTS {role}")
                         if conn.execute(sa.text(f"SELECT 1 FROM pg_roles WHERE rolname = '{role}'")).first()
                         else sa.text("SELECT 1"))


@pytest.mark.parametrize(("strategy", "said"), [
    ("swap", "into a shadow database (dropped; the database is unchanged)"),
    ("in-place", "the database was put back from safety backup"),
])
def test_mysql_failed_load_leaves_the_database_as_it_was(mysql_url: str, tmp_path: Path, strategy: str,
                                                         said: str) -> None:
    """By swap the load went into a shadow, never the target; in place it is put back from the safety backup."""
    settings, backup = _backup_then_mutate(mysql_url, tmp_path)
    doctor(backup, lambda raw: raw + b"\nINSERT INTO no_such_table VALUES (1);\n")  # fails after every table loaded
    current = snapshot(mysql_url)

    with pytest.raises(RestoreError) as failed:
        run_job("dbjobs.restore", settings, {"backup": backup.manifest.id, "confirmed": True, "strategy": strategy})

    assert "no_such_table" in str(failed.value)
    assert said in str(failed.value)
    assert snapshot(mysql_url) == current
    assert side_databases(mysql_url) == []


def _corrupt_page(raw: bytes) -> bytes:
    """Scribble over a b-tree page after the header: the image opens but fails its integrity check."""
    page = int.from_bytes(raw[16:18], "big")
    data = bytearray(raw)
    data[page * 2 : page * 2 + 64] = b"\xff" * 64
    return bytes(data)


@pytest.mark.parametrize("damage", [_corrupt_page, lambda raw: b"not a database" * 100], ids=["page", "header"])
def test_sqlite_image_failing_its_check_changes_nothing(sqlite_url: str, tmp_path: Path, damage) -> None:  # type: ignore[no-untyped-def]
    settings, backup = _backup_then_mutate(sqlite_url, tmp_path)
    doctor(backup, damage)
    current = snapshot(sqlite_url)

    with pytest.raises((RestoreError, BackupInvalidError), match=r"unchanged|nothing restored|nothing was changed"):
        run_job("dbjobs.restore", settings, {"backup": backup.manifest.id, "confirmed": True})

    assert snapshot(sqlite_url) == current
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_failure_that_is_not_a_dbjobs_error_also_leaves_the_database_as_it_was(db_url: str, tmp_path: Path) -> None:
    """A bug's exception while the dump is being fed (here the progress callback, as Celery's `update_state`
    once failed in the feeding thread) must undo the restore like any RestoreError, on every engine."""
    settings, backup = _backup_then_mutate(db_url, tmp_path)
    current = snapshot(db_url)

    def failing(p: Progress) -> None:
        if p.phase == "restore" and p.done:
            raise ValueError("task_id must not be empty")

    with pytest.raises((RestoreError, ValueError)) as failed:
        run_job("dbjobs.restore", settings, {"backup": backup.manifest.id, "confirmed": True}, failing)

    assert "task_id must not be empty" in str(failed.value)
    assert snapshot(db_url) == current
