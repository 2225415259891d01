"""The upload step of a backup: after the local backup is complete, put it in the shared remote store.

It runs after the backup, never before or instead of it, and never fails it: the store being
down, a refused key or a missing bucket leave the local backup as it is, and the failure is
reported in the job's result (which Flower shows) and recorded for `status`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dbjobs.catalog import Backup
from dbjobs.errors import DbjobsError
from dbjobs.jobstate import JobOutcome, record
from dbjobs.progress import ProgressCallback
from dbjobs.storage.base import Storage

UPLOAD_JOB = "dbjobs.upload"


def upload_backup(remote: Storage, backup: Backup, directory: Path, progress: ProgressCallback) -> dict[str, Any]:
    """Put a complete local backup into `remote`; the outcome for the result, never an exception.

    The outcome is recorded as the last `dbjobs.upload` of the database in `directory`, so
    `status` warns about a failed upload until one succeeds.
    """
    manifest = backup.manifest
    error: str | None = None
    try:
        remote.put(backup.path, manifest, progress)  # type: ignore[arg-type]
    except DbjobsError as exc:
        error = str(exc)
    record(directory, JobOutcome(UPLOAD_JOB, manifest.database, error is None, datetime.now(UTC).isoformat(), error))
    outcome: dict[str, Any] = {"ok": error is None, "location": remote.where}
    return outcome if error is None else {**outcome, "error": error}
