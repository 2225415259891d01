"""PostgreSQL statements for one object (create, drop, alter), from the objects `pg_objects` reads.

Pure text building. Everything the server deparsed (view, index, constraint, trigger and
function definitions, defaults, generation expressions, partition bounds) is written as the
server wrote it; only names are quoted here. Changes that need the schema around them (enum
rebuilds cast the columns that use the type) get it passed in.
"""

from __future__ import annotations

from typing import Any

from dbjobs.schema.catalog.pg_objects import Objects, qi, qn

Obj = dict[str, Any]
TABLE_KEYWORD = {"table": "TABLE", "view": "VIEW", "matview": "MATERIALIZED VIEW", "sequence": "SEQUENCE"}


def rel_name(objects: Objects, rel_id: str) -> str:
    """The quoted, qualified name of a relation held in `objects`."""
    obj = objects[rel_id]
    return qn(obj["schema"], obj["name"])


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def column_definition(column: Obj) -> str:
    """`"name" type [COLLATE c] [GENERATED ...] [DEFAULT d] [NOT NULL]`, as CREATE TABLE and ADD COLUMN take it."""
    parts = [qi(column["name"]), column["type"]]
    if column["collation"]:
        parts.append(f"COLLATE {column['collation']}")
    if column["generated"]:
        parts.append(f"GENERATED ALWAYS AS ({column['generated']}) STORED")
    elif column["identity"]:
        parts.append(f"GENERATED {column['identity'].upper()} AS IDENTITY")
    elif column["default"] is not None:
        parts.append(f"DEFAULT {column['default']}")
    if column["not_null"]:
        parts.append("NOT NULL")
    return " ".join(parts)


def create_table(objects: Objects, table: Obj) -> list[str]:
    name = qn(table["schema"], table["name"])
    unlogged = "UNLOGGED " if table["unlogged"] else ""
    statements = []
    if table.get("partition_of"):
        statements.append(f"CREATE {unlogged}TABLE {name} PARTITION OF {rel_name(objects, table['partition_of'][0])} "
                          f"{table['partition_bound']}" + (f" PARTITION BY {table['partition_by']}"
                                                           if table["partition_by"] else ""))
        local = [c for c in table["columns"] if c["local"]]
        statements += [f"ALTER TABLE {name} ALTER COLUMN {qi(c['name'])} SET DEFAULT {c['default']}"
                       for c in local if c["default"] is not None]
    else:
        columns = [c for c in table["columns"] if c["local"]]
        body = ",\n".join(f"    {column_definition(c)}" for c in columns)
        inherits = table.get("inherits") or []
        statement = f"CREATE {unlogged}TABLE {name} (\n{body}\n)" if body else f"CREATE {unlogged}TABLE {name} ()"
        if inherits:
            statement += f" INHERITS ({', '.join(rel_name(objects, p) for p in inherits)})"
        if table["partition_by"]:
            statement += f" PARTITION BY {table['partition_by']}"
        statements.append(statement)
    statements += _rls(name, {"rls": False, "force_rls": False}, table)
    statements += _comments(name, None, table)
    return statements


def _rls(name: str, old: Obj, new: Obj) -> list[str]:
    statements = []
    if old["rls"] != new["rls"]:
        statements.append(f"ALTER TABLE {name} {'ENABLE' if new['rls'] else 'DISABLE'} ROW LEVEL SECURITY")
    if old["force_rls"] != new["force_rls"]:
        statements.append(f"ALTER TABLE {name} {'FORCE' if new['force_rls'] else 'NO FORCE'} ROW LEVEL SECURITY")
    return statements


def _comments(name: str, old: Obj | None, new: Obj) -> list[str]:
    statements = []
    if (old or {}).get("comment") != new.get("comment"):
        statements.append(f"COMMENT ON TABLE {name} IS {_comment(new.get('comment'))}")
    old_columns = {c["name"]: c for c in (old or {}).get("columns", [])}
    for column in new.get("columns", []):
        before = old_columns.get(column["name"], {}).get("comment")
        if column["comment"] != before:
            statements.append(f"COMMENT ON COLUMN {name}.{qi(column['name'])} IS {_comment(column['comment'])}")
    return statements


def _comment(value: str | None) -> str:
    return "NULL" if value is None else _literal(value)


