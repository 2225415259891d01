"""Pure MySQL/MariaDB schema diff: two object maps (from `catalog.mysql_objects`) → ordered statements.

Everything is written with the server's own text: a new table is its `SHOW CREATE TABLE`, a
changed column is `MODIFY`'d with its full definition and moved with `FIRST`/`AFTER` to where the
desired schema has it, a changed key is dropped and added with its exact line. All changes to one
table go into one `ALTER TABLE` (the server checks the result as a whole), so a primary key can
move to other columns, gain an AUTO_INCREMENT column or lose its column in one step. Foreign keys
are dropped before everything and added after everything, so tables never wait for each other.
Views are created after the views they read; triggers of one table, timing and event are
re-created together, in their order; a change of the table's default charset re-states every
text column, which the server would otherwise leave in the old one.
"""

from __future__ import annotations

from typing import Any

from dbjobs.schema.catalog.mysql_objects import qi
from dbjobs.schema.lint import is_widening
from dbjobs.schema.normalize import normalize_type
from dbjobs.schema.object_plan import Objects, Plan, changed, dependency_order
from dbjobs.schema.sqlparse import code_identifiers

ROUTINES = ("function", "procedure")
RESET = {"COMMENT": "COMMENT=''"}
CHARSET_OPTIONS = ("CHARSET", "COLLATE", "CHARACTER SET")


def plan(before: Objects, after: Objects) -> Plan:
    """The steps that turn the schema `before` into `after`."""
    result = Plan()
    gone, new, differ = changed(before, after, "table")
    gone_tables = {before[i]["name"] for i in gone}
    triggers_out, triggers_in = _trigger_groups(before, after, gone_tables)
    for obj_id in ("event",):
        _drop(result, before, after, obj_id)
    for obj_id in triggers_out:
        result.add("drop", obj_id, "trigger", [f"DROP TRIGGER {qi(before[obj_id]['name'])}"])
    _drop(result, before, after, "view")
    for kind in ROUTINES:
        _drop(result, before, after, kind)
    fks_out, fks_in = _foreign_keys(before, after, _modified_columns(before, after, differ))
    for table, key in fks_out:
        result.add("drop", f"fk:{table}.{key['name']}", "foreign key",
                   [f"ALTER TABLE {qi(table)} DROP FOREIGN KEY {qi(key['name'])}"])
    for obj_id in gone:
        result.add("drop", obj_id, "table", [f"DROP TABLE {qi(before[obj_id]['name'])}"])
        result.destructive.append(f"drops table {before[obj_id]['name']} and all its rows")
    for obj_id in _drop(result, before, after, "sequence"):
        result.destructive.append(f"drops sequence {before[obj_id]['name']} and its current value")
    _create(result, before, after, "sequence")
    for obj_id in new:
        result.add("create", obj_id, "table", [create_table(after[obj_id])])
    for obj_id in differ:
        _alter_table(result, before[obj_id], after[obj_id])
    for table, key in fks_in:
        result.add("create", f"fk:{table}.{key['name']}", "foreign key",
                   [f"ALTER TABLE {qi(table)} ADD {key['definition']}"])
    for kind in ROUTINES:
        _create(result, before, after, kind)
    _, views_new, views_differ = changed(before, after, "view")
    deps = {i: {f"view:{n}" for n in after[i].get("reads", [])} for i in views_new + views_differ}
    names = {o["name"].lower(): i for i, o in after.items() if o["kind"] == "view"}
    deps = {i: {names[d.split(":", 1)[1]] for d in ds if d.split(":", 1)[1] in names} for i, ds in deps.items()}
    for obj_id in dependency_order(views_new + views_differ, deps):
        result.add("create", obj_id, "view", [after[obj_id]["definition"]])
    for obj_id in triggers_in:
        result.add("create", obj_id, "trigger", [after[obj_id]["definition"]])
    _create(result, before, after, "event")
    return result


def _drop(result: Plan, before: Objects, after: Objects, kind: str) -> list[str]:
    """Drop the objects of `kind` that go or change (they are re-created from the desired text)."""
    gone, _, differ = changed(before, after, kind)
    for obj_id in gone + differ:
        result.add("drop", obj_id, kind, [f"DROP {kind.upper()} {qi(before[obj_id]['name'])}"])
    return gone + differ


def _create(result: Plan, before: Objects, after: Objects, kind: str) -> None:
    _, new, differ = changed(before, after, kind)
    for obj_id in new + differ:
        result.add("create", obj_id, kind, [after[obj_id]["definition"]])


