"""Beat enqueues backups and cleanups at the configured intervals, and beat and workers survive a Redis restart.

The restart uses a throwaway redis-server on port 6390, never the shared one on 6379.
"""

from __future__ import annotations

import os
import shutil
import socket
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

PORT = 6390


def _listening() -> bool:
    try:
        socket.create_connection(("127.0.0.1", PORT), timeout=0.2).close()
    except OSError:
        return False
    return True


class ThrowawayRedis:
    """A private redis-server that a test may kill and start again."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.directory, self.env = directory, env
        self.proc: Proc | None = None

    def start(self) -> None:
        self.proc = Proc(["redis-server", "--port", str(PORT), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--dir", str(self.directory)], self.env, self.directory / "redis.log",
                         self.directory)
        wait_until(_listening, 10, "redis-server did not start")

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()
            wait_until(lambda: not _listening(), 10, "redis-server did not stop")


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    if _listening():
        pytest.skip(f"port {PORT} is taken")
    server = ThrowawayRedis(tmp_path, dict(os.environ))
    server.start()
    yield server
    server.stop()


def test_beat_enqueues_backups_and_cleanups_and_everything_survives_a_redis_restart(
        tmp_path: Path, private_redis: ThrowawayRedis) -> None:
    make_sqlite(tmp_path / "app.sqlite3", rows=50)
    env = celery_env(tmp_path, f"redis://127.0.0.1:{PORT}/0", DBJOBS_DATABASES="")
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
