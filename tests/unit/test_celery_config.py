"""The Celery configuration, beat schedule and progress throttle: pure data and logic, no broker."""

from __future__ import annotations

from datetime import timedelta

import pytest

from beat_schedule import build_schedule
from dbjobs.errors import ConfigError
from dbjobs.progress import Progress, Throttled
from dbjobs.settings import load_settings
from workers.config import celery_config, redacted_url, soft_time_limit


def settings(**env: str):
    return load_settings({"DBJOBS_BROKER_URL": "redis://:pw@localhost:6379/0", **env}, dotenv=None)


def test_reliability_settings_for_long_jobs() -> None:
    conf = celery_config(settings(DBJOBS_TASK_TIME_LIMIT="7200"))
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == conf["result_serializer"] == "json"
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"] and conf["worker_prefetch_multiplier"] == 1
    assert conf["task_time_limit"] == 7200 and conf["task_soft_time_limit"] == 6900
    # short: the heartbeat keeps a live job's message from being redelivered, a dead worker's comes back in minutes
    assert conf["broker_transport_options"]["visibility_timeout"] == 120
    assert conf["result_backend_always_retry"] and conf["result_backend_max_retries"] >= 20
    assert conf["result_expires"] == timedelta(days=7) and conf["task_track_started"]
    assert conf["broker_transport_options"]["socket_connect_timeout"] <= 3


def test_visibility_timeout_and_lock_settings_are_configurable_and_validated() -> None:
    s = settings(DBJOBS_VISIBILITY_TIMEOUT="4", DBJOBS_LOCK_TTL="2", DBJOBS_LOCK_WAIT="0")
    assert (s.visibility_timeout, s.lock_ttl, s.lock_wait) == (4, 2, 0)
    assert celery_config(s)["broker_transport_options"]["visibility_timeout"] == 4
    for name in ("DBJOBS_VISIBILITY_TIMEOUT", "DBJOBS_LOCK_TTL", "DBJOBS_TASK_TIME_LIMIT", "DBJOBS_LOCK_WAIT",
                 "DBJOBS_MIGRATION_LOCK_TIMEOUT", "DBJOBS_MIGRATION_STATEMENT_TIMEOUT"):
        with pytest.raises(ConfigError, match=name):
            settings(**{name: "-1"})


@pytest.mark.parametrize(("hard", "soft"), [(1, 0.5), (60, 30), (600, 300), (3600, 3300), (21600, 21300)])
def test_soft_limit_leaves_time_to_clean_up(hard: float, soft: float) -> None:
    assert soft_time_limit(hard) == soft


def test_the_heartbeat_beats_several_times_per_visibility_timeout() -> None:
    from workers.liveness import alive_ttl, heartbeat_interval

    interval = heartbeat_interval(settings().visibility_timeout)
    assert interval == 15 and alive_ttl(interval) == 45 < settings().visibility_timeout


def test_broker_urls_are_redacted() -> None:
    assert redacted_url("redis://:pw@host:6380/1") == "redis://***@host:6380/1"
    assert redacted_url("redis://user:pw@host/0") == "redis://***@host/0"
    assert redacted_url("redis://host:6379/0") == "redis://host:6379/0"


def test_beat_schedule_has_a_backup_and_a_cleanup_per_alias() -> None:
    s = settings(DBJOBS_DATABASE_URL="sqlite:///a.db", DBJOBS_DATABASES="reports=sqlite:///r.db",
                 BACKUP_INTERVAL_HOURS="0.001", BACKUP_CLEANUP_INTERVAL_DAYS="2", BACKUP_KEEP_DAYS="9",
                 BACKUP_MIN_KEEP="3", DBJOBS_BACKUP_DIR="/srv/backups")
    schedule = build_schedule(s)
    assert sorted(schedule) == ["backup default", "backup reports", "cleanup default", "cleanup reports"]
    backup = schedule["backup reports"]
    assert backup["task"] == "dbjobs.backup" and backup["schedule"] == timedelta(seconds=3.6)
    assert backup["kwargs"] == {"database": "reports", "output_dir": "/srv/backups"}
    assert backup["options"]["expires"] == 3.6
    cleanup = schedule["cleanup default"]
    assert cleanup["task"] == "dbjobs.cleanup" and cleanup["schedule"] == timedelta(days=2)
    assert cleanup["kwargs"] == {"database": "default", "backup_dir": "/srv/backups", "keep_days": 9, "min_keep": 3,
                                 "dry_run": False}


def test_production_mode_turns_the_schedule_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBJOBS_BROKER_URL", "redis://localhost:6379/0")  # importing the module builds its app
    from workers.app import make_app

    assert make_app(settings(DBJOBS_ENV="production")).conf.beat_schedule
    assert not make_app(settings()).conf.beat_schedule
    with pytest.raises(ConfigError, match="DBJOBS_BROKER_URL"):
        make_app(load_settings({}, dotenv=None))


def test_throttle_passes_phase_changes_and_the_end_but_not_every_report() -> None:
    now = [0.0]
    seen: list[Progress] = []
    report = Throttled(seen.append, 0.5, lambda: now[0])
    for done in range(0, 100, 10):
        now[0] += 0.1
        report(Progress("dump", done, 100))
    report(Progress("dump", 100, 100))
    report(Progress("verify", 0, 10))
    assert [(p.phase, p.done) for p in seen] == [("dump", 0), ("dump", 50), ("dump", 100), ("verify", 0)]


def test_one_task_per_registered_job_under_its_public_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBJOBS_BROKER_URL", "redis://localhost:6379/0")
    from dbjobs.jobs import JOBS
    from workers.app import app
    from workers.tasks import TASKS

    assert set(TASKS) == set(JOBS) and {"dbjobs.backup", "dbjobs.restore", "dbjobs.list_backups"} <= set(TASKS)
    for name in TASKS:
        task = app.tasks[name]
        assert task.name == name and task.acks_late and task.reject_on_worker_lost and task.track_started
