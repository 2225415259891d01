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
from typing import Any

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations

from dbjobs.schema.changes import Change, apply_changes
from dbjobs.schema.snapshot import Snapshot
from dbjobs.schema.sqlparse import split_statements

REBUILD_PREFIX = "_dbjobs_new_"
SQLITE_NATIVE = {"create_table", "drop_table", "rename_table", "rename_column", "add_index", "drop_index",
                 "create_view", "drop_view"}
TABLE_KINDS = {"add_column", "drop_column", "alter_column", "rename_column", "set_primary_key", "add_unique",
               "drop_unique", "add_index", "drop_index", "add_fk", "drop_fk", "add_check", "drop_check"}
INTEGER_TYPES = {"integer": sa.Integer, "int": sa.Integer, "bigint": sa.BigInteger, "smallint": sa.SmallInteger}
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


def column_of(engine: str, column: dict[str, Any]) -> sa.Column:
    """A SQLAlchemy column for a snapshot column (integers get real types so SERIAL/AUTO_INCREMENT render)."""
    type_factory = INTEGER_TYPES.get(column["type"]) if column["autoincrement"] else None
    return sa.Column(column["name"], type_factory() if type_factory else RawType(column["type"]),
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
    kind, name, before, after = change.kind, change.name, change.before, change.after
    q = em.quote
    if kind == "create_table":
        return _create_table(em, name, after)
    if kind == "drop_table":
        em.op.drop_table(name)
    elif kind == "rename_table":
        em.op.rename_table(before, after)
    elif kind == "add_column":
        em.op.add_column(name, column_of(em.dialect.name, after))
    elif kind == "drop_column":
        em.op.drop_column(name, before["name"])
    elif kind == "rename_column" and em.dialect.name == "sqlite":
        return [f"ALTER TABLE {q(name)} RENAME COLUMN {q(before['name'])} TO {q(after['name'])}"]
    elif kind in ("alter_column", "rename_column"):
        _alter_column(em, name, before, after)
    elif kind == "set_primary_key":
        if before:
            em.op.drop_constraint(before["name"] or f"{name}_pkey", name, type_="primary")
        if after:
            em.op.create_primary_key(after["name"] or f"{name}_pkey", name, after["columns"])
    elif kind == "add_unique":
        em.op.create_unique_constraint(after["name"], name, after["columns"])
    elif kind == "add_index":
        _create_index(em, name, after)
    elif kind == "drop_index":
        em.op.drop_index(before["name"], table_name=name)
    elif kind == "add_fk":
        em.op.create_foreign_key(after["name"], name, after["ref_table"], after["columns"], after["ref_columns"],
                                 ondelete=after["on_delete"], onupdate=after["on_update"])
    elif kind == "add_check":
        em.op.create_check_constraint(after["name"], name, sa.text(after["sqltext"]))
    elif kind in ("drop_unique", "drop_fk", "drop_check"):
        if em.dialect.name == "mysql" and kind == "drop_check":
            return [f"ALTER TABLE {q(name)} DROP CONSTRAINT {q(before['name'])}"]
        type_ = {"drop_unique": "unique", "drop_fk": "foreignkey", "drop_check": "check"}[kind]
        em.op.drop_constraint(before["name"], name, type_=type_)
        if em.dialect.name == "mysql" and kind == "drop_fk" and not _indexed(state.tables[name], before["columns"]):
            return [*em.take(), f"ALTER TABLE {q(name)} DROP INDEX {q(before['name'])}"]
    else:
        return _render_object(em, change, state)
    return em.take()


def _indexed(table: dict[str, Any], columns: list[str]) -> bool:
    """Whether an index other than MySQL's automatic FK index starts with `columns`."""
    keys = [table["primary_key"]] if table["primary_key"] else []
    keys += table["uniques"] + table["indexes"]
    return any(key["columns"][:len(columns)] == columns for key in keys)


def _render_object(em: _Emitter, change: Change, state: Snapshot) -> list[str]:
    """Enums, sequences and views: plain SQL, Alembic has no operations for them."""
    kind, name, before, after = change.kind, change.name, change.before, change.after
    q = em.quote
    if kind == "create_enum":
        return [f"CREATE TYPE {q(name)} AS ENUM ({_literals(after)})"]
    if kind == "drop_enum":
        return [f"DROP TYPE {q(name)}"]
    if kind == "alter_enum":
        if after[:len(before)] == before:
            return [f"ALTER TYPE {q(name)} ADD VALUE {_literals([v])}" for v in after[len(before):]]
        users = [(t, c["name"]) for t, table in state.tables.items() for c in table["columns"] if c["type"] == name]
        return [f"ALTER TYPE {q(name)} RENAME TO {q(name + '_old')}",
                f"CREATE TYPE {q(name)} AS ENUM ({_literals(after)})",
                *[f"ALTER TABLE {q(t)} ALTER COLUMN {q(c)} TYPE {q(name)} USING {q(c)}::text::{q(name)}"
                  for t, c in users],
                f"DROP TYPE {q(name + '_old')}"]
    if kind == "create_sequence":
        return [f"CREATE SEQUENCE {q(name)} AS {after['type']} START WITH {after['start']} "
                f"INCREMENT BY {after['increment']}"]
    if kind == "drop_sequence":
        return [f"DROP SEQUENCE {q(name)}"]
    if kind == "create_view":
        return [f"CREATE VIEW {q(name)} AS {after}"]
    if kind == "drop_view":
        return [f"DROP VIEW {q(name)}"]
    raise ValueError(f"cannot render change kind {kind!r}")


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
