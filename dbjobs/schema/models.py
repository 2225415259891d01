"""The desired schema from the application's SQLAlchemy models (`DBJOBS_MODELS=module:attr`).

Types, defaults and checks are compiled with the target engine's dialect and then normalized
exactly like reflected ones, so models and the database they created compare equal.
"""

from __future__ import annotations

import importlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from dbjobs.errors import ConfigError
from dbjobs.schema.builder import SchemaBuilder

DIALECTS = {"postgresql": "postgresql", "mysql": "mysql", "sqlite": "sqlite"}


def load_metadata(spec: str) -> sa.MetaData:
    """Import `module:attr` and return its MetaData (a declarative Base is accepted too)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"models {spec!r} must be module:attribute (e.g. app.models:Base)")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import models module {module_name!r} ({exc}); check DBJOBS_MODELS and PYTHONPATH") \
            from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"models module {module_name!r} has no attribute {attr!r}; check DBJOBS_MODELS")
        target = getattr(target, part)
    metadata = target if isinstance(target, sa.MetaData) else getattr(target, "metadata", None)
    if not isinstance(metadata, sa.MetaData):
        raise ConfigError(f"models {spec!r} is neither a MetaData nor a declarative Base; point DBJOBS_MODELS at one")
    return metadata


def dialect_for(engine: str) -> Dialect:
    """The SQLAlchemy dialect that compiles DDL for `engine`."""
    module = importlib.import_module(f"sqlalchemy.dialects.{DIALECTS[engine]}")
    return module.dialect()


def snapshot_of_metadata(metadata: sa.MetaData, engine: str):  # type: ignore[no-untyped-def]
    """The snapshot `engine` would hold after `metadata.create_all` (what the models describe)."""
    from dbjobs.schema.snapshot import Snapshot

    builder = SchemaBuilder(engine)
    read_metadata(metadata, builder)
    return Snapshot.from_builder(builder)


def read_metadata(metadata: sa.MetaData, builder: SchemaBuilder) -> None:
    """Fill `builder` from MetaData, compiling each fact with the builder engine's dialect."""
    dialect = dialect_for(builder.engine)
    ddl = dialect.ddl_compiler(dialect, None)
    for table in metadata.tables.values():
        try:
            _read_table(table, builder, dialect, ddl)
        except (sa.exc.CompileError, sa.exc.NoReferencedTableError, sa.exc.NoReferencedColumnError) as exc:
            raise ConfigError(f"model table {table.name!r} cannot be expressed in {builder.engine}: "
                              f"{str(exc).splitlines()[0]}; fix the model named by DBJOBS_MODELS") from None


def _read_table(table: sa.Table, builder: SchemaBuilder, dialect: Dialect, ddl: Any) -> None:
    builder.table(table.name, table.comment)
    auto = table.autoincrement_column
    for column in table.columns:
        builder.column(table.name, column.name, column.type.compile(dialect=dialect), nullable=column.nullable,
                       default=ddl.get_column_default_string(column), autoincrement=column is auto,
                       comment=column.comment)
        if builder.engine == "postgresql" and isinstance(column.type, sa.Enum) and column.type.native_enum:
            builder.enum(column.type.name, list(column.type.enums))
    pk = table.primary_key
    builder.primary_key(table.name, pk.name, [c.name for c in pk.columns])
    for constraint in table.constraints:
        if isinstance(constraint, sa.UniqueConstraint):
            builder.unique(table.name, _name(constraint.name), [c.name for c in constraint.columns])
        elif isinstance(constraint, sa.ForeignKeyConstraint):
            builder.foreign_key(table.name, _name(constraint.name), [c.parent.name for c in constraint.elements],
                                constraint.elements[0].column.table.name,
                                [c.column.name for c in constraint.elements], constraint.ondelete,
                                constraint.onupdate)
        elif isinstance(constraint, sa.CheckConstraint):
            builder.check(table.name, _name(constraint.name), _compile(constraint.sqltext, ddl))
    for index in table.indexes:
        where = index.dialect_options.get(builder.engine, {}).get("where") if builder.engine != "mysql" else None
        builder.index(table.name, _name(index.name) or "", [_compile(e, ddl) for e in index.expressions],
                      unique=index.unique, where=_compile(where, ddl) if where is not None else None)


def _name(name: Any) -> str | None:
    return None if name is None or type(name).__name__ == "_NoneName" else str(name)


def _compile(clause: Any, ddl: Any) -> str:
    if isinstance(clause, sa.Column):
        return clause.name
    return str(ddl.sql_compiler.process(clause, include_table=False, literal_binds=True))