def alter_table(objects_before: Objects, objects_after: Objects, old: Obj, new: Obj,
                enums_before: set[str]) -> list[str]:
    """ALTER TABLE statements that carry `old` to `new` (same name, both tables, neither partitioned differently)."""
    name = qn(new["schema"], new["name"])
    statements: list[str] = []
    old_parent, new_parent = (old.get("partition_of") or [None])[0], (new.get("partition_of") or [None])[0]
    if old_parent and (old_parent != new_parent or old["partition_bound"] != new["partition_bound"]):
        statements.append(f"ALTER TABLE {rel_name(objects_before, old_parent)} DETACH PARTITION {name}")
    for parent in old.get("inherits") or []:
        if parent not in (new.get("inherits") or []):
            statements.append(f"ALTER TABLE {name} NO INHERIT {rel_name(objects_before, parent)}")
    if old["unlogged"] != new["unlogged"]:
        statements.append(f"ALTER TABLE {name} SET {'UNLOGGED' if new['unlogged'] else 'LOGGED'}")
    statements += _alter_columns(name, old, new, enums_before)
    for parent in new.get("inherits") or []:
        if parent not in (old.get("inherits") or []):
            statements.append(f"ALTER TABLE {name} INHERIT {rel_name(objects_after, parent)}")
    if new_parent and (old_parent != new_parent or old["partition_bound"] != new["partition_bound"]):
        statements.append(f"ALTER TABLE {rel_name(objects_after, new_parent)} ATTACH PARTITION {name} "
                          f"{new['partition_bound']}")
    statements += _rls(name, old, new)
    statements += _comments(name, old, new)
    return statements


def _own_columns(table: Obj, detached: bool) -> dict[str, Obj]:
    """Columns this table defines itself (a partition's and an inherited column belong to the parent).

    A detached partition owns all its columns afterwards, so they are compared as its own."""
    return {c["name"]: c for c in table["columns"] if c["local"] or detached}


def _alter_columns(name: str, old: Obj, new: Obj, enums_before: set[str]) -> list[str]:
    detached = bool(old.get("partition_of")) and not new.get("partition_of")
    old_cols = _own_columns(old, detached)
    all_old = {c["name"]: c for c in old["columns"]}
    new_cols = _own_columns(new, False)
    statements = []
    kept = {c["name"] for c in new["columns"]}
    for column_name in old_cols:
        if column_name not in kept:
            statements.append(f"ALTER TABLE {name} DROP COLUMN {qi(column_name)}")
    for column_name, column in new_cols.items():
        before = all_old.get(column_name)
        if before is None or (not before["local"] and not detached and not old.get("partition_of")):
            statements.append(f"ALTER TABLE {name} ADD COLUMN {column_definition(column)}")
            continue
        if before["generated"] != column["generated"] and column["generated"]:
            statements += [f"ALTER TABLE {name} DROP COLUMN {qi(column_name)}",
                           f"ALTER TABLE {name} ADD COLUMN {column_definition(column)}"]
            continue
        statements += alter_column(name, before, column, enums_before)
    return statements


def alter_column(table: str, old: Obj, new: Obj, enums_before: set[str]) -> list[str]:
    """The ALTER COLUMN steps from one column definition to another (generation, identity, type, default, NOT NULL)."""
    col = f"ALTER TABLE {table} ALTER COLUMN {qi(new['name'])}"
    out = []
    default = old["default"]
    if old["generated"] and not new["generated"]:
        out.append(f"{col} DROP EXPRESSION")
    if old["identity"] and not new["identity"]:
        out.append(f"{col} DROP IDENTITY")
    retyped = (old["type"], old["collation"]) != (new["type"], new["collation"])
    if retyped:
        if default is not None:
            out.append(f"{col} DROP DEFAULT")
            default = None
        via = "::text" if old["type"].replace('"', "") in enums_before else ""
        collate = f" COLLATE {new['collation']}" if new["collation"] else ""
        out.append(f"{col} TYPE {new['type']}{collate} USING {qi(new['name'])}{via}::{new['type']}")
    if new["identity"] and not old["identity"]:
        if default is not None:
            out.append(f"{col} DROP DEFAULT")
            default = None
        if not old["not_null"]:
            out.append(f"{col} SET NOT NULL")
        out.append(f"{col} ADD GENERATED {new['identity'].upper()} AS IDENTITY")
    elif new["identity"] and old["identity"] != new["identity"]:
        out.append(f"{col} SET GENERATED {new['identity'].upper()}")
    if not new["identity"] and not new["generated"] and default != new["default"]:
        out.append(f"{col} DROP DEFAULT" if new["default"] is None else f"{col} SET DEFAULT {new['default']}")
    was_not_null = old["not_null"] or bool(new["identity"] and not old["identity"])
    if was_not_null != new["not_null"]:
        out.append(f"{col} {'SET' if new['not_null'] else 'DROP'} NOT NULL")
    return out


