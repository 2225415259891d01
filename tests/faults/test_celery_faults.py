"""Workers that die and jobs that collide: nothing is lost, nothing is done twice, nothing overlaps."""

from __future__ import annotations

import os
import signal
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
import redis

from tests.celery_support import (
    celery_env,
    cli_json,
    flushed_redis,
    make_sqlite,
    manifests,
    rows_of,
    run_cli,
    start_worker,
    wait_until,
)

pytestmark = pytest.mark.redis


def _interval(manifest: dict) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(manifest["started_at"]), datetime.fromisoformat(manifest["finished_at"])


def _pool_process(worker_pid: int) -> int:
    """The prefork child that runs the tasks of a `-c 1` worker."""
    children = Path(f"/proc/{worker_pid}/task/{worker_pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def test_backup_of_a_killed_pool_process_is_rejected_and_run_again(tmp_path: Path) -> None:
    broker = flushed_redis(12)
    make_sqlite(tmp_path / "app.sqlite3", rows=2000, blob_kib=100)
    env = celery_env(tmp_path, broker, DBJOBS_LOCK_TTL="2")
    backups = tmp_path / "backups"
    worker = start_worker(env, tmp_path, "survivor")
    try:
        task_id = run_cli(env, tmp_path, "backup").stdout.strip()
        wait_until(lambda: backups.is_dir() and any(p.name.startswith(".") for p in backups.iterdir()), 60,
                   "the backup never started writing")
        os.kill(_pool_process(worker.popen.pid), signal.SIGKILL)
        result = cli_json(env, tmp_path, "result", task_id, "--wait")
        assert "WorkerLostError" in worker.text()
    finally:
        worker.stop()
        flushed_redis(12)
    assert [m["id"] for m in manifests(backups)] == [result["id"]]
    assert result["extra"] == {"request_id": task_id}


def test_backup_of_a_killed_worker_is_rerun_once_by_another(tmp_path: Path) -> None:
    broker = flushed_redis(12)
    make_sqlite(tmp_path / "app.sqlite3", rows=3000, blob_kib=100)  # ~300 MB: a backup of a few seconds
    env = celery_env(tmp_path, broker, DBJOBS_VISIBILITY_TIMEOUT="4", DBJOBS_LOCK_TTL="2")
    backups = tmp_path / "backups"
    first = start_worker(env, tmp_path, "first")
    second = None
    try:
        task_id = run_cli(env, tmp_path, "backup").stdout.strip()
        wait_until(lambda: backups.is_dir() and any(p.name.startswith(".") for p in backups.iterdir()), 60,
                   "the backup never started writing")
        first.kill(signal.SIGKILL)
        assert manifests(backups) == []
        second = start_worker(env, tmp_path, "second")
        result = cli_json(env, tmp_path, "result", task_id, "--wait")
        assert "second" in second.text() and task_id in second.text()
    finally:
        first.stop()
        if second:
            second.stop()
        flushed_redis(12)
    done = manifests(backups)
    assert len(done) == 1 and done[0]["id"] == result["id"] and done[0]["extra"] == {"request_id": task_id}
    assert result["row_counts"] == {"items": 3000}
    listed = cli_json({**env, "DBJOBS_BROKER_URL": ""}, tmp_path, "list-backups")
    assert [b["id"] for b in listed["backups"]] == [result["id"]]


def test_jobs_on_one_database_never_overlap_and_restore_waits_for_the_backup(tmp_path: Path) -> None:
    broker = flushed_redis(12)
    make_sqlite(tmp_path / "app.sqlite3", rows=600, blob_kib=100)  # ~60 MB
    env = celery_env(tmp_path, broker)
    worker = start_worker(env, tmp_path, "pair", concurrency=3)
    before = rows_of(tmp_path / "app.sqlite3")
    try:
        first = cli_json({**env, "DBJOBS_BROKER_URL": ""}, tmp_path, "backup")  # in-process: something to restore
        ids = [run_cli(env, tmp_path, "backup").stdout.strip() for _ in range(2)]
        restore_id = run_cli(env, tmp_path, "restore", first["id"], "--yes").stdout.strip()
        results = [cli_json(env, tmp_path, "result", i, "--wait") for i in ids]
        restored = cli_json(env, tmp_path, "result", restore_id, "--wait")
    finally:
        worker.stop()
        flushed_redis(12)
    by_id = {m["id"]: m for m in manifests(tmp_path / "backups")}
    safety = by_id[restored["safety_backup_id"]]
    restore_start = _interval(safety)[0]
    restore_span = (restore_start, restore_start + timedelta(seconds=restored["seconds"]))
    spans = sorted([*(_interval(by_id[r["id"]]) for r in results), restore_span])
    assert all(a[1] <= b[0] for a, b in pairwise(spans)), f"jobs on one database overlapped: {spans}"
    assert safety["kind"] == "safety" and rows_of(tmp_path / "app.sqlite3") == before


def test_a_job_past_its_time_limit_is_stopped_cleanly(tmp_path: Path) -> None:
    """A job stuck behind a lock that is never released (soft limit fires in Python, deterministically)."""
    broker = flushed_redis(12)
    make_sqlite(tmp_path / "app.sqlite3", rows=10)
    env = celery_env(tmp_path, broker, DBJOBS_TASK_TIME_LIMIT="2", DBJOBS_LOCK_WAIT="30")
    client = redis.Redis.from_url(broker)
    client.set("dbjobs:lock:default", "dbjobs.restore stuck-task x", ex=60)
    worker = start_worker(env, tmp_path, "limited")
    try:
        done = run_cli(env, tmp_path, "backup", "--wait")
        assert client.get("dbjobs:lock:default") == b"dbjobs.restore stuck-task x"  # someone else's lock kept
    finally:
        worker.stop()
        flushed_redis(12)
        client.close()
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1:] == [  # after the submission (and lock wait) notes
        "error: dbjobs.backup was stopped near its time limit of 2 s (DBJOBS_TASK_TIME_LIMIT); "
        "raise the limit for bigger databases"]
    assert not (tmp_path / "backups").exists()
