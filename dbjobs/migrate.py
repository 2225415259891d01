"""Apply a migration file safely: one applier at a time, all or nothing where the engine allows,
and a ledger (`dbjobs_migrations`) so a file is applied once and an edited one is noticed.

PostgreSQL and SQLite run DDL inside a transaction: a failing statement leaves schema and
ledger exactly as they were. MySQL/MariaDB commit each DDL statement implicitly; there the
ledger follows each statement (how many ran, their checksum, why it stopped), so re-applying
a file that stopped part-way, edited after the statements that ran, continues after the last
good one. The applier holds the database's own job lock (`Connector.exclusive`), shared with
restores; PostgreSQL sessions carry `lock_timeout`, `statement_timeout` and
`client_connection_check_interval`, so a killed worker's backend ends within seconds and
releases its locks instead of blocking the application.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.pool import NullPool

from dbjobs.dburl import DatabaseURL
from dbjobs.engines import connector_for
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
# Columns added to ledgers of earlier versions: how far a non-transactional (MySQL) apply got, the checksum
# of the statements it ran, and why it stopped, so a re-apply can continue after the last good statement.
LEDGER_PROGRESS = {"statements_done": "INTEGER", "done_checksum": "CHAR(64)", "failure": "VARCHAR(1000)"}
CHECK_INTERVAL = "2s"  # PostgreSQL 14+: how often a busy backend checks that its client is still there


@dataclass(frozen=True)
class Timeouts:
    """Limits of a migration's own statements (PostgreSQL `lock_timeout`/`statement_timeout`, MySQL's
    `lock_wait_timeout`), so a migration never queues the application behind it for long; 0 is no limit."""

    lock: float = 10.0
    statement: float = 3600.0


@dataclass(frozen=True)
class LedgerRow:
    """A migration's ledger entry: applied (success) or stopped after `statements_done` statements."""

    checksum: str
    success: bool
    statements_done: int
    done_checksum: str | None


