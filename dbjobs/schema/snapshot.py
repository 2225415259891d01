"""Schema snapshots: a plain, sorted JSON description of a database (or of the models).

A snapshot is the unit everything else works on: `diff` compares two, history stores them,
and the backup manifest records a snapshot's fingerprint so a restore can tell which schema
a backup holds. The JSON is canonical, so an unchanged database snapshots byte-identically.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from json.encoder import encode_basestring_ascii
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from dbjobs.dburl import DatabaseURL
from dbjobs.errors import DatabaseUnavailableError, MigrationError
from dbjobs.gcpause import gc_paused
from dbjobs.schema.builder import SchemaBuilder

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Snapshot:
    """One schema at one moment: tables (with columns and constraints), enums, sequences, views."""

    engine: str
    tables: dict[str, Any] = field(default_factory=dict)
    enums: dict[str, list[str]] = field(default_factory=dict)
    sequences: dict[str, Any] = field(default_factory=dict)
    views: dict[str, str] = field(default_factory=dict)
    objects: dict[str, Any] = field(default_factory=dict)
    scope: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form (also what the fingerprint hashes).

        `objects` (every object, with the server's own SQL; on PostgreSQL those of the schemas in
        `scope`, with their dependencies) is what snapshot-to-snapshot migrations are computed from; the
        per-table summary above it is what models are compared with."""
        data = {"format": FORMAT_VERSION, "engine": self.engine, "tables": self.tables, "enums": self.enums,
                "sequences": self.sequences, "views": self.views}
        if self.objects:
            data["objects"] = self.objects
        if self.scope:
            data["scope"] = self.scope
        return data

    @gc_paused()
    def to_json(self) -> str:
        """Canonical, readable JSON: sorted keys, one column or constraint per line, trailing newline.

        Leaves are encoded compactly by the C encoder; `indent=` would force the pure-Python
        one, several times slower on a thousand tables.
        """
        return _pretty(self.to_dict(), 0) + "\n"

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON: equal schemas, equal fingerprints."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Snapshot:
        """Read back a snapshot written by `to_json`; a foreign file is a `MigrationError`."""
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION or "engine" not in data:
            raise MigrationError("not a dbjobs schema snapshot (format 1); remove the file or take a new snapshot")
        return cls(data["engine"], data.get("tables", {}), data.get("enums", {}), data.get("sequences", {}),
                   data.get("views", {}), data.get("objects", {}), data.get("scope", {}))

    @classmethod
    def from_builder(cls, builder: SchemaBuilder) -> Snapshot:
        """The canonical snapshot of what a builder collected."""
        data = builder.finish()
        return cls(data["engine"], data["tables"], data["enums"], data["sequences"], data["views"])


_ENCODE = json.JSONEncoder(sort_keys=True, separators=(", ", ": ")).encode
_CONSTANTS = {None: "null", True: "true", False: "false"}


def _leaf(value: Any) -> str:
    """One value on one line, exactly as `json.dumps(sort_keys=True)` writes it; strings, scalars and the dicts
    and lists of them without building an encoder for each (that was most of the time on a thousand tables)."""
    kind = type(value)
    if kind is str:
        return encode_basestring_ascii(value)
    if value is None or value is True or value is False:
        return _CONSTANTS[value]
    if kind is int:
        return int.__repr__(value)
    if kind is dict:
        try:
            return "{" + ", ".join([encode_basestring_ascii(k) + ": " + _leaf(v) for k, v in sorted(value.items())]) \
                + "}"
        except TypeError:  # a key that is not a string: let the encoder convert it
            return _ENCODE(value)
    if kind is list:
        return "[" + ", ".join([_leaf(v) for v in value]) + "]"
    return _ENCODE(value)


def _pretty(value: Any, level: int) -> str:
    """JSON broken over lines down to tables' lists (level 3); deeper values on one line."""
    if level > 3 or not isinstance(value, dict | list) or not value:
        return _leaf(value)
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(value, dict):
        items = [f"{inner}{encode_basestring_ascii(k)}: {_pretty(v, level + 1)}" for k, v in sorted(value.items())]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    return "[\n" + ",\n".join([f"{inner}{_pretty(v, level + 1)}" for v in value]) + f"\n{pad}]"


@gc_paused()  # thousands of catalog rows and dicts, no cycles
def take_snapshot(db: DatabaseURL, scope: dict[str, list[str]] | None = None) -> Snapshot:
    """Reflect the live database by reading its catalogs directly (one query per kind of object).

    On PostgreSQL `scope` chooses the schemas whose objects are read (`schemas`: only these,
    `exclude_schemas`: all non-system ones but these; default all non-system schemas).
    A SQLite file that does not exist yet is an empty schema: taking a snapshot never creates it.
    """
    from dbjobs.schema.catalog import pg_objects, postgres

    if db.engine == "sqlite" and db.database not in ("", ":memory:") and not db.sqlite_path.exists():
        return Snapshot("sqlite")
    builder = SchemaBuilder(db.engine)
    scope = {k: sorted(v) for k, v in (scope or {}).items() if v}
    objects: dict[str, Any] = {}
    engine = db.create_engine()
    try:
        with engine.connect() as conn:
            if db.engine == "postgresql":  # the summary takes its columns and constraints from the objects' read
                current = pg_objects.CurrentSchema()
                objects = pg_objects.read_objects(conn, scope.get("schemas"), scope.get("exclude_schemas"), current)
                postgres.read(conn, builder, current)
            else:
                objects = _read_with_objects(engine, conn, db.engine, builder)
    except DBAPIError as exc:
        raise DatabaseUnavailableError(
            f"cannot read the schema of database {db.alias!r} at {db.redacted()}: {first_line(exc.orig)}; "
            "check the server and URL"
        ) from None
    finally:
        engine.dispose()
    base = Snapshot.from_builder(builder)
    return Snapshot(base.engine, base.tables, base.enums, base.sequences, base.views, objects, scope)


def _read_with_objects(engine: Engine, conn: Connection, name: str, builder: SchemaBuilder) -> dict[str, Any]:
    """MySQL/MariaDB and SQLite: the per-table summary into `builder`, and every object as the engine writes it.
    MySQL's objects take one SHOW CREATE per table: they are read on a connection of their own beside the
    summary."""
    from dbjobs.schema.catalog import mysql, mysql_objects, sqlite, sqlite_objects

    summary = {"mysql": mysql.read, "sqlite": sqlite.read}[name]
    read_objects = {"mysql": mysql_objects, "sqlite": sqlite_objects}[name].read_objects
    if name != "mysql":
        summary(conn, builder)
        return read_objects(conn)

    def on_own_connection() -> dict[str, Any]:
        with engine.connect() as other:
            return read_objects(other)

    with ThreadPoolExecutor(max_workers=1) as pool:
        beside = pool.submit(on_own_connection)
        summary(conn, builder)
        return beside.result()


def first_line(error: object) -> str:
    """A driver's error message on one line (they often add hints on further lines)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


@gc_paused()
def snapshot_from_models(spec: str, engine: str = "postgresql") -> Snapshot:
    """The schema the application's models describe, as `engine` would store it (`module:attr`)."""
    from dbjobs.schema.models import load_metadata, snapshot_of_metadata

    return snapshot_of_metadata(load_metadata(spec), engine)


def fingerprint(db: DatabaseURL) -> str:
    """The live schema's fingerprint, recorded in backup manifests to tell which schema a backup holds."""
    return take_snapshot(db).fingerprint
