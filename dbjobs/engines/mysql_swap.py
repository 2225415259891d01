"""MariaDB's swap restore (dbjobs/swap.py): a shadow database, one atomic `RENAME TABLE`, markers as comments.

MariaDB cannot rename a database, but it renames any number of tables across databases in one
atomic statement. So the swap moves every table of the target into the pre-restore copy and
every table of the shadow into the target in ONE `RENAME TABLE`; it happens entirely or not at
all. What belongs to a database rather than its tables is carried around that step: triggers
(the server refuses to move a table with triggers to another database) are dropped just before
and recreated after; views, routines and events of the incoming side replace the target's after.
The target's old views, routines and triggers are recreated in the pre-restore copy, so it is a
database one can query as it was; its events are not (a copy must not run them). Every object's
definition also travels as a table (`__dbjobs_objects`), which is what an undo recreates from.
Markers are database comments (MariaDB 10.5+).

The RENAME also carries two bookkeeping tables that make a kill at any point recognisable: the
old objects into the copy, and a receipt (the copy's name and marker) into the incoming side. A
run killed after the RENAME is finished by the next `found` (comment on the copy, objects in the
target, the emptied incoming side dropped); one killed before it is reverted by `reopen` (the
target's triggers back, the unfinished copy dropped). Every swap runs under a `GET_LOCK` on its
own connection: a worker killed while its RENAME waits leaves the statement running on the
server, and the lock is released only when that statement has ended, so the next run never
judges a swap still under way.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pymysql
from sqlalchemy.exc import OperationalError

from dbjobs.dburl import DatabaseURL
from dbjobs.engines.base import unavailable
from dbjobs.errors import RestoreError
from dbjobs.swap import Marker, SwapSite, is_derived_name, pre_restore_name, shadow_name

if TYPE_CHECKING:
    from dbjobs.engines.mysql import MySQLConnector

LOCK_WAIT = 900  # seconds to wait for the swap lock or a metadata lock (DBJOBS_LOCK_WAIT's default)
OBJECTS = "__dbjobs_objects"  # a database's views, routines, triggers, events (as DDL), kept beside its tables
OUT_OBJECTS = "__dbjobs_out_objects"  # the target's objects, on their way into the copy
RECEIPT = "__dbjobs_receipt"  # in the copy before the swap; in the incoming side after it
SWAPPED = "__dbjobs_swapped"
BOOKKEEPING = frozenset({OBJECTS, OUT_OBJECTS, RECEIPT, SWAPPED})
KINDS = ("FUNCTION", "PROCEDURE", "VIEW", "TRIGGER", "EVENT")  # creation order


def q(name: str) -> str:
    """A backquoted identifier."""
    return "`" + name.replace("`", "``") + "`"


def line(exc: BaseException) -> str:
    """An error's first line."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class Session:
    """A raw DB-API connection in autocommit: DDL bodies are sent verbatim, never %-formatted."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def run(self, sql: str, args: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall()) if cur.description else []

    def names(self, sql: str, *args: Any) -> list[str]:
        return [str(r[0]) for r in self.run(sql, args)]

    def tables(self, schema: str, kind: str = "<> 'VIEW'") -> list[str]:
        """Tables of `schema` (what RENAME TABLE moves: base, sequence, system-versioned)."""
        return self.names(f"SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                          f"AND TABLE_TYPE {kind} ORDER BY TABLE_NAME", schema)

    def user_tables(self, schema: str) -> list[str]:
        return [t for t in self.tables(schema) if t not in BOOKKEEPING]

    def charset(self, schema: str) -> str:
        rows = self.run("SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA "
                        "WHERE SCHEMA_NAME = %s", (schema,))
        return f"CHARACTER SET {rows[0][0]} COLLATE {rows[0][1]}" if rows else ""


@contextmanager
def session(db: DatabaseURL, *, lock: bool = False) -> Iterator[Session]:
    """A connection of its own (holding the target's swap lock if `lock`); closing it releases the lock."""
    engine = db.create_engine(isolation_level="AUTOCOMMIT")
    try:
        raw = engine.raw_connection()
    except OperationalError as exc:
        raise unavailable(db, exc) from None
    try:
        s = Session(raw.driver_connection)
        s.run("SET SESSION lock_wait_timeout = %s", (LOCK_WAIT,))
        if lock:
            name = "dbjobs-swap:" + hashlib.sha256(db.database.encode()).hexdigest()[:40]
            if s.run("SELECT GET_LOCK(%s, %s)", (name, LOCK_WAIT))[0][0] != 1:
                raise RestoreError(f"another swap of {db.database!r} still holds its lock after {LOCK_WAIT} s; "
                                   "the target is unchanged")
        yield s
    finally:
        raw.close()
        engine.dispose()


def objects(s: Session, schema: str) -> list[dict[str, str]]:
    """Views, routines, triggers and events of `schema` with the DDL (and sql_mode) that recreates them.

    Read with `schema` as the current database, so the server prints names unqualified and the
    DDL recreates each object in whichever database it runs in.
    """
    s.run(f"USE {q(schema)}")
    found = [{"kind": "VIEW", "name": name, "sql_mode": "", "ddl": str(s.run(f"SHOW CREATE VIEW {q(name)}")[0][1])}
             for (name,) in s.run("SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = %s "
                                  "ORDER BY TABLE_NAME", (schema,))]
    for name, kind, mode in s.run("SELECT ROUTINE_NAME, ROUTINE_TYPE, SQL_MODE FROM information_schema.ROUTINES "
                                  "WHERE ROUTINE_SCHEMA = %s AND ROUTINE_TYPE IN ('FUNCTION', 'PROCEDURE') "
                                  "ORDER BY ROUTINE_NAME", (schema,)):
        found.append({"kind": kind, "name": name, "sql_mode": mode,
                      "ddl": str(s.run(f"SHOW CREATE {kind} {q(name)}")[0][2])})
    for name, mode in s.run("SELECT TRIGGER_NAME, SQL_MODE FROM information_schema.TRIGGERS "
                            "WHERE TRIGGER_SCHEMA = %s ORDER BY EVENT_OBJECT_TABLE, ACTION_ORDER", (schema,)):
        found.append({"kind": "TRIGGER", "name": name, "sql_mode": mode,
                      "ddl": str(s.run(f"SHOW CREATE TRIGGER {q(name)}")[0][2])})
    for name, mode, zone in s.run("SELECT EVENT_NAME, SQL_MODE, TIME_ZONE FROM information_schema.EVENTS "
                                  "WHERE EVENT_SCHEMA = %s ORDER BY EVENT_NAME", (schema,)):
        found.append({"kind": "EVENT", "name": name, "sql_mode": mode, "time_zone": zone,
                      "ddl": str(s.run(f"SHOW CREATE EVENT {q(name)}")[0][3])})
    return found


def drop_objects(s: Session, schema: str, items: Iterable[dict[str, str]]) -> None:
    """Drop these objects of `schema` where they exist (safe to repeat)."""
    for item in items:
        s.run(f"DROP {item['kind']} IF EXISTS {q(schema)}.{q(item['name'])}")


def create_objects(s: Session, schema: str, items: list[dict[str, str]]) -> None:
    """Create (or replace) these objects in `schema`, each under its own sql_mode; safe to repeat.

    Views are retried until none is left, since one view may be built on another.
    """
    s.run(f"USE {q(schema)}")
    pending = sorted(items, key=lambda i: KINDS.index(i["kind"]))
    try:
        while pending:
            failed: list[tuple[dict[str, str], Exception]] = []
            for item in pending:
                s.run("SET SESSION sql_mode = %s", (item.get("sql_mode", ""),))
                s.run("SET SESSION time_zone = %s", (item.get("time_zone") or "SYSTEM",))
                try:
                    s.run(f"DROP {item['kind']} IF EXISTS {q(item['name'])}")
                    s.run(item["ddl"])
                except pymysql.MySQLError as exc:
                    failed.append((item, exc))
            if len(failed) == len(pending):
                item, exc = failed[0]
                raise RestoreError(f"cannot create {item['kind'].lower()} {item['name']!r} in {schema!r} "
                                   f"({line(exc)})")
            pending = [item for item, _ in failed]
    finally:
        s.run("SET SESSION sql_mode = DEFAULT")
        s.run("SET SESSION time_zone = DEFAULT")


def store(s: Session, schema: str, table: str, value: object) -> None:
    """Keep a JSON value in a one-row bookkeeping table of `schema` (replaced if there)."""
    s.run(f"CREATE TABLE IF NOT EXISTS {q(schema)}.{q(table)} (v LONGTEXT NOT NULL)")
    s.run(f"DELETE FROM {q(schema)}.{q(table)}")
    s.run(f"INSERT INTO {q(schema)}.{q(table)} VALUES (%s)", (json.dumps(value),))


def stored(s: Session, schema: str, table: str) -> Any:
    """The JSON value of a bookkeeping table."""
    rows = s.run(f"SELECT v FROM {q(schema)}.{q(table)}")
    return json.loads(rows[0][0]) if rows else None


class MySQLSwapSite(SwapSite):
    """The swap steps on one MariaDB server, for the target database of `db`."""

    name_limit = 64

    def __init__(self, connector: MySQLConnector, load: Callable[[DatabaseURL], None],
                 check: Callable[[DatabaseURL], None]) -> None:
        self.connector = connector
        self.db = connector.db
        self._load = load
        self._check = check

    def _derived(self, s: Session, target: str) -> dict[str, str]:
        rows = s.run("SELECT SCHEMA_NAME, SCHEMA_COMMENT FROM information_schema.SCHEMATA")
        return {str(n): str(c or "") for n, c in rows if is_derived_name(str(n), target, self.name_limit)}

    def found(self, target: str) -> dict[str, Marker | None]:
        """The side databases with their markers, after finishing any swap a kill stopped after its RENAME."""
        with session(self.db, lock=True) as s:
            for name in self._derived(s, target):
                if SWAPPED in s.tables(name):
                    outgoing, marker = stored(s, name, SWAPPED)
                    self._comment(s, outgoing, marker)
                    self._finish(s, target, name, outgoing)
            return {n: Marker.parse(c) for n, c in self._derived(s, target).items()}

    def create_shadow(self, target: str, shadow: str, marker: Marker) -> None:
        with session(self.db) as s:
            s.run(f"CREATE DATABASE {q(shadow)} {s.charset(target)} COMMENT = %s", (marker.to_text(),))

    def load(self, shadow: str) -> None:
        self._load(self.db.with_database(shadow))

    def check(self, shadow: str) -> None:
        self._check(self.db.with_database(shadow))

    @staticmethod
    def _comment(s: Session, name: str, text: str) -> None:
        s.run(f"ALTER DATABASE {q(name)} COMMENT = %s", (text,))

    def mark(self, name: str, marker: Marker) -> None:
        with session(self.db) as s:
            self._comment(s, name, marker.to_text())

    def swap(self, target: str, incoming: str, outgoing: str, marker: Marker) -> float:
        with session(self.db, lock=True) as s:
            if OBJECTS not in s.tables(incoming):  # a loaded shadow; a copy being undone has its list already
                store(s, incoming, OBJECTS, objects(s, incoming))
            old = objects(s, target)
            s.run(f"CREATE DATABASE {q(outgoing)} {s.charset(target)}")
            store(s, outgoing, RECEIPT, [outgoing, marker.to_text()])
            store(s, incoming, OUT_OBJECTS, old)
            start = time.perf_counter()
            try:
                drop_objects(s, target, [i for i in old if i["kind"] == "TRIGGER"])
                drop_objects(s, incoming, [i for i in stored(s, incoming, OBJECTS) if i["kind"] == "TRIGGER"])
                moves = [f"{q(target)}.{q(t)} TO {q(outgoing)}.{q(t)}" for t in s.user_tables(target)]
                moves += [f"{q(incoming)}.{q(t)} TO {q(target)}.{q(t)}" for t in s.user_tables(incoming)]
                moves += [f"{q(incoming)}.{q(OUT_OBJECTS)} TO {q(outgoing)}.{q(OBJECTS)}",
                          f"{q(outgoing)}.{q(RECEIPT)} TO {q(incoming)}.{q(SWAPPED)}"]
                s.run("RENAME TABLE " + ", ".join(moves))
            except pymysql.MySQLError as exc:
                try:
                    self._revert(s, target, incoming, outgoing)
                except pymysql.MySQLError:  # the session is gone (an interrupted read): `drop` settles it anew
                    raise RestoreError(f"the swap into {target!r} was interrupted ({line(exc)}); what it did is "
                                       "completed or reverted before the restore ends (see `status`)") from None
                raise RestoreError(f"the swap into {target!r} failed ({line(exc)}); the target is unchanged") from None
            self._comment(s, outgoing, marker.to_text())
            self._finish(s, target, incoming, outgoing)
            return time.perf_counter() - start

    def _finish(self, s: Session, target: str, incoming: str, outgoing: str) -> None:
        """After the RENAME: the incoming side's objects replace the target's old ones, which are recreated in the
        copy (events excepted: a copy must not run them; they stay definitions for an undo); the emptied side goes.

        Each step may be repeated: a run killed here is finished by the next `found`.
        """
        old = stored(s, outgoing, OBJECTS) or []
        drop_objects(s, target, old)
        create_objects(s, target, stored(s, incoming, OBJECTS) or [])
        create_objects(s, outgoing, [i for i in old if i["kind"] != "EVENT"])
        s.run(f"DROP DATABASE IF EXISTS {q(incoming)}")

    def _revert(self, s: Session, target: str, incoming: str, outgoing: str) -> None:
        """Before the RENAME: the target's triggers back, the unfinished copy gone, nothing moved."""
        old = stored(s, incoming, OUT_OBJECTS) or []
        create_objects(s, target, [i for i in old if i["kind"] == "TRIGGER"])
        s.run(f"DROP TABLE IF EXISTS {q(incoming)}.{q(OUT_OBJECTS)}")
        if not s.user_tables(outgoing):
            s.run(f"DROP DATABASE IF EXISTS {q(outgoing)}")

    def reopen(self, target: str) -> None:
        """Revert a swap killed before its RENAME (one killed after it was finished by `found`)."""
        with session(self.db, lock=True) as s:
            derived = self._derived(s, target)
            for name in derived:
                if OUT_OBJECTS in s.tables(name) and SWAPPED not in s.tables(name):
                    old = stored(s, name, OUT_OBJECTS)
                    create_objects(s, target, [i for i in old if i["kind"] == "TRIGGER"])
                    s.run(f"DROP TABLE {q(name)}.{q(OUT_OBJECTS)}")
            for name, comment in derived.items():
                if Marker.parse(comment) is None and s.tables(name) == [RECEIPT]:
                    s.run(f"DROP DATABASE IF EXISTS {q(name)}")

    def drop(self, name: str) -> None:
        """Drop `name` once any swap under way is settled: a swap interrupted by an exception (a time limit while
        its RENAME waits) may leave that RENAME running on the server, and its shadow holds the bookkeeping that
        finishes or reverts it; dropping it blindly could lose the target's triggers or the copy's marker."""
        self.found(self.db.database)  # waits for the swap lock, finishes a swap whose RENAME happened
        self.reopen(self.db.database)  # reverts one whose RENAME did not (the target's triggers back)
        with session(self.db) as s:
            s.run(f"DROP DATABASE IF EXISTS {q(name)}")


def row_counts(s: Session, schema: str, skip: Collection[str] = ()) -> dict[str, int]:
    """Exact rows per base table of `schema` (the tables a manifest counts; bookkeeping and `skip` left out)."""
    return {t: int(s.run(f"SELECT COUNT(*) FROM {q(schema)}.{q(t)}")[0][0])
            for t in s.tables(schema, "= 'BASE TABLE'") if t not in BOOKKEEPING and t not in skip}


# The account's grantee as information_schema spells it: 'user'@'host'.
GRANTEE = ("CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', "
           "SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''')")
NEEDED = ("CREATE", "DROP", "ALTER", "INSERT")  # a shadow and a copy: created, commented, filled by RENAME, dropped


def may_create(s: Session, name: str) -> bool:
    """Whether the account may create, fill and drop a database called `name` (by a global or a database grant)."""
    held = set(s.names(f"SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = {GRANTEE}"))
    held |= set(s.names(f"SELECT PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = {GRANTEE} "
                        "AND %s LIKE TABLE_SCHEMA", name))
    return held.issuperset(NEEDED)


def swap_blocker(s: Session, target: str) -> str | None:
    """Why this server or account cannot restore `target` by swap (then the restore runs in place), or None."""
    version = str(s.run("SELECT VERSION()")[0][0])
    numbers = [int(p) for p in version.split("-")[0].split(".")[:2] if p.isdigit()]
    if "mariadb" not in version.lower() or numbers < [10, 5]:
        return f"the server ({version}) is not MariaDB 10.5 or newer (database comments hold the swap's markers)"
    for name in (shadow_name(target, MySQLSwapSite.name_limit),
                 pre_restore_name(target, datetime.now(UTC), MySQLSwapSite.name_limit)):
        if not may_create(s, name):
            return (f"the account may not create and drop the database {name!r} beside it (needs "
                    f"{', '.join(NEEDED)} on it, e.g. GRANT ALL ON `{target}\\_\\_%`.*)")
    return None