def statements_checksum(statements: list[str]) -> str:
    """SHA-256 of statements as MigrationFile.checksum computes it: spacing and comments do not count."""
    return hashlib.sha256("\n;\n".join(s.strip() for s in statements).encode()).hexdigest()


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
    """A raw DBAPI connection with the engine's placeholder, lock, timeout and transaction rules."""

    def __init__(self, db: DatabaseURL, lock_wait: float, timeouts: Timeouts = Timeouts()) -> None:
        self.db, self.engine, self.lock_wait = db, db.engine, lock_wait
        self.mark = "?" if self.engine == "sqlite" else "%s"
        self.held = contextlib.ExitStack()
        try:
            self.sa_engine = db.create_engine(poolclass=NullPool)
            self.raw = self.sa_engine.raw_connection()
        except Exception as exc:
            raise DatabaseUnavailableError(f"cannot connect to database {db.alias!r} at {db.redacted()}: "
                                           f"{first_line(getattr(exc, 'orig', exc))}") from None
        self.conn: Any = self.raw.driver_connection
        self.cursor = self.conn.cursor()
        if self.engine == "sqlite":
            self.conn.isolation_level = None
            self.execute(f"PRAGMA busy_timeout = {int(lock_wait * 1000)}")
        elif self.engine == "postgresql":
            self._postgres_limits(timeouts)
        else:
            self.execute(f"SET SESSION lock_wait_timeout = {max(1, int(timeouts.lock or 31536000))}")

    def _postgres_limits(self, timeouts: Timeouts) -> None:
        """Session limits that hold for every statement: a DDL lock waited for too long, a statement that runs
        too long, and a client that went away (a killed worker) all end the statement and release its locks."""
        self.execute(f"SET lock_timeout = {int(timeouts.lock * 1000)}")
        self.execute(f"SET statement_timeout = {int(timeouts.statement * 1000)}")
        if int(self.execute("SHOW server_version_num")[0][0]) >= 140000:
            self.execute(f"SET client_connection_check_interval = '{CHECK_INTERVAL}'")
        self.conn.commit()

    @property
    def transactional(self) -> bool:
        return self.engine != "mysql"

    def execute(self, sql: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
        self.cursor.execute(sql.replace("%s", self.mark) if params else sql, *([params] if params else []))
        return list(self.cursor.fetchall()) if self.cursor.description else []

    def lock(self, holder: str) -> None:
        """Take the database's own job lock (shared with restores), and on SQLite the exclusive transaction."""
        self.held.enter_context(connector_for(self.db).exclusive(holder, wait=self.lock_wait))
        if self.engine == "sqlite":
            self.execute("PRAGMA foreign_keys=OFF")
            try:
                self.execute("BEGIN EXCLUSIVE")
            except self.sa_engine.dialect.loaded_dbapi.OperationalError:
                raise JobLockedError(f"database {self.db.alias!r} is busy: another connection holds a write lock "
                                     "on it; try again when it has finished") from None

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
            self.raw.close()
            self.sa_engine.dispose()
        finally:
            self.held.close()

    def _ledger_columns(self) -> set[str]:
        if self.engine == "sqlite":
            return {row[1] for row in self.execute(f"PRAGMA table_info({LEDGER_TABLE})")}
        schema = "current_schema()" if self.engine == "postgresql" else "DATABASE()"
        return {str(row[0]).lower() for row in self.execute(
            f"SELECT column_name FROM information_schema.columns WHERE table_name = %s AND table_schema = {schema}",
            (LEDGER_TABLE,))}

    def ledger_row(self, name: str) -> LedgerRow | None:
        self.execute(LEDGER_DDL.format(t=LEDGER_TABLE, time=LEDGER_TIME_TYPE[self.engine]))
        missing = [c for c in LEDGER_PROGRESS if c not in self._ledger_columns()]
        for column in missing:
            self.execute(f"ALTER TABLE {LEDGER_TABLE} ADD COLUMN {column} {LEDGER_PROGRESS[column]}")
        rows = self.execute(f"SELECT checksum, success, statements_done, done_checksum FROM {LEDGER_TABLE} "
                            "WHERE name = %s", (name,))
        return LedgerRow(rows[0][0], bool(rows[0][1]), int(rows[0][2] or 0), rows[0][3]) if rows else None

    def record(self, name: str, checksum: str, duration_ms: int, success: bool, *, done: list[str] | None = None,
               failure: str | None = None) -> None:
        """Write the migration's ledger row: applied, or (non-transactional engines) how far it got and why."""
        self.execute(f"DELETE FROM {LEDGER_TABLE} WHERE name = %s", (name,))
        applied_at: Any = datetime.now(UTC)
        if self.engine != "postgresql":
            applied_at = applied_at.replace(tzinfo=None).isoformat(sep=" ")
        statements = done or []
        self.execute(f"INSERT INTO {LEDGER_TABLE} (name, checksum, applied_at, duration_ms, success, applied_by, "
                     "statements_done, done_checksum, failure) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                     (name, checksum, applied_at, duration_ms, success, applier(), len(statements),
                      statements_checksum(statements) if statements else None, failure[:1000] if failure else None))


