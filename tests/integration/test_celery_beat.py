"""Beat enqueues backups and cleanups at the configured intervals, and beat and workers survive a Redis restart.

The restart uses a private redis-server of the test's own on a free port.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.celery_support import (
    PYTHON,
    ROOT,
    Proc,
    celery_env,
    cli_json,
    make_sqlite,
    manifests,
    start_worker,
    wait_until,
)
from tests.redis_server import OwnedRedis


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[OwnedRedis]:
    server = OwnedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


def test_beat_enqueues_backups_and_cleanups_and_everything_survives_a_redis_restart(
        tmp_path: Path, private_redis: OwnedRedis) -> None:
    make_sqlite(tmp_path / "app.sqlite3", rows=50)
    env = celery_env(tmp_path, private_redis.url(), DBJOBS_DATABASES="")
    backups = tmp_path / "backups"
    worker = start_worker(env, tmp_path, via_cli=True)
    beat = Proc([PYTHON, str(ROOT / "cli.py"), "start-scheduler", "--interval", "0.0005", "--cleanup-interval",
                 "0.00003", "--keep-days", "7", "--min-keep", "2", "--schedule-file", str(tmp_path / "beat-schedule")],
                env, tmp_path / "beat.log", tmp_path)
    try:
        wait_until(lambda: len(manifests(backups)) >= 2, 40, lambda: f"beat made no backups:\n{beat.text()[-2000:]}")
        beat.wait_for_log("Sending due task cleanup default (dbjobs.cleanup)", timeout=20)
        assert "Sending due task backup default (dbjobs.backup)" in beat.text()

        private_redis.stop()
        private_redis.start()
        after_restart = len(manifests(backups))
        wait_until(lambda: len(manifests(backups)) > after_restart, 60,
                   lambda: f"no backup after the restart:\n{beat.text()[-1500:]}\n{worker.text()[-1500:]}")
        assert cli_json(env, tmp_path, "backup", "--wait")["row_counts"] == {"items": 50}
    finally:
        beat.stop()
        worker.stop()
    assert all(m["database"] == "default" for m in manifests(backups))
