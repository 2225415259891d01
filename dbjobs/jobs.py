"""The public jobs: stable names, JSON-able keyword arguments, JSON results.

This is the one place that turns what a task message or the CLI carries (aliases, ids,
options) into typed library calls. Celery tasks (`workers/`) and the in-process runner of the
CLI both call `run_job`, so a job behaves the same wherever it runs. Arguments never hold a URL
or a secret: databases are named by alias and resolved here, inside the process that runs
the job.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dbjobs.errors import ConfigError, DbjobsError
from dbjobs.progress import ProgressCallback, no_progress
from dbjobs.settings import Settings

JobFunction = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class Job:
    """A registered job: its public name, function, and whether it needs the database's lock."""

    name: str
    function: JobFunction
    locks_database: bool


JOBS: dict[str, Job] = {}


def job(name: str, *, locks_database: bool = False) -> Callable[[JobFunction], JobFunction]:
    """Register a job function under its public task name (`dbjobs.<verb>`)."""

    def register(function: JobFunction) -> JobFunction:
        JOBS[name] = Job(name, function, locks_database)
        return function

    return register


def run_job(name: str, settings: Settings, kwargs: dict[str, Any], progress: ProgressCallback = no_progress) -> dict:
    """Run a registered job with JSON-able `kwargs`; unknown names or arguments are user errors."""
    try:
        entry = JOBS[name]
    except KeyError:
        raise ConfigError(f"unknown job {name!r} (known: {', '.join(sorted(JOBS))})") from None
    try:
        inspect.signature(entry.function).bind(settings, progress, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad arguments for {name}: {exc}") from None
    return entry.function(settings, progress, **kwargs)


def _dir(value: str | None, default: Path) -> Path:
    return Path(value) if value else default


@job("dbjobs.backup", locks_database=True)
def backup(settings: Settings, progress: ProgressCallback, *, database: str = "default",
           output_dir: str | None = None, upload: bool = False) -> dict[str, Any]:
    """Full backup of one database alias into the backup directory, then (with `upload`) to Supabase Storage.

    Missing Supabase settings or bucket stop the job before any work; a failed upload does not:
    the local backup stands and the result says why the upload failed.
    """
    from dbjobs.backup import run_backup
    from dbjobs.jobstate import recorded
    from dbjobs.sample import ensure_sample
    from dbjobs.storage import require_remote

    directory = _dir(output_dir, settings.backup_dir)
    db = settings.database(database)
    remote = require_remote(settings) if upload else None
    if remote is not None:
        remote.check_bucket()
    with recorded(directory, "dbjobs.backup", database):
        ensure_sample(settings, db)
        done = run_backup(db, directory, progress=progress)
    result = done.to_dict()
    if remote is not None:
        try:
            remote.put(done.backup.path, done.backup.manifest, progress)  # type: ignore[arg-type]
        except DbjobsError as exc:
            result["upload"] = {"ok": False, "location": remote.where, "error": str(exc)}
        else:
            result["upload"] = {"ok": True, "location": remote.where}
    return result


@job("dbjobs.restore", locks_database=True)
def restore(settings: Settings, progress: ProgressCallback, *, backup: str, database: str | None = None,
            backup_dir: str | None = None, confirmed: bool = False) -> dict[str, Any]:
    """Restore a backup (id or file) into an alias: the backup's own alias unless another is named.

    An id is looked up locally and in Supabase Storage; a remote-only backup is downloaded into
    the backup directory and verified first.
    """
    from dbjobs.catalog import ensure_local, find_backup
    from dbjobs.restore import run_restore
    from dbjobs.storage import storages

    directory = _dir(backup_dir, settings.backup_dir)
    places = storages(settings, directory)
    found = find_backup(places, backup)
    db = settings.database(database or found.manifest.database)
    found = ensure_local(found, places, directory, progress)
    return run_restore(found, db, directory, confirmed=confirmed, progress=progress).to_dict()


@job("dbjobs.list_backups")
def list_backups(settings: Settings, progress: ProgressCallback, *, backup_dir: str | None = None,
                 limit: int = 10, database: str | None = None) -> dict[str, Any]:
    """Complete backups newest first (at most `limit`), local and remote merged, and the skipped manifests."""
    from dbjobs.catalog import list_backups as list_all
    from dbjobs.storage import storages

    if limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    backups, problems = list_all(storages(settings, _dir(backup_dir, settings.backup_dir)), database)
    return {"backups": [b.to_dict() for b in backups[:limit]], "total": len(backups), "skipped": problems}


@job("dbjobs.cleanup")
def cleanup(settings: Settings, progress: ProgressCallback, *, database: str | None = None,
            backup_dir: str | None = None, keep_days: int | None = None, min_keep: int | None = None,
            keep_last: int = 0, keep_daily: int = 0, keep_weekly: int = 0, keep_monthly: int = 0,
            dry_run: bool = False) -> dict[str, Any]:
    """Apply retention to the local directory and the shared remote store (defaults: BACKUP_KEEP_DAYS/MIN_KEEP)."""
    from dbjobs.cleanup import run_cleanup
    from dbjobs.jobstate import recorded
    from dbjobs.retention import Rule
    from dbjobs.storage import storages

    rule = Rule(keep_days=settings.keep_days if keep_days is None else keep_days,
                min_keep=settings.min_keep if min_keep is None else min_keep, keep_last=keep_last,
                keep_daily=keep_daily, keep_weekly=keep_weekly, keep_monthly=keep_monthly)
    directory = _dir(backup_dir, settings.backup_dir)
    outcome = contextlib.nullcontext() if dry_run else recorded(directory, "dbjobs.cleanup", database or "all")
    with outcome:
        return run_cleanup(storages(settings, directory), rule, datetime.now(UTC), database=database,
                           dry_run=dry_run, progress=progress).to_dict()


@job("dbjobs.status")
def status(settings: Settings, progress: ProgressCallback, *, database: str | None = None,
           backup_dir: str | None = None, min_free_percent: float = 10.0) -> dict[str, Any]:
    """Health of the databases (all aliases, or one), their backups, the backup disk and the last jobs."""
    from dbjobs import status as report
    from dbjobs.jobstate import outcomes
    from dbjobs.storage import storages

    if not 0 <= min_free_percent <= 100:
        raise ConfigError(f"--min-free-percent must be between 0 and 100, got {min_free_percent}")
    aliases = [database] if database else sorted(settings.databases)
    dbs = [settings.database(alias) for alias in aliases]
    directory = _dir(backup_dir, settings.backup_dir)
    backups, storage = report.storage_section(storages(settings, directory))
    probe = report.schema_probe(settings.schema_dir)
    return report.build_report({
        "databases": report.combine([report.database_section(db) for db in dbs]),
        "schema": report.combine([report.schema_section(db, probe) for db in dbs]),
        "backups": report.backups_section(backups, aliases, datetime.now(UTC), settings.backup_interval_hours),
        "storage": storage,
        "disk": report.disk_section(directory, min_free_percent),
        "jobs": report.jobs_section(outcomes(directory)),
    })
