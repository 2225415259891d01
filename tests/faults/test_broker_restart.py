"""A Redis restart in the middle of a job: the job completes, the worker process survives it and runs the next job.

Redis runs append-only (as docker-compose.yml runs it), so the queue and the unacknowledged job survive the
restart; what must not be lost is the worker process itself (kombu 5.7.0 exited with `'NoneType' object has
no attribute 'hostname'` from `restore_unacked_once` after such a restart), nor the job: a restore, on every
engine, gives the backup row for row. The restore is held running across the outage by the database's own job
lock, which the test takes (the restore waits for it with its backup open), so the outage falls inside the
job however fast the machine is.

A Redis that restarts empty forgets the running job's lock: the job must notice (its fence) and stop before
its next step rather than run beside the job that takes the lock next.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import redis

from dbjobs.engines.dblock import hold
from dbjobs.inuse import in_use
from dbjobs.jobs import run_job
from tests.backup_support import build_sample, db, dump_path, mutate, row_counts, settings_for, snapshot
from tests.celery_support import celery_env, cli_json, manifests, run_cli, start_worker, wait_until
from tests.redis_server import OwnedRedis

pytestmark = pytest.mark.redis
OUTAGE = 5.0


def _waiting_dump(conn: psycopg.Connection) -> bool:
    return bool(conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                             "AND wait_event_type = 'Lock'").fetchone()[0])


TARGETS = {"postgresql": "pg_url", "mysql": "mysql_url", "sqlite": None}  # the fixture of each engine's database


@pytest.mark.parametrize("finish", ["during the outage", "after the restart"])
@pytest.mark.parametrize("engine", list(TARGETS))
def test_worker_survives_a_redis_restart_during_a_job_and_runs_the_next(tmp_path: Path, engine: str, finish: str,
                                                                         request: pytest.FixtureRequest) -> None:
    """A restore is held across the outage by the database's own job lock, which the test holds (the restore waits
    for it with its backup open); the test lets it go during the outage or after Redis is back."""
    fixture = TARGETS[engine]
    url = request.getfixturevalue(fixture) if fixture else f"sqlite:///{tmp_path / 'live.sqlite3'}"
    backups = tmp_path / "backups"
    build_sample(url)
    backup_id = run_job("dbjobs.backup", settings_for(backups, app=url), {"database": "app"})["id"]
    restored = snapshot(url)
    mutate(url)
    server = OwnedRedis(tmp_path / "redis", appendonly=True).start()
    env = celery_env(tmp_path, server.url(0), DBJOBS_DATABASES=json.dumps({"app": url}), DBJOBS_LOCK_TTL="60")
    worker = start_worker(env, tmp_path, "steady")
    worker.wait_for_log("initial schema snapshot of ")  # its catalog reads are done
    with contextlib.ExitStack() as held:
        held.enter_context(hold(db(url, "app"), "the test", wait=10))
        try:
            task_id = run_cli(env, tmp_path, "restore", backup_id, "--yes").stdout.strip()
            wait_until(lambda: in_use(dump_path(backups, backup_id)), 60, "the restore never opened its backup")
            server.stop()
            time.sleep(OUTAGE / 2)
            if finish == "during the outage":
                held.close()
            time.sleep(OUTAGE / 2)
            server.start()
            held.close()
            restarted = time.monotonic()
            first = cli_json(env, tmp_path, "result", task_id, "--wait")
            recovery = time.monotonic() - restarted
            time.sleep(3)  # the moment kombu 5.7.0 restored its unacked messages and exited
            assert worker.popen.poll() is None, f"the worker exited after the Redis restart:\n{worker.text()[-3000:]}"
            second = cli_json(env, tmp_path, "backup", "--database", "app", "--wait")
            assert worker.popen.poll() is None
            log = worker.text()
        finally:
            worker.stop()
            server.stop()
    assert "AttributeError" not in log, log[-3000:]
    assert first["backup_id"] == backup_id and snapshot(url) == restored, "the restore did not give the backup"
    assert second["row_counts"] == row_counts(url)
    ours = [m for m in manifests(backups) if m["kind"] != "safety"]  # a restore in place keeps a safety backup
    assert sorted(m["id"] for m in ours) == sorted([backup_id, second["id"]])
    print(f"\nRedis restarted during a {engine} restore ({finish}): done {recovery:.1f} s after Redis was back")


def _lock_holder(url: str) -> str:
    client = redis.Redis.from_url(url)
    try:
        return (client.get("dbjobs:lock:pg") or b"").decode()
    finally:
        client.close()


@pytest.mark.postgres
def test_a_job_whose_lock_redis_forgot_stops_and_reruns_after_the_job_that_took_it(tmp_path: Path,
                                                                                   pg_url: str) -> None:
    """Redis restarts empty (no append-only file, or a failover): the running backup's lock is gone and a second
    backup of the same database takes it. The first stops at its next step instead of running beside it, and is
    retried after the second finished: two complete backups that never overlapped.

    Deterministic: both jobs wait on a table lock the test holds, and the test lets them go only once Redis
    shows the second job holding the alias's lock; the table is large enough (about 20 MiB) that the first
    job reports progress, and so checks its fence, while it dumps."""
    server = OwnedRedis(tmp_path / "redis", appendonly=False).start()
    env = celery_env(tmp_path, server.url(0), DBJOBS_DATABASES=f"pg={pg_url}", DBJOBS_LOCK_TTL="60")
    backups = tmp_path / "backups"
    with psycopg.connect(pg_url, autocommit=True) as setup:
        setup.execute("CREATE TABLE items AS SELECT g AS id, repeat(md5(g::text), 4) AS name "
                      "FROM generate_series(1, 150000) g")
    workers = [start_worker(env, tmp_path, name) for name in ("one", "two")]  # a free worker for the second job
    for worker in workers:
        worker.wait_for_log("initial schema snapshot of ")  # its catalog reads are done before the test locks a table
    holder = psycopg.connect(pg_url)
    watcher = psycopg.connect(pg_url, autocommit=True)
    try:
        holder.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        first_id = run_cli(env, tmp_path, "backup", "--database", "pg").stdout.strip()
        wait_until(lambda: _waiting_dump(watcher) and first_id in _lock_holder(server.url(0)), 60,
                   "the first backup never reached the table")
        server.stop()
        server.start()  # empty: the first job's lock, message and state are gone
        busy = next(w for w in workers if f"[{first_id}] received" in w.text())
        for worker in workers:
            wait_until(lambda w=worker: w.text().count("Connected to redis") >= 2, 60, "a worker never reconnected")
        # After a reconnect the busy worker would fetch the next job too (and hold it until its own ends): let it
        # stop consuming, so the second job goes to the free worker, as it would to another host.
        subprocess.run([sys.executable, "-m", "celery", "-A", "workers.app", "control", "cancel_consumer", "celery",
                        "-d", f"{busy.log.stem}@{socket.gethostname()}"], env=env, cwd=tmp_path, check=True,
                       capture_output=True, timeout=60)
        second_id = run_cli(env, tmp_path, "backup", "--database", "pg").stdout.strip()
        wait_until(lambda: second_id in _lock_holder(server.url(0)), 60,
                   "the second backup never took the lock Redis forgot")  # both run now
        holder.rollback()
        second = cli_json(env, tmp_path, "result", second_id, "--wait")
        first = cli_json(env, tmp_path, "result", first_id, "--wait")
        log = "".join(worker.text() for worker in workers)
    finally:
        holder.close()
        watcher.close()
        for worker in workers:
            worker.stop()
        server.stop()
    assert "lost the lock of database 'pg'" in log and "stops before its next step" in log
    by_id = {m["id"]: m for m in manifests(backups)}
    assert sorted(by_id) == sorted([first["id"], second["id"]])
    assert by_id[second["id"]]["finished_at"] <= by_id[first["id"]]["started_at"], "the two backups overlapped"
    assert first["extra"]["request_id"] == first_id and first["row_counts"] == {"public.items": 150000}
    assert not list(backups.glob(".*.partial")), "the stopped backup's partial file is left"
