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
from dbjobs.progress import Progress, ProgressCallback, no_progress
from dbjobs.schema.changes import Change, apply_changes, invert
from dbjobs.schema.diff import diff, shape_fingerprint
from dbjobs.schema.history import latest_snapshot, record_snapshot, snapshot_dir, write_text
from dbjobs.schema.lint import lint
from dbjobs.schema.migration_file import MigrationFile, next_migration_name
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

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the task result."""
        return asdict(self)


def build_migration(before: Snapshot, after: Snapshot, name: str, changes: list[Change] | None = None,
                    breaks: Mapping[int, bool] | None = None) -> MigrationFile:
    """Pure: the migration file that carries `before` to `after` (`breaks` as for `lint`)."""
    changes = diff(before, after) if changes is None else changes
    reached = apply_changes(before, changes)
    warnings = lint(changes, before.engine, breaks)
    return MigrationFile(name, before.engine, before.fingerprint, after.fingerprint, warnings,
                         render(changes, before), render(invert(changes), reached),
                         (shape_fingerprint(before), shape_fingerprint(after)))


def detect_migrations(db: DatabaseURL, schema_dir: Path, models: str | None = None,
                      progress: ProgressCallback = no_progress, *, apply: bool = False,
                      allow_destructive: bool = False, now: datetime | None = None) -> DetectResult:
    """Compare the desired schema with the database and write `NNNN_<time>_<slug>.sql` if they differ."""
    from dbjobs.migrate import apply_migration, pending_migrations, record_applied

    now = now or datetime.now(UTC)
    progress(Progress("snapshot"))
    with ThreadPoolExecutor(max_workers=1) as pool:
        wanted = pool.submit(snapshot_from_models, models, db.engine) if models else None
        live = take_snapshot(db)
        desired = wanted.result() if wanted else None
    if desired is not None:
        before, after, source = live, Snapshot(db.engine, desired.tables, desired.enums, live.sequences,
                                                live.views), f"models {models}"
    else:
        before, after, source = latest_snapshot(schema_dir, db.alias) or live, live, "previous snapshot"
        if before.engine != db.engine:
            raise MigrationError(f"the snapshot history of {db.alias!r} in {schema_dir} is for {before.engine} but the "
                                 f"database is {db.engine}; move {snapshot_dir(schema_dir, db.alias)} aside")
    progress(Progress("diff"))
    changes = diff(before, after)
    result = DetectResult(db.alias, bool(changes), source, before.fingerprint, after.fingerprint)
    if changes:
        slug = changes[0].describe() if len(changes) == 1 else f"{changes[0].describe()} and {len(changes) - 1} more"
        name = next_migration_name(schema_dir, slug, now)
        migration = build_migration(before, after, name, changes, probe_data(db, changes) if models else None)
        path = schema_dir / f"{name}.sql"
        write_text(path, migration.to_text())
        result.file, result.destructive = str(path), migration.destructive
        result.changes = [c.describe() for c in changes]
        result.warnings = [w.to_dict() for w in migration.warnings]
        pending = [p for p in pending_migrations(db, schema_dir) if p != path.name] if models else []
        if pending:
            result.notes.append(f"not yet applied here: {', '.join(pending)}; {path.name} may repeat their changes, "
                                "apply or delete them first")
    snapshot_path = record_snapshot(schema_dir, db.alias, live, now)
    result.snapshot_file = str(snapshot_path) if snapshot_path else None
    if apply and result.file:
        progress(Progress("apply"))
        if models:
            try:
                result.applied = apply_migration(db, Path(result.file), allow_destructive=allow_destructive,
                                                 progress=progress).to_dict()
            except MigrationError as exc:
                raise MigrationError(f"wrote {result.file} but did not apply it: {exc}") from None
            record_snapshot(schema_dir, db.alias, take_snapshot(db), now)
        else:
            record_applied(db, Path(result.file))
            result.applied = {"status": "recorded", "note": "the database already has these changes"}
    return result
