"""Changes → dialect-correct SQL statements, through Alembic's operations layer (offline mode).

Alembic knows each dialect's ALTER spelling (MySQL's MODIFY/CHANGE with the full column,
PostgreSQL's USING); we add what it lacks: enums, sequences, views, and SQLite's table
rebuild (create new, copy, drop, rename, re-index) for the ALTERs SQLite cannot do.
Rendering walks the changes while tracking the schema state, so a rebuild knows exactly
which table it starts from and which it must produce.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy.dialects import mysql

from dbjobs.schema.changes import Change, apply_changes
from dbjobs.schema.snapshot import Snapshot
from dbjobs.schema.sqlparse import split_statements

REBUILD_PREFIX = "_dbjobs_new_"
SQLITE_NATIVE = {"create_table", "drop_table", "rename_table", "rename_column", "add_index", "drop_index",
                 "create_view", "drop_view", "set_table_comment"}
TABLE_KINDS = {"add_column", "drop_column", "alter_column", "rename_column", "set_primary_key", "add_unique",
               "drop_unique", "add_index", "drop_index", "add_fk", "drop_fk", "add_check", "drop_check"}
INTEGER_TYPES = {"integer": sa.Integer, "int": sa.Integer, "bigint": sa.BigInteger, "smallint": sa.SmallInteger}
MYSQL_INTEGER_TYPES = {"tinyint": mysql.TINYINT, "smallint": mysql.SMALLINT, "mediumint": mysql.MEDIUMINT,
                       "int": mysql.INTEGER, "integer": mysql.INTEGER, "bigint": mysql.BIGINT}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


class RawType(sa.types.UserDefinedType):
    """A column type rendered exactly as the snapshot spells it."""

    cache_ok = True

    def __init__(self, spec: str) -> None:
        self.spec = spec

    def get_col_spec(self, **_: Any) -> str:
        """The type as written in the snapshot."""
        return self.spec


class _Emitter:
    """Alembic operations in offline mode, collecting the SQL of each call."""

    def __init__(self, engine: str) -> None:
        self.buffer = io.StringIO()
        context = MigrationContext.configure(
            dialect_name=engine, opts={"as_sql": True, "output_buffer": self.buffer, "literal_binds": True})
        self.op = Operations(context)
        self.quote = context.dialect.identifier_preparer.quote
        self.dialect = context.dialect

    def take(self) -> list[str]:
        statements = split_statements(self.buffer.getvalue())
        self.buffer.seek(0)
        self.buffer.truncate()
        return statements


def render(changes: list[Change], start: Snapshot) -> list[str]:
    """The SQL statements that apply `changes` to a database whose schema is `start`."""
    emitter = _Emitter(start.engine)
    state = start
    statements: list[str] = []
    done: set[int] = set()
    for i, change in enumerate(changes):
        if i in done:
            continue
        if start.engine == "sqlite" and _needs_rebuild(change):
            group = [j for j in range(i, len(changes)) if changes[j].name == change.name
                     and changes[j].kind in TABLE_KINDS]
            done.update(group)
            target = apply_changes(state, [changes[j] for j in group])
            renames = {c.before["name"]: c.after["name"] for c in (changes[j] for j in group)
                       if c.kind == "rename_column"}
            statements += _rebuild(emitter, change.name, state.tables[change.name], target.tables[change.name],
                                   renames)
            state = target
            continue
        statements += _render_one(emitter, change, state)
        state = apply_changes(state, [change])
    return statements


def _needs_rebuild(change: Change) -> bool:
    if change.kind == "add_column":
        column = change.after
        constant = column["default"] is None or not re.search(r"[()]|current_", column["default"], re.IGNORECASE)
        return not ((column["nullable"] or column["default"] is not None) and constant)
    return change.kind not in SQLITE_NATIVE


def _autoincrement_type(spec: str) -> sa.types.TypeEngine[Any] | None:
    """A real integer type for an autoincrementing column (SQLAlchemy renders SERIAL/AUTO_INCREMENT only for
    those), MySQL's UNSIGNED and ZEROFILL kept."""
    words = spec.split()
    base = words[0].split("(")[0] if words else ""
    if len(words) > 1 and base in MYSQL_INTEGER_TYPES:
        return MYSQL_INTEGER_TYPES[base](unsigned="unsigned" in words, zerofill="zerofill" in words)
    factory = INTEGER_TYPES.get(spec)
    return factory() if factory else None


def column_of(engine: str, column: dict[str, Any]) -> sa.Column:
    """A SQLAlchemy column for a snapshot column (integers get real types so SERIAL/AUTO_INCREMENT render)."""
    real = _autoincrement_type(column["type"]) if column["autoincrement"] else None
    return sa.Column(column["name"], real if real is not None else RawType(column["type"]),
                     nullable=column["nullable"], autoincrement=column["autoincrement"],
                     server_default=sa.text(column["default"]) if column["default"] is not None else None,
                     comment=column["comment"] if engine != "sqlite" else None)


