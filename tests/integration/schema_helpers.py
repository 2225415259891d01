"""Helpers shared by the schema integration tests: a DatabaseURL per fixture URL, and
generating/applying a migration from one MetaData to another."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from dbjobs.dburl import DatabaseURL, parse_url
from dbjobs.migrate import apply_migration
from dbjobs.schema.detect import build_migration
from dbjobs.schema.diff import diff
from dbjobs.schema.models import snapshot_of_metadata
from dbjobs.schema.snapshot import Snapshot, take_snapshot


def database(url: str) -> DatabaseURL:
    """The fixture URL as the `default` alias."""
    return parse_url("default", url)


def create(db: DatabaseURL, metadata: sa.MetaData, rows: dict[str, list[dict]] | None = None) -> None:
    """Create the tables of `metadata` and insert `rows`."""
    engine = db.create_engine()
    metadata.create_all(engine)
    with engine.begin() as conn:
        for table, values in (rows or {}).items():
            conn.execute(metadata.tables[table].insert(), values)
    engine.dispose()


def write_migration(db: DatabaseURL, target: sa.MetaData, directory: Path, name: str = "0001_20260101T000000_test"
                    ) -> tuple[Path, Snapshot]:
    """Write the migration from the live schema to `target`'s; returns the file and the target snapshot."""
    live = take_snapshot(db)
    desired = snapshot_of_metadata(target, db.engine)
    desired = Snapshot(db.engine, desired.tables, desired.enums, live.sequences, live.views)
    migration = build_migration(live, desired, name)
    path = directory / f"{name}.sql"
    path.write_text(migration.to_text())
    return path, desired


def assert_schema(db: DatabaseURL, expected: Snapshot) -> None:
    """The live schema is `expected` (up to constraint names)."""
    assert [c.describe() for c in diff(take_snapshot(db), expected)] == []


def rows(db: DatabaseURL, sql: str) -> list[tuple]:
    """Rows of a query, as tuples."""
    engine = db.create_engine()
    with engine.connect() as conn:
        result = [tuple(r) for r in conn.execute(sa.text(sql))]
    engine.dispose()
    return result


def apply(db: DatabaseURL, path: Path, **kwargs) -> dict:  # type: ignore[no-untyped-def]
    """apply_migration with destructive changes allowed, as a dict."""
    return apply_migration(db, path, allow_destructive=True, lock_timeout=5, **kwargs).to_dict()
