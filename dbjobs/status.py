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
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from dbjobs.catalog import Backup, list_scanned, scan_readable
from dbjobs.dburl import DatabaseURL
from dbjobs.errors import DbjobsError
from dbjobs.jobstate import ALL, DRILL_JOB, JobOutcome
from dbjobs.storage.base import Storage

Level = Literal["ok", "warning", "critical"]
LEVELS: tuple[Level, ...] = ("ok", "warning", "critical")
EXIT_CODES: dict[str, int] = {"ok": 0, "warning": 1, "critical": 2}
CRITICAL_JOBS = frozenset({"dbjobs.backup", "dbjobs.verify"})  # no backup, or a damaged or missing one
OWN_SECTION = frozenset({DRILL_JOB})


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
    scanned, unreadable = scan_readable(storages)
    down = {u.where: str(u.error) for u in unreadable}
    data = [{"where": s.where, "reachable": False, "error": down[s.where]} if s.where in down
            else {"where": s.where, "reachable": True} for s in storages]
    checks = [Check(f"storage:{where}", "critical", error) for where, error in down.items()]
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
    """Count (per kind), total size and newest age, per database; critical when a database's newest full backup
    is over 2 intervals old (safety and pre-migration copies are counted, but are not what the schedule takes)."""
    newest: dict[str, Backup] = {}
    kinds: dict[str, Counter[str]] = {alias: Counter() for alias in aliases}
    for b in backups:
        if b.manifest.kind == "full":
            newest.setdefault(b.manifest.database, b)
        if b.manifest.database in kinds:
            kinds[b.manifest.database][b.manifest.kind] += 1
    checks = []
    per_database = {}
    for alias in aliases:
        found = newest.get(alias)
        age = (now - found.manifest.finished).total_seconds() / 3600 if found else None
        per_database[alias] = {"count": sum(kinds[alias].values()), "kinds": dict(kinds[alias]),
                               "newest": found.manifest.id if found else None,
                               "newest_age_hours": None if age is None else round(age, 2)}
        if age is None:
            checks.append(Check(f"backups:{alias}", "critical", f"no full backup of {alias!r} found"))
        elif age > 2 * interval_hours:
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


def latest_outcomes(outcomes: Sequence[JobOutcome], aliases: Sequence[str],
                    known: Collection[str]) -> tuple[list[JobOutcome], list[str]]:
    """The newest outcome of each job on each of `aliases`, and the aliases of records that are not configured.

    A record of a job over every database (`all`, a cleanup without `--database`) counts for each
    alias unless that alias has a newer record of its own: a later success supersedes an
    earlier failure either way. Records of aliases outside `known` (no longer configured) are
    ignored and their aliases returned; records of configured aliases not asked for are left out.
    """
    newest: dict[tuple[str, str], JobOutcome] = {}
    ignored: set[str] = set()
    for o in outcomes:
        if o.database == ALL:
            targets = list(aliases)
        elif o.database in aliases:
            targets = [o.database]
        else:
            if o.database not in known:
                ignored.add(o.database)
            continue
        for alias in targets:
            current = newest.get((o.job, alias))
            if current is None or finished_time(o) > finished_time(current):
                newest[(o.job, alias)] = replace(o, database=alias)
    return [newest[key] for key in sorted(newest)], sorted(ignored)


def finished_time(o: JobOutcome) -> datetime:
    """When a recorded job finished; a malformed time counts as the oldest (never newer than a real one)."""
    try:
        return datetime.fromisoformat(o.finished_at)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


def jobs_section(outcomes: Sequence[JobOutcome], aliases: Sequence[str] | None = None,
                 known: Collection[str] | None = None) -> Section:
    """The newest run of each job per alias; a failed backup or verify (damage found) is critical, other jobs warn.

    Drills have their own section (`drills_section`). Without `aliases` every recorded alias counts.
    """
    outcomes = [o for o in outcomes if o.job not in OWN_SECTION]
    if aliases is None:
        aliases = sorted({o.database for o in outcomes if o.database != ALL})
    latest, ignored = latest_outcomes(outcomes, aliases, aliases if known is None else known)
    checks = [Check(f"job:{o.job}:{o.database}", "critical" if o.job in CRITICAL_JOBS else "warning",
                    f"last {o.job} of {o.database} failed at {o.finished_at}: {o.error}")
              for o in latest if not o.ok]
    return {"latest": [o.to_dict() for o in latest], "ignored_aliases": ignored}, checks


def drills_section(outcomes: Sequence[JobOutcome], drilled: dict[str, str], aliases: Sequence[str], now: datetime,
                   interval_hours: float | None) -> Section:
    """The newest restore drill of each alias: critical when it failed, a warning when none ran within two intervals.

    `drilled` maps the aliases the schedule drills to their scratch alias; a drill run by hand on
    another alias is reported too (and is critical if it failed), but only scheduled ones can be late.
    """
    latest, _ = latest_outcomes([o for o in outcomes if o.job == DRILL_JOB], aliases, aliases)
    newest = {o.database: o for o in latest}
    checks, data = [], {}
    for alias in sorted(set(drilled) | set(newest)):
        o = newest.get(alias)
        data[alias] = {"into": drilled.get(alias), "last": o.to_dict() if o else None}
        if o is not None and not o.ok:
            checks.append(Check(f"drill:{alias}", "critical", f"the last restore drill of {alias!r} failed at "
                                f"{o.finished_at}: {o.error}"))
        elif alias in drilled and interval_hours is not None:
            age = (now - finished_time(o)).total_seconds() / 3600 if o else None
            if age is None or age > 2 * interval_hours:
                when = "no restore drill has run" if age is None else f"the last restore drill ran {age:.1f} h ago"
                checks.append(Check(f"drill:{alias}", "warning", f"{when} for {alias!r}, expected every "
                                    f"{interval_hours:g} h (BACKUP_VERIFY_INTERVAL_HOURS); is beat running?"))
    return data, checks


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
