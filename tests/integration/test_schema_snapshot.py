"""Snapshots on the real servers: zero false positives against the models that created the
database, byte-identical snapshots of an unchanged database, detect-migrations end to end,
and the history kept in the schema directory."""

from __future__ import annotations

import sqlalchemy as sa

from dbjobs.schema.detect import detect_migrations
from dbjobs.schema.diff import diff
from dbjobs.schema.history import ensure_initial_snapshot, latest_snapshot
from dbjobs.schema.snapshot import fingerprint, snapshot_from_models, take_snapshot
from tests.integration.app_models import Base
from tests.integration.schema_helpers import database, rows

MODELS = "tests.integration.app_models:Base"


def _create_models(db) -> None:  # type: ignore[no-untyped-def]
    engine = db.create_engine()
    Base.metadata.create_all(engine)
    engine.dispose()


def test_models_and_the_database_they_created_do_not_differ(db_url: str) -> None:
    db = database(db_url)
    _create_models(db)
    changes = diff(take_snapshot(db), snapshot_from_models(MODELS, db.engine))
    assert [c.describe() for c in changes] == []


def test_postgres_aliases_jsonb_enum_partial_index_do_not_differ(pg_url: str) -> None:
    db = database(pg_url)
    md = sa.MetaData()
    from sqlalchemy.dialects import postgresql

    sa.Table("doc", md, sa.Column("id", sa.Integer, sa.Identity(always=True), primary_key=True),
             sa.Column("data", postgresql.JSONB, server_default=sa.text("'{}'::jsonb")),
             sa.Column("state", sa.Enum("new", "done", name="doc_state"), server_default="new"),
             sa.Column("at", sa.TIMESTAMP(timezone=True)), sa.Column("n", sa.SmallInteger, server_default="-1"),
             sa.Index("ix_doc_open", "at", postgresql_where=sa.text("state = 'new'")),
             sa.Index("ix_doc_lower", sa.text("lower(data->>'k')")))
    engine = db.create_engine()
    md.create_all(engine)
    engine.dispose()
    from dbjobs.schema.models import snapshot_of_metadata

    live = take_snapshot(db)
    assert live.enums == {"doc_state": ["new", "done"]}
    assert [c.to_dict() for c in diff(live, snapshot_of_metadata(md, "postgresql"))] == []


def test_unchanged_database_snapshots_byte_identically(db_url: str) -> None:
    db = database(db_url)
    _create_models(db)
    first, second = take_snapshot(db), take_snapshot(db)
    assert first.to_json() == second.to_json()
    assert fingerprint(db) == first.fingerprint and len(first.fingerprint) == 64


def test_detect_against_models_writes_a_migration_and_applies_it(db_url: str, tmp_path) -> None:
    db = database(db_url)
    result = detect_migrations(db, tmp_path, MODELS, apply=True)
    assert result.changed and result.file and result.file.endswith(".sql")
    assert result.applied and result.applied["status"] == "applied"
    assert detect_migrations(db, tmp_path, MODELS).changed is False
    from dbjobs.migrate import pending_migrations

    assert pending_migrations(db, tmp_path) == []


def test_detect_against_the_previous_snapshot(db_url: str, tmp_path) -> None:
    db = database(db_url)
    _create_models(db)
    assert ensure_initial_snapshot(db, tmp_path) is True
    assert ensure_initial_snapshot(db, tmp_path) is False
    assert detect_migrations(db, tmp_path).changed is False
    engine = db.create_engine()
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE tag ADD COLUMN color VARCHAR(10)"))
    engine.dispose()
    result = detect_migrations(db, tmp_path, apply=True)
    assert result.changed and result.changes == ["add column tag.color"]
    assert result.file and "0001_" in result.file
    assert result.applied == {"status": "recorded", "note": "the database already has these changes"}
    assert latest_snapshot(tmp_path, "default").fingerprint == take_snapshot(db).fingerprint
    assert rows(db, "SELECT name FROM dbjobs_migrations") == [(result.file.rsplit("/", 1)[1][:-4],)]
    assert detect_migrations(db, tmp_path).changed is False


