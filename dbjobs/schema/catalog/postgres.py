"""Read the per-table summary of a PostgreSQL schema (the connection's current schema), which models are
compared with, from pg_catalog in a few queries (its columns come with the object graph's read)."""

from __future__ import annotations

from sqlalchemy import Connection

from dbjobs.schema.builder import SchemaBuilder
from dbjobs.schema.catalog.pg_objects import CurrentSchema, fetch

_TABLE_COMMENTS = """
SELECT c.relname, ds.description FROM pg_description ds
JOIN pg_class c ON c.oid = ds.objoid AND ds.classoid = 'pg_class'::regclass AND ds.objsubid = 0
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
"""
_INDEXES = """
SELECT t.relname, i.relname, ix.indisunique,
       ARRAY(SELECT pg_get_indexdef(ix.indexrelid, k, true) FROM generate_series(1, ix.indnkeyatts) k ORDER BY k),
       pg_get_expr(ix.indpred, ix.indrelid, true)
FROM pg_index ix
JOIN pg_class i ON i.oid = ix.indexrelid
JOIN pg_class t ON t.oid = ix.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = current_schema() AND t.relkind IN ('r', 'p')
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = ix.indexrelid AND c.contype IN ('p', 'u', 'x'))
"""
_ENUMS = """
SELECT t.typname, e.enumlabel FROM pg_type t
JOIN pg_enum e ON e.enumtypid = t.oid JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = current_schema() ORDER BY t.typname, e.enumsortorder
"""
_SEQUENCES = """
SELECT c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement
FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema()
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i'))
"""
_VIEWS = """
SELECT c.relname, pg_get_viewdef(c.oid, true) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind = 'v'
"""
_ACTIONS = {"a": None, "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


def read(conn: Connection, builder: SchemaBuilder, current: CurrentSchema) -> None:
    """Fill `builder` with every table, constraint, index, enum, standalone sequence and view.

    `current` holds the current schema's columns and constraints, as `read_objects` read them."""
    for table, name, type_, notnull, default, identity, comment in current.columns:
        serial = bool(default and default.startswith("nextval("))
        builder.column(table, name, type_, nullable=not notnull, default=None if serial else default,
                       autoincrement=serial or identity in ("a", "d"), comment=comment)
    for table, comment in fetch(conn, _TABLE_COMMENTS):
        builder.table(table, comment)
    for table, name, kind, columns, ref_table, ref_columns, on_delete, on_update, definition in current.constraints:
        if kind == "p":
            builder.primary_key(table, name, columns)
        elif kind == "u":
            builder.unique(table, name, columns)
        elif kind == "f":
            builder.foreign_key(table, name, columns, ref_table, ref_columns, _ACTIONS[on_delete], _ACTIONS[on_update])
        else:
            builder.check(table, name, definition)
    for table, name, unique, columns, where in fetch(conn, _INDEXES):
        builder.index(table, name, columns, unique=unique, where=where)
    for name, label in fetch(conn, _ENUMS):
        builder.enums.setdefault(name, []).append(label)
    for name, type_, start, increment in fetch(conn, _SEQUENCES):
        builder.sequence(name, type=type_, start=int(start), increment=int(increment))
    for name, definition in fetch(conn, _VIEWS):
        builder.view(name, definition)
