"""The health report: each section is computed by its own function and yields checks; the worst check wins.

Sections that need something this library does not own are computed from injected callables:
the schema section from a `SchemaProbe` (current fingerprint, last snapshot, pending
migrations), the broker section from two pings the caller supplies (the CLI pings Redis and
the Celery workers). A report is a plain dict so sections computed in different processes (the
job on a worker, the broker check in the CLI) combine with `add_section`.

Health levels map to exit codes for monitoring: ok 0, warning 1, critical 2.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from dbjobs.catalog import Backup, list_scanned
from dbjobs.dburl import DatabaseURL
from dbjobs.errors import DbjobsError
from dbjobs.jobstate import JobOutcome
from dbjobs.storage.base import Storage

Level = Literal["ok", "warning", "critical"]
LEVELS: tuple[Level, ...] = ("ok", "warning", "critical")
EXIT_CODES: dict[str, int] = {"ok": 0, "warning": 1, "critical": 2}
CRITICAL_JOBS = frozenset({"dbjobs.backup"})


@dataclass(frozen=True)
class Check:
    """One health finding: what was checked, how bad it is, and what it means."""

    name: str
    level: Level
    message: str


Section = tuple[Any, list[Check]]


def worst(levels: Sequence[str]) -> Level:
    """The most severe level (ok when there is nothing to report)."""
    return max(levels, key=LEVELS.index, default="ok")  # type: ignore[return-value]


def exit_code(report: dict[str, Any]) -> int:
    """The process exit code a monitor reads: 0 ok, 1 warning, 2 critical."""
    return EXIT_CODES[report["health"]]


def build_report(sections: dict[str, Section]) -> dict[str, Any]:
    """Assemble named sections into the report, with every check and the overall health."""
    report: dict[str, Any] = {"checks": [], "health": "ok"}
    for name, (data, checks) in sections.items():
        report = add_section(report, name, data, checks)
    return report


def add_section(report: dict[str, Any], name: str, data: Any, checks: Sequence[Check]) -> dict[str, Any]:
    """The report with one more section (computed elsewhere, e.g. the broker in the CLI), health recomputed."""
    all_checks = [*report["checks"], *(asdict(c) for c in checks)]
    return {**report, name: data, "checks": all_checks, "health": worst([c["level"] for c in all_checks])}


def combine(sections: Sequence[Section]) -> Section:
    """One section from several of the same kind (one per database): their data as a list, all their checks."""
    return [data for data, _ in sections], [c for _, checks in sections for c in checks]


def storage_section(storages: Sequence[Storage]) -> tuple[list[Backup], Section]:
    """Every backup the reachable storages hold; a storage that cannot be listed is critical, not fatal."""
    scanned, data, checks = [], [], []
    for storage in storages:
        try:
            scanned.append((storage, storage.scan()))
        except DbjobsError as exc:
            data.append({"where": storage.where, "reachable": False, "error": str(exc)})
            checks.append(Check(f"storage:{storage.where}", "critical", str(exc)))
            continue
        data.append({"where": storage.where, "reachable": True})
    backups, problems = list_scanned(scanned)
    return backups, ({"places": data, "skipped": problems}, checks)


def database_section(db: DatabaseURL) -> Section:
    """Reachability, engine, server version and size of one database."""
    from dbjobs.engines import connector_for

    data: dict[str, Any] = {"alias": db.alias, "engine": db.engine, "url": db.redacted()}
    connector = connector_for(db)
    try:
        data.update(reachable=True, version=connector.server_version(), size=connector.size_bytes())
    except DbjobsError as exc:
        data.update(reachable=False, error=str(exc))
        return data, [Check(f"database:{db.alias}", "critical", str(exc))]
    return data, []


def backups_section(backups: Sequence[Backup], aliases: Sequence[str], now: datetime,
                    interval_hours: float) -> Section:
    """Count, total size and newest age, per database; critical when a database's newest is over 2 intervals old."""
    newest: dict[str, Backup] = {}
    for b in backups:
        newest.setdefault(b.manifest.database, b)
    checks = []
    per_database = {}
    for alias in aliases:
        if alias not in newest:
            checks.append(Check(f"backups:{alias}", "critical", f"no backup of {alias!r} found"))
            per_database[alias] = {"count": 0, "newest": None, "newest_age_hours": None}
            continue
        age = (now - newest[alias].manifest.finished).total_seconds() / 3600
        per_database[alias] = {"count": sum(b.manifest.database == alias for b in backups),
                               "newest": newest[alias].manifest.id, "newest_age_hours": round(age, 2)}
        if age > 2 * interval_hours:
            checks.append(Check(f"backups:{alias}", "critical",
                                f"newest backup of {alias!r} is {age:.1f} h old, over twice the "
                                f"{interval_hours:g} h interval (BACKUP_INTERVAL_HOURS)"))
    data = {"count": len(backups), "total_size": sum(b.manifest.size for b in backups),
            "databases": per_database}
    return data, checks