def _table_items(engine: str, table: dict[str, Any]) -> list[Any]:
    items: list[Any] = [column_of(engine, c) for c in table["columns"]]
    pk = table["primary_key"]
    if pk:
        items.append(sa.PrimaryKeyConstraint(*pk["columns"], name=pk["name"]))
    items += [sa.UniqueConstraint(*u["columns"], name=u["name"]) for u in table["uniques"]]
    items += [sa.ForeignKeyConstraint(fk["columns"], [f"{fk['ref_table']}.{c}" for c in fk["ref_columns"]],
                                      name=fk["name"], ondelete=fk["on_delete"], onupdate=fk["on_update"])
              for fk in table["foreign_keys"]]
    items += [sa.CheckConstraint(sa.text(c["sqltext"]), name=c["name"]) for c in table["checks"]]
    return items


def _create_table(em: _Emitter, name: str, table: dict[str, Any]) -> list[str]:
    engine = em.dialect.name
    em.op.create_table(name, *_table_items(engine, table), comment=table.get("comment"))
    for index in table["indexes"]:
        _create_index(em, name, index)
    return em.take()


def _create_index(em: _Emitter, table: str, index: dict[str, Any]) -> None:
    columns = [c if _IDENTIFIER.match(c) else sa.text(c) for c in index["columns"]]
    where = {f"{em.dialect.name}_where": sa.text(index["where"])} if index["where"] else {}
    em.op.create_index(index["name"], table, columns, unique=index["unique"], **where)


def _existing(column: dict[str, Any]) -> dict[str, Any]:
    return {"existing_type": column_of("", column).type, "existing_nullable": column["nullable"],
            "existing_server_default": sa.text(column["default"]) if column["default"] is not None else None,
            "existing_comment": column["comment"], "existing_autoincrement": column["autoincrement"]}


def _alter_column(em: _Emitter, table: str, old: dict[str, Any], new: dict[str, Any]) -> None:
    changed: dict[str, Any] = {}
    if old["name"] != new["name"]:
        changed["new_column_name"] = new["name"]
    if old["type"] != new["type"]:
        changed["type_"] = column_of("", new).type
        if em.dialect.name == "postgresql":
            changed["postgresql_using"] = f"{em.quote(old['name'])}::{new['type']}"
    if old["nullable"] != new["nullable"]:
        changed["nullable"] = new["nullable"]
    if old["default"] != new["default"]:
        changed["server_default"] = sa.text(new["default"]) if new["default"] is not None else None
    if old["comment"] != new["comment"]:
        changed["comment"] = new["comment"]
    if em.dialect.name == "mysql" and old["autoincrement"] != new["autoincrement"]:
        changed["autoincrement"] = new["autoincrement"]
    existing = _existing(old)
    if em.dialect.name != "mysql":
        existing.pop("existing_autoincrement")
    if "type_" in changed and "postgresql_using" in changed and old["default"] is not None:
        em.op.alter_column(table, old["name"], server_default=None, **existing)
        existing["existing_server_default"] = None
        changed.setdefault("server_default", sa.text(new["default"]) if new["default"] is not None else None)
        if changed["server_default"] is None:
            del changed["server_default"]
    if changed:
        em.op.alter_column(table, old["name"], **changed, **existing)


def _render_one(em: _Emitter, change: Change, state: Snapshot) -> list[str]:
    """One change through its renderer: Alembic operations write to the emitter, and a renderer may
    return plain statements of its own (Alembic's return values are not statements)."""
    try:
        renderer = _RENDERERS[change.kind]
    except KeyError:
        raise ValueError(f"cannot render change kind {change.kind!r}") from None
    written = renderer(em, change, state)
    return em.take() + (written if isinstance(written, list) else [])


def _set_primary_key(em: _Emitter, c: Change, _: Snapshot) -> None:
    if c.before:
        em.op.drop_constraint(c.before["name"] or f"{c.name}_pkey", c.name, type_="primary")
    if c.after:
        em.op.create_primary_key(c.after["name"] or f"{c.name}_pkey", c.name, c.after["columns"])


def _set_table_comment(em: _Emitter, c: Change) -> None:
    """SQLite keeps no comments (its snapshots never have one to change)."""
    if em.dialect.name == "sqlite":
        return
    if c.after is None:
        em.op.drop_table_comment(c.name, existing_comment=c.before)
    else:
        em.op.create_table_comment(c.name, c.after, existing_comment=c.before)


def _rename_column(em: _Emitter, c: Change, _: Snapshot) -> list[str] | None:
    if em.dialect.name == "sqlite":
        q = em.quote
        return [f"ALTER TABLE {q(c.name)} RENAME COLUMN {q(c.before['name'])} TO {q(c.after['name'])}"]
    _alter_column(em, c.name, c.before, c.after)
    return None


def _drop_constraint(em: _Emitter, c: Change, state: Snapshot) -> list[str] | None:
    q = em.quote
    if em.dialect.name == "mysql" and c.kind == "drop_check":
        return [f"ALTER TABLE {q(c.name)} DROP CONSTRAINT {q(c.before['name'])}"]
    type_ = {"drop_unique": "unique", "drop_fk": "foreignkey", "drop_check": "check"}[c.kind]
    em.op.drop_constraint(c.before["name"], c.name, type_=type_)
    if em.dialect.name == "mysql" and c.kind == "drop_fk" and not _indexed(state.tables[c.name], c.before["columns"]):
        return [f"ALTER TABLE {q(c.name)} DROP INDEX {q(c.before.get('index') or c.before['name'])}"]
    return None


