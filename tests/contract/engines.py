"""The engines of the contract suite: one small adapter per engine over a real server (or a SQLite file).

An adapter knows how to give an alias a known table of rows, read them back in order, change the
schema and read the migration ledger. Adding an engine to the matrix is adding one `Engine` here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from tests.conftest import MYSQL_ADMIN_URL, PG_ADMIN_URL, scratch_database

ROWS = 300
_ITEMS = sa.MetaData()
sa.Table("items", _ITEMS, sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
         sa.Column("name", sa.String(80), nullable=False), sa.Column("price", sa.Numeric(10, 2)),
         sa.Column("note", sa.Text))


def _rows() -> list[dict[str, object]]:
    """Rows with what a dump must carry: quotes, non-ASCII text, NULLs, exact decimals."""
    return [{"id": i, "name": f"item {i} 'q' \u00e9\u00e8 \u2603", "price": f"{i}.{i % 100:02d}",
             "note": None if i % 7 == 0 else "line\nbreak\ttab"} for i in range(1, ROWS + 1)]


def _engine(url: str) -> sa.Engine:
    driver = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql", "sqlite": "sqlite"}[url.split(":", 1)[0]]
    return sa.create_engine(f"{driver}:{url.split(':', 1)[1]}", poolclass=sa.pool.NullPool)


def reset(url: str) -> None:
    """Make the database hold exactly the `items` table and its rows (every other table dropped)."""
    engine = _engine(url)
    try:
        present = sa.MetaData()
        present.reflect(engine)
        present.drop_all(engine)
        _ITEMS.create_all(engine)
        with engine.begin() as conn:
            conn.execute(_ITEMS.tables["items"].insert(), _rows())
    finally:
        engine.dispose()


def query(url: str, sql: str) -> list[tuple]:
    """The rows of `sql`, as tuples."""
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql))]
    finally:
        engine.dispose()


def execute(url: str, *statements: str) -> None:
    """Run statements in one transaction (MySQL commits its DDL on its own)."""
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            for sql in statements:
                conn.execute(sa.text(sql))
    finally:
        engine.dispose()


def items(url: str) -> list[tuple]:
    """Every row of `items` in key order: what a restore must reproduce exactly."""
    return query(url, "SELECT id, name, price, note FROM items ORDER BY id")


@dataclass(frozen=True)
class Engine:
    """One row of the matrix: how to get a source and a target database of this engine."""

    name: str
    databases: Callable[[Path], AbstractContextManager[tuple[str, str]]]


@contextmanager
def _server(service: str, admin: str, driver: str, create: str, drop: str) -> Iterator[tuple[str, str]]:
    with scratch_database(service, admin, driver, create, drop) as source, \
            scratch_database(service, admin, driver, create, drop) as target:
        yield source, target


def _postgres(_: Path) -> AbstractContextManager[tuple[str, str]]:
    return _server("postgres", PG_ADMIN_URL, "postgresql+psycopg", 'CREATE DATABASE "{name}"',
                   'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _mysql(_: Path) -> AbstractContextManager[tuple[str, str]]:
    return _server("mysql", MYSQL_ADMIN_URL, "mysql+pymysql", "CREATE DATABASE `{name}` CHARACTER SET utf8mb4",
                   "DROP DATABASE IF EXISTS `{name}`")


@contextmanager
def _sqlite(base: Path) -> Iterator[tuple[str, str]]:
    yield f"sqlite:///{base / 'lite.sqlite3'}", f"sqlite:///{base / 'lite-other.sqlite3'}"


ENGINES = [Engine("postgresql", _postgres), Engine("mysql", _mysql), Engine("sqlite", _sqlite)]
