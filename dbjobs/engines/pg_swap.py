"""PostgreSQL's swap restore: a shadow database shaped like the target, `pg_restore -j` into it, a rename swap.

The shadow is created from `template0` with the target's owner, encoding, collation, locale
provider, tablespace, connection limit and database grants; the target's `ALTER DATABASE ... SET`
settings follow once it is loaded and checked (a dump without `--create` carries none of these). The swap
closes the target to new connections, ends its sessions, and renames both databases in one
transaction: PostgreSQL either commits both renames or neither. The old target keeps its data
and oid under the pre-restore name. Markers are database comments; the target's own comment
stays with the target's name.

All of it runs on a maintenance connection (`postgres`, else `template1`): a database cannot be
renamed or dropped from a session inside it.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from dbjobs.dburl import DatabaseURL
from dbjobs.errors import DatabaseUnavailableError, RestoreError
from dbjobs.swap import Marker, SwapSite, is_derived_name

MAINTENANCE = ("postgres", "template1")
LIST_GUCS = frozenset({"search_path", "temp_tablespaces", "session_preload_libraries", "local_preload_libraries",
                       "shared_preload_libraries"})
SESSION_WAIT = 10.0  # seconds the target's sessions get to end before the swap gives up (target reopened)
SHAPE = """
    SELECT pg_get_userbyid(d.datdba) AS owner, pg_encoding_to_char(d.encoding) AS encoding,
           d.datcollate, d.datctype, to_jsonb(d) ->> 'datlocprovider' AS provider,
           coalesce(to_jsonb(d) ->> 'daticulocale', to_jsonb(d) ->> 'datlocale') AS locale,
           t.spcname, d.datconnlimit, d.datacl IS NOT NULL AS has_acl
    FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace WHERE d.datname = :name
"""
ACL = """
    SELECT a.privilege_type, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
           a.is_grantable
    FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = :name
"""
SETTINGS = """
    SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END, unnest(s.setconfig)
    FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = :name
"""


def ident(name: str) -> str:
    """A quoted identifier (database names come from settings and our own derivations, never raw SQL)."""
    return '"' + name.replace('"', '""') + '"'


def ddl(conn: Connection, sql: str) -> None:
    """Run a statement built with quoted identifiers and literals (a `:` in a literal is no bind parameter)."""
    conn.execute(text(sql.replace(":", "\\:")))


@contextmanager
def one_transaction(conn: Connection) -> Iterator[None]:
    """A server-side transaction on an autocommit session: every statement in the block commits, or none."""
    ddl(conn, "BEGIN")
    try:
        yield
    except BaseException:
        ddl(conn, "ROLLBACK")
        raise
    ddl(conn, "COMMIT")


def literal(value: str) -> str:
    """A standard-conforming string literal."""
    return "'" + value.replace("'", "''") + "'"


def guc_value(name: str, value: str) -> str:
    """A stored setting's value as SQL: list settings element by element, like pg_dumpall does."""
    if name.lower() not in LIST_GUCS:
        return literal(value)
    items = re.findall(r'\s*("(?:[^"]|"")*"|[^,]*)\s*(?:,|$)', value)
    return ", ".join(literal(i[1:-1].replace('""', '"') if i.startswith('"') else i.strip())
                     for i in items[:-1] if i.strip()) or "''"


@contextmanager
def maintenance_connection(db: DatabaseURL, **connect_args: object) -> Iterator[Connection]:
    """An autocommit session, as `db`'s role, on a maintenance database of its server (`postgres`, else
    `template1`): where a database can be created, renamed and dropped, and where its job lock lives
    (dbjobs.engines.dblock), since no session inside it survives a swap."""
    last: Exception | None = None
    for name in MAINTENANCE:
        engine = db.with_database(name).create_engine(poolclass=NullPool, isolation_level="AUTOCOMMIT",
                                                      connect_args=connect_args)
        try:
            conn = engine.connect()
        except DBAPIError as exc:
            last = exc
            engine.dispose()
            if "does not exist" in str(exc.orig):  # only a missing maintenance database tries the next one
                continue
            break
        try:
            yield conn
        finally:
            conn.close()
            engine.dispose()
        return
    raise DatabaseUnavailableError(
        f"database {db.alias!r}: cannot reach a maintenance database (postgres, template1) of "
        f"{db.redacted()}: {str(getattr(last, 'orig', last)).strip().splitlines()[0]}")


