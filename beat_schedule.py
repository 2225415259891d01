"""The beat schedule, built from settings: a backup of every database alias every
`BACKUP_INTERVAL_HOURS`, a cleanup of its backups every `BACKUP_CLEANUP_INTERVAL_DAYS`, and,
with `BACKUP_VERIFY_INTERVAL_HOURS`, a restore drill of its newest backup into its scratch
alias (`BACKUP_VERIFY_INTO`). Scratch aliases are not backed up (a drill overwrites them), but
are cleaned up like every alias (a restore by hand into one leaves a safety copy).

Pure data (no Celery import), so it is tested without a broker. Each message expires after one
interval: when workers were down, a backlog of identical backups is not run all at once. With
Supabase Storage configured, scheduled backups are uploaded, so every host's workers see them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from dbjobs.settings import Settings
from dbjobs.storage import remote_storage


def build_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Celery `beat_schedule` entries for every configured alias."""
    backup_every = timedelta(hours=settings.backup_interval_hours)
    cleanup_every = timedelta(days=settings.cleanup_interval_days)
    backup_dir = str(settings.backup_dir)
    upload = {"upload": True} if remote_storage(settings) else {}  # the shared store every host lists from
    drills = settings.drill_targets()
    scratch = set(drills.values())
    schedule: dict[str, dict[str, Any]] = {}
    for alias in sorted(settings.databases):
        if alias in drills and settings.verify_interval_hours:
            verify_every = timedelta(hours=settings.verify_interval_hours)
            schedule[f"verify {alias}"] = {
                "task": "dbjobs.verify",
                "schedule": verify_every,
                "kwargs": {"database": alias, "deep": True, "into": drills[alias], "backup_dir": backup_dir},
                "options": {"expires": verify_every.total_seconds()},
            }
        if alias not in scratch:
            schedule[f"backup {alias}"] = {
                "task": "dbjobs.backup",
                "schedule": backup_every,
                "kwargs": {"database": alias, "output_dir": backup_dir, **upload},
                "options": {"expires": backup_every.total_seconds()},
            }
        schedule[f"cleanup {alias}"] = {
            "task": "dbjobs.cleanup",
            "schedule": cleanup_every,
            "kwargs": {"database": alias, "backup_dir": backup_dir, "keep_days": settings.keep_days,
                       "min_keep": settings.min_keep, "dry_run": False},
            "options": {"expires": cleanup_every.total_seconds()},
        }
    return schedule
