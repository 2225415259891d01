"""A Redis restart in the middle of a job: the job completes, the worker process survives it and runs the next job.

Redis runs append-only (as docker-compose.yml runs it), so the queue and the unacknowledged job survive the
restart; what must not be lost is the worker process itself (kombu 5.7.0 exited with `'NoneType' object has
no attribute 'hostname'` from `restore_unacked_once` after such a restart) and the job's one backup.
The job is held running across the outage by a table lock the test takes (pg_dump waits for it), so the
outage falls inside the job however fast the machine is.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from tests.celery_support import celery_env, cli_json, manifests, run_cli, start_worker, wait_until
from tests.redis_server import OwnedRedis

pytestmark = [pytest.mark.redis, pytest.mark.postgres]
OUTAGE = 5.0


def _waiting_dump(conn: psycopg.Connection) -> bool:
    return bool(conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                             "AND wait_event_type = 'Lock'").fetchone()[0])


@pytest.mark.parametrize("finish", ["during the outage", "after the restart"])
def test_worker_survives_a_redis_restart_during_a_job_and_runs_the_next(tmp_path: Path, pg_url: str,
                                                                         finish: str) -> None:
    server = OwnedRedis(tmp_path / "redis", appendonly=True).start()
    env = celery_env(tmp_path, server.url(0), DBJOBS_DATABASES=f"pg={pg_url}", DBJOBS_LOCK_TTL="60")
    backups = tmp_path / "backups"
    conninfo = pg_url.replace("postgresql://", "postgresql://", 1)
    with psycopg.connect(conninfo, autocommit=True) as setup:
        setup.execute("CREATE TABLE items AS SELECT g AS id, md5(g::text) AS name FROM generate_series(1, 5000) g")
    worker = start_worker(env, tmp_path, "steady")
    worker.wait_for_log("initial schema snapshot of ")  # its catalog reads are done
    holder = psycopg.connect(conninfo)
    watcher = psycopg.connect(conninfo, autocommit=True)
    try:
        holder.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        task_id = run_cli(env, tmp_path, "backup", "--database", "pg").stdout.strip()
        wait_until(lambda: _waiting_dump(watcher), 60, "the backup never reached the table")
        server.stop()
        time.sleep(OUTAGE / 2)
        if finish == "during the outage":
            holder.rollback()
        time.sleep(OUTAGE / 2)
        server.start()
        holder.rollback()
        first = cli_json(env, tmp_path, "result", task_id, "--wait")
        time.sleep(3)  # the moment kombu 5.7.0 restored its unacked messages and exited
        assert worker.popen.poll() is None, f"the worker exited after the Redis restart:\n{worker.text()[-3000:]}"
        second = cli_json(env, tmp_path, "backup", "--database", "pg", "--wait")
        assert worker.popen.poll() is None
        log = worker.text()
    finally:
        holder.close()
        watcher.close()
        worker.stop()
        server.stop()
    assert "AttributeError" not in log, log[-3000:]
    assert sorted(m["id"] for m in manifests(backups)) == sorted([first["id"], second["id"]])
    assert first["row_counts"] == second["row_counts"] == {"public.items": 5000}
    assert first["extra"] == {"request_id": task_id}

