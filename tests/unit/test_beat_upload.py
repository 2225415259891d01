"""Scheduled backups go to the shared store when there is one, so every host's workers see them; drill entries."""

from __future__ import annotations

from beat_schedule import build_schedule
from dbjobs.settings import load_settings


def test_scheduled_backups_upload_when_supabase_is_configured():
    plain = build_schedule(load_settings({}, dotenv=None))["backup default"]["kwargs"]
    remote = {"SUPABASE_URL": "https://x.supabase.co", "SUPABASE_KEY": "k", "SUPABASE_BUCKET": "backups"}
    shared = build_schedule(load_settings(remote, dotenv=None))["backup default"]["kwargs"]
    assert "upload" not in plain and shared["upload"] is True


def test_drill_entries_and_scratch_aliases_are_not_backed_up():
    env = {"DBJOBS_DATABASES": "app=sqlite:///a.db;scratch=sqlite:///s.db", "BACKUP_VERIFY_INTO": "scratch",
           "BACKUP_VERIFY_INTERVAL_HOURS": "6", "DBJOBS_BACKUP_DIR": "/b"}
    schedule = build_schedule(load_settings(env, dotenv=None))
    drill = schedule["verify app"]
    assert drill["task"] == "dbjobs.verify" and drill["schedule"].total_seconds() == 6 * 3600
    assert drill["kwargs"] == {"database": "app", "deep": True, "into": "scratch", "backup_dir": "/b"}
    assert "backup scratch" not in schedule and "cleanup scratch" in schedule and "verify scratch" not in schedule
    assert "backup app" in schedule and "backup default" in schedule and "verify default" in schedule
    assert "verify app" not in build_schedule(load_settings({**env, "BACKUP_VERIFY_INTERVAL_HOURS": ""}, dotenv=None))