def create(objects: Objects, obj: Obj) -> list[str]:
    """The statements that create `obj` in a schema that already has everything it depends on."""
    kind = obj["kind"]
    if kind == "schema":
        return [f"CREATE SCHEMA IF NOT EXISTS {qi(obj['name'])}"]
    if kind == "extension":
        return [f"CREATE EXTENSION IF NOT EXISTS {qi(obj['name'])} WITH SCHEMA {qi(obj['schema'])} "
                f"VERSION {_literal(obj['version'])}"]
    if kind == "collation":
        return [create_collation(obj)]
    if kind == "enum":
        return [f"CREATE TYPE {qn(obj['schema'], obj['name'])} AS ENUM ({', '.join(map(_literal, obj['values']))})"]
    if kind == "sequence":
        return [f"CREATE SEQUENCE {qn(obj['schema'], obj['name'])} {_sequence_options(obj)}"]
    if kind == "owned":
        return [f"ALTER SEQUENCE {rel_name(objects, obj['sequence'])} OWNED BY {obj['column']}"]
    if kind == "table":
        return create_table(objects, obj)
    if kind in ("view", "matview"):
        options = f" WITH ({', '.join(obj['options'])})" if obj["options"] else ""
        statements = [f"CREATE {TABLE_KEYWORD[kind]} {qn(obj['schema'], obj['name'])}{options} AS {obj['definition']}"]
        if obj.get("comment") is not None:
            statements.append(f"COMMENT ON {TABLE_KEYWORD[kind]} {qn(obj['schema'], obj['name'])} IS "
                              f"{_literal(obj['comment'])}")
        return statements
    if kind == "constraint":
        return [f"ALTER TABLE {rel_name(objects, obj['table'])} ADD CONSTRAINT {qi(obj['name'])} {obj['definition']}"]
    if kind in ("index", "function"):
        return [obj["definition"]]
    if kind == "trigger":
        return [obj["definition"], *_trigger_state(objects, obj)]
    if kind == "policy":
        return [create_policy(objects, obj)]
    if kind == "grant":
        option = " WITH GRANT OPTION" if obj["grantable"] else ""
        target = grant_target(objects, obj["target"])
        return [f"GRANT {obj['privilege']} ON {target} TO {_role(obj['grantee'])}{option}"]
    return []


def _trigger_state(objects: Objects, obj: Obj) -> list[str]:
    state = {"D": "DISABLE", "R": "ENABLE REPLICA", "A": "ENABLE ALWAYS"}.get(obj["enabled"])
    return [f"ALTER TABLE {rel_name(objects, obj['table'])} {state} TRIGGER {qi(obj['name'])}"] if state else []


def drop(objects: Objects, obj: Obj) -> list[str]:
    """The statements that drop `obj` (its dependents are dropped before, by the plan)."""
    kind = obj["kind"]
    if kind == "schema":
        return [f"DROP SCHEMA {qi(obj['name'])}"]
    if kind == "extension":
        return [f"DROP EXTENSION {qi(obj['name'])}"]
    if kind == "collation":
        return [f"DROP COLLATION {qn(obj['schema'], obj['name'])}"]
    if kind == "enum":
        return [f"DROP TYPE {qn(obj['schema'], obj['name'])}"]
    if kind == "owned":
        return [f"ALTER SEQUENCE IF EXISTS {rel_name(objects, obj['sequence'])} OWNED BY NONE"]
    if kind in TABLE_KEYWORD:
        # a sequence OWNED BY a column goes with its table; IF EXISTS covers that
        exists = " IF EXISTS" if kind == "sequence" else ""
        return [f"DROP {TABLE_KEYWORD[kind]}{exists} {qn(obj['schema'], obj['name'])}"]
    if kind == "index":
        return [f"DROP INDEX {qn(obj['schema'], obj['name'])}"]
    if kind == "constraint":
        return [f"ALTER TABLE {rel_name(objects, obj['table'])} DROP CONSTRAINT {qi(obj['name'])}"]
    if kind == "function":
        what = "PROCEDURE" if obj["procedure"] else "FUNCTION"
        return [f"DROP {what} {qn(obj['schema'], obj['name'])}({obj['args']})"]
    if kind == "trigger":
        return [f"DROP TRIGGER {qi(obj['name'])} ON {rel_name(objects, obj['table'])}"]
    if kind == "policy":
        return [f"DROP POLICY {qi(obj['name'])} ON {rel_name(objects, obj['table'])}"]
    if kind == "grant":
        return [f"REVOKE {obj['privilege']} ON {grant_target(objects, obj['target'])} FROM {_role(obj['grantee'])}"]
    return []


