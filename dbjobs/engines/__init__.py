"""One connector per database engine behind the small `Connector` protocol."""

from __future__ import annotations

from dbjobs.dburl import DatabaseURL
from dbjobs.engines.base import Connector


def connector_for(db: DatabaseURL) -> Connector:
    """The connector that speaks `db`'s engine (imported lazily: each pulls its own driver)."""
    if db.engine == "postgresql":
        from dbjobs.engines.postgres import PostgresConnector

        return PostgresConnector(db)
    if db.engine == "mysql":
        from dbjobs.engines.mysql import MySQLConnector

        return MySQLConnector(db)
    from dbjobs.engines.sqlite import SQLiteConnector

    return SQLiteConnector(db)
