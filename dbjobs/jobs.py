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
TargetFunction = Callable[[Settings, dict[str, Any]], str]


@dataclass(frozen=True)
class Job:
    """A registered job: its public name, function, and whether it needs the database's lock.

    `target` names the alias a locking job works on when `database` is not simply it (a restore
    without `--database` targets the alias its backup was taken from; a deep verify locks the
    scratch alias it restores into, a plain one nothing: None).
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
    alias = entry.target(settings, arguments) if entry.target else arguments.get("database") or "default"
    if alias is None:
        return None
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
           output_dir: str | None = None, upload: bool = False, request_id: str | None = None,
           kind: str = "full") -> dict[str, Any]:
    """Full backup of one database alias into the backup directory, then (with `upload`) to Supabase Storage.

    Missing Supabase settings stop the job before any work. Nothing the store does can: the
    local backup is always taken first, and a failed upload (the store down, a refused key, a
    missing bucket) is reported in the result's `upload` and recorded for `status`, while the
    backup stands. With a `request_id` (the worker passes its task id) a re-run of the same
    request, after a worker died between writing the manifest and reporting success, returns the
    backup it already took instead of taking a second one (and uploads it, if asked: uploads
    overwrite, so a repeated one is harmless).
    `kind` marks copies dbjobs takes by itself (`pre-migration`), which retention keeps apart.
    """
    from dbjobs.backup import BackupResult, run_backup
    from dbjobs.catalog import find_request_backup
    from dbjobs.jobstate import recorded
    from dbjobs.retention import KINDS
    from dbjobs.sample import ensure_sample
    from dbjobs.storage import require_remote
    from dbjobs.upload import upload_backup

    if kind not in KINDS:
        raise ConfigError(f"backup kind must be one of {', '.join(KINDS)}, got {kind!r}")
    directory = _dir(output_dir, settings.backup_dir)
    db = settings.database(database)
    remote = require_remote(settings) if upload else None
    taken = find_request_backup(directory, database, request_id) if request_id else None
    created = False
    if taken is not None:
        done = BackupResult.of(taken)
    else:
        with recorded(directory, "dbjobs.backup", database):
            created = ensure_sample(settings, db)
            done = run_backup(db, directory, progress=progress, request_id=request_id, kind=kind,
                              recipients=settings.age.recipients)
    result = done.to_dict()
    if created:
        result["sample_created"] = str(db.sqlite_path)
    if remote is not None:
        result["upload"] = upload_backup(remote, done.backup, directory, progress)
    return result


def _restore_target(settings: Settings, arguments: dict[str, Any]) -> str:
    """A restore without `database` goes back into the alias its backup was taken from."""
    from dbjobs.catalog import find_backup
    from dbjobs.storage import storages

    if arguments["database"]:
        return str(arguments["database"])
    if arguments["backup"] is None:
        raise ConfigError("name the backup to restore (or pass --undo with --database)")
    places = storages(settings, _dir(arguments["backup_dir"], settings.backup_dir))
    return find_backup(places, arguments["backup"]).manifest.database


@job("dbjobs.restore", locks_database=True, target=_restore_target)
def restore(settings: Settings, progress: ProgressCallback, *, backup: str | None = None,
            database: str | None = None, backup_dir: str | None = None, confirmed: bool = False,
            create: bool = False, safety_backup: bool = True, strategy: str = "auto", undo: bool = False,
            copy: str | None = None, request_id: str | None = None) -> dict[str, Any]:
    """Restore a backup (id or file) into an alias: the backup's own alias unless another is named.

    An id is looked up locally and in Supabase Storage; a remote-only backup is downloaded into
    the backup directory and verified first. A PostgreSQL or MariaDB target that does not exist
    is refused, or with `create` created empty first. `safety_backup=False` is for scratch
    targets whose contents nobody needs back (restore drills): no safety copy is taken (a swap
    restore keeps no pre-restore copy). `strategy` is auto (swap where possible), swap or
    in-place. `undo` swaps the alias's newest pre-restore copy (or `copy`) back in instead.
    """
    from dbjobs.catalog import ensure_local, find_backup
    from dbjobs.errors import ConfirmationRequired
    from dbjobs.recipients import sealed
    from dbjobs.restore import run_restore, undo_restore
    from dbjobs.storage import storages
    from dbjobs.swap import Retention

    if undo:
        if backup is not None or database is None:
            raise ConfigError("--undo takes --database ALIAS and no backup")
        if not confirmed:
            raise ConfirmationRequired(f"undoing the last restore of {database!r} replaces its contents; "
                                       "confirm (--yes)")
        return undo_restore(settings.database(database), copy).to_dict()
    if backup is None:
        raise ConfigError("name the backup to restore (or pass --undo with --database)")
    directory = _dir(backup_dir, settings.backup_dir)
    places = storages(settings, directory)
    found = find_backup(places, backup)
    db = settings.database(database or found.manifest.database)
    sealed(found.manifest.id, found.manifest.encryption, settings.age.identity_file)  # no key: stop before a download
    found = ensure_local(found, places, directory, progress)
    created = False
    if confirmed and found.manifest.engine == db.engine:  # another engine's backup is refused by run_restore
        from dbjobs.provision import ensure_target

        created = ensure_target(db, create=create)
    retention = Retention(settings.pre_restore_keep, settings.pre_restore_days)
    return run_restore(found, db, directory, confirmed=confirmed, safety_backup=safety_backup and not created,
                       progress=progress, keys=settings.age, strategy=strategy, request_id=request_id,
                       jobs=settings.restore_jobs, retention=retention).to_dict()


@job("dbjobs.restore_preview")
def restore_preview(settings: Settings, progress: ProgressCallback, *, backup: str, database: str | None = None,
                    backup_dir: str | None = None) -> dict[str, Any]:
    """Find and verify a backup and describe the target a restore would replace: what the CLI asks about.

    Changes nothing. The copy that would be restored is re-hashed (this host's file, else the
    remote object where it is), so the question is only asked about a backup known good.
    """
    from dbjobs.catalog import find_backup
    from dbjobs.provision import describe
    from dbjobs.recipients import sealed
    from dbjobs.storage import LocalStorage, storages
    from dbjobs.verify import check_copy

    places = storages(settings, _dir(backup_dir, settings.backup_dir))
    found = find_backup(places, backup)
    db = settings.database(database or found.manifest.database)
    sealed(found.manifest.id, found.manifest.encryption, settings.age.identity_file)  # refused before the question
    source = (LocalStorage(found.path.parent) if found.path is not None
              else next(s for s in places if s.where in found.remotes))
    checked = check_copy(source, found.manifest, True, progress)
    if checked.state != "ok":
        from dbjobs.errors import BackupInvalidError

        raise BackupInvalidError(f"{found.manifest.id} in {checked.where} is {checked.state} ({checked.detail}); "
                                 "nothing was restored")
    m = found.manifest
    return {"backup": {"id": m.id, "database": m.database, "engine": m.engine, "kind": m.kind,
                       "finished_at": m.finished_at, "size": m.size, "verified_in": checked.where},
            "target": describe(db)}


@job("dbjobs.rekey")
def rekey(settings: Settings, progress: ProgressCallback, *, backup: str,
          backup_dir: str | None = None) -> dict[str, Any]:
    """Re-encrypt a backup (id or file) to the current DBJOBS_ENCRYPT_TO, where its identity is at hand.

    Run it where DBJOBS_AGE_IDENTITY_FILE opens the backup: the new backup replaces the old one
    in every store that held it.
    """
    from dbjobs.catalog import find_backup
    from dbjobs.rekey import run_rekey
    from dbjobs.storage import storages

    directory = _dir(backup_dir, settings.backup_dir)
    places = storages(settings, directory)
    return run_rekey(find_backup(places, backup), places, directory, settings.age, progress=progress).to_dict()


@job("dbjobs.list_backups")
def list_backups(settings: Settings, progress: ProgressCallback, *, backup_dir: str | None = None,
                 limit: int = 10, database: str | None = None) -> dict[str, Any]:
    """Complete backups newest first (at most `limit`), local and remote merged, and the skipped manifests.

    A storage that cannot be read (the remote store down) is named under `unreadable` with its
    error, and the backups of the others are still listed. Each row carries its kind and its
    checksum state: what the last `verify` found (ok, damaged, missing, and when), or `never checked`.
    """
    from dbjobs.catalog import list_scanned, scan_readable
    from dbjobs.storage import storages
    from dbjobs.verify import checksum_state

    if limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    directory = _dir(backup_dir, settings.backup_dir)
    scanned, unreadable = scan_readable(storages(settings, directory))
    backups, problems = list_scanned(scanned, database)
    rows = [{**b.to_dict(), "checksum": checksum_state(directory, b)} for b in backups[:limit]]
    return {"backups": rows, "total": len(backups), "skipped": problems,
            "unreadable": [u.to_dict() for u in unreadable],
            "pre_restore_copies": _pre_restore_copies(settings, [database] if database else sorted(settings.databases))}


def _pre_restore_copies(settings: Settings, aliases: list[str]) -> list[dict[str, Any]]:
    """Pre-restore copies (databases a swap restore set aside) of the reachable aliases, newest first each."""
    from dbjobs.restore import pre_restore_copies

    found: list[dict[str, Any]] = []
    for alias in aliases:
        with contextlib.suppress(DbjobsError):
            found.extend(pre_restore_copies(settings.database(alias)))
    return found


def _backup_first(settings: Settings, progress: ProgressCallback, database: str, wanted: bool) -> dict | None:
    """The `--backup` option of the schema jobs: a full backup before anything changes."""
    kwargs = {"database": database, "kind": "pre-migration"}
    return run_job("dbjobs.backup", settings, kwargs, progress) if wanted else None


@job("dbjobs.detect_migrations", locks_database=True)
def detect_migrations(settings: Settings, progress: ProgressCallback, *, database: str = "default",
                      schema_dir: str | None = None, backup: bool = False, apply: bool = False,
                      allow_destructive: bool = False, schemas: list[str] | None = None,
                      exclude_schemas: list[str] | None = None) -> dict[str, Any]:
    """Snapshot the schema, compare it with the models (or the previous snapshot), write a migration."""
    from dbjobs.schema.detect import detect_migrations as detect

    db = settings.database(database)
    taken = _backup_first(settings, progress, database, backup)
    result = detect(db, _dir(schema_dir, settings.schema_dir), settings.models, progress, apply=apply,
                    allow_destructive=allow_destructive, schemas=schemas, exclude_schemas=exclude_schemas)
    return {**result.to_dict(), "backup": taken}


@job("dbjobs.apply_migration", locks_database=True)
def apply_migration(settings: Settings, progress: ProgressCallback, *, file: str | None = None,
                    database: str = "default", schema_dir: str | None = None, backup: bool = False,
                    allow_destructive: bool = False, reverse: bool = False, confirmed: bool = False,
                    allow_unsupported: bool = False, stamp: bool = False) -> dict[str, Any]:
    """Apply one migration file (or its reverse), or every pending one of the schema directory, under the
    migration lock, recording each in the ledger."""
    from dbjobs.errors import ConfirmationRequired
    from dbjobs.migrate import Timeouts, apply_pending, check_migration, stamp_migrations
    from dbjobs.migrate import apply_migration as apply
    from dbjobs.schema.history import record_current

    if not confirmed:
        raise ConfirmationRequired("applying migrations was not confirmed; nothing was changed (pass --yes)")
    if reverse and not file:
        raise ConfigError("--reverse needs --file: name the migration to revert")
    db = settings.database(database)
    directory = _dir(schema_dir, settings.schema_dir)
    if stamp:
        stamped = stamp_migrations(db, directory, Path(file) if file else None)
        record_current(db, directory)
        return {"database": database, "migrations": [r.to_dict() for r in stamped], "backup": None}
    if file:
        check_migration(db, Path(file), allow_destructive=allow_destructive, reverse=reverse,
                        allow_unsupported=allow_unsupported)
    taken = _backup_first(settings, progress, database, backup)
    timeouts = Timeouts(settings.migration_lock_timeout, settings.migration_statement_timeout)
    if file:
        results = [apply(db, Path(file), allow_destructive=allow_destructive, reverse=reverse, timeouts=timeouts,
                         progress=progress, allow_unsupported=allow_unsupported)]
    else:
        results = apply_pending(db, directory, allow_destructive=allow_destructive, timeouts=timeouts,
                                progress=progress, allow_unsupported=allow_unsupported)
    record_current(db, directory)  # the next detect-migrations starts from the migrated schema
    return {"database": database, "migrations": [r.to_dict() for r in results], "backup": taken}


@job("dbjobs.cleanup")
def cleanup(settings: Settings, progress: ProgressCallback, *, database: str | None = None,
            backup_dir: str | None = None, keep_days: int | None = None, min_keep: int | None = None,
            keep_last: int = 0, keep_daily: int = 0, keep_weekly: int = 0, keep_monthly: int = 0,
            dry_run: bool = False, allow_empty: bool = False) -> dict[str, Any]:
    """Apply retention to the local directory and the shared remote store (defaults: BACKUP_KEEP_DAYS/MIN_KEEP).

    Safety and pre-migration copies follow their own short rule; leaving a database with no
    backup at all needs `allow_empty`.
    """
    from dbjobs.cleanup import run_cleanup
    from dbjobs.jobstate import recorded
    from dbjobs.retention import Rule
    from dbjobs.storage import storages

    rule = Rule(keep_days=settings.keep_days if keep_days is None else keep_days,
                min_keep=settings.min_keep if min_keep is None else min_keep, keep_last=keep_last,
                keep_daily=keep_daily, keep_weekly=keep_weekly, keep_monthly=keep_monthly)
    directory = _dir(backup_dir, settings.backup_dir)
    outcome = contextlib.nullcontext([]) if dry_run else recorded(directory, "dbjobs.cleanup", database or "all")
    with outcome as problems:
        result = run_cleanup(storages(settings, directory), rule, datetime.now(UTC), database=database,
                             dry_run=dry_run, allow_empty=allow_empty, progress=progress).to_dict()
        problems.extend(f"{u['where']} could not be listed ({u['error']}); its backups were left"
                        for u in result["unreadable"])
    result["pre_restore_copies_dropped"] = _prune_copies(settings, [database] if database else sorted(
        settings.databases), dry_run)
    return result


def _prune_copies(settings: Settings, aliases: list[str], dry_run: bool) -> list[str]:
    """The pre-restore retention rule (DBJOBS_PRE_RESTORE_KEEP/_DAYS) on every reachable alias that has copies."""
    from dbjobs.restore import prune_pre_restore_copies
    from dbjobs.swap import Retention

    retention = Retention(settings.pre_restore_keep, settings.pre_restore_days)
    dropped: list[str] = []
    for alias in aliases:
        with contextlib.suppress(DbjobsError):
            dropped.extend(prune_pre_restore_copies(settings.database(alias), retention, datetime.now(UTC),
                                                    dry_run=dry_run))
    return dropped


@job("dbjobs.status")
def status(settings: Settings, progress: ProgressCallback, *, database: str | None = None,
           backup_dir: str | None = None, min_free_percent: float = 10.0) -> dict[str, Any]:
    """Health of the databases (all aliases, or one), their backups, drills, the backup disk and the last jobs.

    Scratch aliases that drills restore into are not expected to have backups of their own.
    """
    from dbjobs import status as report
    from dbjobs.jobstate import outcomes
    from dbjobs.storage import storages

    if not 0 <= min_free_percent <= 100:
        raise ConfigError(f"--min-free-percent must be between 0 and 100, got {min_free_percent}")
    aliases = [database] if database else sorted(settings.databases)
    dbs = [settings.database(alias) for alias in aliases]
    drills = settings.drill_targets()
    scratch = set(drills.values())
    directory = _dir(backup_dir, settings.backup_dir)
    backups, storage = report.storage_section(storages(settings, directory))
    backups = [b for b in backups if b.manifest.database in aliases]
    probe = report.schema_probe(settings.schema_dir)
    recorded = outcomes(directory)
    return report.build_report({
        "databases": report.combine([report.database_section(db) for db in dbs]),
        "schema": report.combine([report.schema_section(db, probe) for db in dbs]),
        "backups": report.backups_section(backups, [a for a in aliases if a not in scratch], datetime.now(UTC),
                                          settings.backup_interval_hours),
        "storage": storage,
        "disk": report.disk_section(directory, min_free_percent),
        "jobs": report.jobs_section(recorded, aliases, settings.databases),
        "drills": report.drills_section(recorded, {a: drills[a] for a in aliases if a in drills}, aliases,
                                        datetime.now(UTC), settings.verify_interval_hours),
        "pre_restore_copies": (_pre_restore_copies(settings, aliases), []),
    })


def _drill_into(settings: Settings, arguments: dict[str, Any]) -> str | None:
    """The scratch alias a deep verify restores into (None for a plain verify): `into`, else BACKUP_VERIFY_INTO's.

    Never the alias the backup was taken from: a drill replaces its target's contents.
    """
    from dbjobs.catalog import find_backup
    from dbjobs.storage import storages

    if not arguments["deep"]:
        return None
    source = arguments["database"] or "default"
    if arguments["backup"]:
        places = storages(settings, _dir(arguments["backup_dir"], settings.backup_dir))
        source = find_backup(places, arguments["backup"]).manifest.database
    into = arguments["into"] or settings.drill_targets().get(source)
    if not into:
        raise ConfigError(f"--deep needs --into ALIAS, a scratch database to restore {source!r} into "
                          "(or set BACKUP_VERIFY_INTO)")
    settings.database_url(into)
    if into == source:
        raise ConfigError(f"--into {into!r} is the database the backup was taken from: a drill replaces the "
                          "contents of its target, so name a scratch alias")
    return str(into)


@job("dbjobs.verify", locks_database=True, target=_drill_into)
def verify(settings: Settings, progress: ProgressCallback, *, backup: str | None = None,
           database: str | None = None, deep: bool = False, into: str | None = None,
           backup_dir: str | None = None) -> dict[str, Any]:
    """Re-hash backups where they are kept (all, `database`'s, or `backup`); with `deep`, drill a restore.

    A drill restores `backup` (default: the newest full backup of `database`, or of `default`)
    into the scratch alias `into` through the restore job, then checks every table's row count
    and the schema fingerprint against the manifest. Damage and failed drills are results
    (`ok: false`), recorded for `status`; only bad arguments and unreadable storages raise.
    """
    from dbjobs import verify as checks
    from dbjobs.catalog import find_backup
    from dbjobs.schema.snapshot import fingerprint
    from dbjobs.storage import storages

    directory = _dir(backup_dir, settings.backup_dir)
    places = storages(settings, directory)
    if not deep:
        if into:
            raise ConfigError("--into is for --deep drills; a plain verify restores nothing")
        verified, skipped, unreadable = checks.verify_backups(places, directory, ref=backup, database=database,
                                                              progress=progress)
        counts = {state: sum(v.state == state for v in verified) for state in checks.STATES}
        return {"deep": False, "backups": [v.to_dict() for v in verified], "skipped": skipped, **counts,
                "unreadable": [u.to_dict() for u in unreadable],
                "ok_all": counts["damaged"] == counts["missing"] == 0 and not unreadable}
    target = _drill_into(settings, {"deep": True, "database": database, "backup": backup, "into": into,
                                    "backup_dir": backup_dir})
    found = find_backup(places, backup) if backup else checks.newest_full(places, database or "default")

    def restore(backup_id: str, alias: str) -> dict[str, Any]:
        return run_job("dbjobs.restore", settings, {"backup": backup_id, "database": alias, "safety_backup": False,
                                                    "backup_dir": str(directory), "confirmed": True}, progress)

    result = checks.drill(found, places, settings.database(str(target)), directory, restore, fingerprint, progress)
    return {"deep": True, **result.to_dict(), "ok_all": result.ok}
