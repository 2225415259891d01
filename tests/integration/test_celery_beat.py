"""Beat enqueues backups and cleanups at the configured intervals, and beat and workers survive a Redis restart;
beat's restore drill entry runs `dbjobs.verify --deep` through a worker.

The restart uses a private redis-server of the test's own on a free port.
"""

from __future__ import annotations

import json
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
    rows_of,
    run_cli,
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


def drill_record(backups: Path) -> dict | None:
    """The recorded outcome of the last drill of `default`."""
    path = backups / ".last-jobs" / "dbjobs.drill-default.json"
    return json.loads(path.read_text()) if path.is_file() else None


def test_beat_drills_the_newest_backup_into_the_scratch_alias_through_a_worker(tmp_path, private_redis) -> None:
    """The drill entry restores the newest backup into `scratch` on a worker; `status` reports it. What must not be
    lost: the drilled database itself (a drill only writes the scratch alias) and its full backups."""
    make_sqlite(tmp_path / "app.sqlite3", rows=120)
    before = rows_of(tmp_path / "app.sqlite3")
    scratch = f"scratch=sqlite:///{tmp_path / 'scratch.sqlite3'}"
    env = celery_env(tmp_path, private_redis.url(), DBJOBS_DATABASES=scratch, BACKUP_VERIFY_INTERVAL_HOURS="0.0008",
                     BACKUP_VERIFY_INTO="scratch")
    backups = tmp_path / "backups"
    worker = start_worker(env, tmp_path, concurrency=2)
    beat = Proc([PYTHON, str(ROOT / "cli.py"), "start-scheduler", "--interval", "0.0005", "--cleanup-interval", "1",
                 "--schedule-file", str(tmp_path / "beat-schedule")], env, tmp_path / "beat.log", tmp_path)
    try:
        beat.wait_for_log("scheduler: a restore drill every 0.0008 h of default into scratch", timeout=30)
        wait_until(lambda: (drill_record(backups) or {}).get("ok"), 90,
                   lambda: f"no passing drill:\n{beat.text()[-1500:]}\n{worker.text()[-3000:]}")
        assert "Sending due task verify default (dbjobs.verify)" in beat.text()
        assert "Sending due task backup scratch" not in beat.text()  # a scratch alias is drilled into, not backed up
        report = json.loads(run_cli(env, tmp_path, "status", "--json").stdout)
        assert report["drills"]["default"]["into"] == "scratch" and report["drills"]["default"]["last"]["ok"]
        assert not [c for c in report["checks"] if c["name"].startswith(("drill:", "job:", "backups:default"))]
    finally:
        beat.stop()
        worker.stop()
    assert rows_of(tmp_path / "scratch.sqlite3") == before == rows_of(tmp_path / "app.sqlite3")
    listed = cli_json({**env, "DBJOBS_BROKER_URL": ""}, tmp_path, "list-backups", "--limit", "100")["backups"]
    drilled = [b for b in listed if b["database"] == "default" and b["checksum"]["state"] == "ok"]
    assert drilled and all(b["kind"] == "full" for b in listed if b["database"] == "default")
    assert {b["kind"] for b in listed if b["database"] == "scratch"} <= {"safety"}
