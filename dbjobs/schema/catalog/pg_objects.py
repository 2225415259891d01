"""Read every object of a PostgreSQL database (all non-system schemas, or a chosen set) with the
server's own deparsed SQL and the dependency edges between them.

Each object is a plain dict keyed by an id (`rel:public.t`, `constraint:public.t.t_pkey`,
`function:public.f(integer)`, ...). Expressions are stored exactly as `pg_get_viewdef`,
`pg_get_constraintdef`, `pg_get_indexdef`, `pg_get_expr`, `pg_get_functiondef` and
`pg_get_triggerdef` return them, so a migration re-creates what the server holds, casts and all.
Dependencies come from `pg_depend` (views through `pg_rewrite`, defaults through `pg_attrdef`),
mapped onto the ids; objects that belong to an extension are the extension's, not ours.
Relations share one id space (`rel:`), as they share one namespace in the server: a table
that becomes a view of the same name is a drop and a create, in that order.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, text

Objects = dict[str, dict[str, Any]]
# A column of a table in the current schema: table, name, type, NOT NULL, default (or generation expression),
# identity ('a', 'd' or ''), comment.
CurrentColumn = tuple[str, str, str, bool, str | None, str, str | None]
# A constraint of a table in the current schema: table, name, type ('p', 'u', 'f', 'c'), columns, referenced table,
# referenced columns, ON DELETE and ON UPDATE ('a', 'r', 'c', 'n', 'd'), CHECK definition (pretty-printed).
CurrentConstraint = tuple[str, str, str, list[str], str | None, list[str], str, str, str | None]


@dataclass
class CurrentSchema:
    """The rows of the connection's current schema that its per-table summary (catalog/postgres.py) is built
    from, collected while the object graph is read: the largest catalogs are read once, not twice."""

    columns: list[CurrentColumn] = field(default_factory=list)
    constraints: list[CurrentConstraint] = field(default_factory=list)
    attnames: dict[tuple[int, int], str] = field(default_factory=dict)
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")
FIRST_USER_OID = 16384
LEDGER_TABLE = "dbjobs_migrations"

_IN_SCOPE = """{ns}.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND {ns}.nspname NOT LIKE 'pg\\_temp\\_%' AND {ns}.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
  AND (cardinality(CAST(:include AS text[])) = 0 OR {ns}.nspname = ANY(CAST(:include AS text[])))
  AND NOT {ns}.nspname = ANY(CAST(:exclude AS text[]))"""

_EXTENSION_MEMBERS = """
SELECT d.classid::regclass::text, d.objid, e.extname FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
WHERE d.deptype = 'e'
"""
_SCHEMAS = f"""
SELECT n.oid, n.nspname FROM pg_namespace n
WHERE {_IN_SCOPE.format(ns="n")}
"""
_EXTENSIONS = f"""
SELECT e.oid, e.extname, e.extversion, n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname <> 'plpgsql' AND {_IN_SCOPE.format(ns="n")}
"""
_COLLATIONS = f"""
SELECT c.oid, n.nspname, c.collname, to_jsonb(c) FROM pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace
WHERE {_IN_SCOPE.format(ns="n")}
"""
_TYPES = f"""
SELECT t.oid, t.typarray, n.nspname, t.typname, t.typtype,
       CASE WHEN t.typtype = 'e' THEN ARRAY(SELECT e.enumlabel FROM pg_enum e WHERE e.enumtypid = t.oid
                                            ORDER BY e.enumsortorder) END
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.typtype IN ('e', 'd', 'r', 'm', 'c') AND {_IN_SCOPE.format(ns="n")}
  AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