def _indexed(table: dict[str, Any], columns: list[str]) -> bool:
    """Whether an index other than MySQL's automatic FK index starts with `columns`."""
    keys = [table["primary_key"]] if table["primary_key"] else []
    keys += table["uniques"] + table["indexes"]
    return any(key["columns"][:len(columns)] == columns for key in keys)


def _alter_enum(em: _Emitter, c: Change, state: Snapshot) -> list[str]:
    """New values appended: ADD VALUE; anything else: a new type, columns cast to it, the old one dropped."""
    q, name, before, after = em.quote, c.name, c.before, c.after
    if after[:len(before)] == before:
        return [f"ALTER TYPE {q(name)} ADD VALUE {_literals([v])}" for v in after[len(before):]]
    users = [(t, col["name"]) for t, table in state.tables.items() for col in table["columns"] if col["type"] == name]
    return [f"ALTER TYPE {q(name)} RENAME TO {q(name + '_old')}",
            f"CREATE TYPE {q(name)} AS ENUM ({_literals(after)})",
            *[f"ALTER TABLE {q(t)} ALTER COLUMN {q(col)} TYPE {q(name)} USING {q(col)}::text::{q(name)}"
              for t, col in users],
            f"DROP TYPE {q(name + '_old')}"]


_RENDERERS: dict[str, Callable[[_Emitter, Change, Snapshot], list[str] | None]] = {
    "create_table": lambda em, c, _: _create_table(em, c.name, c.after),
    "drop_table": lambda em, c, _: em.op.drop_table(c.name),
    "rename_table": lambda em, c, _: em.op.rename_table(c.before, c.after),
    "add_column": lambda em, c, _: em.op.add_column(c.name, column_of(em.dialect.name, c.after)),
    "drop_column": lambda em, c, _: em.op.drop_column(c.name, c.before["name"]),
    "rename_column": _rename_column,
    "alter_column": lambda em, c, _: _alter_column(em, c.name, c.before, c.after),
    "set_primary_key": _set_primary_key,
    "set_table_comment": lambda em, c, _: _set_table_comment(em, c),
    "add_unique": lambda em, c, _: em.op.create_unique_constraint(c.after["name"], c.name, c.after["columns"]),
    "add_index": lambda em, c, _: _create_index(em, c.name, c.after),
    "drop_index": lambda em, c, _: em.op.drop_index(c.before["name"], table_name=c.name),
    "add_fk": lambda em, c, _: em.op.create_foreign_key(
        c.after["name"], c.name, c.after["ref_table"], c.after["columns"], c.after["ref_columns"],
        ondelete=c.after["on_delete"], onupdate=c.after["on_update"]),
    "add_check": lambda em, c, _: em.op.create_check_constraint(c.after["name"], c.name, sa.text(c.after["sqltext"])),
    "drop_unique": _drop_constraint,
    "drop_fk": _drop_constraint,
    "drop_check": _drop_constraint,
    "create_enum": lambda em, c, _: [f"CREATE TYPE {em.quote(c.name)} AS ENUM ({_literals(c.after)})"],
    "drop_enum": lambda em, c, _: [f"DROP TYPE {em.quote(c.name)}"],
    "alter_enum": _alter_enum,
    "create_sequence": lambda em, c, _: [f"CREATE SEQUENCE {em.quote(c.name)} AS {c.after['type']} START WITH "
                                         f"{c.after['start']} INCREMENT BY {c.after['increment']}"],
    "drop_sequence": lambda em, c, _: [f"DROP SEQUENCE {em.quote(c.name)}"],
    "create_view": lambda em, c, _: [f"CREATE VIEW {em.quote(c.name)} AS {c.after}"],
    "drop_view": lambda em, c, _: [f"DROP VIEW {em.quote(c.name)}"],
}


def _literals(values: list[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def _rebuild(em: _Emitter, name: str, old: dict[str, Any], new: dict[str, Any], renames: dict[str, str]) -> list[str]:
    """SQLite's recipe for ALTERs it lacks: create the new table, copy the rows, swap, re-index."""
    q = em.quote
    temp = REBUILD_PREFIX + name
    statements = _create_table(em, temp, {**new, "indexes": []})
    new_columns = {c["name"] for c in new["columns"]}
    pairs = [(renames.get(c["name"], c["name"]), c["name"]) for c in old["columns"]]
    pairs = [(target, source) for target, source in pairs if target in new_columns]
    statements += [
        f"INSERT INTO {q(temp)} ({', '.join(q(t) for t, _ in pairs)}) SELECT {', '.join(q(s) for _, s in pairs)} "
        f"FROM {q(name)}",
        f"DROP TABLE {q(name)}",
        f"ALTER TABLE {q(temp)} RENAME TO {q(name)}",
    ]
    for index in new["indexes"]:
        _create_index(em, name, index)
    return statements + em.take()
