"""Database URLs: which engine a URL names, its SQLAlchemy form, and a form safe to print.

A URL may carry a password, so everything user-visible goes through `redact`; the client
tools get the password through their environment or an option file, never their argv.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from dbjobs.errors import ConfigError

ENGINES = {
    "postgresql": ("postgresql", "postgresql+psycopg"),
    "postgres": ("postgresql", "postgresql+psycopg"),
    "mysql": ("mysql", "mysql+pymysql"),
    "mariadb": ("mysql", "mysql+pymysql"),
    "sqlite": ("sqlite", "sqlite"),
}


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed database URL bound to its alias (the name users and tasks see)."""

    alias: str
    url: URL

    @property
    def engine(self) -> str:
        """`postgresql`, `mysql` (MySQL and MariaDB) or `sqlite`."""
        return ENGINES[self.url.get_backend_name()][0]

    @cached_property
    def sqlalchemy_url(self) -> URL:
        """The URL with the driver dbjobs ships (psycopg 3, PyMySQL, sqlite3)."""
        return self.url.set(drivername=ENGINES[self.url.get_backend_name()][1])

    @property
    def database(self) -> str:
        """The database name (for SQLite, the file path)."""
        return self.url.database or ""

    @property
    def sqlite_path(self) -> Path:
        """The SQLite file; in-memory databases cannot be backed up."""
        if not self.url.database or self.url.database == ":memory:":
            raise ConfigError(f"database {self.alias!r}: an in-memory SQLite database has no file to back up")
        return Path(self.url.database)

    def redacted(self) -> str:
        """The URL with its password hidden, for messages and logs."""
        return self.url.render_as_string(hide_password=True)

    def with_database(self, name: str) -> DatabaseURL:
        """The same server with another database (scratch and staging databases)."""
        return DatabaseURL(self.alias, self.url.set(database=name))

    def create_engine(self, **kwargs):  # type: ignore[no-untyped-def]
        """A SQLAlchemy engine with a short connect timeout, so a dead server fails fast."""
        from sqlalchemy import create_engine

        args: dict[str, object] = {}
        if self.engine in {"postgresql", "mysql"}:
            args["connect_timeout"] = 10
        return create_engine(self.sqlalchemy_url, connect_args={**args, **kwargs.pop("connect_args", {})}, **kwargs)


def parse_url(alias: str, raw: str) -> DatabaseURL:
    """Parse and check a URL; the error names the alias, never the URL (it may hold a password)."""
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ConfigError(f"database {alias!r}: the URL is not of the form engine://user@host/dbname") from None
    backend = url.get_backend_name()
    if backend not in ENGINES:
        raise ConfigError(
            f"database {alias!r}: engine {backend!r} is not supported (use postgresql, mysql, mariadb or sqlite)"
        )
    if backend != "sqlite" and not url.database:
        raise ConfigError(f"database {alias!r}: the URL names no database")
    return DatabaseURL(alias, url)
