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
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from dbjobs.pipeline import private_dir, write_atomic

STATE_DIR = ".last-jobs"
ALL = "all"  # the database of a job that ran over every alias (a cleanup without --database)
DRILL_JOB = "dbjobs.drill"  # a deep verify: the restore drill of one alias's backup


@dataclass(frozen=True)
class JobOutcome:
    """How the last run of a job on a database ended."""

    job: str
    database: str
    ok: bool
    finished_at: str
    error: str | None = None
    failures: int = 0  # how many runs of this job on this database have failed so far (a Prometheus counter)

    def to_dict(self) -> dict[str, object]:
        """JSON form, for the state file and the status report."""
        return asdict(self)


def _path(directory: Path, job: str, database: str) -> Path:
    return directory / STATE_DIR / f"{job}-{database}.json"


def _read(path: Path) -> JobOutcome | None:
    try:
        return JobOutcome(**json.loads(path.read_bytes()))
    except (OSError, ValueError, TypeError):
        return None


def record(directory: Path, outcome: JobOutcome) -> None:
    """Store `outcome` as the last run of its job on its database, counting failures; never fails the job.

    The failure count carries over from the previous record (two jobs finishing at the same
    instant may lose one count: it is a monitoring figure, not a ledger).
    """
    path = _path(directory, outcome.job, outcome.database)
    previous = _read(path)
    failures = (previous.failures if previous else 0) + (not outcome.ok)
    with contextlib.suppress(OSError):
        private_dir(path.parent)
        write_atomic(path, json.dumps(replace(outcome, failures=failures).to_dict()).encode())


def outcomes(directory: Path) -> list[JobOutcome]:
    """The last outcome of every job recorded in `directory` (unreadable records are ignored)."""
    found = (_read(path) for path in sorted((directory / STATE_DIR).glob("*.json")))
    return [o for o in found if o is not None]


@contextmanager
def recorded(directory: Path, job: str, database: str) -> Iterator[list[str]]:
    """Run a block and record whether it succeeded (the error's one-line message if not), then re-raise.

    The block may add problems to the list it is given: a job that did only part of its work (a
    cleanup that could not list the bucket) returns its result but is recorded as failed, with them.
    """
    problems: list[str] = []
    try:
        yield problems
    except Exception as exc:
        record(directory, JobOutcome(job, database, False, datetime.now(UTC).isoformat(), str(exc) or repr(exc)))
        raise
    record(directory, JobOutcome(job, database, not problems, datetime.now(UTC).isoformat(),
                                 "; ".join(problems) or None))
