"""The restore job: verify, confirm, take a safety backup, then replace the database all or nothing.

Order matters: nothing touches the target until the backup's checksum and engine are known
good and a safety backup of the target exists. PostgreSQL and SQLite restore in one
transaction; MySQL, whose DDL commits implicitly, is put back from the safety backup if the
load fails.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from dbjobs.backup import run_backup
from dbjobs.catalog import Backup
from dbjobs.dburl import DatabaseURL
from dbjobs.engines import connector_for
from dbjobs.errors import BackupInvalidError, ConfirmationRequired, RestoreError
from dbjobs.pipeline import decompressed_chunks, verify_file
from dbjobs.progress import Progress, ProgressCallback, no_progress
from dbjobs.recipients import NO_KEYS, AgeKeys, Sealed, sealed

TRANSACTIONAL = {"postgresql", "sqlite"}


@dataclass(frozen=True)
class RestoreResult:
    """What was restored where, and the safety backup that can undo it."""

    backup_id: str
    database: str
    safety_backup_id: str | None
    seconds: float

    def to_dict(self) -> dict[str, object]:
        """JSON result."""
        return {"backup_id": self.backup_id, "database": self.database,
                "safety_backup_id": self.safety_backup_id, "seconds": round(self.seconds, 3)}


def _load(backup: Backup, db: DatabaseURL, progress: ProgressCallback, opened: Sealed | None) -> None:
    connector = connector_for(db)
    chunks = decompressed_chunks(backup.path, progress, backup.manifest.size, sealed=opened)
    connector.restore(chunks, same_database=backup.manifest.database == db.alias)


def run_restore(
    backup: Backup, db: DatabaseURL, safety_dir: Path, *, confirmed: bool,
    safety_backup: bool = True, progress: ProgressCallback = no_progress, keys: AgeKeys = NO_KEYS,
) -> RestoreResult:
    """Restore `backup` into `db`; on failure the database is as it was, and the error says so.

    An encrypted backup needs `keys.identity_file`, and is decrypted and checked in full before
    anything is touched; the safety backup is encrypted to `keys.recipients` like any other.
    """
    manifest = backup.manifest
    if manifest.engine != db.engine:
        raise BackupInvalidError(
            f"{manifest.id} is a {manifest.engine} backup; database {db.alias!r} is {db.engine}: refused"
        )
    opened = sealed(manifest.id, manifest.encryption, keys.identity_file)
    verify_file(backup.path, manifest.size, manifest.sha256, progress, sealed=opened)
    if not confirmed:
        raise ConfirmationRequired(f"restoring {manifest.id} replaces everything in {db.alias!r}; confirm (--yes)")
    start = time.monotonic()
    connector = connector_for(db)
    existing = connector.exists()
    if existing:
        connector.connect_check()
    safety = None
    if safety_backup and existing:
        progress(Progress("safety-backup"))
        safety = run_backup(db, safety_dir, kind="safety", note=f"before restoring {manifest.id}",
                            recipients=keys.recipients).backup
    progress(Progress("restore", 0, manifest.size))
    try:
        _load(backup, db, progress, opened)
    except Exception as exc:  # any failure (a bug, a time limit) leaves a half-loaded MySQL: put it back
        if db.engine in TRANSACTIONAL or safety is None:
            raise
        try:
            _load(safety, db, no_progress, sealed(safety.manifest.id, safety.manifest.encryption, keys.identity_file))
        except Exception as undo:
            raise RestoreError(
                f"{exc}; putting back safety backup {safety.manifest.id} also failed ({undo}): restore it by hand"
            ) from None
        raise RestoreError(f"{exc}; the database was put back from safety backup {safety.manifest.id}") from None
    return RestoreResult(manifest.id, db.alias, safety.manifest.id if safety else None, time.monotonic() - start)