def disk_section(directory: Path, min_free_percent: float,
                 usage: Callable[[Path], Any] = shutil.disk_usage) -> Section:
    """Free space where backups are written: a warning under `min_free_percent`, critical under a fifth of it."""
    existing = directory.absolute()
    while not existing.exists():
        existing = existing.parent
    du = usage(existing)
    percent = 100 * du.free / du.total if du.total else 0.0
    data = {"path": str(directory), "free": du.free, "total": du.total, "free_percent": round(percent, 2)}
    level: Level = "critical" if percent < min_free_percent / 5 else "warning" if percent < min_free_percent else "ok"
    if level == "ok":
        return data, []
    return data, [Check("disk", level, f"only {percent:.1f}% free in {directory} (threshold {min_free_percent:g}%)")]


def jobs_section(outcomes: Sequence[JobOutcome]) -> Section:
    """The last run of each job; a failed backup is critical, any other failed job a warning."""
    checks = [Check(f"job:{o.job}:{o.database}", "critical" if o.job in CRITICAL_JOBS else "warning",
                    f"last {o.job} of {o.database} failed at {o.finished_at}: {o.error}")
              for o in outcomes if not o.ok]
    return [o.to_dict() for o in outcomes], checks


@dataclass(frozen=True)
class SchemaState:
    """What the schema side knows about one database: drift against the last snapshot, pending migrations."""

    fingerprint: str | None
    snapshot_fingerprint: str | None
    pending_migrations: list[str] = field(default_factory=list)


SchemaProbe = Callable[[DatabaseURL], SchemaState]


def schema_probe(schema_dir: Path) -> SchemaProbe:
    """The schema side's probe bound to a schema directory (imported here: it imports this module)."""
    from dbjobs.schema.status import probe

    return functools.partial(probe, schema_dir=schema_dir)


def schema_section(db: DatabaseURL, probe: SchemaProbe) -> Section:
    """Drift (live fingerprint against the last snapshot) and pending migrations: each a warning."""
    try:
        state = probe(db)
    except DbjobsError as exc:
        return {"available": False, "error": str(exc)}, [Check(f"schema:{db.alias}", "warning", str(exc))]
    drift = state.snapshot_fingerprint is not None and state.fingerprint != state.snapshot_fingerprint
    checks = []
    if state.snapshot_fingerprint is None:
        checks.append(Check(f"schema:{db.alias}", "warning", f"no schema snapshot of {db.alias!r} yet "
                            "(a worker takes one when it starts; or run detect-migrations)"))
    elif drift:
        checks.append(Check(f"schema:{db.alias}", "warning", f"schema of {db.alias!r} drifted from its last "
                            "snapshot (run detect-migrations)"))
    if state.pending_migrations:
        checks.append(Check(f"migrations:{db.alias}", "warning", f"{len(state.pending_migrations)} migration(s) "
                            f"not applied to {db.alias!r}: {', '.join(state.pending_migrations)}"))
    return {"available": True, "drift": drift, **asdict(state)}, checks


def broker_section(configured: bool, ping_broker: Callable[[], None],
                   ping_workers: Callable[[], list[str]]) -> Section:
    """Broker reachable and workers alive; in-process mode (no broker) is healthy by design."""
    if not configured:
        return {"configured": False, "mode": "in-process"}, []
    try:
        ping_broker()
    except DbjobsError as exc:
        return {"configured": True, "reachable": False, "error": str(exc)}, [Check("broker", "critical", str(exc))]
    workers = ping_workers()
    checks = [] if workers else [Check("workers", "critical", "no Celery worker answered a ping: jobs will queue "
                                       "but never run (start one with `dbjobs worker`)")]
    return {"configured": True, "reachable": True, "workers": workers}, checks
