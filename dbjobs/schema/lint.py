"""Pure review of a change list: which changes lose data, depend on the data, or lock tables.

Destructive warnings gate `apply-migration` behind `--allow-destructive`; the others are
written into the migration header for the person who reviews it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from dbjobs.schema.changes import Change

DESTRUCTIVE, DATA, LOCKING, RENAME, UNSUPPORTED = "destructive", "data", "locking", "rename", "unsupported"
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


def data_dependent(change: Change) -> str | None:
    """What existing data would make `change` fail ("rows", "NULLs", ...), or None if data cannot break it."""
    kind, after = change.kind, change.after
    if kind == "add_column" and not after["nullable"] and after["default"] is None and not after["autoincrement"]:
        return "rows (the new NOT NULL column has no default)"
    if kind == "alter_column" and change.before["nullable"] and not after["nullable"]:
        return f"NULLs in {after['name']}"
    if kind == "add_unique" or (kind == "add_index" and after["unique"]):
        return f"duplicate ({', '.join(after['columns'])})"
    if kind == "add_check":
        return "rows that break it"
    if kind == "add_fk":
        return f"rows without a parent in {after['ref_table']}"
    return None


def lint(changes: list[Change], engine: str, breaks: Mapping[int, bool] | None = None) -> list[LintWarning]:
    """Warnings for `changes` on `engine`.

    `breaks[i]` says whether the data now in the database makes change `i` fail (see
    `probe.probe_data`); where it is unknown the warning says "fails if", where it is known
    to be fine there is no warning.
    """
    warnings: list[LintWarning] = []
    known = breaks or {}

    def warn(category: str, message: str) -> None:
        warnings.append(LintWarning(category, message))

    for i, change in enumerate(changes):
        kind, table, before, after = change.kind, change.name, change.before, change.after
        spoiler = data_dependent(change)
        if spoiler and known.get(i) is not False:
            verdict = "will fail" if known.get(i) else "fails if"
            warn(DATA, f"{change.describe()}: {verdict} {table} holds {spoiler}")
        if kind == "drop_table":
            warn(DESTRUCTIVE, f"drops table {table} and all its rows")
        elif kind == "drop_column":
            warn(DESTRUCTIVE, f"drops column {table}.{before['name']} and its data")
        elif kind in ("rename_column", "rename_table"):
            warn(RENAME, f"{change.describe()}: detected by identical shape; if this is really a drop and an add, "
                         "edit the migration")
        elif kind == "alter_enum" and set(before) - set(after):
            warn(DESTRUCTIVE, f"removes values {sorted(set(before) - set(after))} from enum {table}")
        elif kind == "alter_column":
            _type_warnings(engine, table, before, after, warn)
        elif kind == "add_index" and engine == "postgresql":
            warn(LOCKING, f"{change.describe()}: CREATE INDEX blocks writes to {table} while it builds; "
                          "on a busy table create it CONCURRENTLY outside this migration")
        if engine == "sqlite" and kind in ("alter_column", "drop_column", "set_primary_key", "add_unique",
                                           "drop_unique", "add_fk", "drop_fk", "add_check", "drop_check"):
            warn(LOCKING, f"SQLite rebuilds table {table}: all its rows are copied inside the transaction")
    return list(dict.fromkeys(warnings))


def _type_warnings(engine: str, table: str, before: dict, after: dict, warn) -> None:  # type: ignore[no-untyped-def, type-arg]
    column = f"{table}.{before['name']}"
    if before["type"] != after["type"]:
        if not is_widening(before["type"], after["type"]):
            warn(DESTRUCTIVE, f"changes {column} from {before['type']} to {after['type']}: values may be cut or lost")
        if engine in ("postgresql", "mysql"):
            warn(LOCKING, f"changes the type of {column}: may rewrite {table} under an exclusive lock")

