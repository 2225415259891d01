"""Apply a migration file safely: one applier at a time, all or nothing where the engine allows,
and a ledger (`dbjobs_migrations`) so a file is applied once and an edited one is noticed.

PostgreSQL and SQLite run DDL inside a transaction: a failing statement leaves schema and
ledger exactly as they were. MySQL/MariaDB commit each DDL statement implicitly; there the
result says so, and a failure is recorded in the ledger with the statements already run.
"""

from __future__ import annotations

import getpass
import socket
import time
import zlib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dbjobs.dburl import DatabaseURL
from dbjobs.errors import DatabaseUnavailableError, JobLockedError, MigrationError
from dbjobs.progress import Progress, ProgressCallback, no_progress
from dbjobs.schema.builder import LEDGER_TABLE
from dbjobs.schema.diff import shape_fingerprint
from dbjobs.schema.lint import UNSUPPORTED
from dbjobs.schema.migration_file import MigrationFile, file_engine, migration_files, read_migration, rebuilt_tables
from dbjobs.schema.snapshot import first_line, take_snapshot

LEDGER_TIME_TYPE = {"postgresql": "TIMESTAMP WITH TIME ZONE", "mysql": "DATETIME(6)", "sqlite": "TEXT"}
LEDGER_DDL = ("CREATE TABLE IF NOT EXISTS {t} (name VARCHAR(255) PRIMARY KEY, checksum CHAR(64) NOT NULL, "
              "applied_at {time} NOT NULL, duration_ms INTEGER NOT NULL, success BOOLEAN NOT NULL, "
              "applied_by VARCHAR(255) NOT NULL)")
PG_LOCK_KEY = zlib.crc32(b"dbjobs.apply_migration")


