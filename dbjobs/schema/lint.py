"""Pure review of a change list: which changes lose data, depend on the data, or lock tables.

Destructive warnings gate `apply-migration` behind `--allow-destructive`; the others are
written into the migration header for the person who reviews it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from dbjobs.schema.changes import Change

DESTRUCTIVE, DATA, LOCKING, RENAME = "destructive", "data", "locking", "rename"
INTEGER_RANK = {"smallint": 1, "integer": 2, "int": 2, "mediumint": 2, "bigint": 3}
TEXT_TYPES = {"text", "longtext", "mediumtext"}
_SIZED = re.compile(r"^([a-z ]+)\((\d+)(?:,(\d+))?\)$")


@dataclass(frozen=True)
class LintWarning:
    """One finding: its category, and a sentence for the reviewer."""

    category: str
    message: str

    def to_dict(self) -> dict[str, str]:
        """JSON form for results."""
        return asdict(self)


def is_widening(old: str, new: str) -> bool:
    """True when every value of type `old` fits in `new` (longer varchar, bigger integer, to text)."""
    if old == new or new in TEXT_TYPES:
        return True
    if old in INTEGER_RANK and new in INTEGER_RANK:
        return INTEGER_RANK[new] >= INTEGER_RANK[old]
    if old in INTEGER_RANK and new.startswith(("numeric", "decimal")):
        return True
    old_sized, new_sized = _SIZED.match(old), _SIZED.match(new)
    if old_sized and new_sized and old_sized.group(1) == new_sized.group(1):
        old_p, old_s = int(old_sized.group(2)), int(old_sized.group(3) or 0)
        new_p, new_s = int(new_sized.group(2)), int(new_sized.group(3) or 0)
        return new_p - new_s >= old_p - old_s and new_s >= old_s
    return bool(old_sized and old_sized.group(1) in {"varchar", "char", "character varying"} and new in TEXT_TYPES)


def lint(changes: list[Change], engine: str, row_counts: dict[str, int] | None = None) -> list[LintWarning]:
    """Warnings for `changes` on `engine`; `row_counts` (when known) silences data warnings on empty tables."""
    warnings: list[LintWarning] = []

    def has_rows(table: str) -> bool:
        return row_counts is None or row_counts.get(table, 1) > 0

    def warn(category: str, message: str) -> None:
        warnings.append(LintWarning(category, message))

    for change in changes:
        kind, table, before, after = change.kind, change.name, change.before, change.after
        if kind == "drop_table":
            warn(DESTRUCTIVE, f"drops table {table} and all its rows")
        elif kind == "drop_column":
            warn(DESTRUCTIVE, f"drops column {table}.{before['name']} and its data")
        elif kind in ("rename_column", "rename_table"):
            warn(RENAME, f"{change.describe()}: detected by identical shape; if this is really a drop and an add, "
                         "edit the migration")
        elif kind == "alter_enum" and set(before) - set(after):
            warn(DESTRUCTIVE, f"removes values {sorted(set(before) - set(after))} from enum {table}")
        elif kind == "add_column" and not after["nullable"] and after["default"] is None \
                and not after["autoincrement"] and has_rows(table):
            warn(DATA, f"adds NOT NULL column {table}.{after['name']} without a default: fails if {table} has rows")
        elif kind == "alter_column":
            _alter_warnings(engine, table, before, after, has_rows(table), warn)
        elif kind in ("add_unique", "add_check", "add_fk") and has_rows(table):
            what = {"add_unique": "duplicates", "add_check": "rows that break it", "add_fk": "orphan rows"}[kind]
            warn(DATA, f"{change.describe()}: fails if {table} already holds {what}")
        elif kind == "add_index":
            if after["unique"] and has_rows(table):
                warn(DATA, f"{change.describe()}: unique index fails if {table} already holds duplicates")
            if engine == "postgresql" and has_rows(table):
                warn(LOCKING, f"{change.describe()}: CREATE INDEX blocks writes to {table} while it builds; "
                              "on a busy table create it CONCURRENTLY outside this migration")
        if engine == "sqlite" and kind in ("alter_column", "drop_column", "set_primary_key", "add_unique",
                                           "drop_unique", "add_fk", "drop_fk", "add_check", "drop_check"):
            warn(LOCKING, f"{change.describe()}: SQLite rebuilds {table} (copy of all rows inside the transaction)")
    return list(dict.fromkeys(warnings))


def _alter_warnings(engine: str, table: str, before: dict, after: dict, has_rows: bool, warn) -> None:  # type: ignore[no-untyped-def, type-arg]
    column = f"{table}.{before['name']}"
    if before["type"] != after["type"]:
        if not is_widening(before["type"], after["type"]):
            warn(DESTRUCTIVE, f"changes {column} from {before['type']} to {after['type']}: values may be cut or lost")
        if engine in ("postgresql", "mysql"):
            warn(LOCKING, f"changes the type of {column}: may rewrite {table} under an exclusive lock")
    if before["nullable"] and not after["nullable"] and has_rows:
        warn(DATA, f"makes {column} NOT NULL: fails if {table} holds NULLs there")


def is_destructive(warnings: list[LintWarning]) -> bool:
    """Whether applying needs `--allow-destructive`."""
    return any(w.category == DESTRUCTIVE for w in warnings)
