"""Pure SQLite schema diff: two object maps (from `catalog.sqlite_objects`) → ordered statements.

Every object is written back with the CREATE text SQLite holds for it. A table that only gained
columns the way `ALTER TABLE ADD COLUMN` writes them (and that ADD COLUMN allows) gets them so;
any other change rebuilds it the way SQLite documents it (new table, copy of the stored columns,
drop, rename), with `legacy_alter_table` on so the rename leaves the views and triggers that name the table as they
are; the table's own indexes and triggers, which go with the old table, are then re-created from
the desired schema. An AUTOINCREMENT table keeps its counter. A virtual table cannot be rebuilt
(its rows live in its module): a change to one is reported as unsupported, never dropped.
"""

from __future__ import annotations

from typing import Any

from dbjobs.schema.object_plan import Objects, Plan, changed
from dbjobs.schema.render import REBUILD_PREFIX
from dbjobs.schema.sqlparse import code_find, element_spans

_NOT_ADDABLE = ("PRIMARY", "UNIQUE", "GENERATED", "AS", "STORED", "REFERENCES", "CURRENT_TIME", "CURRENT_DATE",
                "CURRENT_TIMESTAMP")


def qi(name: str) -> str:
    """A SQLite identifier in double quotes."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def create_table(name: str, table: dict[str, Any]) -> str:
    """The CREATE text of a table under `name` (a virtual table's text is kept whole)."""
    return table["body"] if table["virtual"] else f"CREATE TABLE {qi(name)}{table['body']}"


def plan(before: Objects, after: Objects) -> Plan:
    """The steps that turn the schema `before` into `after`."""
    result = Plan()
    gone, new, differ = changed(before, after, "table")
    rebuilt = []
    for obj_id in differ:
        if before[obj_id]["virtual"] or after[obj_id]["virtual"]:
            result.unsupported.append(f"virtual table {before[obj_id]['name']} changed: its rows live in its "
                                      "module and cannot be copied by a rebuild; migrate it by hand")
        else:
            rebuilt.append(obj_id)
    views_gone, views_new, views_differ = changed(before, after, "view")
    remade = {before[i]["name"] for i in rebuilt + views_differ + gone + views_gone}
    _drop_attached(result, before, after, "trigger", remade)
    for obj_id in views_gone + views_differ:
        result.add("drop", obj_id, "view", [f"DROP VIEW {qi(before[obj_id]['name'])}"])
    _drop_attached(result, before, after, "index", remade)
    for obj_id in gone:
        name = before[obj_id]["name"]
        result.add("drop", obj_id, "table", [f"DROP TABLE {qi(name)}"])
        result.destructive.append(f"drops table {name} and all its rows")
    for obj_id in new:
        result.add("create", obj_id, "table", [create_table(after[obj_id]["name"], after[obj_id])])
    for obj_id in list(rebuilt):
        added = appended_columns(before[obj_id], after[obj_id])
        if added is None:
            _rebuild(result, before[obj_id], after[obj_id])
            continue
        rebuilt.remove(obj_id)
        name = before[obj_id]["name"]
        for definition, column in added:
            result.add("alter", obj_id, "table", [f"ALTER TABLE {qi(name)} ADD COLUMN {definition}"],
                       [f"add column {name}.{column}"])
    rebuilt_names = {before[i]["name"] for i in rebuilt}
    _create_attached(result, before, after, "index", rebuilt_names)
    for obj_id in views_new + views_differ:
        result.add("create", obj_id, "view", [after[obj_id]["sql"]])
    _create_attached(result, before, after, "trigger", rebuilt_names | {after[i]["name"] for i in views_differ})
    return result


def appended_columns(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str]] | None:
    """(definition, name) of the columns `new` adds to `old` exactly as `ALTER TABLE ADD COLUMN` writes them
    (`, <definition>` after the last column), or None when a rebuild is needed: another change, or a column
    ADD COLUMN refuses (key, generated, non-constant default, NOT NULL without default)."""
    count = len(old["columns"])
    names = [c["name"] for c in new["columns"]]
    old_spans, new_spans = element_spans(old["body"]), element_spans(new["body"])
    if not count or len(old_spans) < count or names[:count] != [c["name"] for c in old["columns"]] or \
            len(names) == count or len(new_spans) != len(old_spans) + len(names) - count:
        return None
    definitions = [new["body"][a:b] for a, b in new_spans[count:len(names)]]
    cut = old_spans[count - 1][1]
    expected = old["body"][:cut] + "".join(f", {d}" for d in definitions) + old["body"][cut:]
    if new["body"] != expected or not all(_addable(d) for d in definitions):
        return None
    return list(zip(definitions, names[count:], strict=True))


def _addable(definition: str) -> bool:
    if any(code_find(definition, word) >= 0 for word in _NOT_ADDABLE):
        return False
    default = code_find(definition, "DEFAULT")
    if default >= 0 and definition[default + 7:].lstrip().startswith("("):
        return False
    return not (code_find(definition, "NOT") >= 0 and default < 0)


def _drop_attached(result: Plan, before: Objects, after: Objects, kind: str, remade: set[str]) -> None:
    """Drop the indexes or triggers that change or go, except those that go with their table or view."""
    gone, _, differ = changed(before, after, kind)
    for obj_id in gone + differ:
        if before[obj_id]["table"] not in remade:
            result.add("drop", obj_id, kind, [f"DROP {kind.upper()} {qi(before[obj_id]['name'])}"])


def _create_attached(result: Plan, before: Objects, after: Objects, kind: str, remade: set[str]) -> None:
    """Create the new and changed indexes or triggers, and all of those of the tables and views re-created."""
    _, new, differ = changed(before, after, kind)
    wanted = set(new + differ) | {i for i, o in after.items() if o["kind"] == kind and o["table"] in remade}
    for obj_id in sorted(wanted):
        result.add("create", obj_id, kind, [after[obj_id]["sql"]])


def _rebuild(result: Plan, old: dict[str, Any], new: dict[str, Any]) -> None:
    """SQLite's recipe for the ALTERs it lacks: the new table beside the old one, the rows copied, a swap."""
    name = old["name"]
    temp = REBUILD_PREFIX + name
    stored_old = [c["name"] for c in old["columns"] if not c["generated"]]
    stored_new = {c["name"] for c in new["columns"] if not c["generated"]}
    copied = [c for c in stored_old if c in stored_new]
    lost = [c for c in stored_old if c not in stored_new]
    columns = ", ".join(qi(c) for c in copied)
    statements = ["PRAGMA legacy_alter_table = ON", create_table(temp, new)]
    if copied:
        statements.append(f"INSERT INTO {qi(temp)} ({columns}) SELECT {columns} FROM {qi(name)}")
    if old["autoincrement"] and new["autoincrement"]:
        statements += [f"DELETE FROM sqlite_sequence WHERE name = {literal(temp)}",
                       f"INSERT INTO sqlite_sequence (name, seq) SELECT {literal(temp)}, seq FROM sqlite_sequence "
                       f"WHERE name = {literal(name)}"]
    statements += [f"DROP TABLE {qi(name)}", f"ALTER TABLE {qi(temp)} RENAME TO {qi(name)}",
                   "PRAGMA legacy_alter_table = OFF"]
    details = [f"rebuild table {name}"] + [f"drop column {name}.{c}" for c in lost]
    result.add("alter", f"table:{name}", "table", statements, details)
    result.destructive += [f"drops column {name}.{c} and its data" for c in lost]
    result.locking.append(f"SQLite rebuilds table {name}: all its rows are copied inside the transaction")
