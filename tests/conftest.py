"""Shared fixtures: real servers, each test in databases it creates and drops itself.

On a laptop a missing server skips its tests with a message saying how to start it; with
CI=true a missing server fails them, so a green CI always means the tests really ran.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sqlalchemy import Connection

SERVICES = {
    "postgres": ("127.0.0.1", 5432, "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"),
    "mysql": ("127.0.0.1", 3306, "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"),
}
PG_ADMIN_URL = os.environ.get("DBJOBS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MYSQL_ADMIN_URL = os.environ.get("DBJOBS_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/mysql")


def require_service(name: str) -> None:
    """Skip (laptop) or fail (CI=true) when a server the test needs is not listening."""
    host, port, start = SERVICES[name]
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        message = f"{name} is not running on {host}:{port}; start it with: {start}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


def _scratch_name() -> str:
    return f"dbjobs_t_{uuid.uuid4().hex[:12]}"


@contextmanager
def pg_admin() -> Iterator[Connection]:
    """An autocommit session on the PostgreSQL server's admin database (to create, drop and inspect databases)."""
    import sqlalchemy as sa

    engine = sa.create_engine(f"postgresql+psycopg://{PG_ADMIN_URL.split('://', 1)[1]}", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


@contextmanager
def scratch_database(service: str, admin_url: str, driver: str, create: str, drop: str) -> Iterator[str]:
    """Create a uniquely named database on a real server, yield its URL, drop it on every exit path
    (with the shadow and pre-restore copies swap restores made of it)."""
    require_service(service)
    import sqlalchemy as sa

    admin = sa.create_engine(f"{driver}://{admin_url.split('://', 1)[1]}", isolation_level="AUTOCOMMIT")
    name = _scratch_name()
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(create.format(name=name)))
        url = admin_url.rsplit("/", 1)[0] + f"/{name}"
        try:
            yield url
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(drop.format(name=name)))
            drop_copies(service, url)
    finally:
        admin.dispose()


def drop_copies(service: str, url: str) -> None:
    """Drop what swap restores made of a test database: `<name>__pre_restore_<time>`, `<name>__shadow`."""
    import sqlalchemy as sa

    name = url.rsplit("/", 1)[1]
    like = name.replace("_", "\\_") + "\\_\\_%"
    if service == "postgres":
        driver, admin_url = "postgresql+psycopg", PG_ADMIN_URL
        listing = "SELECT datname FROM pg_database WHERE datname LIKE :p"
        drop = 'DROP DATABASE IF EXISTS "{}" WITH (FORCE)'
    else:
        driver, admin_url = "mysql+pymysql", MYSQL_ADMIN_URL
        listing = "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE :p"
        drop = "DROP DATABASE IF EXISTS `{}`"
    admin = sa.create_engine(f"{driver}://{admin_url.split('://', 1)[1]}", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for (copy,) in conn.execute(sa.text(listing), {"p": like}).all():
                conn.execute(sa.text(drop.format(copy)))
    finally:
        admin.dispose()


def pg_database() -> AbstractContextManager[str]:
    """A fresh, empty PostgreSQL database, dropped on exit."""
    return scratch_database("postgres", PG_ADMIN_URL, "postgresql+psycopg", 'CREATE DATABASE "{name}"',
                            'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def mysql_database() -> AbstractContextManager[str]:
    """A fresh, empty MariaDB database, dropped on exit."""
    return scratch_database("mysql", MYSQL_ADMIN_URL, "mysql+pymysql",
                            "CREATE DATABASE `{name}` CHARACTER SET utf8mb4", "DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped after the test with the copies restores made of it."""
    with pg_database() as url:
        yield url


@pytest.fixture
def mysql_url() -> Iterator[str]:
    """A fresh, empty MariaDB database, dropped after the test with the copies restores made of it."""
    with mysql_database() as url:
        yield url


@pytest.fixture(scope="module")
def engine_urls(tmp_path_factory) -> Iterator[dict[str, str]]:
    """One fresh database per engine for a whole module (workers started once per module need fixed URLs)."""
    with pg_database() as pg, mysql_database() as mysql:
        yield {"postgresql": pg, "mysql": mysql,
               "sqlite": f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'app.sqlite3'}"}


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """A SQLite file in the test's own directory."""
    return f"sqlite:///{tmp_path / 'app.sqlite3'}"


@pytest.fixture(params=["postgres", "mysql", "sqlite"])
def db_url(request) -> str:
    """The same test on each engine: PostgreSQL, MariaDB and SQLite."""
    return request.getfixturevalue({"postgres": "pg_url", "mysql": "mysql_url", "sqlite": "sqlite_url"}[request.param])


@pytest.fixture
def redis_url() -> str:
    """Database 15 of the suite's own redis-server, flushed before use."""
    from tests.celery_support import flushed_redis

    return flushed_redis(15)
