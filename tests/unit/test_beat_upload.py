"""Scheduled backups go to the shared store when there is one, so every host's workers see them."""

from __future__ import annotations

from beat_schedule import build_schedule
from dbjobs.settings import load_settings


def test_scheduled_backups_upload_when_supabase_is_configured():
    plain = build_schedule(load_settings({}, dotenv=None))["backup default"]["kwargs"]
    remote = {"SUPABASE_URL": "https://x.supabase.co", "SUPABASE_KEY": "k", "SUPABASE_BUCKET": "backups"}
    shared = build_schedule(load_settings(remote, dotenv=None))["backup default"]["kwargs"]
    assert "upload" not in plain and shared["upload"] is True
