"""Status on a healthy system and on each unhealthy condition, through the job and the CLI (exit codes)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta

import pytest

import cli
from dbjobs.errors import DatabaseUnavailableError
from dbjobs.jobs import run_job
from dbjobs.settings import load_settings
from tests.support.backups import make_backup
from tests.support.hosts import configure_host


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A configured host (24 h backup interval): one SQLite database, a backup directory, no broker or Supabase."""
    return configure_host(tmp_path, monkeypatch)


def status(env, **kwargs):
    return run_job("dbjobs.status", load_settings(env, dotenv=None), kwargs)


def levels(report):
    return {c["name"]: c["level"] for c in report["checks"]}


def test_healthy_system(env, capsys):
    run_job("dbjobs.backup", load_settings(env, dotenv=None), {})
    report = status(env)
    assert report["health"] == "ok", report["checks"]
    db = report["databases"][0]
    assert db["reachable"] and db["engine"] == "sqlite" and db["size"] > 0 and db["version"]
    assert report["backups"]["count"] == 1 and report["backups"]["databases"]["default"]["newest_age_hours"] < 1
    assert [(o["job"], o["ok"]) for o in report["jobs"]["latest"]] == [("dbjobs.backup", True)]
    assert [(s["available"], s["drift"], s["pending_migrations"]) for s in report["schema"]] == [(True, False, [])]
    assert cli.main(["status"]) == 0
    assert "health: ok" in capsys.readouterr().out
    assert cli.main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["broker"] == {"configured": False, "mode": "in-process"}


def test_no_backup_or_a_stale_one_is_critical(env, capsys):
    assert levels(status(env)) == {"backups:default": "critical"}
    backups = load_settings(env, dotenv=None).backup_dir
    make_backup(backups, "default", datetime.now(UTC) - timedelta(hours=30))
    assert status(env)["health"] == "ok"  # 30 h: late, but within twice the 24 h interval
    shutil.rmtree(backups)
    make_backup(backups, "default", datetime.now(UTC) - timedelta(hours=49))
    report = status(env)
    assert levels(report) == {"backups:default": "critical"}
    assert "over twice the 24 h interval" in report["checks"][0]["message"]
    assert cli.main(["status"]) == 2


def test_last_backup_failed_is_critical_until_a_later_success(env, tmp_path, capsys):
    """Fail, then succeed: the success supersedes the failure; --database and unconfigured aliases hide it."""
    run_job("dbjobs.backup", load_settings(env, dotenv=None), {})
    gone = tmp_path / "gone.sqlite3"
    broken = {**env, "DBJOBS_DATABASES": f"broken=sqlite:///{gone}"}
    with pytest.raises(DatabaseUnavailableError):
        run_job("dbjobs.backup", load_settings(broken, dotenv=None), {"database": "broken"})
    report = status(broken)
    assert levels(report) == {"job:dbjobs.backup:broken": "critical", "database:broken": "critical",
                              "backups:broken": "critical", "schema:broken": "warning"}
    assert "does not exist" in next(c for c in report["checks"] if c["name"].startswith("job:"))["message"]
    assert status(broken, database="default")["health"] == "ok"  # --database filters the job checks too
    unconfigured = status(env)
    assert unconfigured["health"] == "ok" and unconfigured["jobs"]["ignored_aliases"] == ["broken"]
    assert cli.main(["status"]) == 0
    assert "ignored  job records of aliases no longer configured: broken" in capsys.readouterr().out

    shutil.copy(tmp_path / "app.sqlite3", gone)  # the database is back: the next backup succeeds
    run_job("dbjobs.backup", load_settings(broken, dotenv=None), {"database": "broken"})
    report = status(broken)
    assert [c for c in report["checks"] if c["name"].startswith(("job:", "backups:"))] == []
    assert {(o["database"], o["ok"]) for o in report["jobs"]["latest"]} == {("default", True), ("broken", True)}
    assert json.loads((env_dir(env) / ".last-jobs" / "dbjobs.backup-broken.json").read_text())["failures"] == 1


def env_dir(env):
    return load_settings(env, dotenv=None).backup_dir


def test_low_disk_space_warns(env):
    run_job("dbjobs.backup", load_settings(env, dotenv=None), {})
    free = status(env)["disk"]["free_percent"]
    report = status(env, min_free_percent=min(free + 1, 100))
    assert levels(report) == {"disk": "warning"}
    assert cli.main(["status", "--min-free-percent", str(min(free + 1, 100))]) == 1


def test_unreachable_database_is_critical(env):
    down = {**env, "DBJOBS_DATABASES": "down=postgresql://nobody@127.0.0.1:1/nothing"}
    report = status(down, database="down")
    assert report["databases"][0]["reachable"] is False
    assert levels(report)["database:down"] == "critical"
    assert "nobody@127.0.0.1:1" in report["databases"][0]["url"]


def test_broker_down_or_no_workers_is_critical(env, monkeypatch, capsys, redis_url):
    run_job("dbjobs.backup", load_settings(env, dotenv=None), {})
    monkeypatch.setenv("DBJOBS_BROKER_URL", "redis://127.0.0.1:1/0")
    assert cli.main(["status", "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["broker"]["reachable"] is False and levels(report) == {"broker": "critical"}
    monkeypatch.setenv("DBJOBS_BROKER_URL", redis_url)
    assert cli.main(["status", "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["broker"] == {"configured": True, "reachable": True, "workers": []}
    assert levels(report) == {"workers": "critical"}


def test_cleanup_failure_is_recorded_as_a_warning(env, tmp_path):
    backups = load_settings(env, dotenv=None).backup_dir
    run_job("dbjobs.backup", load_settings(env, dotenv=None), {})
    half = {**env, "SUPABASE_URL": "http://127.0.0.1:1", "SUPABASE_KEY": "k", "SUPABASE_BUCKET": "b",
            "SUPABASE_RETRY_SECONDS": "0.1"}
    partial = run_job("dbjobs.cleanup", load_settings(half, dotenv=None), {})  # the local directory is cleaned
    assert "Supabase Storage listing in bucket 'b' failed" in partial["unreadable"][0]["error"]
    report = status(env)
    assert levels(report) == {"job:dbjobs.cleanup:default": "warning"}  # a cleanup of all aliases was partial
    assert "supabase:b could not be listed" in next(c["message"] for c in report["checks"])
    run_job("dbjobs.cleanup", load_settings(env, dotenv=None), {"database": "default"})
    assert status(env)["health"] == "ok"
    assert (backups / ".last-jobs" / "dbjobs.cleanup-all.json").is_file()


def test_unreachable_remote_store_is_critical_but_local_backups_still_count(env):
    run_job("dbjobs.backup", load_settings(env, dotenv=None), {})
    remote = {**env, "SUPABASE_URL": "http://127.0.0.1:1", "SUPABASE_KEY": "k", "SUPABASE_BUCKET": "b",
              "SUPABASE_RETRY_SECONDS": "0.1"}
    report = status(remote)
    assert levels(report) == {"storage:supabase:b": "critical"}
    assert report["backups"]["count"] == 1
    assert [p["reachable"] for p in report["storage"]["places"]] == [True, False]
