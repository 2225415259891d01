"""The schema jobs as Celery tasks on a real worker (Redis database 7): the worker records the
initial snapshot when it starts, detect-migrations and apply-migration run there."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.celery_support import celery_env, cli_json, flushed_redis, make_sqlite, start_worker, wait_until

pytestmark = pytest.mark.redis


def test_detect_and_apply_run_on_a_worker(tmp_path: Path) -> None:
    broker = flushed_redis(7)
    make_sqlite(tmp_path / "app.sqlite3", rows=10)
    schema_dir = tmp_path / "migrations"
    env = celery_env(tmp_path, broker, DBJOBS_MODELS="tests.integration.app_models:Base",
                     DBJOBS_SCHEMA_DIR=str(schema_dir))
    worker = start_worker(env, tmp_path, "schema")
    try:
        wait_until(lambda: list((schema_dir / "snapshots" / "default").glob("0001_*.json")), 30,
                   lambda: f"no initial snapshot:\n{worker.text()[-2000:]}")
        detected = cli_json(env, tmp_path, "detect-migrations", "--wait")
        assert detected["changed"] and "drop table items" in detected["changes"]
        applied = cli_json(env, tmp_path, "apply-migration", "--file", detected["file"], "--yes",
                           "--allow-destructive", "--wait")
        assert [m["status"] for m in applied["migrations"]] == ["applied"]
        assert cli_json(env, tmp_path, "detect-migrations", "--wait")["changed"] is False
    finally:
        worker.stop()
        flushed_redis(7)
    assert "initial schema snapshot of default: created" in worker.text()
