"""Whole workers killed with `kill -9` mid-job, through real worker processes: the job comes back within
minutes, is never run twice while its first run lives, and `result` tells the user what happened.

Jobs are held at a known point by locks the test takes in PostgreSQL (pg_dump and a migration wait for a
table lock; a migration statement sleeps until the test lets it go), so the kill lands mid-job however
fast or busy the machine is.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.celery_support import celery_env, cli_json, manifests, run_cli, start_worker, wait_until
from tests.redis_server import OwnedRedis

pytestmark = pytest.mark.redis
HEADER = "-- dbjobs migration {name}\n-- engine: {engine}\n-- +dbjobs forward\n{forward}\n-- +dbjobs reverse\n"


def _waiting(conn: psycopg.Connection, event: str) -> bool:
    """Whether a session of this database (other than ours) waits on `event` ('Lock', 'PgSleep')."""
    return bool(conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                             "AND pid <> pg_backend_pid() AND (wait_event = %s OR wait_event_type = %s)",
                             (event, event)).fetchone()[0])


@pytest.fixture
def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    redis_server = OwnedRedis(tmp_path / "redis", appendonly=True).start()
    yield redis_server
    redis_server.stop()


@pytest.fixture
def pg(pg_url: str):  # type: ignore[no-untyped-def]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items AS SELECT g AS id, md5(g::text) AS name FROM generate_series(1, 2000) g")
        yield conn


@pytest.mark.postgres
def test_a_killed_workers_backup_comes_back_within_minutes_with_default_settings(
        tmp_path: Path, server: OwnedRedis, pg: psycopg.Connection, pg_url: str) -> None:
    env = celery_env(tmp_path, server.url(0), DBJOBS_DATABASES=f"pg={pg_url}", DBJOBS_LOCK_TTL="60")
    backups = tmp_path / "backups"
    first = start_worker(env, tmp_path, "doomed")
    first.wait_for_log("initial schema snapshot of ")  # its catalog reads are done
    second = None
    holder = psycopg.connect(pg_url)
    try:
        holder.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")  # the backup waits here: mid-job
        task_id = run_cli(env, tmp_path, "backup", "--database", "pg").stdout.strip()
        wait_until(lambda: _waiting(pg, "Lock"), 60, "the backup never reached the table")
        assert cli_json(env, tmp_path, "result", task_id)["worker_lost"] is None  # alive: running
        first.kill()
        killed = time.monotonic()
        second = start_worker(env, tmp_path, "restarted")  # a restarted container, say
        holder.rollback()
        wait_until(lambda: cli_json(env, tmp_path, "result", task_id)["worker_lost"], 90,
                   "result never said the worker died")
        told = time.monotonic() - killed
        shown = run_cli(env, tmp_path, "result", task_id)
        waited = run_cli(env, tmp_path, "result", task_id, "--wait", "--json", timeout=400)
        recovered = time.monotonic() - killed
        log = second.text()
    finally:
        holder.close()
        first.stop()
        if second:
            second.stop()
    assert "but its worker stopped" in shown.stdout and "runs again from the start" in shown.stdout, shown.stdout
    assert waited.returncode == 0, waited.stderr
    assert f"note: task {task_id} (dbjobs.backup): its worker stopped" in waited.stderr, waited.stderr
    result = json.loads(waited.stdout)
    assert [m["id"] for m in manifests(backups)] == [result["id"]] and result["row_counts"] == {"public.items": 2000}
    assert log.count(f"dbjobs.backup[{task_id}] received") == 1
    assert recovered < 300, f"the killed worker's job took {recovered:.0f} s to complete"
    print(f"\nkill -9 during backup: worker death told after {told:.0f} s, job complete {recovered:.0f} s after")


@pytest.mark.postgres
def test_a_live_job_longer_than_the_visibility_timeout_is_never_handed_to_another_worker(
        tmp_path: Path, server: OwnedRedis, pg: psycopg.Connection, pg_url: str) -> None:
    env = celery_env(tmp_path, server.url(0), DBJOBS_DATABASES=f"pg={pg_url}", DBJOBS_VISIBILITY_TIMEOUT="3",
                     DBJOBS_LOCK_TTL="60")
    workers = [start_worker(env, tmp_path, name) for name in ("one", "two")]
    for w in workers:
        w.wait_for_log("initial schema snapshot of ")  # its catalog reads are done before the test locks a table
    holder = psycopg.connect(pg_url)
    try:
        holder.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        task_id = run_cli(env, tmp_path, "backup", "--database", "pg").stdout.strip()
        wait_until(lambda: _waiting(pg, "Lock"), 60, "the backup never reached the table")
        time.sleep(12)  # four visibility timeouts
        holder.rollback()
        result = cli_json(env, tmp_path, "result", task_id, "--wait")
        logs = [w.text() for w in workers]
    finally:
        holder.close()
        for w in workers:
            w.stop()
    assert sum(log.count(f"dbjobs.backup[{task_id}] received") for log in logs) == 1, logs
    assert [m["id"] for m in manifests(tmp_path / "backups")] == [result["id"]]


class Target:
    """The database a migration runs on, seen from the test's own connection."""

    def __init__(self, engine: str, url: str) -> None:
        self.engine, self.url = engine, url
        if engine == "postgresql":
            self.conn = psycopg.connect(url, autocommit=True)
        elif engine == "sqlite":
            self.conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None, timeout=20)
        else:
            import pymysql

            parts = urlsplit(url)
            self.conn = pymysql.connect(host=parts.hostname, port=parts.port or 3306, user=parts.username,
                                        database=parts.path.lstrip("/"), autocommit=True)
        self.query("CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(40))")
        self.query({"postgresql": "INSERT INTO items SELECT g, 'item' FROM generate_series(1, 2000) g",
                    "mysql": "INSERT INTO items SELECT seq, 'item' FROM seq_1_to_2000",
                    "sqlite": "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < 2000) "
                              "INSERT INTO items SELECT i, 'item' FROM g"}[engine])

    def query(self, sql: str) -> list[tuple]:
        cursor = self.conn.cursor()
        cursor.execute(sql)
        return list(cursor.fetchall()) if cursor.description else []

    def sleep_statement(self) -> str:
        """A statement that sleeps a minute unless the table go_on exists (SQLite, which cannot sleep, counts to
        ten billion instead)."""
        if self.engine == "postgresql":
            return "SELECT pg_sleep(CASE WHEN to_regclass('go_on') IS NULL THEN 60 ELSE 0 END)"
        if self.engine == "sqlite":
            return ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < (SELECT CASE WHEN "
                    "EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'go_on') THEN 0 ELSE 10000000000 END)) "
                    "SELECT count(*) FROM n")
        return ("DO SLEEP(IF((SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() "
                "AND table_name = 'go_on') = 0, 60, 0))")

    def sleeping(self) -> bool:
        if self.engine == "sqlite":  # the migration's exclusive transaction has written (its first ALTER)
            return Path(self.url.removeprefix("sqlite:///") + "-journal").exists()
        if self.engine == "postgresql":
            return bool(self.query("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                                   "AND datname = current_database()")[0][0])
        return bool(self.query("SELECT count(*) FROM information_schema.processlist WHERE info LIKE 'DO SLEEP%' "
                               "AND id <> CONNECTION_ID()")[0][0])

    def columns(self) -> list[str]:
        if self.engine == "sqlite":
            return [r[1] for r in self.query("PRAGMA table_info(items)")]
        schema = "current_schema()" if self.engine == "postgresql" else "DATABASE()"
        return [r[0] for r in self.query("SELECT column_name FROM information_schema.columns WHERE table_name = "
                                         f"'items' AND table_schema = {schema} ORDER BY ordinal_position")]


@pytest.mark.parametrize("engine", ["postgresql", "mysql", "sqlite"])
def test_a_worker_killed_mid_migration_frees_the_database_and_the_job_completes(
        tmp_path: Path, server: OwnedRedis, engine: str, request: pytest.FixtureRequest) -> None:
    url = (f"sqlite:///{tmp_path / 'target.sqlite3'}" if engine == "sqlite"
           else request.getfixturevalue("pg_url" if engine == "postgresql" else "mysql_url"))
    target = Target(engine, url)
    migration = tmp_path / "0001_20260101T000000_slow.sql"
    forward = ["ALTER TABLE items ADD COLUMN c INTEGER", target.sleep_statement(),
               "ALTER TABLE items ADD COLUMN d INTEGER"]
    migration.write_text(HEADER.format(name=migration.stem, engine=engine, forward=";\n".join(forward) + ";"))
    env = celery_env(tmp_path, server.url(0), DBJOBS_DATABASES=f"target={url}", DBJOBS_VISIBILITY_TIMEOUT="6",
                     DBJOBS_LOCK_TTL="60")
    first = start_worker(env, tmp_path, "doomed")
    first.wait_for_log("initial schema snapshot of ")  # its catalog reads are done
    second = None
    try:
        task_id = run_cli(env, tmp_path, "apply-migration", "--database", "target", "--file", str(migration),
                          "--yes").stdout.strip()
        wait_until(target.sleeping, 60, "the migration never reached its slow statement")
        first.kill()
        killed = time.monotonic()
        target.query({"postgresql": "SET lock_timeout = '20s'", "mysql": "SET SESSION lock_wait_timeout = 20",
                      "sqlite": "PRAGMA busy_timeout = 20000"}[engine])
        assert target.query("SELECT count(*) FROM items")[0][0] == 2000  # the application gets through
        unblocked = time.monotonic() - killed
        # While killed: a transactional engine rolled statement 1 back; MariaDB committed it (DDL), not statement 3.
        assert target.columns() == (["id", "name", "c"] if engine == "mysql" else ["id", "name"])
        target.query("CREATE TABLE go_on (id INTEGER)")
        second = start_worker(env, tmp_path, "successor")
        result = cli_json(env, tmp_path, "result", task_id, "--wait")
        recovered = time.monotonic() - killed
    finally:
        first.stop()
        if second:
            second.stop()
    assert unblocked < 8, f"the killed migration's session kept the table locked for {unblocked:.1f} s"
    (applied,) = result["migrations"]
    assert applied["status"] == "applied"
    assert target.columns() == ["id", "name", "c", "d"]  # each statement ran once: no "Duplicate column"
    assert [tuple(map(int, r)) for r in target.query("SELECT success, statements_done FROM dbjobs_migrations")] \
        == [(1, 3)]
    if engine == "mysql":  # DDL committed statement 1 before the kill: the redelivered job goes on from 2
        assert "continuing from statement 2 of 3" in " ".join(applied["notes"])
    print(f"\nkill -9 during {engine} apply-migration: table free {unblocked:.1f} s after, "
          f"job complete {recovered:.0f} s after")