@dataclass
class ApplyResult:
    """What apply-migration did: applied, reverted or skipped, and whether it was transactional."""

    database: str
    name: str
    status: str
    transactional: bool
    statements: int
    checksum: str
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the task result."""
        return asdict(self)


class _Session:
    """A raw DBAPI connection with the engine's placeholder, lock and transaction rules."""

    def __init__(self, db: DatabaseURL, lock_timeout: float) -> None:
        self.db, self.engine, self.lock_timeout = db, db.engine, lock_timeout
        self.mark = "?" if self.engine == "sqlite" else "%s"
        try:
            self.sa_engine = db.create_engine()
            self.raw = self.sa_engine.raw_connection()
        except Exception as exc:
            raise DatabaseUnavailableError(f"cannot connect to database {db.alias!r} at {db.redacted()}: "
                                           f"{first_line(getattr(exc, 'orig', exc))}") from None
        self.conn: Any = self.raw.driver_connection
        self.cursor = self.conn.cursor()
        if self.engine == "sqlite":
            self.conn.isolation_level = None
            self.execute(f"PRAGMA busy_timeout = {int(lock_timeout * 1000)}")
        self.locked = False

    @property
    def transactional(self) -> bool:
        return self.engine != "mysql"

    @property
    def mysql_lock(self) -> str:
        """The GET_LOCK name: per database, as locks on a MySQL server are server-wide."""
        return mysql_lock_name(self.db)

    def execute(self, sql: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
        self.cursor.execute(sql.replace("%s", self.mark) if params else sql, *([params] if params else []))
        return list(self.cursor.fetchall()) if self.cursor.description else []

    def lock(self) -> None:
        """Take the migration lock (and, on SQLite, the exclusive transaction that is the lock)."""
        busy = JobLockedError(f"another migration is being applied to database {self.db.alias!r}; "
                              "wait for it to finish and try again")
        if self.engine == "sqlite":
            self.execute("PRAGMA foreign_keys=OFF")
            try:
                self.execute("BEGIN EXCLUSIVE")
            except self.sa_engine.dialect.loaded_dbapi.OperationalError:
                raise busy from None
        elif self.engine == "mysql":
            if self.execute("SELECT GET_LOCK(%s, %s)", (self.mysql_lock, max(self.lock_timeout, 0)))[0][0] != 1:
                raise busy
        else:
            deadline = time.monotonic() + self.lock_timeout
            while not self.execute("SELECT pg_try_advisory_lock(%s)", (PG_LOCK_KEY,))[0][0]:
                if time.monotonic() > deadline:
                    self.conn.rollback()
                    raise busy
                time.sleep(0.1)
        self.locked = True

    def commit(self) -> None:
        self.execute("COMMIT") if self.engine == "sqlite" else self.conn.commit()

    def rollback(self) -> None:
        if self.engine == "sqlite":
            if self.conn.in_transaction:
                self.execute("ROLLBACK")
        else:
            self.conn.rollback()

    def close(self) -> None:
        try:
            if self.locked and self.engine == "mysql":
                self.execute("SELECT RELEASE_LOCK(%s)", (self.mysql_lock,))
            elif self.locked and self.engine == "postgresql":
                self.execute("SELECT pg_advisory_unlock(%s)", (PG_LOCK_KEY,))
                self.conn.commit()
        finally:
            self.raw.close()
            self.sa_engine.dispose()

    def ledger_row(self, name: str) -> tuple[str, bool] | None:
        self.execute(LEDGER_DDL.format(t=LEDGER_TABLE, time=LEDGER_TIME_TYPE[self.engine]))
        rows = self.execute(f"SELECT checksum, success FROM {LEDGER_TABLE} WHERE name = %s", (name,))
        return (rows[0][0], bool(rows[0][1])) if rows else None

    def record(self, name: str, checksum: str, duration_ms: int, success: bool) -> None:
        self.execute(f"DELETE FROM {LEDGER_TABLE} WHERE name = %s", (name,))
        applied_at: Any = datetime.now(UTC)
        if self.engine != "postgresql":
            applied_at = applied_at.replace(tzinfo=None).isoformat(sep=" ")
        self.execute(f"INSERT INTO {LEDGER_TABLE} (name, checksum, applied_at, duration_ms, success, applied_by) "
                     "VALUES (%s, %s, %s, %s, %s, %s)",
                     (name, checksum, applied_at, duration_ms, success, applier()))


def applier() -> str:
    """`user@host` of the process applying a migration, for the ledger's applied_by."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def mysql_lock_name(db: DatabaseURL) -> str:
    """The MySQL/MariaDB GET_LOCK name that serializes migrations of one database."""
    return f"dbjobs_migrate_{db.database}"[:64]


def load_for(db: DatabaseURL, file: Path) -> MigrationFile:
    """Read a migration file and check it was written for this database's engine."""
    migration = read_migration(file)
    if migration.engine != db.engine:
        raise MigrationError(f"{file.name} was generated for {migration.engine}, but database {db.alias!r} is "
                             f"{db.engine}; generate the migration against a {db.engine} database")
    return migration


def check_migration(db: DatabaseURL, file: Path, *, allow_destructive: bool = False,
                    reverse: bool = False, allow_unsupported: bool = False) -> MigrationFile:
    """Everything about a file that can be checked without the database (format, engine, destructive
    statements, objects it could not migrate), so bad input never touches it."""
    migration = load_for(db, file)
    unsupported = [w.message for w in migration.warnings if w.category == UNSUPPORTED]
    if unsupported and not allow_unsupported:
        raise MigrationError(f"{file.name} leaves out changes dbjobs cannot migrate ({'; '.join(unsupported)[:300]}); "
                             "add them to the file by hand, then re-run with --allow-unsupported")
    statements = migration.reverse if reverse else migration.forward
    check = MigrationFile(migration.name, migration.engine, None, None,
                          [] if reverse else migration.warnings, statements)
    if check.destructive and not allow_destructive:
        listed = "; ".join([w.message for w in check.warnings if w.category == "destructive"]
                           + check.destructive_statements())[:300]
        raise MigrationError(f"{file.name} is destructive ({listed}); re-run with --allow-destructive "
                             "after taking a backup")
    return migration


def apply_migration(db: DatabaseURL, file: Path, *, allow_destructive: bool = False, reverse: bool = False,
                    lock_timeout: float = 30.0, progress: ProgressCallback = no_progress,
                    allow_unsupported: bool = False) -> ApplyResult:
    """Apply a migration (or its reverse section) under the migration lock and record it in the ledger."""
    migration = check_migration(db, file, allow_destructive=allow_destructive, reverse=reverse,
                                allow_unsupported=allow_unsupported)
    statements = migration.reverse if reverse else migration.forward
    expected = migration.shapes[1 if reverse else 0] if migration.shapes else None
    live = shape_fingerprint(take_snapshot(db)) if expected else None
    session = _Session(db, lock_timeout)
    result = ApplyResult(db.alias, migration.name, "applied", session.transactional, len(statements),
                         migration.checksum)
    if live != expected:
        result.notes.append(f"the schema of {db.alias!r} is not the one this migration was generated from "
                            f"(shape {(live or '?')[:12]} instead of {(expected or '?')[:12]}): check the result")
    if not session.transactional:
        result.notes.append("MySQL/MariaDB commit each DDL statement: a failure part-way cannot be rolled back")
    try:
        progress(Progress("lock"))
        session.lock()
        _run(session, migration, statements, reverse, result, progress)
    finally:
        session.close()
    return result


def apply_pending(db: DatabaseURL, schema_dir: Path, *, allow_destructive: bool = False,
                  progress: ProgressCallback = no_progress, allow_unsupported: bool = False) -> list[ApplyResult]:
    """Apply every pending migration of `schema_dir` in order, stopping at the first failure.

    All pending files are checked before the first one runs, so a bad file further down the
    list does not leave the database half-way.
    """
    files = [schema_dir / name for name in pending_migrations(db, schema_dir)]
    for file in files:
        check_migration(db, file, allow_destructive=allow_destructive, allow_unsupported=allow_unsupported)
    return [apply_migration(db, file, allow_destructive=allow_destructive, progress=progress,
                            allow_unsupported=allow_unsupported) for file in files]


def _run(session: _Session, migration: MigrationFile, statements: list[str], reverse: bool,
         result: ApplyResult, progress: ProgressCallback) -> None:
    row = session.ledger_row(migration.name)
    if reverse and not (row and row[1]):
        session.rollback()
        raise MigrationError(f"{migration.name} is not applied to database {session.db.alias!r}; nothing to revert")
    if not reverse and row and row[1]:
        session.rollback()
        if row[0] != migration.checksum:
            raise MigrationError(f"drift: {migration.name} was edited after it was applied to {session.db.alias!r} "
                                 "(checksum differs); restore the original file and put changes in a new migration")
        result.status, result.statements = "skipped", 0
        result.notes.append("already applied")
        return
    started = time.monotonic()
    for done, statement in enumerate(statements, 1):
        progress(Progress("apply", done - 1, len(statements)))
        try:
            session.execute(statement)
        except Exception as exc:
            session.rollback()
            state = "nothing was changed" if session.transactional else (
                f"statements 1-{done - 1} stay applied; a failure was recorded in {LEDGER_TABLE}")
            if not session.transactional and not reverse:
                session.record(migration.name, migration.checksum, 0, False)
                session.commit()
            message = first_line(exc.args[-1] if exc.args else exc)
            raise MigrationError(f"{migration.name}: statement {done} of {len(statements)} failed ({message}): "
                                 f"{statement[:200]}; {state}") from None
    _check_sqlite_foreign_keys(session, migration.name, statements)
    if reverse:
        session.execute(f"DELETE FROM {LEDGER_TABLE} WHERE name = %s", (migration.name,))
        result.status = "reverted"
    else:
        session.record(migration.name, migration.checksum, int((time.monotonic() - started) * 1000), True)
    session.commit()
    result.duration_s = round(time.monotonic() - started, 3)
    progress(Progress("apply", len(statements), len(statements)))


def _check_sqlite_foreign_keys(session: _Session, name: str, statements: list[str]) -> None:
    """SQLite rebuilds run with foreign keys off; refuse (and roll back) one that leaves orphan rows,
    as PostgreSQL and MySQL refuse to add a foreign key that existing rows break."""
    if session.engine != "sqlite":
        return
    for table in rebuilt_tables(statements):
        orphans = session.execute(f'PRAGMA foreign_key_check("{table}")')
        if orphans:
            session.rollback()
            raise MigrationError(f"{name}: rows of {table} would break its foreign key to {orphans[0][2]}; "
                                 "nothing was changed (fix the rows, then apply again)")


def record_applied(db: DatabaseURL, file: Path) -> None:
    """Record a migration as applied without running it: the database already has its changes."""
    migration = load_for(db, file)
    session = _Session(db, 30.0)
    try:
        session.lock()
        session.ledger_row(migration.name)
        session.record(migration.name, migration.checksum, 0, True)
        session.commit()
    finally:
        session.close()


def applied_migrations(db: DatabaseURL) -> dict[str, str]:
    """Name → checksum of every successfully applied migration (empty before the first apply)."""
    from sqlalchemy import inspect, text
    from sqlalchemy.exc import DBAPIError

    engine = db.create_engine()
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table(LEDGER_TABLE):
                return {}
            rows = conn.execute(text(f"SELECT name, checksum FROM {LEDGER_TABLE} WHERE success = :ok"), {"ok": True})
            return {name: checksum for name, checksum in rows}
    except DBAPIError as exc:
        raise DatabaseUnavailableError(f"cannot read the migration ledger of {db.alias!r} at {db.redacted()}: "
                                       f"{first_line(exc.orig)}") from None
    finally:
        engine.dispose()


def pending_migrations(db: DatabaseURL, schema_dir: Path) -> list[str]:
    """Migration files of `db`'s engine in `schema_dir` not yet applied to `db`, in order (for `status`).

    The directory is shared by the aliases of one engine (a file written from dev is replayed on
    staging and production); files written for another engine are not pending here."""
    applied = applied_migrations(db)
    return [p.name for p in migration_files(schema_dir)
            if p.stem not in applied and file_engine(p) in (None, db.engine)]


def stamp_migrations(db: DatabaseURL, schema_dir: Path, file: Path | None = None) -> list[ApplyResult]:
    """Record files as applied without running them (Alembic's `stamp`): one file, or every pending one."""
    files = [file] if file else [schema_dir / name for name in pending_migrations(db, schema_dir)]
    results = []
    for path in files:
        migration = load_for(db, path)
        record_applied(db, path)
        results.append(ApplyResult(db.alias, migration.name, "stamped", db.engine != "mysql", 0, migration.checksum,
                                   notes=["recorded as applied without running it"]))
    return results


def drifted_migrations(db: DatabaseURL, schema_dir: Path) -> list[str]:
    """Applied migration files that were edited since (for `status`: the ledger no longer matches the file)."""
    applied = applied_migrations(db)
    drifted = []
    for path in migration_files(schema_dir):
        if path.stem in applied:
            try:
                same = read_migration(path).checksum == applied[path.stem]
            except MigrationError:
                same = False
            if not same:
                drifted.append(path.name)
    return drifted
