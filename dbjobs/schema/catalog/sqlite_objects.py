"""Read every object of a SQLite database as SQLite stores it: the CREATE text of each table, index,
view and trigger from `sqlite_master`, verbatim, and each table's columns from `PRAGMA table_xinfo`
(which says which are generated, so a rebuild copies only the stored ones).

SQLite keeps a table's CREATE text exactly as written, except that `ALTER TABLE ... RENAME TO`
rewrites the name; the name is therefore kept apart from the rest (`body`), which is what is compared.
Virtual tables are kept with their CREATE text; their shadow tables belong to them and are left out.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

from dbjobs.schema.builder import LEDGER_TABLE
from dbjobs.schema.sqlparse import code_find, identifier_end

Objects = dict[str, dict[str, Any]]
_MASTER = """
SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
"""
_TABLE_TYPES = "SELECT name, type FROM pragma_table_list WHERE schema = 'main' AND type IN ('shadow', 'virtual')"
_COLUMNS = """
SELECT m.name, p.name, p.hidden FROM sqlite_master m JOIN pragma_table_xinfo(m.name) p
WHERE m.type = 'table' ORDER BY m.name, p.cid
"""
PREFIX = {"table": len("CREATE TABLE "), "view": len("CREATE VIEW ")}


def read_objects(conn: Connection) -> Objects:
    """Every table, index, view and trigger of the main database, by id (`table:t`, `index:i`, ...)."""
    objects: Objects = {}
    types = dict(conn.execute(text(_TABLE_TYPES)).all())
    for kind, name, table, sql in conn.execute(text(_MASTER)):
        listed = types.get(name)
        if name == LEDGER_TABLE or table == LEDGER_TABLE or listed == "shadow":
            continue
        obj: dict[str, Any] = {"kind": kind, "name": name, "sql": sql}
        if kind in ("index", "trigger"):
            obj["table"] = table
        if kind == "table":
            obj.update(body=table_body(sql), columns=[], virtual=listed == "virtual",
                       autoincrement=code_find(sql, "AUTOINCREMENT") >= 0)
        objects[f"{kind}:{name}"] = obj
    for table, column, hidden in conn.execute(text(_COLUMNS)):
        obj = objects.get(f"table:{table}")
        if obj is not None and not obj["virtual"]:
            obj["columns"].append({"name": column, "generated": int(hidden) in (2, 3)})
    return objects


def table_body(sql: str) -> str:
    """A table's CREATE text after its name (`CREATE TABLE "t"(a)` → `(a)`); a virtual table's whole text."""
    if not sql.upper().startswith("CREATE TABLE "):
        return sql
    return sql[identifier_end(sql, PREFIX["table"]):]
