"""The detect-migrations job: snapshot, compare, write a reviewed migration file, record history.

Desired schema: the models (`DBJOBS_MODELS`) when given, else the live database compared
with its previous snapshot (then the file records how the schema moved, for replaying it on
another database, and `apply` just marks it applied here, where it already happened).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dbjobs.dburl import DatabaseURL
from dbjobs.errors import MigrationError
from dbjobs.gcpause import gc_paused
from dbjobs.progress import Progress, ProgressCallback, no_progress
from dbjobs.schema import mysql_plan, sqlite_plan
from dbjobs.schema.changes import Change, apply_changes, invert
from dbjobs.schema.diff import diff, shape_fingerprint
from dbjobs.schema.history import latest_snapshot, record_snapshot, snapshot_dir, write_text
from dbjobs.schema.lint import DESTRUCTIVE, LOCKING, UNSUPPORTED, LintWarning, lint
from dbjobs.schema.migration_file import MigrationFile, next_migration_name
from dbjobs.schema.object_plan import Plan as ObjectPlan
from dbjobs.schema.pg_diff import Plan, plan
from dbjobs.schema.probe import probe_data
from dbjobs.schema.render import render
from dbjobs.schema.snapshot import Snapshot, snapshot_from_models, take_snapshot


@dataclass
class DetectResult:
    """What detect-migrations found and wrote."""

    database: str
    changed: bool
    source: str
    from_fingerprint: str | None
    to_fingerprint: str
    file: str | None = None
    changes: list[str] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    destructive: bool = False
    snapshot_file: str | None = None
    applied: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    baseline: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the task result."""
        return asdict(self)


def uses_objects(before: Snapshot, after: Snapshot) -> bool:
    """Whether the migration comes from the full object graph (both snapshots carry it, same scope)
    rather than from the per-table summary (models, snapshots taken before objects were recorded)."""
    return bool(before.objects) and bool(after.objects) and before.scope == after.scope


def plan_objects(before: Snapshot, after: Snapshot) -> Plan | ObjectPlan:
    """The engine's object-graph plan from `before` to `after`."""
    planner = {"postgresql": plan, "mysql": mysql_plan.plan, "sqlite": sqlite_plan.plan}[before.engine]
    return planner(before.objects, after.objects)


@gc_paused()  # thousands of small dicts and strings, no cycles
def build_migration(before: Snapshot, after: Snapshot, name: str, changes: list[Change] | None = None,
                    breaks: Mapping[int, bool] | None = None) -> MigrationFile:
    """Pure: the migration file that carries `before` to `after` (`breaks` as for `lint`)."""
    shapes = (shape_fingerprint(before), shape_fingerprint(after))
    if uses_objects(before, after):
        forward, backward = plan_objects(before, after), plan_objects(after, before)
        return MigrationFile(name, before.engine, before.fingerprint, after.fingerprint, plan_warnings(forward),
                             forward.statements, backward.statements, shapes)
    changes = diff(before, after) if changes is None else changes
    reached = apply_changes(before, changes)
    warnings = lint(changes, before.engine, breaks)
    return MigrationFile(name, before.engine, before.fingerprint, after.fingerprint, warnings,
                         render(changes, before), render(invert(changes), reached), shapes)


def plan_warnings(forward: Plan | ObjectPlan) -> list[LintWarning]:
    """The header warnings of an object-graph migration: what loses data, what it cannot migrate, what locks."""
    warnings = [LintWarning(DESTRUCTIVE, m) for m in forward.destructive]
    warnings += [LintWarning(UNSUPPORTED, m) for m in forward.unsupported]
    if isinstance(forward, Plan):
        warnings += [LintWarning(LOCKING, f"{s.describe()}: CREATE INDEX blocks writes to its table while it builds;"
                                          " on a busy table create it CONCURRENTLY outside this migration")
                     for s in forward.steps if s.kind == "index" and s.action == "create"]
    else:
        warnings += [LintWarning(LOCKING, m) for m in forward.locking]
    return warnings


def _describe(before: Snapshot, after: Snapshot) -> list[str]:
    """What changed, one line per step (object graph) or per change (summary)."""
    if uses_objects(before, after):
        found = plan_objects(before, after)
        return [d for s in found.steps for d in s.descriptions()] + [f"unsupported: {u}" for u in found.unsupported]
    return [c.describe() for c in diff(before, after)]


