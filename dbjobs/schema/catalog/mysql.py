"""Read a MySQL/MariaDB database (the connection's current database) from information_schema.

MariaDB's CHECK_CONSTRAINTS names the table (its check names are only unique per table);
MySQL 8's does not, so there the table comes from TABLE_CONSTRAINTS. MySQL 8 also reports
literal defaults unquoted, where MariaDB quotes them.
"""

from __future__ import annotations

import re
from collections import defaultdict

from sqlalchemy import Connection, text

from dbjobs.schema.builder import SchemaBuilder

_TABLES = """
SELECT TABLE_NAME, TABLE_COMMENT FROM information_schema.TABLES
WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE'
"""
_COLUMNS = """
SELECT TABLE_NAME, GROUP_CONCAT(CONCAT_WS(CHAR(31 USING utf8mb4), COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE,
       IFNULL(COLUMN_DEFAULT, CHAR(2 USING utf8mb4)), EXTRA, COLUMN_COMMENT) ORDER BY ORDINAL_POSITION SEPARATOR 0x1e)
FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() GROUP BY TABLE_NAME
"""
_INDEXES = """
SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, COLUMN_NAME FROM information_schema.STATISTICS
WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX
"""
_FOREIGN_KEYS = """
SELECT TABLE_NAME, CONSTRAINT_NAME, COLUMN_NAME, REFERENCED_TABLE_NAME, REFERENCED_COLUMN_NAME
FROM information_schema.KEY_COLUMN_USAGE
WHERE TABLE_SCHEMA = DATABASE() AND REFERENCED_TABLE_NAME IS NOT NULL
ORDER BY TABLE_NAME, CONSTRAINT_NAME, ORDINAL_POSITION
"""
_FK_RULES = """
SELECT TABLE_NAME, CONSTRAINT_NAME, DELETE_RULE, UPDATE_RULE FROM information_schema.REFERENTIAL_CONSTRAINTS
WHERE CONSTRAINT_SCHEMA = DATABASE()
"""
_CHECKS = """
SELECT TABLE_NAME, CONSTRAINT_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS
WHERE CONSTRAINT_SCHEMA = DATABASE()
"""
_CHECKS_MYSQL8 = """
SELECT t.TABLE_NAME, c.CONSTRAINT_NAME, c.CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS c
JOIN information_schema.TABLE_CONSTRAINTS t ON t.CONSTRAINT_SCHEMA = c.CONSTRAINT_SCHEMA
  AND t.CONSTRAINT_NAME = c.CONSTRAINT_NAME AND t.CONSTRAINT_TYPE = 'CHECK'
WHERE c.CONSTRAINT_SCHEMA = DATABASE()
"""
_VIEWS = "SELECT TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS WHERE TABLE_SCHEMA = DATABASE()"


def read(conn: Connection, builder: SchemaBuilder) -> None:
    """Fill `builder` with every base table, its constraints and indexes, and the views."""
    mariadb = "mariadb" in str(conn.execute(text("SELECT VERSION()")).scalar()).lower()
    for table, comment in conn.execute(text(_TABLES)):
        builder.table(table, comment or None)
    _columns(conn, builder, mariadb)
    _indexes(conn, builder)
    _foreign_keys(conn, builder)
    for table, name, clause in conn.execute(text(_CHECKS if mariadb else _CHECKS_MYSQL8)):
        if table in builder.tables:
            builder.check(table, name, clause)
    # MySQL qualifies every column of a view with its own database's name: left out, so one schema
    # fingerprints the same in every database (a restore into a scratch database must match its backup).
    own = f"`{conn.execute(text('SELECT DATABASE()')).scalar()}`."
    for name, definition in conn.execute(text(_VIEWS)):
        builder.view(name, definition.replace(own, ""))


def _columns(conn: Connection, builder: SchemaBuilder, mariadb: bool) -> None:
    conn.execute(text("SET SESSION group_concat_max_len = 1073741824"))
    for table, packed in conn.execute(text(_COLUMNS)):
        if table not in builder.tables:
            continue
        for column in packed.split("\x1e"):
            name, type_, nullable, default, extra, comment = column.split("\x1f")
            value = None if default == "\x02" else default if mariadb else mysql8_default(default, extra)
            builder.column(table, name, type_, nullable=nullable == "YES", default=value,
                           autoincrement="auto_increment" in extra.lower(), comment=comment or None)


def mysql8_default(default: str, extra: str) -> str | None:
    """MySQL 8 reports a literal default unquoted (MariaDB quotes it): quote it unless it is a number or
    an expression (`DEFAULT_GENERATED`)."""
    if default == "\x02":
        return None
    if "default_generated" in extra.lower() or re.fullmatch(r"-?\d+(\.\d+)?", default):
        return default
    return "'" + default.replace("'", "''") + "'"


def _indexes(conn: Connection, builder: SchemaBuilder) -> None:
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


def _foreign_keys(conn: Connection, builder: SchemaBuilder) -> None:
    rules = {(row[0], row[1]): (row[2], row[3]) for row in conn.execute(text(_FK_RULES))}
    fks: dict[tuple[str, str], list] = defaultdict(list)
    for row in conn.execute(text(_FOREIGN_KEYS)):
        fks[(row[0], row[1])].append(row)
    for (table, name), rows in fks.items():
        builder.foreign_key(table, name, [r[2] for r in rows], rows[0][3], [r[4] for r in rows], *rules[(table, name)])
