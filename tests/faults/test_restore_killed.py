"""Restores whose whole worker is killed (-9) at each step: the database is the before state or the backup.

Every case runs through real Celery workers on a Redis of the suite: `restore` is submitted with
the CLI, the worker is killed when the restore reaches the step under test, the database is
compared row for row with the state before the restore, then a second worker receives the
redelivered task (a short visibility timeout) and the database must be exactly the backup. What
must never be lost: the pre-restore state, which must still be where the result says (MariaDB's
pre-restore copy, the one safety backup of the request). What must never be left: a file with
the MariaDB password (the client tools read it from a pipe).
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from dbjobs.engines.dblock import hold
from dbjobs.inuse import in_use
from dbjobs.jobs import run_job
from tests.backup_support import (
    build_sample,
    connect,
    copy_snapshot,
    db,
    dump_path,
    mutate,
    mysql_objects,
    settings_for,
    side_databases,
    snapshot,
)
from tests.celery_support import Proc, celery_env, cli_json, flushed_redis, run_cli, start_worker, wait_until
from tests.conftest import MYSQL_ADMIN_URL
from tests.redis_server import OwnedRedis

pytestmark = pytest.mark.redis
REDIS_DB = 5
SECRET = f"Pw#{uuid.uuid4().hex[:10]} \"q\""
TIMES: list[tuple[str, str, str, float]] = []  # (fault, engine, asserted, seconds to recovery), printed at the end


@pytest.fixture(scope="module")
def mysql_user() -> Iterator[str]:
    """A MariaDB account with a password (root has none here), allowed on the test databases only."""
    name = f"dbjobs_r_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine("mysql+pymysql://" + MYSQL_ADMIN_URL.split("://", 1)[1], isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE USER '{name}'@'%' IDENTIFIED BY :pw"), {"pw": SECRET})
        conn.execute(sa.text(f"GRANT ALL ON `dbjobs\\_t\\_%`.* TO '{name}'@'%'"))
        conn.execute(sa.text(f"GRANT RELOAD, PROCESS ON *.* TO '{name}'@'%'"))
    try:
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP USER IF EXISTS '{name}'@'%'"))
        admin.dispose()


def _with_user(url: str, user: str) -> str:
    from urllib.parse import quote

    return url.replace("mysql://root@", f"mysql://{user}:{quote(SECRET, safe='')}@")


@dataclass
class Case:
    """One restore to kill: its environment, the backup, and the states the database may be in."""

    url: str
    env: dict[str, str]
    base: Path
    backup_id: str
    before: dict
    restored: dict
    before_objects: dict  # MariaDB: views, routines, triggers, events (`mysql_objects`); empty for SQLite
    restored_objects: dict

    @property
    def backups(self) -> Path:
        return self.base / "backups"


# MariaDB objects the swap carries around its RENAME: a trigger (dropped just before it) and a function, which
# the after-the-RENAME kill point holds in use so that replacing the target's objects waits.
MYSQL_OBJECTS = [
    "CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, order_id BIGINT NOT NULL)",
    "CREATE TRIGGER orders_gone AFTER DELETE ON orders FOR EACH ROW INSERT INTO audit (order_id) VALUES (OLD.id)",
    "CREATE FUNCTION one() RETURNS INT DETERMINISTIC RETURN 1",
]
MYSQL_CHANGES = ["CREATE OR REPLACE FUNCTION one() RETURNS INT DETERMINISTIC RETURN 2",
                 "CREATE VIEW big AS SELECT id FROM orders WHERE total > 100"]


def _target(engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The database to restore into: MariaDB through an account with a password, a scratch PostgreSQL, a file."""
    if engine == "mysql":
        return _with_user(request.getfixturevalue("mysql_url"), request.getfixturevalue("mysql_user"))
    if engine == "postgresql":
        return request.getfixturevalue("pg_url")
    return f"sqlite:///{tmp_path / 'live.sqlite3'}"


def _objects(url: str) -> dict:
    return mysql_objects(url) if url.startswith("mysql") else {}


def _prepare(url: str, base: Path, alias: str, rows: int) -> Case:
    build_sample(url)
    mysql = url.startswith("mysql")
    with connect(url) as conn:  # enough data that each step takes a moment to catch
        conn.execute(sa.text("CREATE TABLE bulk (id INTEGER PRIMARY KEY, pad VARCHAR(400))"))
        for start in range(0, rows, 20_000):
            conn.execute(sa.text("INSERT INTO bulk VALUES (:i, :p)"),
                         [{"i": i, "p": f"{i:08d}" * 40} for i in range(start, min(rows, start + 20_000))])
        for statement in MYSQL_OBJECTS if mysql else []:
            conn.execute(sa.text(statement))
    env = celery_env(base, flushed_redis(REDIS_DB), DBJOBS_DATABASES=json.dumps({alias: url}),
                     DBJOBS_VISIBILITY_TIMEOUT="4", DBJOBS_LOCK_TTL="2", TMPDIR=str(base / "tmp"))
    (base / "tmp").mkdir()
    backup = run_job("dbjobs.backup", settings_for(base / "backups", **{alias: url}), {"database": alias})
    restored, restored_objects = snapshot(url), _objects(url)
    mutate(url)  # its DELETE fires the trigger too
    with connect(url) as conn:
        for statement in MYSQL_CHANGES if mysql else []:
            conn.execute(sa.text(statement))
    return Case(url, env, base, backup["id"], snapshot(url), restored, _objects(url), restored_objects)


