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
        if self.kind == "alter_column":
            altered = ", ".join(f"{attr} {self.before[attr]!r} -> {self.after[attr]!r}" for attr in self.after
                                if self.before.get(attr) != self.after[attr])
            return f"alter column {self.name}.{self.after['name']} ({altered})"
        return f"{self.kind.replace('_', ' ')} {self.name}" + (f".{label}" if label else "")


def invert(changes: list[Change]) -> list[Change]:
    """The reverse migration: each change inverted, in reverse order (dependency order stays valid)."""
    return [change.inverted() for change in reversed(changes)]


class _Tables(dict):  # type: ignore[type-arg]
    """The snapshot's tables, copied on first write so applying a few changes to a big schema stays cheap."""

    def __init__(self, tables: dict[str, Any]) -> None:
        super().__init__(tables)
        self.owned: set[str] = set()

    def own(self, name: str) -> dict[str, Any]:
        if name not in self.owned:
            self[name] = copy.deepcopy(self[name])
            self.owned.add(name)
        return self[name]

    def referencing(self, table: str) -> list[dict[str, Any]]:
        """The tables with a foreign key to `table`, owned for writing."""
        return [self.own(n) for n, t in list(self.items()) if any(fk["ref_table"] == table for fk in t["foreign_keys"])]


def apply_changes(snapshot: Snapshot, changes: list[Change]) -> Snapshot:
    """The snapshot that results from applying `changes` (pure: the input is not modified)."""
    tables = _Tables(snapshot.tables)
    data: dict[str, Any] = {"enums": dict(snapshot.enums), "sequences": dict(snapshot.sequences),
                            "views": dict(snapshot.views)}
    for change in changes:
        kind, name = change.kind, change.name
        if kind == "create_table":
            tables[name] = copy.deepcopy(change.after)
            tables.owned.add(name)
        elif kind == "drop_table":
            del tables[name]
        elif kind == "rename_table":
            tables.own(change.before)
            tables[change.after] = tables.pop(change.before)
            tables.owned.add(change.after)
            for table in tables.referencing(change.before):
                for fk in table["foreign_keys"]:
                    fk["ref_table"] = change.after if fk["ref_table"] == change.before else fk["ref_table"]
        elif kind == "add_column":
            tables.own(name)["columns"].append(copy.deepcopy(change.after))
        elif kind == "drop_column":
            table = tables.own(name)
            table["columns"] = [c for c in table["columns"] if c["name"] != change.before["name"]]
        elif kind in ("alter_column", "rename_column"):
            columns = tables.own(name)["columns"]
            at = next(i for i, c in enumerate(columns) if c["name"] == change.before["name"])
            columns[at] = copy.deepcopy(change.after)
            if kind == "rename_column":
                _rename_references(tables, name, change.before["name"], change.after["name"])
        elif kind == "set_primary_key":
            tables.own(name)["primary_key"] = copy.deepcopy(change.after)
        elif kind == "set_table_comment":
            tables.own(name)["comment"] = change.after
        elif kind.partition("_")[2] in CONSTRAINT_LISTS:
            verb, _, what = kind.partition("_")
            items = tables.own(name)[CONSTRAINT_LISTS[what]]
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
    return Snapshot(snapshot.engine, dict(tables), data["enums"], data["sequences"], data["views"])


def _rename_references(tables: _Tables, table: str, old: str, new: str) -> None:
    """What the engine does on RENAME COLUMN: keys, indexes and referencing FKs follow the column."""
    def swap(names: list[str]) -> list[str]:
        return [new if n == old else n for n in names]

    own = tables.own(table)
    if own["primary_key"]:
        own["primary_key"]["columns"] = swap(own["primary_key"]["columns"])
    for item in own["uniques"] + own["indexes"] + own["foreign_keys"]:
        item["columns"] = swap(item["columns"])
    for referencing in tables.referencing(table):
        for fk in referencing["foreign_keys"]:
            if fk["ref_table"] == table:
                fk["ref_columns"] = swap(fk["ref_columns"])

