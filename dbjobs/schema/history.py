"""Snapshot history in the schema directory: `<schema_dir>/snapshots/<alias>/NNNN_<time>_<fp>.json`.

The newest snapshot is what detect-migrations compares the live database against when no
models are configured; a new file is written only when the schema changed.
"""

from __future__ import annotations

import contextlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from dbjobs.dburl import DatabaseURL
from dbjobs.errors import DbjobsError, MigrationError
from dbjobs.schema.snapshot import Snapshot, take_snapshot
from dbjobs.settings import Settings


def snapshot_dir(schema_dir: Path, alias: str) -> Path:
    """Where an alias's snapshots live."""
    return schema_dir / "snapshots" / alias


def _files(schema_dir: Path, alias: str) -> list[Path]:
    directory = snapshot_dir(schema_dir, alias)
    return sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.json")) if directory.is_dir() else []


def latest_snapshot(schema_dir: Path, alias: str) -> Snapshot | None:
    """The newest recorded snapshot of `alias`, or None before the first one."""
    files = _files(schema_dir, alias)
    if not files:
        return None
    try:
        return Snapshot.from_dict(json.loads(files[-1].read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise MigrationError(f"snapshot {files[-1]} is unreadable ({exc}); move it aside to start a new history") \
            from None


def record_snapshot(schema_dir: Path, alias: str, snapshot: Snapshot, now: datetime | None = None) -> Path | None:
    """Write `snapshot` if it differs from the newest one; returns the new file (None when unchanged)."""
    latest = latest_snapshot(schema_dir, alias)
    if latest is not None and latest.fingerprint == snapshot.fingerprint:
        return None
    files = _files(schema_dir, alias)
    number = int(files[-1].name[:4]) + 1 if files else 1
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S")
    path = snapshot_dir(schema_dir, alias) / f"{number:04d}_{stamp}_{snapshot.fingerprint[:12]}.json"
    write_text(path, snapshot.to_json())
    return path


def write_text(path: Path, text: str) -> None:
    """Write a file atomically (temporary name, then rename), creating its directory; a failure is a user error."""
    temp = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise MigrationError(f"cannot write {path}: {exc.strerror}; check that the schema directory is writable") \
            from None


def record_current(db: DatabaseURL, schema_dir: Path) -> Path | None:
    """After apply-migration: the database's schema as it now is, in the scope of its history, so the next
    detect-migrations does not write the applied changes again."""
    latest = latest_snapshot(schema_dir, db.alias)
    if latest is None:
        return None
    return record_snapshot(schema_dir, db.alias, take_snapshot(db, latest.scope))


def ensure_initial_snapshot(db: DatabaseURL, schema_dir: Path) -> bool:
    """Record the first snapshot of `db` if it has none (called when a worker starts); True if one was made."""
    if latest_snapshot(schema_dir, db.alias) is not None:
        return False
    record_snapshot(schema_dir, db.alias, take_snapshot(db))
    return True


def ensure_initial_snapshots(settings: Settings, schema_dir: Path | None = None) -> dict[str, str]:
    """At application or worker start: the first snapshot of every configured alias.

    A database that cannot be reached is reported in the result, not raised: a worker must
    still start when one of several databases is down.
    """
    outcome = {}
    for alias in sorted(settings.databases):
        try:
            created = ensure_initial_snapshot(settings.database(alias), schema_dir or settings.schema_dir)
            outcome[alias] = "created" if created else "exists"
        except DbjobsError as exc:
            outcome[alias] = f"skipped: {exc}"
    return outcome
