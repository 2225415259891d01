"""Pure comparison of two snapshots into an ordered list of typed changes.

Objects are matched by what they are, not by their names (an unnamed constraint in the
models gets a generated name in the database), so only real differences become changes.
The order respects dependencies: renames first, then drops (views, foreign keys, indexes,
tables children-first), then creations (enums, tables parents-first), alterations, and the
objects that depend on them. A dropped and an added column (or table) of the same shape
are reported as a rename, never silently as drop+add; lint warns about every rename.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from dbjobs.schema.changes import CONSTRAINT_LISTS, Change, apply_changes, constraint_key, invert
from dbjobs.schema.snapshot import Snapshot

COLUMN_ATTRS = ("type", "nullable", "default", "autoincrement", "comment")
NAME_PREFIX = {"unique": "uq", "index": "ix", "fk": "fk", "check": "ck"}


def comparable(snapshot: Snapshot) -> dict[str, Any]:
    """The snapshot with names of constraints and column order left out: equal iff `diff` is empty."""
    tables = {}
    for name, table in snapshot.tables.items():
        pk = table["primary_key"]
        tables[name] = {
            "columns": sorted(table["columns"], key=lambda c: c["name"]),
            "primary_key": tuple(pk["columns"]) if pk else None,
            "comment": table.get("comment"),
            **{what: sorted((constraint_key(what, item) for item in table[key]), key=repr)
               for what, key in CONSTRAINT_LISTS.items()},
        }
    return {"tables": tables, "enums": snapshot.enums, "sequences": snapshot.sequences, "views": snapshot.views}


def shape_fingerprint(snapshot: Snapshot) -> str:
    """SHA-256 of `comparable`: equal for two databases with the same schema whatever their constraint names,
    so a migration can check it is applied to the schema it was generated from."""
    canonical = json.dumps(comparable(snapshot), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def diff(before: Snapshot, after: Snapshot) -> list[Change]:
    """The ordered changes that turn `before` into `after` (empty when they are the same schema)."""
    renames = _detect_renames(before, after)
    mid = apply_changes(before, renames) if renames else before
    dropped = sorted(set(mid.tables) - set(after.tables))
    created = sorted(set(after.tables) - set(mid.tables))
    kept = sorted(set(mid.tables) & set(after.tables))
    per_table = [_table_changes(name, mid.tables[name], after.tables[name]) for name in kept
                 if mid.tables[name] != after.tables[name]]

    def phase(*kinds: str) -> list[Change]:
        return [c for changes in per_table for c in changes if c.kind in kinds]

    views_gone = [Change("drop_view", n, v, None) for n, v in mid.views.items() if after.views.get(n) != v]
    views_new = [Change("create_view", n, None, v) for n, v in after.views.items() if mid.views.get(n) != v]
    return [
        *renames,
        *views_gone,
        *phase("drop_fk"),
        *phase("drop_index", "drop_unique", "drop_check"),
        *invert(_create_tables(mid.tables, dropped)),
        *_named_objects("enum", mid.enums, after.enums, alter=True),
        *_named_objects("sequence", mid.sequences, after.sequences, alter=False),
        *_create_tables(after.tables, created),
        *phase("add_column", "alter_column", "drop_column", "set_primary_key", "set_table_comment"),
        *phase("add_unique", "add_index", "add_check"),
        *phase("add_fk"),
        *_dropped_named_objects("enum", mid.enums, after.enums),
        *_dropped_named_objects("sequence", mid.sequences, after.sequences),
        *views_new,
    ]


def _signature(column: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(column[a] for a in COLUMN_ATTRS)


def _unique_matches(gone: dict[str, Any], new: dict[str, Any], key) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """Pairs (old, new) whose key is shared by exactly one gone and one new item: unambiguous renames."""
    gone_by: dict[Any, list[str]] = {}
    new_by: dict[Any, list[str]] = {}
    for name, item in gone.items():
        gone_by.setdefault(key(item), []).append(name)
    for name, item in new.items():
        new_by.setdefault(key(item), []).append(name)
    return sorted((g[0], new_by[k][0]) for k, g in gone_by.items() if len(g) == 1 and len(new_by.get(k, [])) == 1)


def _detect_renames(before: Snapshot, after: Snapshot) -> list[Change]:
    gone = {n: before.tables[n] for n in set(before.tables) - set(after.tables)}
    new = {n: after.tables[n] for n in set(after.tables) - set(before.tables)}
    shape = {n: repr(comparable(Snapshot(before.engine, {"t": t}))) for n, t in {**gone, **new}.items()}
    changes = [Change("rename_table", old, old, new_name)
               for old, new_name in _unique_matches({n: n for n in gone}, {n: n for n in new}, shape.__getitem__)]
    renamed = {c.after: c.before for c in changes}
    for name in sorted(set(after.tables) & (set(before.tables) | set(renamed))):
        old_table = before.tables[renamed.get(name, name)]
        if old_table["columns"] == after.tables[name]["columns"]:
            continue
        old_cols = {c["name"]: c for c in old_table["columns"]}
        new_cols = {c["name"]: c for c in after.tables[name]["columns"]}
        gone_cols = {n: c for n, c in old_cols.items() if n not in new_cols}
        added_cols = {n: c for n, c in new_cols.items() if n not in old_cols}
        for old, new_name in _unique_matches(gone_cols, added_cols, _signature):
            changes.append(Change("rename_column", name, old_cols[old], {**old_cols[old], "name": new_name}))
    return changes


def _generated_name(what: str, table: str, item: dict[str, Any]) -> str:
    """A deterministic name for an unnamed constraint, within the 63-character identifier limit."""
    base = f"{NAME_PREFIX[what]}_{table}_{'_'.join(item.get('columns') or ['expr'])}"
    if what == "check" or len(base) > 63:
        digest = hashlib.sha256(repr(constraint_key(what, item)).encode()).hexdigest()[:8]
        base = f"{base[:50]}_{digest}"
    return base


def _table_changes(name: str, old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    changes: list[Change] = []
    if old["columns"] != new["columns"]:
        old_cols = {c["name"]: c for c in old["columns"]}
        new_cols = {c["name"]: c for c in new["columns"]}
        changes += [Change("add_column", name, None, c) for n, c in new_cols.items() if n not in old_cols]
        changes += [Change("alter_column", name, old_cols[n], c) for n, c in new_cols.items()
                    if n in old_cols and old_cols[n] != c]
        changes += [Change("drop_column", name, c, None) for n, c in old_cols.items() if n not in new_cols]
    if old.get("comment") != new.get("comment"):
        changes.append(Change("set_table_comment", name, old.get("comment"), new.get("comment")))
    old_pk, new_pk = old["primary_key"], new["primary_key"]
    if (old_pk and old_pk["columns"]) != (new_pk and new_pk["columns"]):
        changes.append(Change("set_primary_key", name, old_pk, new_pk))
    drops: list[Change] = []
    adds: list[Change] = []
    for what, key in CONSTRAINT_LISTS.items():
        if old[key] == new[key]:
            continue
        gone, added = _unmatched(what, old[key], new[key])
        drops += [Change(f"drop_{what}", name, item, None) for item in gone]
        adds += [Change(f"add_{what}", name, None, item) for item in _distinct_names(what, name, added)]
    return changes + drops + _free_names(old, drops, adds)


def _free_names(old: dict[str, Any], drops: list[Change], adds: list[Change]) -> list[Change]:
    """Rename added constraints whose name a kept object of the table already uses.

    Objects are matched by shape, so a kept object may carry the name the models give to a new
    one (MySQL: a unique index `ix_a` kept as the unique constraint, a plain index `ix_a` added).
    """
    dropped = {c.before.get("name") for c in drops}
    taken = {item.get("name") for key in CONSTRAINT_LISTS.values() for item in old[key]} - dropped
    result = []
    for change in adds:
        wanted = change.after["name"]
        free, n = wanted, 1
        while free in taken:
            n += 1
            free = f"{wanted}_{n}"
        taken.add(free)
        renamed = Change(change.kind, change.name, None, {**change.after, "name": free})
        result.append(change if free == wanted else renamed)
    return result


def _unmatched(what: str, olds: list[dict[str, Any]], news: list[dict[str, Any]]
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Items only on one side, counting duplicates (MySQL can hold a unique constraint and a unique
    index on the same columns): same-named items are matched first."""
    by_key: dict[Any, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    for side, items in ((0, olds), (1, news)):
        for item in items:
            by_key.setdefault(constraint_key(what, item), ([], []))[side].append(item)
    gone, added = [], []
    for old_items, new_items in by_key.values():
        if len(old_items) == len(new_items):
            continue
        names = {i.get("name") for i in old_items} & {i.get("name") for i in new_items}
        gone += _same_names_first(old_items, names)[len(new_items):]
        added += _same_names_first(new_items, names)[len(old_items):]
    return gone, added


def _same_names_first(items: list[dict[str, Any]], names: set[Any]) -> list[dict[str, Any]]:
    return sorted(items, key=lambda i: (i.get("name") not in names, i.get("name") or ""))


def _distinct_names(what: str, table: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Name the unnamed items, suffixing a generated name that repeats."""
    seen: dict[str, int] = {}
    named = []
    for item in items:
        if item.get("name"):
            named.append(item)
            continue
        base = _generated_name(what, table, item)
        seen[base] = seen.get(base, 0) + 1
        named.append({**item, "name": base if seen[base] == 1 else f"{base}_{seen[base]}"})
    return named


def _create_tables(tables: dict[str, Any], names: list[str]) -> list[Change]:
    """CREATE TABLE changes parents first, FKs inline where the parent exists; cycles get separate FKs."""
    pending = set(names)
    done: set[str] = set()
    creates: list[Change] = []
    deferred: list[Change] = []
    while pending:
        ready = sorted(n for n in pending if all(fk["ref_table"] not in pending - {n}
                                                 for fk in tables[n]["foreign_keys"]))
        pick = ready[0] if ready else sorted(pending)[0]
        table = tables[pick]
        inline = [fk for fk in table["foreign_keys"] if fk["ref_table"] not in pending - {pick}]
        later = [fk for fk in table["foreign_keys"] if fk not in inline]
        named = {**table, "foreign_keys": inline}
        for what, key in CONSTRAINT_LISTS.items():
            named[key] = _distinct_names(what, pick, named[key])
        creates.append(Change("create_table", pick, None, named))
        deferred += [Change("add_fk", pick, None, fk) for fk in _distinct_names("fk", pick, later)]
        pending.discard(pick)
        done.add(pick)
    return creates + deferred


def _named_objects(what: str, old: dict[str, Any], new: dict[str, Any], *, alter: bool) -> list[Change]:
    changes = []
    for name, value in new.items():
        if name not in old:
            changes.append(Change(f"create_{what}", name, None, value))
        elif old[name] != value:
            if alter:
                changes.append(Change(f"alter_{what}", name, old[name], value))
            else:
                changes += [Change(f"drop_{what}", name, old[name], None), Change(f"create_{what}", name, None, value)]
    return changes


def _dropped_named_objects(what: str, old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    return [Change(f"drop_{what}", name, value, None) for name, value in old.items() if name not in new]