def _trigger_groups(before: Objects, after: Objects, gone_tables: set[str]) -> tuple[list[str], list[str]]:
    """Triggers to drop and to create: every trigger of a (table, timing, event) where one changes, so the
    re-created ones keep their order (a trigger that goes with its dropped table is not dropped)."""
    gone, new, differ = changed(before, after, "trigger")
    def group(obj: dict[str, Any]) -> tuple[str, str, str]:
        return obj["table"], obj["timing"], obj["event"]
    redo = {group(before[i]) for i in gone + differ} | {group(after[i]) for i in new + differ}
    out = [i for i, o in before.items()
           if o["kind"] == "trigger" and group(o) in redo and o["table"] not in gone_tables]
    into = sorted((i for i, o in after.items() if o["kind"] == "trigger" and group(o) in redo),
                  key=lambda i: (group(after[i]), after[i]["order"]))
    return sorted(out), into


def _modified_columns(before: Objects, after: Objects, differ: list[str]) -> dict[str, set[str]]:
    """Per kept table, the (lower-cased) columns whose definition changes: the server refuses to MODIFY a
    column a foreign key uses, so those keys are dropped first and added back last."""
    found: dict[str, set[str]] = {}
    for obj_id in differ:
        olds = {c["name"]: c["definition"] for c in before[obj_id]["columns"]}
        found[before[obj_id]["name"].lower()] = {c["name"].lower() for c in after[obj_id]["columns"]
                                                 if olds.get(c["name"], c["definition"]) != c["definition"]}
    return found


def _uses(table: str, key: dict[str, Any], modified: dict[str, set[str]]) -> bool:
    """Whether a foreign key may name a modified column, of its own table or of the one it references."""
    names = code_identifiers(key["definition"])
    return bool(modified.get(table.lower(), set()) & names) or \
        any(t in names and columns & names for t, columns in modified.items() if t != table.lower())


def _foreign_keys(before: Objects, after: Objects, modified: dict[str, set[str]]
                  ) -> tuple[list[tuple[str, dict]], list[tuple[str, dict]]]:  # type: ignore[type-arg]
    """Foreign keys to drop first (gone, changed, of a dropped table, or on a modified column) and to add
    last (new, changed, or on a modified column)."""
    def fks(objects: Objects) -> dict[tuple[str, str], dict[str, Any]]:
        return {(o["name"], k["name"]): k for o in objects.values() if o["kind"] == "table"
                for k in o["keys"] if k["type"] == "fk"}
    old, new = fks(before), fks(after)
    kept = {(t, n) for (t, n), k in new.items() if old.get((t, n), {}).get("definition") == k["definition"]
            and not _uses(t, k, modified)}
    out = [(t, k) for (t, n), k in sorted(old.items()) if (t, n) not in kept]
    into = [(t, k) for (t, n), k in sorted(new.items()) if (t, n) not in kept]
    return out, into


def create_table(table: dict[str, Any]) -> str:
    """A table's CREATE TABLE as the server showed it, without its foreign keys (added once every table exists)."""
    elements = [c["definition"] for c in table["columns"]]
    elements += [k["definition"] for k in table["keys"] if k["type"] != "fk"] + table["unknown"]
    tail = " ".join(table["options"].values())
    partition = f"\n{table['partition']}" if table["partition"] else ""
    return f"CREATE TABLE {qi(table['name'])} (\n  " + ",\n  ".join(elements) + f"\n) {tail}{partition}"


def _alter_table(result: Plan, old: dict[str, Any], new: dict[str, Any]) -> None:
    name = old["name"]
    obj_id = f"table:{name}"
    if old["unknown"] != new["unknown"]:
        result.unsupported.append(f"table {name}: parts of its definition dbjobs does not read changed "
                                  f"({'; '.join(old['unknown'] + new['unknown'])[:200]}); migrate them by hand")
    details: list[str] = []
    statements = []
    options = _option_clauses(old["options"], new["options"])
    if options:
        statements.append(f"ALTER TABLE {qi(name)} {' '.join(options)}")
        details.append(f"set table options of {name}: {' '.join(options)}")
    recharset = any(old["options"].get(o) != new["options"].get(o) for o in CHARSET_OPTIONS)
    clauses = _key_drops(old, new, name, details)
    clauses += _column_clauses(result, old, new, recharset, details)
    clauses += _key_adds(old, new, name, details)
    if clauses:
        statements.append(f"ALTER TABLE {qi(name)} " + ", ".join(clauses))
    if old["partition"] != new["partition"]:
        statements.append(f"ALTER TABLE {qi(name)} " + (new["partition"] or "REMOVE PARTITIONING"))
        details.append(f"repartition table {name}")
        result.locking.append(f"repartitioning {name} copies all its rows")
    result.add("alter", obj_id, "table", statements, details)


