"""Back up, change, restore: on every engine the schema and every row come back exactly."""

from __future__ import annotations

from pathlib import Path

from dbjobs.jobs import run_job
from tests.backup_support import backup_files, build_sample, mutate, second_database, settings_for, snapshot


def test_restore_undoes_every_change(db_url: str, tmp_path: Path) -> None:
    build_sample(db_url)
    before = snapshot(db_url)
    settings = settings_for(tmp_path / "backups", main=db_url)

    result = run_job("dbjobs.backup", settings, {"database": "main"})
    assert result["row_counts"] and sum(result["row_counts"].values()) == 200
    mutate(db_url)
    changed = snapshot(db_url)
    assert changed != before and "extra" in changed["tables"] and not changed["views"]

    restored = run_job("dbjobs.restore", settings, {"backup": result["id"], "confirmed": True})

    assert snapshot(db_url) == before
    assert restored["backup_id"] == result["id"]
    safety = restored["safety_backup_id"]
    assert safety and f"{safety}.manifest.json" in backup_files(tmp_path / "backups")


def test_restore_into_another_alias(db_url: str, tmp_path: Path) -> None:
    build_sample(db_url)
    before = snapshot(db_url)
    with second_database(db_url, tmp_path) as copy_url:
        settings = settings_for(tmp_path / "backups", main=db_url, copy=copy_url)
        result = run_job("dbjobs.backup", settings, {"database": "main"})

        run_job("dbjobs.restore", settings, {"backup": str(Path(result["path"])), "database": "copy",
                                             "confirmed": True})

        assert snapshot(copy_url) == before
        assert snapshot(db_url) == before


def test_restored_copy_restores_again(db_url: str, tmp_path: Path) -> None:
    """A backup of a restored database is itself restorable (what a restore creates, pg_dump can dump)."""
    build_sample(db_url)
    before = snapshot(db_url)
    settings = settings_for(tmp_path / "backups", main=db_url)
    first = run_job("dbjobs.backup", settings, {"database": "main"})
    run_job("dbjobs.restore", settings, {"backup": first["id"], "confirmed": True})
    second = run_job("dbjobs.backup", settings, {"database": "main"})
    mutate(db_url)

    run_job("dbjobs.restore", settings, {"backup": second["id"], "confirmed": True})

    assert snapshot(db_url) == before
    assert second["row_counts"] == first["row_counts"]


def test_postgres_public_schema_keeps_its_owner_and_privileges(pg_url: str, tmp_path: Path) -> None:
    """The restore recreates `public`; application roles must keep their USAGE on it."""
    import sqlalchemy as sa

    from tests.backup_support import connect

    query = sa.text("SELECT nspowner::regrole::text, nspacl::text FROM pg_namespace WHERE nspname = 'public'")
    build_sample(pg_url)
    with connect(pg_url) as conn:
        before = conn.execute(query).one()
    settings = settings_for(tmp_path / "backups", main=pg_url)
    result = run_job("dbjobs.backup", settings, {"database": "main"})

    run_job("dbjobs.restore", settings, {"backup": result["id"], "confirmed": True})

    with connect(pg_url) as conn:
        assert conn.execute(query).one() == before
    assert before[0] == "pg_database_owner" and "=U/" in before[1]
