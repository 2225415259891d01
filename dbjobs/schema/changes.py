"""The typed changes a diff produces, their inverses, and applying them to snapshot data.

`apply_changes` is the pure meaning of a change list: the property tests check that applying
`diff(a, b)` to `a` gives `b`, and that the inverted list brings `b` back to `a`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from dbjobs.schema.normalize import expression_key
from dbjobs.schema.snapshot import Snapshot

PAIRS = {
    "create_table": "drop_table", "add_column": "drop_column", "add_unique": "drop_unique", "add_index": "drop_index",
    "add_fk": "drop_fk", "add_check": "drop_check", "create_enum": "drop_enum", "create_sequence": "drop_sequence",
    "create_view": "drop_view",
}
INVERSE = {**PAIRS, **{v: k for k, v in PAIRS.items()}}
CONSTRAINT_LISTS = {"unique": "uniques", "index": "indexes", "fk": "foreign_keys", "check": "checks"}


def constraint_key(what: str, item: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies a constraint or index regardless of its name."""
    if what == "check":
        return (expression_key(item["sqltext"]),)
    if what == "index":
        return (tuple(expression_key(c) for c in item["columns"]), item["unique"],
                item["where"] and expression_key(item["where"]))
    if what == "fk":
        return (tuple(item["columns"]), item["ref_table"], tuple(item["ref_columns"]), item["on_delete"],
                item["on_update"])
    return (tuple(item["columns"]),)


@dataclass(frozen=True)
class Change:
    """One schema change. `name` is the table (or enum, sequence, view) it applies to;
    `before`/`after` hold the object's definition on each side (None where it does not exist)."""

    kind: str
    name: str
    before: Any = None
    after: Any = None

    def inverted(self) -> Change:
        """The change that undoes this one (renames and alters swap sides)."""
        name = self.before if self.kind == "rename_table" else self.name
        return Change(INVERSE.get(self.kind, self.kind), name, self.after, self.before)

    def to_dict(self) -> dict[str, Any]:
        """JSON form for results and tests."""
        return {"kind": self.kind, "name": self.name, "before": self.before, "after": self.after}

    def describe(self) -> str:
        """A one-line human description, used in migration headers and warnings."""
        target = self.after if self.after is not None else self.before
        label = target.get("name") if isinstance(target, dict) else None
        if self.kind == "rename_table":
            return f"rename table {self.before} to {self.after}"
        if self.kind == "rename_column":
            return f"rename column {self.name}.{self.before['name']} to {self.after['name']}"
        return f"{self.kind.replace('_', ' ')} {self.name}" + (f".{label}" if label else "")


def invert(changes: list[Change]) -> list[Change]:
    """The reverse migration: each change inverted, in reverse order (dependency order stays valid)."""
    return [change.inverted() for change in reversed(changes)]


def apply_changes(snapshot: Snapshot, changes: list[Change]) -> Snapshot:
    """The snapshot that results from applying `changes` (pure: the input is not modified)."""
    data = copy.deepcopy(snapshot.to_dict())
    tables: dict[str, Any] = data["tables"]
    for change in changes:
        kind, name = change.kind, change.name
        if kind == "create_table":
            tables[name] = copy.deepcopy(change.after)
        elif kind == "drop_table":
            del tables[name]
        elif kind == "rename_table":
            tables[change.after] = tables.pop(change.before)
            for fk in _all_fks(tables):
                fk["ref_table"] = change.after if fk["ref_table"] == change.before else fk["ref_table"]
        elif kind == "add_column":
            tables[name]["columns"].append(copy.deepcopy(change.after))
        elif kind == "drop_column":
            tables[name]["columns"] = [c for c in tables[name]["columns"] if c["name"] != change.before["name"]]
        elif kind in ("alter_column", "rename_column"):
            columns = tables[name]["columns"]
            at = next(i for i, c in enumerate(columns) if c["name"] == change.before["name"])
            columns[at] = copy.deepcopy(change.after)
            if kind == "rename_column":
                _rename_references(tables, name, change.before["name"], change.after["name"])
        elif kind == "set_primary_key":
            tables[name]["primary_key"] = copy.deepcopy(change.after)
        elif kind.partition("_")[2] in CONSTRAINT_LISTS:
            verb, _, what = kind.partition("_")
            items = tables[name][CONSTRAINT_LISTS[what]]
            if verb == "add":
                items.append(copy.deepcopy(change.after))
            else:
                key = constraint_key(what, change.before)
                at = next(i for i, item in enumerate(items) if constraint_key(what, item) == key)
                del items[at]
        elif kind in ("create_enum", "alter_enum"):
            data["enums"][name] = list(change.after)
        elif kind == "create_sequence":
            data["sequences"][name] = copy.deepcopy(change.after)
        elif kind == "create_view":
            data["views"][name] = change.after
        elif kind in ("drop_enum", "drop_sequence", "drop_view"):
            del data[kind.partition("_")[2] + "s"][name]
        else:
            raise ValueError(f"unknown change kind {kind!r}")
    return Snapshot.from_dict(data)


def _all_fks(tables: dict[str, Any]) -> list[dict[str, Any]]:
    return [fk for table in tables.values() for fk in table["foreign_keys"]]


def _rename_references(tables: dict[str, Any], table: str, old: str, new: str) -> None:
    """What the engine does on RENAME COLUMN: keys, indexes and referencing FKs follow the column."""
    def swap(names: list[str]) -> list[str]:
        return [new if n == old else n for n in names]

    own = tables[table]
    if own["primary_key"]:
        own["primary_key"]["columns"] = swap(own["primary_key"]["columns"])
    for item in own["uniques"] + own["indexes"] + own["foreign_keys"]:
        item["columns"] = swap(item["columns"])
    for fk in _all_fks(tables):
        if fk["ref_table"] == table:
            fk["ref_columns"] = swap(fk["ref_columns"])