class PostgresSwapSite(SwapSite):
    """The swap steps on one PostgreSQL server, for the target database of `db`."""

    name_limit = 63  # NAMEDATALEN - 1, in bytes

    def __init__(self, db: DatabaseURL, load: Callable[[DatabaseURL], None],
                 check: Callable[[DatabaseURL], None]) -> None:
        self.db = db
        self._load = load
        self._check = check

    def found(self, target: str) -> dict[str, Marker | None]:
        with maintenance_connection(self.db) as conn:
            rows = conn.execute(text("SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database"))
            return {name: Marker.parse(comment) for name, comment in rows
                    if is_derived_name(name, target, self.name_limit)}

    def create_shadow(self, target: str, shadow: str, marker: Marker) -> None:
        with maintenance_connection(self.db) as conn:
            shape = conn.execute(text(SHAPE), {"name": target}).mappings().one()
            provider = {"i": "icu ICU_LOCALE", "b": "builtin BUILTIN_LOCALE"}.get(shape["provider"] or "c")
            locale = f" LOCALE_PROVIDER {provider} {literal(shape['locale'])}" if provider else ""
            ddl(conn, (
                f"CREATE DATABASE {ident(shadow)} TEMPLATE template0 OWNER {ident(shape['owner'])} "
                f"ENCODING {literal(shape['encoding'])} LC_COLLATE {literal(shape['datcollate'])} "
                f"LC_CTYPE {literal(shape['datctype'])}{locale} TABLESPACE {ident(shape['spcname'])} "
                f"CONNECTION LIMIT {int(shape['datconnlimit'])}"))
            self._comment(conn, shadow, marker.to_text())
            if shape["has_acl"]:
                ddl(conn, f"REVOKE ALL ON DATABASE {ident(shadow)} FROM PUBLIC, {ident(shape['owner'])}")
                for privilege, grantee, grantable in conn.execute(text(ACL), {"name": target}).all():
                    ddl(conn, f"GRANT {privilege} ON DATABASE {ident(shadow)} TO {grantee}"
                              + (" WITH GRANT OPTION" if grantable else ""))

    @staticmethod
    def _comment(conn: Connection, name: str, comment: str | None) -> None:
        value = "NULL" if comment is None else literal(comment)
        ddl(conn, f"COMMENT ON DATABASE {ident(name)} IS {value}")

    def load(self, shadow: str) -> None:
        self._load(self.db.with_database(shadow))

    def check(self, shadow: str) -> None:
        """Check the loaded shadow, then give it the target's `ALTER DATABASE ... SET` settings: only now, so a
        `statement_timeout` or `default_transaction_read_only` of the application's never hits the load."""
        self._check(self.db.with_database(shadow))
        with maintenance_connection(self.db) as conn:
            for role, setting in conn.execute(text(SETTINGS), {"name": self.db.database}).all():
                key, _, value = setting.partition("=")
                scope = f"ROLE {ident(role)} IN DATABASE" if role else "DATABASE"
                ddl(conn, f"ALTER {scope} {ident(shadow)} SET {ident(key)} TO {guc_value(key, value)}")

    def mark(self, name: str, marker: Marker) -> None:
        with maintenance_connection(self.db) as conn:
            self._comment(conn, name, marker.to_text())

    def swap(self, target: str, incoming: str, outgoing: str, marker: Marker) -> float:
        with maintenance_connection(self.db) as conn:
            own = conn.execute(text("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                                    "WHERE datname = :name"), {"name": target}).scalar()
            start = time.perf_counter()
            ddl(conn, f"ALTER DATABASE {ident(target)} ALLOW_CONNECTIONS false")
            try:
                self._end_sessions(conn, target)
                self._end_sessions(conn, incoming)  # a session on the shadow (or copy) would block its rename
                with one_transaction(conn):
                    ddl(conn, f"ALTER DATABASE {ident(target)} RENAME TO {ident(outgoing)}")
                    ddl(conn, f"ALTER DATABASE {ident(incoming)} RENAME TO {ident(target)}")
                    ddl(conn, f"ALTER DATABASE {ident(outgoing)} ALLOW_CONNECTIONS true")
                    self._comment(conn, outgoing, marker.to_text())
                    self._comment(conn, target, None if Marker.parse(own) else own)
            except BaseException as exc:
                ddl(conn, f"ALTER DATABASE {ident(target)} ALLOW_CONNECTIONS true")
                if isinstance(exc, DBAPIError):
                    reason = str(exc.orig).strip().splitlines()[0]
                    raise RestoreError(f"the swap into {target!r} failed ({reason}); the target is unchanged "
                                       "and open again") from None
                raise
            return time.perf_counter() - start

    @staticmethod
    def _end_sessions(conn: Connection, name: str) -> None:
        """Terminate every session on `name` and wait until they are gone (new ones are refused meanwhile)."""
        deadline = time.monotonic() + SESSION_WAIT
        sessions = text("SELECT pid FROM pg_stat_activity WHERE datname = :name AND pid <> pg_backend_pid()")
        while pids := conn.execute(sessions, {"name": name}).scalars().all():
            if time.monotonic() > deadline:
                raise RestoreError(f"{len(pids)} session(s) on {name!r} could not be ended within {SESSION_WAIT:g} s "
                                   "(no right to terminate them?); the target is unchanged and open again")
            for pid in pids:
                conn.execute(text("SELECT pg_terminate_backend(:pid, 1000)"), {"pid": pid})

    def reopen(self, target: str) -> None:
        with maintenance_connection(self.db) as conn:
            ddl(conn, f"ALTER DATABASE {ident(target)} ALLOW_CONNECTIONS true")

    def drop(self, name: str) -> None:
        with maintenance_connection(self.db) as conn:
            ddl(conn, f"DROP DATABASE IF EXISTS {ident(name)} WITH (FORCE)")


def swap_blocker(db: DatabaseURL, conn: Connection) -> str | None:
    """Why a swap cannot work for `db` (then the restore runs in place), or None. `conn` is a session in `db`."""
    if db.database in MAINTENANCE or db.database == "template0":
        return f"{db.database!r} is the database maintenance connections stay on"
    host = (db.url.host or "").lower()
    if host.endswith((".supabase.co", ".supabase.com")):
        return "a managed service (Supabase) does not let databases be renamed"
    role = conn.execute(text(
        "SELECT r.rolsuper, r.rolcreatedb, pg_has_role(r.oid, 'pg_signal_backend', 'member'), "
        "pg_get_userbyid(d.datdba) = current_user OR pg_has_role(d.datdba, 'member') "
        "FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = current_database()")).one()
    superuser, createdb, signal, owner = role
    if superuser:
        return None
    if not createdb:
        return "the role has no CREATEDB privilege (needed for the shadow database)"
    if not owner:
        return "the role does not own the database (needed to rename it)"
    if not signal:
        return "the role cannot end other roles' sessions (pg_signal_backend), so the swap could not close the target"
    return None


def clear_directory(path: Path) -> Path:
    """An empty private directory at `path` (what a killed run unpacked there is removed first)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700, parents=True)
    return path


def count_rows(db: DatabaseURL, tables: list[str], jobs: int) -> dict[str, int]:
    """Exact row counts of `tables`, `jobs` connections at once (the shadow is idle, so they run in parallel)."""
    def count(table: str) -> tuple[str, int]:
        engine = db.create_engine()
        try:
            with engine.connect() as conn:
                return table, int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() or 0)
        finally:
            engine.dispose()

    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(tables)))) as pool:
        return dict(pool.map(count, tables))


CHILDLESS_TABLE = """
    SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = :schema AND c.relname = :name AND c.relkind IN ('r', 'p')
      AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhparent = c.oid)
"""


class LoadedCounts:
    """Exact row counts of the shadow's tables, each taken in a session of its own as soon as its loader is done.

    Two tables rarely finish together: the first one's count then runs on the core the other's load
    leaves idle, and the check after the load counts only what is left (measured at scale 50: the
    check after the load 0.44 s -> 0.10 s, beside it the last table's own count, 0.13 s). Nothing
    changes a loaded table's rows afterwards (triggers and rules come later, and act only on new
    writes). A table with inheritance children or partitions is left to the check: its count
    includes theirs, which other loaders may still be loading.
    """

    def __init__(self, db: DatabaseURL, into: dict[str, int]) -> None:
        self.db, self.into = db, into
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dbjobs-count")
        self._pending: list[Future[None]] = []
        self._conn: Connection | None = None

    def loaded(self, tables: list[tuple[str, str]]) -> None:
        """Count `tables` (schema, name), just loaded, in the background."""
        self._pending.append(self._pool.submit(self._count, tables))

    def _count(self, tables: list[tuple[str, str]]) -> None:
        try:
            if self._conn is None:
                self._conn = self.db.create_engine(poolclass=NullPool, isolation_level="AUTOCOMMIT").connect()
            for schema, name in tables:
                key = self._conn.execute(text(CHILDLESS_TABLE), {"schema": schema, "name": name}).scalar()
                if key is not None:
                    self.into[key] = int(self._conn.execute(text(f"SELECT count(*) FROM {key}")).scalar() or 0)
        except DBAPIError as exc:
            raise RestoreError(f"could not count the rows of the loaded shadow ({str(exc.orig).strip()}); "
                               "the target is unchanged") from None

    def __enter__(self) -> LoadedCounts:
        return self

    def __exit__(self, *exc: object) -> None:
        """Wait for the counts (a failed count fails a load that succeeded); after a failed load, drop them."""
        try:
            for future in self._pending:
                if exc[0] is None:
                    future.result()
                else:
                    future.cancel()
        finally:
            self._pool.shutdown(wait=True)
            if self._conn is not None:
                self._conn.close()
                self._conn.engine.dispose()


# The shadow's load sessions: no time limits or read-only default a role's settings may carry into
# them; asynchronous commit, which is safe here because the swap commits synchronously after the
# load and so flushes every earlier commit's WAL with its own.
LOAD_OPTIONS = ("-c synchronous_commit=off -c statement_timeout=0 -c lock_timeout=0 "
                "-c idle_in_transaction_session_timeout=0 -c default_transaction_read_only=off")


def restore_env() -> dict[str, str]:
    """The environment of the shadow's `pg_restore` (what the user's PGOPTIONS say, then ours)."""
    return {"PGOPTIONS": f"{os.environ.get('PGOPTIONS', '')} {LOAD_OPTIONS}".strip()}
