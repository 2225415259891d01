"""Flower, started the documented way, shows a dbjobs task with its result and without any secret.

The backup uploads to a Supabase whose storage is down: the task still succeeds (the local backup
stands) and Flower shows why the upload failed, without showing the Supabase key.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.celery_support import (
    PYTHON,
    SECRET,
    Proc,
    celery_env,
    cli_json,
    flushed_redis,
    make_sqlite,
    start_worker,
    wait_until,
)
from tests.redis_server import free_port
from tests.support.fake_supabase import FakeSupabase

pytestmark = pytest.mark.redis
AUTH = ("ops", "flower-pass")


def test_flower_lists_the_task_with_its_result_and_no_secret(tmp_path: Path) -> None:
    broker = flushed_redis(13)
    make_sqlite(tmp_path / "app.sqlite3", rows=20)
    fake = FakeSupabase(tmp_path / "supabase")
    fake.start()
    env = celery_env(tmp_path, broker, SUPABASE_URL=fake.url, SUPABASE_KEY=fake.key, SUPABASE_BUCKET="backups",
                     SUPABASE_RETRY_SECONDS="0.5")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    flower = Proc([PYTHON, "-m", "celery", "-A", "workers.app", "flower", f"--port={port}", "--address=127.0.0.1",
                   f"--basic-auth={AUTH[0]}:{AUTH[1]}"], env, tmp_path / "flower.log", tmp_path)
    worker = None
    try:
        flower.wait_for_log("Visit me at", timeout=30)
        worker = start_worker(env, tmp_path)
        with fake.storage_down():
            backup = cli_json(env, tmp_path, "backup", "--upload", "--wait")
        with httpx.Client(base_url=url, timeout=5) as http:
            assert http.get("/api/tasks").status_code == 401
            task: dict = {}

            def shown() -> bool:
                tasks = http.get("/api/tasks", auth=AUTH).json()
                task.update(next((t for t in tasks.values() if t.get("state") == "SUCCESS"), {}))
                return bool(task)

            wait_until(shown, 20, "Flower never showed the finished task")
            page = http.get("/api/tasks", auth=AUTH).text
    finally:
        flower.stop()
        if worker:
            worker.stop()
        flushed_redis(13)
        fake.stop()
    assert task["name"] == "dbjobs.backup" and backup["id"] in task["result"]
    assert backup["upload"]["ok"] is False and Path(backup["path"]).is_file()
    assert "'ok': False" in task["result"] and "failed: HTTP 502 from" in task["result"]  # Flower shortens it
    assert "'database': 'default'" in task["kwargs"]
    assert SECRET not in page and "postgresql://" not in page and fake.key not in page