"""
_RELATIONS = f"""
SELECT c.oid, c.reltype, t.typarray, n.nspname, c.relname, c.relkind, c.relpersistence, c.relrowsecurity,
       c.relforcerowsecurity, c.relispartition,
       CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
       CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END,
       ARRAY(SELECT i.inhparent FROM pg_inherits i WHERE i.inhrelid = c.oid ORDER BY i.inhseqno),
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END,
       c.reloptions, ds.description
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_type t ON t.oid = c.reltype
LEFT JOIN pg_description ds ON ds.objoid = c.oid AND ds.classoid = 'pg_class'::regclass AND ds.objsubid = 0
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {_IN_SCOPE.format(ns="n")}
"""
_COLUMNS = f"""
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated, a.attislocal,
       CASE WHEN a.attcollation <> t.typcollation THEN quote_ident(cn.nspname) || '.' || quote_ident(co.collname) END,
       ds.description, c.relname, n.nspname = current_schema(), a.attnum
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_description ds ON ds.objoid = a.attrelid AND ds.classoid = 'pg_class'::regclass
  AND ds.objsubid = a.attnum
LEFT JOIN pg_collation co ON co.oid = a.attcollation LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
  AND ({_IN_SCOPE.format(ns="n")} OR n.nspname = current_schema())
ORDER BY a.attrelid, a.attnum
"""
_ATTRDEFS = f"""
SELECT d.oid, d.adrelid FROM pg_attrdef d JOIN pg_class c ON c.oid = d.adrelid
JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {_IN_SCOPE.format(ns="n")}
"""
_REWRITES = f"""
SELECT r.oid, r.ev_class, r.rulename FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {_IN_SCOPE.format(ns="n")}
"""
_SEQUENCES = f"""
SELECT DISTINCT ON (s.seqrelid) s.seqrelid, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin,
       s.seqmax, s.seqcache, s.seqcycle,
       quote_ident(tn.nspname) || '.' || quote_ident(t.relname) || '.' || quote_ident(a.attname) || ' ' || t.oid::text,
       d.deptype = 'i'
FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
  AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
LEFT JOIN pg_class t ON t.oid = d.refobjid LEFT JOIN pg_namespace tn ON tn.oid = t.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
WHERE {_IN_SCOPE.format(ns="n")}
ORDER BY s.seqrelid, d.deptype DESC
"""
_CONSTRAINTS = f"""
SELECT con.oid, con.conrelid, con.conname, con.contype,
       CASE WHEN con.conislocal AND con.conparentid = 0 THEN pg_get_constraintdef(con.oid) END, con.conindid,
       con.confrelid, con.conislocal AND con.conparentid = 0 AND {_IN_SCOPE.format(ns="n")},
       n.nspname = current_schema(), c.relname, con.conkey, rc.relname,
       CASE WHEN con.contype = 'f' AND n.nspname = current_schema() THEN
            ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
                  JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i) END,
       con.confdeltype, con.confupdtype,
       CASE WHEN con.contype = 'c' AND n.nspname = current_schema() THEN pg_get_constraintdef(con.oid, true) END
FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class rc ON rc.oid = con.confrelid
WHERE con.contype IN ('p', 'u', 'f', 'c', 'x')
  AND ((con.conislocal AND con.conparentid = 0 AND {_IN_SCOPE.format(ns="n")}) OR n.nspname = current_schema())
"""
_INDEXES = f"""
SELECT i.oid, x.indrelid, i.relname, pg_get_indexdef(i.oid)
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_namespace n ON n.oid = i.relnamespace
WHERE {_IN_SCOPE.format(ns="n")}
  AND NOT EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = i.oid AND con.conrelid = x.indrelid
                  AND con.contype IN ('p', 'u', 'x'))
  AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.oid)
"""
_FUNCTIONS = f"""
SELECT p.oid, n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), p.prokind,
       CASE WHEN p.prokind IN ('f', 'p', 'w') THEN pg_get_functiondef(p.oid) END
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {_IN_SCOPE.format(ns="n")}
"""
_TRIGGERS = f"""
SELECT tg.oid, tg.tgrelid, tg.tgname, pg_get_triggerdef(tg.oid), tg.tgenabled
FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT tg.tgisinternal AND tg.tgparentid = 0 AND {_IN_SCOPE.format(ns="n")}
"""
_POLICIES = f"""
SELECT p.oid, p.polrelid, p.polname, p.polcmd, p.polpermissive,
       ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r)) END
             FROM unnest(p.polroles) r ORDER BY 1),
       pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {_IN_SCOPE.format(ns="n")}
