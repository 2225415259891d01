"""Settings from the environment (and a `.env` file), validated once at start-up.

Every malformed value raises `ConfigError` naming the variable, so an operator learns of a
typo when the process starts rather than when the first scheduled job fails at 3 a.m.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dbjobs.errors import ConfigError, UnknownDatabaseError
from dbjobs.recipients import NO_KEYS, AgeKeys, load_keys

if TYPE_CHECKING:
    from dbjobs.dburl import DatabaseURL

SAMPLE_DATABASE_FILE = "dbjobs-sample.sqlite3"
EVERY = "*"  # BACKUP_VERIFY_INTO naming one scratch alias for every database
ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class Settings:
    """Everything dbjobs reads from its environment. Database URLs may hold secrets: never log them."""

    databases: Mapping[str, str] = field(repr=False)
    sample_database: bool
    broker_url: str | None = field(repr=False)
    result_backend: str | None = field(repr=False)
    backup_dir: Path
    schema_dir: Path
    models: str | None
    supabase_url: str | None
    supabase_key: str | None = field(repr=False)
    supabase_bucket: str | None
    backup_interval_hours: float
    cleanup_interval_days: float
    keep_days: int
    min_keep: int
    env: str
    task_time_limit: float = 6 * 3600
    visibility_timeout: float = 120
    lock_ttl: float = 60
    lock_wait: float = 900
    restore_jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    pre_restore_keep: int = 1
    pre_restore_days: float = 7.0
    supabase_retry_seconds: float = 60.0
    supabase_chunk_mb: float = 128.0
    age: AgeKeys = NO_KEYS  # DBJOBS_ENCRYPT_TO / DBJOBS_AGE_IDENTITY_FILE
    verify_interval_hours: float | None = None
    verify_into: Mapping[str, str] = field(default_factory=dict)
    wait_reconnect: float = 60
    migration_lock_timeout: float = 10
    migration_statement_timeout: float = 3600

    def drill_targets(self) -> dict[str, str]:
        """Each alias that is drilled and the scratch alias its newest backup is restored into.

        `BACKUP_VERIFY_INTO=scratch` drills every other alias of the scratch's engine into it;
        `alias=scratch` pairs name them one by one.
        """
        if EVERY not in self.verify_into:
            return dict(self.verify_into)
        scratch = self.verify_into[EVERY]
        engine = self.database(scratch).engine
        return {alias: scratch for alias in sorted(self.databases)
                if alias != scratch and self.database(alias).engine == engine}

    def database_url(self, alias: str) -> str:
        """The URL of a configured alias; an unknown alias is a user error, not a KeyError."""
        try:
            return self.databases[alias]
        except KeyError:
            known = ", ".join(sorted(self.databases)) or "none"
            raise UnknownDatabaseError(
                f"unknown database alias {alias!r} (configured: {known}); "
                "set DBJOBS_DATABASE_URL or add it to DBJOBS_DATABASES"
            ) from None

    def database(self, alias: str) -> DatabaseURL:
        """The parsed URL of an alias (imports SQLAlchemy, so only jobs call it, not `--help`)."""
        from dbjobs.dburl import parse_url

        return parse_url(alias, self.database_url(alias))

    @property
    def production(self) -> bool:
        """Production mode turns on the automatic beat schedule."""
        return self.env == "production"


def _number(env: Mapping[str, str], name: str, default: float, *, integer: bool) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"{name}={raw!r} is not {kind}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name}={raw!r} must be a finite number")
    if value < 0:
        raise ConfigError(f"{name}={raw!r} must not be negative")
    return value


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = _number(env, name, default, integer=False)
    if value == 0:
        raise ConfigError(f"{name}=0: an interval must be greater than zero")
    return value


def parse_databases(raw: str) -> dict[str, str]:
    """Parse DBJOBS_DATABASES: a JSON object, or `alias=url` pairs separated by `;`, spaces or lines."""
    raw = raw.strip()
    if not raw:
        return {}
    if raw.startswith("{"):
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"DBJOBS_DATABASES is not valid JSON: {exc.msg}") from None
        if not isinstance(parsed, dict) or not all(
            isinstance(v, str) for v in parsed.values()
        ):
            raise ConfigError("DBJOBS_DATABASES must map each alias to a URL string")
        pairs = list(parsed.items())
    else:
        pairs = []
        for item in re.split(r"[;\s]+", raw):
            if not item:
                continue
            alias, sep, url = item.partition("=")
            if not sep or not url:
                raise ConfigError(
                    f"DBJOBS_DATABASES entry {alias!r} is not alias=url "
                    "(example: reports=postgresql://host/reports;legacy=mysql://host/legacy)"
                )
            pairs.append((alias, url))
    result: dict[str, str] = {}
    for alias, url in pairs:
        if not ALIAS_RE.match(alias):
            raise ConfigError(
                f"DBJOBS_DATABASES alias {alias!r} must start with a letter and hold only "
                "letters, digits, '_' or '-'"
            )
        result[alias] = url
    return result


def load_settings(
    environ: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")
) -> Settings:
    """Read and validate the settings; values in the process environment win over `.env`."""
    env: dict[str, str] = {}
    if dotenv is not None and dotenv.is_file():
        from dotenv import dotenv_values

        env.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
    env.update(os.environ if environ is None else environ)

    databases = parse_databases(env.get("DBJOBS_DATABASES", ""))
    default_url = env.get("DBJOBS_DATABASE_URL", "").strip()
    sample = not default_url and "default" not in databases
    if default_url:
        databases["default"] = default_url
    elif sample:
        databases["default"] = f"sqlite:///{SAMPLE_DATABASE_FILE}"

    broker = env.get("DBJOBS_BROKER_URL", "").strip() or None
    if broker and not re.match(r"^(redis|rediss|memory)://", broker):
        raise ConfigError(f"DBJOBS_BROKER_URL must be a redis:// URL, got scheme {broker.split(':')[0]!r}")

    keep_days = int(_number(env, "BACKUP_KEEP_DAYS", 30, integer=True))
    min_keep = int(_number(env, "BACKUP_MIN_KEEP", 5, integer=True))
    environment = env.get("DBJOBS_ENV", "development").strip() or "development"
    if environment not in {"development", "production", "test"}:
        raise ConfigError(f"DBJOBS_ENV={environment!r} must be development, production or test")

    models = env.get("DBJOBS_MODELS", "").strip() or None
    if models and ":" not in models:
        raise ConfigError(f"DBJOBS_MODELS={models!r} must be module:attribute (e.g. app.models:Base)")

    return Settings(
        databases=databases,
        sample_database=sample,
        broker_url=broker,
        result_backend=env.get("DBJOBS_RESULT_BACKEND", "").strip() or broker,
        backup_dir=Path(env.get("DBJOBS_BACKUP_DIR", "").strip() or "backups"),
        schema_dir=Path(env.get("DBJOBS_SCHEMA_DIR", "").strip() or "migrations"),
        models=models,
        supabase_url=env.get("SUPABASE_URL", "").strip() or None,
        supabase_key=env.get("SUPABASE_KEY", "").strip() or None,
        supabase_bucket=env.get("SUPABASE_BUCKET", "").strip() or None,
        backup_interval_hours=_positive(env, "BACKUP_INTERVAL_HOURS", 24),
        cleanup_interval_days=_positive(env, "BACKUP_CLEANUP_INTERVAL_DAYS", 1),
        keep_days=keep_days,
        min_keep=min_keep,
        env=environment,
        supabase_retry_seconds=_positive(env, "SUPABASE_RETRY_SECONDS", 60),
        supabase_chunk_mb=_positive(env, "SUPABASE_CHUNK_MB", 128),
        age=load_keys(env),
        wait_reconnect=_positive(env, "DBJOBS_WAIT_RECONNECT", 60),
        **_worker_limits(env),
        **_restore_settings(env),
        **_drills(env, databases),
    )


def _restore_settings(env: Mapping[str, str]) -> dict[str, float]:
    """How swap restores run: parallel load jobs, and how many pre-restore copies to keep for how long.

    Pre-restore copies are whole databases on the server, so by default only the newest stays,
    for a week: enough to undo a restore, not enough to fill the server's disk.
    """
    jobs = int(_number(env, "DBJOBS_RESTORE_JOBS", os.cpu_count() or 1, integer=True))
    if jobs < 1:
        raise ConfigError(f"DBJOBS_RESTORE_JOBS={jobs}: a restore needs at least one job")
    return {
        "restore_jobs": jobs,
        "pre_restore_keep": int(_number(env, "DBJOBS_PRE_RESTORE_KEEP", 1, integer=True)),
        "pre_restore_days": _number(env, "DBJOBS_PRE_RESTORE_DAYS", 7, integer=False),
    }


def parse_verify_into(raw: str, databases: Mapping[str, str]) -> dict[str, str]:
    """BACKUP_VERIFY_INTO: one scratch alias (`scratch`), or `alias=scratch` pairs separated by `;`, `,` or spaces."""
    items = [item for item in re.split(r"[;,\s]+", raw.strip()) if item]
    if len(items) == 1 and "=" not in items[0]:
        pairs = [(EVERY, items[0])]
    else:
        pairs = [tuple(item.partition("=")[::2]) for item in items]
    for source, scratch in pairs:
        for alias in (source, scratch):
            if alias != EVERY and alias not in databases:
                known = ", ".join(sorted(databases)) or "none"
                raise ConfigError(f"BACKUP_VERIFY_INTO names {alias!r}, which is not a configured alias "
                                  f"(configured: {known}); write a scratch alias or alias=scratch pairs")
        if source == scratch:
            raise ConfigError(f"BACKUP_VERIFY_INTO: {source!r} cannot be its own scratch alias (a drill replaces "
                              "the scratch database's contents)")
    return dict(pairs)


def _drills(env: Mapping[str, str], databases: Mapping[str, str]) -> dict[str, object]:
    """The scheduled restore drill: how often, and into which scratch aliases."""
    into = parse_verify_into(env.get("BACKUP_VERIFY_INTO", ""), databases)
    interval = _positive(env, "BACKUP_VERIFY_INTERVAL_HOURS", 0.0) if env.get(
        "BACKUP_VERIFY_INTERVAL_HOURS", "").strip() else None
    if interval is not None and not into:
        raise ConfigError("BACKUP_VERIFY_INTERVAL_HOURS is set but BACKUP_VERIFY_INTO is not: name the scratch "
                          "alias the drills restore into")
    return {"verify_interval_hours": interval, "verify_into": into}


def _worker_limits(env: Mapping[str, str]) -> dict[str, float]:
    """Time limits of the Celery layer: how long a job may run, and when a lost one is redelivered.

    The visibility timeout is short (2 minutes) because each worker's heartbeat re-dates the messages of
    the jobs it runs (workers/liveness.py): a live job is never handed to a second worker, and a dead
    worker's job comes back within minutes.
    """
    limit = _positive(env, "DBJOBS_TASK_TIME_LIMIT", 6 * 3600)
    return {
        "task_time_limit": limit,
        "visibility_timeout": _positive(env, "DBJOBS_VISIBILITY_TIMEOUT", 120),
        "lock_ttl": _positive(env, "DBJOBS_LOCK_TTL", 60),
        "lock_wait": _number(env, "DBJOBS_LOCK_WAIT", 900, integer=False),
        "migration_lock_timeout": _number(env, "DBJOBS_MIGRATION_LOCK_TIMEOUT", 10, integer=False),
        "migration_statement_timeout": _number(env, "DBJOBS_MIGRATION_STATEMENT_TIMEOUT", 3600, integer=False),
    }
