"""Ask the database whether its current data would make a change fail (duplicates for a new
unique, NULLs for a new NOT NULL, orphans for a new FK, rows breaking a new check).

Each probe is one `SELECT 1 ... LIMIT 1`; a probe that cannot run (the column is created by
the same migration, an expression the engine rejects) leaves the answer unknown, and lint
then warns conservatively.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from dbjobs.dburl import DatabaseURL
from dbjobs.schema.changes import Change
from dbjobs.schema.lint import data_dependent


def probe_sql(change: Change, quote) -> str | None:  # type: ignore[no-untyped-def]
    """The query that returns a row when existing data breaks `change` (None when nothing can)."""
    if data_dependent(change) is None:
        return None
    kind, after, table = change.kind, change.after, quote(change.name)
    if kind == "add_column":
        return f"SELECT 1 FROM {table} LIMIT 1"
    if kind == "alter_column":
        return f"SELECT 1 FROM {table} WHERE {quote(after['name'])} IS NULL LIMIT 1"
    if kind == "add_check":
        return f"SELECT 1 FROM {table} WHERE NOT ({after['sqltext']}) LIMIT 1"
    columns = [quote(c) for c in after["columns"]]
    if kind == "add_fk":
        refs = [quote(c) for c in after["ref_columns"]]
        join = " AND ".join(f"c.{a} = p.{b}" for a, b in zip(columns, refs, strict=True))
        present = " AND ".join(f"c.{a} IS NOT NULL" for a in columns)
        return (f"SELECT 1 FROM {table} c LEFT JOIN {quote(after['ref_table'])} p ON {join} "
                f"WHERE {present} AND p.{refs[0]} IS NULL LIMIT 1")
    listed = ", ".join(columns)
    present = " AND ".join(f"{c} IS NOT NULL" for c in columns)
    return f"SELECT 1 FROM {table} WHERE {present} GROUP BY {listed} HAVING COUNT(*) > 1 LIMIT 1"


def probe_data(db: DatabaseURL, changes: list[Change]) -> dict[int, bool]:
    """For each data-dependent change (by index): True if the current data breaks it, False if not."""
    queries = {}
    engine = db.create_engine()
    quote = engine.dialect.identifier_preparer.quote
    for i, change in enumerate(changes):
        sql = probe_sql(change, quote)
        if sql:
            queries[i] = sql
    answers: dict[int, bool] = {}
    if not queries:
        engine.dispose()
        return answers
    try:
        with engine.connect() as conn:
            for i, sql in queries.items():
                answer = _ask(conn, sql)
                if answer is not None:
                    answers[i] = answer
    finally:
        engine.dispose()
    return answers


def _ask(conn: Connection, sql: str) -> bool | None:
    try:
        return conn.execute(text(sql)).first() is not None
    except Exception:
        conn.rollback()
        return None
