"""Read a SQLite database from sqlite_master and the pragma table functions, one query per kind.

SQLite keeps constraint names, checks and index expressions only in the CREATE text, so
those are parsed from it.
"""

from __future__ import annotations

import re
from collections import defaultdict

from sqlalchemy import Connection, text

from dbjobs.schema.builder import SchemaBuilder
from dbjobs.schema.sqlparse import balanced, find_clauses, split_top_level

_TABLES = "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
_COLUMNS = """
SELECT m.name, p.name, p.type, p."notnull", p.dflt_value, p.pk
FROM sqlite_master m JOIN pragma_table_info(m.name) p
WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' ORDER BY m.name, p.cid
"""
_UNIQUES = """
SELECT m.name, il.name, ii.name
FROM sqlite_master m JOIN pragma_index_list(m.name) il JOIN pragma_index_info(il.name) ii
WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND il.origin = 'u' ORDER BY m.name, il.name, ii.seqno
"""
_INDEXES = "SELECT tbl_name, name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
_FOREIGN_KEYS = """
SELECT m.name, f.id, f."table", f."from", f."to", f.on_update, f.on_delete
FROM sqlite_master m JOIN pragma_foreign_key_list(m.name) f
WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' ORDER BY m.name, f.id, f.seq
"""
_VIEWS = "SELECT name, sql FROM sqlite_master WHERE type = 'view'"
_INDEX_SQL = re.compile(r"^\s*CREATE\s+(UNIQUE\s+)?INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?\S+\s+ON\s+\S+\s*\(",
                        re.IGNORECASE)
_VIEW_SQL = re.compile(r"^\s*CREATE\s+(?:TEMP\w*\s+)?VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?\S+\s+AS\s+", re.IGNORECASE)


def read(conn: Connection, builder: SchemaBuilder) -> None:
    """Fill `builder` with every table, constraint, index and view."""
    create_sql = dict(conn.execute(text(_TABLES)).all())
    pks: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for table, name, type_, notnull, default, pk in conn.execute(text(_COLUMNS)):
        builder.column(table, name, type_ or "", nullable=not notnull and not pk, default=default, autoincrement=False)
        if pk:
            pks[table].append((pk, name))
    for table, columns in pks.items():
        builder.primary_key(table, None, [name for _, name in sorted(columns)])
    uniques: dict[tuple[str, str], list[str]] = defaultdict(list)
    for table, index, column in conn.execute(text(_UNIQUES)):
        uniques[(table, index)].append(column)
    named = {t: {tuple(_unquote(c) for c in split_top_level(body)): name
                 for name, body in find_clauses(sql, "UNIQUE")} for t, sql in create_sql.items()}
    for (table, _), columns in uniques.items():
        builder.unique(table, named[table].get(tuple(columns)), columns)
    for table, name, sql in conn.execute(text(_INDEXES)):
        head = _INDEX_SQL.match(sql)
        if head and table in create_sql:
            close = balanced(sql, head.end() - 1)
            where = re.match(r"\s*WHERE\s+(.*)$", sql[close + 1:], re.IGNORECASE | re.DOTALL)
            builder.index(table, name, split_top_level(sql[head.end():close]), unique=bool(head.group(1)),
                          where=where.group(1) if where else None)
    fks: dict[tuple[str, int], list] = defaultdict(list)
    for row in conn.execute(text(_FOREIGN_KEYS)):
        fks[(row[0], row[1])].append(row)
    fk_names = {t: {tuple(_unquote(c) for c in split_top_level(body)): name
                    for name, body in find_clauses(sql, "FOREIGN KEY")} for t, sql in create_sql.items()}
    for (table, _), rows in fks.items():
        columns = [r[3] for r in rows]
        ref_table = rows[0][2]
        ref_columns = [r[4] for r in rows]
        if None in ref_columns:
            ref_columns = [name for _, name in sorted(pks.get(ref_table, []))]
        builder.foreign_key(table, fk_names[table].get(tuple(columns)), columns, ref_table, ref_columns,
                            rows[0][6], rows[0][5])
    for table, sql in create_sql.items():
        for name, body in find_clauses(sql, "CHECK"):
            builder.check(table, name, body)
    for name, sql in conn.execute(text(_VIEWS)):
        builder.view(name, _VIEW_SQL.sub("", sql, count=1))


def _unquote(identifier: str) -> str:
    return identifier.strip().strip('`"[]')
