"""The database's own lock for jobs that change it (restore, apply-migration): a fence that holds even when
Redis forgets its lock.

The Redis lock in `workers/locks.py` lives in the broker; a Redis that restarts empty or fails over
forgets it, and a second job on the same database could start while the first still runs. This lock
lives where the data is, so two such jobs can never interleave whatever happened to Redis:

- PostgreSQL: a session-level advisory lock on a connection of its own to the server's maintenance
  database (`postgres`, else `template1`), keyed by the target database's name (released by the server
  the moment that connection ends, so a killed worker holds nothing). Not in the target itself: a swap
  restore ends every session in the target and renames it, and a lock there would be lost with them.
- MySQL/MariaDB: `GET_LOCK` on a connection of its own (the same: released with the connection).
- SQLite: an exclusive `flock` on `<database file>.dbjobs-lock` beside it (released by the kernel when the
  process dies). SQLite's own file locks keep each transaction whole; they cannot span a whole job (the
  job's own connections need them), and closing any descriptor of the database file would drop this
  process's POSIX locks on it, hence a separate file.

`hold(db, holder, wait=...)` waits up to `wait` seconds and raises `JobLockedError` naming the holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from dbjobs.dburl import DatabaseURL
from dbjobs.errors import DatabaseUnavailableError, JobLockedError

PG_KEY = zlib.crc32(b"dbjobs.job")  # the advisory lock's first key; the second is the database's name (`pg_lock_keys`)
POLL = 0.2
APP_NAME = "dbjobs lock: {}"  # how the holder shows in pg_stat_activity (and in our busy message)


def mysql_lock_name(db: DatabaseURL) -> str:
    """The GET_LOCK name of one database: GET_LOCK names are server-wide, so the database is in it."""
    return f"dbjobs_job_{db.database}"[:64]


def sqlite_lock_path(db: DatabaseURL) -> Path:
    """The lock file of a SQLite database: beside it, named after it."""
    path = db.sqlite_path
    return path.with_name(path.name + ".dbjobs-lock")


def _busy(db: DatabaseURL, holder: str | None, wait: float) -> JobLockedError:
    who = holder or "another dbjobs job"
    return JobLockedError(f"database {db.alias!r} is busy: {who} holds its in-database lock after waiting "
                          f"{wait:g} s; try again when it has finished")


def _poll(try_once: Callable[[], bool], wait: float) -> bool:
    deadline = time.monotonic() + max(wait, 0)
    while not try_once():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)
    return True


@contextlib.contextmanager
def _server_connection(db: DatabaseURL, **connect_args: Any) -> Iterator[Any]:
    engine = db.create_engine(poolclass=NullPool, connect_args=connect_args, isolation_level="AUTOCOMMIT")
    try:
        conn = engine.connect()
    except DBAPIError as exc:
        engine.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "connection failed"
        raise DatabaseUnavailableError(f"database {db.alias!r} ({db.redacted()}) is unreachable: {reason}") from None
    try:
        yield conn
    finally:
        with contextlib.suppress(DBAPIError):
            conn.close()
        engine.dispose()


def _int4(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


def pg_lock_keys(db: DatabaseURL) -> tuple[int, int]:
    """The two int4 keys of `db`'s advisory lock in the maintenance database: ours, and its name's CRC.

    Two names with the same CRC share a lock: their jobs wait for each other, which is safe.
    """
    return _int4(PG_KEY), _int4(zlib.crc32(db.database.encode()))


@contextlib.contextmanager
def _postgres(db: DatabaseURL, holder: str, wait: float) -> Iterator[None]:
    from dbjobs.engines.pg_swap import maintenance_connection

    first, second = pg_lock_keys(db)
    keys = {"a": first, "b": second}
    # Keepalives end the lock's session within about a minute should the worker's host vanish without closing it.
    with maintenance_connection(db, application_name=APP_NAME.format(holder)[:63], keepalives=1, keepalives_idle=10,
                                keepalives_interval=5, keepalives_count=3) as conn:
        def attempt() -> bool:
            return bool(conn.execute(text("SELECT pg_try_advisory_lock(:a, :b)"), keys).scalar())

        if not _poll(attempt, wait):
            other = conn.execute(text(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.classid = :a AND l.objid = :b AND l.granted "
                "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) LIMIT 1"),
                {"a": first & 0xFFFFFFFF, "b": second & 0xFFFFFFFF}).scalar()
            raise _busy(db, str(other).removeprefix(APP_NAME.format("")) if other else None, wait)
        try:
            yield
        finally:
            with contextlib.suppress(DBAPIError):
                conn.execute(text("SELECT pg_advisory_unlock(:a, :b)"), keys)


@contextlib.contextmanager
def _mysql(db: DatabaseURL, holder: str, wait: float) -> Iterator[None]:
    name = mysql_lock_name(db)
    with _server_connection(db) as conn:
        def attempt() -> bool:
            return conn.execute(text("SELECT GET_LOCK(:n, 0)"), {"n": name}).scalar() == 1

        if not _poll(attempt, wait):
            raise _busy(db, None, wait)
        try:
            yield
        finally:
            with contextlib.suppress(DBAPIError):
                conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": name})


@contextlib.contextmanager
def _sqlite(db: DatabaseURL, holder: str, wait: float) -> Iterator[None]:
    path = sqlite_lock_path(db)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise DatabaseUnavailableError(f"database {db.alias!r}: cannot open its lock file {path}: "
                                       f"{exc.strerror}") from None
    try:
        def attempt() -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        if not _poll(attempt, wait):
            raise _busy(db, os.pread(fd, 200, 0).decode(errors="replace").strip() or None, wait)
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        yield
    finally:
        os.close(fd)  # drops the flock


LOCKERS = {"postgresql": _postgres, "mysql": _mysql, "sqlite": _sqlite}


def hold(db: DatabaseURL, holder: str, *, wait: float) -> contextlib.AbstractContextManager[None]:
    """Hold `db`'s own job lock for the block; `holder` (`<job> <task id>`) names the job to a waiting one."""
    return LOCKERS[db.engine](db, holder, wait)