def applier() -> str:
    """`user@host` of the process applying a migration, for the ledger's applied_by."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


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
                    lock_timeout: float = 30.0, timeouts: Timeouts = Timeouts(),
                    progress: ProgressCallback = no_progress, allow_unsupported: bool = False) -> ApplyResult:
    """Apply a migration (or its reverse section) under the database's job lock and record it in the ledger.

    `lock_timeout` is how long to wait for another job (migration or restore) on the database to finish.
    """
    migration = check_migration(db, file, allow_destructive=allow_destructive, reverse=reverse,
                                allow_unsupported=allow_unsupported)
    statements = migration.reverse if reverse else migration.forward
    expected = migration.shapes[1 if reverse else 0] if migration.shapes else None
    live = shape_fingerprint(take_snapshot(db)) if expected else None
    session = _Session(db, lock_timeout, timeouts)
    result = ApplyResult(db.alias, migration.name, "applied", session.transactional, len(statements),
                         migration.checksum)
    if live != expected:
        result.notes.append(f"the schema of {db.alias!r} is not the one this migration was generated from "
                            f"(shape {(live or '?')[:12]} instead of {(expected or '?')[:12]}): check the result")
    if not session.transactional:
        result.notes.append("MySQL/MariaDB commit each DDL statement: a failure part-way cannot be rolled back")
    try:
        progress(Progress("lock"))
        session.lock(f"dbjobs.apply_migration of {migration.name} by {applier()} (pid {os.getpid()})")
        _run(session, migration, statements, reverse, result, progress)
    finally:
        session.close()
    return result


def apply_pending(db: DatabaseURL, schema_dir: Path, *, allow_destructive: bool = False,
                  timeouts: Timeouts = Timeouts(), progress: ProgressCallback = no_progress,
                  allow_unsupported: bool = False) -> list[ApplyResult]:
    """Apply every pending migration of `schema_dir` in order, stopping at the first failure.

    All pending files are checked before the first one runs, so a bad file further down the
    list does not leave the database half-way.
    """
    files = [schema_dir / name for name in pending_migrations(db, schema_dir)]
    for file in files:
        check_migration(db, file, allow_destructive=allow_destructive, allow_unsupported=allow_unsupported)
    return [apply_migration(db, file, allow_destructive=allow_destructive, timeouts=timeouts, progress=progress,
                            allow_unsupported=allow_unsupported) for file in files]


def _run(session: _Session, migration: MigrationFile, statements: list[str], reverse: bool,
         result: ApplyResult, progress: ProgressCallback) -> None:
    row = session.ledger_row(migration.name)
    if reverse and not (row and row.success):
        session.rollback()
        raise MigrationError(f"{migration.name} is not applied to database {session.db.alias!r}; nothing to revert")
    if not reverse and row and row.success:
        session.rollback()
        if row.checksum != migration.checksum:
            raise MigrationError(f"drift: {migration.name} was edited after it was applied to {session.db.alias!r} "
                                 "(checksum differs); restore the original file and put changes in a new migration")
        result.status, result.statements = "skipped", 0
        result.notes.append("already applied")
        return
    first = _resume_point(session, migration, statements, row, result) if not reverse else 0
    started = time.monotonic()
    # Non-transactional engines commit each statement; the ledger follows, so a stop anywhere can be resumed.
    follow = not session.transactional and not reverse
    for done, statement in enumerate(statements[first:], first + 1):
        progress(Progress("apply", done - 1, len(statements)))
        try:
            session.execute(statement)
        except Exception as exc:
            message = first_line(exc.args[-1] if exc.args else exc)
            session.rollback()
            if follow:
                session.record(migration.name, migration.checksum, 0, False, done=statements[:done - 1],
                               failure=f"statement {done}: {message}")
                session.commit()
            raise MigrationError(f"{migration.name}: statement {done} of {len(statements)} failed ({message}): "
                                 f"{statement[:200]}; {_left_state(session, done - 1)}") from None
        if follow:
            session.record(migration.name, migration.checksum, 0, False, done=statements[:done])
            session.commit()
    _check_sqlite_foreign_keys(session, migration.name, statements)
    if reverse:
        session.execute(f"DELETE FROM {LEDGER_TABLE} WHERE name = %s", (migration.name,))
        result.status = "reverted"
    else:
        session.record(migration.name, migration.checksum, int((time.monotonic() - started) * 1000), True,
                       done=statements)
    session.commit()
    result.duration_s = round(time.monotonic() - started, 3)
    progress(Progress("apply", len(statements), len(statements)))


def _left_state(session: _Session, applied: int) -> str:
    """What a failure left behind, for its message."""
    if session.transactional:
        return "nothing was changed"
    if applied == 0:
        return "no statement was applied"
    return (f"statements 1-{applied} stay applied (recorded in {LEDGER_TABLE}); fix the failing statement and "
            "apply again to continue from it")


def _resume_point(session: _Session, migration: MigrationFile, statements: list[str], row: LedgerRow | None,
                  result: ApplyResult) -> int:
    """How many statements an earlier, stopped apply already committed (MySQL), after checking they are still
    the file's first ones: a re-apply continues after them instead of failing on statement 1."""
    if row is None or row.statements_done == 0:
        return 0
    done = row.statements_done
    if done > len(statements) or statements_checksum(statements[:done]) != row.done_checksum:
        session.rollback()
        raise MigrationError(
            f"{migration.name}: an earlier apply committed statements 1-{done} of the file as it was then, and the "
            f"file's first {done} statements have changed since; put them back as they were (the database has "
            "them), or undo those statements by hand and delete its row from "
            f"{LEDGER_TABLE} to start over")
    result.notes.append(f"statements 1-{done} were applied by an earlier attempt that stopped; continuing from "
                        f"statement {done + 1} of {len(statements)}")
    return done


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
        session.lock(f"dbjobs.detect_migrations recording {migration.name} by {applier()} (pid {os.getpid()})")
        session.ledger_row(migration.name)
        session.record(migration.name, migration.checksum, 0, True, done=migration.forward)
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