def create_collation(obj: Obj) -> str:
    options = [f"provider = {obj['provider']}"]
    if obj["provider"] == "icu":
        options.append(f"locale = {_literal(obj['locale'] or '')}")
    else:
        options += [f"lc_collate = {_literal(obj['lc_collate'] or '')}",
                    f"lc_ctype = {_literal(obj['lc_ctype'] or '')}"]
    if not obj["deterministic"]:
        options.append("deterministic = false")
    return f"CREATE COLLATION {qn(obj['schema'], obj['name'])} ({', '.join(options)})"


def _sequence_options(obj: Obj) -> str:
    return (f"AS {obj['type']} INCREMENT BY {obj['increment']} MINVALUE {obj['min']} MAXVALUE {obj['max']} "
            f"START WITH {obj['start']} CACHE {obj['cache']} {'CYCLE' if obj['cycle'] else 'NO CYCLE'}")


def alter_sequence(obj: Obj) -> list[str]:
    return [f"ALTER SEQUENCE {qn(obj['schema'], obj['name'])} {_sequence_options(obj)}"]


def alter_extension(old: Obj, new: Obj) -> list[str]:
    """A newer version is an update; an older one has no update path: drop and create at that version."""
    name = qi(new["name"])
    statements = []
    if old["schema"] != new["schema"]:
        statements.append(f"ALTER EXTENSION {name} SET SCHEMA {qi(new['schema'])}")
    if old["version"] != new["version"]:
        if _version(new["version"]) > _version(old["version"]):
            statements.append(f"ALTER EXTENSION {name} UPDATE TO {_literal(new['version'])}")
        else:
            statements += [f"DROP EXTENSION {name}", create({}, new)[0]]
    return statements


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else 0 for part in text.split("."))


def alter_enum(old: Obj, new: Obj, users: list[tuple[str, Obj, Obj]]) -> list[str]:
    """Values only added: ADD VALUE in place. Otherwise the type is rebuilt: renamed aside, created anew,
    every column using it cast through text (its default dropped and set again), the old one dropped.

    `users` are (quoted table, column before, column after) of the columns of this type."""
    name = qn(new["schema"], new["name"])
    before, after = old["values"], new["values"]
    if _is_subsequence(before, after):
        statements = []
        present = list(before)
        for i, value in enumerate(after):
            if value in present:
                continue
            anchor = next((v for v in after[i + 1:] if v in present), None)
            where = f" BEFORE {_literal(anchor)}" if anchor is not None else ""
            statements.append(f"ALTER TYPE {name} ADD VALUE {_literal(value)}{where}")
            present.insert(present.index(anchor) if anchor is not None else len(present), value)
        return statements
    aside = new["name"] + "__dbjobs_old"
    statements = [f"ALTER TYPE {name} RENAME TO {qi(aside)}", create({}, new)[0]]
    for table, column, target in users:
        col = f"ALTER TABLE {table} ALTER COLUMN {qi(column['name'])}"
        if column["default"] is not None:
            statements.append(f"{col} DROP DEFAULT")
        statements.append(f"{col} TYPE {target['type']} USING {qi(column['name'])}::text::{target['type']}")
        if target["default"] is not None:
            statements.append(f"{col} SET DEFAULT {target['default']}")
    statements.append(f"DROP TYPE {qn(new['schema'], aside)}")
    return statements


def _is_subsequence(short: list[str], long: list[str]) -> bool:
    it = iter(long)
    return all(any(v == w for w in it) for v in short)


def create_policy(objects: Objects, obj: Obj) -> str:
    parts = [f"CREATE POLICY {qi(obj['name'])} ON {rel_name(objects, obj['table'])}",
             f"AS {'PERMISSIVE' if obj['permissive'] else 'RESTRICTIVE'}", f"FOR {obj['command']}",
             f"TO {', '.join(obj['roles'])}"]
    if obj["using"] is not None:
        parts.append(f"USING ({obj['using']})")
    if obj["check"] is not None:
        parts.append(f"WITH CHECK ({obj['check']})")
    return " ".join(parts)


def grant_target(objects: Objects, target_id: str) -> str:
    """`TABLE s.t`, `SEQUENCE s.q`, `FUNCTION s.f(args)`, `SCHEMA s` for a grant's object."""
    obj = objects[target_id]
    kind = obj["kind"]
    if kind == "schema":
        return f"SCHEMA {qi(obj['name'])}"
    if kind == "function":
        return f"{'PROCEDURE' if obj['procedure'] else 'FUNCTION'} {qn(obj['schema'], obj['name'])}({obj['args']})"
    if kind == "sequence":
        return f"SEQUENCE {qn(obj['schema'], obj['name'])}"
    return f"TABLE {qn(obj['schema'], obj['name'])}"


def _role(name: str) -> str:
    return name if name == "PUBLIC" else qi(name)