"""
_PRIVILEGES = f"""
SELECT 'pg_class' AS cls, c.oid, (aclexplode(c.relacl)).* FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relacl IS NOT NULL AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {_IN_SCOPE.format(ns="n")}
UNION ALL
SELECT 'pg_proc', p.oid, (aclexplode(p.proacl)).* FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.proacl IS NOT NULL AND {_IN_SCOPE.format(ns="n")}
UNION ALL
SELECT 'pg_namespace', n.oid, (aclexplode(n.nspacl)).* FROM pg_namespace n
WHERE n.nspacl IS NOT NULL AND {_IN_SCOPE.format(ns="n")}
"""
_COLUMN_PRIVILEGES = f"""
SELECT c.oid, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE a.attacl IS NOT NULL AND a.attnum > 0 AND {_IN_SCOPE.format(ns="n")}
"""
_OTHER_RULES = f"""
SELECT c.oid, r.rulename, pg_get_ruledef(r.oid) FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
JOIN pg_namespace n ON n.oid = c.relnamespace WHERE r.rulename <> '_RETURN' AND {_IN_SCOPE.format(ns="n")}
"""
_DEPENDS = """
SELECT classid::regclass::text, objid, refclassid::regclass::text, refobjid FROM pg_depend
WHERE objid >= :first AND refobjid >= :first AND deptype IN ('n', 'a')
"""
_ROLES = "SELECT oid, rolname FROM pg_roles"
_PRIVILEGE_NAMES = {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "USAGE", "CREATE",
                    "EXECUTE"}


def fetch(conn: Connection, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
    """Every row of a catalog query, fetched at once (row by row costs more than the query on large schemas)."""
    return conn.execute(text(sql), params or {}).all()


def qi(name: str) -> str:
    """An identifier, always double-quoted (names are read from the catalog as they are)."""
    return '"' + name.replace('"', '""') + '"'


def qn(schema: str, name: str) -> str:
    """A schema-qualified, quoted name."""
    return f"{qi(schema)}.{qi(name)}"


class _Reader:
    """One pass over the catalogs: objects by id, plus (catalog, oid) → id to map dependencies."""

    def __init__(self, conn: Connection, include: list[str], exclude: list[str]) -> None:
        self.conn = conn
        self.params = {"include": include, "exclude": exclude}
        self.objects: Objects = {}
        self.by_oid: dict[tuple[str, int], str] = {}
        self.members = {(cls, int(oid)): f"extension:{ext}" for cls, oid, ext in fetch(conn, _EXTENSION_MEMBERS)}
        self.roles = {int(oid): name for oid, name in fetch(conn, _ROLES)}

    def rows(self, sql: str) -> list[Any]:
        return fetch(self.conn, sql, self.params)

    def add(self, oid: tuple[str, int] | None, oid_id: str, obj: dict[str, Any]) -> dict[str, Any]:
        obj.setdefault("deps", [])
        self.objects[oid_id] = obj
        if oid is not None:
            self.by_oid[oid] = oid_id
        return obj

    def member(self, cls: str, oid: int) -> bool:
        return (cls, int(oid)) in self.members


def read_objects(conn: Connection, include: list[str] | None = None, exclude: list[str] | None = None,
                 current: CurrentSchema | None = None) -> Objects:
    """Every object in the schemas in scope (all non-system ones by default), with dependencies.

    Given `current`, the columns and constraints of every table in the connection's current
    schema (in scope or not, extensions' tables too) are collected in it for the per-table summary."""
    r = _Reader(conn, list(include or []), list(exclude or []))
    schemas = {}
    for oid, name in r.rows(_SCHEMAS):
        if not r.member("pg_namespace", oid):
            schemas[int(oid)] = name
            r.add(("pg_namespace", int(oid)), f"schema:{name}", {"kind": "schema", "name": name})
    for oid, name, version, schema in r.rows(_EXTENSIONS):
        r.add(("pg_extension", int(oid)), f"extension:{name}",
              {"kind": "extension", "name": name, "version": version, "schema": schema})
    for member, extension in r.members.items():  # using an extension's type or function depends on the extension
        if extension in r.objects:
            r.by_oid[member] = extension
    for oid, schema, name, info in r.rows(_COLLATIONS):
        if not r.member("pg_collation", oid):
            r.add(("pg_collation", int(oid)), f"collation:{schema}.{name}",
                  {"kind": "collation", "schema": schema, "name": name, **_collation(info)})
    _read_types(r)
    tables = _read_relations(r)
    _read_columns(r, tables, current)
    _read_sequences(r)
    for oid, rel in r.rows(_ATTRDEFS):
        if ("pg_class", int(rel)) in r.by_oid:
            r.by_oid[("pg_attrdef", int(oid))] = r.by_oid[("pg_class", int(rel))]
    for oid, rel, rulename in r.rows(_REWRITES):
        if rulename == "_RETURN" and ("pg_class", int(rel)) in r.by_oid:
            r.by_oid[("pg_rewrite", int(oid))] = r.by_oid[("pg_class", int(rel))]
    _read_constraints_and_indexes(r, current)
    _read_functions(r)
    _read_triggers_and_policies(r)
    _read_privileges(r)
    _read_unsupported(r)
    _read_dependencies(r)
    return dict(sorted(r.objects.items()))


def _collation(info: dict[str, Any]) -> dict[str, Any]:
    provider = {"i": "icu", "c": "libc", "d": "default"}.get(info.get("collprovider"), "libc")
    locale = info.get("colliculocale") or info.get("colllocale")
    return {"provider": provider, "locale": locale, "lc_collate": info.get("collcollate"),
            "lc_ctype": info.get("collctype"), "deterministic": info.get("collisdeterministic", True)}


def _read_types(r: _Reader) -> None:
    for oid, array, schema, name, kind, labels in r.rows(_TYPES):
        if r.member("pg_type", oid):
            continue
        type_id = f"type:{schema}.{name}"
        if kind == "e":
            r.add(("pg_type", int(oid)), type_id, {"kind": "enum", "schema": schema, "name": name,
                                                   "values": list(labels)})
        else:
            what = {"d": "domain", "r": "range type", "m": "multirange type", "c": "composite type"}[kind]
            r.add(("pg_type", int(oid)), type_id, {"kind": "unsupported", "what": what, "schema": schema,
                                                   "name": name})
        if array:
            r.by_oid[("pg_type", int(array))] = type_id


def _read_relations(r: _Reader) -> dict[int, dict[str, Any]]:
    tables: dict[int, dict[str, Any]] = {}
    parents: dict[int, list[int]] = {}
    for (oid, reltype, typarray, schema, name, relkind, persistence, rls, force_rls, is_partition, partkey, bound,
         inherits, viewdef, options, comment) in r.rows(_RELATIONS):
        if r.member("pg_class", oid) or (name == LEDGER_TABLE and schema == "public"):
            continue
        rel_id = f"rel:{schema}.{name}"
        kind = {"r": "table", "p": "table", "v": "view", "m": "matview", "S": "sequence", "f": "unsupported"}[relkind]
        obj: dict[str, Any] = {"kind": kind, "schema": schema, "name": name}
        if kind == "table":
            obj.update(columns=[], unlogged=persistence == "u", partition_by=partkey, partition_bound=bound,
                       rls=bool(rls), force_rls=bool(force_rls), comment=comment)
            tables[int(oid)] = obj
            parents[int(oid)] = [int(p) for p in inherits]
            obj["partition_of" if is_partition else "inherits"] = []
        elif kind in ("view", "matview"):
            obj.update(definition=viewdef.strip().rstrip(";"), options=sorted(options or []), comment=comment)
        elif kind == "unsupported":
            obj["what"] = "foreign table"
        r.add(("pg_class", int(oid)), rel_id, obj)
        for type_oid in (reltype, typarray):
            if type_oid:
                r.by_oid[("pg_type", int(type_oid))] = rel_id
    for oid, table in tables.items():
        key = "partition_of" if "partition_of" in table else "inherits"
        table[key] = [r.by_oid[("pg_class", p)] for p in parents[oid] if ("pg_class", p) in r.by_oid]
        table["deps"] = list(table[key])
    return tables


def _read_columns(r: _Reader, tables: dict[int, dict[str, Any]], current: CurrentSchema | None) -> None:
    for (rel, name, type_, notnull, default, identity, generated, local, collation, comment, relname,
         is_current, attnum) in r.rows(_COLUMNS):
        if is_current and current is not None:
            current.columns.append((relname, name, type_, bool(notnull), default, identity, comment))
            current.attnames[(int(rel), int(attnum))] = name
        table = tables.get(int(rel))
        if table is None:
            continue
        table["columns"].append({
            "name": name, "type": type_, "not_null": bool(notnull),
            "default": default if not generated else None, "generated": default if generated else None,
            "identity": {"a": "always", "d": "by default"}.get(identity), "local": bool(local),
            "collation": collation, "comment": comment,
        })


def _read_sequences(r: _Reader) -> None:
    for oid, type_, start, increment, minimum, maximum, cache, cycle, owner, identity in r.rows(_SEQUENCES):
        seq_id = r.by_oid.get(("pg_class", int(oid)))
        if seq_id is None:
            continue
        if identity:  # an identity column's own sequence is part of the column
            del r.objects[seq_id]
            continue
        r.objects[seq_id].update(type=type_, start=int(start), increment=int(increment), min=int(minimum),
                                 max=int(maximum), cache=int(cache), cycle=bool(cycle))
        if owner:
            column, table_oid = owner.rsplit(" ", 1)
            table_id = r.by_oid.get(("pg_class", int(table_oid)))
            if table_id:
                obj = r.objects[seq_id]
                r.add(None, f"owned:{obj['schema']}.{obj['name']}",
                      {"kind": "owned", "sequence": seq_id, "column": column, "deps": [seq_id, table_id]})


def _read_constraints_and_indexes(r: _Reader, current: CurrentSchema | None) -> None:
    key_of_index: dict[int, str] = {}
    pending_fks = []
    for (oid, rel, name, contype, definition, index, ref_rel, ours, is_current, relname, keys, ref_table,
         ref_columns, on_delete, on_update, check) in r.rows(_CONSTRAINTS):
        if is_current and current is not None and contype != "x":
            named = (current.attnames.get((int(rel), int(k))) for k in keys or [])  # a foreign table's: unnamed
            columns = [n for n in named if n is not None]
            current.constraints.append((relname, name, contype, columns, ref_table, list(ref_columns or []),
                                        on_delete, on_update, check))
        table_id = r.by_oid.get(("pg_class", int(rel)))
        if table_id is None or not ours:
            continue
        table = r.objects[table_id]
        con_id = f"constraint:{table['schema']}.{table['name']}.{name}"
        obj = r.add(("pg_constraint", int(oid)), con_id, {"kind": "constraint", "table": table_id, "name": name,
                                                          "type": contype, "definition": definition,
                                                          "deps": [table_id]})
        if contype in ("p", "u", "x") and index:
            key_of_index[int(index)] = con_id
        if contype == "f":
            pending_fks.append((obj, int(index), int(ref_rel)))
    for oid, rel, name, definition in r.rows(_INDEXES):  # a key's own index, or a partition's, is not ours
        table_id = r.by_oid.get(("pg_class", int(rel)))
        if table_id is None or r.member("pg_class", oid):
            continue
        table = r.objects[table_id]
        index_id = f"rel:{table['schema']}.{name}"
        r.add(("pg_class", int(oid)), index_id, {"kind": "index", "schema": table["schema"], "name": name,
                                                 "table": table_id, "definition": definition, "deps": [table_id]})
        key_of_index[int(oid)] = index_id
    for fk, index, ref_rel in pending_fks:  # keys before the foreign keys that use them
        for dep in (key_of_index.get(index), r.by_oid.get(("pg_class", ref_rel))):
            if dep and dep not in fk["deps"]:
                fk["deps"].append(dep)


def _read_functions(r: _Reader) -> None:
    for oid, schema, name, args, prokind, definition in r.rows(_FUNCTIONS):
        if r.member("pg_proc", oid):
            continue
        fn_id = f"function:{schema}.{name}({args})"
        if prokind == "a" or definition is None:
            r.add(("pg_proc", int(oid)), fn_id, {"kind": "unsupported", "what": "aggregate", "schema": schema,
                                                 "name": f"{name}({args})"})
            continue
        r.add(("pg_proc", int(oid)), fn_id, {"kind": "function", "schema": schema, "name": name, "args": args,
                                             "procedure": prokind == "p", "definition": definition.strip()})


def _read_triggers_and_policies(r: _Reader) -> None:
    for oid, rel, name, definition, enabled in r.rows(_TRIGGERS):
        table_id = r.by_oid.get(("pg_class", int(rel)))
        if table_id is None:
            continue
        table = r.objects[table_id]
        r.add(("pg_trigger", int(oid)), f"trigger:{table['schema']}.{table['name']}.{name}",
              {"kind": "trigger", "table": table_id, "name": name, "definition": definition,
               "enabled": enabled, "deps": [table_id]})
    for oid, rel, name, cmd, permissive, roles, qual, check in r.rows(_POLICIES):
        table_id = r.by_oid.get(("pg_class", int(rel)))
        if table_id is None:
            continue
        table = r.objects[table_id]
        r.add(("pg_policy", int(oid)), f"policy:{table['schema']}.{table['name']}.{name}",
              {"kind": "policy", "table": table_id, "name": name,
               "command": {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}[cmd],
               "permissive": bool(permissive), "roles": list(roles), "using": qual, "check": check,
               "deps": [table_id]})


def _read_privileges(r: _Reader) -> None:
    """Explicit grants (an object whose ACL was never set has its owner's defaults: nothing to record).

    The owner's own entry is left out: the owner holds every privilege by default, and a copy
    created by another role would otherwise differ on it."""
    for cls, oid, grantor, grantee, privilege, grantable in r.rows(_PRIVILEGES):
        target = r.by_oid.get((cls, int(oid)))
        if target is None or privilege not in _PRIVILEGE_NAMES:
            continue
        owner = r.roles.get(int(grantor))
        grantee_name = "PUBLIC" if int(grantee) == 0 else r.roles.get(int(grantee), str(grantee))
        if grantee_name == owner:
            continue
        r.add(None, f"grant:{target}:{grantee_name}:{privilege}",
              {"kind": "grant", "target": target, "grantee": grantee_name, "privilege": privilege,
               "grantable": bool(grantable), "deps": [target]})
    for oid, column in r.rows(_COLUMN_PRIVILEGES):
        target = r.by_oid.get(("pg_class", int(oid)))
        if target is not None:
            r.add(None, f"unsupported:column privileges:{target}.{column}",
                  {"kind": "unsupported", "what": "column privileges", "name": f"{target[4:]}.{column}"})


def _read_unsupported(r: _Reader) -> None:
    for oid, name, definition in r.rows(_OTHER_RULES):
        target = r.by_oid.get(("pg_class", int(oid)))
        if target is not None:
            r.add(None, f"unsupported:rule:{target}.{name}",
                  {"kind": "unsupported", "what": "rule", "name": f"{target[4:]}.{name}", "definition": definition})


def _read_dependencies(r: _Reader) -> None:
    """`pg_depend` edges between objects we hold (both ends mapped to ids), plus each object's schema."""
    deps: dict[str, set[str]] = defaultdict(set)
    for cls, oid, ref_cls, ref_oid in fetch(r.conn, _DEPENDS, {"first": FIRST_USER_OID}):
        source, target = r.by_oid.get((cls, int(oid))), r.by_oid.get((ref_cls, int(ref_oid)))
        if source and target and source != target:
            deps[source].add(target)
    for obj_id, obj in r.objects.items():
        # a sequence's pg_depend edge to its table is OWNED BY, held by the `owned` object
        found = (set() if obj["kind"] == "sequence" else deps.get(obj_id, set())) | set(obj["deps"])
        schema = obj.get("schema")
        if schema and obj["kind"] != "extension" and f"schema:{schema}" in r.objects:
            found.add(f"schema:{schema}")
        if obj["kind"] == "extension" and f"schema:{obj['schema']}" in r.objects:
            found.add(f"schema:{obj['schema']}")
        obj["deps"] = sorted(found - {obj_id})
