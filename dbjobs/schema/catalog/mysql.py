"""Read a MySQL/MariaDB database (the connection's current database) from information_schema."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import Connection, text

from dbjobs.schema.builder import SchemaBuilder

_TABLES = """
SELECT TABLE_NAME, TABLE_COMMENT FROM information_schema.TABLES
WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE'
"""
_COLUMNS = """
SELECT c.TABLE_NAME, c.COLUMN_NAME, c.COLUMN_TYPE, c.IS_NULLABLE, c.COLUMN_DEFAULT, c.EXTRA, c.COLUMN_COMMENT
FROM information_schema.COLUMNS c JOIN information_schema.TABLES t
  ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME AND t.TABLE_TYPE = 'BASE TABLE'
WHERE c.TABLE_SCHEMA = DATABASE() ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION
"""
_INDEXES = """
SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, COLUMN_NAME FROM information_schema.STATISTICS
WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX
"""
_FOREIGN_KEYS = """
SELECT k.TABLE_NAME, k.CONSTRAINT_NAME, k.COLUMN_NAME, k.REFERENCED_TABLE_NAME, k.REFERENCED_COLUMN_NAME,
       r.DELETE_RULE, r.UPDATE_RULE
FROM information_schema.KEY_COLUMN_USAGE k JOIN information_schema.REFERENTIAL_CONSTRAINTS r
  ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME AND r.TABLE_NAME = k.TABLE_NAME
WHERE k.TABLE_SCHEMA = DATABASE() AND k.REFERENCED_TABLE_NAME IS NOT NULL
ORDER BY k.TABLE_NAME, k.CONSTRAINT_NAME, k.ORDINAL_POSITION
"""
_CHECKS = """
SELECT TABLE_NAME, CONSTRAINT_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS
WHERE CONSTRAINT_SCHEMA = DATABASE()
"""
_VIEWS = "SELECT TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS WHERE TABLE_SCHEMA = DATABASE()"


def read(conn: Connection, builder: SchemaBuilder) -> None:
    """Fill `builder` with every base table, its constraints and indexes, and the views."""
    for table, comment in conn.execute(text(_TABLES)):
        builder.table(table, comment or None)
    for table, name, type_, nullable, default, extra, comment in conn.execute(text(_COLUMNS)):
        builder.column(table, name, type_, nullable=nullable == "YES", default=default,
                       autoincrement="auto_increment" in (extra or "").lower(), comment=comment or None)
    indexes: dict[tuple[str, str], tuple[bool, list[str]]] = {}
    for table, name, non_unique, column in conn.execute(text(_INDEXES)):
        indexes.setdefault((table, name), (not non_unique, []))[1].append(column)
    for (table, name), (unique, columns) in indexes.items():
        if table not in builder.tables:
            continue
        if name == "PRIMARY":
            builder.primary_key(table, None, columns)
        else:
            builder.index(table, name, columns, unique=unique)
    fks: dict[tuple[str, str], list] = defaultdict(list)
    for row in conn.execute(text(_FOREIGN_KEYS)):
        fks[(row[0], row[1])].append(row)
    for (table, name), rows in fks.items():
        builder.foreign_key(table, name, [r[2] for r in rows], rows[0][3], [r[4] for r in rows], rows[0][5], rows[0][6])
    for table, name, clause in conn.execute(text(_CHECKS)):
        if table in builder.tables:
            builder.check(table, name, clause)
    for name, definition in conn.execute(text(_VIEWS)):
        builder.view(name, definition)