def _no_secret_left(case: Case) -> None:
    """No file the jobs could have written holds the password: the test's tree and the temp folders."""
    roots = [case.base, Path(tempfile.gettempdir())]
    for root in roots:
        for path in (root.rglob("*") if root == case.base else root.glob("dbjobs-*")):
            if path.is_file() and path.stat().st_size < 1 << 26:
                assert SECRET.encode() not in path.read_bytes(), f"{path} holds the password"


def _stage_file(case: Case) -> bool:
    return any(".restore-" in p.name for p in case.backups.iterdir())


def _safety_partial(case: Case) -> bool:
    return any(p.name.startswith(".") and p.name.endswith(".partial") and ".restore-" not in p.name
               for p in case.backups.iterdir())


def _shadow_loading(case: Case) -> bool:
    """The shadow has its big table and the client is still filling it."""
    name = sa.engine.make_url(case.url).database
    with connect(case.url) as conn:
        return bool(conn.execute(sa.text(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = :s AND TABLE_NAME = 'bulk'"),
            {"s": f"{name}__shadow"}).scalar())


def _running(statement: str) -> Callable[[Case], bool]:
    """Whether a session runs (or waits in) a statement starting with `statement`."""
    def reached(case: Case) -> bool:
        with connect(case.url) as conn:
            return bool(conn.execute(sa.text("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE :p"),
                                     {"p": statement + "%"}).scalar())
    return reached


def _journal_live(case: Case) -> bool:
    return case.url.startswith("sqlite") and Path(case.url.removeprefix("sqlite:///") + "-journal").exists()


def _pre_restore_url(case: Case, name: str) -> str:
    return str(sa.engine.make_url(case.url).set(database=name).render_as_string(hide_password=False))


POINTS: dict[str, tuple[str, Callable[[Case], bool]]] = {
    # kill point: (engine, the condition that says the restore reached it)
    "mid-load (shadow)": ("mysql", _shadow_loading),
    "mid-swap (RENAME waiting, triggers dropped)": ("mysql", _running("RENAME TABLE")),
    "after the RENAME (objects being replaced)": ("mysql", _running("DROP FUNCTION")),
    "during compensation (recovery)": ("mysql", _running("RENAME TABLE")),
    "sqlite before the copy (staging)": ("sqlite", _stage_file),
    "sqlite mid-copy (journal hot)": ("sqlite", _journal_live),
}


@pytest.mark.parametrize("point", list(POINTS))
def test_a_killed_restore_is_the_before_state_then_the_backup(point: str, request: pytest.FixtureRequest,
                                                              tmp_path: Path) -> None:
    engine, reached = POINTS[point]
    case = _prepare(_target(engine, request, tmp_path), tmp_path, "app", rows=150_000 if engine == "mysql" else 400_000)
    blocker = _Blocker(case.url, BLOCKS[point]) if point in BLOCKS else None
    first = start_worker(case.env, tmp_path, "first")
    workers: list[Proc] = [first]
    try:
        task_id = run_cli(case.env, tmp_path, "restore", case.backup_id, "--yes").stdout.strip()
        wait_until(lambda: reached(case), 120, f"the restore never reached {point}")
        first.kill()
        killed = time.monotonic()
        if blocker is None:
            assert snapshot(case.url) == case.before, f"{point}: the database changed before the swap"
        if "compensation" in point:  # the redelivered run waits for the orphaned RENAME: kill it there too
            workers.append(start_worker(case.env, tmp_path, "second"))
            workers[-1].wait_for_log("Task dbjobs.restore", 60)
            time.sleep(3)  # it waits there for the swap lock the orphaned RENAME holds
            workers[-1].kill()
        workers.append(start_worker(case.env, tmp_path, "last"))
        if blocker is not None:
            time.sleep(1)
            blocker.close()  # the orphaned RENAME may now run: the next run must see whether it did
        result = cli_json(case.env, tmp_path, "result", task_id, "--wait")
        recovery = time.monotonic() - killed
    finally:
        for worker in workers:
            worker.stop()
        if blocker is not None:
            blocker.close()
        flushed_redis(REDIS_DB)

    assert snapshot(case.url) == case.restored, f"{point}: the redelivered restore did not give the backup"
    _before_state_kept(case, result, engine, point)
    _no_secret_left(case)
    while_killed = "a statement of the killed run waits on the target, " if blocker else "before state while killed; "
    TIMES.append((point, engine, f"{while_killed}backup row for row after; {KEPT[engine]}; no secret file", recovery))


KEPT = {"mysql": "pre-restore copy = before state (objects too)", "sqlite": "one safety backup = before state"}


def _before_state_kept(case: Case, result: dict, engine: str, point: str) -> None:
    """The pre-restore state is where the result says: MariaDB's pre-restore copy (by swap, no safety dump), or
    SQLite's one safety backup of the request (its retries reuse it rather than back up what a first run left)."""
    safety = [m for m in map(json.loads, map(Path.read_text, case.backups.glob("*.manifest.json")))
              if m["kind"] == "safety"]
    if engine == "mysql":  # by swap: the old database itself is kept, no safety dump
        assert result["strategy"] == "swap" and safety == [] and result["safety_backup_id"] is None
        assert side_databases(case.url) == [result["pre_restore_copy"]]
        copy = _pre_restore_url(case, result["pre_restore_copy"])
        assert copy_snapshot(copy) == case.before, f"{point}: the pre-restore copy is not the before state"
        assert mysql_objects(case.url) == case.restored_objects, f"{point}: the backup's objects are not back"
        assert mysql_objects(copy) == case.before_objects, f"{point}: the copy's objects are not the before state"
    else:
        assert [m["id"] for m in safety] == [result["safety_backup_id"]], "one safety backup per request"
        assert safety[0]["row_counts"] == {t: len(v["rows"]) for t, v in case.before["tables"].items()}


class _Blocker:
    """An open transaction that has used an object of the target: what needs that object's metadata lock
    exclusively (RENAME TABLE for a table, DROP FUNCTION for a function) waits until it ends."""

    def __init__(self, url: str, using: str) -> None:
        self.engine = sa.create_engine("mysql+pymysql://" + url.split("://", 1)[1])
        self.conn = self.engine.connect()
        self.conn.execute(sa.text("START TRANSACTION"))  # explicit: with autocommit off alone, a statement that reads
        self.conn.execute(sa.text(using)).scalar()  # no table releases a routine's lock at once

    def close(self) -> None:
        if self.conn is not None:
            self.conn.rollback()
            self.conn.close()
            self.engine.dispose()
            self.conn = None


BLOCKS = {  # kill point: what the blocking transaction uses (the trigger is on orders, so it is dropped first)
    "mid-swap (RENAME waiting, triggers dropped)": "SELECT COUNT(*) FROM customers",
    "after the RENAME (objects being replaced)": "SELECT one()",
    "during compensation (recovery)": "SELECT COUNT(*) FROM customers",
}


@pytest.mark.parametrize("engine", ["postgresql", "mysql", "sqlite"])
def test_cleanup_during_a_restore_skips_the_backup_being_read(engine: str, request: pytest.FixtureRequest,
                                                              tmp_path: Path) -> None:
    """A cleanup that would delete every backup runs while a worker restores one: that one is kept and restored.

    The test holds the database's own job lock, so the restore waits for it with its backup open (verified,
    marked in use) on every engine; the cleanup runs then, and the restore goes on once the test lets go."""
    case = _prepare(_target(engine, request, tmp_path), tmp_path, "app", rows=2000)
    other = run_job("dbjobs.backup", settings_for(case.backups, app=case.url), {"database": "app"})["id"]
    env = {**case.env, "DBJOBS_VISIBILITY_TIMEOUT": "600"}  # nothing is killed here: no redelivery wanted
    worker = start_worker(env, tmp_path, "both", concurrency=2)
    dump = dump_path(case.backups, case.backup_id)
    try:
        with hold(db(case.url, "app"), "the test", wait=10):  # an interleaving job, as far as the restore knows
            task_id = run_cli(env, tmp_path, "restore", case.backup_id, "--yes").stdout.strip()
            wait_until(lambda: in_use(dump), 120, "the restore never opened its backup")
            cleaned = cli_json(env, tmp_path, "cleanup", "--keep-days", "0", "--min-keep", "0", "--allow-empty",
                               "--wait")
            assert snapshot(case.url) == case.before, "the restore went past the database's lock"
            released = time.monotonic()
        result = cli_json(env, tmp_path, "result", task_id, "--wait")
        recovery = time.monotonic() - released
    finally:
        worker.stop()
        flushed_redis(REDIS_DB)
    assert cleaned["in_use"] == [case.backup_id]
    assert [row["id"] for row in cleaned["deleted"]] == [other]
    assert dump.is_file() and not dump_path(case.backups, other).exists()
    assert result["backup_id"] == case.backup_id
    assert snapshot(case.url) == case.restored and _objects(case.url) == case.restored_objects
    _no_secret_left(case)
    TIMES.append(("cleanup during the restore", engine, "the backup being read kept, the rest deleted; before state "
                  "until the restore goes on, then the backup row for row; no secret file", recovery))


LOADING = {"mysql": (_shadow_loading, 150_000), "sqlite": (_stage_file, 400_000)}  # loading, and rows to catch it


@pytest.mark.parametrize("engine", list(LOADING))
def test_a_restore_whose_lock_redis_forgot_stops_before_the_swap(engine: str, request: pytest.FixtureRequest,
                                                                 tmp_path: Path) -> None:
    """Redis restarts empty while a restore loads on a real worker (MariaDB: its shadow; SQLite: its staged image):
    the job's lock is gone, so it stops at its next progress report, before the swap or the copy (the target
    untouched), and is retried. The database is then the backup, and the pre-restore state is kept once (MariaDB's
    pre-restore copy, SQLite's safety backup of the request): the first run never replaced anything."""
    loading, rows = LOADING[engine]
    case = _prepare(_target(engine, request, tmp_path), tmp_path, "app", rows=rows)
    server = OwnedRedis(tmp_path / "redis", appendonly=False).start()
    env = {**case.env, "DBJOBS_BROKER_URL": server.url(0)}
    worker = start_worker(env, tmp_path, "fenced")
    try:
        task_id = run_cli(env, tmp_path, "restore", case.backup_id, "--yes").stdout.strip()
        wait_until(lambda: loading(case), 120, "the restore never started loading")
        server.stop()
        server.start()  # empty: the restore's lock, message and state are gone
        stopped = time.monotonic()
        # until the job's next report, the emptied Redis knows nothing of it (`result` says so); then it is back
        wait_until(lambda: "lost the lock of database 'app'" in worker.text(), 120, "the job never saw its lock go")
        result = cli_json(env, tmp_path, "result", task_id, "--wait")
        recovery = time.monotonic() - stopped
        log = worker.text()
    finally:
        worker.stop()
        server.stop()
    assert "lost the lock of database 'app'" in log and f"dbjobs.restore[{task_id}] retry" in log, log[-3000:]
    assert snapshot(case.url) == case.restored and _objects(case.url) == case.restored_objects
    _before_state_kept(case, result, engine, "lock lost mid-load")
    _no_secret_left(case)
    TIMES.append(("Redis restarted empty mid-load (lock lost)", engine, "stopped before replacing anything, retried; "
                  f"backup row for row after; {KEPT[engine]}; no secret file", recovery))


def test_a_killed_mariadb_backup_is_taken_again_and_leaves_no_secret(mysql_url: str, mysql_user: str,
                                                                     tmp_path: Path) -> None:
    """kill -9 of the worker while it writes a MariaDB backup (an account with a password): the database is
    untouched, the redelivered job takes one complete backup with the database's exact row counts, and no file
    holds the password (the client tools read it from a pipe)."""
    case = _prepare(_with_user(mysql_url, mysql_user), tmp_path, "app", rows=400_000)
    taken = {m["id"] for m in map(json.loads, map(Path.read_text, case.backups.glob("*.manifest.json")))}
    workers = [start_worker(case.env, tmp_path, "first")]
    try:
        task_id = run_cli(case.env, tmp_path, "backup", "--database", "app").stdout.strip()
        wait_until(lambda: _safety_partial(case), 120, "the backup never started writing")
        workers[0].kill()
        killed = time.monotonic()
        assert snapshot(case.url) == case.before
        workers.append(start_worker(case.env, tmp_path, "second"))
        result = cli_json(case.env, tmp_path, "result", task_id, "--wait")
        recovery = time.monotonic() - killed
    finally:
        for worker in workers:
            worker.stop()
        flushed_redis(REDIS_DB)
    made = [m for m in map(json.loads, map(Path.read_text, case.backups.glob("*.manifest.json")))
            if m["id"] not in taken]
    assert [m["id"] for m in made] == [result["id"]] and made[0]["extra"]["request_id"] == task_id
    assert made[0]["row_counts"] == {t: len(v["rows"]) for t, v in case.before["tables"].items()}
    assert snapshot(case.url) == case.before
    _no_secret_left(case)
    TIMES.append(("backup killed mid-dump", "mysql", "database untouched; one complete backup after, exact row "
                  "counts; no secret file", recovery))


def test_zz_recovery_times() -> None:
    """Print the table of faults and times to recovery (for the closing note); asserts nothing new."""
    for row in TIMES:
        print(f"| {row[0]} | {row[1]} | {row[2]} | {row[3]:.1f} s |")
