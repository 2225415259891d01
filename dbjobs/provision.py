"""Whether a restore target exists, what it holds, and creating it (`restore --create`).

A PostgreSQL or MariaDB database that does not exist cannot be connected to, so the question
is asked of the server through a database that always exists (`postgres`, or
`information_schema`), with the target's own credentials. SQLite needs nothing: a restore
creates the file.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from dbjobs.dburl import DatabaseURL
from dbjobs.engines import connector_for
from dbjobs.engines.base import unavailable
from dbjobs.errors import RestoreError

MAINTENANCE = {"postgresql": "postgres", "mysql": "information_schema"}
EXISTS_SQL = {
    "postgresql": "SELECT 1 FROM pg_database WHERE datname = :name",
    "mysql": "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :name",
}
CREATE_SQL = {"postgresql": "CREATE DATABASE {}", "mysql": "CREATE DATABASE {} CHARACTER SET utf8mb4"}
QUOTE = {"postgresql": '"', "mysql": "`"}


def where(db: DatabaseURL) -> str:
    """`host:port/name` of a server database, the file of a SQLite one (never the password)."""
    if db.engine == "sqlite":
        return str(db.sqlite_path)
    url = db.url
    return f"{url.host or 'localhost'}{f':{url.port}' if url.port else ''}/{db.database}"


def _on_server(db: DatabaseURL, sql: str, **params: Any) -> Any:
    """Run one statement on the target's server, outside the target database."""
    engine = db.with_database(MAINTENANCE[db.engine]).create_engine(poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            result = conn.execute(text(sql), params)
            return result.scalar() if result.returns_rows else None
    except OperationalError as exc:
        raise unavailable(db, exc) from None
    finally:
        engine.dispose()


def exists(db: DatabaseURL) -> bool:
    """Whether the target database is there (a SQLite file, or a database on the server)."""
    if db.engine == "sqlite":
        return db.sqlite_path.is_file()
    return _on_server(db, EXISTS_SQL[db.engine], name=db.database) is not None


def describe(db: DatabaseURL) -> dict[str, Any]:
    """What a restore into `db` replaces: alias, engine, where it is, whether it exists and its size now."""
    present = exists(db)
    return {"alias": db.alias, "engine": db.engine, "where": where(db), "exists": present,
            "size": connector_for(db).size_bytes() if present else None}


def ensure_target(db: DatabaseURL, *, create: bool) -> bool:
    """Make sure a restore has a database to go into; True when it was created here.

    A missing server database is an error naming `--create`, raised before anything is touched (a
    RestoreError, not DatabaseUnavailableError: a worker must not retry what only the user can fix).
    """
    if db.engine == "sqlite" or exists(db):
        return False
    if not create:
        raise RestoreError(f"database {db.alias!r} ({where(db)}) does not exist; nothing was changed "
                                       "(pass --create to create it, empty, and restore into it)")
    q = QUOTE[db.engine]
    try:
        _on_server(db, CREATE_SQL[db.engine].format(q + db.database.replace(q, q + q) + q))
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise RestoreError(f"cannot create database {db.alias!r} ({where(db)}): {reason}") from None
    return True
