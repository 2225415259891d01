"""The public jobs: stable names, JSON-able keyword arguments, JSON results.

This is the one place that turns what a task message or the CLI carries (aliases, ids,
options) into typed library calls. Celery tasks (`workers/`) and the in-process runner of the
CLI both call `run_job`, so a job behaves the same wherever it runs. Arguments never hold a URL
or a secret: databases are named by alias and resolved here, inside the process that runs
the job.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbjobs.errors import ConfigError
from dbjobs.progress import ProgressCallback, no_progress
from dbjobs.settings import Settings

JobFunction = Callable[..., dict[str, Any]]
TargetFunction = Callable[[Settings, dict[str, Any]], str]


@dataclass(frozen=True)
class Job:
    """A registered job: its public name, function, and whether it needs the database's lock.

    `target` names the alias a locking job works on when its arguments do not say it directly
    (a restore without `--database` targets the alias its backup was taken from).
    """

    name: str
    function: JobFunction
    locks_database: bool
    target: TargetFunction | None = None

    @property
    def accepts_request_id(self) -> bool:
        """Whether the job takes the id of the request that runs it (to recognise its own re-runs)."""
        return "request_id" in inspect.signature(self.function).parameters


JOBS: dict[str, Job] = {}


def job(name: str, *, locks_database: bool = False,
        target: TargetFunction | None = None) -> Callable[[JobFunction], JobFunction]:
    """Register a job function under its public task name (`dbjobs.<verb>`)."""

    def register(function: JobFunction) -> JobFunction:
        JOBS[name] = Job(name, function, locks_database, target)
        return function

    return register


def job_named(name: str) -> Job:
    """The registered job, or a user error listing the known ones."""
    try:
        return JOBS[name]
    except KeyError:
        raise ConfigError(f"unknown job {name!r} (known: {', '.join(sorted(JOBS))})") from None


def _arguments(entry: Job, settings: Settings, kwargs: dict[str, Any], progress: ProgressCallback) -> dict[str, Any]:
    """The job's keyword arguments with defaults filled in; a wrong name or type of call is a user error."""
    try:
        bound = inspect.signature(entry.function).bind(settings, progress, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad arguments for {entry.name}: {exc}") from None
    bound.apply_defaults()
    return {k: v for k, v in bound.arguments.items() if k not in ("settings", "progress")}


def locked_alias(name: str, settings: Settings, kwargs: dict[str, Any]) -> str | None:
    """The database alias whose lock job `name` must hold while it runs, or None if it needs none.

    The alias is checked against the settings, so a job naming an unknown alias fails before
    it locks or touches anything.
    """
    entry = job_named(name)
    if not entry.locks_database:
        return None
    arguments = _arguments(entry, settings, kwargs, no_progress)
    alias = arguments.get("database")
    if alias is None:
        alias = entry.target(settings, arguments) if entry.target else "default"
    settings.database_url(alias)
    return alias


def run_job(name: str, settings: Settings, kwargs: dict[str, Any], progress: ProgressCallback = no_progress) -> dict:
    """Run a registered job with JSON-able `kwargs`; unknown names or arguments are user errors."""
    entry = job_named(name)
    _arguments(entry, settings, kwargs, progress)
    return entry.function(settings, progress, **kwargs)


def _dir(value: str | None, default: Path) -> Path:
    return Path(value) if value else default


@job("dbjobs.backup", locks_database=True)
def backup(settings: Settings, progress: ProgressCallback, *, database: str = "default",
           output_dir: str | None = None, request_id: str | None = None) -> dict[str, Any]:
    """Full backup of one database alias into the backup directory.

    With a `request_id` (the worker passes its task id) a re-run of the same request, after a
    worker died between writing the manifest and reporting success, returns the backup it
    already took instead of taking a second one.
    """
    from dbjobs.backup import BackupResult, run_backup
    from dbjobs.catalog import find_request_backup
    from dbjobs.sample import ensure_sample

    directory = _dir(output_dir, settings.backup_dir)
    db = settings.database(database)
    if request_id and (done := find_request_backup(directory, database, request_id)):
        return BackupResult.of(done).to_dict()
    ensure_sample(settings, db)
    return run_backup(db, directory, progress=progress, request_id=request_id).to_dict()


def _restore_target(settings: Settings, arguments: dict[str, Any]) -> str:
    """A restore without `database` goes back into the alias its backup was taken from."""
    from dbjobs.catalog import find_backup

    return find_backup(_dir(arguments["backup_dir"], settings.backup_dir), arguments["backup"]).manifest.database


@job("dbjobs.restore", locks_database=True, target=_restore_target)
def restore(settings: Settings, progress: ProgressCallback, *, backup: str, database: str | None = None,
            backup_dir: str | None = None, confirmed: bool = False) -> dict[str, Any]:
    """Restore a backup (id or file) into an alias: the backup's own alias unless another is named."""
    from dbjobs.catalog import find_backup
    from dbjobs.restore import run_restore

    directory = _dir(backup_dir, settings.backup_dir)
    found = find_backup(directory, backup)
    db = settings.database(database or found.manifest.database)
    return run_restore(found, db, directory, confirmed=confirmed, progress=progress).to_dict()


@job("dbjobs.list_backups")
def list_backups(settings: Settings, progress: ProgressCallback, *, backup_dir: str | None = None,
                 limit: int = 10, database: str | None = None) -> dict[str, Any]:
    """Complete backups newest first (at most `limit`), and the manifests that were skipped."""
    from dbjobs.catalog import list_backups as list_dir

    if limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    backups, problems = list_dir(_dir(backup_dir, settings.backup_dir), database)
    return {"backups": [b.to_dict() for b in backups[:limit]], "total": len(backups), "skipped": problems}
