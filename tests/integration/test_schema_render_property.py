"""Property test through the real engines: for random schemas a and b, the SQL rendered for
diff(empty, a) then diff(a, b) leaves the database reflecting exactly as b, and the reverse
SQL brings it back to a. This checks render and reflection together, not just the pure diff."""

from __future__ import annotations

import copy
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dbjobs.dburl import DatabaseURL
from dbjobs.schema.builder import SchemaBuilder
from dbjobs.schema.changes import apply_changes, invert
from dbjobs.schema.diff import diff
from dbjobs.schema.render import render
from dbjobs.schema.snapshot import Snapshot, take_snapshot
from tests.integration.schema_helpers import database
from tests.unit.test_schema_diff import snapshots

TYPES = {"mysql": {"integer": "int", "numeric(10,2)": "decimal(10,2)"}, "sqlite": {"numeric(10,2)": "decimal(10,2)"},
         "postgresql": {"boolean": "smallint"}}


def _for_engine(snapshot: Snapshot, engine: str) -> Snapshot:
    """A generated schema in the engine's own terms (type spellings, defaults that fit the type, the
    engine's rules such as MySQL's unique indexes being unique constraints; MariaDB refuses checks on
    AUTO_INCREMENT columns, the only column a generated check may use; PostgreSQL's and SQLite's
    CREATE TABLE merge identical unique constraints)."""
    tables = {}
    for name, table in snapshot.tables.items():
        columns = []
        for column in table["columns"]:
            type_ = TYPES.get(engine, {}).get(column["type"], column["type"])
            default = column["default"]
            if engine != "sqlite" and default == "'x'" and not type_.startswith(("varchar", "text")):
                default = "0"
            if engine == "mysql" and type_ == "text" and default is not None:
                default = "'x'"
            comment = None if engine == "sqlite" else column["comment"]
            columns.append({**column, "type": type_, "default": default, "comment": comment})
        tables[name] = {**table, "columns": columns, "comment": None if engine == "sqlite" else table["comment"]}
        if engine == "mysql":
            tables[name]["checks"] = []
        if engine != "mysql":
            unique = {tuple(u["columns"]): u for u in table["uniques"]}
            tables[name]["uniques"] = list(unique.values())
    builder = SchemaBuilder(engine)
    builder.tables = copy.deepcopy(tables)
    builder.enums = dict(snapshot.enums) if engine == "postgresql" else {}
    builder.views = dict(snapshot.views) if engine == "sqlite" else {}
    return Snapshot.from_builder(builder)


def _reset(db: DatabaseURL, engine: Any) -> None:
    with engine.begin() as conn:
        if db.engine == "postgresql":
            conn.exec_driver_sql("DROP SCHEMA public CASCADE")
            conn.exec_driver_sql("CREATE SCHEMA public")
        else:
            live = take_snapshot(db)
            quote = engine.dialect.identifier_preparer.quote
            if db.engine == "mysql":
                conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 0")
            for view in live.views:
                conn.exec_driver_sql(f"DROP VIEW {quote(view)}")
            for table in live.tables:
                conn.exec_driver_sql(f"DROP TABLE {quote(table)}")


def _run(engine: Any, statements: list[str]) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_rendered_sql_reaches_b_and_returns_to_a(db_url: str, data: st.DataObject) -> None:
    db = database(db_url)
    a = _for_engine(data.draw(snapshots()), db.engine)
    b = _for_engine(data.draw(snapshots()), db.engine)
    engine = db.create_engine()
    try:
        _reset(db, engine)
        empty = take_snapshot(db)
        _run(engine, render(diff(empty, a), empty))
        at_a = take_snapshot(db)
        assert [c.describe() for c in diff(at_a, a)] == []
        changes = diff(at_a, b)
        _run(engine, render(changes, at_a))
        assert [c.describe() for c in diff(take_snapshot(db), b)] == []
        _run(engine, render(invert(changes), apply_changes(at_a, changes)))
        assert [c.describe() for c in diff(take_snapshot(db), a)] == []
    finally:
        engine.dispose()


def test_reset_leaves_nothing(sqlite_url: str) -> None:
    db = database(sqlite_url)
    engine = db.create_engine()
    _run(engine, ["CREATE TABLE x (id INTEGER)", "CREATE VIEW v AS SELECT 1"])
    _reset(db, engine)
    assert take_snapshot(db) == Snapshot("sqlite")
    engine.dispose()
    assert sa  # the import documents the engine type used above