def test_initial_snapshots_at_start_skip_unreachable_databases(tmp_path, sqlite_url: str) -> None:
    from dbjobs.schema.history import ensure_initial_snapshots
    from dbjobs.settings import load_settings

    settings = load_settings({"DBJOBS_DATABASE_URL": sqlite_url,
                              "DBJOBS_DATABASES": "down=postgresql://nobody@127.0.0.1:1/none"}, dotenv=None)
    outcome = ensure_initial_snapshots(settings, tmp_path)
    assert outcome["default"] == "created" and outcome["down"].startswith("skipped: cannot read the schema")
    assert "nobody@" in outcome["down"] and ":1/none" in outcome["down"]
    assert ensure_initial_snapshots(settings, tmp_path)["default"] == "exists"
    assert not database(sqlite_url).sqlite_path.exists()


def test_a_new_view_is_detected_and_reverted(db_url: str, tmp_path) -> None:
    from tests.integration.schema_helpers import apply

    db = database(db_url)
    _create_models(db)
    ensure_initial_snapshot(db, tmp_path)
    engine = db.create_engine()
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE VIEW active_authors AS SELECT id, email FROM author WHERE score > 10"))
    engine.dispose()
    result = detect_migrations(db, tmp_path, apply=True)
    assert result.changes == ["create view active_authors"]
    assert "active_authors" in take_snapshot(db).views
    from pathlib import Path

    apply(db, Path(result.file), reverse=True)
    assert "active_authors" not in take_snapshot(db).views


def test_an_unwritable_schema_dir_is_a_clear_error(sqlite_url: str, tmp_path) -> None:
    import pytest

    from dbjobs.errors import MigrationError

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(MigrationError, match="cannot write"):
        ensure_initial_snapshot(database(sqlite_url), blocker / "migrations")


def test_history_of_another_engine_is_refused(sqlite_url: str, pg_url: str, tmp_path) -> None:
    import pytest

    from dbjobs.dburl import parse_url
    from dbjobs.errors import MigrationError

    ensure_initial_snapshot(database(pg_url), tmp_path)
    with pytest.raises(MigrationError, match="is for postgresql but the database is sqlite"):
        detect_migrations(parse_url("default", sqlite_url), tmp_path)


def test_postgres_sequence_and_enum_changes_are_detected_and_reverted(pg_url: str, tmp_path) -> None:
    from pathlib import Path

    from tests.integration.schema_helpers import apply

    db = database(pg_url)
    ensure_initial_snapshot(db, tmp_path)
    engine = db.create_engine()
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE SEQUENCE invoice_no AS bigint START WITH 1000 INCREMENT BY 10"))
        conn.execute(sa.text("CREATE TYPE color AS ENUM ('red', 'green')"))
    engine.dispose()
    result = detect_migrations(db, tmp_path, apply=True)
    assert result.changes == ["create enum color", "create sequence invoice_no"]
    live = take_snapshot(db)
    assert live.sequences == {"invoice_no": {"increment": 10, "start": 1000, "type": "bigint"}}
    apply(db, Path(result.file), reverse=True)
    assert take_snapshot(db).sequences == {} and take_snapshot(db).enums == {}


def test_schema_probe_for_the_status_command(db_url: str, tmp_path) -> None:
    from dbjobs.schema.status import probe
    from dbjobs.status import schema_probe, schema_section

    db = database(db_url)
    assert probe(db, tmp_path).snapshot_fingerprint is None
    _create_models(db)
    ensure_initial_snapshot(db, tmp_path)
    state = probe(db, tmp_path)
    assert state.fingerprint == state.snapshot_fingerprint and state.pending_migrations == []
    engine = db.create_engine()
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE extra (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    section, checks = schema_section(db, schema_probe(tmp_path))
    assert section["drift"] is True and "drifted" in checks[0].message
