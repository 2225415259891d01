"""Assemble snapshot data from facts reported one by one (by a catalog reader or by models).

Both sources go through the same normalization and the same per-engine rules here, so a
database created from the models and the models themselves produce identical snapshots.
"""

from __future__ import annotations

import re
from typing import Any

from dbjobs.schema.normalize import (
    expression_key,
    is_numeric_type,
    normalize_action,
    normalize_default,
    normalize_expression,
    normalize_type,
)

Table = dict[str, Any]
LEDGER_TABLE = "dbjobs_migrations"
_IDENTIFIER = re.compile(r'^(?:"([^"]+)"|`([^`]+)`|([A-Za-z_][A-Za-z0-9_$]*))$')


def empty_table() -> Table:
    """A table with no columns or constraints yet; the snapshot's per-table shape."""
    return {"columns": [], "primary_key": None, "uniques": [], "indexes": [], "foreign_keys": [], "checks": [],
            "comment": None}


class SchemaBuilder:
    """Collects tables, enums, sequences and views for one engine, normalizing as it goes."""

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self.tables: dict[str, Table] = {}
        self.enums: dict[str, list[str]] = {}
        self.sequences: dict[str, dict[str, Any]] = {}
        self.views: dict[str, str] = {}

    def table(self, name: str, comment: str | None = None) -> Table:
        """The table of that name, created on first mention."""
        table = self.tables.setdefault(name, empty_table())
        if comment and self.engine != "sqlite":
            table["comment"] = comment
        return table

    def column(self, table: str, name: str, type_: str, *, nullable: bool, default: str | None,
               autoincrement: bool, comment: str | None = None) -> None:
        """Add a column in ordinal order."""
        kind = normalize_type(self.engine, type_)
        self.table(table)["columns"].append({
            "name": name, "type": kind, "nullable": bool(nullable),
            "default": None if autoincrement else normalize_default(self.engine, default, is_numeric_type(kind)),
            "autoincrement": bool(autoincrement), "comment": None if self.engine == "sqlite" else comment or None,
        })

    def primary_key(self, table: str, name: str | None, columns: list[str]) -> None:
        """Record the primary key (its name is kept for rendering, not compared)."""
        if columns:
            self.table(table)["primary_key"] = {"name": name, "columns": list(columns)}

    def unique(self, table: str, name: str | None, columns: list[str]) -> None:
        """Record a unique constraint."""
        self.table(table)["uniques"].append({"name": name, "columns": list(columns)})

    def index(self, table: str, name: str, columns: list[str], *, unique: bool, where: str | None = None) -> None:
        """Record an index; `columns` may hold expressions, `where` makes it partial.

        A column reference is stored as the bare column name however the engine quoted it, so
        it matches the column (renames follow it) and the models' spelling.
        """
        self.table(table)["indexes"].append({
            "name": name, "columns": [_bare_identifier(c) or normalize_expression(self.engine, c) for c in columns],
            "unique": bool(unique), "where": normalize_expression(self.engine, where) if where else None,
        })

    def foreign_key(self, table: str, name: str | None, columns: list[str], ref_table: str, ref_columns: list[str],
                    on_delete: str | None = None, on_update: str | None = None) -> None:
        """Record a foreign key with its referential actions."""
        self.table(table)["foreign_keys"].append({
            "name": name, "columns": list(columns), "ref_table": ref_table, "ref_columns": list(ref_columns),
            "on_delete": normalize_action(self.engine, on_delete),
            "on_update": normalize_action(self.engine, on_update),
        })

    def check(self, table: str, name: str | None, sqltext: str) -> None:
        """Record a check constraint."""
        self.table(table)["checks"].append({"name": name, "sqltext": normalize_expression(self.engine, sqltext)})

    def enum(self, name: str, values: list[str]) -> None:
        """Record a PostgreSQL enum type and its values in order."""
        self.enums[name] = list(values)

    def sequence(self, name: str, **attrs: Any) -> None:
        """Record a standalone sequence (sequences owned by serial columns are part of the column)."""
        self.sequences[name] = attrs

    def view(self, name: str, definition: str) -> None:
        """Record a view by its definition."""
        self.views[name] = normalize_expression(self.engine, definition).rstrip(";").strip()

    def finish(self) -> dict[str, Any]:
        """Apply the engine's rules and sort everything into the canonical snapshot data."""
        self.tables.pop(LEDGER_TABLE, None)
        for table in self.tables.values():
            if self.engine == "mysql":
                _mysql_rules(table)
            if self.engine == "sqlite":
                _sqlite_rules(table)
            for key in ("uniques", "indexes", "foreign_keys", "checks"):
                table[key].sort(key=lambda item: (item.get("name") or "", repr(sorted(item.items()))))
        return {
            "engine": self.engine,
            "tables": dict(sorted(self.tables.items())),
            "enums": dict(sorted(self.enums.items())),
            "sequences": dict(sorted(self.sequences.items())),
            "views": dict(sorted(self.views.items())),
        }


def _bare_identifier(text: str) -> str | None:
    """`"Mixed"`, `` `select` `` or `name` → the identifier itself; None for an expression."""
    match = _IDENTIFIER.match(text.strip())
    return match.group(1) or match.group(2) or match.group(3) if match else None


def _mysql_rules(table: Table) -> None:
    """MySQL: unique indexes are unique constraints, FKs create their own index (remembered on the FK, to
    drop it with the FK), MariaDB JSON is checked LONGTEXT."""
    fk_indexes = {(tuple(fk["columns"]), name): fk for fk in table["foreign_keys"]
                  for name in (fk["name"], fk["columns"][0])}
    kept = []
    for index in table["indexes"]:
        owner = fk_indexes.get((tuple(index["columns"]), index["name"]))
        if index["unique"] and not index["where"]:
            table["uniques"].append({"name": index["name"], "columns": index["columns"]})
        elif owner is not None:
            owner["index"] = index["name"]
        else:
            kept.append(index)
    table["indexes"] = kept
    json_checks = {expression_key(f"json_valid({c['name']})"): c for c in table["columns"]}
    checks = []
    for check in table["checks"]:
        column = json_checks.get(expression_key(check["sqltext"]))
        if column is not None and column["type"] in {"longtext", "json"}:
            column["type"] = "json"
        else:
            checks.append(check)
    table["checks"] = checks


def _sqlite_rules(table: Table) -> None:
    """SQLite: a lone INTEGER primary key is the rowid, autoincrementing whatever the source says."""
    pk = table["primary_key"]
    for column in table["columns"]:
        column["autoincrement"] = bool(pk and pk["columns"] == [column["name"]] and column["type"] == "integer")
        if column["autoincrement"]:
            column["default"] = None