def detect_migrations(db: DatabaseURL, schema_dir: Path, models: str | None = None,
                      progress: ProgressCallback = no_progress, *, apply: bool = False,
                      allow_destructive: bool = False, now: datetime | None = None,
                      schemas: list[str] | None = None, exclude_schemas: list[str] | None = None) -> DetectResult:
    """Compare the desired schema with the database and write `NNNN_<time>_<slug>.sql` if they differ.

    PostgreSQL reads every non-system schema unless `schemas` (only these) or `exclude_schemas`
    narrow it; the choice is kept in the snapshot and reused when neither is given."""
    from dbjobs.migrate import apply_migration, pending_migrations, record_applied

    now = now or datetime.now(UTC)
    progress(Progress("snapshot"))
    previous = None if models else latest_snapshot(schema_dir, db.alias)
    if previous is not None and previous.engine != db.engine:
        raise MigrationError(f"the snapshot history of {db.alias!r} in {schema_dir} is for {previous.engine} but the "
                             f"database is {db.engine}; move {snapshot_dir(schema_dir, db.alias)} aside")
    scope = {"schemas": sorted(schemas or []), "exclude_schemas": sorted(exclude_schemas or [])}
    scope = {k: v for k, v in scope.items() if v} if (schemas or exclude_schemas) else \
        (previous.scope if previous is not None else {})
    with ThreadPoolExecutor(max_workers=1) as pool:
        wanted = pool.submit(snapshot_from_models, models, db.engine) if models else None
        live = take_snapshot(db, scope)
        desired = wanted.result() if wanted else None
    if desired is not None:
        before, after, source = live, Snapshot(db.engine, desired.tables, desired.enums, live.sequences,
                                                live.views), f"models {models}"
    else:
        before, after, source = previous or live, live, "previous snapshot"
    result = DetectResult(db.alias, False, source, before.fingerprint, after.fingerprint)
    if (previous is None and desired is None) or (previous is not None and previous.scope != live.scope):
        path = record_snapshot(schema_dir, db.alias, live, now)
        result.snapshot_file, result.baseline = str(path) if path else None, True
        why = "" if previous is None else " (the schemas in scope changed)"
        result.notes.append(f"baseline taken{why}, nothing to compare yet: the next detect-migrations compares "
                            f"{db.alias!r} with this snapshot")
        return result
    progress(Progress("diff"))
    changes = None if uses_objects(before, after) else diff(before, after)
    described = _describe(before, after) if changes is None else [c.describe() for c in changes]
    result.changed = bool(described)
    if described:
        slug = described[0] if len(described) == 1 else f"{described[0]} and {len(described) - 1} more"
        name = next_migration_name(schema_dir, slug, now)
        breaks = probe_data(db, changes) if models and changes else None
        migration = build_migration(before, after, name, changes, breaks)
        path = schema_dir / f"{name}.sql"
        write_text(path, migration.to_text())
        result.file, result.destructive = str(path), migration.destructive
        result.changes = described
        result.warnings = [w.to_dict() for w in migration.warnings]
        pending = [p for p in pending_migrations(db, schema_dir) if p != path.name] if models else []
        if pending:
            result.notes.append(f"not yet applied here: {', '.join(pending)}; {path.name} may repeat their changes, "
                                "apply or delete them first")
    snapshot_path = record_snapshot(schema_dir, db.alias, live, now)
    result.snapshot_file = str(snapshot_path) if snapshot_path else None
    if result.file and not models:
        # the database it came from already has these changes: it is applied here, never pending
        record_applied(db, Path(result.file))
        result.applied = {"status": "recorded", "note": "the database already has these changes"}
    elif apply and result.file:
        progress(Progress("apply"))
        try:
            result.applied = apply_migration(db, Path(result.file), allow_destructive=allow_destructive,
                                             progress=progress).to_dict()
        except MigrationError as exc:
            raise MigrationError(f"wrote {result.file} but did not apply it: {exc}") from None
        record_snapshot(schema_dir, db.alias, take_snapshot(db, scope), now)
    return result