def _option_clauses(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """Table options to set: changed or new ones as the server wrote them, removed ones back to default."""
    clauses = [token for key, token in new.items() if old.get(key) != token]
    clauses += [RESET.get(key, f"{key}=DEFAULT") for key in old if key not in new]
    return clauses


def _non_fk(table: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k["id"]: k for k in table["keys"] if k["type"] != "fk"}


def _index_renames(old: dict[str, Any], new: dict[str, Any]) -> dict[str, str]:
    """Old index id → new index id for an index that only changed its name (same line otherwise)."""
    olds, news = _non_fk(old), _non_fk(new)
    gone = [k for i, k in olds.items() if i not in news and k["type"] == "index"]
    added = [k for i, k in news.items() if i not in olds and k["type"] == "index"]
    renames = {}
    for key in gone:
        same = [k for k in added if k["shape"] == key["shape"]]
        if len(same) == 1 and sum(k["shape"] == key["shape"] for k in gone) == 1:
            renames[key["id"]] = same[0]["id"]
    return renames


def _key_drops(old: dict[str, Any], new: dict[str, Any], name: str, details: list[str]) -> list[str]:
    olds, news = _non_fk(old), _non_fk(new)
    renames = _index_renames(old, new)
    clauses = []
    for key_id, key in olds.items():
        if key_id in renames:
            clauses.append(f"RENAME INDEX {qi(key['name'])} TO {qi(news[renames[key_id]]['name'])}")
            details.append(f"rename index {name}.{key['name']} to {news[renames[key_id]]['name']}")
        elif news.get(key_id, {}).get("definition") != key["definition"]:
            clauses.append("DROP PRIMARY KEY" if key["type"] == "primary" else
                           f"DROP INDEX {qi(key['name'])}" if key["type"] == "index" else
                           f"DROP CONSTRAINT {qi(key['name'])}")
            details.append(f"drop {key['type']} {name}.{key['name'] or 'PRIMARY'}")
    return clauses


def _key_adds(old: dict[str, Any], new: dict[str, Any], name: str, details: list[str]) -> list[str]:
    olds, news = _non_fk(old), _non_fk(new)
    renamed = set(_index_renames(old, new).values())
    clauses = []
    for key_id, key in news.items():
        if key_id not in renamed and olds.get(key_id, {}).get("definition") != key["definition"]:
            clauses.append(f"ADD {key['definition']}")
            details.append(f"add {key['type']} {name}.{key['name'] or 'PRIMARY'}")
    return clauses


def _generated(column: dict[str, Any]) -> bool:
    return " GENERATED ALWAYS AS " in column["definition"].upper()


def _column_clauses(result: Plan, old: dict[str, Any], new: dict[str, Any], recharset: bool,
                    details: list[str]) -> list[str]:
    """DROP, ADD and MODIFY clauses that leave the columns as `new` has them, in its order.

    A generated column whose definition changes is dropped and added (the server cannot always
    MODIFY one, and it holds no data of its own)."""
    table = old["name"]
    olds = {c["name"]: c for c in old["columns"]}
    news = {c["name"]: c for c in new["columns"]}
    regenerated = {n for n, c in news.items() if n in olds and olds[n]["definition"] != c["definition"]
                   and (_generated(c) or _generated(olds[n]))}
    clauses = []
    for column in old["columns"]:
        if column["name"] not in news or column["name"] in regenerated:
            clauses.append(f"DROP COLUMN {qi(column['name'])}")
            if column["name"] not in regenerated:
                details.append(f"drop column {table}.{column['name']}")
                if not _generated(column):
                    result.destructive.append(f"drops column {table}.{column['name']} and its data")
    order = [c["name"] for c in old["columns"] if c["name"] in news and c["name"] not in regenerated]
    for i, column in enumerate(new["columns"]):
        col = column["name"]
        position = "FIRST" if i == 0 else f"AFTER {qi(new['columns'][i - 1]['name'])}"
        if col not in olds or col in regenerated:
            clauses.append(f"ADD COLUMN {column['definition']} {position}")
            details.append(f"add column {table}.{col}")
            order.insert(i, col)
            continue
        moved = order[i] != col
        if moved:
            order.remove(col)
            order.insert(i, col)
        before = olds[col]
        if moved or before["definition"] != column["definition"] or (recharset and column["textual"]):
            clauses.append(f"MODIFY COLUMN {column['definition']}" + (f" {position}" if moved else ""))
            details.append(f"modify column {table}.{col}" + (" (moved)" if moved else ""))
            _type_warning(result, table, before, column)
    return clauses


def _type_warning(result: Plan, table: str, before: dict[str, Any], after: dict[str, Any]) -> None:
    old_type, new_type = normalize_type("mysql", before["type"]), normalize_type("mysql", after["type"])
    if old_type != new_type and not is_widening(old_type, new_type):
        result.destructive.append(f"changes {table}.{before['name']} from {before['type']} to {after['type']}: "
                                  "values may be cut or lost")
