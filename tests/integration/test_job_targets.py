"""Which database a job locks, and how a re-run of one request finds the backup it already took."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbjobs.errors import BackupNotFoundError, ConfigError, UnknownDatabaseError
from dbjobs.jobs import JOBS, locked_alias, run_job
from dbjobs.settings import load_settings
from tests.celery_support import make_sqlite


@pytest.fixture
def settings(tmp_path: Path):
    make_sqlite(tmp_path / "app.sqlite3", rows=10)
    return load_settings({"DBJOBS_DATABASE_URL": f"sqlite:///{tmp_path / 'app.sqlite3'}",
                          "DBJOBS_DATABASES": f"scratch=sqlite:///{tmp_path / 'scratch.sqlite3'}",
                          "DBJOBS_BACKUP_DIR": str(tmp_path / "backups")}, dotenv=None)


def test_locking_jobs_name_their_alias(settings) -> None:
    assert locked_alias("dbjobs.backup", settings, {}) == "default"
    assert locked_alias("dbjobs.backup", settings, {"database": "scratch"}) == "scratch"
    assert locked_alias("dbjobs.list_backups", settings, {}) is None
    assert all(isinstance(j.locks_database, bool) for j in JOBS.values())


def test_restore_without_database_locks_the_backups_own_alias(settings) -> None:
    backup = run_job("dbjobs.backup", settings, {})
    assert locked_alias("dbjobs.restore", settings, {"backup": backup["id"]}) == "default"
    assert locked_alias("dbjobs.restore", settings, {"backup": backup["id"], "database": "scratch"}) == "scratch"
    with pytest.raises(BackupNotFoundError):
        locked_alias("dbjobs.restore", settings, {"backup": "default-20200101T000000Z-abcdef"})


def test_bad_requests_fail_before_any_lock(settings) -> None:
    with pytest.raises(UnknownDatabaseError):
        locked_alias("dbjobs.backup", settings, {"database": "nope"})
    with pytest.raises(ConfigError, match=r"bad arguments for dbjobs\.backup"):
        locked_alias("dbjobs.backup", settings, {"url": "postgresql://x"})
    with pytest.raises(ConfigError, match=r"unknown job 'dbjobs\.nope'"):
        locked_alias("dbjobs.nope", settings, {})


def test_a_rerun_of_one_request_returns_the_backup_it_took(settings) -> None:
    first = run_job("dbjobs.backup", settings, {"request_id": "task-1"})
    again = run_job("dbjobs.backup", settings, {"request_id": "task-1"})
    other = run_job("dbjobs.backup", settings, {"request_id": "task-2"})
    assert again["id"] == first["id"] != other["id"] and again["sha256"] == first["sha256"]
    assert first["extra"] == {"request_id": "task-1"}
    assert len(list(settings.backup_dir.glob("*.manifest.json"))) == 2
    # a restore takes it too: the re-run of a killed swap restore completes it instead of restoring twice
    assert JOBS["dbjobs.backup"].accepts_request_id and JOBS["dbjobs.restore"].accepts_request_id
    assert not JOBS["dbjobs.list_backups"].accepts_request_id
