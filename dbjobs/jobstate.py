"""The outcome of the last run of each job, kept beside the backups so `status` can report a failure.

One small file per job and database (`.last-jobs/<job>-<alias>.json`), written atomically, so
jobs running at the same time never overwrite each other's record. The directory is hidden:
no listing or cleanup ever sees it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from dbjobs.pipeline import private_dir, write_atomic

STATE_DIR = ".last-jobs"


@dataclass(frozen=True)
class JobOutcome:
    """How the last run of a job on a database ended."""

    job: str
    database: str
    ok: bool
    finished_at: str
    error: str | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON form, for the state file and the status report."""
        return asdict(self)


def record(directory: Path, outcome: JobOutcome) -> None:
    """Store `outcome` as the last run of its job on its database; an unwritable directory never fails the job."""
    with contextlib.suppress(OSError):
        state = private_dir(directory / STATE_DIR)
        write_atomic(state / f"{outcome.job}-{outcome.database}.json", json.dumps(outcome.to_dict()).encode())


def outcomes(directory: Path) -> list[JobOutcome]:
    """The last outcome of every job recorded in `directory` (unreadable records are ignored)."""
    found = []
    for path in sorted((directory / STATE_DIR).glob("*.json")):
        try:
            found.append(JobOutcome(**json.loads(path.read_bytes())))
        except (OSError, ValueError, TypeError):
            continue
    return found


@contextmanager
def recorded(directory: Path, job: str, database: str) -> Iterator[None]:
    """Run a block and record whether it succeeded (the error's one-line message if not), then re-raise."""
    try:
        yield
    except Exception as exc:
        record(directory, JobOutcome(job, database, False, datetime.now(UTC).isoformat(), str(exc) or repr(exc)))
        raise
    record(directory, JobOutcome(job, database, True, datetime.now(UTC).isoformat()))
